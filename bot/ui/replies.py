"""Answering an interaction whatever state it is in."""

from __future__ import annotations

import logging
from typing import Any

import discord

log = logging.getLogger(__name__)


async def reply(interaction: discord.Interaction[Any], *, ephemeral: bool = False, **kwargs: Any) -> None:
    """Send the first response, or a followup once the interaction was acknowledged (deferred)."""
    if interaction.response.is_done():
        await interaction.followup.send(ephemeral=ephemeral, **kwargs)
    else:
        await interaction.response.send_message(ephemeral=ephemeral, **kwargs)


def locale_of(interaction: discord.Interaction[Any]) -> str:
    return interaction.locale.value
