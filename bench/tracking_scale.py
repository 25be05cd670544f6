"""Benchmark 2: tracking at scale, side by side with the naive way.

5,000 jobs are in flight at once on the `openai` and `kling` simulators (half each), with
realistic render times, time-scaled. Phase 1: the real bot (`python -m bot`) tracks them, downloads
each video and posts it to its channel in the Discord sandbox. Phase 2, same run, same jobs: the
seed article's naive client (one `wait_for_video` loop per job, a status request every 5 s, then
the download) in a process of its own. Reported per provider: status requests per job and per
job-minute (minutes of tracking, real-time equivalent), lag from the moment the provider finished
the render to the post in Discord (the naive client: to its finished download), and CPU seconds
per 1,000 jobs.

Time scaling: render times, POLL_MIN/POLL_MAX, the openai poll hint and the naive 5 s interval are
all divided by the speed (the bot's phase 2x, the naive one 4x); every time reported is multiplied
back (real-time equivalent). At 2x the bot works at about half a core: faster scaling would measure
a bot overloaded by the compression itself, which a real deployment of this size is not.

    .venv/bin/python -m bench.tracking_scale            # 5,000 jobs (about 4 minutes)
    .venv/bin/python -m bench.tracking_scale --quick    # 20 jobs (smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import re
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench._common import (
    REPO,
    Summary,
    bot_env,
    bounded,
    fmt,
    report,
    running_bot,
    self_cpu,
    verdict,
    workdir,
)
from bench._seed import SeedJob, open_db, seed_jobs
from bench._sims import KLING_KEY, OPENAI_KEY, BenchKlingSim, BenchOpenAISim
from tests.fakes.discord_sandbox import Channel, DiscordSandbox, Member

ESTIMATE_MICROS = 2_000_000  # a worst-case hold; settlement captures what the provider billed
_NONCE = re.compile(r"^castbot-job-(\d+)$")
_SUCCEEDED = re.compile(r"^(\S+ \S+) \| INFO +\| bot\.services\.tracking \| job (\d+) succeeded on")


@dataclass(frozen=True)
class Config:
    jobs: int = 5000
    providers: tuple[str, ...] = ("openai", "kling")
    speed: float = 2.0  # the bot's phase: at 2x it runs at about half a core, as a real deployment would
    naive_speed: float = 4.0  # the naive client saturates its simulators at any speed; 4x keeps the run short
    # render times in real seconds (uniform): Sora 2 at 8 s takes one to four minutes, Kling 3.0 longer
    durations: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {"openai": (60.0, 240.0), "kling": (90.0, 300.0)}
    )
    openai_hint: float = 10.0  # openai-poll-after-ms, real seconds (the guide suggests 10-20 s)
    kling_reference: float = 5.0  # Kling sends no hint: the lag target uses the naive 5 s instead
    naive_interval: float = 5.0
    poll_min: float = 2.0  # POLL_MIN_SECONDS / POLL_MAX_SECONDS, real seconds
    poll_max: float = 30.0
    guilds: int = 100
    naive: bool = True
    seed: int = 8


QUICK = Config(
    jobs=20, speed=60.0, naive_speed=60.0, durations={"openai": (60.0, 120.0), "kling": (60.0, 120.0)}, guilds=4
)


@dataclass(frozen=True)
class PlannedJob:
    provider: str
    duration: float  # scaled seconds
    elapsed: float  # scaled seconds already rendered when tracking starts


@dataclass
class Side:
    """One tracker's figures for one provider (times real-time equivalent)."""

    tracker: str
    provider: str
    jobs: int = 0
    done: int = 0
    requests: int = 0
    job_minutes: float = 0.0
    lag: Summary = field(default_factory=lambda: Summary.of([]))
    detect: Summary = field(default_factory=lambda: Summary.of([]))

    @property
    def per_job(self) -> float:
        return self.requests / self.done if self.done else float("nan")

    @property
    def per_job_minute(self) -> float:
        return self.requests / self.job_minutes if self.job_minutes else float("nan")


@dataclass
class Result:
    config: Config
    sides: list[Side]
    bot_cpu: float
    naive_cpu: float
    naive_nominal: dict[str, int]

    def side(self, tracker: str, provider: str) -> Side | None:
        return next((s for s in self.sides if s.tracker == tracker and s.provider == provider), None)


def plan(config: Config) -> list[PlannedJob]:
    rng = random.Random(config.seed)
    jobs = []
    for i in range(config.jobs):
        provider = config.providers[i % len(config.providers)]
        low, high = config.durations[provider]
        duration = rng.uniform(low, high) / config.speed
        jobs.append(PlannedJob(provider, duration, rng.uniform(0.0, 0.5) * duration))
    return jobs


