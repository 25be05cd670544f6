"""The community gallery (/character browse and its card buttons) and /character edit.

A companion of CharacterService in the same package: it reuses its lookups, name rules, upload
checks, file pipeline and provider registration, so a card, an import from a card and an edited
clip follow exactly the rules of create, info and import.

Rules:
- the gallery lists characters that are public, live, not hidden after reports and not taken
  down, from every guild; search matches the name, description and tags (any word order, each word
  a prefix, case and accents ignored); sort by `popular` (most used), `newest` or `name`;
- only a character's owner edits it, in its own guild; an import is the importer's alias for
  someone else's character: it follows the owner's edits (description, tags, clip, even the
  character's own name) and keeps its alias;
- a new name follows create's rules (validity, free in the guild, no look-alike of another name);
- a new clip goes through create's pipeline (checks, frames, preview); the provider handles are
  dropped, so every provider registers the new clip at the next use; the old clip and frames are
  recorded and deleted by the storage janitor once no open job names the character.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bot.db import Connection, Database
from bot.errors import UserFacingError
from bot.media.preview import gallery as frame_sheet
from bot.prompts import clean_member_text, name_key, name_skeleton
from bot.services.actors import Actor
from bot.services.characters.errors import BadChoice, CharacterNotFound
from bot.services.characters.files import Frames
from bot.services.characters.service import MAX_DESCRIPTION, CharacterService
from bot.services.characters.text import shown
from bot.services.characters.values import CharacterView, Registration, Upload
from bot.services.storage import refused_when_full
from bot.store import characters as character_store
from bot.store import gallery as store
from bot.store.characters import Listed

SORTS = ("popular", "newest", "name")
MAX_QUERY = 60  # characters of a search (it rides in the page buttons' custom ids)
MAX_TAGS = 8
COUNT_CAP = 1000  # matches counted exactly; past it, "more than 1,000"
TAG_MIN, TAG_MAX = 2, 24
CLEAR = "-"  # `description:-` or `tags:-` removes them


# --- refusals (bot/locales/*/gallery.json) ---------------------------------------------------------


class CannotEdit(UserFacingError):
    def __init__(self, name: str) -> None:
        super().__init__("gallery.edit.not_owner", name=shown(name))


class EditImport(UserFacingError):
    def __init__(self, alias: str) -> None:
        super().__init__("gallery.edit.import", name=shown(alias))


class NothingToEdit(UserFacingError):
    def __init__(self) -> None:
        super().__init__("gallery.edit.nothing")


class InvalidTags(UserFacingError):
    def __init__(self, reason: str, tag: str = "") -> None:
        super().__init__(f"gallery.tags.{reason}", tag=shown(tag, 30), max=MAX_TAGS, min=TAG_MIN, longest=TAG_MAX)
        self.reason = reason


class NotInGallery(UserFacingError):
    def __init__(self) -> None:
        super().__init__("gallery.gone")


# --- values ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GalleryCard:
    character: CharacterView  # with its animated preview when one can be made
    tags: tuple[str, ...]
    videos: int  # videos made with it, in every guild
    servers: int  # guilds that made them


@dataclass(frozen=True)
class GalleryPage:
    query: str
    sort: str
    page: int  # 0-based, clamped into range
    pages: int
    total: int
    card: GalleryCard | None  # None: nothing matches
    more: bool = False  # more than `total` (COUNT_CAP) match; `pages` is then a lower bound
    has_next: bool = False


@dataclass(frozen=True)
class Edited:
    character: CharacterView
    tags: tuple[str, ...]
    changed: tuple[str, ...]  # of: name, description, tags, video
    old_name: str
    registration: Registration | None = None  # after a new clip


def parse_tags(text: str) -> tuple[str, ...]:
    """Comma-separated tags, each normalised: case folded, compatibility forms unified, a leading
    `#` dropped, inner spaces made `-`; 2–24 letters, digits, `-` or `_`; at most 8, duplicates
    dropped. `-` alone clears them. Refusals name the offending tag."""
    if text.strip() == CLEAR:
        return ()
    out: list[str] = []
    for raw in clean_member_text(text).split(","):
        tag = "-".join(unicodedata.normalize("NFKC", raw).casefold().strip().lstrip("#").split())
        if not tag:
            continue
        if not all(ch.isalnum() or ch in "-_" for ch in tag) or not any(ch.isalnum() for ch in tag):
            raise InvalidTags("invalid", tag)
        if len(tag) < TAG_MIN:
            raise InvalidTags("too_short", tag)
        if len(tag) > TAG_MAX:
            raise InvalidTags("too_long", tag)
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_TAGS:
        raise InvalidTags("too_many")
    return tuple(out)


def split_tags(stored: str) -> tuple[str, ...]:
    return tuple(t for t in stored.split(",") if t)


# --- the service ----------------------------------------------------------------------------------


class GalleryService:
    def __init__(
        self,
        db: Database,
        characters: CharacterService,
        *,
        clock: Callable[[], float] = time.time,
        count_cap: int = COUNT_CAP,
    ) -> None:
        self._db = db
        self._count_cap = count_cap
        self._chars = characters
        self._files = characters.files
        self._clock = clock

    # --- browse -----------------------------------------------------------------------------------

    async def browse(self, actor: Actor, query: str = "", sort: str = "popular", page: int = 0) -> GalleryPage:
        """One card of the gallery, `page` of the matches in `sort` order. Past `count_cap` matches
        the total is "more than count_cap" and the next page exists while a next row does."""
        self._chars.guild_of(actor)
        if sort not in SORTS:
            raise BadChoice("sort", sort)
        query = " ".join(query.split())[:MAX_QUERY]
        match = store.match_expression(query)
        if match is None and query:
            return GalleryPage(query, sort, 0, 1, 0, None)  # nothing searchable was typed
        total = await store.count(self._db, match, self._count_cap + 1)
        more = total > self._count_cap
        total = min(total, self._count_cap)
        page = max(page, 0) if more else min(max(page, 0), max(total - 1, 0))
        rows = await store.search(self._db, match, sort, 2, page, broad=more) if total else []
        if not rows and page > 0:  # the gallery shrank under a deep page: back to the first
            page = 0
            rows = await store.search(self._db, match, sort, 2, 0, broad=more)
        card = await self._card(actor, rows[0]) if rows else None
        pages = max(1, total) if not more else max(total, page + len(rows))
        return GalleryPage(query, sort, page, pages, total, card, more=more, has_next=len(rows) > 1)

    async def card(self, actor: Actor, character_id: int) -> GalleryCard:
        """A card's details (its Info button), while the character is in the gallery."""
        self._chars.guild_of(actor)
        row = await store.in_gallery(self._db, character_id)
        if row is None:
            raise NotInGallery()
        return await self._card(actor, row)

    async def name_of(self, actor: Actor, character_id: int) -> str:
        """A card's character's own name, while it is in the gallery (Import asks for the alias)."""
        self._chars.guild_of(actor)
        row = await store.in_gallery(self._db, character_id)
        if row is None:
            raise NotInGallery()
        return row.character.name

    async def frames_sheet(self, card: GalleryCard) -> bytes | None:
        """One picture of the character's reference frames, side by side (for Info)."""
        row = await character_store.get(self._db, card.character.id)
        if row is None or not row.frame_paths:
            return None
        paths = [self._files.path(p) for p in row.frame_paths]
        return await asyncio.to_thread(frame_sheet, paths)

    async def import_from_card(self, actor: Actor, character_id: int, alias: str | None) -> CharacterView:
        """A card's Import: the character's share code, imported as /character import would."""
        self._chars.guild_of(actor)
        row = await store.in_gallery(self._db, character_id)
        if row is None or row.character.share_code is None:
            raise NotInGallery()
        return await self._chars.import_character(actor, row.character.share_code, alias)

    async def _card(self, actor: Actor, row: store.GalleryRow) -> GalleryCard:
        view = await self._chars.view_of(actor, Listed(row.character), preview=True)
        usage = await store.usage(self._db, row.character.id)
        return GalleryCard(view, split_tags(row.tags), usage.videos, usage.servers)

    # --- edit -------------------------------------------------------------------------------------

    async def edit(
        self,
        actor: Actor,
        name: str,
        *,
        new_name: str | None = None,
        description: str | None = None,
        tags: str | None = None,
        upload: Upload | None = None,
    ) -> Edited:
        """The owner changes any of name, description, tags and clip, all in one transaction."""
        guild_id = self._chars.guild_of(actor)
        if new_name is None and description is None and tags is None and upload is None:
            raise NothingToEdit()
        entry = await self._chars.lookup(actor, guild_id, name, others_private=False)
        if entry.via is not None:
            raise EditImport(entry.via.alias)
        row = entry.character
        if row.owner_id != actor.user_id:
            raise CannotEdit(row.name)
        # every cheap check before a byte is downloaded
        clean_name = self._chars.valid_name(new_name) if new_name is not None else None
        renaming = clean_name is not None and clean_name != row.name
        # a new spelling of its own name (case, a look-alike) is not taken by anyone else
        claim = renaming and clean_name is not None and name_skeleton(clean_name) != name_skeleton(row.name)
        new_tags = ",".join(parse_tags(tags)) if tags is not None else None
        new_description = None
        if description is not None:
            text = "" if description.strip() == CLEAR else description
            new_description = " ".join(clean_member_text(text).split())[:MAX_DESCRIPTION]
        if upload is not None:
            self._chars.check_upload(upload)
        if claim and clean_name is not None:
            await self._chars.require_free(guild_id, clean_name)
        changed = tuple(
            field
            for field, value in (
                ("name", clean_name if renaming else None),
                ("description", new_description),
                ("tags", new_tags),
                ("video", upload),
            )
            if value is not None
        )

        async def write(conn: Connection, clip: _NewClip | None) -> None:
            now = self._clock()
            current = await character_store.get(conn, row.id)
            if current is None or current.deleted_at is not None:
                raise CharacterNotFound(name)
            if renaming and clean_name is not None:
                await store.rename(conn, row.id, clean_name, name_key(clean_name), name_skeleton(clean_name), now)
            if new_description is not None:
                await store.set_description(conn, row.id, new_description, now)
            if new_tags is not None:
                await store.set_tags(conn, row.id, new_tags, now)
            if clip is not None:
                await store.replace_clip(
                    conn,
                    current,
                    clip_sha256=clip.sha256,
                    clip_path=clip.path,
                    clip_duration=clip.duration,
                    best_window_start=clip.window,
                    frame_paths=clip.frames,
                    now=now,
                )

        @asynccontextmanager
        async def transaction() -> AsyncIterator[Connection]:
            if claim and clean_name is not None:
                async with self._chars.claim_name(guild_id, clean_name) as conn:
                    yield conn
            else:
                async with self._db.transaction() as conn:
                    yield conn

        registration = None
        if upload is None:
            async with transaction() as conn:
                await write(conn, None)
        else:
            await self._chars.require_space()
            await self._replace_clip(row.id, upload, transaction, write)
            await self._drop_preview(row.id)
            self._chars.handles.forget(row.id)
            fresh = await character_store.get(self._db, row.id)
            assert fresh is not None
            registration = await self._chars.register_preferred(fresh, guild_id, upload.url)
        fresh = await character_store.get(self._db, row.id)
        assert fresh is not None
        view = await self._chars.view_of(actor, Listed(fresh), detailed=True)
        return Edited(view, split_tags(await store.tags_of(self._db, row.id)), changed, row.name, registration)

    async def _replace_clip(
        self,
        character_id: int,
        upload: Upload,
        transaction: Callable[[], contextlib.AbstractAsyncContextManager[Connection]],
        write: Callable[[Connection, _NewClip | None], Awaitable[None]],
    ) -> None:
        """create's pipeline for the new clip (download with the cap, probe, frames), then the
        row written inside the clip's lock, so the janitor never takes a clip a row is about to name."""
        files = self._files
        tmp = files.temporary("upload")
        try:
            with refused_when_full():
                sha = await files.download(upload.url, tmp)
                async with files.clip_locks.hold(sha):
                    clip = await files.store_clip(tmp, sha, owned=True)
                    try:
                        twins = [
                            (t.frame_paths, t.best_window_start)
                            for t in await character_store.with_same_clip(self._db, sha)
                        ]
                        frames = await files.frames(clip, twins)
                        try:
                            placed = await asyncio.to_thread(_place_frames, files.data, frames, character_id)
                            try:
                                new = _NewClip(sha, clip.relative, clip.duration, frames.best_window_start, placed)
                                async with transaction() as conn:
                                    await write(conn, new)
                            except BaseException:
                                await asyncio.to_thread(_remove, [files.path(p) for p in placed])
                                raise
                        finally:
                            await files.discard_frames(frames.folder)
                    except BaseException:
                        if not await character_store.clip_in_use(self._db, sha):
                            await files.discard_clip(clip)
                        raise
        finally:
            await files.discard(tmp)

    async def _drop_preview(self, character_id: int) -> None:
        """The next card or info makes the preview again, from the new clip."""
        path = self._files.preview_path(character_id)
        async with self._files.preview_locks.hold(character_id):
            await asyncio.to_thread(path.unlink, True)


@dataclass(frozen=True)
class _NewClip:
    sha256: str
    path: str
    duration: float
    window: float
    frames: tuple[str, ...]


def _place_frames(data: Path, frames: Frames, character_id: int) -> tuple[str, ...]:
    """Move new frames beside the old ones, under new names (frames/<id>/e<random>-ref_N.jpg): a
    job sent before the edit may still read the old ones, which the janitor deletes later."""
    folder = data / "frames" / str(character_id)
    folder.mkdir(parents=True, exist_ok=True)
    revision = "e" + secrets.token_hex(4)
    out = []
    for name in frames.names:
        base = name.split("-", 1)[-1]
        os.replace(frames.folder / name, folder / f"{revision}-{base}")
        out.append(f"frames/{character_id}/{revision}-{base}")
    return tuple(out)


def _remove(paths: Sequence[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
