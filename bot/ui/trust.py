"""Texts of reports, operator commands and the trust settings: values → localized strings."""

from __future__ import annotations

from collections.abc import Sequence

import discord

from bot.i18n import t
from bot.services.trust import OperatorResult, ReportOutcome, ReportsPage, TrustSettings
from bot.services.trust import Reported as ReportedCharacter
from bot.ui.replies import fit_content

MAX_NAMES = 10  # names listed in one report prompt


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(f"`@{n}`" for n in names[:MAX_NAMES])
    return shown + (" …" if len(names) > MAX_NAMES else "")


def report_prompt_text(names: Sequence[str], locale: str) -> str:
    return t("trust.report.prompt", locale, names=_names(names))


def report_done_text(outcome: ReportOutcome, locale: str) -> str:
    if outcome.already:
        return t("trust.report.already", locale)
    return t("trust.report.thanks", locale, names=_names([c.name for c in outcome.characters]))


def _reason(outcome: ReportOutcome, locale: str) -> str:
    return t(f"trust.reason.{outcome.reason}", locale)


def server_notice(outcome: ReportOutcome, reported: ReportedCharacter, locale: str) -> str:
    """For the owner's guild's report channel (posted with mentions disabled)."""
    lines = [
        t(
            "trust.notice.server",
            locale,
            name=reported.name,
            owner=f"<@{reported.owner_id}>",
            reason=_reason(outcome, locale),
            count=reported.reporters,
        )
    ]
    if reported.hidden_now:
        lines.append(t("trust.notice.hidden", locale, name=reported.name))
    return fit_content("\n".join(lines))


def operator_notice(outcome: ReportOutcome, locale: str) -> str:
    lines = [t("trust.notice.operator", locale, reporter=f"<@{outcome.reporter_id}>", reason=_reason(outcome, locale))]
    for c in outcome.characters:
        lines.append(
            t(
                "trust.notice.operator_line",
                locale,
                name=c.name,
                code=c.code or "—",
                guild=c.home_guild_id,
                owner=f"<@{c.owner_id}>",
                count=c.reporters,
            )
        )
        if c.hidden_now:
            lines.append(t("trust.notice.hidden", locale, name=c.name))
    if outcome.job_id is not None:
        lines.append(t("trust.notice.job", locale, job=outcome.job_id))
    return fit_content("\n".join(lines))


def operator_result_text(result: OperatorResult, action: str, locale: str) -> str:
    return t(
        f"trust.operator.{action}",
        locale,
        name=result.name,
        code=result.code,
        guilds=result.importing_guilds,
        reports=result.resolved_reports,
    )


def reports_text(page: ReportsPage, locale: str) -> str:
    if not page.items:
        return t("trust.operator.no_reports", locale)
    lines = [t("trust.operator.reports_title", locale, count=page.total, threshold=page.threshold)]
    for item in page.items:
        reasons = ", ".join(t(f"trust.reason.{r}", locale) for r in item.reasons)
        state = ""
        if item.taken_down_at is not None:
            state = t("trust.state.taken_down", locale)
        elif item.hidden_at is not None:
            state = t("trust.state.hidden", locale)
        lines.append(
            t(
                "trust.operator.reports_line",
                locale,
                name=item.name,
                code=item.share_code or "—",
                count=item.reporters,
                reasons=reasons,
                state=state,
            ).rstrip()
        )
    hidden = page.total - len(page.items)
    more = t("trust.operator.more", locale, count=hidden) if hidden > 0 else ""
    text = "\n".join(lines)
    # keep the "…and N more" line whatever the names' lengths
    return fit_content(text, 2000 - len(more) - 1) + ("\n" + more if more else "")


def add_trust_fields(embed: discord.Embed, settings: TrustSettings, locale: str) -> None:
    """The trust settings, added to the /settings embed."""
    on, off = t("settings.value.on", locale), t("settings.value.off", locale)
    embed.add_field(name=t("trust.field.allow_imports", locale), value=on if settings.allow_imports else off)
    channel = f"<#{settings.report_channel_id}>" if settings.report_channel_id else t("trust.value.no_channel", locale)
    embed.add_field(name=t("trust.field.report_channel", locale), value=channel)
    embed.add_field(name=t("trust.field.require_consent", locale), value=on if settings.require_consent else off)


def consent_prompt_text(name: str, visibility: str, locale: str) -> str:
    return t(f"trust.consent.prompt.{visibility}", locale, name=name)


def importers_text(name: str, servers: Sequence[str], locale: str) -> str:
    listed = "\n".join(f"• {s}" for s in servers)
    return fit_content(t("trust.importers.title", locale, name=name, count=len(servers)) + "\n" + listed)
