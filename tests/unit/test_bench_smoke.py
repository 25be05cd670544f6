"""The benchmarks stay runnable: each `python -m bench.<name> --quick` finishes on a tiny scale,
does all of its work and prints its table. No timing is asserted here - figures belong in
bench/README.md, never in tests."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from bench.tracking_scale import QUICK, PlannedJob, Sims
from bot.config import Settings
from bot.providers.base import JobStatus
from bot.providers.registry import build_providers

REPO = Path(__file__).resolve().parents[2]
# each bench, and what its quick run must print to show the work was really done
BENCHES = {
    "ack_burst": ["acknowledged 10/10 (deferred: 10); admitted and queued: 10"],
    "tracking_scale": [
        *(
            f"| {p:<8} | {t:<14} | 5/5"
            for p in ("openai", "kling", "gemini", "fal")
            for t in ("Castbot loop", "naive 5 s loop")
        ),
        "status reads after the callback",  # run with --webhooks: the simulators call the bot back
    ],
    "admission": ["40 / 40", "60 / 60", "none (asserted)"],
    "delivery_memory": ["delivered 2/2"],
    "autocomplete": ["end to end through the Discord sandbox", "| delete  | no match"],
    "restart": ["accepting commands (first /jobs acknowledged)", "held jobs; all of them"],
    "encode": ["| 1   |", "acknowledged 10/10 while encoding", "fitted videos delivered 1/1"],
    "gallery_search": ["| an accented name without accents | popular | 1    | 1 ", "| a tag (#tag)"],
}
# the heavier mode, so both paths stay runnable
EXTRA_ARGS = {"ack_burst": ["--discord-pace"], "tracking_scale": ["--webhooks"]}


@pytest.mark.parametrize("name", sorted(BENCHES))
def test_bench_module_imports_with_a_quick_mode(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    assert callable(module.main)
    assert module.Config() != module.QUICK  # --quick really is a smaller run


@pytest.mark.timeout(90)
async def test_every_bench_runs_quick_and_prints_its_table() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
    procs = {
        name: await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"bench.{name}",
            "--quick",
            *EXTRA_ARGS.get(name, []),
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for name in BENCHES
    }
    try:
        outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs.values())), 80)
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    for (name, proc), (out, _) in zip(procs.items(), outputs, strict=True):
        text = out.decode(errors="replace")
        assert proc.returncode == 0, f"bench.{name} --quick failed:\n{text[-3000:]}"
        assert "\n### " in text and "|---" in text, f"bench.{name} printed no table:\n{text[-2000:]}"
        assert "machine: " in text
        for expected in BENCHES[name]:
            assert expected in text, f"bench.{name}: {expected!r} missing from:\n{text[-3000:]}"
    # every callback the simulators sent was taken (a signature the bot refused would show here)
    tracking = outputs[list(procs).index("tracking_scale")][0].decode(errors="replace")
    assert tracking.count("callbacks taken 5/5") == 3, tracking[-3000:]


async def test_tracking_scale_seeds_gemini_and_fal_jobs_their_adapters_track(tmp_path: Path) -> None:
    """The jobs the benchmark writes straight into the simulators are read by the bot's own adapters,
    built from the settings the benchmark gives the bot: running first, then done and downloadable."""
    sims = Sims(replace(QUICK, providers=("gemini", "fal")), speed=1.0)
    await sims.start()
    try:
        jobs = [PlannedJob(p, duration=0.4, elapsed=0.0) for p in ("gemini", "fal")]
        ends = sims.add(jobs)
        env = {k.lower(): v for k, v in sims.env().items()} | {"providers": "gemini,fal"}
        settings = Settings(_env_file=None, **env)  # type: ignore[arg-type]
        async with httpx.AsyncClient(trust_env=False) as client:
            providers = build_providers(settings, client)
            for job, (external_id, _) in zip(jobs, ends, strict=True):
                snapshot = (await providers[job.provider].status([external_id]))[external_id]
                assert snapshot.status is JobStatus.RUNNING, (job.provider, snapshot)
            await asyncio.sleep(0.5)
            for job, (external_id, _) in zip(jobs, ends, strict=True):
                snapshot = (await providers[job.provider].status([external_id]))[external_id]
                assert snapshot.status is JobStatus.SUCCEEDED, (job.provider, snapshot)
                done = await providers[job.provider].download(snapshot, tmp_path / f"{job.provider}.mp4", 1 << 26)
                assert done.size > 0
        assert sims.status_requests() == {"gemini": 2, "fal": 2}
        assert sims.gemini is not None and sims.fal is not None
        assert (sims.gemini.counts["result"], sims.gemini.counts["download"]) == (1, 1)  # file state, then bytes
        assert (sims.fal.counts["result"], sims.fal.counts["download"]) == (1, 1)  # response_url, then the CDN
    finally:
        await sims.close()
