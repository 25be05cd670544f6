"""Jobs owned by exactly one process at a time: on PostgreSQL two Database handles (two processes)
claim disjoint jobs, and when one stops renewing the other takes its jobs over after the lease,
with the restart rules; on SQLite one process owns every job and nothing is leased."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.db import Database
from bot.db_postgres import PostgresDatabase
from bot.domain.job_state import FINISHED, POLLED, JobState
from bot.store import jobs as store
from tests.postgres import PostgresServer
from tests.unit.test_job_state import NOW, job_in

LEASE = 60.0


@pytest.fixture
async def two(postgres_server: PostgresServer) -> AsyncIterator[tuple[PostgresDatabase, PostgresDatabase]]:
    """Two processes' handles on one PostgreSQL database."""
    url = await postgres_server.new_database()
    first, second = await PostgresDatabase.connect(url), await PostgresDatabase.connect(url)
    yield first, second
    await first.close()
    await second.close()
    await postgres_server.drop_database(url)


async def claim(db: Database, now: float) -> list[int]:
    async with db.transaction() as conn:
        return sorted(c.job_id for c in await store.claim_jobs(conn, db.lease_owner, now, LEASE))


async def held_ids(db: Database, now: float) -> set[int]:
    return {job_id for job_id, _ in await store.held_due_by_provider(db, now, per_provider=100)}


async def test_two_processes_claim_disjoint_jobs_and_see_only_their_own(
    two: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    a, b = two
    ids = [await job_in(a, JobState.HELD) for _ in range(40)]
    ids += [await job_in(a, JobState.RUNNING) for _ in range(10)]
    mine_a, mine_b = await asyncio.gather(claim(a, NOW), claim(b, NOW))
    assert not set(mine_a) & set(mine_b)
    assert sorted(mine_a + mine_b) == sorted(ids)
    # each process's loop sees its own jobs only
    assert await held_ids(a, NOW) | await held_ids(b, NOW) == set(ids[:40])
    assert not await held_ids(a, NOW) & await held_ids(b, NOW)
    polled_a = {j.id for j in await store.due(a, NOW, POLLED)}
    polled_b = {j.id for j in await store.due(b, NOW, POLLED)}
    assert polled_a | polled_b == set(ids[40:]) and not polled_a & polled_b
    # renewing within the lease changes nobody's jobs
    assert await claim(b, NOW + 10) == []
    assert set(await claim(a, NOW + LEASE * 0.6)) == set(mine_a)  # past half: renewed, still a's


async def test_a_process_that_stops_renewing_loses_its_jobs_after_the_lease(
    two: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    a, b = two
    held = await job_in(a, JobState.HELD)
    submitting = await job_in(a, JobState.SUBMITTING)
    async with a.transaction() as conn:
        await store.start_attempt(conn, submitting, "local", NOW)
    running = await job_in(a, JobState.RUNNING)
    finished = await job_in(a, JobState.SUCCEEDED)
    delivered = await job_in(a, JobState.DELIVERED)
    assert await claim(a, NOW) == sorted([held, submitting, running, finished])
    # while a's lease runs, b gets nothing and the mid-submission job is left alone
    async with b.transaction() as conn:
        assert await store.take_over(conn, b.lease_owner, NOW + LEASE - 1, LEASE, restart=True) == []
    assert await held_ids(b, NOW + LEASE - 1) == set()
    # a died: past its lease, b takes everything over, with the restart rules
    later = NOW + LEASE + 1
    async with b.transaction() as conn:
        assert await store.take_over(conn, b.lease_owner, later, LEASE, restart=False) == [submitting]
    assert await held_ids(b, later) == {held}
    assert {j.id for j in await store.due(b, later, POLLED)} == {running, submitting}  # ambiguous is polled
    assert {j.id for j in await store.unnotified(b, FINISHED, later, 10)} == {finished}
    job = await store.get(b, submitting)
    assert job is not None and job.state == JobState.AMBIGUOUS  # reconciled, never resent
    attempts = await store.attempts_for(b, submitting)
    assert [r["state"] for r in attempts] == ["ambiguous"]
    row = await b.fetchone("SELECT lease_owner FROM jobs WHERE id = ?", (delivered,))
    assert row is not None and row["lease_owner"] is None  # nothing left to do: never leased
    assert await held_ids(a, later) == set()  # a, were it alive, no longer acts on them


async def test_a_clean_stop_hands_the_jobs_over_at_once(two: tuple[PostgresDatabase, PostgresDatabase]) -> None:
    a, b = two
    ids = [await job_in(a, JobState.HELD) for _ in range(3)]
    assert await claim(a, NOW) == ids
    assert await store.release_leases(a) == 3
    assert await claim(b, NOW + 1) == ids


async def test_on_sqlite_the_one_process_owns_every_job(sqlite_db: Database) -> None:
    held = await job_in(sqlite_db, JobState.HELD)
    submitting = await job_in(sqlite_db, JobState.SUBMITTING)
    assert await claim(sqlite_db, NOW) == []  # nothing written
    assert await held_ids(sqlite_db, NOW) == {held}
    async with sqlite_db.transaction() as conn:
        assert await store.take_over(conn, sqlite_db.lease_owner, NOW, LEASE, restart=False) == []
    async with sqlite_db.transaction() as conn:  # a restart: the old rule, every job mid-submission
        assert await store.take_over(conn, sqlite_db.lease_owner, NOW, LEASE, restart=True) == [submitting]


async def on_shard(db: Database, shard: int, count: int) -> int:
    """A running job in a guild Discord routes to `shard` of `count`."""
    job_id = await job_in(db, JobState.RUNNING)
    await db.execute("UPDATE jobs SET guild_id = ? WHERE id = ?", (((shard + count * job_id) << 22) | 7, job_id))
    return job_id


async def test_with_shards_each_process_takes_its_own_guilds_jobs_and_a_dead_ones_after_a_lease(
    two: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    a, b = two
    low, high = store.Shards(2, frozenset({0})), store.Shards(2, frozenset({1}))
    zero = [await on_shard(a, 0, 2) for _ in range(6)]
    one = [await on_shard(a, 1, 2) for _ in range(6)]

    async def claim_as(db: Database, shards: store.Shards, now: float) -> list[int]:
        async with db.transaction() as conn:
            claimed = await store.claim_jobs(conn, db.lease_owner, now, LEASE, shards=shards)
        return sorted(c.job_id for c in claimed)

    # the work splits as Discord splits the guilds, whichever process looks first
    assert await claim_as(a, low, NOW) == zero
    assert await claim_as(b, high, NOW) == one
    # a job of shard 1 while its process is down: the other takes it once it has waited a lease
    late = await on_shard(a, 1, 2)
    await a.execute("UPDATE jobs SET created_at = ? WHERE id = ?", (NOW, late))
    assert late not in await claim_as(a, low, NOW + LEASE / 2)
    assert late in await claim_as(a, low, NOW + LEASE + 1)


async def test_a_callback_taken_by_one_process_wakes_the_others_loops(
    two: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    from bot.services.webhooks import WAKE_CHANNEL, WebhookService

    a, b = two
    woken = asyncio.Event()
    await a.listen(WAKE_CHANNEL, woken.set)
    job = await job_in(a, JobState.RUNNING)
    await a.execute("UPDATE jobs SET callback_token = 'tok', provider = 'kling' WHERE id = ?", (job,))
    # b's HTTP endpoint takes the callback; a holds the job: a's loop must look now, not at POLL_MAX
    received = await WebhookService(b, lambda: None).receive("kling", "tok", {}, b"{}")
    assert received.job_id == job
    await asyncio.wait_for(woken.wait(), 5)
