"""bot.media.preview on real clips: the looping animated preview of a character and the list's gallery."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from PIL import Image, ImageSequence

from bot import media
from bot.media import ClipRejected, preview
from bot.media.preview import (
    GALLERY_GAP,
    GALLERY_TILE,
    MAX_PREVIEW_BYTES,
    PreviewTooLarge,
    gallery,
    make_preview,
)
from discord_sandbox import clips
from tests.unit.test_media import face_progress


def frames_of(path: Path) -> list[tuple[Image.Image, int]]:
    with Image.open(path) as image:
        return [(f.convert("RGB"), int(f.info["duration"])) for f in ImageSequence.Iterator(image)]


def test_a_hd_clip_becomes_a_small_looping_animated_webp(tmp_path: Path) -> None:
    clip = clips.make_clip(tmp_path / "hd.mp4", seconds=6.0, size=(1280, 720), fps=30, blur=())
    started = time.perf_counter()
    made = make_preview(clip, tmp_path / "preview.webp", 1.5)
    elapsed = time.perf_counter() - started
    assert made.path.stat().st_size == made.bytes < MAX_PREVIEW_BYTES
    assert made.bytes < 300_000  # in practice far under the cap: it loads at once
    assert (made.width, made.height) == (512, 288)  # short side 288, aspect kept
    assert made.frames == 25 and made.duration_ms == 2500  # 2.5 s at 10 fps
    with Image.open(made.path) as image:
        assert image.format == "WEBP" and getattr(image, "is_animated", False)
        assert getattr(image, "n_frames", 1) == 25 and image.info["loop"] == 0  # loops forever
    frames = frames_of(made.path)
    assert sum(ms for _, ms in frames) == 2500 and {ms for _, ms in frames} == {100}
    # it plays the clip forwards from the start asked for: the face moves right over 2.5 of 6 s
    first, last = face_progress(frames[0][0]), face_progress(frames[-1][0])
    assert first == pytest.approx(1.5 / 6, abs=0.06) and last == pytest.approx(3.9 / 6, abs=0.06)
    assert elapsed < 10
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_the_preview_comes_from_the_clips_best_window(tmp_path: Path) -> None:
    """A clip blurred for its first half: the best window is in the sharp half, and so is every
    frame of the preview made from it."""
    clip = clips.make_clip(tmp_path / "soft_start.mp4", seconds=8.0, size=(320, 240), fps=12, blur=[(0, 4.0)])
    start = media.best_window(clip, 4.0)
    assert start >= 3.5
    made = make_preview(clip, tmp_path / "p.webp", start)
    frames = frames_of(made.path)
    assert len(frames) == 25
    assert not [i for i, (image, _) in enumerate(frames) if clips.is_blurred_frame(image)]
    # the same clip from 0 shows the blurred start
    soft = make_preview(clip, tmp_path / "soft.webp", 0.0)
    assert all(clips.is_blurred_frame(image) for image, _ in frames_of(soft.path))


def test_a_rotated_phone_clip_gives_an_upright_portrait_preview(tmp_path: Path) -> None:
    clip = clips.make_clip(tmp_path / "phone.mp4", seconds=3.0, size=(640, 360), fps=24, rotate=90, blur=())
    made = make_preview(clip, tmp_path / "p.webp", 0.0)
    assert (made.width, made.height) == (288, 512)


def test_a_short_or_slow_clip_still_fills_its_slots(tmp_path: Path) -> None:
    clip = clips.make_clip(tmp_path / "slow.mp4", seconds=1.5, size=(160, 120), fps=4, blur=())
    made = make_preview(clip, tmp_path / "p.webp", 0.0)
    # 1.5 s at 4 fps: the 10 fps slots up to the last frame, gaps filled by repeating
    assert 12 <= made.frames <= 15 and made.duration_ms == made.frames * 100
    assert (made.width, made.height) == (160, 120)  # never scaled up


def test_over_the_cap_it_steps_down_then_refuses(tmp_path: Path) -> None:
    clip = clips.make_clip(tmp_path / "c.mp4", seconds=3.0, size=(640, 480), fps=24, blur=())
    full = make_preview(clip, tmp_path / "full.webp", 0.0)
    smaller = make_preview(clip, tmp_path / "small.webp", 0.0, max_bytes=full.bytes - 1)
    assert smaller.bytes < full.bytes and smaller.quality < full.quality and smaller.height < full.height
    with pytest.raises(PreviewTooLarge) as refused:
        make_preview(clip, tmp_path / "none.webp", 0.0, max_bytes=1000)
    assert refused.value.limit == 1000 and refused.value.size > 1000
    assert not (tmp_path / "none.webp").exists()


def test_an_unreadable_clip_or_a_start_past_the_end_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\0" * 4096)
    with pytest.raises(ClipRejected):
        make_preview(junk, tmp_path / "p.webp", 0.0)
    clip = clips.make_clip(tmp_path / "c.mp4", seconds=2.0, size=(160, 120), fps=12, blur=())
    with pytest.raises(ClipRejected):
        make_preview(clip, tmp_path / "p.webp", 30.0)
    assert not (tmp_path / "p.webp").exists()


def test_the_gallery_numbers_its_tiles_in_a_grid(tmp_path: Path) -> None:
    clip = clips.make_clip(tmp_path / "c.mp4", seconds=2.0, size=(320, 240), fps=12, blur=())
    refs = media.extract_reference_frames(clip, tmp_path / "refs", count=4)
    tw, th = GALLERY_TILE
    for count, grid in ((1, (1, 1)), (3, (3, 1)), (4, (2, 2)), (5, (3, 2))):
        frames: list[Path | None] = [refs[i % len(refs)] for i in range(count)]
        with Image.open(io.BytesIO(gallery(frames))) as sheet:
            assert sheet.format == "JPEG"
            assert sheet.size == (
                grid[0] * tw + (grid[0] - 1) * GALLERY_GAP,
                grid[1] * th + (grid[1] - 1) * GALLERY_GAP,
            )
    # a missing frame leaves a blank tile, not an error
    data = gallery([refs[0], None, tmp_path / "gone.jpg"])
    with Image.open(io.BytesIO(data)) as sheet:
        blank = sheet.convert("RGB").crop((tw + GALLERY_GAP + 60, 60, 2 * tw, th - 20))
        assert max(high for _, high in blank.getextrema()) < 80  # type: ignore[misc]  # dark background only
    assert len(data) < 200_000


def test_without_libwebp_the_preview_is_a_looping_gif(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preview, "PREVIEW_FORMAT", "GIF")
    clip = clips.make_clip(tmp_path / "c.mp4", seconds=4.0, size=(640, 360), fps=24, blur=())
    made = make_preview(clip, tmp_path / "p.gif", 0.5)
    assert made.bytes < MAX_PREVIEW_BYTES and made.frames == 25
    with Image.open(made.path) as image:
        assert image.format == "GIF" and getattr(image, "n_frames", 1) == 25 and image.info["loop"] == 0
