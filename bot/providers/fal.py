"""fal.ai adapter: one generic queue client, many reference-to-video models.

Every fal model is driven the same way: `POST {queue}/{endpoint id}` with the model input as the
JSON body returns a request id plus the `status_url`, `response_url` and `cancel_url` of the
request. Those URLs name only `{owner}/{app}` (an endpoint id such as
`fal-ai/kling-video/o3/pro/reference-to-video` is tracked under `fal-ai/kling-video`), so they are
kept exactly as fal returned them, inside the job's external id, and never rebuilt. A request
waits `IN_QUEUE` (fal queues whatever exceeds the account's concurrency), then runs
`IN_PROGRESS`, then is `COMPLETED`; a completed request that carries an `error` failed, and its
result (`GET response_url`) is the error body. Model inputs are validated when the model runs, so
a malformed input also arrives at the result, as HTTP 422 with a `detail` list.

What differs per model (the field holding the references, the prompt token, durations, prices)
lives in bot/providers/fal_models.py. A character is uploaded once to fal's CDN (frontal frame,
further frames and a short window of its clip) and the URLs are its handle, for every model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from bot.media import ClipRejected, trim_clip
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
    StatusIncomplete,
    SubmitResult,
    Unavailable,
    VideoProvider,
)
from bot.providers.downloads import download_public
from bot.providers.fal_models import DEFAULT_UNIT, FalModel, RefKind
from bot.providers.fal_models import model as lookup_model
from bot.providers.http_errors import error_fields, retry_after_seconds, safe_message, transport_error
from bot.providers.pricing import PriceBook

log = logging.getLogger(__name__)

Phase = Literal["submit", "status", "result", "cancel", "upload"]

PROVIDER = "fal"
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=30.0, write=60.0, pool=10.0)
# fal's FAQ guarantees uploaded media for at least 7 days. A day less leaves room for a job that
# waits in fal's queue (the model fetches the URLs only when it starts) on top of the one-hour
# margin the handle cache keeps.
MEDIA_RETENTION_SECONDS = 6 * 24 * 3600
# The clip window sent as a reference video. Every model in the table accepts it: Wan needs each
# video to be 2-30 s, Seedance all videos together to be 2-15 s (three characters, a little under
# 5 s each, since containers round durations up). A model family that wants other lengths
# (Kling video elements, 3-8 s) would need a second trim.
CLIP_SECONDS = 4.5
# fal suggests polling a request every 5-10 s; reference-to-video renders take minutes
POLL_FLOOR = 10.0
CLIP_MIN_FPS = 16  # Wan refuses reference videos under 16 fps; phones film at 24-60, old clips at 12-15
CLIP_MIN_SECONDS = 2.0
CLIP_MAX_SIDES = (1280, 720)  # tried in turn until the clip fits CLIP_MAX_BYTES
CLIP_MAX_BYTES = 30 * 1024 * 1024  # Wan's per-video limit, the smallest in the table
EXTRA_FRAMES = 3  # reference frames besides the frontal one (a Kling element takes 1-3)
TOKEN_MARGIN = 60.0  # seconds: a CDN token this close to its expiry is fetched again
RATE_LIMIT_FLOOR = 1.0
MODERATION_TYPE = "content_policy_violation"
_QUOTA_PHRASES = ("exhausted balance", "user is locked", "insufficient balance", "insufficient funds", "top up")
_FAILED_WORDS = frozenset({"FAILED", "ERROR", "CANCELED", "CANCELLED"})
_STRAY = re.compile(r"(?<!\w)@(\w+)|<(IMAGE_REF_\d+)>")


# --- the queue, independent of any model ----------------------------------------------------------


@dataclass(frozen=True)
class QueueRef:
    """The URLs fal returned for one request: all the tracking loop needs, across restarts."""

    request_id: str
    status_url: str
    response_url: str
    cancel_url: str

    def encode(self, queue_url: str) -> str:
        """`request_id status response cancel`, the URLs relative to the queue host."""
        parts = [_relative(u, queue_url) for u in (self.status_url, self.response_url, self.cancel_url)]
        return " ".join([self.request_id, *parts])

    @classmethod
    def decode(cls, external_id: str, queue_url: str) -> QueueRef | None:
        parts = external_id.split(" ")
        if len(parts) != 4 or not all(parts):
            return None
        base = queue_url.rstrip("/") + "/"
        status, response, cancel = (base + p for p in parts[1:])
        return cls(parts[0], status, response, cancel)


@dataclass(frozen=True)
class QueueStatus:
    word: str  # IN_QUEUE, IN_PROGRESS, COMPLETED (or an unknown word, kept for logs)
    queue_position: int | None = None
    error: str | None = None  # set on a COMPLETED request that failed
    error_type: str | None = None


class FalQueue:
    """fal's queue protocol: submit, status, result, cancel. Maps every failure onto base.py's
    errors; the key goes only to the queue host."""

    def __init__(
        self, client: httpx.AsyncClient, *, api_key: SecretStr, queue_url: str, timeout: httpx.Timeout
    ) -> None:
        self._client = client
        self._api_key = api_key
        self.queue_url = queue_url.rstrip("/")
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"FalQueue(queue_url={self.queue_url!r})"

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self._api_key.get_secret_value(),)

    async def submit(
        self, endpoint_id: str, arguments: Mapping[str, Any], *, webhook_url: str | None = None
    ) -> tuple[QueueRef, QueueStatus]:
        """Queue one request. Raises NotSent/Rejected subclasses, or Ambiguous when fal may have
        queued it (never retried here: a second POST would be a second paid request)."""
        params = {"fal_webhook": webhook_url} if webhook_url else None
        response = await self.send("POST", f"{self.queue_url}/{endpoint_id}", "submit", json=arguments, params=params)
        if not response.is_success:
            raise self.error(response, "submit", endpoint_id=endpoint_id)
        data = _json_object(response) or {}
        urls = [_text(data.get(k)) for k in ("status_url", "response_url", "cancel_url")]
        request_id = _text(data.get("request_id"))
        if not request_id or not all(urls):
            raise Ambiguous(PROVIDER, "fal accepted the request but its answer cannot be read")
        if not all(_same_origin(u, self.queue_url) for u in urls):
            # our key goes with every status read: never to a host we were not configured with
            log.warning("fal request %s answered with tracking URLs on another host", request_id)
            raise Ambiguous(PROVIDER, "fal answered with tracking URLs on an unexpected host")
        ref = QueueRef(request_id, *urls)
        return ref, QueueStatus(_text(data.get("status")) or "IN_QUEUE", _int(data.get("queue_position")))

    async def status(self, ref: QueueRef) -> QueueStatus | None:
        """The request's state; None when fal does not know it."""
        response = await self.send("GET", ref.status_url, "status")
        if response.status_code == 404:
            return None
        if not response.is_success:
            raise self.error(response, "status")
        data = _json_object(response)
        word = _text(data.get("status")) if data is not None else ""
        if not word:
            raise Unavailable(PROVIDER, "fal sent an unreadable status")
        assert data is not None
        return QueueStatus(
            word,
            _int(data.get("queue_position")),
            _text(data.get("error")) or None,
            _text(data.get("error_type")) or None,
        )

    async def result(self, ref: QueueRef) -> httpx.Response:
        """The raw result answer (the model output on 2xx, the error body otherwise)."""
        return await self.send("GET", ref.response_url, "result")

    async def cancel(self, ref: QueueRef) -> str:
        """Ask fal to drop the request; returns fal's word (CANCELLATION_REQUESTED, ALREADY_COMPLETED...)."""
        response = await self.send("PUT", ref.cancel_url, "cancel")
        data = _json_object(response)
        word = _text(data.get("status")) if data is not None else ""
        if not response.is_success and response.status_code not in (400, 404):
            raise self.error(response, "cancel")
        return word or f"HTTP {response.status_code}"

    async def send(self, method: str, url: str, phase: Phase, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Key {self._api_key.get_secret_value()}"}
        try:
            return await self._client.request(method, url, headers=headers, timeout=self._timeout, **kwargs)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise _transport(exc, phase) from None

    def error(self, response: httpx.Response, phase: Phase, *, endpoint_id: str = "") -> ProviderError:
        return map_error(response.status_code, response.headers, response.content, phase, self.secrets, endpoint_id)


def map_error(
    http: int,
    headers: httpx.Headers,
    body: bytes,
    phase: Phase,
    secrets: Sequence[str] = (),
    endpoint_id: str = "",
) -> ProviderError:
    """One fal error answer as a ProviderError whose message is safe to show a member."""
    message, types, error_type = _fal_detail(body)
    error_type = error_type or headers.get("x-fal-error-type")
    shown = safe_message(message, secrets, limit=200)
    code = error_type or (types[0] if types else None) or f"http-{http}"
    retryable = _flag(headers.get("x-fal-retryable", headers.get("x-fal-needs-retry")))
    log.info("fal %s error: http=%s type=%s retryable=%s message=%r", phase, http, code, retryable, shown)
    if MODERATION_TYPE in types or error_type == MODERATION_TYPE:
        text = "fal refused the content" + (f": {shown}" if shown else "")
        return Rejected(PROVIDER, text, code=MODERATION_TYPE, reason=RejectReason.MODERATION)
    lowered = message.lower()
    if http == 402 or any(p in lowered for p in _QUOTA_PHRASES):
        return QuotaExhausted(PROVIDER, "the fal account has no balance left", code=code)
    if http in (401, 403):
        # never echo fal's text here: an auth error may quote the key back
        return AuthFailed(PROVIDER, f"fal refused the API key (HTTP {http})", code=f"http-{http}")
    retry_after = retry_after_seconds(headers)
    if http == 429:
        # over the account's concurrency or request rate: the job waits in our queue
        wait = max(retry_after or 0.0, RATE_LIMIT_FLOOR)
        return RateLimited(PROVIDER, "fal is at this account's limit", code=code, retry_after=wait, account_busy=True)
    if http == 404 and phase == "submit":
        return Rejected(
            PROVIDER, f"fal has no model {endpoint_id or '(unknown)'}", code=code, reason=RejectReason.UNSUPPORTED
        )
    if 400 <= http < 500 and http not in (408, 409):
        if retryable and phase == "result":
            return Unavailable(PROVIDER, "fal could not run the request" + (f": {shown}" if shown else ""), code=code)
        return Rejected(PROVIDER, shown or f"fal refused the request (HTTP {http})", code=code)
    if phase == "submit" and http not in (408, 409, 503):
        # a 500/502/504 may come after fal queued the request: never send it again
        return Ambiguous(PROVIDER, f"fal failed (HTTP {http}); the request may have been queued", code=code)
    if phase == "result":
        text = "fal could not make the video" + (f": {shown}" if shown else "")
        return Unavailable(PROVIDER, text, code=code, retry_after=retry_after)
    return Unavailable(PROVIDER, f"fal is unavailable (HTTP {http})", code=code, retry_after=retry_after)


def _fal_detail(body: bytes) -> tuple[str, list[str], str | None]:
    """(message, detail types, error_type) from fal's error bodies; never raises.

    `{"detail": [{"loc", "msg", "type", ...}]}` (validation and moderation), the legacy
    `{"detail": "text"}`, and `{"error": ..., "error_type": ...}`."""
    try:
        data = json.loads(body)
    except (ValueError, TypeError):
        return "", [], None
    if not isinstance(data, dict):
        return "", [], None
    error_type = _text(data.get("error_type")) or None
    detail = data.get("detail")
    if isinstance(detail, str):
        return detail, [], error_type
    if isinstance(detail, list):
        parts: list[str] = []
        types: list[str] = []
        for item in detail:
            if not isinstance(item, dict):
                continue
            types.append(_text(item.get("type")))
            msg = _text(item.get("msg"))
            loc = item.get("loc")
            where = ".".join(str(p) for p in loc if p != "body") if isinstance(loc, list) else ""
            if msg:
                parts.append(f"{where}: {msg}" if where else msg)
        return "; ".join(parts[:3]), [t for t in types if t], error_type
    message, code, etype = error_fields(body)
    return message, [t for t in (code, etype) if t], error_type


# --- the adapter ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CharacterMedia:
    """The fal CDN URLs of one character (its handle's external id, as compact JSON)."""

    frontal: str
    frames: tuple[str, ...]
    clip: str

    def encode(self) -> str:
        return json.dumps(
            {"frontal": self.frontal, "frames": list(self.frames), "clip": self.clip}, separators=(",", ":")
        )

    @classmethod
    def decode(cls, external_id: str) -> CharacterMedia | None:
        try:
            data = json.loads(external_id)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        frontal, clip, frames = data.get("frontal"), data.get("clip"), data.get("frames")
        if not isinstance(frontal, str) or not isinstance(clip, str) or not isinstance(frames, list):
            return None
        return cls(frontal, tuple(f for f in frames if isinstance(f, str)), clip)


class FalProvider(VideoProvider):
    """Drives one fal model (and optionally a second one for PRO quality) through fal's queue.

    reconcile(): fal has no list of requests and takes no idempotency key, so a submit that may
    or may not have been queued (Ambiguous) cannot be found again. It returns None and
    `authoritative_reconcile` is False: such a job keeps its money held and is never resubmitted.
    """

    name = PROVIDER

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_key: SecretStr,
        queue_url: str,
        rest_url: str,
        cdn_url: str,
        prices: PriceBook,
        model: str = "wan/v2.6/reference-to-video",
        pro_model: str | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._model = lookup_model(model)
        self._pro = lookup_model(pro_model) if pro_model else None
        self._client = client
        self._api_key = api_key
        self._queue = FalQueue(client, api_key=api_key, queue_url=queue_url, timeout=timeout)
        self._rest_url = rest_url.rstrip("/")
        self._cdn_url = cdn_url.rstrip("/")
        self._prices = prices
        self._timeout = timeout
        self._clock = clock
        self._cdn_token: tuple[str, float] | None = None  # (Authorization value, expires at)
        self._token_lock = asyncio.Lock()
        used = [self._model, *([self._pro] if self._pro else [])]
        self.capabilities = Capabilities(
            seconds=self._model.durations,  # a PRO request is fitted again to the pro model's own
            orientations=frozenset(o for o in Orientation if all(_ratio(o) in m.aspect_ratios for m in used)),
            qualities=frozenset({Quality.STANDARD, *([Quality.PRO] if self._pro or self._model.pro_unit else [])}),
            max_characters=min(m.max_refs for m in used),
            min_characters=max(m.min_refs for m in used),
            poll_floor=POLL_FLOOR,
            needs_handle=True,
            mention_style=MentionStyle.REFERENCE_INDEX,
            batch_status=False,
            paid=True,
            authoritative_reconcile=False,
            callbacks=True,  # ?fal_webhook=, signed with Ed25519 (bot/services/webhooks.py)
        )

    @property
    def model(self) -> str:
        return self._model.endpoint_id

    def __repr__(self) -> str:
        pro = self._pro.endpoint_id if self._pro else None
        return f"FalProvider(queue_url={self._queue.queue_url!r}, model={self._model.endpoint_id!r}, pro_model={pro!r})"

    # --- money ------------------------------------------------------------------------------------

    def _plan(self, quality: Quality) -> tuple[FalModel, str]:
        """The model and price unit (resolution) that make a video of this quality."""
        if quality is Quality.PRO:
            entry = self._pro or self._model
            return entry, entry.pro_unit or entry.standard_unit
        return self._model, self._model.standard_unit

    def estimate(self, request: GenerationRequest) -> int:
        entry, unit = self._plan(request.quality)
        seconds = entry.fit_seconds(request.seconds)
        return self._prices.per_second(self.name, entry.endpoint_id, unit, seconds, default=entry.prices[unit])

    # --- characters -------------------------------------------------------------------------------

    async def register_character(self, asset: CharacterAsset) -> CharacterHandle:
        """Upload the frontal frame, up to EXTRA_FRAMES more and a CLIP_SECONDS window of the clip
        to fal's CDN; the URLs serve every model of the table until MEDIA_RETENTION_SECONDS."""
        if not asset.frame_paths:
            raise Rejected(self.name, "fal needs at least one reference frame", reason=RejectReason.UNSUPPORTED)
        if asset.clip_duration < CLIP_MIN_SECONDS:
            raise Rejected(
                self.name,
                f"fal needs a clip of at least {CLIP_MIN_SECONDS:g} s",
                reason=RejectReason.UNSUPPORTED,
            )
        expires_at = self._clock() + MEDIA_RETENTION_SECONDS  # counted from before the uploads
        prefix = f"character-{asset.character_id}"
        frames = asset.frame_paths[: 1 + EXTRA_FRAMES]
        urls = []
        for index, path in enumerate(frames):
            data = await self._read(path)
            content_type = mimetypes.guess_type(path.name)[0] or "image/jpeg"
            urls.append(await self._upload(data, content_type, f"{prefix}-frame{index}{path.suffix or '.jpg'}"))
        clip = await self._clip_window(asset)
        clip_url = await self._upload(clip, "video/mp4", f"{prefix}-clip.mp4")
        media = CharacterMedia(urls[0], tuple(urls[1:]), clip_url)
        log.info("fal: uploaded character %s (%d frames and its clip)", asset.character_id, len(urls))
        return CharacterHandle(provider=self.name, external_id=media.encode(), mention_token="", expires_at=expires_at)

    async def _read(self, path: Path) -> bytes:
        try:
            return await asyncio.to_thread(path.read_bytes)
        except OSError:
            raise Rejected(self.name, "a reference frame of this character cannot be read") from None

    async def _clip_window(self, asset: CharacterAsset) -> bytes:
        length = min(CLIP_SECONDS, asset.clip_duration)
        start = max(0.0, min(asset.best_window_start, asset.clip_duration - length))
        tmpdir = await asyncio.to_thread(tempfile.mkdtemp, prefix="castbot-fal-")
        try:
            for max_side in CLIP_MAX_SIDES:
                dest = Path(tmpdir) / f"clip-{max_side}.mp4"
                await asyncio.to_thread(
                    trim_clip, asset.clip_path, dest, start, length, max_side=max_side, min_fps=CLIP_MIN_FPS
                )
                data = await asyncio.to_thread(dest.read_bytes)
                if len(data) <= CLIP_MAX_BYTES:
                    return data
            raise Rejected(self.name, "the character clip is too large for fal", reason=RejectReason.UNSUPPORTED)
        except ClipRejected as exc:
            raise Rejected(self.name, f"the character clip cannot be used: {exc.detail}", code=exc.problem) from exc
        except ProviderError:
            raise
        except Exception as exc:
            log.warning("fal: trimming %s failed", asset.clip_path.name, exc_info=True)
            raise Rejected(self.name, "could not prepare the character clip", code=type(exc).__name__) from exc
        finally:
            await asyncio.to_thread(shutil.rmtree, tmpdir, True)

    async def _token(self, *, fresh: bool = False) -> str:
        """The CDN upload Authorization value, from fal's storage token endpoint (keyed)."""
        async with self._token_lock:
            # fal's expires_at is wall-clock time, whatever clock the handles are dated with
            if not fresh and self._cdn_token is not None and self._cdn_token[1] - TOKEN_MARGIN > time.time():
                return self._cdn_token[0]
            url = f"{self._rest_url}/storage/auth/token"
            response = await self._queue.send("POST", url, "upload", params={"storage_type": "fal-cdn-v3"}, json={})
            if not response.is_success:
                raise self._queue.error(response, "upload")
            data = _json_object(response) or {}
            token, token_type = _text(data.get("token")), _text(data.get("token_type")) or "Bearer"
            if not token:
                raise Unavailable(self.name, "fal sent an unreadable storage token")
            value = f"{token_type} {token}"
            self._cdn_token = (value, _timestamp(data.get("expires_at")) or 0.0)
            return value

    async def _upload(self, data: bytes, content_type: str, file_name: str) -> str:
        """One file to fal's CDN with the storage token (never our key); returns its URL."""
        for attempt in range(2):
            headers = {
                "Authorization": await self._token(fresh=attempt > 0),
                "Content-Type": content_type,
                "X-Fal-File-Name": file_name,
            }
            try:
                response = await self._client.post(
                    f"{self._cdn_url}/files/upload", content=data, headers=headers, timeout=self._timeout
                )
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise _transport(exc, "upload") from None
            if response.status_code in (401, 403) and attempt == 0:
                continue  # the token may have expired early: fetch a new one once
            if not response.is_success:
                if response.status_code in (401, 403):
                    raise Unavailable(self.name, f"fal's CDN refused the upload (HTTP {response.status_code})")
                raise self._queue.error(response, "upload")
            url = _text((_json_object(response) or {}).get("access_url"))
            if not url.startswith(("https://", "http://")):
                raise Unavailable(self.name, "fal's CDN answered the upload unreadably")
            return url
        raise AssertionError("unreachable")

    # --- generation -------------------------------------------------------------------------------

    def _media(self, ref: CharacterRef) -> CharacterMedia:
        handle = ref.handle
        media = CharacterMedia.decode(handle.external_id) if handle and handle.provider == self.name else None
        if media is None:
            raise Rejected(self.name, f"character {ref.asset.name} is not uploaded to fal")
        if handle is not None and handle.expires_at is not None and handle.expires_at < self._clock():
            log.warning("fal: the media of character %s may have expired", ref.asset.character_id)
        return media

    def _body(self, request: GenerationRequest) -> tuple[FalModel, dict[str, Any]]:
        """The model and its input for `request`; refuses locally what the model would refuse."""
        entry, unit = self._plan(request.quality)
        count = len(request.characters)
        if count > entry.max_refs:
            raise Rejected(self.name, f"{entry.label} takes at most {entry.max_refs} characters per video")
        if count < entry.min_refs:
            raise Rejected(
                self.name, f"{entry.label} needs at least {entry.min_refs} character", reason=RejectReason.UNSUPPORTED
            )
        ratio = _ratio(request.orientation)
        if ratio not in entry.aspect_ratios:
            raise Rejected(self.name, f"{entry.label} cannot make {ratio} videos", reason=RejectReason.UNSUPPORTED)
        media = [self._media(ref) for ref in request.characters]
        refs = [_reference(entry.ref_kind, m) for m in media]
        tokens = {ref.key: entry.token_for(i) or ref.asset.name for i, ref in enumerate(request.characters)}
        prompt = replace_mentions(request.prompt, tokens)
        if entry.mention is not None:
            prompt = _neutralise_strays(prompt, set(tokens.values()))
        elif request.characters:
            # no token on this model: say in words which reference shows whom
            kind = "video" if entry.ref_kind is RefKind.VIDEO else "image"
            who = " ".join(f"Reference {kind} {i} shows {r.asset.name}." for i, r in enumerate(request.characters, 1))
            prompt = f"{prompt.rstrip()}\n\n{who}"
        prompt = prompt.strip()
        if not prompt:
            raise Rejected(self.name, "the prompt is empty")
        if len(prompt) > entry.max_prompt_chars:
            raise Rejected(self.name, f"the prompt is longer than {entry.max_prompt_chars} characters")
        body: dict[str, Any] = {"prompt": prompt}
        if refs:
            body[entry.refs_field] = refs
        body["duration"] = entry.duration_style.wire(entry.fit_seconds(request.seconds))
        body["aspect_ratio"] = ratio
        if entry.resolution_field and unit != DEFAULT_UNIT:
            body[entry.resolution_field] = unit
        if entry.audio_field:
            body[entry.audio_field] = False
        body.update(entry.fixed)
        return entry, body

    async def submit(self, request: GenerationRequest) -> SubmitResult:
        entry, body = self._body(request)
        ref, state = await self._queue.submit(entry.endpoint_id, body, webhook_url=request.callback_url)
        external_id = ref.encode(self._queue.queue_url)
        log.info("fal: queued request %s on %s", ref.request_id, entry.endpoint_id)
        snapshot = JobSnapshot(
            external_id=external_id,
            status=JobStatus.RUNNING if state.word == "IN_PROGRESS" else JobStatus.QUEUED,
            raw_status=state.word,
        )
        return SubmitResult(external_id=external_id, snapshot=snapshot)

    async def status(self, external_ids: Sequence[str]) -> Mapping[str, JobSnapshot]:
        answered: dict[str, JobSnapshot] = {}
        failure: ProviderError | None = None
        for external_id in dict.fromkeys(i for i in external_ids if i):
            ref = QueueRef.decode(external_id, self._queue.queue_url)
            if ref is None:
                log.warning("fal: %r is not one of our request ids", external_id[:80])
                continue
            try:
                snapshot = await self._snapshot(external_id, ref)
            except ProviderError as exc:
                failure = failure or exc
                continue
            if snapshot is not None:
                answered[external_id] = snapshot
        if failure is not None:
            if not answered:
                raise failure
            raise StatusIncomplete(
                self.name, failure.message, code=failure.code, retry_after=failure.retry_after, answered=answered
            )
        return answered

    async def _snapshot(self, external_id: str, ref: QueueRef) -> JobSnapshot | None:
        state = await self._queue.status(ref)
        if state is None:
            return None
        if state.word == "IN_QUEUE":
            return JobSnapshot(external_id, JobStatus.QUEUED, raw_status=state.word)
        if state.word == "IN_PROGRESS":
            return JobSnapshot(external_id, JobStatus.RUNNING, raw_status=state.word)
        if state.word != "COMPLETED" and state.word not in _FAILED_WORDS:
            # never take an unknown word for an end: the tracking deadline still applies
            log.warning("fal request %s has unknown status %r; treating it as running", ref.request_id, state.word)
            return JobSnapshot(external_id, JobStatus.RUNNING, raw_status=state.word)
        failed = state.error is not None or state.word in _FAILED_WORDS
        # the video URL (or the failure) is only in the result
        response = await self._queue.result(ref)
        if response.is_success:
            url = _video_url(_json_object(response))
            if url is not None:
                return JobSnapshot(external_id, JobStatus.SUCCEEDED, download_url=url, raw_status=state.word)
            log.warning("fal request %s completed without a video", ref.request_id)
            error: ProviderError = Unavailable(self.name, "fal returned no video")
        elif response.status_code >= 500 and not failed:
            raise Unavailable(self.name, f"fal could not return the result (HTTP {response.status_code})")
        elif response.status_code == 404:
            error = Unavailable(self.name, "the result is no longer available on fal")
        else:
            error = self._queue.error(response, "result")
        if state.error_type == MODERATION_TYPE and not _is_moderation(error):
            error = Rejected(self.name, "fal refused the content", code=MODERATION_TYPE, reason=RejectReason.MODERATION)
        raw = state.word if state.error is None else f"{state.word}: {state.error_type or 'error'}"
        return JobSnapshot(external_id, JobStatus.FAILED, error=error, raw_status=raw)

    async def cancel(self, external_id: str) -> str:
        """Ask fal to drop a queued request (a running one may finish anyway)."""
        ref = QueueRef.decode(external_id, self._queue.queue_url)
        if ref is None:
            raise Rejected(self.name, "not a fal request id")
        return await self._queue.cancel(ref)

    async def reconcile(self, request: GenerationRequest) -> str | None:
        """Always None: fal can neither list requests nor look one up by our reference."""
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
            label="fal",
            http_timeout=self._timeout,
        )


