"""The community gallery and /character edit at the service level: search, sort and paging over a
real database on each engine (SQLite with its FTS5 index, PostgreSQL with its tsvector column), who
may edit what, edits reaching importers, and a replaced clip's old files kept while an open job
names the character. Real clips over loopback HTTP, the real local provider, the real storage
janitor."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.db import Database, discover_migrations
from bot.db_postgres import PostgresDatabase
from bot.domain.job_state import JobState
from bot.i18n import t
from bot.prompts import name_key, name_skeleton
from bot.services.actors import Actor
from bot.services.characters.errors import BadChoice, InvalidCharacterName, NameTaken, UploadRefused
from bot.services.characters.gallery import (
    CannotEdit,
    EditImport,
    GalleryService,
    InvalidTags,
    NothingToEdit,
    NotInGallery,
    parse_tags,
)
from bot.services.storage import StorageService
from bot.store import characters as character_store
from bot.store import gallery as store
from bot.store import jobs as job_store
from bot.store.jobs import NewJob
from discord_sandbox.clips import make_clip
from tests.postgres import ENGINES, PostgresServer
from tests.unit.test_character_service import (  # noqa: F401  (fixtures)
    GUILD_A,
    GUILD_B,
    MEMBER,
    OUTSIDER,
    OWNER,
    ClipServer,
    Env,
    clip_bytes,
    clip_server,
    env,
    make_env,
)

__all__ = ["clip_bytes", "clip_server", "env"]  # shared fixtures: the character service on each engine

GUILD_C = 300
THIRD = Actor(user_id=7, guild_id=GUILD_C)


@pytest.fixture
def gallery(env: Env) -> GalleryService:
    return GalleryService(env.db, env.service, clock=env.clock)


async def publish(env: Env, actor: Actor, name: str, description: str = "", tags: str = "") -> int:
    created = await env.service.create_from_upload(
        actor, name=name, upload=env.clips.upload(f"{name}.mp4", env.clip), description=description
    )
    # the owner confirms the person shown agreed (the consent button), as public sharing asks
    await env.service.share_with_consent(actor, created.character.id, "public")
    if tags:
        await GalleryService(env.db, env.service, clock=env.clock).edit(actor, name, tags=tags)
    return created.character.id


async def add_job(db: Database, guild_id: int, character_ids: list[int], now: float) -> int:
    async with db.transaction() as conn:
        return await job_store.insert(
            conn,
            NewJob(
                interaction_id=None,
                guild_id=guild_id,
                channel_id=1,
                user_id=1,
                locale="en",
                prompt="x",
                request={"characters": [{"id": i, "key": "k", "name": "n"} for i in character_ids]},
                providers=("local",),
                estimate_micros=0,
                global_period="2026-12",
                guild_period="2026-12",
                member_period="2026-12-07",
                deadline_at=now + 3600,
            ),
            now,
        )


async def names(gallery: GalleryService, actor: Actor, query: str = "", sort: str = "popular") -> list[str]:
    first = await gallery.browse(actor, query, sort, 0)
    out = []
    for page in range(first.total):
        card = (await gallery.browse(actor, query, sort, page)).card
        assert card is not None
        out.append(card.character.original_name)
    return out


# --- tags -----------------------------------------------------------------------------------------


def test_tags_are_normalised_and_refused_with_the_reason() -> None:
    assert parse_tags(" #Cat, red  fox,CAT, ＡＢＣ ,,") == ("cat", "red-fox", "abc")
    assert parse_tags("-") == ()
    for text, reason in [
        ("ok, a", "too_short"),
        ("x" * 25, "too_long"),
        ("c@t", "invalid"),
        ("--", "invalid"),
        (",".join(f"tag{n}" for n in range(9)), "too_many"),
    ]:
        with pytest.raises(InvalidTags) as refused:
            parse_tags(text)
        assert refused.value.reason == reason
        assert "{" not in t(refused.value.key, "en", **refused.value.params)


def fts5(text: str) -> str:
    match = store.match_expression(text)
    assert match is not None
    return match.fts5()


def test_search_words_become_quoted_prefixes_and_never_fts_syntax() -> None:
    assert fts5("Zoë fox") == '"Zoë" * AND "fox" *'
    assert fts5("#Cat") == 'tags : "Cat"'
    assert fts5('NEAR(a b) OR "x') == '"NEAR" * AND "a" * AND "b" * AND "OR" * AND "x" *'
    assert store.match_expression("  !!  ") is None
    # PostgreSQL's form: plain words for castbot_search_query() to fold and quote
    match = store.match_expression("#Cat  zoë:* & red-fox!")
    assert match is not None and match.words() == "#Cat zoë red-fox"


# --- browse ---------------------------------------------------------------------------------------


async def test_search_by_tag_by_accent_free_name_by_prefix_and_description(env: Env, gallery: GalleryService) -> None:
    await publish(env, OWNER, "Zoë", "a dancer from Lisbon", tags="dance, portrait")
    await publish(env, OWNER, "Renée", "a painter", tags="art")
    await publish(env, MEMBER, "Bruno", "plays the cello", tags="music, portrait")
    await env.service.create_from_upload(OWNER, name="Hidden", upload=env.clips.upload("h.mp4", env.clip))

    assert await names(gallery, OUTSIDER, "zoe") == ["Zoë"]  # accent- and case-insensitive
    assert await names(gallery, OUTSIDER, "RENEE") == ["Renée"]
    assert await names(gallery, OUTSIDER, "ren") == ["Renée"]  # a prefix
    assert sorted(await names(gallery, OUTSIDER, "#portrait")) == ["Bruno", "Zoë"]
    assert await names(gallery, OUTSIDER, "cello") == ["Bruno"]  # the description
    assert await names(gallery, OUTSIDER, "portrait lisbon") == ["Zoë"]  # every word must match
    assert await names(gallery, OUTSIDER, "hidden") == []  # not public
    empty = await gallery.browse(OUTSIDER, "nothing-like-this", "popular")
    assert empty.total == 0 and empty.card is None and empty.pages == 1


async def insert_public(db: Database, name: str, description: str = "", tags: str = "") -> int:
    row = await db.fetchone(
        "INSERT INTO characters (guild_id, owner_id, name, name_key, name_skeleton, description, tags, visibility, "
        "share_code, clip_sha256, clip_path, clip_duration, best_window_start, frame_paths, created_at, updated_at) "
        "VALUES (1, 1, ?, ?, ?, ?, ?, 'public', ?, 'sha', 'p', 3, 0, '[]', 0, 0) RETURNING id",
        (name, name_key(name), name_skeleton(name), description, tags, f"C{name_skeleton(name)}"),
    )
    assert row is not None
    return int(row[0])


async def found(db: Database, typed: str) -> list[str]:
    rows = await store.search(db, store.match_expression(typed), "name", 50, 0)
    assert len(rows) == await store.count(db, store.match_expression(typed), 50)
    return [r.character.name for r in rows]


async def test_search_folds_case_and_accents_in_any_script_and_reads_nothing_typed_as_syntax(db: Database) -> None:
    """The same answers on both engines: FTS5's unicode61 folding, and PostgreSQL's unaccent + ICU
    folding with every typed piece quoted into the tsquery."""
    await insert_public(db, "Zoë", "a dancer from Lisbon", "dance,portrait")
    await insert_public(db, "ЖУК", "большой жук", "insect")
    await insert_public(db, "Jean-Luc", "o'brien's r2d2 friend", "red-fox")
    await insert_public(db, "Catherine", "a portrait painter", "art")

    assert await found(db, "ZOE") == ["Zoë"]
    assert await found(db, "жу") == ["ЖУК"]  # Cyrillic case, and a prefix
    assert await found(db, "БОЛЬШ") == ["ЖУК"]
    assert await found(db, "jean-lu") == ["Jean-Luc"]  # a word's pieces in order, the last a prefix
    assert await found(db, "luc jean") == ["Jean-Luc"]
    assert await found(db, "r2d") == ["Jean-Luc"]
    assert await found(db, "#red-fox") == ["Jean-Luc"]
    assert await found(db, "#portrait") == ["Zoë"]  # a tag only: Catherine's description does not count
    assert await found(db, "portrait") == ["Catherine", "Zoë"]
    assert await found(db, "#port") == []  # a tag is matched whole
    assert await found(db, "cat") == ["Catherine"]
    # what would be query syntax in FTS5 or a tsquery is only ever text: every word must match
    expected = {
        "o'brien": ["Jean-Luc"],
        "cat:*": ["Catherine"],
        "(cat": ["Catherine"],
        "cat\\": ["Catherine"],
        "cat*": ["Catherine"],
        "cat & !zoe": [],
        "cat | zoe": [],
        'NEAR("cat" zoe)': [],
        "cat -zoe": [],
        "tags:art": [],
    }
    for typed, names_found in expected.items():
        assert await found(db, typed) == names_found, typed
    assert await found(db, "zoë dance lisbon") == ["Zoë"]


async def test_a_broad_search_pages_alike_whichever_way_it_is_read(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`broad` (past the count cap) changes how a page is read, never what it holds: on PostgreSQL
    both the walk of the order's index and the GIN fallback when the walk falls short."""
    for n, name in enumerate(["Oak", "Ash", "Elm", "Yew", "Fir", "Bay"]):
        await insert_public(db, name, "a red fox" if n % 2 else "a fox in the snow", "fox" if n < 3 else "")
        await db.execute("UPDATE characters SET uses = ?, created_at = ? WHERE name = ?", (n % 3, 10 - n, name))
    for typed in ("fox", "#fox", "red fox"):
        match = store.match_expression(typed)
        for sort in store.ORDERS:
            whole = [r.character.name for r in await store.search(db, match, sort, 50, 0)]
            assert len(whole) == {"fox": 6, "#fox": 3, "red fox": 3}[typed]
            for window, per_card in ((0, 0), (1000, 20)):  # (0, 0): no walk, the GIN fallback
                monkeypatch.setattr(store, "WALK_WINDOW", window)
                monkeypatch.setattr(store, "WALK_PER_CARD", per_card)
                paged = [
                    r.character.name
                    for offset in range(0, len(whole), 2)
                    for r in await store.search(db, match, sort, 2, offset, broad=True)
                ]
                assert paged == whole, (typed, sort, window)


