"""The `relay` adapter: the Sora relay shape of the new-api family.

Characters are created with `POST /sora/v1/characters` from a reachable clip URL (or a finished
relay task) and a 1-3 s window, and answer with a global Sora `username`; a prompt mentions them
as `@username`. Videos are tasks: `POST /v1/videos`, `GET /v1/videos/{id}`, then
`GET /v1/videos/{id}/content`. Prices are flat per video.

Relays have no list endpoint, so an ambiguous submit cannot be reconciled: the job keeps its hold
until its deadline (ARCHITECTURE.md, "Money").
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from pydantic import SecretStr

from bot.media import DownloadTooLarge, stream_to_file
from bot.prompts import replace_mentions
from bot.providers.base import (
    Ambiguous,
    AuthFailed,
    Capabilities,
    CharacterAsset,
    CharacterHandle,
    CharacterRef,
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
from bot.providers.http_errors import (
    error_fields,
    looks_like_quota,
    redact,
    retry_after_seconds,
    safe_message,
    status_error,
    transport_error,
)
from bot.providers.pricing import PriceBook

log = logging.getLogger(__name__)

PROVIDER = "relay"
CHARACTER_MODEL = "sora-2-character"
MIN_WINDOW, MAX_WINDOW = 1, 3  # seconds; the relay's character window (`timestamps`)
MAX_JSON_BYTES = 1 << 20  # an API answer larger than this is not a real answer
_SIZES = {Orientation.PORTRAIT: "720x1280", Orientation.LANDSCAPE: "1280x720"}

# The relays' own words (new-api, sora2api, upstream Sora), matched case-insensitively on
# message + code + type. Order matters: see _classify_text.
_HUMAN = ("realistic human", "depict a real", "humans in the frame")
_MODERATION = (
    "content_policy",
    "content policy",
    "safety",
    "moderation",
    "guardrail",
    "violat",
    "inappropriate",
)
_MODEL_GONE = ("model_not_found", "model not found", "no available channel", "无可用渠道")
_QUOTA = (
    "no available tokens",
    "no available token",
    "insufficient_user_quota",
    "pre_consume_token_quota_failed",
    "quota exhausted",
    "余额不足",
    "额度不足",
    "billing",
)
_AUTH = (
    "token_invalidated",
    "invalid token",
    "invalid_token",
    "invalid api key",
    "invalid_api_key",
    "authentication token",
    "无效的令牌",
)
_OVERLOAD = ("heavy load", "heavy_load", "temporarily paused")

_QUEUED = frozenset({"submitted", "queued", "pending", "not_start", "not_started"})
_RUNNING = frozenset({"in_progress", "processing", "running", "generating"})
_SUCCEEDED = frozenset({"completed", "succeeded", "success", "finished", "done"})
_FAILED = frozenset({"failed", "failure", "error", "cancelled", "canceled", "expired"})

# A Sora username after '@': word characters with inner dots ("hfspncadz.mooflapand").
_AT_WORD = re.compile(r"(?<![\w.])@(\w+(?:\.\w+)*)")


@dataclass(frozen=True)
class RelayTimeouts:
    """Explicit limits for every relay call; tests shrink them."""

    connect: float = 10.0
    write: float = 30.0
    pool: float = 10.0
    create_read: float = 60.0  # POST /v1/videos; a timeout here is Ambiguous, so be generous
    status_read: float = 20.0
    character_read: float = 120.0  # the synchronous character variant answers after processing
    download_read: float = 60.0  # between chunks, not for the whole file
    character_poll_interval: float = 3.0  # async character variant
    character_wait: float = 180.0
    status_concurrency: int = 4

    def http(self, read: float) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=read, write=self.write, pool=self.pool)


def character_window(duration: float, best_start: float) -> tuple[int, int]:
    """The `timestamps` window for a clip: up to 3 s from `best_start`, kept inside the clip.

    Whole seconds, because every documented relay example uses them ("1,3", "0,3").
    """
    whole = math.floor(duration)
    if whole < MIN_WINDOW:
        raise Rejected(PROVIDER, "the clip is shorter than the relay's 1 second minimum", reason=RejectReason.INVALID)
    length = min(MAX_WINDOW, whole)
    start = min(max(0, math.floor(best_start)), whole - length)
    return start, start + length


def render_prompt(prompt: str, refs: Sequence[CharacterRef]) -> str:
    """The member's prompt with each `@name` replaced by its `@username`.

    Any other `@word` loses its '@': on the relay it would reference whatever public Sora
    account has that handle (e.g. a real person's cameo), which the member did not choose.
    """
    tokens = {ref.key: ref.handle.mention_token for ref in refs if ref.handle is not None}
    rendered = replace_mentions(prompt, tokens)
    ours = {token[1:] for token in tokens.values()}

    def defang(m: re.Match[str]) -> str:
        return m.group(0) if m.group(1) in ours else m.group(1)

    return _AT_WORD.sub(defang, rendered)


def _has(text: str, markers: Sequence[str]) -> bool:
    return any(marker in text for marker in markers)


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: httpx.Headers
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RelayProvider(VideoProvider):
    name = PROVIDER
    capabilities = Capabilities(
        seconds=(10, 15),  # the relay's sora-2 task shape accepts only these
        orientations=frozenset({Orientation.PORTRAIT, Orientation.LANDSCAPE}),
        qualities=frozenset({Quality.STANDARD, Quality.PRO}),
        # No documented cap; the relays show two-character prompts, and each extra cameo in a
        # 10-15 s shot costs likeness. Three keeps a small cast without inviting crowds.
        max_characters=3,
        needs_handle=True,
        mention_style=MentionStyle.AT_HANDLE,
        batch_status=False,
        paid=True,
    )

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_key: SecretStr,
        base_url: str,
        prices: PriceBook,
        model: str = "sora-2",
        pro_model: str = "sora-2-pro",
        timeouts: RelayTimeouts | None = None,
    ) -> None:
        self._client = client
        self._key = api_key
        base = base_url.rstrip("/")
        # Operators often paste the OpenAI-style ".../v1" base; the relay routes live at the root.
        self._base = base[:-3] if base.endswith("/v1") else base
        self._prices = prices
        self._model = model
        self._pro_model = pro_model
        self._t = timeouts or RelayTimeouts()

    @property
    def model(self) -> str:
        return self._model

    def __repr__(self) -> str:
        return f"RelayProvider(base_url={self._base!r}, model={self._model!r})"

    # --- money --------------------------------------------------------------------------------

    def _model_for(self, quality: Quality) -> str:
        return self._pro_model if quality is Quality.PRO else self._model

    def estimate(self, request: GenerationRequest) -> int:
        # Flat per video whatever the duration, as relays price it.
        return self._prices.price(PROVIDER, self._model_for(request.quality), "video")

    # --- characters -----------------------------------------------------------------------------

    async def register_character(self, asset: CharacterAsset) -> CharacterHandle:
        if not asset.clip_url:
            raise Rejected(
                PROVIDER,
                "the relay needs a reachable clip URL to create a character, and none is known",
                code="clip_url_missing",
                reason=RejectReason.UNSUPPORTED,
            )
        start, end = character_window(asset.clip_duration, asset.best_window_start)
        body = {"model": CHARACTER_MODEL, "url": asset.clip_url, "timestamps": f"{start},{end}"}
        return await self._create_character(body, label=asset.name)

    async def register_character_from_task(self, name: str, task_id: str, start: float, end: float) -> CharacterHandle:
        """Create a character from a finished relay video (`from_task`), window [start, end] s."""
        if not task_id:
            raise Rejected(PROVIDER, "no relay task to extract the character from", reason=RejectReason.INVALID)
        if not (start >= 0 and MIN_WINDOW <= end - start <= MAX_WINDOW):
            raise Rejected(
                PROVIDER,
                "the character window must be 1 to 3 seconds long and start at or after 0",
                code="bad_window",
                reason=RejectReason.INVALID,
            )
        body = {"model": CHARACTER_MODEL, "from_task": task_id, "timestamps": f"{start:g},{end:g}"}
        return await self._create_character(body, label=name)

    async def _create_character(self, body: dict[str, str], *, label: str) -> CharacterHandle:
        # A timeout here may leave an orphan character upstream; that costs at most one character
        # fee and is harmless, so character calls are treated as repeatable (never Ambiguous).
        answer = await self._call(
            "POST", "/sora/v1/characters", json_body=body, read=self._t.character_read, idempotent=True
        )
        data = self._json_object(answer, idempotent=True, what="character")
        handle = self._handle_from(data)
        if handle is not None:
            log.info("relay character created for %r: %s", label, handle.mention_token)
            return handle
        char_id = data.get("id")
        if not isinstance(char_id, str) or not char_id:
            raise Unavailable(PROVIDER, "the relay's character answer had neither username nor id", code="malformed")
        return await self._wait_character(char_id, label)

    async def _wait_character(self, char_id: str, label: str) -> CharacterHandle:
        """The async variant: `status: queued`, `username: null`, then poll until it has one."""
        deadline = time.monotonic() + self._t.character_wait
        path = f"/sora/v1/characters/{quote(char_id, safe='')}"
        while True:
            await asyncio.sleep(self._t.character_poll_interval)
            try:
                answer = await self._call("GET", path, read=self._t.status_read, idempotent=True)
                data = self._json_object(answer, idempotent=True, what="character")
            except (Unavailable, RateLimited) as exc:
                if time.monotonic() >= deadline:
                    raise
                log.info("relay character %s poll failed, retrying: %s", char_id, exc)
                continue
            handle = self._handle_from(data)
            if handle is not None:
                log.info("relay character created for %r: %s", label, handle.mention_token)
                return handle
            raw = str(data.get("status") or "").lower()
            if raw in _FAILED:
                error = self._job_error(data) or Rejected(
                    PROVIDER, "the relay could not create this character", reason=RejectReason.INVALID
                )
                raise error
            if time.monotonic() >= deadline:
                raise Unavailable(
                    PROVIDER,
                    "the relay is still processing the character; try again later",
                    code="character_timeout",
                )

    def _handle_from(self, data: Mapping[str, Any]) -> CharacterHandle | None:
        username = data.get("username")
        if not isinstance(username, str) or not username.strip():
            return None
        username = username.strip().lstrip("@")
        if not re.fullmatch(r"\w+(?:\.\w+)*", username):
            raise Unavailable(PROVIDER, "the relay returned an unusable character username", code="malformed")
        return CharacterHandle(provider=PROVIDER, external_id=username, mention_token="@" + username)

    # --- generation -----------------------------------------------------------------------------

    def _video_body(self, request: GenerationRequest) -> dict[str, str]:
        caps = self.capabilities
        if request.seconds not in caps.seconds:
            raise Rejected(
                PROVIDER,
                f"the relay makes {' or '.join(map(str, caps.seconds))} second videos, not {request.seconds}",
                code="bad_seconds",
                reason=RejectReason.INVALID,
            )
        if len(request.characters) > caps.max_characters:
            raise Rejected(
                PROVIDER,
                f"the relay takes at most {caps.max_characters} characters per video",
                code="too_many_characters",
                reason=RejectReason.INVALID,
            )
        for ref in request.characters:
            handle = ref.handle
            if handle is None or handle.provider != PROVIDER or not handle.mention_token.startswith("@"):
                raise Rejected(
                    PROVIDER,
                    f"character {ref.asset.name} is not registered on the relay",
                    code="character_not_registered",
                    reason=RejectReason.INVALID,
                )
        # new-api decodes `seconds` into a Go string (strconv.Atoi(req.Seconds)): a number is a 400.
        return {
            "model": self._model_for(request.quality),
            "prompt": render_prompt(request.prompt, request.characters),
            "seconds": str(request.seconds),
            "size": _SIZES[request.orientation],
        }

    async def submit(self, request: GenerationRequest) -> SubmitResult:
        body = self._video_body(request)
        answer = await self._call("POST", "/v1/videos", json_body=body, read=self._t.create_read, idempotent=False)
        data = self._json_object(answer, idempotent=False, what="video")
        external_id = data.get("id") or data.get("task_id")
        if not isinstance(external_id, str) or not external_id:
            raise self._classify_text(answer.status, data, idempotent=False) or Ambiguous(
                PROVIDER, "the relay accepted the request but returned no task id", code="malformed"
            )
        snapshot = self._snapshot(external_id, data, answer.headers)
        log.info("relay task %s submitted (job %s): %s", external_id, request.client_ref, snapshot.raw_status)
        return SubmitResult(external_id=external_id, snapshot=snapshot)

    async def status(self, external_ids: Sequence[str]) -> Mapping[str, JobSnapshot]:
        """One GET per id (no batch endpoint). Unknown ids (404) are left out; any other failure
        is raised, so that a missing id always means "the relay does not know it"."""
        gate = asyncio.Semaphore(self._t.status_concurrency)

        async def one(external_id: str) -> JobSnapshot | None:
            async with gate:
                path = f"/v1/videos/{quote(external_id, safe='')}"
                answer = await self._call("GET", path, read=self._t.status_read, idempotent=True, allow=(404,))
                if answer.status == 404:
                    return None
                data = self._json_object(answer, idempotent=True, what="video")
                return self._snapshot(external_id, data, answer.headers)

        ids = list(dict.fromkeys(external_ids))
        results = await asyncio.gather(*(one(i) for i in ids), return_exceptions=True)
        out: dict[str, JobSnapshot] = {}
        for external_id, result in zip(ids, results, strict=True):
            if isinstance(result, BaseException):
                raise result
            if result is not None:
                out[external_id] = result
        return out

    def _snapshot(self, external_id: str, raw: Mapping[str, Any], headers: httpx.Headers) -> JobSnapshot:
        data = raw
        envelope = raw.get("data")
        if "status" not in raw and isinstance(envelope, dict):
            data = envelope  # some new-api builds wrap the task: {"code": "success", "data": {...}}
        raw_status = str(data.get("status") or "")
        word = raw_status.lower()
        if word in _QUEUED:
            status = JobStatus.QUEUED
        elif word in _RUNNING:
            status = JobStatus.RUNNING
        elif word in _SUCCEEDED:
            status = JobStatus.SUCCEEDED
        elif word in _FAILED:
            status = JobStatus.FAILED
        else:
            # new-api #5045: treating an unknown word as terminal failed live jobs. Keep polling.
            log.warning("relay task %s has an unknown status %r; treating it as running", external_id, raw_status)
            status = JobStatus.RUNNING
        error = None
        if status is JobStatus.FAILED:
            error = self._job_error(data) or Unavailable(PROVIDER, "the relay failed to make the video", code=word)
        download_url = None
        if status is JobStatus.SUCCEEDED:
            download_url = self._video_url(data) or self._url(f"/v1/videos/{quote(external_id, safe='')}/content")
        return JobSnapshot(
            external_id=external_id,
            status=status,
            progress=_progress(data.get("progress"), status),
            error=error,
            poll_after=retry_after_seconds(headers),
            download_url=download_url,
            raw_status=raw_status,
        )

    def _video_url(self, data: Mapping[str, Any]) -> str | None:
        for key in ("video_url", "url", "result_url"):
            value = data.get(key)
            if isinstance(value, str) and urlsplit(value).scheme in ("http", "https"):
                return value
        return None

    def _job_error(self, data: Mapping[str, Any]) -> ProviderError | None:
        """The class of a failed job's error: moderation, likeness, quota, else transient."""
        err = data.get("error")
        if isinstance(err, str):
            err = {"message": err}
        if not isinstance(err, dict):
            reason = data.get("fail_reason") or data.get("message") or ""
            err = {"message": reason if isinstance(reason, str) else ""}
        wrapped = {"error": err}
        # status 200: only the words decide, never a status-code default
        classified = self._classify_text(200, wrapped, idempotent=True)
        if classified is not None and not isinstance(classified, Unavailable | RateLimited):
            return classified
        message, code, etype = error_fields(json.dumps(wrapped))
        if not message and not code and not etype:
            return None
        return Unavailable(PROVIDER, "the relay failed to make the video", code=self._code(code or etype))

    # --- download -------------------------------------------------------------------------------

    async def download(self, snapshot: JobSnapshot, dest: Path, max_bytes: int) -> DownloadResult:
        url = snapshot.download_url or self._url(f"/v1/videos/{quote(snapshot.external_id, safe='')}/content")
        # The key goes only to the relay itself, never to a CDN the relay points at.
        headers = self._auth() if self._same_origin(url) else {}
        try:
            async with self._client.stream(
                "GET",
                url,
                headers=headers,
                timeout=self._t.http(self._t.download_read),
                follow_redirects=True,
            ) as resp:
                if resp.status_code != 200:
                    body = await _read_capped(resp, 64 * 1024, truncate=True)  # an error page
                    if resp.status_code in (404, 410):
                        raise Rejected(
                            PROVIDER,
                            "the finished video is no longer on the relay (results expire after about a day)",
                            code=str(resp.status_code),
                            reason=RejectReason.INVALID,
                        )
                    raise self._classify(_Answer(resp.status_code, resp.headers, body), idempotent=True)
                content_type = resp.headers.get("content-type", "video/mp4").split(";")[0].strip()
                if "json" in content_type or "html" in content_type:
                    raise Unavailable(PROVIDER, "the relay sent an error page instead of the video", code="not_video")
                size, digest = await stream_to_file(resp, dest, max_bytes)
        except DownloadTooLarge:
            raise _too_big(max_bytes) from None
        except httpx.HTTPError as exc:
            raise transport_error(PROVIDER, exc, idempotent=True) from exc
        if size == 0:
            await asyncio.to_thread(_unlink, dest)
            raise Unavailable(PROVIDER, "the relay sent an empty video", code="empty")
        return DownloadResult(path=dest, size=size, content_type=content_type or "video/mp4", sha256=digest)

    async def reconcile(self, request: GenerationRequest) -> str | None:
        # Relays expose no list or search of one's tasks and take no client reference, so an
        # ambiguous submit cannot be matched to a task: keep the hold until the job's deadline.
        return None

    # --- HTTP -----------------------------------------------------------------------------------

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key.get_secret_value()}"}

    def _url(self, path: str) -> str:
        return self._base + path

    def _same_origin(self, url: str) -> bool:
        ours, theirs = urlsplit(self._base), urlsplit(url)
        return (ours.scheme, ours.netloc) == (theirs.scheme, theirs.netloc)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        read: float,
        idempotent: bool,
        json_body: Mapping[str, Any] | None = None,
        allow: tuple[int, ...] = (),
    ) -> _Answer:
        """Send one request and read its (bounded) answer; non-2xx becomes a ProviderError."""
        try:
            async with self._client.stream(
                method, self._url(path), json=json_body, headers=self._auth(), timeout=self._t.http(read)
            ) as resp:
                body = await _read_capped(resp, MAX_JSON_BYTES)
                answer = _Answer(resp.status_code, resp.headers, body)
        except httpx.HTTPError as exc:
            error = transport_error(PROVIDER, exc, idempotent=idempotent)
            log.warning("relay %s %s: %s", method, path, error)
            raise error from exc
        except _TooLarge:
            error = (Unavailable if idempotent else Ambiguous)(
                PROVIDER, "the relay sent an oversized answer", code="malformed"
            )
            log.warning("relay %s %s: %s", method, path, error)
            raise error from None
        if 200 <= answer.status < 300 or answer.status in allow:
            return answer
        error = self._classify(answer, idempotent=idempotent)
        message, code, _ = error_fields(answer.body)
        log.warning(
            "relay %s %s -> HTTP %s: %s (provider said %r, code %r)",
            method,
            path,
            answer.status,
            type(error).__name__,
            self._safe(message),
            self._code(code),
        )
        raise error

    def _json_object(self, answer: _Answer, *, idempotent: bool, what: str) -> dict[str, Any]:
        try:
            data = answer.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            cls = Unavailable if idempotent else Ambiguous
            raise cls(PROVIDER, f"the relay's {what} answer was not valid JSON", code="malformed")
        return data

    def _safe(self, text: str) -> str:
        return safe_message(text, [self._key.get_secret_value()])

    def _code(self, code: str | None) -> str | None:
        """A provider code fit for logs and messages: short, token-like and no secret, else dropped."""
        secret = self._key.get_secret_value()
        if code and re.fullmatch(r"[\w.\-]{1,64}", code) and redact(code, [secret]) == code:
            return code
        return None

    def _classify(self, answer: _Answer, *, idempotent: bool) -> ProviderError:
        try:
            data: Any = answer.json()
        except ValueError:
            # Plain-text errors (sora2api) still carry the words we match on; they are never shown.
            data = {"error": {"message": answer.body[:4000].decode("utf-8", "replace")}}
        specific = self._classify_text(answer.status, data, idempotent=idempotent, headers=answer.headers)
        if specific is not None:
            return specific
        message, code, etype = error_fields(answer.body)
        status = answer.status
        if status == 408 and not idempotent:
            # new-api never retries a 408 (an upstream processing timeout): the task may exist.
            return Ambiguous(PROVIDER, "the relay timed out; the request may have been accepted", code="408")
        if status == 404 and not idempotent:
            return Rejected(
                PROVIDER,
                "the relay does not offer this endpoint",
                code="404",
                reason=RejectReason.UNSUPPORTED,
            )
        return status_error(
            PROVIDER,
            status,
            answer.headers,
            message=message,
            code=self._code(code),
            etype=etype,
            idempotent=idempotent,
            secrets=[self._key.get_secret_value()],
        )

    def _classify_text(
        self,
        status: int,
        data: Any,
        *,
        idempotent: bool,
        headers: httpx.Headers | None = None,
    ) -> ProviderError | None:
        """Relay-specific errors recognised by their words, whatever the HTTP status."""
        if not isinstance(data, dict):
            return None
        message, code, etype = error_fields(json.dumps(data).encode())
        text = f"{message} {code or ''} {etype or ''}".lower()
        if not text.strip():
            return None
        code = self._code(code)
        retry_after = retry_after_seconds(headers) if headers is not None else None
        if _has(text, _HUMAN):
            return Rejected(
                PROVIDER,
                "the relay refuses clips that may show a real person; use a clip without a realistic human",
                code=code or "realistic_human",
                reason=RejectReason.UNSUPPORTED,
            )
        if _has(text, _MODERATION):
            return Rejected(
                PROVIDER,
                "the relay's content filter blocked this video",
                code=code or "content_policy_violation",
                reason=RejectReason.MODERATION,
            )
        if _has(text, _MODEL_GONE) or ("model" in text and "does not exist" in text):
            return Rejected(
                PROVIDER,
                "the relay no longer serves this model (Sora relays shut down in 2026)",
                code=code or "model_not_found",
                reason=RejectReason.UNSUPPORTED,
            )
        if _has(text, _QUOTA) or looks_like_quota(message, code, etype):
            return QuotaExhausted(PROVIDER, "the relay account has no balance or tokens left", code=code)
        if _has(text, _AUTH) or status == 401:
            return AuthFailed(PROVIDER, f"the relay refused the API key (HTTP {status})", code=code)
        if _has(text, _OVERLOAD):
            return Unavailable(
                PROVIDER, "the relay is under heavy load; try again later", code=code, retry_after=retry_after
            )
        if status == 429:
            return RateLimited(PROVIDER, "rate limited by the relay", code=code, retry_after=retry_after)
        if status in (400, 422):
            shown = self._safe(message)
            return Rejected(
                PROVIDER,
                f"the relay refused the request: {shown}" if shown else "the relay refused the request",
                code=code,
                reason=RejectReason.INVALID,
            )
        return None


# --- helpers ------------------------------------------------------------------------------------


class _TooLarge(Exception):
    pass


async def _read_capped(resp: httpx.Response, limit: int, *, truncate: bool = False) -> bytes:
    """The body, at most `limit` bytes: past it, raise _TooLarge (or just stop, with `truncate`)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > limit:
            if truncate:
                break
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _too_big(max_bytes: int) -> Rejected:
    return Rejected(
        PROVIDER,
        f"the video is larger than the {max_bytes} byte limit",
        code="too_large",
        reason=RejectReason.INVALID,
    )


def _progress(value: object, status: JobStatus) -> int | None:
    if status is JobStatus.SUCCEEDED:
        return 100
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    if isinstance(value, float) and 0 < number < 1:
        number *= 100  # a 0-1 fraction (the app's progress_pct)
    return max(0, min(100, int(number)))


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


__all__ = ["RelayProvider", "RelayTimeouts", "character_window", "render_prompt"]
