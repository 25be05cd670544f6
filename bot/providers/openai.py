"""Adapter for the OpenAI Videos API wire shape (`/v1/videos`), also spoken by relays and Azure.

Characters are referenced by id in `characters:[{id}]` *and* by their registered name written
verbatim in the prompt (there is no @mention on this API). Wire facts: README.md, "Providers".
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from bot.media import ClipRejected, DownloadTooLarge, stream_to_file, trim_clip
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
    StatusIncomplete,
    SubmitResult,
    Unavailable,
    VideoProvider,
)
from bot.providers.http_errors import (
    error_fields,
    header_ms,
    retry_after_seconds,
    safe_message,
    status_error,
    transport_error,
)
from bot.providers.pricing import PriceBook

log = logging.getLogger(__name__)

PROVIDER = "openai"
SECONDS = (4, 8, 12, 16, 20)
MAX_CHARACTERS = 2
BASE_SIZES = frozenset({"720x1280", "1280x720"})
MODEL_SIZES: Mapping[str, frozenset[str]] = {
    "sora-2": BASE_SIZES,
    "sora-2-pro": BASE_SIZES | {"1024x1792", "1792x1024", "1080x1920", "1920x1080"},
}
ORIENTATION_SIZE = {Orientation.PORTRAIT: "720x1280", Orientation.LANDSCAPE: "1280x720"}
CHARACTER_CLIP_MIN, CHARACTER_CLIP_MAX = 2.0, 4.0
CHARACTER_NAME_MAX = 80
CHARACTER_MAX_SIDE = 1920  # 1080p: larger uploads are only downscaled by the API
POLL_AFTER_HEADER = "openai-poll-after-ms"

DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=10.0)
DOWNLOAD_TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=30.0, pool=10.0)
STATUS_CONCURRENCY = 4

# Reconciliation: how far back to look and how far create time may drift from our send time.
RECONCILE_PAGE, RECONCILE_PAGES = 50, 4
RECONCILE_LOOKBACK = 24 * 3600.0
RECONCILE_SKEW = 300.0
SENT_MEMORY = 1000

# Status of many jobs at once is read from `GET /videos` (newest first), one page covering up to
# 100 jobs, instead of one `GET /videos/{id}` each; ids a walk does not reach are looked up singly.
LIST_MIN = 2  # ids in one status() call before the list is worth a page
LIST_PAGE_MIN, LIST_PAGE_MAX = 10, 100  # the API's page limit is 1-100
LIST_MAX_PAGES = 50
LIST_FRESH = 0.5  # seconds after its last page a walk still answers status calls (one loop pass)
LIST_RETRY = 600.0  # seconds before trying walks again after they stopped paying

_STATUS = {
    "queued": JobStatus.QUEUED,
    "in_progress": JobStatus.RUNNING,
    "completed": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "canceled": JobStatus.FAILED,
    "cancelled": JobStatus.FAILED,
    "expired": JobStatus.FAILED,
}
_VIDEO_FIELDS = frozenset(
    {
        "id", "object", "model", "status", "progress", "prompt", "created_at", "completed_at",
        "expires_at", "seconds", "size", "remixed_from_video_id", "error",
    }
)  # fmt: skip
_TRANSIENT_JOB_CODES = frozenset(
    {"internal_error", "server_error", "timeout", "capacity", "rate_limit_exceeded", "service_unavailable"}
)


def _is_moderation(message: str, code: str | None) -> bool:
    return code == "moderation_blocked" or "moderation system" in message.lower()


def _is_model_missing(message: str, code: str | None) -> bool:
    lowered = message.lower()
    return (
        code == "model_not_found"
        or "model not found" in lowered
        or ("model" in lowered and "does not exist" in lowered)
    )


class OpenAIProvider(VideoProvider):
    name = PROVIDER
    capabilities = Capabilities(
        seconds=SECONDS,
        orientations=frozenset(Orientation),
        qualities=frozenset(Quality),
        max_characters=MAX_CHARACTERS,
        needs_handle=True,
        mention_style=MentionStyle.NAME_VERBATIM,
        batch_status=False,
        paid=True,
        authoritative_reconcile=True,
        status_by_list=True,
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
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        download_timeout: httpx.Timeout = DOWNLOAD_TIMEOUT,
        status_concurrency: int = STATUS_CONCURRENCY,
    ) -> None:
        self._client = client
        self._api_key = api_key
        self._base = base_url.rstrip("/")
        self._prices = prices
        self._model = model
        self._pro_model = pro_model
        self._timeout = timeout
        self._download_timeout = download_timeout
        self._status_gate = asyncio.Semaphore(status_concurrency)
        # wall time of the last create attempt per request, to narrow reconciliation
        self._sent_at: dict[str, float] = {}
        self._unknown_fields_seen: set[str] = set()
        self._walk: _ListWalk | None = None
        self._walk_lock = asyncio.Lock()
        # When the list may not be used for status: never again where the server refuses it (some
        # relays), for a while where walks stopped paying (our jobs buried under others' videos).
        self._list_off_until = 0.0

    @property
    def model(self) -> str:
        return self._model

    def __repr__(self) -> str:
        return f"OpenAIProvider(base_url={self._base!r}, model={self._model!r}, pro_model={self._pro_model!r})"

    # --- request building -----------------------------------------------------------------------

    def model_for(self, quality: Quality) -> str:
        return self._pro_model if quality is Quality.PRO else self._model

    def size_for(self, request: GenerationRequest) -> str:
        return ORIENTATION_SIZE[request.orientation]

    def seconds_for(self, request: GenerationRequest) -> int:
        return self.capabilities.fit_seconds(request.seconds)

    def render_prompt(self, request: GenerationRequest) -> str:
        """The member's prompt with each `@name` replaced by the registered character name."""
        tokens = {ref.key: ref.handle.mention_token for ref in request.characters if ref.handle is not None}
        return replace_mentions(request.prompt, tokens)

    def create_body(self, request: GenerationRequest) -> dict[str, Any]:
        """The JSON body of `POST /videos`; raises Rejected before any HTTP when it cannot be valid."""
        model = self.model_for(request.quality)
        size = self.size_for(request)
        if size not in MODEL_SIZES.get(model, BASE_SIZES):
            raise Rejected(PROVIDER, f"size {size} is not available on {model}", reason=RejectReason.UNSUPPORTED)
        if len(request.characters) > MAX_CHARACTERS:
            raise Rejected(PROVIDER, f"at most {MAX_CHARACTERS} characters can be used in one video")
        prompt = self.render_prompt(request)
        characters: list[dict[str, str]] = []
        for ref in request.characters:
            handle = ref.handle
            if handle is None or handle.provider != PROVIDER:
                raise Rejected(PROVIDER, f"character {ref.asset.name} is not registered with openai yet")
            if handle.mention_token not in prompt:
                raise Rejected(PROVIDER, f"character {ref.asset.name} is not mentioned in the prompt")
            characters.append({"id": handle.external_id})
        body: dict[str, Any] = {
            "model": model,
            "prompt": prompt,
            "size": size,
            "seconds": str(self.seconds_for(request)),
        }
        if characters:
            body["characters"] = characters
        return body

    def estimate(self, request: GenerationRequest) -> int:
        model = self.model_for(request.quality)
        return self._prices.per_second(PROVIDER, model, self.size_for(request), self.seconds_for(request))

    # --- HTTP plumbing --------------------------------------------------------------------------

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self._api_key.get_secret_value()}"}
        headers.update(extra or {})
        return headers

    def _error(self, response: httpx.Response, *, op: str, idempotent: bool) -> ProviderError:
        message, code, etype = error_fields(response.content)
        status = response.status_code
        secrets = (self._api_key.get_secret_value(),)
        shown = safe_message(message, secrets)
        if 400 <= status < 500 and status not in (401, 403, 429):
            if _is_moderation(message, code):
                return Rejected(
                    PROVIDER,
                    shown or "blocked by the provider's moderation",
                    code=code,
                    reason=RejectReason.MODERATION,
                )
            if op == "character" and "likeness" in message.lower():
                return Rejected(
                    PROVIDER,
                    "openai refuses characters that depict a human likeness; use a non-human character "
                    "or another provider",
                    code=code,
                    reason=RejectReason.UNSUPPORTED,
                )
        if status not in (401, 403, 429) and _is_model_missing(message, code):
            return Rejected(
                PROVIDER,
                "the model is not available at this endpoint (Sora was shut down on 2026-09-24)",
                code=code or "model_not_found",
                reason=RejectReason.UNSUPPORTED,
            )
        if status == 404 and op == "create" and not message:
            return Rejected(PROVIDER, "this endpoint has no video API", code=code, reason=RejectReason.UNSUPPORTED)
        return status_error(
            PROVIDER,
            status,
            response.headers,
            message=message,
            code=code,
            etype=etype,
            idempotent=idempotent,
            secrets=secrets,
        )

    async def _request(
        self,
        method: str,
        path: str,
        *,
        op: str,
        idempotent: bool,
        passthrough: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> httpx.Response:
        """One API call with explicit timeouts; failures come out as ProviderError subclasses."""
        extra = kwargs.pop("headers", None)
        try:
            response = await self._client.request(
                method, self._base + path, headers=self._headers(extra), timeout=self._timeout, **kwargs
            )
        except httpx.HTTPError as exc:
            err = transport_error(PROVIDER, exc, idempotent=idempotent)
            log.warning("openai %s %s: %s", op, path, err)
            raise err from exc
        except httpx.InvalidURL as exc:
            raise Unavailable(PROVIDER, "the configured base URL is invalid", code="invalid_url") from exc
        if not response.is_success and response.status_code not in passthrough:
            err = self._error(response, op=op, idempotent=idempotent)
            log.warning("openai %s %s: HTTP %s -> %s", op, path, response.status_code, err)
            raise err
        return response

    @staticmethod
    def _json_object(response: httpx.Response) -> dict[str, Any] | None:
        try:
            data = response.json()
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    # --- snapshots ------------------------------------------------------------------------------

    def _job_error(self, raw: str, error: object) -> ProviderError:
        err: Mapping[str, object] = error if isinstance(error, dict) else {}
        code_raw, message_raw = err.get("code"), err.get("message")
        code = code_raw if isinstance(code_raw, str) else None
        message = message_raw if isinstance(message_raw, str) else ""
        shown = safe_message(message, (self._api_key.get_secret_value(),))
        if _is_moderation(message, code):
            return Rejected(
                PROVIDER,
                shown or "blocked by the provider's moderation",
                code=code,
                reason=RejectReason.MODERATION,
            )
        if raw in ("canceled", "cancelled", "expired"):
            return Unavailable(PROVIDER, f"the job was {raw} at the provider", code=code or raw)
        err_headers = err.get("headers")
        capacity = isinstance(err_headers, dict) and any(
            str(k).lower() == "x-openai-inference-capacity-reason" for k in err_headers
        )
        lowered = message.lower()
        if capacity or code in _TRANSIENT_JOB_CODES or "overloaded" in lowered or "try again" in lowered:
            return Unavailable(PROVIDER, shown or "the provider failed to make the video", code=code)
        return Rejected(PROVIDER, shown or "the provider could not make this video", code=code)

    def _snapshot(self, video: Mapping[str, Any], headers: httpx.Headers) -> JobSnapshot:
        external_id = str(video.get("id", ""))
        raw = video.get("status")
        raw = raw if isinstance(raw, str) else ""
        status = _STATUS.get(raw)
        if status is None:
            # Never fail a job on a word we do not know: keep polling (new-api #5045).
            log.warning("openai: unknown status %r for %s; treating as running", raw, external_id)
            status = JobStatus.RUNNING
        unknown = set(video) - _VIDEO_FIELDS - self._unknown_fields_seen
        if unknown:
            self._unknown_fields_seen |= unknown
            log.info("openai: ignoring unknown video fields %s", sorted(unknown))
        progress_raw = video.get("progress")
        progress: int | None = None
        if isinstance(progress_raw, int | float) and not isinstance(progress_raw, bool):
            progress = max(0, min(100, int(progress_raw)))
        if status is JobStatus.SUCCEEDED:
            progress = 100
        poll_after = header_ms(headers, POLL_AFTER_HEADER)
        if poll_after is None:
            poll_after = retry_after_seconds(headers)
        return JobSnapshot(
            external_id=external_id,
            status=status,
            progress=progress,
            error=self._job_error(raw, video.get("error")) if status is JobStatus.FAILED else None,
            poll_after=poll_after,
            raw_status=raw,
        )

    # --- the interface --------------------------------------------------------------------------

    async def register_character(self, asset: CharacterAsset) -> CharacterHandle:
        name = asset.name.strip()
        if not 1 <= len(name) <= CHARACTER_NAME_MAX:
            raise Rejected(PROVIDER, f"a character name must be 1-{CHARACTER_NAME_MAX} characters")
        if asset.clip_duration < CHARACTER_CLIP_MIN:
            raise Rejected(
                PROVIDER,
                f"openai needs a clip of at least {CHARACTER_CLIP_MIN:g} s to make a character",
                reason=RejectReason.UNSUPPORTED,
            )
        length = min(CHARACTER_CLIP_MAX, asset.clip_duration)
        start = max(0.0, min(asset.best_window_start, asset.clip_duration - length))
        video = await self._trimmed_clip(asset.clip_path, start, length)
        response = await self._request(
            "POST",
            "/videos/characters",
            op="character",
            idempotent=True,  # a duplicate registration is harmless: retry rather than wait
            data={"name": name},
            files={"video": ("character.mp4", video, "video/mp4")},
        )
        data = self._json_object(response)
        external_id = data.get("id") if data else None
        if not isinstance(external_id, str) or not external_id:
            raise Unavailable(PROVIDER, "the provider answered the character upload unreadably")
        registered = data.get("name") if data else None
        token = registered if isinstance(registered, str) and registered else name
        log.info("openai: registered character %s as %s", asset.character_id, external_id)
        return CharacterHandle(provider=PROVIDER, external_id=external_id, mention_token=token)

    @staticmethod
    async def _trimmed_clip(src: Path, start: float, length: float) -> bytes:
        tmpdir = await asyncio.to_thread(tempfile.mkdtemp, prefix="castbot-char-")
        try:
            dest = Path(tmpdir) / "character.mp4"
            # the API takes 720p-1080p and trims anything past 4 s itself; we send only our window
            await asyncio.to_thread(trim_clip, src, dest, start, length, max_side=CHARACTER_MAX_SIDE)
            return await asyncio.to_thread(dest.read_bytes)
        except ClipRejected as exc:
            raise Rejected(PROVIDER, f"the character clip cannot be used: {exc.detail}", code=exc.problem) from exc
        except Exception as exc:
            # a broken stored clip (or a media bug) is not retryable; callers get only ProviderErrors
            log.warning("openai: trimming %s failed", src.name, exc_info=True)
            raise Rejected(PROVIDER, "could not prepare the character clip", code=type(exc).__name__) from exc
        finally:
            await asyncio.to_thread(shutil.rmtree, tmpdir, True)

    def _sent_key(self, request: GenerationRequest, body: Mapping[str, Any]) -> str:
        if request.client_ref:
            return request.client_ref
        return hashlib.sha256(repr(sorted(body.items())).encode()).hexdigest()

    async def submit(self, request: GenerationRequest) -> SubmitResult:
        body = self.create_body(request)
        key = self._sent_key(request, body)
        self._sent_at.pop(key, None)
        self._sent_at[key] = time.time()
        while len(self._sent_at) > SENT_MEMORY:
            self._sent_at.pop(next(iter(self._sent_at)))
        ref = request.client_ref
        extra = {"X-Client-Request-Id": ref} if ref and ref.isascii() and len(ref) <= 512 else {}
        response = await self._request(
            "POST", "/videos", op="create", idempotent=False, json=body, headers=extra or None
        )
        video = self._json_object(response)
        external_id = video.get("id") if video else None
        if video is None or not isinstance(external_id, str) or not external_id:
            # 200 means the job probably exists; we just cannot read its id.
            raise Ambiguous(PROVIDER, "the provider accepted the request but its answer was unreadable")
        log.info("openai: created %s (%s, %ss, %s)", external_id, body["model"], body["seconds"], body["size"])
        return SubmitResult(external_id=external_id, snapshot=self._snapshot(video, response.headers))

    async def _status_one(self, external_id: str) -> JobSnapshot | None:
        async with self._status_gate:
            try:
                response = await self._request(
                    "GET",
                    f"/videos/{quote(external_id, safe='')}",
                    op="status",
                    idempotent=True,
                    passthrough=(404,),
                )
            except Rejected as exc:
                # a 4xx on a read says nothing about the job: poll again later
                raise Unavailable(PROVIDER, exc.message, code=exc.code) from exc
        if response.status_code == 404:
            return None
        video = self._json_object(response)
        if video is None:
            raise Unavailable(PROVIDER, "the provider answered a status request unreadably")
        if video.get("id") != external_id:
            video = {**video, "id": external_id}
        return self._snapshot(video, response.headers)

    async def status(self, external_ids: Sequence[str]) -> Mapping[str, JobSnapshot]:
        ids = list(dict.fromkeys(external_ids))
        found: dict[str, JobSnapshot] = {}
        if len(ids) >= LIST_MIN and self._list_on():
            found = await self._status_from_list(ids)
        rest = [i for i in ids if i not in found]
        if len(ids) >= LIST_MIN and len(rest) > len(ids) // 2 and self._list_on():
            self._list_off(time.monotonic() + LIST_RETRY, "walks of the video list stopped paying")
        try:
            found.update(await self._status_each(rest))
        except ProviderError as exc:
            if not found or isinstance(exc, AuthFailed | QuotaExhausted | RateLimited):
                raise
            # the list answered most of them: keep those, the rest are asked about again later
            raise StatusIncomplete(
                PROVIDER, exc.message, code=exc.code, retry_after=exc.retry_after, answered=found
            ) from exc
        return found

    def _list_on(self) -> bool:
        if time.monotonic() < self._list_off_until:
            return False
        if not self.capabilities.status_by_list:
            self.capabilities = type(self).capabilities  # the pause is over: the tracker walks again
        return True

    def _list_off(self, until: float, why: str) -> None:
        """Read status one job at a time until `until`; the tracker, seeing the capability gone, stops
        asking about every job in flight at once (one lookup each would cost more than it saves)."""
        self._list_off_until = until
        self.capabilities = replace(type(self).capabilities, status_by_list=False)
        log.warning("openai: %s; reading status one job at a time%s", why, "" if until == math.inf else " for now")

    async def _status_each(self, ids: Sequence[str]) -> dict[str, JobSnapshot]:
        results = await asyncio.gather(*(self._status_one(i) for i in ids), return_exceptions=True)
        snapshots: dict[str, JobSnapshot] = {}
        failures: list[BaseException] = []
        for external_id, result in zip(ids, results, strict=True):
            if isinstance(result, JobSnapshot):
                snapshots[external_id] = result
            elif isinstance(result, BaseException):
                failures.append(result)
        if failures:
            # Leaving a failed id out would read as "unknown to the provider": raise instead.
            for exc in failures:
                if not isinstance(exc, ProviderError):
                    raise exc
            raise _most_severe([e for e in failures if isinstance(e, ProviderError)])
        return snapshots

    async def _status_from_list(self, ids: Sequence[str]) -> dict[str, JobSnapshot]:
        """What the newest pages of the video list say about `ids`; absent ids are not proof of
        anything (older than the walk, or listed elsewhere) and are looked up singly by the caller."""
        async with self._walk_lock:
            now = time.monotonic()
            walk = self._walk
            if walk is None or now - walk.read_at > LIST_FRESH:
                walk = self._walk = _ListWalk(read_at=now)
            walk.wanted.update(ids)
            while walk.worth_a_page(ids):
                try:
                    await self._list_page(walk, len(ids))
                except Rejected as exc:
                    walk.exhausted = True
                    if walk.after is None:
                        self._list_off(math.inf, f"the video list is refused ({exc})")
                except ProviderError:
                    if walk.pages == 0:
                        raise  # nothing read: the caller decides (the tracker retries job by job)
                    break  # what was read stands; the rest are looked up singly
            return {i: self._snapshot(*walk.seen[i]) for i in ids if i in walk.seen}

    async def _list_page(self, walk: _ListWalk, wanted: int) -> None:
        # the first page sized to the question (our jobs are usually the newest); deeper ones full
        limit = LIST_PAGE_MAX if walk.after else min(LIST_PAGE_MAX, max(LIST_PAGE_MIN, 2 * wanted))
        params: dict[str, str | int] = {"limit": limit, "order": "desc"}
        if walk.after:
            params["after"] = walk.after
        response = await self._request("GET", "/videos", op="list", idempotent=True, params=params)
        page = self._json_object(response)
        items = page.get("data") if page else None
        if page is None or not isinstance(items, list):
            raise Unavailable(PROVIDER, "the provider answered the video list unreadably")
        walk.pages += 1
        walk.read_at = time.monotonic()
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                walk.seen[item["id"]] = (item, response.headers)
        last = page.get("last_id")
        if page.get("has_more") is True and isinstance(last, str) and items:
            walk.after = last
        else:
            walk.exhausted = True

    async def download(self, snapshot: JobSnapshot, dest: Path, max_bytes: int) -> DownloadResult:
        path = f"/videos/{quote(snapshot.external_id, safe='')}/content"
        try:
            async with self._client.stream(
                "GET",
                self._base + path,
                headers=self._headers({"Accept": "application/binary"}),
                timeout=self._download_timeout,
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise self._error(response, op="content", idempotent=True)
                size, digest = await stream_to_file(response, dest, max_bytes)
                content_type = response.headers.get("content-type", "video/mp4").split(";")[0].strip()
        except DownloadTooLarge:
            raise _too_large(max_bytes) from None
        except httpx.HTTPError as exc:
            raise transport_error(PROVIDER, exc, idempotent=True) from exc
        except OSError as exc:
            raise Unavailable(PROVIDER, "could not write the downloaded video", code="local_io") from exc
        return DownloadResult(path=dest, size=size, content_type=content_type or "video/mp4", sha256=digest)

    async def reconcile(self, request: GenerationRequest) -> str | None:
        try:
            body = self.create_body(request)
        except Rejected:
            return None
        sent_at = self._sent_at.get(self._sent_key(request, body))
        now = time.time()
        low = sent_at - RECONCILE_SKEW if sent_at is not None else now - RECONCILE_LOOKBACK
        high = sent_at + 3600 if sent_at is not None else now + RECONCILE_SKEW
        matches: list[tuple[float, str]] = []
        after: str | None = None
        for _ in range(RECONCILE_PAGES):
            params: dict[str, str | int] = {"limit": RECONCILE_PAGE, "order": "desc"}
            if after:
                params["after"] = after
            try:
                response = await self._request("GET", "/videos", op="list", idempotent=True, params=params)
            except Rejected as exc:
                # no usable list endpoint here (a relay): asking again will not help
                log.warning("openai: cannot list videos to reconcile: %s", exc)
                return None
            page = self._json_object(response)
            items = page.get("data") if page else None
            if not isinstance(items, list):
                raise Unavailable(PROVIDER, "the provider answered the video list unreadably")
            oldest = now
            for item in items:
                if not isinstance(item, dict):
                    continue
                created = item.get("created_at")
                if not isinstance(created, int | float) or isinstance(created, bool):
                    continue
                oldest = min(oldest, float(created))
                if low <= created <= high and _same_job(item, body):
                    matches.append((float(created), str(item.get("id"))))
            last = page.get("last_id") if page else None
            if not (page and page.get("has_more")) or not isinstance(last, str) or oldest < low:
                break
            after = last
        if len(matches) == 1:
            return matches[0][1]
        if matches and sent_at is not None:
            return min(matches, key=lambda m: abs(m[0] - sent_at))[1]
        if matches:
            log.warning("openai: %d videos match an ambiguous request; not guessing", len(matches))
        return None


@dataclass
class _ListWalk:
    """One walk down `GET /videos`, newest first, shared by the status calls of one loop pass."""

    read_at: float  # time.monotonic() of its latest page
    seen: dict[str, tuple[Mapping[str, Any], httpx.Headers]] = field(default_factory=dict)
    wanted: set[str] = field(default_factory=set)  # every id asked about during this walk
    after: str | None = None
    pages: int = 0
    exhausted: bool = False

    def worth_a_page(self, ids: Sequence[str]) -> bool:
        """Another page only while some of `ids` are unseen and pages keep paying for themselves:
        at least one wanted job found per page read, so the walk never costs more requests than
        the single lookups it replaces (plus one)."""
        if self.exhausted or self.pages >= LIST_MAX_PAGES or all(i in self.seen for i in ids):
            return False
        return self.pages == 0 or len(self.wanted & self.seen.keys()) >= self.pages


def _same_job(item: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    model = item.get("model")
    # the API may answer with the dated snapshot name (sora-2 -> sora-2-2025-12-08)
    same_model = not isinstance(model, str) or model.startswith(str(body["model"]))
    return (
        same_model
        and item.get("prompt") == body["prompt"]
        and str(item.get("seconds", body["seconds"])) == body["seconds"]
        and item.get("size", body["size"]) == body["size"]
        and isinstance(item.get("id"), str)
    )


def _too_large(max_bytes: int) -> Rejected:
    return Rejected(PROVIDER, f"video larger than {max_bytes} bytes", code="too_large")


def _most_severe(errors: Sequence[ProviderError]) -> ProviderError:
    """The error that should drive the caller: auth/quota over rate limits over transient ones."""
    for kind in (AuthFailed, QuotaExhausted, RateLimited):
        for err in errors:
            if isinstance(err, kind):
                return err
    return errors[0]
