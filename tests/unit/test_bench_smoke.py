"""The benchmarks stay runnable: each `python -m bench.<name> --quick` finishes on a tiny scale,
does all of its work and prints its table. No timing is asserted here - figures belong in
bench/README.md, never in tests."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# each bench, and what its quick run must print to show the work was really done
BENCHES = {
    "ack_burst": ["acknowledged 10/10 (deferred: 10); admitted and queued: 10"],
    "tracking_scale": [
        "| openai   | Castbot loop   | 10/10",
        "| kling    | Castbot loop   | 10/10",
        "naive 5 s loop | 10/10",
    ],
    "admission": ["40 / 40", "60 / 60", "none (asserted)"],
    "delivery_memory": ["delivered 2/2"],
    "autocomplete": ["end to end through the Discord sandbox", "| delete  | no match"],
    "restart": ["accepting commands (first /jobs acknowledged)", "held jobs; all of them"],
}
EXTRA_ARGS = {"ack_burst": ["--discord-pace"]}  # the heavier mode, so both paths stay runnable


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
