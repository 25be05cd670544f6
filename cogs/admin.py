"""Operator-facing commands: /about."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import Castbot
from bot.ui.about import about_embed
from bot.ui.replies import locale_of
from bot.ui.translator import cmd


class AdminCog(commands.Cog):
    def __init__(self, bot: Castbot) -> None:
        self.bot = bot

    @app_commands.command(name=cmd("cmd.about.name"), description=cmd("cmd.about.description"))
    async def about(self, interaction: discord.Interaction[Castbot]) -> None:
        info = await self.bot.services.about.about()
        await interaction.response.send_message(embed=about_embed(info, locale_of(interaction)), ephemeral=True)


async def setup(bot: Castbot) -> None:
    await bot.add_cog(AdminCog(bot))
