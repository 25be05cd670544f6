"""The encoding pool: fits off the event loop, at most ENCODE_WORKERS at once, reuses a good copy."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from bot.config import Settings, default_encode_workers
from bot.media import fit as fit_module
from bot.media.fit import FitResult
from bot.services import encoding as encoding_module
from bot.services.encoding import EncodingService, fitted_path
from tests.fakes.noisy_video import make_noisy_video

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("enc") / "job-1.mp4"
    return make_noisy_video(path, seconds=4, width=1280, height=720, fps=24, bitrate=10_000_000)


def test_encode_workers_default_and_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_encode_workers() >= 1
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert default_encode_workers() == 4
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert default_encode_workers() == 1
    monkeypatch.setenv("ENCODE_WORKERS", "3")
    assert Settings(_env_file=None).encode_workers == 3


async def test_fit_runs_off_the_loop_and_writes_next_to_the_original(video: Path) -> None:
    service = EncodingService(1)
    try:
        gaps: list[float] = []
        done = asyncio.Event()

        async def heartbeat() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        beat = asyncio.create_task(heartbeat())
        fitted = await service.fit(video, 2 * MIB)
        done.set()
        await beat
        assert fitted.result is not None
        assert fitted.result.path == fitted_path(video) == video.with_name("job-1.fit.mp4")
        assert fitted.result.size <= 2 * MIB
        assert video.exists()
        assert len(gaps) > 10 and max(gaps) < 0.5  # the loop kept running while it encoded

        # asked again (a post retried after a restart): the verified copy is reused, not re-encoded
        before = fitted.result.path.stat().st_mtime_ns
        again = await service.fit(video, 2 * MIB)
        assert again.result is not None and again.result.path.stat().st_mtime_ns == before
    finally:
        service.close()


async def test_too_long_is_told_apart_from_a_failure(video: Path, tmp_path: Path) -> None:
    service = EncodingService(1)
    try:
        too_small = await service.fit(video, 16 * 1024)
        assert too_small.result is None and too_small.too_long
        junk = tmp_path / "junk.mp4"
        junk.write_bytes(b"\0" * 1000)
        broken = await service.fit(junk, 16 * 1024)
        assert broken.result is None and not broken.too_long
    finally:
        service.close()


async def test_at_most_workers_encodes_run_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    def slow_fit(src: Path, dest: Path, limit: int) -> FitResult:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.1)
        with lock:
            running -= 1
        return FitResult(dest, 1, 2, 2, 1.0)

    monkeypatch.setattr(encoding_module, "fit_video", slow_fit)
    assert fit_module.fit_video is not slow_fit
    service = EncodingService(2)
    try:
        results = await asyncio.gather(*(service.fit(tmp_path / f"v{i}.mp4", MIB) for i in range(6)))
        assert all(r.result is not None for r in results)
        assert peak == 2
    finally:
        service.close()
