"""The languages Castbot speaks, and what CLDR (through Babel) says about writing each of them.

`LOCALES` is the one list of supported languages, as Discord locale codes. Each has a catalog
folder in bot/locales/ of the same name, except English, whose catalog is `en`: it is the
complete catalog every other falls back to. A reader's locale resolves to the closest supported
one: exact, then the same language (`en-GB` → `en-US`, `es-419` → `es-ES`, `zh-TW` → `zh-CN`),
then English, so numbers and money follow the conventions of the language the reader is sent.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from functools import cache

from babel import Locale
from babel.numbers import format_currency, format_decimal

LOCALES = ("en-US", "ru", "de", "fr", "pt-BR", "es-ES", "zh-CN")
DEFAULT = "en-US"

# CLDR minimumGroupingDigits where it is not 1 (Spanish writes 1000 but 10.000); Babel does not
# carry this value, so without it Spanish amounts would read `1.000`.
_MIN_GROUPING = {"es": 2}


def language(code: str | None) -> str:
    """`pt-BR` → `pt`, `zh_CN` → `zh`."""
    return (code or "").replace("_", "-").split("-", 1)[0].lower()


def closest(code: str | None) -> str:
    """The supported locale for a Discord locale code: exact, same language, else English."""
    text = (code or "").replace("_", "-")
    if text in LOCALES:
        return text
    lang = language(text)
    return next((known for known in LOCALES if language(known) == lang), DEFAULT)


@cache
def _babel(supported: str) -> Locale:
    return Locale.parse(supported, sep="-")


def babel_locale(code: str | None) -> Locale:
    """Babel's locale for the closest supported locale of `code`."""
    return _babel(closest(code))


def as_decimal(value: object) -> Decimal | None:
    """A number given as int, float, Decimal or a numeric string; None when it is none of them."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
    else:
        return None
    return number if number.is_finite() else None


def _grouped(number: Decimal, code: str | None) -> bool:
    digits = len(str(int(abs(number))))
    return digits >= 3 + _MIN_GROUPING.get(language(closest(code)), 1)


def format_number(value: object, code: str | None) -> str:
    """`12345.5` → `12,345.5` (en), `12 345,5` (ru), `12.345,5` (de); every given digit is kept.
    Text that is no number is returned as it is."""
    number = as_decimal(value)
    if number is None:
        return str(value)
    return format_decimal(
        number, locale=babel_locale(code), decimal_quantization=False, group_separator=_grouped(number, code)
    )


def format_usd_amount(amount: Decimal, code: str | None) -> str:
    """US dollars the reader's way (`$5.50`, `5,50 $US`, `US$ 5,50`), with the digits of `amount`
    (at least the two of cents): rounding is the caller's decision."""
    return format_currency(
        amount,
        "USD",
        locale=babel_locale(code),
        decimal_quantization=False,
        group_separator=_grouped(amount, code),
    )


def plural_category(code: str | None, value: object) -> str:
    """The CLDR cardinal category (`one`, `few`, `many`, `other`...) of `value` in `code`'s
    language; `other` when it is not a number."""
    number = as_decimal(value)
    if number is None:
        return "other"
    return str(babel_locale(code).plural_form(abs(number)))


def plural_categories(code: str | None) -> frozenset[str]:
    """Every category `code`'s language can produce: what a complete plural field lists."""
    return frozenset(babel_locale(code).plural_form.tags) | {"other"}


def display_name(code: str) -> str:
    """The supported locale's name in itself, as a menu shows it (`Français`, `Русский`): CLDR
    capitalises names at the start of a menu item, which Babel leaves lowercase."""
    name = _babel(closest(code)).get_display_name() or code
    return name[:1].upper() + name[1:]
