"""Contract tests of the fal adapter against the loopback fal simulator (real HTTP, real files),
plus fal's own Python client run against the simulator to check the simulator itself."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from PIL import Image
from pydantic import SecretStr

from bot.providers.base import (
    Ambiguous,
    AuthFailed,
    CharacterAsset,
    CharacterHandle,
    CharacterRef,
    JobSnapshot,
    JobStatus,
    NotSent,
    Orientation,
    ProviderError,
    Quality,
    QuotaExhausted,
    RateLimited,
    Rejected,
    RejectReason,
    StatusIncomplete,
    Unavailable,
)
from bot.providers.fal import MEDIA_RETENTION_SECONDS, FalProvider
from bot.providers.fal_models import MODELS
from bot.providers.pricing import PriceBook
from discord_sandbox.clips import make_clip
from tests.conftest import Simulators
from tests.fakes import fal_sim
from tests.fakes.fal_sim import FalSim
from tests.helpers import request

KEY = "fal-key-sim-SECRET-4be1c07d:9a2f6e3b51c8"
NOW = 1_800_000_000.0
WAN = "wan/v2.6/reference-to-video"
KLING_PRO = "fal-ai/kling-video/o3/pro/reference-to-video"


@pytest.fixture
async def sim(sims: Simulators) -> FalSim:
    return await sims.start(FalSim(api_key=KEY, job_seconds=0.3, hang_seconds=5.0))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("fal") / "source.mp4", seconds=6.0, size=(320, 240), fps=24)


def make_provider(client, sim, *, model=WAN, read=2.0, key=KEY, prices=None, **kw) -> FalProvider:
    return FalProvider(
        client,
        api_key=SecretStr(key),
        queue_url=sim.queue_url,
        rest_url=sim.rest_url,
        cdn_url=sim.cdn_url,
        prices=prices or PriceBook(),
        model=model,
        timeout=httpx.Timeout(2.0, read=read),
        clock=lambda: NOW,
        **kw,
    )


@pytest.fixture
def fal(client, sim) -> FalProvider:
    return make_provider(client, sim)


def asset(tmp_path: Path, clip: Path, name: str, character_id: int = 1, frames: int = 3) -> CharacterAsset:
    paths = []
    for i in range(frames):
        path = tmp_path / f"{name}-{i}.jpg"
        Image.new("RGB", (360, 640), (40 * i, 90, 200 - 30 * i)).save(path, format="JPEG")
        paths.append(path)
    return CharacterAsset(
        character_id=character_id,
        name=name,
        description=f"{name}, a test character",
        clip_path=clip,
        frame_paths=tuple(paths),
        clip_duration=6.0,
        best_window_start=1.0,
    )


async def registered(fal: FalProvider, tmp_path: Path, clip: Path, *names: str) -> list[CharacterRef]:
    refs = []
    for index, name in enumerate(names, start=1):
        character = asset(tmp_path, clip, name, character_id=index)
        refs.append(CharacterRef(name.casefold(), character, await fal.register_character(character)))
    return refs


async def wait_terminal(fal: FalProvider, external_id: str, timeout: float = 5.0) -> tuple[JobSnapshot, list[str]]:
    """Poll until the job ends; returns the last snapshot and every raw status seen."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        snap = (await fal.status([external_id]))[external_id]
        seen.append(snap.status.value)
        if snap.status.terminal:
            return snap, seen
        if time.monotonic() > deadline:
            raise AssertionError(f"not terminal in {timeout}s: {snap}")
        await asyncio.sleep(0.03)


def job_of(sim: FalSim, external_id: str) -> fal_sim.SimJob:
    return sim.jobs[external_id.split(" ")[0]]


def media_of(ref: CharacterRef) -> dict[str, Any]:
    assert ref.handle is not None
    media: dict[str, Any] = json.loads(ref.handle.external_id)
    return media


# --- characters -----------------------------------------------------------------------------------


