"""Contract tests of the Gemini adapter against the loopback Gemini simulator (real HTTP, real files).

The simulator's answers (and the adapter's create body) are also checked against the pydantic types
of Google's own SDK (`google-genai`), so that the simulator cannot drift from the wire shapes."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import socket
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from pydantic import SecretStr

from bot.providers.base import (
    Ambiguous,
    AuthFailed,
    CharacterAsset,
    CharacterHandle,
    CharacterRef,
    JobSnapshot,
    JobStatus,
    MentionStyle,
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
from bot.providers.gemini import IMAGES_ONLY, MODELS, GeminiProvider
from bot.providers.pricing import PriceBook, usd_to_micros
from discord_sandbox.clips import make_clip
from tests.conftest import Simulators
from tests.fakes.gemini_sim import GeminiSim
from tests.helpers import all_terminal, request, wait_until, write_frame

KEY = "AIzaSy-gemini-SECRET-4d1c9e07b2"
T0 = 1_700_000_000.0  # the adapter's clock in tests that check expiries: before the real now
HOURS_48 = 48 * 3600.0


@pytest.fixture
async def sim(sims: Simulators) -> GeminiSim:
    return await sims.start(GeminiSim(api_key=KEY, video_seconds=0.3, file_seconds=0.05, hang_seconds=5.0))


def make_provider(client, base_url, *, read=2.0, key=KEY, **kw) -> GeminiProvider:
    kw.setdefault("file_poll_interval", 0.02)
    kw.setdefault("file_timeout", 3.0)
    kw.setdefault("prices", PriceBook())
    return GeminiProvider(
        client, api_key=SecretStr(key), base_url=base_url, timeout=httpx.Timeout(2.0, read=read), **kw
    )


@pytest.fixture
def gemini(client, sim) -> GeminiProvider:
    return make_provider(client, sim.base_url, clock=lambda: T0)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A real 5 s clip, made once for the module."""
    return make_clip(tmp_path_factory.mktemp("clip") / "member.mp4", seconds=5.0, size=(320, 240))


def asset(tmp_path: Path, clip: Path, name: str, frames: int = 3, character_id: int = 1, **kw) -> CharacterAsset:
    paths = tuple(
        write_frame(tmp_path / f"{name}-{i}.{'png' if kw.get('fmt') == 'PNG' else 'jpg'}", (40 * i, 90, 200), **kw)
        for i in range(frames)
    )
    return CharacterAsset(
        character_id=character_id,
        name=name,
        description=f"{name}, a test character",
        clip_path=clip,
        frame_paths=paths,
        clip_duration=5.0,
        best_window_start=1.0,
    )


async def finished(gemini, sim, req=None) -> JobSnapshot:
    job = await gemini.submit(req or request())
    snaps = await wait_until(gemini, [job.external_id], all_terminal([job.external_id]))
    return snaps[job.external_id]


def decoded_image(block: dict[str, Any]) -> bytes:
    return base64.b64decode(block["data"], validate=True)


# --- characters -------------------------------------------------------------------------------------


async def test_register_uploads_the_best_window_resumably(gemini, sim, tmp_path, clip):
    sim.file_seconds = 0.1  # PROCESSING for a while: the adapter waits for ACTIVE
    mira = asset(tmp_path, clip, "Mira", character_id=7)
    handle = await gemini.register_character(mira)

    (file,) = sim.uploaded()
    assert handle.provider == "gemini" and handle.mention_token == ""
    assert handle.external_id == f"{sim.base_url}/v1beta/files/{file.id}"
    assert handle.expires_at == T0 + HOURS_48  # upload time + 48 h: earlier than the API's expiry
    assert file.mime_type == "video/mp4" and file.display_name == "castbot-character-7"
    assert file.seconds is not None and 2.8 <= file.seconds <= 3.1  # the <= 3 s window, not the 5 s clip
    assert sim.file_state(file) == "ACTIVE"
    assert len(sim.recorded("GET", "/v1beta/files/")) >= 1  # polled until ACTIVE
    (start,) = [r for r in sim.recorded("POST", "/upload/v1beta/files") if "upload_id" not in r.query]
    assert start.headers["X-Goog-Upload-Protocol"] == "resumable"
    assert start.headers["X-Goog-Upload-Command"] == "start"
    assert start.headers["X-Goog-Upload-Header-Content-Length"] == str(len(file.data))
    assert start.headers["X-Goog-Upload-Header-Content-Type"] == "video/mp4"
    assert start.headers["x-goog-api-key"] == KEY and "key" not in start.query
    assert start.body == {"file": {"display_name": "castbot-character-7"}}
    # the window is cut from best_window_start: it decodes and is a real H.264 MP4
    window = tmp_path / "window.mp4"
    window.write_bytes(file.data)
    with av.open(str(window)) as container:
        assert container.streams.video[0].codec_context.name == "h264"


async def test_expiry_is_the_api_expiration_when_earlier(client, sim, tmp_path, clip):
    sim.file_ttl = 3600.0
    gemini = make_provider(client, sim.base_url)  # the real clock
    before = time.time()
    handle = await gemini.register_character(asset(tmp_path, clip, "Mira"))
    assert handle.expires_at is not None
    assert before + 3590 <= handle.expires_at <= time.time() + 3600


