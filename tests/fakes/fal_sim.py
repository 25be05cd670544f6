"""A loopback simulator of fal.ai: the queue host, the REST (storage token) host and the CDN host.

Each host is its own aiohttp server on 127.0.0.1, so tests can tell which host saw which header.
It follows fal's queue protocol (`Authorization: Key …`; `POST /{endpoint id}` answers with
`status_url`/`response_url`/`cancel_url` built on `{owner}/{app}` only; status walks
`IN_QUEUE(queue_position) → IN_PROGRESS → COMPLETED`; a failed request is `COMPLETED` with
`error` and its result is the error body), runs at most `concurrency` requests at once and queues
the rest, validates every model input the way the models do *when they run* (so an invalid input
is queued, then fails with a 422 `detail[]` at the result), serves uploads through the CDN v3
token flow, and plays scripted faults and outcomes.

The model facts below are written for the simulator from fal's model pages, independently of
bot/providers/fal_models.py, so a wrong entry there shows up as a refused input here.

    sim = FalSim(api_key="fal-key-test", job_seconds=0.3)
    await sim.start()                      # sim.queue_url, sim.rest_url, sim.cdn_url
    sim.add_fault("submit", http=429, retry_after=3)
    sim.script_job("moderation")           # the next request ends in content_policy_violation
    ...
    await sim.close()
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import io
import json
import re
import secrets
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from PIL import Image

from tests.fakes.callbacks import CallbackPoster
from tests.fakes.loopback import send_video, serve

HOSTS = ("queue", "rest", "cdn")
ENDPOINTS = ("submit", "status", "result", "cancel", "token", "upload", "download")
OUTCOMES = ("succeed", "moderation", "invalid", "legacy_invalid", "error", "stuck")
FAULT_KINDS = ("error", "html", "malformed", "read_timeout", "reset")
LOCKED_MESSAGE = "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing."
BAD_KEY_MESSAGE = "No user found for Key ID and Secret"
MODERATION_MESSAGE = "The content could not be processed because it contained material flagged by a content checker."
_TOKEN = re.compile(r"@(Element|Image|Video|Audio)(\d+)")
_OMNI_TOKEN = re.compile(r"<IMAGE_REF_(\d+)>")
_ERRORS_URL = "https://docs.fal.ai/errors#"


@functools.cache
def _default_video() -> bytes:
    """One real 1 s H.264 MP4, rendered once per test process."""
    from discord_sandbox.clips import make_clip

    with tempfile.TemporaryDirectory() as tmp:
        return make_clip(Path(tmp) / "fal.mp4", seconds=1.0, size=(320, 240)).read_bytes()


# --- what each model accepts (from fal's model pages) ----------------------------------------------


@dataclass(frozen=True)
class MediaField:
    kind: str  # "image" | "video" | "audio" | "element"
    min: int
    max: int
    family: str | None  # prompt token family: @Image1, @Video1, @Element1...


@dataclass(frozen=True)
class SimModel:
    required: frozenset[str]
    media: Mapping[str, MediaField]
    durations: frozenset[Any]  # the exact accepted values (type matters: "5" is not 5)
    aspect_ratios: frozenset[str]
    resolutions: frozenset[str] = frozenset()
    booleans: frozenset[str] = frozenset()
    others: frozenset[str] = frozenset({"seed", "negative_prompt"})
    max_files: int | None = None  # all media fields together
    video_each: tuple[float, float] | None = None  # seconds per reference video
    video_total: tuple[float, float] | None = None  # seconds of all reference videos
    min_fps: float = 0.0
    omni_tokens: bool = False  # <IMAGE_REF_0> (0-based) instead of @Image1

    @property
    def allowed(self) -> frozenset[str]:
        base = {"prompt", "duration", "aspect_ratio", *self.media, *self.booleans, *self.others}
        return frozenset(base | ({"resolution"} if self.resolutions else set()))


def _digits(low: int, high: int) -> frozenset[Any]:
    return frozenset(str(s) for s in range(low, high + 1))


_KLING_MEDIA = {
    "elements": MediaField("element", 0, 7, "Element"),
    "image_urls": MediaField("image", 0, 7, "Image"),
}

SIM_MODELS: dict[str, SimModel] = {
    "wan/v2.6/reference-to-video": SimModel(
        required=frozenset({"prompt", "video_urls"}),
        media={"video_urls": MediaField("video", 1, 3, "Video")},
        durations=frozenset({"5", "10"}),
        aspect_ratios=frozenset({"16:9", "9:16", "1:1", "4:3", "3:4"}),
        resolutions=frozenset({"720p", "1080p"}),
        booleans=frozenset({"enable_prompt_expansion", "multi_shots", "enable_safety_checker"}),
        video_each=(2.0, 30.0),
        min_fps=16.0,
    ),
    "fal-ai/kling-video/o1/reference-to-video": SimModel(
        required=frozenset({"prompt"}),
        media=_KLING_MEDIA,
        durations=_digits(3, 10),
        aspect_ratios=frozenset({"16:9", "9:16", "1:1"}),
        max_files=7,
    ),
    **{
        f"fal-ai/kling-video/o3/{tier}/reference-to-video": SimModel(
            required=frozenset({"prompt"}),
            media=_KLING_MEDIA,
            durations=_digits(3, 15),
            aspect_ratios=frozenset({"16:9", "9:16", "1:1"}),
            booleans=frozenset({"generate_audio"}),
            others=frozenset({"seed", "negative_prompt", "start_image_url", "end_image_url"}),
            max_files=7,
        )
        for tier in ("standard", "pro")
    },
    "bytedance/seedance-2.0/reference-to-video": SimModel(
        required=frozenset({"prompt"}),
        media={
            "image_urls": MediaField("image", 0, 9, "Image"),
            "video_urls": MediaField("video", 0, 3, "Video"),
            "audio_urls": MediaField("audio", 0, 3, "Audio"),
        },
        durations=_digits(4, 15) | {"auto"},
        aspect_ratios=frozenset({"21:9", "16:9", "4:3", "1:1", "3:4", "9:16", "auto"}),
        resolutions=frozenset({"480p", "720p", "1080p"}),
        booleans=frozenset({"generate_audio"}),
        max_files=12,
        video_total=(2.0, 15.0),
    ),
    "fal-ai/vidu/q3/reference-to-video/mix": SimModel(
        required=frozenset({"prompt", "reference_image_urls"}),
        media={"reference_image_urls": MediaField("image", 1, 4, None)},
        durations=frozenset(range(1, 17)),
        aspect_ratios=frozenset({"16:9", "9:16", "1:1"}),
        resolutions=frozenset({"360p", "540p", "720p", "1080p"}),
    ),
    "fal-ai/veo3.1/reference-to-video": SimModel(
        required=frozenset({"prompt", "image_urls"}),
        media={"image_urls": MediaField("image", 1, 3, None)},
        durations=frozenset({"8s"}),
        aspect_ratios=frozenset({"16:9", "9:16"}),
        resolutions=frozenset({"720p", "1080p", "4k"}),
        booleans=frozenset({"generate_audio"}),
    ),
    "google/gemini-omni-flash/reference-to-video": SimModel(
        required=frozenset({"prompt", "image_urls"}),
        media={"image_urls": MediaField("image", 1, 3, None)},
        durations=frozenset(range(3, 11)),
        aspect_ratios=frozenset({"16:9", "9:16"}),
        omni_tokens=True,
    ),
}


def app_of(endpoint_id: str) -> str:
    """`{owner}/{app}`: where fal tracks the requests of an endpoint (the sub-path is dropped)."""
    return "/".join(endpoint_id.split("/")[:2])


# --- records --------------------------------------------------------------------------------------


@dataclass
class Recorded:
    host: str  # "queue" | "rest" | "cdn"
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any  # parsed JSON, raw bytes, or None


@dataclass
class Fault:
    kind: str
    http: int = 500
    body: Any = None  # JSON answer; default {"detail": "..."}
    retry_after: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    create: bool = False  # on submit: queue the request before failing


@dataclass
class Upload:
    url: str
    data: bytes
    content_type: str
    file_name: str
    expired: bool = False
    _video: tuple[float, float] | None = None  # (seconds, fps), once probed


@dataclass
class SimJob:
    request_id: str
    endpoint_id: str
    body: Any
    outcome: str
    errors: list[dict[str, Any]]  # what validation found; non-empty makes the outcome "invalid"
    submitted: float
    started: float | None = None
    finished: float | None = None
    cancelled: bool = False

    @property
    def app(self) -> str:
        return app_of(self.endpoint_id)


def _detail(loc: list[Any], msg: str, etype: str, value: Any = None, **ctx: Any) -> dict[str, Any]:
    """One validation error, shaped like fal's."""
    return {"loc": ["body", *loc], "msg": msg, "type": etype, "url": _ERRORS_URL + etype, "ctx": ctx, "input": value}


