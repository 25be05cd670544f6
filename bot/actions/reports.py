"""Report buttons on public cards and on delivered videos made with a shared character, the
reason picker they open, and telling moderators and operators about a report.

All state is in the custom ids (`castbot:report:c:<character>` on a card,
`castbot:report:j:<job>` on a video, `castbot:reportwhy:<kind>:<id>` on the reason picker), so
they work after a restart. A report is stored before anyone is told; a failed post is logged and
never loses it, and the member's click is answered first.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import discord

from bot.actions import actions_of
from bot.actions.languages import guild_language
from bot.i18n import t
from bot.services.guilds import GuildService
from bot.services.trust import REASONS, ReportOutcome, TrustService
from bot.ui.replies import actor_of, locale_of, report_error
from bot.ui.trust import operator_notice, report_done_text, report_prompt_text, server_notice

log = logging.getLogger(__name__)

NOTICE_LOCALE = "en-US"  # operators' DMs and channel: no reader's language is known there


class ReportButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=r"castbot:report:(?P<kind>[cj]):(?P<id>\d+)"
):
    def __init__(self, kind: str, target_id: int, label: str = "") -> None:
        super().__init__(
            discord.ui.Button(
                label=label or "Report",
                style=discord.ButtonStyle.danger,
                custom_id=f"castbot:report:{kind}:{target_id}",
            )
        )
        self.kind = kind
        self.target_id = target_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ReportButton:
        label = item.label if isinstance(item, discord.ui.Button) else None
        return cls(match["kind"], int(match["id"]), label or "")

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        # discord.py only logs what a dynamic item's callback raises: answer it here instead
        try:
            await actions_of(interaction).reports.ask_reason(interaction, self.kind, self.target_id)
        except Exception as exc:
            await report_error(interaction, exc)


class ReasonSelect(
    discord.ui.DynamicItem[discord.ui.Select[discord.ui.View]],
    template=r"castbot:reportwhy:(?P<kind>[cj]):(?P<id>\d+)",
):
    def __init__(self, kind: str, target_id: int, locale: str = "en-US") -> None:
        options = [discord.SelectOption(label=t(f"trust.reason.{r}", locale)[:100], value=r) for r in REASONS]
        super().__init__(
            discord.ui.Select(
                custom_id=f"castbot:reportwhy:{kind}:{target_id}",
                placeholder=t("trust.report.placeholder", locale)[:150],
                options=options,
                min_values=1,
                max_values=1,
            )
        )
        self.kind = kind
        self.target_id = target_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ReasonSelect:
        return cls(match["kind"], int(match["id"]), locale_of(interaction))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            reason = self.item.values[0] if self.item.values else ""
            await actions_of(interaction).reports.record(interaction, self.kind, self.target_id, reason)
        except Exception as exc:
            await report_error(interaction, exc)


REPORT_ITEMS = (ReportButton, ReasonSelect)


def report_button(kind: str, target_id: int, locale: str) -> ReportButton:
    return ReportButton(kind, target_id, t("trust.button.report", locale))


def card_report_view(character_id: int, locale: str) -> discord.ui.View:
    """The Report button a public character's card carries (the gallery adds it to its cards)."""
    view = discord.ui.View(timeout=None)
    view.add_item(report_button("c", character_id, locale))
    return view


class ReportActions:
    def __init__(self, client: discord.Client, trust: TrustService, guilds: GuildService) -> None:
        self._client = client
        self._trust = trust
        self._guilds = guilds

    async def ask_reason(self, interaction: discord.Interaction[Any], kind: str, target_id: int) -> None:
        """The Report button: which shared characters it names, and a picker of reasons."""
        locale = locale_of(interaction)
        rows = await self._trust.reportable(actor_of(interaction), kind, target_id)
        view = discord.ui.View(timeout=None)
        view.add_item(ReasonSelect(kind, target_id, locale))
        await interaction.response.send_message(
            report_prompt_text([r.name for r in rows], locale),
            view=view,
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )
        view.stop()  # the registered dynamic item handles the choice

    async def record(self, interaction: discord.Interaction[Any], kind: str, target_id: int, reason: str) -> None:
        """Store the report, answer the member, then tell the moderators and operators."""
        await interaction.response.defer()  # the write may wait for the database: acknowledge first
        outcome = await self._trust.report(actor_of(interaction), kind, target_id, reason)
        await interaction.edit_original_response(content=report_done_text(outcome, locale_of(interaction)), view=None)
        if not outcome.already:
            await self.notify(outcome)

    async def notify(self, outcome: ReportOutcome) -> None:
        """Post to each owner's guild's report channel, to the operators' channel if one is set, and
        DM each operator; failures are logged."""
        none = discord.AllowedMentions.none()
        for reported in outcome.characters:
            if reported.report_channel_id is None:
                continue
            try:
                channel = self._client.get_partial_messageable(
                    reported.report_channel_id, guild_id=reported.home_guild_id
                )
                locale = await guild_language(self._client, self._guilds, reported.home_guild_id, NOTICE_LOCALE)
                await channel.send(server_notice(outcome, reported, locale), allowed_mentions=none)
            except discord.HTTPException as exc:
                log.warning("report of character %d: report channel post failed (%s)", reported.character_id, exc)
        if not outcome.characters:
            return
        text = operator_notice(outcome, NOTICE_LOCALE)
        if outcome.operator_channel_id is not None:
            try:
                channel = self._client.get_partial_messageable(outcome.operator_channel_id)
                await channel.send(text, allowed_mentions=none)
            except discord.HTTPException as exc:
                log.warning("report: operator channel post failed (%s)", exc)
        for operator_id in outcome.operator_ids:
            try:
                user = await self._client.fetch_user(operator_id)
                await user.send(text, allowed_mentions=none)
            except discord.HTTPException as exc:
                log.warning("report: DM to operator %d failed (%s)", operator_id, exc)
