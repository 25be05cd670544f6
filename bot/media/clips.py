"""Character clips: probe an upload, extract reference frames, pick and cut the best window.

Everything here is synchronous and CPU/disk bound: call it through `asyncio.to_thread`.
All reading goes through PyAV with a demuxer allow-list (see `bot.media.scan`); nothing reads a
whole file into memory, and probing decodes only a few frames.
"""

from __future__ import annotations

import enum
import itertools
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.container
import av.stream
from PIL import Image

from bot.media.encode import VideoWriter, even_size
from bot.media.scan import (
    MAX_PIXELS,
    MAX_SIDE,
    Sample,
    display_rotation,
    fit_within,
    frame_rate,
    image_to_frame,
    main_video_stream,
    open_input,
    read_head,
    scan,
    sniff,
    start_offset,
    to_display_image,
)

log = logging.getLogger(__name__)

_MB = 1024 * 1024
_DURATION_SLACK = 0.05  # container rounding: a "20 s" clip may probe as 20.02 s
_EXTRACT_CANDIDATES = 24
# The widest and tallest shape a character clip may have. Every provider wants its references
# between 1:2.5 and 2.5:1 (Kling's element images are the strictest), and a strip outside that
# yields no usable face or frame.
MAX_ASPECT = 2.5


class ClipProblem(enum.StrEnum):
    NOT_VIDEO = "not_video"
    UNREADABLE = "unreadable"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    TOO_LARGE = "too_large"
    TOO_SMALL = "too_small"
    BAD_ASPECT = "bad_aspect"


class ClipRejected(Exception):
    """A clip we cannot use; `detail` is safe to show the member who uploaded it."""

    def __init__(self, problem: ClipProblem, detail: str) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail


@dataclass(frozen=True)
class ClipInfo:
    container: str  # short name: mp4, mov, webm, mkv, avi, ...
    video_codec: str  # decoder name: h264, hevc, vp9, ...
    duration: float  # seconds
    width: int  # as displayed (rotation applied)
    height: int
    fps: float  # average frame rate; 0.0 if unknown
    has_audio: bool
    size_bytes: int


def _seconds(value: float, bound: float) -> str:
    text = f"{value:.1f}"
    # "1.97 s" must not read as "2.0 s" next to "need 2-20 s".
    return f"{value:.2f}" if float(text) == bound else text


def _megabytes(n: int) -> str:
    return f"{n / _MB:.1f} MB"


def probe_clip(
    path: Path,
    *,
    min_seconds: float = 2.0,
    max_seconds: float = 20.0,
    max_bytes: int = 50 * _MB,
    min_side: int = 64,
    max_side: int = MAX_SIDE,
) -> ClipInfo:
    """Describe a clip, or raise ClipRejected saying why it is not usable.

    Checks, cheapest first: file size, file signature, container, video stream, picture size
    (before any frame is decoded, so a decompression bomb is never expanded), duration, then
    decodes the first frame and the last stretch to prove the data is really there. A missing
    file is the caller's bug and raises FileNotFoundError.
    """
    size = path.stat().st_size
    if size == 0:
        raise ClipRejected(ClipProblem.UNREADABLE, "the file is empty")
    if size > max_bytes:
        raise ClipRejected(
            ClipProblem.TOO_LARGE, f"the file is {_megabytes(size)}; the limit is {max_bytes / _MB:g} MB"
        )
    head = read_head(path)
    known = sniff(head)
    if known is not None and known[1] == "image":
        raise ClipRejected(ClipProblem.NOT_VIDEO, f"this is a still picture ({known[0]}), not a video")
    if known is not None and known[1] == "other":
        raise ClipRejected(ClipProblem.NOT_VIDEO, f"this is a {known[0]}, not a video")
    try:
        container = open_input(path)
    except av.FFmpegError as exc:
        log.info("cannot open %s: %s", path.name, exc)
        if known is not None:
            raise ClipRejected(
                ClipProblem.UNREADABLE,
                f"this looks like a video ({known[0]}) but it is damaged or incomplete (was the upload cut off?)",
            ) from None
        raise ClipRejected(ClipProblem.NOT_VIDEO, "this is not a video file (unrecognised format)") from None
    with container:
        return _probe_open(
            path, head, container, size, min_seconds=min_seconds, max_seconds=max_seconds,
            min_side=min_side, max_side=max_side,
        )  # fmt: skip


