"""Contract tests: the relay adapter against the relay simulator over real loopback HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import time
from dataclasses import replace
from pathlib import Path

import av
import pytest
from pydantic import SecretStr

from bot.providers.base import (
    Ambiguous,
    AuthFailed,
    CharacterAsset,
    CharacterHandle,
    CharacterRef,
    GenerationRequest,
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
from bot.providers.pricing import PriceBook
from bot.providers.relay import RelayProvider, RelayTimeouts, character_window, render_prompt
from tests.conftest import Simulators
from tests.fakes.relay_sim import Fault, Outcome, RelaySim, sample_clip

FAST = RelayTimeouts(
    connect=2,
    write=2,
    pool=2,
    create_read=0.5,
    status_read=0.5,
    character_read=3,
    download_read=2,
    character_poll_interval=0.05,
    character_wait=2,
)


@pytest.fixture
async def sim(sims: Simulators) -> RelaySim:
    return await sims.start(RelaySim())


@pytest.fixture
def relay(sim, client):
    return provider_for(sim, client)


def provider_for(sim, client, *, key=None, base_url=None, timeouts=FAST):
    return RelayProvider(
        client,
        api_key=SecretStr(key or sim.api_key),
        base_url=base_url or sim.base_url,
        prices=PriceBook(),
        timeouts=timeouts,
    )


def asset_for(sim, name="Mossy", *, seconds=4.0, start=0.5, url=True, cid=1, tmp=Path("/nonexistent")):
    return CharacterAsset(
        character_id=cid,
        name=name,
        description=f"{name}, a test character",
        clip_path=tmp / f"{name}.mp4",
        frame_paths=(),
        clip_duration=seconds,
        best_window_start=start,
        clip_url=sim.host_file(sample_clip(seconds)) if url else None,
    )


def request(
    prompt="a quiet forest", refs=(), *, seconds=10, orientation=Orientation.PORTRAIT, quality=Quality.STANDARD
):
    return GenerationRequest(
        prompt=prompt,
        seconds=seconds,
        orientation=orientation,
        quality=quality,
        characters=tuple(refs),
        client_ref="job-1",
    )


async def wait_terminal(relay, external_id, deadline=5.0) -> tuple[JobSnapshot, list[JobSnapshot]]:
    seen = []
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        snap = (await relay.status([external_id]))[external_id]
        seen.append(snap)
        if snap.status.terminal:
            return snap, seen
        await asyncio.sleep(0.03)
    raise AssertionError(f"job {external_id} not terminal; saw {[s.raw_status for s in seen]}")


def assert_playable(path: Path) -> None:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        assert frame.width > 0


# --- happy path and wire shape --------------------------------------------------------------------


async def test_happy_path_two_characters(sim, relay, tmp_path):
    mossy_asset = asset_for(sim, "Mossy", seconds=4.0, start=0.5)
    pip_asset = asset_for(sim, "Pip", seconds=2.5, start=2.0, cid=2)
    mossy = await relay.register_character(mossy_asset)
    pip = await relay.register_character(pip_asset)

    usernames = {c.username for c in sim.characters.values()}
    assert {mossy.external_id, pip.external_id} == usernames
    assert mossy.provider == "relay"
    assert mossy.mention_token == "@" + mossy.external_id

    # the character wire: exact fields, window inside each clip, key only on the relay origin
    first, second = (r.json for r in sim.calls("create_character"))
    assert first == {"model": "sora-2-character", "url": mossy_asset.clip_url, "timestamps": "0,3"}
    assert second == {"model": "sora-2-character", "url": pip_asset.clip_url, "timestamps": "0,2"}
    fetches = sim.calls("file")
    assert len(fetches) == 2
    assert all("Authorization" not in r.headers for r in fetches)

    refs = (
        CharacterRef("mossy", mossy_asset, mossy),
        CharacterRef("pip", pip_asset, pip),
    )
    req = request("@Mossy dances with @pip in the rain, @MOSSY laughs", refs)
    assert relay.estimate(req) == 120_000
    result = await relay.submit(req)
    assert result.snapshot.status is JobStatus.QUEUED
    assert result.external_id in sim.tasks

    (create,) = sim.calls("create_video")
    assert create.method == "POST"
    assert create.headers["Authorization"] == f"Bearer {sim.api_key}"
    assert create.headers["Content-Type"] == "application/json"
    assert create.json == {
        "model": "sora-2",
        "prompt": f"@{mossy.external_id} dances with @{pip.external_id} in the rain, @{mossy.external_id} laughs",
        "seconds": "10",
        "size": "720x1280",
    }
    assert isinstance(create.json["seconds"], str)

    final, seen = await wait_terminal(relay, result.external_id)
    assert final.status is JobStatus.SUCCEEDED
    assert final.progress == 100
    assert final.download_url == f"{sim.base_url}/v1/videos/{result.external_id}/content"
    assert any(s.status is JobStatus.RUNNING for s in seen)

    dest = tmp_path / "out" / "video.mp4"
    got = await relay.download(final, dest, max_bytes=10 * 1024 * 1024)
    assert got.path == dest
    assert got.size == len(sim.video) == dest.stat().st_size
    assert got.content_type == "video/mp4"
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == sim.video_sha256
    assert_playable(dest)
    assert not list(dest.parent.glob("*.part"))
    assert sim.calls("content")[0].headers["Authorization"] == f"Bearer {sim.api_key}"
    assert relay.actual_cost(req, final) == 120_000


async def test_pro_landscape_wire_and_flat_price(sim, relay):
    req = request("a lighthouse at dusk", seconds=15, orientation=Orientation.LANDSCAPE, quality=Quality.PRO)
    assert relay.estimate(req) == relay.estimate(replace(req, seconds=10)) == 800_000
    await relay.submit(req)
    assert sim.calls("create_video")[0].json == {
        "model": "sora-2-pro",
        "prompt": "a lighthouse at dusk",
        "seconds": "15",
        "size": "1280x720",
    }


async def test_capabilities_and_reconcile(relay):
    caps = relay.capabilities
    assert caps.seconds == (10, 15)
    assert caps.needs_handle and caps.paid and not caps.batch_status
    assert caps.mention_style == "at_handle"
    assert await relay.reconcile(request()) is None


async def test_base_url_with_v1_suffix_still_reaches_the_relay(sim, client):
    relay = provider_for(sim, client, base_url=sim.base_url + "/v1/")
    result = await relay.submit(request())
    assert result.external_id in sim.tasks


def test_unknown_mentions_lose_their_at_sign():
    handle = CharacterHandle("relay", "abc.def", "@abc.def")
    ref = CharacterRef("mossy", None, handle)  # type: ignore[arg-type]
    assert render_prompt("@Mossy meets @sama and mail a@b.com", [ref]) == "@abc.def meets sama and mail a@b.com"
    assert render_prompt("@mossy. Then @mossy!", [ref]) == "@abc.def. Then @abc.def!"


def test_character_window_stays_inside_the_clip():
    assert character_window(4.0, 0.5) == (0, 3)
    assert character_window(2.5, 2.0) == (0, 2)
    assert character_window(20.0, 18.7) == (17, 20)
    assert character_window(20.0, -3) == (0, 3)
    assert character_window(1.2, 0) == (0, 1)
    with pytest.raises(Rejected) as info:
        character_window(0.8, 0)
    assert info.value.reason is RejectReason.INVALID


async def test_window_near_the_end_is_clamped_and_accepted(sim, relay):
    handle = await relay.register_character(asset_for(sim, seconds=4.0, start=3.6))
    assert sim.calls("create_character")[0].json["timestamps"] == "1,4"
    assert handle.external_id in {c.username for c in sim.characters.values()}


# --- characters -----------------------------------------------------------------------------------


async def test_character_without_clip_url_is_unsupported_without_http(sim, relay):
    with pytest.raises(Rejected) as info:
        await relay.register_character(asset_for(sim, url=False))
    assert info.value.reason is RejectReason.UNSUPPORTED
    assert "clip URL" in info.value.message
    assert sim.requests == []


async def test_async_character_variant_is_polled_until_it_has_a_username(client):
    sim = RelaySim(async_characters=True, character_seconds=0.2)
    await sim.start()
    try:
        relay = provider_for(sim, client)
        handle = await relay.register_character(asset_for(sim))
        (char,) = sim.characters.values()
        assert char.id.startswith("char_")
        assert handle.mention_token == "@" + char.username
        polls = sim.calls("get_character")
        assert len(polls) >= 2
        assert all(r.path == f"/sora/v1/characters/{char.id}" for r in polls)
    finally:
        await sim.close()


async def test_async_character_that_never_finishes_is_bounded(client):
    sim = RelaySim(async_characters=True, character_seconds=60)
    await sim.start()
    try:
        relay = provider_for(sim, client, timeouts=replace(FAST, character_wait=0.3))
        started = time.monotonic()
        with pytest.raises(Unavailable) as info:
            await relay.register_character(asset_for(sim))
        assert info.value.code == "character_timeout"
        assert time.monotonic() - started < 2
    finally:
        await sim.close()


async def test_character_from_a_finished_task(sim, relay):
    result = await relay.submit(request("a fox in the snow"))
    await wait_terminal(relay, result.external_id)
    handle = await relay.register_character_from_task("Fox", result.external_id, 2, 4.5)
    call = sim.calls("create_character")[-1]
    assert call.json == {"model": "sora-2-character", "from_task": result.external_id, "timestamps": "2,4.5"}
    assert handle.external_id in {c.username for c in sim.characters.values()}

    before = len(sim.requests)
    for start, end in ((0, 5), (3, 3.5), (-1, 1)):
        with pytest.raises(Rejected):
            await relay.register_character_from_task("Fox", result.external_id, start, end)
    assert len(sim.requests) == before


async def test_character_from_an_unfinished_task_is_refused(sim, relay):
    result = await relay.submit(request("a fox in the snow"))
    with pytest.raises(Rejected) as info:
        await relay.register_character_from_task("Fox", result.external_id, 0, 3)
    assert info.value.reason is RejectReason.INVALID


@pytest.mark.parametrize(
    ("fault", "expected", "reason"),
    [
        (Fault.human_likeness(), Rejected, RejectReason.UNSUPPORTED),
        (Fault.moderation(), Rejected, RejectReason.MODERATION),
        (Fault.token_invalidated(), AuthFailed, None),
        (Fault.no_available_tokens(), QuotaExhausted, None),
        (Fault.heavy_load(), Unavailable, None),
        (Fault.server_error(502), Unavailable, None),
        (Fault.malformed_json(), Unavailable, None),
    ],
)
async def test_character_faults(sim, relay, fault, expected, reason):
    sim.fail("create_character", fault)
    with pytest.raises(expected) as info:
        await relay.register_character(asset_for(sim))
    if reason is not None:
        assert info.value.reason is reason
    assert len(sim.calls("create_character")) == 1


async def test_character_read_timeout_is_retryable_not_ambiguous(sim, client):
    relay = provider_for(sim, client, timeouts=replace(FAST, character_read=0.3))
    sim.fail("create_character", Fault.read_timeout(after_create=True))
    with pytest.raises(Unavailable):
        await relay.register_character(asset_for(sim))
    assert len(sim.characters) == 1  # the orphan costs one character fee at most


# --- the simulator validates like the relay -------------------------------------------------------


async def test_sim_rejects_what_the_relay_rejects(sim, client):
    auth = {"Authorization": f"Bearer {sim.api_key}"}
    good_clip = sim.host_file(sample_clip(2.0))

    async def post(path, body, headers=auth):
        return await client.post(sim.base_url + path, json=body, headers=headers)

    ok = {"model": "sora-2-character", "url": good_clip, "timestamps": "0,2"}
    assert (await post("/sora/v1/characters", ok, headers={})).status_code == 401
    for bad in (
        ok | {"timestamps": "0,4"},  # window too long
        ok | {"timestamps": "1,1.5"},  # window too short
        ok | {"timestamps": "1,3"},  # past the end of a 2 s clip
        ok | {"from_task": "video_x"},  # url and from_task together
        ok | {"url": sim.host_file(b"hello, not a video")},
        ok | {"model": "sora-2"},
    ):
        assert (await post("/sora/v1/characters", bad)).status_code == 400, bad
    assert (await post("/sora/v1/characters", ok)).status_code == 200

    video = {"model": "sora-2", "prompt": "a cat", "seconds": "10", "size": "720x1280"}
    for bad in (
        video | {"seconds": 10},
        video | {"seconds": "12"},
        video | {"size": "1024x1024"},
        video | {"prompt": "@ghost.user waves"},
    ):
        assert (await post("/v1/videos", bad)).status_code == 400, bad
    assert (await post("/v1/videos", video | {"model": "sora-3"})).status_code == 503
    assert (await post("/v1/videos", video)).status_code == 200


# --- submit faults --------------------------------------------------------------------------------

CREATE_FAULTS = [
    pytest.param(Fault.rate_limited("7"), RateLimited, None, False, id="429"),
    pytest.param(Fault.heavy_load(), Unavailable, None, False, id="503-heavy-load"),
    pytest.param(Fault.server_error(503), Unavailable, None, False, id="503"),
    pytest.param(Fault.server_error(500, after_create=True), Ambiguous, None, True, id="500"),
    pytest.param(Fault.server_error(502, after_create=True), Ambiguous, None, True, id="502"),
    pytest.param(Fault.server_error(504, after_create=True), Ambiguous, None, True, id="504"),
    pytest.param(Fault.server_error(524, after_create=True), Ambiguous, None, True, id="524"),
    pytest.param(Fault.read_timeout(after_create=True), Ambiguous, None, True, id="read-timeout-after-create"),
    pytest.param(Fault.connection_reset(after_create=True), Ambiguous, None, True, id="reset-after-create"),
    pytest.param(Fault.connection_reset(), Ambiguous, None, False, id="reset"),
    pytest.param(Fault.malformed_json(after_create=True), Ambiguous, None, True, id="malformed-200"),
    pytest.param(Fault.moderation(), Rejected, RejectReason.MODERATION, False, id="moderation"),
    pytest.param(Fault.model_not_found(), Rejected, RejectReason.UNSUPPORTED, False, id="model-not-found"),
    pytest.param(Fault.sentinel_block(), Rejected, RejectReason.INVALID, False, id="sentinel-block"),
    pytest.param(Fault.invalid_request(), Rejected, RejectReason.INVALID, False, id="invalid-request"),
    pytest.param(Fault.token_invalidated(), AuthFailed, None, False, id="token-invalidated"),
    pytest.param(Fault.no_available_tokens(), QuotaExhausted, None, False, id="no-available-tokens"),
    pytest.param(
        Fault.http(403, {"error": {"message": "用户额度不足", "code": "insufficient_user_quota"}}),
        QuotaExhausted,
        None,
        False,
        id="new-api-quota",
    ),
]


@pytest.mark.parametrize(("fault", "expected", "reason", "created"), CREATE_FAULTS)
async def test_submit_fault_mapping(sim, relay, fault, expected, reason, created):
    sim.fail("create_video", fault)
    with pytest.raises(expected) as info:
        await relay.submit(request())
    error = info.value
    if reason is not None:
        assert error.reason is reason
    if expected is RateLimited:
        assert error.retry_after == 7
    # never resubmitted, and the sim created a task exactly when the fault came after creation
    assert len(sim.calls("create_video")) == 1
    assert len(sim.tasks) == (1 if created else 0)
    assert isinstance(error, NotSent) != (expected in (Rejected, Ambiguous))


async def test_read_timeout_after_create_is_ambiguous_and_created_one_task(sim, relay):
    sim.fail("create_video", Fault.read_timeout(after_create=True))
    started = time.monotonic()
    with pytest.raises(Ambiguous):
        await relay.submit(request())
    assert time.monotonic() - started < 2  # the explicit read timeout, not the sim's 30 s hang
    assert len(sim.tasks) == 1
    assert len(sim.calls("create_video")) == 1
    assert await relay.reconcile(request()) is None


async def test_wrong_key_is_auth_failed(sim, client):
    relay = provider_for(sim, client, key="sk-wrong-key-000000")
    with pytest.raises(AuthFailed):
        await relay.submit(request())
    assert sim.tasks == {}


async def test_connect_error_is_not_sent(client):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    relay = RelayProvider(
        client, api_key=SecretStr("sk-x"), base_url=f"http://127.0.0.1:{port}", prices=PriceBook(), timeouts=FAST
    )
    with pytest.raises(Unavailable):
        await relay.submit(request())
    with pytest.raises(Unavailable):
        await relay.status(["video_1"])


async def test_invalid_requests_are_refused_before_http(sim, relay):
    asset = asset_for(sim)
    handle = CharacterHandle("relay", "abc.def", "@abc.def")
    cases = [
        request(seconds=12),
        request("@a @b @c @d", [CharacterRef(k, asset, handle) for k in "abcd"]),
        request("@mossy waves", [CharacterRef("mossy", asset, None)]),
        request("@mossy waves", [CharacterRef("mossy", asset, CharacterHandle("kling", "1", "@element_1"))]),
    ]
    for req in cases:
        with pytest.raises(Rejected) as info:
            await relay.submit(req)
        assert info.value.reason is RejectReason.INVALID
    assert sim.calls("create_video") == []


async def test_stale_handle_is_rejected_by_the_relay(sim, relay):
    ref = CharacterRef("mossy", asset_for(sim), CharacterHandle("relay", "gone.user", "@gone.user"))
    with pytest.raises(Rejected) as info:
        await relay.submit(request("@mossy waves", [ref]))
    assert info.value.reason is RejectReason.INVALID
    assert info.value.code == "character_not_found"
    assert sim.tasks == {}


async def test_unknown_at_word_is_defanged_on_the_wire(sim, relay):
    sim.add_character("sama")  # a public cameo the member did not choose
    await relay.submit(request("@sama sings by the lake"))
    assert sim.calls("create_video")[0].json["prompt"] == "sama sings by the lake"


# --- status and job outcomes ----------------------------------------------------------------------

STATUS_FAULTS = [
    pytest.param(Fault.rate_limited("3"), RateLimited, id="429"),
    pytest.param(Fault.heavy_load(), Unavailable, id="503"),
    pytest.param(Fault.server_error(500), Unavailable, id="500"),
    pytest.param(Fault.server_error(502), Unavailable, id="502"),
    pytest.param(Fault.server_error(504), Unavailable, id="504"),
    pytest.param(Fault.server_error(524), Unavailable, id="524"),
    pytest.param(Fault.read_timeout(after_create=False), Unavailable, id="read-timeout"),
    pytest.param(Fault.connection_reset(), Unavailable, id="reset"),
    pytest.param(Fault.malformed_json(), Unavailable, id="malformed"),
    pytest.param(Fault.token_invalidated(), AuthFailed, id="token-invalidated"),
]


@pytest.mark.parametrize(("fault", "expected"), STATUS_FAULTS)
async def test_status_faults_are_retryable_reads(sim, relay, fault, expected):
    result = await relay.submit(request())
    sim.fail("get_video", fault)
    with pytest.raises(expected) as info:
        await relay.status([result.external_id])
    assert not isinstance(info.value, Ambiguous)
    if expected is RateLimited:
        assert info.value.retry_after == 3
    # the job itself is untouched and the next poll works
    assert (await relay.status([result.external_id]))[result.external_id].status in (
        JobStatus.QUEUED,
        JobStatus.RUNNING,
        JobStatus.SUCCEEDED,
    )


async def test_status_of_many_ids_leaves_unknown_ones_out(sim, relay):
    a = await relay.submit(request("one"))
    b = await relay.submit(request("two"))
    got = await relay.status([a.external_id, "video_unknown", b.external_id])
    assert set(got) == {a.external_id, b.external_id}
    assert len(sim.calls("get_video")) == 3


async def test_moderation_at_completion(sim, relay):
    sim.queue_outcomes(Outcome.MODERATION)
    result = await relay.submit(request())
    final, _ = await wait_terminal(relay, result.external_id)
    assert final.status is JobStatus.FAILED
    assert isinstance(final.error, Rejected)
    assert final.error.reason is RejectReason.MODERATION
    assert final.download_url is None


async def test_generic_failure_at_completion(sim, relay):
    sim.queue_outcomes(Outcome.FAIL)
    result = await relay.submit(request())
    final, _ = await wait_terminal(relay, result.external_id)
    assert final.status is JobStatus.FAILED
    assert isinstance(final.error, Unavailable)
    assert final.error.code == "generation_failed"


async def test_unknown_status_is_kept_running_then_completes(sim, relay):
    sim.queue_outcomes(Outcome.UNKNOWN_STATUS)
    result = await relay.submit(request())
    final, seen = await wait_terminal(relay, result.external_id)
    odd = [s for s in seen if s.raw_status == "rendering_v2"]
    assert odd
    assert all(s.status is JobStatus.RUNNING for s in odd)
    assert final.status is JobStatus.SUCCEEDED


async def test_stuck_job_stays_running(sim, relay):
    sim.queue_outcomes(Outcome.STUCK)
    result = await relay.submit(request())
    task = sim.tasks[result.external_id]
    polls = 0
    while time.monotonic() < task.created + 3 * sim.job_seconds or polls < 3:
        snap = (await relay.status([result.external_id]))[result.external_id]
        assert snap.status is JobStatus.RUNNING
        assert snap.progress == 42
        polls += 1
        await asyncio.sleep(0.05)


# --- download -------------------------------------------------------------------------------------


async def finished(sim, relay):
    result = await relay.submit(request())
    final, _ = await wait_terminal(relay, result.external_id)
    assert final.status is JobStatus.SUCCEEDED
    return final


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_download_byte_cap(client, tmp_path, chunked):
    sim = RelaySim(chunked_content=chunked)
    await sim.start()
    try:
        relay = provider_for(sim, client)
        final = await finished(sim, relay)
        dest = tmp_path / "video.mp4"
        with pytest.raises(Rejected) as info:
            await relay.download(final, dest, max_bytes=len(sim.video) - 1)
        assert info.value.reason is RejectReason.INVALID
        assert not dest.exists()
        assert list(tmp_path.iterdir()) == []
        got = await relay.download(final, dest, max_bytes=len(sim.video))
        assert got.size == len(sim.video)
        assert hashlib.sha256(dest.read_bytes()).hexdigest() == sim.video_sha256
    finally:
        await sim.close()


async def test_download_from_cdn_never_sends_the_key(client, tmp_path):
    sim = RelaySim(video_url_mode="cdn")
    await sim.start()
    try:
        relay = provider_for(sim, client)
        final = await finished(sim, relay)
        assert final.download_url.startswith(sim.cdn_url)
        got = await relay.download(final, tmp_path / "v.mp4", max_bytes=1 << 24)
        assert hashlib.sha256(got.path.read_bytes()).hexdigest() == sim.video_sha256
        (fetch,) = sim.calls("file")
        assert "Authorization" not in fetch.headers
        assert sim.calls("content") == []
    finally:
        await sim.close()


async def test_download_without_video_url_uses_the_content_route(client, tmp_path):
    sim = RelaySim(video_url_mode="none")
    await sim.start()
    try:
        relay = provider_for(sim, client)
        final = await finished(sim, relay)
        assert final.download_url == f"{sim.base_url}/v1/videos/{final.external_id}/content"
        got = await relay.download(final, tmp_path / "v.mp4", max_bytes=1 << 24)
        assert got.size == len(sim.video)
    finally:
        await sim.close()


async def test_expired_or_failed_downloads(sim, relay, tmp_path):
    gone = JobSnapshot("video_gone", JobStatus.SUCCEEDED)
    with pytest.raises(Rejected) as info:
        await relay.download(gone, tmp_path / "a.mp4", max_bytes=1 << 24)
    assert info.value.reason is RejectReason.INVALID

    final = await finished(sim, relay)
    sim.fail("content", Fault.server_error(502))
    with pytest.raises(Unavailable):
        await relay.download(final, tmp_path / "b.mp4", max_bytes=1 << 24)
    sim.fail("content", Fault.connection_reset())
    with pytest.raises(Unavailable):
        await relay.download(final, tmp_path / "c.mp4", max_bytes=1 << 24)
    assert list(tmp_path.iterdir()) == []


# --- secrets --------------------------------------------------------------------------------------


async def test_the_key_never_leaks(sim, relay, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    key = sim.api_key
    echo = Fault.http(400, {"error": {"message": f"bad header Authorization: Bearer {key}", "code": "bad"}})
    in_code = Fault.http(500, {"error": {"message": "oops", "code": key}})
    errors: list[ProviderError] = []
    faults = [*(p.values[0] for p in CREATE_FAULTS), in_code, echo]
    for fault in faults:
        sim.fail("create_video", fault)
        with pytest.raises(ProviderError) as info:
            await relay.submit(request())
        errors.append(info.value)
    for p in STATUS_FAULTS:
        sim.fail("get_video", p.values[0])
        with pytest.raises(ProviderError) as info:
            await relay.status(["video_x"])
        errors.append(info.value)
    sim.fail("create_character", echo)
    with pytest.raises(ProviderError) as info:
        await relay.register_character(asset_for(sim))
    errors.append(info.value)

    assert len(errors) == len(faults) + len(STATUS_FAULTS) + 1
    for error in errors:
        assert key not in str(error)
        assert key not in repr(error)
        assert key not in error.message
    assert "***" in errors[len(faults) - 1].message  # the echoed key was redacted, not dropped blindly
    assert caplog.records  # the failures were logged...
    assert key not in caplog.text  # ...without the key
    assert key not in repr(relay)