async def test_register_uploads_frames_and_clip_window_once(fal, sim, tmp_path, clip):
    mira = asset(tmp_path, clip, "Mira", character_id=7, frames=5)
    handle = await fal.register_character(mira)

    assert handle.provider == "fal" and handle.mention_token == ""
    assert handle.expires_at == NOW + MEDIA_RETENTION_SECONDS >= NOW + 6 * 24 * 3600
    media = json.loads(handle.external_id)
    assert set(media) == {"frontal", "frames", "clip"} and len(media["frames"]) == 3  # frontal + 3, 1 left out
    assert sim.uploads[media["frontal"]].data == mira.frame_paths[0].read_bytes()
    assert [sim.uploads[u].data for u in media["frames"]] == [p.read_bytes() for p in mira.frame_paths[1:4]]
    clip_upload = sim.uploads[media["clip"]]
    assert clip_upload.content_type == "video/mp4"
    with av.open(io.BytesIO(clip_upload.data), mode="r") as container:
        frames = len(list(container.decode(video=0)))
    assert 2.0 <= frames / 24 <= 5.0  # a window every model takes, cut from the 6 s clip
    assert len(sim.uploads) == 5

    (token_call,) = sim.recorded("rest", "POST", "/storage/auth/token")
    assert token_call.headers["Authorization"] == f"Key {KEY}"
    assert token_call.query == {"storage_type": "fal-cdn-v3"}
    uploads = sim.recorded("cdn", "POST", "/files/upload")
    assert len(uploads) == 5
    for upload in uploads:
        assert upload.headers["Authorization"].startswith("Bearer ") and KEY not in str(upload.headers)
        assert upload.headers["X-Fal-File-Name"].startswith("character-7-")


async def test_cdn_token_is_reused_then_refreshed_when_refused(fal, sim, tmp_path, clip):
    await fal.register_character(asset(tmp_path, clip, "Mira"))
    await fal.register_character(asset(tmp_path, clip, "Bo", character_id=2))
    assert len(sim.recorded("rest")) == 1  # one storage token for both characters
    sim.tokens.clear()  # fal forgot the token early
    handle = await fal.register_character(asset(tmp_path, clip, "Cy", character_id=3))
    assert len(sim.recorded("rest")) == 2 and json.loads(handle.external_id)["clip"] in sim.uploads


async def test_short_clip_or_no_frame_is_refused_before_any_upload(fal, sim, tmp_path, clip):
    short = asset(tmp_path, clip, "Mira")
    for bad in (
        CharacterAsset(1, "Mira", "", clip, short.frame_paths, clip_duration=1.5),
        CharacterAsset(1, "Mira", "", clip, (), clip_duration=6.0),
    ):
        with pytest.raises(Rejected) as info:
            await fal.register_character(bad)
        assert info.value.reason is RejectReason.UNSUPPORTED
    assert not sim.requests


# --- the body each model receives -----------------------------------------------------------------

# Written from the model pages, independently of the adapter's table: (refs field, what the first
# character becomes, prompt sent for "@Mira waves", duration on the wire for 5 s, extra fields).
EXPECTED: dict[str, tuple[str, str, str, Any, dict[str, Any]]] = {
    WAN: ("video_urls", "clip", "@Video1 waves", "5", {"resolution": "720p"}),
    "fal-ai/kling-video/o1/reference-to-video": ("elements", "element", "@Element1 waves", "5", {}),
    "fal-ai/kling-video/o3/standard/reference-to-video": (
        "elements",
        "element",
        "@Element1 waves",
        "5",
        {"generate_audio": False},
    ),
    KLING_PRO: ("elements", "element", "@Element1 waves", "5", {"generate_audio": False}),
    "bytedance/seedance-2.0/reference-to-video": (
        "video_urls",
        "clip",
        "@Video1 waves",
        "5",
        {"resolution": "720p", "generate_audio": False},
    ),
    "fal-ai/vidu/q3/reference-to-video/mix": (
        "reference_image_urls",
        "frontal",
        "Mira waves\n\nReference image 1 shows Mira.",
        5,
        {"resolution": "720p"},
    ),
    "fal-ai/veo3.1/reference-to-video": (
        "image_urls",
        "frontal",
        "Mira waves\n\nReference image 1 shows Mira.",
        "8s",
        {"resolution": "720p", "generate_audio": False},
    ),
    "google/gemini-omni-flash/reference-to-video": ("image_urls", "frontal", "<IMAGE_REF_0> waves", 5, {}),
}


def test_every_table_model_has_a_contract_case():
    assert set(EXPECTED) == set(MODELS) == set(fal_sim.SIM_MODELS)


@pytest.mark.parametrize("endpoint_id", sorted(EXPECTED))
async def test_submit_body_per_model_is_accepted_by_the_model(client, sim, tmp_path, clip, endpoint_id):
    fal = make_provider(client, sim, model=endpoint_id)
    (mira,) = await registered(fal, tmp_path, clip, "Mira")
    media = media_of(mira)
    job = await fal.submit(request("@Mira waves", [mira]))

    (submit,) = sim.submits(endpoint_id)
    field, kind, prompt, duration, extra = EXPECTED[endpoint_id]
    element = {"frontal_image_url": media["frontal"], "reference_image_urls": media["frames"]}
    first = element if kind == "element" else media[kind]
    assert submit.body == {"prompt": prompt, field: [first], "duration": duration, "aspect_ratio": "9:16", **extra}
    assert type(submit.body["duration"]) is type(duration)
    assert submit.headers["Authorization"] == f"Key {KEY}"

    snap, _ = await wait_terminal(fal, job.external_id)
    assert job_of(sim, job.external_id).errors == []  # the simulated model took every field
    assert snap.status is JobStatus.SUCCEEDED and snap.download_url


