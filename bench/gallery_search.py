"""Benchmark 8: the community gallery's search and sorts at 100,000 public characters.

The database holds 100,000 public characters across 1,000 guilds (names of two or three
syllables, a third of them accented; descriptions of 5–12 words; 0–5 tags of 150; uses skewed
like real popularity; 1 % hidden after reports) plus 20,000 private or server-only ones that the
gallery must skip. Each row is one page of `/character browse` as the service runs it: the count
of matches (up to 1,001) and the page's card with the next one (`bot.store.gallery.count` +
`search`, as `GalleryService.browse` calls them), on the bot's
migrated database with its FTS5 index and partial indexes, for what members type: nothing (each
sort), a tag, an accented name typed without accents, a 3-letter prefix, two words, a miss; and
page 50 of a broad search.

    .venv/bin/python -m bench.gallery_search            # about 40 s
    .venv/bin/python -m bench.gallery_search --quick    # smoke test
    .venv/bin/python -m bench.gallery_search --postgres # on a temporary PostgreSQL server (tsvector + GIN)
    .venv/bin/python -m bench.gallery_search --database-url postgresql://…   # on yours
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import unicodedata
from dataclasses import dataclass

from bench._common import Summary, bounded, fmt, report, workdir
from bench._pg import BenchPostgres, add_arguments
from bench._seed import open_db
from bot.db import Database
from bot.prompts import name_key, name_skeleton
from bot.services.characters.gallery import COUNT_CAP
from bot.store import gallery as store

_SYLLABLES_TEXT = (
    "ka mi ra to no shi ve lo an el ar is ur ba de fi gu ho ja ku le mo ne pa ri su ta vi wo ya ze bryn "
    "cass dor fen gar hal ith jor kel lum mor nyx orin pell quin rhod syl tor ulm vex wyn"
)
SYLLABLES = tuple(_SYLLABLES_TEXT.split())
ACCENTS = {"a": "á", "e": "é", "i": "ï", "o": "ö", "u": "ü", "n": "ñ", "c": "ç"}
_WORDS_TEXT = (
    "red blue quiet loud tall small old young brave shy happy grumpy knight dancer painter pilot sailor "
    "wizard cat dog fox owl robot dragon ghost chef singer drummer cellist runner climber from with who "
    "loves hates plays wears carries lives near the city forest sea mountain moon desert village castle "
    "station garden library market harbor bridge tower river island"
)
WORDS = tuple(_WORDS_TEXT.split())
TAGS = tuple(f"{w}{n}" if n else w for n in range(3) for w in WORDS[:50])  # 150 tags


@dataclass(frozen=True)
class Config:
    public: int = 100_000
    other: int = 20_000  # private or server-only: never listed
    guilds: int = 1_000
    samples: int = 200  # pages per row


QUICK = Config(public=2_000, other=400, guilds=20, samples=5)


def accented(name: str, rng: random.Random) -> str:
    i = rng.randrange(len(name))
    return name[:i] + ACCENTS.get(name[i], name[i]) + name[i + 1 :]


def plain(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


async def seed(db: Database, config: Config) -> list[tuple[str, str]]:
    """Rows straight into `characters` (the FTS triggers index them); the (accented) names and a
    tag of each public character, to sample searches from."""
    rng = random.Random(8)
    now = time.time()
    seen: set[str] = set()
    rows: list[tuple[object, ...]] = []
    picked: list[tuple[str, str]] = []
    total = config.public + config.other
    while len(rows) < total:
        name = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
        if rng.random() < 1 / 3:
            name = accented(name, rng)
        if len(rows) % 7 == 0:
            name += str(rng.randint(1, 999))
        key = name_key(name)
        if key in seen:
            continue
        seen.add(key)
        n = len(rows)
        visibility = "public" if n < config.public else ("private" if n % 2 else "server")
        tags = ",".join(sorted(set(rng.sample(TAGS, rng.randint(0, 5)))))
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12)))
        uses = int(rng.paretovariate(1.2)) - 1
        created = now - rng.uniform(0, 365 * 86400)
        hidden = now if visibility == "public" and rng.random() < 0.01 else None
        guild = 1 + n % config.guilds
        rows.append(
            (guild, guild * 1000 + n % 40, name, key, name_skeleton(name), words, tags, visibility,
             f"G{n:08d}" if visibility == "public" else None, f"{n:064x}", uses, created, hidden)
        )  # fmt: skip
        if visibility == "public" and tags:
            picked.append((name, tags.split(",")[0]))
    async with db.transaction() as conn:
        await conn.executemany(
            "INSERT INTO characters (guild_id, owner_id, name, name_key, name_skeleton, description, tags,"
            " visibility, share_code, clip_sha256, clip_path, clip_duration, best_window_start, frame_paths, uses,"
            " created_at, updated_at, hidden_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'clips/x.mp4', 6.0, 0, '[]',"
            " ?, ?, ?, ?)",
            [(*r[:11], r[11], r[11], r[12]) for r in rows],
        )
    await db.execute("ANALYZE")
    return picked


def cases(picked: list[tuple[str, str]]) -> list[tuple[str, str, list[str], int]]:
    """(what was typed, sort, the texts to sample, page)."""
    names = [n for n, _ in picked]
    accent_free = [plain(n) for n in names if plain(n) != n]
    return [
        ("nothing", "popular", [""], 0),
        ("nothing", "newest", [""], 0),
        ("nothing", "name", [""], 0),
        ("nothing, page 50", "popular", [""], 50),
        ("a tag (#tag)", "popular", [f"#{t}" for _, t in picked], 0),
        ("a tag as a word", "newest", [t for _, t in picked], 0),
        ("an accented name without accents", "popular", accent_free, 0),
        ("3-letter prefix", "popular", [plain(n)[:3] for n in names], 0),
        ("3-letter prefix", "name", [plain(n)[:3] for n in names], 0),
        ("two words", "popular", ["dancer forest", "red knight", "owl moon", "pilot harbor"], 0),
        ("a broad word, page 50", "popular", ["the", "from", "with"], 50),
        ("no match", "popular", ["zzqx", "qqqqq", "xyxyx"], 0),
    ]


async def measure(db: Database, config: Config, picked: list[tuple[str, str]]):
    rng = random.Random(9)
    results = []
    for typed, sort, texts, page in cases(picked):
        times, matches = [], []
        for _ in range(config.samples):
            text = rng.choice(texts)
            began = time.perf_counter()
            match = store.match_expression(text)
            total = await store.count(db, match, COUNT_CAP + 1)
            broad = total > COUNT_CAP
            rows = await store.search(db, match, sort, 2, page if broad else max(0, min(page, total - 1)), broad=broad)
            times.append((time.perf_counter() - began) * 1000)
            matches.append(total)
            assert total == 0 or rows, (typed, text)
        results.append((typed, sort, page, sorted(matches)[len(matches) // 2], Summary.of(times)))
    return results


async def run(config: Config, *, keep: bool = False, postgres: BenchPostgres | None = None):
    with workdir("gallery", keep) as root:
        url = await postgres.new_database("gallery") if postgres else None
        db = await open_db(root / "data", url)
        try:
            began = time.perf_counter()
            picked = await seed(db, config)
            seeded = time.perf_counter() - began
            row = await db.fetchone(f"SELECT COUNT(*) FROM characters WHERE {store.IN_GALLERY}")
            listed = int(row[0]) if row else 0
            return seeded, listed, await measure(db, config, picked)
        finally:
            await db.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gallery_search", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run (smoke test)")
    parser.add_argument("--keep", action="store_true")
    add_arguments(parser)
    args = parser.parse_args(argv)
    config = QUICK if args.quick else Config()
    postgres = BenchPostgres.from_args(args)

    async def go():
        try:
            return await bounded(run(config, keep=args.keep, postgres=postgres), 280, "gallery_search")
        finally:
            if postgres is not None:
                await postgres.close()

    seeded, listed, results = asyncio.run(go())
    engine = "PostgreSQL (tsvector, GIN)" if postgres else "SQLite (FTS5)"
    rows = [
        [typed, sort, page + 1, f"{median:,}", fmt(s.p50, 2), fmt(s.p99, 2), fmt(s.max, 2)]
        for typed, sort, page, median, s in results
    ]
    worst = max(s.p99 for *_, s in results)
    report(
        f"Gallery search on {engine}: {config.public:,} public characters ({listed:,} listed), "
        f"{config.public + config.other:,} in the database",
        ["typed", "sort", "page", "matches (median)", "p50 ms", "p99 ms", "max ms"],
        rows,
        [
            f"one browse page = count of matches (at most {COUNT_CAP + 1:,}) + its card's and the next row "
            f"({config.samples} pages per row; median matches counted to the cap); "
            f"worst p99 {fmt(worst, 2)} ms (target: well under 100 ms)",
            f"seeding {config.public + config.other:,} rows with their search index: {seeded:.1f} s",
        ],
    )


if __name__ == "__main__":
    main()
