"""Benchmark 7: fitting a video to the upload limit, and what encoding costs the bot's answers.

Part 1: a 10 s 1080p video with audio (noise: ~30 MB, like an engine's result) is re-encoded to
fit an unboosted server's 10 MiB by `bot.media.fit.fit_video`, each run in a fresh process.
Reported: seconds per encode, the size reached, and the process's peak resident memory.

Part 2: the real bot (`python -m bot`, ENCODE_WORKERS=4) delivers 4 such videos from the openai
simulator into a 10 MiB guild, so 4 encodes run at once; while they run, a burst of `/generate`
arrives. Reported: dispatch → acknowledgement (defer) p50 / p99 / max, against the same burst
with no encode running.

    .venv/bin/python -m bench.encode            # about 2 minutes
    .venv/bin/python -m bench.encode --quick    # smoke test: a small video, 1 encode, 10 commands
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench._common import (
    MIB,
    TOKEN,
    Summary,
    bot_env,
    bounded,
    fmt,
    report,
    running_bot,
    workdir,
)
from bench._seed import SeedJob, open_db, seed_jobs
from bench._sims import OPENAI_KEY, BenchOpenAISim
from bench.ack_burst import seed_limits
from discord_sandbox import DiscordSandbox
from tests.fakes.noisy_video import make_noisy_video

_CALLBACK = re.compile(r"^/interactions/(\d+)/[^/]+/callback$")
_NONCE = re.compile(r"^castbot-job-(\d+)$")
LIMIT = 10 * MIB  # an unboosted server


@dataclass(frozen=True)
class Config:
    seconds: float = 10.0
    width: int = 1920
    height: int = 1080
    bitrate: int = 24_000_000  # ~30 MB in 10 s
    runs: int = 3  # part 1: encodes, one after the other
    encodes: int = 4  # part 2: at once in the bot
    invocations: int = 100  # part 2: /generate in the burst
    window: float = 8.0  # seconds over which the burst is spread


QUICK = Config(seconds=2.0, width=640, height=360, bitrate=2_000_000, runs=1, encodes=1, invocations=10, window=1.0)


@dataclass(frozen=True)
class EncodeRun:
    seconds: float
    size: int
    width: int
    height: int
    peak_mib: float
    baseline_mib: float


@dataclass(frozen=True)
class Burst:
    ack_ms: Summary
    acked: int
    encoding_during: int  # encodes still running when the burst's last command was answered
    delivered: int


@dataclass(frozen=True)
class Result:
    config: Config
    source_size: int
    runs: list[EncodeRun]
    idle: Burst
    busy: Burst


# --- part 1: one encode per process --------------------------------------------------------------


def child(src: str, dest: str, limit: int) -> None:
    """Run in a fresh process: fit one video, print timing and memory as JSON."""
    from bot.media.fit import fit_video

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    result = fit_video(Path(src), Path(dest), limit)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "seconds": seconds,
                "size": result.size,
                "width": result.width,
                "height": result.height,
                "peak_mib": peak,
                "baseline_mib": baseline,
            }
        )
    )


async def encode_once(src: Path, dest: Path, limit: int) -> EncodeRun:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.encode",
        "--child",
        str(src),
        str(dest),
        str(limit),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the encode failed (exit {proc.returncode})")
    dest.unlink(missing_ok=True)
    return EncodeRun(**json.loads(out.decode().strip().splitlines()[-1]))


# --- part 2: the bot's answers while it encodes --------------------------------------------------


def encodes_running(data_dir: Path) -> int:
    return sum(1 for _ in data_dir.rglob(".*.fit.mp4.*.part"))


async def burst(config: Config, root: Path, video: bytes, encodes: int) -> Burst:
    openai = BenchOpenAISim(poll_after_ms=500)
    await openai.start()
    openai.video_bytes = video
    openai.job_seconds = 600.0  # the burst's own jobs stay rendering
    try:
        async with DiscordSandbox(token=TOKEN) as sandbox:
            guild = sandbox.add_guild("Unboosted", premium_tier=0)  # 10 MiB uploads
            channel = guild.add_text_channel("renders")
            members = [guild.add_member(f"m{i}") for i in range(5)]
            data_dir = root / f"data-{encodes}"
            per_member = -(-config.invocations // len(members)) + 1
            await seed_limits(data_dir, {guild.id: guild.owner_id}, per_member, per_member * len(members) + encodes)
            now, wall = time.monotonic(), time.time()
            finish_in = 6.0
            seeded = [
                SeedJob(
                    guild_id=guild.id,
                    channel_id=channel.id,
                    user_id=members[0].id,
                    provider="openai",
                    state="running",
                    created_at=wall - 1.0,
                    estimate_micros=2_000_000,
                    external_id=openai.add_job(finish_in + 1.0, now - 1.0).id,
                    next_poll_at=wall,
                )
                for _ in range(encodes)
            ]
            db = await open_db(data_dir)
            try:
                await seed_jobs(db, seeded)
            finally:
                await db.close()
            env = bot_env(
                sandbox,
                data_dir,
                PROVIDERS="openai",
                OPENAI_API_KEY=OPENAI_KEY,
                OPENAI_BASE_URL=openai.base_url,
                POLL_MIN_SECONDS="0.5",
                POLL_MAX_SECONDS="2",
                ENCODE_WORKERS=str(max(1, encodes)),
            )
            async with running_bot(env, root, sandbox) as bot:
                await bot.wait_log("connected as")
                if encodes:

                    def all_encoding() -> bool | None:
                        return encodes_running(data_dir) >= encodes or None

                    await bounded(sandbox.wait_for(all_encoding, 60, "the encodes to start"), 70, "encodes")
                else:
                    await asyncio.sleep(1.0)
                records = []
                loop = asyncio.get_running_loop()
                start = loop.time()
                for i in range(config.invocations):
                    delay = start + i * config.window / config.invocations - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    member = members[i % len(members)]
                    handle = await sandbox.invoke(guild, channel, member, "generate", prompt=f"a paper boat, take {i}")
                    records.append(handle.record)

                def acknowledged() -> bool:
                    return all(r.rejected or r.acknowledged for r in records)

                await bounded(sandbox.wait_for(acknowledged, 60, "every acknowledgement"), 70, "acks")
                during = encodes_running(data_dir)
                acks: dict[int, float] = {}
                for call in sandbox.calls:
                    if (m := _CALLBACK.match(call.path)) and call.status < 300:
                        acks.setdefault(int(m[1]), call.at)
                ack_ms = [(acks[r.id] - (r.dispatched_at or 0.0)) * 1000 for r in records if r.id in acks]

                posted: set[int] = set()

                def delivered() -> bool:
                    for call in sandbox.calls:
                        match = _NONCE.match(str(call.body.get("nonce", "")))
                        if match and call.status < 300 and call.files:
                            posted.add(int(match[1]))
                    return len(posted) >= encodes

                await bounded(sandbox.wait_for(delivered, 150, "the fitted videos"), 160, "deliveries")
                return Burst(Summary.of(ack_ms), len(ack_ms), during, len(posted))
    finally:
        await openai.close()


async def run(config: Config, *, keep: bool = False) -> Result:
    with workdir("encode", keep) as root:
        src = await asyncio.to_thread(
            make_noisy_video,
            root / "engine.mp4",
            seconds=config.seconds,
            width=config.width,
            height=config.height,
            bitrate=config.bitrate,
        )
        source_size = src.stat().st_size
        limit = LIMIT if source_size > LIMIT else source_size // 2  # the quick video is small
        runs = [await encode_once(src, root / "engine.fit.mp4", limit) for _ in range(config.runs)]
        video = src.read_bytes()
        if len(video) <= LIMIT:
            video += b"\0" * (LIMIT + MIB - len(video))  # quick: over the limit by padding
        idle = await burst(config, root, video, 0)
        busy = await burst(config, root, video, config.encodes)
        return Result(config, source_size, runs, idle, busy)


def print_result(r: Result) -> None:
    c = r.config
    report(
        f"Fit to the limit: {c.seconds:.0f} s {c.width}×{c.height} with audio, {r.source_size / 1e6:.1f} MB "
        f"→ under {fmt(min(LIMIT, r.source_size // 2) / MIB)} MiB, {c.runs} run(s), each in a fresh process",
        ["run", "seconds", "output MiB", "resolution", "peak RSS MiB", "RSS before encoding MiB"],
        [
            [
                i + 1,
                fmt(run.seconds, 2),
                fmt(run.size / MIB, 2),
                f"{run.width}×{run.height}",
                fmt(run.peak_mib),
                fmt(run.baseline_mib),
            ]
            for i, run in enumerate(r.runs)
        ],
    )
    report(
        f"/generate acknowledgement: {c.invocations} commands within {c.window:.0f} s, "
        f"with {c.encodes} encode(s) running in the bot vs none",
        ["bot is", "p50 ms", "p99 ms", "max ms", "acknowledged"],
        [
            ["idle (no encode)", fmt(r.idle.ack_ms.p50), fmt(r.idle.ack_ms.p99), fmt(r.idle.ack_ms.max), r.idle.acked],
            [
                f"encoding {c.encodes} videos",
                fmt(r.busy.ack_ms.p50),
                fmt(r.busy.ack_ms.p99),
                fmt(r.busy.ack_ms.max),
                r.busy.acked,
            ],
        ],
        [
            f"acknowledged {r.busy.acked}/{c.invocations} while encoding; encodes still running at the burst's "
            f"end: {r.busy.encoding_during}/{c.encodes}; fitted videos delivered {r.busy.delivered}/{c.encodes}",
        ],
    )


def main(argv: list[str] | None = None) -> Result | None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return None
    parser = argparse.ArgumentParser(prog="python -m bench.encode", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run (smoke test)")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--encodes", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (bot logs, databases)")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else Config()
    if args.runs:
        config = replace(config, runs=args.runs)
    if args.encodes:
        config = replace(config, encodes=args.encodes)
    result: Result = asyncio.run(bounded(run(config, keep=args.keep), 280, "encode"))
    print_result(result)
    return result


if __name__ == "__main__":
    main()
