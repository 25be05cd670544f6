"""Contract tests of the `openai` adapter against the loopback Videos API simulator."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import time
import traceback
from pathlib import Path

import av
import httpx
import pytest
from pydantic import SecretStr

from bot.providers import openai as openai_adapter
from bot.providers.base import (
    Ambiguous,
    AuthFailed,
    CharacterAsset,
    CharacterHandle,
    CharacterRef,
    GenerationRequest,
    JobSnapshot,
    JobStatus,
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
from bot.providers.http_errors import retry_after_seconds
from bot.providers.openai import OpenAIProvider
from bot.providers.pricing import PriceBook
from discord_sandbox.clips import make_clip
from tests.conftest import Simulators
from tests.fakes.openai_sim import Fault, OpenAISim, Upload, probe_mp4

KEY = "sk-proj-SIMSECRET-7f3a9c2e5b1d4068"
FAST = httpx.Timeout(connect=2.0, read=2.0, write=2.0, pool=2.0)
SHORT_READ = httpx.Timeout(connect=2.0, read=0.5, write=2.0, pool=2.0)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("openai-clips")
    return {
        "long": make_clip(root / "long.mp4", seconds=6.0, size=(320, 180), fps=12, blur=()),
        "short": make_clip(root / "short.mp4", seconds=3.0, size=(180, 320), fps=12, blur=()),
    }


@pytest.fixture
async def sim(sims: Simulators) -> OpenAISim:
    return await sims.start(OpenAISim(api_key=KEY, job_seconds=0.4, poll_after_ms=150))


def make_provider(
    client: httpx.AsyncClient, base_url: str, *, key: str = KEY, timeout: httpx.Timeout = FAST
) -> OpenAIProvider:
    return OpenAIProvider(
        client,
        api_key=SecretStr(key),
        base_url=base_url,
        prices=PriceBook(),
        timeout=timeout,
        download_timeout=timeout,
    )


@pytest.fixture
def provider(client: httpx.AsyncClient, sim: OpenAISim) -> OpenAIProvider:
    return make_provider(client, sim.base_url)


def asset(cid: int, name: str, clip: Path, duration: float, start: float = 0.0) -> CharacterAsset:
    return CharacterAsset(
        character_id=cid,
        name=name,
        description=f"{name}, a test character",
        clip_path=clip,
        frame_paths=(),
        clip_duration=duration,
        best_window_start=start,
    )


def seeded(sim: OpenAISim, name: str, tmp: Path) -> CharacterRef:
    """A character already registered on the simulator (skips the upload for wire tests)."""
    cid = f"char_{name.lower()}0001"
    sim.characters[cid] = name
    return CharacterRef(
        key=name.casefold(),
        asset=asset(len(sim.characters), name, tmp / "unused.mp4", 3.0),
        handle=CharacterHandle(provider="openai", external_id=cid, mention_token=name),
    )


def req(
    prompt: str,
    chars: tuple[CharacterRef, ...] = (),
    *,
    seconds: int = 8,
    orientation: Orientation = Orientation.LANDSCAPE,
    quality: Quality = Quality.STANDARD,
    ref: str = "job-1",
) -> GenerationRequest:
    return GenerationRequest(prompt, seconds, orientation, quality, chars, client_ref=ref)


async def poll_until_terminal(provider: OpenAIProvider, vid: str, timeout: float = 5.0) -> list[JobSnapshot]:
    seen: list[JobSnapshot] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = (await provider.status([vid]))[vid]
        seen.append(snap)
        if snap.status.terminal:
            return seen
        await asyncio.sleep(min(snap.poll_after or 0.1, 0.2))
    raise AssertionError(f"job {vid} not terminal after {timeout}s: {seen[-1] if seen else None}")


# --- happy path and wire shape --------------------------------------------------------------------


async def test_happy_path_register_submit_poll_download(
    provider: OpenAIProvider, sim: OpenAISim, clips: dict[str, Path], tmp_path: Path
) -> None:
    mossy = await provider.register_character(asset(1, "Mossy", clips["long"], 6.0, start=1.0))
    pip = await provider.register_character(asset(2, "Pip", clips["short"], 3.0))
    assert mossy.provider == pip.provider == "openai"
    assert mossy.external_id.startswith("char_") and mossy.external_id in sim.characters
    assert (mossy.mention_token, pip.mention_token) == ("Mossy", "Pip")

    uploads = sim.requests_to("POST", "/videos/characters")
    assert [u.form["name"] for u in uploads if u.form] == ["Mossy", "Pip"]
    durations = []
    for u in uploads:
        assert u.form is not None and isinstance(u.form["video"], Upload)
        duration, _, _ = probe_mp4(u.form["video"].data)
        durations.append(duration)
    assert 3.8 <= durations[0] <= 4.1  # the 6 s clip was trimmed to a 4 s window
    assert 2.8 <= durations[1] <= 3.1  # the 3 s clip fits as it is

    chars = (
        CharacterRef("mossy", asset(1, "Mossy", clips["long"], 6.0), mossy),
        CharacterRef("pip", asset(2, "Pip", clips["short"], 3.0), pip),
    )
    result = await provider.submit(req("@mossy chases @Pip through a lantern-lit market", chars))
    assert result.external_id in sim.jobs
    assert result.snapshot.status is JobStatus.QUEUED
    assert sim.jobs[result.external_id].prompt == "Mossy chases Pip through a lantern-lit market"
    assert sim.jobs[result.external_id].characters == [mossy.external_id, pip.external_id]

    seen = await poll_until_terminal(provider, result.external_id)
    final = seen[-1]
    assert final.status is JobStatus.SUCCEEDED and final.progress == 100 and final.error is None
    progresses = [s.progress for s in seen if s.progress is not None]
    assert progresses == sorted(progresses)

    dest = tmp_path / "out.mp4"
    got = await provider.download(final, dest, max_bytes=10 * 1024 * 1024)
    data = dest.read_bytes()
    assert got.path == dest and got.size == len(data) == len(sim.video_bytes)
    assert hashlib.sha256(data).hexdigest() == sim.video_sha256
    assert got.content_type == "video/mp4"
    with av.open(str(dest)) as container:
        assert next(container.decode(video=0)).width == 128  # a playable video, not just bytes


async def test_create_request_on_the_wire(provider: OpenAIProvider, sim: OpenAISim, tmp_path: Path) -> None:
    chars = (seeded(sim, "Mossy", tmp_path), seeded(sim, "Pip", tmp_path))
    request = req(
        "@MOSSY and @pip dance; @nobody watches",
        chars,
        seconds=10,
        orientation=Orientation.PORTRAIT,
        quality=Quality.PRO,
        ref="job-42",
    )
    await provider.submit(request)
    (sent,) = sim.creates()
    assert sent.content_type == "application/json"
    assert sent.json == {
        "model": "sora-2-pro",
        "prompt": "Mossy and Pip dance; @nobody watches",
        "size": "720x1280",
        "seconds": "12",  # 10 s fits up to the next allowed duration, sent as a string
        "characters": [{"id": "char_mossy0001"}, {"id": "char_pip0001"}],
    }
    assert isinstance(sent.json["seconds"], str)
    assert sent.authorized and "authorization" not in {k.lower() for k in sent.headers}
    assert sent.headers.get("X-Client-Request-Id") == "job-42"
    # the estimate covers exactly what was sent: pro 720p is $0.30/s
    assert provider.estimate(request) == 12 * 300_000


async def test_no_characters_omits_the_field(provider: OpenAIProvider, sim: OpenAISim) -> None:
    await provider.submit(req("a teapot in the rain", seconds=4))
    assert sim.creates()[0].json == {
        "model": "sora-2",
        "prompt": "a teapot in the rain",
        "size": "1280x720",
        "seconds": "4",
    }


@pytest.mark.parametrize(
    ("quality", "seconds", "expected"),
    [
        (Quality.STANDARD, 4, 400_000),
        (Quality.STANDARD, 20, 2_000_000),
        (Quality.PRO, 8, 2_400_000),
        (Quality.PRO, 25, 6_000_000),
    ],
)
def test_estimate_is_price_per_second_times_sent_seconds(
    quality: Quality, seconds: int, expected: int, client: httpx.AsyncClient
) -> None:
    provider = make_provider(client, "http://127.0.0.1:9/v1")
    assert provider.estimate(req("x", seconds=seconds, quality=quality)) == expected


async def test_more_than_two_characters_rejected_before_http(
    provider: OpenAIProvider, sim: OpenAISim, tmp_path: Path
) -> None:
    chars = tuple(seeded(sim, n, tmp_path) for n in ("Ann", "Bob", "Cat"))
    with pytest.raises(Rejected) as info:
        await provider.submit(req("@ann @bob @cat", chars))
    assert info.value.reason is RejectReason.INVALID
    assert sim.requests == []


async def test_character_without_openai_handle_rejected_before_http(
    provider: OpenAIProvider, sim: OpenAISim, tmp_path: Path
) -> None:
    relay_handle = CharacterHandle(provider="relay", external_id="abc", mention_token="@abc.def")
    ref = CharacterRef("mossy", asset(1, "Mossy", tmp_path / "x.mp4", 3.0), relay_handle)
    with pytest.raises(Rejected, match="not registered"):
        await provider.submit(req("@mossy waves", (ref,)))
    assert sim.requests == []


async def test_simulator_is_strict_like_the_api(sim: OpenAISim, client: httpx.AsyncClient, tmp_path: Path) -> None:
    """The adapter's wire tests only mean something if the simulator refuses what the API refused."""
    auth = {"Authorization": f"Bearer {KEY}"}
    url = sim.base_url + "/videos"
    seeded(sim, "Mossy", tmp_path)
    cases = [
        ({"prompt": "x", "seconds": 8}, 400),  # seconds must be a string
        ({"prompt": "x", "seconds": "10"}, 400),
        ({"prompt": "x", "model": "sora-2", "size": "1920x1080"}, 400),  # 1080p is pro only
        ({"prompt": "x", "characters": [{"id": "char_mossy0001"}]}, 400),  # name not in prompt
        ({"prompt": "Mossy", "characters": [{"id": "char_nope"}]}, 404),
        ({"prompt": "Mossy", "characters": [{"id": "char_mossy0001"}] * 3}, 400),
        ({"prompt": "x", "n": 2}, 400),
        ({"prompt": "x", "model": "sora-3"}, 404),
    ]
    for body, status in cases:
        r = await client.post(url, json=body, headers=auth)
        assert r.status_code == status, (body, r.text)
    r = await client.post(url, json={"prompt": "Mossy", "characters": [{"id": "char_mossy0001"}]}, headers=auth)
    assert r.status_code == 200
    assert (await client.post(url, json={"prompt": "x"})).status_code == 401
    assert len(sim.jobs) == 1


