"""Who is asking: the plain facts services need to authorise a request, taken from Discord once."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Actor:
    user_id: int
    guild_id: int | None  # None: a DM, where guild commands refuse to run
    role_ids: frozenset[int] = field(default_factory=frozenset)
    manage_guild: bool = False  # Discord's Manage Server permission in this guild
