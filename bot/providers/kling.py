"""Kling (Kuaishou) adapter: the live API, new design.

Characters become *elements* (`POST /v1/general/advanced-custom-elements`, an asynchronous task
polled to an integer `element_id`) built from the stored frontal frame plus 1-3 more frames.
Videos are made by `POST /omni-video/kling-3.0-omni` with one `element` item per character in
`contents[]` and `@element_N` in the prompt, polled in batches with `GET /tasks?task_ids=`.
Our job id travels as `options.external_task_id`, so an ambiguous create can be found again.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import math
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import httpx
from PIL import Image, UnidentifiedImageError
from pydantic import SecretStr

from bot.prompts import replace_mentions
from bot.providers.base import (
    Ambiguous,
    AuthFailed,
    Capabilities,
    CharacterAsset,
    CharacterHandle,
    DownloadResult,
    GenerationRequest,
    JobSnapshot,
    JobStatus,
    MentionStyle,
    Orientation,
    ProviderError,
    Quality,
    QuotaExhausted,
    RateLimited,
    Rejected,
    RejectReason,
    SubmitResult,
    Unavailable,
    VideoProvider,
)
from bot.providers.downloads import download_public
from bot.providers.http_errors import retry_after_seconds, safe_message, status_error, transport_error
from bot.providers.pricing import PriceBook, usd_to_micros

log = logging.getLogger(__name__)

Phase = Literal["create", "query"]

DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=30.0, write=30.0, pool=10.0)
ELEMENTS_PATH = "/v1/general/advanced-custom-elements"
TASK_IDS_PER_QUERY = 50  # the docs give no limit for task_ids=; keep URLs short
MAX_PROMPT_CHARS = 3072
MAX_ELEMENTS = 7  # multi-image elements + refer images, without a reference video
MAX_REFER_IMAGES = 3
ELEMENT_NAME_MAX, ELEMENT_DESCRIPTION_MAX = 20, 100
IMAGE_MIN_SIDE, IMAGE_MAX_BYTES, IMAGE_MAX_RATIO = 300, 10 * 1024 * 1024, 2.5
UNIT_USD = Decimal("0.14")  # Kling bills in units; its price list puts 1 unit at about $0.14
RATE_LIMIT_FLOOR = 1.0  # Kling asks for at least 1 s of back-off on 1303 (concurrency limit)
RECONCILE_WINDOW_MS = 24 * 3600 * 1000
RECONCILE_PAGES = 3

_STATUSES = {
    "submitted": JobStatus.QUEUED,
    "processing": JobStatus.RUNNING,
    "succeeded": JobStatus.SUCCEEDED,
    "succeed": JobStatus.SUCCEEDED,  # the legacy word, tolerated
    "failed": JobStatus.FAILED,
}
_KNOWN_TASK_KEYS = frozenset(
    {"id", "status", "message", "create_time", "update_time", "external_id", "outputs", "billing"}
)
_MODERATION_WORDS = ("risk", "moderat", "safety", "security", "sensitive", "policy", "violat", "nsfw")
_AT_WORD = re.compile(r"(?<!\w)@(\w+)")


class KlingProvider(VideoProvider):
    name = "kling"
    capabilities = Capabilities(
        seconds=tuple(range(3, 16)),  # settings.duration: int 3-15
        orientations=frozenset(Orientation),
        qualities=frozenset(Quality),
        max_characters=MAX_ELEMENTS,
        needs_handle=True,
        mention_style=MentionStyle.ELEMENT_INDEX,
        batch_status=True,
        paid=True,
        authoritative_reconcile=True,
        callbacks=True,  # options.callback_url: a POST on every status change
    )

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_key: SecretStr,
        base_url: str,
        prices: PriceBook,
        model: str = "kling-3.0-omni",
        element_poll_interval: float = 2.0,
        element_timeout: float = 120.0,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self._client = client
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._prices = prices
        self._model = model
        self._element_poll_interval = element_poll_interval
        self._element_timeout = element_timeout
        self._timeout = timeout

    @property
    def model(self) -> str:
        return self._model

    def __repr__(self) -> str:
        return f"KlingProvider(base_url={self._base_url!r}, model={self._model!r})"

    # --- money ------------------------------------------------------------------------------------

    def _unit(self, quality: Quality) -> str:
        return "1080p" if quality is Quality.PRO else "720p"

    def estimate(self, request: GenerationRequest) -> int:
        seconds = self.capabilities.fit_seconds(request.seconds)
        return self._prices.per_second(self.name, self._model, self._unit(request.quality), seconds)

    # --- characters -------------------------------------------------------------------------------

    async def register_character(self, asset: CharacterAsset) -> CharacterHandle:
        if len(asset.frame_paths) < 2:
            raise Rejected(
                self.name,
                "a Kling element needs a frontal frame and at least one more reference frame",
                reason=RejectReason.UNSUPPORTED,
            )
        frontal = await asyncio.to_thread(_image_b64, asset.frame_paths[0], self.name)
        refers = [
            {"image_url": await asyncio.to_thread(_image_b64, path, self.name)}
            for path in asset.frame_paths[1 : 1 + MAX_REFER_IMAGES]
        ]
        external = f"castbot-el-{asset.character_id}-{uuid.uuid4().hex[:12]}"
        body = {
            "element_name": asset.name[:ELEMENT_NAME_MAX],
            "element_description": (asset.description.strip() or asset.name)[:ELEMENT_DESCRIPTION_MAX],
            "reference_type": "image_refer",
            "element_image_list": {"frontal_image": frontal, "refer_images": refers},
            "external_task_id": external,
        }
        try:
            data = await self._call("POST", ELEMENTS_PATH, phase="create", json=body)
            task_id = _text(_as_dict(data).get("task_id")) or external
            found = True
        except Ambiguous:
            # the element task may exist: the query path also accepts our external_task_id
            log.warning("kling element create was ambiguous; looking it up by external_task_id")
            task_id, found = external, False
        return await self._await_element(task_id, asset.name, known=found)

    async def _await_element(self, task_id: str, name: str, *, known: bool) -> CharacterHandle:
        """Poll the element task until it has an element_id; `known=False` while it may not exist."""
        deadline = time.monotonic() + self._element_timeout
        last_error: ProviderError | None = None
        # a task we only guess exists may answer "not found" for a while
        transient = (Unavailable, RateLimited) if known else (Unavailable, RateLimited, Rejected)
        while True:
            try:
                data = _as_dict(await self._call("GET", f"{ELEMENTS_PATH}/{task_id}", phase="query"))
            except transient as exc:
                last_error = exc
                data = {}
            status = _text(data.get("task_status"))
            if status in ("succeed", "succeeded"):
                return self._element_handle(data, task_id)
            if status == "failed":
                raise _failure(self.name, self._safe(data.get("task_status_msg")), data.get("code"), "element")
            if status and status not in ("submitted", "processing"):
                log.warning("kling element task %s has unknown status %r", task_id, status)
            if time.monotonic() + self._element_poll_interval > deadline:
                detail = f" (last error: {last_error.message})" if last_error and not status else ""
                raise Unavailable(self.name, f"creating the element for {name} timed out{detail}")
            await asyncio.sleep(self._element_poll_interval)

    def _element_handle(self, data: Mapping[str, Any], task_id: str) -> CharacterHandle:
        elements = _as_dict(data.get("task_result")).get("elements")
        first = _as_dict(elements[0]) if isinstance(elements, list) and elements else {}
        element_id = first.get("element_id")
        if isinstance(element_id, bool) or not isinstance(element_id, int | str) or element_id == "":
            raise Unavailable(self.name, f"element task {task_id} succeeded without an element_id")
        return CharacterHandle(provider=self.name, external_id=str(element_id), mention_token="")

    # --- generation -------------------------------------------------------------------------------

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        if len(request.characters) > MAX_ELEMENTS:
            raise Rejected(self.name, f"Kling takes at most {MAX_ELEMENTS} characters per video")
        tokens: dict[str, str] = {}
        elements: list[dict[str, Any]] = []
        for index, ref in enumerate(request.characters, start=1):
            handle = ref.handle
            if handle is None or handle.provider != self.name or not handle.external_id:
                raise Rejected(self.name, f"character {ref.asset.name} is not registered on Kling")
            tokens[ref.key] = f"@element_{index}"
            elements.append({"type": "element", "element_id": handle.external_id, "id": f"element_{index}"})
        prompt = _neutralise_stray_refs(replace_mentions(request.prompt, tokens), set(tokens.values()))
        if not prompt.strip():
            raise Rejected(self.name, "the prompt is empty")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise Rejected(self.name, f"the prompt is longer than {MAX_PROMPT_CHARS} characters")
        options: dict[str, Any] = {"watermark_info": {"enabled": False}}
        if request.client_ref:
            options["external_task_id"] = request.client_ref
        if request.callback_url:
            options["callback_url"] = request.callback_url
        return {
            "contents": [{"type": "prompt", "text": prompt}, *elements],
            "settings": {
                # the new design has no `mode`: std/pro are expressed as the resolution
                "resolution": self._unit(request.quality),
                "aspect_ratio": "9:16" if request.orientation is Orientation.PORTRAIT else "16:9",
                "duration": self.capabilities.fit_seconds(request.seconds),
                "audio": "off",
                "multi_shot": False,  # the API defaults to true
            },
            "options": options,
        }

    async def submit(self, request: GenerationRequest) -> SubmitResult:
        body = self._body(request)
        data = _as_dict(await self._call("POST", f"/omni-video/{self._model}", phase="create", json=body))
        task_id = _text(data.get("id"))
        if not task_id:
            raise Ambiguous(self.name, "Kling accepted the request but returned no task id")
        raw = _text(data.get("status")) or "submitted"
        snapshot = JobSnapshot(external_id=task_id, status=_STATUSES.get(raw, JobStatus.QUEUED), raw_status=raw)
        return SubmitResult(external_id=task_id, snapshot=snapshot)

    async def status(self, external_ids: Sequence[str]) -> Mapping[str, JobSnapshot]:
        ids = list(dict.fromkeys(i for i in external_ids if i))
        result: dict[str, JobSnapshot] = {}
        for start in range(0, len(ids), TASK_IDS_PER_QUERY):
            chunk = ids[start : start + TASK_IDS_PER_QUERY]
            data = await self._call("GET", "/tasks", phase="query", params={"task_ids": ",".join(chunk)})
            for entry in data if isinstance(data, list) else []:
                snapshot = self._snapshot(entry)
                if snapshot is not None and snapshot.external_id in chunk:
                    result[snapshot.external_id] = snapshot
        return result

    def _snapshot(self, entry: Any) -> JobSnapshot | None:
        task = _as_dict(entry)
        task_id = _text(task.get("id"))
        if not task_id:
            return None
        extra = set(task) - _KNOWN_TASK_KEYS
        if extra:
            log.debug("kling task %s has unknown fields %s", task_id, sorted(extra))
        raw = _text(task.get("status"))
        status = _STATUSES.get(raw)
        if status is None:
            # never treat an unknown word as terminal: keep polling until the deadline
            log.warning("kling task %s has unknown status %r; treating it as running", task_id, raw)
            status = JobStatus.RUNNING
        error = None
        if status is JobStatus.FAILED:
            error = _failure(self.name, self._safe(task.get("message")), task.get("code"), "video")
        url = None
        if status is JobStatus.SUCCEEDED:
            url = _video_url(task.get("outputs"))
            if url is None:
                log.warning("kling task %s succeeded without a video output", task_id)
                status, error = JobStatus.FAILED, Unavailable(self.name, "Kling returned no video")
        return JobSnapshot(
            external_id=task_id,
            status=status,
            error=error,
            download_url=url,
            actual_cost_micros=_billed_micros(task.get("billing")) if status is JobStatus.SUCCEEDED else None,
            raw_status=raw,
        )

    async def reconcile(self, request: GenerationRequest) -> str | None:
        if not request.client_ref:
            return None
        data = await self._call("GET", "/tasks", phase="query", params={"external_task_ids": request.client_ref})
        found = _find_external(data if isinstance(data, list) else [], request.client_ref)
        if found:
            return found
        # a reported live quirk: external_task_ids= can come back empty; scan the recent task list
        now_ms = int(time.time() * 1000)
        cursor: str | None = None
        for _ in range(RECONCILE_PAGES):
            query: dict[str, Any] = {
                "start_time": now_ms - RECONCILE_WINDOW_MS,
                "end_time": now_ms,
                "limit": 500,
            }
            if cursor:
                query["cursor"] = cursor
            page = _as_dict(await self._call("POST", "/tasks", phase="query", json=query))
            rows = page.get("result")
            found = _find_external(rows if isinstance(rows, list) else [], request.client_ref)
            if found:
                return found
            cursor = _text(page.get("next_cursor"))
            if not page.get("has_more") or not cursor:
                break
        return None

    async def download(self, snapshot: JobSnapshot, dest: Path, max_bytes: int) -> DownloadResult:
        if not snapshot.download_url:
            raise Rejected(self.name, "this job has no video to download")
        # a signed CDN URL: fetched without our key, which goes only to the API host
        return await download_public(
            self._client,
            snapshot.download_url,
            dest,
            max_bytes,
            provider=self.name,
            label="Kling",
            http_timeout=self._timeout,
        )

    def _safe(self, message: Any) -> str:
        """A provider message fit to show a member: one short line, our key masked."""
        if not isinstance(message, str):
            return ""
        return safe_message(message, (self._api_key.get_secret_value(),), limit=200)

    # --- transport --------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        phase: Phase,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """One API call; returns the envelope's `data` or raises a mapped ProviderError."""
        headers = {"Authorization": f"Bearer {self._api_key.get_secret_value()}"}
        try:
            response = await self._client.request(
                method,
                self._base_url + path,
                json=json,
                params=params,
                headers=headers,
                timeout=self._timeout,
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise self._transport_error(exc, phase) from None
        try:
            envelope = response.json()
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict):
            if response.status_code == 200:
                # the server answered but we cannot read it: a create may have happened
                cls = Ambiguous if phase == "create" else Unavailable
                raise cls(self.name, "Kling sent an unreadable answer")
            envelope = {}
        code = envelope.get("code")
        if response.status_code == 200 and code == 0:
            return envelope.get("data")
        raise self._api_error(response, envelope, phase)

    def _transport_error(self, exc: Exception, phase: Phase) -> ProviderError:
        if isinstance(exc, httpx.HTTPError):
            return transport_error(self.name, exc, idempotent=phase == "query")
        return Unavailable(self.name, f"could not reach Kling ({type(exc).__name__})")

    def _api_error(self, response: httpx.Response, envelope: Mapping[str, Any], phase: Phase) -> ProviderError:
        http = response.status_code
        raw_code = envelope.get("code")
        code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
        detail = self._safe(envelope.get("message"))
        code_text = str(code) if code is not None else f"http-{http}"
        log.info(
            "kling %s error: http=%s code=%s request_id=%s message=%r",
            phase,
            http,
            code,
            _text(envelope.get("request_id")),
            detail,
        )
        retry_after = retry_after_seconds(response.headers)
        text = f"Kling refused the request: {detail}" if detail else "Kling refused the request"
        if code is not None and code != 0:
            mapped = self._by_code(code, http, text, code_text, retry_after, phase)
            if mapped is not None:
                return mapped
        return self._by_http(http, response.headers, detail, code_text, phase)

    def _by_code(
        self, code: int, http: int, text: str, code_text: str, retry_after: float | None, phase: Phase
    ) -> ProviderError | None:
        name = self.name
        if 1000 <= code <= 1004 or code in (1100, 1103, 1304):
            # bad key, disabled account, no access, IP whitelist: a human has to fix it
            return AuthFailed(name, "Kling rejected the API key or account", code=code_text)
        if code in (1101, 1102):
            return QuotaExhausted(name, "the Kling account has no balance or resource pack left", code=code_text)
        if code in (1302, 1303):
            wait = max(retry_after or 0.0, RATE_LIMIT_FLOOR)
            return RateLimited(name, "Kling is at its concurrency limit", code=code_text, retry_after=wait)
        if code in (1300, 1301):
            return Rejected(name, text, code=code_text, reason=RejectReason.MODERATION)
        if code == 1203:
            return Rejected(name, f"{text} (model {self._model})", code=code_text, reason=RejectReason.UNSUPPORTED)
        if 1200 <= code < 1300:
            return Rejected(name, text, code=code_text, reason=RejectReason.INVALID)
        if code == 5002 or (5000 <= code < 6000 and http in (500, 502, 504)):
            # internal timeout or error: the task may exist, so never re-POST
            if phase == "create":
                return Ambiguous(name, "Kling timed out internally; the job may exist", code=code_text)
            return Unavailable(name, "Kling is busy", code=code_text, retry_after=retry_after)
        if 5000 <= code < 6000:
            return Unavailable(name, "Kling is unavailable", code=code_text, retry_after=retry_after)
        return None

    def _by_http(self, http: int, headers: httpx.Headers, detail: str, code_text: str, phase: Phase) -> ProviderError:
        return status_error(
            self.name,
            http,
            headers,
            message=detail,
            code=code_text,
            idempotent=phase == "query",
            secrets=(self._api_key.get_secret_value(),),
        )


