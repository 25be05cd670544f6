"""Status and result messages for generation jobs: model -> discord objects, pure functions."""

from __future__ import annotations

import discord

from bot.domain.job_state import MADE, JobState
from bot.domain.jobs import Job
from bot.domain.money import format_usd
from bot.i18n import t
from bot.services.generation import RouteStep

PROMPT_PREVIEW = 300


def _progress(job: Job) -> str:
    return f"{job.progress}%" if job.progress is not None else ""


def state_text(job: Job, locale: str) -> str:
    return t(f"state.{job.state}", locale, progress=_progress(job)).strip()


def status_embed(job: Job, requester_mention: str, locale: str) -> discord.Embed:
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


def failure_text(job: Job, locale: str) -> str:
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


# The adapters raise these when a provider's account, not the request, is the problem; the
# breaker then turns the provider off for the whole bot until a moderator turns it back on.
ACCOUNT_PROBLEMS = ("AuthFailed", "QuotaExhausted")
# Outcomes that made no job at the provider: safe to move on to another provider.
NOT_SENT = ("NotSent", "Unavailable", "RateLimited", *ACCOUNT_PROBLEMS)


def _reason(step: RouteStep) -> str:
    return discord.utils.escape_mentions(step.error or "no reason given")


def route_notes(job: Job, steps: list[RouteStep], locale: str, *, fallback_possible: bool = False) -> list[str]:
    """Lines added to a job's final message about its providers.

    - it fell back: which provider ran and why each earlier one did not;
    - a provider was turned off after an account problem: moderators are told how to turn it on;
    - it failed on a provider that made nothing, with fallback off while another provider could
      have run it (`fallback_possible`): moderators are told fallback exists.
    """
    notes: list[str] = []
    if job.state in MADE and job.provider:
        # the latest word of each provider passed over (one may have been retried before)
        passed = {s.provider: s for s in steps if s.provider != job.provider and s.outcome in ("not_sent", "rejected")}
        if passed:
            items = [t("delivery.fallback_item", locale, first=p, reason=_reason(s)) for p, s in passed.items()]
            notes.append(t("delivery.fallback", locale, provider=job.provider, reasons="; ".join(items)))
    disabled: dict[str, RouteStep] = {}
    for step in steps:
        if step.error_class in ACCOUNT_PROBLEMS:
            disabled.setdefault(step.provider, step)
    notes += [t("delivery.provider_disabled", locale, provider=p, reason=_reason(s)) for p, s in disabled.items()]
    last = steps[-1] if steps else None
    if (
        fallback_possible
        and job.state == JobState.FAILED
        and last is not None
        and last.error_class in NOT_SENT
        and last.error_class not in ACCOUNT_PROBLEMS
    ):
        notes.append(t("delivery.fallback_off", locale, provider=last.provider))
    return notes
