"""The database: one API (`Database`) on two engines, numbered SQL migrations, short write transactions.

`DATABASE_URL` unset: the SQLite file in DATA_DIR (`SqliteDatabase`, here). All writes go through
one connection, so SQLite serialises them. `transaction()` opens BEGIN IMMEDIATE so a transaction
never has to upgrade a read lock (which would ignore busy_timeout).

`DATABASE_URL=postgresql://…`: PostgreSQL through asyncpg (`bot.db_postgres`), for several
processes on one database. Store code is written once for both: `?` placeholders, rows read by
column name, `INSERT … RETURNING id` for new ids, and a `Connection` whose `execute()` gives a
cursor with `rowcount` and `fetchone()`. Callers keep transactions short: no awaits on foreign
I/O (HTTP, Discord) inside.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

import aiosqlite

from bot.prompts import name_skeleton

if TYPE_CHECKING:
    import asyncpg

    from bot.db_postgres import PgConnection

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
BUSY_TIMEOUT_MS = 5000

# What store code is given inside a write transaction, and the rows it reads: the same shapes on
# both engines (aiosqlite's, or bot.db_postgres's look-alikes over asyncpg).
Connection: TypeAlias = "aiosqlite.Connection | PgConnection"
Row: TypeAlias = "aiosqlite.Row | asyncpg.Record"
Params: TypeAlias = Sequence[Any] | dict[str, Any]

# Engine-neutral errors: SQLite raises sqlite3's own, and the PostgreSQL engine re-raises asyncpg's
# as subclasses of these, so one `except` clause serves both engines.
IntegrityError = sqlite3.IntegrityError
OperationalError = sqlite3.OperationalError
DatabaseError = sqlite3.Error


class MigrationError(RuntimeError):
    """The database cannot be brought to the schema this code expects."""


@dataclass(frozen=True)
class Migration:
    version: int
    path: Path

    @property
    def name(self) -> str:
        return self.path.name


def discover_migrations(directory: Path = MIGRATIONS_DIR, dialect: str = "sqlite") -> list[Migration]:
    """Numbered .sql files, checked to be contiguous from 1 so a gap or a duplicate fails loudly."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise MigrationError(f"migration file name not understood: {path.name} (want NNNN_name.sql)")
        found.append(Migration(int(match.group(1)), path))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(f"migrations must be numbered 1..N without gaps; found {migration.name}")
    # A migration whose SQL differs on another engine has a file of the same name in <dir>/<dialect>/.
    variants = directory / dialect
    if dialect != "sqlite" and variants.is_dir():
        names = {m.name for m in found}
        for path in variants.glob("*.sql"):
            if path.name not in names:
                raise MigrationError(f"{dialect} migration {path.name} has no shared file of the same name")
        found = [Migration(m.version, variants / m.name if (variants / m.name).is_file() else m.path) for m in found]
    return found


async def _connect(path: Path) -> aiosqlite.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so Python never opens one behind us.
    conn = await aiosqlite.connect(str(path), isolation_level=None)
    conn.row_factory = aiosqlite.Row
    await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute("PRAGMA synchronous = NORMAL")
    await conn.execute("PRAGMA foreign_keys = ON")
    # names' confusable skeletons, computed in SQL by migrations (see migrations/0008)
    await conn.create_function("castbot_skeleton", 1, name_skeleton, deterministic=True)
    return conn