# --- helpers --------------------------------------------------------------------------------------


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""


def _failure(provider: str, detail: str, raw_code: Any, what: str) -> ProviderError:
    """A failed task's error; `detail` is already safe to show."""
    code = _text(raw_code) or None
    lowered = detail.lower()
    if code in ("1300", "1301") or any(word in lowered for word in _MODERATION_WORDS):
        text = f"Kling refused the {what} content" + (f": {detail}" if detail else "")
        return Rejected(provider, text, code=code, reason=RejectReason.MODERATION)
    text = f"Kling could not make the {what}" + (f": {detail}" if detail else "")
    return Unavailable(provider, text, code=code)


def _video_url(outputs: Any) -> str | None:
    for output in outputs if isinstance(outputs, list) else []:
        item = _as_dict(output)
        url = item.get("url")
        if item.get("type", "video") == "video" and isinstance(url, str) and url:
            return url
    return None


def _billed_micros(billing: Any) -> int | None:
    """What Kling says it charged, when every line is in units or USD; else unknown."""
    if not isinstance(billing, list) or not billing:
        return None
    total = 0
    for line in billing:
        item = _as_dict(line)
        try:
            amount = Decimal(str(item.get("amount")))
        except InvalidOperation:
            return None
        if not amount.is_finite():
            return None
        if item.get("charge_type") == "unit":
            total += usd_to_micros(amount * UNIT_USD)
        elif item.get("charge_type") == "cash" and str(item.get("currency", "")).upper() == "USD":
            total += usd_to_micros(amount)
        else:
            return None
    return total


