"""Clips and videos on disk: probe a member's clip, pick its reference frames and best window, cut
and encode video (PyAV), and stream a provider's result to a file with a size cap.

The modules: clips (what the rest of Castbot calls), scan (reading containers safely), encode
(writing H.264/AAC MP4), download (capped, hashing downloads).
"""

from bot.media.clips import (
    ClipInfo,
    ClipProblem,
    ClipRejected,
    best_window,
    extract_reference_frames,
    probe_clip,
    trim_clip,
    write_video,
)
from bot.media.download import DownloadTooLarge, download_capped, sha256_file, stream_to_file
from bot.media.encode import video_encoder

__all__ = [
    "ClipInfo",
    "ClipProblem",
    "ClipRejected",
    "DownloadTooLarge",
    "best_window",
    "download_capped",
    "extract_reference_frames",
    "probe_clip",
    "sha256_file",
    "stream_to_file",
    "trim_clip",
    "video_encoder",
    "write_video",
]
