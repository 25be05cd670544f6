"""Every user-facing string goes through `t(key, locale, **params)`.

Catalogs live in bot/locales/<locale>/ (a Discord locale code: `en`, `ru`, `pt-BR`...), one JSON
file per area of the bot (`core.json`, `characters.json`...), keyed by message id; the files of a
locale are merged and a message id may appear in only one of them. English is complete by
definition; a missing key in another locale falls back to English so a half-translated catalog
never breaks a reply. Command names and descriptions use the same catalog through
bot/ui/translator.py, keyed by `cmd.*` ids carried in `locale_str` extras.

Inside a message, besides plain `{name}` fields:
- `{count:one=# video|other=# videos}` picks the plural form for the reader's language: the text
  after `:` lists `category=form` pairs separated by `|`, `#` in a form becomes the number
  written the reader's way, forms are plain text (no `{}` or `|`), and a missing category falls
  back to `other`, which is required. Categories are CLDR's (`one`, `few`, `many`, `other`...),
  as Babel reports them for the language;
- `{seconds:number}` writes a number the reader's way (`2,5` in German);
- a `Money` value is written in the reader's currency style (`5,50 $`), and a `Localizable` or
  `Lines` value (bot/domain/text.py) is rendered in the reader's language too.

Which languages exist is bot/domain/locales.py's `LOCALES`; a reader's locale resolves to the
closest of them (exact → same language → English, so `es-419` reads `es-ES`), whose catalog is
the folder of that name (English's is `en`).
"""

from __future__ import annotations

import json
import logging
import re
import string
from collections.abc import Mapping
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

from bot.domain import locales
from bot.domain.locales import format_number, plural_category
from bot.domain.money import Money, format_usd
from bot.domain.text import Lines, Localizable

log = logging.getLogger(__name__)

LOCALES_DIR = Path(__file__).resolve().parent / "locales"
DEFAULT_LOCALE = "en"
_FORM = re.compile(r"^(zero|one|two|few|many|other)=([^|]*)$")


@cache
def catalog(locale: str) -> Mapping[str, str]:
    merged: dict[str, str] = {}
    directory = LOCALES_DIR / locale
    if locale not in available_locales() or not directory.is_dir():
        return merged
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ValueError(f"{locale}/{path.name}: a catalog maps message ids to strings")
        twice = merged.keys() & data.keys()
        if twice:
            raise ValueError(f"{locale}/{path.name}: message ids defined twice: {', '.join(sorted(twice))}")
        merged.update(data)
    return merged


def catalog_name(supported: str) -> str:
    """The catalog folder of a supported locale: its own code, `en` for English."""
    return DEFAULT_LOCALE if supported == locales.DEFAULT else supported


@cache
def _locales() -> tuple[str, ...]:
    return tuple(sorted(catalog_name(code) for code in locales.LOCALES))


def available_locales() -> list[str]:
    return list(_locales())


def resolve_locale(locale: str | Enum | None) -> str:
    """The catalog for a Discord locale: exact (`pt-BR`), same language (`en-GB` → `en`,
    `es-419` → `es-ES`), then English."""
    if locale is None:
        return DEFAULT_LOCALE
    code = str(locale.value if isinstance(locale, Enum) else locale)  # discord.Locale is an Enum
    return catalog_name(locales.closest(code))


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
    form = forms.get(plural_category(locale, value), forms["other"])
    return form.replace("#", format_number(value, locale))


class _Formatter(string.Formatter):
    def __init__(self, locale: str) -> None:
        super().__init__()
        self.locale = locale

    def format_field(self, value: Any, format_spec: str) -> Any:
        if isinstance(value, Localizable):
            value = render(value, self.locale)
        elif isinstance(value, Lines):
            value = "\n".join(render(line, self.locale) for line in value.items)
        if isinstance(value, Money):
            return format_usd(value.micros, format_spec or self.locale)
        forms = parse_forms(format_spec)
        if forms is not None:
            return select(forms, value, self.locale)
        if format_spec == "number":
            return format_number(value, self.locale)
        return super().format_field(value, format_spec)


def _render(text: str, locale: str, params: Mapping[str, Any]) -> str:
    return _Formatter(locale).vformat(text, (), params)


def t(key: str, locale: str | Enum | None = None, /, **params: Any) -> str:
    """The message `key` in `locale`, formatted with `params`."""
    code = resolve_locale(locale)
    text = catalog(code).get(key)
    if text is None:
        code, text = DEFAULT_LOCALE, catalog(DEFAULT_LOCALE).get(key)
    if text is None:
        # A programming error, but never show a member a traceback for it.
        log.error("missing message id %r", key)
        return key
    if not params:
        return text
    try:
        return _render(text, code, params)
    except (KeyError, IndexError, ValueError, TypeError, AttributeError):
        log.exception("message %r (%s) does not fit its parameters %s", key, code, sorted(params))
    english = catalog(DEFAULT_LOCALE).get(key, key)
    try:
        return _render(english, DEFAULT_LOCALE, params)
    except (KeyError, IndexError, ValueError, TypeError, AttributeError):
        return english


def render(text: Localizable, locale: str | Enum | None) -> str:
    """A Localizable in `locale`, its Localizable parameters too."""
    return t(text.key, locale, **text.params)