# --- error classification on create ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "kwargs", "expected", "job_created"),
    [
        (Fault.RATE_LIMIT, {"retry_after_ms": 1500}, RateLimited, False),
        (Fault.INSUFFICIENT_QUOTA, {}, QuotaExhausted, False),
        (Fault.AUTH, {}, AuthFailed, False),
        (Fault.UNAVAILABLE, {}, Unavailable, False),
        (Fault.OVERLOADED, {}, Unavailable, False),
        (Fault.SERVER_ERROR, {}, Ambiguous, False),
        (Fault.BAD_GATEWAY, {"create_job": True}, Ambiguous, True),
        (Fault.GATEWAY_TIMEOUT, {}, Ambiguous, False),
        (Fault.CONNECTION_RESET, {}, Ambiguous, True),
        (Fault.MALFORMED_JSON, {}, Ambiguous, True),
    ],
)
async def test_create_faults_are_classified(
    provider: OpenAIProvider,
    sim: OpenAISim,
    fault: Fault,
    kwargs: dict[str, object],
    expected: type[ProviderError],
    job_created: bool,
) -> None:
    sim.script("create", fault, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ProviderError) as info:
        await provider.submit(req("a fox in snow"))
    assert type(info.value) is expected
    assert len(sim.creates()) == 1  # never retried inside the adapter
    assert len(sim.jobs) == int(job_created)
    if fault is Fault.RATE_LIMIT:
        assert info.value.retry_after == pytest.approx(1.5)  # retry-after-ms wins over retry-after: 2


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "Thu, 01 Jan 2026 00:00:30 GMT"}, 30.0),  # HTTP-date form
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_header_forms(headers: dict[str, str], expected: float | None) -> None:
    now = 1767225600.0  # 2026-01-01T00:00:00Z
    assert retry_after_seconds(headers, now=now) == (pytest.approx(expected) if expected is not None else None)