async def test_only_public_live_shown_characters_are_listed(env: Env, gallery: GalleryService) -> None:
    ids = {name: await publish(env, OWNER, name) for name in ("Alpha", "Beta", "Gamma", "Delta", "Omega")}
    await env.service.share(OWNER, "Beta", "server")
    await env.service.delete(OWNER, "Gamma")
    await env.db.execute("UPDATE characters SET hidden_at = 1 WHERE id = ?", (ids["Delta"],))
    await env.db.execute("UPDATE characters SET taken_down_at = 1 WHERE id = ?", (ids["Omega"],))
    assert await names(gallery, OUTSIDER, sort="name") == ["Alpha"]
    for gone in ("Beta", "Gamma", "Delta", "Omega"):
        with pytest.raises(NotInGallery):
            await gallery.card(OUTSIDER, ids[gone])
        with pytest.raises(NotInGallery):
            await gallery.import_from_card(OUTSIDER, ids[gone], None)


async def test_sorts_paging_and_usage_across_servers(env: Env, gallery: GalleryService) -> None:
    ids = {name: await publish(env, OWNER, name) for name in ("Carol", "Alice", "Bob")}
    # Bob is used in 3 videos across 2 servers, Alice in 1; admission counts them as the job is inserted
    for guild in (GUILD_A, GUILD_B, GUILD_B):
        await add_job(env.db, guild, [ids["Bob"]], env.clock())
    await add_job(env.db, GUILD_A, [ids["Alice"], ids["Bob"]], env.clock())
    for _ in range(4):  # what /generate's record_use does after each admission
        await character_store.add_uses(env.db, [ids["Bob"]], env.clock())
    await character_store.add_uses(env.db, [ids["Alice"]], env.clock())

    assert await names(gallery, OUTSIDER, sort="popular") == ["Bob", "Alice", "Carol"]
    assert await names(gallery, OUTSIDER, sort="newest") == ["Bob", "Alice", "Carol"]
    assert await names(gallery, OUTSIDER, sort="name") == ["Alice", "Bob", "Carol"]
    page = await gallery.browse(OUTSIDER, "", "popular", 0)
    assert (page.page, page.pages, page.total) == (0, 3, 3)
    assert page.card is not None and (page.card.videos, page.card.servers) == (4, 2)
    assert page.card.character.preview is not None and page.card.character.preview.is_file()
    clamped = await gallery.browse(OUTSIDER, "", "popular", 99)
    assert clamped.page == 2 and clamped.card is not None and clamped.card.character.original_name == "Carol"
    assert (clamped.card.videos, clamped.card.servers) == (0, 0)
    with pytest.raises(BadChoice):
        await gallery.browse(OUTSIDER, "", "random", 0)


