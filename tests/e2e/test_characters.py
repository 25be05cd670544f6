"""/character end to end: the real bot, the Discord sandbox, real clips, real files on disk."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.app import Castbot
from bot.i18n import t
from bot.services.actors import Actor
from bot.services.characters import CharacterService
from bot.services.characters.errors import UnknownCharacters, Unusable
from discord_sandbox import DiscordSandbox, StoredMessage
from discord_sandbox.clips import make_clip, make_png_as_mp4, make_truncated
from tests.conftest import BotHarness, Simulators, World
from tests.fakes.openai_sim import Fault, OpenAISim
from tests.helpers import confirm_consent

pytestmark = pytest.mark.e2e
TIMEOUT = 20.0  # a create downloads, probes and extracts frames: generous on a loaded machine
OPENAI_KEY = "sk-sim-e2e-characters-0123456789"


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("e2e-clips")
    return {
        "clip": make_clip(root / "clip.mp4", seconds=3.0, size=(160, 120), fps=12, blur=()).read_bytes(),
        "truncated": make_truncated(root / "cut.mp4").read_bytes(),
        "png": make_png_as_mp4(root / "pic.png").read_bytes(),
    }


def service_of(bot: Castbot) -> CharacterService:
    return bot.services.characters


async def run(
    sandbox: DiscordSandbox, guild: Any, channel: Any, who: Any, command: str, **options: Any
) -> StoredMessage:
    handle = await sandbox.invoke(guild, channel, who, command, **options)
    reply = await handle.wait_final_message(timeout=TIMEOUT)
    assert handle.is_ephemeral, "character replies are for the member who asked"
    assert reply.allowed_mentions == {"parse": []}
    return reply


async def create(
    sandbox: DiscordSandbox, world: World, clips: dict[str, bytes], name: str, who: Any = None, **options: Any
) -> StoredMessage:
    video = sandbox.add_attachment(clips["clip"], "clip.mp4", "video/mp4")
    return await run(sandbox, world.guild, world.channel, who or world.member, "character create", name=name,
                     video=video, **options)  # fmt: skip


async def count_characters(bot: Castbot) -> int:
    row = await bot.db.fetchone("SELECT COUNT(*) FROM characters")
    assert row is not None
    return int(row[0])


def list_names(reply: StoredMessage) -> list[str]:
    """The names on a list page, in order, from its one embed's numbered lines."""
    [embed] = reply.embeds
    return re.findall(r"^\*\*\d+\.\*\* \*\*(@[^*]+)\*\*", embed["description"], re.MULTILINE)


def assert_animated_webp(data: bytes) -> None:
    assert len(data) < 2_000_000
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "WEBP" and getattr(image, "is_animated", False)
        assert image.info["loop"] == 0 and getattr(image, "n_frames", 1) >= 10


def stored_files(data: Path) -> list[str]:
    return sorted(
        str(p.relative_to(data))
        for sub in ("clips", "frames", "tmp")
        if (data / sub).exists()
        for p in (data / sub).rglob("*")
        if p.is_file()
    )


# --- create, list, info ---------------------------------------------------------------------------


