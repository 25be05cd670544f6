"""Fit a finished video under a channel's upload limit by re-encoding it (PyAV).

`plan_fit` is the pure choice: from the limit, the duration and the source's size and shape, the
resolution and bitrates to encode at, or None when even the last rung (480p) would not fit.
`fit_video` carries it out and checks the result (it fits, it decodes, same duration, audio kept)
before anyone posts it. The output is what every Discord client plays inline: H.264 yuv420p at
even sizes, AAC audio, MP4 with the index at the front (`+faststart`).

Everything here is synchronous and CPU bound: run it through `bot.services.encoding`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.container

from bot.media.encode import even_size, video_encoder
from bot.media.scan import frame_rate, main_video_stream, open_input, start_offset

log = logging.getLogger(__name__)

# Short sides tried in turn when the source's own does not leave enough bits per pixel.
RUNGS = (1080, 720, 540, 480)
# Share of the limit the streams may use: MP4 overhead (index, headers: ~1 %) and single-pass rate
# control overshooting a little on a short clip.
SAFETY = 0.90
# Video bits per second per pixel of a frame below which a rung looks too poor to keep (about
# 2.5 Mbit/s at 1920×1080); the last rung accepts half that rather than no video at all.
MIN_BPS_PER_PIXEL = 1.2
LAST_RUNG_BPS_PER_PIXEL = 0.6
AUDIO_BPS = 128_000
LOW_AUDIO_BPS = 64_000  # on the last rung
DURATION_TOLERANCE = 0.1  # seconds the fitted copy's duration may differ from the source's
RETRIES = 2  # a result over the limit is encoded again at a bitrate scaled down by the overshoot


@dataclass(frozen=True)
class FitPlan:
    width: int
    height: int
    video_bps: int
    audio_bps: int  # 0 when the source has no audio


@dataclass(frozen=True)
class FitResult:
    path: Path
    size: int
    width: int
    height: int
    duration: float


class CannotFit(Exception):
    """No verified copy under the limit could be made (unreadable source, failed check)."""


class TooLong(CannotFit):
    """Even the last rung (480p at its floor bitrate) would not fit: the video is too long for the limit."""


def scaled(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side at `short_side` (never larger than the source), even."""
    short = min(width, height)
    if short <= short_side:
        return even_size(width, height)
    factor = short_side / short
    return even_size(round(width * factor), round(height * factor))


def plan_fit(
    limit: int, duration: float, source_size: int, width: int, height: int, *, has_audio: bool
) -> FitPlan | None:
    """The resolution and bitrates that bring a `duration`-second video under `limit` bytes.

    The source's resolution is kept while the bitrate the limit leaves is enough for it; otherwise
    the short side steps down 1080 → 720 → 540 → 480 (never up). None when even 480p at its floor
    does not fit. The video bitrate never exceeds the source's own (re-encoding cannot add detail).
    """
    if limit <= 0 or duration <= 0 or width <= 0 or height <= 0:
        return None
    budget = limit * 8 * SAFETY / duration  # bits per second for all streams
    source_bps = source_size * 8 / duration
    shorts = [min(width, height), *(r for r in RUNGS if r < min(width, height))]
    if shorts[-1] > RUNGS[-1]:
        shorts.append(RUNGS[-1])
    for i, short in enumerate(shorts):
        last = i == len(shorts) - 1
        w, h = scaled(width, height, short)
        audio = (LOW_AUDIO_BPS if last else AUDIO_BPS) if has_audio else 0
        video = int(min(budget - audio, source_bps))
        floor = (LAST_RUNG_BPS_PER_PIXEL if last else MIN_BPS_PER_PIXEL) * w * h
        if video >= floor:
            return FitPlan(w, h, video, audio)
    return None


@dataclass(frozen=True)
class Probe:
    duration: float
    width: int
    height: int
    has_audio: bool


def probe(path: Path) -> Probe:
    """Duration, size of the frames and whether there is audio, from the headers alone."""
    with open_input(path) as container:
        stream = main_video_stream(container)
        if stream is None:
            raise CannotFit("no video track")
        duration = _duration(container)
        return Probe(duration, stream.width, stream.height, bool(container.streams.audio))


def _duration(container: av.container.InputContainer) -> float:
    if container.duration is not None:
        return container.duration / 1_000_000
    best = 0.0
    for stream in container.streams:
        if stream.duration is not None and stream.time_base is not None:
            best = max(best, float(stream.duration * stream.time_base))
    return best


def verify(path: Path, limit: int, source: Probe) -> FitResult:
    """Decode the whole fitted copy: it must fit, play to the end, last as long as the source and
    keep its audio. Raises CannotFit otherwise."""
    size = path.stat().st_size
    if size > limit:
        raise CannotFit(f"{size} bytes is over the limit of {limit}")
    with open_input(path) as container:
        stream = main_video_stream(container)
        if stream is None:
            raise CannotFit("the fitted copy has no video")
        if source.has_audio and not container.streams.audio:
            raise CannotFit("the fitted copy lost its audio")
        duration = _duration(container)
        frames = 0
        streams = [stream, *container.streams.audio[:1]]
        for packet in container.demux(*streams):
            for frame in packet.decode():
                frames += isinstance(frame, av.VideoFrame)
        width, height = stream.width, stream.height
    if frames == 0:
        raise CannotFit("the fitted copy has no frames")
    if abs(duration - source.duration) > DURATION_TOLERANCE:
        raise CannotFit(f"the fitted copy lasts {duration:.2f} s, the source {source.duration:.2f} s")
    return FitResult(path, size, width, height, duration)


