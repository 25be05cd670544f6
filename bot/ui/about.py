"""The /about embed."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import discord

from bot.domain.money import format_price
from bot.i18n import t
from bot.services.about import AboutInfo, ProviderStatus
from bot.services.storage import StorageUsage

BRAND_COLOUR = discord.Colour(0x5865F2)


def _state(status: ProviderStatus, locale: str) -> str:
    if status.state == "open" and status.open_until is not None:
        when = _dt(status.open_until)
        return t(
            "about.state.open",
            locale,
            until=discord.utils.format_dt(when, "t"),
            when=discord.utils.format_dt(when, "R"),
        )
    if status.state == "disabled":
        return t("about.state.disabled", locale, reason=status.disabled_reason or "?")
    return t(f"about.state.{status.state}", locale)


def _price(status: ProviderStatus, locale: str) -> str:
    if not status.paid:
        return t("about.provider_free", locale)
    if status.price_micros is None:
        return t("about.price_unknown", locale)
    return t("about.price", locale, amount=format_price(status.price_micros, locale))


def _provider_line(status: ProviderStatus, locale: str) -> str:
    name = f"{status.name} (`{status.model}`)" if status.model else status.name
    return t("about.provider_line", locale, name=name, state=_state(status, locale), price=_price(status, locale))


def _mb(size: int | None) -> Decimal | str:
    """Bytes as decimal megabytes, one decimal place (formatted in the reader's locale)."""
    return "?" if size is None else (Decimal(size) / 1_000_000).quantize(Decimal("0.1"))


def _storage(usage: StorageUsage, locale: str) -> str:
    return t(
        "about.storage_value",
        locale,
        used=_mb(usage.used_bytes),
        limit=_mb(usage.limit_bytes),
        videos=_mb(usage.videos_bytes),
        free=_mb(usage.free_bytes),
    )


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def about_embed(info: AboutInfo, locale: str) -> discord.Embed:
    embed = discord.Embed(
        title=t("about.title", locale, version=info.version),
        description=t("about.description", locale),
        colour=BRAND_COLOUR,
    )
    embed.add_field(
        name=t("about.providers", locale),
        value="\n".join(_provider_line(p, locale) for p in info.providers),
        inline=False,
    )
    if info.storage is not None:
        embed.add_field(name=t("about.storage", locale), value=_storage(info.storage, locale), inline=False)
    embed.add_field(name=t("about.help", locale), value=t("about.help_value", locale), inline=False)
    if any(p.paid for p in info.providers):
        embed.set_footer(text=t("about.price_note", locale, seconds=info.typical_seconds))
    return embed
