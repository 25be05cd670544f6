"""Provider-side handles of characters: a cache, registered from the bot's own clip and frames.

A definitive refusal (the provider will not take this character: likeness, moderation, too few
frames) is remembered as a `refused` row so the next request neither uploads it again nor hides
why; anything transient stores nothing and is retried at the next use.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

from bot.db import Database
from bot.providers.base import CharacterHandle, ProviderError, Rejected, RejectReason, VideoProvider
from bot.services.characters.files import KeyedLocks
from bot.services.characters.values import UsableCharacter
from bot.store import characters as store

REFUSING = (RejectReason.UNSUPPORTED, RejectReason.MODERATION)
NOT_A_REFUSAL = {"clip_url_missing"}  # relay: no clip URL known *now*; a later upload may bring one
REMEMBERED = "refused"  # the code of a Rejected raised from a stored refusal
URL_MARGIN = 300.0  # seconds: the provider fetches a clip URL some time after we send it
# A handle this close to its expiry is registered again: a job sent with it may wait in the
# provider's queue, and the provider reads the media only when the job starts.
HANDLE_MARGIN = 3600.0


def unexpired(url: str | None, now: float) -> str | None:
    """`url`, unless it is a signed Discord CDN URL past (or close to) its `ex` expiry: sending
    one would only make the provider fail to fetch it. Then the provider says it needs a clip
    URL, and the job moves on to a provider that takes the stored clip."""
    if url is None:
        return None
    ex = parse_qs(urlsplit(url).query).get("ex")
    try:
        expires = int(ex[0], 16) if ex else None
    except ValueError:
        return url
    return url if expires is None or expires - URL_MARGIN > now else None


def fresh(expires_at: float | None, now: float) -> bool:
    """Whether a handle with this expiry can still be sent to its provider."""
    return expires_at is None or expires_at - HANDLE_MARGIN > now


def is_refusal(error: ProviderError) -> bool:
    """Whether `error` means this provider will never take this character."""
    return isinstance(error, Rejected) and error.reason in REFUSING and error.code not in NOT_A_REFUSAL


class HandleRegistry:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        # one registration per (character, provider) at a time: a second caller waits, then
        # finds the handle the first one stored
        self._locks = KeyedLocks()
        # The last clip URL seen per character (the member's upload on Discord's CDN). A provider
        # that registers only from a URL (the relay) can then still register at first use when
        # it could not at creation. Kept in memory: such URLs are signed and expire anyway.
        self._clip_urls: dict[int, str] = {}

    @property
    def busy(self) -> int:
        """Registrations in progress (or waiting); 0 when idle."""
        return len(self._locks)

    async def ensure(
        self, character: UsableCharacter, provider: VideoProvider, *, clip_url: str | None = None
    ) -> CharacterHandle:
        if clip_url:
            self._clip_urls[character.character_id] = clip_url
        else:
            clip_url = unexpired(self._clip_urls.get(character.character_id), self._clock())
        async with self._locks.hold((character.character_id, provider.name)):
            known = await self._known(character, provider.name)
            if known is not None:
                return known
            asset = character.asset if clip_url is None else replace(character.asset, clip_url=clip_url)
            try:
                handle = await provider.register_character(asset)
            except Rejected as exc:
                if is_refusal(exc):
                    await self.mark_refused(character.character_id, provider.name, exc.message)
                raise
            await self.save(character.character_id, handle)
            return handle

    def forget(self, character_id: int) -> None:
        """The character's clip changed (/character edit): its old upload URL must not be sent."""
        self._clip_urls.pop(character_id, None)

    async def _known(self, character: UsableCharacter, provider: str) -> CharacterHandle | None:
        """The stored handle; a stored refusal is raised again (no new upload)."""
        for row in await store.handles(self._db, [character.character_id]):
            if row.provider != provider:
                continue
            if row.state == "ready" and row.external_id is not None and fresh(row.expires_at, self._clock()):
                return CharacterHandle(
                    row.provider, row.external_id, row.mention_token or character.asset.name, row.expires_at
                )
            if row.state == "refused":
                raise Rejected(provider, row.error or "refused", code=REMEMBERED, reason=RejectReason.UNSUPPORTED)
        return None

    async def save(self, character_id: int, handle: CharacterHandle) -> None:
        await store.put_handle(
            self._db,
            character_id,
            handle.provider,
            state="ready",
            external_id=handle.external_id,
            mention_token=handle.mention_token,
            error=None,
            now=self._clock(),
            expires_at=handle.expires_at,
        )

    async def mark_refused(self, character_id: int, provider: str, reason: str) -> None:
        await store.put_handle(
            self._db,
            character_id,
            provider,
            state="refused",
            external_id=None,
            mention_token=None,
            error=reason[:500],
            now=self._clock(),
        )
