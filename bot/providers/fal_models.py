"""The fal.ai reference-to-video models Castbot can drive, one table entry per endpoint.

Every model on fal speaks the same queue protocol (bot/providers/fal.py); what differs is the
model input: which field carries the character references, what each reference is (a Kling
"element" built from frames, a single frame, or the character's clip), how the prompt points at
the Nth reference, which durations/aspect ratios/resolutions exist and what a second costs.
Adding a model is one entry here plus its case in tests/integration/test_provider_fal.py.

Facts marked UNVERIFIED come from third-party pages or are inferred from a sibling model; they
are kept here (not hidden in code) so that one edit fixes them once a live call shows otherwise.
Prices are micro-USD per second of output for what the adapter sends (no audio, our references);
operators override any of them with PRICE_OVERRIDES["fal:<endpoint id>:<unit>"].
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bot.providers.pricing import usd_to_micros

DEFAULT_UNIT = "default"  # the price unit of a model that has no resolution field


class RefKind(enum.StrEnum):
    """What one character becomes in the model input."""

    ELEMENT = "element"  # {frontal_image_url, reference_image_urls[]} (Kling O-series)
    IMAGE = "image"  # the character's frontal frame
    VIDEO = "video"  # the character's trimmed clip


class DurationStyle(enum.StrEnum):
    INT = "int"  # 5
    DIGITS = "digits"  # "5"
    SECONDS = "seconds"  # "8s"

    def wire(self, seconds: int) -> int | str:
        if self is DurationStyle.INT:
            return seconds
        if self is DurationStyle.DIGITS:
            return str(seconds)
        return f"{seconds}s"


@dataclass(frozen=True)
class FalModel:
    endpoint_id: str
    label: str  # for logs and messages
    ref_kind: RefKind
    refs_field: str  # the input field holding the references, in order
    # The prompt token of the Nth reference, formatted with n (1-based) and i (0-based); None:
    # the model has no token and the prompt names the characters in words instead.
    mention: str | None
    min_refs: int
    max_refs: int
    durations: tuple[int, ...]  # ascending
    duration_style: DurationStyle
    aspect_ratios: frozenset[str]
    # unit -> micro-USD per second; the unit is the value sent in `resolution_field`, or
    # DEFAULT_UNIT when the model takes no resolution.
    prices: Mapping[str, int]
    standard_unit: str
    pro_unit: str | None  # a higher resolution of the same endpoint, when it has one
    resolution_field: str | None = "resolution"
    audio_field: str | None = None  # sent as False: we never pay for generated audio
    max_prompt_chars: int = 2500
    fixed: Mapping[str, Any] = field(default_factory=dict)  # constant extra inputs
    unverified: tuple[str, ...] = ()  # which of the facts above are guesses

    def fit_seconds(self, wanted: int) -> int:
        """The shortest allowed duration at least `wanted`, else the longest."""
        return next((s for s in self.durations if s >= wanted), self.durations[-1])

    def token_for(self, index: int) -> str | None:
        """The prompt token of reference `index` (0-based), or None for a model without tokens."""
        return None if self.mention is None else self.mention.format(n=index + 1, i=index)


def _usd(amount: str, factor: str = "1") -> int:
    return usd_to_micros(Decimal(amount) * Decimal(factor))


_WIDE_TALL = frozenset({"16:9", "9:16"})
_KLING_RATIOS = frozenset({"16:9", "9:16", "1:1"})

MODELS: dict[str, FalModel] = {
    m.endpoint_id: m
    for m in (
        # Wan 2.6 R2V takes the reference *videos* themselves: exactly what Castbot stores.
        FalModel(
            endpoint_id="wan/v2.6/reference-to-video",
            label="Wan 2.6 reference-to-video",
            ref_kind=RefKind.VIDEO,
            refs_field="video_urls",
            mention="@Video{n}",
            min_refs=1,
            max_refs=3,
            durations=(5, 10),
            duration_style=DurationStyle.DIGITS,
            aspect_ratios=frozenset({"16:9", "9:16", "1:1", "4:3", "3:4"}),
            prices={"720p": _usd("0.10"), "1080p": _usd("0.15")},
            standard_unit="720p",
            pro_unit="1080p",
            unverified=("token: the docs use @Video1 and also say 'character1'", "duration sent as a string"),
        ),
        FalModel(
            endpoint_id="fal-ai/kling-video/o1/reference-to-video",
            label="Kling O1 reference-to-video",
            ref_kind=RefKind.ELEMENT,
            refs_field="elements",
            mention="@Element{n}",
            min_refs=0,
            max_refs=7,
            durations=tuple(range(3, 11)),
            duration_style=DurationStyle.DIGITS,
            aspect_ratios=_KLING_RATIOS,
            prices={DEFAULT_UNIT: _usd("0.112")},
            standard_unit=DEFAULT_UNIT,
            pro_unit=None,
            resolution_field=None,
            unverified=("duration sent as a string", "1-3 reference_image_urls per element"),
        ),
        FalModel(
            endpoint_id="fal-ai/kling-video/o3/standard/reference-to-video",
            label="Kling O3 standard reference-to-video",
            ref_kind=RefKind.ELEMENT,
            refs_field="elements",
            mention="@Element{n}",
            min_refs=0,
            max_refs=7,  # 4 when a video element is given; we give frames only
            durations=tuple(range(3, 16)),
            duration_style=DurationStyle.DIGITS,
            aspect_ratios=_KLING_RATIOS,
            # fal publishes only the 4K price; Kling's own list price with audio, to stay high
            prices={DEFAULT_UNIT: _usd("0.112")},
            standard_unit=DEFAULT_UNIT,
            pro_unit=None,
            resolution_field=None,
            audio_field="generate_audio",
            unverified=("price", "duration sent as a string", "1-3 reference_image_urls per element"),
        ),
        FalModel(
            endpoint_id="fal-ai/kling-video/o3/pro/reference-to-video",
            label="Kling O3 pro reference-to-video",
            ref_kind=RefKind.ELEMENT,
            refs_field="elements",
            mention="@Element{n}",
            min_refs=0,
            max_refs=7,
            durations=tuple(range(3, 16)),
            duration_style=DurationStyle.DIGITS,
            aspect_ratios=_KLING_RATIOS,
            prices={DEFAULT_UNIT: _usd("0.14")},  # Kling's own 1080p-with-audio list price
            standard_unit=DEFAULT_UNIT,
            pro_unit=None,
            resolution_field=None,
            audio_field="generate_audio",
            unverified=("price", "duration sent as a string", "1-3 reference_image_urls per element"),
        ),
        # Seedance takes images, videos and audio; we send each character's clip, which also
        # makes the second cheaper (x0.6 with video input).
        FalModel(
            endpoint_id="bytedance/seedance-2.0/reference-to-video",
            label="Seedance 2.0 reference-to-video",
            ref_kind=RefKind.VIDEO,
            refs_field="video_urls",
            mention="@Video{n}",
            min_refs=0,
            max_refs=3,
            durations=tuple(range(4, 16)),
            duration_style=DurationStyle.DIGITS,
            aspect_ratios=frozenset({"21:9", "16:9", "4:3", "1:1", "3:4", "9:16"}),
            prices={"720p": _usd("0.3024", "0.6"), "1080p": _usd("0.6804", "0.6")},
            standard_unit="720p",
            pro_unit="1080p",
            audio_field="generate_audio",
            unverified=("1080p price (2.25x the 720p one, by pixels)", "durations 4-15 as strings"),
        ),
        FalModel(
            endpoint_id="fal-ai/vidu/q3/reference-to-video/mix",
            label="Vidu Q3 reference-to-video",
            ref_kind=RefKind.IMAGE,
            refs_field="reference_image_urls",
            mention=None,
            min_refs=1,
            max_refs=4,
            durations=tuple(range(1, 17)),
            duration_style=DurationStyle.INT,
            aspect_ratios=frozenset({"16:9", "9:16", "1:1"}),
            prices={"720p": _usd("0.07", "2.2"), "1080p": _usd("0.07", "2.2")},
            standard_unit="720p",
            pro_unit="1080p",
            unverified=("aspect ratios", "duration sent as an integer"),
        ),
        FalModel(
            endpoint_id="fal-ai/veo3.1/reference-to-video",
            label="Veo 3.1 reference-to-video",
            ref_kind=RefKind.IMAGE,
            refs_field="image_urls",
            mention=None,
            min_refs=1,
            max_refs=3,
            durations=(8,),
            duration_style=DurationStyle.SECONDS,
            aspect_ratios=_WIDE_TALL,
            prices={"720p": _usd("0.20"), "1080p": _usd("0.20"), "4k": _usd("0.40")},
            standard_unit="720p",
            pro_unit="1080p",
            audio_field="generate_audio",
            unverified=("still served after the Gemini-API Veo shutdown",),
        ),
        FalModel(
            endpoint_id="google/gemini-omni-flash/reference-to-video",
            label="Gemini Omni Flash reference-to-video",
            ref_kind=RefKind.IMAGE,
            refs_field="image_urls",
            mention="<IMAGE_REF_{i}>",
            min_refs=1,
            max_refs=3,
            durations=tuple(range(3, 11)),
            duration_style=DurationStyle.INT,
            aspect_ratios=_WIDE_TALL,
            prices={DEFAULT_UNIT: _usd("0.135")},  # token-metered, about $0.13/s at 720p
            standard_unit=DEFAULT_UNIT,
            pro_unit=None,
            resolution_field=None,
            unverified=("price (token-metered)", "at most 3 references"),
        ),
    )
}


def model(endpoint_id: str) -> FalModel:
    """The table entry of `endpoint_id`; a clear ValueError naming the known ones otherwise."""
    try:
        return MODELS[endpoint_id]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ValueError(f"unknown fal model {endpoint_id!r}; known models: {known}") from None


__all__ = ["DEFAULT_UNIT", "MODELS", "DurationStyle", "FalModel", "RefKind", "model"]
