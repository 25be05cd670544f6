"""Fitting a video under an upload limit: the plan (pure) and the encoder on a real MP4."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from bot.media.fit import SAFETY, CannotFit, FitPlan, fit_video, plan_fit, probe
from tests.fakes.noisy_video import make_noisy_video

MIB = 1024 * 1024
MB = 1_000_000


@pytest.mark.parametrize(
    ("limit", "seconds", "size", "width", "height", "audio", "expected"),
    [
        # a typical engine result into an unboosted server: the resolution is kept
        (10 * MIB, 10, 30 * MB, 1920, 1080, True, (1920, 1080, 128_000)),
        (10 * MIB, 15, 40 * MB, 1920, 1080, True, (1920, 1080, 128_000)),
        (50 * MIB, 40, 90 * MB, 1920, 1080, True, (1920, 1080, 128_000)),
        # longer: not enough bits for 1080p, one rung down
        (10 * MIB, 60, 40 * MB, 1920, 1080, True, (1280, 720, 128_000)),
        (10 * MIB, 60, 40 * MB, 1080, 1920, True, (720, 1280, 128_000)),  # portrait: the short side
        # a 720p source is kept at 720p when it can be, never scaled up
        (10 * MIB, 60, 20 * MB, 1280, 720, True, (1280, 720, 128_000)),
        (10 * MIB, 90, 20 * MB, 1280, 720, True, (960, 540, 128_000)),
        # the last rung, with leaner audio
        (10 * MIB, 120, 60 * MB, 1920, 1080, True, (852, 480, 64_000)),
        (10 * MIB, 120, 60 * MB, 1920, 1080, False, (960, 540, 0)),  # no audio: its bits go to video
        (10 * MIB, 130, 60 * MB, 1920, 1080, False, (852, 480, 0)),
        # a source already under 480p keeps its size
        (1 * MIB, 10, 3 * MB, 640, 360, True, (640, 360, 64_000)),
    ],
)
def test_plan_keeps_the_resolution_where_the_bitrate_allows(
    limit: int, seconds: float, size: int, width: int, height: int, audio: bool, expected: tuple[int, int, int]
) -> None:
    plan = plan_fit(limit, seconds, size, width, height, has_audio=audio)
    assert plan is not None
    assert (plan.width, plan.height, plan.audio_bps) == expected
    assert plan.width % 2 == 0 and plan.height % 2 == 0
    # the streams' bits stay within the share of the limit left after the margin
    assert (plan.video_bps + plan.audio_bps) * seconds <= limit * 8 * SAFETY + 8
    assert plan.video_bps * seconds <= size * 8


@pytest.mark.parametrize(
    ("limit", "seconds", "width", "height"),
    [
        (10 * MIB, 300, 1920, 1080),  # five minutes in 10 MiB: under 480p's floor
        (1 * MIB, 60, 1920, 1080),
        (10 * MIB, 0, 1920, 1080),
        (0, 10, 1920, 1080),
    ],
)
def test_nothing_fits_when_even_480p_is_under_its_floor(limit: int, seconds: float, width: int, height: int) -> None:
    assert plan_fit(limit, seconds, 100 * MB, width, height, has_audio=True) is None


def test_plan_is_a_value() -> None:
    assert plan_fit(10 * MIB, 10, 30 * MB, 1920, 1080, has_audio=False) == FitPlan(
        1920, 1080, int(10 * MIB * 8 * SAFETY / 10), 0
    )


@pytest.fixture(scope="module")
def big_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 6 s of 720p noise at 12 Mbit/s: ~9 MB, quick to make and to fit under 4 MiB
    path = tmp_path_factory.mktemp("fit") / "big.mp4"
    return make_noisy_video(path, seconds=6, width=1280, height=720, fps=24, bitrate=12_000_000)


def test_fit_video_writes_a_verified_copy_under_the_limit(big_video: Path, tmp_path: Path) -> None:
    dest = tmp_path / "big.fit.mp4"
    result = fit_video(big_video, dest, 4 * MIB)
    assert result.path == dest and dest.stat().st_size == result.size <= 4 * MIB
    source = probe(big_video)
    copy = probe(dest)
    assert abs(copy.duration - source.duration) <= 0.1
    assert copy.has_audio
    with av.open(str(dest)) as container:
        video = container.streams.video[0]
        assert video.codec_context.name == "h264"
        assert video.codec_context.pix_fmt == "yuv420p"
        assert container.streams.audio[0].codec_context.name == "aac"
    # the index is at the front (+faststart): 'moov' comes before 'mdat'
    head = dest.read_bytes()[:4096]
    assert 0 <= head.find(b"moov") < 4096
    assert big_video.exists()


def test_fit_video_removes_what_a_crash_mid_encode_left(big_video: Path, tmp_path: Path) -> None:
    dest = tmp_path / "big.fit.mp4"
    stale = tmp_path / ".big.fit.mp4.12345.part"
    stale.write_bytes(b"half an mp4")
    fit_video(big_video, dest, 4 * MIB)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.fit.mp4"]


def test_fit_video_refuses_what_cannot_fit_and_leaves_nothing(big_video: Path, tmp_path: Path) -> None:
    dest = tmp_path / "big.fit.mp4"
    with pytest.raises(CannotFit):
        fit_video(big_video, dest, 64 * 1024)
    assert not dest.exists()
    assert not list(tmp_path.iterdir())


def test_fit_video_refuses_an_unreadable_file(tmp_path: Path) -> None:
    src = tmp_path / "junk.mp4"
    src.write_bytes(b"\0" * 4096)
    with pytest.raises(CannotFit):
        fit_video(src, tmp_path / "junk.fit.mp4", 1024)
