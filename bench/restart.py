"""Benchmark 6: restart with 10,000 open jobs.

The database holds 10,000 open jobs in every state a restart can find (held, caught mid-submit,
ambiguous, queued, running, expired, finished but not yet posted) on the openai and kling
simulators, plus 50,000 finished jobs of history. The real bot (`python -m bot`) is started;
reported: the time from process start to "accepting commands" (the first `/jobs` acknowledged),
with where it went (imports, migrations, recovery and the ledger audit, connecting), then the
acknowledgement latency of `/jobs` during the first seconds while the loop works off the backlog.

    .venv/bin/python -m bench.restart            # about 40 s
    .venv/bin/python -m bench.restart --quick    # smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench._common import Summary, bot_env, bounded, fmt, report, running_bot, workdir
from bench._seed import SeedJob, open_db, seed_history, seed_jobs
from bench._sims import KLING_KEY, OPENAI_KEY, BenchKlingSim, BenchOpenAISim
from discord_sandbox import DiscordSandbox, InteractionRecord

_CALLBACK = re.compile(r"^/interactions/(\d+)/[^/]+/callback$")
_FOLLOWUP = re.compile(r"^/webhooks/\d+/([^/]+)$")
_STAMP = re.compile(r"^(\S+ \S+) \| ")
MILESTONES = {
    "migrated": "database schema",
    "recovered": "recovered open jobs",
    "commands synced": "synced ",
    "gateway": "has connected to Gateway",
    "on_ready (the delivery loop starts)": "connected as",
}


@dataclass(frozen=True)
class Config:
    open_jobs: int = 10_000
    history: int = 50_000
    guilds: int = 50
    probe_seconds: float = 10.0  # how long /jobs keeps being probed after the first answer
    probe_every: float = 0.1


QUICK = Config(open_jobs=100, history=200, guilds=2, probe_seconds=1.0)
# share of the open jobs in each state (provider in brackets)
MIX = (
    ("running", "openai", 0.30),
    ("running", "kling", 0.30),
    ("queued", "openai", 0.075),
    ("queued", "kling", 0.075),
    ("expired", "openai", 0.05),
    ("held", "kling", 0.03),
    ("submitting", "kling", 0.01),
    ("ambiguous", "kling", 0.01),
    ("succeeded", "kling", 0.15),
)


@dataclass(frozen=True)
class Result:
    config: Config
    to_ready: float  # spawn -> READY sent by the sandbox
    to_first_ack: float  # spawn -> the first /jobs acknowledged
    milestones: dict[str, float]  # spawn -> each log line
    ack_ms: Summary
    followup_ms: Summary
    posted: int
    dispatched: int
    cleared: float  # spawn -> every owed result posted and every held job submitted
    states: dict[str, int]


async def seed(config: Config, data_dir: Path, sandbox: DiscordSandbox, openai, kling):
    """The open jobs and the history; returns the jobs per state and a (guild, channel, member)."""
    seats, probe = [], None
    for g in range(config.guilds):
        guild = sandbox.add_guild(f"Guild {g}")
        channel, member = guild.add_text_channel("general"), guild.add_member(f"member-{g}")
        seats.append((guild.id, channel.id, member.id))
        probe = probe or (guild, channel, member)
    video = data_dir / "videos" / "finished.mp4"
    video.parent.mkdir(parents=True, exist_ok=True)
    video.write_bytes(openai.video_bytes)
    now, wall = time.monotonic(), time.time()
    jobs: list[SeedJob] = []
    states: dict[str, int] = {}
    for state, provider, share in MIX:
        count = max(1, round(config.open_jobs * share))
        states[state] = states.get(state, 0) + count
        for i in range(count):
            guild_id, channel_id, user_id = seats[(len(jobs) + i) % len(seats)]
            external_id = None
            if state in ("running", "queued", "expired", "succeeded"):
                # long renders: none finishes during the run; queued ones are in their first 10 %
                started = now - (30 if state == "queued" else 600)
                if provider == "openai":
                    external_id = openai.add_job(3600.0, started).id
                else:
                    external_id = kling.add_task(3600.0, started).id
            jobs.append(
                SeedJob(
                    guild_id=guild_id,
                    channel_id=channel_id,
                    user_id=user_id,
                    provider=provider,
                    state=state,
                    created_at=wall - 600,
                    estimate_micros=1_000_000,
                    external_id=external_id,
                    result_path=str(video) if state == "succeeded" else None,
                    result_size=len(openai.video_bytes) if state == "succeeded" else None,
                    next_poll_at=wall,
                )
            )
    db = await open_db(data_dir)
    try:
        await seed_jobs(db, jobs)
        await seed_history(db, config.history, [(s[0], s[2]) for s in seats])
    finally:
        await db.close()
    return states, probe


def count_posts(sandbox: DiscordSandbox) -> int:
    return PostCounter()(sandbox)


class PostCounter:
    """Final messages posted so far (the bot's nonce marks them), reading each call once."""

    def __init__(self) -> None:
        self.seen = 0
        self.posts = 0

    def __call__(self, sandbox: DiscordSandbox) -> int:
        calls = sandbox.calls
        fresh, self.seen = calls[self.seen :], len(calls)
        self.posts += sum(
            1 for c in fresh if c.method == "POST" and str(c.body.get("nonce", "")).startswith("castbot-job-")
        )
        return self.posts


def _log_times(log: Path, spawned_wall: float) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        match = _STAMP.match(line)
        if not match:
            continue
        for name, needle in MILESTONES.items():
            if name not in out and needle in line:
                stamp = dt.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()
                out[name] = stamp - spawned_wall
    return out


async def run(config: Config, *, keep: bool = False) -> Result:
    openai, kling = BenchOpenAISim(poll_after_ms=10_000), BenchKlingSim(video_seconds=3600.0)
    await openai.start()
    await kling.start()
    try:
        with workdir("restart", keep) as root:
            async with DiscordSandbox(token="bench-sandbox-bot-token") as sandbox:
                data_dir = root / "data"
                states, (guild, channel, member) = await seed(config, data_dir, sandbox, openai, kling)
                env = bot_env(
                    sandbox,
                    data_dir,
                    PROVIDERS="openai,kling",
                    OPENAI_API_KEY=OPENAI_KEY,
                    OPENAI_BASE_URL=openai.base_url,
                    KLING_API_KEY=KLING_KEY,
                    KLING_BASE_URL=kling.base_url,
                )
                spawned_wall = time.time()
                async with running_bot(env, root, sandbox, ready_timeout=120) as bot:
                    to_ready = time.monotonic() - bot.spawned_at
                    # probe from READY on until the bot answers: that is "accepting commands"
                    early: list[InteractionRecord] = []
                    while not any(r.acknowledged for r in early):
                        early.append((await sandbox.invoke(guild, channel, member, "jobs")).record)
                        await asyncio.sleep(0.02)
                    first_ack = min(
                        c.at
                        for c in sandbox.calls
                        if (m := _CALLBACK.match(c.path)) and int(m[1]) in {r.id for r in early}
                    )
                    # then keep asking while the loop works off the backlog
                    records = []
                    probe_until = time.monotonic() + config.probe_seconds
                    while time.monotonic() < probe_until:
                        records.append((await sandbox.invoke(guild, channel, member, "jobs")).record)
                        await asyncio.sleep(config.probe_every)
                    await bounded(
                        sandbox.wait_for(lambda: all(r.followups for r in records), 60, "/jobs answers"), 70, "answers"
                    )
                    posted = count_posts(sandbox)
                    dispatched = kling.counts["create"]
                    # and how long the whole backlog takes: every owed result posted, every held job sent
                    owed = (states.get("succeeded", 0), states.get("held", 0))
                    scan = PostCounter()
                    await bounded(
                        sandbox.wait_for(lambda: (scan(sandbox), kling.counts["create"]) >= owed, 200, "the backlog"),
                        210,
                        "backlog",
                    )
                    cleared = time.monotonic() - bot.spawned_at
                milestones = _log_times(bot.log_path, spawned_wall)
                acks: dict[int, float] = {}
                followups: dict[str, float] = {}
                for call in sandbox.calls:
                    if (m := _CALLBACK.match(call.path)) and call.status < 300:
                        acks.setdefault(int(m[1]), call.at)
                    elif call.method == "POST" and (m := _FOLLOWUP.match(call.path)):
                        followups.setdefault(m[1], call.at)
                steady = records
                ack_ms = [(acks[r.id] - (r.dispatched_at or 0)) * 1000 for r in steady if r.id in acks]
                follow_ms = [
                    (followups[r.token] - (r.dispatched_at or 0)) * 1000 for r in steady if r.token in followups
                ]
    finally:
        await openai.close()
        await kling.close()
    return Result(
        config=config,
        to_ready=to_ready,
        to_first_ack=first_ack - bot.spawned_at,
        milestones=milestones,
        ack_ms=Summary.of(ack_ms),
        followup_ms=Summary.of(follow_ms),
        posted=posted,
        dispatched=dispatched,
        cleared=cleared,
        states=states,
    )


def print_result(r: Result) -> None:
    c = r.config
    rows = [[f"process start → {name}", fmt(t, 2)] for name, t in sorted(r.milestones.items(), key=lambda x: x[1])]
    rows.append(["process start → READY from the gateway", fmt(r.to_ready, 2)])
    rows.append(["process start → accepting commands (first /jobs acknowledged)", fmt(r.to_first_ack, 2)])
    report(
        f"Restart with {c.open_jobs:,} open jobs and {c.history:,} finished ones",
        ["milestone", "seconds"],
        rows,
        [
            "open jobs: " + ", ".join(f"{s} {n:,}" for s, n in r.states.items()),
            f"then, while the loop works off the backlog ({c.probe_seconds:g} s): /jobs acknowledged in "
            f"p50 {fmt(r.ack_ms.p50)} / p99 {fmt(r.ack_ms.p99)} / max {fmt(r.ack_ms.max)} ms, answered in "
            f"p50 {fmt(r.followup_ms.p50)} / p99 {fmt(r.followup_ms.p99)} ms ({r.ack_ms.n} probes)",
            f"in that time the bot posted {r.posted:,} of {r.states.get('succeeded', 0):,} owed results and "
            f"submitted {r.dispatched:,} of {r.states.get('held', 0):,} held jobs; all of them "
            f"{fmt(r.cleared, 1)} s after process start",
        ],
    )


def main(argv: list[str] | None = None) -> Result:
    parser = argparse.ArgumentParser(prog="python -m bench.restart", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run (smoke test)")
    parser.add_argument("--open-jobs", type=int, default=None)
    parser.add_argument("--history", type=int, default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else Config()
    if args.open_jobs:
        config = replace(config, open_jobs=args.open_jobs)
    if args.history is not None:
        config = replace(config, history=args.history)
    result: Result = asyncio.run(bounded(run(config, keep=args.keep), 280, "restart"))
    print_result(result)
    return result


if __name__ == "__main__":
    main()
