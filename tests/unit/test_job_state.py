"""The job state table: every state reachable, terminal states final, and the store making exactly
the moves the table allows (on a real SQLite file) and refusing the others before any write."""

from __future__ import annotations

import itertools
from collections import deque

import pytest

from bot.db import Database
from bot.domain import job_state
from bot.domain.job_state import TERMINAL, TRANSITIONS, IllegalTransition, JobState, can_move
from bot.i18n import DEFAULT_LOCALE, catalog
from bot.providers.base import (
    Ambiguous,
    AuthFailed,
    NotSent,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    Rejected,
    RejectReason,
    StatusIncomplete,
    Unavailable,
)
from bot.services.job_outcome import outcome_of
from bot.store import budgets as budget_store
from bot.store import jobs as store
from bot.store.jobs import NewJob

NOW = 1_790_000_000.0
EVERY_PAIR = list(itertools.product(JobState, repeat=2))


async def job_in(db: Database, state: JobState) -> int:
    """A new job put straight into `state` (the setup bypasses the store's checks on purpose)."""
    async with db.transaction() as conn:
        job_id = await store.insert(
            conn,
            NewJob(
                interaction_id=None,
                guild_id=1,
                channel_id=2,
                user_id=3,
                locale="en-US",
                prompt="a paper boat",
                request={"seconds": 4, "characters": []},
                providers=("local",),
                estimate_micros=0,
                global_period="2026-11",
                guild_period="2026-11",
                member_period="2026-11-22",
                deadline_at=NOW + 3600,
            ),
            NOW,
        )
        await conn.execute("UPDATE jobs SET state = ? WHERE id = ?", (state, job_id))
    return job_id


async def row_of(db: Database, job_id: int) -> tuple[str, int, float]:
    row = await db.fetchone("SELECT state, version, updated_at FROM jobs WHERE id = ?", (job_id,))
    assert row is not None
    return str(row[0]), int(row[1]), float(row[2])


# --- the table -----------------------------------------------------------------------------------


def test_every_state_has_a_row_and_every_move_leads_to_a_state() -> None:
    assert set(TRANSITIONS) == set(JobState)
    for targets in TRANSITIONS.values():
        assert all(isinstance(target, JobState) for target in targets)


def test_no_state_moves_to_itself() -> None:
    assert not [state for state in JobState if can_move(state, state)]


