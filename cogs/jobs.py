"""/jobs: your recent jobs, or (moderators) another member's."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import Castbot
from bot.services.jobs_view import JobsViewService
from bot.ui.jobs import jobs_embed
from bot.ui.replies import actor_of, locale_of
from bot.ui.translator import cmd


class JobsCog(commands.Cog):
    def __init__(self, bot: Castbot, service: JobsViewService) -> None:
        self.bot = bot
        self.service = service

    @app_commands.command(name=cmd("cmd.jobs.name"), description=cmd("cmd.jobs.description"))
    @app_commands.describe(member=cmd("cmd.jobs.member"))
    @app_commands.guild_only()
    async def jobs(self, interaction: discord.Interaction[Castbot], member: discord.Member | None = None) -> None:
        await interaction.response.defer(ephemeral=True)
        listing = await self.service.recent(actor_of(interaction), member.id if member else None)
        whose = member if member is not None else interaction.user
        embed = jobs_embed(listing, locale_of(interaction), whose.display_name)
        await interaction.followup.send(embed=embed, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())


async def setup(bot: Castbot) -> None:
    await bot.add_cog(JobsCog(bot, bot.services.jobs))