@pytest.mark.parametrize(
    ("script", "expires_at"),
    [
        ("failed", T0 + HOURS_48),  # Gemini could not process the clip: do not try it again soon
        ("stuck", T0),  # processing never ended: images now, a new upload at the next use
        ("fault_503", T0),
        ("missing_clip", T0 + HOURS_48),  # nothing to upload
    ],
)
async def test_clip_upload_failures_fall_back_to_images(client, sim, tmp_path, clip, script, expires_at):
    gemini = make_provider(client, sim.base_url, clock=lambda: T0, file_timeout=0.3)
    mira = asset(tmp_path, clip, "Mira")
    if script == "fault_503":
        sim.add_fault("upload_start", http=503, status="UNAVAILABLE", message="The service is currently unavailable.")
    elif script == "missing_clip":
        mira = replace(mira, clip_path=tmp_path / "gone.mp4")
    else:
        sim.script_file(script)
    handle = await gemini.register_character(mira)
    assert (handle.external_id, handle.expires_at) == (IMAGES_ONLY, expires_at)
    # such a handle still makes videos, from the images alone
    snap = await finished(gemini, sim, request("@mira waves", [CharacterRef("mira", mira, handle)]))
    assert snap.status is JobStatus.SUCCEEDED
    assert not [b for b in sim.creates[-1]["input"] if b["type"] == "video"]


async def test_register_refusals(client, sim, tmp_path, clip):
    bad_key = make_provider(client, sim.base_url, key="AIzaSy-wrong")
    with pytest.raises(AuthFailed) as info:
        await bad_key.register_character(asset(tmp_path, clip, "Mira"))
    assert "AIzaSy-wrong" not in str(info.value)
    sim.add_fault(
        "upload_start", http=429, message="Your prepayment credits are depleted.", status="RESOURCE_EXHAUSTED"
    )
    with pytest.raises(QuotaExhausted):
        await make_provider(client, sim.base_url).register_character(asset(tmp_path, clip, "Mira"))
    with pytest.raises(Rejected) as refused:
        await make_provider(client, sim.base_url).register_character(asset(tmp_path, clip, "Nobody", frames=0))
    assert refused.value.reason is RejectReason.UNSUPPORTED
    assert not sim.uploaded()


# --- the create body --------------------------------------------------------------------------------


async def test_body_has_media_first_tokens_and_settings(gemini, sim, tmp_path, clip):
    mira = asset(tmp_path, clip, "Mira", frames=2)
    mira = replace(mira, frame_paths=(*mira.frame_paths, write_frame(tmp_path / "m.png", "red", fmt="PNG")))
    handle = await gemini.register_character(mira)
    req = request(
        "@Mira waves, then @mira smiles at a@b.com and @Image 9",
        [CharacterRef("mira", mira, handle)],
        client_ref="castbot-42-1",
    )
    job = await gemini.submit(req)
    assert job.snapshot.status in (JobStatus.QUEUED, JobStatus.RUNNING)
    assert list(sim.interactions) == [job.external_id]

    (create,) = sim.recorded("POST", "/v1beta/interactions")
    assert create.headers["x-goog-api-key"] == KEY and "key" not in create.query
    body = create.body
    blocks = body["input"]
    assert [b["type"] for b in blocks] == ["image", "image", "image", "video", "text"]
    assert [decoded_image(b) for b in blocks[:3]] == [p.read_bytes() for p in mira.frame_paths]
    assert [b["mime_type"] for b in blocks[:3]] == ["image/jpeg", "image/jpeg", "image/png"]
    assert blocks[3] == {"type": "video", "uri": handle.external_id, "mime_type": "video/mp4"}
    assert blocks[4]["text"] == (
        "@Image 1, @Image 2 and @Image 3 show Mira (Mira, a test character). @Video 1 shows Mira in motion.\n\n"
        "@Image 1 waves, then @Image 1 smiles at a@b.com and Image 9"
    )
    assert body["generation_config"] == {"video_config": {"task": "reference_to_video"}}
    assert body["response_format"] == {
        "type": "video",
        "aspect_ratio": "9:16",
        "resolution": "720p",
        "duration": "5s",
        "delivery": "uri",
    }
    assert (body["model"], body["store"], body["background"]) == ("gemini-omni-1.1-flash", True, True)
    assert body["labels"] == {"castbot_ref": "castbot-42-1"}


