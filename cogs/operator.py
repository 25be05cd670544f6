"""/operator takedown|restore|reports (OPERATOR_USER_IDS only, in any server or a DM), and the
registration of the trust buttons: Report, its reason picker, and the owner's consent button.

Discord hides the group from members without Administrator (default_member_permissions 0), but
cannot hide a command from a server's admins per user: the service checks OPERATOR_USER_IDS on
every call and refuses everyone else.
"""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.actions.reports import REPORT_ITEMS
from bot.actions.sharing import SHARING_ITEMS
from bot.app import Castbot
from bot.services.trust import TrustService
from bot.ui.replies import actor_of, locale_of
from bot.ui.translator import cmd
from bot.ui.trust import operator_result_text, reports_text

Interaction = discord.Interaction[Castbot]


class OperatorCog(commands.Cog):
    operator = app_commands.Group(
        name=cmd("cmd.operator.name"),
        description=cmd("cmd.operator.description"),
        default_permissions=discord.Permissions.none(),
        allowed_contexts=app_commands.AppCommandContext(guild=True, dm_channel=True, private_channel=True),
        allowed_installs=app_commands.AppInstallationType(guild=True),
    )

    def __init__(self, bot: Castbot, service: TrustService) -> None:
        self.bot = bot
        self.service = service

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*REPORT_ITEMS, *SHARING_ITEMS)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*REPORT_ITEMS, *SHARING_ITEMS)

    @operator.command(name=cmd("cmd.operator.takedown.name"), description=cmd("cmd.operator.takedown.description"))
    @app_commands.rename(code=cmd("cmd.character.opt.code"))
    @app_commands.describe(code=cmd("cmd.operator.opt.code"))
    async def takedown(self, interaction: Interaction, code: app_commands.Range[str, 1, 40]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        result = await self.service.takedown(actor_of(interaction), code)
        await interaction.followup.send(
            operator_result_text(result, "takedown", locale_of(interaction)), ephemeral=True
        )

    @operator.command(name=cmd("cmd.operator.restore.name"), description=cmd("cmd.operator.restore.description"))
    @app_commands.rename(code=cmd("cmd.character.opt.code"))
    @app_commands.describe(code=cmd("cmd.operator.opt.code"))
    async def restore(self, interaction: Interaction, code: app_commands.Range[str, 1, 40]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        result = await self.service.restore(actor_of(interaction), code)
        text = operator_result_text(result, "restore", locale_of(interaction))
        await interaction.followup.send(text, ephemeral=True)

    @operator.command(name=cmd("cmd.operator.reports.name"), description=cmd("cmd.operator.reports.description"))
    async def reports(self, interaction: Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        page = await self.service.open_reports(actor_of(interaction))
        await interaction.followup.send(reports_text(page, locale_of(interaction)), ephemeral=True)


async def setup(bot: Castbot) -> None:
    await bot.add_cog(OperatorCog(bot, bot.services.trust))
