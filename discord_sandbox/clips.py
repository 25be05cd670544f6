"""Real, tiny test clips rendered with PyAV, plus the broken uploads a bot meets in the wild.

`make_clip` draws a synthetic scene (a cartoon face moving across a gradient, with scrolling
stripes for texture) and encodes it with a real encoder into a real container. It is
deliberately independent of `bot.media`, so a bug there cannot hide in the fixtures.

Blurred frames are marked by their background: sharp frames sit on a *blue* gradient, blurred
frames on a *red* one (`is_blurred_frame` tells them apart from a decoded picture), so tests can
check which kind of frame the code picked without re-using the code's own sharpness measure.
"""

from __future__ import annotations

import io
import math
import random
import zipfile
from array import array
from collections.abc import Sequence
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
from PIL import Image, ImageDraw, ImageFilter, ImageOps, ImageStat

# codec name -> encoder; only what the bundled FFmpeg can encode is usable (see `available_codecs`).
VIDEO_ENCODERS = {
    "h264": ("libx264", "libopenh264"),
    "hevc": ("libx265",),
    "mpeg4": ("mpeg4",),
    "vp8": ("libvpx",),
    "vp9": ("libvpx-vp9",),
    "mjpeg": ("mjpeg",),
    "av1": ("libsvtav1",),
}
CONTAINER_FORMATS = {"mp4": "mp4", "mov": "mov", "mkv": "matroska", "webm": "webm", "avi": "avi"}
# Fast settings: fixtures must be cheap, quality is irrelevant.
_ENCODER_OPTIONS = {
    "libx264": {"preset": "ultrafast", "crf": "23"},
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=error"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8", "b": "400k"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "b": "400k", "row-mt": "1"},
    "mpeg4": {"qscale": "5"},
    "libsvtav1": {"preset": "12"},
}
_SHARP_TINT = ((15, 30, 90), (90, 170, 250))  # blue gradient
_BLUR_TINT = ((90, 25, 15), (250, 150, 90))  # red gradient


@cache
def _encoder(codec: str) -> str | None:
    for name in VIDEO_ENCODERS.get(codec, ()):
        try:
            av.codec.Codec(name, "w")
        except Exception:
            continue
        return name
    return None


def available_codecs() -> list[str]:
    """Video codecs this machine's PyAV can encode (tests parametrize over these)."""
    return [codec for codec in VIDEO_ENCODERS if _encoder(codec)]


def default_blur(seconds: float) -> tuple[tuple[float, float], ...]:
    """The blurred span `make_clip` uses when not told otherwise: the middle fifth."""
    return ((seconds * 0.4, seconds * 0.6),)