@pytest.mark.parametrize(
    ("quality", "orientation", "seconds", "model", "resolution", "aspect", "duration"),
    [
        (Quality.PRO, Orientation.LANDSCAPE, 2, "gemini-omni-1.2-flash", "1080p", "16:9", "3s"),
        (Quality.STANDARD, Orientation.PORTRAIT, 20, "gemini-omni-1.1-flash", "720p", "9:16", "10s"),
        (Quality.PRO, Orientation.PORTRAIT, 8, "gemini-omni-1.2-flash", "1080p", "9:16", "8s"),
    ],
)
async def test_quality_orientation_and_duration(
    client, sim, quality, orientation, seconds, model, resolution, aspect, duration
):
    gemini = make_provider(client, sim.base_url, pro_model="gemini-omni-1.2-flash")
    assert gemini.capabilities.seconds == tuple(range(3, 11))  # what both models take
    await gemini.submit(request(seconds=seconds, quality=quality, orientation=orientation, client_ref="Job #7/ü"))
    (body,) = sim.creates
    fmt = body["response_format"]
    assert (body["model"], fmt["resolution"], fmt["aspect_ratio"], fmt["duration"]) == (
        model,
        resolution,
        aspect,
        duration,
    )
    assert body["input"] == [{"type": "text", "text": "a quiet lake at dawn"}]
    assert body["generation_config"]["video_config"] == {"task": "text_to_video"}
    assert body["labels"] == {"castbot_ref": "job-7-"}  # label values are lowercase [a-z0-9_-]


async def test_several_characters_share_the_image_slots(gemini, sim, tmp_path, clip):
    refs = []
    for i, (name, frames) in enumerate((("Mira", 5), ("Bo", 5), ("Cy", 1)), start=1):
        a = asset(tmp_path, clip, name, frames=frames, character_id=i)
        refs.append(CharacterRef(name.lower(), a, await gemini.register_character(a)))
    spec = MODELS["gemini-omni-1.1-flash"]
    assert gemini.capabilities.max_characters == 3 == spec.max_images // spec.images_per_character
    await gemini.submit(request("@bo hands @cy a map while @mira watches", refs))
    body = sim.creates[-1]
    kinds = [b["type"] for b in body["input"]]
    assert kinds == ["image"] * 3 + ["video"] * 3 + ["text"]  # one image each: every slot used, fairly
    images = [decoded_image(b) for b in body["input"][:3]]
    assert images == [r.asset.frame_paths[0].read_bytes() for r in refs]  # each one's frontal frame
    assert all(r.handle for r in refs)
    assert [b["uri"] for b in body["input"][3:6]] == [r.handle.external_id for r in refs if r.handle]
    text = body["input"][-1]["text"]
    assert text.startswith(
        "@Image 1 shows Mira (Mira, a test character). @Video 1 shows Mira in motion.\n"
        "@Image 2 shows Bo (Bo, a test character). @Video 2 shows Bo in motion.\n"
        "@Image 3 shows Cy (Cy, a test character). @Video 3 shows Cy in motion.\n\n"
    )
    assert text.endswith("@Image 2 hands @Image 3 a map while @Image 1 watches")

    # one character alone gets every image slot
    await gemini.submit(request("@mira waves", refs[:1]))
    body = sim.creates[-1]
    assert [b["type"] for b in body["input"]] == ["image"] * 3 + ["video", "text"]
    assert [decoded_image(b) for b in body["input"][:3]] == [p.read_bytes() for p in refs[0].asset.frame_paths[:3]]


async def test_too_many_characters_or_unregistered_are_refused_locally(gemini, sim, tmp_path, clip):
    assert gemini.capabilities.mention_style is MentionStyle.REFERENCE_INDEX and gemini.capabilities.needs_handle
    handle = CharacterHandle("gemini", IMAGES_ONLY, "")
    refs = [CharacterRef(f"c{i}", asset(tmp_path, clip, f"C{i}", frames=1), handle) for i in range(4)]
    with pytest.raises(Rejected) as info:
        await gemini.submit(request("@c0 @c1 @c2 @c3", refs))
    assert "at most 3" in info.value.message
    with pytest.raises(Rejected):
        await gemini.submit(request("@c0", [CharacterRef("c0", refs[0].asset, None)]))
    with pytest.raises(Rejected):
        await gemini.submit(request("@c0", [CharacterRef("c0", refs[0].asset, CharacterHandle("kling", "9", ""))]))
    assert not sim.requests  # nothing sent


async def test_expired_uploads_are_left_out_and_refused_by_the_api(client, sim, tmp_path, clip):
    now = [T0]
    gemini = make_provider(client, sim.base_url, clock=lambda: now[0])
    mira = asset(tmp_path, clip, "Mira")
    handle = await gemini.register_character(mira)
    sim.expire_files()
    # Google forgot the file although the handle still looks fresh: refused as a bad request, not
    # as a bad key (which would disable the provider)
    with pytest.raises(Rejected) as info:
        await gemini.submit(request("@mira", [CharacterRef("mira", mira, handle)]))
    assert info.value.reason is RejectReason.INVALID
    assert not sim.interactions
    now[0] = T0 + HOURS_48 + 1  # the handle itself says it has expired: its images alone are sent
    job = await gemini.submit(request("@mira", [CharacterRef("mira", mira, handle)]))
    assert job.external_id in sim.interactions
    assert [b["type"] for b in sim.creates[-1]["input"]] == ["image"] * 3 + ["text"]


# --- polling ----------------------------------------------------------------------------------------