async def test_two_characters_tokens_and_stray_references(client, sim, tmp_path, clip):
    fal = make_provider(client, sim, model="fal-ai/kling-video/o3/standard/reference-to-video")
    mira, bo = await registered(fal, tmp_path, clip, "Mira", "Bo")
    prompt = "@Mira waves at @bo, then @mira smiles at @Element7 and @nobody <IMAGE_REF_3>"
    job = await fal.submit(request(prompt, [mira, bo], orientation=Orientation.LANDSCAPE, seconds=12))
    (submit,) = sim.submits()
    assert (
        submit.body["prompt"]
        == "@Element1 waves at @Element2, then @Element1 smiles at Element7 and nobody IMAGE_REF_3"
    )
    assert [e["frontal_image_url"] for e in submit.body["elements"]] == [media_of(r)["frontal"] for r in (mira, bo)]
    assert (submit.body["duration"], submit.body["aspect_ratio"]) == ("12", "16:9")
    snap, _ = await wait_terminal(fal, job.external_id)
    assert snap.status is JobStatus.SUCCEEDED


async def test_models_without_tokens_name_the_characters_in_words(client, sim, tmp_path, clip):
    fal = make_provider(client, sim, model="fal-ai/veo3.1/reference-to-video")
    mira, bo = await registered(fal, tmp_path, clip, "Mira", "Bo")
    await fal.submit(request("@Mira and @Bo dance", [mira, bo], orientation=Orientation.LANDSCAPE))
    (submit,) = sim.submits()
    assert submit.body["prompt"] == ("Mira and Bo dance\n\nReference image 1 shows Mira. Reference image 2 shows Bo.")
    assert submit.body["image_urls"] == [media_of(mira)["frontal"], media_of(bo)["frontal"]]


async def test_too_many_or_too_few_characters_are_refused_before_sending(client, sim, tmp_path, clip):
    fal = make_provider(client, sim, pro_model=KLING_PRO)
    assert fal.capabilities.max_characters == 3  # Wan's limit, the smaller of the two models
    refs = await registered(fal, tmp_path, clip, "Ann", "Bo", "Cy", "Di")
    before = len(sim.requests)
    with pytest.raises(Rejected) as info:
        await fal.submit(request("@Ann @Bo @Cy @Di", refs))
    assert info.value.reason is RejectReason.INVALID and "at most 3" in info.value.message
    with pytest.raises(Rejected) as info:
        await fal.submit(request("no one at all"))  # Wan needs a reference video
    assert info.value.reason is RejectReason.UNSUPPORTED
    unregistered = CharacterRef("ann", refs[0].asset, CharacterHandle("kling", "123", ""))
    with pytest.raises(Rejected):
        await fal.submit(request("@Ann", [unregistered]))
    assert len(sim.requests) == before


# --- the queue ------------------------------------------------------------------------------------


async def test_queue_progress_completed_download_through_the_returned_urls(client, sim, tmp_path, clip):
    fal = make_provider(client, sim, pro_model=KLING_PRO)
    (mira,) = await registered(fal, tmp_path, clip, "Mira")
    job = await fal.submit(request("@Mira runs", [mira], quality=Quality.PRO, seconds=10))
    assert job.snapshot.status is JobStatus.QUEUED and job.snapshot.raw_status == "IN_QUEUE"
    (submit,) = sim.submits(KLING_PRO)  # PRO goes to the pro model, with its own duration format
    assert submit.body["duration"] == "10" and "resolution" not in submit.body

    snap, seen = await wait_terminal(fal, job.external_id)
    order = ["queued", "running", "succeeded"]
    assert [order.index(s) for s in seen] == sorted(order.index(s) for s in seen)
    assert snap.status is JobStatus.SUCCEEDED and snap.error is None and snap.raw_status == "COMPLETED"
    # status and result only at {owner}/{app}, exactly as fal returned them
    reads = sim.recorded("queue", "GET")
    assert reads and all(r.path.startswith("/fal-ai/kling-video/requests/") for r in reads)
    assert not any("/o3/" in r.path for r in reads)

    dest = tmp_path / "out.mp4"
    result = await fal.download(snap, dest, max_bytes=10 * 1024 * 1024)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == sim.video_sha256
    assert result.size == len(sim.video_bytes) and result.content_type == "video/mp4"
    (cdn,) = sim.recorded("cdn", "GET", "/files/out/")
    assert "Authorization" not in cdn.headers  # the key never goes to the CDN
    assert fal.actual_cost(request(quality=Quality.PRO, seconds=10), snap) == fal.estimate(
        request(quality=Quality.PRO, seconds=10)
    )