def is_blurred_frame(image: Image.Image) -> bool:
    """Whether a decoded frame came from a blurred span (red background) rather than a sharp one."""
    rgb = image.convert("RGB")
    w, h = rgb.size
    corner = rgb.crop((0, 0, max(1, w // 8), max(1, h // 8)))
    r, _, b = ImageStat.Stat(corner).mean
    return bool(r > b)


def _blurred_at(t: float, blur: Sequence[tuple[float, float]]) -> bool:
    return any(start <= t < end for start, end in blur)


def render_frame(
    t: float, seconds: float, size: tuple[int, int], *, blurred: bool = False, pattern: str = "face"
) -> Image.Image:
    """The picture `make_clip` encodes at time `t` (exposed so tests can compare against it)."""
    w, h = size
    tint = _BLUR_TINT if blurred else _SHARP_TINT
    gradient = Image.linear_gradient("L").resize((w, h))
    img = ImageOps.colorize(gradient, black=tint[0], white=tint[1])
    draw = ImageDraw.Draw(img)
    progress = t / seconds if seconds > 0 else 0.0
    if pattern == "bars":
        bar = max(4, w // 8)
        shift = int(progress * bar * 4)
        colors = [(255, 255, 255), (255, 255, 0), (0, 255, 255), (0, 255, 0), (255, 0, 255)]
        for i, x in enumerate(range(-bar * 2 + shift % (bar * 2), w, bar)):
            draw.rectangle((x, h // 4, x + bar - 1, h * 3 // 4), fill=colors[i % len(colors)])
    elif pattern == "face":
        # Scrolling stripes at the bottom give every sharp frame plenty of edges.
        stripe = max(3, w // 40)
        offset = int(progress * stripe * 8)
        for x in range(-stripe * 2 + offset % (stripe * 2), w, stripe * 2):
            draw.rectangle((x, h * 5 // 6, x + stripe - 1, h - 1), fill=(240, 240, 240))
        r = max(6, min(w, h) // 5)
        cx = int(r + 2 + (w - 2 * r - 4) * progress)
        cy = h // 2 - h // 12
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(235, 190, 150), outline=(60, 30, 10), width=2)
        eye = max(2, r // 5)
        for ex in (cx - r // 2 - eye // 2, cx + r // 2 - eye // 2):
            draw.ellipse((ex, cy - r // 3, ex + eye, cy - r // 3 + eye), fill=(20, 20, 20))
        draw.arc((cx - r // 2, cy, cx + r // 2, cy + r // 2), 10, 170, fill=(120, 20, 20), width=max(1, r // 10))
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    if blurred:
        img = img.filter(ImageFilter.GaussianBlur(radius=max(3.0, min(w, h) / 40)))
    return img


def _sine_frame(fmt_rate: int, samples: int, start: int) -> av.AudioFrame:
    frame = av.AudioFrame(format="fltp", layout="mono", samples=samples)
    data = array("f", (0.3 * math.sin(2 * math.pi * 440 * (start + i) / fmt_rate) for i in range(samples)))
    raw = data.tobytes()
    plane = frame.planes[0]
    plane.update(raw + bytes(plane.buffer_size - len(raw)))
    frame.sample_rate = fmt_rate
    frame.pts = start
    frame.time_base = Fraction(1, fmt_rate)
    return frame


def make_clip(
    dest: Path,
    *,
    seconds: float = 3.0,
    size: tuple[int, int] = (320, 240),
    fps: int = 24,
    codec: str = "h264",
    container: str = "mp4",
    audio: bool = False,
    pattern: str = "face",
    blur: Sequence[tuple[float, float]] | None = None,
    rotate: int = 0,
    faststart: bool = False,
) -> Path:
    """Render a real clip to `dest` and return it.

    `blur` lists `(start, end)` second spans whose frames are blurred (default: the middle fifth,
    see `default_blur`; pass `()` for none). `rotate` stores a display rotation (degrees
    counter-clockwise, like phone videos do) instead of rotating the pixels. `faststart` puts the
    MP4/MOV index first; by default it is at the end, as many recorders write it.
    """
    encoder = _encoder(codec)
    if encoder is None:
        raise ValueError(f"this FFmpeg build cannot encode {codec!r}; available: {available_codecs()}")
    fmt = CONTAINER_FORMATS[container]
    spans = default_blur(seconds) if blur is None else tuple(blur)
    dest.parent.mkdir(parents=True, exist_ok=True)
    container_options = {"movflags": "+faststart"} if faststart and fmt in ("mp4", "mov") else {}
    n_frames = max(1, round(seconds * fps))
    with av.open(str(dest), "w", format=fmt, container_options=container_options) as out:
        vs = out.add_stream(encoder, rate=fps, options=dict(_ENCODER_OPTIONS.get(encoder, {})))
        assert isinstance(vs, av.VideoStream)
        vs.width, vs.height = size
        vs.pix_fmt = "yuvj420p" if encoder == "mjpeg" else "yuv420p"
        if rotate:
            vs.set_display_rotation(rotate)
        audio_stream = None
        rate, chunk = (48000, 960) if container == "webm" else (44100, 1024)
        if audio:
            audio_stream = out.add_stream("libopus" if container == "webm" else "aac", rate=rate)
            assert isinstance(audio_stream, av.AudioStream)
            audio_stream.layout = "mono"
        audio_total = round(seconds * rate)
        audio_done = 0
        for i in range(n_frames):
            t = i / fps
            picture = render_frame(t, seconds, size, blurred=_blurred_at(t, spans), pattern=pattern)
            frame = av.VideoFrame.from_image(picture)  # type: ignore[no-untyped-call]
            frame.pts = i
            out.mux(vs.encode(frame))
            # Interleave audio up to the current video time.
            while audio_stream is not None and audio_done < min(audio_total, (i + 1) * rate // fps):
                n = min(chunk, audio_total - audio_done)
                out.mux(audio_stream.encode(_sine_frame(rate, n, audio_done)))
                audio_done += n
        out.mux(vs.encode(None))
        if audio_stream is not None:
            out.mux(audio_stream.encode(None))
    return dest


def make_garbage(dest: Path, *, size: int = 64 * 1024, seed: int = 0) -> Path:
    """Random bytes with a video name."""
    dest.write_bytes(random.Random(seed).randbytes(size))
    return dest


def make_truncated(dest: Path, *, keep_moov: bool = False, fraction: float = 0.5, clean_cut: bool = False) -> Path:
    """A real MP4 cut short, as an interrupted upload leaves it.

    With `keep_moov=False` the index (moov atom, written last) is lost; with `keep_moov=True` the
    index survives at the front but promises media data that is no longer there. `clean_cut`
    cuts at the first video packet boundary after `fraction` of the bytes, so no decoder ever
    sees half a packet: the file just ends early.
    """
    full = make_clip(dest.with_name(dest.name + ".full.mp4"), seconds=3.0, faststart=keep_moov)
    data = full.read_bytes()
    cut = int(len(data) * fraction)
    if clean_cut:
        with av.open(str(full)) as container:
            starts = sorted(p.pos for p in container.demux(video=0) if p.pos is not None and p.pos >= 0)
        cut = next((pos for pos in starts if pos >= cut), cut)
    full.unlink()
    dest.write_bytes(data[:cut])
    return dest


def make_zip_as_mp4(dest: Path) -> Path:
    """A ZIP archive (containing a real clip, to be nasty) renamed `.mp4`."""
    inner = make_clip(dest.with_name(dest.name + ".inner.mp4"), seconds=2.5, size=(96, 64))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.write(inner, "clip.mp4")
        zf.writestr("readme.txt", "not a video")
    inner.unlink()
    dest.write_bytes(buf.getvalue())
    return dest


def make_image_as_mp4(dest: Path, *, image_format: str = "PNG", size: tuple[int, int] = (320, 240)) -> Path:
    """A still image (PNG, JPEG, GIF, WEBP...) renamed `.mp4`."""
    render_frame(0.0, 1.0, size).save(dest, format=image_format)
    return dest


def make_png_as_mp4(dest: Path, *, size: tuple[int, int] = (320, 240)) -> Path:
    return make_image_as_mp4(dest, image_format="PNG", size=size)


def make_audio_only(dest: Path, *, seconds: float = 3.0) -> Path:
    """An MP4 with an AAC track and no picture (a voice memo)."""
    rate = 44100
    total = round(seconds * rate)
    with av.open(str(dest), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate)
        assert isinstance(stream, av.AudioStream)
        stream.layout = "mono"
        for start in range(0, total, 1024):
            out.mux(stream.encode(_sine_frame(rate, min(1024, total - start), start)))
        out.mux(stream.encode(None))
    return dest
