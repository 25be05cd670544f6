"""`python -m bot demo` runs the real bot offline and leaves a transcript and a playable MP4."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import av

REPO = Path(__file__).resolve().parents[2]


async def test_demo_tour_writes_transcript_and_video(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "demo", "--out", str(out), cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, output.decode()[-3000:]
    transcript = (out / "transcript.md").read_text(encoding="utf-8")
    assert "Created `@Mira`" in transcript
    assert "your video for job #1 is ready" in transcript
    assert "Budget" in transcript
    video = out / "castbot-job-1.mp4"
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
    assert frames > 10
