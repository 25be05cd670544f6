"""Reading video with PyAV for `bot.media`: safe opening, format sniffing, frame sampling.

Uploads are untrusted. FFmpeg can read hundreds of formats, some of which fetch other files or
URLs (playlists, concat lists), so inputs are opened with a demuxer and protocol allow-list.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.container
from PIL import Image, ImageChops, ImageFilter, ImageStat

log = logging.getLogger(__name__)

# Demuxers a clip may come in. Audio-only formats are allowed so that a voice memo is reported
# as "no picture" rather than "unrecognised".
INPUT_FORMATS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts,mpeg,ogg,gif,asf,mp3,wav,aac,flac"
MAX_SIDE = 4096  # DCI 4K; anything larger is refused before a frame is decoded
MAX_PIXELS = 4096 * 2304  # also bounds what FFmpeg may decode while probing
ANALYSIS_SIDE = 256  # sharpness/motion are measured on a small grey copy: fast, and enough
MAX_SCAN_SECONDS = 60.0  # hard stop for callers that skipped probe_clip

# (signature test, label, kind): kind is "image", "other" (definitely not a video) or "video".
_STILL_BRANDS = (b"heic", b"heix", b"mif1", b"msf1", b"avif")


def sniff(head: bytes) -> tuple[str, str] | None:
    """(label, kind) for well-known file signatures in the first bytes, else None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG image", "image"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG image", "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP image", "image"
    if head.startswith(b"BM") and len(head) >= 14:
        return "BMP image", "image"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF image", "image"
    if head[4:8] == b"ftyp" and head[8:12] in _STILL_BRANDS:
        return "HEIF/AVIF image", "image"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "ZIP archive", "other"
    for magic, label in (
        (b"%PDF", "PDF document"),
        (b"\x1f\x8b", "gzip archive"),
        (b"Rar!", "RAR archive"),
        (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
    ):
        if head.startswith(magic):
            return label, "other"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"{")):
        return "text document", "other"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "MP4/MOV", "video"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "WebM/MKV", "video"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI", "video"
    if head.startswith(b"FLV\x01"):
        return "FLV", "video"
    if head.startswith(b"\x00\x00\x01\xba") or (len(head) > 188 and head[0] == 0x47 and head[188] == 0x47):
        return "MPEG", "video"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "WMV", "video"
    return None


def read_head(path: Path, n: int = 512) -> bytes:
    with path.open("rb") as fh:
        return fh.read(n)


def open_input(path: Path) -> av.container.InputContainer:
    """Open a local file for reading with the allow-lists; raises av.FFmpegError subclasses."""
    return av.open(
        str(path),
        mode="r",
        container_options={"format_whitelist": INPUT_FORMATS, "protocol_whitelist": "file"},
        # Passed to the decoders FFmpeg runs while probing: no giant frame allocations.
        options={"max_pixels": str(MAX_PIXELS)},
    )


def main_video_stream(container: av.container.InputContainer) -> av.VideoStream | None:
    """The first real video stream (cover art in audio files is a 'video' stream too)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def start_offset(container: av.container.InputContainer, stream: av.VideoStream) -> float:
    """Seconds of the stream's first timestamp (MPEG-TS and edited MP4s do not start at 0)."""
    if stream.start_time is not None and stream.time_base is not None:
        return float(stream.start_time * stream.time_base)
    if container.start_time is not None:
        return container.start_time / 1_000_000
    return 0.0


