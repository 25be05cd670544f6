"""A real, throwaway PostgreSQL server for the tests and benches: `initdb` into a temporary folder,
`pg_ctl start` on a unix socket only (no port to collide on), fsync off. One per pytest-xdist
worker (the fixture is session-scoped); each test gets a database of its own, copied from a
migrated template, and dropped afterwards.

The binaries are looked up on PATH, then in PG_BIN and the usual Debian/Ubuntu folders. As root
(CI containers), the server runs as the `postgres` user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from bot.db import Database
from bot.db_postgres import PostgresDatabase

_DIRS = [os.environ.get("PG_BIN", ""), *sorted(map(str, Path("/usr/lib/postgresql").glob("*/bin")), reverse=True)]
ENGINES = ["sqlite", "postgresql"]  # the `db` fixture's params
MISSING = (
    "no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH, in PG_BIN or /usr/lib/postgresql/*/bin: "
    "install PostgreSQL 15 (apt-get install postgresql) to run the PostgreSQL half of the store tests"
)


def find_bin_dir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres, or None."""
    found = shutil.which("initdb")
    candidates = [str(Path(found).resolve().parent)] if found else []
    for folder in [*candidates, *_DIRS]:
        if folder and all((Path(folder) / name).exists() for name in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    # PATH may hold symlinks to the binaries rather than their folder (as on the CI image)
    if all(shutil.which(name) for name in ("initdb", "pg_ctl", "postgres")):
        return Path(str(shutil.which("initdb"))).parent
    return None


class PostgresServer:
    """One postgres process serving a unix socket in a private temporary folder."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="castbot-pg-"))  # short: a socket path has ~100 bytes
        self.data = self.root / "data"
        self.user = "castbot"
        self._as: list[str] = []
        self._names = itertools.count(1)
        self.template = "castbot_template"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        options = (
            f"-k {self.root} -c listen_addresses='' -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=300 -c shared_buffers=32MB"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        try:
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@/{database}?host={self.root}"

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.url("postgres"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def ensure_template(self) -> None:
        """A migrated database that every test's database is copied from (cheaper than migrating)."""
        exists = await self._fetch_exists(self.template)
        if exists:
            return
        await self._admin(f"CREATE DATABASE {self.template}")
        db = await PostgresDatabase.connect(self.url(self.template))
        try:
            await db.migrate()
        finally:
            await db.close()

    async def _fetch_exists(self, name: str) -> bool:
        conn = await asyncpg.connect(self.url("postgres"))
        try:
            return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
        finally:
            await conn.close()

    async def new_database(self, *, migrated: bool = True) -> str:
        """A fresh database's URL: migrated (from the template) or empty."""
        name = f"t{os.getpid()}_{next(self._names)}"
        if migrated:
            await self.ensure_template()
            await self._admin(f"CREATE DATABASE {name} TEMPLATE {self.template}")
        else:
            await self._admin(f"CREATE DATABASE {name}")
        return self.url(name)

    async def drop_database(self, url: str) -> None:
        name = url.split("@/", 1)[1].split("?", 1)[0]
        await self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@asynccontextmanager
async def open_test_database(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database of `engine`: a file in the test's folder, or a fresh PostgreSQL database
    (dropped afterwards)."""
    if engine == "sqlite":
        database: Database = await Database.open(tmp_path / "castbot.sqlite3")
        await database.migrate()
        try:
            yield database
        finally:
            await database.close()
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = await server.new_database()
    database = await PostgresDatabase.connect(url)
    try:
        yield database
    finally:
        await database.close()
        await server.drop_database(url)
