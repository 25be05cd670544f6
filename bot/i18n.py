"""Every user-facing string goes through `t(key, locale, **params)`.

Catalogs are JSON files in bot/locales/, one per Discord locale code (`en.json`, `ru.json`,
`pt-BR.json`...), keyed by message id. English is complete by definition; a missing key in another
locale falls back to English so a half-translated catalog never breaks a reply. Command names and
descriptions use the same catalog through `CastbotTranslator`, keyed by `cmd.*` ids carried in
`locale_str` extras.
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
    path = LOCALES_DIR / f"{locale}.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{path.name}: a catalog maps message ids to strings")
    return data


def available_locales() -> list[str]:
    return sorted(p.stem for p in LOCALES_DIR.glob("*.json"))


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