async def start_sims(config: Config) -> tuple[BenchOpenAISim, BenchKlingSim]:
    openai = BenchOpenAISim(poll_after_ms=round(config.openai_hint * 1000 / config.speed))
    kling = BenchKlingSim()
    await openai.start()
    await kling.start()
    return openai, kling


def add_to_sims(jobs: list[PlannedJob], openai: BenchOpenAISim, kling: BenchKlingSim) -> list[tuple[str, float]]:
    """Create the jobs on the simulators as if they had started `elapsed` ago: (external id, ends at)."""
    now = time.monotonic()
    out = []
    for job in jobs:
        if job.provider == "openai":
            sim_job = openai.add_job(job.duration, now - job.elapsed)
            out.append((sim_job.id, sim_job.completes_at))
        else:
            task = kling.add_task(job.duration, now - job.elapsed)
            out.append((task.id, task.created + job.duration))
    return out


# --- phase 1: the bot ----------------------------------------------------------------------------


async def castbot_phase(config: Config, jobs: list[PlannedJob], root: Path) -> tuple[list[Side], float]:
    s = config.speed
    openai, kling = await start_sims(config)
    try:
        async with DiscordSandbox(token="bench-sandbox-bot-token") as sandbox:
            seats: list[tuple[Channel, Member]] = []
            for g in range(config.guilds):
                guild = sandbox.add_guild(f"Guild {g}")
                seats.append((guild.add_text_channel("general"), guild.add_member(f"member-{g}")))
            data_dir = root / "data"
            db = await open_db(data_dir)
            ends = add_to_sims(jobs, openai, kling)
            wall = time.time()
            seeded = [
                SeedJob(
                    guild_id=seats[i % len(seats)][0].guild.id,  # type: ignore[union-attr]
                    channel_id=seats[i % len(seats)][0].id,
                    user_id=seats[i % len(seats)][1].id,
                    provider=job.provider,
                    state="running",
                    created_at=wall - job.elapsed,
                    estimate_micros=ESTIMATE_MICROS,
                    external_id=ends[i][0],
                    next_poll_at=wall,
                )
                for i, job in enumerate(jobs)
            ]
            try:
                ids = await seed_jobs(db, seeded)
            finally:
                await db.close()
            env = bot_env(
                sandbox,
                data_dir,
                PROVIDERS=",".join(config.providers),
                OPENAI_API_KEY=OPENAI_KEY,
                OPENAI_BASE_URL=openai.base_url,
                KLING_API_KEY=KLING_KEY,
                KLING_BASE_URL=kling.base_url,
                POLL_MIN_SECONDS=f"{config.poll_min / s:g}",
                POLL_MAX_SECONDS=f"{config.poll_max / s:g}",
            )
            for sim in (openai, kling):
                sim.counts.clear()
            async with running_bot(env, root, sandbox) as bot:
                # The loop starts at on_ready (discord.py waits for the guilds first). The renders
                # went on meanwhile, as they would: the database's created_at and the simulators'
                # clocks agree (a job's age is what its progress is measured against), and no job
                # is within its first half, so none finishes before the bot is tracking.
                await bot.wait_log("connected as")
                go = time.monotonic()
                cpu0 = bot.stats().cpu_seconds
                driver0 = self_cpu()
                posted: dict[int, float] = {}
                scanned = 0

                def all_posted() -> bool:
                    nonlocal scanned
                    calls = sandbox.calls
                    for call in calls[scanned:]:
                        if call.method == "POST" and call.status < 300 and call.path.endswith("/messages"):
                            match = _NONCE.match(str(call.body.get("nonce", "")))
                            if match:
                                posted.setdefault(int(match[1]), call.at)
                    scanned = len(calls)
                    return len(posted) >= len(jobs)

                longest = max(e for _, e in ends) - go
                try:
                    waiting = sandbox.wait_for(all_posted, longest + 90, "every video posted")
                    await bounded(waiting, longest + 100, "posts")
                except TimeoutError as exc:
                    print(f"warning: {exc}; {len(posted)}/{len(jobs)} posted", file=sys.stderr)
                cpu = bot.stats().cpu_seconds - cpu0
                driver = self_cpu() - driver0
                print(
                    f"Castbot phase: bot CPU {cpu:.1f} s, driver (sandbox + simulators) CPU {driver:.1f} s "
                    f"over {time.monotonic() - go:.1f} s",
                    file=sys.stderr,
                )
                print(
                    f"openai status: {openai.counts['list']} list pages + {openai.counts['status']} single lookups",
                    file=sys.stderr,
                )
                # openai status is read from list pages when many jobs are due: count both
                requests = {"openai": openai.counts["status"] + openai.counts["list"], "kling": kling.counts["status"]}
            settled = _settled_times(bot.log_path)
    finally:
        await openai.close()
        await kling.close()
    sides = []
    for provider in config.providers:
        side = Side("castbot", provider, requests=requests[provider])
        lags, detects, minutes = [], [], 0.0
        for job, job_id, (_, end) in zip(jobs, ids, ends, strict=True):
            if job.provider != provider:
                continue
            side.jobs += 1
            minutes += max(0.0, end - go) * s / 60
            if job_id in posted:
                side.done += 1
                lags.append((posted[job_id] - end) * s)
            if job_id in settled:
                detects.append((settled[job_id] - end) * s)
        side.job_minutes, side.lag, side.detect = minutes, Summary.of(lags), Summary.of(detects)
        sides.append(side)
    return sides, cpu