async def test_external_id_alone_tracks_the_job_after_a_restart(sim, tmp_path, clip):
    async with httpx.AsyncClient(trust_env=False) as first:
        fal = make_provider(first, sim)
        (mira,) = await registered(fal, tmp_path, clip, "Mira")
        external_id = (await fal.submit(request("@Mira", [mira]))).external_id
    async with httpx.AsyncClient(trust_env=False) as second:
        snap, _ = await wait_terminal(make_provider(second, sim), external_id)
    assert snap.status is JobStatus.SUCCEEDED


async def test_concurrency_limit_keeps_extra_jobs_queued_and_cancel(fal, sim, tmp_path, clip):
    (mira,) = await registered(fal, tmp_path, clip, "Mira")
    sim.script_job("stuck", "stuck")
    ids = [(await fal.submit(request("@Mira", [mira]))).external_id for _ in range(3)]
    snaps = await fal.status(ids)
    assert [snaps[i].status for i in ids] == [JobStatus.RUNNING, JobStatus.RUNNING, JobStatus.QUEUED]
    assert snaps[ids[2]].raw_status == "IN_QUEUE" and snaps[ids[2]].error is None
    assert sim.state(ids[2].split(" ")[0]) == "IN_QUEUE"
    assert await fal.cancel(ids[2]) == "CANCELLATION_REQUESTED"
    (cancel,) = sim.recorded("queue", "PUT")
    assert cancel.path.endswith("/cancel") and cancel.headers["Authorization"] == f"Key {KEY}"
    assert (await fal.status([ids[2]]))[ids[2]].status is JobStatus.FAILED


@pytest.mark.parametrize(
    ("outcome", "error", "reason", "words"),
    [
        ("error", Unavailable, None, "Internal server error"),
        ("moderation", Rejected, RejectReason.MODERATION, "flagged by a content checker"),
        ("legacy_invalid", Rejected, RejectReason.INVALID, "no face found"),
    ],
)
async def test_failed_requests_take_their_error_from_the_result(
    fal, sim, tmp_path, clip, outcome, error, reason, words
):
    (mira,) = await registered(fal, tmp_path, clip, "Mira")
    sim.script_job(outcome)
    job = await fal.submit(request("@Mira", [mira]))
    snap, _ = await wait_terminal(fal, job.external_id)
    assert snap.status is JobStatus.FAILED and isinstance(snap.error, error)
    assert words in snap.error.message and snap.download_url is None
    if reason is not None:
        assert isinstance(snap.error, Rejected) and snap.error.reason is reason
    assert snap.raw_status.startswith("COMPLETED")


async def test_expired_uploads_fail_with_a_clear_validation_message(fal, sim, tmp_path, clip):
    (mira,) = await registered(fal, tmp_path, clip, "Mira")
    sim.expire_uploads()
    job = await fal.submit(request("@Mira", [mira]))  # fal queues it; the model fails to fetch
    snap, _ = await wait_terminal(fal, job.external_id)
    assert isinstance(snap.error, Rejected) and snap.error.reason is RejectReason.INVALID
    assert snap.error.message.startswith("video_urls.0: Failed to download the file")
    assert snap.error.code == "file_download_error"
    assert "{" not in snap.error.message  # never the raw body


async def test_invalid_input_422_lists_the_fields(client, sim, tmp_path, clip, monkeypatch):
    # the simulated Wan suddenly wants 3:4 only: our 9:16 is refused like fal refuses a literal
    spec = fal_sim.SIM_MODELS[WAN]
    monkeypatch.setitem(
        fal_sim.SIM_MODELS, WAN, fal_sim.SimModel(**{**spec.__dict__, "aspect_ratios": frozenset({"3:4"})})
    )
    fal = make_provider(client, sim)
    (mira,) = await registered(fal, tmp_path, clip, "Mira")
    job = await fal.submit(request("@Mira", [mira]))
    snap, _ = await wait_terminal(fal, job.external_id)
    assert isinstance(snap.error, Rejected) and snap.error.reason is RejectReason.INVALID
    assert snap.error.message == "aspect_ratio: Unsupported aspect ratio"


