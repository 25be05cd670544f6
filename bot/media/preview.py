"""A character's animated preview: a short looping animated WebP cut from its clip's best window.

Discord plays an animated WebP (or GIF) attached to an embed as its image, so a member sees the
character move without downloading the clip. The preview must load at once: a few seconds at a
low frame rate, a small picture, and a hard cap on its size. Pictures are decoded once at the
largest size tried; when the file is over the cap it is written again smaller and at a lower
quality, and refused (PreviewTooLarge) if even the smallest rung does not fit.

Pillow built with libwebp writes animated WebP (Pillow 11+ has no separate "webp_anim" feature);
without libwebp the preview is a GIF.
"""

from __future__ import annotations

import io
import logging
import math
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
from PIL import Image, ImageDraw, ImageFont, ImageOps, features

from bot.media.clips import ClipProblem, ClipRejected
from bot.media.scan import main_video_stream, open_input, start_offset, to_display_image

log = logging.getLogger(__name__)

PREVIEW_SECONDS = 2.5
PREVIEW_FPS = 10
MAX_PREVIEW_BYTES = 2_000_000  # "under 2 MB": Discord shows it at once, phones too
# (short side in pixels, WebP quality), tried in order until the file fits the cap
LADDER = ((288, 70), (240, 55), (200, 45), (160, 35), (120, 25))
WEBP = features.check_module("webp")
PREVIEW_FORMAT = "WEBP" if WEBP else "GIF"
PREVIEW_SUFFIX = ".webp" if WEBP else ".gif"


