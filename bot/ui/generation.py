"""Status and result messages for generation jobs: model -> discord objects, pure functions."""

from __future__ import annotations

import discord

from bot.i18n import t
from bot.services.money import format_usd
from bot.store.jobs import JobRow

PROMPT_PREVIEW = 300


def _progress(job: JobRow) -> str:
    return f"{job.progress}%" if job.progress is not None else ""


def state_text(job: JobRow, locale: str) -> str:
    return t(f"state.{job.state}", locale, progress=_progress(job)).strip()


def status_embed(job: JobRow, requester_mention: str, locale: str) -> discord.Embed:
    prompt = job.prompt if len(job.prompt) <= PROMPT_PREVIEW else job.prompt[: PROMPT_PREVIEW - 1] + "…"
    embed = discord.Embed(title=t("status.title", locale, job=job.id), colour=discord.Colour.blurple())
    embed.add_field(name=t("status.prompt", locale), value=discord.utils.escape_markdown(prompt), inline=False)
    names = [c["name"] for c in job.request.get("characters", [])]
    if names:
        embed.add_field(name=t("status.characters", locale), value=", ".join(f"@{n}" for n in names), inline=False)
    embed.add_field(name=t("status.provider", locale), value=job.provider or "?", inline=True)
    embed.add_field(name=t("status.estimate", locale), value=format_usd(job.estimate_micros, locale), inline=True)
    embed.add_field(name=t("status.state", locale), value=state_text(job, locale), inline=True)
    embed.add_field(name=t("status.by", locale), value=requester_mention, inline=True)
    return embed


def human_size(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def failure_text(job: JobRow, locale: str) -> str:
    user = f"<@{job.user_id}>"
    reason = discord.utils.escape_mentions(job.error or "no reason given")
    amount = format_usd(job.estimate_micros, locale)
    if job.cost_micros:  # billed by the provider although we could not deliver
        return t(
            "delivery.failed.charged",
            locale,
            user=user,
            job=job.id,
            reason=reason,
            cost=format_usd(job.cost_micros, locale),
        )
    kind = "moderation" if job.error_code == "moderation" else "expired" if job.error_code == "expired" else job.state
    return t(f"delivery.failed.{kind}", locale, user=user, job=job.id, reason=reason, amount=amount)
