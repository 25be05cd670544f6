"""migrations/0012_trust.sql: an existing database (at 0011) upgrades in one transaction, keeping
its rows with the new columns' defaults; a failure half-way leaves it exactly at 0011."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot.db import MIGRATIONS_DIR, Database, MigrationError

TRUST = 12
NEW_TABLES = {"character_reports", "character_consents", "operator_audit", "character_import_bans"}


@pytest.fixture
def before_trust(tmp_path: Path) -> Path:
    """The migrations as they were before this one."""
    directory = tmp_path / "old-migrations"
    directory.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if int(path.name[:4]) < TRUST:
            shutil.copy(path, directory / path.name)
    return directory


async def open_at_0011(path: Path, migrations: Path) -> Database:
    db = await Database.open(path)
    assert await db.migrate(migrations) == TRUST - 1
    await db.execute("INSERT INTO guild_settings (guild_id, created_at, updated_at) VALUES (7, 0, 0)")
    await db.execute(
        "INSERT INTO characters (guild_id, owner_id, name, name_key, visibility, share_code, clip_sha256, clip_path, "
        "clip_duration, frame_paths, created_at, updated_at, name_skeleton) "
        "VALUES (7, 1, 'Fox', 'fox', 'public', 'F0XF0X1234', 'x', 'c.mp4', 3, '[]', 0, 0, 'fox')"
    )
    return db


async def tables(db: Database) -> set[str]:
    return {r[0] for r in await db.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")}


async def test_an_existing_database_upgrades_and_keeps_its_rows(tmp_path: Path, before_trust: Path) -> None:
    db = await open_at_0011(tmp_path / "castbot.sqlite3", before_trust)
    try:
        assert await db.migrate() >= TRUST
        assert await tables(db) >= NEW_TABLES
        guild = await db.fetchone("SELECT allow_imports, report_channel_id, require_consent FROM guild_settings")
        assert guild is not None and tuple(guild) == (1, None, 0)  # imports stay on, nothing required
        fox = await db.fetchone("SELECT name, hidden_at, taken_down_at FROM characters")
        assert fox is not None and tuple(fox) == ("Fox", None, None)
    finally:
        await db.close()


async def test_a_failure_half_way_leaves_the_database_at_0011(tmp_path: Path, before_trust: Path) -> None:
    db = await open_at_0011(tmp_path / "castbot.sqlite3", before_trust)
    try:
        # a table in the way of a statement late in 0012: everything before it must roll back too
        await db.execute("CREATE TABLE character_import_bans (x INTEGER)")
        with pytest.raises(MigrationError, match="0012_trust"):
            await db.migrate()
        assert await db.user_version() == TRUST - 1
        columns = {r["name"] for r in await db.fetchall("PRAGMA table_info(characters)")}
        assert "hidden_at" not in columns and "taken_down_at" not in columns
        assert "operator_audit" not in await tables(db)
    finally:
        await db.close()
