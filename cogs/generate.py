"""/generate: parse the options, start the job (`bot.actions.generation`); the job buttons are registered here."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.actions.buttons import JOB_BUTTONS
from bot.app import Castbot
from bot.services.generation import GenerateCommand
from bot.ui.replies import actor_of, locale_of
from bot.ui.translator import cmd


def _choices(*values: str) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=cmd(f"choice.{v}"), value=v) for v in values]


class GenerateCog(commands.Cog, name="Generate"):
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
        await self.bot.actions.generation.start(interaction, command)

    @generate.autocomplete("provider")
    async def provider_autocomplete(
        self, interaction: discord.Interaction[Castbot], current: str
    ) -> list[app_commands.Choice[str]]:
        names = [n for n in self.bot.providers if n.startswith(current.strip().lower())]
        return [app_commands.Choice(name=n, value=n) for n in names[:25]]


async def setup(bot: Castbot) -> None:
    bot.add_dynamic_items(*JOB_BUTTONS)
    await bot.add_cog(GenerateCog(bot))