def _probe_write(path: Path, timeout: float) -> None:
    conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            conn.execute(f"PRAGMA user_version = {int(version)}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()


class Database(abc.ABC):
    """The engine-neutral API every store module uses; `open_database()` picks the engine."""

    dialect: ClassVar[str]
    # Told how long each write transaction took, lock wait included (the metrics, bot/app.py)
    write_observer: Callable[[float], None] | None = None
    # This process's name on the job leases it holds (bot/store/jobs.py claim_jobs): unique per
    # process on PostgreSQL; on SQLite one process owns the file, so no lease is ever written.
    lease_owner: str = "local"

    @staticmethod
    async def open(path: Path) -> SqliteDatabase:
        """The SQLite file at `path` (the default engine)."""
        return await SqliteDatabase.open_file(path)

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def listen(self, channel: str, callback: Callable[[], None]) -> None:
        """Call `callback` whenever any process sharing the database `notify`s `channel`."""

    @abc.abstractmethod
    async def notify(self, channel: str) -> None:
        """Tell every process listening on `channel`."""

    @abc.abstractmethod
    async def user_version(self) -> int:
        """The schema version: the number of the last migration applied."""

    @abc.abstractmethod
    async def migrate(self, directory: Path = MIGRATIONS_DIR) -> int:
        """Apply pending migrations, each in its own transaction; return the resulting version.

        A failing migration leaves the database at the previous version. A database newer than
        the code is refused rather than guessed at."""

    @abc.abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        """A write transaction, committed at the end, rolled back on any exception (including
        cancellation)."""

    @abc.abstractmethod
    async def probe_write(self, within: float) -> None:
        """Prove the database takes a write within `within` seconds (/healthz). Raises DatabaseError,
        OSError or TimeoutError."""

    @abc.abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """One autocommitted write; returns the number of rows changed."""

    @abc.abstractmethod
    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """Every row of a query, from committed data only."""

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        """The first row of a query meant to return one (it reads them all)."""
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None


def dialect(source: Database | Connection) -> str:
    """ "sqlite" or "postgresql": for the few statements whose SQL differs between the engines."""
    if isinstance(source, aiosqlite.Connection):
        return "sqlite"
    return source.dialect


async def open_database(url: str | None, path: Path) -> Database:
    """PostgreSQL when `url` is a postgresql:// URL, else the SQLite file at `path`."""
    if url:
        from bot.db_postgres import PostgresDatabase  # asyncpg is only loaded when asked for

        return await PostgresDatabase.connect(url)
    return await Database.open(path)


def check_version(current: int, latest: int) -> None:
    """Refuse a database newer than the code (same rule on both engines)."""
    if current > latest:
        raise MigrationError(
            f"the database is at schema version {current}, newer than this Castbot understands "
            f"({latest}); run a newer Castbot or restore a backup"
        )


class SqliteDatabase(Database):
    """The bot's SQLite file: one writer connection and one reader connection.

    Reads go to their own connection so that, under WAL, they only ever see committed data and
    never a half-done transaction another coroutine holds open on the writer.
    """

    dialect = "sqlite"

    def __init__(self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self.path = path
        self._conn = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self.write_observer = None

    @classmethod
    async def open_file(cls, path: Path) -> SqliteDatabase:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(path)
        try:
            reader = await _connect(path)
        except BaseException:
            await writer.close()
            raise
        return cls(path, writer, reader)

    async def close(self) -> None:
        await self._reader.close()
        await self._conn.close()

    async def listen(self, channel: str, callback: Callable[[], None]) -> None:
        """Nothing to listen to: one process owns the file, and its callers wake it directly."""

    async def notify(self, channel: str) -> None:
        """No other process shares the file."""

    @property
    def connection(self) -> aiosqlite.Connection:
        return self._conn

    async def user_version(self) -> int:
        async with self._conn.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    async def migrate(self, directory: Path = MIGRATIONS_DIR) -> int:
        migrations = discover_migrations(directory)
        latest = migrations[-1].version if migrations else 0
        current = await self.user_version()
        check_version(current, latest)
        for migration in migrations:
            if migration.version <= current:
                continue
            sql = migration.path.read_text(encoding="utf-8")
            # executescript() commits first and ignores isolation settings, so the transaction
            # and the version bump live inside the script itself.
            script = f"BEGIN IMMEDIATE;\n{sql}\n;PRAGMA user_version = {migration.version};\nCOMMIT;"
            async with self._write_lock:
                try:
                    await self._conn.executescript(script)
                except sqlite3.Error as exc:
                    if self._conn.in_transaction:
                        await self._conn.rollback()
                    raise MigrationError(f"migration {migration.name} failed: {exc}") from exc
            log.info("database migrated to version %d (%s)", migration.version, migration.name)
            current = migration.version
        return current

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (including cancellation)."""
        started = time.perf_counter()
        async with self._write_lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                await self._conn.rollback()
                raise
            else:
                await self._conn.commit()
        if self.write_observer is not None:
            self.write_observer(time.perf_counter() - started)

    async def probe_write(self, within: float) -> None:
        """Prove the file takes a write within `within` seconds, on a connection of its own (so
        neither the writer's lock nor its 5 s busy timeout makes a health check wait): BEGIN
        IMMEDIATE, rewrite `user_version` with its own value, COMMIT. Raises sqlite3.Error (locked,
        read-only, gone) or TimeoutError."""
        await asyncio.wait_for(asyncio.to_thread(_probe_write, self.path, within), within + 1.0)

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self._write_lock:
            cursor = await self._conn.execute(sql, params)
            count = cursor.rowcount
            await cursor.close()
            return count

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        # One hop to the reader's thread runs the query to its end. A cursor read in several hops
        # keeps its statement (and so its snapshot) open in between: every read the other
        # coroutines make on the shared connection meanwhile would see that older snapshot,
        # missing writes committed just before them (tests/unit/test_db_reads.py).
        rows: Iterable[aiosqlite.Row] = await self._reader.execute_fetchall(sql, params)
        return list(rows)
