"""Buttons on job messages: Cancel (status), Re-roll and Make character (result).

All state is in the custom id, so they work after a restart. Views are sent and then stopped,
so clicks always come through the registered DynamicItem classes (never a per-message view kept
in memory); the callbacks hand over to the generate cog, found by name.
"""

from __future__ import annotations

import re
from typing import Any, Protocol, cast

import discord

from bot.i18n import t
from bot.ui.replies import report_error

GENERATE_COG = "Generate"
DELIVERY_COG = "DeliveryCog"


class JobButtonHandler(Protocol):
    async def cancel(self, interaction: discord.Interaction[Any], job_id: int) -> None: ...
    async def reroll(self, interaction: discord.Interaction[Any], job_id: int) -> None: ...
    async def make_character(self, interaction: discord.Interaction[Any], job_id: int) -> None: ...


def _handler(interaction: discord.Interaction[Any]) -> JobButtonHandler:
    cog = interaction.client.get_cog(GENERATE_COG)
    if cog is None:
        raise RuntimeError("the generate cog is not loaded")
    return cast(JobButtonHandler, cog)


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
            await self.handle(_handler(interaction), interaction)
        except Exception as exc:
            await report_error(interaction, exc)

    async def handle(self, handler: JobButtonHandler, interaction: discord.Interaction[Any]) -> None:
        raise NotImplementedError


class CancelButton(_JobButton, template=r"castbot:cancel:(?P<job>\d+)"):
    action = "cancel"

    async def handle(self, handler: JobButtonHandler, interaction: discord.Interaction[Any]) -> None:
        await handler.cancel(interaction, self.job_id)


class RerollButton(_JobButton, template=r"castbot:reroll:(?P<job>\d+)"):
    action = "reroll"
    style = discord.ButtonStyle.primary

    async def handle(self, handler: JobButtonHandler, interaction: discord.Interaction[Any]) -> None:
        await handler.reroll(interaction, self.job_id)


class MakeCharacterButton(_JobButton, template=r"castbot:mkchar:(?P<job>\d+)"):
    action = "mkchar"

    async def handle(self, handler: JobButtonHandler, interaction: discord.Interaction[Any]) -> None:
        await handler.make_character(interaction, self.job_id)


def status_view(job_id: int, locale: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id, t("button.cancel", locale)))
    return view


def result_view(job_id: int, locale: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(RerollButton(job_id, t("button.reroll", locale)))
    view.add_item(MakeCharacterButton(job_id, t("button.make_character", locale)))
    return view


JOB_BUTTONS = (CancelButton, RerollButton, MakeCharacterButton)
