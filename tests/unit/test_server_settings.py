"""/settings validation: moderators only, values checked, providers limited to configured ones."""

from __future__ import annotations

import pytest

from bot.db import Database
from bot.errors import NotModerator
from bot.i18n import t
from bot.services.actors import Actor
from bot.services.guilds import GuildService
from bot.services.server_settings import SettingsProblem, SettingsService, timezones_matching

GUILD = 42
ADMIN = Actor(user_id=1, guild_id=GUILD, manage_guild=True)
MEMBER = Actor(user_id=2, guild_id=GUILD)


class RecordingHealth:
    def __init__(self) -> None:
        self.enabled: list[tuple[int, str]] = []

    async def enable(self, actor: Actor, provider: str) -> None:
        self.enabled.append((actor.user_id, provider))


@pytest.fixture
async def guilds(db: Database) -> GuildService:
    return GuildService(db)  # on each engine (the `db` fixture)


def message(problem: SettingsProblem) -> str:
    return t(problem.key, "en", **problem.params)


async def test_anyone_sees_only_moderators_change(guilds: GuildService) -> None:
    service = SettingsService(guilds, ("kling", "local"), RecordingHealth())
    assert (await service.show(MEMBER)).timezone == "UTC"
    with pytest.raises(NotModerator):
        await service.change(MEMBER, timezone="Europe/Berlin")
    with pytest.raises(NotModerator):  # invalid values don't reveal anything before the check
        await service.change(MEMBER, timezone="Nowhere/Land")
    change = await service.change(
        ADMIN,
        moderator_role_id=77,
        timezone="europe/berlin",
        locale="pt-BR",
        providers=" Local, kling,local ",
        priority="stability",
        fallback=True,
    )
    saved = change.settings
    assert change.changed == ("moderator_role_id", "timezone", "locale", "providers", "priority", "fallback")
    assert (saved.moderator_role_id, saved.timezone, saved.locale) == (77, "Europe/Berlin", "pt-BR")
    assert (saved.providers, saved.priority, saved.fallback) == (("local", "kling"), "stability", True)
    # the new moderator role works at once, in the service
    await service.change(Actor(user_id=5, guild_id=GUILD, role_ids=frozenset({77})), fallback=False)
    assert (await guilds.get(GUILD)).fallback is False
    await service.change(ADMIN, providers="default")
    assert (await guilds.get(GUILD)).providers is None


async def test_values_are_validated(guilds: GuildService) -> None:
    service = SettingsService(guilds, ("kling", "local"), RecordingHealth())
    with pytest.raises(SettingsProblem) as bad_zone:
        await service.change(ADMIN, timezone="Europe/Berln")
    assert "Europe/Berlin" in message(bad_zone.value)
    with pytest.raises(SettingsProblem) as bad_provider:
        await service.change(ADMIN, providers="kling,openai")
    text = message(bad_provider.value)
    assert "`openai`" in text
    assert "`kling`, `local`" in text
    with pytest.raises(SettingsProblem):
        await service.change(ADMIN, providers=" , ")
    with pytest.raises(SettingsProblem):
        await service.change(ADMIN, locale="tlh")
    with pytest.raises(SettingsProblem):
        await service.change(ADMIN, priority="speed")
    with pytest.raises(SettingsProblem) as everyone:
        await service.change(ADMIN, moderator_role_id=GUILD)
    assert "@everyone" in message(everyone.value)
    assert (await guilds.get(GUILD)).timezone == "UTC"  # nothing half-saved


async def test_enable_provider_goes_to_the_health_service(guilds: GuildService) -> None:
    health = RecordingHealth()
    service = SettingsService(guilds, ("kling", "local"), health)
    with pytest.raises(NotModerator):
        await service.change(MEMBER, enable_provider="kling")
    with pytest.raises(SettingsProblem):
        await service.change(ADMIN, enable_provider="openai")
    change = await service.change(ADMIN, enable_provider="Kling")
    assert change.enabled_provider == "kling"
    assert health.enabled == [(1, "kling")]


def test_timezone_suggestions() -> None:
    assert timezones_matching("berl")[0] == "Europe/Berlin"
    assert "America/New_York" in timezones_matching("new y")
    assert timezones_matching("")[0] == "UTC"
    assert len(timezones_matching("a")) == 25
    assert timezones_matching("zzzz-nothing") == []