async def test_create_then_list_then_info(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, harness: BotHarness, clips: dict[str, bytes]
) -> None:
    reply = await create(sandbox, world, clips, "Anna", description="A **red** fox")
    assert "Created `@Anna`" in reply.content
    card = reply.embeds[0]
    assert card["title"] == "@Anna" and card["description"] == "A **red** fox"
    # the animated preview is the card's image, the frontal frame its thumbnail
    assert card["image"]["url"] == "attachment://preview.webp"
    assert card["thumbnail"]["url"] == "attachment://frontal.jpg"
    assert reply.file("frontal.jpg").data[:3] == b"\xff\xd8\xff"
    assert_animated_webp(reply.file("preview.webp").data)
    fields = {f["name"]: f["value"] for f in card["fields"]}
    assert fields["Owner"] == f"<@{world.member.id}>" and fields["Visible to"] == "everyone in its server"
    assert reply.pinged_user_ids == []

    data = harness.settings().data_dir
    files = stored_files(data)
    sha = hashlib.sha256(clips["clip"]).hexdigest()
    assert [f for f in files if f.startswith("clips/")] == [f"clips/{sha}.mp4"]
    assert "frames/1/ref_0.jpg" in files and not [f for f in files if f.startswith("tmp/")]
    assert "frames/1/preview.webp" in files  # beside the frames: it lives as long as the character

    listed = await run(sandbox, world.guild, world.channel, world.admin, "character list")
    assert "1 in all" in listed.content
    assert len(listed.embeds) == 1 and listed.embeds[0]["description"].startswith("**1.** **@Anna** — ")
    assert listed.embeds[0]["image"]["url"] == "attachment://gallery.jpg"
    assert [a.filename for a in listed.attachments] == ["gallery.jpg"]
    assert listed.file("gallery.jpg").data[:3] == b"\xff\xd8\xff"

    info = await run(sandbox, world.guild, world.channel, world.admin, "character info", name="anna")
    assert info.embeds[0]["title"] == "@Anna" and info.embeds[0]["image"]["url"] == "attachment://preview.webp"
    assert info.embeds[0]["thumbnail"]["url"] == "attachment://frontal.jpg"
    assert info.file("frontal.jpg").data == reply.file("frontal.jpg").data
    assert info.file("preview.webp").data == reply.file("preview.webp").data  # made once, at creation

    choices = await sandbox.autocomplete(world.guild, world.channel, world.admin, "character info", focused="name",
                                         value="AN")  # fmt: skip
    assert choices == [{"name": "Anna", "value": "Anna"}]


async def test_info_makes_the_preview_of_a_character_that_lacks_one(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, harness: BotHarness, clips: dict[str, bytes]
) -> None:
    await create(sandbox, world, clips, "Olde")
    preview = harness.settings().data_dir / "frames" / "1" / "preview.webp"
    preview.unlink()  # a character made before previews existed
    info = await run(sandbox, world.guild, world.channel, world.member, "character info", name="olde")
    assert info.embeds[0]["image"]["url"] == "attachment://preview.webp"
    assert_animated_webp(info.file("preview.webp").data)
    assert preview.is_file()  # kept: the next /character info sends it as it is


async def test_duplicate_name_gets_a_free_suggestion(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, clips: dict[str, bytes]
) -> None:
    await create(sandbox, world, clips, "Anna")
    fetched = len(sandbox.cdn_fetches)
    reply = await create(sandbox, world, clips, "ANNA", who=world.admin)
    assert reply.content == "This server already has a character called `@ANNA`. `@ANNA2` is free."
    assert len(sandbox.cdn_fetches) == fetched  # refused before downloading anything
    assert await count_characters(castbot) == 1


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("@everyone", "everyone is reserved by Discord"),
        ("**anna**", "only letters, digits and _ are allowed, not '*' (U+002A ASTERISK)"),
        ("a" * 33, "a name has at most 32 characters, not 33"),
        ("an\u200bna", "not U+200B ZERO WIDTH SPACE"),
        ("anna\u202e", "not U+202E RIGHT-TO-LEFT OVERRIDE"),
    ],
)
async def test_hostile_names_are_refused_with_reasons(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, clips: dict[str, bytes], name: str, reason: str
) -> None:
    reply = await create(sandbox, world, clips, name)
    assert "can't be a character name" in reply.content and reason in reply.content
    assert "\u200b" not in reply.content and "\u202e" not in reply.content
    assert reply.pinged_everyone is False and reply.embeds == []
    assert sandbox.cdn_fetches == [] and await count_characters(castbot) == 0


# --- attachments that cannot be characters --------------------------------------------------------


async def test_non_video_truncated_and_oversize_attachments_store_nothing(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, clips: dict[str, bytes]
) -> None:
    bot = await harness.start(max_clip_mb=1)
    data = harness.settings().data_dir

    picture = sandbox.add_attachment(clips["png"], "pic.png", "image/png")
    reply = await run(sandbox, world.guild, world.channel, world.member, "character create", name="Anna",
                      video=picture)  # fmt: skip
    assert "isn't a video (it is `image/png`)" in reply.content
    assert sandbox.cdn_fetches == []

    big = sandbox.add_attachment(b"\0" * (1024 * 1024 + 1), "big.mp4", "video/mp4")
    reply = await run(sandbox, world.guild, world.channel, world.member, "character create", name="Anna", video=big)
    assert "the limit for character clips is 1 MB" in reply.content
    assert sandbox.cdn_fetches == []  # refused from the attachment's size, before downloading

    cut = sandbox.add_attachment(clips["truncated"], "cut.mp4", "video/mp4")
    reply = await run(sandbox, world.guild, world.channel, world.member, "character create", name="Anna", video=cut)
    assert reply.content.startswith("That video can't be used:") and "Nothing was stored" in reply.content
    assert [status for _, status in sandbox.cdn_fetches] == [200]

    assert await count_characters(bot) == 0
    assert stored_files(data) == []


