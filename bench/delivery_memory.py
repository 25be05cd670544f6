"""Benchmark 4: delivery memory.

20 jobs finish at the same moment, each with a 50 MB video (10 on the openai simulator, 10 on the
kling one). The real bot (`python -m bot`) downloads all of them, hashes them, settles them and
uploads each to its channel in the Discord sandbox (a boosted server: 100 MB upload limit, so
every file is attached). Reported: the bot process's resident memory before and at its peak
(the kernel's high-water mark, VmHWM). Holding whole files anywhere would show up as ~50 MB per
delivery in flight.

    .venv/bin/python -m bench.delivery_memory            # about 30 s
    .venv/bin/python -m bench.delivery_memory --quick    # smoke test: 2 x 5 MB
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import time
from dataclasses import dataclass, replace

from bench._common import MIB, bot_env, bounded, fmt, report, running_bot, verdict, workdir
from bench._seed import SeedJob, open_db, seed_jobs
from bench._sims import KLING_KEY, OPENAI_KEY, BenchKlingSim, BenchOpenAISim
from discord_sandbox import DiscordSandbox

TARGET_MIB = 200.0
_NONCE = re.compile(r"^castbot-job-(\d+)$")


@dataclass(frozen=True)
class Config:
    jobs: int = 20
    size_mib: int = 50
    finish_in: float = 8.0  # seconds after seeding: the bot is up and idle before they finish


QUICK = Config(jobs=2, size_mib=5, finish_in=3.0)


@dataclass(frozen=True)
class Result:
    config: Config
    baseline_mib: float
    peak_mib: float  # VmHWM at the end (covers start-up too), or a higher sample
    sampled_peak_mib: float  # highest VmRSS seen while delivering (sampled every 20 ms)
    delivered: int
    uploaded_mib: float
    seconds: float  # from the renders finishing to the last upload
    bot_cpu: float


async def run(config: Config, *, keep: bool = False) -> Result:
    video = os.urandom(config.size_mib * MIB)  # incompressible: no transport can shrink it
    openai, kling = BenchOpenAISim(poll_after_ms=1000), BenchKlingSim()
    await openai.start()
    await kling.start()
    openai.video_bytes = kling.video_bytes = video
    try:
        with workdir("delivery", keep) as root:
            async with DiscordSandbox(token="bench-sandbox-bot-token") as sandbox:
                guild = sandbox.add_guild("Boosted", premium_tier=3)  # 100 MB uploads
                channel = guild.add_text_channel("renders")
                member = guild.add_member("mira")
                now, wall = time.monotonic(), time.time()
                seeded, ends = [], []
                for i in range(config.jobs):
                    provider = "openai" if i % 2 == 0 else "kling"
                    duration = config.finish_in + 1.0
                    if provider == "openai":
                        external_id = openai.add_job(duration, now - 1.0).id
                    else:
                        external_id = kling.add_task(duration, now - 1.0).id
                    ends.append(now - 1.0 + duration)
                    seeded.append(
                        SeedJob(
                            guild_id=guild.id,
                            channel_id=channel.id,
                            user_id=member.id,
                            provider=provider,
                            state="running",
                            created_at=wall - 1.0,
                            estimate_micros=2_000_000,
                            external_id=external_id,
                            next_poll_at=wall,
                        )
                    )
                db = await open_db(root / "data")
                try:
                    await seed_jobs(db, seeded)
                finally:
                    await db.close()
                env = bot_env(
                    sandbox,
                    root / "data",
                    PROVIDERS="openai,kling",
                    OPENAI_API_KEY=OPENAI_KEY,
                    OPENAI_BASE_URL=openai.base_url,
                    KLING_API_KEY=KLING_KEY,
                    KLING_BASE_URL=kling.base_url,
                    POLL_MIN_SECONDS="0.5",
                    POLL_MAX_SECONDS="2",
                )
                async with running_bot(env, root, sandbox) as bot:
                    await bot.wait_log("connected as")
                    await asyncio.sleep(0.5)  # the first polling pass (renders still running)
                    baseline = bot.stats()
                    posted: set[int] = set()
                    sampled_peak = baseline.rss_mib
                    scanned = 0

                    def done() -> bool:
                        nonlocal sampled_peak, scanned
                        sampled_peak = max(sampled_peak, bot.stats().rss_mib)
                        calls = sandbox.calls
                        fresh, scanned = calls[scanned:], len(calls)
                        for call in fresh:
                            match = _NONCE.match(str(call.body.get("nonce", "")))
                            if match and call.status < 300 and call.files:
                                posted.add(int(match[1]))
                        return len(posted) >= config.jobs

                    await bounded(sandbox.wait_for(done, 240, "every video uploaded"), 250, "deliveries")
                    finished = time.monotonic()
                    stats = bot.stats()
                uploaded = sum(f.size for c in sandbox.calls for f in c.files) / MIB
    finally:
        await openai.close()
        await kling.close()
    return Result(
        config=config,
        baseline_mib=baseline.rss_mib,
        peak_mib=max(stats.peak_rss_mib, sampled_peak),
        sampled_peak_mib=sampled_peak,
        delivered=len(posted),
        uploaded_mib=uploaded,
        seconds=finished - max(ends),
        bot_cpu=stats.cpu_seconds - baseline.cpu_seconds,
    )


def print_result(r: Result) -> None:
    c = r.config
    report(
        f"Delivery memory: {c.jobs} concurrent deliveries of {c.size_mib} MB videos",
        ["bot process", "MiB"],
        [
            ["resident, idle before the renders finish", fmt(r.baseline_mib)],
            ["resident, highest sampled while delivering", fmt(r.sampled_peak_mib)],
            ["peak resident (VmHWM, whole run)", fmt(r.peak_mib)],
            ["peak minus idle", fmt(r.peak_mib - r.baseline_mib)],
        ],
        [
            f"delivered {r.delivered}/{c.jobs}: {r.uploaded_mib:,.0f} MiB downloaded, hashed and uploaded in "
            f"{r.seconds:.1f} s (bot CPU {r.bot_cpu:.1f} s)",
            f"target peak < {TARGET_MIB:.0f} MB: {verdict(r.peak_mib < TARGET_MIB)}; "
            f"whole-file buffering would need ~{c.jobs * c.size_mib:,} MB more",
        ],
    )


def main(argv: list[str] | None = None) -> Result:
    parser = argparse.ArgumentParser(prog="python -m bench.delivery_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run (smoke test)")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--size-mib", type=int, default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else Config()
    if args.jobs:
        config = replace(config, jobs=args.jobs)
    if args.size_mib:
        config = replace(config, size_mib=args.size_mib)
    result: Result = asyncio.run(bounded(run(config, keep=args.keep), 280, "delivery memory"))
    print_result(result)
    return result


if __name__ == "__main__":
    main()