def frame_rate(stream: av.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def display_rotation(frame: av.VideoFrame) -> int:
    """Counter-clockwise display rotation in {0, 90, 180, 270} (phones store portrait this way)."""
    try:
        degrees = frame.rotation
    except Exception:  # no display matrix / odd builds: treat as upright
        return 0
    return (round(degrees / 90) * 90) % 360


def fit_within(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) scaled down so the longer side is at most max_side; never scaled up."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_display_image(frame: av.VideoFrame, max_side: int | None = None) -> Image.Image:
    """An upright RGB picture of the frame, scaled (in swscale, before any Python work) to fit."""
    rotation = display_rotation(frame)
    quarter = rotation in (90, 270)
    w, h = (frame.height, frame.width) if quarter else (frame.width, frame.height)
    tw, th = fit_within(w, h, max_side)
    if quarter:
        tw, th = th, tw
    image = frame_to_image(frame, tw, th)
    # PIL rotates counter-clockwise, the same sense as the display matrix angle.
    return image.rotate(rotation, expand=True) if rotation else image


def frame_to_image(frame: av.VideoFrame, width: int | None = None, height: int | None = None) -> Image.Image:
    """Typed wrapper: PyAV's to_image is unannotated."""
    image = frame.to_image(width=width, height=height)  # type: ignore[no-untyped-call]
    assert isinstance(image, Image.Image)
    return image


def image_to_frame(image: Image.Image) -> av.VideoFrame:
    frame = av.VideoFrame.from_image(image)  # type: ignore[no-untyped-call]
    assert isinstance(frame, av.VideoFrame)
    return frame


_LAPLACIAN = ImageFilter.Kernel((3, 3), (0, 1, 0, 1, -4, 1, 0, 1, 0), scale=1, offset=128)


def sharpness(gray: Image.Image) -> float:
    """Variance of the Laplacian: high for crisp edges, low for blur or flat pictures."""
    return float(ImageStat.Stat(gray.filter(_LAPLACIAN)).var[0])


def motion(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of two grey pictures (0-255): camera shake, cuts, fast action."""
    return float(ImageStat.Stat(ImageChops.difference(a, b)).mean[0])


@dataclass
class Sample:
    time: float  # seconds from the start of the clip
    sharpness: float
    motion: float  # against the previous sample
    jpeg: bytes | None = None  # upright picture fitted to the caller's max_side


def iter_frames(
    container: av.container.InputContainer, stream: av.VideoStream
) -> Iterator[tuple[float, av.VideoFrame]]:
    """(seconds from clip start, frame) in decode order, stopping at MAX_SCAN_SECONDS."""
    offset = start_offset(container, stream)
    fps = frame_rate(stream) or 25.0
    for index, frame in enumerate(container.decode(stream)):
        t = (frame.time - offset) if frame.time is not None else index / fps
        if t > MAX_SCAN_SECONDS:
            return
        yield max(0.0, t), frame


def scan(
    path: Path,
    *,
    step: float,
    keep_jpeg_side: int | None = None,
    jpeg_quality: int = 90,
) -> tuple[list[Sample], float]:
    """Sample the clip every `step` seconds in one sequential decode; return (samples, duration).

    Decoding everything once is cheaper than seeking per sample (each seek decodes from the
    previous keyframe, and phone clips have keyframes seconds apart). Only JPEG bytes of sampled
    frames are kept, so memory stays small whatever the resolution.
    """
    samples: list[Sample] = []
    last_time = 0.0
    previous: Image.Image | None = None
    with open_input(path) as container:
        stream = main_video_stream(container)
        if stream is None:
            raise av.error.InvalidDataError(0, "no video stream")
        stream.thread_type = "AUTO"
        next_time = 0.0
        frames = iter_frames(container, stream)
        while True:
            try:
                item = next(frames, None)
            except av.FFmpegError:
                # A damaged tail: keep what was read, unless nothing was.
                if not samples:
                    raise
                log.warning("stopped reading %s at %.2f s: damaged data", path.name, last_time)
                break
            if item is None:
                break
            t, frame = item
            last_time = max(last_time, t + 1 / (frame_rate(stream) or 25.0))
            if t + 1e-6 < next_time:
                continue
            next_time = t + step
            gray = frame_to_image(frame.reformat(*_analysis_size(frame), format="gray"))
            sample = Sample(t, sharpness(gray), motion(gray, previous) if previous is not None else -1.0)
            previous = gray
            if keep_jpeg_side is not None:
                buf = io.BytesIO()
                to_display_image(frame, keep_jpeg_side).save(buf, "JPEG", quality=jpeg_quality)
                sample.jpeg = buf.getvalue()
            samples.append(sample)
    if len(samples) > 1 and samples[0].motion < 0:
        samples[0].motion = samples[1].motion
    elif samples:
        samples[0].motion = max(samples[0].motion, 0.0)
    return samples, last_time


def _analysis_size(frame: av.VideoFrame) -> tuple[int, int]:
    return fit_within(frame.width, frame.height, ANALYSIS_SIDE)
