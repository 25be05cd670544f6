"""Amounts typed by people, and money shown to people."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.domain.money import MAX_MICROS, BadAmount, Money, format_price, format_usd, parse_usd, usd_to_micros
from bot.i18n import t


@pytest.mark.parametrize(
    ("typed", "micros"),
    [
        ("5", 5_000_000),
        ("5.50", 5_500_000),
        ("5.5", 5_500_000),
        ("$5", 5_000_000),
        ("5,50", 5_500_000),
        (" $ 12.05 ", 12_050_000),
        ("12.05$", 12_050_000),
        ("20 USD", 20_000_000),
        ("US$3", 3_000_000),
        ("0", 0),
        (".75", 750_000),
        ("5.", 5_000_000),
        ("007", 7_000_000),
        ("100000", 100_000_000_000),
    ],
)
def test_accepted_amounts(typed: str, micros: int) -> None:
    assert parse_usd(typed) == micros


@pytest.mark.parametrize(
    ("typed", "key"),
    [
        ("-5", "money.error.negative"),
        ("$-5", "money.error.negative"),
        ("-$5", "money.error.negative"),
        ("−5", "money.error.negative"),  # U+2212 minus sign
        ("NaN", "money.error.format"),
        ("nan", "money.error.format"),
        ("inf", "money.error.format"),
        ("Infinity", "money.error.format"),
        ("1e9", "money.error.format"),
        ("1E2", "money.error.format"),
        ("0x10", "money.error.format"),
        ("", "money.error.format"),
        ("   ", "money.error.format"),
        ("$", "money.error.format"),
        (".", "money.error.format"),
        ("five", "money.error.format"),
        ("1 000", "money.error.format"),
        ("1,000.50", "money.error.format"),
        ("٥", "money.error.format"),  # Arabic-Indic five: Decimal() would take it
        ("5.555", "money.error.precision"),
        ("1,000", "money.error.precision"),  # a thousands separator reads as three decimals
        ("100000.01", "money.error.too_large"),
        ("100001", "money.error.too_large"),
        ("99999999999999999999", "money.error.too_large"),
        ("9" * 40, "money.error.format"),  # absurdly long input is not an amount at all
    ],
)
def test_refused_amounts_say_why(typed: str, key: str) -> None:
    with pytest.raises(BadAmount) as refused:
        parse_usd(typed)
    assert refused.value.key == key
    message = t(refused.value.key, "en", **refused.value.params)
    assert "{" not in message
    if typed.strip():
        assert f"`{typed.strip()[:31]}" in message


def test_the_too_large_message_names_the_ceiling() -> None:
    with pytest.raises(BadAmount) as refused:
        parse_usd("200000")
    assert "$100,000.00" in t(refused.value.key, "en", **refused.value.params)


def test_echoed_text_cannot_break_out_of_code_formatting() -> None:
    with pytest.raises(BadAmount) as refused:
        parse_usd("5`@everyone`")
    assert "`" not in refused.value.params["text"]


@given(st.integers(min_value=0, max_value=MAX_MICROS // 10_000))
def test_every_cent_amount_round_trips_through_english_formatting(cents: int) -> None:
    micros = cents * 10_000
    assert parse_usd(format_usd(micros, "en").replace(",", "")) == micros


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=99))
def test_comma_and_dot_decimals_agree(units: int, cents: int) -> None:
    if units * 1_000_000 + cents * 10_000 > MAX_MICROS:
        return
    assert parse_usd(f"{units},{cents:02d}") == parse_usd(f"{units}.{cents:02d}") == parse_usd(f"${units}.{cents:02d}")


@pytest.mark.parametrize(
    ("locale", "text"),
    [
        ("en", "$5.50"),
        ("en-US", "$5.50"),
        ("en-GB", "$5.50"),
        ("de", "5,50\u00a0$"),
        ("fr", "5,50\u00a0$US"),  # CLDR: French and Spanish name the dollar's country
        ("es-ES", "5,50\u00a0US$"),
        ("es-419", "5,50\u00a0US$"),  # read as the Spanish catalog is
        ("pt-BR", "US$\u00a05,50"),
        ("ru", "5,50\u00a0$"),
        ("zh-CN", "US$5.50"),
        ("ja", "$5.50"),  # not a supported language: English, as the reply is
        (None, "$5.50"),
    ],
)
def test_format_usd_per_locale(locale: str | None, text: str) -> None:
    assert format_usd(5_500_000, locale) == text


def test_format_usd_groups_thousands_and_shows_sub_cent_amounts() -> None:
    assert format_usd(1_234_567_890_000, "en") == "$1,234,567.89"
    assert format_usd(1_234_500_000, "de") == "1.234,50\u00a0$"
    assert format_usd(1_234_500_000, "fr") == "1\u202f234,50\u00a0$US"
    assert format_usd(1_234_500_000, "es-ES") == "1234,50\u00a0US$"  # CLDR: Spanish groups from 5 digits
    assert format_usd(12_345_500_000, "es-ES") == "12.345,50\u00a0US$"
    assert format_usd(10_000_040, "en") == "$10.00"  # rounds to 4 places, then shows cents
    assert format_usd(0, "en") == "$0.00"
    assert format_usd(1_200, "en") == "$0.0012"  # a per-second price never reads as $0.00
    assert format_usd(123_400, "en") == "$0.1234"
    assert format_usd(120_000, "en") == "$0.12"
    assert format_usd(100, "en") == "$0.0001"
    assert format_usd(-2_500_000, "en") == "-$2.50"


@pytest.mark.parametrize(
    ("micros", "locale", "text"),
    [
        (800_000, "en", "$0.80"),
        (672_000, "en", "$0.672"),
        (671_001, "en", "$0.672"),  # rounded up: a price is never understated
        (600_100, "en", "$0.601"),
        (672_000, "de", "0,672\u00a0$"),
        (672_000, "fr", "0,672\u00a0$US"),
        (1_500_000, "pt-BR", "US$\u00a01,50"),
    ],
)
def test_prices_round_up_and_take_the_readers_style(micros: int, locale: str, text: str) -> None:
    assert format_price(micros, locale) == text


def test_money_in_messages_formats_per_catalog_spec() -> None:
    amount = Money(7_250_000)
    assert f"{amount}" == str(amount) == "$7.25"
    assert f"{amount:de}" == "7,25\u00a0$"
    assert t("budget.error.exceeded.guild", "en", remaining=amount, needed=Money(10_000)).count("$7.25") == 1
    # a catalog string may ask for its own style, as a translation will
    assert "{remaining:ru}".format_map({"remaining": amount}) == "7,25\u00a0$"


def test_operator_budget_in_decimal_dollars() -> None:
    assert usd_to_micros(Decimal("250")) == 250_000_000
    assert usd_to_micros(Decimal("0.1234567")) == 123_456  # never rounds a cap up
    assert usd_to_micros(Decimal("-1")) == 0


@given(st.integers(min_value=0, max_value=MAX_MICROS))
def test_a_price_is_never_understated(micros: int) -> None:
    shown = Decimal(format_price(micros, "en").removeprefix("$").replace(",", ""))
    assert shown * 1_000_000 >= micros
