"""The community gallery and /character edit end to end: the real bot, the Discord sandbox, three
guilds, real clips and files (the main journey on both store engines). Browse → import from the
card → generate in another server; search by tag and by an accented name typed without accents;
the owner's edits reaching importers; a member who is not the owner refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.app import Castbot
from discord_sandbox import Channel, DiscordSandbox, Guild, Member, StoredMessage
from discord_sandbox.clips import make_clip
from tests.conftest import BotHarness, World
from tests.helpers import confirm_consent

pytestmark = pytest.mark.e2e
TIMEOUT = 20.0  # a create downloads, probes and extracts frames: generous on a loaded machine


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("gallery-clips")
    return {
        "face": make_clip(root / "face.mp4", seconds=3.0, size=(160, 120), fps=12, blur=()).read_bytes(),
        "bars": make_clip(root / "bars.mp4", seconds=4.0, size=(160, 120), fps=12, pattern="bars").read_bytes(),
    }


async def run(
    sandbox: DiscordSandbox, guild: Guild, channel: Channel, who: Member, command: str, **options: Any
) -> StoredMessage:
    handle = await sandbox.invoke(guild, channel, who, command, **options)
    reply = await handle.wait_final_message(timeout=TIMEOUT)
    assert handle.is_ephemeral
    assert reply.allowed_mentions == {"parse": []}
    return reply


async def create(
    sandbox: DiscordSandbox, world: World, clip: bytes, name: str, *, public: bool = True, **options: Any
) -> StoredMessage:
    video = sandbox.add_attachment(clip, f"{name}.mp4", "video/mp4")
    visibility = "public" if public else "server"
    handle = await sandbox.invoke(world.guild, world.channel, world.member, "character create", name=name,
                                  video=video, visibility=visibility, **options)  # fmt: skip
    reply = await handle.wait_final_message(timeout=TIMEOUT)
    if public:  # public only once the owner confirms the person shown agreed
        reply = await confirm_consent(sandbox, handle, world.member)
    assert f"`@{name}`" in reply.content, reply.content
    return reply


def fields(message: StoredMessage) -> dict[str, str]:
    return {f["name"]: f["value"] for f in message.embeds[0]["fields"]}


async def click(sandbox: DiscordSandbox, message: StoredMessage, custom_id: str, who: Member) -> StoredMessage:
    handle = await sandbox.click(message, custom_id, who)
    return await handle.wait_final_message(timeout=TIMEOUT)


async def wait_result(sandbox: DiscordSandbox, channel: Channel, job: int) -> StoredMessage:
    def found() -> StoredMessage | None:
        for m in channel.visible_messages:
            if m.author.id == sandbox.bot.id and f"job #{job}" in m.content and m.message_reference is not None:
                return m
        return None

    return await sandbox.wait_for(found, 30, f"the result of job #{job}")


async def test_browse_search_import_from_the_card_and_generate_across_three_guilds(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, clips: dict[str, bytes], store_engine: str
) -> None:
    harbor = sandbox.add_guild("Harbor")
    harbor_channel = harbor.add_text_channel("docks")
    dee = harbor.add_member("dee")
    world.member.user.global_name = "Bob the Builder"
    bot = await harness.start()
    assert bot.db.dialect == store_engine

    await create(sandbox, world, clips["face"], "Zoë", description="a dancer from Lisbon")
    edited = await run(sandbox, world.guild, world.channel, world.member, "character edit", name="zoë",
                       tags="Dance, #Portrait")  # fmt: skip
    assert edited.content.startswith("Updated `@Zoë`: tags.")
    await create(sandbox, world, clips["face"], "Bruno", description="plays the cello")
    await create(sandbox, world, clips["face"], "Secret", public=False)

    # an accented name typed without accents, in another guild
    card = await run(sandbox, world.other_guild, world.other_channel, world.other_member, "character browse",
                     query="zoe")  # fmt: skip
    assert card.content == "Community gallery, `zoe`: 1 character, most used first."
    embed = card.embeds[0]
    assert embed["title"] == "@Zoë" and embed["description"] == "a dancer from Lisbon"
    assert embed["image"]["url"] == "attachment://preview.webp" and [a.filename for a in card.attachments] == [
        "preview.webp"
    ]
    assert fields(card)["Owner"] == "Bob the Builder"
    assert fields(card)["Tags"] == "`#dance` `#portrait`" and fields(card)["Used in"] == "not used yet"
    zoe_id = int(card.custom_ids()[2].rsplit(":", 1)[1])
    assert card.custom_ids() == [
        "castbot:gal:p:0:p:zoe",
        "castbot:gal:p:0:n:zoe",
        f"castbot:gal:imp:{zoe_id}",
        f"castbot:gal:info:{zoe_id}",
        f"castbot:report:c:{zoe_id}",  # the reports feature's button
    ]
    # by tag; a private character is never listed
    by_tag = await run(sandbox, world.other_guild, world.other_channel, world.other_member, "character browse",
                       query="#portrait")  # fmt: skip
    assert by_tag.embeds[0]["title"] == "@Zoë"
    nothing = await run(sandbox, world.other_guild, world.other_channel, world.other_member, "character browse",
                        query="secret")  # fmt: skip
    assert nothing.content == "No public character matches `secret`." and not nothing.components

    # Info: the full card with the reference frames
    info = await click(sandbox, card, f"castbot:gal:info:{zoe_id}", world.other_member)
    assert info.embeds[0]["title"] == "@Zoë" and info.file("frames.jpg").data[:3] == b"\xff\xd8\xff"
    assert "Share code" in fields(info)

    # Import from the card, under a name of this server's own
    importing = await sandbox.click(card, f"castbot:gal:imp:{zoe_id}", world.other_member)
    modal = await importing.wait_modal()
    assert modal["title"] == "Import @Zoë"
    submitted = await sandbox.submit_modal(importing, {"alias": "Zed"})
    imported = await submitted.wait_final_message(timeout=TIMEOUT)
    assert "Imported `@Zed`" in imported.content and submitted.is_ephemeral

    # ...and generate with it there
    handle = await sandbox.invoke(world.other_guild, world.other_channel, world.other_member, "generate",
                                  prompt="@Zed dances in the rain", seconds=4)  # fmt: skip
    queued = await handle.wait_final_message(timeout=TIMEOUT)
    assert "is queued" in queued.content, queued.content
    job = int(queued.content.split("#", 1)[1].split(" ", 1)[0])
    result = await wait_result(sandbox, world.other_channel, job)
    assert result.attachments and result.attachments[0].filename.endswith(".mp4")

    # the third guild sees Zoë first by use, with her reach; ▶ leads to the next card
    popular = await run(sandbox, harbor, harbor_channel, dee, "character browse")
    assert popular.content == "Community gallery: 2 characters, most used first."
    assert popular.embeds[0]["title"] == "@Zoë" and fields(popular)["Used in"] == "1 video in 1 server"
    assert popular.embeds[0]["footer"]["text"] == "1 / 2"
    second = await click(sandbox, popular, "castbot:gal:p:1:n:", dee)
    assert second.embeds[0]["title"] == "@Bruno" and second.embeds[0]["footer"]["text"] == "2 / 2"
    by_name = await run(sandbox, harbor, harbor_channel, dee, "character browse", sort="name")
    assert by_name.embeds[0]["title"] == "@Bruno" and "by name" in by_name.content

    # the page buttons survive a restart
    await harness.restart()
    back = await click(sandbox, second, "castbot:gal:p:0:p:", dee)
    assert back.embeds[0]["title"] == "@Zoë"


async def test_the_owners_edit_reaches_importers_and_nobody_else_may_edit(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, clips: dict[str, bytes], harness: BotHarness
) -> None:
    eve = world.guild.add_member("eve")
    reply = await create(sandbox, world, clips["face"], "Fox", description="a red fox")
    code = fields(reply)["Share code"].split("`")[1]
    imported = await run(sandbox, world.other_guild, world.other_channel, world.other_member, "character import",
                         code=code, name="Vulpes")  # fmt: skip
    assert "Imported `@Vulpes`" in imported.content

    # not the owner: refused, nothing changed
    refused = await run(sandbox, world.guild, world.channel, eve, "character edit", name="fox", description="mine")
    assert refused.content == "Only the owner of `@Fox` can edit it."
    refused = await run(sandbox, world.other_guild, world.other_channel, world.other_member, "character edit",
                        name="vulpes", description="mine")  # fmt: skip
    assert refused.content.startswith("`@Vulpes` was imported from another server; only its owner there can edit it.")
    bad = await run(sandbox, world.guild, world.channel, world.member, "character edit", name="fox", tags="a")
    assert bad.content == "`a` is too short for a tag (at least 2 letters or digits)."
    # the owner's autocomplete offers their own characters only
    choices = await sandbox.autocomplete(world.guild, world.channel, world.member, "character edit", focused="name",
                                         value="f")  # fmt: skip
    assert choices == [{"name": "Fox", "value": "Fox"}]
    assert await sandbox.autocomplete(world.guild, world.channel, eve, "character edit", focused="name",
                                      value="f") == []  # fmt: skip

    # the owner renames, redescribes, retags and replaces the clip
    video = sandbox.add_attachment(clips["bars"], "new.mp4", "video/mp4")
    edited = await run(sandbox, world.guild, world.channel, world.member, "character edit", name="fox",
                       new_name="Renard", description="un renard roux", tags="wild, animal", video=video)  # fmt: skip
    assert edited.content.startswith("Updated `@Renard`: name, description, tags, clip.")
    assert "`@Fox` is now `@Renard`" in edited.content
    assert "1 other server imported it: they see the change and keep their own name for it." in edited.content
    assert edited.embeds[0]["title"] == "@Renard" and edited.embeds[0]["description"] == "un renard roux"
    assert edited.embeds[0]["image"]["url"] == "attachment://preview.webp"
    assert edited.file("preview.webp").data != reply.file("preview.webp").data  # made from the new clip

    # the importer sees the new description and clip under their own alias
    info = await run(sandbox, world.other_guild, world.other_channel, world.other_member, "character info",
                     name="vulpes")  # fmt: skip
    assert info.embeds[0]["title"] == "@Vulpes" and info.embeds[0]["description"] == "un renard roux"
    assert "`@Renard`" in fields(info)["Imported"]
    assert info.file("preview.webp").data == edited.file("preview.webp").data
    handle = await sandbox.invoke(world.other_guild, world.other_channel, world.other_member, "generate",
                                  prompt="@Vulpes runs", seconds=4)  # fmt: skip
    queued = await handle.wait_final_message(timeout=TIMEOUT)
    job = int(queued.content.split("#", 1)[1].split(" ", 1)[0])
    await wait_result(sandbox, world.other_channel, job)
    row = await castbot.db.fetchone("SELECT request_json FROM jobs WHERE id = ?", (job,))
    assert row is not None and '"name": "Vulpes"' in row["request_json"]
    data: Path = harness.settings().data_dir
    current = await castbot.db.fetchone("SELECT frame_paths FROM characters WHERE name = 'Renard'")
    assert current is not None and "/e" in current["frame_paths"]  # new frames beside the old ones
    assert (data / "frames").is_dir()
