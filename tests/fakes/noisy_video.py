"""A real, large MP4 like an engine's 1080p result: noise (incompressible) with an audio track.

Used by the fitting tests and `bench.encode`. The size is set by the encoder's bitrate, so a
10 s 1080p video of ~30 MB takes seconds to make, not minutes.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image


def make_noisy_video(
    dest: Path,
    *,
    seconds: float = 10.0,
    width: int = 1920,
    height: int = 1080,
    fps: int = 24,
    bitrate: int = 24_000_000,
    audio: bool = True,
    distinct_frames: int = 6,
) -> Path:
    """H.264 noise at about `bitrate` bits per second and a 440 Hz tone (AAC), into `dest`."""
    frames = [
        av.VideoFrame.from_image(Image.merge("RGB", [Image.effect_noise((width, height), 60 + 10 * i)] * 3))
        for i in range(distinct_frames)
    ]
    rate = str(bitrate)
    with av.open(str(dest), mode="w", format="mp4") as out:
        video = out.add_stream(
            "libx264",
            rate=fps,
            options={"preset": "ultrafast", "b": rate, "maxrate": rate, "bufsize": rate, "minrate": rate},
        )
        assert isinstance(video, av.VideoStream)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound: av.AudioStream | None = None
        if audio:
            stream = out.add_stream("aac", rate=48000)
            assert isinstance(stream, av.AudioStream)
            stream.layout = "stereo"
            sound = stream
        count = round(seconds * fps)
        for index in range(count):
            frame = frames[index % distinct_frames]
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            samples = round(seconds * 48000)
            for start in range(0, samples, 1024):
                n = min(1024, samples - start)
                chunk = av.AudioFrame(format="fltp", layout="stereo", samples=n)
                chunk.sample_rate = 48000
                wave = _tone(start, n)
                for plane in chunk.planes:
                    plane.update(wave)
                chunk.pts = start
                chunk.time_base = Fraction(1, 48000)
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))
    return dest


def _tone(start: int, n: int) -> bytes:
    import array

    values = array.array("f", (0.2 * math.sin(2 * math.pi * 440 * (start + i) / 48000) for i in range(n)))
    return values.tobytes()
