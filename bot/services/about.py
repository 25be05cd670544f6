"""What /about shows: version, configured providers and their health."""

from __future__ import annotations

from dataclasses import dataclass

from bot import __version__
from bot.config import Settings
from bot.db import Database
from bot.store.provider_health import all_health


@dataclass(frozen=True)
class ProviderStatus:
    name: str
    state: str  # closed | open | half_open | disabled
    open_until: float | None = None
    disabled_reason: str | None = None
    paid: bool = True


@dataclass(frozen=True)
class AboutInfo:
    version: str
    providers: tuple[ProviderStatus, ...]


class AboutService:
    def __init__(self, settings: Settings, db: Database) -> None:
        self._settings = settings
        self._db = db

    async def about(self) -> AboutInfo:
        health = await all_health(self._db)
        statuses = []
        for name in self._settings.enabled_providers():
            row = health.get(name)
            statuses.append(
                ProviderStatus(
                    name=name,
                    state=row.state if row else "closed",
                    open_until=row.open_until if row else None,
                    disabled_reason=row.disabled_reason if row else None,
                    paid=name != "local",
                )
            )
        return AboutInfo(version=__version__, providers=tuple(statuses))