def _probe_open(
    path: Path,
    head: bytes,
    container: av.container.InputContainer,
    size: int,
    *,
    min_seconds: float,
    max_seconds: float,
    min_side: int,
    max_side: int,
) -> ClipInfo:
    stream = main_video_stream(container)
    if stream is None:
        if container.streams.audio:
            raise ClipRejected(ClipProblem.NOT_VIDEO, "this file has sound but no picture")
        raise ClipRejected(ClipProblem.NOT_VIDEO, "this file has no video track")
    if stream.codec_context is None:
        raise ClipRejected(ClipProblem.UNREADABLE, "this video uses a format (codec) we cannot decode")
    width, height = stream.codec_context.width, stream.codec_context.height
    if width <= 0 or height <= 0:
        raise ClipRejected(ClipProblem.UNREADABLE, "this video has no readable picture size")
    if max(width, height) > max_side or width * height > MAX_PIXELS:
        raise ClipRejected(
            ClipProblem.TOO_LARGE,
            f"the video is {width}×{height} pixels; the most we take is {max_side} pixels on a side "
            f"and about {MAX_PIXELS / 1e6:.1f} megapixels",
        )
    if min(width, height) < min_side:
        raise ClipRejected(
            ClipProblem.TOO_SMALL,
            f"the video is only {width}×{height} pixels; characters need at least {min_side} on each side",
        )
    if max(width, height) / min(width, height) > MAX_ASPECT:
        ratio = max(width, height) / min(width, height)
        shape = f"{ratio:.1f}:1" if width > height else f"1:{ratio:.1f}"
        raise ClipRejected(
            ClipProblem.BAD_ASPECT,
            f"the video is {width}×{height} pixels ({shape}); characters need a shape between 1:{MAX_ASPECT:g} "
            f"(tall) and {MAX_ASPECT:g}:1 (wide), such as 16:9, 4:3, 1:1 or 9:16",
        )
    duration, exact = _duration(container, stream)
    if duration is None or duration <= 0:
        raise ClipRejected(ClipProblem.NOT_VIDEO, "this file has a picture but no running time (a still image?)")
    need = f"characters need {min_seconds:g}–{max_seconds:g} s"
    if duration < min_seconds - _DURATION_SLACK and _single_picture(container, stream):
        raise ClipRejected(ClipProblem.NOT_VIDEO, "this is a single still picture, not a video")
    if duration < min_seconds - _DURATION_SLACK:
        raise ClipRejected(ClipProblem.TOO_SHORT, f"the clip is {_seconds(duration, min_seconds)} s; {need}")
    if duration > max_seconds + _DURATION_SLACK:
        raise ClipRejected(ClipProblem.TOO_LONG, f"the clip is {_seconds(duration, max_seconds)} s; {need}")
    # Be strict about what FFmpeg may allocate when frames are decoded for real.
    stream.codec_context.options = {"max_pixels": str(MAX_PIXELS)}
    rotation = _check_decodes(container, stream, duration, exact=exact)
    if rotation in (90, 270):
        width, height = height, width
    return ClipInfo(
        container=_container_name(container, head),
        video_codec=stream.codec_context.codec.canonical_name,
        duration=round(duration, 3),
        width=width,
        height=height,
        fps=round(frame_rate(stream), 3),
        has_audio=bool(container.streams.audio),
        size_bytes=size,
    )


