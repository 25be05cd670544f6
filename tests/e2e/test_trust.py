"""Trust around shared likenesses end to end, across three guilds: reports through the Report
button hide a public character at the threshold and reach the owner's server and the operators;
an operator's takedown stops admission and import everywhere (ledger untouched) while a job
already running finishes; only operators can use /operator, and ordinary members do not see it."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from bot.actions.reports import card_report_view
from bot.app import Castbot
from discord_sandbox import ADMINISTRATOR, MANAGE_GUILD, DiscordSandbox, StoredMessage
from discord_sandbox.clips import make_clip
from tests.conftest import BotHarness, World
from tests.helpers import confirm_consent

pytestmark = pytest.mark.e2e
TIMEOUT = 20.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    root = tmp_path_factory.mktemp("trust-clips")
    return make_clip(root / "clip.mp4", seconds=3.0, size=(160, 120), fps=12, blur=()).read_bytes()


async def run(sandbox: DiscordSandbox, guild: Any, channel: Any, who: Any, command: str, **options: Any) -> str:
    handle = await sandbox.invoke(guild, channel, who, command, **options)
    reply = await handle.wait_final_message(timeout=TIMEOUT)
    assert handle.is_ephemeral
    assert reply.allowed_mentions == {"parse": []}
    return str(reply.content)


async def share_publicly(sandbox: DiscordSandbox, world: World, clip: bytes, name: str) -> str:
    """A public character of `world.member` in the first guild; returns its share code."""
    video = sandbox.add_attachment(clip, "clip.mp4", "video/mp4")
    await run(sandbox, world.guild, world.channel, world.member, "character create", name=name, video=video)
    handle = await sandbox.invoke(world.guild, world.channel, world.member, "character share", name=name,
                                  visibility="public")  # fmt: skip
    shared = await confirm_consent(sandbox, handle, world.member)
    return str(next(f["value"] for f in shared.embeds[0]["fields"] if f["name"] == "Share code").split("`")[1])


async def report(sandbox: DiscordSandbox, message: StoredMessage, custom_id: str, who: Any, reason: str) -> str:
    """Click Report, pick a reason in the picker it opens; the answer's text."""
    click = await sandbox.click(message, custom_id, who)
    prompt = await click.wait_final_message(timeout=TIMEOUT)
    assert click.is_ephemeral and prompt.allowed_mentions == {"parse": []}
    [picker] = [c for c in prompt.iter_components() if c["type"] == 3]
    assert picker["custom_id"] == custom_id.replace("castbot:report:", "castbot:reportwhy:")
    assert [o["value"] for o in picker["options"]] == ["not_me", "sexual", "minor", "hateful", "other"]
    chosen = await sandbox.click(prompt, picker["custom_id"], who, values=[reason])
    done = await chosen.wait_final_message(timeout=TIMEOUT)
    return done.content


async def community_names(sandbox: DiscordSandbox, guild: Any, channel: Any, who: Any) -> list[str]:
    handle = await sandbox.invoke(guild, channel, who, "character list", scope="community")
    page = await handle.wait_final_message(timeout=TIMEOUT)
    if not page.embeds:
        return []
    return re.findall(r"^\*\*\d+\.\*\* \*\*(@[^*]+)\*\*", page.embeds[0]["description"], re.MULTILINE)


