"""Creating characters: name rules, attachment checks before download, storage, dedupe, extract."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.i18n import t
from bot.services.characters.errors import (
    ClipRefused,
    InvalidCharacterName,
    JobNotFound,
    NameTaken,
    UploadRefused,
)
from bot.services.characters.text import free_name, normalise_share_code, shown
from discord_sandbox.clips import make_clip, make_png_as_mp4, make_truncated
from tests.postgres import ENGINES, open_test_database
from tests.unit.test_character_service import MEMBER, OWNER, ClipServer, Env, clip_bytes, clip_server, make_env

__all__ = ["clip_bytes", "clip_server"]  # shared fixtures

MB = 1024 * 1024


@pytest.fixture(params=ENGINES)
async def env(
    request: pytest.FixtureRequest, tmp_path: Path, clip_server: ClipServer, clip_bytes: bytes
) -> AsyncIterator[Env]:
    async with open_test_database(request.param, request, tmp_path / "db") as database:
        async for e in make_env(tmp_path, clip_server, clip_bytes, database=database, max_clip_mb=1):
            yield e


async def rows(env: Env) -> int:
    row = await env.db.fetchone("SELECT COUNT(*) FROM characters")
    assert row is not None
    return int(row[0])


def message(error: Exception) -> str:
    assert hasattr(error, "key") and hasattr(error, "params")
    return t(error.key, "en", **error.params)


async def test_create_stores_clip_by_hash_and_frames_by_id(env: Env) -> None:
    created = await env.create(OWNER, "Anna", description="  a  red   fox  ")
    view = created.character
    sha = hashlib.sha256(env.clip).hexdigest()
    assert (view.name, view.owner_id, view.visibility, view.description) == ("Anna", 1, "server", "a red fox")
    assert created.registration is None  # local needs no handle
    assert view.frontal == env.data / "frames" / str(view.id) / "ref_0.jpg"
    assert view.frontal.read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG
    row = await env.db.fetchone("SELECT clip_path, clip_sha256, frame_paths, clip_duration FROM characters")
    assert row is not None
    assert (row["clip_path"], row["clip_sha256"]) == (f"clips/{sha}.mp4", sha)
    assert (env.data / row["clip_path"]).read_bytes() == env.clip
    frames = json.loads(row["frame_paths"])
    assert frames[0] == f"frames/{view.id}/ref_0.jpg" and len(frames) >= 2
    assert row["clip_duration"] == pytest.approx(3.0, abs=0.1)
    assert not list((env.data / "tmp").iterdir())  # no temporary left behind


async def test_same_clip_is_stored_once(env: Env) -> None:
    a = await env.create(OWNER, "Anna")
    b = await env.create(MEMBER, "Boris")
    clips = list((env.data / "clips").iterdir())
    assert len(clips) == 1
    assert a.character.frontal != b.character.frontal
    assert a.character.frontal is not None and b.character.frontal is not None
    assert a.character.frontal.read_bytes() == b.character.frontal.read_bytes()
    # deleting one character keeps the shared clip for the other
    await env.service.delete(OWNER, "anna")
    assert clips[0].is_file()


@pytest.mark.parametrize(
    ("name", "reason", "shown_text"),
    [
        ("@everyone", "reserved", "everyone is reserved"),
        ("**bold**", "invalid_characters", "'*' (U+002A ASTERISK)"),
        ("a" * 33, "too_long", "at most 32 characters, not 33"),
        ("an\u200bna", "invalid_characters", "U+200B ZERO WIDTH SPACE"),
        ("\u202eanna", "invalid_characters", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("_anna_", "edge_underscore", "start or end with _"),
        ("x", "too_short", "at least 2"),
        ("2024", "no_letter", "at least one letter"),
    ],
)
async def test_hostile_names_are_refused_with_the_reason(env: Env, name: str, reason: str, shown_text: str) -> None:
    upload = env.clips.upload("a.mp4", env.clip)
    with pytest.raises(InvalidCharacterName) as info:
        await env.service.create_from_upload(OWNER, name=name, upload=upload)
    assert info.value.reason == reason
    text = message(info.value)
    assert shown_text in text
    assert "\u200b" not in text and "\u202e" not in text  # never echoed raw
    assert env.clips.fetched == [] and await rows(env) == 0


async def test_taken_name_suggests_a_free_one_before_downloading(env: Env) -> None:
    await env.create(OWNER, "Anna")
    await env.create(OWNER, "anna2")
    env.clips.fetched.clear()
    upload = env.clips.upload("b.mp4", env.clip)
    with pytest.raises(NameTaken) as info:
        await env.service.create_from_upload(MEMBER, name="ＡＮＮＡ", upload=upload)  # fullwidth: the same name
    assert info.value.suggestion == "ANNA_2"
    assert "`@ANNA_2` is free" in message(info.value)
    assert env.clips.fetched == []


async def test_not_a_video_type_is_refused_without_download(env: Env, tmp_path: Path) -> None:
    png = make_png_as_mp4(tmp_path / "p.png").read_bytes()
    upload = env.clips.upload("p.png", png, "image/png")
    with pytest.raises(UploadRefused) as info:
        await env.service.create_from_upload(OWNER, name="Anna", upload=upload)
    assert "isn't a video (it is `image/png`)" in message(info.value)
    assert env.clips.fetched == [] and await rows(env) == 0 and env.stored_files() == []


async def test_oversize_is_refused_from_metadata_without_download(env: Env) -> None:
    upload = env.clips.upload("big.mp4", b"\0" * (MB + 1))
    with pytest.raises(UploadRefused) as info:
        await env.service.create_from_upload(OWNER, name="Anna", upload=upload)
    assert "1.0 MB; the limit for character clips is 1 MB" in message(info.value)
    assert env.clips.fetched == [] and env.stored_files() == []


async def test_a_body_bigger_than_announced_is_cut_off(env: Env) -> None:
    upload = env.clips.upload("liar.mp4", b"\0" * (2 * MB), size=1000)
    with pytest.raises(UploadRefused) as info:
        await env.service.create_from_upload(OWNER, name="Anna", upload=upload)
    assert info.value.key == "characters.upload.too_large"
    assert env.clips.fetched == ["liar.mp4"]
    assert env.stored_files() == [] and await rows(env) == 0


async def test_truncated_and_disguised_files_are_refused_with_nothing_stored(env: Env, tmp_path: Path) -> None:
    cut = make_truncated(tmp_path / "cut.mp4").read_bytes()
    with pytest.raises(ClipRefused) as info:
        await env.service.create_from_upload(OWNER, name="Anna", upload=env.clips.upload("cut.mp4", cut))
    assert info.value.problem == "unreadable" and "Nothing was stored" in message(info.value)
    png = make_png_as_mp4(tmp_path / "still.mp4").read_bytes()
    with pytest.raises(ClipRefused) as still:
        await env.service.create_from_upload(OWNER, name="Anna", upload=env.clips.upload("still.mp4", png))
    assert still.value.problem == "not_video"
    assert env.stored_files() == [] and await rows(env) == 0


async def test_too_short_clip_is_refused(env: Env, tmp_path: Path) -> None:
    short = make_clip(tmp_path / "short.mp4", seconds=1.0, size=(160, 120), fps=12, blur=()).read_bytes()
    with pytest.raises(ClipRefused) as info:
        await env.service.create_from_upload(OWNER, name="Anna", upload=env.clips.upload("s.mp4", short))
    assert info.value.problem == "too_short" and "characters need 2–20 s" in message(info.value)
    assert env.stored_files() == []


async def test_racing_creates_of_one_name_keep_the_winners_clip(env: Env) -> None:
    first = env.clips.upload("a.mp4", env.clip)
    second = env.clips.upload("b.mp4", env.clip)
    results = await asyncio.gather(
        env.service.create_from_upload(OWNER, name="Anna", upload=first),
        env.service.create_from_upload(MEMBER, name="anna", upload=second),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["Created", "NameTaken"]
    assert await rows(env) == 1
    clips = list((env.data / "clips").iterdir())
    assert len(clips) == 1 and clips[0].read_bytes() == env.clip
    assert not list((env.data / "tmp").iterdir())


async def test_public_creation_issues_a_share_code(env: Env) -> None:
    created = await env.create(OWNER, "Anna", "public")
    code = created.character.share_code
    assert code is not None and normalise_share_code(code.lower()) == code


# --- extract --------------------------------------------------------------------------------------


async def add_job(env: Env, user_id: int, state: str, result: Path | None, guild_id: int = 100) -> int:
    now = env.clock()
    async with env.db.transaction() as conn:
        cursor = await conn.execute(
            "INSERT INTO jobs (guild_id, channel_id, user_id, prompt, request_json, providers, state, "
            "estimate_micros, global_period, guild_period, member_period, result_path, created_at, updated_at) "
            "VALUES (?, 1, ?, ?, '{}', 'local', ?, 0, '2026-11', '2026-11', '2026-11-22', ?, ?, ?) RETURNING id",
            (guild_id, user_id, f"a fox #{state}", state, None if result is None else str(result), now, now),
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def test_extract_from_an_own_finished_video(env: Env) -> None:
    videos = env.data / "videos"
    videos.mkdir(parents=True)
    (videos / "1.mp4").write_bytes(env.clip)
    mine = await add_job(env, OWNER.user_id, "delivered", Path("videos/1.mp4"))
    await add_job(env, OWNER.user_id, "failed", None)
    others = await add_job(env, MEMBER.user_id, "delivered", Path("videos/1.mp4"))
    elsewhere = await add_job(env, OWNER.user_id, "succeeded", videos / "1.mp4", guild_id=200)

    choices = await env.service.finished_jobs(OWNER)
    assert [c.job_id for c in choices] == [mine]
    assert [c.job_id for c in await env.service.finished_jobs(OWNER, str(mine))] == [mine]
    assert await env.service.finished_jobs(OWNER, "no such prompt") == []

    for job_id in (others, elsewhere, 9999):
        with pytest.raises(JobNotFound):
            await env.service.create_from_job(OWNER, job_id=job_id, name="Fox")
    created = await env.service.create_from_job(OWNER, job_id=mine, name="Fox")
    row = await env.db.fetchone("SELECT source_job_id FROM characters WHERE id = ?", (created.character.id,))
    assert row is not None and row["source_job_id"] == mine
    assert (videos / "1.mp4").is_file()  # the delivered video stays where it was


async def test_extract_refuses_a_video_whose_file_is_gone(env: Env) -> None:
    job = await add_job(env, OWNER.user_id, "delivered", Path("videos/missing.mp4"))
    with pytest.raises(JobNotFound):
        await env.service.create_from_job(OWNER, job_id=job, name="Fox")


async def test_frames_are_re_extracted_when_the_twin_lost_them(env: Env) -> None:
    first = await env.create(OWNER, "Anna")
    assert first.character.frontal is not None
    shutil.rmtree(first.character.frontal.parent)
    second = await env.create(OWNER, "Boris")
    assert second.character.frontal is not None and second.character.frontal.is_file()


# --- pure helpers ---------------------------------------------------------------------------------


def test_free_name_and_safe_echo() -> None:
    taken = {"anna", "anna2", "anna_2"}
    assert free_name("Anna", taken.__contains__) == "Anna3"
    long = "a" * 32
    suggestion = free_name(long, {long}.__contains__)
    assert suggestion is not None and len(suggestion) == 32 and suggestion.endswith("2")
    assert shown("a`b\u202ec\u200bd\n e") == "aˋbcd e"
    assert shown("x" * 50, 10) == "x" * 9 + "…"
    assert normalise_share_code("abcde-fghjk") == "ABCDEFGHJK"
    assert normalise_share_code("O1IL0") is None  # too short
    assert normalise_share_code("oooooiiiii") == "0000011111"  # look-alikes read as digits
    assert normalise_share_code("UUUUUUUUUU") is None  # U is not in the alphabet


def test_service_modules_do_not_import_discord() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import bot.services.characters, bot.store.characters; "
        "print(any(m == 'discord' or m.startswith('discord.') for m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "False"


def test_every_message_the_service_can_raise_is_in_the_catalog() -> None:
    import re

    from bot.i18n import catalog
    from bot.media import ClipProblem
    from bot.prompts import NameProblem
    from bot.services.characters.errors import Unusable

    en = catalog("en")
    needed = {f"characters.name.{p.value}" for p in NameProblem}
    needed |= {f"characters.clip.{p.value}" for p in ClipProblem}
    needed |= {f"characters.unusable.{u.value}" for u in Unusable}
    needed |= {f"characters.visibility.{v}" for v in ("private", "server", "public")}
    needed |= {f"characters.list.{s}" for s in ("server", "mine", "community")}
    needed |= {f"characters.list.empty.{s}" for s in ("server", "mine", "community")}
    needed |= {f"characters.shared.{v}" for v in ("private", "server", "public")}
    root = Path(__file__).resolve().parents[2]
    sources = [root / "cogs" / "characters.py", root / "bot" / "ui" / "characters.py"]
    sources += list((root / "bot" / "services").glob("character*.py"))
    for source in sources:
        needed |= set(re.findall(r"\"((?:characters|cmd\.character)\.[a-z_.]+[a-z_])\"", source.read_text()))
    assert {"characters.make.no_video", "cmd.character.create.name", "characters.page.next"} <= needed  # found
    missing = sorted(k for k in needed if k not in en)
    assert missing == []
