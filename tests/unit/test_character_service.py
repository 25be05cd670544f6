"""CharacterService: who may see, use, share, import and delete a character.

Every visibility (private, server, public) against every kind of actor: the owner, another member
of the owner's guild, a moderator there, a member of another guild, and a moderator of another
guild. Real SQLite, real clips served over loopback HTTP, the real local provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from bot.config import Settings
from bot.db import Database
from bot.errors import GuildOnly
from bot.i18n import t
from bot.providers.base import VideoProvider
from bot.providers.local import LocalProvider
from bot.services.actors import Actor
from bot.services.characters import CharacterService, CharacterView, Created, Upload
from bot.services.characters.errors import (
    AlreadyImported,
    CannotDelete,
    CannotDeleteImport,
    CharacterNotFound,
    ImportFromSameGuild,
    NameTaken,
    NotOwner,
    ShareImport,
    UnknownCharacters,
    UnknownShareCode,
    Unusable,
)
from bot.services.guilds import GuildService
from bot.services.trust_rules import ConsentRequired
from discord_sandbox.clips import make_clip
from tests.postgres import ENGINES, open_test_database

GUILD_A, GUILD_B = 100, 200
OWNER = Actor(user_id=1, guild_id=GUILD_A)
MEMBER = Actor(user_id=2, guild_id=GUILD_A)
MODERATOR = Actor(user_id=3, guild_id=GUILD_A, manage_guild=True)
OUTSIDER = Actor(user_id=4, guild_id=GUILD_B)
OUTSIDE_MOD = Actor(user_id=5, guild_id=GUILD_B, manage_guild=True)
OUTSIDER_2 = Actor(user_id=6, guild_id=GUILD_B)


class Clock:
    def __init__(self) -> None:
        self.now = 1_790_000_000.0

    def __call__(self) -> float:
        self.now += 1.0  # every event happens a second after the previous one: recency is total
        return self.now


@dataclass
class ClipServer:
    """Serves uploaded "attachments" the way Discord's CDN does, and records every fetch."""

    base: str = ""
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)

    def upload(self, name: str, data: bytes, content_type: str | None = "video/mp4", size: int | None = None) -> Upload:
        self.files[name] = (data, content_type or "application/octet-stream")
        return Upload(f"{self.base}/files/{name}", name, content_type, len(data) if size is None else size)


@pytest.fixture(scope="session")
def clip_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = make_clip(tmp_path_factory.mktemp("clips") / "hero.mp4", seconds=3.0, size=(160, 120), fps=12, blur=())
    return path.read_bytes()