async def test_three_reports_hide_the_card_and_reach_moderators_and_operators(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, clip: bytes, store_engine: str
) -> None:
    operator = sandbox.add_user("opal")
    third = sandbox.add_guild("Faraway", premium_tier=0)
    third_channel = third.add_text_channel("hall")
    ops_room = third.add_text_channel("operators")
    bot = await harness.start(
        operator_user_ids=str(operator.id), report_threshold=3, operator_report_channel_id=ops_room.id
    )
    assert bot.db.dialect == store_engine
    await share_publicly(sandbox, world, clip, "Fox")
    reports_room = world.guild.add_text_channel("reports")
    saved = await run(sandbox, world.guild, world.channel, world.admin, "settings", report_channel=reports_room)
    assert "`report_channel`" in saved
    assert await community_names(sandbox, world.other_guild, world.other_channel, world.other_member) == ["@Fox"]

    # the public card, as the gallery posts it: its Report button is ours
    row = await bot.db.fetchone("SELECT id FROM characters WHERE name = 'Fox'")
    assert row is not None
    fox = int(row["id"])
    await bot.get_partial_messageable(world.other_channel.id).send("@Fox", view=card_report_view(fox, "en-US"))
    card = await sandbox.wait_for(lambda: world.other_channel.last_message)
    assert card.custom_ids() == [f"castbot:report:c:{fox}"]

    eli = third.add_member("eli")
    first = await report(sandbox, card, f"castbot:report:c:{fox}", world.other_member, "not_me")
    assert first.startswith("Thank you. Your report of `@Fox` was sent")
    again = await report(sandbox, card, f"castbot:report:c:{fox}", world.other_member, "sexual")
    assert again.startswith("You already reported this")  # one member counts once
    # the second reports from /character info in the owner's server: a public card carries Report
    info = await sandbox.invoke(world.guild, world.channel, world.admin, "character info", name="fox")
    shown = await info.wait_final_message(timeout=TIMEOUT)
    assert shown.custom_ids() == [f"castbot:report:c:{fox}"]
    await report(sandbox, shown, f"castbot:report:c:{fox}", world.admin, "other")
    owner_view = await sandbox.invoke(world.guild, world.channel, world.member, "character info", name="fox")
    assert (await owner_view.wait_final_message(timeout=TIMEOUT)).custom_ids() == []  # not on one's own
    assert await community_names(sandbox, third, third_channel, eli) == ["@Fox"]
    # the owner's server writes in German: its moderators read the third notice in German
    await run(sandbox, world.guild, world.channel, world.admin, "settings", options={"locale": "de"})
    # the third distinct member reports from the card posted in their own server
    await bot.get_partial_messageable(third_channel.id).send("@Fox", view=card_report_view(fox, "en-US"))
    their_card = await sandbox.wait_for(lambda: third_channel.last_message)
    await report(sandbox, their_card, f"castbot:report:c:{fox}", eli, "not_me")
    assert await community_names(sandbox, third, third_channel, eli) == []
    assert await community_names(sandbox, world.guild, world.channel, world.member) == []

    # the owner's server moderators heard of each new report, with mentions disabled
    notices = await sandbox.wait_for(lambda: reports_room.visible_messages if len(reports_room.visible_messages) == 3
                                     else None)  # fmt: skip
    assert all(m.allowed_mentions == {"parse": []} for m in notices)
    assert "reported `@Fox`" in notices[0].content and "Not me / shown without consent" in notices[0].content
    assert "in der öffentlichen Liste ausgeblendet" in notices[2].content  # in the server's language
    # and so did the operator, by DM
    dms = await sandbox.wait_for(lambda: sandbox.dm_channel(operator).visible_messages
                                 if len(sandbox.dm_channel(operator).visible_messages) == 3 else None)  # fmt: skip
    assert "New report by" in dms[0].content and "`@Fox`" in dms[0].content
    posted = await sandbox.wait_for(lambda: ops_room.visible_messages if len(ops_room.visible_messages) == 3
                                    else None)  # fmt: skip
    assert [m.content for m in posted] == [m.content for m in dms]  # OPERATOR_REPORT_CHANNEL_ID: the same notices
    assert all(m.allowed_mentions == {"parse": []} for m in posted)

    listing = await run(sandbox, None, None, operator, "operator reports")
    assert "Characters with open reports: 1" in listing
    assert "`@Fox`" in listing and "reporters 3" in listing and "(hidden, pending review)" in listing


