"""The offline provider: renders a real small MP4 from the characters' reference frames, for free.

It is the default when no provider key is set and the engine of the demo and of many tests, so it
behaves like a remote provider: `submit` only records the job (in `work_dir/<id>/request.json`,
so jobs survive a restart) and returns at once; the video "takes" `render_seconds`; the first
`status` call after that renders it, once, in a worker thread.

The video: the characters' frontal frames side by side (stacked in portrait), each slowly panned
and zoomed (Ken Burns), the prompt drawn as a caption with mentions replaced by the names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import secrets
import threading
import time
import unicodedata
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

from bot.media import write_video
from bot.prompts import render_caption
from bot.providers.base import (
    Capabilities,
    CharacterAsset,
    CharacterHandle,
    DownloadResult,
    GenerationRequest,
    JobSnapshot,
    JobStatus,
    MentionStyle,
    NotSent,
    Orientation,
    ProviderError,
    Quality,
    Rejected,
    RejectReason,
    SubmitResult,
    VideoProvider,
)

NAME = "local"
REQUEST_FILE = "request.json"
VIDEO_FILE = "video.mp4"
ERROR_FILE = "error.json"
_ID_RE = re.compile(r"loc_[0-9a-f]{16}")  # also keeps ids from naming paths outside work_dir
_FORMAT = 1

CAPABILITIES = Capabilities(
    seconds=(2, 4, 6, 8, 10, 12),
    orientations=frozenset(Orientation),
    qualities=frozenset(Quality),
    max_characters=4,
    needs_handle=False,
    mention_style=MentionStyle.CAPTION,
    batch_status=True,
    paid=False,
    authoritative_reconcile=True,
)


@dataclass(frozen=True)
class _Cast:
    key: str
    name: str
    frame: str | None  # the frontal reference frame, if the character has one


@dataclass(frozen=True)
class _Job:
    """Everything needed to render, as stored in request.json."""

    external_id: str
    created_at: float
    prompt: str
    seconds: int
    orientation: str
    quality: str
    width: int
    height: int
    fps: int
    client_ref: str
    cast: tuple[_Cast, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "external_id": self.external_id,
            "created_at": self.created_at,
            "prompt": self.prompt,
            "seconds": self.seconds,
            "orientation": self.orientation,
            "quality": self.quality,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "client_ref": self.client_ref,
            "characters": [{"key": c.key, "name": c.name, "frame": c.frame} for c in self.cast],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _Job:
        return cls(
            external_id=str(data["external_id"]),
            created_at=float(data["created_at"]),
            prompt=str(data["prompt"]),
            seconds=int(data["seconds"]),
            orientation=str(data["orientation"]),
            quality=str(data["quality"]),
            width=int(data["width"]),
            height=int(data["height"]),
            fps=int(data["fps"]),
            client_ref=str(data.get("client_ref", "")),
            cast=tuple(
                _Cast(str(c["key"]), str(c["name"]), None if c.get("frame") is None else str(c["frame"]))
                for c in data["characters"]
            ),
        )


class LocalProvider(VideoProvider):
    name = NAME
    capabilities = CAPABILITIES

    def __init__(
        self,
        *,
        work_dir: Path,
        render_seconds: float = 3.0,
        clock: Callable[[], float] = time.time,
        size: tuple[int, int] = (320, 180),
        fps: int = 8,
    ) -> None:
        """`size` is the landscape frame (portrait swaps it); `clock` gives epoch seconds and is
        what the render delay is measured with, so tests can move time forward."""
        if render_seconds < 0 or fps < 1 or min(size) < 16:
            raise ValueError("render_seconds >= 0, fps >= 1 and a size of at least 16 px are required")
        self._dir = Path(work_dir)
        self._render_seconds = render_seconds
        self._clock = clock
        long, short = max(size), min(size)
        self._landscape = (long - long % 2, short - short % 2)  # H.264 4:2:0 wants even sizes
        self._fps = fps
        self._renders: dict[str, asyncio.Future[JobSnapshot]] = {}
        self.renders_started = 0  # observability: how many videos this instance has rendered

    # --- the interface ----------------------------------------------------------------------------

    def estimate(self, request: GenerationRequest) -> int:
        return 0

    async def register_character(self, asset: CharacterAsset) -> CharacterHandle:
        # nothing to upload: renders use the stored frames directly
        return CharacterHandle(provider=NAME, external_id=str(asset.character_id), mention_token=asset.name)

    async def submit(self, request: GenerationRequest) -> SubmitResult:
        if len(request.characters) > CAPABILITIES.max_characters:
            raise Rejected(
                NAME,
                f"the local renderer takes at most {CAPABILITIES.max_characters} characters",
                reason=RejectReason.UNSUPPORTED,
            )
        width, height = self._landscape
        if request.orientation is Orientation.PORTRAIT:
            width, height = height, width
        job = _Job(
            external_id=f"loc_{secrets.token_hex(8)}",
            created_at=self._clock(),
            prompt=request.prompt,
            seconds=CAPABILITIES.fit_seconds(request.seconds),
            orientation=request.orientation.value,
            quality=request.quality.value,
            width=width,
            height=height,
            fps=self._fps,
            client_ref=request.client_ref,
            cast=tuple(
                _Cast(
                    ref.key,
                    ref.asset.name,
                    str(ref.asset.frame_paths[0]) if ref.asset.frame_paths else None,
                )
                for ref in request.characters
            ),
        )
        try:
            await asyncio.to_thread(self._save, job)
        except OSError as exc:
            raise NotSent(NAME, "could not store the job on disk", code=type(exc).__name__) from exc
        return SubmitResult(job.external_id, self._running(job, job.created_at))

    async def status(self, external_ids: Sequence[str]) -> Mapping[str, JobSnapshot]:
        ids = list(dict.fromkeys(i for i in external_ids if _ID_RE.fullmatch(i)))
        loaded = await asyncio.to_thread(self._load_many, ids)
        now = self._clock()
        snapshots = await asyncio.gather(*(self._snapshot(job, now) for job in loaded.values()))
        return dict(zip(loaded, snapshots, strict=True))

    async def download(self, snapshot: JobSnapshot, dest: Path, max_bytes: int) -> DownloadResult:
        if not _ID_RE.fullmatch(snapshot.external_id):
            raise Rejected(NAME, "unknown job")
        src = self._dir / snapshot.external_id / VIDEO_FILE
        try:
            size = await asyncio.to_thread(_copy_capped, src, Path(dest), max_bytes)
        except FileNotFoundError as exc:
            raise Rejected(NAME, "the video is not rendered yet") from exc
        except OSError as exc:
            raise NotSent(NAME, "could not copy the video", code=type(exc).__name__) from exc
        return DownloadResult(path=Path(dest), size=size)

    async def reconcile(self, request: GenerationRequest) -> str | None:
        if not request.client_ref:
            return None
        return await asyncio.to_thread(self._find_by_client_ref, request.client_ref)

    async def aclose(self) -> None:
        # let renders finish: a killed thread would only leave a temporary file, but a clean stop is
        # cheaper than re-rendering after the restart
        pending = list(self._renders.values())
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # --- jobs on disk ------------------------------------------------------------------------------

    def _save(self, job: _Job) -> None:
        folder = self._dir / job.external_id
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(folder / REQUEST_FILE, json.dumps(job.to_json()).encode())

    def _load_many(self, ids: Sequence[str]) -> dict[str, _Job | JobSnapshot]:
        """Each known job, or its final snapshot when it already has one (rendered or failed)."""
        out: dict[str, _Job | JobSnapshot] = {}
        for external_id in ids:
            folder = self._dir / external_id
            try:
                raw = (folder / REQUEST_FILE).read_bytes()
            except FileNotFoundError:
                continue  # unknown here: left out, as the interface says
            except OSError as exc:
                error = ProviderError(NAME, "could not read the job", code=type(exc).__name__)
                out[external_id] = _failed(external_id, error)
                continue
            try:
                job = _Job.from_json(json.loads(raw))
            except (ValueError, KeyError, TypeError):
                error = ProviderError(NAME, "the stored job is damaged", code="corrupt")
                out[external_id] = _failed(external_id, error)
                continue
            out[external_id] = self._final(job) or job
        return out

    def _final(self, job: _Job) -> JobSnapshot | None:
        folder = self._dir / job.external_id
        if (folder / VIDEO_FILE).is_file():
            return _succeeded(job.external_id)
        if (folder / ERROR_FILE).exists():
            error = ProviderError(NAME, "the local renderer failed", code=_read_error(folder))
            return _failed(job.external_id, error)
        return None

    def _find_by_client_ref(self, client_ref: str) -> str | None:
        best: tuple[float, str] | None = None
        for path in self._dir.glob(f"loc_*/{REQUEST_FILE}"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                job = _Job.from_json(json.loads(path.read_bytes()))
                if job.client_ref == client_ref and (best is None or job.created_at > best[0]):
                    best = (job.created_at, job.external_id)
        return best[1] if best else None

    # --- progress and rendering --------------------------------------------------------------------

    def _running(self, job: _Job, now: float) -> JobSnapshot:
        elapsed = max(0.0, now - job.created_at)
        fraction = elapsed / self._render_seconds if self._render_seconds else 1.0
        return JobSnapshot(
            external_id=job.external_id,
            status=JobStatus.RUNNING,
            progress=min(99, int(fraction * 100)),
            poll_after=max(0.1, self._render_seconds - elapsed),
            raw_status="running",
        )

    async def _snapshot(self, job: _Job | JobSnapshot, now: float) -> JobSnapshot:
        if isinstance(job, JobSnapshot):
            return job
        if now - job.created_at < self._render_seconds:
            return self._running(job, now)
        task = self._renders.get(job.external_id)
        if task is None:
            task = asyncio.ensure_future(asyncio.to_thread(self._render_once, job))
            self._renders[job.external_id] = task
            task.add_done_callback(partial(self._forget_render, job.external_id))
        # shielded: a caller that gives up (timeout, shutdown) must not abandon a shared render
        return await asyncio.shield(task)

    def _forget_render(self, external_id: str, _task: object) -> None:
        self._renders.pop(external_id, None)

    def _render_once(self, job: _Job) -> JobSnapshot:
        """In a worker thread. Failures are recorded next to the job so they are reported, not retried."""
        final = self._final(job)  # another status call may have finished it since we looked
        if final is not None:
            return final
        self.renders_started += 1
        folder = self._dir / job.external_id
        try:
            render_video(job, folder / VIDEO_FILE)
        except Exception as exc:  # any failure of Pillow/PyAV/disk ends this job, never the bot
            with contextlib.suppress(OSError):
                _write_atomic(folder / ERROR_FILE, json.dumps({"error": type(exc).__name__}).encode())
            return _failed(job.external_id, ProviderError(NAME, "the local renderer failed", code=type(exc).__name__))
        return _succeeded(job.external_id)


def _succeeded(external_id: str) -> JobSnapshot:
    return JobSnapshot(external_id, JobStatus.SUCCEEDED, progress=100, actual_cost_micros=0, raw_status="succeeded")


def _failed(external_id: str, error: ProviderError) -> JobSnapshot:
    return JobSnapshot(external_id, JobStatus.FAILED, error=error, raw_status="failed")


# --- files ----------------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_error(folder: Path) -> str | None:
    try:
        code = json.loads((folder / ERROR_FILE).read_bytes()).get("error")
    except (OSError, ValueError, AttributeError):
        return None
    return str(code) if code else None


def _copy_capped(src: Path, dest: Path, max_bytes: int) -> int:
    too_big = Rejected(NAME, f"the video is larger than {max_bytes} bytes", reason=RejectReason.INVALID)
    if src.stat().st_size > max_bytes:
        raise too_big
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
    copied = 0
    try:
        with src.open("rb") as fin, tmp.open("wb") as fout:
            while chunk := fin.read(1 << 16):
                copied += len(chunk)
                if copied > max_bytes:  # the file grew after stat(): still never past the cap
                    raise too_big
                fout.write(chunk)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return copied


# --- text -----------------------------------------------------------------------------------------

_FONT_FILES = (  # wide coverage first; the first one that has a glyph draws it
    "DejaVuSans.ttf",
    "NotoSans-Regular.ttf",
    "LiberationSans-Regular.ttf",
    "NotoSansCJK-Regular.ttc",
    "NotoSansCJKsc-Regular.otf",
    "NotoSansSC-Regular.otf",
    "wqy-microhei.ttc",
    "wqy-zenhei.ttc",
    "DroidSansFallbackFull.ttf",
)
_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts", "~/.local/share/fonts")
_TEXT_LOCK = threading.Lock()
_MISSING = "\U0010fffd"  # a private-use code point no font draws: its image is the "no glyph" box


@lru_cache(maxsize=1)
def _font_paths() -> tuple[str, ...]:
    found: dict[str, str] = {}
    for root in _FONT_DIRS:
        for folder, _dirs, files in os.walk(os.path.expanduser(root)):
            for name in files:
                if name in _FONT_FILES:
                    found.setdefault(name, os.path.join(folder, name))
    return tuple(found[name] for name in _FONT_FILES if name in found)


@lru_cache(maxsize=8)
def _fonts(size: int) -> tuple[ImageFont.FreeTypeFont, ...]:
    fonts: list[ImageFont.FreeTypeFont] = []
    for path in _font_paths():
        with contextlib.suppress(OSError, ValueError):
            fonts.append(ImageFont.truetype(path, size))
    with contextlib.suppress(OSError, ImportError, ValueError):
        default = ImageFont.load_default(size=size)  # Pillow's own Latin font (needs FreeType)
        if isinstance(default, ImageFont.FreeTypeFont):
            fonts.append(default)
    return tuple(fonts)


def _glyph_image(font: ImageFont.FreeTypeFont, ch: str) -> bytes:
    left, top, right, bottom = (int(v) for v in font.getbbox(ch))
    img = Image.new("L", (max(1, right - left), max(1, bottom - top)))
    ImageDraw.Draw(img).text((-left, -top), ch, font=font, fill=255)
    return f"{img.size}".encode() + img.tobytes()


@lru_cache(maxsize=16384)
def _has_glyph(font: ImageFont.FreeTypeFont, ch: str) -> bool:
    try:
        return _glyph_image(font, ch) != _glyph_image(font, _MISSING)
    except Exception:  # a font that cannot lay the character out does not have it
        return False


class _Typeface:
    """A chain of fonts at one size: each character is drawn by the first font that has it, so a
    caption can mix Latin, Cyrillic and (when such a font is installed) CJK. Without any FreeType
    font it falls back to Pillow's bitmap font, which only knows Latin-1."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.fonts = _fonts(size)
        self.bitmap = None if self.fonts else ImageFont.load_default()
        self.line_height = round(size * 1.3)

    def runs(self, text: str) -> list[tuple[ImageFont.FreeTypeFont, str]]:
        out: list[tuple[ImageFont.FreeTypeFont, str]] = []
        for ch in text:
            if out and (ch == " " or unicodedata.category(ch)[0] == "M"):
                out[-1] = (out[-1][0], out[-1][1] + ch)  # marks and spaces stay with their base
                continue
            font = next((f for f in self.fonts if _has_glyph(f, ch)), self.fonts[0])
            if out and out[-1][0] is font:
                out[-1] = (font, out[-1][1] + ch)
            else:
                out.append((font, ch))
        return out

    def covers(self, ch: str) -> bool:
        return any(_has_glyph(f, ch) for f in self.fonts)

    def _latin1(self, text: str) -> str:
        return text.encode("latin-1", "replace").decode("latin-1")

    def length(self, text: str) -> float:
        if self.bitmap is not None:
            return float(self.bitmap.getlength(self._latin1(text)))
        return sum(float(font.getlength(run)) for font, run in self.runs(text))

    def draw(self, draw: ImageDraw.ImageDraw, x: float, baseline: float, text: str, fill: Any) -> None:
        if self.bitmap is not None:
            draw.text((x, baseline - self.size), self._latin1(text), font=self.bitmap, fill=fill)
            return
        for font, run in self.runs(text):
            draw.text((x, baseline), run, font=font, fill=fill, anchor="ls")
            x += float(font.getlength(run))


