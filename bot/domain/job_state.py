"""A generation job's states, the moves between them, and the groups of states the code asks about.

The one table of allowed moves is `TRANSITIONS`: the store refuses any other move before it
touches the database, so a wrong move is a programming error caught by the tests, never a job
quietly put in a state nothing looks at. ARCHITECTURE.md tells the life of a job.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from types import MappingProxyType


class JobState(enum.StrEnum):
    """Stored as its value in `jobs.state` (the migrations' CHECK lists the same eleven)."""

    HELD = "held"  # admitted, money held, not sent yet (or back after a refusal that sent nothing)
    SUBMITTING = "submitting"  # an attempt row is committed and the provider call is under way
    QUEUED = "queued"  # the provider accepted it and has not started
    RUNNING = "running"  # the provider is rendering it
    AMBIGUOUS = "ambiguous"  # may have reached the provider: reconciled, never sent again
    EXPIRED = "expired"  # past its deadline: polled slowly, the hold kept in case it still bills
    SUCCEEDED = "succeeded"  # downloaded and settled; the video is not posted yet
    DELIVERED = "delivered"  # the video is posted
    REJECTED = "rejected"  # refused for good (content, an unsupported request); hold released
    FAILED = "failed"  # went wrong otherwise; hold released (or captured if the provider billed)
    CANCELED = "canceled"  # canceled by the member before any provider had it; hold released


# Settled one way or the other: the final message is owed (a canceled job's status message says it all).
FINISHED = frozenset({JobState.SUCCEEDED, JobState.REJECTED, JobState.FAILED})

# Every move the code makes, and no other: `store.transition` refuses the rest.
TRANSITIONS: Mapping[JobState, frozenset[JobState]] = MappingProxyType(
    {
        JobState.HELD: frozenset({JobState.SUBMITTING, JobState.CANCELED, JobState.REJECTED, JobState.FAILED}),
        # back to held when the provider refused without making anything (retry or fall back)
        JobState.SUBMITTING: frozenset({JobState.HELD, JobState.QUEUED, JobState.RUNNING, JobState.AMBIGUOUS}),
        JobState.QUEUED: frozenset({JobState.RUNNING, JobState.EXPIRED, *FINISHED}),
        # a provider may report a started job as queued again: the status shows what it says
        JobState.RUNNING: frozenset({JobState.QUEUED, JobState.EXPIRED, *FINISHED}),
        # reconciled (found at the provider), or settled like any job in flight
        JobState.AMBIGUOUS: frozenset({JobState.RUNNING, JobState.EXPIRED, *FINISHED}),
        JobState.EXPIRED: FINISHED,
        JobState.SUCCEEDED: frozenset({JobState.DELIVERED}),
        JobState.DELIVERED: frozenset(),
        JobState.REJECTED: frozenset(),
        JobState.FAILED: frozenset(),
        JobState.CANCELED: frozenset(),
    }
)

# Counted against a member's and a server's limit of jobs at once.
ACTIVE = frozenset({JobState.HELD, JobState.SUBMITTING, JobState.QUEUED, JobState.RUNNING, JobState.AMBIGUOUS})
# The loop still has work on these: money to settle or a video to post.
OPEN = ACTIVE | {JobState.SUCCEEDED, JobState.EXPIRED}
# A status message still shows progress: a finished job's last edit comes with its final message.
UNFINISHED = OPEN - {JobState.SUCCEEDED}
# Nothing moves these any more.
TERMINAL = frozenset(state for state, moves in TRANSITIONS.items() if not moves)
# The provider may have the job: too late to cancel.
WITH_PROVIDER = frozenset({JobState.SUBMITTING, JobState.QUEUED, JobState.RUNNING, JobState.AMBIGUOUS})
# The tracker looks at these when due; all but ambiguous are asked for their status.
POLLED = frozenset({JobState.QUEUED, JobState.RUNNING, JobState.AMBIGUOUS, JobState.EXPIRED})
TRACKED = POLLED - {JobState.AMBIGUOUS}
# Being made right now (an expired job keeps its slow pace instead).
RENDERING = frozenset({JobState.QUEUED, JobState.RUNNING})
# A video was made.
MADE = frozenset({JobState.SUCCEEDED, JobState.DELIVERED})


class IllegalTransition(Exception):
    """A move `TRANSITIONS` does not allow: a bug in the caller, not a state of the world."""

    def __init__(self, source: JobState, target: JobState) -> None:
        super().__init__(f"a job cannot move from {source} to {target}")
        self.source = source
        self.target = target


def can_move(source: JobState, target: JobState) -> bool:
    return target in TRANSITIONS.get(source, frozenset())


def check_moves(sources: Iterable[JobState], target: JobState) -> None:
    """Raise IllegalTransition unless every one of `sources` may move to `target`."""
    for source in sources:
        if not can_move(source, target):
            raise IllegalTransition(source, target)


def ordered(states: Iterable[JobState]) -> tuple[JobState, ...]:
    """`states` in declaration order: the same SQL parameters for the same group every time."""
    wanted = frozenset(states)
    return tuple(state for state in JobState if state in wanted)