# --- sharing across guilds ------------------------------------------------------------------------


async def test_public_share_import_then_revoke_refuses_use_in_the_other_guild(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, clips: dict[str, bytes]
) -> None:
    service = service_of(castbot)
    await create(sandbox, world, clips, "Fox")
    elsewhere = Actor(user_id=world.other_member.id, guild_id=world.other_guild.id)

    # not shared yet: the other guild cannot see or use it
    info = await run(sandbox, world.other_guild, world.other_channel, world.other_member, "character info", name="fox")
    assert info.content == "There is no character `@fox` you can use in this server."

    asked = await sandbox.invoke(world.guild, world.channel, world.member, "character share", name="fox",
                                 visibility="public")  # fmt: skip
    prompt = await asked.wait_final_message(timeout=TIMEOUT)
    assert "please confirm: the person shown is you" in prompt.content  # nothing public before that
    assert (await service_of(castbot).list_page(elsewhere, "community")).total == 0
    shared = await confirm_consent(sandbox, asked, world.member)
    code = next(f["value"] for f in shared.embeds[0]["fields"] if f["name"] == "Share code").split("`")[1]
    assert f"Its share code is `{code}`" in shared.content and len(code) == 10

    community = await run(sandbox, world.other_guild, world.other_channel, world.other_member, "character list",
                          scope="community")  # fmt: skip
    assert list_names(community) == ["@Fox"] and code in community.embeds[0]["description"]

    imported = await run(sandbox, world.other_guild, world.other_channel, world.other_member, "character import",
                         code=code.lower(), name="Vulpes")  # fmt: skip
    assert "Imported `@Vulpes`" in imported.content
    usable = await service.resolve_for_generation(elsewhere, ["vulpes"])
    assert [(u.name, u.asset.name) for u in usable] == [("Vulpes", "Fox")]

    revoked = await run(sandbox, world.guild, world.channel, world.member, "character share", name="fox",
                        visibility="private")  # fmt: skip
    assert "now private" in revoked.content and "1 other server imported it" in revoked.content

    with pytest.raises(UnknownCharacters) as refused:
        await service.resolve_for_generation(elsewhere, ["vulpes"])
    assert [p.reason for p in refused.value.problems] == [Unusable.REVOKED]
    text = t(refused.value.key, "en", **refused.value.params)
    assert "`@vulpes` was imported from another server, and its owner has stopped sharing it." in text
    assert "nothing was started or charged" in text
    # the importing guild sees why, too
    info = await run(sandbox, world.other_guild, world.other_channel, world.other_member, "character info",
                     name="vulpes")  # fmt: skip
    fields = {f["name"]: f["value"] for f in info.embeds[0]["fields"]}
    assert "stopped sharing it" in fields["Imported"] and "image" not in info.embeds[0]


# --- deleting -------------------------------------------------------------------------------------


async def test_moderator_deletes_another_members_character_but_a_member_cannot(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, clips: dict[str, bytes]
) -> None:
    eve = world.guild.add_member("eve")
    await create(sandbox, world, clips, "Mossy")
    refused = await run(sandbox, world.guild, world.channel, eve, "character delete", name="mossy")
    assert refused.content == "Only the owner of `@Mossy` or a moderator can delete it."
    assert len(await service_of(castbot).resolve_for_generation(Actor(eve.id, world.guild.id), ["mossy"])) == 1

    deleted = await run(sandbox, world.guild, world.channel, world.admin, "character delete", name="mossy")
    assert deleted.content.startswith("Deleted `@Mossy`.")
    row = await castbot.db.fetchone("SELECT deleted_at FROM characters WHERE name = 'Mossy'")
    assert row is not None and row["deleted_at"] is not None  # soft: job history keeps pointing at it
    listed = await run(sandbox, world.guild, world.channel, world.member, "character list")
    assert listed.content.startswith("No characters here yet")