@pytest.fixture
async def clip_server() -> AsyncIterator[ClipServer]:
    server = ClipServer()

    async def serve(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        server.fetched.append(name)
        if name not in server.files:
            return web.Response(status=404)
        data, kind = server.files[name]
        return web.Response(body=data, content_type=kind)

    app = web.Application()
    app.router.add_get("/files/{name}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield server
    await runner.cleanup()


@dataclass
class Env:
    db: Database
    settings: Settings
    service: CharacterService
    clips: ClipServer
    clip: bytes
    clock: Clock
    http: httpx.AsyncClient

    @property
    def data(self) -> Path:
        return self.settings.data_dir

    async def create(self, actor: Actor, name: str, visibility: str = "server", description: str = "") -> Created:
        """Created with `visibility`, the owner confirming consent when it is asked for (public)."""
        upload = self.clips.upload(f"{name}.mp4", self.clip)
        created = await self.service.create_from_upload(
            actor, name=name, upload=upload, description=description, visibility=visibility
        )
        if created.character.visibility != visibility:
            shared = await self.service.share_with_consent(actor, created.character.id, visibility)
            return Created(shared, created.registration)
        return created

    async def share(self, actor: Actor, name: str, visibility: str) -> CharacterView:
        """/character share, then the consent button when the service asks for it."""
        try:
            return await self.service.share(actor, name, visibility)
        except ConsentRequired as needed:
            return await self.service.share_with_consent(actor, needed.character_id, needed.visibility)

    def stored_files(self) -> list[str]:
        return sorted(
            str(p.relative_to(self.data))
            for p in self.data.rglob("*")
            if p.is_file() and not p.name.startswith("castbot.sqlite3")
        )


async def make_env(
    tmp_path: Path,
    clip_server: ClipServer,
    clip_bytes: bytes,
    providers: dict[str, VideoProvider] | None = None,
    database: Database | None = None,
    **settings: object,
) -> AsyncIterator[Env]:
    """The service over `database` (its owner closes it), else over a new SQLite file in the data folder."""
    values: dict[str, object] = {"data_dir": tmp_path / "data", "providers": "local"}
    values.update(settings)
    config = Settings(_env_file=None, **values)  # type: ignore[arg-type]
    db = database
    if db is None:
        db = await Database.open(config.database_path)
        await db.migrate()
    clock = Clock()
    async with httpx.AsyncClient() as http:
        chosen = providers or {"local": LocalProvider(work_dir=config.data_dir / "local-renders")}
        service = CharacterService(db, config, chosen, GuildService(db, clock), http, clock=clock)
        yield Env(db, config, service, clip_server, clip_bytes, clock, http)
    if database is None:
        await db.close()


@pytest.fixture(params=ENGINES)
async def env(
    request: pytest.FixtureRequest, tmp_path: Path, clip_server: ClipServer, clip_bytes: bytes
) -> AsyncIterator[Env]:
    """On each engine: characters' SQL (namespaces, look-alikes, autocomplete, listings) is the richest."""
    async with open_test_database(request.param, request, tmp_path / "db") as database:
        async for e in make_env(tmp_path, clip_server, clip_bytes, database=database):
            yield e


async def visible_names(env: Env, actor: Actor, scope: str) -> set[str]:
    page = await env.service.list_page(actor, scope, 0)
    return {item.name for item in page.items}


async def can_use(env: Env, actor: Actor, key: str) -> Unusable | None:
    try:
        await env.service.resolve_for_generation(actor, [key])
    except UnknownCharacters as exc:
        return exc.problems[0].reason
    return None


# --- the matrix -----------------------------------------------------------------------------------

# actor -> (sees it in the server list, may use it, what happens on share, on info)
SAME_GUILD = {"owner": OWNER, "member": MEMBER, "moderator": MODERATOR}
OTHER_GUILD = {"outsider": OUTSIDER, "outside_mod": OUTSIDE_MOD}


@pytest.mark.parametrize("visibility", ["private", "server", "public"])
async def test_every_visibility_against_every_actor(env: Env, visibility: str) -> None:
    created = await env.create(OWNER, "Hero", visibility)
    hidden = visibility == "private"

    # seeing: the owner always; others in the guild unless private; other guilds never in their server list
    assert await visible_names(env, OWNER, "server") == {"Hero"}
    assert await visible_names(env, OWNER, "mine") == {"Hero"}
    for actor in (MEMBER, MODERATOR):
        assert await visible_names(env, actor, "server") == (set() if hidden else {"Hero"})
        assert await visible_names(env, actor, "mine") == set()
    for actor in (OUTSIDER, OUTSIDE_MOD):
        assert await visible_names(env, actor, "server") == set()
        assert await visible_names(env, actor, "mine") == set()
    for actor in (OWNER, MEMBER, MODERATOR, OUTSIDER, OUTSIDE_MOD):
        community = await env.service.list_page(actor, "community", 0)
        assert {i.name for i in community.items} == ({"Hero"} if visibility == "public" else set())
        if visibility == "public":
            assert community.items[0].share_code == created.character.share_code

    # info
    assert (await env.service.info(OWNER, "hero")).id == created.character.id
    for actor in (MEMBER, MODERATOR):
        if hidden:
            with pytest.raises(CharacterNotFound):
                await env.service.info(actor, "hero")
        else:
            assert (await env.service.info(actor, "@HERO")).name == "Hero"
    for actor in (OUTSIDER, OUTSIDE_MOD):
        with pytest.raises(CharacterNotFound):
            await env.service.info(actor, "hero")

    # using it in a prompt
    assert await can_use(env, OWNER, "hero") is None
    for actor in (MEMBER, MODERATOR):
        assert await can_use(env, actor, "hero") == (Unusable.PRIVATE if hidden else None)
    for actor in (OUTSIDER, OUTSIDE_MOD):
        assert await can_use(env, actor, "hero") is Unusable.UNKNOWN  # another guild's name is no name here

    # autocomplete offers exactly what may be used
    for actor, expected in ((OWNER, True), (MEMBER, not hidden), (MODERATOR, not hidden), (OUTSIDER, False)):
        names = [c.name for c in await env.service.autocomplete(actor, "he")]
        assert names == (["Hero"] if expected else []), actor

    # sharing: the owner only, even moderators may not
    for actor in (MEMBER, MODERATOR):
        with pytest.raises(CharacterNotFound if hidden else NotOwner):
            await env.service.share(actor, "hero", "public")
    for actor in (OUTSIDER, OUTSIDE_MOD):
        with pytest.raises(CharacterNotFound):
            await env.service.share(actor, "hero", "public")

    # importing: only with the code of a public character, and only into another guild
    if visibility == "public":
        code = created.character.share_code
        assert code is not None and len(code) == 10
        with pytest.raises(ImportFromSameGuild):
            await env.service.import_character(MEMBER, code)
        imported = await env.service.import_character(OUTSIDER, code.lower())
        assert (imported.name, imported.import_state) == ("Hero", "ok")
        assert await can_use(env, OUTSIDE_MOD, "hero") is None  # any member of the importing guild
    else:
        assert created.character.share_code is None
        with pytest.raises(UnknownShareCode):
            await env.service.import_character(OUTSIDER, "0123456789")

    # deleting: other guilds cannot reach it; members cannot; moderators of its guild can
    for actor in (OUTSIDER, OUTSIDE_MOD):
        if visibility == "public":
            continue  # their "hero" is now their import: covered by the import tests
        with pytest.raises(CharacterNotFound):
            await env.service.delete(actor, "hero")
    with pytest.raises(CharacterNotFound if hidden else CannotDelete):
        await env.service.delete(MEMBER, "hero")
    deleted = await env.service.delete(MODERATOR, "hero")
    assert (deleted.kind, deleted.name) == ("character", "Hero")
    assert deleted.imports_stopped == (1 if visibility == "public" else 0)
    assert await can_use(env, OWNER, "hero") is Unusable.DELETED
    assert await visible_names(env, OWNER, "server") == set()


@pytest.mark.parametrize("visibility", ["private", "server", "public"])
async def test_the_owner_deletes_and_the_name_is_free_again(env: Env, visibility: str) -> None:
    first = await env.create(OWNER, "Hero", visibility)
    assert (await env.service.delete(OWNER, "HERO")).kind == "character"
    second = await env.create(MEMBER, "hero")
    assert second.character.id != first.character.id
    # soft delete: the row (and what jobs recorded about it) stays
    row = await env.db.fetchone("SELECT deleted_at, name FROM characters WHERE id = ?", (first.character.id,))
    assert row is not None and row["deleted_at"] is not None and row["name"] == "Hero"


async def test_dm_actor_is_refused(env: Env) -> None:
    with pytest.raises(GuildOnly):
        await env.service.list_page(Actor(user_id=1, guild_id=None), "server")
    assert await env.service.autocomplete(Actor(user_id=1, guild_id=None), "") == []


# --- sharing and importing ------------------------------------------------------------------------


async def test_share_revoke_and_reshare_keep_one_stable_code(env: Env) -> None:
    await env.create(OWNER, "Hero", "server")
    public = await env.share(OWNER, "hero", "public")
    code = public.share_code
    assert code is not None
    imported = await env.service.import_character(OUTSIDER, f" {code[:5]}-{code[5:]} ", "Champion")
    assert (imported.name, imported.original_name) == ("Champion", "Hero")

    usable = await env.service.resolve_for_generation(OUTSIDER_2, ["champion"])
    assert [(u.key, u.name, u.asset.name) for u in usable] == [("champion", "Champion", "Hero")]
    assert usable[0].asset.frame_paths[0].is_file()

    revoked = await env.service.share(OWNER, "hero", "private")
    assert revoked.import_count == 1 and revoked.share_code == code  # the owner still sees the code
    with pytest.raises(UnknownCharacters) as info:
        await env.service.resolve_for_generation(OUTSIDER_2, ["champion"])
    assert info.value.problems[0].reason is Unusable.REVOKED
    message = t(info.value.key, "en", **info.value.params)
    assert "@champion" in message and "stopped sharing" in message and "nothing was started or charged" in message
    assert (await env.service.info(OUTSIDER, "champion")).import_state == "revoked"
    with pytest.raises(UnknownShareCode):  # a revoked code imports nothing, anywhere
        await env.service.import_character(Actor(user_id=9, guild_id=300), code)

    again = await env.share(OWNER, "hero", "public")
    assert again.share_code == code
    assert len(await env.service.resolve_for_generation(OUTSIDER_2, ["champion"])) == 1


async def test_deleting_the_original_stops_imports_with_a_clear_reason(env: Env) -> None:
    created = await env.create(OWNER, "Hero", "public")
    assert created.character.share_code is not None
    await env.service.import_character(OUTSIDER, created.character.share_code)
    deleted = await env.service.delete(OWNER, "hero")
    assert deleted.imports_stopped == 1
    with pytest.raises(UnknownCharacters) as info:
        await env.service.resolve_for_generation(OUTSIDER, ["hero"])
    assert info.value.problems[0].reason is Unusable.DELETED
    assert "was deleted" in t(info.value.key, "en", **info.value.params)
    # the dead import does not hold the name: the importing guild can reuse it
    mine = await env.create(OUTSIDER, "Hero")
    assert (await env.service.resolve_for_generation(OUTSIDER, ["hero"]))[0].character_id == mine.character.id


async def test_imports_share_the_guild_namespace(env: Env) -> None:
    home = await env.create(OWNER, "Hero", "public")
    code = home.character.share_code
    assert code is not None
    await env.create(OUTSIDER, "hero")
    with pytest.raises(NameTaken) as taken:
        await env.service.import_character(OUTSIDER, code)
    assert taken.value.suggestion == "Hero2"
    await env.service.import_character(OUTSIDER, code, "@Hero2")
    with pytest.raises(AlreadyImported):
        await env.service.import_character(OUTSIDE_MOD, code, "other")
    with pytest.raises(NameTaken):
        await env.create(OUTSIDE_MOD, "HERO2")
    names = await visible_names(env, OUTSIDER_2, "server")
    assert names == {"hero", "Hero2"}


async def test_who_may_remove_an_import(env: Env) -> None:
    home = await env.create(OWNER, "Hero", "public")
    assert home.character.share_code is not None
    await env.service.import_character(OUTSIDER, home.character.share_code)
    with pytest.raises(CannotDeleteImport):
        await env.service.delete(OUTSIDER_2, "hero")
    with pytest.raises(ShareImport):
        await env.service.share(OUTSIDER, "hero", "private")
    removed = await env.service.delete(OUTSIDE_MOD, "hero")
    assert removed.kind == "import"
    # only the import went away: the original is untouched at home
    assert await can_use(env, MEMBER, "hero") is None
    assert await can_use(env, OUTSIDER, "hero") is Unusable.UNKNOWN
    again = await env.service.import_character(OUTSIDER, home.character.share_code)
    assert (await env.service.delete(OUTSIDER, again.name)).kind == "import"


async def test_unknown_names_come_with_close_matches(env: Env) -> None:
    await env.create(OWNER, "Annabelle")
    await env.create(OWNER, "Boris")
    await env.create(OWNER, "Secret", "private")
    with pytest.raises(UnknownCharacters) as info:
        await env.service.resolve_for_generation(MEMBER, ["anabelle", "boris", "secret", "zed"])
    problems = {p.key: p for p in info.value.problems}
    assert set(problems) == {"anabelle", "secret", "zed"}  # boris is fine; every bad name is listed
    assert problems["anabelle"].suggestions == ("Annabelle",)
    assert problems["secret"].reason is Unusable.PRIVATE
    assert problems["zed"].suggestions == ()
    text = t(info.value.key, "en", **info.value.params)
    assert text.index("@anabelle") < text.index("@secret") < text.index("@zed")  # prompt order
    assert "`@Annabelle`" in text and "private" in text


async def test_record_use_counts_and_orders_autocomplete_by_recency(env: Env) -> None:
    a = await env.create(OWNER, "Alpha")
    await env.create(OWNER, "Alpine")
    assert [c.name for c in await env.service.autocomplete(MEMBER, "al")] == ["Alpine", "Alpha"]
    await env.service.record_use([a.character.id, a.character.id])
    assert [c.name for c in await env.service.autocomplete(MEMBER, "AL")] == ["Alpha", "Alpine"]
    assert (await env.service.info(MEMBER, "alpha")).uses == 1


async def test_paging_is_clamped_and_complete(env: Env) -> None:
    for i in range(7):
        await env.create(OWNER, f"hero{chr(ord('a') + i)}")
    first = await env.service.list_page(MEMBER, "server", 0)
    second = await env.service.list_page(MEMBER, "server", 99)
    assert (first.pages, first.total, second.page) == (2, 7, 1)
    assert [i.name for i in first.items + second.items] == [f"hero{c}" for c in "abcdefg"]
