"""/settings: show a guild's settings to anyone; validate and save changes for moderators.

Values arrive as typed by a moderator (or picked from Discord's choices, which a modified client
can bypass), so every one is checked here; the moderator check runs on every call.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

from bot.domain.locales import LOCALES
from bot.domain.periods import is_timezone
from bot.errors import GuildOnly, UserFacingError
from bot.services.actors import Actor
from bot.services.guilds import GuildService, GuildSettings

PRIORITIES = ("cost", "stability")
DEFAULT_PROVIDERS_WORDS = frozenset({"default", "all", "reset"})
MAX_CHOICES = 25


class SettingsProblem(UserFacingError):
    pass


class ProviderEnabler(Protocol):
    """The router's HealthService.enable: clears a disabled/open breaker (moderator only)."""

    async def enable(self, actor: Actor, provider: str) -> object: ...


@dataclass(frozen=True)
class SettingsChange:
    settings: GuildSettings
    changed: tuple[str, ...]  # setting names saved, in order
    enabled_provider: str | None = None


@cache
def _zones() -> tuple[str, ...]:
    from zoneinfo import available_timezones

    # Legacy aliases ("US/Eastern", "Etc/GMT+3") stay valid to type, but suggestions show canonical names.
    return tuple(sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/"))))


def timezones_matching(typed: str, limit: int = MAX_CHOICES) -> list[str]:
    """IANA zones for autocomplete: prefix matches of the whole name or its city first, then substrings."""
    needle = typed.strip().lower().replace(" ", "_")
    zones = (*_zones(), "UTC")
    if not needle:
        return ["UTC", *_zones()[: limit - 1]]
    prefix = [z for z in zones if z.lower().startswith(needle) or z.rsplit("/", 1)[-1].lower().startswith(needle)]
    inside = [z for z in zones if needle in z.lower() and z not in prefix]
    return (prefix + inside)[:limit]


class SettingsService:
    def __init__(
        self,
        guilds: GuildService,
        configured_providers: Sequence[str],
        health: ProviderEnabler,
    ) -> None:
        self._guilds = guilds
        self._configured = tuple(configured_providers)
        self._health = health

    @property
    def configured_providers(self) -> tuple[str, ...]:
        return self._configured

    async def show(self, actor: Actor) -> GuildSettings:
        if actor.guild_id is None:
            raise GuildOnly()
        return await self._guilds.get(actor.guild_id)

    async def change(
        self,
        actor: Actor,
        *,
        moderator_role_id: int | None = None,
        timezone: str | None = None,
        locale: str | None = None,
        providers: str | None = None,
        priority: str | None = None,
        fallback: bool | None = None,
        enable_provider: str | None = None,
    ) -> SettingsChange:
        """Validate every given option, then save them together. None means "leave as is"."""
        guild_id = await self._guilds.require_moderator(actor)
        changes: dict[str, Any] = {}
        if moderator_role_id is not None:
            if moderator_role_id == guild_id:  # @everyone's id is the guild's: everyone would moderate
                raise SettingsProblem("settings.error.everyone_role")
            changes["moderator_role_id"] = moderator_role_id
        if timezone is not None:
            changes["timezone"] = self._timezone(timezone)
        if locale is not None:
            if locale not in LOCALES:
                raise SettingsProblem("settings.error.locale", value=locale[:40], known=", ".join(LOCALES))
            changes["locale"] = locale
        if providers is not None:
            changes["providers"] = self._providers(providers)
        if priority is not None:
            if priority not in PRIORITIES:
                raise SettingsProblem("settings.error.priority", known=", ".join(PRIORITIES))
            changes["priority"] = priority
        if fallback is not None:
            changes["fallback"] = fallback
        if enable_provider is not None:
            self._check_configured([enable_provider.strip().lower()])
        if not changes and enable_provider is None:
            return SettingsChange(await self._guilds.get(guild_id), ())
        saved = await self._guilds.update(actor, **changes) if changes else await self._guilds.get(guild_id)
        enabled = None
        if enable_provider is not None:
            enabled = enable_provider.strip().lower()
            await self._health.enable(actor, enabled)
        return SettingsChange(saved, tuple(changes), enabled)

    def _timezone(self, typed: str) -> str:
        name = typed.strip()
        if is_timezone(name):
            return name
        # Be forgiving about case and spaces ("europe/berlin", "New York"), never about meaning.
        wanted = name.lower().replace(" ", "_")
        for zone in (*_zones(), "UTC"):
            if zone.lower() == wanted or zone.rsplit("/", 1)[-1].lower() == wanted:
                return zone
        close = difflib.get_close_matches(name, _zones(), n=3, cutoff=0.6) or timezones_matching(name, 3)
        raise SettingsProblem(
            "settings.error.timezone", value=name[:60], suggestions=", ".join(f"`{z}`" for z in close) or "`UTC`"
        )

    def _providers(self, typed: str) -> tuple[str, ...] | None:
        if typed.strip().lower() in DEFAULT_PROVIDERS_WORDS:
            return None  # back to the instance's PROVIDERS order
        names = list(dict.fromkeys(p.strip().lower() for p in typed.split(",") if p.strip()))
        if not names:
            raise SettingsProblem("settings.error.providers_empty", known=", ".join(self._configured))
        self._check_configured(names)
        return tuple(names)

    def _check_configured(self, names: Sequence[str]) -> None:
        unknown = [n for n in names if n not in self._configured]
        if unknown:
            raise SettingsProblem(
                "settings.error.providers",
                unknown=", ".join(f"`{n[:20].replace('`', '')}`" for n in unknown[:5]),
                known=", ".join(f"`{n}`" for n in self._configured),
            )