# --- submit faults --------------------------------------------------------------------------------

MODERATED = {"detail": [{"loc": ["body", "prompt"], "msg": "flagged", "type": "content_policy_violation"}]}

SUBMIT_FAULTS = [
    ("error", {"http": 429, "retry_after": 7}, RateLimited, None),
    ("error", {"http": 402, "body": {"detail": "Payment required"}}, QuotaExhausted, None),
    ("error", {"http": 403, "body": {"detail": fal_sim.LOCKED_MESSAGE}}, QuotaExhausted, None),
    ("error", {"http": 401}, AuthFailed, None),
    ("error", {"http": 422, "body": MODERATED}, Rejected, RejectReason.MODERATION),
    (
        "error",
        {"http": 400, "headers": {"x-fal-error-type": "content_policy_violation"}},
        Rejected,
        RejectReason.MODERATION,
    ),
    ("error", {"http": 503}, Unavailable, None),
    ("html", {"http": 503}, Unavailable, None),
    ("error", {"http": 500, "create": True}, Ambiguous, None),
    ("html", {"http": 502, "create": True}, Ambiguous, None),
    ("error", {"http": 504, "create": True}, Ambiguous, None),
    ("malformed", {"create": True}, Ambiguous, None),
    ("reset", {"create": True}, Ambiguous, None),
]


@pytest.mark.parametrize(("kind", "kw", "error", "reason"), SUBMIT_FAULTS)
async def test_submit_fault_mapping(fal, sim, tmp_path, clip, kind, kw, error, reason):
    (mira,) = await registered(fal, tmp_path, clip, "Mira")
    sim.add_fault("submit", kind, **kw)
    with pytest.raises(error) as info:
        await fal.submit(request("@Mira", [mira]))
    if reason is not None:
        assert info.value.reason is reason
    if error is RateLimited:
        assert info.value.retry_after == 7.0
    assert len(sim.submits()) == 1  # never sent twice
    # NotSent or Rejected means no request exists; Ambiguous ones may exist and keep their hold
    assert len(sim.jobs) == (0 if isinstance(info.value, NotSent | Rejected) else 1)
    assert info.value.provider == "fal"


async def test_read_timeout_at_submit_is_ambiguous_and_never_resent(client, sim, tmp_path, clip):
    fal = make_provider(client, sim, read=0.3)
    (mira,) = await registered(fal, tmp_path, clip, "Mira")
    sim.add_fault("submit", "read_timeout", create=True)
    req = request("@Mira", [mira], client_ref="job-1")
    with pytest.raises(Ambiguous):
        await fal.submit(req)
    assert len(sim.submits()) == 1 and len(sim.jobs) == 1
    assert await fal.reconcile(req) is None  # fal cannot find it again: the hold stays
    assert not fal.capabilities.authoritative_reconcile and not fal.capabilities.batch_status


async def test_rate_limited_when_fal_refuses_past_its_queue(fal, sim, tmp_path, clip):
    (mira,) = await registered(fal, tmp_path, clip, "Mira")
    sim.max_queued = 1
    sim.script_job("stuck", "stuck", "stuck")
    for _ in range(3):  # two running, one waiting
        await fal.submit(request("@Mira", [mira]))
    with pytest.raises(RateLimited) as info:
        await fal.submit(request("@Mira", [mira]))
    assert info.value.retry_after == 2.0 and len(sim.jobs) == 3
    sim.add_fault("submit", http=429)
    with pytest.raises(RateLimited) as info:
        await fal.submit(request("@Mira", [mira]))
    assert info.value.retry_after == 1.0  # no Retry-After: wait at least a second


async def test_wrong_key_and_unknown_model(client, sim, tmp_path, clip, monkeypatch):
    good = make_provider(client, sim)
    (mira,) = await registered(good, tmp_path, clip, "Mira")
    job = await good.submit(request("@Mira", [mira]))
    wrong = make_provider(client, sim, key="fal-key-wrong-0000:1111")
    for call in (wrong.submit(request("@Mira", [mira])), wrong.status([job.external_id])):
        with pytest.raises(AuthFailed) as info:
            await call
        assert "fal-key-wrong" not in str(info.value)
    monkeypatch.delitem(fal_sim.SIM_MODELS, WAN)  # fal retired the model
    with pytest.raises(Rejected) as retired:
        await good.submit(request("@Mira", [mira]))
    assert retired.value.reason is RejectReason.UNSUPPORTED and WAN in retired.value.message
    with pytest.raises(ValueError, match=r"known models: .*wan/v2\.6/reference-to-video"):
        make_provider(client, sim, model="fal-ai/kling-video/v9/reference-to-video")