class FalSim:
    def __init__(
        self,
        *,
        api_key: str = "fal-key-sim-0123456789abcdef",
        job_seconds: float = 0.3,
        concurrency: int = 2,
        max_queued: int | None = None,
        hang_seconds: float = 10.0,
        token_seconds: float = 3600.0,
        video_path: Path | None = None,
    ) -> None:
        self.api_key = api_key
        self.job_seconds = job_seconds
        self.concurrency = concurrency  # requests running at once; the others wait IN_QUEUE
        self.max_queued = max_queued  # past this many waiting, submit answers 429 (None: never)
        self.hang_seconds = hang_seconds
        self.token_seconds = token_seconds
        self.video_path = video_path
        self.locked = False  # answer every keyed call like a locked account (exhausted balance)
        self.chunked_download = False
        self.requests: list[Recorded] = []
        self.jobs: dict[str, SimJob] = {}  # by request id, in submission order
        self.uploads: dict[str, Upload] = {}  # by access URL
        self.tokens: dict[str, float] = {}  # CDN token -> expiry (Unix time)
        self.video_bytes = b""
        self.queue_url = self.rest_url = self.cdn_url = ""
        self._faults: dict[str, deque[Fault]] = {e: deque() for e in ENDPOINTS}
        self._script: deque[str] = deque()
        self._slot_free_at = 0.0
        self._closing = asyncio.Event()
        self._runners: list[web.AppRunner] = []
        # webhooks: `?fal_webhook=` on submit gets a signed POST when the request completes; the
        # public key is served at the REST host's /.well-known/jwks.json
        self.webhook_key = Ed25519PrivateKey.generate()
        self.webhook_user_id = "sim-user-1"
        self.callbacks = CallbackPoster()

    # --- scripting --------------------------------------------------------------------------------

    def add_fault(
        self,
        endpoint: str,
        kind: str = "error",
        *,
        http: int = 500,
        body: Any = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
        create: bool = False,
        times: int = 1,
    ) -> None:
        """The next `times` calls of `endpoint` fail like this instead of being answered."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {ENDPOINTS}")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {FAULT_KINDS}")
        for _ in range(times):
            self._faults[endpoint].append(Fault(kind, http, body, retry_after, dict(headers or {}), create))

    def script_job(self, *outcomes: str) -> None:
        """How the next requests end, in order; later ones succeed (unless their input is invalid)."""
        for outcome in outcomes:
            if outcome not in OUTCOMES:
                raise ValueError(f"unknown outcome {outcome!r}; one of {OUTCOMES}")
            self._script.append(outcome)

    def expire_uploads(self) -> None:
        """Every file uploaded so far is gone: its URL answers 404 and models cannot fetch it."""
        for upload in self.uploads.values():
            upload.expired = True

    @property
    def video_sha256(self) -> str:
        return hashlib.sha256(self.video_bytes).hexdigest()

    def recorded(self, host: str, method: str | None = None, path_prefix: str = "") -> list[Recorded]:
        return [
            r
            for r in self.requests
            if r.host == host and (method is None or r.method == method) and r.path.startswith(path_prefix)
        ]

    def submits(self, endpoint_id: str | None = None) -> list[Recorded]:
        """Every submit the queue host received (including refused ones), optionally for one endpoint."""
        return [r for r in self.recorded("queue", "POST") if endpoint_id is None or r.path == f"/{endpoint_id}"]

    def state(self, request_id: str) -> str:
        """IN_QUEUE, IN_PROGRESS or COMPLETED right now."""
        self._advance()
        return self._word(self.jobs[request_id])

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self.video_bytes = await asyncio.to_thread(self._load_video)
        queue = web.Application(client_max_size=8 * 1024 * 1024)
        queue.router.add_route("*", "/{tail:.+}", self._queue)
        rest = web.Application()
        rest.router.add_post("/storage/auth/token", self._token)
        rest.router.add_get("/.well-known/jwks.json", self._jwks)
        cdn = web.Application(client_max_size=64 * 1024 * 1024)
        cdn.router.add_post("/files/upload", self._upload)
        cdn.router.add_get("/files/{tail:.+}", self._file)
        urls = [await self._serve(app) for app in (queue, rest, cdn)]
        self.queue_url, self.rest_url, self.cdn_url = urls

    async def _serve(self, app: web.Application) -> str:
        runner, url = await serve(app)
        self._runners.append(runner)
        return url

    async def close(self) -> None:
        self._closing.set()  # release hanging handlers first
        await self.callbacks.close()
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    def _load_video(self) -> bytes:
        return self.video_path.read_bytes() if self.video_path is not None else _default_video()

    # --- plumbing ---------------------------------------------------------------------------------

    async def _record(self, host: str, request: web.Request) -> Any:
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
        self.requests.append(
            Recorded(host, request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        return body

    @staticmethod
    def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
        all_headers = {"x-fal-request-id": str(uuid.uuid4()), **(headers or {})}
        return web.json_response(data, status=status, headers=all_headers)

    def _keyed(self, request: web.Request) -> web.Response | None:
        """The answer to a call without our key (None when the key is right)."""
        if request.headers.get("Authorization", "") != f"Key {self.api_key}":
            return self._json({"detail": BAD_KEY_MESSAGE}, 401)
        if self.locked:
            return self._json({"detail": LOCKED_MESSAGE}, 403)
        return None

    async def _fault(self, endpoint: str, request: web.Request, create: Any = None) -> web.StreamResponse | None:
        queue = self._faults[endpoint]
        if not queue:
            return None
        fault = queue.popleft()
        if fault.create and create is not None:
            create()
        headers = dict(fault.headers)
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        if fault.kind == "error":
            body = fault.body if fault.body is not None else {"detail": f"simulated HTTP {fault.http}"}
            return self._json(body, fault.http, headers)
        if fault.kind == "html":  # an ingress page, not fal's JSON
            return web.Response(status=fault.http, text="<html>nginx: bad gateway</html>", content_type="text/html")
        if fault.kind == "malformed":
            return web.Response(status=200, body=b'{"request_id": "', content_type="application/json")
        if fault.kind == "read_timeout":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.hang_seconds)
            return self._json({"detail": "timeout"}, 504)
        assert request.transport is not None  # "reset": drop the connection with no answer
        request.transport.abort()
        raise asyncio.CancelledError

    # --- the queue host ---------------------------------------------------------------------------

    async def _queue(self, request: web.Request) -> web.StreamResponse:
        body = await self._record("queue", request)
        path = request.match_info["tail"].strip("/")
        if request.method == "POST":
            return await self._submit(request, path, body)
        parts = path.split("/")
        if "requests" not in parts or request.method not in ("GET", "PUT"):
            return self._json({"detail": "Method Not Allowed"}, 405)
        at = parts.index("requests")
        app, rest = "/".join(parts[:at]), parts[at + 1 :]
        if refused := self._keyed(request):
            return refused
        job = self.jobs.get(rest[0]) if rest else None
        # fal tracks requests under {owner}/{app}: the endpoint's sub-path is not part of it
        if job is None or app != job.app:
            return self._json({"detail": "Request not found"}, 404)
        if request.method == "GET" and rest[1:] == ["status"]:
            return await self._status(request, job)
        if request.method == "GET" and len(rest) == 1:
            return await self._result(request, job)
        if request.method == "PUT" and rest[1:] == ["cancel"]:
            return await self._cancel(request, job)
        return self._json({"detail": "Method Not Allowed"}, 405)

    async def _submit(self, request: web.Request, endpoint_id: str, body: Any) -> web.StreamResponse:
        if refused := self._keyed(request):
            return refused
        spec = SIM_MODELS.get(endpoint_id)
        if spec is None:
            return self._json({"detail": f"Application '{endpoint_id}' not found"}, 404)
        if not isinstance(body, dict):
            return self._json({"detail": [_detail([], "Input should be a valid dictionary", "dict_type", None)]}, 422)
        faulted = await self._fault("submit", request, lambda: self._make_job(endpoint_id, spec, body))
        if faulted is not None:
            return faulted
        self._advance()
        if self.max_queued is not None and len(self._waiting()) >= self.max_queued:
            return self._json({"detail": "Too many requests in queue"}, 429, {"Retry-After": "2"})
        job = self._make_job(endpoint_id, spec, body)
        self._advance()
        if webhook := request.query.get("fal_webhook"):
            self.callbacks.when(lambda: self._settled(job), webhook, lambda: self.webhook_call(job))
        base = f"{self.queue_url}/{job.app}/requests/{job.request_id}"
        answer: dict[str, Any] = {
            "request_id": job.request_id,
            "gateway_request_id": job.request_id,
            "status": "IN_QUEUE",
            "queue_position": self._position(job),
            "response_url": base,
            "status_url": base + "/status",
            "cancel_url": base + "/cancel",
        }
        return self._json(answer)

    def _make_job(self, endpoint_id: str, spec: SimModel, body: dict[str, Any]) -> SimJob:
        outcome = self._script.popleft() if self._script else "succeed"
        errors = self._validate(spec, body)
        job = SimJob(
            request_id=str(uuid.uuid4()),
            endpoint_id=endpoint_id,
            body=body,
            outcome="invalid" if errors and outcome != "stuck" else outcome,
            errors=errors,
            submitted=time.monotonic(),
        )
        self.jobs[job.request_id] = job
        return job

    # --- scheduling: at most `concurrency` running, the rest wait in submission order -------------

    def _waiting(self) -> list[SimJob]:
        return [j for j in self.jobs.values() if j.started is None and not j.cancelled]

    def _advance(self) -> None:
        now = time.monotonic()
        while True:
            running = [j for j in self.jobs.values() if j.started is not None and j.finished is None]
            waiting = self._waiting()
            if len(running) < self.concurrency and waiting:
                waiting[0].started = max(waiting[0].submitted, self._slot_free_at)
                continue
            done = [j for j in running if j.outcome != "stuck" and (j.started or 0.0) + self.job_seconds <= now]
            if not done:
                return
            first = min(done, key=lambda j: j.started or 0.0)
            first.finished = (first.started or 0.0) + self.job_seconds
            self._slot_free_at = max(self._slot_free_at, first.finished)

    def _settled(self, job: SimJob) -> bool:
        self._advance()
        return self._word(job) == "COMPLETED"

    # --- webhooks ---------------------------------------------------------------------------------

    def jwks(self) -> dict[str, Any]:
        raw = self.webhook_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "sim-1", "use": "sig", "alg": "EdDSA"}]}

    async def _jwks(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Recorded("rest", request.method, request.path, dict(request.query), {}, None))
        return self._json(self.jwks())

    def sign(self, request_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """fal's webhook headers for `body`: Ed25519 over request id, user id, time and SHA-256."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        digest = hashlib.sha256(body).hexdigest()
        message = f"{request_id}\n{self.webhook_user_id}\n{ts}\n{digest}".encode()
        return {
            "X-Fal-Webhook-Request-Id": request_id,
            "X-Fal-Webhook-User-Id": self.webhook_user_id,
            "X-Fal-Webhook-Timestamp": ts,
            "X-Fal-Webhook-Signature": self.webhook_key.sign(message).hex(),
        }

    def webhook_call(self, job: SimJob) -> tuple[bytes, dict[str, str]]:
        """The callback fal sends when `job` completes: its result as the payload, signed."""
        answer, http, _ = self._result_answer(job)
        ok = http == 200
        data = {
            "request_id": job.request_id,
            "gateway_request_id": job.request_id,
            "status": "OK" if ok else "ERROR",
            "payload": answer,
            "error": None if ok else f"Invalid status code: {http}",
        }
        body = json.dumps(data).encode()
        return body, self.sign(job.request_id, body)

    def _position(self, job: SimJob) -> int:
        return next((i for i, j in enumerate(self._waiting()) if j is job), 0)

    @staticmethod
    def _word(job: SimJob) -> str:
        if job.finished is not None or (job.cancelled and job.started is None):
            return "COMPLETED"
        return "IN_QUEUE" if job.started is None else "IN_PROGRESS"

    async def _status(self, request: web.Request, job: SimJob) -> web.StreamResponse:
        faulted = await self._fault("status", request)
        if faulted is not None:
            return faulted
        self._advance()
        word = self._word(job)
        base = f"{self.queue_url}/{job.app}/requests/{job.request_id}"
        logs: list[Any] | None = [] if request.query.get("logs") in ("1", "true") else None
        data: dict[str, Any] = {"status": word, "request_id": job.request_id, "response_url": base, "logs": logs}
        if word == "IN_QUEUE":
            data["queue_position"] = self._position(job)
        if word == "COMPLETED":
            data["metrics"] = {"inference_time": self.job_seconds}
            http = self._result_answer(job)[1]
            if http != 200:
                data["error"] = f"Invalid status code: {http}"
                if job.outcome == "moderation":
                    data["error_type"] = "content_policy_violation"
        return self._json(data, 202 if word != "COMPLETED" else 200)

    def _result_answer(self, job: SimJob) -> tuple[Any, int, dict[str, str]]:
        final = {"x-fal-retryable": "false"}
        if job.cancelled and job.started is None:
            return {"detail": "Request was cancelled"}, 400, final
        if job.outcome == "succeed":
            url = f"{self.cdn_url}/files/out/{job.request_id}/output.mp4"
            video = {
                "url": url,
                "content_type": "video/mp4",
                "file_name": "output.mp4",
                "file_size": len(self.video_bytes),
            }
            return {"video": video, "seed": 42}, 200, {}
        if job.outcome == "moderation":
            prompt = job.body.get("prompt") if isinstance(job.body, dict) else None
            return {"detail": [_detail(["prompt"], MODERATION_MESSAGE, "content_policy_violation", prompt)]}, 422, final
        if job.outcome == "invalid":
            return {"detail": job.errors or [_detail([], "Invalid input", "value_error")]}, 422, final
        if job.outcome == "legacy_invalid":
            return {"detail": "Unsupported reference video: no face found"}, 422, final
        return {"detail": "Internal server error while generating the video"}, 500, final

    async def _result(self, request: web.Request, job: SimJob) -> web.StreamResponse:
        faulted = await self._fault("result", request)
        if faulted is not None:
            return faulted
        self._advance()
        if self._word(job) != "COMPLETED":
            return self._json({"detail": "Request is still in progress"}, 400)
        body, http, headers = self._result_answer(job)
        return self._json(body, http, headers)

    async def _cancel(self, request: web.Request, job: SimJob) -> web.StreamResponse:
        faulted = await self._fault("cancel", request)
        if faulted is not None:
            return faulted
        self._advance()
        if self._word(job) == "COMPLETED":
            return self._json({"status": "ALREADY_COMPLETED"}, 400)
        if job.started is None:
            job.cancelled = True  # removed from the queue
        # a running request only gets a signal, which the model may ignore
        return self._json({"status": "CANCELLATION_REQUESTED"}, 202)

    # --- model input validation, as the model does when it starts ----------------------------------

    def _validate(self, spec: SimModel, body: dict[str, Any]) -> list[dict[str, Any]]:
        errors = [_detail([k], "Field required", "missing") for k in sorted(spec.required - set(body))]
        errors += [
            _detail([k], "Extra inputs are not permitted", "extra_forbidden", body[k])
            for k in sorted(set(body) - spec.allowed)
        ]
        prompt = body.get("prompt")
        if "prompt" in body and (not isinstance(prompt, str) or not prompt.strip()):
            errors.append(_detail(["prompt"], "Input should be a non-empty string", "string_type", prompt))
        if "duration" in body and (body["duration"] not in spec.durations or isinstance(body["duration"], bool)):
            allowed = ", ".join(sorted(repr(d) for d in spec.durations))
            errors.append(_detail(["duration"], f"Input should be one of {allowed}", "literal_error", body["duration"]))
        if "aspect_ratio" in body and body["aspect_ratio"] not in spec.aspect_ratios:
            errors.append(_detail(["aspect_ratio"], "Unsupported aspect ratio", "literal_error", body["aspect_ratio"]))
        if "resolution" in body and body["resolution"] not in spec.resolutions:
            errors.append(_detail(["resolution"], "Unsupported resolution", "literal_error", body["resolution"]))
        for name in spec.booleans & set(body):
            if not isinstance(body[name], bool):
                errors.append(_detail([name], "Input should be a valid boolean", "bool_type", body[name]))
        counts: dict[str, int] = {}
        video_seconds: list[float] = []
        for name, rule in spec.media.items():
            items = body.get(name, [])
            if not isinstance(items, list):
                errors.append(_detail([name], "Input should be a valid list", "list_type", items))
                continue
            if not rule.min <= len(items) <= rule.max:
                errors.append(
                    _detail([name], f"List should have {rule.min} to {rule.max} items", "too_long", len(items))
                )
            counts[rule.family or name] = len(items)
            for index, item in enumerate(items):
                errors += self._media(rule.kind, [name, index], item, spec, video_seconds)
        if spec.max_files is not None and sum(counts.values()) > spec.max_files:
            errors.append(_detail([], f"At most {spec.max_files} references in total", "value_error"))
        if spec.video_total is not None and video_seconds:
            low, high = spec.video_total
            if not low <= sum(video_seconds) <= high:
                total = round(sum(video_seconds), 2)
                errors.append(
                    _detail(["video_urls"], f"Reference videos must total {low:g}-{high:g} s", "value_error", total)
                )
        if isinstance(prompt, str):
            errors += self._tokens(spec, prompt, counts)
        return errors

    def _tokens(self, spec: SimModel, prompt: str, counts: Mapping[str, int]) -> list[dict[str, Any]]:
        """References in the prompt must point at given media (1-based; 0-based for <IMAGE_REF_n>)."""
        errors = []
        for family, number in _TOKEN.findall(prompt):
            if family in counts and not 1 <= int(number) <= counts[family]:
                msg = f"@{family}{number} refers to a reference that was not given ({counts[family]} given)"
                errors.append(_detail(["prompt"], msg, "value_error", prompt))
        if spec.omni_tokens:
            images = counts.get("image_urls", 0)
            for number in _OMNI_TOKEN.findall(prompt):
                if int(number) >= images:
                    msg = f"<IMAGE_REF_{number}> refers to a reference that was not given ({images} given)"
                    errors.append(_detail(["prompt"], msg, "value_error", prompt))
        return errors

    def _media(
        self, kind: str, loc: list[Any], item: Any, spec: SimModel, seconds: list[float]
    ) -> list[dict[str, Any]]:
        if kind == "element":
            if not isinstance(item, dict) or "frontal_image_url" not in item:
                return [_detail(loc, "An element needs frontal_image_url", "value_error", item)]
            refs = item.get("reference_image_urls", [])
            if not isinstance(refs, list) or not 1 <= len(refs) <= 3:
                return [_detail([*loc, "reference_image_urls"], "List should have 1 to 3 items", "too_long", refs)]
            errors = self._media("image", [*loc, "frontal_image_url"], item["frontal_image_url"], spec, seconds)
            for i, ref in enumerate(refs):
                errors += self._media("image", [*loc, "reference_image_urls", i], ref, spec, seconds)
            return errors
        upload = self.uploads.get(item) if isinstance(item, str) else None
        if upload is None or upload.expired:
            msg = "Failed to download the file. Please check if the URL is accessible."
            return [_detail(loc, msg, "file_download_error", item)]
        if kind == "image":
            try:
                with Image.open(io.BytesIO(upload.data)) as image:
                    image.load()
            except Exception:
                return [_detail(loc, "Could not load the image", "image_load_error", item)]
            return []
        if kind == "video":
            facts = self._video_facts(upload)
            if facts is None:
                return [_detail(loc, "Could not read the video", "video_load_error", item)]
            duration, fps = facts
            seconds.append(duration)
            if spec.video_each is not None and not spec.video_each[0] <= duration <= spec.video_each[1]:
                low, high = spec.video_each
                return [_detail(loc, f"Reference videos must be {low:g}-{high:g} s long", "value_error", item)]
            if fps < spec.min_fps:
                return [_detail(loc, f"Reference videos need at least {spec.min_fps:g} fps", "value_error", item)]
        return []

    @staticmethod
    def _video_facts(upload: Upload) -> tuple[float, float] | None:
        if upload._video is None:
            try:
                with av.open(io.BytesIO(upload.data), mode="r") as container:
                    stream = container.streams.video[0]
                    frames = len(list(container.decode(stream)))
                    rate = float(stream.average_rate or 0) or 25.0
            except Exception:
                return None
            upload._video = (frames / rate, rate)
        return upload._video

    # --- the REST host: storage tokens ------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.StreamResponse:
        await self._record("rest", request)
        if refused := self._keyed(request):
            return refused
        if request.query.get("storage_type") != "fal-cdn-v3":
            return self._json({"detail": "Unsupported storage_type"}, 400)
        faulted = await self._fault("token", request)
        if faulted is not None:
            return faulted
        token = secrets.token_urlsafe(24)
        expires = datetime.now(UTC) + timedelta(seconds=self.token_seconds)
        self.tokens[token] = expires.timestamp()
        return self._json(
            {"token": token, "token_type": "Bearer", "base_url": self.cdn_url, "expires_at": expires.isoformat()}
        )

    # --- the CDN host -------------------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        data = await request.read()
        self.requests.append(Recorded("cdn", "POST", request.path, dict(request.query), dict(request.headers), data))
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or self.tokens.get(token, 0.0) <= time.time():
            return self._json({"detail": "Invalid or expired storage token"}, 401)
        faulted = await self._fault("upload", request)
        if faulted is not None:
            return faulted
        content_type = request.headers.get("Content-Type", "")
        if not content_type or not data:
            return self._json({"detail": "Content-Type and a body are required"}, 400)
        name = re.sub(r"[^\w.\-]", "_", request.headers.get("X-Fal-File-Name", "")) or "file"
        url = f"{self.cdn_url}/files/{uuid.uuid4().hex}/{name}"
        self.uploads[url] = Upload(url, data, content_type, name)
        return self._json({"access_url": url, "content_type": content_type, "file_name": name})

    async def _file(self, request: web.Request) -> web.StreamResponse:
        await self._record("cdn", request)
        faulted = await self._fault("download", request)
        if faulted is not None:
            return faulted
        url = f"{self.cdn_url}{request.path}"
        upload = self.uploads.get(url)
        if upload is not None:
            if upload.expired:
                return web.Response(status=404, text="not found")
            return web.Response(body=upload.data, content_type=upload.content_type)
        match = re.fullmatch(r"/files/out/([\w-]+)/output\.mp4", request.path)
        self._advance()
        job = self.jobs.get(match.group(1)) if match else None
        if job is None or job.outcome != "succeed" or job.finished is None:
            return web.Response(status=404, text="not found")
        return await send_video(request, self.video_bytes, chunked=self.chunked_download)