async def test_submit_poll_download_and_cost(gemini, sim, tmp_path, clip):
    mira = asset(tmp_path, clip, "Mira")
    req = request("@mira dances", [CharacterRef("mira", mira, await gemini.register_character(mira))])
    snap = await finished(gemini, sim, req)
    assert snap.status is JobStatus.SUCCEEDED and snap.error is None and snap.raw_status == "completed"
    interaction = sim.interactions[snap.external_id]
    assert snap.download_url == f"{sim.base_url}/v1beta/files/{interaction.output_file}:download?alt=media"
    # 5 s x 5,792 video tokens x $17.50 per million, and the references and prompt as input
    # tokens at $1.50 per million: within the estimate, which holds the most they can be
    assert snap.actual_cost_micros is not None
    assert 506_800 < snap.actual_cost_micros <= gemini.estimate(req)
    assert gemini.actual_cost(req, snap) == snap.actual_cost_micros

    dest = tmp_path / "out.mp4"
    result = await gemini.download(snap, dest, max_bytes=10 * 1024 * 1024)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == sim.video_sha256 == result.sha256
    assert result.size == len(sim.video_bytes) and result.content_type == "video/mp4"
    with av.open(str(dest)) as container:
        assert next(container.decode(video=0)).width == 320
    (get,) = sim.recorded("GET", f"/v1beta/files/{interaction.output_file}:download")
    assert get.headers["x-goog-api-key"] == KEY
    assert sim.recorded("GET", f"/v1beta/files/{interaction.output_file}")[0].path.endswith(interaction.output_file)


async def test_every_status_maps(gemini, sim):
    expected = {
        "failed": (JobStatus.FAILED, Unavailable, None),
        "failed_safety": (JobStatus.FAILED, Rejected, RejectReason.MODERATION),
        "moderation": (JobStatus.FAILED, Rejected, RejectReason.MODERATION),
        "cancelled": (JobStatus.FAILED, Unavailable, None),
        "incomplete": (JobStatus.FAILED, Unavailable, None),
        "budget_exceeded": (JobStatus.FAILED, Unavailable, None),
        "requires_action": (JobStatus.FAILED, Unavailable, None),
        "requires_continuation": (JobStatus.FAILED, Unavailable, None),
        "idle": (JobStatus.FAILED, Unavailable, None),
        "succeed": (JobStatus.SUCCEEDED, type(None), None),
        "stuck": (JobStatus.RUNNING, type(None), None),
        "queued": (JobStatus.QUEUED, type(None), None),
        "unknown_status": (JobStatus.RUNNING, type(None), None),
    }
    sim.script_outcome(*expected)
    ids = {(await gemini.submit(request())).external_id: outcome for outcome in expected}
    terminal = [i for i, outcome in ids.items() if expected[outcome][0].terminal]
    snaps = await wait_until(gemini, list(ids), all_terminal(terminal))
    for interaction_id, outcome in ids.items():
        status, error, reason = expected[outcome]
        snap = snaps[interaction_id]
        assert (outcome, snap.status, type(snap.error)) == (outcome, status, error)
        if reason is not None:
            assert isinstance(snap.error, Rejected) and snap.error.reason is reason
    moderated = snaps[next(i for i, o in ids.items() if o == "moderation")]
    assert moderated.error is not None and "declined" in moderated.error.message
    assert moderated.download_url is None and moderated.actual_cost_micros is None
    assert snaps[next(i for i, o in ids.items() if o == "unknown_status")].raw_status == "paused_for_review"


async def test_completed_without_video_is_read_again_before_failing(gemini, sim):
    sim.late_polls = 2  # the video shows up at the third read after completion
    sim.script_outcome("late_video", "no_video")
    reads: dict[str, list[JobSnapshot]] = {}
    for _ in range(2):
        job = (await gemini.submit(request())).external_id
        snaps = await wait_until(gemini, [job], lambda s, job=job: s[job].raw_status == "completed")
        reads[job] = [snaps[job]] + [(await gemini.status([job]))[job] for _ in range(3)]
    late, never = reads.values()
    assert [s.status for s in late] == [JobStatus.RUNNING] * 2 + [JobStatus.SUCCEEDED] * 2
    assert all(s.poll_after is not None and s.poll_after >= 5.0 for s in late[:2])
    assert late[2].download_url and late[2].actual_cost_micros
    assert [s.status for s in never] == [JobStatus.RUNNING] * 3 + [JobStatus.FAILED]
    assert isinstance(never[3].error, Unavailable) and "never returned" in never[3].error.message


async def test_unknown_ids_are_left_out(gemini, sim):
    job = await gemini.submit(request())
    snaps = await gemini.status([job.external_id, "ChBub3Qtb3Vycy1hdC1hbGw", job.external_id])
    assert set(snaps) == {job.external_id}
    assert sim.status_requests == 2  # one GET per distinct id: no batch endpoint
    assert await gemini.status([]) == {}
    assert not gemini.capabilities.batch_status and not gemini.capabilities.authoritative_reconcile


# --- create faults ----------------------------------------------------------------------------------