async def test_rate_limit_with_only_retry_after_seconds(provider: OpenAIProvider, sim: OpenAISim) -> None:
    sim.script("create", Fault.RATE_LIMIT, retry_after=3)
    with pytest.raises(RateLimited) as info:
        await provider.submit(req("a fox"))
    assert info.value.retry_after == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [(Fault.MODERATION, RejectReason.MODERATION), (Fault.MODEL_NOT_FOUND, RejectReason.UNSUPPORTED)],
)
async def test_create_rejections(provider: OpenAIProvider, sim: OpenAISim, fault: Fault, reason: RejectReason) -> None:
    sim.script("create", fault)
    with pytest.raises(Rejected) as info:
        await provider.submit(req("a fox"))
    assert info.value.reason is reason
    assert sim.jobs == {}


async def test_unknown_model_at_endpoint_is_unsupported(client: httpx.AsyncClient) -> None:
    sim = await OpenAISim(api_key=KEY, models=("muse-1",)).start()
    try:
        with pytest.raises(Rejected) as info:
            await make_provider(client, sim.base_url).submit(req("a fox"))
        assert info.value.reason is RejectReason.UNSUPPORTED and info.value.code == "model_not_found"
    finally:
        await sim.close()


async def test_stale_character_handle_is_invalid(provider: OpenAIProvider, sim: OpenAISim, tmp_path: Path) -> None:
    ref = seeded(sim, "Mossy", tmp_path)
    sim.characters.clear()  # the provider forgot it
    with pytest.raises(Rejected) as info:
        await provider.submit(req("@mossy waves", (ref,)))
    assert info.value.reason is RejectReason.INVALID and "not found" in info.value.message


