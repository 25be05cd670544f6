"""TrustService with a real database on each engine: operator takedown/restore and their audit,
reports counted per distinct member with the threshold hiding a public character, the import
checks, and the takedown refused at admission's name resolution."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bot.config import Settings
from bot.db import Database, IntegrityError, dialect
from bot.errors import NotModerator
from bot.i18n import t
from bot.services.actors import Actor
from bot.services.characters import CharacterService
from bot.services.characters.errors import UnknownCharacters, Unusable
from bot.services.guilds import GuildService
from bot.services.trust import (
    AlreadyTakenDown,
    BadReason,
    NothingToRestore,
    NotOperator,
    NotOwnerOfImports,
    NotReportable,
    TrustService,
    UnknownCode,
)
from bot.services.trust_rules import ImportsOff, ImportTakenDown, ImportWithdrawn, check_importable, consent_needed
from bot.store import characters as characters_store
from bot.store import trust as trust_store
from bot.ui.trust import reports_text

HOME, AWAY = 100, 200
OPERATOR = Actor(user_id=9, guild_id=None)
OWNER = Actor(user_id=1, guild_id=HOME)
AWAY_MOD = Actor(user_id=5, guild_id=AWAY, manage_guild=True)
AWAY_MEMBER = Actor(user_id=6, guild_id=AWAY)


class Clock:
    def __init__(self) -> None:
        self.now = 1_790_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
async def trust(db: Database) -> TrustService:
    return TrustService(db, GuildService(db), operators=frozenset({9}), threshold=3, clock=Clock())


async def add_character(db: Database, name: str, *, visibility: str = "public", code: str | None = None) -> int:
    async with db.transaction() as conn:
        character_id = await characters_store.insert_character(
            conn,
            guild_id=HOME,
            owner_id=OWNER.user_id,
            name=name,
            name_key=name.casefold(),
            description="",
            visibility="private",
            clip_sha256="0" * 64,
            name_skeleton=name.casefold(),
            clip_path="clips/x.mp4",
            clip_duration=3.0,
            best_window_start=0.0,
            source_job_id=None,
            now=1.0,
        )
        issued = (code or f"C0DE{character_id:06d}") if visibility == "public" else None
        await characters_store.set_visibility(conn, character_id, visibility, issued, 1.0)
    return character_id


async def flags(db: Database, character_id: int) -> trust_store.Flags:
    return (await trust_store.flags(db, [character_id]))[character_id]


async def test_only_operators_take_down_and_restore(db: Database, trust: TrustService) -> None:
    fox = await add_character(db, "Fox", code="F0XF0X1234")
    for outsider in (OWNER, AWAY_MOD, Actor(user_id=10, guild_id=HOME, manage_guild=True)):
        with pytest.raises(NotOperator):
            await trust.takedown(outsider, "F0XF0X1234")
        with pytest.raises(NotOperator):
            await trust.open_reports(outsider)
    assert (await flags(db, fox)).taken_down_at is None
    assert await db.fetchall("SELECT * FROM operator_audit") == []

    done = await trust.takedown(OPERATOR, "f0xf0x1234")  # case is forgiven
    assert (done.name, done.code) == ("Fox", "F0XF0X1234")
    assert (await flags(db, fox)).taken_down_at is not None
    with pytest.raises(AlreadyTakenDown):
        await trust.takedown(OPERATOR, "F0XF0X1234")
    with pytest.raises(UnknownCode):
        await trust.takedown(OPERATOR, "NPE0000000")

    await trust.restore(OPERATOR, "F0XF0X1234")
    assert (await flags(db, fox)).taken_down_at is None
    with pytest.raises(NothingToRestore):
        await trust.restore(OPERATOR, "F0XF0X1234")
    audit = await db.fetchall("SELECT operator_id, action, character_id FROM operator_audit ORDER BY id")
    assert [tuple(r) for r in audit] == [(9, "takedown", fox), (9, "restore", fox)]


async def test_the_audit_is_append_only(db: Database, trust: TrustService) -> None:
    await add_character(db, "Fox", code="F0XF0X1234")
    await trust.takedown(OPERATOR, "F0XF0X1234")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        await db.execute("UPDATE operator_audit SET operator_id = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        await db.execute("DELETE FROM operator_audit")
    if dialect(db) == "postgresql":  # SQLite has no TRUNCATE
        with pytest.raises(IntegrityError, match="append-only"):
            await db.execute("TRUNCATE operator_audit CASCADE")
    rows = await db.fetchall("SELECT operator_id, action FROM operator_audit")
    assert [tuple(r) for r in rows] == [(9, "takedown")]


async def test_distinct_reporters_hide_a_public_character_at_the_threshold(db: Database, trust: TrustService) -> None:
    fox = await add_character(db, "Fox", code="F0XF0X1234")
    first = await trust.report(Actor(21, AWAY), "c", fox, "not_me")
    assert [c.reporters for c in first.characters] == [1] and not first.characters[0].hidden_now
    again = await trust.report(Actor(21, AWAY), "c", fox, "sexual")  # the same member counts once
    assert again.already and again.characters == ()
    await trust.report(Actor(22, AWAY), "c", fox, "other")
    assert (await flags(db, fox)).hidden_at is None
    third = await trust.report(Actor(23, None), "c", fox, "not_me")
    assert third.characters[0].hidden_now and third.characters[0].reporters == 3
    assert (await flags(db, fox)).hidden_at is not None
    assert await characters_store.count_community(db) == 0  # off the public listing
    with pytest.raises(BadReason):
        await trust.report(Actor(24, AWAY), "c", fox, "boring")

    page = await trust.open_reports(OPERATOR)
    assert page.total == 1 and page.items[0].reporters == 3 and page.items[0].reasons[0] == "not_me"
    assert [tuple(r) for r in await db.fetchall("SELECT operator_id, action, detail FROM operator_audit")] == [
        (9, "reports", "open=1")
    ]  # reading the reports is an operator action too
    # review: restore brings it back and closes the reports
    restored = await trust.restore(OPERATOR, "F0XF0X1234")
    assert restored.resolved_reports == 3
    assert (await flags(db, fox)).hidden_at is None and await characters_store.count_community(db) == 1
    assert (await trust.open_reports(OPERATOR)).total == 0


async def test_reports_name_only_shared_characters(db: Database, trust: TrustService) -> None:
    private = await add_character(db, "Mine", visibility="private")
    with pytest.raises(NotReportable):  # never public: it has no card to report
        await trust.report(Actor(21, AWAY), "c", private, "other")
    with pytest.raises(NotReportable):
        await trust.report(Actor(21, AWAY), "j", 12345, "other")  # no such job


async def test_import_checks(db: Database, trust: TrustService) -> None:
    fox = await add_character(db, "Fox", code="F0XF0X1234")
    row = await characters_store.get(db, fox)
    assert row is not None
    await check_importable(db, AWAY, row)  # allowed by default

    with pytest.raises(NotModerator):
        await trust.change_settings(AWAY_MEMBER, allow_imports=False)
    settings, changed = await trust.change_settings(AWAY_MOD, allow_imports=False, report_channel_id=777)
    assert changed == ("allow_imports", "report_channel") and not settings.allow_imports
    with pytest.raises(ImportsOff) as off:
        await check_importable(db, AWAY, row)
    assert t(off.value.key, "en") == "This server's moderators turned off importing public characters."
    await trust.change_settings(AWAY_MOD, allow_imports=True)

    async with db.transaction() as conn:
        await trust_store.ban_import(conn, fox, AWAY, OWNER.user_id, 5.0)
    with pytest.raises(ImportWithdrawn):
        await check_importable(db, AWAY, row)
    await trust.takedown(OPERATOR, "F0XF0X1234")
    with pytest.raises(ImportTakenDown):
        await check_importable(db, 300, row)


@pytest.fixture
async def characters(db: Database, tmp_path: Path) -> AsyncIterator[CharacterService]:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", providers="local")
    async with httpx.AsyncClient(trust_env=False) as http:
        yield CharacterService(db, settings, {}, GuildService(db), http)


async def test_a_taken_down_character_is_refused_at_admission_even_at_home(
    db: Database, trust: TrustService, characters: CharacterService
) -> None:
    await add_character(db, "Fox", code="F0XF0X1234")
    assert [u.name for u in await characters.resolve_for_generation(OWNER, ["fox"])] == ["Fox"]
    await trust.takedown(OPERATOR, "F0XF0X1234")
    with pytest.raises(UnknownCharacters) as refused:
        await characters.resolve_for_generation(OWNER, ["fox"])
    assert [p.reason for p in refused.value.problems] == [Unusable.TAKEN_DOWN]
    text = t(refused.value.key, "en", **refused.value.params)
    assert "`@fox` was taken down by the bot's operators" in text and "nothing was started or charged" in text
    await trust.restore(OPERATOR, "F0XF0X1234")
    assert len(await characters.resolve_for_generation(OWNER, ["fox"])) == 1


async def test_only_the_owner_sees_importers_and_withdraws_one(db: Database, trust: TrustService) -> None:
    fox = await add_character(db, "Fox", code="F0XF0X1234")
    async with db.transaction() as conn:
        for guild in (AWAY, 300):
            await characters_store.insert_import(
                conn, guild_id=guild, character_id=fox, alias="Fox", alias_key="fox", by=6, now=2.0
            )
    for stranger in (Actor(user_id=2, guild_id=HOME, manage_guild=True), Actor(user_id=1, guild_id=AWAY)):
        with pytest.raises(NotOwnerOfImports):
            await trust.importers(stranger, fox)
        with pytest.raises(NotOwnerOfImports):
            await trust.revoke_import(stranger, fox, AWAY)
    name, importers = await trust.importers(OWNER, fox)
    assert name == "Fox" and [i.guild_id for i in importers] == [AWAY, 300]
    assert await trust.revoke_import(OWNER, fox, AWAY) == "Fox"
    assert [i.guild_id for i in (await trust.importers(OWNER, fox))[1]] == [300]
    assert await trust_store.import_banned(db, fox, AWAY) and not await trust_store.import_banned(db, fox, 300)


async def test_operator_reports_fit_one_message_and_count_the_rest(db: Database, trust: TrustService) -> None:
    for n in range(20):
        character_id = await add_character(db, f"Hero_{n:02d}_{'x' * 20}")
        for reporter in range(n % 4 + 1):
            await trust.report(Actor(100 + reporter, AWAY), "c", character_id, "other")
    page = await trust.open_reports(OPERATOR)
    assert page.total == 20 and len(page.items) == 15
    assert [i.reporters for i in page.items][:5] == [4, 4, 4, 4, 4]  # the most reported first
    for locale in ("en", "ru", "zh-CN"):
        text = reports_text(page, locale)
        assert len(text) <= 2000
    assert reports_text(page, "en").endswith("…and 5 more.")


async def test_when_consent_is_asked(db: Database, trust: TrustService) -> None:
    for current in ("private", "server"):
        assert await consent_needed(db, HOME, current, "public")
    assert not await consent_needed(db, HOME, "public", "public")  # nothing changes
    assert not await consent_needed(db, HOME, "public", "server")  # narrowing never asks again
    assert not await consent_needed(db, HOME, "server", "private")
    assert not await consent_needed(db, HOME, "private", "server")  # only where moderators require it
    await trust.change_settings(Actor(user_id=3, guild_id=HOME, manage_guild=True), require_consent=True)
    assert await consent_needed(db, HOME, "private", "server")
    assert not await consent_needed(db, AWAY, "private", "server")