SAFETY_TEXT = "The request was blocked due to safety and policy reasons."
CREATE_FAULTS = [
    ({"http": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded", "retry_after": 22}, RateLimited, None),
    ({"http": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded", "wrapped": True}, RateLimited, None),
    (
        {"http": 429, "status": "RESOURCE_EXHAUSTED", "message": "Your prepayment credits are depleted."},
        QuotaExhausted,
        None,
    ),
    (
        {"http": 400, "status": "FAILED_PRECONDITION", "message": "Please enable billing on the billing account."},
        QuotaExhausted,
        None,
    ),
    ({"http": 403, "status": "PERMISSION_DENIED", "message": "Permission denied"}, AuthFailed, None),
    ({"http": 401, "status": "UNAUTHENTICATED", "message": "Request had invalid credentials"}, AuthFailed, None),
    (
        {
            "http": 400,
            "status": "INVALID_ARGUMENT",
            "message": "API key expired.",
            "reasons": ("API_KEY_EXPIRED",),
            "wrapped": True,
        },
        AuthFailed,
        None,
    ),
    ({"http": 400, "code": "invalid_request", "message": "bad request"}, Rejected, RejectReason.INVALID),
    ({"http": 400, "code": "PROHIBITED_CONTENT", "message": "nope"}, Rejected, RejectReason.MODERATION),
    ({"http": 400, "status": "SAFETY", "message": "unsafe"}, Rejected, RejectReason.MODERATION),
    (
        {"http": 400, "status": "INVALID_ARGUMENT", "message": SAFETY_TEXT, "wrapped": True},
        Rejected,
        RejectReason.MODERATION,
    ),
    ({"http": 404, "status": "NOT_FOUND", "message": "models/x is not found"}, Rejected, RejectReason.UNSUPPORTED),
    ({"http": 503, "status": "UNAVAILABLE", "message": "The model is overloaded."}, Unavailable, None),
    ({"http": 500, "status": "INTERNAL", "create": True}, Ambiguous, None),
    ({"http": 504, "status": "DEADLINE_EXCEEDED", "create": True}, Ambiguous, None),
    ({"kind": "html", "http": 502, "create": True}, Ambiguous, None),
    ({"kind": "malformed", "create": True}, Ambiguous, None),
    ({"kind": "reset", "create": True}, Ambiguous, None),
]


@pytest.mark.parametrize(("fault", "error", "reason"), CREATE_FAULTS)
async def test_create_fault_mapping(gemini, sim, fault, error, reason):
    sim.add_fault("create", **fault)
    with pytest.raises(error) as info:
        await gemini.submit(request(client_ref="job-1"))
    if reason is not None:
        assert info.value.reason is reason
    assert len(sim.creates) == 1  # never sent again
    # a NotSent error must mean that no interaction exists; an Ambiguous one may have made one
    assert len(sim.interactions) == (0 if isinstance(info.value, NotSent | Rejected) else 1)
    assert info.value.provider == "gemini"


async def test_moderation_at_create_from_the_prompt(gemini, sim):
    with pytest.raises(Rejected) as info:
        await gemini.submit(request(f"a scene {sim.blocked_words[0]}"))
    assert info.value.reason is RejectReason.MODERATION and "safety" in info.value.message
    snap = await finished(gemini, sim, request(f"a scene {sim.refused_words[0]}"))
    assert isinstance(snap.error, Rejected) and snap.error.reason is RejectReason.MODERATION


async def test_retry_delays_are_kept(gemini, sim):
    sim.add_fault("create", http=429, status="RESOURCE_EXHAUSTED", message="slow down", retry_after=22)
    with pytest.raises(RateLimited) as info:
        await gemini.submit(request())
    assert info.value.retry_after == 22.0 and info.value.code == "RESOURCE_EXHAUSTED"
    sim.add_fault("create", http=429, status="RESOURCE_EXHAUSTED", message="slow down", retry_after_header=7)
    with pytest.raises(RateLimited) as info:
        await gemini.submit(request())
    assert info.value.retry_after == 7.0
    job = await gemini.submit(request())
    sim.add_fault("get", http=429, status="RESOURCE_EXHAUSTED", message="slow down", retry_after=1.5, wrapped=True)
    with pytest.raises(RateLimited) as info:
        await gemini.status([job.external_id])
    assert info.value.retry_after == 1.5


async def test_read_timeout_at_create_is_ambiguous_and_not_reconciled(client, sim):
    gemini = make_provider(client, sim.base_url, read=0.3)
    sim.add_fault("create", "read_timeout", create=True)
    req = request(client_ref="job-ambiguous")
    with pytest.raises(Ambiguous):
        await gemini.submit(req)
    assert len(sim.creates) == 1 and len(sim.interactions) == 1
    assert await gemini.reconcile(req) is None  # no way to find it: the hold stays
    assert len(sim.requests) == 1


async def test_wrong_key_and_connect_errors(client, sim):
    wrong = make_provider(client, sim.base_url, key="AIzaSy-not-the-key")
    with pytest.raises(AuthFailed) as info:
        await wrong.submit(request())
    assert info.value.code == "INVALID_ARGUMENT" and "AIzaSy-not-the-key" not in str(info.value)
    with pytest.raises(AuthFailed):
        await wrong.status(["abc"])
    assert not sim.interactions
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gone = make_provider(client, f"http://127.0.0.1:{port}")
    with pytest.raises(Unavailable):
        await gone.submit(request())
    with pytest.raises(Unavailable):
        await gone.status(["abc"])


# --- status faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "kw", "error"),
    [
        ("error", {"http": 500, "status": "INTERNAL"}, Unavailable),
        ("error", {"http": 503, "status": "UNAVAILABLE"}, Unavailable),
        ("html", {"http": 502}, Unavailable),
        ("malformed", {}, Unavailable),
        ("read_timeout", {}, Unavailable),
        ("reset", {}, Unavailable),
        ("error", {"http": 403, "status": "PERMISSION_DENIED"}, AuthFailed),
    ],
)
async def test_status_fault_mapping(client, sim, kind, kw, error):
    gemini = make_provider(client, sim.base_url, read=0.3)
    job = await gemini.submit(request())
    other = await gemini.submit(request())
    sim.add_fault("get", kind, **kw)
    with pytest.raises(error) as info:
        await gemini.status([job.external_id])
    assert not isinstance(info.value, StatusIncomplete)
    sim.add_fault("get", kind, **kw)
    if error is AuthFailed:
        with pytest.raises(AuthFailed):
            await gemini.status([job.external_id, other.external_id])
    else:  # one answered, one not: the answered one is kept, the other asked about again later
        with pytest.raises(StatusIncomplete) as partial:
            await gemini.status([job.external_id, other.external_id])
        assert len(partial.value.answered) == 1
    assert set(await gemini.status([job.external_id, other.external_id])) == {job.external_id, other.external_id}


# --- download ---------------------------------------------------------------------------------------


async def test_download_follows_one_redirect_without_the_key(gemini, sim, tmp_path):
    sim.redirect_downloads = True
    snap = await finished(gemini, sim)
    result = await gemini.download(snap, tmp_path / "v.mp4", max_bytes=10**8)
    assert result.size == len(sim.video_bytes) and (tmp_path / "v.mp4").read_bytes() == sim.video_bytes
    (first,) = [r for r in sim.recorded("GET", "/v1beta/files/") if r.path.endswith(":download")]
    (second,) = sim.recorded("GET", "/cdn/")
    assert first.headers["x-goog-api-key"] == KEY
    assert "x-goog-api-key" not in {k.lower() for k in second.headers} and "key" not in second.query


@pytest.mark.parametrize("chunked", [False, True])
async def test_download_byte_cap(gemini, sim, tmp_path, chunked):
    sim.chunked_download = chunked
    snap = await finished(gemini, sim)
    dest = tmp_path / "capped.mp4"
    with pytest.raises(Rejected) as info:
        await gemini.download(snap, dest, max_bytes=len(sim.video_bytes) - 1)
    assert info.value.reason is RejectReason.INVALID
    assert list(tmp_path.iterdir()) == []  # no partial file left behind
    result = await gemini.download(snap, dest, max_bytes=len(sim.video_bytes))
    assert result.size == len(sim.video_bytes) and dest.read_bytes() == sim.video_bytes


async def test_download_waits_for_an_active_file_and_adds_alt_media(gemini, sim, tmp_path):
    sim.output_file_seconds = 3600.0
    sim.alt_media_in_uri = False
    snap = await finished(gemini, sim)
    assert snap.download_url is not None and snap.download_url.endswith(":download?alt=media")
    with pytest.raises(Unavailable) as info:
        await gemini.download(snap, tmp_path / "v.mp4", max_bytes=10**8)
    assert info.value.retry_after is not None and info.value.code == "PROCESSING"
    assert not sim.recorded("GET", "/cdn/") and not [r for r in sim.requests if r.path.endswith(":download")]
    file = sim.files[sim.interactions[snap.external_id].output_file or ""]
    file.ready_at = 0.0  # processing is over
    result = await gemini.download(snap, tmp_path / "v.mp4", max_bytes=10**8)
    assert result.size == len(sim.video_bytes)
    sim.expire_files(file.id)
    with pytest.raises(Rejected):
        await gemini.download(snap, tmp_path / "w.mp4", max_bytes=10**8)


# --- money ------------------------------------------------------------------------------------------


async def test_estimate_and_actual_cost_from_the_table(client, sim):
    book = PriceBook.with_overrides({"gemini:gemini-omni-1.1-flash:720p": 50_000})
    gemini = make_provider(client, sim.base_url, prices=book)
    text = request(seconds=4)
    prompt_tokens = usd_to_micros(Decimal(len(text.prompt)) * Decimal("1.5") / 1_000_000)  # a token a character
    assert gemini.estimate(text) == 200_000 + prompt_tokens  # the book's entry wins
    assert gemini.estimate(request(seconds=4, quality=Quality.PRO)) == 4 * 175_000 + prompt_tokens  # the table's
    assert gemini.estimate(request(seconds=60)) == 10 * 50_000 + prompt_tokens
    # the bill is what Google reports, even above the book's price: the settlement caps it at the
    # job's hold (the adapter cannot: it is handed the job's request without its characters)
    snap = await finished(gemini, sim, text)
    assert snap.actual_cost_micros is not None
    assert 4 * 5792 * 17.5 < snap.actual_cost_micros < 4 * 5792 * 17.5 + prompt_tokens
    assert gemini.actual_cost(text, snap) == snap.actual_cost_micros > gemini.estimate(text)
    pro = request(seconds=4, quality=Quality.PRO)
    snap = await finished(gemini, sim, pro)
    assert snap.actual_cost_micros is not None
    assert snap.actual_cost_micros == gemini.actual_cost(pro, snap)
    assert 4 * 10_000 * 17.5 < snap.actual_cost_micros < 4 * 10_000 * 17.5 + prompt_tokens


# --- secrets ----------------------------------------------------------------------------------------


async def test_key_never_in_errors_or_logs(client, sim, tmp_path, clip, caplog):
    gemini = make_provider(client, sim.base_url, read=0.3)
    errors: list[ProviderError] = []
    sim.add_fault("create", http=400, code="invalid_request", message=f"bad header x-goog-api-key: {KEY}")
    sim.add_fault("create", http=403, status="PERMISSION_DENIED", message=f"key {KEY} is blocked")
    sim.add_fault("create", http=429, status="RESOURCE_EXHAUSTED", message=f"quota for {KEY}", wrapped=True)
    sim.add_fault("create", "read_timeout", create=True)
    sim.add_fault("get", http=500, status="INTERNAL", message=KEY)
    with caplog.at_level(logging.DEBUG):
        for _ in range(4):
            with pytest.raises(ProviderError) as info:
                await gemini.submit(request())
            errors.append(info.value)
        sim.script_outcome("failed")
        job = await gemini.submit(request())
        with pytest.raises(ProviderError) as info:
            await gemini.status([job.external_id])
        errors.append(info.value)
        snap = (await wait_until(gemini, [job.external_id], all_terminal([job.external_id])))[job.external_id]
        assert snap.error is not None
        errors.append(snap.error)
        sim.add_fault("upload_start", http=400, status="INVALID_ARGUMENT", message=f"no {KEY}")
        await gemini.register_character(asset(tmp_path, clip, "Mira"))
        await gemini.download(await finished(gemini, sim), tmp_path / "v.mp4", max_bytes=10**8)
    assert len(errors) == 6
    for error in errors:
        assert KEY not in str(error) and KEY not in repr(error)
    assert KEY not in caplog.text
    assert KEY not in repr(gemini)
    assert sim.creates and all(r.headers["x-goog-api-key"] == KEY for r in sim.recorded("POST", "/v1beta/"))


# --- the simulator against the SDK and the API's rules ----------------------------------------------


async def test_sim_answers_match_the_sdk_types(gemini, sim, tmp_path, clip):
    interactions = pytest.importorskip("google.genai._gaos.types.interactions")
    genai_types = pytest.importorskip("google.genai.types")
    create_errors = pytest.importorskip("google.genai._gaos.errors.createinteraction")
    genai_errors = pytest.importorskip("google.genai.errors")

    mira = asset(tmp_path, clip, "Mira")
    handle = await gemini.register_character(mira)
    (upload,) = sim.uploaded()
    parsed_file = genai_types.File.model_validate(sim.file_json(upload))  # extra fields are forbidden there
    assert parsed_file.state == genai_types.FileState.ACTIVE and parsed_file.uri == handle.external_id

    sim.script_outcome("succeed", "moderation", "failed")
    ids = [(await gemini.submit(request("@mira", [CharacterRef("mira", mira, handle)]))).external_id for _ in range(3)]
    sent = interactions.CreateModelInteraction.model_validate(sim.creates[0])
    assert sent.response_format.duration == "5s" and sent.generation_config.video_config.task == "reference_to_video"
    assert not [b for b in sent.input if getattr(b, "is_unknown", False)]

    await wait_until(gemini, ids, all_terminal(ids))
    done, refused, failed = (sim.interaction_json(sim.interactions[i], reading=False) for i in ids)
    parsed = interactions.Interaction.model_validate(done)
    user, output = parsed.steps
    assert isinstance(user, interactions.UserInputStep) and isinstance(output, interactions.ModelOutputStep)
    (video,) = output.content
    assert isinstance(video, interactions.VideoContent) and video.uri.endswith(":download?alt=media")
    assert parsed.usage.output_tokens_by_modality[0].modality == "video"
    assert [type(c).__name__ for c in user.content] == ["ImageContent"] * 3 + ["VideoContent", "TextContent"]
    text_only = interactions.Interaction.model_validate(refused).steps[-1]
    assert [type(c).__name__ for c in text_only.content] == ["TextContent"]
    assert interactions.Interaction.model_validate(failed).errors[0].code == "internal"
    for state in ("queued", "in_progress"):
        json = {k: v for k, v in done.items() if k in ("id", "created", "updated", "model")} | {"status": state}
        assert interactions.Interaction.model_validate(json).status == state

    # the create answer, and both error shapes, as the SDK reads them
    async with httpx.AsyncClient(base_url=sim.base_url, trust_env=False) as raw:
        created = await raw.post("/v1beta/interactions", json=sim.creates[0], headers={"x-goog-api-key": KEY})
        assert interactions.Interaction.model_validate(created.json()).status == "in_progress"
        unknown = await raw.get("/v1beta/interactions/nope", headers={"x-goog-api-key": KEY})
        data = create_errors.CreateInteractionClientErrorData.model_validate(unknown.json())
        assert unknown.status_code == 400 and data.error.message == "Invalid interaction name"
        sim.add_fault("create", http=429, status="RESOURCE_EXHAUSTED", message="slow", retry_after=3, wrapped=True)
        limited = await raw.post("/v1beta/interactions", json=sim.creates[0], headers={"x-goog-api-key": KEY})
        error = genai_errors.APIError(limited.status_code, limited.json())
        assert (error.code, error.status, error.message) == (429, "RESOURCE_EXHAUSTED", "slow")


async def test_sim_refuses_what_the_api_refuses(sim, tmp_path):
    good: dict[str, Any] = {
        "model": "gemini-omni-1.1-flash",
        "input": [{"type": "text", "text": "a lake"}],
        "generation_config": {"video_config": {"task": "text_to_video"}},
        "response_format": {
            "type": "video",
            "aspect_ratio": "9:16",
            "resolution": "720p",
            "duration": "4s",
            "delivery": "uri",
        },
        "store": True,
        "background": True,
    }
    fmt = good["response_format"]
    jpeg = tmp_path / "f.jpg"
    write_frame(jpeg, "blue")
    image = {"type": "image", "data": base64.b64encode(jpeg.read_bytes()).decode(), "mime_type": "image/jpeg"}
    refused = [
        {**good, "model": "gemini-2.5-flash"},
        {**good, "response_format": {**fmt, "duration": 4}},
        {**good, "response_format": {**fmt, "duration": "11s"}},
        {**good, "response_format": {**fmt, "aspect_ratio": "1:1"}},
        {**good, "store": False},
        {**good, "generation_config": {"video_config": {"task": "reference_to_video", "resolution": "720p"}}},
        {**good, "input": [image] * 8 + good["input"]},
        {**good, "input": [{**image, "mime_type": "image/png"}, *good["input"]]},
        {**good, "input": [{**image, "data": base64.b64encode(b"not an image").decode()}, *good["input"]]},
        {**good, "input": [{**image, "data": "data:image/jpeg;base64," + image["data"]}, *good["input"]]},
        {**good, "input": [{"type": "video", "uri": f"{sim.base_url}/v1beta/files/nope", "mime_type": "video/mp4"}]},
        {**good, "input": [image, {"type": "text", "text": "@Image 2 walks"}]},
        {**good, "labels": {"Job": "X"}},
        {**good, "unknown_field": 1},
    ]
    async with httpx.AsyncClient(base_url=sim.base_url, trust_env=False) as raw:
        auth = {"x-goog-api-key": KEY}
        for body in refused:
            answer = await raw.post("/v1beta/interactions", json=body, headers=auth)
            assert answer.status_code in (400, 403, 404), body
            assert "error" in answer.json()
        assert (await raw.post("/v1beta/interactions", json=good)).json()["error"]["status"] == "PERMISSION_DENIED"
        assert (await raw.post("/v1beta/interactions", json=good, params={"key": KEY})).status_code == 200
        steps = {**good, "input": [{"type": "user_input", "content": [image, *good["input"]]}]}
        assert (await raw.post("/v1beta/interactions", json=steps, headers=auth)).status_code == 200
        # without background the POST blocks until the video is done
        blocking = await raw.post("/v1beta/interactions", json={**good, "background": False}, headers=auth)
        assert blocking.json()["status"] == "completed" and blocking.json()["steps"][-1]["type"] == "model_output"
        start = await raw.post("/upload/v1beta/files", json={"file": {}}, headers=auth)
        assert start.status_code == 400  # no X-Goog-Upload-* headers
    assert len(sim.interactions) == 3


async def test_a_callback_url_goes_as_webhook_config_and_completion_is_posted(gemini, sim, client):
    from bot.services.webhooks import gemini_key_set, verify_gemini
    from tests.fakes.callbacks import CallbackReceiver

    receiver = await CallbackReceiver().start()
    try:
        url = f"{receiver.url}/hooks/gemini/tok-5"
        job = await gemini.submit(request(client_ref="castbot-7-1", callback_url=url))
        (create,) = sim.creates
        assert create["webhook_config"] == {"uris": [url], "user_metadata": {"castbot_ref": "castbot-7-1"}}
        (hook,) = await receiver.wait(1)
        event = json.loads(hook.body)
        assert event["type"] == "interaction.completed" and event["data"]["id"] == job.external_id
        assert event["data"]["user_metadata"] == {"castbot_ref": "castbot-7-1"}
        assert hook.headers["webhook-id"].startswith("msg_")
        # signed as per-request webhooks are: an RS256 JWT for this URL, by a key of the JWKS
        keys = await gemini_key_set(client, f"{sim.base_url}/.well-known/jwks.json").keys()
        assert keys and sim.webhook_kid in keys
        headers = {k.lower(): v for k, v in hook.headers.items()}
        assert verify_gemini(headers, keys, url, sim.webhook_issuer)
        assert not verify_gemini(headers, keys, f"{receiver.url}/hooks/gemini/tok-6", None)
        assert not verify_gemini(headers, keys, url, "https://someone.else")
    finally:
        await receiver.close()