async def test_past_the_count_cap_pages_go_on_while_a_next_card_exists(env: Env) -> None:
    for name in ("Ann", "Ben", "Cid", "Dot"):
        await publish(env, OWNER, name)
    gallery = GalleryService(env.db, env.service, clock=env.clock, count_cap=2)
    first = await gallery.browse(OUTSIDER, "", "name", 0)
    assert (first.total, first.more, first.has_next, first.pages) == (2, True, True, 2)
    third = await gallery.browse(OUTSIDER, "", "name", 2)
    assert third.card is not None and third.card.character.original_name == "Cid" and third.has_next
    last = await gallery.browse(OUTSIDER, "", "name", 3)
    assert last.card is not None and last.card.character.original_name == "Dot" and not last.has_next
    assert last.pages == 4
    gone = await gallery.browse(OUTSIDER, "", "name", 40)  # a deep page after the gallery shrank
    assert gone.page == 0 and gone.card is not None and gone.card.character.original_name == "Ann"
    assert await store.count(env.db, None, 3) == 3 and await store.count(env.db, None, 10) == 4


async def test_import_from_a_card_then_the_card_is_gone_for_a_second_import(env: Env, gallery: GalleryService) -> None:
    fox = await publish(env, OWNER, "Fox")
    view = await gallery.import_from_card(OUTSIDER, fox, "Vulpes")
    assert (view.name, view.original_name, view.imported) == ("Vulpes", "Fox", True)
    usable = await env.service.resolve_for_generation(OUTSIDER, ["vulpes"])
    assert [u.character_id for u in usable] == [fox]