async def test_connect_error_is_not_sent(client: httpx.AsyncClient) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    provider = make_provider(client, f"http://127.0.0.1:{port}/v1")
    with pytest.raises(Unavailable):
        await provider.submit(req("a fox"))
    with pytest.raises(Unavailable):
        await provider.status(["video_x"])


async def test_read_timeout_after_create_is_ambiguous_and_reconciled(
    client: httpx.AsyncClient, sim: OpenAISim, provider: OpenAIProvider
) -> None:
    # the same request made two minutes ago, and one with another length: neither is ours
    decoy = await provider.submit(req("a fox in the rain", ref="job-0"))
    sim.jobs[decoy.external_id].created_at -= 120
    await provider.submit(req("a fox in the rain", seconds=4, ref="job-00"))
    provider = make_provider(client, sim.base_url, timeout=SHORT_READ)
    request = req("a fox in the rain", ref="job-1")
    sim.script("create", Fault.READ_TIMEOUT, delay=5.0)
    with pytest.raises(Ambiguous):
        await provider.submit(request)
    assert len(sim.creates()) == 3 and len(sim.jobs) == 3  # sent once, created once
    (created,) = (j for j in sim.jobs.values() if j.id != decoy.external_id and j.seconds == "8")

    assert await provider.reconcile(request) == created.id  # the one created closest to our send
    # after a restart there is no send time to tell the two apart: no guess
    assert await make_provider(client, sim.base_url).reconcile(request) is None
    lists = sim.requests_to("GET", "/videos")
    assert lists and lists[0].query["order"] == "desc" and int(lists[0].query["limit"]) > 0


async def test_reconcile_finds_nothing_when_no_job_was_created(provider: OpenAIProvider, sim: OpenAISim) -> None:
    request = req("a heron at dawn")
    sim.script("create", Fault.SERVER_ERROR)
    with pytest.raises(Ambiguous):
        await provider.submit(request)
    assert await provider.reconcile(request) is None


async def test_reconcile_pages_through_the_list(
    provider: OpenAIProvider, sim: OpenAISim, client: httpx.AsyncClient
) -> None:
    request = req("the one to find")
    sim.script("create", Fault.GATEWAY_TIMEOUT, create_job=True)
    with pytest.raises(Ambiguous):
        await provider.submit(request)
    for i in range(60):  # newer jobs push it past the first page of 50
        await provider.submit(req(f"filler {i}", ref=f"f{i}"))
    target = next(j for j in sim.jobs.values() if j.prompt == "the one to find")
    assert await provider.reconcile(request) == target.id
    # a unique match is found without any memory of the send (after a restart)
    assert await make_provider(client, sim.base_url).reconcile(request) == target.id
    assert any("after" in r.query for r in sim.requests_to("GET", "/videos"))


