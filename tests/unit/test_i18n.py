"""The message catalog and the command-metadata translator."""

from __future__ import annotations

import json
import string
from typing import Any, cast

import discord
import pytest
from discord import app_commands
from hypothesis import given
from hypothesis import strategies as st

from bot.domain.locales import format_number, plural_category
from bot.domain.locales import plural_categories as categories
from bot.domain.money import Money
from bot.domain.text import Lines, Localizable
from bot.i18n import LOCALES_DIR, available_locales, catalog, parse_forms, render, resolve_locale, select, t
from bot.ui.translator import CastbotTranslator, cmd, is_command_name


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


# --- locale resolution -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "catalog_used"),
    [
        ("ru", "ru"),
        ("pt-BR", "pt-BR"),
        ("en-GB", "en"),
        ("es-419", "es-ES"),  # Latin American Spanish reads the Spanish catalog, not English
        ("zh-TW", "zh-CN"),  # until a Traditional catalog exists
        ("pt-PT", "pt-BR"),
        ("de-AT", "de"),
        ("pt_BR", "pt-BR"),
        ("ja", "en"),
        ("uk", "en"),  # never Russian for Ukrainian
        ("../en", "en"),  # not a path
        ("", "en"),
        (discord.Locale.french, "fr"),
        (discord.Locale.taiwan_chinese, "zh-CN"),
    ],
)
def test_resolve_locale_falls_back_by_language(asked: str | discord.Locale, catalog_used: str) -> None:
    assert resolve_locale(asked) == catalog_used


def test_replies_follow_the_locale() -> None:
    assert t("error.guild_only", "ru") == "Эта команда работает только на сервере."
    assert t("error.guild_only", "es-419") == t("error.guild_only", "es-ES") != t("error.guild_only", "en")
    assert t("error.guild_only", "ja") == t("error.guild_only", "en")


# --- plural rules ------------------------------------------------------------------------------

# Sample values from CLDR's plurals.xml for each category.
CLDR_SAMPLES: dict[str, dict[str, list[object]]] = {
    "en": {"one": [1], "other": [0, 2, 16, 100, "1.0", 1.5]},
    "de": {"one": [1], "other": [0, 2, 16, 100, "0.0", 1.5]},
    "ru": {
        "one": [1, 21, 31, 41, 101, 1001],
        "few": [2, 3, 4, 22, 23, 24, 102, 1002],
        "many": [0, 5, 9, 10, 11, 12, 14, 19, 20, 100, 111, 112, 114, 1000],
        "other": ["0.0", 1.5, "2.5", "10.1"],
    },
    "fr": {"one": [0, 1, 1.5], "many": [1_000_000, 2_000_000], "other": [2, 17, 100, 1000, 2.5]},
    "pt-BR": {"one": [0, 1, 0.5, 1.5], "many": [1_000_000], "other": [2, 17, 100, 2.5]},
    "es-ES": {"one": [1, "1.0"], "many": [1_000_000], "other": [0, 2, 16, 100, 0.5]},
    "zh-CN": {"other": [0, 1, 2, 1.5, 1_000_000]},
}


@pytest.mark.parametrize("locale", sorted(CLDR_SAMPLES))
def test_plural_categories_follow_cldr(locale: str) -> None:
    for category, samples in CLDR_SAMPLES[locale].items():
        for number in samples:
            assert plural_category(locale, number) == category, (locale, number)
    assert set(CLDR_SAMPLES[locale]) == categories(locale)


def test_plural_category_of_something_that_is_no_number_is_other() -> None:
    assert plural_category("ru", "many") == "other"
    assert plural_category("ru", None) == "other"
    assert plural_category("ru", True) == "other"


@given(st.integers(min_value=0, max_value=10**9))
def test_russian_integers_are_never_other(n: int) -> None:
    category = plural_category("ru", n)
    last, last_two = n % 10, n % 100
    if last == 1 and last_two != 11:
        expected = "one"
    elif last in (2, 3, 4) and last_two not in (12, 13, 14):
        expected = "few"
    else:
        expected = "many"
    assert category == expected


@pytest.mark.parametrize(
    ("locale", "value", "text"),
    [
        ("en", 12345.5, "12,345.5"),
        ("de", 12345.5, "12.345,5"),
        ("ru", "12345.5", "12\u00a0345,5"),
        ("fr", 1234, "1\u202f234"),
        ("es-ES", 1000, "1000"),  # Spanish leaves four digits ungrouped
        ("es-ES", 10000, "10.000"),
        ("pt-BR", "2.5", "2,5"),
        ("zh-CN", 1234567, "1,234,567"),
        ("ru", -3, "-3"),
        ("ru", "abc", "abc"),
    ],
)
def test_numbers_are_written_the_readers_way(locale: str, value: object, text: str) -> None:
    assert format_number(value, locale) == text


@pytest.mark.parametrize(
    "spec",
    ["one=# a", "one=# a|one=# b|other=# c", "one=# a|lots=# b|other=# c", "other", ">10", "", "other=a|b"],
)
def test_malformed_plural_fields_are_not_plural_fields(spec: str) -> None:
    assert parse_forms(spec) is None


def test_plural_field_picks_the_form_and_writes_the_number() -> None:
    forms = parse_forms("one=# сервер|few=# сервера|many=# серверов|other=# сервера")
    assert forms is not None
    assert [select(forms, n, "ru") for n in (1, 3, 5, 21, 1.5)] == [
        "1 сервер",
        "3 сервера",
        "5 серверов",
        "21 сервер",
        "1,5 сервера",
    ]
    # a category the message does not list reads its `other` form
    assert select({"other": "# x"}, 1, "ru") == "1 x"


