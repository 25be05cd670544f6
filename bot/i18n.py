"""Every user-facing string goes through `t(key, locale, **params)`.

Catalogs live in bot/locales/<locale>/ (a Discord locale code: `en`, `ru`, `pt-BR`...), one JSON
file per area of the bot (`core.json`, `characters.json`...), keyed by message id; the files of a
locale are merged and a message id may appear in only one of them. English is complete by
definition; a missing key in another locale falls back to English so a half-translated catalog
never breaks a reply. Command names and descriptions use the same catalog through
`CastbotTranslator`, keyed by `cmd.*` ids carried in `locale_str` extras.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from discord import Locale, app_commands

log = logging.getLogger(__name__)

LOCALES_DIR = Path(__file__).resolve().parent / "locales"
DEFAULT_LOCALE = "en"


@cache
def catalog(locale: str) -> Mapping[str, str]:
    merged: dict[str, str] = {}
    directory = LOCALES_DIR / locale
    if not directory.is_dir():
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


def available_locales() -> list[str]:
    return sorted(p.name for p in LOCALES_DIR.iterdir() if p.is_dir())


def resolve_locale(locale: str | Locale | None) -> str:
    """The catalog to use for a Discord locale: exact (`pt-BR`), then language (`pt`), then English."""
    if locale is None:
        return DEFAULT_LOCALE
    code = str(locale.value if isinstance(locale, Locale) else locale)
    if catalog(code):
        return code
    language = code.split("-", 1)[0]
    if catalog(language):
        return language
    return DEFAULT_LOCALE


def t(key: str, locale: str | Locale | None = None, /, **params: Any) -> str:
    """The message `key` in `locale`, formatted with `params`."""
    text = catalog(resolve_locale(locale)).get(key)
    if text is None:
        text = catalog(DEFAULT_LOCALE).get(key)
    if text is None:
        # A programming error, but never show a member a traceback for it.
        log.error("missing message id %r", key)
        return key
    return text.format(**params) if params else text


def cmd(key: str) -> app_commands.locale_str:
    """A command name/description: Discord gets the English text; the translator looks up `key`."""
    return app_commands.locale_str(t(key, DEFAULT_LOCALE), key=key)


class CastbotTranslator(app_commands.Translator):
    """Localises command metadata from the catalogs; None means 'keep the English default'."""

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        key = string.extras.get("key")
        if not key:
            return None
        code = locale.value
        text = catalog(code).get(key) or catalog(code.split("-", 1)[0]).get(key)
        if text is None or code.split("-", 1)[0] == DEFAULT_LOCALE:
            return None
        return text
