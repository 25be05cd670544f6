"""Writing playable video with PyAV for `bot.media`: encoder choice and an atomic writer.

Output is what every player and Discord embed accepts: H.264 in yuv420p, AAC audio, MP4 with
the index at the front (`+faststart`), even dimensions. The file appears under its final name
only once it is complete.
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from functools import cache
from pathlib import Path
from types import TracebackType

import av
import av.container

log = logging.getLogger(__name__)

# Preferred encoders per codec, best first. PyAV wheels ship libx264; other builds may not.
_ENCODERS: dict[str, tuple[str, ...]] = {
    "h264": ("libx264", "libopenh264", "h264_videotoolbox", "h264_nvenc", "h264_vaapi"),
    "hevc": ("libx265",),
    "mpeg4": ("mpeg4",),
    "vp9": ("libvpx-vp9",),
    "vp8": ("libvpx",),
    "av1": ("libsvtav1", "libaom-av1"),
}
_ENCODER_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"preset": "veryfast", "crf": "21"},
    "libopenh264": {"b": "3M"},
    "mpeg4": {"qscale": "3"},
    "libvpx-vp9": {"deadline": "good", "cpu-used": "5", "crf": "32", "b": "0", "row-mt": "1"},
    "libvpx": {"deadline": "good", "cpu-used": "5", "b": "2M"},
    "libx265": {"preset": "fast", "x265-params": "log-level=error"},
}
_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


def _can_encode(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


@cache
def video_encoder(codec: str = "h264") -> str:
    """The encoder to use for `codec`; H.264 falls back to MPEG-4 Part 2 if no H.264 encoder exists."""
    for name in _ENCODERS.get(codec, (codec,)):
        if _can_encode(name):
            return name
    if codec == "h264" and _can_encode("mpeg4"):
        log.warning("no H.264 encoder in this FFmpeg build; writing MPEG-4 Part 2 instead")
        return "mpeg4"
    raise ValueError(f"this FFmpeg build has no encoder for {codec!r}")


def even_size(width: int, height: int) -> tuple[int, int]:
    """yuv420p needs even dimensions: round down, but never below 2."""
    return max(2, width - width % 2), max(2, height - height % 2)


class VideoWriter:
    """Encode frames (and optionally audio) into `dest` through a temporary file.

    `add_video(frame, index)` takes frames in presentation order with `index` counted in
    1/fps units; `add_audio(frame)` takes decoded audio in any format, resampled here.
    """

    def __init__(
        self,
        dest: Path,
        *,
        width: int,
        height: int,
        fps: Fraction | int,
        codec: str = "h264",
        audio_rate: int | None = None,
        audio_channels: int = 2,
    ) -> None:
        self.dest = dest
        self.width, self.height = even_size(width, height)
        fmt = _FORMATS.get(dest.suffix.lower(), "mp4")
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        options = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}
        self._out = av.open(str(self._tmp), mode="w", format=fmt, container_options=options)
        self._closed = False
        self._frame_time_base = 1 / Fraction(fps)
        try:
            encoder = video_encoder(codec)
            stream = self._out.add_stream(encoder, rate=fps, options=dict(_ENCODER_OPTIONS.get(encoder, {})))
            assert isinstance(stream, av.VideoStream)
            stream.width, stream.height = self.width, self.height
            stream.pix_fmt = "yuv420p"
            self._video = stream
            self._audio: av.AudioStream | None = None
            self._resampler: av.AudioResampler | None = None
            self._audio_samples = 0
            if audio_rate:
                self._add_audio_stream(fmt, audio_rate, audio_channels)
        except BaseException:
            self.abort()
            raise

    def _add_audio_stream(self, fmt: str, source_rate: int, channels: int) -> None:
        if fmt == "webm":
            name, rate, frame_size = "libopus", 48000, 960
        else:
            name, frame_size = "aac", 1024
            rate = source_rate if source_rate in _AAC_RATES else 48000
        layout = "mono" if channels == 1 else "stereo"
        stream = self._out.add_stream(name, rate=rate)
        assert isinstance(stream, av.AudioStream)
        stream.layout = layout
        self._audio = stream
        self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate, frame_size=frame_size)

    @property
    def has_audio(self) -> bool:
        return self._audio is not None

    def add_video(self, frame: av.VideoFrame, index: int) -> None:
        if frame.width != self.width or frame.height != self.height or frame.format.name != "yuv420p":
            frame = frame.reformat(self.width, self.height, format="yuv420p")
        frame.pts = index
        frame.time_base = self._frame_time_base  # decoded frames carry the source's time base
        self._out.mux(self._video.encode(frame))

    def add_audio(self, frame: av.AudioFrame | None) -> None:
        """Queue decoded audio (None flushes the resampler)."""
        if self._audio is None or self._resampler is None:
            return
        for out in self._resampler.resample(frame):
            out.pts = self._audio_samples
            out.time_base = Fraction(1, out.sample_rate)
            self._audio_samples += out.samples
            self._out.mux(self._audio.encode(out))

    def close(self) -> Path:
        """Flush the encoders and move the finished file into place."""
        try:
            self._out.mux(self._video.encode(None))
            if self._audio is not None:
                self.add_audio(None)
                self._out.mux(self._audio.encode(None))
            self._out.close()
            self._closed = True
            os.replace(self._tmp, self.dest)
        except BaseException:
            self.abort()
            raise
        return self.dest

    def abort(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._out.close()
            except Exception:  # the file is discarded anyway
                log.debug("closing an aborted output failed", exc_info=True)
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()
