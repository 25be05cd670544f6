"""Reads through `Database` see every write committed before they started, however many other
reads overlap them (on SQLite they share one reader connection; on PostgreSQL, a pool)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.postgres import ENGINES, open_test_database

ROWS = 2_000  # enough that a read of them all spans several hops to the reader's thread
WRITES = 200


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_read_after_a_commit_sees_it_while_other_reads_overlap(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async with open_test_database(engine, request, tmp_path) as db:
        async with db.transaction() as conn:
            await conn.execute("CREATE TABLE counter (n INTEGER NOT NULL)")
            await conn.execute("INSERT INTO counter VALUES (0)")
            await conn.execute("CREATE TABLE filler (x INTEGER)")
            await conn.executemany("INSERT INTO filler VALUES (?)", [(i,) for i in range(ROWS)])

        writing = True

        async def other_reads() -> int:
            done = 0
            while writing:
                assert len(await db.fetchall("SELECT x FROM filler")) == ROWS
                assert await db.fetchone("SELECT MAX(x) FROM filler") is not None
                done += 1
            return done

        readers = [asyncio.create_task(other_reads()) for _ in range(4)]
        stale = []
        try:
            for n in range(1, WRITES + 1):
                async with db.transaction() as conn:
                    await conn.execute("UPDATE counter SET n = ?", (n,))
                row = await db.fetchone("SELECT n FROM counter")
                listed = await db.fetchall("SELECT n FROM counter")
                assert row is not None
                if (row["n"], listed[0]["n"]) != (n, n):
                    stale.append((n, row["n"], listed[0]["n"]))
        finally:
            writing = False
            overlapping = await asyncio.gather(*readers)
        assert min(overlapping) > 0  # the other reads really ran alongside
        assert stale == [], f"{len(stale)} of {WRITES} reads missed the write just committed: {stale[:5]}"