# --- edit -----------------------------------------------------------------------------------------


async def test_only_the_owner_edits_and_an_import_is_not_editable(env: Env, gallery: GalleryService) -> None:
    fox = await publish(env, OWNER, "Fox")
    await gallery.import_from_card(OUTSIDER, fox, "Vulpes")
    with pytest.raises(CannotEdit):
        await gallery.edit(MEMBER, "fox", description="mine now")
    with pytest.raises(EditImport):
        await gallery.edit(OUTSIDER, "vulpes", description="mine now")
    with pytest.raises(NothingToEdit):
        await gallery.edit(OWNER, "fox")
    row = await character_store.get(env.db, fox)
    assert row is not None and row.description == ""


async def test_edits_reach_importers_who_keep_their_alias(env: Env, gallery: GalleryService) -> None:
    fox = await publish(env, OWNER, "Fox", "a red fox")
    await gallery.import_from_card(OUTSIDER, fox, "Vulpes")
    await gallery.import_from_card(THIRD, fox, None)  # under its own name: the alias is still "Fox"
    edited = await gallery.edit(OWNER, "fox", new_name="Renard", description="un renard", tags="Animal, Wild")
    assert edited.changed == ("name", "description", "tags") and edited.old_name == "Fox"
    assert edited.tags == ("animal", "wild") and edited.character.import_count == 2

    [usable] = await env.service.resolve_for_generation(OUTSIDER, ["vulpes"])
    assert (usable.name, usable.asset.name, usable.asset.description) == ("Vulpes", "Renard", "un renard")
    [usable] = await env.service.resolve_for_generation(THIRD, ["fox"])
    assert (usable.name, usable.asset.name) == ("Fox", "Renard")
    assert await names(gallery, OUTSIDER, "#wild") == ["Renard"]
    assert await names(gallery, OUTSIDER, "fox") == []  # the index follows the rename
    await gallery.edit(OWNER, "renard", description="-", tags="-")
    page = await gallery.browse(OUTSIDER, "renard", "popular")
    assert page.card is not None and page.card.tags == () and page.card.character.description == ""


async def test_a_new_name_follows_creates_rules(env: Env, gallery: GalleryService) -> None:
    await publish(env, OWNER, "mossa")
    await publish(env, OWNER, "Fox")
    with pytest.raises(NameTaken):
        await gallery.edit(OWNER, "fox", new_name="MOSSA")
    with pytest.raises(NameTaken):
        await gallery.edit(OWNER, "fox", new_name="m\u043ess\u0430")  # Cyrillic look-alike of "mossa"
    with pytest.raises(InvalidCharacterName):
        await gallery.edit(OWNER, "fox", new_name="everyone")
    edited = await gallery.edit(OWNER, "mossa", new_name="Mossa")  # its own name, recapitalised
    assert edited.character.name == "Mossa"
    row = await character_store.live_by_key(env.db, GUILD_A, name_key("mossa"))
    assert row is not None and row.name == "Mossa" and row.name_key == "mossa"
    assert row is not None and name_skeleton(row.name) == "mossa"


async def test_a_refused_upload_changes_nothing(env: Env, gallery: GalleryService) -> None:
    await publish(env, OWNER, "Fox")
    with pytest.raises(UploadRefused):
        await gallery.edit(OWNER, "fox", description="new", upload=env.clips.upload("x.txt", b"hi", "text/plain"))
    row = await character_store.live_by_key(env.db, GUILD_A, "fox")
    assert row is not None and row.description == ""


