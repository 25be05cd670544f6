"""/budget show and /budget set replies: the model from BudgetService as one embed."""

from __future__ import annotations

import discord

from bot.domain.money import format_usd
from bot.i18n import t
from bot.services.budget import BudgetOverview, Usage

BUDGET_COLOUR = discord.Colour(0x2ECC71)
WARNING_COLOUR = discord.Colour(0xE67E22)


def _guild_value(usage: Usage, locale: str) -> str:
    money = {
        "spent": format_usd(usage.spent_micros, locale),
        "held": format_usd(usage.held_micros, locale),
    }
    if usage.limit_micros is None:
        return t("budget.show.no_budget", locale, **money)
    value = t(
        "budget.show.guild_value",
        locale,
        limit=format_usd(usage.limit_micros, locale),
        remaining=format_usd(usage.remaining or 0, locale),
        **money,
    )
    if usage.over_limit:
        used = format_usd(usage.spent_micros + usage.held_micros, locale)
        value += "\n" + t("budget.show.over_limit", locale, used=used, limit=format_usd(usage.limit_micros, locale))
    return value


def _member_value(usage: Usage, locale: str) -> str:
    money = {
        "spent": format_usd(usage.spent_micros, locale),
        "held": format_usd(usage.held_micros, locale),
    }
    if usage.limit_micros is None:
        return t("budget.show.member_unlimited", locale, **money)
    return t(
        "budget.show.member_value",
        locale,
        limit=format_usd(usage.limit_micros, locale),
        remaining=format_usd(usage.remaining or 0, locale),
        **money,
    )


def _headline(overview: BudgetOverview, locale: str) -> str:
    remaining = overview.remaining
    if remaining is None:
        return t("budget.show.can_spend_unlimited", locale)
    if remaining <= 0:
        return t("budget.show.cannot_spend", locale)
    return t("budget.show.can_spend", locale, amount=format_usd(remaining, locale))


def budget_embed(overview: BudgetOverview, locale: str) -> discord.Embed:
    colour = WARNING_COLOUR if overview.guild.over_limit or not overview.budget_set else BUDGET_COLOUR
    embed = discord.Embed(
        title=t("budget.show.title", locale, month=overview.guild.period),
        description=_headline(overview, locale),
        colour=colour,
    )
    embed.add_field(
        name=t("budget.show.guild", locale, month=overview.guild.period),
        value=_guild_value(overview.guild, locale),
        inline=False,
    )
    embed.add_field(
        name=t("budget.show.member", locale, day=overview.member.period),
        value=_member_value(overview.member, locale),
        inline=False,
    )
    if overview.operator_binding:
        embed.add_field(
            name=t("budget.show.operator", locale),
            value=t(
                "budget.show.operator_value", locale, remaining=format_usd(overview.operator.remaining or 0, locale)
            ),
            inline=False,
        )
    if overview.is_moderator:
        lines = [
            t(
                "budget.show.top_line",
                locale,
                rank=rank,
                user=s.user_id,
                spent=format_usd(s.spent_micros, locale),
                held=format_usd(s.held_micros, locale),
            )
            for rank, s in enumerate(overview.top_spenders, start=1)
        ]
        embed.add_field(
            name=t("budget.show.top", locale),
            value="\n".join(lines) or t("budget.show.top_none", locale),
            inline=False,
        )
    embed.set_footer(text=t("budget.show.footer", locale, timezone=overview.timezone))
    return embed


def budget_set_content(overview: BudgetOverview, locale: str) -> str:
    """The line above the embed after /budget set, warning when the new limit is already used up."""
    content = t("budget.set.saved", locale)
    guild = overview.guild
    if guild.limit_micros is not None and guild.spent_micros > guild.limit_micros:
        content += "\n" + t("budget.set.below_spent", locale, used=format_usd(guild.spent_micros, locale))
    return content
