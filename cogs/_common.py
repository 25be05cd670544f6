"""What every cog does the same way: turn an interaction into plain values."""

from __future__ import annotations

from typing import Any

import discord

from bot.services.actors import Actor


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
