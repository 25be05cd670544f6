"""/budget show and /budget set."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import Castbot
from bot.services.budget import BudgetService
from bot.ui.budget import budget_embed, budget_set_content
from bot.ui.replies import actor_of, locale_of
from bot.ui.translator import cmd


class BudgetCog(commands.Cog):
    # No default_permissions: /budget show is for everyone, and /budget set checks the
    # moderator in the service on every call (Discord's setting is only a hint).
    budget = app_commands.Group(name=cmd("cmd.budget.name"), description=cmd("cmd.budget.description"), guild_only=True)

    def __init__(self, bot: Castbot, service: BudgetService) -> None:
        self.bot = bot
        self.service = service

    @budget.command(name=cmd("cmd.budget.show.name"), description=cmd("cmd.budget.show.description"))
    async def show(self, interaction: discord.Interaction[Castbot]) -> None:
        await interaction.response.defer(ephemeral=True)
        overview = await self.service.overview(actor_of(interaction))
        await interaction.followup.send(embed=budget_embed(overview, locale_of(interaction)), ephemeral=True)

    @budget.command(name=cmd("cmd.budget.set.name"), description=cmd("cmd.budget.set.description"))
    @app_commands.describe(
        monthly_usd=cmd("cmd.budget.set.monthly_usd"), member_daily_usd=cmd("cmd.budget.set.member_daily_usd")
    )
    async def set_(
        self,
        interaction: discord.Interaction[Castbot],
        monthly_usd: app_commands.Range[str, 1, 32],
        member_daily_usd: app_commands.Range[str, 1, 32] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True)
        overview = await self.service.set_limits(actor_of(interaction), monthly_usd, member_daily_usd)
        locale = locale_of(interaction)
        await interaction.followup.send(
            content=budget_set_content(overview, locale), embed=budget_embed(overview, locale), ephemeral=True
        )


async def setup(bot: Castbot) -> None:
    await bot.add_cog(BudgetCog(bot, bot.services.budget))
