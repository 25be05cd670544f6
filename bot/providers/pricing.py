"""The price book: integer micro-USD per provider, model and size.

Defaults are the vendors' list prices (sources in README.md, "Providers"). Adapters with a
per-model table (gemini, fal) carry their model's default price there and ask the book first, so
an operator can override any entry with PRICE_OVERRIDES, e.g. `{"fal:wan/v2.6/reference-to-video:720p": 120000}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal, InvalidOperation

MICROS_PER_USD = 1_000_000

# key -> micro-USD. Keys: "<provider>:<model>:<size or tier>"; per second unless noted.
DEFAULT_PRICES: dict[str, int] = {
    # OpenAI Videos API shape, per second of output.
    "openai:sora-2:720x1280": 100_000,
    "openai:sora-2:1280x720": 100_000,
    "openai:sora-2-pro:720x1280": 300_000,
    "openai:sora-2-pro:1280x720": 300_000,
    "openai:sora-2-pro:1024x1792": 500_000,
    "openai:sora-2-pro:1792x1024": 500_000,
    "openai:sora-2-pro:1080x1920": 700_000,
    "openai:sora-2-pro:1920x1080": 700_000,
    # Sora relay shape, flat per video.
    "relay:sora-2:video": 120_000,
    "relay:sora-2-pro:video": 800_000,
    # Kling 3.0 Omni, no video input; per second (0.6/0.8 u/s without audio, 0.8/1.0 with).
    "kling:kling-3.0-omni:720p": 84_000,
    "kling:kling-3.0-omni:1080p": 112_000,
    "kling:kling-3.0-omni:720p-audio": 112_000,
    "kling:kling-3.0-omni:1080p-audio": 140_000,
    # Offline renderer.
    "local:local:video": 0,
}


class UnknownPrice(KeyError):
    """No price for this key: the request cannot be estimated, so it must not be admitted."""


@dataclass(frozen=True)
class PriceBook:
    prices: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PRICES))

    @classmethod
    def with_overrides(cls, overrides: Mapping[str, int] | None) -> PriceBook:
        merged = dict(DEFAULT_PRICES)
        for key, value in (overrides or {}).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"price for {key!r} must be a non-negative integer of micro-USD")
            merged[key] = value
        return cls(merged)

    def price(self, provider: str, model: str, unit: str, default: int | None = None) -> int:
        """The book's price for the key, else `default` (an adapter's own model table), else refuse."""
        key = f"{provider}:{model}:{unit}"
        found = self.prices.get(key, default)
        if found is None:
            raise UnknownPrice(key)
        return found

    def per_second(self, provider: str, model: str, unit: str, seconds: int, default: int | None = None) -> int:
        return self.price(provider, model, unit, default) * seconds


def usd_to_micros(amount: Decimal | int | str) -> int:
    """Exact conversion, rounding up fractions of a micro-dollar so that estimates never undercount."""
    try:
        value = Decimal(amount)
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"not an amount: {amount!r}") from exc
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {amount!r}")
    return int((value * MICROS_PER_USD).to_integral_value(rounding=ROUND_CEILING))
