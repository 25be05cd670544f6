"""bot.media on real clips rendered by tests/fakes/clips.py, and on the junk members upload."""

from __future__ import annotations

import gzip
import hashlib
import random
from pathlib import Path

import av
import httpx
import pytest
from aiohttp import web
from PIL import Image, ImageStat

from bot import media
from bot.media import ClipProblem, ClipRejected
from discord_sandbox import clips

SKIN = (235, 190, 150)  # the face colour in clips.render_frame


def face_progress(image: Image.Image) -> float:
    """Where the face is, 0 (left edge, t=0) .. 1 (right edge, t=end): the clip's own clock."""
    rgb = image.convert("RGB")
    w, h = rgb.size
    raw = rgb.tobytes()
    xs = [
        (i // 3) % w
        for i in range(0, len(raw), 3)
        if abs(raw[i] - SKIN[0]) < 25 and abs(raw[i + 1] - SKIN[1]) < 25 and abs(raw[i + 2] - SKIN[2]) < 25
    ]
    assert xs, "no face found in the frame"
    radius = max(6, min(w, h) // 5)
    return (sum(xs) / len(xs) - radius - 2) / (w - 2 * radius - 4)


def left_right_luma(image: Image.Image) -> tuple[float, float]:
    gray = image.convert("L")
    w, h = gray.size
    left = ImageStat.Stat(gray.crop((0, 0, w // 5, h))).mean[0]
    right = ImageStat.Stat(gray.crop((w - w // 5, 0, w, h))).mean[0]
    return left, right


def need(codec: str) -> None:
    if codec not in clips.available_codecs():
        pytest.skip(f"this FFmpeg build cannot encode {codec}")


@pytest.fixture(scope="module")
def clipdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="module")
def basic(clipdir: Path) -> Path:
    """3 s, 320x240, h264/mp4, middle fifth (1.2-1.8 s) blurred."""
    return clips.make_clip(clipdir / "basic.mp4")


@pytest.fixture(scope="module")
def rotated(clipdir: Path) -> Path:
    """Stored landscape 320x240 with a 90° display rotation, like a phone's portrait video."""
    return clips.make_clip(clipdir / "rotated.mp4", rotate=90, blur=())


# --- probe: what is accepted -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "container", "audio", "expected_container"),
    [
        ("h264", "mp4", False, "mp4"),
        ("h264", "mp4", True, "mp4"),
        ("mpeg4", "mp4", False, "mp4"),
        ("h264", "mov", True, "mov"),
        ("h264", "mkv", False, "mkv"),
        ("mpeg4", "mkv", True, "mkv"),
        ("vp9", "webm", True, "webm"),
        ("vp8", "webm", False, "webm"),
        ("hevc", "mp4", False, "mp4"),
        ("av1", "mp4", False, "mp4"),
        ("mpeg4", "avi", False, "avi"),
    ],
)
def test_probe_reads_each_codec_and_container(tmp_path, codec, container, audio, expected_container):
    need(codec)
    path = clips.make_clip(
        tmp_path / f"clip.{container}", seconds=2.5, size=(160, 120), codec=codec, container=container, audio=audio
    )
    info = media.probe_clip(path)
    assert info.container == expected_container
    assert info.video_codec == codec
    assert info.duration == pytest.approx(2.5, abs=0.06)
    assert (info.width, info.height) == (160, 120)
    assert info.fps == pytest.approx(24, abs=0.01)
    assert info.has_audio is audio
    assert info.size_bytes == path.stat().st_size


def test_probe_reports_the_displayed_size_of_a_rotated_clip(rotated):
    info = media.probe_clip(rotated)
    assert (info.width, info.height) == (240, 320)


def test_probe_accepts_the_bounds_exactly(tmp_path):
    path = clips.make_clip(tmp_path / "two.mp4", seconds=2.0, size=(64, 64))
    info = media.probe_clip(path)
    assert info.duration == pytest.approx(2.0)
    assert (info.width, info.height) == (64, 64)


# --- probe: what is refused, and why -----------------------------------------------------------


def _rejected(path: Path, **limits) -> ClipRejected:
    with pytest.raises(ClipRejected) as caught:
        media.probe_clip(path, **limits)
    exc = caught.value
    assert str(path.parent) not in exc.detail, "details are shown to members: no server paths"
    assert str(exc) == exc.detail
    return exc


def test_too_short_says_how_long_and_what_is_needed(tmp_path):
    exc = _rejected(clips.make_clip(tmp_path / "short.mp4", seconds=1.2, size=(96, 96)))
    assert exc.problem is ClipProblem.TOO_SHORT
    assert "1.2 s" in exc.detail
    assert "2–20 s" in exc.detail


def test_too_long(tmp_path):
    exc = _rejected(clips.make_clip(tmp_path / "long.mp4", seconds=21, size=(64, 64), fps=4, blur=()))
    assert exc.problem is ClipProblem.TOO_LONG
    assert "21.0 s" in exc.detail


def test_limits_are_parameters(basic):
    exc = _rejected(basic, max_seconds=2.5)
    assert exc.problem is ClipProblem.TOO_LONG
    assert "2–2.5 s" in exc.detail
    exc = _rejected(basic, min_seconds=3.5, max_seconds=4)
    assert exc.problem is ClipProblem.TOO_SHORT


def test_too_many_bytes_is_refused_before_opening(basic):
    exc = _rejected(basic, max_bytes=1000)
    assert exc.problem is ClipProblem.TOO_LARGE
    assert "MB" in exc.detail


def test_huge_picture_is_refused_before_decoding(tmp_path):
    path = clips.make_clip(tmp_path / "wide.mp4", seconds=2.5, size=(4112, 64), fps=4, blur=())
    exc = _rejected(path)
    assert exc.problem is ClipProblem.TOO_LARGE
    assert "4112×64" in exc.detail


def test_tiny_picture_is_too_small(tmp_path):
    exc = _rejected(clips.make_clip(tmp_path / "tiny.mp4", size=(48, 48)))
    assert exc.problem is ClipProblem.TOO_SMALL
    assert "48×48" in exc.detail


@pytest.mark.parametrize(
    ("make", "word"),
    [
        (clips.make_png_as_mp4, "PNG"),
        (lambda p: clips.make_image_as_mp4(p, image_format="JPEG"), "JPEG"),
        (lambda p: clips.make_image_as_mp4(p, image_format="WEBP"), "WebP"),
        (lambda p: clips.make_image_as_mp4(p, image_format="GIF"), "still picture"),
        (clips.make_zip_as_mp4, "ZIP"),
        (clips.make_audio_only, "no picture"),
    ],
    ids=["png", "jpeg", "webp", "gif", "zip", "audio-only"],
)
def test_not_a_video(tmp_path, make, word):
    exc = _rejected(make(tmp_path / "upload.mp4"))
    assert exc.problem is ClipProblem.NOT_VIDEO
    assert word in exc.detail


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_bytes(tmp_path, seed):
    exc = _rejected(clips.make_garbage(tmp_path / "noise.mp4", seed=seed))
    assert exc.problem in (ClipProblem.NOT_VIDEO, ClipProblem.UNREADABLE)
    assert exc.detail


def test_truncated_mp4_without_its_index_is_unreadable(tmp_path):
    exc = _rejected(clips.make_truncated(tmp_path / "cut.mp4"))
    assert exc.problem is ClipProblem.UNREADABLE
    assert "incomplete" in exc.detail


def test_truncated_mp4_with_its_index_first_is_unreadable(tmp_path):
    # The header promises 3 s; only half the media data is there.
    path = clips.make_truncated(tmp_path / "cut.mp4", keep_moov=True)
    with av.open(str(path)) as container:  # FFmpeg alone opens it happily
        assert container.duration == 3_000_000
    exc = _rejected(path)
    assert exc.problem is ClipProblem.UNREADABLE


def test_mp4_that_just_ends_early_is_unreadable(tmp_path):
    path = clips.make_truncated(tmp_path / "cut.mp4", keep_moov=True, fraction=0.6, clean_cut=True)
    exc = _rejected(path)
    assert exc.problem is ClipProblem.UNREADABLE
    assert "of 3.0 s" in exc.detail


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    assert _rejected(path).problem is ClipProblem.UNREADABLE


def test_a_concat_script_cannot_make_ffmpeg_read_other_files(tmp_path, basic):
    (tmp_path / "secret.mp4").write_bytes(basic.read_bytes())
    script = tmp_path / "upload.mp4"
    script.write_text("ffconcat version 1.0\nfile 'secret.mp4'\n")
    with av.open(str(script)) as container:  # unguarded FFmpeg follows the script
        assert container.streams.video
    exc = _rejected(script)
    assert exc.problem is ClipProblem.NOT_VIDEO


# --- reference frames --------------------------------------------------------------------------


def test_reference_frames_are_sharp_jpegs_spread_over_the_clip(basic, tmp_path):
    paths = media.extract_reference_frames(basic, tmp_path / "refs")
    assert [p.name for p in paths] == ["ref_0.jpg", "ref_1.jpg", "ref_2.jpg", "ref_3.jpg"]
    images = []
    for p in paths:
        with Image.open(p) as img:
            assert img.format == "JPEG"
            assert img.size == (320, 240)
            images.append(img.convert("RGB"))
    assert not clips.is_blurred_frame(images[0]), "the frontal frame must not be a blurred one"
    assert not any(clips.is_blurred_frame(img) for img in images), "sharp frames exist everywhere else"
    where = [face_progress(img) for img in images]
    assert abs(where[0] - 0.5) < 0.25, f"frontal should come from the middle part, got {where[0]:.2f}"
    others = where[1:]
    assert others == sorted(others)
    assert max(others) - min(others) > 0.5, f"the other frames should span the clip: {others}"


def test_blurred_stretches_are_skipped_when_sharp_frames_exist(tmp_path):
    path = clips.make_clip(tmp_path / "soft_start.mp4", blur=[(0, 1.0)])
    paths = media.extract_reference_frames(path, tmp_path / "refs")
    assert len(paths) == 4
    for p in paths:
        with Image.open(p) as img:
            assert not clips.is_blurred_frame(img), p.name


def test_frontal_is_the_middle_when_everything_is_sharp(tmp_path):
    path = clips.make_clip(tmp_path / "sharp.mp4", blur=())
    frontal = media.extract_reference_frames(path, tmp_path / "refs")[0]
    with Image.open(frontal) as img:
        assert face_progress(img) == pytest.approx(0.5, abs=0.15)


def test_reference_frames_are_deterministic_and_stale_ones_removed(basic, tmp_path):
    out = tmp_path / "refs"
    first = [p.read_bytes() for p in media.extract_reference_frames(basic, out)]
    assert [p.read_bytes() for p in media.extract_reference_frames(basic, out)] == first
    fewer = media.extract_reference_frames(basic, out, count=2)
    assert fewer[0].read_bytes() == first[0], "the frontal frame does not depend on count"
    assert sorted(p.name for p in out.iterdir()) == ["ref_0.jpg", "ref_1.jpg"]


def test_reference_frames_fit_max_side(basic, tmp_path):
    for p in media.extract_reference_frames(basic, tmp_path / "refs", max_side=160):
        with Image.open(p) as img:
            assert img.size == (160, 120)


def test_reference_frames_are_upright_for_rotated_clips(rotated, tmp_path):
    frontal = media.extract_reference_frames(rotated, tmp_path / "refs", count=1)
    assert len(frontal) == 1
    with Image.open(frontal[0]) as img:
        assert img.size == (240, 320)
        left, right = left_right_luma(img)
    # The scene's dark top edge ends up on the left after a 90° counter-clockwise turn.
    assert left + 30 < right


def test_a_fully_blurred_clip_still_gives_two_frames(tmp_path):
    path = clips.make_clip(tmp_path / "soft.mp4", blur=[(0, 10)])
    paths = media.extract_reference_frames(path, tmp_path / "refs")
    assert len(paths) >= 2


def test_reference_frames_of_garbage_are_refused(tmp_path):
    with pytest.raises(ClipRejected):
        media.extract_reference_frames(clips.make_garbage(tmp_path / "x.mp4"), tmp_path / "refs")
    assert not (tmp_path / "refs").exists() or not any((tmp_path / "refs").iterdir())


# --- best window -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blurred_start(clipdir: Path) -> Path:
    return clips.make_clip(clipdir / "blur_start.mp4", seconds=4.0, blur=[(0, 2.0)])


@pytest.fixture(scope="module")
def blurred_end(clipdir: Path) -> Path:
    return clips.make_clip(clipdir / "blur_end.mp4", seconds=4.0, blur=[(2.0, 4.0)])


def test_best_window_avoids_a_blurred_start(blurred_start):
    start = media.best_window(blurred_start, 1.5)
    assert 2.0 - 0.1 <= start <= 4.0 - 1.5


def test_best_window_avoids_a_blurred_end(blurred_end):
    start = media.best_window(blurred_end, 1.5)
    assert 0.0 <= start <= 2.0 + 0.1 - 1.5


@pytest.mark.parametrize("length", [0.5, 1.0, 2.0, 2.9])
def test_best_window_stays_inside_the_clip(basic, length):
    start = media.best_window(basic, length)
    assert 0.0 <= start <= 3.0 - length + 1e-3


def test_best_window_of_a_clip_shorter_than_the_window_is_zero(basic):
    assert media.best_window(basic, 3.0) == 0.0
    assert media.best_window(basic, 10.0) == 0.0


def test_best_window_rejects_nonsense(basic):
    with pytest.raises(ValueError, match="positive"):
        media.best_window(basic, 0)


# --- trim --------------------------------------------------------------------------------------


def _decode_all(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.pix_fmt == "yuv420p"
        return list(container.decode(stream))


def test_trim_cuts_the_window_into_a_playable_h264_mp4(basic, tmp_path):
    out = media.trim_clip(basic, tmp_path / "cut.mp4", 0.5, 1.5)
    assert out == tmp_path / "cut.mp4"
    info = media.probe_clip(out, min_seconds=1)
    assert (info.container, info.video_codec) == ("mp4", "h264")
    assert info.duration == pytest.approx(1.5, abs=0.05)
    assert (info.width, info.height) == (320, 240)
    frames = _decode_all(out)
    assert len(frames) == 36  # 1.5 s at 24 fps, every one decodable
    # The first frame is the source at 0.5 s: the face has moved 1/6 of the way across.
    assert face_progress(frames[0].to_image()) == pytest.approx(0.5 / 3, abs=0.03)
    assert [p.name for p in tmp_path.iterdir()] == ["cut.mp4"], "no temporary files left"


def test_trim_with_a_minimum_rate_repeats_frames_of_a_slow_clip(clipdir, tmp_path):
    slow = clips.make_clip(clipdir / "slow.mp4", seconds=3.0, fps=12)
    out = media.trim_clip(slow, tmp_path / "cut.mp4", 0.5, 2.0, min_fps=16)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 16
    frames = _decode_all(out)
    assert len(frames) == pytest.approx(32, abs=1)  # 2 s at a constant 16 fps
    assert media.probe_clip(out, min_seconds=1).duration == pytest.approx(2.0, abs=0.1)
    # a clip already faster than the minimum keeps its own rate
    same = media.trim_clip(slow, tmp_path / "same.mp4", 0.5, 2.0, min_fps=8)
    assert len(_decode_all(same)) == pytest.approx(24, abs=1)


def test_trim_keeps_audio_as_aac(tmp_path):
    need("vp9")
    src = clips.make_clip(tmp_path / "talk.webm", codec="vp9", container="webm", audio=True, size=(160, 120))
    out = media.trim_clip(src, tmp_path / "cut.mp4", 1.0, 1.5)
    info = media.probe_clip(out, min_seconds=1)
    assert info.has_audio
    assert info.duration == pytest.approx(1.5, abs=0.05)
    with av.open(str(out)) as container:
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac"
        decoded = sum(f.samples for f in container.decode(audio)) / audio.codec_context.sample_rate
    assert decoded == pytest.approx(1.5, abs=0.1)


def test_trim_turns_rotated_clips_upright_and_scales(rotated, tmp_path):
    out = media.trim_clip(rotated, tmp_path / "cut.mp4", 0.0, 2.0, max_side=200)
    info = media.probe_clip(out)
    assert (info.width, info.height) == (150, 200)
    first = _decode_all(out)[0]
    assert first.rotation == 0, "pixels are turned; no display matrix left for players to get wrong"
    left, right = left_right_luma(first.to_image())
    assert left + 30 < right


def test_trim_outside_the_clip_fails_cleanly(basic, tmp_path):
    with pytest.raises(ClipRejected) as caught:
        media.trim_clip(basic, tmp_path / "cut.mp4", 10.0, 2.0)
    assert caught.value.problem is ClipProblem.UNREADABLE
    assert list(tmp_path.iterdir()) == []


def test_trim_of_garbage_fails_cleanly(tmp_path):
    src = clips.make_garbage(tmp_path / "noise.mp4")
    with pytest.raises(ClipRejected):
        media.trim_clip(src, tmp_path / "cut.mp4", 0.0, 2.0)
    assert [p.name for p in tmp_path.iterdir()] == ["noise.mp4"]


# --- write_video, sha256 -----------------------------------------------------------------------


def test_write_video_encodes_pictures_even_of_odd_size(tmp_path):
    pictures = (clips.render_frame(i / 24, 2.0, (321, 241), blurred=False) for i in range(48))
    out = media.write_video(pictures, tmp_path / "render.mp4", fps=24)
    info = media.probe_clip(out)
    assert (info.video_codec, info.width, info.height) == ("h264", 320, 240)
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert len(_decode_all(out)) == 48


def test_write_video_needs_frames(tmp_path):
    with pytest.raises(ValueError, match="at least one frame"):
        media.write_video([], tmp_path / "none.mp4", fps=24)
    assert list(tmp_path.iterdir()) == []


def test_h264_encoder_is_available():
    assert media.video_encoder("h264") in ("libx264", "libopenh264", "mpeg4")


def test_sha256_file(basic):
    assert media.sha256_file(basic) == hashlib.sha256(basic.read_bytes()).hexdigest()


# --- download_capped against a real loopback server -------------------------------------------

BODY = random.Random(7).randbytes(300_000)


@pytest.fixture
async def server():
    async def fixed(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="video/mp4")

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(BODY), 16_384):
            await resp.write(BODY[i : i + 16_384])
        await resp.write_eof()
        return resp

    async def bomb(request: web.Request) -> web.Response:
        packed = gzip.compress(bytes(2_000_000))
        return web.Response(body=packed, headers={"Content-Encoding": "gzip", "Content-Type": "video/mp4"})

    async def missing(request: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get("/fixed", fixed)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/bomb", bomb)
    app.router.add_get("/missing", missing)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def client():
    async with httpx.AsyncClient(trust_env=False, timeout=10) as c:
        yield c


@pytest.mark.parametrize("route", ["/fixed", "/chunked"])
async def test_download_within_cap(server, client, tmp_path, route):
    dest = tmp_path / "dl" / "clip.mp4"
    size, digest = await media.download_capped(client, server + route, dest, max_bytes=len(BODY), chunk=10_000)
    assert size == len(BODY)
    assert digest == hashlib.sha256(BODY).hexdigest()
    assert dest.read_bytes() == BODY
    assert [p.name for p in dest.parent.iterdir()] == ["clip.mp4"]


async def test_download_over_cap_by_content_length(server, client, tmp_path):
    dest = tmp_path / "clip.mp4"
    with pytest.raises(media.DownloadTooLarge) as caught:
        await media.download_capped(client, server + "/fixed", dest, max_bytes=100_000)
    assert caught.value.declared is True
    assert "127.0.0.1" not in str(caught.value), "no URL in the message: URLs can carry tokens"
    assert list(tmp_path.iterdir()) == []


async def test_download_over_cap_while_streaming(server, client, tmp_path):
    dest = tmp_path / "clip.mp4"
    with pytest.raises(media.DownloadTooLarge) as caught:
        await media.download_capped(client, server + "/chunked", dest, max_bytes=100_000)
    assert caught.value.declared is False
    assert list(tmp_path.iterdir()) == []


async def test_download_counts_decompressed_bytes(server, client, tmp_path):
    dest = tmp_path / "clip.mp4"
    with pytest.raises(media.DownloadTooLarge):
        await media.download_capped(client, server + "/bomb", dest, max_bytes=1_000_000)
    assert list(tmp_path.iterdir()) == []


async def test_download_failure_keeps_the_previous_file(server, client, tmp_path):
    dest = tmp_path / "clip.mp4"
    dest.write_bytes(b"previous")
    with pytest.raises(httpx.HTTPStatusError):
        await media.download_capped(client, server + "/missing", dest, max_bytes=1_000_000)
    assert dest.read_bytes() == b"previous"
    assert list(tmp_path.iterdir()) == [dest]