# --- status faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "kw", "error"),
    [
        ("error", {"http": 500}, Unavailable),
        ("html", {"http": 502}, Unavailable),
        ("error", {"http": 429, "retry_after": 3}, RateLimited),
        ("error", {"http": 401}, AuthFailed),
        ("malformed", {}, Unavailable),
        ("read_timeout", {}, Unavailable),
        ("reset", {}, Unavailable),
    ],
)
async def test_status_fault_mapping(client, sim, tmp_path, clip, kind, kw, error):
    fal = make_provider(client, sim, read=0.3)
    (mira,) = await registered(fal, tmp_path, clip, "Mira")
    job = await fal.submit(request("@Mira", [mira]))
    sim.add_fault("status", kind, **kw)
    with pytest.raises(error):
        await fal.status([job.external_id])
    assert job.external_id in await fal.status([job.external_id])  # the next poll works again


async def test_status_unknown_ids_partial_failures_and_unknown_words(fal, sim, tmp_path, clip):
    (mira,) = await registered(fal, tmp_path, clip, "Mira")
    a, b = [(await fal.submit(request("@Mira", [mira]))).external_id for _ in range(2)]
    app = "wan/v2/requests/00000000-0000-0000-0000-000000000000"
    unknown = f"00000000-0000-0000-0000-000000000000 {app}/status {app} {app}/cancel"
    assert set(await fal.status([a, unknown, "not-ours"])) == {a}  # ids fal does not know are left out
    sim.add_fault("status", http=500, times=1)
    with pytest.raises(StatusIncomplete) as info:
        await fal.status([b, a])  # b fails, a is read
    assert set(info.value.answered) == {a}
    sim.add_fault("status", http=200, body={"status": "PAUSED", "logs": None})
    snap = (await fal.status([a]))[a]
    assert (snap.status, snap.raw_status) == (JobStatus.RUNNING, "PAUSED")  # never an end on a guess


async def test_result_read_failure_of_a_completed_job_is_asked_again(fal, sim, tmp_path, clip):
    (mira,) = await registered(fal, tmp_path, clip, "Mira")
    job = await fal.submit(request("@Mira", [mira]))
    while sim.state(job_of(sim, job.external_id).request_id) != "COMPLETED":
        await asyncio.sleep(0.03)
    sim.add_fault("result", "html", http=502)
    with pytest.raises(Unavailable):
        await fal.status([job.external_id])
    snap = (await fal.status([job.external_id]))[job.external_id]
    assert snap.status is JobStatus.SUCCEEDED


# --- download -------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True])
async def test_download_byte_cap(fal, sim, tmp_path, clip, chunked):
    sim.chunked_download = chunked
    (mira,) = await registered(fal, tmp_path, clip, "Mira")
    snap, _ = await wait_terminal(fal, (await fal.submit(request("@Mira", [mira]))).external_id)
    out = tmp_path / "out"
    with pytest.raises(Rejected) as info:
        await fal.download(snap, out / "capped.mp4", max_bytes=len(sim.video_bytes) - 1)
    assert info.value.reason is RejectReason.INVALID
    assert not list(out.glob("*"))  # no partial file left behind
    result = await fal.download(snap, out / "capped.mp4", max_bytes=len(sim.video_bytes))
    assert result.size == len(sim.video_bytes) and (out / "capped.mp4").read_bytes() == sim.video_bytes


async def test_download_failures_are_provider_errors(fal, sim, tmp_path, clip):
    (mira,) = await registered(fal, tmp_path, clip, "Mira")
    snap, _ = await wait_terminal(fal, (await fal.submit(request("@Mira", [mira]))).external_id)
    sim.add_fault("download", "html", http=502)
    with pytest.raises(Unavailable):
        await fal.download(snap, tmp_path / "a.mp4", max_bytes=10**8)
    gone = JobSnapshot("x", JobStatus.SUCCEEDED, download_url=f"{sim.cdn_url}/files/out/nothing/output.mp4")
    with pytest.raises(Rejected):
        await fal.download(gone, tmp_path / "b.mp4", max_bytes=10**8)
    assert not list(tmp_path.glob("*.mp4*"))