# --- helpers --------------------------------------------------------------------------------------


def _transport(exc: Exception, phase: Phase) -> ProviderError:
    if isinstance(exc, httpx.HTTPError):
        return transport_error(PROVIDER, exc, idempotent=phase != "submit")
    return Unavailable(PROVIDER, f"could not reach fal ({type(exc).__name__})")


def _reference(kind: RefKind, media: CharacterMedia) -> Any:
    if kind is RefKind.ELEMENT:
        return {"frontal_image_url": media.frontal, "reference_image_urls": list(media.frames[:3]) or [media.frontal]}
    if kind is RefKind.VIDEO:
        return media.clip
    return media.frontal


def _ratio(orientation: Orientation) -> str:
    return "9:16" if orientation is Orientation.PORTRAIT else "16:9"


def _neutralise_strays(prompt: str, ours: set[str]) -> str:
    """A model reads `@Image3` or `<IMAGE_REF_2>` as a reference: drop the markers of any that is not ours."""

    def keep_or_strip(m: re.Match[str]) -> str:
        return m.group(0) if m.group(0) in ours else (m.group(1) or m.group(2))

    return _STRAY.sub(keep_or_strip, prompt)


def _video_url(data: Mapping[str, Any] | None) -> str | None:
    video = (data or {}).get("video")
    url = video.get("url") if isinstance(video, dict) else None
    return url if isinstance(url, str) and url.startswith(("https://", "http://")) else None


def _is_moderation(error: ProviderError) -> bool:
    return isinstance(error, Rejected) and error.reason is RejectReason.MODERATION


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes")


def _timestamp(value: Any) -> float | None:
    """Unix time of fal's ISO-8601 `expires_at` (or a number)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _same_origin(url: str, base: str) -> bool:
    return _origin(url) == _origin(base) and urlsplit(url).path.startswith("/")


def _relative(url: str, base: str) -> str:
    prefix = base.rstrip("/") + "/"
    if not url.startswith(prefix):
        raise Ambiguous(PROVIDER, "fal answered with tracking URLs outside its queue")
    return url[len(prefix) :]


__all__ = ["MEDIA_RETENTION_SECONDS", "CharacterMedia", "FalProvider", "FalQueue", "QueueRef", "map_error"]
