"""Moderator checks and guild settings persistence."""

from __future__ import annotations

import pytest

from bot.db import Database
from bot.errors import GuildOnly, NotModerator
from bot.services.actors import Actor
from bot.services.guilds import GuildService


@pytest.fixture
async def service(db: Database) -> GuildService:
    return GuildService(db, clock=lambda: 1_790_000_000.0)  # on each engine (the `db` fixture)


async def test_defaults_without_a_row(service: GuildService) -> None:
    settings = await service.get(5)
    assert settings.monthly_limit_micros is None
    assert (settings.timezone, settings.priority, settings.fallback) == ("UTC", "cost", False)
    assert (settings.max_active_per_member, settings.max_active_per_guild) == (2, 10)


async def test_manage_server_or_configured_role_makes_a_moderator(service: GuildService) -> None:
    admin = Actor(user_id=1, guild_id=5, manage_guild=True)
    member = Actor(user_id=2, guild_id=5, role_ids=frozenset({77}))
    assert await service.is_moderator(admin)
    assert not await service.is_moderator(member)
    with pytest.raises(NotModerator):
        await service.update(member, moderator_role_id=77)
    await service.update(admin, moderator_role_id=77)
    assert await service.is_moderator(member)
    # the role is per guild: the same role id elsewhere grants nothing
    assert not await service.is_moderator(Actor(user_id=2, guild_id=6, role_ids=frozenset({77})))


async def test_dm_actor_is_refused(service: GuildService) -> None:
    with pytest.raises(GuildOnly):
        await service.require_moderator(Actor(user_id=1, guild_id=None, manage_guild=True))


async def test_update_round_trips_every_kind_of_value(service: GuildService) -> None:
    admin = Actor(user_id=1, guild_id=5, manage_guild=True)
    saved = await service.update(
        admin, providers=("kling", "local"), fallback=True, timezone="Europe/Berlin", monthly_limit_micros=5_000_000
    )
    assert saved.providers == ("kling", "local")
    assert saved.fallback is True
    assert (saved.timezone, saved.monthly_limit_micros) == ("Europe/Berlin", 5_000_000)
    with pytest.raises(ValueError, match="unknown guild setting"):
        await service.update(admin, colour="red")
