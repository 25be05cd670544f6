"""/jobs: a member's recent jobs as one embed. Prompts are members' text: escaped and trimmed."""

from __future__ import annotations

import discord

from bot.domain.money import format_usd
from bot.i18n import t
from bot.services.jobs_view import JobLine, JobsList

JOBS_COLOUR = discord.Colour(0x5865F2)
PROMPT_EXCERPT = 90


def prompt_excerpt(prompt: str, limit: int = PROMPT_EXCERPT) -> str:
    """One line, no markdown or mention syntax that could render (nothing pings either way)."""
    flat = " ".join(prompt.split())
    if len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    return discord.utils.escape_mentions(discord.utils.escape_markdown(flat))


def _money(job: JobLine, locale: str) -> str:
    if job.captured_micros is not None:
        return t("jobs.money.cost", locale, amount=format_usd(job.captured_micros, locale))
    if job.estimate_micros == 0:
        return t("jobs.money.free", locale)
    return t("jobs.money.holding", locale, amount=format_usd(job.estimate_micros, locale))


def job_line(job: JobLine, locale: str) -> str:
    return t(
        "jobs.line",
        locale,
        job=job.id,
        state=t(f"jobs.state.{job.state}", locale),
        provider=job.provider or t("jobs.provider.none", locale),
        money=_money(job, locale),
        age=f"<t:{int(job.created_at)}:R>",
        prompt=prompt_excerpt(job.prompt),
    )


def jobs_embed(listing: JobsList, locale: str, name: str) -> discord.Embed:
    """`name`: how to call the member whose jobs these are (their display name)."""
    safe_name = discord.utils.escape_markdown(name)
    title = t("jobs.title.own", locale) if listing.own else t("jobs.title.other", locale, name=safe_name)
    if listing.jobs:
        description = "\n".join(job_line(job, locale) for job in listing.jobs)
    elif listing.own:
        description = t("jobs.none.own", locale)
    else:
        description = t("jobs.none.other", locale, name=safe_name)
    return discord.Embed(title=title[:256], description=description[:4096], colour=JOBS_COLOUR)
