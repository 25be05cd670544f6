"""Benchmark 1: acknowledgement under burst.

The real bot (`python -m bot`, local provider) runs against the Discord sandbox; 500 `/generate`
invocations from 100 members in 20 guilds are dispatched within one second. Reported: the time
from dispatch (the sandbox putting INTERACTION_CREATE on the gateway) to the interaction
callback (the bot's defer reaching the sandbox), and to the ephemeral "queued" follow-up.

    .venv/bin/python -m bench.ack_burst            # the full run (about 20 s)
    .venv/bin/python -m bench.ack_burst --quick    # a tiny run, for the smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path

from bench._common import (
    TOKEN,
    Summary,
    bot_env,
    bounded,
    fmt,
    report,
    running_bot,
    verdict,
    workdir,
)
from bench._seed import open_db
from bot.db import Database
from bot.services.actors import Actor
from bot.services.guilds import GuildService
from discord_sandbox import Channel, DiscordSandbox, Member

DISCORD_LIMIT_MS = 3000.0
TARGET_P99_MS = 150.0
_CALLBACK = re.compile(r"^/interactions/(\d+)/[^/]+/callback$")
_FOLLOWUP = re.compile(r"^/webhooks/\d+/([^/]+)$")
_MESSAGE = re.compile(r"^/channels/\d+/messages$")
_JOB = re.compile(r"Job #(\d+)")


@dataclass(frozen=True)
class Config:
    guilds: int = 20
    members_per_guild: int = 5
    invocations: int = 500
    window: float = 1.0  # seconds over which the invocations are spread
    raise_limits: bool = True  # admit every job (the heavier case); else the default 2/10 caps refuse some
    discord_pace: bool = False  # the sandbox takes 5 posts per 5 s per channel, as Discord does


QUICK = Config(guilds=2, members_per_guild=2, invocations=10, window=0.2)


@dataclass(frozen=True)
class Result:
    config: Config
    ack_ms: Summary
    admitted_ms: Summary  # dispatch -> the job row committed (jobs.created_at)
    status_ms: Summary  # dispatch -> the public status message posted
    followup_ms: Summary
    acked: int
    deferred: int
    queued: int
    without_link: int  # confirmed before the status message could be posted (a busy channel)
    refused_posts: int  # channel posts the sandbox answered 429 (Discord's pace)
    dispatch_span_s: float
    bot_cpu_s: float
    ready_s: float


async def seed_limits(data_dir: Path, owners: dict[int, int], per_member: int, per_guild: int) -> None:
    """Raise each guild's active-job caps (as its owner would with /settings) before the bot starts."""
    db = await open_db(data_dir)
    try:
        guilds = GuildService(db)
        for guild_id, owner_id in owners.items():
            actor = Actor(user_id=owner_id, guild_id=guild_id, manage_guild=True)
            await guilds.update(actor, max_active_per_member=per_member, max_active_per_guild=per_guild)
    finally:
        await db.close()


async def job_times(data_dir: Path) -> dict[int, float]:
    db = await Database.open(data_dir / "castbot.sqlite3")
    try:
        return {int(r[0]): float(r[1]) for r in await db.fetchall("SELECT id, created_at FROM jobs")}
    finally:
        await db.close()


def status_posts(sandbox: DiscordSandbox) -> dict[int, float]:
    """Job number -> when its status message was taken (a post answered 429 is not)."""
    posted: dict[int, float] = {}
    for call in sandbox.calls:
        if (
            call.method == "POST"
            and call.status < 300
            and _MESSAGE.match(call.path)
            and call.body.get("embeds")
            and (m := _JOB.search(str(call.body["embeds"][0].get("title", ""))))
        ):
            posted.setdefault(int(m[1]), call.at)
    return posted


