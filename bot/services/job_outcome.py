"""What a provider's error makes of a job that gives up on it: the one place that decides
rejected (refused for good) from failed, and which error code the member's message is keyed on."""

from __future__ import annotations

from typing import NamedTuple

from bot.domain.job_state import JobState
from bot.providers.base import ProviderError, Rejected, RejectReason


class JobOutcome(NamedTuple):
    state: JobState
    error_code: str | None


def outcome_of(error: ProviderError) -> JobOutcome:
    if isinstance(error, Rejected):
        # a moderation refusal gets its own message whatever code the provider gave it
        code = "moderation" if error.reason == RejectReason.MODERATION else error.code
        return JobOutcome(JobState.REJECTED, code)
    return JobOutcome(JobState.FAILED, error.code)