# --- money and capabilities -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint_id", "quality", "seconds", "price"),
    [
        (WAN, Quality.STANDARD, 4, 100_000 * 5),
        (WAN, Quality.PRO, 10, 150_000 * 10),  # no pro model: Wan at 1080p
        ("fal-ai/kling-video/o1/reference-to-video", Quality.STANDARD, 5, 112_000 * 5),
        ("fal-ai/kling-video/o3/standard/reference-to-video", Quality.STANDARD, 15, 112_000 * 15),
        (KLING_PRO, Quality.STANDARD, 5, 140_000 * 5),
        ("bytedance/seedance-2.0/reference-to-video", Quality.STANDARD, 5, 181_440 * 5),  # x0.6: we send video
        ("fal-ai/vidu/q3/reference-to-video/mix", Quality.STANDARD, 5, 154_000 * 5),
        ("fal-ai/veo3.1/reference-to-video", Quality.STANDARD, 5, 200_000 * 8),  # 8 s is its only length
        ("google/gemini-omni-flash/reference-to-video", Quality.STANDARD, 5, 135_000 * 5),
    ],
)
def test_estimate_per_model(client, sim, endpoint_id, quality, seconds, price):
    fal = make_provider(client, sim, model=endpoint_id)
    assert fal.estimate(request(seconds=seconds, quality=quality)) == price


def test_estimate_uses_price_overrides_and_the_pro_models_own_durations(client, sim):
    prices = PriceBook.with_overrides({f"fal:{WAN}:720p": 120_000, f"fal:{KLING_PRO}:default": 90_000})
    fal = make_provider(client, sim, prices=prices, pro_model=KLING_PRO)
    assert fal.estimate(request(seconds=5)) == 600_000
    assert fal.estimate(request(seconds=10, quality=Quality.PRO)) == 900_000
    caps = fal.capabilities
    assert caps.seconds == (5, 10) and caps.qualities == frozenset(Quality) and caps.needs_handle
    only_standard = make_provider(client, sim, model="fal-ai/kling-video/o1/reference-to-video")
    assert only_standard.capabilities.qualities == frozenset({Quality.STANDARD})
    assert only_standard.capabilities.max_characters == 7


# --- secrets --------------------------------------------------------------------------------------


async def test_key_never_in_errors_logs_or_other_hosts(client, sim, tmp_path, clip, caplog):
    fal = make_provider(client, sim, read=0.3)
    errors: list[ProviderError] = []
    with caplog.at_level(logging.DEBUG):
        (mira,) = await registered(fal, tmp_path, clip, "Mira")
        sim.add_fault("submit", http=422, body={"detail": [{"loc": ["header"], "msg": f"bad Key {KEY}", "type": "x"}]})
        sim.add_fault("submit", http=401, body={"detail": f"invalid key {KEY}"})
        sim.add_fault("submit", http=500, body={"detail": KEY}, create=True)
        sim.add_fault("submit", "read_timeout", create=True)
        for _ in range(4):
            with pytest.raises(ProviderError) as info:
                await fal.submit(request("@Mira", [mira]))
            errors.append(info.value)
        sim.add_fault("status", http=500, body={"detail": KEY})
        job = await fal.submit(request("@Mira", [mira]))
        with pytest.raises(ProviderError) as info:
            await fal.status([job.external_id])
        errors.append(info.value)
        sim.add_fault("result", http=422, body={"detail": f"echo {KEY}"})
        snap, _ = await wait_terminal(fal, job.external_id)
        assert snap.error is not None
        errors.append(snap.error)
    assert len(errors) == 6
    for error in errors:
        assert KEY not in str(error) and KEY not in repr(error)
    assert KEY not in caplog.text and KEY not in repr(fal)
    for record in sim.requests:
        keyed = KEY in str(record.headers)
        assert keyed == (record.host == "queue" or record.path == "/storage/auth/token")


# --- the simulator checked against fal's own client -----------------------------------------------


async def test_sim_status_answers_parse_with_fal_clients_parser(fal, sim, tmp_path, clip):
    fal_client = pytest.importorskip("fal_client.client")
    (mira,) = await registered(fal, tmp_path, clip, "Mira")
    sim.script_job("stuck", "stuck", "succeed", "moderation")
    ids = [(await fal.submit(request("@Mira", [mira]))).external_id for _ in range(4)]
    parsed: list[Any] = []
    async with httpx.AsyncClient(trust_env=False, headers={"Authorization": f"Key {KEY}"}) as raw:
        for external_id in (ids[0], ids[2]):
            rid, status_path, response_path, cancel_path = external_id.split(" ")
            handle = fal_client._BaseRequestHandle(
                rid,
                f"{sim.queue_url}/{response_path}",
                f"{sim.queue_url}/{status_path}",
                f"{sim.queue_url}/{cancel_path}",
            )
            parsed.append(handle._parse_status((await raw.get(handle.status_url)).json()))
        assert isinstance(parsed[0], fal_client.InProgress)
        assert parsed[1] == fal_client.Queued(position=0)
        for job in sim.jobs.values():
            job.outcome = "succeed" if job.outcome == "stuck" else job.outcome
        done = []
        for external_id in ids:
            snap, _ = await wait_terminal(fal, external_id)
            rid, status_path, *_ = external_id.split(" ")
            status = handle._parse_status((await raw.get(f"{sim.queue_url}/{status_path}")).json())
            done.append((snap.status, status))
    assert all(isinstance(s, fal_client.Completed) for _, s in done)
    assert [s.error is None for _, s in done] == [True, True, True, False]
    assert done[3][1].error_type == "content_policy_violation" and done[3][0] is JobStatus.FAILED