def test_every_state_is_reachable_from_held() -> None:
    seen, todo = {JobState.HELD}, deque([JobState.HELD])
    while todo:
        for target in TRANSITIONS[todo.popleft()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    assert seen == set(JobState)


def test_terminal_states_have_no_way_out_and_every_other_state_has_one() -> None:
    assert frozenset({JobState.DELIVERED, JobState.REJECTED, JobState.FAILED, JobState.CANCELED}) == TERMINAL
    for state in JobState:
        assert (not TRANSITIONS[state]) == (state in TERMINAL)


def test_every_unfinished_job_can_still_end() -> None:
    """From any state that is not terminal, some path leads to a terminal state."""
    for start in set(JobState) - TERMINAL:
        seen, todo = {start}, deque([start])
        while todo:
            for target in TRANSITIONS[todo.popleft()] - seen:
                seen.add(target)
                todo.append(target)
        assert seen & TERMINAL, start


def test_the_groups_are_made_of_states_and_agree_with_the_table() -> None:
    groups = {
        name: value
        for name, value in vars(job_state).items()
        if name.isupper() and isinstance(value, frozenset) and name != "TRANSITIONS"
    }
    assert {"ACTIVE", "OPEN", "UNFINISHED", "FINISHED", "TERMINAL", "POLLED", "TRACKED", "RENDERING"} <= set(groups)
    for name, group in groups.items():
        assert group and all(isinstance(state, JobState) for state in group), name
    # the loop keeps every job that is not terminal, and only those
    assert set(JobState) == job_state.OPEN | TERMINAL and not job_state.OPEN & TERMINAL


def test_a_state_is_its_stored_text() -> None:
    """Stored, compared and put into message keys as its plain value."""
    assert JobState("ambiguous") is JobState.AMBIGUOUS
    stored: str = JobState.AMBIGUOUS  # what the existing string comparisons and sets rely on
    assert stored == "ambiguous" and stored in {"ambiguous"} and "ambiguous" in job_state.POLLED
    assert f"state.{JobState.AMBIGUOUS}" == "state.ambiguous"
    messages = catalog(DEFAULT_LOCALE)
    for state in JobState:
        assert f"state.{state}" in messages
        assert f"jobs.state.{state}" in messages


# --- the store -----------------------------------------------------------------------------------


async def test_the_store_makes_every_move_the_table_allows_and_refuses_every_other(db: Database) -> None:
    for source, target in EVERY_PAIR:
        job_id = await job_in(db, source)
        before = await row_of(db, job_id)
        if can_move(source, target):
            async with db.transaction() as conn:
                assert await store.transition(conn, job_id, (source,), target, NOW + 1)
            state, version, updated_at = await row_of(db, job_id)
            assert (state, version, updated_at) == (target, before[1] + 1, NOW + 1)
        else:
            with pytest.raises(IllegalTransition) as refused:
                async with db.transaction() as conn:
                    await store.transition(conn, job_id, (source,), target, NOW + 1, error="should not be written")
            assert (refused.value.source, refused.value.target) == (source, target)
            assert await row_of(db, job_id) == before, (source, target)


async def test_one_illegal_source_refuses_the_whole_move_even_when_the_job_is_in_a_legal_one(db: Database) -> None:
    job_id = await job_in(db, JobState.HELD)
    before = await row_of(db, job_id)
    with pytest.raises(IllegalTransition):
        async with db.transaction() as conn:
            await store.transition(conn, job_id, (JobState.HELD, JobState.DELIVERED), JobState.SUBMITTING, NOW + 1)
    assert await row_of(db, job_id) == before


async def test_a_legal_move_from_another_state_changes_nothing(db: Database) -> None:
    """Compare-and-set: allowed by the table, but the job is no longer where the caller thought."""
    job_id = await job_in(db, JobState.CANCELED)
    before = await row_of(db, job_id)
    async with db.transaction() as conn:
        assert not await store.transition(conn, job_id, (JobState.HELD,), JobState.SUBMITTING, NOW + 1)
    assert await row_of(db, job_id) == before


async def test_progress_may_keep_the_state_or_make_a_legal_move_only(db: Database) -> None:
    still, moved, wrong = [await job_in(db, state) for state in (JobState.EXPIRED, JobState.QUEUED, JobState.EXPIRED)]
    async with db.transaction() as conn:
        await store.record_progress(
            conn,
            [
                store.Progress(still, JobState.EXPIRED, JobState.EXPIRED, 40, NOW + 5),
                store.Progress(moved, JobState.QUEUED, JobState.RUNNING, 10, NOW + 5),
            ],
            NOW + 1,
        )
    assert (await row_of(db, still))[0] == JobState.EXPIRED
    assert (await row_of(db, moved))[0] == JobState.RUNNING
    before = await row_of(db, wrong)
    with pytest.raises(IllegalTransition):
        async with db.transaction() as conn:
            await store.record_progress(conn, [store.Progress(wrong, JobState.EXPIRED, JobState.QUEUED, 50, NOW)], NOW)
    assert await row_of(db, wrong) == before


async def test_a_restart_makes_jobs_caught_submitting_ambiguous(db: Database) -> None:
    caught, waiting = await job_in(db, JobState.SUBMITTING), await job_in(db, JobState.HELD)
    async with db.transaction() as conn:
        assert await store.mark_in_flight_ambiguous(conn, NOW + 1) == [caught]
    assert (await row_of(db, caught))[0] == JobState.AMBIGUOUS
    assert (await row_of(db, waiting))[0] == JobState.HELD


async def test_rows_read_back_carry_the_enum(db: Database) -> None:
    job_id = await job_in(db, JobState.RUNNING)
    await db.execute("UPDATE jobs SET status_seq = 1 WHERE id = ?", (job_id,))
    job = await store.get(db, job_id)
    assert job is not None and type(job.state) is JobState and job.state is JobState.RUNNING
    [change] = await store.status_changes(db, 0, 10)
    assert type(change.state) is JobState
    [line] = await budget_store.recent_jobs(db, 1, 3)
    assert type(line.state) is JobState


# --- outcome_of ----------------------------------------------------------------------------------

OUTCOMES: list[tuple[ProviderError, JobState, str | None]] = [
    (Rejected("p", "refused", code="content_policy", reason=RejectReason.MODERATION), JobState.REJECTED, "moderation"),
    (Rejected("p", "too long", code="bad_seconds", reason=RejectReason.INVALID), JobState.REJECTED, "bad_seconds"),
    (Rejected("p", "turned off", code="disabled", reason=RejectReason.UNSUPPORTED), JobState.REJECTED, "disabled"),
    (Rejected("p", "gone", code="missing"), JobState.REJECTED, "missing"),
    (NotSent("p", "not sent"), JobState.FAILED, None),
    (Unavailable("p", "overloaded", code="503"), JobState.FAILED, "503"),
    (RateLimited("p", "slow down", code="429", account_busy=True), JobState.FAILED, "429"),
    (AuthFailed("p", "bad key", code="401"), JobState.FAILED, "401"),
    (QuotaExhausted("p", "no balance", code="1102"), JobState.FAILED, "1102"),
    (StatusIncomplete("p", "half read"), JobState.FAILED, None),
    (Ambiguous("p", "read timeout", code="timeout"), JobState.FAILED, "timeout"),
]


@pytest.mark.parametrize(
    ("error", "state", "code"), OUTCOMES, ids=[f"{type(e).__name__}-{e.code}" for e, _, _ in OUTCOMES]
)
def test_outcome_of_each_error_class(error: ProviderError, state: JobState, code: str | None) -> None:
    assert outcome_of(error) == (state, code)
    assert can_move(JobState.HELD, state) and all(can_move(s, state) for s in job_state.POLLED)


def test_every_error_class_has_an_outcome_above() -> None:
    def subclasses(cls: type[ProviderError]) -> set[type[ProviderError]]:
        return {cls, *(sub for direct in cls.__subclasses__() for sub in subclasses(direct))}

    covered = {type(error) for error, _, _ in OUTCOMES}
    assert {cls for cls in subclasses(ProviderError) if cls.__module__ == "bot.providers.base"} - covered == {
        ProviderError
    }