async def run(config: Config, *, keep: bool = False) -> Result:
    with workdir("ack", keep) as root:
        async with DiscordSandbox(token=TOKEN) as sandbox:
            if config.discord_pace:
                sandbox.pace_channel_posts(5, 5.0)
            seats: list[tuple[Channel, Member]] = []
            owners: dict[int, int] = {}
            for g in range(config.guilds):
                guild = sandbox.add_guild(f"Guild {g}")
                channel = guild.add_text_channel("general")
                members = [guild.add_member(f"m{g}-{i}") for i in range(config.members_per_guild)]
                owners[guild.id] = guild.owner_id
                seats += [(channel, m) for m in members]
            data_dir = root / "data"
            if config.raise_limits:
                per_member = -(-config.invocations // len(seats)) + 1
                await seed_limits(data_dir, owners, per_member, per_member * config.members_per_guild + 1)
            env = bot_env(sandbox, data_dir, PROVIDERS="local")
            async with running_bot(env, root, sandbox) as bot:
                ready_s = time.monotonic() - bot.spawned_at
                cpu_before = bot.stats().cpu_seconds
                records = []
                wall_offset = time.time() - time.monotonic()  # jobs.created_at is wall time
                loop = asyncio.get_running_loop()
                start = loop.time()
                for i in range(config.invocations):
                    delay = start + i * config.window / config.invocations - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    channel, member = seats[i % len(seats)]
                    assert channel.guild is not None
                    handle = await sandbox.invoke(
                        channel.guild, channel, member, "generate", prompt=f"a paper boat on a canal, take {i}"
                    )
                    records.append(handle.record)
                span = loop.time() - start

                def settled() -> bool:
                    return all(r.rejected or (r.acknowledged and r.followups) for r in records)

                await bounded(sandbox.wait_for(settled, 120, "every answer"), 130, "answers")
                bot_cpu = bot.stats().cpu_seconds - cpu_before
                queued = sum(1 for r in records if r.followups and "is queued" in r.followups[0].content)

                def every_status_posted() -> bool:
                    return len(status_posts(sandbox)) >= queued

                # at Discord's pace the status messages of a busy channel land after the answers
                await bounded(sandbox.wait_for(every_status_posted, 120, "every status message"), 130, "statuses")
                acks: dict[int, float] = {}
                followups: dict[str, float] = {}
                statuses = status_posts(sandbox)
                for call in sandbox.calls:
                    if (m := _CALLBACK.match(call.path)) and call.status < 300:
                        acks.setdefault(int(m[1]), call.at)
                    elif call.method == "POST" and (m := _FOLLOWUP.match(call.path)):
                        followups.setdefault(m[1], call.at)
                sent = {r.id: r.dispatched_at or 0.0 for r in records}
                ack_ms = [(acks[r.id] - sent[r.id]) * 1000 for r in records if r.id in acks]
                follow_ms = [(followups[r.token] - sent[r.id]) * 1000 for r in records if r.token in followups]
                created = await job_times(data_dir)
                admitted_ms, status_ms = [], []
                for r in records:
                    job = _JOB.search(r.followups[0].content) if r.followups else None
                    if job is None or r.dispatched_at is None:
                        continue
                    job_id = int(job[1])
                    if job_id in created:
                        admitted_ms.append((created[job_id] - wall_offset - r.dispatched_at) * 1000)
                    if job_id in statuses:
                        status_ms.append((statuses[job_id] - r.dispatched_at) * 1000)
                return Result(
                    config=config,
                    ack_ms=Summary.of(ack_ms),
                    admitted_ms=Summary.of(admitted_ms),
                    status_ms=Summary.of(status_ms),
                    followup_ms=Summary.of(follow_ms),
                    acked=len(ack_ms),
                    deferred=sum(1 for r in records if r.ack_type == 5),
                    queued=queued,
                    without_link=sum(1 for r in records if r.followups and "channel is busy" in r.followups[0].content),
                    refused_posts=len([c for c in sandbox.calls_to("POST", _MESSAGE.pattern) if c.status == 429]),
                    dispatch_span_s=span,
                    bot_cpu_s=bot_cpu,
                    ready_s=ready_s,
                )


def print_result(r: Result) -> None:
    c = r.config
    rows = [
        [label, fmt(s.p50), fmt(s.p99), fmt(s.max), target]
        for label, s, target in (
            ("dispatch → callback (defer)", r.ack_ms, "p99 < 150"),
            ("dispatch → job admitted (row committed)", r.admitted_ms, "—"),
            ("dispatch → status message posted", r.status_ms, "—"),
            ("dispatch → 'queued' follow-up", r.followup_ms, "—"),
        )
    ]
    report(
        f"Acknowledgement under burst: {c.invocations} /generate from {c.guilds * c.members_per_guild} members "
        f"in {c.guilds} guilds within {r.dispatch_span_s:.2f} s (local provider"
        + ("; Discord's pace of 5 posts per 5 s per channel)" if c.discord_pace else ")"),
        ["latency (ms)", "p50", "p99", "max", "target"],
        rows,
        [
            f"acknowledged {r.acked}/{c.invocations} (deferred: {r.deferred}); admitted and queued: {r.queued}"
            f" ({r.without_link} confirmed before their status message was posted: a busy channel;"
            f" channel posts answered 429: {r.refused_posts})",
            f"Discord's limit {DISCORD_LIMIT_MS:.0f} ms: max {fmt(r.ack_ms.max)} ms "
            f"({verdict(r.ack_ms.max < DISCORD_LIMIT_MS)}); target p99 < {TARGET_P99_MS:.0f} ms: "
            f"{verdict(r.ack_ms.p99 < TARGET_P99_MS)}",
            f"bot process CPU during the burst and its follow-ups: {r.bot_cpu_s:.2f} s; "
            f"process start to READY: {r.ready_s:.2f} s",
        ],
    )


def main(argv: list[str] | None = None) -> Result:
    parser = argparse.ArgumentParser(prog="python -m bench.ack_burst", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run (smoke test)")
    parser.add_argument("--invocations", type=int, default=None)
    parser.add_argument("--default-limits", action="store_true", help="keep the 2-per-member/10-per-guild caps")
    parser.add_argument("--discord-pace", action="store_true", help="the sandbox takes 5 posts per 5 s per channel")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (bot log, database)")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else Config()
    if args.invocations:
        config = Config(**{**config.__dict__, "invocations": args.invocations})
    if args.default_limits:
        config = Config(**{**config.__dict__, "raise_limits": False})
    if args.discord_pace:
        config = Config(**{**config.__dict__, "discord_pace": True})
    result: Result = asyncio.run(bounded(run(config, keep=args.keep), 280, "ack burst"))
    print_result(result)
    return result


if __name__ == "__main__":
    main()
