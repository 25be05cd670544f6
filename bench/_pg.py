"""PostgreSQL for the benches: a temporary server started like the tests' (`--postgres`: initdb,
fsync off, a unix socket), or a server of yours (`--database-url postgresql://…`, whose user may
CREATE DATABASE). Every scenario gets a fresh database of its own, dropped at the end."""

from __future__ import annotations

import argparse
import os
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tests.postgres import MISSING, PostgresServer, find_bin_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--postgres", action="store_true", help="run on a temporary PostgreSQL server")
    group.add_argument("--database-url", default=None, help="run on this PostgreSQL server (a database per scenario)")


class BenchPostgres:
    def __init__(self, url: str | None) -> None:
        self._server: PostgresServer | None = None
        if url is None:
            bin_dir = find_bin_dir()
            if bin_dir is None:
                raise SystemExit(MISSING)
            self._server = PostgresServer(bin_dir)
            self._server.start()
            url = self._server.url("postgres")
        self._admin_url = url
        self._made: list[str] = []

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BenchPostgres | None:
        if args.database_url:
            return cls(args.database_url)
        return cls(None) if args.postgres else None

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self._admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def new_database(self, label: str) -> str:
        name = f"castbot_bench_{label}_{os.getpid()}_{len(self._made)}"
        await self._admin(f"DROP DATABASE IF EXISTS {name}")
        await self._admin(f"CREATE DATABASE {name}")
        self._made.append(name)
        parts = urlsplit(self._admin_url)
        return urlunsplit(parts._replace(path=f"/{name}"))

    async def close(self) -> None:
        try:
            for name in self._made:
                await self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            if self._server is not None:
                self._server.stop()
