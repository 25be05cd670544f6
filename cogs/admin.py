"""Operator-facing commands: /about."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import Castbot
from bot.ui.about import about_embed
from bot.ui.replies import actor_of, locale_of, reply
from bot.ui.translator import cmd


class AdminCog(commands.Cog):
    def __init__(self, bot: Castbot) -> None:
        self.bot = bot

    @app_commands.command(name=cmd("cmd.about.name"), description=cmd("cmd.about.description"))
    async def about(self, interaction: discord.Interaction[Castbot]) -> None:
        # moderators (Manage Server or the moderator role) also see how full DATA_DIR is
        moderator = await self.bot.services.guilds.is_moderator(actor_of(interaction))
        if moderator:  # measuring DATA_DIR reads the disk: acknowledge first
            await interaction.response.defer(ephemeral=True, thinking=True)
        info = await self.bot.services.about.about(with_storage=moderator)
        await reply(interaction, embed=about_embed(info, locale_of(interaction)), ephemeral=True)


async def setup(bot: Castbot) -> None:
    await bot.add_cog(AdminCog(bot))
