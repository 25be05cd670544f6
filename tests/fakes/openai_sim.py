"""A loopback simulator of the OpenAI Videos API (`/v1/videos`), strict like the real service.

It validates what the real API validated (Bearer auth, JSON types, `seconds` as a string of an
allowed value, size per model, at most two known characters whose names appear verbatim in the
prompt, a real 2-4 s MP4 for character uploads), advances jobs with time-scaled progress, serves a
real playable MP4, sends `openai-poll-after-ms`, and records every request.

Faults are scripted per operation and consumed in order::

    sim.script("create", Fault.RATE_LIMIT, retry_after_ms=1500)
    sim.script("create", Fault.READ_TIMEOUT)          # the job IS created, the answer stalls
    sim.script("create", Fault.MODERATION_AT_END)     # the next job fails with moderation_blocked

Operations: "create", "retrieve", "list", "content", "character".
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import io
import itertools
import json
import math
import secrets
import tempfile
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import av
from aiohttp import web
from multidict import MultiDictProxy

from discord_sandbox.clips import make_clip

OPS = ("create", "retrieve", "list", "content", "character")
SECONDS = ("4", "8", "12", "16", "20")
BASE_SIZES = ("720x1280", "1280x720")
MODEL_SIZES = {
    "sora-2": BASE_SIZES,
    "sora-2-pro": (*BASE_SIZES, "1024x1792", "1792x1024", "1080x1920", "1920x1080"),
}
CREATE_FIELDS = frozenset({"model", "prompt", "seconds", "size", "characters", "input_reference"})
MODERATION_INPUT = "The request is blocked by our moderation system when checking inputs. Possible reasons: violence."
MODERATION_OUTPUT = "Your request was blocked by our moderation system."
POLL_HEADER = "openai-poll-after-ms"


class Fault(enum.Enum):
    # answered instead of the real response
    RATE_LIMIT = "rate_limit"  # 429 + retry-after-ms / retry-after
    INSUFFICIENT_QUOTA = "insufficient_quota"  # 429 insufficient_quota
    AUTH = "auth"  # 401 even with the right key (a revoked key)
    SERVER_ERROR = "500"
    BAD_GATEWAY = "502"  # text/html body, as proxies send it
    UNAVAILABLE = "503"
    GATEWAY_TIMEOUT = "504"
    OVERLOADED = "overloaded"  # 529 with an "overloaded" error
    MODERATION = "moderation"  # 400 "blocked by our moderation system" at create
    MODEL_NOT_FOUND = "model_not_found"  # 404 model_not_found (Sora after its shutdown)
    HUMAN_LIKENESS = "human_likeness"  # 400 on a character upload
    # the real work happens, then the answer goes wrong
    READ_TIMEOUT = "read_timeout"  # stall past the client's read timeout
    CONNECTION_RESET = "connection_reset"  # close the connection (mid-body for "content")
    MALFORMED_JSON = "malformed_json"  # 200 with a truncated JSON body
    UNKNOWN_STATUS = "unknown_status"  # "retrieve": a status word nobody documented
    # job fates, scripted on "create" and applied to the next created job
    MODERATION_AT_END = "moderation_at_end"  # failed + error.code moderation_blocked
    FAIL_AT_END = "fail_at_end"  # failed + error.code internal_error
    STUCK = "stuck"  # in_progress forever


_FATES = {Fault.MODERATION_AT_END: "moderation", Fault.FAIL_AT_END: "fail", Fault.STUCK: "stuck"}
_AFTER_WORK = {Fault.READ_TIMEOUT, Fault.CONNECTION_RESET, Fault.MALFORMED_JSON}


@dataclass
class Scripted:
    fault: Fault
    retry_after_ms: int | None = None
    retry_after: float | None = None
    delay: float = 5.0  # READ_TIMEOUT stall
    create_job: bool = False  # for 5xx at create: the job exists although the answer failed


@dataclass
class Upload:
    filename: str | None
    content_type: str | None
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # without Authorization
    authorized: bool
    json: Any = None
    form: dict[str, str | Upload] | None = None
    content_type: str = ""


@dataclass
class SimJob:
    id: str
    model: str
    prompt: str
    size: str
    seconds: str
    characters: list[str]
    created_at: int
    started: float  # monotonic
    fate: str = "ok"  # ok | moderation | fail | stuck

    def state(self, duration: float) -> tuple[str, int]:
        frac = (time.monotonic() - self.started) / duration if duration > 0 else 1.0
        if frac < 0.1:
            return "queued", 0
        if self.fate == "stuck":
            return "in_progress", min(int(frac * 100), 90)
        if frac < 1.0:
            return "in_progress", int(frac * 100)
        return ("completed", 100) if self.fate == "ok" else ("failed", 100)


def _error(
    status: int, message: str, *, etype: str = "invalid_request_error", code: str | None = None, param: Any = None
) -> web.Response:
    body = {"error": {"message": message, "type": etype, "param": param, "code": code}}
    return web.json_response(body, status=status)


@cache
def _rendered_video() -> bytes:
    """A real playable MP4, rendered once per process."""
    with tempfile.TemporaryDirectory() as tmp:
        path = make_clip(Path(tmp) / "out.mp4", seconds=1.0, size=(128, 72), fps=12, blur=())
        return path.read_bytes()


def probe_mp4(data: bytes) -> tuple[float, int, int]:
    """(duration s, width, height) of an MP4 upload; raises ValueError when it is not one."""
    try:
        with av.open(io.BytesIO(data), "r") as container:
            if "mp4" not in container.format.name or not container.streams.video:
                raise ValueError("not an MP4 video")
            video = container.streams.video[0]
            if container.duration is not None:
                duration = container.duration / av.time_base
            elif video.duration is not None and video.time_base is not None:
                duration = float(video.duration * video.time_base)
            else:
                raise ValueError("no duration")
            return duration, video.width, video.height
    except av.FFmpegError as exc:
        raise ValueError(str(exc)) from exc


class OpenAISim:
    def __init__(
        self,
        *,
        api_key: str = "sk-sim-test-key-0123456789",
        job_seconds: float = 1.0,
        poll_after_ms: int | None = 250,
        models: tuple[str, ...] = ("sora-2", "sora-2-pro"),
        chunked_content: bool = False,
        clip_tolerance: float = 0.15,
        list_supported: bool = True,
    ) -> None:
        self.api_key = api_key
        self.list_supported = list_supported  # False: GET /videos is 404, as on relays that only proxy jobs
        self.job_seconds = job_seconds
        self.poll_after_ms = poll_after_ms
        self.models = set(models)
        self.chunked_content = chunked_content
        self.clip_tolerance = clip_tolerance
        self.jobs: dict[str, SimJob] = {}
        self.characters: dict[str, str] = {}  # id -> name
        self.requests: list[Recorded] = []
        self._faults: dict[str, deque[Scripted]] = defaultdict(deque)
        self._seq = itertools.count(1)
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.video_bytes = b""
        self.video_sha256 = ""

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> OpenAISim:
        self.video_bytes = await asyncio.to_thread(_rendered_video)
        self.video_sha256 = hashlib.sha256(self.video_bytes).hexdigest()
        app = web.Application(middlewares=[self._record], client_max_size=50 * 1024 * 1024)
        app.router.add_post("/v1/videos", self._create)
        app.router.add_get("/v1/videos", self._list)
        app.router.add_post("/v1/videos/characters", self._create_character)
        app.router.add_get("/v1/videos/characters/{cid}", self._get_character)
        app.router.add_get("/v1/videos/{vid}", self._retrieve)
        app.router.add_get("/v1/videos/{vid}/content", self._content)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- scripting and inspection ---------------------------------------------------------------

    def script(
        self,
        op: str,
        fault: Fault,
        *,
        times: int = 1,
        retry_after_ms: int | None = None,
        retry_after: float | None = None,
        delay: float = 5.0,
        create_job: bool = False,
    ) -> None:
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}; one of {OPS}")
        for _ in range(times):
            self._faults[op].append(Scripted(fault, retry_after_ms, retry_after, delay, create_job))

    def requests_to(self, method: str, path_suffix: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.endswith(path_suffix)]

    def creates(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path == "/v1/videos"]

    def _pop(self, op: str) -> Scripted | None:
        queue = self._faults[op]
        return queue.popleft() if queue else None

    # --- plumbing -------------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        rec = Recorded(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=headers,
            authorized=request.headers.get("Authorization") == f"Bearer {self.api_key}",
            content_type=request.content_type,
        )
        if request.content_type == "application/json":
            try:
                rec.json = json.loads(await request.read())
            except ValueError:
                rec.json = None
        elif request.content_type == "multipart/form-data":
            rec.form = _form(await request.post())
        self.requests.append(rec)
        result: web.StreamResponse = await handler(request)
        return result

    def _auth(self, request: web.Request) -> web.Response | None:
        presented = request.headers.get("Authorization", "")
        if presented == f"Bearer {self.api_key}":
            return None
        # Like the real API, quote the key back: the adapter must never pass this text on.
        key = presented.removeprefix("Bearer ").strip()
        return _error(
            401,
            f"Incorrect API key provided: {key}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )

    def _poll_headers(self) -> dict[str, str]:
        return {POLL_HEADER: str(self.poll_after_ms)} if self.poll_after_ms is not None else {}

    def _fault_response(self, s: Scripted, model: str = "sora-2") -> web.Response | None:
        f = s.fault
        if f is Fault.RATE_LIMIT:
            headers: dict[str, str] = {}
            if s.retry_after_ms is not None:
                headers["retry-after-ms"] = str(s.retry_after_ms)
                headers["retry-after"] = str(math.ceil(s.retry_after_ms / 1000))
            if s.retry_after is not None:
                headers["retry-after"] = str(s.retry_after)
            resp = _error(
                429,
                f"Rate limit reached for {model} in organization org-sim on requests per min (RPM): "
                "Limit 25, Used 25, Requested 1. You can increase your rate limit by adding a payment "
                "method at https://platform.openai.com/account/billing.",
                etype="requests",
                code="rate_limit_exceeded",
            )
            resp.headers.update(headers)
            return resp
        if f is Fault.INSUFFICIENT_QUOTA:
            return _error(
                429,
                "You exceeded your current quota, please check your plan and billing details.",
                etype="insufficient_quota",
                code="insufficient_quota",
            )
        if f is Fault.AUTH:
            return _error(401, "Your API key has been revoked.", code="invalid_api_key")
        if f is Fault.SERVER_ERROR:
            return _error(500, "The server had an error while processing your request.", etype="server_error")
        if f is Fault.BAD_GATEWAY:
            return web.Response(status=502, text="<html><h1>502 Bad Gateway</h1></html>", content_type="text/html")
        if f is Fault.UNAVAILABLE:
            return _error(503, "Service Unavailable", etype="server_error")
        if f is Fault.GATEWAY_TIMEOUT:
            return web.Response(status=504, text="<html><h1>504 Gateway Time-out</h1></html>", content_type="text/html")
        if f is Fault.OVERLOADED:
            return _error(529, "The engine is currently overloaded, please try again later.", etype="overloaded")
        if f is Fault.MODERATION:
            return _error(400, MODERATION_INPUT)
        if f is Fault.MODEL_NOT_FOUND:
            return _model_not_found(model)
        if f is Fault.HUMAN_LIKENESS:
            return _error(400, "Character uploads that depict human likeness are not allowed.")
        return None

    async def _stall(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=delay)

    @staticmethod
    def _reset(request: web.Request) -> web.Response:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)  # never reaches the client

    def _video(self, job: SimJob, status_override: str | None = None) -> dict[str, Any]:
        status, progress = job.state(self.job_seconds)
        completed = math.ceil(job.created_at + self.job_seconds) if status in ("completed", "failed") else None
        error = None
        if status == "failed":
            if job.fate == "moderation":
                error = {"code": "moderation_blocked", "message": MODERATION_OUTPUT}
            else:
                error = {"code": "internal_error", "message": "Video generation failed."}
        return {
            "id": job.id,
            "object": "video",
            "created_at": job.created_at,
            "status": status_override or status,
            "model": job.model,
            "progress": progress,
            "prompt": job.prompt,
            "seconds": job.seconds,
            "size": job.size,
            "completed_at": completed,
            "expires_at": completed + 3600 if completed else None,
            "remixed_from_video_id": None,
            "error": error,
            "quality": "standard",  # undocumented field seen in the wild: decoders must ignore it
        }

    # --- handlers -------------------------------------------------------------------------------

    def _validate_create(self, body: Any) -> web.Response | dict[str, Any]:
        if not isinstance(body, dict):
            return _error(400, "We could not parse the JSON body of your request.")
        for key in body:
            if key not in CREATE_FIELDS:
                return _error(400, f"Unrecognized request argument supplied: {key}", param=key)
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return _error(400, "Missing required parameter: 'prompt'.", param="prompt")
        model = body.get("model", "sora-2")
        if not isinstance(model, str):
            return _error(400, "Invalid type for 'model': expected a string.", param="model")
        if model not in self.models:
            return _model_not_found(model)
        seconds = body.get("seconds", "4")
        if not isinstance(seconds, str):
            return _error(
                400,
                f"Invalid type for 'seconds': expected one of {', '.join(SECONDS)}, "
                f"but got {type(seconds).__name__} instead.",
                code="invalid_type",
                param="seconds",
            )
        if seconds not in SECONDS:
            return _error(
                400,
                f"Invalid value: '{seconds}'. Supported values are: {', '.join(repr(s) for s in SECONDS)}.",
                code="invalid_value",
                param="seconds",
            )
        size = body.get("size", "720x1280")
        allowed = MODEL_SIZES.get(model, BASE_SIZES)
        if not isinstance(size, str) or size not in allowed:
            return _error(
                400,
                f"Invalid value: '{size}'. Supported values are: {', '.join(allowed)}.",
                code="invalid_value",
                param="size",
            )
        chars = body.get("characters", [])
        if not isinstance(chars, list) or len(chars) > 2:
            return _error(400, "'characters' must be a list of at most 2 items.", param="characters")
        ids: list[str] = []
        for item in chars:
            if not isinstance(item, dict) or set(item) != {"id"} or not isinstance(item["id"], str):
                return _error(400, 'Each character must be an object {"id": string}.', param="characters")
            name = self.characters.get(item["id"])
            if name is None:
                return _error(404, f"Character '{item['id']}' not found.", code="character_not_found")
            if name not in prompt:
                return _error(400, f"Character '{name}' must be mentioned by name in the prompt.", param="prompt")
            ids.append(item["id"])
        return {"model": model, "prompt": prompt, "seconds": seconds, "size": size, "characters": ids}

    def _new_job(self, fields: dict[str, Any], fate: str) -> SimJob:
        job = SimJob(
            id=f"video_{secrets.token_hex(12)}_{next(self._seq)}",
            created_at=int(time.time()),
            started=time.monotonic(),
            fate=fate,
            **fields,
        )
        self.jobs[job.id] = job
        return job

    async def _create(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._auth(request)) is not None:
            return denied
        scripted = self._pop("create")
        try:
            body = json.loads(await request.read()) if request.content_type == "application/json" else None
        except ValueError:
            body = None
        if body is None:
            return _error(400, "We could not parse the JSON body of your request.")
        model = body.get("model", "sora-2") if isinstance(body, dict) else "sora-2"
        if scripted and (early := self._fault_response(scripted, str(model))) is not None:
            if scripted.create_job and isinstance(fields := self._validate_create(body), dict):
                self._new_job(fields, "ok")
            return early
        fields = self._validate_create(body)
        if isinstance(fields, web.Response):
            return fields
        fate = _FATES.get(scripted.fault, "ok") if scripted else "ok"
        job = self._new_job(fields, fate)
        return await self._answer(request, scripted, self._video(job))

    async def _answer(self, request: web.Request, scripted: Scripted | None, payload: Any) -> web.StreamResponse:
        """The normal JSON answer, or what an after-the-work fault makes of it."""
        if scripted and scripted.fault is Fault.READ_TIMEOUT:
            await self._stall(scripted.delay)
        elif scripted and scripted.fault is Fault.CONNECTION_RESET:
            return self._reset(request)
        elif scripted and scripted.fault is Fault.MALFORMED_JSON:
            text = json.dumps(payload)
            return web.Response(text=text[: len(text) // 2], content_type="application/json")
        return web.json_response(payload, headers=self._poll_headers())

    async def _retrieve(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._auth(request)) is not None:
            return denied
        scripted = self._pop("retrieve")
        if scripted and (early := self._fault_response(scripted)) is not None:
            return early
        job = self.jobs.get(request.match_info["vid"])
        if job is None:
            return _error(404, f"Video with id '{request.match_info['vid']}' not found.", code="video_not_found")
        override = "paused_for_review" if scripted and scripted.fault is Fault.UNKNOWN_STATUS else None
        return await self._answer(request, scripted, self._video(job, override))

    async def _list(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._auth(request)) is not None:
            return denied
        if not self.list_supported:
            return _error(404, "Invalid URL (GET /v1/videos)", code="unknown_url")
        scripted = self._pop("list")
        if scripted and (early := self._fault_response(scripted)) is not None:
            return early
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            return _error(400, "Invalid value for 'limit'.", param="limit")
        order = request.query.get("order", "desc")
        if not 1 <= limit <= 100 or order not in ("asc", "desc"):
            return _error(400, "Invalid value for 'limit' or 'order'.")
        jobs = sorted(self.jobs.values(), key=lambda j: (j.created_at, j.id.rsplit("_", 1)[1].zfill(9)))
        if order == "desc":
            jobs.reverse()
        after = request.query.get("after")
        if after:
            ids = [j.id for j in jobs]
            if after not in ids:
                return _error(400, f"Invalid 'after': {after}", param="after")
            jobs = jobs[ids.index(after) + 1 :]
        page = jobs[:limit]
        data = [self._video(j) for j in page]
        return await self._answer(
            request,
            scripted,
            {
                "object": "list",
                "data": data,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(jobs) > limit,
            },
        )

    async def _content(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._auth(request)) is not None:
            return denied
        scripted = self._pop("content")
        if scripted and (early := self._fault_response(scripted)) is not None:
            return early
        job = self.jobs.get(request.match_info["vid"])
        if job is None:
            return _error(404, f"Video with id '{request.match_info['vid']}' not found.", code="video_not_found")
        if job.state(self.job_seconds)[0] != "completed":
            return _error(404, "Video is not ready yet.", code="video_not_ready")
        if scripted and scripted.fault is Fault.CONNECTION_RESET:
            resp = web.StreamResponse(headers={"Content-Type": "video/mp4"})
            resp.content_length = len(self.video_bytes)
            await resp.prepare(request)
            await resp.write(self.video_bytes[: len(self.video_bytes) // 3])
            return self._reset(request)
        if scripted and scripted.fault is Fault.READ_TIMEOUT:
            await self._stall(scripted.delay)
        if self.chunked_content:
            resp = web.StreamResponse(headers={"Content-Type": "video/mp4"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for i in range(0, len(self.video_bytes), 4096):
                await resp.write(self.video_bytes[i : i + 4096])
            await resp.write_eof()
            return resp
        return web.Response(body=self.video_bytes, content_type="video/mp4")

    async def _create_character(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._auth(request)) is not None:
            return denied
        scripted = self._pop("character")
        if request.content_type != "multipart/form-data":
            return _error(400, "Expected multipart/form-data with 'name' and 'video'.")
        form = _form(await request.post())
        name, video = form.get("name"), form.get("video")
        if not isinstance(name, str) or not 1 <= len(name) <= 80:
            return _error(400, "Missing required parameter: 'name' (1-80 characters).", param="name")
        if not isinstance(video, Upload):
            return _error(400, "Missing required parameter: 'video' (an MP4 file).", param="video")
        try:
            duration, width, height = await asyncio.to_thread(probe_mp4, video.data)
        except ValueError:
            return _error(400, "Invalid file: 'video' must be an MP4 video.", param="video")
        tol = self.clip_tolerance
        if not 2.0 - tol <= duration <= 4.0 + tol:
            return _error(400, f"Character video must be 2 to 4 seconds long (got {duration:.2f} s).", param="video")
        if max(width, height) / max(1, min(width, height)) > 2.67:
            return _error(400, "Unsupported aspect ratio for a character video.", param="video")
        if scripted and (early := self._fault_response(scripted)) is not None:
            return early
        cid = f"char_{secrets.token_hex(16)}"
        self.characters[cid] = name
        return await self._answer(request, scripted, {"id": cid, "name": name, "created_at": int(time.time())})

    async def _get_character(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._auth(request)) is not None:
            return denied
        cid = request.match_info["cid"]
        if cid not in self.characters:
            return _error(404, f"Character '{cid}' not found.", code="character_not_found")
        return web.json_response({"id": cid, "name": self.characters[cid], "created_at": 0})


def _model_not_found(model: str) -> web.Response:
    return _error(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


def _form(post: MultiDictProxy[Any]) -> dict[str, str | Upload]:
    out: dict[str, str | Upload] = {}
    for key, value in post.items():
        if isinstance(value, web.FileField):
            out[key] = Upload(value.filename, value.content_type, value.file.read())
            value.file.seek(0)
        else:
            out[key] = str(value)
    return out