# --- status ---------------------------------------------------------------------------------------


async def test_status_poll_hint_and_unknown_ids(provider: OpenAIProvider, sim: OpenAISim) -> None:
    result = await provider.submit(req("a fox"))
    assert result.snapshot.poll_after == pytest.approx(0.15)
    snaps = await provider.status([result.external_id, "video_unknown", result.external_id])
    assert set(snaps) == {result.external_id}  # unknown ids are left out, duplicates collapse
    assert snaps[result.external_id].poll_after == pytest.approx(0.15)
    # two ids: the known one is read from the list, the unknown one is looked up (404) singly
    assert len(sim.requests_to("GET", "/videos")) == 1
    assert not sim.requests_to("GET", f"/videos/{result.external_id}")
    assert len(sim.requests_to("GET", "/videos/video_unknown")) == 1
    single = await provider.status([result.external_id])
    assert single[result.external_id].poll_after == pytest.approx(0.15)
    assert len(sim.requests_to("GET", f"/videos/{result.external_id}")) == 1  # one id: a plain retrieve


# --- status of many jobs: list pages ----------------------------------------------------------------


async def submit_many(provider: OpenAIProvider, sim: OpenAISim, n: int) -> list[str]:
    """`n` jobs, returned oldest first (the simulator's creation order)."""
    gate = asyncio.Semaphore(8)  # a few at a time: a burst of hundreds of connects can overflow the backlog

    async def submit(i: int) -> None:
        async with gate:
            await provider.submit(req(f"a fox, take {i}"))

    await asyncio.gather(*(submit(i) for i in range(n)))
    sim.requests.clear()
    return list(sim.jobs)


def single_lookups(sim: OpenAISim) -> list[str]:
    return [r.path for r in sim.requests if r.method == "GET" and r.path.startswith("/v1/videos/")]


async def test_status_of_many_jobs_is_read_from_one_list_page(client: httpx.AsyncClient) -> None:
    sim = await OpenAISim(api_key=KEY, job_seconds=30.0, poll_after_ms=150).start()
    try:
        provider = make_provider(client, sim.base_url)
        ids = await submit_many(provider, sim, 30)
        snaps = await provider.status(ids)
        assert set(snaps) == set(ids)
        assert len(sim.requests_to("GET", "/videos")) == 1 and not single_lookups(sim)
        # the list says what a retrieve says
        for external_id in ids[:3]:
            (one,) = (await provider.status([external_id])).values()
            assert (one.external_id, one.status) == (snaps[external_id].external_id, snaps[external_id].status)
            listed = snaps[external_id].progress
            assert one.progress is not None and listed is not None
            assert abs(one.progress - listed) <= 5
    finally:
        await sim.close()


async def test_list_status_reports_finished_and_failed_jobs(provider: OpenAIProvider, sim: OpenAISim) -> None:
    sim.script("create", Fault.MODERATION_AT_END)
    ids = await submit_many(provider, sim, 3)

    async def all_terminal() -> dict[str, JobSnapshot]:
        deadline = time.monotonic() + 10
        while True:
            snaps = await provider.status(ids)
            if all(s.status.terminal for s in snaps.values()):
                return dict(snaps)
            assert time.monotonic() < deadline, snaps
            await asyncio.sleep(0.05)

    snaps = await all_terminal()
    assert [snaps[i].status for i in ids] == [JobStatus.FAILED, JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]
    failed = snaps[ids[0]].error
    assert isinstance(failed, Rejected) and failed.reason == RejectReason.MODERATION
    assert snaps[ids[1]].progress == 100
    assert not single_lookups(sim)