# --- the message context menu ---------------------------------------------------------------------


async def test_make_character_from_a_message_with_a_video(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, clips: dict[str, bytes]
) -> None:
    posted = world.channel.add_message(
        world.member, "look at my cat", attachments=[sandbox.add_attachment(clips["clip"], "cat.mp4", "video/mp4")]
    )
    menu = await sandbox.context_menu(world.guild, world.channel, world.admin, "Make character", posted)
    modal = await menu.wait_modal()
    assert modal["title"] == "Make a character"
    submitted = await sandbox.submit_modal(menu, {"name": "Whiskers", "description": "a grey cat"})
    reply = await submitted.wait_final_message(timeout=TIMEOUT)
    assert "Created `@Whiskers`" in reply.content and submitted.is_ephemeral
    assert reply.embeds[0]["description"] == "a grey cat"
    row = await castbot.db.fetchone("SELECT owner_id FROM characters WHERE name = 'Whiskers'")
    assert row is not None and row["owner_id"] == world.admin.id  # who made it, not who posted the clip

    text_only = world.channel.add_message(world.member, "no video here")
    menu = await sandbox.context_menu(world.guild, world.channel, world.admin, "Make character", text_only)
    reply = await menu.wait_final_message()
    assert "has no video attachment" in reply.content and menu.is_ephemeral


# --- paging survives a restart --------------------------------------------------------------------


async def test_list_pages_with_buttons_that_survive_a_restart(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, clips: dict[str, bytes]
) -> None:
    await harness.start()
    for n in range(6):
        await create(sandbox, world, clips, f"hero{n}")
    first = await run(sandbox, world.guild, world.channel, world.member, "character list")
    assert first.content.startswith("Characters you can use in this server (page 1/2, 6 in all)")
    assert list_names(first) == [f"@hero{n}" for n in range(5)]
    assert [a.filename for a in first.attachments] == ["gallery.jpg"]
    with Image.open(io.BytesIO(first.file("gallery.jpg").data)) as sheet:
        assert sheet.format == "JPEG" and sheet.size == (3 * 192 + 2 * 6, 2 * 240 + 6)  # 3 over 2
    assert first.custom_ids() == ["castbot:chars:server:0:p", "castbot:chars:server:1:n"]

    await harness.restart()
    clicked = await sandbox.click(first, "castbot:chars:server:1:n", world.member)
    page = await clicked.wait_final_message(timeout=TIMEOUT)
    assert page.content.startswith("Characters you can use in this server (page 2/2")
    assert list_names(page) == ["@hero5"]
    assert [a.filename for a in page.attachments] == ["gallery.jpg"]


# --- a provider that refuses likeness -------------------------------------------------------------


@pytest.fixture
async def openai_sim(sims: Simulators) -> OpenAISim:
    return await sims.start(OpenAISim(api_key=OPENAI_KEY, job_seconds=0.2))


async def test_openai_refusing_likeness_is_explained_and_the_character_still_works(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, clips: dict[str, bytes], openai_sim: OpenAISim
) -> None:
    bot = await harness.start(providers="openai,local", openai_api_key=OPENAI_KEY, openai_base_url=openai_sim.base_url)
    openai_sim.script("character", Fault.HUMAN_LIKENESS)
    reply = await create(sandbox, world, clips, "Ann")
    assert "Created `@Ann`" in reply.content
    assert "**openai** refused this character:" in reply.content and "likeness" in reply.content
    assert "It can still be used with **local**." in reply.content
    assert openai_sim.characters == {}

    usable = await service_of(bot).resolve_for_generation(Actor(world.member.id, world.guild.id), ["ann"])
    assert "likeness" in usable[0].refused["openai"] and usable[0].handles == {}
    info = await run(sandbox, world.guild, world.channel, world.member, "character info", name="ann")
    refused = next(f["value"] for f in info.embeds[0]["fields"] if f["name"] == "Refused by")
    assert refused.startswith("**openai**:") and "likeness" in refused
