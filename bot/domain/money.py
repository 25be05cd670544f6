"""Money typed by people and shown to people. Inside the bot money is integer micro-USD.

Parsing is strict on purpose: a budget is a promise to a server, so anything that is not
clearly an amount in dollars and cents (`1e9`, `NaN`, `-5`, `5.555`, `1,000.00`) is refused
with a message that says how to write it, rather than guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any

from bot.domain.locales import format_usd_amount

MICROS_PER_USD = 1_000_000
MICROS_PER_CENT = 10_000
MAX_USD = 100_000  # a sane ceiling for any budget typed in Discord
MAX_MICROS = MAX_USD * MICROS_PER_USD
_MAX_TYPED = 32  # longer input is not an amount; also keeps echoed text short

# ASCII digits only: Decimal() would also take Arabic-Indic digits, "NaN", "Infinity" and "1e9".
_AMOUNT = re.compile(r"^(?P<units>[0-9]*)(?:[.,](?P<cents>[0-9]*))?$")
_CURRENCY = re.compile(r"^(?:us\$|\$|usd)?\s*(?P<body>.*?)\s*(?:\$|usd)?$", re.IGNORECASE)


class BadAmount(ValueError):
    """An amount a member typed that cannot be a budget; `key` says why. Shaped like a
    UserFacingError (`key`, `params`): the tree's error handler shows it to the member the same
    way, while the domain stays free of the bot's error classes."""

    def __init__(self, key: str, text: str) -> None:
        super().__init__(key)
        self.key = key
        self.params: dict[str, Any] = {"text": _echo(text), "max": Money(MAX_MICROS)}


def _echo(text: str) -> str:
    # The text is shown back inside `code`: keep it short and free of backticks.
    cleaned = text.strip().replace("`", "'")
    return cleaned if len(cleaned) <= _MAX_TYPED else cleaned[: _MAX_TYPED - 1] + "…"


def parse_usd(text: str) -> int:
    """`5`, `5.50`, `$5`, `5,50`, `5 USD` → micro-USD. Raises BadAmount with a clear reason."""
    raw = text.strip()
    if not raw or len(raw) > _MAX_TYPED:
        raise BadAmount("money.error.format", text)
    match = _CURRENCY.match(raw)
    body = match.group("body") if match else raw
    if body.startswith(("-", "−")) or raw.startswith(("-", "−")):
        raise BadAmount("money.error.negative", text)
    amount = _AMOUNT.match(body)
    if amount is None or not (amount.group("units") or amount.group("cents")):
        raise BadAmount("money.error.format", text)
    cents = amount.group("cents") or ""
    if len(cents) > 2:
        raise BadAmount("money.error.precision", text)
    units = int(amount.group("units") or "0")
    if units > MAX_USD:
        raise BadAmount("money.error.too_large", text)
    micros = units * MICROS_PER_USD + int(cents.ljust(2, "0")) * MICROS_PER_CENT
    if micros > MAX_MICROS:
        raise BadAmount("money.error.too_large", text)
    return micros


def usd_to_micros(usd: Decimal) -> int:
    """An operator's configured amount (e.g. GLOBAL_MONTHLY_BUDGET_USD) in micro-USD, never negative."""
    micros = (usd * MICROS_PER_USD).to_integral_value(rounding=ROUND_DOWN)
    return max(0, int(micros))


def format_usd(micros: int, locale: str | None = "en") -> str:
    """`$5.50` (en), `5,50 $` (de, ru), `5,50 $US` (fr), `5,50 US$` (es), `US$ 5,50` (pt),
    `US$5.50` (zh), as CLDR writes US dollars in the reader's language.

    Whole cents show two decimals; sub-cent amounts (per-second prices) show up to four, so a
    tiny cost never reads as `$0.00`.
    """
    value = Decimal(micros) / MICROS_PER_USD
    if micros % MICROS_PER_CENT == 0:
        amount = value.quantize(Decimal("0.01"))
    else:
        amount = _trimmed(value.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))
    return format_usd_amount(amount, locale)


def format_price(micros: int, locale: str | None = "en") -> str:
    """A price: `$0.80`, or `$0.672` when cents would hide part of it. Rounded up, so a price is
    never understated."""
    value = Decimal(micros) / MICROS_PER_USD
    places = Decimal("0.01") if micros % MICROS_PER_CENT == 0 else Decimal("0.001")
    return format_usd_amount(value.quantize(places, rounding=ROUND_CEILING), locale)


def _trimmed(amount: Decimal) -> Decimal:
    # Drop trailing zeros without normalize()'s exponent form (10.0000 → 1E+1); the currency
    # format still shows at least the two digits of cents.
    text = format(amount, "f")
    return Decimal(text.rstrip("0").rstrip(".") if "." in text else text)


@dataclass(frozen=True)
class Money:
    """An amount inside a translated message, rendered in the reader's style (`{remaining}`);
    `{remaining:de}` asks for a given locale's. Lets a service raise an error with money in it
    before anyone knows the reader's language."""

    micros: int

    def __str__(self) -> str:
        return format_usd(self.micros, "en")

    def __format__(self, spec: str) -> str:
        return format_usd(self.micros, spec or "en")
