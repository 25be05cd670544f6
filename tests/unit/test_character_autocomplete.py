"""Autocomplete over 10,000 characters: only usable names, prefix matches first, then names that
contain the text, each most recent first, at most 25. Checked against a brute-force answer.
(Timings belong to bench/; this only proves the indexed queries return the right names.)"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from bot.db import Database
from bot.prompts import name_key
from bot.services.actors import Actor
from tests.postgres import ENGINES, open_test_database
from tests.unit.test_character_service import ClipServer, Env, clip_bytes, make_env

__all__ = ["clip_bytes"]  # shared fixture
# one database of 10,000 characters for the whole module (the tests only read it)
pytestmark = pytest.mark.asyncio(loop_scope="module")

GUILD, OTHER = 100, 200
ME = Actor(user_id=2, guild_id=GUILD)
MOD = Actor(user_id=3, guild_id=GUILD, manage_guild=True)
T0 = 1_700_000_000.0


@dataclass(frozen=True)
class Entry:
    name: str
    recent: float
    kind: str  # own | import
    visibility: str


@dataclass
class World:
    env: Env
    usable: list[Entry]  # what ME may use in GUILD
    mine: list[Entry]  # ME's own characters in GUILD


def expected(entries: list[Entry], typed: str, limit: int = 25) -> list[str]:
    key = name_key(typed)
    by_recency = sorted(entries, key=lambda e: -e.recent)
    prefix = [e.name for e in by_recency if name_key(e.name).startswith(key)][:limit]
    if not key or len(prefix) >= limit:
        return prefix
    inside = [e.name for e in by_recency if key in name_key(e.name)[1:]]
    return prefix + inside[: limit - len(prefix)]


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=ENGINES)
async def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, clip_bytes: bytes
) -> AsyncIterator[World]:
    folder = tmp_path_factory.mktemp("autocomplete")
    async with open_test_database(request.param, request, folder / "db") as database:
        async for w in _world(folder, clip_bytes, database):
            yield w


async def _world(folder: Path, clip_bytes: bytes, database: Database) -> AsyncIterator[World]:
    async for env in make_env(folder, ClipServer(), clip_bytes, database=database):
        rng = random.Random(7)
        rows = []
        usable: list[Entry] = []
        mine: list[Entry] = []
        times = rng.sample(range(1, 1_000_000), 12_000)  # distinct: the ranking is total
        for i in range(10_000):
            owner = rng.choice((1, 2, 5, 6))
            visibility = rng.choice(("private", "server", "public"))
            deleted = T0 if i % 97 == 0 else None
            name = f"{rng.choice(('Anna', 'anton', 'Boris', 'Ёжик', 'zed'))}{i}"
            created = T0 + times[i]
            used = T0 + 2_000_000 + i if i % 50 == 0 else None
            rows.append((GUILD, owner, name, name_key(name), visibility, created, used, deleted, f"c{i}"))
            if deleted is None and (visibility != "private" or owner == ME.user_id):
                entry = Entry(name, used or created, "own", visibility)
                usable.append(entry)
                if owner == ME.user_id:
                    mine.append(entry)
        for i in range(2_000):  # another guild: public ones get imported, the rest must never show
            name = f"Anna{i}x"
            rows.append((OTHER, 7, name, name_key(name), "public" if i < 30 else "server", T0 + times[10_000 + i],
                         None, None, f"o{i}"))  # fmt: skip
        async with env.db.transaction() as conn:
            await conn.executemany(
                "INSERT INTO characters (guild_id, owner_id, name, name_key, visibility, created_at, updated_at, "
                "last_used_at, deleted_at, share_code, clip_sha256, clip_path, clip_duration, frame_paths) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'x', 'clips/x.mp4', 3.0, '[]')",
                [(g, o, n, k, v, c, c, u, d, code) for g, o, n, k, v, c, u, d, code in rows],
            )
            cursor = await conn.execute("SELECT id, name FROM characters WHERE guild_id = ? AND visibility = 'public'",
                                        (OTHER,))  # fmt: skip
            public = list(await cursor.fetchall())
            for n, (character_id, name) in enumerate(public):
                alias = f"imp{name}"
                at = T0 + 3_000_000 + n
                await conn.execute(
                    "INSERT INTO character_imports (guild_id, character_id, alias, alias_key, imported_by, created_at) "
                    "VALUES (?, ?, ?, ?, 6, ?)",
                    (GUILD, character_id, alias, name_key(alias), at),
                )
                usable.append(Entry(alias, at, "import", "public"))
            # one import whose original was revoked: it exists but is not usable
            await conn.execute("UPDATE characters SET visibility = 'server' WHERE id = ?", (public[0][0],))
        usable = [e for e in usable if e.name != f"imp{public[0][1]}"]
        yield World(env, usable, mine)


@pytest.mark.parametrize(
    "typed", ["", "ann", "ANNA1", "@anton99", "ё", "ЁЖИК12", "imp", "99", "7x", "nosuch", "ａｎｎａ"]
)
async def test_autocomplete_matches_brute_force(world: World, typed: str) -> None:
    got = await world.env.service.autocomplete(ME, typed)
    assert [c.name for c in got] == expected(world.usable, typed.lstrip("@"))
    assert len(got) <= 25
    kinds = {c.name: c.kind for c in got}
    assert all(kinds[e.name] == e.kind for e in world.usable if e.name in kinds)


async def test_share_offers_only_own_characters(world: World) -> None:
    got = await world.env.service.autocomplete(ME, "b", "share")
    assert [c.name for c in got] == expected(world.mine, "b")
    assert got and all(c.kind == "own" for c in got)


async def test_moderators_may_delete_private_ones_too(world: World) -> None:
    got = await world.env.service.autocomplete(MOD, "zed1", "delete")
    names = {c.name for c in got}
    row = await world.env.db.fetchone(
        "SELECT COUNT(*) FROM characters WHERE guild_id = ? AND name_key LIKE 'zed1%' AND deleted_at IS NULL "
        "AND visibility = 'private'",
        (GUILD,),
    )
    assert row is not None and row[0] > 0
    assert len(got) == 25 and any(c.visibility == "private" for c in got)
    assert all(n.lower().startswith("zed1") for n in names)


async def test_members_delete_list_is_their_own_and_their_imports(world: World) -> None:
    got = await world.env.service.autocomplete(Actor(user_id=6, guild_id=GUILD), "", "delete")
    rows = await world.env.db.fetchall(
        "SELECT name FROM characters WHERE guild_id = ? AND owner_id = 6 AND deleted_at IS NULL", (GUILD,)
    )
    own = {r[0] for r in rows}
    assert len(got) == 25
    for choice in got:
        assert choice.name in own or choice.kind == "import"
