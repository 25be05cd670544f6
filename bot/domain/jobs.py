"""A generation job as every layer sees it: the store reads it, services decide on it, the UI
shows it. The job's states and their moves are in job_state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.domain.job_state import JobState


@dataclass(frozen=True)
class Job:
    id: int
    interaction_id: int | None
    guild_id: int
    channel_id: int
    user_id: int
    locale: str | None
    prompt: str
    request: dict[str, Any]
    providers: tuple[str, ...]
    provider: str | None
    external_id: str | None
    state: JobState
    progress: int | None
    estimate_micros: int
    cost_micros: int | None
    error_code: str | None
    error: str | None
    next_poll_at: float | None
    poll_failures: int
    deadline_at: float | None
    status_message_id: int | None
    result_message_id: int | None
    notified_at: float | None  # when its final message was posted (or given up on)
    result_path: str | None
    result_sha256: str | None
    result_size: int | None
    result_url: str | None
    created_at: float
    updated_at: float
    # the unguessable part of the callback URL the provider was given; None: polled only
    callback_token: str | None = None