async def test_takedown_stops_admission_in_another_guild_and_running_jobs_finish(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, clip: bytes, store_engine: str
) -> None:
    admin_elsewhere = world.other_guild.add_member("ida", permissions=ADMINISTRATOR)
    third = sandbox.add_guild("Faraway", premium_tier=0)
    third_channel = third.add_text_channel("hall")
    third_member = third.add_member("eli")
    bot = await harness.start(operator_user_ids=str(admin_elsewhere.id), local_render_seconds=2.0)
    assert bot.db.dialect == store_engine
    code = await share_publicly(sandbox, world, clip, "Fox")
    imported = await run(sandbox, world.other_guild, world.other_channel, world.other_member, "character import",
                         code=code, name="Vulpes")  # fmt: skip
    assert "Imported `@Vulpes`" in imported

    # a job admitted before the takedown ...
    handle = await sandbox.invoke(world.other_guild, world.other_channel, world.other_member, "generate",
                                  prompt="@Vulpes waves")  # fmt: skip
    assert "Job #1 is queued" in (await handle.wait_final_message(timeout=TIMEOUT)).content

    # ... then an operator (here an admin of the importing server) takes it down
    done = await run(sandbox, world.other_guild, world.other_channel, admin_elsewhere, "operator takedown", code=code)
    assert done.startswith(f"Took down `@Fox` (`{code}`)") and "Servers that imported it: 1" in done
    ledger_before = await bot.db.fetchall("SELECT id FROM ledger ORDER BY id")

    refused = await run(sandbox, world.other_guild, world.other_channel, world.other_member, "generate",
                        prompt="@Vulpes waves again")  # fmt: skip
    assert "`@vulpes` was taken down by the bot's operators and can't be used anywhere." in refused
    assert "nothing was started or charged" in refused
    at_home = await run(sandbox, world.guild, world.channel, world.member, "generate", prompt="@Fox waves")
    assert "`@fox` was taken down" in at_home
    assert await bot.db.fetchall("SELECT id FROM ledger ORDER BY id") == ledger_before
    assert [r["id"] for r in await bot.db.fetchall("SELECT id FROM jobs")] == [1]

    no_import = await run(sandbox, third, third_channel, third_member, "character import", code=code)
    assert no_import == "`@Fox` was taken down by the bot's operators and can't be imported."
    assert await community_names(sandbox, third, third_channel, third_member) == []

    # the job admitted earlier still finishes, and its video can be reported (a shared character)
    def result() -> StoredMessage | None:
        return next((m for m in world.other_channel.visible_messages
                     if "job #1" in m.content and m.message_reference is not None), None)  # fmt: skip

    video = await sandbox.wait_for(result, 30, "the result of job #1")
    assert "castbot:report:j:1" in video.custom_ids()
    async with asyncio.timeout(10):  # marked after the post
        while await bot.db.fetchone("SELECT 1 FROM jobs WHERE id = 1 AND state = 'delivered'") is None:
            await asyncio.sleep(0.02)

    # the operator restores it: it works again
    back = await run(sandbox, None, None, admin_elsewhere, "operator restore", code=code)
    assert back.startswith(f"Restored `@Fox` (`{code}`)")
    again = await run(sandbox, world.other_guild, world.other_channel, world.other_member, "generate",
                      prompt="@Vulpes waves")  # fmt: skip
    assert "Job #2 is queued" in again
    audit = await bot.db.fetchall("SELECT operator_id, action FROM operator_audit ORDER BY id")
    assert [tuple(r) for r in audit] == [(admin_elsewhere.id, "takedown"), (admin_elsewhere.id, "restore")]