def test_messages_pluralize_counts_in_every_language() -> None:
    assert t("characters.field.imports_value", "en", count=1) == "1 other server"
    assert t("characters.field.imports_value", "en", count=2) == "2 other servers"
    ru = [t("characters.field.imports_value", "ru", count=n) for n in (1, 3, 5, 11, 22)]
    assert ru == ["1 другой сервер", "3 других сервера", "5 других серверов", "11 других серверов", "22 других сервера"]
    assert t("characters.line", "de", owner="a", visibility="b", uses=1).endswith("1 Video")
    assert t("characters.line", "de", owner="a", visibility="b", uses=4).endswith("4 Videos")
    assert t("budget.error.too_many_active.member", "en", limit=1).startswith("You already have 1 video in progress")
    assert t("route.too_long", "fr", provider="kling", max=1, seconds=3).count("1 seconde ") == 1
    assert "0 vidéo " in t("budget.error.too_many_active.guild", "fr", limit=0)  # French: 0 is singular
    assert "15 秒" in t("route.too_long", "zh-CN", provider="kling", max=15, seconds=20)


# --- money and other parameters in messages ----------------------------------------------------


def test_money_parameters_take_the_readers_currency_style() -> None:
    remaining, needed = Money(5_500_000), Money(12_000_000)
    assert "$5.50" in t("budget.error.exceeded.guild", "en", remaining=remaining, needed=needed)
    assert "5,50\u00a0$" in t("budget.error.exceeded.guild", "de", remaining=remaining, needed=needed)
    assert "US$\u00a012,00" in t("budget.error.exceeded.guild", "pt-BR", remaining=remaining, needed=needed)
    assert "US$5.50" in t("budget.error.exceeded.guild", "zh-CN", remaining=remaining, needed=needed)
    # an explicit style in the message still wins
    assert "{remaining:ru}".format_map({"remaining": remaining}) == "5,50\u00a0$"


def test_number_fields_use_the_readers_decimal_mark() -> None:
    assert t("characters.clip_seconds", "de", seconds="2.5") == "2,5 s"
    assert t("characters.clip_seconds", "en", seconds="2.5") == "2.5 s"


def test_localizable_parameters_render_in_the_readers_language() -> None:
    text = t("route.none_available", "es-419", reasons=Localizable("route.no_providers"))
    assert text.endswith("• no hay ningún proveedor configurado para este servidor.")
    # nested: a line whose own parameter is localized, in a list of lines
    line = Localizable("route.reason_line", {"reason": Localizable("route.no_providers")})
    text = render(Localizable("route.none_available", {"reasons": Lines((line, line))}), "de")
    assert text.splitlines()[1:] == ["• • Für diesen Server ist kein Anbieter eingerichtet."] * 2
    assert render(Localizable("route.none_available", {"reasons": Lines(())}), "ru").endswith(":\n")


def test_a_message_with_missing_parameters_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    text = t("error.bad_option", "ru")
    assert text == catalog("ru")["error.bad_option"]  # no params: the text as it is
    text = t("route.too_long", "ru", provider="kling")  # `max` and `seconds` forgotten by a caller
    assert "route.too_long" in caplog.text
    assert text == catalog("en")["route.too_long"]


# --- command metadata --------------------------------------------------------------------------


def _context(where: app_commands.TranslationContextLocation) -> Any:
    return cast(Any, app_commands.TranslationContext)(where, None)


async def test_translator_localizes_names_descriptions_and_plain_option_names() -> None:
    translator = CastbotTranslator()
    where = app_commands.TranslationContextLocation
    name = cmd("cmd.character.name")
    assert await translator.translate(name, discord.Locale.russian, _context(where.group_name)) == "персонаж"
    assert await translator.translate(name, discord.Locale.latin_american_spanish, _context(where.group_name)) == (
        "personaje"
    )
    assert await translator.translate(name, discord.Locale.japanese, _context(where.group_name)) is None
    assert await translator.translate(name, discord.Locale.british_english, _context(where.group_name)) is None
    # an option that is not renamed with cmd(...) is looked up by its own name
    plain = app_commands.locale_str("prompt")
    assert await translator.translate(plain, discord.Locale.chinese, _context(where.parameter_name)) == "提示词"
    assert await translator.translate(plain, discord.Locale.chinese, _context(where.choice_name)) is None


async def test_translator_never_sends_what_discord_would_refuse(caplog: pytest.LogCaptureFixture) -> None:
    translator = CastbotTranslator()
    where = app_commands.TranslationContextLocation
    # a sentence is a fine description but not a command name: keep the English name instead
    sentence = cmd("cmd.about.description")
    assert await translator.translate(sentence, discord.Locale.russian, _context(where.command_description))
    assert await translator.translate(sentence, discord.Locale.russian, _context(where.command_name)) is None
    assert "not allowed by Discord" in caplog.text


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("персонаж", True),
        ("à-propos", True),
        ("每人每日美元", True),
        ("fuso_horário", True),
        ("Персонаж", False),  # Discord wants lowercase where the script has case
        ("two words", False),
        ("a" * 33, False),
        ("", False),
        ("emoji🙂", False),
    ],
)
def test_command_name_rule(text: str, ok: bool) -> None:
    assert is_command_name(text) is ok
