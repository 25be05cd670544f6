"""/settings: a guild's settings as one embed."""

from __future__ import annotations

from collections.abc import Sequence

import discord

from bot.domain.money import format_usd
from bot.i18n import t
from bot.services.guilds import GuildSettings

SETTINGS_COLOUR = discord.Colour(0x95A5A6)


def settings_embed(settings: GuildSettings, locale: str, default_providers: Sequence[str]) -> discord.Embed:
    embed = discord.Embed(title=t("settings.title", locale), colour=SETTINGS_COLOUR)
    role = f"<@&{settings.moderator_role_id}>" if settings.moderator_role_id else t("settings.value.no_role", locale)
    embed.add_field(name=t("settings.field.moderator_role", locale), value=role)
    embed.add_field(name=t("settings.field.timezone", locale), value=f"`{settings.timezone}`")
    embed.add_field(
        name=t("settings.field.locale", locale),
        value=settings.locale or t("settings.value.default_locale", locale),
    )
    if settings.providers is None:
        providers = t("settings.value.default_providers", locale, names=", ".join(default_providers))
    else:
        providers = ", ".join(settings.providers)
    embed.add_field(name=t("settings.field.providers", locale), value=providers)
    embed.add_field(name=t("settings.field.priority", locale), value=t(f"settings.choice.{settings.priority}", locale))
    embed.add_field(
        name=t("settings.field.fallback", locale),
        value=t("settings.value.on" if settings.fallback else "settings.value.off", locale),
    )
    monthly = (
        format_usd(settings.monthly_limit_micros, locale)
        if settings.monthly_limit_micros is not None
        else t("settings.value.no_budget", locale)
    )
    daily = (
        format_usd(settings.member_daily_limit_micros, locale)
        if settings.member_daily_limit_micros is not None
        else t("settings.value.no_cap", locale)
    )
    embed.add_field(
        name=t("settings.field.budget", locale),
        value=t("settings.value.budget", locale, monthly=monthly, daily=daily),
        inline=False,
    )
    embed.add_field(
        name=t("settings.field.active", locale),
        value=t(
            "settings.value.active",
            locale,
            member=settings.max_active_per_member,
            guild=settings.max_active_per_guild,
        ),
        inline=False,
    )
    return embed
