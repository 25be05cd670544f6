"""The plain values the character service hands to cogs and to /generate."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bot.providers.base import CharacterAsset, CharacterHandle

VISIBILITIES = ("private", "server", "public")
SCOPES = ("server", "mine", "community")


@dataclass(frozen=True)
class Upload:
    """A Discord attachment, as plain values: checked before a single byte is downloaded."""

    url: str
    filename: str
    content_type: str | None
    size: int


@dataclass(frozen=True)
class CharacterView:
    id: int
    name: str  # as known in the actor's guild: the alias for an import
    original_name: str
    owner_id: int
    home_guild_id: int
    description: str
    visibility: str
    uses: int
    clip_duration: float
    created_at: float
    frontal: Path | None  # the frontal reference frame (JPEG)
    share_code: str | None  # shown while public (and to the owner, who may make it public again)
    imported: bool = False
    import_state: str | None = None  # for imports: ok | revoked | deleted
    imported_by: int | None = None
    is_owner: bool = False
    import_count: int = 0  # how many guilds imported it (owner's view)
    refused: Mapping[str, str] = field(default_factory=dict)  # provider -> why it refused
    preview: Path | None = None  # the looping animated preview (WebP), on create and info


@dataclass(frozen=True)
class Registration:
    provider: str
    outcome: str  # ready | refused | later
    reason: str = ""
    others: tuple[str, ...] = ()  # the guild's other providers, which may still take it


@dataclass(frozen=True)
class Created:
    character: CharacterView
    registration: Registration | None  # None: the preferred providers need no handle


@dataclass(frozen=True)
class Page:
    scope: str
    page: int  # 0-based, clamped into range
    pages: int
    total: int
    items: tuple[CharacterView, ...]
    gallery: bytes | None = None  # one JPEG of the items' frontal frames, numbered from 1


@dataclass(frozen=True)
class Deleted:
    name: str
    kind: str  # character | import
    imports_stopped: int = 0  # other guilds whose import of it stopped working


@dataclass(frozen=True)
class NameChoice:
    name: str
    kind: str  # own | import
    visibility: str  # private | server | public | deleted (a dead import)


@dataclass(frozen=True)
class JobChoice:
    job_id: int
    prompt: str
    created_at: float


@dataclass(frozen=True)
class UsableCharacter:
    """A character a member may use right now, as /generate needs it."""

    character_id: int
    key: str  # the name_key as mentioned (an import's alias key)
    name: str  # as known in this guild (the alias for an import)
    owner_id: int
    asset: CharacterAsset  # asset.name is the character's own name (what providers register)
    handles: dict[str, CharacterHandle]  # provider -> ready handle
    refused: dict[str, str]  # provider -> why it refused this character