def _duration(container: av.container.InputContainer, stream: av.VideoStream) -> tuple[float | None, bool]:
    """(seconds, exact): the video track's own running time if any header states it, else the
    container's (which may include a longer audio track), else counted from packets."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base), True
    tagged = _parse_clock(stream.metadata.get("DURATION", ""))  # Matroska/WebM per-track tag
    if tagged:
        return tagged, True
    if container.duration:
        return container.duration / 1_000_000, False
    # No header says it (some live-recorded MKVs): demux, which reads packets but decodes nothing.
    offset = start_offset(container, stream)
    end = None
    for packet in container.demux(stream):
        if packet.pts is not None and packet.time_base is not None:
            t = float((packet.pts + (packet.duration or 0)) * packet.time_base) - offset
            end = t if end is None else max(end, t)
    container.seek(0)
    return end, True


def _parse_clock(text: str) -> float | None:
    """'00:00:03.000000000' -> 3.0; anything else -> None."""
    parts = text.strip().split(":")
    if len(parts) != 3:
        return None
    try:
        hours, minutes, secs = int(parts[0]), int(parts[1]), float(parts[2])
    except ValueError:
        return None
    return hours * 3600 + minutes * 60 + secs


def _single_picture(container: av.container.InputContainer, stream: av.VideoStream) -> bool:
    """True if the stream holds at most one frame (a still GIF); decodes at most two."""
    try:
        count = sum(1 for _ in itertools.islice(container.decode(stream), 2))
    except av.FFmpegError:
        return False  # the decode check reports damage with a better message
    container.seek(0)
    return count <= 1


def _check_decodes(
    container: av.container.InputContainer, stream: av.VideoStream, duration: float, *, exact: bool
) -> int:
    """Decode the first frame and the last stretch; return the display rotation of the video.

    An upload cut short either errors out or simply ends early, so the frames must reach the
    stated end: within a few frames when the video track's own length is known, more loosely
    when only the container's length is (an audio track may run longer than the picture).
    """
    try:
        first = next(container.decode(stream), None)
        if first is None:
            raise ClipRejected(ClipProblem.UNREADABLE, "no picture could be decoded from this video")
        rotation = display_rotation(first)
        offset = start_offset(container, stream)
        fps = frame_rate(stream) or 25.0
        must_reach = duration - (max(0.25, 2.5 / fps) if exact else max(1.0, duration * 0.1))
        container.seek(int((offset + max(0.0, must_reach - 0.5)) * 1_000_000), backward=True)
        reached = -1.0
        for frame in container.decode(stream):
            if frame.time is not None:
                reached = max(reached, frame.time - offset)
            if reached >= must_reach:
                break
    except av.FFmpegError as exc:
        log.info("decode check failed: %s", exc)
        raise ClipRejected(
            ClipProblem.UNREADABLE, "the video data is damaged or incomplete (was the upload cut off?)"
        ) from None
    if reached < must_reach:
        raise ClipRejected(
            ClipProblem.UNREADABLE,
            f"the video stops at {max(reached, 0):.1f} s of {duration:.1f} s; the file looks incomplete",
        )
    return rotation


def _container_name(container: av.container.InputContainer, head: bytes) -> str:
    name = container.format.name
    if name.startswith("mov,"):
        brand = container.metadata.get("major_brand", "").strip().lower()
        if brand == "qt":
            return "mov"
        return "3gp" if brand.startswith("3g") else "mp4"
    if name.startswith("matroska"):
        return "webm" if b"webm" in head[:64] else "mkv"
    return name.split(",")[0]


def _read_samples(path: Path, *, step: float, keep_jpeg_side: int | None = None) -> tuple[list[Sample], float]:
    try:
        samples, duration = scan(path, step=step, keep_jpeg_side=keep_jpeg_side)
    except av.FFmpegError as exc:
        log.info("cannot read frames of %s: %s", path.name, exc)
        raise ClipRejected(ClipProblem.UNREADABLE, "no picture could be decoded from this video") from None
    if not samples:
        raise ClipRejected(ClipProblem.UNREADABLE, "no picture could be decoded from this video")
    return samples, duration


def _clip_length(path: Path) -> float:
    try:
        with open_input(path) as container:
            stream = main_video_stream(container)
            if stream is None:
                raise ClipRejected(ClipProblem.NOT_VIDEO, "this file has no video track")
            return _duration(container, stream)[0] or 0.0
    except av.FFmpegError:
        raise ClipRejected(ClipProblem.UNREADABLE, "this video cannot be read") from None


def extract_reference_frames(path: Path, out_dir: Path, *, count: int = 4, max_side: int = 1024) -> list[Path]:
    """Write up to `count` JPEG reference frames as out_dir/ref_0.jpg, ref_1.jpg, ...

    ref_0 is the frontal reference: the sharpest frame, preferring the middle of the clip (where
    the subject is usually settled and facing the camera). The rest are the sharpest frames of
    equal stretches of the clip, so they show it from across its length; blurred frames are
    skipped when sharper ones exist. Stale ref_N files from an earlier run are removed.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    length = _clip_length(path)
    step = max(length, 0.1) / _EXTRACT_CANDIDATES
    samples, duration = _read_samples(path, step=step, keep_jpeg_side=max_side)
    chosen = _choose_references(samples, max(duration, length), count)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for i, sample in enumerate(chosen):
        assert sample.jpeg is not None
        target = out_dir / f"ref_{i}.jpg"
        tmp = out_dir / f".ref_{i}.jpg.part"
        tmp.write_bytes(sample.jpeg)
        tmp.replace(target)
        paths.append(target)
    for stale in out_dir.glob("ref_*.jpg"):
        if stale not in paths:
            stale.unlink(missing_ok=True)
    return paths


