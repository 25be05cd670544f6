"""The offline provider renders real MP4s, survives restarts and renders each job once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops, ImageDraw

from bot.providers import local as local_module
from bot.providers.base import (
    CharacterAsset,
    CharacterRef,
    GenerationRequest,
    JobSnapshot,
    JobStatus,
    MentionStyle,
    Orientation,
    Quality,
    Rejected,
    RejectReason,
)
from bot.providers.local import LocalProvider

TINY = (64, 36)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make_frame(path: Path, colour: tuple[int, int, int]) -> Path:
    img = Image.new("RGB", (160, 120), colour)
    ImageDraw.Draw(img).ellipse((40, 20, 120, 100), fill=(240, 200, 160))
    img.save(path, "JPEG")
    return path


def ref(tmp_path: Path, cid: int, name: str, colour=(200, 40, 40), frame: Path | None = None) -> CharacterRef:
    frame = frame or make_frame(tmp_path / f"{cid}.jpg", colour)
    asset = CharacterAsset(cid, name, "", tmp_path / f"{cid}.mp4", (frame,), 4.0)
    return CharacterRef(key=name.casefold(), asset=asset)


def request(prompt="a walk", seconds=2, orientation=Orientation.LANDSCAPE, characters=(), client_ref=""):
    return GenerationRequest(prompt, seconds, orientation, Quality.STANDARD, tuple(characters), client_ref)


def probe(path: Path) -> tuple[float, int, int, list[Image.Image]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_image() for f in container.decode(stream)]
        assert container.duration is not None
        return container.duration / av.time_base, stream.width, stream.height, frames


@pytest.fixture
def clock():
    return Clock()


async def finish(provider: LocalProvider, clock: Clock, external_id: str) -> JobSnapshot:
    clock.now += 1_000
    return (await provider.status([external_id]))[external_id]


async def test_submit_runs_then_renders_a_playable_mp4(tmp_path, clock):
    provider = LocalProvider(work_dir=tmp_path / "work", render_seconds=3.0, clock=clock)
    refs = [ref(tmp_path, 1, "Anna", (200, 40, 40)), ref(tmp_path, 2, "Bob", (40, 40, 200))]
    submitted = await provider.submit(request("**@anna** waves at @bob", 4, characters=refs))
    job_id = submitted.external_id
    assert submitted.snapshot.status is JobStatus.RUNNING

    stored = json.loads((tmp_path / "work" / job_id / "request.json").read_text())
    assert stored["created_at"] == clock.now and stored["seconds"] == 4
    assert [c["name"] for c in stored["characters"]] == ["Anna", "Bob"]

    clock.now += 1.5
    half = (await provider.status([job_id]))[job_id]
    assert half.status is JobStatus.RUNNING and half.progress == 50
    assert half.poll_after == pytest.approx(1.5)
    assert not (tmp_path / "work" / job_id / "video.mp4").exists()

    clock.now += 1.6
    done = (await provider.status([job_id]))[job_id]
    assert done.status is JobStatus.SUCCEEDED and done.progress == 100
    assert provider.actual_cost(request(), done) == 0

    result = await provider.download(done, tmp_path / "out" / "v.mp4", 10_000_000)
    assert result.size == (tmp_path / "out" / "v.mp4").stat().st_size > 0
    duration, width, height, frames = probe(result.path)
    assert duration == pytest.approx(4.0, abs=0.2)
    assert (width, height) == (320, 180)
    assert len(frames) == 4 * 8
    # the pictures move (Ken Burns), and the two characters' colours are side by side
    assert ImageChops.difference(frames[0], frames[-1]).getbbox() is not None
    left, right = frames[0].convert("RGB").getpixel((5, 60)), frames[0].convert("RGB").getpixel((315, 60))
    assert isinstance(left, tuple) and isinstance(right, tuple)
    assert left[0] > left[2] and right[2] > right[0]


async def test_portrait_and_seconds_fitted(tmp_path, clock):
    provider = LocalProvider(work_dir=tmp_path, render_seconds=0, clock=clock, size=TINY, fps=4)
    job = await provider.submit(request("tall", 3, Orientation.PORTRAIT))
    snap = await finish(provider, clock, job.external_id)
    await provider.download(snap, tmp_path / "p.mp4", 10**7)
    duration, width, height, _ = probe(tmp_path / "p.mp4")
    assert (width, height) == (36, 64)
    assert duration == pytest.approx(4.0, abs=0.3)  # 3 s is not offered: the next length up


async def test_survives_a_restart_and_ignores_unknown_ids(tmp_path, clock):
    first = LocalProvider(work_dir=tmp_path, render_seconds=5, clock=clock, size=TINY, fps=4)
    job = await first.submit(request(characters=[ref(tmp_path, 1, "Anna")]))
    clock.now += 2
    assert (await first.status([job.external_id]))[job.external_id].progress == 40

    restarted = LocalProvider(work_dir=tmp_path, render_seconds=5, clock=clock, size=TINY, fps=4)
    clock.now += 4
    bogus = ["loc_0000000000000000", "../../etc", "", job.external_id + "x"]
    states = await restarted.status([*bogus, job.external_id])
    assert list(states) == [job.external_id]
    assert states[job.external_id].status is JobStatus.SUCCEEDED


async def test_concurrent_status_calls_render_once(tmp_path, clock):
    provider = LocalProvider(work_dir=tmp_path, render_seconds=1, clock=clock, size=TINY, fps=4)
    job = await provider.submit(request("@anna", characters=[ref(tmp_path, 1, "Anna")]))
    clock.now += 2
    results = await asyncio.gather(*(provider.status([job.external_id, job.external_id]) for _ in range(6)))
    assert {r[job.external_id].status for r in results} == {JobStatus.SUCCEEDED}
    assert provider.renders_started == 1
    video = tmp_path / job.external_id / "video.mp4"
    inode = video.stat().st_ino
    await provider.status([job.external_id])
    assert provider.renders_started == 1 and video.stat().st_ino == inode


HOSTILE = [
    "@кот и @小明 танцуют под дождём",
    "\u202e@anna\u202c reversed \u200b\u200d\ufeff zero width",
    "@anna " + "слово " * 700,  # ~4000 characters
    "x" * 4000,  # one unbreakable word
    "null\x00 bytes \ud800 lone surrogate \U0010fffd private use",
    "Z\u0336\u0336\u0336\u0336a\u0489\u0489lgo 🎬🐈‍⬛ مرحبا שלום",
    "",
]


@pytest.mark.parametrize("prompt", HOSTILE)
async def test_hostile_prompts_render(tmp_path, clock, prompt):
    provider = LocalProvider(work_dir=tmp_path, render_seconds=0, clock=clock, size=TINY, fps=2)
    refs = [ref(tmp_path, 1, "Anna"), ref(tmp_path, 2, "кот"), ref(tmp_path, 3, "小明")]
    job = await provider.submit(request(prompt, characters=refs))
    snap = await finish(provider, clock, job.external_id)
    assert snap.status is JobStatus.SUCCEEDED
    _, width, height, frames = probe(tmp_path / job.external_id / "video.mp4")
    assert (width, height) == TINY and len(frames) == 4


async def test_missing_or_damaged_frames_render_a_placeholder(tmp_path, clock):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    provider = LocalProvider(work_dir=tmp_path, render_seconds=0, clock=clock, size=TINY, fps=2)
    refs = [ref(tmp_path, 1, "Anna", frame=tmp_path / "gone.jpg"), ref(tmp_path, 2, "Bob", frame=broken)]
    job = await provider.submit(request("@anna @bob", characters=refs))
    assert (await finish(provider, clock, job.external_id)).status is JobStatus.SUCCEEDED


async def test_a_failed_render_is_reported_not_retried(tmp_path, clock):
    provider = LocalProvider(work_dir=tmp_path, render_seconds=0, clock=clock, size=TINY, fps=2)
    job = await provider.submit(request())
    (tmp_path / job.external_id / "video.mp4").mkdir()  # the final rename cannot succeed
    snap = await finish(provider, clock, job.external_id)
    assert snap.status is JobStatus.FAILED and snap.error is not None
    assert snap.error.provider == "local"
    again = await provider.status([job.external_id])
    assert again[job.external_id].status is JobStatus.FAILED and provider.renders_started == 1


async def test_damaged_job_file_is_a_failure(tmp_path, clock):
    provider = LocalProvider(work_dir=tmp_path, render_seconds=0, clock=clock, size=TINY)
    job = await provider.submit(request())
    (tmp_path / job.external_id / "request.json").write_text("{not json")
    snap = (await provider.status([job.external_id]))[job.external_id]
    assert snap.status is JobStatus.FAILED and snap.error is not None and snap.error.code == "corrupt"


async def test_download_respects_the_byte_cap(tmp_path, clock):
    provider = LocalProvider(work_dir=tmp_path / "w", render_seconds=0, clock=clock, size=TINY, fps=2)
    job = await provider.submit(request())
    snap = await finish(provider, clock, job.external_id)
    size = (tmp_path / "w" / job.external_id / "video.mp4").stat().st_size
    with pytest.raises(Rejected) as info:
        await provider.download(snap, tmp_path / "d" / "v.mp4", size - 1)
    assert info.value.reason is RejectReason.INVALID
    assert not (tmp_path / "d").exists() or list((tmp_path / "d").iterdir()) == []  # no partial file
    assert (await provider.download(snap, tmp_path / "d" / "v.mp4", size)).size == size


async def test_download_before_render_and_of_unknown_ids_is_rejected(tmp_path, clock):
    provider = LocalProvider(work_dir=tmp_path, render_seconds=60, clock=clock, size=TINY)
    job = await provider.submit(request())
    for external_id in (job.external_id, "../secret", "loc_ffffffffffffffff"):
        with pytest.raises(Rejected):
            await provider.download(JobSnapshot(external_id, JobStatus.SUCCEEDED), tmp_path / "x.mp4", 10**6)


async def test_interface_facts(tmp_path, clock):
    provider = LocalProvider(work_dir=tmp_path / "never", clock=clock)
    caps = provider.capabilities
    assert provider.name == "local" and not caps.paid and not caps.needs_handle and caps.batch_status
    assert caps.seconds == (2, 4, 6, 8, 10, 12) and caps.max_characters == 4
    assert caps.mention_style is MentionStyle.CAPTION
    assert set(caps.orientations) == set(Orientation) and set(caps.qualities) == set(Quality)
    assert provider.estimate(request(seconds=12)) == 0

    handle = await provider.register_character(ref(tmp_path, 7, "Кот").asset)
    assert (handle.provider, handle.external_id, handle.mention_token) == ("local", "7", "Кот")
    assert not (tmp_path / "never").exists()  # registering does no I/O

    five = [ref(tmp_path, i, f"c{i}x") for i in range(5)]
    with pytest.raises(Rejected) as info:
        await provider.submit(request(characters=five))
    assert info.value.reason is RejectReason.UNSUPPORTED


async def test_reconcile_finds_the_job_by_client_ref(tmp_path, clock):
    provider = LocalProvider(work_dir=tmp_path, clock=clock, size=TINY)
    await provider.submit(request(client_ref="job-1"))
    clock.now += 1
    wanted = await provider.submit(request(client_ref="job-2"))
    assert await provider.reconcile(request(client_ref="job-2")) == wanted.external_id
    assert await provider.reconcile(request(client_ref="job-3")) is None
    assert await provider.reconcile(request()) is None


@settings(max_examples=60, deadline=None)
@given(prompt=st.text(max_size=300), name=st.text(min_size=1, max_size=40))
def test_the_caption_layer_draws_any_text(prompt, name):
    cast = local_module._Cast(key=name.casefold(), name=name, frame=None)
    job = local_module._Job("loc_0", 0.0, prompt, 2, "landscape", "standard", 64, 36, 2, "", (cast,))
    layer = local_module._overlay(job, local_module._tiles(1, 64, 36))
    assert layer.size == (64, 36)
