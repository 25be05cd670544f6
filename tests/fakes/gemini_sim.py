"""A loopback simulator of the Gemini Interactions API (video) and of the Files API it relies on.

It refuses what the real API is reported to refuse: a missing key (403 PERMISSION_DENIED) or a
wrong one (400 API_KEY_INVALID), in Google's error shape; a model that is not an Omni model; an
input that is neither a flat block list nor a list of `user_input` steps; a `response_format` that
is not video or whose duration is not a "Ns" string within the model's range; `delivery: "uri"`
without `store: true`; a `video_config` with anything but `task`; too many image or video blocks;
inline image data that does not decode to an image of its mime type; file URIs that are unknown,
expired or not ACTIVE; reference videos longer than allowed (probed with PyAV); and a resumable
upload that does not follow the protocol. Beyond the real API it also refuses a prompt naming
"@Image N" / "@Video N" past the references it was given, to catch numbering bugs.

Interactions move `queued → in_progress → completed | failed…` on a clock scaled by
`video_seconds`; completed ones carry `steps[]` (user_input, then model_output with the video's
Files-API URI) and `usage.output_tokens_by_modality`. The finished video is a real MP4, served with
the key only, optionally through a redirect to a signed URL that refuses the key.

    sim = GeminiSim(api_key="gemini-test-key", video_seconds=0.3)
    await sim.start()
    sim.add_fault("create", http=429, status="RESOURCE_EXHAUSTED", retry_after=22)
    sim.script_outcome("moderation")
    ...
    await sim.close()
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import io
import json
import os
import re
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from PIL import Image

from tests.fakes.callbacks import CallbackPoster
from tests.fakes.loopback import send_video, serve

API = "/v1beta"
# The issuer the simulator's webhook JWTs name (Google's is not confirmed: GEMINI_WEBHOOK_ISSUER)
WEBHOOK_ISSUER = "https://generativelanguage.googleapis.com"
ENDPOINTS = ("create", "get", "upload_start", "upload", "file_get", "download", "cdn")
OUTCOMES = (
    "succeed",
    "moderation",  # completed with a text-only answer and no video tokens
    "failed",
    "failed_safety",  # failed, with a safety error
    "stuck",  # in_progress forever
    "queued",  # queued forever
    "late_video",  # completed without the video (but with video tokens) for `late_polls` reads
    "no_video",  # completed without the video, with video tokens, forever
    "cancelled",
    "incomplete",
    "budget_exceeded",
    "requires_action",
    "requires_continuation",
    "idle",
    "unknown_status",
)
FILE_OUTCOMES = ("active", "failed", "stuck")
FAILED_WORDS = frozenset(
    {"cancelled", "incomplete", "budget_exceeded", "requires_action", "requires_continuation", "idle"}
)
MODEL_SECONDS = {  # the output durations each model takes
    "gemini-omni-1.1-flash": (3.0, 10.0),
    "gemini-omni-1.2-flash": (3.0, 15.0),
    "gemini-omni-flash-preview": (3.0, 10.0),
}
CREATE_KEYS = frozenset(
    {
        "model",
        "input",
        "background",
        "store",
        "stream",
        "generation_config",
        "response_format",
        "webhook_config",
        "previous_interaction_id",
        "labels",
        "service_tier",
        "system_instruction",
        "safety_settings",
        "tools",
        "cached_content",
        "continuation_token",
        "environment",
        "response_modalities",
        "response_mime_type",
    }
)
GENERATION_KEYS = frozenset(
    {
        "image_config",
        "max_output_tokens",
        "seed",
        "speech_config",
        "stop_sequences",
        "temperature",
        "thinking_level",
        "thinking_summaries",
        "tool_choice",
        "top_p",
        "transcription_config",
        "video_config",
    }
)
TASKS = frozenset({"text_to_video", "image_to_video", "reference_to_video", "edit", "extend", "upscale"})
RESOLUTIONS = frozenset({"360p", "720p", "1080p", "4k"})
ASPECTS = frozenset({"16:9", "9:16"})
IMAGE_MIMES = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/webp": "WEBP",
    "image/heic": "HEIC",
    "image/heif": "HEIF",
    "image/gif": "GIF",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
}
VIDEO_MIMES = frozenset(
    {
        "video/mp4",
        "video/mpeg",
        "video/mpg",
        "video/mov",
        "video/avi",
        "video/x-flv",
        "video/webm",
        "video/wmv",
        "video/3gpp",
    }
)
# Output video tokens per second: 720p is the reported rate; the others are chosen so that the
# bill matches the resale prices per second at $17.50 per million tokens.
TOKENS_PER_SECOND = {"360p": 2228, "720p": 5792, "1080p": 10_000, "4k": 20_000}
IMAGE_INPUT_TOKENS = 2040
FILE_TTL = 48 * 3600.0
INVALID_NAME = "Invalid interaction name"
MODERATION_TEXT = "I can't create this video because it may go against our policies on generated content."
_DURATION = re.compile(r"^\d+(\.\d+)?s$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_IMAGE_REF = re.compile(r"@Image (\d+)")
_VIDEO_REF = re.compile(r"@Video (\d+)")


@functools.cache
def _default_video() -> bytes:
    """One real 1 s H.264 MP4, rendered once per test process (it is the same for every sim)."""
    from discord_sandbox.clips import make_clip

    with tempfile.TemporaryDirectory() as tmp:
        return make_clip(Path(tmp) / "gemini.mp4", seconds=1.0, size=(320, 240)).read_bytes()


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def google_error(http: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Google's front-end error shape (auth, quota, routing)."""
    error: dict[str, Any] = {"code": http, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def interactions_error(code: str, message: str) -> dict[str, Any]:
    """The Interactions API's own error shape: `code` is a string."""
    return {"error": {"code": code, "message": message}}


def _probe_seconds(data: bytes) -> float | None:
    """The duration of a video, or None when it is not a video PyAV can read."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                return None
            if container.duration is not None:
                return float(container.duration) / 1_000_000
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
    except Exception:
        return None
    return None


class SimError(Exception):
    def __init__(self, http: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(str(body)[:200])
        self.http, self.body, self.headers = http, body, headers or {}


def _invalid(message: str) -> SimError:
    return SimError(400, interactions_error("invalid_request", message))


def _file_denied(file_id: str) -> SimError:
    message = f"You do not have permission to access the File {file_id} or it may not exist."
    return SimError(403, google_error(403, "PERMISSION_DENIED", message))


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any  # parsed JSON, raw bytes, or None


@dataclass
class Fault:
    kind: str  # "error" | "html" | "read_timeout" | "reset" | "malformed"
    http: int = 500
    status: str | None = None  # Google's canonical status word (RESOURCE_EXHAUSTED...)
    code: str | None = None  # an Interactions-style string code: use that shape instead
    message: str = "Internal error encountered."
    retry_after: float | None = None  # as a google.rpc.RetryInfo detail
    retry_after_header: float | None = None  # as an HTTP Retry-After header
    reasons: tuple[str, ...] = ()  # google.rpc.ErrorInfo reasons
    body: Any = None  # the whole body, verbatim (dict/list as JSON, str/bytes as is)
    wrapped: bool = False  # the error object inside a JSON array
    create: bool = False  # on create: make the interaction before failing


@dataclass
class SimFile:
    id: str
    display_name: str
    mime_type: str
    data: bytes
    created: float  # monotonic
    created_wall: float
    expires_wall: float
    outcome: str
    source: str  # UPLOADED | GENERATED
    ready_at: float  # monotonic: PROCESSING until then
    seconds: float | None = None  # probed length of a video
    key_on_upload: bool = False

    @property
    def name(self) -> str:
        return f"files/{self.id}"


@dataclass
class Upload:
    id: str
    display_name: str
    length: int
    mime_type: str


@dataclass
class SimInteraction:
    id: str
    created: float  # monotonic
    created_wall: float
    model: str
    outcome: str
    body: dict[str, Any]
    resolution: str
    duration: float
    aspect_ratio: str
    delivery: str
    images: int
    videos: int
    video_seconds: float  # of the reference videos, for input tokens
    text: str
    reads_done: int = 0  # GETs answered since it completed
    output_file: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


class GeminiSim:
    def __init__(
        self,
        *,
        api_key: str = "gemini-sim-key-0123456789",
        video_seconds: float = 0.3,
        queue_seconds: float = 0.0,
        file_seconds: float = 0.05,
        output_file_seconds: float = 0.0,
        hang_seconds: float = 10.0,
        max_images: int = 7,
        max_videos: int = 3,
        video_max_seconds: float = 3.0,
        late_polls: int = 2,
        file_ttl: float = FILE_TTL,
        video_path: Path | None = None,
    ) -> None:
        self.api_key = api_key
        self.video_seconds = video_seconds  # from create to the end of generation
        self.queue_seconds = queue_seconds  # `queued` before `in_progress`
        self.file_seconds = file_seconds  # an upload stays PROCESSING this long
        self.output_file_seconds = output_file_seconds  # a finished video's file stays PROCESSING
        self.hang_seconds = hang_seconds  # how long a "read_timeout" fault keeps the client waiting
        self.max_images = max_images
        self.max_videos = max_videos
        self.video_max_seconds = video_max_seconds
        self.late_polls = late_polls
        self.file_ttl = file_ttl  # how long an upload lives (Google keeps them 48 h)
        self.video_path = video_path
        self.models = dict(MODEL_SECONDS)
        self.redirect_downloads = False  # the download answers 302 to a signed URL
        self.chunked_download = False  # serve the MP4 without Content-Length
        self.alt_media_in_uri = True  # the output URI carries ?alt=media
        # words in a prompt that get the create refused for safety, or the video refused at the end
        self.blocked_words: tuple[str, ...] = ("blockme-at-create",)
        self.refused_words: tuple[str, ...] = ("refuseme-at-end",)
        self.requests: list[Recorded] = []
        self.status_requests = 0  # GET /v1beta/interactions/{id}
        self.interactions: dict[str, SimInteraction] = {}
        self.files: dict[str, SimFile] = {}
        self.video_bytes = b""
        self._uploads: dict[str, Upload] = {}
        self._faults: dict[str, deque[Fault]] = {e: deque() for e in ENDPOINTS}
        self._outcomes: deque[str] = deque()
        self._file_outcomes: deque[str] = deque()
        self._counter = 0
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._signing = os.urandom(8).hex()
        self.base_url = ""
        # webhooks: an interaction created with webhook_config.uris gets a thin Standard-Webhooks
        # envelope POSTed to each URI when it completes or fails, signed as per-request webhooks
        # are: an RS256 JWT in `webhook-signature`, its audience the URI, by a key of the JWKS
        # served at /.well-known/jwks.json (`webhook_kid`; rotate_webhook_key() swaps it)
        self.callbacks = CallbackPoster()
        self.webhook_issuer = WEBHOOK_ISSUER
        self.webhook_kid, self._webhook_key = _webhook_key()
        self._retired_keys: list[tuple[str, rsa.RSAPrivateKey]] = []

    # --- scripting --------------------------------------------------------------------------------

    def add_fault(
        self,
        endpoint: str,
        kind: str = "error",
        *,
        http: int = 500,
        status: str | None = None,
        code: str | None = None,
        message: str = "Internal error encountered.",
        retry_after: float | None = None,
        retry_after_header: float | None = None,
        reasons: tuple[str, ...] = (),
        body: Any = None,
        wrapped: bool = False,
        create: bool = False,
        times: int = 1,
    ) -> None:
        """Answer the next request(s) to `endpoint` with a fault instead (auth is checked first)."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}")
        fault = Fault(
            kind, http, status, code, message, retry_after, retry_after_header, reasons, body, wrapped, create
        )
        for _ in range(times):
            self._faults[endpoint].append(fault)

    def script_outcome(self, *outcomes: str) -> None:
        """Outcomes of the next interactions, in order; later ones succeed."""
        for outcome in outcomes:
            if outcome not in OUTCOMES:
                raise ValueError(outcome)
            self._outcomes.append(outcome)

    def script_file(self, *outcomes: str) -> None:
        """Processing outcomes of the next uploads ("active", "failed", "stuck")."""
        for outcome in outcomes:
            if outcome not in FILE_OUTCOMES:
                raise ValueError(outcome)
            self._file_outcomes.append(outcome)

    def expire_files(self, *file_ids: str) -> None:
        """Make the given files (all uploads when none given) expire now, as after 48 h."""
        for file in self.files.values():
            if (file.id in file_ids) if file_ids else file.source == "UPLOADED":
                file.expires_wall = time.time() - 1

    @property
    def video_sha256(self) -> str:
        return hashlib.sha256(self.video_bytes).hexdigest()

    def recorded(self, method: str, path_prefix: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    @property
    def creates(self) -> list[dict[str, Any]]:
        """The bodies of every create received (accepted or not)."""
        return [r.body for r in self.recorded("POST", f"{API}/interactions") if isinstance(r.body, dict)]

    def uploaded(self) -> list[SimFile]:
        return [f for f in self.files.values() if f.source == "UPLOADED"]

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self.video_bytes = await asyncio.to_thread(self._load_video)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(f"{API}/interactions", self._create)
        app.router.add_get(f"{API}/interactions/{{id}}", self._get)
        app.router.add_post(f"/upload{API}/files", self._upload)
        app.router.add_get(f"{API}/files/{{name}}", self._file)
        app.router.add_get("/cdn/{name}", self._cdn)
        app.router.add_get("/.well-known/jwks.json", self._jwks)
        self._runner, self.base_url = await serve(app)

    async def close(self) -> None:
        self._closing.set()  # release hanging handlers first
        await self.callbacks.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _load_video(self) -> bytes:
        return self.video_path.read_bytes() if self.video_path is not None else _default_video()

    # --- plumbing ---------------------------------------------------------------------------------

    def _next(self) -> int:
        self._counter += 1
        return self._counter

    @staticmethod
    def _error(exc: SimError) -> web.Response:
        return web.json_response(exc.body, status=exc.http, headers=exc.headers)

    async def _record(self, request: web.Request) -> Any:
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
        self.requests.append(Recorded(request.method, request.path, dict(request.query), dict(request.headers), body))
        return body

    def _check_key(self, request: web.Request) -> None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            raise SimError(
                403,
                google_error(
                    403,
                    "PERMISSION_DENIED",
                    "Method doesn't allow unregistered callers (callers without established identity). "
                    "Please use API Key or other form of API consumer identity to call this API.",
                ),
            )
        if key != self.api_key:
            info = {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
            raise SimError(
                400, google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [info])
            )

    async def _fault(self, endpoint: str, request: web.Request, create: Any = None) -> web.StreamResponse | None:
        """Play the next scripted fault of `endpoint`, if any. `create` makes the interaction first."""
        queue = self._faults[endpoint]
        if not queue:
            return None
        fault = queue.popleft()
        if fault.create and create is not None:
            create()
        if fault.kind == "error":
            headers = {"Retry-After": f"{fault.retry_after_header:g}"} if fault.retry_after_header is not None else {}
            if isinstance(fault.body, str | bytes):
                return web.Response(
                    status=fault.http, body=fault.body, headers=headers, content_type="application/json"
                )
            return web.json_response(self._fault_body(fault), status=fault.http, headers=headers)
        if fault.kind == "html":  # a proxy's own page, no JSON
            return web.Response(
                status=fault.http, text="<html>Error 502 (Server Error)</html>", content_type="text/html"
            )
        if fault.kind == "malformed":
            return web.Response(status=200, body=b'{"id": "abc", "status":', content_type="application/json")
        if fault.kind == "read_timeout":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.hang_seconds)
            return self._error(SimError(504, google_error(504, "DEADLINE_EXCEEDED", "Deadline expired")))
        if fault.kind == "reset":
            assert request.transport is not None
            request.transport.abort()  # drop the connection with no answer
            raise asyncio.CancelledError
        raise ValueError(f"unknown fault kind {fault.kind!r}")

    @staticmethod
    def _fault_body(fault: Fault) -> Any:
        body: Any
        if fault.body is not None:
            body = fault.body
        elif fault.code is not None:
            body = interactions_error(fault.code, fault.message)
        else:
            details: list[dict[str, Any]] = []
            if fault.retry_after is not None:
                details.append(
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{fault.retry_after:g}s"}
                )
            for reason in fault.reasons:
                details.append(
                    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "googleapis.com"}
                )
            body = google_error(fault.http, fault.status or "INTERNAL", fault.message, details)
        return [body] if fault.wrapped else body

    async def _guard(self, endpoint: str, request: web.Request) -> web.StreamResponse | None:
        try:
            self._check_key(request)
        except SimError as exc:
            return self._error(exc)
        return await self._fault(endpoint, request)

    # --- files ------------------------------------------------------------------------------------

    def file_state(self, file: SimFile) -> str:
        if file.outcome == "failed":
            return "FAILED" if time.monotonic() >= file.ready_at else "PROCESSING"
        if file.outcome == "stuck" or time.monotonic() < file.ready_at:
            return "PROCESSING"
        return "ACTIVE"

    def file_json(self, file: SimFile) -> dict[str, Any]:
        """A File resource as the API spells it (camelCase)."""
        digest = hashlib.sha256(file.data).hexdigest().encode()
        data: dict[str, Any] = {
            "name": file.name,
            "mimeType": file.mime_type,
            "sizeBytes": str(len(file.data)),
            "createTime": _iso(file.created_wall),
            "updateTime": _iso(file.created_wall),
            "expirationTime": _iso(file.expires_wall),
            "sha256Hash": base64.b64encode(digest).decode(),
            "uri": f"{self.base_url}{API}/files/{file.id}",
            "state": self.file_state(file),
            "source": file.source,
        }
        if file.display_name:
            data["displayName"] = file.display_name
        if file.source == "GENERATED":
            data["downloadUri"] = f"{self.base_url}{API}/files/{file.id}:download?alt=media"
        if file.seconds is not None:
            data["videoMetadata"] = {"videoDuration": f"{file.seconds:.3f}s"}
        if data["state"] == "FAILED":
            data["error"] = {"code": 3, "message": "The file could not be processed as a video."}
        return data

    def _live_file(self, ref: str) -> SimFile:
        """The file a name (`files/x`) or URI points at; refused when unknown or expired."""
        match = re.search(r"(?:^|/)files/([^/:?#]+)", ref)
        file_id = match.group(1) if match else ref
        file = self.files.get(file_id)
        if file is None or file.expires_wall <= time.time():
            raise _file_denied(file_id)
        return file

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if "upload_id" in request.query:
            return await self._upload_bytes(request, body)
        faulted = await self._guard("upload_start", request)
        if faulted is not None:
            return faulted
        headers = request.headers
        try:
            if headers.get("X-Goog-Upload-Protocol") != "resumable":
                raise _invalid("X-Goog-Upload-Protocol must be resumable")
            if headers.get("X-Goog-Upload-Command", "").strip() != "start":
                raise _invalid("X-Goog-Upload-Command must be start")
            length = headers.get("X-Goog-Upload-Header-Content-Length", "")
            if not length.isdigit() or int(length) <= 0:
                raise _invalid("X-Goog-Upload-Header-Content-Length is required")
            mime = headers.get("X-Goog-Upload-Header-Content-Type", "")
            if mime not in VIDEO_MIMES and mime not in IMAGE_MIMES:
                raise _invalid(f"unsupported upload mime type {mime!r}")
            meta = body.get("file", {}) if isinstance(body, dict) else {}
            if body is not None and (not isinstance(body, dict) or not isinstance(meta, dict)):
                raise _invalid("the start body must be {file: {...}}")
        except SimError as exc:
            return self._error(exc)
        upload = Upload(
            id=base64.urlsafe_b64encode(os.urandom(12)).decode().rstrip("="),
            display_name=str(meta.get("display_name") or meta.get("displayName") or ""),
            length=int(length),
            mime_type=mime,
        )
        self._uploads[upload.id] = upload
        url = f"{self.base_url}/upload{API}/files?upload_id={upload.id}&upload_protocol=resumable"
        return web.Response(status=200, headers={"x-goog-upload-url": url, "x-goog-upload-status": "active"})

    async def _upload_bytes(self, request: web.Request, body: Any) -> web.StreamResponse:
        faulted = await self._fault("upload", request)
        if faulted is not None:
            return faulted
        upload = self._uploads.get(request.query["upload_id"])
        if upload is None:
            return web.Response(status=404, text="unknown upload session")
        data = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
        command = {c.strip() for c in request.headers.get("X-Goog-Upload-Command", "").split(",")}
        try:
            if command != {"upload", "finalize"}:
                raise _invalid("the simulator takes the whole file in one 'upload, finalize' request")
            if request.headers.get("X-Goog-Upload-Offset") != "0":
                raise _invalid("X-Goog-Upload-Offset must be 0")
            if len(data) != upload.length:
                raise _invalid(f"received {len(data)} bytes, announced {upload.length}")
        except SimError as exc:
            return self._error(exc)
        del self._uploads[upload.id]
        seconds = await asyncio.to_thread(_probe_seconds, data) if upload.mime_type in VIDEO_MIMES else None
        outcome = self._file_outcomes.popleft() if self._file_outcomes else "active"
        if upload.mime_type in VIDEO_MIMES and seconds is None:
            outcome = "failed"  # not a readable video
        now = time.monotonic()
        file = SimFile(
            id=f"f{self._next():04d}{os.urandom(3).hex()}",
            display_name=upload.display_name,
            mime_type=upload.mime_type,
            data=data,
            created=now,
            created_wall=time.time(),
            expires_wall=time.time() + self.file_ttl,
            outcome=outcome,
            source="UPLOADED",
            ready_at=now + self.file_seconds,
            seconds=seconds,
            key_on_upload=bool(request.headers.get("x-goog-api-key")),
        )
        self.files[file.id] = file
        return web.json_response({"file": self.file_json(file)}, headers={"x-goog-upload-status": "final"})

    async def _file(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        name = request.match_info["name"]
        if name.endswith(":download"):
            return await self._download(request, name.removesuffix(":download"))
        faulted = await self._guard("file_get", request)
        if faulted is not None:
            return faulted
        try:
            file = self._live_file(name)
        except SimError as exc:
            return self._error(exc)
        return web.json_response(self.file_json(file))

    async def _download(self, request: web.Request, file_id: str) -> web.StreamResponse:
        faulted = await self._guard("download", request)
        if faulted is not None:
            return faulted
        try:
            file = self._live_file(file_id)
            if request.query.get("alt") != "media":
                raise _invalid("downloading file content needs alt=media")
            if self.file_state(file) != "ACTIVE":
                raise SimError(
                    400, google_error(400, "FAILED_PRECONDITION", f"The File {file_id} is not in an ACTIVE state.")
                )
        except SimError as exc:
            return self._error(exc)
        if self.redirect_downloads:
            signed = f"{self.base_url}/cdn/{file.id}.mp4?sig={self._signature(file.id)}"
            raise web.HTTPFound(signed)
        return await self._serve(request, file.data)

    def _signature(self, file_id: str) -> str:
        return hashlib.sha256(f"{self._signing}:{file_id}".encode()).hexdigest()[:24]

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        faulted = await self._fault("cdn", request)
        if faulted is not None:
            return faulted
        file_id = request.match_info["name"].removesuffix(".mp4")
        if request.headers.get("x-goog-api-key") or request.query.get("key"):
            return web.Response(status=400, text="a signed URL takes no other credentials")
        if file_id not in self.files or request.query.get("sig") != self._signature(file_id):
            return web.Response(status=403, text="signature does not match")
        return await self._serve(request, self.files[file_id].data)

    async def _serve(self, request: web.Request, data: bytes) -> web.StreamResponse:
        return await send_video(request, data, chunked=self.chunked_download)

    # --- interactions -----------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        try:
            self._check_key(request)
            parsed = await self._validate(body)
        except SimError as exc:
            return self._error(exc)
        faulted = await self._fault("create", request, lambda: self._make(body, parsed))
        if faulted is not None:
            return faulted
        if any(word in parsed["text"] for word in self.blocked_words):
            message = "The request was blocked because it may violate our safety policies."
            return self._error(SimError(400, interactions_error("PROHIBITED_CONTENT", message)))
        interaction = self._make(body, parsed)
        if body.get("background") is not True:
            # without background the POST blocks for the whole generation
            deadline = time.monotonic() + self.hang_seconds
            while self._state(interaction) in ("queued", "in_progress") and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return web.json_response(self.interaction_json(interaction, reading=True))
        return web.json_response(self.interaction_json(interaction, reading=False))

    def _make(self, body: dict[str, Any], parsed: dict[str, Any]) -> SimInteraction:
        outcome = self._outcomes.popleft() if self._outcomes else "succeed"
        if outcome == "succeed" and any(word in parsed["text"] for word in self.refused_words):
            outcome = "moderation"
        interaction = SimInteraction(
            id=base64.urlsafe_b64encode(b"\x0a\x10" + os.urandom(22)).decode().rstrip("="),
            created=time.monotonic(),
            created_wall=time.time(),
            model=body["model"],
            outcome=outcome,
            body=body,
            labels=dict(body.get("labels") or {}),
            **{k: v for k, v in parsed.items() if k != "blocks"},
        )
        self.interactions[interaction.id] = interaction
        config = body.get("webhook_config")
        uris = config.get("uris") if isinstance(config, dict) else None
        for uri in uris if isinstance(uris, list) else []:
            if isinstance(uri, str):
                self.callbacks.when(
                    lambda: self._state(interaction) not in ("queued", "in_progress"),
                    uri,
                    functools.partial(self._callback, interaction, uri),
                )
        return interaction

    def _callback(self, interaction: SimInteraction, uri: str) -> tuple[bytes, dict[str, str]] | None:
        state = self._state(interaction)
        if state not in ("completed", "failed"):
            return None  # paused for review, or another word: no event the SDK names
        config = interaction.body.get("webhook_config") or {}
        data: dict[str, Any] = {"id": interaction.id}
        if isinstance(config.get("user_metadata"), dict):
            data["user_metadata"] = config["user_metadata"]
        event = {
            "type": f"interaction.{state}",
            "version": "v1",
            "timestamp": _iso(time.time()),
            "data": data,
        }
        return json.dumps(event).encode(), self.webhook_headers(uri)

    def webhook_headers(
        self, uri: str, *, key: rsa.RSAPrivateKey | None = None, at: float | None = None
    ) -> dict[str, str]:
        """The headers of a per-request webhook to `uri`: its id, time and JWT (`key`: sign with
        another key under the published kid, a forgery; `at`: as if sent then)."""
        now = int(time.time() if at is None else at)
        claims = {"iss": self.webhook_issuer, "aud": uri, "iat": now, "exp": now + 300}
        token = jwt.encode(claims, key or self._webhook_key, algorithm="RS256", headers={"kid": self.webhook_kid})
        return {"webhook-id": f"msg_{os.urandom(12).hex()}", "webhook-timestamp": str(now), "webhook-signature": token}

    def rotate_webhook_key(self) -> None:
        """A new signing key under a new kid; the old one stays published (as a rotation does)."""
        self._retired_keys.append((self.webhook_kid, self._webhook_key))
        self.webhook_kid, self._webhook_key = _webhook_key(fresh=True)

    def jwks(self) -> dict[str, Any]:
        keys = [(self.webhook_kid, self._webhook_key), *self._retired_keys]
        published = []
        for kid, key in keys:
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            published.append(jwk | {"kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": published}

    async def _jwks(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.jwks())

    async def _validate(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _invalid("Request body must be a JSON object.")
        unknown = set(body) - CREATE_KEYS
        if unknown:
            raise _invalid(f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}": Cannot find field.')
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _invalid("model is required")
        if not model.startswith("gemini-omni-"):
            raise _invalid(f"Model {model} does not support video generation through interactions.")
        if model not in self.models:
            message = f"models/{model} is not found for API version v1beta, or is not supported for interactions."
            raise SimError(404, google_error(404, "NOT_FOUND", message))
        for flag in ("background", "store", "stream"):
            if flag in body and not isinstance(body[flag], bool):
                raise _invalid(f"{flag} must be a boolean")
        if body.get("stream"):
            raise _invalid("the simulator does not stream")
        blocks = self._blocks(body.get("input"))
        parsed = await self._validate_blocks(blocks)
        self._validate_generation_config(body.get("generation_config"))
        parsed |= self._validate_response_format(body.get("response_format"), model, body.get("store"))
        self._validate_labels(body.get("labels"))
        return parsed

    @staticmethod
    def _blocks(value: Any) -> list[dict[str, Any]]:
        """The content blocks of `input`: a string, one block, a flat block list or user_input steps."""
        if isinstance(value, str):
            return [{"type": "text", "text": value}]
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
            raise _invalid("input must be a string, a content block, a list of blocks or a list of steps")
        steps = [v for v in value if v.get("type") in ("user_input", "model_output")]
        if not steps:
            return list(value)
        if len(steps) != len(value):
            raise _invalid("input mixes steps and content blocks")
        blocks: list[dict[str, Any]] = []
        for step in steps:
            content = step.get("content")
            if step.get("type") != "user_input" or not isinstance(content, list):
                raise _invalid("only user_input steps with content are simulated")
            if not all(isinstance(c, dict) for c in content):
                raise _invalid("step content must be content blocks")
            blocks.extend(content)
        return blocks

    async def _validate_blocks(self, blocks: list[dict[str, Any]]) -> dict[str, Any]:
        images = videos = 0
        video_seconds = 0.0
        texts: list[str] = []
        for block in blocks:
            kind = block.get("type")
            if kind == "text":
                text = block.get("text")
                if not isinstance(text, str) or not text.strip():
                    raise _invalid("text blocks need text")
                texts.append(text)
            elif kind == "image":
                images += 1
                await self._validate_image(block)
            elif kind == "video":
                videos += 1
                video_seconds += self._validate_video(block)
            elif kind in ("audio", "document"):
                raise _invalid(f"{kind} inputs are not simulated")
            else:
                raise _invalid(f"unknown content block type {kind!r}")
        if images > self.max_images:
            raise _invalid(f"Too many images: at most {self.max_images} reference images are supported.")
        if videos > self.max_videos:
            raise _invalid(f"Too many videos: at most {self.max_videos} reference videos are supported.")
        if not texts:
            raise _invalid("a text prompt is required")
        text = "\n".join(texts)
        for pattern, count, what in ((_IMAGE_REF, images, "image"), (_VIDEO_REF, videos, "video")):
            for number in pattern.findall(text):
                if not 1 <= int(number) <= count:
                    raise _invalid(f"the prompt names {what} {number} but the request has {count} {what}s")
        return {"images": images, "videos": videos, "video_seconds": video_seconds, "text": text, "blocks": blocks}

    async def _validate_image(self, block: dict[str, Any]) -> None:
        data, uri, mime = block.get("data"), block.get("uri"), block.get("mime_type")
        if (data is None) == (uri is None):
            raise _invalid("an image block needs exactly one of data or uri")
        if mime is not None and mime not in IMAGE_MIMES:
            raise _invalid(f"unsupported image mime_type {mime!r}")
        if uri is not None:
            file = self._live_file(str(uri))
            self._require_active(file)
            if not file.mime_type.startswith("image/"):
                raise _invalid(f"{file.name} is not an image")
            return
        if mime is None:
            raise _invalid("inline image data needs a mime_type")
        if not isinstance(data, str) or not data:
            raise _invalid("image data must be a base64 string")
        if data.startswith("data:"):
            raise _invalid("image data is raw base64, without a data: prefix")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("image data is not valid base64") from None
        fmt = await asyncio.to_thread(_image_format, raw)
        if fmt is None:
            raise _invalid("image data cannot be decoded as an image")
        if fmt != IMAGE_MIMES[mime]:
            raise _invalid(f"image data is {fmt}, not {mime}")

    def _validate_video(self, block: dict[str, Any]) -> float:
        uri, mime = block.get("uri"), block.get("mime_type")
        if block.get("data") is not None:
            raise _invalid("inline video data is not simulated: upload the video")
        if not isinstance(uri, str) or not uri:
            raise _invalid("a video block needs a uri")
        if mime is not None and mime not in VIDEO_MIMES:
            raise _invalid(f"unsupported video mime_type {mime!r}")
        file = self._live_file(uri)
        self._require_active(file)
        if file.seconds is None:
            raise _invalid(f"{file.name} is not a video")
        if file.seconds > self.video_max_seconds + 0.1:
            raise _invalid(f"reference videos must be at most {self.video_max_seconds:g} s; {file.name} is longer")
        return file.seconds

    def _require_active(self, file: SimFile) -> None:
        if self.file_state(file) != "ACTIVE":
            message = f"The File {file.id} is not in an ACTIVE state and usage is not allowed."
            raise SimError(400, google_error(400, "FAILED_PRECONDITION", message))

    @staticmethod
    def _validate_generation_config(config: Any) -> None:
        if config is None:
            return
        if not isinstance(config, dict):
            raise _invalid("generation_config must be an object")
        unknown = set(config) - GENERATION_KEYS
        if unknown:
            raise _invalid(f"unknown generation_config fields {sorted(unknown)}")
        video = config.get("video_config")
        if video is None:
            return
        if not isinstance(video, dict) or set(video) - {"task"}:
            raise _invalid("video_config accepts task and nothing else")
        if "task" in video and video["task"] not in TASKS:
            raise _invalid(f"unknown video task {video['task']!r}")

    def _validate_response_format(self, value: Any, model: str, store: Any) -> dict[str, Any]:
        formats = value if isinstance(value, list) else [value] if value is not None else []
        videos = [f for f in formats if isinstance(f, dict) and f.get("type") == "video"]
        if value is not None and len(videos) != 1:
            raise _invalid("response_format must hold one format of type video")
        fmt: dict[str, Any] = videos[0] if videos else {"type": "video"}
        unknown = set(fmt) - {"type", "aspect_ratio", "resolution", "duration", "delivery", "gcs_uri"}
        if unknown:
            raise _invalid(f"unknown response_format fields {sorted(unknown)}")
        if "gcs_uri" in fmt:
            raise _invalid("gcs_uri is only available on Vertex AI")
        aspect = fmt.get("aspect_ratio", "16:9")
        if aspect not in ASPECTS:
            raise _invalid(f"aspect_ratio must be one of {sorted(ASPECTS)}")
        resolution = fmt.get("resolution", "720p")
        if resolution not in RESOLUTIONS:
            raise _invalid(f"resolution must be one of {sorted(RESOLUTIONS)}")
        duration = fmt.get("duration", "10s")
        if not isinstance(duration, str):
            raise _invalid(
                "Invalid value at 'response_format.duration' "
                f"(type.googleapis.com/google.protobuf.Duration), {duration}"
            )
        if not _DURATION.match(duration):
            raise _invalid(f"Invalid duration {duration!r}: expected a string such as '8s'")
        seconds = float(duration[:-1])
        low, high = self.models[model]
        if not low <= seconds <= high:
            raise _invalid(f"duration must be between {low:g}s and {high:g}s for {model}")
        delivery = fmt.get("delivery", "inline")
        if delivery not in ("inline", "uri"):
            raise _invalid("delivery must be inline or uri")
        if delivery == "uri" and store is not True:
            raise _invalid("delivery uri requires store to be true")
        return {"resolution": resolution, "duration": seconds, "aspect_ratio": aspect, "delivery": delivery}

    @staticmethod
    def _validate_labels(labels: Any) -> None:
        if labels is None:
            return
        if not isinstance(labels, dict):
            raise _invalid("labels must be a map of strings")
        for key, value in labels.items():
            if not isinstance(value, str) or not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
                raise _invalid(f"invalid label {key!r}: lowercase letters, digits, _ and - (at most 63)")

    def _state(self, interaction: SimInteraction) -> str:
        elapsed = time.monotonic() - interaction.created
        outcome = interaction.outcome
        if outcome == "queued" or elapsed < self.queue_seconds:
            return "queued"
        if outcome == "stuck" or elapsed < self.queue_seconds + self.video_seconds:
            return "in_progress"
        if outcome in ("succeed", "moderation", "late_video", "no_video"):
            return "completed"
        if outcome in ("failed", "failed_safety"):
            return "failed"
        if outcome == "unknown_status":
            return "paused_for_review"
        return outcome  # one of FAILED_WORDS

    def _output_file(self, interaction: SimInteraction) -> SimFile:
        if interaction.output_file is None:
            now = time.monotonic()
            file = SimFile(
                id=f"out{self._next():04d}{os.urandom(3).hex()}",
                display_name="",
                mime_type="video/mp4",
                data=self.video_bytes,
                created=now,
                created_wall=time.time(),
                expires_wall=time.time() + FILE_TTL,
                outcome="active",
                source="GENERATED",
                ready_at=now + self.output_file_seconds,
                seconds=interaction.duration,
            )
            self.files[file.id] = file
            interaction.output_file = file.id
        return self.files[interaction.output_file]

    def interaction_json(self, interaction: SimInteraction, *, reading: bool) -> dict[str, Any]:
        """The Interaction resource now; `reading`: this answers a GET (late videos count reads)."""
        state = self._state(interaction)
        data: dict[str, Any] = {
            "id": interaction.id,
            "status": state,
            "created": _iso(interaction.created_wall),
            "updated": _iso(time.time()),
            "model": interaction.model,
            "response_format": interaction.body.get("response_format"),
            "generation_config": interaction.body.get("generation_config"),
        }
        if interaction.labels:
            data["labels"] = interaction.labels
        data = {k: v for k, v in data.items() if v is not None}
        if state in ("queued", "in_progress"):
            return data
        user = {"type": "user_input", "content": [self._echo(b) for b in self._blocks(interaction.body["input"])]}
        steps: list[dict[str, Any]] = [user]
        video_tokens = round(TOKENS_PER_SECOND[interaction.resolution] * interaction.duration)
        output_tokens: list[dict[str, Any]] = []
        outcome = interaction.outcome
        if state == "completed":
            if reading:
                interaction.reads_done += 1
            missing = outcome == "no_video" or (outcome == "late_video" and interaction.reads_done <= self.late_polls)
            if outcome == "moderation":
                steps.append({"type": "model_output", "content": [{"type": "text", "text": MODERATION_TEXT}]})
                output_tokens = [{"modality": "text", "tokens": 21}]
            elif missing:
                output_tokens = [{"modality": "video", "tokens": video_tokens}]
            else:
                steps.append({"type": "model_output", "content": [self._video_block(interaction)]})
                output_tokens = [{"modality": "video", "tokens": video_tokens}]
        elif state == "failed":
            if outcome == "failed_safety":
                error = {"code": "safety", "message": "The generated video was blocked by our safety filters."}
            else:
                error = {"code": "internal", "message": "Video generation failed. Please try again."}
            data["errors"] = [error]
        data["steps"] = steps
        input_tokens = (
            interaction.images * IMAGE_INPUT_TOKENS
            + round(interaction.video_seconds * TOKENS_PER_SECOND["720p"])
            + len(interaction.text) // 4
        )
        usage: dict[str, Any] = {"total_input_tokens": input_tokens}
        if output_tokens:
            usage["total_output_tokens"] = sum(t["tokens"] for t in output_tokens)
            usage["output_tokens_by_modality"] = output_tokens
        data["usage"] = usage
        return data

    def _video_block(self, interaction: SimInteraction) -> dict[str, Any]:
        if interaction.delivery == "inline":
            return {"type": "video", "data": base64.b64encode(self.video_bytes).decode(), "mime_type": "video/mp4"}
        file = self._output_file(interaction)
        uri = f"{self.base_url}{API}/files/{file.id}:download" + ("?alt=media" if self.alt_media_in_uri else "")
        return {"type": "video", "uri": uri, "mime_type": "video/mp4"}

    @staticmethod
    def _echo(block: dict[str, Any]) -> dict[str, Any]:
        """An input block as the interaction echoes it: inline data left out."""
        return {k: v for k, v in block.items() if k != "data"}

    async def _get(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        self.status_requests += 1
        faulted = await self._guard("get", request)
        if faulted is not None:
            return faulted
        interaction = self.interactions.get(request.match_info["id"])
        if interaction is None:
            return self._error(_invalid(INVALID_NAME))
        return web.json_response(self.interaction_json(interaction, reading=True))


def _image_format(raw: bytes) -> str | None:
    try:
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            return image.format
    except Exception:
        return None


@functools.cache
def _shared_webhook_key() -> tuple[str, rsa.RSAPrivateKey]:
    return os.urandom(8).hex(), rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _webhook_key(*, fresh: bool = False) -> tuple[str, rsa.RSAPrivateKey]:
    """An RSA signing key and its kid; one per test process unless `fresh` (2048-bit keys are slow)."""
    if fresh:
        return os.urandom(8).hex(), rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _shared_webhook_key()
