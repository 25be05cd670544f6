"""The community gallery (public characters of every guild, searched and sorted) and the writes of
/character edit.

A character is *in the gallery* while it is public, live, not hidden after reports and not taken
down (`IN_GALLERY`). Search matches name, description and tags, case- and accent-insensitive, each
typed word a prefix: on SQLite through the FTS5 table `character_search` (migrations/0011), on
PostgreSQL through the `search_words` tsvector column and its GIN index
(migrations/postgresql/0011). The three orders walk partial indexes of the public characters, so a
page costs the same at 100,000 cards as at 10.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.db import Connection, dialect
from bot.store.characters import _CHARACTER_COLUMNS, CharacterRow, Source, _all, _character, _one

IN_GALLERY = "visibility = 'public' AND deleted_at IS NULL AND hidden_at IS NULL AND taken_down_at IS NULL"
ORDERS = {
    "popular": "uses DESC, id DESC",
    "newest": "created_at DESC, id DESC",
    "name": "name_key, id",
}
MAX_TERMS = 8  # words of a search; more add nothing but cost
_WORD = re.compile(r"#?[\w-]+")


@dataclass(frozen=True)
class GalleryRow:
    character: CharacterRow
    tags: str  # comma-separated, normalised (bot.services.characters.gallery.parse_tags)


@dataclass(frozen=True)
class Usage:
    videos: int
    servers: int


@dataclass(frozen=True)
class Match:
    """What a member searched for: words (letters, digits, `_` and `-` only), each with whether it
    was a `#tag` (matches a tag only, whole)."""

    terms: tuple[tuple[str, bool], ...]

    def fts5(self) -> str:
        """SQLite's FTS5 query. Words are quoted, so nothing typed is read as FTS5 syntax (AND,
        NEAR, column filters, *)."""
        quoted = ['"' + word.replace('"', '""') + '"' for word, _ in self.terms]
        return " AND ".join(f"tags : {q}" if tag else f"{q} *" for q, (_, tag) in zip(quoted, self.terms, strict=True))

    def words(self) -> str:
        """PostgreSQL's: the words separated by spaces, `#` before a tag's, which the migration's
        castbot_search_query() folds like the indexed text and quotes into a tsquery."""
        return " ".join(("#" if tag else "") + word for word, tag in self.terms)


def match_expression(text: str) -> Match | None:
    """What a member typed as a search: every word must match (as a prefix) in the name,
    description or tags; `#word` matches a tag only. None when nothing searchable was typed."""
    terms = []
    for word in _WORD.findall(text)[:MAX_TERMS]:
        tag = word.startswith("#")
        word = word.lstrip("#").strip("-")
        if not any(ch.isalnum() for ch in word):
            continue
        terms.append((word, tag))
    return Match(tuple(terms)) if terms else None


def _filter(source: Source, match: Match | None, *, broad: bool = False) -> tuple[str, dict[str, Any]]:
    if match is None:
        return IN_GALLERY, {}
    if dialect(source) == "postgresql":
        # The tsquery is made once per statement (an InitPlan), not once per row; the planner then
        # cannot see its value, so `search` picks the plan's shape itself, as on SQLite.
        return f"{IN_GALLERY} AND search_words @@ (SELECT castbot_search_query(:match))", {"match": match.words()}
    # `+id`: a filter on rows the index walk finds; a bare `id IN` would make SQLite probe the
    # index once per (uses value, matching id) pair instead, hundreds of times slower
    column = "+id" if broad else "id"
    return (
        f"{IN_GALLERY} AND {column} IN (SELECT rowid FROM character_search WHERE character_search MATCH :match)",
        {"match": match.fts5()},
    )


async def search(
    source: Source, match: Match | None, sort: str, limit: int, offset: int, *, broad: bool = False
) -> list[GalleryRow]:
    """A page of cards. SQLite reads a search's matches and sorts them, which is right for a few
    hundred; `broad` (more than the count cap match) walks the order's index instead and keeps the
    rows that match, so a word in half the descriptions costs about as much as no search."""
    if match is not None and dialect(source) == "postgresql":
        return await _search_postgres(source, match, sort, limit, offset, broad=broad)
    where, params = _filter(source, match, broad=broad)
    index = f"INDEXED BY characters_gallery_{sort}" if broad and match is not None else ""
    rows = await _all(
        source,
        f"SELECT {_CHARACTER_COLUMNS}, tags FROM characters {index} WHERE {where} "
        f"ORDER BY {ORDERS[sort]} LIMIT :limit OFFSET :offset",
        {**params, "limit": limit, "offset": offset},
    )
    return [GalleryRow(_character(r), str(r["tags"])) for r in rows]


# PostgreSQL, a broad search: how far down the order's index to look first, and how many cards
# more for each one the page needs (a word in one card in 20 still fills a deep page there)
WALK_WINDOW = 1000
WALK_PER_CARD = 20


async def _search_postgres(
    source: Source, match: Match, sort: str, limit: int, offset: int, *, broad: bool
) -> list[GalleryRow]:
    """A broad search walks the first cards of the order's index (WALK_WINDOW) and keeps the
    matches: a common word fills a page within a few hundred. When they do not fill the page (the
    matches lie further down: a name prefix sorted by name), or the search is not broad, the
    matches are read through the GIN index and only their ids and sort keys sorted (1,000 matches:
    about 3 ms)."""
    where, params = _filter(source, match)
    order = ORDERS[sort]
    params = {**params, "limit": limit, "offset": offset}
    if broad:
        rows = await _all(
            source,
            f"SELECT * FROM (SELECT {_CHARACTER_COLUMNS}, tags, search_words FROM characters WHERE {IN_GALLERY} "
            f"ORDER BY {order} LIMIT :window) AS walked "
            f"WHERE search_words @@ (SELECT castbot_search_query(:match)) ORDER BY {order} LIMIT :limit OFFSET :offset",
            {**params, "window": WALK_WINDOW + WALK_PER_CARD * (offset + limit)},
        )
        if len(rows) == limit:
            return [GalleryRow(_character(r), str(r["tags"])) for r in rows]
    rows = await _all(
        source,
        f"WITH matching AS MATERIALIZED (SELECT id, uses, created_at, name_key FROM characters WHERE {where}), "
        f"paged AS (SELECT id FROM matching ORDER BY {order} LIMIT :limit OFFSET :offset) "
        f"SELECT {_CHARACTER_COLUMNS}, tags FROM characters WHERE id IN (SELECT id FROM paged) ORDER BY {order}",
        params,
    )
    return [GalleryRow(_character(r), str(r["tags"])) for r in rows]


async def count(source: Source, match: Match | None, cap: int) -> int:
    """How many cards match, counting no further than `cap`: an exact count reads every matching
    row (hidden and taken-down cards are not in any index), which at 100,000 public characters
    costs more than the page itself."""
    where, params = _filter(source, match)
    row = await _one(
        source,
        f"SELECT COUNT(*) FROM (SELECT 1 FROM characters WHERE {where} LIMIT :cap) AS matching",
        {**params, "cap": cap},
    )
    return int(row[0]) if row else 0


async def in_gallery(source: Source, character_id: int) -> GalleryRow | None:
    """The character, if it is in the gallery now."""
    row = await _one(
        source,
        f"SELECT {_CHARACTER_COLUMNS}, tags FROM characters WHERE id = :id AND {IN_GALLERY}",
        {"id": character_id},
    )
    return None if row is None else GalleryRow(_character(row), str(row["tags"]))


async def tags_of(source: Source, character_id: int) -> str:
    row = await _one(source, "SELECT tags FROM characters WHERE id = ?", (character_id,))
    return str(row[0]) if row else ""


async def usage(source: Source, character_id: int) -> Usage:
    row = await _one(
        source,
        "SELECT CAST(COALESCE(SUM(videos), 0) AS BIGINT), COUNT(*) FROM character_usage WHERE character_id = ?",
        (character_id,),
    )
    return Usage(int(row[0]), int(row[1])) if row else Usage(0, 0)


# --- /character edit ------------------------------------------------------------------------------


async def rename(conn: Connection, character_id: int, name: str, key: str, skeleton: str, now: float) -> None:
    await conn.execute(
        "UPDATE characters SET name = ?, name_key = ?, name_skeleton = ?, updated_at = ? WHERE id = ?",
        (name, key, skeleton, now, character_id),
    )


async def set_description(conn: Connection, character_id: int, description: str, now: float) -> None:
    await conn.execute(
        "UPDATE characters SET description = ?, updated_at = ? WHERE id = ?", (description, now, character_id)
    )


async def set_tags(conn: Connection, character_id: int, tags: str, now: float) -> None:
    await conn.execute("UPDATE characters SET tags = ?, updated_at = ? WHERE id = ?", (tags, now, character_id))


async def replace_clip(
    conn: Connection,
    old: CharacterRow,
    *,
    clip_sha256: str,
    clip_path: str,
    clip_duration: float,
    best_window_start: float,
    frame_paths: Sequence[str],
    now: float,
) -> None:
    """Point the character at its new clip and frames, record the old files for the janitor, and
    drop its provider handles: each provider registers the new clip at the character's next use."""
    await conn.execute(
        "INSERT INTO character_retired_files (character_id, clip_sha256, clip_path, frame_paths, retired_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (old.id, old.clip_sha256, old.clip_path, json.dumps(list(old.frame_paths)), now),
    )
    await conn.execute(
        "UPDATE characters SET clip_sha256 = ?, clip_path = ?, clip_duration = ?, best_window_start = ?, "
        "frame_paths = ?, updated_at = ? WHERE id = ?",
        (clip_sha256, clip_path, clip_duration, best_window_start, json.dumps(list(frame_paths)), now, old.id),
    )
    await conn.execute("DELETE FROM character_handles WHERE character_id = ?", (old.id,))
