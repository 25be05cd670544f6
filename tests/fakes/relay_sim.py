"""A Sora relay (new-api family) simulated over real loopback HTTP, with scripted faults.

Speaks the new-api relay shape: `POST /sora/v1/characters` (clip URL or finished task +
a 1-3 s window → `username`), `POST /v1/videos` (JSON, `seconds` as a string, `@username` in the
prompt), `GET /v1/videos/{id}`, `GET /v1/videos/{id}/content`. Validates like the relay, fetches
character clips for real, records every request, and serves a real playable MP4.

A second port plays the "CDN" (no auth): `host_file()` serves clips from it, and
`video_url_mode="cdn"` points finished videos at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import re
import secrets
import tempfile
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import av
from aiohttp import web

from discord_sandbox.clips import make_clip

MODELS = ("sora-2", "sora-2-pro")
SECONDS = ("10", "15")
SIZES = ("720x1280", "1280x720")
ROUTES = ("create_character", "get_character", "create_video", "get_video", "content", "file")
_MENTION = re.compile(r"(?<![\w.])@(\w+(?:\.\w+)*)")


# --- the served video ---------------------------------------------------------------------------


@cache
def sample_clip(seconds: float = 1.0) -> bytes:
    """A real, playable MP4 of `seconds` (rendered once per process and length)."""
    with tempfile.TemporaryDirectory() as tmp:
        return make_clip(Path(tmp) / "clip.mp4", seconds=seconds, size=(160, 120), fps=12).read_bytes()


def probe_mp4(data: bytes) -> float | None:
    """The duration in seconds of a real MP4 with a video stream, else None."""
    if data[4:8] != b"ftyp":
        return None
    try:
        with av.open(io.BytesIO(data), "r") as container:
            if not container.streams.video:
                return None
            if container.duration:
                return float(container.duration / 1_000_000)
            stream = container.streams.video[0]
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            return None
    except Exception:
        return None


# --- scripting ----------------------------------------------------------------------------------


def _err(message: str, code: str | None, etype: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": etype, "code": code}}


@dataclass(frozen=True)
class Fault:
    """What the sim does instead of (or after) answering one request on a route."""

    kind: str  # "http" | "hang" | "reset" | "malformed"
    status: int = 500
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()
    after_create: bool = False  # do the real work first (the task exists), then misbehave
    hang: float = 30.0

    @classmethod
    def http(cls, status: int, body: Any, *, after_create: bool = False, **headers: str) -> Fault:
        return cls("http", status, body, tuple((k.replace("_", "-"), v) for k, v in headers.items()), after_create)

    @classmethod
    def rate_limited(cls, retry_after: str = "7") -> Fault:
        body = _err("Rate limit exceeded, please retry later", "rate_limit_exceeded", "rate_limit_error")
        return cls.http(429, body, Retry_After=retry_after)

    @classmethod
    def heavy_load(cls) -> Fault:
        return cls.http(503, _err("We're under heavy load, please try again later", "heavy_load", "server_error"))

    @classmethod
    def server_error(cls, status: int = 500, *, after_create: bool = False) -> Fault:
        body = _err(f"upstream error: do request failed (status {status})", "upstream_error", "new_api_error")
        return cls.http(status, body, after_create=after_create)

    @classmethod
    def read_timeout(cls, *, after_create: bool = True, hang: float = 30.0) -> Fault:
        return cls("hang", after_create=after_create, hang=hang)

    @classmethod
    def connection_reset(cls, *, after_create: bool = False) -> Fault:
        return cls("reset", after_create=after_create)

    @classmethod
    def malformed_json(cls, *, after_create: bool = False) -> Fault:
        return cls("malformed", 200, after_create=after_create)

    @classmethod
    def moderation(cls) -> Fault:
        return cls.http(400, _err("This content may violate our content policies.", "content_policy_violation"))

    @classmethod
    def model_not_found(cls, model: str = "sora-2") -> Fault:
        message = f"No available channel for model {model} under group default (无可用渠道)"
        return cls.http(503, _err(message, "model_not_found", "new_api_error"))

    @classmethod
    def token_invalidated(cls) -> Fault:
        message = "Your authentication token has been invalidated. Please try signing in again."
        return cls.http(401, _err(message, "token_invalidated"))

    @classmethod
    def no_available_tokens(cls) -> Fault:
        message = "No available tokens for video generation. All tokens are disabled, cooling down or expired."
        return cls.http(500, _err(message, None, "server_error"))

    @classmethod
    def human_likeness(cls) -> Fault:
        message = "Upload may depict a realistic human. Please try again without humans in the frame."
        return cls.http(400, _err(message, "invalid_request"))

    @classmethod
    def sentinel_block(cls) -> Fault:
        message = "Hmmm something didn't look right with your request. Please try again later."
        return cls.http(400, _err(message, "sentinel_block"))

    @classmethod
    def invalid_request(cls) -> Fault:
        return cls.http(400, _err("Unable to process request", "invalid_request"))


class Outcome:
    """How a created task ends (queue with `RelaySim.queue_outcomes`)."""

    OK = "ok"
    MODERATION = "moderation"  # fails at the end with a content-policy error
    FAIL = "fail"  # fails at the end with a generic generation error
    STUCK = "stuck"  # stays in_progress forever
    UNKNOWN_STATUS = "unknown_status"  # reports an undocumented word while running, then completes


@dataclass
class Recorded:
    route: str | None
    method: str
    path: str
    port: int
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class SimTask:
    id: str
    model: str
    prompt: str
    seconds: str
    size: str
    created: float
    outcome: str


@dataclass
class SimCharacter:
    id: str
    username: str
    source: dict[str, str]
    ready_at: float


@dataclass
class RelaySim:
    api_key: str = "sk-relay-sim-0123456789abcdef"
    job_seconds: float = 0.3  # time from create to completed
    character_seconds: float = 0.2  # async variant: time until the username appears
    async_characters: bool = False
    video_url_mode: str = "content"  # "content" (relay route) | "cdn" (second port) | "none"
    chunked_content: bool = False  # serve the video without Content-Length
    models: tuple[str, ...] = MODELS

    requests: list[Recorded] = field(default_factory=list, init=False)
    tasks: dict[str, SimTask] = field(default_factory=dict, init=False)
    characters: dict[str, SimCharacter] = field(default_factory=dict, init=False)
    _faults: dict[str, deque[Fault]] = field(default_factory=lambda: defaultdict(deque), init=False)
    _outcomes: deque[str] = field(default_factory=deque, init=False)
    _files: dict[str, tuple[bytes, str]] = field(default_factory=dict, init=False)
    _runner: web.AppRunner | None = field(default=None, init=False)
    _ports: tuple[int, int] = field(default=(0, 0), init=False)
    _closing: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> RelaySim:
        self.video = await asyncio.to_thread(sample_clip, 1.0)
        app = web.Application(middlewares=[self._record], client_max_size=8 << 20)
        r = app.router
        r.add_post("/sora/v1/characters", self._create_character, name="create_character")
        r.add_get("/sora/v1/characters/{id}", self._get_character, name="get_character")
        r.add_post("/v1/videos", self._create_video, name="create_video")
        r.add_get("/v1/videos/{id}", self._get_video, name="get_video")
        r.add_get("/v1/videos/{id}/content", self._content, name="content")
        r.add_get("/files/{token}", self._file, name="file")
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        ports: list[int] = []
        for _ in range(2):  # the relay, and a "CDN" on another origin
            await web.TCPSite(self._runner, "127.0.0.1", 0).start()
            ports.append(next(a[1] for a in self._runner.addresses if a[1] not in ports))
        self._ports = (ports[0], ports[1])
        return self

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._ports[0]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self._ports[1]}"

    @property
    def video_sha256(self) -> str:
        return hashlib.sha256(self.video).hexdigest()

    # --- scripting ------------------------------------------------------------------------------

    def fail(self, route: str, *faults: Fault) -> None:
        """Queue faults for the next requests on `route` (one per request)."""
        assert route in ROUTES, route
        self._faults[route].extend(faults)

    def queue_outcomes(self, *outcomes: str) -> None:
        self._outcomes.extend(outcomes)

    def host_file(self, data: bytes, content_type: str = "video/mp4") -> str:
        token = secrets.token_hex(8)
        self._files[token] = (data, content_type)
        return f"{self.cdn_url}/files/{token}.mp4"

    def calls(self, route: str) -> list[Recorded]:
        return [r for r in self.requests if r.route == route]

    def add_character(self, username: str) -> SimCharacter:
        """A character that exists upstream without going through the API (e.g. a public cameo)."""
        char = SimCharacter("ch_" + secrets.token_hex(12), username, {}, 0.0)
        self.characters[char.id] = char
        return char

    # --- plumbing -------------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        route = request.match_info.route.name
        self.requests.append(
            Recorded(
                route,
                request.method,
                request.path,
                sock[1] if sock else 0,
                dict(request.headers),
                body,
                time.monotonic(),
            )
        )
        response: web.StreamResponse = await handler(request)
        return response

    def _take_fault(self, route: str) -> Fault | None:
        queue = self._faults.get(route)
        return queue.popleft() if queue else None

    async def _misbehave(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.kind == "hang":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), fault.hang)
            return _json(500, _err("hung", None))
        if fault.kind == "reset":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(text="")
        if fault.kind == "malformed":
            return web.Response(status=fault.status, text='{"id": "video_', content_type="application/json")
        return _json(fault.status, fault.body, dict(fault.headers))

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def _guard(self, request: web.Request, route: str) -> tuple[web.StreamResponse | None, Fault | None]:
        """Auth, then the scripted fault: (an answer to send now, a fault to apply after the work)."""
        if not self._authorized(request):
            return _json(401, _err("无效的令牌 (invalid token)", "invalid_token", "new_api_error")), None
        fault = self._take_fault(route)
        if fault is None:
            return None, None
        if fault.after_create:
            return None, fault
        return await self._misbehave(request, fault), None

    # --- characters -----------------------------------------------------------------------------

    async def _create_character(self, request: web.Request) -> web.StreamResponse:
        early, late = await self._guard(request, "create_character")
        if early is not None:
            return early
        body = await _json_body(request)
        if not isinstance(body, dict):
            return _json(400, _err("invalid JSON body", "invalid_request"))
        if body.get("model") != "sora-2-character":
            return _json(400, _err("model must be sora-2-character", "invalid_model"))
        url, from_task = body.get("url"), body.get("from_task")
        if (url is None) == (from_task is None) or not isinstance(url or from_task, str):
            return _json(400, _err("exactly one of url and from_task is required", "invalid_request"))
        window = _window(body.get("timestamps"))
        if window is None:
            return _json(400, _err("timestamps must be 'start,end' with a 1-3 second window", "invalid_timestamps"))
        if isinstance(url, str):
            length, problem = await self._fetch_clip(url)
        else:
            length, problem = self._task_length(str(from_task))
        if problem:
            return _json(400, _err(problem, "invalid_request"))
        assert length is not None
        if window[1] > length + 0.05:
            return _json(400, _err(f"timestamps exceed the video ({length:.2f} s)", "invalid_timestamps"))
        char = SimCharacter(
            ("char_" if self.async_characters else "ch_") + secrets.token_hex(12),
            f"{_word()}.{_word()}",
            {k: str(v) for k, v in body.items()},
            time.monotonic() + (self.character_seconds if self.async_characters else 0.0),
        )
        self.characters[char.id] = char
        if late is not None:
            return await self._misbehave(request, late)
        return _json(200, self._character_json(char))

    async def _get_character(self, request: web.Request) -> web.StreamResponse:
        early, _ = await self._guard(request, "get_character")
        if early is not None:
            return early
        char = self.characters.get(request.match_info["id"])
        if char is None:
            return _json(404, _err("character not found", "not_found"))
        return _json(200, self._character_json(char))

    def _character_json(self, char: SimCharacter) -> dict[str, Any]:
        ready = time.monotonic() >= char.ready_at
        data: dict[str, Any] = {
            "id": char.id,
            "username": char.username if ready else None,
            "display_name": char.username.split(".")[0] if ready else None,
            "permalink": f"https://sora.chatgpt.com/profile/{char.username}" if ready else None,
            "profile_picture_url": "https://videos.openai.com/az/files/profile.webp" if ready else None,
        }
        if self.async_characters:
            data |= {"object": "character", "status": "completed" if ready else "queued"}
        return data

    async def _fetch_clip(self, url: str) -> tuple[float | None, str | None]:
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
                if resp.status != 200:
                    return None, f"could not fetch the video url (HTTP {resp.status})"
                data = await resp.content.read(64 << 20)
        except (aiohttp.ClientError, TimeoutError):
            return None, "could not fetch the video url"
        length = await asyncio.to_thread(probe_mp4, data)
        if length is None:
            return None, "the url is not a playable mp4 video"
        return length, None

    def _task_length(self, task_id: str) -> tuple[float | None, str | None]:
        task = self.tasks.get(task_id)
        if task is None or self._state(task)[0] != "completed":
            return None, f"task {task_id} is not a completed video"
        return float(task.seconds), None

    # --- videos ---------------------------------------------------------------------------------

    async def _create_video(self, request: web.Request) -> web.StreamResponse:
        early, late = await self._guard(request, "create_video")
        if early is not None:
            return early
        body = await _json_body(request)
        if not isinstance(body, dict):
            return _json(400, _err("invalid JSON body", "invalid_request"))
        model = body.get("model")
        if model not in self.models:
            message = f"No available channel for model {model} under group default"
            return _json(503, _err(message, "model_not_found", "new_api_error"))
        prompt, seconds, size = body.get("prompt"), body.get("seconds", "10"), body.get("size", "720x1280")
        if not isinstance(prompt, str) or not prompt.strip():
            return _json(400, _err("prompt is required", "invalid_request"))
        if not isinstance(seconds, str):
            # new-api decodes into a Go string field
            message = "json: cannot unmarshal number into Go struct field TaskSubmitReq.seconds of type string"
            return _json(400, _err(message, "invalid_request"))
        if seconds not in SECONDS:
            return _json(400, _err(f"seconds must be one of {', '.join(SECONDS)}", "invalid_request"))
        if size not in SIZES:
            return _json(400, _err(f"size must be one of {', '.join(SIZES)}", "invalid_request"))
        known = {c.username for c in self.characters.values() if time.monotonic() >= c.ready_at}
        for username in _MENTION.findall(prompt):
            if username not in known:
                return _json(400, _err(f"character @{username} not found", "character_not_found"))
        outcome = self._outcomes.popleft() if self._outcomes else Outcome.OK
        task = SimTask("video_" + secrets.token_hex(12), model, prompt, seconds, size, time.monotonic(), outcome)
        self.tasks[task.id] = task
        if late is not None:
            return await self._misbehave(request, late)
        return _json(200, self._video_json(task))

    async def _get_video(self, request: web.Request) -> web.StreamResponse:
        early, _ = await self._guard(request, "get_video")
        if early is not None:
            return early
        task = self.tasks.get(request.match_info["id"])
        if task is None:
            return _json(404, _err("task not found", "task_not_found"))
        return _json(200, self._video_json(task))

    def _state(self, task: SimTask) -> tuple[str, int]:
        elapsed = time.monotonic() - task.created
        progress = min(99, int(100 * elapsed / self.job_seconds)) if self.job_seconds > 0 else 99
        if task.outcome == Outcome.STUCK:
            return "in_progress", 42
        if elapsed < self.job_seconds * 0.2:
            return "submitted", 0
        if elapsed < self.job_seconds:
            return ("rendering_v2" if task.outcome == Outcome.UNKNOWN_STATUS else "in_progress"), progress
        if task.outcome in (Outcome.MODERATION, Outcome.FAIL):
            return "failed", 100
        return "completed", 100

    def _video_json(self, task: SimTask) -> dict[str, Any]:
        status, progress = self._state(task)
        data: dict[str, Any] = {
            "id": task.id,
            "object": "video",
            "model": task.model,
            "status": status,
            "progress": progress,
            "created_at": int(time.time()),
            "seconds": task.seconds,
            "size": task.size,
            "video_url": None,
            "error": None,
        }
        if status == "completed" and self.video_url_mode == "content":
            data["video_url"] = f"{self.base_url}/v1/videos/{task.id}/content"
        elif status == "completed" and self.video_url_mode == "cdn":
            data["video_url"] = self._cdn_video(task.id)
        elif status == "failed" and task.outcome == Outcome.MODERATION:
            data["error"] = {
                "message": "This video was blocked by our safety system.",
                "type": "content_policy_violation",
            }
        elif status == "failed":
            data["error"] = {"message": "Video generation failed", "type": "generation_failed"}
        return data

    def _cdn_video(self, task_id: str) -> str:
        self._files.setdefault(task_id, (self.video, "video/mp4"))
        return f"{self.cdn_url}/files/{task_id}"

    async def _content(self, request: web.Request) -> web.StreamResponse:
        early, _ = await self._guard(request, "content")
        if early is not None:
            return early
        task = self.tasks.get(request.match_info["id"])
        if task is None or self._state(task)[0] != "completed":
            return _json(404, _err("video not found or not completed", "not_found"))
        return await self._send_video(request, self.video)

    async def _file(self, request: web.Request) -> web.StreamResponse:
        fault = self._take_fault("file")
        if fault is not None:
            return await self._misbehave(request, fault)
        token = request.match_info["token"].removesuffix(".mp4")
        entry = self._files.get(token)
        if entry is None:
            return _json(404, _err("file not found", "not_found"))
        return await self._send_video(request, entry[0], entry[1])

    async def _send_video(
        self, request: web.Request, data: bytes, content_type: str = "video/mp4"
    ) -> web.StreamResponse:
        if not self.chunked_content:
            return web.Response(body=data, content_type=content_type)
        response = web.StreamResponse(headers={"Content-Type": content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(0, len(data), 16 * 1024):
            await response.write(data[i : i + 16 * 1024])
        await response.write_eof()
        return response


# --- helpers ------------------------------------------------------------------------------------


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    # exactly application/json, as real relays answer
    return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)


async def _json_body(request: web.Request) -> Any:
    if request.content_type != "application/json":
        return None
    try:
        return json.loads(await request.read())
    except ValueError:
        return None


def _window(raw: object) -> tuple[float, float] | None:
    if not isinstance(raw, str) or raw.count(",") != 1:
        return None
    try:
        start, end = (float(part) for part in raw.split(","))
    except ValueError:
        return None
    if not (0 <= start < end and 1 <= end - start <= 3):
        return None
    return start, end


def _word() -> str:
    return "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(9))
