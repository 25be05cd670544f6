"""Contract tests of the Kling adapter against the loopback Kling simulator (real HTTP, real files)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import math
import socket
import time
from pathlib import Path

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
    Unavailable,
)
from bot.providers.kling import TASK_IDS_PER_QUERY, KlingProvider
from bot.providers.pricing import PriceBook
from tests.conftest import Simulators
from tests.fakes.kling_sim import KlingSim
from tests.helpers import all_terminal, request, wait_until, write_frame

KEY = "api-key-kling-sim-SECRET-7f3a9c41d2"


@pytest.fixture
async def sim(sims: Simulators) -> KlingSim:
    return await sims.start(KlingSim(api_key=KEY, element_seconds=0.1, video_seconds=0.3, hang_seconds=5.0))


def make_provider(client, base_url, *, read=2.0, key=KEY, **kw) -> KlingProvider:
    kw.setdefault("element_poll_interval", 0.03)
    kw.setdefault("element_timeout", 3.0)
    return KlingProvider(
        client,
        api_key=SecretStr(key),
        base_url=base_url,
        prices=PriceBook(),
        timeout=httpx.Timeout(2.0, read=read),
        **kw,
    )


@pytest.fixture
def kling(client, sim) -> KlingProvider:
    return make_provider(client, sim.base_url)


def asset(tmp_path: Path, name: str, frames: int, character_id: int = 1, **frame_kw) -> CharacterAsset:
    paths = tuple(
        write_frame(tmp_path / f"{name}-{i}.jpg", (40 * i, 90, 200 - 30 * i), **frame_kw) for i in range(frames)
    )
    return CharacterAsset(
        character_id=character_id,
        name=name,
        description=f"{name}, a test character",
        clip_path=tmp_path / f"{name}.mp4",
        frame_paths=paths,
        clip_duration=5.0,
    )


# --- the happy path ---------------------------------------------------------------------------------


async def test_two_characters_register_submit_poll_download(kling, sim, tmp_path):
    mira = asset(tmp_path, "Mira", 5, character_id=7)  # frontal + 3 refer frames used, 1 ignored
    bo = asset(tmp_path, "Bo", 2, character_id=8)
    h_mira = await kling.register_character(mira)
    h_bo = await kling.register_character(bo)

    element_ids = {str(t.element_id) for t in sim.elements.values()}
    assert {h_mira.external_id, h_bo.external_id} == element_ids
    assert h_mira.provider == "kling" and h_mira.mention_token == ""
    creates = sim.recorded("POST", "/v1/general/advanced-custom-elements")
    assert len(creates) == 2
    body = creates[0].body
    images = body["element_image_list"]
    assert base64.b64decode(images["frontal_image"], validate=True) == mira.frame_paths[0].read_bytes()
    assert [base64.b64decode(r["image_url"]) for r in images["refer_images"]] == [
        p.read_bytes() for p in mira.frame_paths[1:4]
    ]
    assert len(creates[1].body["element_image_list"]["refer_images"]) == 1
    assert body["element_name"] == "Mira" and body["reference_type"] == "image_refer"
    assert creates[0].headers["Authorization"] == f"Bearer {KEY}"

    req = request(
        "@Mira waves at @bo, then @mira smiles",
        [CharacterRef("mira", mira, h_mira), CharacterRef("bo", bo, h_bo)],
        client_ref="job-42",
    )
    submitted = await kling.submit(req)
    assert submitted.snapshot.status is JobStatus.QUEUED
    assert list(sim.tasks) == [submitted.external_id]

    (create,) = sim.recorded("POST", "/omni-video/")
    assert create.path == "/omni-video/kling-3.0-omni"
    assert create.body == {
        "contents": [
            {"type": "prompt", "text": "@element_1 waves at @element_2, then @element_1 smiles"},
            {"type": "element", "element_id": h_mira.external_id, "id": "element_1"},
            {"type": "element", "element_id": h_bo.external_id, "id": "element_2"},
        ],
        "settings": {
            "resolution": "720p",
            "aspect_ratio": "9:16",
            "duration": 5,
            "audio": "off",
            "multi_shot": False,
        },
        "options": {"external_task_id": "job-42", "watermark_info": {"enabled": False}},
    }
    assert type(create.body["settings"]["duration"]) is int

    snaps = await wait_until(kling, [submitted.external_id], all_terminal([submitted.external_id]))
    snap = snaps[submitted.external_id]
    assert snap.status is JobStatus.SUCCEEDED and snap.error is None
    assert snap.download_url and snap.raw_status == "succeeded"
    # billed 3 units (0.6 u/s x 5 s) x $0.14 = the 720p estimate
    assert snap.actual_cost_micros == 420_000 == kling.estimate(req) == kling.actual_cost(req, snap)

    dest = tmp_path / "out.mp4"
    result = await kling.download(snap, dest, max_bytes=10 * 1024 * 1024)
    data = dest.read_bytes()
    assert hashlib.sha256(data).hexdigest() == sim.video_sha256
    assert result.size == len(data) == len(sim.video_bytes) and result.content_type == "video/mp4"
    with av.open(str(dest)) as container:
        assert next(container.decode(video=0)).width == 320
    (cdn,) = sim.recorded("GET", "/cdn/")
    assert "Authorization" not in cdn.headers  # the key never goes to the CDN


@pytest.mark.parametrize(
    ("quality", "orientation", "seconds", "resolution", "aspect", "duration", "price"),
    [
        (Quality.PRO, Orientation.LANDSCAPE, 2, "1080p", "16:9", 3, 112_000 * 3),
        (Quality.STANDARD, Orientation.PORTRAIT, 20, "720p", "9:16", 15, 84_000 * 15),
        (Quality.PRO, Orientation.PORTRAIT, 10, "1080p", "9:16", 10, 112_000 * 10),
    ],
)
async def test_settings_on_the_wire_and_estimate(
    kling, sim, quality, orientation, seconds, resolution, aspect, duration, price
):
    req = request(seconds=seconds, quality=quality, orientation=orientation)
    assert kling.estimate(req) == price
    await kling.submit(req)
    (create,) = sim.recorded("POST", "/omni-video/")
    settings = create.body["settings"]
    assert (settings["resolution"], settings["aspect_ratio"], settings["duration"]) == (
        resolution,
        aspect,
        duration,
    )
    assert "external_task_id" not in create.body["options"]  # no client_ref given
    assert create.body["contents"] == [{"type": "prompt", "text": "a quiet lake at dawn"}]


def test_estimate_uses_price_overrides(client):
    kling = KlingProvider(
        client,
        api_key=SecretStr(KEY),
        base_url="http://127.0.0.1:9",
        prices=PriceBook.with_overrides({"kling:kling-3.0-omni:720p": 50_000}),
    )
    assert kling.estimate(request(seconds=4)) == 200_000
    assert kling.capabilities.seconds == tuple(range(3, 16)) and kling.capabilities.batch_status


async def test_stray_at_words_are_neutralised_and_ids_stay_ours(kling, sim, tmp_path):
    mira = asset(tmp_path, "Mira", 2)
    handle = await kling.register_character(mira)
    await kling.submit(request("@mira meets @nobody by a@b.com", [CharacterRef("mira", mira, handle)]))
    (create,) = sim.recorded("POST", "/omni-video/")
    assert create.body["contents"][0]["text"] == "@element_1 meets nobody by a@b.com"


# --- polling --------------------------------------------------------------------------------------


async def test_batch_status_costs_one_request_per_chunk(kling, sim):
    ids = [(await kling.submit(request(client_ref=f"b{i}"))).external_id for i in range(3)]
    before = sim.status_requests
    snaps = await kling.status(ids)
    assert sim.status_requests == before + 1
    assert set(snaps) == set(ids)
    assert sim.requests[-1].query["task_ids"] == ",".join(ids)

    unknown = [str(10**17 + i) for i in range(117)]
    before = sim.status_requests
    snaps = await kling.status(ids + unknown)
    assert sim.status_requests == before + math.ceil(120 / TASK_IDS_PER_QUERY)
    assert set(snaps) == set(ids)  # ids Kling does not know are left out
    assert await kling.status([]) == {}
    assert sim.status_requests == before + math.ceil(120 / TASK_IDS_PER_QUERY)


async def test_task_outcomes_failed_stuck_and_unknown(kling, sim, caplog):
    sim.script_video("moderation", "fail", "stuck", "unknown_status")
    ids = [(await kling.submit(request())).external_id for _ in range(4)]
    with caplog.at_level(logging.WARNING, logger="bot.providers.kling"):
        snaps = await wait_until(kling, ids, all_terminal(ids[:2]))
    moderated, failed, stuck, unknown = (snaps[i] for i in ids)
    assert moderated.status is JobStatus.FAILED
    assert isinstance(moderated.error, Rejected) and moderated.error.reason is RejectReason.MODERATION
    assert "risk control" in moderated.error.message
    assert failed.status is JobStatus.FAILED and isinstance(failed.error, Unavailable)
    assert failed.download_url is None and failed.actual_cost_micros is None
    # the other two were created at the same time, so they would be done by now: they are not
    assert (stuck.status, stuck.raw_status) == (JobStatus.RUNNING, "processing")
    assert (unknown.status, unknown.raw_status) == (JobStatus.RUNNING, "queueing_for_review")
    assert unknown.error is None
    assert "queueing_for_review" in caplog.text


# --- create faults --------------------------------------------------------------------------------

CREATE_FAULTS = [
    ("error", {"http": 429, "code": 1303, "message": "parallel task over resource pack limit"}, RateLimited, None),
    ("error", {"http": 429, "code": 1102, "message": "resource pack exhausted"}, QuotaExhausted, None),
    ("error", {"http": 429, "code": 1101, "message": "account in arrears"}, QuotaExhausted, None),
    *[("error", {"http": 401, "code": c, "message": "auth"}, AuthFailed, None) for c in range(1000, 1005)],
    ("error", {"http": 403, "code": 1103, "message": "no access to model"}, AuthFailed, None),
    ("error", {"http": 400, "code": 1301, "message": "content security"}, Rejected, RejectReason.MODERATION),
    ("error", {"http": 400, "code": 1201, "message": "bad duration"}, Rejected, RejectReason.INVALID),
    ("error", {"http": 404, "code": 1203, "message": "model gone"}, Rejected, RejectReason.UNSUPPORTED),
    ("error", {"http": 503, "code": 5001, "message": "maintenance"}, Unavailable, None),
    ("html", {"http": 503}, Unavailable, None),
    ("error", {"http": 500, "code": 5000, "message": "internal", "create": True}, Ambiguous, None),
    ("error", {"http": 504, "code": 5002, "message": "internal timeout", "create": True}, Ambiguous, None),
    ("html", {"http": 500, "create": True}, Ambiguous, None),
    ("html", {"http": 502, "create": True}, Ambiguous, None),
    ("html", {"http": 504, "create": True}, Ambiguous, None),
    ("malformed", {"create": True}, Ambiguous, None),
    ("reset", {"create": True}, Ambiguous, None),
]


@pytest.mark.parametrize(("kind", "kw", "error", "reason"), CREATE_FAULTS)
async def test_create_fault_mapping(kling, sim, kind, kw, error, reason):
    sim.add_fault("create", kind, **kw)
    with pytest.raises(error) as info:
        await kling.submit(request(client_ref="job-1"))
    if reason is not None:
        assert info.value.reason is reason
    assert len(sim.recorded("POST", "/omni-video/")) == 1  # never resubmitted
    # a NotSent error must mean that no task exists; an Ambiguous one is kept for reconcile
    assert len(sim.tasks) == (0 if isinstance(info.value, NotSent | Rejected) else 1)
    assert info.value.provider == "kling"


async def test_rate_limit_carries_retry_after(kling, sim):
    sim.add_fault("create", http=429, code=1303, message="parallel task over resource pack limit", retry_after=7)
    with pytest.raises(RateLimited) as info:
        await kling.submit(request())
    assert info.value.retry_after == 7.0 and info.value.code == "1303"
    sim.add_fault("create", http=429, code=1303, message="parallel task over resource pack limit")
    with pytest.raises(RateLimited) as info:
        await kling.submit(request())
    assert info.value.retry_after == 1.0  # the documented floor for 1303 backoff


async def test_read_timeout_after_create_is_ambiguous_and_reconciled(client, sim):
    kling = make_provider(client, sim.base_url, read=0.3)
    sim.add_fault("create", "read_timeout", create=True)
    req = request(client_ref="job-ambiguous")
    with pytest.raises(Ambiguous):
        await kling.submit(req)
    assert len(sim.tasks) == 1 and len(sim.recorded("POST", "/omni-video/")) == 1
    (task_id,) = sim.tasks
    assert await kling.reconcile(req) == task_id
    assert sim.requests[-1].query == {"external_task_ids": "job-ambiguous"}
    assert await kling.reconcile(request(client_ref="never-sent")) is None
    assert await kling.reconcile(request()) is None


async def test_reconcile_falls_back_to_the_task_list(kling, sim):
    sim.external_ids_query_broken = True
    await kling.submit(request(client_ref="other-job"))
    wanted = await kling.submit(request(client_ref="job-7"))
    assert await kling.reconcile(request(client_ref="job-7")) == wanted.external_id
    listing = sim.recorded("POST", "/tasks")
    assert listing and listing[-1].body["limit"] <= 500
    assert await kling.reconcile(request(client_ref="job-missing")) is None


async def test_model_not_found_is_unsupported(client, sim):
    kling = make_provider(client, sim.base_url, model="kling-9.9-omni")
    with pytest.raises(Rejected) as info:
        await kling.submit(request())
    assert info.value.reason is RejectReason.UNSUPPORTED and info.value.code == "1203"
    assert not sim.tasks


async def test_wrong_or_jwt_key_is_auth_failed(client, sim):
    for key in ("api-key-kling-wrong", "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJhayJ9.c2lnbmF0dXJl"):
        kling = make_provider(client, sim.base_url, key=key)
        with pytest.raises(AuthFailed) as info:
            await kling.submit(request())
        assert info.value.code == "1002" and key not in str(info.value)
    assert not sim.tasks


async def test_connect_error_is_unavailable(client):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kling = make_provider(client, f"http://127.0.0.1:{port}")
    with pytest.raises(Unavailable):
        await kling.submit(request())
    with pytest.raises(Unavailable):
        await kling.status(["1"])


async def test_unknown_or_unready_element_is_invalid(kling, sim, tmp_path):
    mira = asset(tmp_path, "Mira", 2)
    fake = CharacterHandle(provider="kling", external_id="999", mention_token="")
    with pytest.raises(Rejected) as info:
        await kling.submit(request("@mira", [CharacterRef("mira", mira, fake)]))
    assert info.value.reason is RejectReason.INVALID and "999" in info.value.message
    unregistered = CharacterRef("mira", mira, None)
    before = len(sim.requests)
    with pytest.raises(Rejected):
        await kling.submit(request("@mira", [unregistered]))
    assert len(sim.requests) == before  # refused locally, nothing sent


# --- status faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "kw", "error"),
    [
        ("error", {"http": 429, "code": 1303, "retry_after": 3}, RateLimited),
        ("error", {"http": 500, "code": 5000}, Unavailable),
        ("error", {"http": 504, "code": 5002}, Unavailable),
        ("html", {"http": 502}, Unavailable),
        ("malformed", {}, Unavailable),
        ("read_timeout", {}, Unavailable),
        ("reset", {}, Unavailable),
        ("error", {"http": 401, "code": 1004}, AuthFailed),
    ],
)
async def test_status_fault_mapping(client, sim, kind, kw, error):
    kling = make_provider(client, sim.base_url, read=0.3)
    job = await kling.submit(request())
    sim.add_fault("tasks", kind, **kw)
    with pytest.raises(error):
        await kling.status([job.external_id])
    snaps = await kling.status([job.external_id])  # the next poll works again
    assert job.external_id in snaps


# --- elements -------------------------------------------------------------------------------------


async def test_element_moderation_failure(kling, sim, tmp_path):
    sim.script_element("moderation")
    with pytest.raises(Rejected) as info:
        await kling.register_character(asset(tmp_path, "Mira", 2))
    assert info.value.reason is RejectReason.MODERATION


async def test_stuck_element_times_out(client, sim, tmp_path):
    kling = make_provider(client, sim.base_url, element_timeout=0.3)
    sim.script_element("stuck")
    started = time.monotonic()
    with pytest.raises(Unavailable):
        await kling.register_character(asset(tmp_path, "Mira", 2))
    assert time.monotonic() - started < 2.0
    assert sim.element_status_requests >= 2


@pytest.mark.parametrize(
    ("kw", "error", "reason"),
    [
        ({"http": 400, "code": 1301}, Rejected, RejectReason.MODERATION),
        ({"http": 429, "code": 1303}, RateLimited, None),
        ({"http": 401, "code": 1002}, AuthFailed, None),
        ({"http": 429, "code": 1102}, QuotaExhausted, None),
    ],
)
async def test_element_create_faults(kling, sim, tmp_path, kw, error, reason):
    sim.add_fault("element_create", **kw)
    with pytest.raises(error) as info:
        await kling.register_character(asset(tmp_path, "Mira", 2))
    if reason is not None:
        assert info.value.reason is reason
    assert not sim.elements


async def test_ambiguous_element_create_is_found_by_external_id(client, sim, tmp_path):
    kling = make_provider(client, sim.base_url, read=0.3)
    sim.add_fault("element_create", "read_timeout", create=True)
    handle = await kling.register_character(asset(tmp_path, "Mira", 2))
    (task,) = sim.elements.values()
    assert handle.external_id == str(task.element_id)
    assert len(sim.recorded("POST", "/v1/general/advanced-custom-elements")) == 1


async def test_element_polling_rides_out_transient_errors_only(kling, sim, tmp_path):
    sim.add_fault("element_query", http=500, code=5000)
    sim.add_fault("element_query", "html", http=503)
    handle = await kling.register_character(asset(tmp_path, "Mira", 2))
    assert handle.external_id == str(next(iter(sim.elements.values())).element_id)
    assert sim.element_status_requests >= 3
    sim.add_fault("element_query", http=400, code=1201, message="bad task id")
    started = time.monotonic()
    with pytest.raises(Rejected):  # a definitive answer about a task we created: no waiting it out
        await kling.register_character(asset(tmp_path, "Bo", 2, character_id=2))
    assert time.monotonic() - started < 1.0


async def test_small_png_frames_are_upscaled_for_kling(kling, sim, tmp_path):
    small = asset(tmp_path, "Tiny", 2, size=(200, 150), fmt="PNG")
    handle = await kling.register_character(small)
    assert handle.external_id
    (task,) = sim.elements.values()
    with Image.open(io.BytesIO(task.images[0])) as image:  # the sim decoded what we sent
        assert min(image.size) >= 300 and image.format == "JPEG"


async def test_unusable_frames_are_refused_locally(kling, sim, tmp_path):
    bad = asset(tmp_path, "Bad", 2)
    bad.frame_paths[0].write_bytes(b"not an image at all")
    with pytest.raises(Rejected) as info:
        await kling.register_character(bad)
    assert info.value.reason is RejectReason.INVALID
    with pytest.raises(Rejected) as info:
        await kling.register_character(asset(tmp_path, "One", 1))
    assert info.value.reason is RejectReason.UNSUPPORTED
    assert not sim.requests


# --- download -------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True])
async def test_download_byte_cap(kling, sim, tmp_path, chunked):
    sim.chunked_download = chunked
    job = await kling.submit(request())
    snap = (await wait_until(kling, [job.external_id], all_terminal([job.external_id])))[job.external_id]
    dest = tmp_path / "capped.mp4"
    with pytest.raises(Rejected) as info:
        await kling.download(snap, dest, max_bytes=len(sim.video_bytes) - 1)
    assert info.value.reason is RejectReason.INVALID
    assert list(tmp_path.iterdir()) == []  # no partial file left behind
    result = await kling.download(snap, dest, max_bytes=len(sim.video_bytes))
    assert result.size == len(sim.video_bytes) and dest.read_bytes() == sim.video_bytes


async def test_download_failures_are_provider_errors(kling, sim, tmp_path):
    job = await kling.submit(request())
    snap = (await wait_until(kling, [job.external_id], all_terminal([job.external_id])))[job.external_id]
    sim.add_fault("download", "html", http=502)
    with pytest.raises(Unavailable):
        await kling.download(snap, tmp_path / "a.mp4", max_bytes=10**8)
    gone = JobSnapshot(external_id="x", status=JobStatus.SUCCEEDED, download_url=f"{sim.base_url}/cdn/0.mp4")
    with pytest.raises(Rejected):
        await kling.download(gone, tmp_path / "b.mp4", max_bytes=10**8)
    assert not list(tmp_path.glob("*.mp4*"))


# --- secrets --------------------------------------------------------------------------------------


async def test_key_never_in_errors_or_logs(client, sim, tmp_path, caplog):
    kling = make_provider(client, sim.base_url, read=0.3)
    errors: list[ProviderError] = []
    sim.add_fault("create", http=400, code=1201, message=f"bad header: Bearer {KEY}")
    sim.add_fault("create", http=401, code=1002, message=f"invalid key {KEY}")
    sim.add_fault("create", "read_timeout", create=True)
    sim.add_fault("create", "reset")
    sim.add_fault("tasks", http=500, code=5000, message=KEY)
    with caplog.at_level(logging.DEBUG):
        for _ in range(4):
            with pytest.raises(ProviderError) as info:
                await kling.submit(request(client_ref=f"k{len(errors)}"))
            errors.append(info.value)
        sim.script_video("moderation")
        job = await kling.submit(request())
        with pytest.raises(ProviderError) as info:
            await kling.status([job.external_id])
        errors.append(info.value)
        snap = (await wait_until(kling, [job.external_id], all_terminal([job.external_id])))[job.external_id]
        assert snap.error is not None
        errors.append(snap.error)
    assert len(errors) == 6
    for error in errors:
        assert KEY not in str(error) and KEY not in repr(error)
    assert KEY not in caplog.text
    assert KEY not in repr(kling)
    assert sim.recorded("POST", "/omni-video/")[0].headers["Authorization"] == f"Bearer {KEY}"


async def test_a_callback_url_goes_in_options_and_each_status_change_is_posted(kling, sim):
    from tests.fakes.callbacks import CallbackReceiver

    receiver = await CallbackReceiver().start()
    try:
        url = f"{receiver.url}/hooks/kling/tok-9"
        job = await kling.submit(request(client_ref="cb-1", callback_url=url))
        (create,) = sim.recorded("POST", "/omni-video/")
        assert create.body["options"]["callback_url"] == url
        hooks = await receiver.wait(2)
        assert [h.path for h in hooks] == ["/hooks/kling/tok-9"] * 2
        statuses = [json.loads(h.body)["status"] for h in hooks]
        assert statuses == ["processing", "succeeded"]
        assert {json.loads(h.body)["id"] for h in hooks} == {job.external_id}
    finally:
        await receiver.close()
