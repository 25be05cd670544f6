"""PostgreSQL through asyncpg, behind the same `Database` API as the SQLite file (bot/db.py).

Store code is written once, in the shapes aiosqlite gives: `?` placeholders (or `:name` with a
dict), `await conn.execute(sql, params)` returning a cursor with `rowcount` and `fetchone()`, rows
read by column name. Here `?` becomes `$n` (outside literals), the status tag (`UPDATE 3`) becomes
`rowcount`, and asyncpg's constraint errors become `bot.db.IntegrityError`.

Transactions are READ COMMITTED: a conditional `UPDATE … WHERE` re-checks its condition on the
latest row version after waiting for a row lock, which is what keeps budget holds race-free
across processes (bot/store/budgets.py). Within one process, write transactions still take turns
(as on SQLite), so the code written for one writer keeps its meaning inside a process; processes
run side by side, on disjoint jobs (leases, bot/store/jobs.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bot.db import (
    MIGRATIONS_DIR,
    Database,
    IntegrityError,
    MigrationError,
    OperationalError,
    Params,
    Row,
    check_version,
    discover_migrations,
)

log = logging.getLogger(__name__)

# Two processes starting at once must not both apply the same migration (a pg_advisory_lock key).
_MIGRATION_LOCK = 0x0CA57B07
_TAG_COUNT = re.compile(r"(\d+)$")
# Shared migrations are written in SQLite's types; on PostgreSQL an INTEGER column must hold a Discord
# snowflake (BIGINT) and a REAL one unix seconds to the microsecond (DOUBLE PRECISION, not float4).
_SQLITE_TYPES = {"INTEGER": "BIGINT", "REAL": "DOUBLE PRECISION"}
_TYPE_WORD = re.compile(r"\b(INTEGER|REAL)\b")


class PgIntegrityError(IntegrityError):
    """A PostgreSQL constraint refused the write (unique, check, foreign key, or a trigger's)."""


class PgOperationalError(OperationalError):
    """Any other error PostgreSQL reported."""


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise PgIntegrityError(str(exc)) from exc
    except asyncpg.RaiseError as exc:  # a trigger's RAISE EXCEPTION (the append-only ledger)
        raise PgIntegrityError(str(exc)) from exc
    except asyncpg.PostgresError as exc:
        raise PgOperationalError(f"{type(exc).__name__}: {exc}") from exc


@functools.lru_cache(maxsize=2048)
def translate(sql: str, named: bool = False) -> tuple[str, tuple[str, ...]]:
    """`?` (or `:name`) placeholders as `$1`, `$2`…, outside quotes and comments; with `named`, the
    parameter names in `$n` order (a name used twice is one parameter)."""
    out: list[str] = []
    names: list[str] = []
    i, n, count = 0, len(sql), 0
    while i < n:
        c = sql[i]
        if c in "'\"":
            end = sql.find(c, i + 1)
            while end != -1 and end + 1 < n and sql[end + 1] == c:  # a doubled quote inside
                end = sql.find(c, end + 2)
            end = n if end == -1 else end + 1
            out.append(sql[i:end])
            i = end
        elif c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end == -1 else end
            out.append(sql[i:end])
            i = end
        elif c == "?" and not named:
            count += 1
            out.append(f"${count}")
            i += 1
        elif c == ":" and named and i + 1 < n and (sql[i + 1].isalpha() or sql[i + 1] == "_") and sql[i - 1] != ":":
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] == "_"):
                j += 1
            name = sql[i + 1 : j]
            if name not in names:
                names.append(name)
            out.append(f"${names.index(name) + 1}")
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out), tuple(names)


_ROWS = re.compile(r"^\s*(SELECT|WITH|VALUES)\b|\bRETURNING\b", re.IGNORECASE)


def _returns_rows(sql: str) -> bool:
    """A query or a write with RETURNING (read with fetch), else a write whose status tag holds
    the row count (read with execute)."""
    return _ROWS.search(sql) is not None


def _args(sql: str, params: Params) -> tuple[str, Sequence[Any]]:
    if isinstance(params, dict):
        text, names = translate(sql, named=True)
        return text, [params[name] for name in names]
    text, _ = translate(sql)
    return text, list(params)


class PgCursor:
    """What aiosqlite's cursor gives the store: `rowcount`, `lastrowid` (always None: new ids come
    from `RETURNING id`), and the rows."""

    lastrowid: int | None = None

    def __init__(self, rows: list[asyncpg.Record], status: str | None) -> None:
        self._rows = rows
        self._next = 0
        match = _TAG_COUNT.search(status or "")
        # SELECT n / INSERT 0 n / UPDATE n / DELETE n: the last number is the row count
        self.rowcount = int(match.group(1)) if match else -1

    # rows as Any: asyncpg.Record is read like aiosqlite.Row (by name or position)
    async def fetchone(self) -> Any:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    async def fetchall(self) -> list[Any]:
        rows, self._next = self._rows[self._next :], len(self._rows)
        return rows

    async def close(self) -> None:
        self._rows = []

    async def __aenter__(self) -> PgCursor:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class PgResult:
    """`conn.execute(...)` as aiosqlite shapes it: awaited for a cursor, or used as `async with`."""

    def __init__(self, pending: Awaitable[PgCursor]) -> None:
        self._pending = pending

    def __await__(self) -> Generator[Any, None, PgCursor]:
        return self._pending.__await__()

    async def __aenter__(self) -> PgCursor:
        return await self._pending

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