def _choose_references(samples: list[Sample], duration: float, count: int) -> list[Sample]:
    span = max(duration, 1e-6)

    def centred(s: Sample) -> float:
        return s.sharpness * (1.0 - 0.4 * abs(2 * s.time / span - 1))

    frontal = max(samples, key=centred)
    others = [s for s in samples if s is not frontal]
    sharp = [s for s in others if s.sharpness >= 0.35 * frontal.sharpness]
    gap = span / (count * 3)
    picked: list[Sample] = []

    def far_enough(s: Sample) -> bool:
        return all(abs(s.time - p.time) >= gap for p in [frontal, *picked])

    segments = count - 1
    for k in range(segments):
        lo, hi = span * k / segments, span * (k + 1) / segments
        inside = [s for s in sharp if lo <= s.time < hi and far_enough(s)]
        if inside:
            picked.append(max(inside, key=lambda s: s.sharpness))
    for s in sorted(sharp, key=lambda s: -s.sharpness):
        if len(picked) >= segments:
            break
        if all(s is not p for p in picked) and far_enough(s):
            picked.append(s)
    if not picked and others and count > 1:
        # Providers need at least one extra view; a soft one beats none.
        picked.append(max(others, key=lambda s: s.sharpness))
    return [frontal, *sorted(picked, key=lambda s: s.time)]


def best_window(path: Path, length: float) -> float:
    """Start second of the best `length`-second window: sharp, steady frames. 0.0 if the clip is shorter."""
    if length <= 0:
        raise ValueError("length must be positive")
    clip = _clip_length(path)
    if clip <= length:
        return 0.0
    step = max(0.05, min(0.25, clip / 200))
    samples, duration = _read_samples(path, step=step)
    duration = min(clip, duration) if duration > 0 else clip
    latest = max(0.0, duration - length)
    if latest == 0.0:
        return 0.0
    top_sharp = max(s.sharpness for s in samples) or 1.0
    top_motion = max(s.motion for s in samples) or 1.0
    quality = [(s.time, s.sharpness / top_sharp - 0.5 * s.motion / top_motion) for s in samples]
    starts = sorted({0.0, latest, *(t for t, _ in quality if t <= latest)})
    best_start, best_score = 0.0, -math.inf
    for start in starts:
        inside = [q for t, q in quality if start - 1e-6 <= t <= start + length + 1e-6]
        if not inside:
            continue
        score = sum(inside) / len(inside)
        if score > best_score + 1e-9:
            best_start, best_score = start, score
    return round(min(max(best_start, 0.0), latest), 3)


def trim_clip(
    src: Path, dest: Path, start: float, duration: float, *, max_side: int | None = None, min_fps: int | None = None
) -> Path:
    """Cut [start, start+duration) out of `src` into a playable H.264/yuv420p MP4 at `dest`.

    Frames are re-encoded (cuts land on any frame, not just keyframes), turned upright if the
    source had a display rotation, and scaled to fit `max_side`. Audio, if present, is re-encoded
    to AAC; if it cannot be decoded it is dropped rather than failing the cut. With `min_fps`, a
    slower source is written at that constant rate, each frame repeated until the next (some
    engines refuse reference clips under 16 fps).
    """
    if duration <= 0 or start < 0:
        raise ValueError("start must be >= 0 and duration > 0")
    try:
        with open_input(src) as container:
            return _trim_open(container, dest, start, duration, max_side, min_fps)
    except av.FFmpegError as exc:
        log.info("cannot trim %s: %s", src.name, exc)
        raise ClipRejected(ClipProblem.UNREADABLE, "this video cannot be read") from None


