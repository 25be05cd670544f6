"""Past one process, end to end: three real `python -m bot` processes split Discord's 4 shards
(0-1, 2 and 3) and share one PostgreSQL database and one DATA_DIR, against the Discord sandbox
and the Kling simulator (a paid engine, so money moves).

- 300 /generate in 40 guilds: every interaction is answered by the process owning its guild's
  shard; one process is SIGKILLed while jobs are in flight; its jobs are taken over when their
  leases expire, and every video is posted exactly once; the ledger balances.
- 1,000 /generate at once across the three processes against a tight operator budget: the shared
  scope is never overspent, and the ledger matches every counter.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from discord_sandbox import MANAGE_GUILD, Channel, DiscordSandbox, Guild, Member, StoredMessage
from tests.e2e.test_http_endpoint import free_port
from tests.e2e.test_shards import start_shard_process
from tests.fakes.kling_sim import KlingSim
from tests.postgres import PostgresServer

pytestmark = pytest.mark.e2e

KEY = "kling-scale-key"
SHARDS = {"a": "0-1", "b": "2", "c": "3"}  # process -> the shards it runs, of 4
TIMEOUT = 120.0
_JOB = re.compile(r"job #(\d+)")


@dataclass
class Place:
    guild: Guild
    channel: Channel
    members: list[Member]
    admin: Member


def places(sandbox: DiscordSandbox, guilds: int, members: int) -> list[Place]:
    out = []
    for i in range(guilds):
        guild = sandbox.add_guild(f"guild {i}", shard=(i % 4, 4))
        out.append(
            Place(
                guild,
                guild.add_text_channel("general"),
                [guild.add_member(f"m{i}-{k}") for k in range(members)],
                guild.add_member(f"admin{i}", permissions=MANAGE_GUILD),
            )
        )
    return out


@pytest.fixture
async def kling() -> AsyncIterator[KlingSim]:
    sim = KlingSim(api_key=KEY, element_seconds=0.0, video_seconds=4.0)
    await sim.start()
    yield sim
    await sim.close()


@pytest.fixture
async def database_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    url = await postgres_server.new_database(migrated=False)  # the processes migrate it, once
    yield url
    await postgres_server.drop_database(url)


@dataclass
class Fleet:
    procs: dict[str, asyncio.subprocess.Process]
    outputs: dict[str, tuple[bytes, bytes]]

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)


@contextlib.asynccontextmanager
async def fleet(sandbox: DiscordSandbox, root: Path, url: str, kling: KlingSim, **env: str) -> AsyncIterator[Fleet]:
    """The three processes, one shared DATA_DIR and database; stopped (SIGTERM) at the end."""
    shared = root / "shared-data"
    settings = {
        "DATABASE_URL": url,
        "DATA_DIR": str(shared),
        "PROVIDERS": "kling",
        "KLING_API_KEY": KEY,
        "KLING_BASE_URL": kling.base_url,
        "POLL_MIN_SECONDS": "0.2",
        "POLL_MAX_SECONDS": "1",
        "JOB_LEASE_SECONDS": "5",  # a killed process's jobs are taken over 5 s after its last renewal
        **env,
    }
    procs = {
        name: await start_shard_process(sandbox, root / name, "4", ids, free_port(), **settings)
        for name, ids in SHARDS.items()
    }
    running = Fleet(procs, {})
    try:
        await sandbox.wait_shards(4, timeout=60)
        yield running
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.terminate()
        for name, proc in procs.items():
            running.outputs[name] = await asyncio.wait_for(proc.communicate(), 30)


async def ask(sandbox: DiscordSandbox, place: Place, who: Member, command: str, **options: Any) -> StoredMessage:
    handle = await sandbox.invoke(place.guild, place.channel, who, command, **options)
    return await handle.wait_final_message(timeout=TIMEOUT)


async def in_batches(coros: list[Coroutine[Any, Any, StoredMessage]], size: int) -> list[StoredMessage]:
    """Await `coros` `size` at a time (the sandbox answers each within Discord's 3 s)."""
    out: list[StoredMessage] = []
    for start in range(0, len(coros), size):
        out += await asyncio.gather(*coros[start : start + size])
    return out


async def set_budgets(sandbox: DiscordSandbox, where: list[Place], usd: str) -> None:
    replies = await in_batches([ask(sandbox, p, p.admin, "budget set", monthly_usd=usd) for p in where], 20)
    assert all(r.content.startswith("Budget saved.") for r in replies), [r.content for r in replies][:3]


def results(sandbox: DiscordSandbox, where: list[Place]) -> Iterator[int]:
    """The job number of every result posted (a reply carrying the video)."""
    for place in where:
        for message in place.channel.visible_messages:
            if message.author.id == sandbox.bot.id and message.attachments and message.message_reference:
                found = _JOB.search(message.content)
                if found:
                    yield int(found[1])


async def ledger_balances(url: str) -> dict[str, int]:
    """Every counter's held and spent equal what the ledger says; returns the totals."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT kind, SUM(amount_micros) AS total FROM ledger GROUP BY kind")
        totals = {r["kind"]: int(r["total"]) for r in rows}
        counters = await conn.fetch("SELECT scope, limit_micros, held_micros, spent_micros FROM budget_counters")
        per_job = await conn.fetch(
            "SELECT job_id, COUNT(*) FILTER (WHERE kind = 'hold') AS holds,"
            " COUNT(*) FILTER (WHERE kind IN ('capture', 'release')) AS settled FROM ledger GROUP BY job_id"
        )
    finally:
        await conn.close()
    assert all(r["holds"] == 1 and r["settled"] >= 1 for r in per_job)  # each hold settled, once per kind
    for counter in counters:
        assert counter["held_micros"] == 0  # nothing open: every hold was captured or released
        if counter["limit_micros"] is not None:
            assert counter["spent_micros"] <= counter["limit_micros"]
    global_spent = sum(c["spent_micros"] for c in counters if c["scope"] == "global")
    assert global_spent == totals.get("capture", 0)  # every job passes the operator's scope
    return totals


async def test_three_processes_post_300_videos_once_through_a_sigkill(
    sandbox: DiscordSandbox, tmp_path: Path, database_url: str, kling: KlingSim
) -> None:
    sandbox.gateway.max_concurrency = 4
    where = places(sandbox, 40, 4)
    async with fleet(sandbox, tmp_path, database_url, kling) as running:
        await set_budgets(sandbox, where, "100")
        # job k in guild k % 40 by one of its four members: two each, under the active-job caps
        asks = [ask(sandbox, where[k % 40], where[k % 40].members[(k // 40) % 4], "generate",
                    prompt=f"a lighthouse in a storm, take {k}") for k in range(300)]  # fmt: skip
        queued = await in_batches(asks, 30)
        assert all("is queued" in m.content for m in queued), Counter(m.content[:40] for m in queued)
        # every interaction reached exactly the process owning its guild's shard
        answered = Counter(r.shard for r in sandbox.interactions.by_id.values())
        assert set(answered) == {(0, 4), (1, 4), (2, 4), (3, 4)}

        # SIGKILL the process on shard 2 while videos are still rendering and posting
        await sandbox.wait_for(lambda: len(set(results(sandbox, where))) >= 60 or None, TIMEOUT, "60 results")
        # the processes share the work as Discord shares the guilds: each holds its own guilds' jobs
        conn = await asyncpg.connect(database_url)
        try:
            owners = await conn.fetchval("SELECT COUNT(DISTINCT lease_owner) FROM jobs WHERE lease_owner IS NOT NULL")
        finally:
            await conn.close()
        assert owners == 3
        running.kill("b")
        assert len(set(results(sandbox, where))) < 300  # jobs were in flight when it died
        await sandbox.wait_for(lambda: len(set(results(sandbox, where))) >= 300 or None, TIMEOUT, "300 results")
        await asyncio.sleep(2)  # any second post would land by now
        posted = Counter(results(sandbox, where))
        assert sorted(posted) == list(range(1, 301)) and set(posted.values()) == {1}
    totals = await ledger_balances(database_url)
    assert totals["hold"] > 0 and totals.get("capture", 0) > 0
    assert running.procs["b"].returncode == -signal.SIGKILL
    for name in ("a", "c"):
        assert running.procs[name].returncode == 0, running.outputs[name][1][-2000:].decode()
    logs = b"".join(running.outputs[n][1] + running.outputs[n][0] for n in ("a", "c")).decode()
    assert "took over" in logs and "whose leases expired" in logs, logs[-3000:]


async def test_a_thousand_admissions_across_three_processes_never_overspend(
    sandbox: DiscordSandbox, tmp_path: Path, database_url: str, kling: KlingSim
) -> None:
    sandbox.gateway.max_concurrency = 4
    where = places(sandbox, 40, 5)
    # the operator's cap is the scope every process shares: room for some jobs, far from 1,000
    async with fleet(sandbox, tmp_path, database_url, kling, GLOBAL_MONTHLY_BUDGET_USD="20") as running:
        await set_budgets(sandbox, where, "100")
        asks = [ask(sandbox, where[k % 40], where[k % 40].members[(k // 40) % 5], "generate",
                    prompt=f"a quiet harbour, take {k}") for k in range(1000)]  # fmt: skip
        replies = await in_batches(asks, 100)
        admitted = sum("is queued" in m.content for m in replies)
        assert 0 < admitted < 1000
        conn = await asyncpg.connect(database_url)
        try:
            row = await conn.fetchrow(
                "SELECT limit_micros, held_micros + spent_micros AS used FROM budget_counters WHERE scope = 'global'"
            )
            jobs = await conn.fetchval("SELECT COUNT(*) FROM jobs")
        finally:
            await conn.close()
        assert row is not None and row["used"] <= row["limit_micros"] == 20_000_000
        assert jobs == admitted
        await sandbox.wait_for(lambda: len(set(results(sandbox, where))) >= admitted or None, TIMEOUT, "results")
        await asyncio.sleep(1)
    await ledger_balances(database_url)
    assert all(p.returncode == 0 for p in running.procs.values())
