"""Which providers may run a request, and in what order (ARCHITECTURE.md, "Routing").

Decisions this module makes, so callers need not:

- **Allowed**: the guild's provider list, in the guild's order, keeping only configured ones; a
  guild without a list gets the instance's PROVIDERS order.
- **Length**: a provider takes a request when it can make a video *at least* as long as asked:
  `fit_seconds` rounds up to its next allowed length (and the estimate prices that length). A
  request longer than its longest video excludes it. `Candidate.seconds` is the rounded length;
  send it as `GenerationRequest.seconds` (the relay refuses lengths outside its list).
- **Breaker**: `disabled`, `open` before its `open_until`, and `half_open` with its probe taken
  are skipped. An expired `open` stays in: `HealthService.allow()` hands out the single probe.
- **Requested provider** (the member's `provider` option): the only candidate, never followed by
  a fallback (the member chose it), and every reason it cannot run is a specific error.
- **Priority** `cost`: cheapest estimate, then breaker health, then guild order. `stability`:
  closed before probing, then fewer failures in the breaker window, then guild order.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bot.domain.text import Lines, Localizable
from bot.errors import UserFacingError
from bot.providers.base import (
    Ambiguous,
    CharacterAsset,
    CharacterRef,
    GenerationRequest,
    NotSent,
    Orientation,
    ProviderError,
    Quality,
    Rejected,
    RejectReason,
    VideoProvider,
)
from bot.providers.pricing import UnknownPrice

if TYPE_CHECKING:
    from bot.services.guilds import GuildSettings

log = logging.getLogger(__name__)

BreakerStateName = Literal["closed", "open", "half_open", "disabled"]


@dataclass(frozen=True)
class BreakerState:
    """One provider's circuit breaker as HealthService stores it (instance-wide, not per guild)."""

    provider: str
    state: BreakerStateName = "closed"
    open_until: float | None = None  # set while open: when the next probe may go
    reason: str | None = None  # why it is disabled; safe to show a member
    probe_in_flight: bool = False  # half-open and its one probe job is out
    recent_failures: int = 0  # failures in the breaker window (for `stability` ordering)
    recent_events: int = 0  # successes + failures in the window

    def blocked(self, now: float) -> bool:
        """True when routing must skip the provider right now."""
        if self.state == "disabled":
            return True
        if self.state == "open":
            return self.open_until is not None and now < self.open_until
        return self.state == "half_open" and self.probe_in_flight

    def rank(self) -> int:
        """0 for closed, 1 for a provider that would be a recovery probe."""
        return 0 if self.state == "closed" else 1


@dataclass(frozen=True)
class RouteNeeds:
    seconds: int
    orientation: Orientation
    quality: Quality
    n_characters: int
    refused: frozenset[str] = frozenset()  # providers some character of the prompt cannot be used on


@dataclass(frozen=True)
class Candidate:
    name: str
    provider: VideoProvider
    estimate_micros: int
    seconds: int  # the length this provider will make (the request's, rounded up to an allowed one)


@dataclass(frozen=True)
class Exclusion:
    """Why one provider cannot run a request: an i18n key under `route.` and its parameters."""

    provider: str
    key: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> Localizable:
        return Localizable(self.key, {"provider": self.provider, **self.params})


class ProviderNotAllowed(UserFacingError):
    """The requested provider is not configured on this bot, or not allowed in this server."""

    def __init__(self, exclusion: Exclusion) -> None:
        super().__init__(exclusion.key, provider=exclusion.provider, **exclusion.params)
        self.exclusion = exclusion


class NoProviderAvailable(UserFacingError):
    """Nothing can run the request: one provider's specific reason, or every provider's reasons."""

    def __init__(self, exclusions: Sequence[Exclusion]) -> None:
        self.exclusions = tuple(exclusions)
        if len(self.exclusions) == 1:
            only = self.exclusions[0]
            super().__init__(only.key, provider=only.provider, **only.params)
        else:
            # Rendered by whoever shows the error, in the reader's language, line by line.
            super().__init__("route.none_available", reasons=self.reasons)

    @property
    def reasons(self) -> Lines | Localizable:
        if not self.exclusions:
            return Localizable("route.no_providers")
        return Lines(tuple(Localizable("route.reason_line", {"reason": e.text}) for e in self.exclusions))


def typical_request(
    seconds: int, orientation: Orientation, quality: Quality, n_characters: int, prompt: str = ""
) -> GenerationRequest:
    """A request of this shape with placeholder characters, for estimates before characters exist."""
    refs = tuple(
        CharacterRef(
            key=f"character{i}",
            asset=CharacterAsset(
                character_id=0,
                name=f"character{i}",
                description="",
                clip_path=Path(),
                frame_paths=(),
                clip_duration=0.0,
            ),
        )
        for i in range(n_characters)
    )
    return GenerationRequest(prompt=prompt, seconds=seconds, orientation=orientation, quality=quality, characters=refs)


