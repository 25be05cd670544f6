"""Answering an interaction whatever state it is in."""

from __future__ import annotations

import logging
from typing import Any

import discord

from bot.services.actors import Actor

log = logging.getLogger(__name__)

MAX_CONTENT = 2000  # Discord's limit on a message's content


def fit_content(text: str, limit: int = MAX_CONTENT) -> str:
    """`text` cut to Discord's content limit at a line break where possible, marked with "…"."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    newline = cut.rfind("\n")
    if newline > limit // 2:
        cut = cut[:newline]
    return cut + "…"


async def reply(interaction: discord.Interaction[Any], *, ephemeral: bool = False, **kwargs: Any) -> None:
    """Send the first response, or a followup once the interaction was acknowledged (deferred)."""
    if interaction.response.is_done():
        await interaction.followup.send(ephemeral=ephemeral, **kwargs)
    else:
        await interaction.response.send_message(ephemeral=ephemeral, **kwargs)


async def report_error(interaction: discord.Interaction[Any], error: Exception) -> None:
    """An error raised outside a command's own call (a button, a modal, a select): answered the
    way the command tree answers a command's errors, so no click is left without a reply."""
    await interaction.client.tree.on_error(interaction, error)


def locale_of(interaction: discord.Interaction[Any]) -> str:
    return interaction.locale.value


def actor_of(interaction: discord.Interaction[Any]) -> Actor:
    """The member behind an interaction, as services see them (no discord objects past here)."""
    user = interaction.user
    roles = frozenset(r.id for r in user.roles) if isinstance(user, discord.Member) else frozenset()
    return Actor(
        user_id=user.id,
        guild_id=interaction.guild_id,
        role_ids=roles,
        manage_guild=interaction.permissions.manage_guild,
    )
