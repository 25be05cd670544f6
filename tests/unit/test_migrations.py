"""Migrations: fresh database, upgrade, a broken migration, a database newer than the code."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from bot.db import MIGRATIONS_DIR, Database, MigrationError, discover_migrations


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    """A copy of the real migrations that a test may extend."""
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    return directory


async def test_fresh_database_gets_every_table_and_latest_version(tmp_path: Path) -> None:
    path = tmp_path / "castbot.sqlite3"
    db = await Database.open(path)
    try:
        assert await db.migrate() == len(discover_migrations())
    finally:
        await db.close()
    expected = {
        "guild_settings", "characters", "character_handles", "character_imports", "jobs",
        "attempts", "budget_counters", "ledger", "provider_health", "provider_events",
    }  # fmt: skip
    assert expected <= tables(path)
    assert version(path) == len(discover_migrations())


async def test_migrating_twice_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "castbot.sqlite3"
    db = await Database.open(path)
    try:
        first = await db.migrate()
        before = tables(path)
        assert await db.migrate() == first
        assert tables(path) == before
    finally:
        await db.close()


async def test_upgrade_applies_only_the_new_migration_and_keeps_data(tmp_path: Path, migrations: Path) -> None:
    path = tmp_path / "castbot.sqlite3"
    db = await Database.open(path)
    try:
        v1 = await db.migrate(migrations)
        await db.execute(
            "INSERT INTO guild_settings (guild_id, created_at, updated_at) VALUES (?, ?, ?)", (42, 0.0, 0.0)
        )
        (migrations / f"{v1 + 1:04d}_add_note.sql").write_text("ALTER TABLE guild_settings ADD COLUMN note TEXT;")
        assert await db.migrate(migrations) == v1 + 1
        row = await db.fetchone("SELECT guild_id, note FROM guild_settings")
        assert row is not None
        assert (row["guild_id"], row["note"]) == (42, None)
    finally:
        await db.close()


async def test_broken_migration_leaves_the_previous_version_untouched(tmp_path: Path, migrations: Path) -> None:
    path = tmp_path / "castbot.sqlite3"
    db = await Database.open(path)
    try:
        v1 = await db.migrate(migrations)
        # the first statement succeeds, the second fails: the first must be rolled back too
        (migrations / f"{v1 + 1:04d}_broken.sql").write_text(
            "CREATE TABLE half_done (x INTEGER);\nALTER TABLE no_such_table ADD COLUMN y TEXT;"
        )
        with pytest.raises(MigrationError, match="broken"):
            await db.migrate(migrations)
        assert await db.user_version() == v1
        assert not db.connection.in_transaction
        # the connection is still usable for writes
        await db.execute("INSERT INTO guild_settings (guild_id, created_at, updated_at) VALUES (1, 0, 0)")
    finally:
        await db.close()
    assert "half_done" not in tables(path)
    assert version(path) == v1


async def test_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "castbot.sqlite3"
    latest = len(discover_migrations())
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {latest + 3}")
    db = await Database.open(path)
    try:
        with pytest.raises(MigrationError, match="newer than this Castbot"):
            await db.migrate()
        assert await db.user_version() == latest + 3
    finally:
        await db.close()


def test_migration_files_are_numbered_without_gaps(tmp_path: Path, migrations: Path) -> None:
    assert [m.version for m in discover_migrations()] == list(range(1, len(discover_migrations()) + 1))
    skipped = len(discover_migrations()) + 2  # one number past the next free one
    (migrations / f"{skipped:04d}_gap.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="without gaps"):
        discover_migrations(migrations)


def test_badly_named_migration_is_refused(migrations: Path) -> None:
    (migrations / "add-things.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="not understood"):
        discover_migrations(migrations)


async def test_ledger_is_append_only(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "castbot.sqlite3")
    try:
        await db.migrate()
        async with db.transaction() as conn:
            await conn.execute(
                "INSERT INTO jobs (id, guild_id, channel_id, user_id, prompt, request_json, providers, state,"
                " estimate_micros, global_period, guild_period, member_period, created_at, updated_at)"
                " VALUES (1, 1, 1, 1, 'p', '{}', 'local', 'held', 5,"
                " '2026-11', '2026-11', '2026-11-22', 0, 0)"
            )
            await conn.execute("INSERT INTO ledger (job_id, kind, amount_micros, created_at) VALUES (1, 'hold', 5, 0)")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            await db.execute("UPDATE ledger SET amount_micros = 0")
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            await db.execute("INSERT INTO ledger (job_id, kind, amount_micros, created_at) VALUES (1, 'hold', 5, 0)")
    finally:
        await db.close()


async def test_transaction_rolls_back_on_error_and_readers_never_see_uncommitted_rows(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "castbot.sqlite3")
    try:
        await db.migrate()
        insert = "INSERT INTO guild_settings (guild_id, created_at, updated_at) VALUES (?, 0, 0)"
        with pytest.raises(RuntimeError):
            async with db.transaction() as conn:
                await conn.execute(insert, (7,))
                # a read through the reader connection must not see the open transaction's row
                assert await db.fetchone("SELECT 1 FROM guild_settings WHERE guild_id = 7") is None
                raise RuntimeError("boom")
        assert await db.fetchone("SELECT 1 FROM guild_settings WHERE guild_id = 7") is None
        async with db.transaction() as conn:
            await conn.execute(insert, (8,))
        assert await db.fetchone("SELECT 1 FROM guild_settings WHERE guild_id = 8") is not None
    finally:
        await db.close()


async def test_connection_pragmas(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "castbot.sqlite3")

    async def pragma(name: str) -> object:
        async with db.connection.execute(f"PRAGMA {name}") as cur:
            row = await cur.fetchone()
            assert row is not None
            return row[0]

    try:
        assert await pragma("journal_mode") == "wal"
        assert await pragma("foreign_keys") == 1
        busy = await pragma("busy_timeout")
        assert isinstance(busy, int)
        assert busy >= 1000
    finally:
        await db.close()


async def test_look_alike_names_made_before_skeletons_keep_working_and_no_new_one_fits(tmp_path: Path) -> None:
    """0008 gives every name its confusable skeleton; look-alikes that already existed keep their
    exact names (the older one holds the skeleton) and the database refuses any new look-alike."""
    path = tmp_path / "castbot.sqlite3"
    db = await Database.open(path)
    try:
        await db.migrate(_upto(tmp_path, 7))
        for i, name in enumerate(["mossa", "m\u043ess\u0430", "Other"], start=1):  # Latin, Cyrillic, unrelated
            await db.execute(
                "INSERT INTO characters (id, guild_id, owner_id, name, name_key, description, visibility, "
                "clip_sha256, clip_path, clip_duration, best_window_start, frame_paths, created_at, updated_at) "
                "VALUES (?, 1, 1, ?, ?, '', 'server', 'sha', 'p', 3, 0, '[]', 0, 0)",
                (i, name, name.casefold()),
            )
        await db.migrate()
        rows = await db.fetchall("SELECT id, name_skeleton FROM characters ORDER BY id")
        assert [tuple(r) for r in rows] == [(1, "mossa"), (2, "mossa#c2"), (3, "other")]
        with pytest.raises(sqlite3.IntegrityError):
            await db.execute(
                "INSERT INTO characters (guild_id, owner_id, name, name_key, name_skeleton, description, visibility, "
                "clip_sha256, clip_path, clip_duration, best_window_start, frame_paths, created_at, updated_at) "
                "VALUES (1, 2, 'MOSSA', 'mossa2', 'mossa', '', 'server', 'sha', 'p', 3, 0, '[]', 0, 0)"
            )
        with pytest.raises(sqlite3.IntegrityError):
            await db.execute(
                "INSERT INTO character_imports (guild_id, character_id, alias, alias_key, alias_skeleton, "
                "imported_by, created_at) VALUES (1, 3, 'Mossa', 'mossa3', 'mossa', 1, 0)"
            )
    finally:
        await db.close()


def _upto(tmp_path: Path, version: int) -> Path:
    directory = tmp_path / f"migrations-{version}"
    directory.mkdir()
    for migration in discover_migrations():
        if migration.version <= version:
            shutil.copy(migration.path, directory / migration.path.name)
    return directory