async def test_a_deep_walk_stops_when_pages_stop_paying(provider: OpenAIProvider, sim: OpenAISim) -> None:
    ids = await submit_many(provider, sim, 300)
    wanted = ids[-1:] + ids[:3]  # the newest (page one) and the 3 oldest (far down the list)
    snaps = await provider.status(wanted)
    assert set(snaps) == set(wanted)
    pages = sim.requests_to("GET", "/videos")
    singles = single_lookups(sim)
    # never more requests than one lookup per id, plus one: the oldest are looked up singly
    assert len(pages) + len(singles) <= len(wanted) + 1
    assert sorted(singles) == sorted(f"/v1/videos/{i}" for i in ids[:3])
    assert len(pages) == 2 and "after" in pages[1].query  # a second page, then it stopped paying
    # most of them needed a lookup of their own: the tracker is told to stop asking about every
    # job at once for a while (the class's own capabilities are untouched)
    assert not provider.capabilities.status_by_list and OpenAIProvider.capabilities.status_by_list
    sim.requests.clear()
    await provider.status(ids[-2:])
    assert not sim.requests_to("GET", "/videos") and len(single_lookups(sim)) == 2


async def test_walks_are_tried_again_after_a_pause(
    provider: OpenAIProvider, sim: OpenAISim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(openai_adapter, "LIST_RETRY", 0.0)
    ids = await submit_many(provider, sim, 300)
    await provider.status(ids[-1:] + ids[:3])  # stops paying: paused for LIST_RETRY
    sim.requests.clear()
    assert set(await provider.status(ids[-2:])) == set(ids[-2:])
    assert not single_lookups(sim)  # answered from the list again
    assert provider.capabilities.status_by_list


async def test_lookups_that_fail_after_a_good_walk_keep_what_the_walk_read(
    provider: OpenAIProvider, sim: OpenAISim
) -> None:
    ids = await submit_many(provider, sim, 300)
    wanted = ids[-2:] + ids[:1]
    sim.script("retrieve", Fault.SERVER_ERROR)  # the single lookup of the oldest fails
    with pytest.raises(StatusIncomplete) as caught:
        await provider.status(wanted)
    assert set(caught.value.answered) == set(ids[-2:])
    assert all(s.status in (JobStatus.QUEUED, JobStatus.RUNNING) for s in caught.value.answered.values())


async def test_concurrent_status_calls_share_one_walk(provider: OpenAIProvider, sim: OpenAISim) -> None:
    ids = await submit_many(provider, sim, 30)
    first, second = await asyncio.gather(provider.status(ids[:15]), provider.status(ids[15:]))
    assert set(first) | set(second) == set(ids)
    assert len(sim.requests_to("GET", "/videos")) == 1 and not single_lookups(sim)


async def test_a_server_without_a_video_list_is_read_one_job_at_a_time(client: httpx.AsyncClient) -> None:
    sim = await OpenAISim(api_key=KEY, job_seconds=5.0, list_supported=False).start()
    try:
        provider = make_provider(client, sim.base_url)
        ids = await submit_many(provider, sim, 3)
        assert set(await provider.status(ids)) == set(ids)
        assert len(sim.requests_to("GET", "/videos")) == 1 and len(single_lookups(sim)) == 3
        sim.requests.clear()
        assert set(await provider.status(ids)) == set(ids)
        assert not sim.requests_to("GET", "/videos"), "a refused list is not asked again"
        assert len(single_lookups(sim)) == 3
        assert not provider.capabilities.status_by_list  # the tracker stops asking about all at once
    finally:
        await sim.close()


@pytest.mark.parametrize("fault", [Fault.SERVER_ERROR, Fault.MALFORMED_JSON, Fault.CONNECTION_RESET])
async def test_a_failing_list_is_reported_and_tried_again_next_time(
    provider: OpenAIProvider, sim: OpenAISim, fault: Fault
) -> None:
    ids = await submit_many(provider, sim, 3)
    sim.script("list", fault)
    with pytest.raises(Unavailable):  # nothing read: the tracker asks job by job instead
        await provider.status(ids)
    assert not single_lookups(sim)
    assert set(await provider.status(ids)) == set(ids)  # the list is used again next time
    assert len(sim.requests_to("GET", "/videos")) == 2 and not single_lookups(sim)


@pytest.mark.parametrize(("fault", "expected"), [(Fault.RATE_LIMIT, RateLimited), (Fault.AUTH, AuthFailed)])
async def test_a_rate_limited_or_refused_list_is_not_hammered_with_lookups(
    provider: OpenAIProvider, sim: OpenAISim, fault: Fault, expected: type[ProviderError]
) -> None:
    ids = await submit_many(provider, sim, 3)
    sim.script("list", fault, retry_after_ms=2000)
    with pytest.raises(expected):
        await provider.status(ids)
    assert not single_lookups(sim)


async def test_no_poll_hint_means_none(client: httpx.AsyncClient) -> None:
    sim = await OpenAISim(api_key=KEY, poll_after_ms=None).start()
    try:
        result = await make_provider(client, sim.base_url).submit(req("a fox"))
        assert result.snapshot.poll_after is None
    finally:
        await sim.close()


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault.RATE_LIMIT, RateLimited),
        (Fault.SERVER_ERROR, Unavailable),
        (Fault.BAD_GATEWAY, Unavailable),
        (Fault.READ_TIMEOUT, Unavailable),
        (Fault.CONNECTION_RESET, Unavailable),
        (Fault.MALFORMED_JSON, Unavailable),
        (Fault.AUTH, AuthFailed),
    ],
)
async def test_status_faults_mean_poll_later(
    client: httpx.AsyncClient, sim: OpenAISim, provider: OpenAIProvider, fault: Fault, expected: type[ProviderError]
) -> None:
    result = await provider.submit(req("a fox"))
    sim.script("retrieve", fault, retry_after_ms=2500)
    with pytest.raises(ProviderError) as info:
        await make_provider(client, sim.base_url, timeout=SHORT_READ).status([result.external_id])
    assert type(info.value) is expected
    if expected is RateLimited:
        assert info.value.retry_after == pytest.approx(2.5)
    # the next poll works again: nothing was marked failed
    assert (await provider.status([result.external_id]))[result.external_id].status is not JobStatus.FAILED