def _trim_open(
    container: av.container.InputContainer,
    dest: Path,
    start: float,
    duration: float,
    max_side: int | None,
    min_fps: int | None = None,
) -> Path:
    stream = main_video_stream(container)
    if stream is None:
        raise ClipRejected(ClipProblem.NOT_VIDEO, "this file has no video track")
    stream.thread_type = "AUTO"
    audio = container.streams.audio[0] if container.streams.audio else None
    if audio is not None and audio.codec_context is None:
        audio = None
    fps_value = frame_rate(stream) or 30.0
    fps = Fraction(fps_value).limit_denominator(1001) if fps_value <= 120 else Fraction(60)
    fill = min_fps is not None and fps < min_fps
    if fill:
        fps = Fraction(min_fps or 0)
    offset = start_offset(container, stream)
    half = 0.5 / float(fps)
    end = start + duration
    container.seek(int((offset + start) * 1_000_000), backward=True)

    writer: VideoWriter | None = None
    base: float | None = None
    last_index = -1
    previous: av.VideoFrame | None = None
    audio_done = audio is None
    video_done = False
    pending_audio: list[av.AudioFrame] = []
    streams = (stream, audio) if audio is not None else (stream,)
    try:
        for packet in container.demux(*streams):
            if packet.stream is audio:
                if audio_done:
                    continue
                audio_done = _take_audio(packet, start, end, writer, pending_audio)
            elif not video_done:
                for frame in packet.decode():
                    assert isinstance(frame, av.VideoFrame)
                    t = (frame.time - offset) if frame.time is not None else None
                    if t is None or t < start - half:
                        continue
                    if t >= end - half:
                        video_done = True
                        break
                    if writer is None:
                        writer = _open_writer(dest, frame, fps, max_side, audio)
                        base = t
                        for queued in pending_audio:
                            writer.add_audio(queued)
                        pending_audio.clear()
                    assert base is not None
                    index = round((t - base) * fps)
                    if index <= last_index:
                        continue  # variable frame rate: two frames in one output slot
                    upright = _upright(frame, writer)
                    if fill and previous is not None:
                        for slot in range(last_index + 1, index):
                            writer.add_video(previous, slot)
                    writer.add_video(upright, index)
                    previous, last_index = upright, index
            if video_done and audio_done:
                break
        if writer is None:
            raise ClipRejected(ClipProblem.UNREADABLE, f"the clip has no frames between {start:.1f} s and {end:.1f} s")
        return writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


def _take_audio(
    packet: av.Packet[av.stream.Stream],
    start: float,
    end: float,
    writer: VideoWriter | None,
    pending: list[av.AudioFrame],
) -> bool:
    """Feed audio overlapping the window to the writer; True once past the window."""
    try:
        frames = packet.decode()
    except av.FFmpegError:
        log.warning("dropping undecodable audio while trimming")
        return True
    for frame in frames:
        assert isinstance(frame, av.AudioFrame)
        if frame.time is None:
            continue
        if frame.time >= end:
            return True
        if frame.time + frame.samples / frame.sample_rate <= start:
            continue
        if writer is None:
            pending.append(frame)  # video not started yet: the writer does not exist
        else:
            writer.add_audio(frame)
    return False


def _open_writer(
    dest: Path, frame: av.VideoFrame, fps: Fraction, max_side: int | None, audio: av.AudioStream | None
) -> VideoWriter:
    rotation = display_rotation(frame)
    w, h = (frame.height, frame.width) if rotation in (90, 270) else (frame.width, frame.height)
    w, h = even_size(*fit_within(w, h, max_side))
    rate = audio.codec_context.sample_rate if audio is not None and audio.codec_context else None
    channels = audio.codec_context.channels if audio is not None and audio.codec_context else 2
    return VideoWriter(dest, width=w, height=h, fps=fps, audio_rate=rate, audio_channels=channels)


def _upright(frame: av.VideoFrame, writer: VideoWriter) -> av.VideoFrame:
    """Apply a display rotation to the pixels (the output carries none); scale in one step."""
    rotation = display_rotation(frame)
    if not rotation:
        return frame.reformat(writer.width, writer.height, format="yuv420p")
    image = to_display_image(frame, max(writer.width, writer.height))
    if image.size != (writer.width, writer.height):
        image = image.resize((writer.width, writer.height))
    return image_to_frame(image)


def write_video(frames: Iterable[Image.Image], dest: Path, *, fps: int, codec: str = "h264") -> Path:
    """Encode RGB pictures (all the size of the first) into `dest` (MP4 unless .mov/.mkv/.webm)."""
    writer: VideoWriter | None = None
    try:
        for index, image in enumerate(frames):
            if writer is None:
                writer = VideoWriter(dest, width=image.width, height=image.height, fps=fps, codec=codec)
            rgb = image.convert("RGB")
            if rgb.size != (writer.width, writer.height):
                rgb = rgb.resize((writer.width, writer.height))
            writer.add_video(image_to_frame(rgb), index)
        if writer is None:
            raise ValueError("write_video needs at least one frame")
        return writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
