"""The interface every video provider adapter implements, its value types and its error taxonomy.

Castbot owns its characters (clip + reference frames); a provider-side character handle is only a
cache. Adapters translate between these types and one provider's wire protocol, and map every
failure onto the error classes below so that the money and routing code never sees HTTP details.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class Orientation(enum.StrEnum):
    PORTRAIT = "portrait"
    LANDSCAPE = "landscape"


class Quality(enum.StrEnum):
    STANDARD = "standard"
    PRO = "pro"


class MentionStyle(enum.StrEnum):
    """How a character is written into a prompt sent to the provider."""

    NAME_VERBATIM = "name_verbatim"  # openai: the registered name, plus characters:[{id}]
    AT_HANDLE = "at_handle"  # relay: @username
    ELEMENT_INDEX = "element_index"  # kling: @element_N, N = position in the element list
    CAPTION = "caption"  # local: the character's name, drawn as a caption
    REFERENCE_INDEX = "reference_index"  # gemini, fal: the model's token for the Nth reference (@Image1, @Video1...)


@dataclass(frozen=True)
class Capabilities:
    seconds: tuple[int, ...]  # the durations this provider accepts, ascending
    orientations: frozenset[Orientation]
    qualities: frozenset[Quality]
    max_characters: int
    needs_handle: bool  # a server-side character must be registered before use
    mention_style: MentionStyle
    batch_status: bool  # status() of many ids costs one request
    paid: bool  # False only for the offline local provider
    # reconcile() can prove a job was never created (it lists jobs or looks them up by our
    # reference), so an ambiguous submit that stays unfound past a grace period was never sent.
    authoritative_reconcile: bool = False
    # status() of many ids is read from a few pages of the provider's job list (newest first), so
    # asking about every job in flight at once costs a few requests, not one per job.
    status_by_list: bool = False
    # reference-to-video engines that cannot make a video without at least this many characters
    min_characters: int = 0
    # the least time between two looks at one job where each look is its own request and the
    # provider gives no hint (its renders take minutes): looking every POLL_MIN would cost more
    # requests than it saves lag
    poll_floor: float = 0.0
    # a finished job's download URL opens without our key, so members can be given it when the
    # video cannot be attached (Gemini's needs the key)
    shareable_results: bool = True
    # submit() passes request.callback_url on, and the provider calls it when the job changes
    callbacks: bool = False

    def fit_seconds(self, wanted: int) -> int:
        """The smallest allowed duration at least `wanted`, else the longest allowed."""
        for s in self.seconds:
            if s >= wanted:
                return s
        return self.seconds[-1]


@dataclass(frozen=True)
class CharacterAsset:
    """The bot's own copy of a character: what any provider can be registered from."""

    character_id: int
    name: str  # as the owner typed it (Unicode word characters)
    description: str
    clip_path: Path  # the stored source clip (2-20 s)
    frame_paths: tuple[Path, ...]  # JPEG reference frames; [0] is the sharp frontal frame
    clip_duration: float  # seconds
    best_window_start: float = 0.0  # start of the best short window inside the clip
    clip_url: str | None = None  # a currently reachable URL of the clip, when one is known


@dataclass(frozen=True)
class CharacterHandle:
    """A provider-side registration of a character."""

    provider: str
    external_id: str
    mention_token: str  # what stands in the prompt (e.g. "@hfspncadz.mooflapand", "Mossy")
    # Unix time after which the provider forgets it (uploaded media that expire); None: never.
    # An expired handle is registered again, lazily, at the next use.
    expires_at: float | None = None


@dataclass(frozen=True)
class CharacterRef:
    """A character as used in one generation request."""

    key: str  # casefolded name as mentioned in the member's prompt (the @name without '@')
    asset: CharacterAsset
    handle: CharacterHandle | None = None  # required when capabilities.needs_handle


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str  # the member's prompt with @name mentions, as typed
    seconds: int
    orientation: Orientation
    quality: Quality
    characters: tuple[CharacterRef, ...] = ()  # in order of first mention
    client_ref: str = ""  # our job id; sent where the API allows, used to reconcile ambiguous submits
    # where the provider may POST when the job changes (a wake-up only; see bot/services/webhooks.py)
    callback_url: str | None = None


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED)


@dataclass(frozen=True)
class JobSnapshot:
    """What a provider says about one of its jobs right now."""

    external_id: str
    status: JobStatus
    progress: int | None = None  # 0-100 when the provider reports it
    error: ProviderError | None = None  # set when status is FAILED
    poll_after: float | None = None  # seconds, from provider hints (openai-poll-after-ms, Retry-After)
    download_url: str | None = None
    actual_cost_micros: int | None = None  # when the provider reports what it billed
    raw_status: str = ""  # the provider's own word, for logs