async def test_fal_client_uploads_submits_and_reads_results_on_the_sim(sim, clip, tmp_path, monkeypatch):
    pytest.importorskip("fal_client")
    import fal_client
    import fal_client.client as sdk

    # fal_client builds its hosts from module constants; point them at the simulator
    monkeypatch.setattr(sdk, "QUEUE_URL_FORMAT", sim.queue_url + "/")
    monkeypatch.setattr(sdk, "REST_URL", sim.rest_url)
    monkeypatch.setattr(sdk, "CDN_URL", sim.cdn_url)
    monkeypatch.setattr(sdk, "REST_URL", sim.rest_url)
    sdk_client = fal_client.AsyncClient(key=KEY)
    frame = asset(tmp_path, clip, "Mira").frame_paths[0]
    image_url = await sdk_client.upload(frame.read_bytes(), "image/jpeg", "frame.jpg")
    video_url = await sdk_client.upload(clip.read_bytes(), "video/mp4", "clip.mp4")
    assert {image_url, video_url} <= set(sim.uploads)

    handle = await sdk_client.submit(WAN, {"prompt": "@Video1 waves", "video_urls": [video_url], "duration": "5"})
    assert isinstance(await handle.status(), fal_client.Queued | fal_client.InProgress)
    output = await sdk_client.result(WAN, handle.request_id)  # rebuilt by the SDK from {owner}/{app}
    assert output["video"]["url"].startswith(sim.cdn_url)

    elements = [{"frontal_image_url": image_url, "reference_image_urls": [image_url]}]
    pro = await sdk_client.submit(KLING_PRO, {"prompt": "@Element1 waves", "elements": elements, "duration": "5"})
    assert (await sdk_client.result(KLING_PRO, pro.request_id))["video"]["url"]
    assert sim.jobs[pro.request_id].errors == []
    status_reads = [r.path for r in sim.recorded("queue", "GET") if r.path.endswith("/status")]
    assert f"/fal-ai/kling-video/requests/{pro.request_id}/status" in status_reads
    sim.script_job("moderation")
    bad = await sdk_client.submit(WAN, {"prompt": "x", "video_urls": [video_url]})
    with pytest.raises(sdk.FalClientHTTPError) as info:
        await sdk_client.result(WAN, bad.request_id)
    detail: Any = info.value.message  # fal_client keeps the body's `detail` list as is
    assert info.value.status_code == 422 and detail[0]["type"] == "content_policy_violation"


async def test_a_callback_url_goes_as_fal_webhook_and_the_signed_callback_verifies(client, sim, tmp_path, clip):
    from bot.services.webhooks import fal_key_set, verify_fal
    from tests.fakes.callbacks import CallbackReceiver

    receiver = await CallbackReceiver().start()
    try:
        fal = make_provider(client, sim)
        (mira,) = await registered(fal, tmp_path, clip, "Mira")
        url = f"{receiver.url}/hooks/fal/tok-123"
        job = await fal.submit(request("@Mira runs", [mira], seconds=5, callback_url=url))
        (submit,) = sim.submits(WAN)
        assert submit.query == {"fal_webhook": url}
        (hook,) = await receiver.wait(1)
        assert hook.path == "/hooks/fal/tok-123"
        payload = json.loads(hook.body)
        assert payload["status"] == "OK" and payload["payload"]["video"]["url"]
        assert job.external_id.endswith(payload["request_id"]) or payload["request_id"] in job.external_id
        keys = await fal_key_set(client, f"{sim.rest_url}/.well-known/jwks.json").keys()
        assert keys
        headers = {k.lower(): v for k, v in hook.headers.items()}
        assert verify_fal(headers, hook.body, keys, time.time())
        assert not verify_fal(headers, hook.body + b" ", keys, time.time())
    finally:
        await receiver.close()
