"""Buttons on job messages: Cancel (status), Re-roll and Make character (result); and the page
buttons of a character list.

All state is in the custom id, so they work after a restart. Views are sent and then stopped,
so clicks always come through the registered DynamicItem classes (never a per-message view kept
in memory); the callbacks call the bot's actions.
"""

from __future__ import annotations

import re
from typing import Any

import discord

from bot.actions import Actions, actions_of
from bot.actions.reports import report_button
from bot.i18n import t
from bot.ui.characters import PAGE_TEMPLATE
from bot.ui.replies import report_error


class _JobButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=r"castbot:(?P<act>x):(?P<job>\d+)"
):
    action = ""
    style = discord.ButtonStyle.secondary

    def __init__(self, job_id: int, label: str = "") -> None:
        super().__init__(
            discord.ui.Button(label=label or self.action, style=self.style, custom_id=f"castbot:{self.action}:{job_id}")
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> _JobButton:
        label = item.label if isinstance(item, discord.ui.Button) else None
        return cls(int(match["job"]), label or "")

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        # discord.py only logs what a dynamic item's callback raises: answer it here instead
        try:
            await self.handle(actions_of(interaction), interaction)
        except Exception as exc:
            await report_error(interaction, exc)

    async def handle(self, actions: Actions, interaction: discord.Interaction[Any]) -> None:
        raise NotImplementedError


class CancelButton(_JobButton, template=r"castbot:cancel:(?P<job>\d+)"):
    action = "cancel"

    async def handle(self, actions: Actions, interaction: discord.Interaction[Any]) -> None:
        await actions.generation.cancel(interaction, self.job_id)


class RerollButton(_JobButton, template=r"castbot:reroll:(?P<job>\d+)"):
    action = "reroll"
    style = discord.ButtonStyle.primary

    async def handle(self, actions: Actions, interaction: discord.Interaction[Any]) -> None:
        await actions.generation.reroll(interaction, self.job_id)


class MakeCharacterButton(_JobButton, template=r"castbot:mkchar:(?P<job>\d+)"):
    action = "mkchar"

    async def handle(self, actions: Actions, interaction: discord.Interaction[Any]) -> None:
        await actions.characters.ask_name_for_job(interaction, self.job_id)


def status_view(job_id: int, locale: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id, t("button.cancel", locale)))
    return view


def result_view(job_id: int, locale: str, *, report: bool = False) -> discord.ui.View:
    """`report`: the video used a character someone else shared (bot/actions/reports.py)."""
    view = discord.ui.View(timeout=None)
    view.add_item(RerollButton(job_id, t("button.reroll", locale)))
    view.add_item(MakeCharacterButton(job_id, t("button.make_character", locale)))
    if report:
        view.add_item(report_button("j", job_id, locale))
    return view


JOB_BUTTONS = (CancelButton, RerollButton, MakeCharacterButton)


class PageButton(discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=PAGE_TEMPLATE):
    """◀ / ▶ of a character list (built by bot.ui.characters.page_reply): the page is rebuilt for
    whoever clicks, with *their* visibility."""

    def __init__(self, item: discord.ui.Button[discord.ui.View], scope: str, page: int) -> None:
        super().__init__(item)
        self.scope = scope
        self.page = page

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> PageButton:
        button = item if isinstance(item, discord.ui.Button) else discord.ui.Button(custom_id=match.string)
        return cls(button, match["scope"], int(match["page"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        # discord.py only logs what a dynamic item's callback raises: answer it here instead
        try:
            await actions_of(interaction).characters.show_page(interaction, self.scope, self.page)
        except Exception as exc:
            await report_error(interaction, exc)