async def test_video_report_button_names_the_shared_character(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, clip: bytes
) -> None:
    await harness.start()
    code = await share_publicly(sandbox, world, clip, "Fox")
    await run(sandbox, world.other_guild, world.other_channel, world.other_member, "character import", code=code)
    handle = await sandbox.invoke(world.other_guild, world.other_channel, world.other_member, "generate",
                                  prompt="@Fox waves")  # fmt: skip
    await handle.wait_final_message(timeout=TIMEOUT)

    def result() -> StoredMessage | None:
        return next((m for m in world.other_channel.visible_messages
                     if "job #1" in m.content and m.message_reference is not None), None)  # fmt: skip

    video = await sandbox.wait_for(result, 30, "the result of job #1")
    answer = await report(sandbox, video, "castbot:report:j:1", world.other_member, "hateful")
    assert answer.startswith("Thank you. Your report of `@Fox`")
    # a video of one's own character, never shared, has no Report button
    mine = await run(sandbox, world.guild, world.channel, world.admin, "character create", name="Mine",
                     video=sandbox.add_attachment(clip, "c.mp4", "video/mp4"), visibility="private")  # fmt: skip
    assert "Created" in mine
    handle = await sandbox.invoke(world.guild, world.channel, world.admin, "generate", prompt="@Mine waves")
    await handle.wait_final_message(timeout=TIMEOUT)

    def own() -> StoredMessage | None:
        return next((m for m in world.channel.visible_messages
                     if "job #2" in m.content and m.message_reference is not None), None)  # fmt: skip

    posted = await sandbox.wait_for(own, 30, "the result of job #2")
    assert posted.custom_ids() == ["castbot:reroll:2", "castbot:mkchar:2"]


async def test_non_operators_neither_see_nor_use_operator_commands(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, clip: bytes
) -> None:
    [operator] = [c for c in sandbox.synced_commands() if c["name"] == "operator"]
    assert int(operator["default_member_permissions"]) == 0  # hidden from all but admins
    assert set(operator["contexts"]) >= {0, 1}  # in servers and in DMs
    with pytest.raises(Exception, match="default_member_permissions"):
        await sandbox.invoke(world.guild, world.channel, world.member, "operator reports")
    # a server's admin sees it (Discord cannot hide it per user) but is refused by the bot
    boss = world.guild.add_member("boss", permissions=ADMINISTRATOR | MANAGE_GUILD)
    refused = await run(sandbox, world.guild, world.channel, boss, "operator takedown", code="ABCDEFGHJK")
    assert refused == "Only the operators of this bot can use this command."
    dm = await run(sandbox, None, None, world.member, "operator reports")
    assert dm == "Only the operators of this bot can use this command."
    assert await castbot.db.fetchall("SELECT * FROM operator_audit") == []


async def test_moderators_turn_imports_off_and_remove_an_import(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, clip: bytes
) -> None:
    code = await share_publicly(sandbox, world, clip, "Fox")
    other_admin = world.other_guild.add_member("ola", permissions=MANAGE_GUILD)
    denied = await run(sandbox, world.other_guild, world.other_channel, world.other_member, "settings",
                       allow_imports=False)  # fmt: skip
    assert denied.startswith("Only moderators can do this")
    await run(sandbox, world.other_guild, world.other_channel, world.other_member, "character import", code=code)
    off = await run(sandbox, world.other_guild, world.other_channel, other_admin, "settings", allow_imports=False)
    assert "`allow_imports`" in off
    third = world.other_guild.add_member("tia")
    refused = await run(sandbox, world.other_guild, world.other_channel, third, "character import", code=code,
                        name="Vixen")  # fmt: skip
    assert refused == "This server's moderators turned off importing public characters."
    # a moderator removes the existing import from the server (/character delete on its name)
    removed = await run(sandbox, world.other_guild, world.other_channel, other_admin, "character delete", name="Fox")
    assert "Fox" in removed
    assert await castbot.db.fetchone("SELECT 1 FROM character_imports") is None


