"""The /about embed."""

from __future__ import annotations

from datetime import UTC, datetime

import discord

from bot.i18n import t
from bot.services.about import AboutInfo, ProviderStatus

BRAND_COLOUR = discord.Colour(0x5865F2)


def _provider_line(status: ProviderStatus, locale: str) -> str:
    if not status.paid:
        state = t("about.provider_free", locale)
    elif status.state == "open" and status.open_until is not None:
        state = t("about.state.open", locale, when=discord.utils.format_dt(_dt(status.open_until), "R"))
    elif status.state == "disabled":
        state = t("about.state.disabled", locale, reason=status.disabled_reason or "?")
    else:
        state = t(f"about.state.{status.state}", locale)
    return t("about.provider_line", locale, name=status.name, state=state)


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
    embed.add_field(name=t("about.help", locale), value=t("about.help_value", locale), inline=False)
    return embed
