"""Google Gemini Omni Flash adapter: reference-to-video through the Gemini Interactions API.

A character goes to the model as references inside one request: its frontal frame and other stored
frames as inline image blocks, and (where the model takes video references) the clip's best short
window as a video block uploaded through the Files API. Uploaded files are kept by Google for 48 h
only, so the handle returned by `register_character` is the file's URI with that expiry; the handle
registry uploads the clip again, lazily, once it has expired. When the clip cannot be uploaded the
character still works from its images alone (see `register_character`).

Generation is `POST /v1beta/interactions` with `background: true` and the video delivered as a
Files-API URI; each job is polled with its own `GET /v1beta/interactions/{id}` (there is no batch
endpoint) and downloaded from that URI with the key, after the file shows `ACTIVE`.

Gemini has no way to list interactions or to look one up by our reference, so `reconcile()` cannot
find the job an ambiguous create may have made: it returns None, the job keeps its money hold and is
never sent again (capabilities.authoritative_reconcile is False).

Much of the model's behaviour is not documented by Google (how many references it takes, how the
prompt names them, durations, prices): those numbers live in `MODELS`, one entry per model id, so
that a correction is a one-line change.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import math
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

import httpx
from PIL import Image, UnidentifiedImageError
from pydantic import SecretStr

from bot.media import ClipRejected, DownloadTooLarge, stream_to_file, trim_clip
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
from bot.providers.http_errors import retry_after_seconds, safe_message, transport_error
from bot.providers.pricing import PriceBook, usd_to_micros

log = logging.getLogger(__name__)

Phase = Literal["create", "query", "upload"]


@dataclass(frozen=True)
class ModelSpec:
    """What one Omni model accepts and costs. Google documents little of it; every number here is
    a best reading of third-party reports, kept in one place so that it is easy to correct."""

    seconds: tuple[int, ...]  # output durations, sent as a "Ns" string
    max_images: int  # reference image blocks per request
    max_videos: int  # reference video blocks per request (0: the model takes no video reference)
    video_max_seconds: float  # length of each reference clip
    # views each character is guaranteed when the prompt holds as many characters as fit:
    # max_characters = max_images // images_per_character
    images_per_character: int
    standard_resolution: str
    pro_resolution: str
    # micro-USD per second of output by resolution; PRICE_OVERRIDES entries win over these
    price_per_second: Mapping[str, int]
    video_token_usd_per_million: Decimal  # what the video tokens in `usage` are billed at
    input_token_usd_per_million: Decimal  # what the references and the prompt are billed at
    tokens_per_image: int  # input tokens of one reference image
    tokens_per_video_second: int  # input tokens of one second of a reference clip
    image_ref: str = "@Image {n}"  # how the prompt names the nth image, counted from 1
    video_ref: str = "@Video {n}"  # how the prompt names the nth video, counted from 1
    labels: bool = True  # whether the create accepts `labels` (our job reference travels there)


# 5,792 video tokens per second of 720p output at $17.50 per million tokens is $0.10136 a second:
# the 720p price is exactly that, so that the estimate holds the whole token bill. The other
# resolutions are resale prices (their token rates are not published). The references are billed
# as input tokens on top (an image about 2,040, a second of clip 5,792, at $1.50 per million).
# Reference limits are reported anywhere from 3 to 10 images: 3 images and 3 clips of 3 s are what
# every report allows, so a request that fits them is never refused for its size.
_OMNI_PRICES = {"360p": 39_000, "720p": 101_360, "1080p": 175_000, "4k": 350_000}
MODELS: dict[str, ModelSpec] = {
    "gemini-omni-1.1-flash": ModelSpec(
        seconds=tuple(range(3, 11)),
        max_images=3,
        max_videos=3,
        video_max_seconds=3.0,
        images_per_character=1,
        standard_resolution="720p",
        pro_resolution="1080p",
        price_per_second=_OMNI_PRICES,
        video_token_usd_per_million=Decimal("17.50"),
        input_token_usd_per_million=Decimal("1.50"),
        tokens_per_image=2_040,
        tokens_per_video_second=5_792,
    ),
    "gemini-omni-1.2-flash": ModelSpec(
        seconds=tuple(range(3, 16)),
        max_images=3,
        max_videos=3,
        video_max_seconds=3.0,
        images_per_character=1,
        standard_resolution="720p",
        pro_resolution="1080p",
        price_per_second=_OMNI_PRICES,
        video_token_usd_per_million=Decimal("17.50"),
        input_token_usd_per_million=Decimal("1.50"),
        tokens_per_image=2_040,
        tokens_per_video_second=5_792,
    ),
}
DEFAULT_MODEL = "gemini-omni-1.1-flash"

DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=30.0, write=60.0, pool=10.0)
API = "/v1beta"
FILE_TTL = 48 * 3600.0  # Files-API uploads are deleted after 48 h
# Google suggests polling an interaction every 10-15 s; renders take one to three minutes
POLL_FLOOR = 10.0
PREAMBLE_CHARS = 400  # the most the line naming one character adds to the prompt
IMAGES_ONLY = "images-only"  # external_id of a handle without an uploaded clip
STATUS_CONCURRENCY = 4  # GETs in flight at once when many jobs are polled
# "completed" without the video although usage counts video tokens is a known platform fault that
# clears on a later read: this many reads say RUNNING before the job is given up.
MISSING_VIDEO_POLLS = 3
MISSING_VIDEO_POLL_AFTER = 5.0
FILE_NOT_READY_RETRY = 3.0  # seconds: a finished video's file still PROCESSING
INLINE_IMAGE_MAX_BYTES = 2 * 1024 * 1024  # inline data counts toward the request size cap
IMAGE_MAX_SIDE = 2048
CLIP_MAX_SIDE = 1280
DESCRIPTION_CHARS = 200
_IMAGE_MIMES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
_RUNNING = {"queued": JobStatus.QUEUED, "in_progress": JobStatus.RUNNING}
# For a video job these end it: the last three are states of tool-using or paused conversations
# that a video request never resumes.
_FAILED = frozenset(
    {"failed", "cancelled", "incomplete", "budget_exceeded", "requires_action", "requires_continuation", "idle"}
)
_MODERATION_CODES = frozenset({"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY", "RECITATION"})
_MODERATION_TEXT = re.compile(
    r"block\w*\b.*\b(safety|policy|policies)|(safety|policy|policies)\b.*\bblock", re.I | re.S
)
_MODERATION_WORDS = ("safety", "policy", "policies", "prohibited", "blocklist", "harmful", "sensitive")
_AUTH_CODES = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED", "API_KEY_INVALID", "API_KEY_EXPIRED"})
_AUTH_REASON_PREFIXES = ("API_KEY_", "SERVICE_DISABLED", "CONSUMER_INVALID", "ACCESS_TOKEN")
_QUOTA_CODES = frozenset({"BILLING_DISABLED", "BILLING_NOT_ACTIVE", "BILLING_NOT_ENABLED", "INSUFFICIENT_QUOTA"})
# Phrases only: the ordinary per-minute 429 says "check your plan and billing details" too.
_QUOTA_PHRASES = (
    "credits are depleted",
    "prepayment credits",
    "billing account",
    "enable billing",
    "billing is not enabled",
    "billing to be enabled",
    "billing has been disabled",
    "spending cap",
    "spend cap",
    "insufficient balance",
)
_RATE_CODES = frozenset({"RESOURCE_EXHAUSTED", "RATE_LIMIT_EXCEEDED", "TOO_MANY_REQUESTS"})
_AT_REF = re.compile(r"(?<!\w)@(\w+)(?: (\d+))?")
_FILE_ID = re.compile(r"/files/([^/:?#]+)")
_LABEL_BAD = re.compile(r"[^a-z0-9_-]+")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def spec_for(model: str) -> ModelSpec:
    """The table entry of `model`; an id the table does not know gets the 1.1 entry (the most
    conservative one) and a warning, so that a new model id can be tried from the settings."""
    spec = MODELS.get(model)
    if spec is None:
        log.warning("gemini model %r is not in the model table; using the limits of %s", model, DEFAULT_MODEL)
        spec = MODELS[DEFAULT_MODEL]
    return spec


@dataclass
class _GoogleError:
    """The fields of either error shape: the Interactions one (`code` a string) or Google's
    front-end one (`code` an HTTP number, `status`, `details`)."""

    message: str = ""  # raw: not safe to show before it is redacted
    code: str = ""
    status: str = ""
    reasons: tuple[str, ...] = ()  # google.rpc.ErrorInfo reasons
    retry_delay: float | None = None  # google.rpc.RetryInfo

    @property
    def words(self) -> frozenset[str]:
        return frozenset(w.upper() for w in (self.code, self.status, *self.reasons) if w)


class GeminiProvider(VideoProvider):
    name = "gemini"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_key: SecretStr,
        base_url: str,
        prices: PriceBook,
        model: str = DEFAULT_MODEL,
        pro_model: str | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
        file_poll_interval: float = 1.0,
        file_timeout: float = 60.0,
    ) -> None:
        self._client = client
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._base_origin = _origin(self._base_url)
        self._prices = prices
        self._model = model
        self._pro_model = pro_model or model
        self._spec = spec_for(model)
        self._pro_spec = spec_for(self._pro_model)
        self._timeout = timeout
        self._clock = clock
        self._file_poll_interval = file_poll_interval
        self._file_timeout = file_timeout
        # reads of each interaction that said `completed` without its video, by interaction id
        self._missing_video: dict[str, int] = {}
        specs = (self._spec, self._pro_spec)
        seconds = tuple(sorted(set(self._spec.seconds) & set(self._pro_spec.seconds))) or self._spec.seconds
        self.capabilities = Capabilities(
            seconds=seconds,
            orientations=frozenset(Orientation),
            qualities=frozenset(Quality),
            max_characters=min(s.max_images // max(1, s.images_per_character) for s in specs),
            needs_handle=True,
            mention_style=MentionStyle.REFERENCE_INDEX,
            shareable_results=False,  # the Files API wants our key for the download
            poll_floor=POLL_FLOOR,
            batch_status=False,
            paid=True,
            authoritative_reconcile=False,
            callbacks=True,  # a dynamic webhook_config per interaction
        )

    @property
    def model(self) -> str:
        return self._model

    def __repr__(self) -> str:
        return f"GeminiProvider(base_url={self._base_url!r}, model={self._model!r}, pro_model={self._pro_model!r})"

    # --- money ------------------------------------------------------------------------------------

    def _target(self, quality: Quality) -> tuple[str, ModelSpec, str]:
        """(model id, its table entry, resolution) for a quality."""
        if quality is Quality.PRO:
            return self._pro_model, self._pro_spec, self._pro_spec.pro_resolution
        return self._model, self._spec, self._spec.standard_resolution

    def estimate(self, request: GenerationRequest) -> int:
        model, spec, resolution = self._target(request.quality)
        seconds = self.capabilities.fit_seconds(request.seconds)
        default = spec.price_per_second.get(resolution)
        output = self._prices.per_second(self.name, model, resolution, seconds, default=default)
        return output + self._input_allowance(request, spec)

    @staticmethod
    def _input_allowance(request: GenerationRequest, spec: ModelSpec) -> int:
        """The most the input of `request` can be billed: its references, and its text at a token
        a character (a line naming each character is added to the member's prompt)."""
        tokens = len(request.prompt) + PREAMBLE_CHARS * len(request.characters)
        if request.characters:
            frames = sum(len(ref.asset.frame_paths) for ref in request.characters)
            images = min(spec.max_images, frames or spec.max_images)
            clip_seconds = math.ceil(min(spec.max_videos, len(request.characters)) * spec.video_max_seconds)
            tokens += images * spec.tokens_per_image + clip_seconds * spec.tokens_per_video_second
        return usd_to_micros(Decimal(tokens) * spec.input_token_usd_per_million / 1_000_000)

    def actual_cost(self, request: GenerationRequest, snapshot: JobSnapshot) -> int:
        """The token bill as Google reports it. The tracking loop rebuilds a job's request without
        its characters, whose references the held estimate covered: the settlement caps the bill
        at what was held, so capping it here at a reference-less estimate would undercount."""
        if snapshot.actual_cost_micros is not None:
            return snapshot.actual_cost_micros
        return self.estimate(request)

    def _billed_micros(self, usage: Any, spec: ModelSpec) -> int | None:
        tokens = _video_tokens(usage)
        if tokens is None:
            return None
        billed = Decimal(tokens) * spec.video_token_usd_per_million
        inputs = _as_dict(usage).get("total_input_tokens")
        if isinstance(inputs, int) and not isinstance(inputs, bool) and inputs > 0:
            billed += Decimal(inputs) * spec.input_token_usd_per_million
        return usd_to_micros(billed / 1_000_000)

    # --- characters -------------------------------------------------------------------------------

    async def register_character(self, asset: CharacterAsset) -> CharacterHandle:
        """Upload the clip's best short window; the handle is the file's URI and its expiry.

        The images travel inline with every request, so a character works without its clip, only
        less faithfully in motion. Hence, when the clip cannot be uploaded:
        - a clip that cannot be read or cut, or that Gemini refuses or fails to process, gives an
          images-only handle kept as long as an upload would be (the same clip would fail again);
        - a transient failure (Google busy, timeouts) gives an images-only handle that is already
          expired: this job goes ahead on the images and the next use tries the upload again;
        - a refused key or an empty account is raised: nothing would work on this provider.
        """
        if not asset.frame_paths:
            raise Rejected(
                self.name, "a Gemini character needs at least its frontal frame", reason=RejectReason.UNSUPPORTED
            )
        now = self._clock()
        if max(self._spec.max_videos, self._pro_spec.max_videos) == 0:
            return self._images_only(now + FILE_TTL)
        try:
            uploaded = await self._upload_clip(asset)
        except (AuthFailed, QuotaExhausted):
            raise
        except Rejected as exc:
            log.warning("gemini refused the reference clip of character %s: %s", asset.character_id, exc.message)
            return self._images_only(now + FILE_TTL)
        except ProviderError as exc:
            log.warning(
                "gemini clip upload for character %s failed (%s); using its images only for now",
                asset.character_id,
                exc.message,
            )
            return self._images_only(now)
        if uploaded is None:
            return self._images_only(now + FILE_TTL)
        uri, expires_at = uploaded
        return CharacterHandle(provider=self.name, external_id=uri, mention_token="", expires_at=expires_at)

    def _images_only(self, expires_at: float) -> CharacterHandle:
        return CharacterHandle(provider=self.name, external_id=IMAGES_ONLY, mention_token="", expires_at=expires_at)

    async def _upload_clip(self, asset: CharacterAsset) -> tuple[str, float] | None:
        """(file URI, expiry) of the uploaded window, or None when the clip cannot be cut."""
        tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="castbot-gemini-"))
        try:
            clip = tmp / "reference.mp4"
            length = min(self._spec.video_max_seconds, self._pro_spec.video_max_seconds)
            try:
                data = await asyncio.to_thread(_cut_window, asset, clip, length)
            except (ClipRejected, OSError, ValueError) as exc:
                log.warning("cannot cut a reference window from character %s: %s", asset.character_id, exc)
                return None
            started = self._clock()
            file = await self._upload(data, "video/mp4", f"castbot-character-{asset.character_id}")
            file = await self._await_active(file)
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)
        uri = _text(file.get("uri")) or _text(file.get("name"))
        if not uri:
            raise Unavailable(self.name, "Gemini stored the clip but returned no file URI")
        expires_at = started + FILE_TTL
        stated = _parse_time(file.get("expirationTime"))
        if stated is not None:
            expires_at = min(expires_at, stated)
        return uri, expires_at

    async def _upload(self, data: bytes, mime_type: str, display_name: str) -> dict[str, Any]:
        """The Files API's resumable protocol in its two requests: start, then upload + finalize."""
        start_headers = {
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": str(len(data)),
            "X-Goog-Upload-Header-Content-Type": mime_type,
        }
        response, _ = await self._call(
            "POST",
            f"{self._base_url}/upload{API}/files",
            phase="upload",
            json={"file": {"display_name": display_name}},
            headers=start_headers,
        )
        upload_url = response.headers.get("x-goog-upload-url")
        if not upload_url or urlsplit(upload_url).scheme not in ("http", "https"):
            raise Unavailable(self.name, "Gemini did not return an upload URL for the clip")
        finish_headers = {
            "X-Goog-Upload-Command": "upload, finalize",
            "X-Goog-Upload-Offset": "0",
        }
        response, answer = await self._call("POST", upload_url, phase="upload", content=data, headers=finish_headers)
        if response.headers.get("x-goog-upload-status", "final").lower() != "final":
            raise Unavailable(self.name, "Gemini did not finish the clip upload")
        file = _as_dict(_as_dict(answer).get("file") or answer)
        if not file.get("name") and not file.get("uri"):
            raise Unavailable(self.name, "Gemini answered the clip upload without a file")
        return file

    async def _await_active(self, file: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + self._file_timeout
        while True:
            state = _text(file.get("state")).upper()
            if state == "ACTIVE":
                return file
            if state == "FAILED":
                detail = self._safe(_as_dict(file.get("error")).get("message"))
                text = "Gemini could not process the reference clip" + (f": {detail}" if detail else "")
                raise Rejected(self.name, text, code="file_failed")
            if time.monotonic() + self._file_poll_interval > deadline:
                raise Unavailable(self.name, "Gemini took too long to process the reference clip")
            await asyncio.sleep(self._file_poll_interval)
            file_id = _file_id(_text(file.get("name")) or _text(file.get("uri")))
            if not file_id:
                raise Unavailable(self.name, "Gemini returned a file without a usable name")
            file = await self._get_file(file_id)

    async def _get_file(self, file_id: str) -> dict[str, Any]:
        _, data = await self._call("GET", f"{self._base_url}{API}/files/{quote(file_id, safe='')}", phase="query")
        return _as_dict(data)

    # --- generation -------------------------------------------------------------------------------

    async def _body(self, request: GenerationRequest) -> tuple[dict[str, Any], list[str]]:
        """The create body, and the names of characters whose clip upload has expired."""
        model, spec, resolution = self._target(request.quality)
        if len(request.characters) > self.capabilities.max_characters:
            raise Rejected(self.name, f"Gemini takes at most {self.capabilities.max_characters} characters per video")
        for ref in request.characters:
            handle = ref.handle
            if handle is None or handle.provider != self.name or not handle.external_id:
                raise Rejected(self.name, f"character {ref.asset.name} is not registered on Gemini")
            if not ref.asset.frame_paths:
                raise Rejected(self.name, f"character {ref.asset.name} has no reference frame")
        expired: list[str] = []
        shares = _share_images([len(ref.asset.frame_paths) for ref in request.characters], spec.max_images)
        images: list[dict[str, Any]] = []
        videos: list[dict[str, Any]] = []
        lines: list[str] = []
        tokens: dict[str, str] = {}
        now = self._clock()
        for ref, share in zip(request.characters, shares, strict=True):
            own_images: list[str] = []
            for path in ref.asset.frame_paths[:share]:
                images.append(await asyncio.to_thread(_image_block, path, self.name))
                own_images.append(spec.image_ref.format(n=len(images)))
            own_video = None
            handle = ref.handle
            assert handle is not None
            if handle.external_id != IMAGES_ONLY and len(videos) < spec.max_videos:
                if handle.expires_at is not None and handle.expires_at <= now:
                    # the file is gone at Google: a request naming it would be refused outright
                    expired.append(ref.asset.name)
                else:
                    videos.append({"type": "video", "uri": handle.external_id, "mime_type": "video/mp4"})
                    own_video = spec.video_ref.format(n=len(videos))
            tokens[ref.key] = own_images[0]
            lines.append(_who_is_who(ref, own_images, own_video))
        prompt = _neutralise_stray_refs(replace_mentions(request.prompt, tokens), set(tokens.values()))
        if not prompt.strip():
            raise Rejected(self.name, "the prompt is empty")
        text = "\n".join(lines) + "\n\n" + prompt.strip() if lines else prompt.strip()
        body: dict[str, Any] = {
            "model": model,
            # media first, the text last: the prompt's reference numbers count the blocks in order
            "input": [*images, *videos, {"type": "text", "text": text}],
            "generation_config": {
                "video_config": {"task": "reference_to_video" if request.characters else "text_to_video"}
            },
            "response_format": {
                "type": "video",
                "aspect_ratio": "9:16" if request.orientation is Orientation.PORTRAIT else "16:9",
                "resolution": resolution,
                "duration": f"{self.capabilities.fit_seconds(request.seconds)}s",
                "delivery": "uri",
            },
            "store": True,  # a URI delivery needs the interaction stored
            "background": True,  # return at once; the job is polled
        }
        if spec.labels and request.client_ref:
            body["labels"] = {"castbot_ref": _label_value(request.client_ref)}
        if request.callback_url:
            body["webhook_config"] = {
                "uris": [request.callback_url],
                "user_metadata": {"castbot_ref": request.client_ref},
            }
        return body, expired

    async def submit(self, request: GenerationRequest) -> SubmitResult:
        body, expired = await self._body(request)
        if expired:
            log.warning("gemini clip uploads of %s have expired; sending their images only", ", ".join(expired))
        response, data = await self._call("POST", f"{self._base_url}{API}/interactions", phase="create", json=body)
        interaction = _as_dict(data)
        interaction_id = _text(interaction.get("id"))
        if not interaction_id:
            raise Ambiguous(self.name, "Gemini accepted the request but returned no interaction id")
        snapshot = self._snapshot(interaction_id, interaction, response.headers)
        return SubmitResult(external_id=interaction_id, snapshot=snapshot)

    async def status(self, external_ids: Sequence[str]) -> Mapping[str, JobSnapshot]:
        ids = list(dict.fromkeys(i for i in external_ids if i))
        gate = asyncio.Semaphore(STATUS_CONCURRENCY)

        async def one(interaction_id: str) -> JobSnapshot | None:
            async with gate:
                return await self._status_one(interaction_id)

        results = await asyncio.gather(*(one(i) for i in ids), return_exceptions=True)
        found: dict[str, JobSnapshot] = {}
        failures: list[ProviderError] = []
        for interaction_id, result in zip(ids, results, strict=True):
            if isinstance(result, JobSnapshot):
                found[interaction_id] = result
            elif isinstance(result, ProviderError):
                failures.append(result)
            elif isinstance(result, BaseException):
                raise result
        if failures:
            worst = _most_severe(failures)
            if not found or isinstance(worst, AuthFailed | QuotaExhausted | RateLimited):
                raise worst
            raise StatusIncomplete(
                self.name, worst.message, code=worst.code, retry_after=worst.retry_after, answered=found
            ) from worst
        return found

    async def _status_one(self, interaction_id: str) -> JobSnapshot | None:
        url = f"{self._base_url}{API}/interactions/{quote(interaction_id, safe='')}"
        response, data = await self._call("GET", url, phase="query", unknown_ok=True)
        if response.status_code != 200:
            return None  # Gemini does not know this id
        return self._snapshot(interaction_id, _as_dict(data), response.headers)

    def _snapshot(self, interaction_id: str, interaction: Mapping[str, Any], headers: httpx.Headers) -> JobSnapshot:
        raw = _text(interaction.get("status"))
        poll_after = retry_after_seconds(headers)
        if raw in _RUNNING:
            return JobSnapshot(interaction_id, _RUNNING[raw], poll_after=poll_after, raw_status=raw)
        if raw == "completed":
            return self._completed(interaction_id, interaction, poll_after)
        self._missing_video.pop(interaction_id, None)
        if raw in _FAILED:
            error = self._failure(raw, interaction)
            return JobSnapshot(interaction_id, JobStatus.FAILED, error=error, raw_status=raw)
        # never treat an unknown word as terminal: keep polling until the tracker's deadline
        log.warning("gemini interaction %s has unknown status %r; treating it as running", interaction_id, raw)
        return JobSnapshot(interaction_id, JobStatus.RUNNING, poll_after=poll_after, raw_status=raw)

    def _completed(self, interaction_id: str, interaction: Mapping[str, Any], poll_after: float | None) -> JobSnapshot:
        raw = "completed"
        output = _last_model_output(interaction.get("steps"))
        video = next((b for b in output if b.get("type") == "video"), None)
        uri = _text(video.get("uri")) if video else ""
        if uri:
            self._missing_video.pop(interaction_id, None)
            # billed at the rate of the model that made it (the answer may spell it "models/...")
            spec = MODELS.get(_text(interaction.get("model")).removeprefix("models/"), self._spec)
            return JobSnapshot(
                interaction_id,
                JobStatus.SUCCEEDED,
                download_url=_with_alt_media(uri),
                actual_cost_micros=self._billed_micros(interaction.get("usage"), spec),
                raw_status=raw,
            )
        if video is not None:
            self._missing_video.pop(interaction_id, None)
            error: ProviderError = Unavailable(self.name, "Gemini sent the video inline instead of as a file")
            return JobSnapshot(interaction_id, JobStatus.FAILED, error=error, raw_status=raw)
        if _video_tokens(interaction.get("usage")):
            # a video was made (and billed) but this read lacks it: read again a few times
            reads = self._missing_video[interaction_id] = self._missing_video.get(interaction_id, 0) + 1
            if reads <= MISSING_VIDEO_POLLS:
                log.info("gemini interaction %s completed without its video (read %d)", interaction_id, reads)
                wait = max(poll_after or 0.0, MISSING_VIDEO_POLL_AFTER)
                return JobSnapshot(interaction_id, JobStatus.RUNNING, poll_after=wait, raw_status=raw)
            del self._missing_video[interaction_id]
            error = Unavailable(self.name, "Gemini finished the video but never returned it")
            return JobSnapshot(interaction_id, JobStatus.FAILED, error=error, raw_status=raw)
        # no video and no video tokens: the model answered in words instead, which is how a
        # safety refusal looks
        said = " ".join(_text(b.get("text")) for b in output if b.get("type") == "text")
        detail = self._safe(said)
        message = "Gemini declined to make this video" + (f": {detail}" if detail else "")
        error = Rejected(self.name, message, code="completed_without_video", reason=RejectReason.MODERATION)
        return JobSnapshot(interaction_id, JobStatus.FAILED, error=error, raw_status=raw)

    def _failure(self, raw: str, interaction: Mapping[str, Any]) -> ProviderError:
        found = _GoogleError()
        errors = interaction.get("errors")
        for item in errors if isinstance(errors, list) else []:
            found = _error_fields(item)
            if found.message or found.code:
                break
        if not (found.message or found.code):
            step_error = _as_dict(_last_step(interaction.get("steps"), "model_output").get("error"))
            if step_error:
                found = _error_fields(step_error)
        detail = self._safe(found.message)
        code = found.code or found.status or raw
        if found.words & _MODERATION_CODES or any(w in detail.lower() for w in _MODERATION_WORDS):
            text = "Gemini refused the video content" + (f": {detail}" if detail else "")
            return Rejected(self.name, text, code=code, reason=RejectReason.MODERATION)
        what = {
            "failed": "Gemini could not make the video",
            "cancelled": "the Gemini job was cancelled",
            "budget_exceeded": "the Gemini job ran out of its budget",
        }.get(raw, f"the Gemini job stopped ({raw})")
        return Unavailable(self.name, what + (f": {detail}" if detail else ""), code=code)

    async def reconcile(self, request: GenerationRequest) -> str | None:
        # No list endpoint and no lookup by label: an ambiguous create cannot be found again.
        return None

    # --- download ---------------------------------------------------------------------------------

    async def download(self, snapshot: JobSnapshot, dest: Path, max_bytes: int) -> DownloadResult:
        url = snapshot.download_url
        if not url:
            raise Rejected(self.name, "this job has no video to download")
        ours = _origin(url) == self._base_origin
        if ours:
            await self._check_file_ready(url)
        try:
            return await self._fetch(url, dest, max_bytes, with_key=ours)
        except DownloadTooLarge:
            raise Rejected(self.name, f"the video is larger than {max_bytes} bytes") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise Unavailable(self.name, f"video download failed ({type(exc).__name__})") from None
        except OSError as exc:
            raise Unavailable(self.name, f"could not store the video ({type(exc).__name__})") from None

    async def _check_file_ready(self, url: str) -> None:
        """A file can still be PROCESSING right after its interaction completed."""
        file_id = _file_id(urlsplit(url).path)
        if not file_id:
            return
        try:
            file = await self._get_file(file_id)
        except Rejected as exc:
            raise Rejected(self.name, "the video is no longer available on Gemini", code=exc.code) from None
        state = _text(file.get("state")).upper()
        if state == "FAILED":
            raise Rejected(self.name, "Gemini failed to store the finished video", code="file_failed")
        if state and state != "ACTIVE":
            raise Unavailable(
                self.name, "the video is not ready for download yet", code=state, retry_after=FILE_NOT_READY_RETRY
            )

    async def _fetch(self, url: str, dest: Path, max_bytes: int, *, with_key: bool) -> DownloadResult:
        # Redirects are followed by hand: the key goes to the configured API host only, never to
        # wherever a redirect points (a signed storage URL needs no key and must not see it).
        for hop in range(2):
            headers = {"x-goog-api-key": self._api_key.get_secret_value()} if with_key and hop == 0 else {}
            async with self._client.stream(
                "GET", url, headers=headers, timeout=self._timeout, follow_redirects=False
            ) as response:
                if response.is_redirect and hop == 0:
                    location = response.headers.get("location")
                    if not location:
                        raise Unavailable(self.name, "the video download redirected nowhere")
                    url = urljoin(url, location)
                    continue
                status = response.status_code
                if status == 200:
                    size, digest = await stream_to_file(response, dest, max_bytes)
                    content_type = response.headers.get("content-type", "video/mp4").split(";")[0].strip()
                    return DownloadResult(path=dest, size=size, content_type=content_type or "video/mp4", sha256=digest)
                if status == 401 and with_key and hop == 0:
                    raise AuthFailed(self.name, "Gemini refused the API key for the download (HTTP 401)")
                if status in (403, 404, 410):
                    raise Rejected(self.name, "the video is no longer available on Gemini", code=f"http-{status}")
                if status == 429:
                    wait = retry_after_seconds(response.headers)
                    raise RateLimited(self.name, "Gemini rate-limited the download", retry_after=wait)
                raise Unavailable(self.name, f"video download failed (HTTP {status})", code=f"http-{status}")
        raise Unavailable(self.name, "the video download redirected more than once")

    # --- transport --------------------------------------------------------------------------------

    def _safe(self, message: Any) -> str:
        """A provider message fit to show a member: one short line, our key masked."""
        if not isinstance(message, str):
            return ""
        return safe_message(message, (self._api_key.get_secret_value(),), limit=200)

    async def _call(
        self,
        method: str,
        url: str,
        *,
        phase: Phase,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        unknown_ok: bool = False,
    ) -> tuple[httpx.Response, Any]:
        """One API request: (response, parsed JSON) on success, else a mapped ProviderError.
        `unknown_ok`: an unknown-resource answer is returned (status != 200), not raised."""
        sent = dict(headers or {})
        if _origin(url) == self._base_origin:
            sent["x-goog-api-key"] = self._api_key.get_secret_value()
        try:
            response = await self._client.request(
                method, url, json=json, content=content, headers=sent, timeout=self._timeout
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise self._transport_error(exc, phase) from None
        data: Any = None
        readable = True
        try:
            data = response.json() if response.content else None
        except ValueError:
            readable = False
        if response.status_code == 200:
            if not readable or (data is None and phase != "upload"):
                # the server answered but we cannot read it: a create may have happened
                cls = Ambiguous if phase == "create" else Unavailable
                raise cls(self.name, "Gemini sent an unreadable answer")
            return response, data
        error = _error_fields(data)
        if unknown_ok and _is_unknown_resource(response.status_code, error):
            return response, None
        raise self._api_error(response, error, phase)

    def _transport_error(self, exc: Exception, phase: Phase) -> ProviderError:
        if isinstance(exc, httpx.HTTPError):
            # only a create can have had an effect that matters; an upload is simply made again
            return transport_error(self.name, exc, idempotent=phase != "create")
        return Unavailable(self.name, f"could not reach Gemini ({type(exc).__name__})")

    def _api_error(self, response: httpx.Response, error: _GoogleError, phase: Phase) -> ProviderError:
        http = response.status_code
        words = error.words
        detail = self._safe(error.message)
        lowered = error.message.lower()
        code = error.status or error.code or f"http-{http}"
        retry_after = error.retry_delay if error.retry_delay is not None else retry_after_seconds(response.headers)
        log.info("gemini %s error: http=%s status=%s code=%s message=%r", phase, http, error.status, error.code, detail)
        text = f"Gemini refused the request: {detail}" if detail else f"Gemini refused the request (HTTP {http})"
        name = self.name
        if words & _MODERATION_CODES or _MODERATION_TEXT.search(error.message):
            shown = f"Gemini refused the content: {detail}" if detail else "Gemini refused the content"
            return Rejected(name, shown, code=code, reason=RejectReason.MODERATION)
        if "API_KEY_INVALID" in words or any(r.startswith(_AUTH_REASON_PREFIXES) for r in error.reasons):
            # never echo the text of an auth error: it may quote the key back
            return AuthFailed(name, f"Gemini refused the API key (HTTP {http})", code=code)
        if http == 402 or words & _QUOTA_CODES or any(p in lowered for p in _QUOTA_PHRASES):
            return QuotaExhausted(name, "the Gemini account has no credit or billing enabled", code=code)
        if http == 429 or words & _RATE_CODES:
            return RateLimited(name, "Gemini is rate limiting this key", code=code, retry_after=retry_after)
        if http == 403 and "file" in lowered and "api key" not in lowered:
            # "You do not have permission to access the File ... or it may not exist": an
            # expired or foreign upload named in the request, not a bad key
            return Rejected(name, text, code=code, reason=RejectReason.INVALID)
        if "location is not supported" in lowered:
            return AuthFailed(name, "Gemini is not available from this server's location", code=code)
        if http in (401, 403) or words & _AUTH_CODES:
            return AuthFailed(name, f"Gemini refused the API key (HTTP {http})", code=code)
        if http == 404 or "NOT_FOUND" in words:
            return Rejected(name, f"{text} (model {self._model})", code=code, reason=RejectReason.UNSUPPORTED)
        if http == 503 or http == 408 or "UNAVAILABLE" in words:
            return Unavailable(name, "Gemini is overloaded or unavailable", code=code, retry_after=retry_after)
        if 400 <= http < 500:
            return Rejected(name, text, code=code, reason=RejectReason.INVALID)
        if phase == "create":
            # 500/502/504: the interaction may exist, so it is never sent again
            return Ambiguous(name, f"Gemini failed (HTTP {http}); the job may exist", code=code)
        return Unavailable(name, f"Gemini failed (HTTP {http}); will try again", code=code, retry_after=retry_after)


# --- helpers --------------------------------------------------------------------------------------


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""


def _origin(url: str) -> tuple[str, str, int | None]:
    try:
        parts = urlsplit(url)
        return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError:
        return "", "", None


def _error_fields(data: Any) -> _GoogleError:
    """Either error shape, bare or wrapped in a one-element array; never raises."""
    if isinstance(data, list) and data:
        data = data[0]
    body = _as_dict(data)
    err = body.get("error", body)
    if isinstance(err, str):
        return _GoogleError(message=err)
    err = _as_dict(err)
    found = _GoogleError(
        message=_text(err.get("message")), code=_text(err.get("code")), status=_text(err.get("status"))
    )
    reasons: list[str] = []
    details = err.get("details")
    for detail in details if isinstance(details, list) else []:
        item = _as_dict(detail)
        kind = _text(item.get("@type"))
        if kind.endswith("google.rpc.RetryInfo"):
            found.retry_delay = _duration_seconds(item.get("retryDelay"))
        elif kind.endswith("google.rpc.ErrorInfo") and _text(item.get("reason")):
            reasons.append(_text(item.get("reason")))
    found.reasons = tuple(reasons)
    return found


def _file_id(ref: str) -> str:
    """The id in a file's name (`files/abc`), URI or download path; "" when there is none."""
    match = _FILE_ID.search("/" + ref)
    return match.group(1) if match else ""


def _duration_seconds(value: Any) -> float | None:
    """A protobuf Duration as JSON ("22s", "1.5s") or as {"seconds", "nanos"}."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        return float(match.group(1)) if match else None
    if isinstance(value, dict):
        try:
            return max(0.0, float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9)
        except (TypeError, ValueError):
            return None
    return None


def _is_unknown_resource(http: int, error: _GoogleError) -> bool:
    """Gemini answers an unknown interaction id with 400 "Invalid interaction name" (a 404 is
    taken the same way)."""
    return http == 404 or (http == 400 and "invalid interaction name" in error.message.lower())


def _most_severe(errors: Sequence[ProviderError]) -> ProviderError:
    for kind in (AuthFailed, QuotaExhausted, RateLimited):
        for error in errors:
            if isinstance(error, kind):
                return error
    return errors[0]


def _last_step(steps: Any, kind: str) -> dict[str, Any]:
    for step in reversed(steps) if isinstance(steps, list) else []:
        if _as_dict(step).get("type") == kind:
            return _as_dict(step)
    return {}


def _last_model_output(steps: Any) -> list[dict[str, Any]]:
    """The content blocks of the last model_output step (where the video is)."""
    content = _last_step(steps, "model_output").get("content")
    return [_as_dict(b) for b in content] if isinstance(content, list) else []


def _video_tokens(usage: Any) -> int | None:
    by_modality = _as_dict(usage).get("output_tokens_by_modality")
    total: int | None = None
    for item in by_modality if isinstance(by_modality, list) else []:
        entry = _as_dict(item)
        tokens = entry.get("tokens")
        if _text(entry.get("modality")).lower() == "video" and isinstance(tokens, int) and not isinstance(tokens, bool):
            total = (total or 0) + max(0, tokens)
    return total


def _with_alt_media(uri: str) -> str:
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(k == "alt" for k, _ in query):
        return uri
    return urlunsplit(parts._replace(query=urlencode([*query, ("alt", "media")])))


def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _label_value(value: str) -> str:
    """Label values allow lowercase letters, digits, `_` and `-`, at most 63 characters."""
    return _LABEL_BAD.sub("-", value.lower())[:63]


def _share_images(frames: Sequence[int], budget: int) -> list[int]:
    """How many of its frames each character sends: every one its frontal frame first, then the
    remaining slots round-robin, so that no character is left with one view while another has five."""
    shares = [0] * len(frames)
    left = budget
    while left > 0:
        given = False
        for i, available in enumerate(frames):
            if left > 0 and shares[i] < available:
                shares[i] += 1
                left -= 1
                given = True
        if not given:
            break
    return shares


def _join(tokens: Sequence[str]) -> str:
    return tokens[0] if len(tokens) == 1 else ", ".join(tokens[:-1]) + " and " + tokens[-1]


def _who_is_who(ref: CharacterRef, images: Sequence[str], video: str | None) -> str:
    """One line telling the model which references show this character."""
    name = ref.asset.name
    line = f"{_join(images)} {'shows' if len(images) == 1 else 'show'} {name}"
    description = " ".join(ref.asset.description.split())[:DESCRIPTION_CHARS]
    if description and description.casefold() != name.casefold():
        line += f" ({description})"
    line += "."
    if video:
        line += f" {video} shows {name} in motion."
    return line


def _neutralise_stray_refs(prompt: str, ours: set[str]) -> str:
    """Drop the `@` of any `@word` that is not one of our reference tokens, so that text a member
    typed (an e-mail address, "@Image 9") cannot point the model at a reference it does not mean."""

    def keep_or_drop(match: re.Match[str]) -> str:
        return match.group(0) if match.group(0) in ours else match.group(0)[1:]

    return _AT_REF.sub(keep_or_drop, prompt)


def _cut_window(asset: CharacterAsset, dest: Path, length: float) -> bytes:
    """The clip's best window of at most `length` seconds, as MP4 bytes."""
    if not asset.clip_path.is_file():
        raise OSError("the stored clip is missing")
    duration = min(length, asset.clip_duration) if asset.clip_duration > 0 else length
    start = max(0.0, min(asset.best_window_start, asset.clip_duration - duration))
    trim_clip(asset.clip_path, dest, start, duration, max_side=CLIP_MAX_SIDE)
    return dest.read_bytes()


def _image_block(path: Path, provider: str) -> dict[str, Any]:
    """A frame as an inline image block (raw base64, its real mime type), re-encoded as JPEG when
    its format is not one Gemini takes or it is too large to send inline."""
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            mime = _IMAGE_MIMES.get(image.format or "")
            if mime is None or len(data) > INLINE_IMAGE_MAX_BYTES or max(image.size) > IMAGE_MAX_SIDE:
                data, mime = _reencode(image), "image/jpeg"
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError):
        raise Rejected(provider, "a reference frame of this character cannot be read") from None
    return {"type": "image", "data": base64.b64encode(data).decode("ascii"), "mime_type": mime}


def _reencode(image: Image.Image) -> bytes:
    rgb = image.convert("RGB")
    rgb.thumbnail((IMAGE_MAX_SIDE, IMAGE_MAX_SIDE), Image.Resampling.LANCZOS)
    for quality in (90, 75, 60, 45):
        out = io.BytesIO()
        rgb.save(out, format="JPEG", quality=quality)
        if out.tell() <= INLINE_IMAGE_MAX_BYTES:
            return out.getvalue()
    raise ValueError("frame too large even as JPEG")


__all__ = ["IMAGES_ONLY", "MODELS", "GeminiProvider", "ModelSpec", "spec_for"]
