"""Characters: create (from an upload or a finished video), list, share, import, delete, and the
resolution /generate relies on.

Rules (README.md, "Commands"; ARCHITECTURE.md, "Sharing"):
- a character belongs to one guild; `private` = its owner only, `server` = anyone in the guild,
  `public` = the guild plus any guild that imported it with its share code;
- a guild's names (its characters and its imports' aliases) form one case-insensitive namespace;
- an import works only while its character is live and public: revoking or deleting stops it at
  once, and the member is told why when they use it;
- the owner changes visibility; the owner or a moderator of the character's guild deletes it
  (softly: jobs keep their history); an import is removed by whoever imported it or a moderator.

Every query is scoped by the actor's guild, so nothing of another guild is reachable except
public characters through their share codes. Files: see files; provider handles:
handles; the values returned: values.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from bot import media
from bot.config import Settings
from bot.db import Connection, Database, IntegrityError
from bot.errors import GuildOnly
from bot.media.preview import gallery
from bot.prompts import (
    AT_SIGNS,
    InvalidName,
    clean_member_text,
    close_matches,
    name_key,
    name_skeleton,
    validate_character_name,
)
from bot.providers.base import CharacterAsset, CharacterHandle, ProviderError, VideoProvider
from bot.services.actors import Actor
from bot.services.characters.errors import (
    AlreadyImported,
    BadChoice,
    CannotDelete,
    CannotDeleteImport,
    CharacterNotFound,
    ImportFromSameGuild,
    InvalidCharacterName,
    JobNotFound,
    NameTaken,
    NotOwner,
    ShareImport,
    UnknownCharacters,
    UnknownShareCode,
    Unusable,
    UnusableName,
    UploadRefused,
    VideoNotKept,
)
from bot.services.characters.files import CharacterFiles, Frames, StoredClip
from bot.services.characters.handles import HandleRegistry, fresh, is_refusal
from bot.services.characters.text import free_name, new_share_code, normalise_share_code
from bot.services.characters.values import (
    SCOPES,
    VISIBILITIES,
    CharacterView,
    Created,
    Deleted,
    JobChoice,
    NameChoice,
    Page,
    Registration,
    Upload,
    UsableCharacter,
)
from bot.services.guilds import GuildService
from bot.services.storage import StorageService, refused_when_full
from bot.services.trust_rules import ConsentRequired, check_importable, consent_needed, taken_down_among
from bot.store import characters as store
from bot.store import trust as trust_store
from bot.store.characters import CharacterRow, Listed, Reach

__all__ = [
    "SCOPES",
    "VISIBILITIES",
    "CharacterService",
    "CharacterView",
    "Created",
    "Deleted",
    "JobChoice",
    "NameChoice",
    "Page",
    "Registration",
    "UnknownCharacters",
    "Upload",
    "UsableCharacter",
]

log = logging.getLogger(__name__)

PAGE_SIZE = 5
MAX_DESCRIPTION = 500
MAX_CHOICES = 25  # Discord's cap on autocomplete choices


# --- the service ----------------------------------------------------------------------------------


class CharacterService:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        providers: Mapping[str, VideoProvider],
        guilds: GuildService,
        http_client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
        storage: StorageService | None = None,
    ) -> None:
        self._db = db
        self._settings = settings
        self._storage = storage  # None: no space check
        self._providers = providers
        self._guilds = guilds
        self._clock = clock
        self._files = CharacterFiles(settings.data_dir, http_client, settings.max_clip_bytes)
        self._handles = HandleRegistry(db, clock)
        if storage is not None:
            storage.use_clip_locks(self._files.clip_locks)  # its janitor never races a create

    # The building blocks the gallery's edit shares with create (bot/services/characters/gallery.py)

    @property
    def files(self) -> CharacterFiles:
        return self._files

    @property
    def handles(self) -> HandleRegistry:
        return self._handles

    # --- create -----------------------------------------------------------------------------------

    async def create_from_upload(
        self,
        actor: Actor,
        *,
        name: str,
        upload: Upload,
        description: str = "",
        visibility: str = "server",
    ) -> Created:
        """Check everything cheap first (name, attachment metadata, the name is free), then
        download with a byte cap, probe, store, and register with the preferred provider."""
        guild_id = self.guild_of(actor)
        clean = self.valid_name(name)
        self._check_choice("visibility", visibility, VISIBILITIES)
        self.check_upload(upload)
        await self.require_free(guild_id, clean)
        await self.require_space()
        visibility = await self._until_consent(guild_id, visibility)
        tmp = self._files.temporary("upload")
        try:
            with refused_when_full():  # the disk filled up meanwhile: the same refusal, nothing kept
                sha = await self._files.download(upload.url, tmp)
                return await self._create(
                    actor, clean, description, visibility, tmp, sha, owned=True, clip_url=upload.url
                )
        finally:
            await self._files.discard(tmp)

    async def create_from_job(
        self, actor: Actor, *, job_id: int, name: str, description: str = "", visibility: str = "server"
    ) -> Created:
        """Make a character from one of the actor's own finished videos in this guild."""
        guild_id = self.guild_of(actor)
        clean = self.valid_name(name)
        self._check_choice("visibility", visibility, VISIBILITIES)
        job = await store.finished_job(self._db, guild_id, actor.user_id, job_id)
        if job is None:
            raise JobNotFound()
        if job.result_purged_at is not None:
            raise VideoNotKept()
        source = self._files.path(job.result_path)
        if not await asyncio.to_thread(source.is_file):
            raise JobNotFound()
        await self.require_free(guild_id, clean)
        await self.require_space()
        visibility = await self._until_consent(guild_id, visibility)
        sha = await asyncio.to_thread(media.sha256_file, source)
        with refused_when_full():
            return await self._create(actor, clean, description, visibility, source, sha, owned=False, job_id=job.id)

    async def check_finished_job(self, actor: Actor, job_id: int) -> None:
        """JobNotFound unless `job_id` is one of the actor's finished videos in this guild."""
        guild_id = self.guild_of(actor)
        job = await store.finished_job(self._db, guild_id, actor.user_id, job_id)
        if job is None:
            raise JobNotFound()
        if job.result_purged_at is not None:
            raise VideoNotKept()

    async def require_space(self) -> None:
        if self._storage is not None:
            await self._storage.require_space()

    def check_upload(self, upload: Upload) -> None:
        """Refuse from the metadata alone (type, declared size): nothing is downloaded."""
        kind = (upload.content_type or mimetypes.guess_type(upload.filename)[0] or "").lower()
        if not kind.startswith("video/"):
            raise UploadRefused("characters.upload.not_video", kind=kind or "?")
        if upload.size > self._settings.max_clip_bytes:
            raise self._files.too_large(upload.size)

    async def _create(
        self,
        actor: Actor,
        name: str,
        description: str,
        visibility: str,
        source: Path,
        sha: str,
        *,
        owned: bool,
        clip_url: str | None = None,
        job_id: int | None = None,
    ) -> Created:
        guild_id = self.guild_of(actor)
        async with self._files.clip_locks.hold(sha):
            clip = await self._files.store_clip(source, sha, owned=owned)
            try:
                twins = [(t.frame_paths, t.best_window_start) for t in await store.with_same_clip(self._db, sha)]
                frames = await self._files.frames(clip, twins)
                try:
                    character_id = await self._insert(
                        actor, guild_id, name, description, visibility, clip, frames, job_id
                    )
                finally:
                    await self._files.discard_frames(frames.folder)
            except BaseException:
                if not await store.clip_in_use(self._db, sha):
                    await self._files.discard_clip(clip)
                raise
        row = await store.get(self._db, character_id)
        assert row is not None
        registration = await self.register_preferred(row, guild_id, clip_url)
        return Created(await self.view_of(actor, Listed(row), preview=True), registration)

    async def _insert(
        self,
        actor: Actor,
        guild_id: int,
        name: str,
        description: str,
        visibility: str,
        clip: StoredClip,
        frames: Frames,
        job_id: int | None,
    ) -> int:
        now = self._clock()
        async with self.claim_name(guild_id, name) as conn:
            character_id = await store.insert_character(
                conn,
                guild_id=guild_id,
                owner_id=actor.user_id,
                name=name,
                name_key=name_key(name),
                name_skeleton=name_skeleton(name),
                description=" ".join(clean_member_text(description).split())[:MAX_DESCRIPTION],
                visibility="private",
                clip_sha256=clip.sha256,
                clip_path=clip.relative,
                clip_duration=clip.duration,
                best_window_start=frames.best_window_start,
                source_job_id=job_id,
                now=now,
            )
            await self._set_visibility(conn, character_id, visibility, new_share_code(), now)
            await store.set_frame_paths(conn, character_id, await self._files.place_frames(frames, character_id))
        return character_id

    @asynccontextmanager
    async def claim_name(self, guild_id: int, name: str) -> AsyncIterator[Connection]:
        """A write transaction in which `name` is free in the guild (else NameTaken)."""
        key = name_key(name)
        async with self._db.transaction() as conn:
            holder = await store.name_holder(conn, guild_id, key)
            if holder is not None:
                raise NameTaken(name, await self._suggest(conn, guild_id, name), holder)
            yield conn

    async def require_free(self, guild_id: int, name: str) -> None:
        """Early check (before any download); `_claim` checks again where it counts."""
        key = name_key(name)
        own = await store.live_by_key(self._db, guild_id, key)
        holder = own.name if own is not None else None
        if holder is None:
            found = await store.import_by_key(self._db, guild_id, key)
            if found is not None and found.via is not None and found.character.deleted_at is None:
                holder = found.via.alias
        if holder is not None:
            raise NameTaken(name, await self._suggest(self._db, guild_id, name), holder)

    async def _suggest(self, source: store.Source, guild_id: int, name: str) -> str | None:
        stem = name.rstrip("0123456789_") or name
        taken = await store.skeletons_with_prefix(source, guild_id, name_skeleton(stem))
        return free_name(stem if len(stem) >= 2 else name, taken.__contains__)

    # --- provider registration ----------------------------------------------------------------

    def _provider_order(self, preferred: Sequence[str] | None) -> list[VideoProvider]:
        names = preferred or tuple(self._providers)
        return [self._providers[n] for n in names if n in self._providers]

    async def register_preferred(self, row: CharacterRow, guild_id: int, clip_url: str | None) -> Registration | None:
        """Register with the guild's first provider that needs a handle; the others register
        lazily (ensure_handle) on first use. A refusal is remembered, not fatal."""
        settings = await self._guilds.get(guild_id)
        order = self._provider_order(settings.providers)
        provider = next((p for p in order if p.capabilities.needs_handle), None)
        if provider is None:
            return None
        others = tuple(p.name for p in order if p is not provider)
        usable = await self._usable(row, row.name_key, row.name)
        try:
            await self.ensure_handle(usable, provider, clip_url=clip_url)
        except ProviderError as exc:
            if is_refusal(exc):
                return Registration(provider.name, "refused", exc.message, others)
            log.info("registering character %s with %s postponed: %s", row.id, provider.name, exc)
            return Registration(provider.name, "later", exc.message, others)
        return Registration(provider.name, "ready", "", others)

    async def ensure_handle(
        self, character: UsableCharacter, provider: VideoProvider, *, clip_url: str | None = None
    ) -> CharacterHandle:
        """The character's handle on `provider`, registering it from the stored clip/frames when
        missing (one registration at a time per character and provider). A definitive refusal is
        stored and raised again later without a new upload (Rejected, code "refused"); any other
        provider error propagates and nothing is stored."""
        return await self._handles.ensure(character, provider, clip_url=clip_url)

    async def mark_refused(self, character_id: int, provider: str, reason: str) -> None:
        await self._handles.mark_refused(character_id, provider, reason)

    async def record_use(self, character_ids: Sequence[int]) -> None:
        await store.add_uses(self._db, character_ids, self._clock())

    # --- resolution for /generate ------------------------------------------------------------

    async def resolve_for_generation(self, actor: Actor, keys: Sequence[str]) -> list[UsableCharacter]:
        """The characters named by `keys` (name_keys of the prompt's @names, in order), or
        UnknownCharacters explaining every name that cannot be used. Reads only."""
        guild_id = self.guild_of(actor)
        usable: list[UsableCharacter] = []
        problems: list[UnusableName] = []
        names: list[str] | None = None
        for key in dict.fromkeys(keys):
            own = await store.live_by_key(self._db, guild_id, key)
            if own is not None:
                if own.visibility == "private" and own.owner_id != actor.user_id:
                    problems.append(UnusableName(key, Unusable.PRIVATE))
                else:
                    usable.append(await self._usable(own, key, own.name))
                continue
            found = await store.import_by_key(self._db, guild_id, key)
            if found is not None and found.via is not None:
                target = found.character
                if target.deleted_at is not None:
                    problems.append(UnusableName(key, Unusable.DELETED))
                elif target.visibility != "public":
                    problems.append(UnusableName(key, Unusable.REVOKED))
                else:
                    usable.append(await self._usable(target, key, found.via.alias))
                continue
            if await store.deleted_by_key(self._db, guild_id, key, actor.user_id) is not None:
                problems.append(UnusableName(key, Unusable.DELETED))
                continue
            if names is None:
                names = await store.usable_names(self._db, guild_id, actor.user_id)
            problems.append(UnusableName(key, Unusable.UNKNOWN, tuple(close_matches(key, names))))
        # an operator's takedown stops a character everywhere, its own server included
        down = await taken_down_among(self._db, [u.character_id for u in usable])
        problems += [UnusableName(u.key, Unusable.TAKEN_DOWN) for u in usable if u.character_id in down]
        if problems:
            raise UnknownCharacters(problems)
        return usable

    async def load(
        self, character_ids: Sequence[int], keys: Sequence[str] | None = None, names: Sequence[str] | None = None
    ) -> list[UsableCharacter]:
        """The characters an admitted job resolved, by id and in order, for its submission.

        No visibility check: admission already made it. Pass the job's `keys` (and `names`) so
        an import keeps the alias its prompt mentions; without them the character's own name
        is used. Unknown ids are skipped.
        """
        out = []
        for i, character_id in enumerate(character_ids):
            row = await store.get(self._db, character_id)
            if row is None:
                continue
            key = keys[i] if keys is not None and i < len(keys) else row.name_key
            name = names[i] if names is not None and i < len(names) else row.name
            out.append(await self._usable(row, key, name))
        return out

    async def _usable(self, row: CharacterRow, key: str, name: str) -> UsableCharacter:
        ready: dict[str, CharacterHandle] = {}
        refused: dict[str, str] = {}
        for h in await store.handles(self._db, [row.id]):
            if h.state == "ready" and h.external_id is not None and fresh(h.expires_at, self._clock()):
                ready[h.provider] = CharacterHandle(
                    h.provider, h.external_id, h.mention_token or row.name, h.expires_at
                )
            elif h.state == "refused":
                refused[h.provider] = h.error or ""
        asset = CharacterAsset(
            character_id=row.id,
            name=row.name,
            description=row.description,
            clip_path=self._files.path(row.clip_path),
            frame_paths=tuple(self._files.path(p) for p in row.frame_paths),
            clip_duration=row.clip_duration,
            best_window_start=row.best_window_start,
        )
        return UsableCharacter(row.id, key, name, row.owner_id, asset, ready, refused)

    # --- reading ----------------------------------------------------------------------------------

    async def info(self, actor: Actor, name: str) -> CharacterView:
        guild_id = self.guild_of(actor)
        entry = await self.lookup(actor, guild_id, name, others_private=False)
        return await self.view_of(actor, entry, detailed=True)

    async def list_page(self, actor: Actor, scope: str, page: int = 0) -> Page:
        guild_id = self.guild_of(actor)
        self._check_choice("scope", scope, SCOPES)
        if scope == "server":
            total = await store.count_server(self._db, guild_id, actor.user_id)
        elif scope == "mine":
            total = await store.count_mine(self._db, guild_id, actor.user_id)
        else:
            total = await store.count_community(self._db)
        pages = max(1, -(-total // PAGE_SIZE))
        page = min(max(page, 0), pages - 1)
        offset = page * PAGE_SIZE
        if scope == "server":
            rows = await store.list_server(self._db, guild_id, actor.user_id, PAGE_SIZE, offset)
        elif scope == "mine":
            rows = await store.list_mine(self._db, guild_id, actor.user_id, PAGE_SIZE, offset)
        else:
            rows = await store.list_community(self._db, PAGE_SIZE, offset)
        items = tuple([await self.view_of(actor, r) for r in rows])
        sheet = await asyncio.to_thread(gallery, [i.frontal for i in items]) if items else None
        return Page(scope, page, pages, total, items, sheet)

    async def autocomplete(self, actor: Actor, text: str, purpose: str = "use") -> list[NameChoice]:
        """Up to 25 names for an autocomplete: those `purpose` allows this member (use: usable
        ones; share: their own; delete: deletable ones), prefix matches first, then names that
        contain the text; each group most recently used/created first."""
        if actor.guild_id is None:
            return []
        if purpose == "share":
            reach = Reach(owner_only=True, imports="none")
        elif purpose == "delete":
            moderator = await self._guilds.is_moderator(actor)
            # moderators: anything in the guild; members: their own characters and imports
            reach = Reach(others_private=True, imports="all") if moderator else Reach(owner_only=True, imports="mine")
        else:
            reach = Reach()
        typed = name_key(text.strip().lstrip(AT_SIGNS).strip())
        hits = await store.complete(
            self._db, actor.guild_id, actor.user_id, typed, reach, contains=False, limit=MAX_CHOICES
        )
        if typed and len(hits) < MAX_CHOICES:
            more = await store.complete(
                self._db, actor.guild_id, actor.user_id, typed, reach, contains=True, limit=MAX_CHOICES - len(hits)
            )
            hits += more
        return [NameChoice(h.name, h.kind, h.visibility) for h in hits[:MAX_CHOICES]]

    async def finished_jobs(self, actor: Actor, text: str = "") -> list[JobChoice]:
        """The actor's finished videos in this guild (for /character extract), newest first."""
        if actor.guild_id is None:
            return []
        jobs = await store.finished_jobs(self._db, actor.guild_id, actor.user_id, 200)
        needle = text.strip().lstrip("#").casefold()
        if needle:
            jobs = [j for j in jobs if str(j.id).startswith(needle) or needle in j.prompt.casefold()]
        return [JobChoice(j.id, j.prompt, j.created_at) for j in jobs[:MAX_CHOICES]]

    # --- sharing, importing, deleting -------------------------------------------------------------

    async def share(self, actor: Actor, name: str, visibility: str) -> CharacterView:
        """Owner only. Making it public issues its share code (once; the code never changes)."""
        guild_id = self.guild_of(actor)
        self._check_choice("visibility", visibility, VISIBILITIES)
        entry = await self.lookup(actor, guild_id, name, others_private=False)
        if entry.via is not None:
            raise ShareImport(entry.via.alias)
        row = entry.character
        if row.owner_id != actor.user_id:
            raise NotOwner(row.name)
        if await consent_needed(self._db, guild_id, row.visibility, visibility):
            raise ConsentRequired(row.id, row.name, visibility)  # the cog asks with a button
        async with self._db.transaction() as conn:
            await self._set_visibility(conn, row.id, visibility, new_share_code(), self._clock())
        fresh = await store.get(self._db, row.id)
        assert fresh is not None
        return await self.view_of(actor, Listed(fresh), detailed=True)

    async def share_with_consent(self, actor: Actor, character_id: int, visibility: str) -> CharacterView:
        """The owner confirmed that the person shown is them or agreed: record it (user, time,
        visibility) and share. The consent button carries the character's id (bot/actions/sharing.py)."""
        guild_id = self.guild_of(actor)
        self._check_choice("visibility", visibility, VISIBILITIES)
        row = await store.get(self._db, character_id)
        if row is None or row.deleted_at is not None or row.guild_id != guild_id:
            raise CharacterNotFound(f"#{character_id}")
        if row.owner_id != actor.user_id:
            raise NotOwner(row.name)
        if row.visibility != visibility:
            now = self._clock()
            async with self._db.transaction() as conn:
                await trust_store.add_consent(
                    conn, character_id=row.id, user_id=actor.user_id, visibility=visibility, now=now
                )
                await self._set_visibility(conn, row.id, visibility, new_share_code(), now)
        fresh = await store.get(self._db, row.id)
        assert fresh is not None
        return await self.view_of(actor, Listed(fresh), detailed=True)

    async def _until_consent(self, guild_id: int, visibility: str) -> str:
        """A new character stays private until its owner confirms consent (when it is needed)."""
        return "private" if await consent_needed(self._db, guild_id, "private", visibility) else visibility

    async def _set_visibility(
        self, conn: Connection, character_id: int, visibility: str, code: str, now: float
    ) -> None:
        """Set visibility; a first `public` gets `code` (retried on the unlikely collision)."""
        for _ in range(5):
            try:
                async with _savepoint(conn):
                    await store.set_visibility(
                        conn, character_id, visibility, code if visibility == "public" else None, now
                    )
                return
            except IntegrityError:
                code = new_share_code()
        raise RuntimeError("could not issue a unique share code")

    async def import_character(self, actor: Actor, code: str, alias: str | None = None) -> CharacterView:
        """Bring a public character of another guild into this one, under `alias` (default: its name)."""
        guild_id = self.guild_of(actor)
        canonical = normalise_share_code(code)
        row = await store.by_share_code(self._db, canonical) if canonical else None
        if row is None or row.deleted_at is not None or row.visibility != "public":
            raise UnknownShareCode(code)  # the same answer whether it never existed or is private now
        if row.guild_id == guild_id:
            raise ImportFromSameGuild(row.name)
        await check_importable(self._db, guild_id, row)
        existing = await store.import_of(self._db, guild_id, row.id)
        if existing is not None:
            raise AlreadyImported(existing.alias)
        clean = self.valid_name(alias if alias and alias.strip() else row.name)
        await self.require_free(guild_id, clean)
        async with self.claim_name(guild_id, clean) as conn:
            if await store.import_of(conn, guild_id, row.id) is not None:
                raise AlreadyImported(clean)
            await store.insert_import(
                conn,
                guild_id=guild_id,
                character_id=row.id,
                alias=clean,
                alias_key=name_key(clean),
                by=actor.user_id,
                now=self._clock(),
            )
        found = await store.import_by_key(self._db, guild_id, name_key(clean))
        assert found is not None
        return await self.view_of(actor, found, detailed=True)

    async def delete(self, actor: Actor, name: str) -> Deleted:
        """A character: its owner or a moderator of its guild (soft delete). An import: whoever
        imported it or a moderator of this guild (removes the import only)."""
        guild_id = self.guild_of(actor)
        moderator = await self._guilds.is_moderator(actor)
        entry = await self.lookup(actor, guild_id, name, others_private=moderator)
        if entry.via is not None:
            if entry.via.imported_by != actor.user_id and not moderator:
                raise CannotDeleteImport(entry.via.alias)
            async with self._db.transaction() as conn:
                await store.delete_import(conn, entry.via.id)
            return Deleted(entry.via.alias, "import")
        row = entry.character
        if row.owner_id != actor.user_id and not moderator:
            raise CannotDelete(row.name)
        async with self._db.transaction() as conn:
            await store.soft_delete(conn, row.id, self._clock())
        stopped = await store.count_imports(self._db, row.id) if row.visibility == "public" else 0
        return Deleted(row.name, "character", stopped)

    # --- helpers ----------------------------------------------------------------------------------

    async def lookup(self, actor: Actor, guild_id: int, name: str, *, others_private: bool) -> Listed:
        """A name in the actor's guild: their usable own character, or an import (any state)."""
        key = name_key(name.strip().lstrip(AT_SIGNS).strip())
        own = await store.live_by_key(self._db, guild_id, key)
        if own is not None and (own.visibility != "private" or own.owner_id == actor.user_id or others_private):
            return Listed(own)
        if own is None:
            found = await store.import_by_key(self._db, guild_id, key)
            if found is not None:
                return found
        names = await store.usable_names(self._db, guild_id, actor.user_id)
        raise CharacterNotFound(name, close_matches(key, names))

    async def view_of(
        self, actor: Actor, entry: Listed, *, detailed: bool = False, preview: bool = False
    ) -> CharacterView:
        """`detailed`: with refusals and imports; `detailed` or `preview`: with the animated
        preview, made now if missing (characters made before previews existed get one lazily)."""
        row, via = entry.character, entry.via
        is_owner = row.owner_id == actor.user_id and row.guild_id == actor.guild_id
        state = None
        if via is not None:
            state = "deleted" if row.deleted_at is not None else ("ok" if row.visibility == "public" else "revoked")
        refused: dict[str, str] = {}
        imports = 0
        if detailed:
            refused = {
                h.provider: h.error or "" for h in await store.handles(self._db, [row.id]) if h.state == "refused"
            }
            if is_owner:
                imports = await store.count_imports(self._db, row.id)
        frontal = self._files.path(row.frame_paths[0]) if row.frame_paths else None
        animated = None
        if (detailed or preview) and state in (None, "ok"):
            animated = await self._files.ensure_preview(row.id, row.clip_path, row.best_window_start, row.clip_duration)
        return CharacterView(
            id=row.id,
            name=via.alias if via is not None else row.name,
            original_name=row.name,
            owner_id=row.owner_id,
            home_guild_id=row.guild_id,
            description=row.description,
            visibility=row.visibility,
            uses=row.uses,
            clip_duration=row.clip_duration,
            created_at=row.created_at,
            frontal=frontal if state in (None, "ok") else None,
            share_code=row.share_code if row.visibility == "public" or is_owner else None,
            imported=via is not None,
            import_state=state,
            imported_by=via.imported_by if via is not None else None,
            is_owner=is_owner,
            import_count=imports,
            refused=refused,
            preview=animated,
        )

    @staticmethod
    def guild_of(actor: Actor) -> int:
        if actor.guild_id is None:
            raise GuildOnly()
        return actor.guild_id

    @staticmethod
    def valid_name(name: str) -> str:
        try:
            return validate_character_name(name)
        except InvalidName as exc:
            raise InvalidCharacterName(exc.reason_id.value, exc.detail, name) from None

    @staticmethod
    def _check_choice(option: str, value: str, allowed: Sequence[str]) -> None:
        if value not in allowed:
            raise BadChoice(option, value)


@asynccontextmanager
async def _savepoint(conn: Connection) -> AsyncIterator[None]:
    """A nested transaction, so one failed statement can be retried without losing the rest."""
    await conn.execute("SAVEPOINT share_code")
    try:
        yield
    except BaseException:
        await conn.execute("ROLLBACK TO share_code")
        await conn.execute("RELEASE share_code")
        raise
    else:
        await conn.execute("RELEASE share_code")