class PreviewTooLarge(Exception):
    """Even the smallest rung of the ladder is over the byte cap."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"preview of {size} bytes is over {limit}")
        self.size = size
        self.limit = limit


@dataclass(frozen=True)
class Preview:
    path: Path
    bytes: int
    frames: int
    duration_ms: int  # one loop
    width: int
    height: int
    quality: int


def make_preview(
    clip: Path,
    dest: Path,
    start: float,
    *,
    seconds: float = PREVIEW_SECONDS,
    fps: int = PREVIEW_FPS,
    max_bytes: int = MAX_PREVIEW_BYTES,
    ladder: tuple[tuple[int, int], ...] = LADDER,
) -> Preview:
    """Write the looping preview of `clip` from `start` for `seconds` at `fps` to `dest` (written
    whole then moved into place). ClipRejected if no picture decodes there; PreviewTooLarge if it
    cannot be made to fit `max_bytes`."""
    if seconds <= 0 or fps <= 0 or start < 0 or not ladder:
        raise ValueError("seconds and fps must be positive, start >= 0, and the ladder not empty")
    pictures = _pictures(clip, start, seconds, fps, max(side for side, _ in ladder))
    frame_ms = round(1000 / fps)
    size = 0
    for side, quality in ladder:
        scaled = [_fit_short_side(p, side) for p in pictures]
        data = _encode(scaled, frame_ms, quality)
        size = len(data)
        if size <= max_bytes:
            _write(dest, data)
            width, height = scaled[0].size
            return Preview(dest, size, len(scaled), frame_ms * len(scaled), width, height, quality)
        log.info("preview of %s at %d px, quality %d: %d bytes, over %d", clip.name, side, quality, size, max_bytes)
    raise PreviewTooLarge(size, max_bytes)


def _pictures(clip: Path, start: float, seconds: float, fps: int, short_side: int) -> list[Image.Image]:
    """Upright RGB pictures, one per 1/fps slot of [start, start+seconds); repeats fill gaps."""
    try:
        with open_input(clip) as container:
            stream = main_video_stream(container)
            if stream is None:
                raise ClipRejected(ClipProblem.NOT_VIDEO, "this file has no video track")
            stream.thread_type = "AUTO"
            offset = start_offset(container, stream)
            if start > 0:
                container.seek(int((offset + start) * 1_000_000), backward=True)
            slots = max(1, round(seconds * fps))
            half = 0.5 / fps
            out: dict[int, Image.Image] = {}
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                t = frame.time - offset - start
                if t < -half:
                    continue
                slot = max(0, round(t * fps))
                if slot >= slots:
                    break
                if slot not in out:
                    # scaled in swscale while converting: a 4K frame never becomes a 4K picture
                    long_side = math.ceil(short_side * max(frame.width, frame.height) / min(frame.width, frame.height))
                    out[slot] = _fit_short_side(to_display_image(frame, long_side), short_side)
    except av.FFmpegError as exc:
        log.info("cannot read frames of %s for a preview: %s", clip.name, exc)
        raise ClipRejected(ClipProblem.UNREADABLE, "this video cannot be read") from None
    if not out:
        raise ClipRejected(ClipProblem.UNREADABLE, f"the clip has no frames after {start:.1f} s")
    pictures: list[Image.Image] = []
    last = out[min(out)]
    for slot in range(max(out) + 1):
        last = out.get(slot, last)
        pictures.append(last)
    return pictures


def _fit_short_side(image: Image.Image, side: int) -> Image.Image:
    """Scaled down (never up) so the shorter side is at most `side`."""
    width, height = image.size
    short = min(width, height)
    if short <= side:
        return image
    scale = side / short
    return image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BILINEAR)


def _encode(pictures: list[Image.Image], frame_ms: int, quality: int) -> bytes:
    buffer = io.BytesIO()
    first, rest = pictures[0], pictures[1:]
    if PREVIEW_FORMAT == "WEBP":
        first.save(
            buffer, "WEBP", save_all=True, append_images=rest, duration=frame_ms, loop=0, quality=quality, method=4
        )
    else:
        frames = [p.convert("P", palette=Image.Palette.ADAPTIVE, colors=128) for p in pictures]
        frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    return buffer.getvalue()


def _write(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
    try:
        part.write_bytes(data)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


# --- the list's gallery ---------------------------------------------------------------------------

GALLERY_TILE = (192, 240)  # width, height: portrait-ish, as most character clips are
GALLERY_GAP = 6
GALLERY_BACKGROUND = (43, 45, 49)  # Discord's dark embed background


def gallery_columns(count: int) -> int:
    """A row of up to 3; 4 as 2×2; 5 and 6 as 3 over 3 (Discord shows an embed image ~400 px wide)."""
    return count if count <= 3 else (2 if count == 4 else 3)


def gallery(frames: Sequence[Path | None], *, quality: int = 82) -> bytes:
    """One JPEG of the frames in a grid, each tile cropped to fill and numbered from 1 in its
    corner (the numbers match the list's lines; names are not drawn: a font would miss scripts).
    A missing or unreadable frame leaves its tile blank, still numbered."""
    if not frames:
        raise ValueError("a gallery needs at least one tile")
    columns = gallery_columns(len(frames))
    rows = -(-len(frames) // columns)
    tw, th = GALLERY_TILE
    sheet = Image.new("RGB", (columns * tw + (columns - 1) * GALLERY_GAP, rows * th + (rows - 1) * GALLERY_GAP))
    sheet.paste(GALLERY_BACKGROUND, (0, 0, *sheet.size))
    font = ImageFont.load_default(size=22)
    draw = ImageDraw.Draw(sheet)
    for i, path in enumerate(frames):
        x, y = (i % columns) * (tw + GALLERY_GAP), (i // columns) * (th + GALLERY_GAP)
        tile = _tile(path)
        if tile is not None:
            sheet.paste(tile, (x, y))
        draw.rounded_rectangle((x + 6, y + 6, x + 38, y + 38), radius=8, fill=(88, 101, 242))
        draw.text((x + 22, y + 22), str(i + 1), fill=(255, 255, 255), font=font, anchor="mm")
    buffer = io.BytesIO()
    sheet.save(buffer, "JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def _tile(path: Path | None) -> Image.Image | None:
    if path is None:
        return None
    try:
        with Image.open(path) as image:
            image.draft("RGB", (GALLERY_TILE[0] * 2, GALLERY_TILE[1] * 2))  # JPEG: decode at a fraction
            return ImageOps.fit(image.convert("RGB"), GALLERY_TILE, Image.Resampling.BILINEAR)
    except (OSError, Image.DecompressionBombError) as exc:
        log.info("gallery tile %s left blank: %s", path.name, exc)
        return None