def _restart_clocks(
    jobs: list[PlannedJob], openai: BenchOpenAISim, kling: BenchKlingSim, ends: list[tuple[str, float]]
) -> list[tuple[str, float]]:
    now = time.monotonic()
    out = []
    for job, (external_id, _) in zip(jobs, ends, strict=True):
        started = now - job.elapsed
        if job.provider == "openai":
            openai.jobs[external_id].started = started
        else:
            kling.tasks[external_id].created = started
        out.append((external_id, started + job.duration))
    return out


def _settled_times(log: Path) -> dict[int, float]:
    """When the bot logged each download-and-settle, on the monotonic clock."""
    offset = time.time() - time.monotonic()
    out: dict[int, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        match = _SUCCEEDED.match(line)
        if match:
            local = dt.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").astimezone()  # the log is local time
            stamp = local.timestamp()
            out[int(match[2])] = stamp - offset
    return out


# --- phase 2: the naive client -------------------------------------------------------------------


async def naive_phase(config: Config, jobs: list[PlannedJob]) -> tuple[list[Side], float, dict[str, int]]:
    s = config.naive_speed
    factor = config.speed / s
    jobs = [PlannedJob(j.provider, j.duration * factor, j.elapsed * factor) for j in jobs]
    openai, kling = await start_sims(replace(config, speed=s))
    try:
        ends = add_to_sims(jobs, openai, kling)
        cfg = {
            "interval": config.naive_interval / s,
            "bases": {"openai": openai.base_url, "kling": kling.base_url},
            "keys": {"openai": OPENAI_KEY, "kling": KLING_KEY},
            "jobs": [{"provider": j.provider, "id": e} for j, (e, _) in zip(jobs, ends, strict=True)],
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.naive_client",
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        go = time.monotonic()
        ends = _restart_clocks(jobs, openai, kling, ends)
        longest = max(e for _, e in ends) - go
        try:
            out, _ = await bounded(proc.communicate(json.dumps(cfg).encode()), longest + 120, "naive client")
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        results = json.loads(out)
        requests = {"openai": openai.counts["status"], "kling": kling.counts["status"]}
    finally:
        await openai.close()
        await kling.close()
    by_id = {r["id"]: r for r in results["jobs"]}
    sides, nominal = [], {}
    for provider in config.providers:
        side = Side("naive", provider, requests=requests[provider])
        lags, detects, minutes = [], [], 0.0
        nominal[provider] = 0
        for job, (external_id, end) in zip(jobs, ends, strict=True):
            if job.provider != provider:
                continue
            side.jobs += 1
            tracked = max(0.0, end - go)
            minutes += tracked * s / 60
            nominal[provider] += int(tracked // (config.naive_interval / s)) + 1
            r = by_id.get(external_id)
            if r is not None:
                side.done += 1
                lags.append((r["done_at"] - end) * s)
                detects.append((r["seen_at"] - end) * s)
        side.job_minutes, side.lag, side.detect = minutes, Summary.of(lags), Summary.of(detects)
        sides.append(side)
    return sides, float(results["cpu_seconds"]), nominal


async def run(config: Config, *, keep: bool = False, budget: float = 290.0) -> Result:
    jobs = plan(config)
    started = time.monotonic()
    with workdir("tracking", keep) as root:
        sides, bot_cpu = await bounded(castbot_phase(config, jobs, root), budget, "Castbot phase")
    print(f"Castbot phase: {time.monotonic() - started:.0f} s", file=sys.stderr)
    naive_cpu, nominal = float("nan"), {}
    if config.naive:
        left = budget - (time.monotonic() - started)
        try:
            naive_sides, naive_cpu, nominal = await bounded(naive_phase(config, jobs), left, "naive phase")
            sides += naive_sides
        except TimeoutError as exc:
            print(f"warning: {exc}; the naive client did not finish in time", file=sys.stderr)
        print(f"both phases: {time.monotonic() - started:.0f} s", file=sys.stderr)
    return Result(config, sides, bot_cpu, naive_cpu, nominal)


def print_result(r: Result) -> None:
    c = r.config
    rows = []
    for provider in c.providers:
        for tracker in ("castbot", "naive"):
            side = r.side(tracker, provider)
            if side is None:
                continue
            label = "Castbot loop" if tracker == "castbot" else f"naive {c.naive_interval:g} s loop"
            rows.append(
                [
                    provider,
                    label,
                    f"{side.done}/{side.jobs}",
                    f"{side.requests:,}",
                    fmt(side.per_job, 2),
                    fmt(side.per_job_minute, 2),
                    fmt(side.detect.p50),
                    fmt(side.lag.p50),
                    fmt(side.lag.p99),
                    fmt(side.lag.max),
                ]
            )
    notes = []
    total = c.jobs
    notes.append(
        f"CPU seconds per 1,000 jobs: Castbot bot process {fmt(r.bot_cpu / total * 1000, 2)}"
        + (f", naive client process {fmt(r.naive_cpu / total * 1000, 2)}" if c.naive else "")
        + " (Castbot's also settles the money and posts every video to Discord; the naive client only polls"
        " and downloads)"
    )
    for provider in c.providers:
        ours, naive = r.side("castbot", provider), r.side("naive", provider)
        if ours is None:
            continue
        reference = c.openai_hint if provider == "openai" else c.kling_reference
        target = reference + 1.0
        line = (
            f"{provider}: {fmt(ours.per_job_minute, 2)} status requests per job-minute (target ≤ 1.5: "
            f"{verdict(ours.per_job_minute <= 1.5)}); lag p99 {fmt(ours.lag.p99)} s (target ≤ {target:g} s: "
            f"{verdict(ours.lag.p99 <= target)})"
        )
        if naive is not None and ours.requests:
            ratio = naive.requests / ours.requests
            nominal = r.naive_nominal.get(provider, 0) / ours.requests
            line += (
                f"; naive/Castbot requests {ratio:.1f}x measured, {nominal:.1f}x as designed "
                f"(target ≥ 10x: {verdict(ratio >= 10)}); naive lag p99 {fmt(naive.lag.p99)} s"
            )
        notes.append(line)
    notes.append(
        f"{c.jobs:,} jobs in flight at once ({', '.join(c.providers)} alternating) in {c.guilds} guilds; render times "
        + ", ".join(f"{p} {lo:g}-{hi:g} s" for p, (lo, hi) in c.durations.items() if p in c.providers)
        + f", each {0}-50 % done when tracking starts; openai-poll-after-ms {c.openai_hint:g} s; "
        f"POLL_MIN/MAX {c.poll_min:g}/{c.poll_max:g} s; time-scaled {c.speed:g}x (naive {c.naive_speed:g}x); "
        "all times are real-time equivalent"
    )
    notes.append(
        "detect = provider finished → video downloaded and job settled (Castbot: its log; naive: download done); "
        "lag = → posted in Discord (naive: → downloaded)"
    )
    report(
        "Tracking at scale",
        [
            "provider",
            "tracker",
            "done",
            "status requests",
            "per job",
            "per job-minute",
            "detect p50 s",
            "lag p50 s",
            "lag p99 s",
            "lag max s",
        ],
        rows,
        notes,
    )


def main(argv: list[str] | None = None) -> Result:
    parser = argparse.ArgumentParser(prog="python -m bench.tracking_scale", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run (smoke test)")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--speed", type=float, default=None, help="time scale of the bot's phase (default 2)")
    parser.add_argument("--providers", default=None, help="comma list, default openai,kling")
    parser.add_argument("--openai-hint", type=float, default=None, help="openai-poll-after-ms in real seconds")
    parser.add_argument("--poll-max", type=float, default=None, help="POLL_MAX_SECONDS (real seconds)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive phase")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (bot log, database)")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else Config()
    changes: dict[str, object] = {}
    if args.jobs:
        changes["jobs"] = args.jobs
    if args.speed:
        changes["speed"] = args.speed
    if args.providers:
        changes["providers"] = tuple(p.strip() for p in args.providers.split(",") if p.strip())
    if args.openai_hint is not None:
        changes["openai_hint"] = args.openai_hint
    if args.poll_max is not None:
        changes["poll_max"] = args.poll_max
    if args.no_naive:
        changes["naive"] = False
    config = replace(config, **changes)  # type: ignore[arg-type]
    result = asyncio.run(run(config, keep=args.keep))
    print_result(result)
    return result


if __name__ == "__main__":
    main()
