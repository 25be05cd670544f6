"""Discord-aware use cases: what a command, button or the delivery loop does with Discord.

Between the cogs (which parse options) and the UI (which renders values): an action takes an
interaction or a job, calls the services, and posts, edits or answers through `bot.ui`. The bot
owns one `Actions`, built in the composition root (`bot/app.py`); buttons and modals reach it
from `interaction.client`, never through a cog.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord

if TYPE_CHECKING:  # the modules below import `actions_of` from here
    from bot.actions.characters import CharacterActions
    from bot.actions.delivery import DeliveryActions
    from bot.actions.gallery import GalleryActions
    from bot.actions.generation import GenerationActions
    from bot.actions.reports import ReportActions
    from bot.actions.sharing import SharingActions


@dataclass(frozen=True)
class Actions:
    generation: GenerationActions
    delivery: DeliveryActions
    characters: CharacterActions
    gallery: GalleryActions
    reports: ReportActions
    sharing: SharingActions


def actions_of(interaction: discord.Interaction[Any]) -> Actions:
    """The bot's actions, for a button or modal (they are built by discord.py, not by us)."""
    actions = getattr(interaction.client, "actions", None)
    if not isinstance(actions, Actions):
        raise RuntimeError("the client has no actions")
    return actions