class PgConnection:
    """One asyncpg connection with aiosqlite's `execute`/`executemany`/`execute_fetchall`."""

    dialect = "postgresql"

    def __init__(self, conn: PoolConnectionProxy[asyncpg.Record]) -> None:
        self.raw = conn

    async def _run(self, sql: str, params: Params) -> PgCursor:
        text, args = _args(sql, params)
        with _errors():
            # both calls use asyncpg's per-connection statement cache (one round trip once warm)
            if _returns_rows(text):
                rows = await self.raw.fetch(text, *args)
                return PgCursor(rows, f"SELECT {len(rows)}")  # RETURNING: one row per row changed
            return PgCursor([], await self.raw.execute(text, *args))

    def execute(self, sql: str, parameters: Params | None = None) -> PgResult:
        return PgResult(self._run(sql, parameters or ()))

    async def executemany(self, sql: str, parameters: Iterable[Params]) -> None:
        batch = list(parameters)
        if not batch:
            return
        text, _ = translate(sql, named=isinstance(batch[0], dict))
        with _errors():
            await self.raw.executemany(text, [_args(sql, p)[1] for p in batch])

    async def execute_fetchall(self, sql: str, parameters: Params | None = None) -> list[Any]:
        cursor = await self._run(sql, parameters or ())
        return await cursor.fetchall()


def shared_sql_for_postgres(sql: str) -> str:
    """A shared migration's SQLite column types as PostgreSQL's (see _SQLITE_TYPES)."""
    return _TYPE_WORD.sub(lambda m: _SQLITE_TYPES[m.group(1)], sql)


class PostgresDatabase(Database):
    """A pool of asyncpg connections to one PostgreSQL database."""

    dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self._pool = pool
        self._url = url
        self._listener: asyncpg.Connection | None = None  # LISTEN's own connection, made on first use
        self._write_lock = asyncio.Lock()
        self.write_observer = None
        # unique among the processes sharing the database, and readable in a query by an operator
        self.lease_owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"

    @classmethod
    async def connect(cls, url: str, *, pool_size: int = 8) -> PostgresDatabase:
        with _errors():
            pool = await asyncpg.create_pool(url, min_size=1, max_size=pool_size, command_timeout=60)
        return cls(pool, url)

    async def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
        await self._pool.close()

    async def listen(self, channel: str, callback: Callable[[], None]) -> None:
        """LISTEN on a connection of its own (a pooled one would be handed to other work). If it
        breaks, the wake-ups stop and the loop falls back to its own schedule (at most
        POLL_MAX_SECONDS late); the next start listens again."""
        if self._listener is None:
            with _errors():
                self._listener = await asyncpg.connect(self._url)
        with _errors():
            await self._listener.add_listener(channel, lambda *_: callback())

    async def notify(self, channel: str) -> None:
        async with self._pool.acquire() as conn:
            with _errors():
                await conn.execute("SELECT pg_notify($1, '')", channel)

    async def user_version(self) -> int:
        async with self._pool.acquire() as conn:
            with _errors():
                exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
                if not exists:
                    return 0
                value = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        return int(value)

    async def migrate(self, directory: Path = MIGRATIONS_DIR) -> int:
        migrations = discover_migrations(directory, self.dialect)
        latest = migrations[-1].version if migrations else 0
        async with self._pool.acquire() as conn:
            # processes starting together: one migrates, the others wait and then find nothing to do
            with _errors():
                await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version"
                    " (version BIGINT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
                )
                current = int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))
                check_version(current, latest)
                for migration in migrations:
                    if migration.version <= current:
                        continue
                    sql = migration.path.read_text(encoding="utf-8")
                    if migration.path.parent == directory:  # a shared file, written in SQLite's types
                        sql = shared_sql_for_postgres(sql)
                    try:
                        async with conn.transaction():
                            await conn.execute(sql)
                            await conn.execute(
                                "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
                                migration.version,
                                time.time(),
                            )
                    except asyncpg.PostgresError as exc:
                        raise MigrationError(f"migration {migration.name} failed: {exc}") from exc
                    log.info("database migrated to version %d (%s)", migration.version, migration.name)
                    current = migration.version
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        return current

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PgConnection]:
        started = time.perf_counter()
        async with self._write_lock, self._pool.acquire() as conn:
            with _errors():
                tx = conn.transaction()
                await tx.start()
            try:
                yield PgConnection(conn)
            except BaseException:
                # the body's error is the one to report: a connection that broke cannot roll back,
                # and the pool discards it anyway
                with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    await tx.rollback()
                raise
            else:
                with _errors():
                    await tx.commit()
        if self.write_observer is not None:
            self.write_observer(time.perf_counter() - started)

    async def probe_write(self, within: float) -> None:
        """A short write transaction on a connection of its own (not the pool's, which may be busy),
        bounded by `within`: the lock it takes is a row of schema_version, rewritten unchanged."""

        async def probe() -> None:
            conn = await asyncpg.connect(self._url, timeout=within)
            try:
                with _errors():
                    async with conn.transaction():
                        await conn.execute(f"SET LOCAL lock_timeout = {int(within * 1000)}")
                        await conn.execute(
                            "UPDATE schema_version SET version = version"
                            " WHERE version = (SELECT MAX(version) FROM schema_version)"
                        )
            finally:
                await conn.close()

        await asyncio.wait_for(probe(), within + 1.0)

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self._write_lock, self._pool.acquire() as conn:
            cursor = await PgConnection(conn).execute(sql, params)
        return cursor.rowcount

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._pool.acquire() as conn:
            rows = await PgConnection(conn).execute_fetchall(sql, params)
        return list(rows)