def _find_external(rows: list[Any], external_id: str) -> str | None:
    for row in rows:
        task = _as_dict(row)
        if _text(task.get("external_id")) == external_id and _text(task.get("id")):
            return _text(task.get("id"))
    return None


def _neutralise_stray_refs(prompt: str, ours: set[str]) -> str:
    """Kling reads every `@word` as a reference to a contents item; drop the `@` of any other."""
    return _AT_WORD.sub(lambda m: m.group(0) if m.group(0) in ours else m.group(1), prompt)


def _image_b64(path: Path, provider: str) -> str:
    """A frame as raw base64 (no data: prefix), re-encoded when Kling would refuse it as is:
    JPEG/PNG, at most 10 MB, at least 300 px on the short side, aspect within 1:2.5-2.5:1."""
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            acceptable = (
                image.format in ("JPEG", "PNG")
                and min(width, height) >= IMAGE_MIN_SIDE
                and max(width, height) <= IMAGE_MAX_RATIO * min(width, height)
                and len(data) <= IMAGE_MAX_BYTES
            )
            if not acceptable:
                data = _reencode(image)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError):
        raise Rejected(provider, "a reference frame of this character cannot be read") from None
    return base64.b64encode(data).decode("ascii")


def _reencode(image: Image.Image) -> bytes:
    rgb = image.convert("RGB")
    width, height = rgb.size
    if min(width, height) < IMAGE_MIN_SIDE:
        scale = IMAGE_MIN_SIDE / min(width, height)
        width, height = math.ceil(width * scale), math.ceil(height * scale)
        rgb = rgb.resize((width, height), Image.Resampling.LANCZOS)
    # pad (never crop: the face must stay) when the frame is too long for Kling
    canvas_w = max(width, math.ceil(height / IMAGE_MAX_RATIO))
    canvas_h = max(height, math.ceil(width / IMAGE_MAX_RATIO))
    if (canvas_w, canvas_h) != (width, height):
        canvas = Image.new("RGB", (canvas_w, canvas_h))
        canvas.paste(rgb, ((canvas_w - width) // 2, (canvas_h - height) // 2))
        rgb = canvas
    for quality in (90, 75, 60):
        out = io.BytesIO()
        rgb.save(out, format="JPEG", quality=quality)
        if out.tell() <= IMAGE_MAX_BYTES:
            return out.getvalue()
    raise ValueError("frame too large even as JPEG")