def _fit_prefix(word: str, face: _Typeface, width: float) -> int:
    """The longest prefix of `word` (at least one character) that fits in `width`."""
    lo, hi = 1, len(word)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if face.length(word[:mid]) <= width:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _wrap(text: str, face: _Typeface, width: float, max_lines: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        if len(lines) > max_lines:
            break
        trial = f"{current} {word}" if current else word
        if face.length(trial) <= width:
            current = trial
            continue
        if current:
            lines.append(current)
        while word and face.length(word) > width and len(lines) <= max_lines:  # no spaces (CJK, URLs)
            cut = _fit_prefix(word, face, width)
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and face.length(last + "…") > width:
            last = last[:-1]
        lines = [*lines[: max_lines - 1], last.rstrip() + "…"]
    return lines


# --- pictures -------------------------------------------------------------------------------------

_PAN = 1.2  # sources are prepared this much larger than their tile, so there is room to move


def _colour(seed: str, shift: int = 0) -> tuple[int, int, int]:
    h = zlib.crc32(seed.encode("utf-8", "surrogatepass")) >> shift
    return (60 + h % 140, 60 + (h >> 8) % 140, 60 + (h >> 16) % 140)


def _tiles(count: int, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Side by side in landscape, stacked in portrait: (x, y, w, h) per character."""
    count = max(1, count)
    if width >= height:
        edges = [round(i * width / count) for i in range(count + 1)]
        return [(edges[i], 0, edges[i + 1] - edges[i], height) for i in range(count)]
    edges = [round(i * height / count) for i in range(count + 1)]
    return [(0, edges[i], width, edges[i + 1] - edges[i]) for i in range(count)]


def _load_frame(path: str, size: tuple[int, int]) -> Image.Image | None:
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size[0] * 2, size[1] * 2))  # JPEG: decode at a reduced scale
            upright = ImageOps.exif_transpose(img).convert("RGB")
        return ImageOps.fit(upright, size, Image.Resampling.BILINEAR, centering=(0.5, 0.4))
    except Exception:  # missing, damaged or hostile (decompression bomb) image: use the placeholder
        return None


def _source(cast: _Cast, tile: tuple[int, int]) -> Image.Image:
    size = (max(1, round(tile[0] * _PAN)), max(1, round(tile[1] * _PAN)))
    loaded = _load_frame(cast.frame, size) if cast.frame else None
    if loaded is not None:
        return loaded
    # no usable frame: the character's colour and initial
    img = Image.new("RGB", size, _colour(cast.name))
    initial = _Typeface(max(8, min(size) // 3))
    letter = render_caption(cast.name, {}, max_chars=32)[:1].upper()
    if letter and initial.covers(letter):  # no "missing glyph" box as the big initial
        x = (size[0] - initial.length(letter)) / 2
        initial.draw(ImageDraw.Draw(img), x, size[1] * 0.62, letter, (255, 255, 255))
    return img


def _backdrop(prompt: str, tile: tuple[int, int]) -> Image.Image:
    """No characters: a gradient in colours taken from the prompt."""
    size = (max(1, round(tile[0] * _PAN)), max(1, round(tile[1] * _PAN)))
    mask = Image.linear_gradient("L").resize(size)
    top, bottom = Image.new("RGB", size, _colour(prompt)), Image.new("RGB", size, _colour(prompt, 7))
    return Image.composite(bottom, top, mask)


def _ken_burns(src: Image.Image, tile: tuple[int, int], t: float, reverse: bool) -> Image.Image:
    """The `tile`-sized view of `src` at time t in [0, 1]: a slow zoom and pan."""
    e = 1 - t if reverse else t
    zoom = 1 + (_PAN - 1) * e
    crop_w, crop_h = src.width / zoom, src.height / zoom
    x = (src.width - crop_w) * e
    y = (src.height - crop_h) * 0.3
    return src.resize(tile, Image.Resampling.BILINEAR, box=(x, y, x + crop_w, y + crop_h))


def _overlay(job: _Job, tiles: list[tuple[int, int, int, int]]) -> Image.Image:
    """Everything that does not move: name tags and the caption band."""
    width, height = job.width, job.height
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    text_size = max(8, round(min(width, height) / 14))
    face, small = _Typeface(text_size), _Typeface(max(8, text_size - 2))
    pad = max(2, text_size // 3)
    for (x, y, w, _h), cast in zip(tiles, job.cast, strict=False):
        name = render_caption(cast.name, {}, max_chars=32)
        tag = _wrap(name, small, w - 4 * pad, 1)[0] if name else ""
        if tag:
            draw.rectangle(
                (x + pad, y + pad, x + 3 * pad + small.length(tag), y + pad + small.line_height),
                fill=(0, 0, 0, 150),
            )
            small.draw(draw, x + 2 * pad, y + pad + small.size, tag, (255, 255, 255, 255))
    caption = render_caption(job.prompt, {c.key: c.name for c in job.cast})
    if caption:
        max_lines = max(1, int(height * 0.42 - 2 * pad) // face.line_height)
        lines = _wrap(caption, face, width - 2 * pad, max_lines)
        band = len(lines) * face.line_height + 2 * pad
        draw.rectangle((0, height - band, width, height), fill=(0, 0, 0, 160))
        for i, line in enumerate(lines):
            baseline = height - band + pad + i * face.line_height + face.size
            face.draw(draw, pad, baseline, line, (255, 255, 255, 255))
    return layer


def _frames(job: _Job) -> Iterator[Image.Image]:
    width, height = job.width, job.height
    tiles = _tiles(len(job.cast), width, height)
    with _TEXT_LOCK:  # FreeType faces are shared between render threads and are not thread-safe
        if job.cast:
            sources = [_source(c, (w, h)) for (_x, _y, w, h), c in zip(tiles, job.cast, strict=True)]
        else:
            sources = [_backdrop(job.prompt, (width, height))]
        overlay = _overlay(job, tiles)
    count = job.seconds * job.fps
    for i in range(count):
        t = i / (count - 1) if count > 1 else 0.0
        eased = t * t * (3 - 2 * t)
        canvas = Image.new("RGB", (width, height))
        for k, ((x, y, w, h), src) in enumerate(zip(tiles, sources, strict=True)):
            canvas.paste(_ken_burns(src, (w, h), eased, reverse=k % 2 == 1), (x, y))
        canvas.paste(overlay, (0, 0), overlay)
        # a thin progress line: the clip visibly plays even when the pictures barely move
        ImageDraw.Draw(canvas).rectangle(
            (0, height - 2, math.ceil(width * (i + 1) / count), height), fill=(255, 200, 0)
        )
        yield canvas


def render_video(job: _Job, dest: Path) -> None:
    """Render `job` to `dest` (blocking). write_video encodes H.264 into a temporary file and
    renames it, so a crash never leaves a half-written video under the final name."""
    write_video(_frames(job), dest, fps=job.fps)
