"""Benchmark 5: character-name autocomplete at scale.

The database holds 100,000 characters, 10,000 of them in one guild (server-wide, private and
public ones, many owners) plus 500 imports into it. Two measurements:

1. `CharacterService.autocomplete` in-process (the production wiring from `open_bot`), for what a
   member types: nothing yet, one to three letters, a whole name, a piece from the middle of a
   name (the "contains" pass), a miss; for using a character, sharing one's own, and a moderator
   deleting.
2. End to end: the real bot (`python -m bot`) against the Discord sandbox, `/character info`'s
   name option typed into: dispatch of the AUTOCOMPLETE interaction to the bot's choices.

Discord's limit is 3 s, and a suggestion list is only useful while the member is typing.

    .venv/bin/python -m bench.autocomplete            # about 40 s
    .venv/bin/python -m bench.autocomplete --quick    # smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

from bench._common import TOKEN, Summary, bot_env, bounded, fmt, report, running_bot, workdir
from bench._seed import open_db
from bot.__main__ import open_bot
from bot.config import Settings
from bot.db import Database
from bot.prompts import name_key
from bot.services.actors import Actor
from discord_sandbox import DiscordSandbox

_CALLBACK = re.compile(r"^/interactions/(\d+)/[^/]+/callback$")
_WORDS = (
    "ka mi ra to no shi ve lo an el ar is ur ba de fi gu ho ja ku le mo ne pa qu ri su ta vi wo xa yo ze "
    "bryn cass dor fen gar hal ith jor kel lum mor nyx orin pell quin rhod syl tor ulm vex wyn"
)
SYLLABLES = tuple(_WORDS.split())


@dataclass(frozen=True)
class Config:
    characters: int = 100_000
    in_guild: int = 10_000
    imports: int = 500
    owners: int = 300  # members of the big guild who own characters
    samples: int = 200  # service calls per (purpose, input) case
    e2e: int = 300  # autocomplete interactions through the sandbox


QUICK = Config(characters=2_000, in_guild=500, imports=20, owners=20, samples=5, e2e=10)


def make_names(count: int, rng: random.Random) -> list[str]:
    names: set[str] = set()
    while len(names) < count:
        parts = rng.randint(2, 3)
        name = "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()
        if rng.random() < 0.3:
            name += f"_{rng.randint(1, 99)}"
        names.add(name[:32])
    return sorted(names)


async def seed(db: Database, config: Config, guild_id: int, member_id: int, other_guilds: list[int]) -> list[str]:
    """The characters (and imports) straight into the tables; returns the big guild's names."""
    rng = random.Random(5)
    now = time.time()
    big = make_names(config.in_guild, rng)
    owners = [member_id, *(member_id + 1 + i for i in range(config.owners - 1))]
    rows = []
    for i, name in enumerate(big):
        roll = rng.random()
        visibility = "private" if roll < 0.2 else "public" if roll < 0.3 else "server"
        rows.append((guild_id, rng.choice(owners), name, visibility, now - rng.uniform(0, 90 * 86400), i))
    others = make_names(min(config.characters - config.in_guild, 50_000), random.Random(6))
    for i in range(config.characters - config.in_guild):
        guild = other_guilds[i % len(other_guilds)]
        visibility = "public" if i % 7 == 0 else "server"
        name = others[i % len(others)]
        rows.append((guild, guild + 1 + i % 50, name, visibility, now - rng.uniform(0, 90 * 86400), i))
    async with db.transaction() as conn:
        await conn.executemany(
            "INSERT INTO characters (guild_id, owner_id, name, name_key, description, visibility, share_code,"
            " clip_sha256, clip_path, clip_duration, best_window_start, frame_paths, uses, created_at, updated_at,"
            " last_used_at) VALUES (?, ?, ?, ?, '', ?, ?, ?, 'clips/x.mp4', 6.0, 0, '[]', 0, ?, ?, ?)",
            [
                (
                    g,
                    owner,
                    name,
                    name_key(name),
                    visibility,
                    f"SC{index:08d}" if visibility == "public" else None,
                    f"{n:064x}",
                    created,
                    created,
                    created + 3600 if n % 3 == 0 else None,
                )
                for index, (g, owner, name, visibility, created, n) in enumerate(rows)
            ],
        )
        # imports into the big guild of public characters from elsewhere, under their own aliases
        async with conn.execute(
            "SELECT id, name FROM characters WHERE guild_id != ? AND visibility = 'public' LIMIT ?",
            (guild_id, config.imports * 3),
        ) as cursor:
            public = list(await cursor.fetchall())
        taken = {name_key(n) for n in big}
        imports = []
        for character_id, name in public:
            alias = f"{name}_imp"[:32]
            if name_key(alias) in taken:
                continue
            taken.add(name_key(alias))
            imports.append((guild_id, character_id, alias, name_key(alias), member_id, now))
            if len(imports) >= config.imports:
                break
        await conn.executemany(
            "INSERT INTO character_imports (guild_id, character_id, alias, alias_key, imported_by, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            imports,
        )
    return big