async def test_unknown_status_is_running_and_logged(
    provider: OpenAIProvider, sim: OpenAISim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.providers.openai")
    result = await provider.submit(req("a fox"))
    sim.script("retrieve", Fault.UNKNOWN_STATUS)
    snap = (await provider.status([result.external_id]))[result.external_id]
    assert snap.status is JobStatus.RUNNING and snap.raw_status == "paused_for_review"
    assert "paused_for_review" in caplog.text
    assert "quality" in caplog.text  # the undocumented field is noted, not fatal


@pytest.mark.parametrize(
    ("fault", "error_type", "reason"),
    [
        (Fault.MODERATION_AT_END, Rejected, RejectReason.MODERATION),
        (Fault.FAIL_AT_END, Unavailable, None),
    ],
)
async def test_failed_jobs_carry_classified_errors(
    provider: OpenAIProvider,
    sim: OpenAISim,
    fault: Fault,
    error_type: type[ProviderError],
    reason: RejectReason | None,
) -> None:
    sim.script("create", fault)
    result = await provider.submit(req("a fox"))
    final = (await poll_until_terminal(provider, result.external_id))[-1]
    assert final.status is JobStatus.FAILED and final.raw_status == "failed"
    assert type(final.error) is error_type
    if reason is not None:
        assert isinstance(final.error, Rejected) and final.error.reason is reason
        assert final.error.code == "moderation_blocked"


async def test_stuck_job_stays_running(provider: OpenAIProvider, sim: OpenAISim) -> None:
    sim.script("create", Fault.STUCK)
    result = await provider.submit(req("a fox"))
    deadline = time.monotonic() + 2.5 * sim.job_seconds  # well past when it should have finished
    while time.monotonic() < deadline:
        snap = (await provider.status([result.external_id]))[result.external_id]
        assert not snap.status.terminal
        await asyncio.sleep(0.1)
    assert snap.status is JobStatus.RUNNING and snap.progress is not None and snap.progress < 100


# --- download -------------------------------------------------------------------------------------


async def _finished(provider: OpenAIProvider) -> JobSnapshot:
    result = await provider.submit(req("a fox"))
    return (await poll_until_terminal(provider, result.external_id))[-1]


@pytest.mark.parametrize("chunked", [False, True])
async def test_download_byte_cap(client: httpx.AsyncClient, tmp_path: Path, chunked: bool) -> None:
    sim = await OpenAISim(api_key=KEY, job_seconds=0.2, chunked_content=chunked).start()
    try:
        provider = make_provider(client, sim.base_url)
        snap = await _finished(provider)
        dest = tmp_path / "big.mp4"
        with pytest.raises(Rejected, match="video larger than") as info:
            await provider.download(snap, dest, max_bytes=len(sim.video_bytes) - 1)
        assert info.value.reason is RejectReason.INVALID
        assert list(tmp_path.iterdir()) == []  # no partial file left behind
        got = await provider.download(snap, dest, max_bytes=len(sim.video_bytes))
        assert got.size == len(sim.video_bytes) and hashlib.sha256(dest.read_bytes()).hexdigest() == sim.video_sha256
    finally:
        await sim.close()


async def test_download_dropped_mid_body(provider: OpenAIProvider, sim: OpenAISim, tmp_path: Path) -> None:
    snap = await _finished(provider)
    sim.script("content", Fault.CONNECTION_RESET)
    with pytest.raises(Unavailable):
        await provider.download(snap, tmp_path / "v.mp4", max_bytes=10**7)
    assert list(tmp_path.iterdir()) == []


# --- characters -----------------------------------------------------------------------------------


async def test_human_likeness_refusal(provider: OpenAIProvider, sim: OpenAISim, clips: dict[str, Path]) -> None:
    sim.script("character", Fault.HUMAN_LIKENESS)
    with pytest.raises(Rejected) as info:
        await provider.register_character(asset(1, "Ann", clips["short"], 3.0))
    assert info.value.reason is RejectReason.UNSUPPORTED and "likeness" in info.value.message
    assert sim.characters == {}


async def test_too_short_clip_refused_before_http(
    provider: OpenAIProvider, sim: OpenAISim, clips: dict[str, Path]
) -> None:
    with pytest.raises(Rejected) as info:
        await provider.register_character(asset(1, "Ann", clips["short"], 1.5))
    assert info.value.reason is RejectReason.UNSUPPORTED
    assert sim.requests == []


async def test_character_rate_limited(provider: OpenAIProvider, sim: OpenAISim, clips: dict[str, Path]) -> None:
    sim.script("character", Fault.RATE_LIMIT, retry_after_ms=700)
    with pytest.raises(RateLimited) as info:
        await provider.register_character(asset(1, "Ann", clips["short"], 3.0))
    assert info.value.retry_after == pytest.approx(0.7)


# --- secrets --------------------------------------------------------------------------------------


async def test_api_key_never_leaks(
    client: httpx.AsyncClient, sim: OpenAISim, clips: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "sk-proj-WRONGSECRET-0a1b2c3d4e5f"
    provider = make_provider(client, sim.base_url, timeout=SHORT_READ)
    bad = make_provider(client, sim.base_url, key=wrong)
    errors: list[ProviderError] = []
    caplog.set_level(logging.DEBUG)

    async def collect(coro: object) -> None:
        try:
            await coro  # type: ignore[misc]
        except ProviderError as exc:
            errors.append(exc)

    for fault in (
        Fault.RATE_LIMIT,
        Fault.INSUFFICIENT_QUOTA,
        Fault.AUTH,
        Fault.SERVER_ERROR,
        Fault.READ_TIMEOUT,
        Fault.CONNECTION_RESET,
        Fault.MALFORMED_JSON,
        Fault.MODERATION,
        Fault.MODEL_NOT_FOUND,
    ):
        sim.script("create", fault, delay=1.0)
        await collect(provider.submit(req("a fox")))
    sim.script("character", Fault.HUMAN_LIKENESS)
    await collect(provider.register_character(asset(1, "Ann", clips["short"], 3.0)))
    await collect(bad.submit(req("a fox")))  # the simulator quotes the wrong key back
    await collect(bad.status(["video_x"]))
    await collect(bad.download(JobSnapshot("video_x", JobStatus.SUCCEEDED), tmp_path / "x.mp4", 10))
    await collect(bad.reconcile(req("a fox")))
    assert len(errors) == 14
    assert sum(isinstance(e, AuthFailed) for e in errors) == 5

    assert KEY not in repr(provider) and wrong not in repr(bad)
    for exc in errors:
        rendered = str(exc) + repr(exc) + "".join(traceback.format_exception(exc))
        for secret in (KEY, wrong):
            assert secret not in rendered
    for record in caplog.records:
        for secret in (KEY, wrong):
            assert secret not in record.getMessage()
    assert caplog.records  # the failures were logged, just without the key
