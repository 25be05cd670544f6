"""What /about shows: version, configured providers, their breaker state and a typical price."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from bot import __version__
from bot.config import Settings
from bot.db import Database
from bot.providers.base import Orientation, Quality, VideoProvider
from bot.providers.pricing import UnknownPrice
from bot.services.health import HealthService
from bot.services.routing import typical_request
from bot.services.storage import StorageService, StorageUsage

# The job /about prices: 8 s, landscape, standard quality, one character.
TYPICAL_SECONDS = 8
TYPICAL_CHARACTERS = 1


@dataclass(frozen=True)
class ProviderStatus:
    name: str
    state: str  # closed | open | half_open | disabled
    open_until: float | None = None
    disabled_reason: str | None = None
    paid: bool = True
    price_micros: int | None = None  # estimate of the typical job; None when it has no price
    model: str = ""  # the engine behind the provider (fal serves many), "" when it has one


@dataclass(frozen=True)
class AboutInfo:
    version: str
    providers: tuple[ProviderStatus, ...]
    typical_seconds: int = TYPICAL_SECONDS
    storage: StorageUsage | None = None  # shown to moderators only


def typical_price(provider: VideoProvider) -> int | None:
    """The worst-case estimate of the typical job on `provider`, at the length it would make."""
    seconds = provider.capabilities.fit_seconds(TYPICAL_SECONDS)
    request = typical_request(seconds, Orientation.LANDSCAPE, Quality.STANDARD, TYPICAL_CHARACTERS)
    try:
        return provider.estimate(replace(request, seconds=seconds))
    except UnknownPrice:
        return None


class AboutService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        providers: Mapping[str, VideoProvider],
        health: HealthService,
        clock: Callable[[], float] = time.time,
        storage: StorageService | None = None,
    ) -> None:
        self._settings = settings
        self._storage = storage
        self._db = db
        self._providers = providers
        self._health = health
        self._clock = clock
        self._prices: dict[str, int | None] | None = None

    async def _typical_prices(self) -> dict[str, int | None]:
        """Prices do not change while running: computed once."""
        if self._prices is None:
            self._prices = {name: typical_price(p) for name, p in self._providers.items()}
        return self._prices

    async def about(self, *, with_storage: bool = False) -> AboutInfo:
        """`with_storage`: include DATA_DIR's usage (the caller decided the reader is a moderator)."""
        names = list(self._providers)
        states = await self._health.states(names)
        prices = await self._typical_prices()
        now = self._clock()
        statuses = []
        for name in names:
            breaker = states[name]
            state = breaker.state
            if state == "open" and (breaker.open_until is None or breaker.open_until <= now):
                state = "half_open"  # its pause is over: the next job is the recovery probe
            statuses.append(
                ProviderStatus(
                    name=name,
                    state=state,
                    open_until=breaker.open_until if state == "open" else None,
                    disabled_reason=breaker.reason,
                    paid=name != "local",
                    price_micros=prices.get(name),
                    model=self._providers[name].model,
                )
            )
        usage = await self._storage.usage() if with_storage and self._storage is not None else None
        return AboutInfo(version=__version__, providers=tuple(statuses), storage=usage)