def typed_inputs(names: list[str], rng: random.Random) -> dict[str, list[str]]:
    """What members type, by kind (each kind a list to sample from)."""
    keys = [name_key(n) for n in names]
    return {
        "nothing typed": [""],
        "1 letter": [k[:1] for k in keys],
        "2 letters": [k[:2] for k in keys],
        "3 letters": [k[:3] for k in keys],
        "a whole name": keys,
        "the middle of a name": [k[2:5] for k in keys if len(k) > 5],
        "no match": ["zzqx", "qqqq", "xyxyx"],
    }


async def service_latencies(data_dir: Path, config: Config, guild_id: int, member_id: int, names: list[str]):
    settings = Settings(_env_file=None, data_dir=data_dir, providers=("local",), log_level="WARNING")
    rng = random.Random(9)
    inputs = typed_inputs(names, rng)
    results: dict[tuple[str, str], Summary] = {}
    async with open_bot(settings) as bot:
        service = bot.services.characters
        member = Actor(user_id=member_id, guild_id=guild_id)
        moderator = Actor(user_id=member_id, guild_id=guild_id, manage_guild=True)
        for purpose, actor in (("use", member), ("share", member), ("delete", moderator)):
            for kind, texts in inputs.items():
                times = []
                for _ in range(config.samples):
                    text = rng.choice(texts)
                    began = time.perf_counter()
                    await service.autocomplete(actor, text, purpose)
                    times.append((time.perf_counter() - began) * 1000)
                results[(purpose, kind)] = Summary.of(times)
    return results


async def e2e_latencies(root: Path, config: Config, sandbox: DiscordSandbox, guild, channel, member, names) -> Summary:
    rng = random.Random(11)
    inputs = [t for texts in typed_inputs(names, rng).values() for t in texts[:200]]
    env = bot_env(sandbox, root / "data", PROVIDERS="local")
    async with running_bot(env, root, sandbox) as bot:
        await bot.wait_log("connected as")
        records = []
        for _ in range(config.e2e):
            handle = await sandbox.invoke(
                guild, channel, member, "character info", focused="name", options={"name": rng.choice(inputs)}
            )
            await handle.wait_choices(10)
            records.append(handle.record)
    acks = {int(m[1]): c.at for c in sandbox.calls if (m := _CALLBACK.match(c.path)) and c.status < 300}
    return Summary.of([(acks[r.id] - (r.dispatched_at or 0)) * 1000 for r in records if r.id in acks])


async def run(config: Config, *, keep: bool = False):
    with workdir("autocomplete", keep) as root:
        async with DiscordSandbox(token=TOKEN) as sandbox:
            guild = sandbox.add_guild("Big server")
            channel = guild.add_text_channel("general")
            member = guild.add_member("typist")
            others = [guild.id + 1_000_000 + i for i in range(max(1, (config.characters - config.in_guild) // 100))]
            db = await open_db(root / "data")
            try:
                names = await seed(db, config, guild.id, member.id, others)
            finally:
                await db.close()
            service = await service_latencies(root / "data", config, guild.id, member.id, names)
            e2e = await e2e_latencies(root, config, sandbox, guild, channel, member, names)
    return service, e2e


def print_result(config: Config, service, e2e: Summary) -> None:
    rows = []
    for (purpose, kind), s in service.items():
        rows.append([purpose, kind, fmt(s.p50, 2), fmt(s.p99, 2), fmt(s.max, 2)])
    everything = [s.p99 for s in service.values()]
    report(
        f"Autocomplete: {config.in_guild:,} characters in the guild, {config.characters:,} in the database "
        f"(+{config.imports} imports)",
        ["purpose", "typed", "p50 ms", "p99 ms", "max ms"],
        rows,
        [
            f"service calls (CharacterService.autocomplete, {config.samples} per row); worst p99 "
            f"{fmt(max(everything), 2)} ms",
            f"end to end through the Discord sandbox (/character info, {e2e.n} interactions, mixed inputs): "
            f"dispatch → choices p50 {fmt(e2e.p50)} / p99 {fmt(e2e.p99)} / max {fmt(e2e.max)} ms "
            "(Discord's limit 3,000 ms)",
        ],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.autocomplete", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run (smoke test)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else Config()
    service, e2e = asyncio.run(bounded(run(config, keep=args.keep), 280, "autocomplete"))
    print_result(config, service, e2e)


if __name__ == "__main__":
    main()