def fit_video(src: Path, dest: Path, limit: int) -> FitResult:
    """Re-encode `src` into `dest` so that it is at most `limit` bytes, then verify it.

    Raises CannotFit when no plan fits (say why to the member) or the copy fails its checks; a
    failed attempt leaves nothing at `dest`.
    """
    try:
        source = probe(src)
    except av.FFmpegError as exc:
        raise CannotFit(f"unreadable: {exc}") from None
    size = src.stat().st_size
    plan = plan_fit(limit, source.duration, size, source.width, source.height, has_audio=source.has_audio)
    if plan is None:
        raise TooLong(f"{source.duration:.1f} s cannot fit {limit} bytes even at {RUNGS[-1]}p")
    for attempt in range(RETRIES + 1):
        try:
            _encode(src, dest, plan)
        except av.FFmpegError as exc:
            raise CannotFit(f"encoding failed: {exc}") from None
        written = dest.stat().st_size
        if written <= limit:
            try:
                return verify(dest, limit, source)
            except (CannotFit, av.FFmpegError) as exc:
                dest.unlink(missing_ok=True)
                raise CannotFit(f"the fitted copy failed its check: {exc}") from None
        log.info("fit attempt %d: %d bytes over the limit %d; encoding again", attempt + 1, written, limit)
        scale = limit / written * 0.95
        plan = FitPlan(plan.width, plan.height, int(plan.video_bps * scale), plan.audio_bps)
    dest.unlink(missing_ok=True)
    raise CannotFit(f"still over {limit} bytes after {RETRIES + 1} encodes")


def _encode(src: Path, dest: Path, plan: FitPlan) -> None:
    for stale in dest.parent.glob(f".{dest.name}.*.part"):  # left by a crash mid-encode
        stale.unlink(missing_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        with open_input(src) as inp:
            _encode_open(inp, tmp, plan)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _encode_open(inp: av.container.InputContainer, tmp: Path, plan: FitPlan) -> None:
    vin = main_video_stream(inp)
    assert vin is not None
    vin.thread_type = "AUTO"
    ain = inp.streams.audio[0] if plan.audio_bps and inp.streams.audio else None
    fps_value = frame_rate(vin) or 30.0
    fps = Fraction(fps_value).limit_denominator(1001) if fps_value <= 120 else Fraction(60)
    offset = start_offset(inp, vin)
    encoder = video_encoder("h264")
    bitrate = str(plan.video_bps)
    options = (
        # single-pass average bitrate, held to it by the VBV buffer so a busy stretch cannot overshoot
        {"preset": "veryfast", "b": bitrate, "maxrate": bitrate, "bufsize": str(plan.video_bps * 2)}
        if encoder == "libx264"
        else {"b": bitrate}
    )
    with av.open(str(tmp), mode="w", format="mp4", container_options={"movflags": "+faststart"}) as out:
        vout = out.add_stream(encoder, rate=fps, options=options)
        assert isinstance(vout, av.VideoStream)
        vout.width, vout.height = plan.width, plan.height
        vout.pix_fmt = "yuv420p"
        vout.bit_rate = plan.video_bps
        aout: av.AudioStream | None = None
        resampler: av.AudioResampler | None = None
        if ain is not None:
            rate = ain.rate if ain.rate in (48000, 44100, 32000, 24000, 22050, 16000) else 48000
            layout = "mono" if ain.channels == 1 else "stereo"
            stream = out.add_stream("aac", rate=rate)
            assert isinstance(stream, av.AudioStream)
            stream.layout = layout
            stream.bit_rate = plan.audio_bps
            aout = stream
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate, frame_size=1024)
        time_base = 1 / fps
        last_index = -1
        samples = 0
        streams = (vin, ain) if ain is not None else (vin,)
        for packet in inp.demux(*streams):
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    t = (frame.time - offset) if frame.time is not None else (last_index + 1) / fps_value
                    index = max(round(t * fps), 0)
                    if index <= last_index:
                        continue
                    last_index = index
                    out_frame = frame.reformat(plan.width, plan.height, format="yuv420p")
                    out_frame.pts = index
                    out_frame.time_base = time_base
                    out.mux(vout.encode(out_frame))
                elif isinstance(frame, av.AudioFrame) and aout is not None and resampler is not None:
                    for chunk in resampler.resample(frame):
                        chunk.pts = samples
                        chunk.time_base = Fraction(1, chunk.sample_rate)
                        samples += chunk.samples
                        out.mux(aout.encode(chunk))
        out.mux(vout.encode(None))
        if aout is not None and resampler is not None:
            for chunk in resampler.resample(None):
                chunk.pts = samples
                chunk.time_base = Fraction(1, chunk.sample_rate)
                samples += chunk.samples
                out.mux(aout.encode(chunk))
            out.mux(aout.encode(None))
