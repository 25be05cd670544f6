"""What only the PostgreSQL engine has to prove, against a real server (tests/postgres.py): its
placeholders, its migrations and version table, the ledger's append-only trigger, the health
probe, and budget holds that never overspend when many processes admit jobs at once."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import shutil
import subprocess
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import asyncpg
import pytest

from bot.db import MIGRATIONS_DIR, DatabaseError, IntegrityError, MigrationError, discover_migrations
from bot.db_postgres import PostgresDatabase, shared_sql_for_postgres, translate
from bot.services.budget import TooManyActiveJobs
from bot.store import budgets, gallery
from bot.store.budgets import InsufficientBudget, Scope
from tests.postgres import PostgresServer
from tests.unit.test_budget_service import GUILD, USD, Clock, admit, configure, make_service
from tests.unit.test_budget_store import (
    assert_no_cap_exceeded_and_ledger_balances,
    insert_job,
    run_random_admissions,
)

NOW = 1_790_000_000.0


@pytest.fixture
async def empty_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """An empty (unmigrated) database."""
    url = await postgres_server.new_database(migrated=False)
    yield url
    await postgres_server.drop_database(url)


@pytest.fixture
async def pg(postgres_server: PostgresServer) -> AsyncIterator[PostgresDatabase]:
    url = await postgres_server.new_database()
    db = await PostgresDatabase.connect(url)
    yield db
    await db.close()
    await postgres_server.drop_database(url)


# --- placeholders --------------------------------------------------------------------------------


def test_question_marks_become_numbered_outside_literals_and_comments() -> None:
    sql = "SELECT '?', \"a?\" FROM t -- why?\nWHERE a = ? AND b IN (?, ?) AND c = 'it''s ?'"
    assert translate(sql) == (
        "SELECT '?', \"a?\" FROM t -- why?\nWHERE a = $1 AND b IN ($2, $3) AND c = 'it''s ?'",
        (),
    )


def test_named_parameters_are_numbered_once_each_and_casts_are_left_alone() -> None:
    text, names = translate("SELECT :guild::text, :user, ':nope' WHERE g = :guild", named=True)
    assert text == "SELECT $1::text, $2, ':nope' WHERE g = $1"
    assert names == ("guild", "user")


def test_shared_migrations_get_postgresql_column_types() -> None:
    assert shared_sql_for_postgres("ALTER TABLE t ADD COLUMN at REAL; ALTER TABLE t ADD COLUMN n INTEGER;") == (
        "ALTER TABLE t ADD COLUMN at DOUBLE PRECISION; ALTER TABLE t ADD COLUMN n BIGINT;"
    )


# --- migrations ----------------------------------------------------------------------------------


def test_every_postgresql_migration_replaces_a_shared_one_of_the_same_name() -> None:
    shared = {m.name for m in discover_migrations()}
    variants = {p.name for p in (MIGRATIONS_DIR / "postgresql").glob("*.sql")}
    assert variants and variants <= shared
    chosen = discover_migrations(dialect="postgresql")
    assert [m.version for m in chosen] == [m.version for m in discover_migrations()]
    assert {m.name for m in chosen if m.path.parent.name == "postgresql"} == variants


async def test_fresh_database_gets_every_table_and_the_latest_version(empty_url: str) -> None:
    db = await PostgresDatabase.connect(empty_url)
    try:
        latest = len(discover_migrations())
        assert await db.migrate() == latest
        assert await db.migrate() == latest  # twice: nothing more to do
        assert await db.user_version() == latest
        rows = await db.fetchall("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        expected = {
            "guild_settings", "characters", "character_handles", "character_imports", "jobs",
            "attempts", "budget_counters", "ledger", "provider_health", "provider_events", "schema_version",
            "character_usage", "character_retired_files", "character_reports", "character_consents",
            "operator_audit", "character_import_bans",
        }  # fmt: skip
        assert expected <= {r["tablename"] for r in rows}
        # times keep sub-second precision and snowflakes fit (not float4 / int4)
        types = await db.fetchall(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'jobs'"
            " AND column_name IN ('notified_at', 'status_seq', 'guild_id', 'result_purged_at')"
        )
        assert {r["column_name"]: r["data_type"] for r in types} == {
            "notified_at": "double precision",
            "status_seq": "bigint",
            "guild_id": "bigint",
            "result_purged_at": "double precision",
        }
    finally:
        await db.close()


async def test_processes_migrating_at_once_apply_each_migration_once(empty_url: str) -> None:
    dbs = [await PostgresDatabase.connect(empty_url) for _ in range(3)]
    try:
        versions = await asyncio.gather(*(db.migrate() for db in dbs))
        assert versions == [len(discover_migrations())] * 3
        row = await dbs[0].fetchone("SELECT COUNT(*) AS n FROM schema_version")
        assert row is not None and row["n"] == len(discover_migrations())
    finally:
        for db in dbs:
            await db.close()


async def test_broken_migration_leaves_the_previous_version(empty_url: str, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    db = await PostgresDatabase.connect(empty_url)
    try:
        v1 = await db.migrate(directory)
        (directory / f"{v1 + 1:04d}_broken.sql").write_text(
            "CREATE TABLE half_done (x INTEGER);\nALTER TABLE no_such_table ADD COLUMN y TEXT;"
        )
        with pytest.raises(MigrationError, match="broken"):
            await db.migrate(directory)
        assert await db.user_version() == v1
        row = await db.fetchone("SELECT to_regclass('half_done') IS NULL AS gone")
        assert row is not None and row["gone"]
    finally:
        await db.close()


async def test_a_user_who_may_not_create_the_unaccent_extension_gets_a_migration_error_saying_so(
    empty_url: str, postgres_server: PostgresServer
) -> None:
    """The gallery's search needs `unaccent` (contrib). A role that may create tables but not
    extensions stops at 0011 with what to do, the database left at 0010."""
    admin = await asyncpg.connect(empty_url)
    try:
        await admin.execute("DROP ROLE IF EXISTS castbot_plain")
        await admin.execute("CREATE ROLE castbot_plain LOGIN")
        await admin.execute("GRANT CREATE, USAGE ON SCHEMA public TO castbot_plain")
    finally:
        await admin.close()
    db = await PostgresDatabase.connect(empty_url.replace("castbot@", "castbot_plain@"))
    try:
        with pytest.raises(MigrationError, match=r'0011_gallery\.sql failed: .*extension "unaccent"') as refused:
            await db.migrate()
        assert "permission denied" in str(refused.value) and "CREATE EXTENSION unaccent" in str(refused.value)
        assert await db.user_version() == 10
    finally:
        await db.close()
        await postgres_server.drop_database(empty_url)
        admin = await asyncpg.connect(postgres_server.url("postgres"))
        try:
            await admin.execute("DROP ROLE castbot_plain")
        finally:
            await admin.close()


async def test_a_dump_restores_with_its_search_working(pg: PostgresDatabase, postgres_server: PostgresServer) -> None:
    """pg_dump | psql: the restore computes the generated search column with an empty search_path,
    so the functions it calls must find each other without one."""
    await pg.execute(
        "INSERT INTO characters (guild_id, owner_id, name, name_key, name_skeleton, description, tags, visibility, "
        "clip_sha256, clip_path, clip_duration, best_window_start, frame_paths, created_at, updated_at) "
        "VALUES (1, 1, 'Zoë', 'zoë', 'zoe', 'a dancer', 'red-fox', 'public', 's', 'p', 3, 0, '[]', 0, 0)"
    )
    source = await pg.fetchone("SELECT current_database() AS name")
    assert source is not None
    copy = await postgres_server.new_database(migrated=False)
    bin_dir = postgres_server.bin_dir
    try:
        dump = subprocess.run(
            [str(bin_dir / "pg_dump"), "-d", postgres_server.url(source["name"])],
            check=True,
            capture_output=True,
            timeout=60,
        )
        restore = subprocess.run(
            [str(bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", copy],
            input=dump.stdout,
            capture_output=True,
            timeout=60,
        )
        assert restore.returncode == 0, restore.stderr.decode()
        restored = await PostgresDatabase.connect(copy)
        try:
            assert await restored.migrate() == len(discover_migrations())  # nothing left to do
            found = await gallery.search(restored, gallery.match_expression("#red-fox zoe"), "name", 5, 0)
            assert [r.character.name for r in found] == ["Zoë"]
        finally:
            await restored.close()
    finally:
        await postgres_server.drop_database(copy)


async def test_database_newer_than_the_code_is_refused(pg: PostgresDatabase) -> None:
    latest = len(discover_migrations())
    await pg.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, 0)", (latest + 3,))
    with pytest.raises(MigrationError, match="newer than this Castbot"):
        await pg.migrate()


# --- the ledger, the health probe ----------------------------------------------------------------


async def test_ledger_is_append_only(pg: PostgresDatabase) -> None:
    async with pg.transaction() as conn:
        await insert_job(conn, 1, 1, 1, 5)
        await conn.execute("INSERT INTO ledger (job_id, kind, amount_micros, created_at) VALUES (1, 'hold', 5, 0)")
    for sql in ("UPDATE ledger SET amount_micros = 0", "DELETE FROM ledger", "TRUNCATE ledger CASCADE"):
        with pytest.raises(IntegrityError, match="append-only"):
            await pg.execute(sql)
    with pytest.raises(IntegrityError, match="duplicate key"):
        await pg.execute("INSERT INTO ledger (job_id, kind, amount_micros, created_at) VALUES (1, 'hold', 5, 0)")
    row = await pg.fetchone("SELECT amount_micros FROM ledger")
    assert row is not None and row["amount_micros"] == 5


async def test_a_failed_transaction_is_rolled_back_and_the_pool_stays_usable(pg: PostgresDatabase) -> None:
    with pytest.raises(IntegrityError):
        async with pg.transaction() as conn:
            await conn.execute("INSERT INTO guild_settings (guild_id, created_at, updated_at) VALUES (7, 0, 0)")
            await conn.execute("INSERT INTO guild_settings (guild_id, created_at, updated_at) VALUES (7, 0, 0)")
    assert await pg.fetchall("SELECT * FROM guild_settings") == []
    assert await pg.execute("INSERT INTO guild_settings (guild_id, created_at, updated_at) VALUES (7, 0, 0)") == 1


async def test_probe_write_passes_and_times_out_behind_a_held_lock(pg: PostgresDatabase) -> None:
    await pg.probe_write(2.0)
    other = await asyncpg.connect(pg._url)
    try:
        async with other.transaction():
            await other.execute("LOCK TABLE schema_version IN ACCESS EXCLUSIVE MODE")
            with pytest.raises((DatabaseError, TimeoutError)):
                await pg.probe_write(0.3)
    finally:
        await other.close()


# --- budgets under concurrency --------------------------------------------------------------------


async def test_a_thousand_admissions_on_eight_connections_never_overspend(pg: PostgresDatabase) -> None:
    # eight handles: eight transactions in flight at once, each with its own connection
    others = [await PostgresDatabase.connect(pg._url) for _ in range(7)]
    try:
        stats = await run_random_admissions([pg, *others], seed=5, attempts=1000)
        assert stats["admitted"] > 100
        assert stats["refused"] > 100
        await assert_no_cap_exceeded_and_ledger_balances(pg)
    finally:
        for other in others:
            await other.close()


def _admit_in_a_process(url: str, first_id: int, count: int, seed: int) -> tuple[int, int]:
    """Run in a child process: `count` concurrent admissions on two connections against one tight
    budget (one guild, four members, a global cap); returns (admitted, refused)."""

    async def run() -> tuple[int, int]:
        dbs = [await PostgresDatabase.connect(url, pool_size=2) for _ in range(2)]
        rng = random.Random(seed)
        outcome = [0, 0]

        async def admit(job_id: int) -> None:
            member, amount = rng.randrange(4), rng.randrange(1, 2_000)
            scopes = (
                Scope("global", "", "2026-11", 700_000),
                Scope("guild", "1", "2026-11", 600_000),
                Scope("member", f"1:{member}", "2026-11-22", 200_000),
            )
            try:
                async with dbs[job_id % 2].transaction() as conn:
                    await insert_job(conn, job_id, 1, member, amount)
                    await budgets.hold(conn, job_id, scopes, amount, NOW)
                outcome[0] += 1
            except InsufficientBudget:
                outcome[1] += 1

        try:
            await asyncio.gather(*(admit(i) for i in range(first_id, first_id + count)))
        finally:
            for db in dbs:
                await db.close()
        return outcome[0], outcome[1]

    return asyncio.run(run())


async def test_a_thousand_admissions_from_four_processes_never_overspend(pg: PostgresDatabase) -> None:
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = await asyncio.gather(
            *(loop.run_in_executor(pool, _admit_in_a_process, pg._url, 1 + 250 * p, 250, p) for p in range(4))
        )
    admitted = sum(a for a, _ in results)
    refused = sum(r for _, r in results)
    assert admitted + refused == 1000
    assert refused > 0  # the budget was tight enough to bite
    await assert_no_cap_exceeded_and_ledger_balances(pg)
    rows = await pg.fetchall("SELECT scope, held_micros, limit_micros FROM budget_counters ORDER BY scope, scope_id")
    assert all(r["held_micros"] <= r["limit_micros"] for r in rows)
    held = await pg.fetchone("SELECT CAST(SUM(amount_micros) AS BIGINT) AS total FROM ledger WHERE kind = 'hold'")
    assert held is not None
    assert held["total"] == next(r["held_micros"] for r in rows if r["scope"] == "global")


async def test_active_job_caps_hold_across_processes(pg: PostgresDatabase) -> None:
    # four handles (processes) admit 40 jobs of one member at once: the cap of 2 active jobs holds
    others = [await PostgresDatabase.connect(pg._url) for _ in range(3)]
    dbs = [pg, *others]
    clock = Clock()
    services = [make_service(db, clock) for db in dbs]
    try:
        await configure(pg, GUILD, monthly_limit_micros=10 * USD, max_active_per_member=2, max_active_per_guild=3)

        async def one(i: int) -> bool:
            try:
                await admit(services[i % 4], dbs[i % 4], GUILD, 2 + i % 2, 1_000, activity=True)
            except TooManyActiveJobs:
                return False
            return True

        admitted = await asyncio.gather(*(one(i) for i in range(40)))
        assert sum(admitted) == 3  # the guild's cap; each member's 2 inside it
        rows = await pg.fetchall("SELECT user_id, COUNT(*) AS n FROM jobs GROUP BY user_id")
        assert all(r["n"] <= 2 for r in rows)
    finally:
        for other in others:
            await other.close()
