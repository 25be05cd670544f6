"""The message catalog and the command-metadata translator."""

from __future__ import annotations

import json
import string
from typing import Any, cast

import discord
import pytest
from discord import app_commands

from bot.i18n import LOCALES_DIR, CastbotTranslator, available_locales, catalog, cmd, resolve_locale, t


def placeholders(text: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(text) if field}


def test_english_catalog_is_well_formed() -> None:
    en = json.loads((LOCALES_DIR / "en" / "core.json").read_text(encoding="utf-8"))
    assert en and all(isinstance(v, str) and v for v in en.values())
    assert "en" in available_locales()


def test_every_catalog_matches_english_placeholders() -> None:
    en = catalog("en")
    for locale in available_locales():
        for key, text in catalog(locale).items():
            assert key in en, f"{locale}: unknown message id {key}"
            assert placeholders(text) == placeholders(en[key]), f"{locale}:{key}"


def test_t_formats_and_falls_back() -> None:
    assert t("error.unexpected", "en-US", ref="AB12").startswith("Something went wrong (ref AB12)")
    # an unknown locale falls back to English rather than failing
    assert t("error.unexpected", "xx-YY", ref="AB12") == t("error.unexpected", "en", ref="AB12")
    assert resolve_locale(None) == "en"
    assert resolve_locale(discord.Locale.american_english) == "en"


def test_missing_key_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    assert t("no.such.message") == "no.such.message"
    assert "no.such.message" in caplog.text


async def test_translator_leaves_english_and_unknown_keys_alone() -> None:
    translator = CastbotTranslator()
    about = cmd("cmd.about.description")
    assert about.message == catalog("en")["cmd.about.description"]
    # the constructor's overloads are stricter than what the library itself passes for "other"
    ctx = cast(Any, app_commands.TranslationContext)(app_commands.TranslationContextLocation.other, None)
    assert await translator.translate(about, discord.Locale.american_english, ctx) is None
    plain = app_commands.locale_str("no key here")
    assert await translator.translate(plain, discord.Locale.russian, ctx) is None
