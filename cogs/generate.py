"""/generate and the buttons on job messages (Cancel, Re-roll, Make character)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol, cast

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import Castbot
from bot.domain.jobs import Job
from bot.domain.money import format_usd
from bot.i18n import t
from bot.services.generation import GenerateCommand
from bot.ui.characters import COG_NAME as CHARACTERS_COG
from bot.ui.generation import status_embed
from bot.ui.job_buttons import DELIVERY_COG, GENERATE_COG, JOB_BUTTONS, status_view
from bot.ui.replies import locale_of
from bot.ui.translator import cmd
from cogs._common import actor_of

log = logging.getLogger(__name__)

CONFIRM_WITHIN = 2.0  # seconds the member's confirmation may wait for the status message's link


class NameAsker(Protocol):
    async def ask_name_for_job(self, interaction: discord.Interaction[Any], job_id: int) -> None: ...


class FinalEditor(Protocol):
    async def show_if_posted(self, job_id: int) -> None: ...


def _choices(*values: str) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=cmd(f"choice.{v}"), value=v) for v in values]


class GenerateCog(commands.Cog, name=GENERATE_COG):
    def __init__(self, bot: Castbot) -> None:
        self.bot = bot

    @app_commands.command(name=cmd("cmd.generate.name"), description=cmd("cmd.generate.description"))
    @app_commands.describe(
        prompt=cmd("cmd.generate.prompt"),
        seconds=cmd("cmd.generate.seconds"),
        orientation=cmd("cmd.generate.orientation"),
        quality=cmd("cmd.generate.quality"),
        provider=cmd("cmd.generate.provider"),
    )
    @app_commands.choices(orientation=_choices("portrait", "landscape"), quality=_choices("standard", "pro"))
    @app_commands.guild_only()
    async def generate(
        self,
        interaction: discord.Interaction[Castbot],
        prompt: app_commands.Range[str, 1, 1500],
        seconds: app_commands.Range[int, 2, 20] | None = None,
        orientation: str | None = None,
        quality: str | None = None,
        provider: app_commands.Range[str, 1, 32] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        command = GenerateCommand(
            actor=actor_of(interaction),
            interaction_id=interaction.id,
            channel_id=interaction.channel_id or 0,
            locale=locale_of(interaction),
            prompt=prompt,
            seconds=seconds,
            orientation=orientation,
            quality=quality,
            provider=provider,
        )
        await self._start(interaction, command)

    @generate.autocomplete("provider")
    async def provider_autocomplete(
        self, interaction: discord.Interaction[Castbot], current: str
    ) -> list[app_commands.Choice[str]]:
        names = [n for n in self.bot.providers if n.startswith(current.strip().lower())]
        return [app_commands.Choice(name=n, value=n) for n in names[:25]]

    async def cancel(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        job = await self.bot.services.generation.cancel(actor_of(interaction), job_id)
        locale = locale_of(interaction)
        amount = format_usd(job.estimate_micros, locale)
        await interaction.response.send_message(
            t("generate.canceled", locale, job=job.id, amount=amount), ephemeral=True
        )
        self.bot.services.wake_loop()

    async def make_character(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        characters = self.bot.get_cog(CHARACTERS_COG)
        if characters is None:
            raise RuntimeError("the characters cog is not loaded")
        await cast(NameAsker, characters).ask_name_for_job(interaction, job_id)

    async def reroll(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        """The same request as job `job_id`, as a new job with a new hold."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        original = await self.bot.services.generation.job(actor_of(interaction), job_id)
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
        await self._start(interaction, command)

    async def _start(self, interaction: discord.Interaction[Castbot], command: GenerateCommand) -> None:
        services = self.bot.services
        locale = locale_of(interaction)
        admitted = await services.generation.admit(command)
        job = admitted.job
        if admitted.duplicate:
            await interaction.followup.send(t("generate.duplicate", locale, job=job.id), ephemeral=True)
            return
        # channel posts speak the server's language: the /settings choice, else Discord's guild locale
        configured = (await services.guilds.get(job.guild_id)).locale
        guild_locale = configured or (interaction.guild_locale.value if interaction.guild_locale else locale)
        # A busy channel takes about 5 posts per 5 s: the member's confirmation (its own rate
        # limit) waits a moment for the public status message's link, never for the queue.
        post = asyncio.ensure_future(self._post_status(job, guild_locale))
        posted_in_time = bool((await asyncio.wait({post}, timeout=CONFIRM_WITHIN))[0])
        # Answer the member before recording the message id: under a burst that write queues
        # behind hundreds of others on the single writer (1.5-2 s in bench/ack_burst.py).
        try:
            if not posted_in_time:
                services.wake_loop()  # the job need not wait for its status message
                await interaction.followup.send(t("generate.queued_soon", locale, job=job.id), ephemeral=True)
            elif (posted := post.result()) is None:
                await interaction.followup.send(t("generate.queued_no_status", locale, job=job.id), ephemeral=True)
            else:
                link = posted.jump_url
                await interaction.followup.send(t("generate.queued", locale, job=job.id, link=link), ephemeral=True)
        finally:
            status = await post
            if status is not None:
                await services.generation.set_status_message(job.id, status.id)
            services.wake_loop()
            if status is None and not posted_in_time:  # promised a status message that never came
                await interaction.followup.send(t("generate.queued_no_status", locale, job=job.id), ephemeral=True)
            # a result posted before the id was recorded made no edit of the status message
            delivery = self.bot.get_cog(DELIVERY_COG)
            if status is not None and delivery is not None:
                await cast(FinalEditor, delivery).show_if_posted(job.id)

    async def _post_status(self, job: Job, locale: str) -> discord.Message | None:
        """The job's public status message, or None when Discord refused it."""
        try:
            channel = self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
            view = status_view(job.id, locale)
            status = await channel.send(embed=status_embed(job, f"<@{job.user_id}>", locale), view=view)
            view.stop()  # clicks arrive through the registered dynamic items, also after a restart
            return status
        except discord.HTTPException as exc:
            log.warning("job %d: could not post its status message (%s)", job.id, exc.status)
            return None


async def setup(bot: Castbot) -> None:
    bot.add_dynamic_items(*JOB_BUTTONS)
    await bot.add_cog(GenerateCog(bot))
