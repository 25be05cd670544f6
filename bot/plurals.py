"""CLDR plural categories and plain-number formatting for the languages Castbot speaks.

A catalog message shows a count with a plural field inside an ordinary `str.format` field, so
the message keeps one id and one placeholder set in every language:

    "{uses:one=# video|other=# videos}"                          (en)
    "{uses:one=# видео|few=# видео|many=# видео|other=# видео}"  (ru)

The text after `:` lists `category=form` pairs separated by `|`; `#` in a form becomes the
number written the reader's way. Forms are plain text (no `{}` or `|`). The category comes from
the CLDR cardinal rules below (https://cldr.unicode.org/index/cldr-spec/plural-rules): Russian
needs one/few/many/other, French, Spanish and Portuguese add `many` for exact millions ("1 000 000
de vidéos"), Chinese has no plural. A missing category falls back to `other`, which is required.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

CATEGORIES = ("zero", "one", "two", "few", "many", "other")
NBSP, NNBSP = "\u00a0", "\u202f"

_FORM = re.compile(r"^(zero|one|two|few|many|other)=([^|]*)$")


class _Operands:
    """CLDR operands: i (integer digits), v (count of visible fraction digits)."""

    def __init__(self, number: Decimal) -> None:
        value = abs(number)
        text = format(value, "f")
        whole, _, fraction = text.partition(".")
        self.n = value
        self.i = int(whole)
        self.v = len(fraction)


def _en(o: _Operands) -> str:  # also German
    return "one" if o.i == 1 and o.v == 0 else "other"


def _ru(o: _Operands) -> str:
    if o.v != 0:
        return "other"
    if o.i % 10 == 1 and o.i % 100 != 11:
        return "one"
    if 2 <= o.i % 10 <= 4 and not 12 <= o.i % 100 <= 14:
        return "few"
    return "many"


def _millions(o: _Operands) -> bool:
    return o.v == 0 and o.i != 0 and o.i % 1_000_000 == 0


def _fr(o: _Operands) -> str:  # also Brazilian Portuguese (`pt`: one is i = 0..1)
    if o.i in (0, 1):
        return "one"
    return "many" if _millions(o) else "other"


def _es(o: _Operands) -> str:
    if o.n == 1:
        return "one"
    return "many" if _millions(o) else "other"


def _zh(o: _Operands) -> str:
    return "other"


_RULES: dict[str, tuple[Callable[[_Operands], str], frozenset[str]]] = {
    "en": (_en, frozenset({"one", "other"})),
    "de": (_en, frozenset({"one", "other"})),
    "ru": (_ru, frozenset({"one", "few", "many", "other"})),
    "fr": (_fr, frozenset({"one", "many", "other"})),
    "pt": (_fr, frozenset({"one", "many", "other"})),
    "es": (_es, frozenset({"one", "many", "other"})),
    "zh": (_zh, frozenset({"other"})),
}

# How a plain number is written (decimal mark, thousands group, fewest digits before grouping).
_NUMBERS: dict[str, tuple[str, str, int]] = {
    "en": (".", ",", 4),
    "de": (",", ".", 4),
    "ru": (",", NBSP, 4),
    "fr": (",", NNBSP, 4),
    "pt": (",", ".", 4),
    "es": (",", ".", 5),  # CLDR: Spanish leaves 4-digit numbers ungrouped (1000, 10.000)
    "zh": (".", ",", 4),
}


def language(locale: str | None) -> str:
    """`pt-BR` → `pt`; unknown or empty → `en`."""
    code = (locale or "en").replace("_", "-").split("-", 1)[0].lower()
    return code if code in _RULES else "en"


def categories(locale: str | None) -> frozenset[str]:
    """The categories the rules of `locale` can produce: what a complete plural field lists."""
    return _RULES[language(locale)][1]


def as_decimal(value: object) -> Decimal | None:
    """A count given as int, float, Decimal or a numeric string; None when it is none of them."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def plural_category(locale: str | None, number: object) -> str:
    """The CLDR cardinal category of `number` in `locale` (`other` when it is not a number)."""
    value = as_decimal(number)
    if value is None:
        return "other"
    rule, _ = _RULES[language(locale)]
    return rule(_Operands(value))


def format_number(value: object, locale: str | None) -> str:
    """`12345.5` → `12,345.5` (en), `12 345,5` (ru), `12.345,5` (de); text that is no number is kept."""
    number = as_decimal(value)
    if number is None:
        return str(value)
    point, group, min_grouping = _NUMBERS[language(locale)]
    text = format(number, "f")
    sign = "-" if text.startswith("-") else ""
    whole, _, fraction = text.lstrip("-").partition(".")
    if len(whole) >= min_grouping:
        whole = f"{int(whole):,}".replace(",", group)
    return sign + whole + (point + fraction if fraction else "")


def parse_forms(spec: str) -> dict[str, str] | None:
    """`one=# video|other=# videos` → {"one": "# video", "other": "# videos"}; None if not a plural field."""
    if "=" not in spec:
        return None
    forms: dict[str, str] = {}
    for part in spec.split("|"):
        match = _FORM.match(part)
        if match is None or match.group(1) in forms:
            return None
        forms[match.group(1)] = match.group(2)
    return forms if "other" in forms else None


def select(forms: dict[str, str], value: object, locale: str | None) -> str:
    """The form for `value` with `#` replaced by the number; `other` covers a missing category."""
    category = plural_category(locale, value)
    form = forms.get(category, forms["other"])
    return form.replace("#", format_number(value, locale))
