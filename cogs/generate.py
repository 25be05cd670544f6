"""/generate and the buttons on job messages (Cancel, Re-roll, Make character)."""

from __future__ import annotations

import logging
import re
from typing import Any, cast

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import Castbot
from bot.i18n import cmd, t
from bot.services.generation import GenerateCommand
from bot.services.money import format_usd
from bot.ui.characters import COG_NAME as CHARACTERS_COG
from bot.ui.generation import status_embed
from bot.ui.replies import locale_of
from cogs._common import actor_of
from cogs.characters import CharactersCog

log = logging.getLogger(__name__)


def _choices(*values: str) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=cmd(f"choice.{v}"), value=v) for v in values]


class CancelButton(discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=r"castbot:cancel:(?P<job>\d+)"):
    def __init__(self, job_id: int, label: str = "Cancel") -> None:
        super().__init__(
            discord.ui.Button(label=label, style=discord.ButtonStyle.secondary, custom_id=f"castbot:cancel:{job_id}")
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> CancelButton:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        job = await cast(Castbot, interaction.client).services.generation.cancel(actor_of(interaction), self.job_id)
        locale = locale_of(interaction)
        await interaction.response.send_message(
            t("generate.canceled", locale, job=job.id, amount=format_usd(job.estimate_micros, locale)), ephemeral=True
        )
        cast(Castbot, interaction.client).services.wake_loop()


class RerollButton(discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=r"castbot:reroll:(?P<job>\d+)"):
    def __init__(self, job_id: int, label: str = "Re-roll") -> None:
        super().__init__(
            discord.ui.Button(label=label, style=discord.ButtonStyle.primary, custom_id=f"castbot:reroll:{job_id}")
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> RerollButton:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        cog = interaction.client.get_cog("GenerateCog")
        assert isinstance(cog, GenerateCog)
        await cog.reroll(interaction, self.job_id)


class MakeCharacterButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=r"castbot:mkchar:(?P<job>\d+)"
):
    """On a delivered video: turn it into a character (asks for a name, then /character extract)."""

    def __init__(self, job_id: int, label: str = "Make character") -> None:
        super().__init__(
            discord.ui.Button(label=label, style=discord.ButtonStyle.secondary, custom_id=f"castbot:mkchar:{job_id}")
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> MakeCharacterButton:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        cog = interaction.client.get_cog(CHARACTERS_COG)
        assert isinstance(cog, CharactersCog)
        await cog.ask_name_for_job(interaction, self.job_id)


def status_view(job_id: int, locale: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id, t("button.cancel", locale)))
    return view


class GenerateCog(commands.Cog):
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
        provider: str | None = None,
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
        names = [n for n in self.bot.providers if n.startswith(current.lower())]
        return [app_commands.Choice(name=n, value=n) for n in names[:25]]

    async def reroll(self, interaction: discord.Interaction[Castbot], job_id: int) -> None:
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
        guild_locale = interaction.guild_locale.value if interaction.guild_locale else locale
        try:
            channel = self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
            status = await channel.send(
                embed=status_embed(job, f"<@{job.user_id}>", guild_locale), view=status_view(job.id, guild_locale)
            )
        except discord.HTTPException as exc:
            log.warning("job %d: could not post its status message (%s)", job.id, exc.status)
            await interaction.followup.send(t("generate.queued_no_status", locale, job=job.id), ephemeral=True)
        else:
            await services.generation.set_status_message(job.id, status.id)
            await interaction.followup.send(
                t("generate.queued", locale, job=job.id, link=status.jump_url), ephemeral=True
            )
        services.wake_loop()


async def setup(bot: Castbot) -> None:
    bot.add_dynamic_items(CancelButton, RerollButton, MakeCharacterButton)
    await bot.add_cog(GenerateCog(bot))