def _capability_exclusion(name: str, provider: VideoProvider, needs: RouteNeeds) -> Exclusion | None:
    caps = provider.capabilities
    if needs.n_characters > caps.max_characters:
        return Exclusion(name, "route.too_many_characters", {"max": caps.max_characters, "count": needs.n_characters})
    if needs.n_characters < caps.min_characters:
        return Exclusion(name, "route.needs_character", {"min": caps.min_characters})
    if needs.seconds > caps.seconds[-1]:
        return Exclusion(name, "route.too_long", {"max": caps.seconds[-1], "seconds": needs.seconds})
    if needs.orientation not in caps.orientations:
        return Exclusion(name, "route.orientation", {"orientation": needs.orientation.value})
    if needs.quality not in caps.qualities:
        return Exclusion(name, "route.quality", {"quality": needs.quality.value})
    if name in needs.refused:
        return Exclusion(name, "route.refused")
    return None


def _breaker_exclusion(name: str, state: BreakerState | None, now: float) -> Exclusion | None:
    if state is None or not state.blocked(now):
        return None
    if state.state == "disabled":
        return Exclusion(name, "route.disabled", {"reason": state.reason or "?"})
    if state.state == "open" and state.open_until is not None:
        # Discord renders <t:…:R> as "in 3 minutes" in the reader's own language and time zone
        return Exclusion(name, "route.paused", {"when": f"<t:{math.ceil(state.open_until)}:R>"})
    return Exclusion(name, "route.probing")


def route(
    needs: RouteNeeds,
    providers: Mapping[str, VideoProvider],
    guild: GuildSettings,
    states: Mapping[str, BreakerState],
    requested: str | None = None,
    *,
    request: GenerationRequest | None = None,
    now: float | None = None,
) -> list[Candidate]:
    """The providers that can run `needs` in this guild, best first; never empty.

    Raises ProviderNotAllowed / NoProviderAvailable (UserFacingError) when nothing can run it.
    `request` (the real one, characters without handles are fine) gives exact estimates; without
    it a request with placeholder characters is estimated. `now` defaults to the wall clock.
    """
    current = time.time() if now is None else now
    allowed = _allowed(providers, guild)
    if requested is not None:
        if requested not in providers:
            raise ProviderNotAllowed(Exclusion(requested, "route.not_configured", {"available": _names(providers)}))
        if requested not in allowed:
            raise ProviderNotAllowed(Exclusion(requested, "route.not_allowed", {"allowed": _names(allowed)}))
        allowed = [requested]

    base = (
        request
        if request is not None
        else typical_request(needs.seconds, needs.orientation, needs.quality, needs.n_characters)
    )
    ranked: list[tuple[tuple[int, ...], Candidate]] = []
    exclusions: list[Exclusion] = []
    if guild.providers is not None:
        exclusions += [
            Exclusion(name, "route.not_configured", {"available": _names(providers)})
            for name in guild.providers
            if name not in providers
        ]
    for order, name in enumerate(allowed):
        provider = providers[name]
        state = states.get(name)
        excluded = _capability_exclusion(name, provider, needs) or _breaker_exclusion(name, state, current)
        if excluded is not None:
            exclusions.append(excluded)
            continue
        seconds = provider.capabilities.fit_seconds(needs.seconds)
        try:
            estimate = provider.estimate(replace(base, seconds=seconds))
        except UnknownPrice as exc:
            log.warning("no price for %s (%s): it cannot be routed to", name, exc)
            exclusions.append(Exclusion(name, "route.no_price"))
            continue
        health = state.rank() if state is not None else 0
        failures = state.recent_failures if state is not None else 0
        key = (health, failures, order) if guild.priority == "stability" else (estimate, health, order)
        ranked.append((key, Candidate(name, provider, estimate, seconds)))
    if not ranked:
        raise NoProviderAvailable(exclusions)
    ranked.sort(key=lambda item: item[0])
    return [candidate for _, candidate in ranked]


def _allowed(providers: Mapping[str, VideoProvider], guild: GuildSettings) -> list[str]:
    if guild.providers is None:
        return list(providers)
    return [name for name in dict.fromkeys(guild.providers) if name in providers]


def _names(names: Mapping[str, Any] | Sequence[str]) -> str:
    return ", ".join(f"`{n}`" for n in names) or "—"


def fallback_allowed(error: ProviderError) -> bool:
    """May the job move on to the next provider after `error`? Only after a *safe* outcome.

    Not sent (connect errors, 503, rate limits, auth/balance) and "this provider cannot do it"
    are safe. Never after an ambiguous submit (the first provider may be rendering and billing),
    a moderation refusal (the content is the problem, not the provider) or an invalid request.
    """
    if isinstance(error, Ambiguous):
        return False
    if isinstance(error, NotSent):
        return True
    if isinstance(error, Rejected):
        return error.reason is RejectReason.UNSUPPORTED
    return False


def chain_hold(candidates: Sequence[Candidate], fallback: bool) -> int:
    """The budget hold for a job that may run on `candidates` in turn.

    Were a provider to bill on submit, the hold would have to cover every hop. Our adapters all bill
    on success only, and a fallback happens only when the previous hop provably made no job, so at
    most one provider bills a job: the hold is the most expensive hop, not the sum.
    Without fallback only the first candidate can run.
    """
    if not candidates:
        return 0
    if not fallback:
        return candidates[0].estimate_micros
    return max(c.estimate_micros for c in candidates)


__all__ = [
    "BreakerState",
    "BreakerStateName",
    "Candidate",
    "Exclusion",
    "NoProviderAvailable",
    "ProviderNotAllowed",
    "RouteNeeds",
    "chain_hold",
    "fallback_allowed",
    "route",
    "typical_request",
]