async def test_public_and_required_server_visibility_wait_for_the_owners_consent(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, clip: bytes
) -> None:
    video = sandbox.add_attachment(clip, "clip.mp4", "video/mp4")
    await run(sandbox, world.guild, world.channel, world.member, "character create", name="Fox", video=video)
    asked = await sandbox.invoke(world.guild, world.channel, world.member, "character share", name="fox",
                                 visibility="public")  # fmt: skip
    prompt = await asked.wait_final_message(timeout=TIMEOUT)
    assert prompt.content.startswith("Before `@Fox` becomes public")
    assert prompt.allowed_mentions == {"parse": []}
    [button] = [c for c in prompt.custom_ids() if c.startswith("castbot:consent:")]
    row = await castbot.db.fetchone("SELECT id, visibility FROM characters WHERE name = 'Fox'")
    assert row is not None and row["visibility"] == "server" and button == f"castbot:consent:{row['id']}:public"

    # only the owner can confirm
    other = await sandbox.click(prompt, button, world.admin)
    assert (await other.wait_final_message(timeout=TIMEOUT)).content.startswith("Only the owner")
    assert await castbot.db.fetchone("SELECT 1 FROM character_consents") is None
    done = await confirm_consent(sandbox, asked, world.member)
    assert done.content.startswith("`@Fox` is now public. Its share code is")
    consent = await castbot.db.fetchone("SELECT user_id, visibility, created_at FROM character_consents")
    assert consent is not None and (consent["user_id"], consent["visibility"]) == (world.member.id, "public")
    assert consent["created_at"] > 0

    # where moderators require it, `server` visibility waits for consent too
    await run(sandbox, world.guild, world.channel, world.admin, "settings", require_consent=True)
    video = sandbox.add_attachment(clip, "clip2.mp4", "video/mp4")
    made = await sandbox.invoke(world.guild, world.channel, world.member, "character create", name="Owl",
                                video=video)  # fmt: skip
    first = await made.wait_final_message(timeout=TIMEOUT)
    assert "Created `@Owl`" in first.content
    owl = await castbot.db.fetchone("SELECT visibility FROM characters WHERE name = 'Owl'")
    assert owl is not None and owl["visibility"] == "private"  # until the owner confirms
    confirmed = await confirm_consent(sandbox, made, world.member)
    assert confirmed.content
    owl = await castbot.db.fetchone("SELECT visibility FROM characters WHERE name = 'Owl'")
    assert owl is not None and owl["visibility"] == "server"


async def test_the_owner_sees_importing_servers_and_withdraws_one(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, clip: bytes
) -> None:
    third = sandbox.add_guild("Faraway", premium_tier=0)
    third_channel = third.add_text_channel("hall")
    eli = third.add_member("eli")
    code = await share_publicly(sandbox, world, clip, "Fox")
    await run(sandbox, world.other_guild, world.other_channel, world.other_member, "character import", code=code)
    await run(sandbox, third, third_channel, eli, "character import", code=code)

    # a member who is not the owner sees the info, not the importers
    handle = await sandbox.invoke(world.guild, world.channel, world.admin, "character info", name="fox")
    await handle.wait_final_message(timeout=TIMEOUT)
    assert handle.followups[1:] == []

    handle = await sandbox.invoke(world.guild, world.channel, world.member, "character info", name="fox")
    await handle.wait_final_message(timeout=TIMEOUT)

    def importers() -> StoredMessage | None:
        messages = (handle.original, *handle.followups)
        return next((m for m in messages if m is not None and m.custom_ids() == ["castbot:revoke:1"]), None)

    listing = await sandbox.wait_for(importers)
    assert listing.content.startswith("Servers that imported `@Fox`: 2.")
    assert "• Elsewhere" in listing.content and "• Faraway" in listing.content
    assert listing.allowed_mentions == {"parse": []}

    picked = await sandbox.click(listing, "castbot:revoke:1", world.member, values=[str(world.other_guild.id)])
    answer = await picked.wait_final_message(timeout=TIMEOUT)
    assert answer.content == "Withdrew `@Fox` from Elsewhere: that server can no longer use it or import it again."
    gone = await run(sandbox, world.other_guild, world.other_channel, world.other_member, "generate",
                     prompt="@Fox waves")  # fmt: skip
    assert "no character by that name" in gone
    again = await run(sandbox, world.other_guild, world.other_channel, world.other_member, "character import",
                      code=code)  # fmt: skip
    assert again == "The owner of `@Fox` withdrew it from this server, so it can't be imported here again."
    left = await castbot.db.fetchall("SELECT guild_id FROM character_imports")
    assert [r["guild_id"] for r in left] == [third.id]  # the other server keeps it


