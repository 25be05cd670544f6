"""A loopback simulator of the Kling API, new design.

It validates requests as the real API documents them (API-key auth, the `{code, message,
request_id, data}` envelope, element image rules checked by decoding the images, omni-video
`contents[]` and `@id` references, settings ranges), moves tasks through
`submitted → processing → succeeded | failed` on a scaled clock, serves a real MP4 at the result
URL, records every request, and plays scripted faults.

    sim = KlingSim(api_key="api-key-kling-test", element_seconds=0.1, video_seconds=0.3)
    await sim.start()
    sim.add_fault("create", http=429, code=1303, retry_after=2)
    sim.script_video("moderation")
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
import re
import tempfile
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web
from PIL import Image

from tests.fakes.callbacks import CallbackPoster
from tests.fakes.loopback import send_video, serve

ELEMENTS = "/v1/general/advanced-custom-elements"
ENDPOINTS = ("element_create", "element_query", "create", "tasks", "tasks_list", "download")
VIDEO_OUTCOMES = ("succeed", "moderation", "fail", "stuck", "unknown_status")
ELEMENT_OUTCOMES = ("succeed", "moderation", "stuck")
CONTENT_TYPES = {"prompt", "first_frame", "last_frame", "refer_image", "feature_video", "base_video", "element"}
IMAGE_TYPES = {"first_frame", "last_frame", "refer_image"}
VIDEO_TYPES = {"feature_video", "base_video"}
SETTINGS = {
    "resolution": {"720p", "1080p", "4k"},
    "aspect_ratio": {"16:9", "9:16", "1:1"},
    "audio": {"native", "original", "off"},
}
UNITS_PER_SECOND = {  # Kling's price list, 3.0 Omni without video input: (no audio, native audio)
    "720p": (Decimal("0.6"), Decimal("0.8")),
    "1080p": (Decimal("0.8"), Decimal("1.0")),
    "4k": (Decimal("3.0"), Decimal("3.0")),
}
MODERATION_MESSAGE = "Failure to pass the risk control system, please modify and try again"
_REF = re.compile(r"(?<!\w)@(\w+)")
_JWT = re.compile(r"^[\w-]+\.[\w-]+\.[\w-]+$")


@functools.cache
def _default_video() -> bytes:
    """One real 1 s H.264 MP4, rendered once per test process (it is the same for every sim)."""
    from discord_sandbox.clips import make_clip

    with tempfile.TemporaryDirectory() as tmp:
        return make_clip(Path(tmp) / "kling.mp4", seconds=1.0, size=(320, 240)).read_bytes()


class KlingError(Exception):
    def __init__(self, http: int, code: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.http, self.code, self.message, self.headers = http, code, message, headers or {}


def _invalid(message: str) -> KlingError:
    return KlingError(400, 1201, message)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any  # parsed JSON, or None


@dataclass
class Fault:
    kind: str  # "error" | "html" | "read_timeout" | "reset" | "malformed"
    http: int = 500
    code: int = 5000
    message: str = "internal error"
    retry_after: float | None = None
    create: bool = False  # on a create endpoint: make the task before failing


@dataclass
class ElementTask:
    task_id: str
    external_id: str
    name: str
    description: str
    created: float
    created_ms: int
    outcome: str
    element_id: int
    images: list[bytes] = field(default_factory=list)


@dataclass
class VideoTask:
    id: str
    external_id: str
    created: float
    created_ms: int
    outcome: str
    resolution: str
    duration: int
    audio: str
    body: dict[str, Any]


class KlingSim:
    def __init__(
        self,
        *,
        api_key: str = "api-key-kling-sim-0123456789",
        model: str = "kling-3.0-omni",
        element_seconds: float = 0.1,
        video_seconds: float = 0.3,
        hang_seconds: float = 10.0,
        video_path: Path | None = None,
    ) -> None:
        self.api_key = api_key
        self.model = model
        self.element_seconds = element_seconds
        self.video_seconds = video_seconds
        self.hang_seconds = hang_seconds  # how long a "read_timeout" fault keeps the client waiting
        self.video_path = video_path
        self.chunked_download = False  # serve the MP4 without Content-Length
        self.external_ids_query_broken = False  # the reported live quirk: external_task_ids= → []
        self.requests: list[Recorded] = []
        self.status_requests = 0  # GET /tasks
        self.element_status_requests = 0
        self.elements: dict[str, ElementTask] = {}  # by task id
        self.tasks: dict[str, VideoTask] = {}
        self.video_bytes = b""
        self._faults: dict[str, deque[Fault]] = {e: deque() for e in ENDPOINTS}
        self._video_script: deque[str] = deque()
        self._element_script: deque[str] = deque()
        self._counter = 0
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        # webhooks: a video task with options.callback_url gets a POST of its task object on each
        # status change (processing, then the end); unsigned, as the bot's dynamic URLs need not be
        self.callbacks = CallbackPoster()

    # --- scripting --------------------------------------------------------------------------------

    def add_fault(
        self,
        endpoint: str,
        kind: str = "error",
        *,
        http: int = 500,
        code: int = 5000,
        message: str = "internal error",
        retry_after: float | None = None,
        create: bool = False,
        times: int = 1,
    ) -> None:
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}")
        for _ in range(times):
            self._faults[endpoint].append(Fault(kind, http, code, message, retry_after, create))

    def script_video(self, *outcomes: str) -> None:
        """Outcomes of the next video tasks, in order; later tasks succeed."""
        for outcome in outcomes:
            if outcome not in VIDEO_OUTCOMES:
                raise ValueError(outcome)
            self._video_script.append(outcome)

    def script_element(self, *outcomes: str) -> None:
        for outcome in outcomes:
            if outcome not in ELEMENT_OUTCOMES:
                raise ValueError(outcome)
            self._element_script.append(outcome)

    @property
    def video_sha256(self) -> str:
        return hashlib.sha256(self.video_bytes).hexdigest()

    def recorded(self, method: str, path_prefix: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self.video_bytes = await asyncio.to_thread(self._load_video)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(ELEMENTS, self._element_create)
        app.router.add_get(ELEMENTS + "/{task}", self._element_query)
        app.router.add_post("/omni-video/{model}", self._video_create)
        app.router.add_get("/tasks", self._tasks_query)
        app.router.add_post("/tasks", self._tasks_list)
        app.router.add_get("/cdn/{name}", self._download)
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

    def _next_id(self) -> int:
        self._counter += 1
        return 893605946402811000 + self._counter

    @staticmethod
    def _envelope(data: Any, code: int = 0, message: str = "SUCCEED") -> dict[str, Any]:
        body: dict[str, Any] = {"code": code, "message": message, "request_id": str(uuid.uuid4())}
        if data is not None:
            body["data"] = data
        return body

    def _ok(self, data: Any) -> web.Response:
        return web.json_response(self._envelope(data))

    def _error(self, exc: KlingError) -> web.Response:
        # errors carry no `data`, as in the documented 1303 example
        return web.json_response(self._envelope(None, exc.code, exc.message), status=exc.http, headers=exc.headers)

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

    def _check_auth(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        if not header:
            raise KlingError(401, 1001, "Authorization is empty")
        token = header.removeprefix("Bearer ").strip()
        if not header.startswith("Bearer ") or token != self.api_key:
            if _JWT.match(token):
                raise KlingError(
                    401,
                    1002,
                    "Authentication error. The current API does not support AK/SK; please go to the "
                    "console (https://kling.ai/dev/api-key) to create API key.",
                )
            raise KlingError(401, 1002, "Authorization is invalid")

    async def _fault(self, endpoint: str, request: web.Request, create: Any = None) -> web.StreamResponse | None:
        """Play the next scripted fault of `endpoint`, if any. `create` makes the task first."""
        queue = self._faults[endpoint]
        if not queue:
            return None
        fault = queue.popleft()
        if fault.create and create is not None:
            create()
        if fault.kind == "error":
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            return self._error(KlingError(fault.http, fault.code, fault.message, headers))
        if fault.kind == "html":  # a gateway's own page, no Kling envelope
            return web.Response(status=fault.http, text="<html>gateway error</html>", content_type="text/html")
        if fault.kind == "malformed":
            return web.Response(status=200, body=b'{"code":0,"data":{"id":', content_type="application/json")
        if fault.kind == "read_timeout":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.hang_seconds)
            return self._error(KlingError(504, 5002, "internal timeout"))
        if fault.kind == "reset":
            assert request.transport is not None
            request.transport.abort()  # drop the connection with no answer
            raise asyncio.CancelledError
        raise ValueError(f"unknown fault kind {fault.kind!r}")

    async def _guard(self, endpoint: str, request: web.Request, create: Any = None) -> web.StreamResponse | None:
        try:
            self._check_auth(request)
        except KlingError as exc:
            return self._error(exc)
        return await self._fault(endpoint, request, create)

    # --- elements ---------------------------------------------------------------------------------

    async def _element_create(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        try:
            self._check_auth(request)
            images = self._validate_element(body)
        except KlingError as exc:
            return self._error(exc)
        faulted = await self._fault("element_create", request, lambda: self._make_element(body))
        if faulted is not None:
            return faulted
        task = self._make_element(body, images)
        return self._ok(
            {
                "task_id": task.task_id,
                "task_info": {"external_task_id": task.external_id},
                "task_status": "submitted",
                "created_at": task.created_ms,
                "updated_at": task.created_ms,
            }
        )

    def _make_element(self, body: dict[str, Any], images: list[bytes] | None = None) -> ElementTask:
        task = ElementTask(
            task_id=str(self._next_id()),
            external_id=str(body.get("external_task_id") or ""),
            name=body["element_name"],
            description=body["element_description"],
            created=time.monotonic(),
            created_ms=int(time.time() * 1000),
            outcome=self._element_script.popleft() if self._element_script else "succeed",
            element_id=800000000000000000 + self._counter,
            images=images or [],
        )
        self.elements[task.task_id] = task
        return task

    def _validate_element(self, body: Any) -> list[bytes]:
        if not isinstance(body, dict):
            raise _invalid("request body must be a JSON object")
        name, description = body.get("element_name"), body.get("element_description")
        if not isinstance(name, str) or not 1 <= len(name) <= 20:
            raise _invalid("element_name is required (at most 20 characters)")
        if not isinstance(description, str) or not 1 <= len(description) <= 100:
            raise _invalid("element_description is required (at most 100 characters)")
        if body.get("reference_type") != "image_refer":
            raise _invalid("reference_type must be image_refer (video_refer is not simulated)")
        external = body.get("external_task_id")
        if external is not None:
            if not isinstance(external, str) or not external:
                raise _invalid("external_task_id must be a non-empty string")
            if any(t.external_id == external for t in self.elements.values()):
                raise _invalid("external_task_id already exists")
        image_list = body.get("element_image_list")
        if not isinstance(image_list, dict):
            raise _invalid("element_image_list is required for image_refer")
        refers = image_list.get("refer_images")
        if not isinstance(refers, list) or not 1 <= len(refers) <= 3:
            raise _invalid("refer_images must hold 1 to 3 images")
        values = [image_list.get("frontal_image")]
        for item in refers:
            if not isinstance(item, dict):
                raise _invalid("each refer_images item must be {image_url}")
            values.append(item.get("image_url"))
        return [self._decode_image(v) for v in values]

    @staticmethod
    def _decode_image(value: Any) -> bytes:
        if not isinstance(value, str) or not value:
            raise _invalid("image is required")
        if value.startswith(("http://", "https://")):
            return b""  # URLs are accepted but not fetched by the simulator
        if value.startswith("data:"):
            raise _invalid("base64 must not carry a data: prefix")
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("image is neither a URL nor valid base64") from None
        if len(raw) > 10 * 1024 * 1024:
            raise _invalid("image is larger than 10 MB")
        try:
            with Image.open(io.BytesIO(raw)) as image:
                fmt, (width, height) = image.format, image.size
                image.load()
        except Exception:
            raise _invalid("image cannot be decoded") from None
        if fmt not in ("JPEG", "PNG"):
            raise _invalid(f"image format {fmt} is not jpg/jpeg/png")
        if min(width, height) < 300:
            raise _invalid("image must be at least 300 px on each side")
        if max(width, height) > 2.5 * min(width, height):
            raise _invalid("image aspect ratio must be between 1:2.5 and 2.5:1")
        return raw

    def _element_state(self, task: ElementTask) -> str:
        if task.outcome == "stuck":
            return "processing"
        elapsed = time.monotonic() - task.created
        if elapsed < self.element_seconds * 0.3:
            return "submitted"
        if elapsed < self.element_seconds:
            return "processing"
        return "failed" if task.outcome == "moderation" else "succeed"

    def ready_element_ids(self) -> set[str]:
        return {str(t.element_id) for t in self.elements.values() if self._element_state(t) == "succeed"}

    async def _element_query(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        self.element_status_requests += 1
        faulted = await self._guard("element_query", request)
        if faulted is not None:
            return faulted
        key = request.match_info["task"]
        task = self.elements.get(key) or next(
            (t for t in self.elements.values() if t.external_id and t.external_id == key), None
        )
        if task is None:
            return self._error(KlingError(404, 1203, "task not found"))
        state = self._element_state(task)
        data: dict[str, Any] = {
            "task_id": task.task_id,
            "task_status": state,
            "task_status_msg": MODERATION_MESSAGE if state == "failed" else "",
            "task_info": {"external_task_id": task.external_id},
            "created_at": task.created_ms,
            "updated_at": int(time.time() * 1000),
        }
        if state == "succeed":
            data["task_result"] = {
                "elements": [
                    {
                        "element_id": task.element_id,
                        "element_name": task.name,
                        "element_description": task.description,
                        "reference_type": "image_refer",
                        "element_image_list": {},
                        "tag_list": [],
                        "owned_by": "sim",
                        "status": "succeed",
                    }
                ]
            }
        return self._ok(data)

    # --- videos -----------------------------------------------------------------------------------

    async def _video_create(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        try:
            self._check_auth(request)
            if request.match_info["model"] != self.model:
                model = request.match_info["model"]
                raise KlingError(404, 1203, f"The model '{model}' does not exist or is no longer available.")
            settings = self._validate_video(body)
        except KlingError as exc:
            return self._error(exc)
        faulted = await self._fault("create", request, lambda: self._make_video(body, settings))
        if faulted is not None:
            return faulted
        task = self._make_video(body, settings)
        return self._ok(
            {
                "id": task.id,
                "status": "submitted",
                "create_time": task.created_ms,
                "update_time": task.created_ms,
                "external_id": task.external_id,
            }
        )

    def _make_video(self, body: dict[str, Any], settings: dict[str, Any]) -> VideoTask:
        options = body.get("options") or {}
        task = VideoTask(
            id=str(self._next_id()),
            external_id=str(options.get("external_task_id") or ""),
            created=time.monotonic(),
            created_ms=int(time.time() * 1000),
            outcome=self._video_script.popleft() if self._video_script else "succeed",
            resolution=settings["resolution"],
            duration=settings["duration"],
            audio=settings["audio"],
            body=body,
        )
        self.tasks[task.id] = task
        if url := options.get("callback_url"):
            self.callbacks.later(self.video_seconds * 0.3, url, lambda: self._callback(task))
            if task.outcome not in ("stuck", "unknown_status"):
                self.callbacks.later(self.video_seconds, url, lambda: self._callback(task))
        return task

    def _callback(self, task: VideoTask) -> tuple[bytes, dict[str, str]]:
        return json.dumps(self._entry(task)).encode(), {}

    def _validate_video(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _invalid("request body must be a JSON object")
        unknown = set(body) - {"contents", "settings", "options"}
        if unknown:
            raise _invalid(f"unknown parameters: {sorted(unknown)}")
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise _invalid("contents is required")
        ids: set[str] = set()
        prompts: list[str] = []
        kinds: list[str] = []
        ready = self.ready_element_ids()
        for item in contents:
            if not isinstance(item, dict) or item.get("type") not in CONTENT_TYPES:
                raise _invalid(f"unknown contents item {item!r:.80}")
            kind = item["type"]
            kinds.append(kind)
            item_id = item.get("id")
            if item_id is not None:
                if not isinstance(item_id, str) or not re.fullmatch(r"\w+", item_id) or item_id in ids:
                    raise _invalid(f"contents id {item_id!r} is invalid or repeated")
                ids.add(item_id)
            if kind == "prompt":
                text = item.get("text")
                if not isinstance(text, str) or not text.strip() or len(text) > 3072:
                    raise _invalid("prompt text is required (at most 3072 characters)")
                prompts.append(text)
            elif kind == "element":
                element_id = item.get("element_id")
                if isinstance(element_id, bool) or not isinstance(element_id, str | int) or item_id is None:
                    raise _invalid("element items need element_id and id")
                if str(element_id) not in ready:
                    raise _invalid(f"element {element_id} does not exist or is not ready")
            elif not isinstance(item.get("url"), str) or not item["url"]:
                raise _invalid(f"{kind} needs a url")
            elif kind in VIDEO_TYPES and not item["url"].startswith(("http://", "https://")):
                raise _invalid("video inputs must be URLs")
        if len(prompts) != 1:
            raise _invalid("exactly one prompt item is required")
        for ref in _REF.findall(prompts[0]):
            if ref not in ids:
                raise _invalid(f"@{ref} in the prompt refers to no contents item")
        elements, images = kinds.count("element"), sum(k in IMAGE_TYPES for k in kinds)
        if "last_frame" in kinds and "first_frame" not in kinds:
            raise _invalid("last_frame needs first_frame")
        if "first_frame" in kinds and elements > 3:
            raise _invalid("at most 3 elements with a first frame")
        if elements + images > 7:
            raise _invalid("at most 7 images and elements together")
        return self._validate_settings(body.get("settings"), has_first_frame="first_frame" in kinds) | {
            "options": self._validate_options(body.get("options"))
        }

    @staticmethod
    def _validate_settings(settings: Any, *, has_first_frame: bool) -> dict[str, Any]:
        if settings is None:
            settings = {}
        if not isinstance(settings, dict):
            raise _invalid("settings must be an object")
        unknown = set(settings) - {*SETTINGS, "duration", "multi_shot"}
        if unknown:
            raise _invalid(f"unknown settings: {sorted(unknown)}")
        for key, allowed in SETTINGS.items():
            if key in settings and settings[key] not in allowed:
                raise _invalid(f"settings.{key} must be one of {sorted(allowed)}")
        if "aspect_ratio" not in settings and not has_first_frame:
            raise _invalid("settings.aspect_ratio is required without a first frame")
        duration = settings.get("duration", 5)
        if isinstance(duration, bool) or not isinstance(duration, int) or not 3 <= duration <= 15:
            raise _invalid("settings.duration must be an integer from 3 to 15")
        if not isinstance(settings.get("multi_shot", True), bool):
            raise _invalid("settings.multi_shot must be a boolean")
        return {
            "resolution": settings.get("resolution", "720p"),
            "duration": duration,
            "audio": settings.get("audio", "off"),
        }

    def _validate_options(self, options: Any) -> dict[str, Any]:
        if options is None:
            return {}
        if not isinstance(options, dict):
            raise _invalid("options must be an object")
        unknown = set(options) - {"callback_url", "external_task_id", "watermark_info"}
        if unknown:
            raise _invalid(f"unknown options: {sorted(unknown)}")
        external = options.get("external_task_id")
        if external is not None:
            if not isinstance(external, str) or not external:
                raise _invalid("external_task_id must be a non-empty string")
            if any(t.external_id == external for t in self.tasks.values()):
                raise _invalid("external_task_id already exists")
        return options

    def _video_state(self, task: VideoTask) -> str:
        if task.outcome == "stuck":
            return "processing"
        if task.outcome == "unknown_status":
            return "queueing_for_review"
        elapsed = time.monotonic() - task.created
        if elapsed < self.video_seconds * 0.3:
            return "submitted"
        if elapsed < self.video_seconds:
            return "processing"
        return "succeeded" if task.outcome == "succeed" else "failed"

    def _entry(self, task: VideoTask) -> dict[str, Any]:
        state = self._video_state(task)
        entry: dict[str, Any] = {
            "id": task.id,
            "status": state,
            "message": "",
            "create_time": task.created_ms,
            "update_time": int(time.time() * 1000),
            "external_id": task.external_id,
            "references": [],  # a field the adapter does not use: must be tolerated
        }
        if state == "failed":
            entry["message"] = MODERATION_MESSAGE if task.outcome == "moderation" else "generation failed"
        if state == "succeeded":
            entry["outputs"] = [
                {
                    "type": "video",
                    "id": f"v{task.id}",
                    "url": f"{self.base_url}/cdn/{task.id}.mp4",
                    "duration": f"{task.duration + 0.041:.3f}",
                }
            ]
            entry["billing"] = [{"charge_type": "unit", "amount": str(self.units(task)), "package_type": "video"}]
        return entry

    @staticmethod
    def units(task: VideoTask) -> Decimal:
        per_second = UNITS_PER_SECOND[task.resolution][1 if task.audio == "native" else 0]
        return (per_second * task.duration).normalize()

    async def _tasks_query(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        self.status_requests += 1
        faulted = await self._guard("tasks", request)
        if faulted is not None:
            return faulted
        by_id, by_external = request.query.get("task_ids"), request.query.get("external_task_ids")
        if (by_id is None) == (by_external is None):
            return self._error(_invalid("give either task_ids or external_task_ids"))
        wanted = [v for v in (by_id or by_external or "").split(",") if v]
        if by_id is not None:
            found = [self.tasks[i] for i in wanted if i in self.tasks]
        elif self.external_ids_query_broken:
            found = []
        else:
            found = [t for t in self.tasks.values() if t.external_id and t.external_id in wanted]
        return self._ok([self._entry(t) for t in found])

    async def _tasks_list(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        faulted = await self._guard("tasks_list", request)
        if faulted is not None:
            return faulted
        if not isinstance(body, dict):
            return self._error(_invalid("request body must be a JSON object"))
        limit = body.get("limit", 30)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 500:
            return self._error(_invalid("limit must be 1..500"))
        start, end = body.get("start_time", 0), body.get("end_time", 2**62)
        rows = [t for t in self.tasks.values() if start <= t.created_ms <= end]
        offset = int(body.get("cursor") or 0)
        page = rows[offset : offset + limit]
        more = offset + limit < len(rows)
        return self._ok(
            {
                "result": [self._entry(t) for t in page],
                "count": len(page),
                "next_cursor": str(offset + limit) if more else "",
                "has_more": more,
            }
        )

    # --- the CDN ----------------------------------------------------------------------------------

    async def _download(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        faulted = await self._fault("download", request)
        if faulted is not None:
            return faulted
        task = self.tasks.get(request.match_info["name"].removesuffix(".mp4"))
        if task is None or self._video_state(task) != "succeeded":
            return web.Response(status=404, text="not found")
        return await send_video(request, self.video_bytes, chunked=self.chunked_download)