async def test_a_new_clip_makes_new_frames_drops_handles_and_old_files_outlive_open_jobs(
    env: Env, gallery: GalleryService, tmp_path: Path
) -> None:
    fox = await publish(env, OWNER, "Fox")
    before = await character_store.get(env.db, fox)
    assert before is not None
    await character_store.put_handle(
        env.db, fox, "openai", state="ready", external_id="char_1", mention_token="Fox", error=None, now=env.clock()
    )
    old_preview = env.service._files.preview_path(fox).read_bytes()
    job = await add_job(env.db, GUILD_A, [fox], env.clock())  # held: it may still read the old files

    other = make_clip(tmp_path / "other.mp4", seconds=4.0, size=(160, 120), fps=12, pattern="bars", blur=())
    edited = await gallery.edit(OWNER, "fox", upload=env.clips.upload("other.mp4", other.read_bytes()))
    assert edited.changed == ("video",)
    after = await character_store.get(env.db, fox)
    assert after is not None and after.clip_sha256 != before.clip_sha256
    assert after.clip_duration == pytest.approx(4.0, abs=0.2)
    assert all(p.startswith(f"frames/{fox}/e") for p in after.frame_paths)
    assert await character_store.handles(env.db, [fox]) == []  # registered again at the next use
    preview = edited.character.preview
    assert preview is not None and preview.read_bytes() != old_preview

    storage = StorageService(env.db, env.data, retention_days=14, max_bytes=10**9, clock=env.clock)
    await storage.sweep()
    old_files = [before.clip_path, *before.frame_paths]
    assert all((env.data / p).is_file() for p in old_files)  # the held job names the character
    async with env.db.transaction() as conn:
        assert await job_store.transition(conn, job, [JobState.HELD], JobState.CANCELED, env.clock())
    await storage.sweep()
    assert not any((env.data / p).exists() for p in old_files)
    assert all((env.data / p).is_file() for p in (after.clip_path, *after.frame_paths))
    row = await env.db.fetchone("SELECT purged_at FROM character_retired_files WHERE character_id = ?", (fox,))
    assert row is not None and row["purged_at"] is not None


# --- the migration --------------------------------------------------------------------------------


@pytest.fixture(params=ENGINES)
async def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """An unmigrated database on each engine."""
    if request.param == "sqlite":
        db: Database = await Database.open(tmp_path / "castbot.sqlite3")
        yield db
        await db.close()
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = await server.new_database(migrated=False)
    db = await PostgresDatabase.connect(url)
    try:
        yield db
    finally:
        await db.close()
        await server.drop_database(url)


async def test_an_existing_database_upgrades_with_its_characters_searchable_and_usage_counted(
    tmp_path: Path, empty_db: Database
) -> None:
    """0011 in one transaction: the search index filled from the existing rows, usage counted from
    the existing jobs, and the triggers keep both up to date afterwards."""
    source = tmp_path / "upto10"
    (source / "postgresql").mkdir(parents=True)
    for migration in discover_migrations():
        if migration.version <= 10:
            shutil.copy(migration.path, source / migration.path.name)
            variant = migration.path.parent / "postgresql" / migration.path.name
            if variant.is_file():
                shutil.copy(variant, source / "postgresql" / variant.name)
    db = empty_db
    assert await db.migrate(source) == 10
    for i, name in enumerate(["Zoë", "Bruno"], start=1):
        await db.execute(
            "INSERT INTO characters (id, guild_id, owner_id, name, name_key, name_skeleton, description, "
            "visibility, clip_sha256, clip_path, clip_duration, best_window_start, frame_paths, created_at, "
            "updated_at) VALUES (?, 1, 1, ?, ?, ?, 'plays the cello', 'public', 'sha', 'p', 3, 0, '[]', ?, 0)",
            (i, name, name.casefold(), name_skeleton(name), float(i)),
        )
    for guild in (1, 2, 2):
        await add_job(db, guild, [1, 1], 5.0)  # a character named twice is one video
    assert await db.migrate() == len(discover_migrations())
    assert [r.character.name for r in await store.search(db, store.match_expression("zoe"), "name", 10, 0)] == ["Zoë"]
    assert await store.count(db, store.match_expression("cello"), 10) == 2
    assert await store.usage(db, 1) == store.Usage(videos=3, servers=2)
    await add_job(db, 3, [1, 2, 1, 99], 6.0)  # counted by the trigger from now on, once a job
    # a job naming a character that does not exist is still admitted (and counts for nobody)
    assert await store.usage(db, 1) == store.Usage(videos=4, servers=3)
    assert await store.usage(db, 2) == store.Usage(videos=1, servers=1)
    await db.execute("UPDATE characters SET description = 'sings' WHERE id = 2")
    assert await store.count(db, store.match_expression("cello"), 10) == 1
    assert await store.count(db, store.match_expression("sings"), 10) == 1