async def test_a_report_nobody_could_be_told_about_is_kept_and_answered(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, clip: bytes
) -> None:
    operator = sandbox.add_user("opal")
    operator.dms_closed = True  # Discord refuses the DM (50007)
    bot = await harness.start(operator_user_ids=str(operator.id))
    await share_publicly(sandbox, world, clip, "Fox")
    reports_room = world.guild.add_text_channel("reports")
    await run(sandbox, world.guild, world.channel, world.admin, "settings", report_channel=reports_room)
    reports_room.deny_bot()  # and the bot lost its right to post there (403)
    await bot.get_partial_messageable(world.other_channel.id).send("@Fox", view=card_report_view(1, "en-US"))
    card = await sandbox.wait_for(lambda: world.other_channel.last_message)

    answer = await report(sandbox, card, "castbot:report:c:1", world.other_member, "minor")
    assert answer.startswith("Thank you. Your report of `@Fox` was sent")
    await sandbox.wait_for(lambda: sandbox.calls_to("POST", rf"/channels/{reports_room.id}/messages") or None)
    await sandbox.wait_for(lambda: sandbox.calls_to("POST", r"/users/@me/channels") or None)
    await sandbox.wait_answered()
    stored = await bot.db.fetchone("SELECT reporter_id, reason FROM character_reports")
    assert stored is not None and tuple(stored) == (world.other_member.id, "minor")
    assert reports_room.visible_messages == [] and sandbox.dm_channel(operator).visible_messages == []


async def test_a_card_of_a_deleted_character_answers_with_the_reason(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, clip: bytes
) -> None:
    await share_publicly(sandbox, world, clip, "Fox")
    await castbot.get_partial_messageable(world.other_channel.id).send("@Fox", view=card_report_view(1, "en-US"))
    card = await sandbox.wait_for(lambda: world.other_channel.last_message)
    await run(sandbox, world.guild, world.channel, world.member, "character delete", name="fox")
    click = await sandbox.click(card, "castbot:report:c:1", world.other_member)
    answer = await click.wait_final_message(timeout=TIMEOUT)
    assert click.is_ephemeral and answer.content == "There is no shared character to report here any more."
    assert await castbot.db.fetchone("SELECT 1 FROM character_reports") is None


async def test_report_buttons_work_after_a_restart(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, clip: bytes
) -> None:
    bot = await harness.start()
    await share_publicly(sandbox, world, clip, "Fox")
    await bot.get_partial_messageable(world.other_channel.id).send("@Fox", view=card_report_view(1, "en-US"))
    card = await sandbox.wait_for(lambda: world.other_channel.last_message)
    click = await sandbox.click(card, "castbot:report:c:1", world.other_member)
    prompt = await click.wait_final_message(timeout=TIMEOUT)

    bot = await harness.restart()  # the card's button and the open reason picker both still work
    chosen = await sandbox.click(prompt, "castbot:reportwhy:c:1", world.other_member, values=["not_me"])
    assert (await chosen.wait_final_message(timeout=TIMEOUT)).content.startswith("Thank you.")
    dee = world.other_guild.add_member("dee")
    again = await report(sandbox, card, "castbot:report:c:1", dee, "other")
    assert again.startswith("Thank you.")
    rows = await bot.db.fetchall("SELECT reporter_id FROM character_reports ORDER BY id")
    assert [r["reporter_id"] for r in rows] == [world.other_member.id, dee.id]