@dataclass(frozen=True)
class SubmitResult:
    external_id: str
    snapshot: JobSnapshot


# --- errors ---------------------------------------------------------------------------------------


class RejectReason(enum.StrEnum):
    MODERATION = "moderation"  # the provider refused the content; never retried elsewhere
    INVALID = "invalid"  # the request is malformed for this provider
    UNSUPPORTED = "unsupported"  # this provider cannot do it (model gone, size, likeness...)


@dataclass
class ProviderError(Exception):
    """Base of every adapter error. `message` is safe to show a member (no secrets, no raw bodies)."""

    provider: str
    message: str
    code: str | None = None  # the provider's own error code, for logs and support
    retry_after: float | None = None  # seconds, when the provider said so

    def __str__(self) -> str:
        return f"{self.provider}: {self.message}" + (f" ({self.code})" if self.code else "")


@dataclass
class NotSent(ProviderError):
    """Definitely not accepted: safe to retry later or fall back to another provider."""


@dataclass
class RateLimited(NotSent):
    # The account is at its limit of jobs at once (fal starts accounts at 2): the job waits its
    # turn in Castbot's queue until its deadline, and the provider is not counted as failing.
    account_busy: bool = False


@dataclass
class Unavailable(NotSent):
    """Transient: overloaded, 503, connect error."""


@dataclass
class AuthFailed(NotSent):
    """The key is wrong or revoked: the provider should be disabled until a moderator re-enables it."""


@dataclass
class QuotaExhausted(NotSent):
    """The provider account has no balance left: disable like AuthFailed."""


@dataclass
class Rejected(ProviderError):
    """Definitive refusal of this request; never retried on the same provider."""

    reason: RejectReason = RejectReason.INVALID


@dataclass
class Ambiguous(ProviderError):
    """The request may have been accepted (read timeout, 500/502/504, dropped connection).

    Never resubmitted: keep the hold and reconcile.
    """


@dataclass
class StatusIncomplete(Unavailable):
    """status() read some of the jobs but not the others: `answered` holds what it read; the rest
    could not be read this time (this error says why) and must be asked about again, never taken
    as unknown to the provider."""

    answered: Mapping[str, JobSnapshot] = field(default_factory=dict)


# --- the interface --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    size: int
    content_type: str = "video/mp4"
    sha256: str | None = None  # hashed while streaming, so the file need not be read again


class VideoProvider(ABC):
    """One video provider. Adapters share one httpx.AsyncClient and never raise anything but
    ProviderError subclasses from their public coroutines."""

    name: str
    capabilities: Capabilities

    @abstractmethod
    def estimate(self, request: GenerationRequest) -> int:
        """Worst-case cost of `request` in micro-USD, so that the actual cost never exceeds it."""

    @abstractmethod
    async def register_character(self, asset: CharacterAsset) -> CharacterHandle:
        """Create the provider-side character from the stored clip/frames."""

    @abstractmethod
    async def submit(self, request: GenerationRequest) -> SubmitResult:
        """Start a generation. Raises NotSent / Rejected / Ambiguous subclasses on failure."""

    @abstractmethod
    async def status(self, external_ids: Sequence[str]) -> Mapping[str, JobSnapshot]:
        """Current state of the given jobs; ids the provider does not know are left out.

        Raises a ProviderError when it could read none of them, StatusIncomplete when it read only
        some."""

    @abstractmethod
    async def download(self, snapshot: JobSnapshot, dest: Path, max_bytes: int) -> DownloadResult:
        """Stream the finished video to `dest`; raise Rejected(INVALID) past `max_bytes`."""

    async def reconcile(self, request: GenerationRequest) -> str | None:
        """After an Ambiguous submit: the external id of the job it created, if it can be found."""
        return None

    def actual_cost(self, request: GenerationRequest, snapshot: JobSnapshot) -> int:
        """What a succeeded job cost; never more than estimate(request)."""
        if snapshot.actual_cost_micros is not None:
            return min(snapshot.actual_cost_micros, self.estimate(request))
        return self.estimate(request)

    @property
    def model(self) -> str:
        """The engine this adapter asks for at standard quality (shown in /about); "" if it has one."""
        return ""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most adapters own nothing
        """Release resources the adapter owns (not the shared HTTP client)."""
