"""Rebuild a provider request from a stored job row."""

from __future__ import annotations

from collections.abc import Sequence

from bot.domain.jobs import Job
from bot.providers.base import CharacterRef, GenerationRequest, Orientation, Quality
from bot.services.characters import CharacterService, UsableCharacter


def request_of(job: Job, refs: Sequence[CharacterRef] = (), client_ref: str = "") -> GenerationRequest:
    r = job.request
    return GenerationRequest(
        prompt=job.prompt,
        seconds=int(r["seconds"]),
        orientation=Orientation(r["orientation"]),
        quality=Quality(r["quality"]),
        characters=tuple(refs),
        client_ref=client_ref,
    )


async def characters_of(characters: CharacterService, job: Job) -> list[UsableCharacter]:
    """The job's characters as admitted, under the names (aliases) its prompt used."""
    chosen = job.request["characters"]
    return await characters.load(
        [c["id"] for c in chosen], keys=[c["key"] for c in chosen], names=[c["name"] for c in chosen]
    )
