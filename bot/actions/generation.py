"""Starting, canceling and re-rolling a job from an interaction, with its public status message."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import discord

from bot.actions.buttons import status_view
from bot.actions.delivery import DeliveryActions
from bot.domain.jobs import Job
from bot.domain.money import format_usd
from bot.i18n import t
from bot.services.generation import GenerateCommand, GenerationService
from bot.services.guilds import GuildService
from bot.ui.generation import status_embed
from bot.ui.replies import actor_of, locale_of

log = logging.getLogger(__name__)

CONFIRM_WITHIN = 2.0  # seconds the member's confirmation may wait for the status message's link


class GenerationActions:
    def __init__(
        self,
        client: discord.Client,
        generation: GenerationService,
        guilds: GuildService,
        delivery: DeliveryActions,
        wake: Callable[[], None],
        *,
        confirm_within: float = CONFIRM_WITHIN,
    ) -> None:
        self._client = client
        self._generation = generation
        self._guilds = guilds
        self._delivery = delivery
        self._wake = wake
        self.confirm_within = confirm_within

    async def start(self, interaction: discord.Interaction[Any], command: GenerateCommand) -> None:
        """Admit the job, post its status message and confirm to the member (already deferred)."""
        locale = locale_of(interaction)
        admitted = await self._generation.admit(command)
        job = admitted.job
        if admitted.duplicate:
            await interaction.followup.send(t("generate.duplicate", locale, job=job.id), ephemeral=True)
            return
        # channel posts speak the server's language: the /settings choice, else Discord's guild locale
        configured = (await self._guilds.get(job.guild_id)).locale
        guild_locale = configured or (interaction.guild_locale.value if interaction.guild_locale else locale)
        # A busy channel takes about 5 posts per 5 s: the member's confirmation (its own rate
        # limit) waits a moment for the public status message's link, never for the queue.
        post = asyncio.ensure_future(self._post_status(job, guild_locale))
        posted_in_time = bool((await asyncio.wait({post}, timeout=self.confirm_within))[0])
        # Answer the member before recording the message id: under a burst that write queues
        # behind hundreds of others on the single writer (1.5-2 s in bench/ack_burst.py).
        try:
            if not posted_in_time:
                self._wake()  # the job need not wait for its status message
                await interaction.followup.send(t("generate.queued_soon", locale, job=job.id), ephemeral=True)
            elif (posted := post.result()) is None:
                await interaction.followup.send(t("generate.queued_no_status", locale, job=job.id), ephemeral=True)
            else:
                link = posted.jump_url
                await interaction.followup.send(t("generate.queued", locale, job=job.id, link=link), ephemeral=True)
        finally:
            status = await post
            if status is not None:
                await self._generation.set_status_message(job.id, status.id)
            self._wake()
            if status is None and not posted_in_time:  # promised a status message that never came
                await interaction.followup.send(t("generate.queued_no_status", locale, job=job.id), ephemeral=True)
            if status is not None:  # a result posted before the id was recorded made no edit of it
                await self._delivery.show_if_posted(job.id)

    async def cancel(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        job = await self._generation.cancel(actor_of(interaction), job_id)
        locale = locale_of(interaction)
        amount = format_usd(job.estimate_micros, locale)
        await interaction.response.send_message(
            t("generate.canceled", locale, job=job.id, amount=amount), ephemeral=True
        )
        self._wake()

    async def reroll(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        """The same request as job `job_id`, as a new job with a new hold."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        original = await self._generation.job(actor_of(interaction), job_id)
        command = GenerateCommand(
            actor=actor_of(interaction),
            interaction_id=interaction.id,
            channel_id=interaction.channel_id or original.channel_id,
            locale=locale_of(interaction),
            prompt=original.prompt,
            seconds=int(original.request["seconds"]),
            orientation=original.request["orientation"],
            quality=original.request["quality"],
            provider=original.request.get("requested_provider"),
        )
        await self.start(interaction, command)

    async def _post_status(self, job: Job, locale: str) -> discord.Message | None:
        """The job's public status message, or None when Discord refused it."""
        try:
            channel = self._client.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
            view = status_view(job.id, locale)
            status = await channel.send(embed=status_embed(job, f"<@{job.user_id}>", locale), view=view)
            view.stop()  # clicks arrive through the registered dynamic items, also after a restart
            return status
        except discord.HTTPException as exc:
            log.warning("job %d: could not post its status message (%s)", job.id, exc.status)
            return None
