"""The Discord sandbox driven by a REAL discord.py Bot over loopback HTTP and websocket.

The bot here is a small stand-in defined in this file (not the project's bot): a few app
commands, a persistent view and channel uploads, enough to exercise every sandbox rule.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands
from discord.http import Route
from discord.webhook.async_ import async_context, interaction_response_params

from discord_sandbox import (
    MANAGE_GUILD,
    MIB,
    Channel,
    DiscordSandbox,
    Guild,
    Member,
    SandboxUsageError,
)

TOKEN = "sandbox-token"
NAMES = ["anna", "andrei", "boris"]


class PanelView(discord.ui.View):
    """Persistent: registered in setup_hook, so clicks work on messages from earlier runs."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Ping", custom_id="panel:ping", style=discord.ButtonStyle.primary)
    async def ping(self, interaction: discord.Interaction, button: discord.ui.Button[PanelView]) -> None:
        await interaction.response.edit_message(content=f"pinged by {interaction.user.name}")


character = app_commands.Group(name="character", description="Characters")


@character.command(name="create", description="Create a character from a clip")
async def character_create(interaction: discord.Interaction, name: str, video: discord.Attachment) -> None:
    data = await video.read()
    word = "создан" if interaction.locale is discord.Locale.russian else "created"
    digest = hashlib.sha256(data).hexdigest()
    await interaction.response.send_message(f"{word} {name}: {len(data)} bytes {video.content_type} {digest}")


@character.command(name="info", description="Show a character")
async def character_info(interaction: discord.Interaction, name: str) -> None:
    await interaction.response.send_message(f"info {name}")


@character_info.autocomplete("name")
async def character_info_name(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=n.title(), value=n) for n in NAMES if n.startswith(current)]


@app_commands.command(name="render", description="Defer, then deliver a file")
async def render(interaction: discord.Interaction, prompt: str) -> None:
    bot: SandboxBot = interaction.client  # type: ignore[assignment]
    bot.kept["render"] = interaction
    await interaction.response.defer(thinking=True)
    clip = discord.File(io.BytesIO(b"rendered-video-bytes"), filename="clip.mp4")
    await interaction.followup.send(f"done: {prompt} @everyone", file=clip)


@app_commands.command(name="twice", description="Acknowledge twice")
async def twice(interaction: discord.Interaction) -> None:
    bot: SandboxBot = interaction.client  # type: ignore[assignment]
    await interaction.response.send_message("first")
    # A second process answering the same interaction: goes through discord.py's webhook adapter.
    adapter = async_context.get()
    try:
        await adapter.create_interaction_response(
            interaction.id,
            interaction.token,
            session=interaction._session,
            params=interaction_response_params(4, {"content": "second"}),
        )
    except discord.HTTPException as exc:
        bot.errors.append(exc)
        await interaction.followup.send(f"second ack refused: {exc.code}")


@app_commands.command(name="slow", description="Acknowledge only when the test allows")
async def slow(interaction: discord.Interaction) -> None:
    bot: SandboxBot = interaction.client  # type: ignore[assignment]
    await bot.gate.wait()
    try:
        await interaction.response.send_message("late")
    except discord.HTTPException as exc:
        bot.errors.append(exc)


@app_commands.command(name="panel", description="Post the panel")
async def panel(interaction: discord.Interaction) -> None:
    await interaction.response.send_message("panel", view=PanelView())


@app_commands.context_menu(name="Make character")
async def make_character(interaction: discord.Interaction, message: discord.Message) -> None:
    await interaction.response.send_message(f"from {message.id}: {message.content}", ephemeral=True)


class FeedbackModal(discord.ui.Modal, title="Feedback"):
    text: discord.ui.TextInput[FeedbackModal] = discord.ui.TextInput(label="Text", custom_id="feedback:text")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"thanks: {self.text.value}", ephemeral=True)


@app_commands.command(name="feedback", description="Open a modal")
async def feedback(interaction: discord.Interaction) -> None:
    await interaction.response.send_modal(FeedbackModal())


class ColorSelect(discord.ui.View):
    @discord.ui.select(
        custom_id="pick:color",
        options=[discord.SelectOption(label="Red", value="red"), discord.SelectOption(label="Blue", value="blue")],
    )
    async def pick(self, interaction: discord.Interaction, select: discord.ui.Select[ColorSelect]) -> None:
        await interaction.response.defer()  # type 6: deferred update of the panel
        await interaction.edit_original_response(content=f"picked {select.values[0]}", view=None)


@app_commands.command(name="pick", description="Post a select menu")
async def pick(interaction: discord.Interaction) -> None:
    await interaction.response.send_message("pick a color", view=ColorSelect())


@app_commands.context_menu(name="Inspect")
async def inspect(interaction: discord.Interaction, member: discord.Member) -> None:
    manage = member.guild_permissions.manage_guild
    await interaction.response.send_message(f"{member.name} manage_guild={manage}")


@app_commands.command(name="ping", description="Global command, works in DMs")
async def ping(interaction: discord.Interaction) -> None:
    where = "dm" if interaction.guild_id is None else "guild"
    await interaction.response.send_message(f"pong from {where}")


class SandboxBot(commands.Bot):
    def __init__(self, guild_id: int) -> None:
        super().__init__(
            command_prefix="!",
            intents=discord.Intents.default(),
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
            guild_ready_timeout=0.05,  # READY waits this long after the last GUILD_CREATE
        )
        self.guild_id = guild_id
        self.gate = asyncio.Event()
        self.errors: list[discord.HTTPException] = []
        self.kept: dict[str, discord.Interaction] = {}

    async def setup_hook(self) -> None:
        self.add_view(PanelView())
        guild = discord.Object(self.guild_id)
        guild_commands: list[app_commands.Command[Any, ..., Any] | app_commands.Group | app_commands.ContextMenu] = [
            character,
            render,
            twice,
            slow,
            panel,
            make_character,
            feedback,
            pick,
            inspect,
        ]
        for command in guild_commands:
            self.tree.add_command(command, guild=guild)
        self.tree.add_command(ping)
        await self.tree.sync(guild=guild)
        await self.tree.sync()


@dataclass
class Scene:
    guild: Guild
    channel: Channel
    alice: Member


@pytest.fixture
async def sandbox() -> AsyncIterator[DiscordSandbox]:
    async with DiscordSandbox(token=TOKEN) as sb:
        yield sb


@pytest.fixture
def scene(sandbox: DiscordSandbox) -> Scene:
    guild = sandbox.add_guild("Castbot Test", premium_tier=0, preferred_locale="en-US")
    return Scene(guild, guild.add_text_channel("general"), guild.add_member("alice"))


async def start_bot(bot: discord.Client, sandbox: DiscordSandbox) -> asyncio.Task[None]:
    """Start the bot; fail fast (with its own exception) if it dies before identifying."""
    task = asyncio.create_task(bot.start(TOKEN))
    ready = asyncio.create_task(sandbox.wait_ready(timeout=5))
    done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()
        raise AssertionError("bot.start() returned before identifying")
    ready.result()
    await asyncio.wait_for(bot.wait_until_ready(), 5)
    return task


@pytest.fixture
async def bot(sandbox: DiscordSandbox, scene: Scene, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SandboxBot]:
    sandbox.patch_discord(monkeypatch)
    instance = SandboxBot(scene.guild.id)
    task = await start_bot(instance, sandbox)
    try:
        yield instance
    finally:
        await instance.close()
        await asyncio.wait_for(task, 5)


async def test_connect_identify_and_sync_are_recorded(sandbox: DiscordSandbox, scene: Scene, bot: SandboxBot) -> None:
    assert sandbox.api_base == Route.BASE
    identify = sandbox.identify_payload
    assert identify is not None
    assert identify["token"] == TOKEN
    assert identify["intents"] == bot.intents.value
    # discord.py asked for zlib-stream and decoded our compressed frames.
    assert sandbox.connections[-1].compress == "zlib-stream"
    assert sandbox.connections[-1].heartbeats >= 1
    assert [c.path for c in sandbox.calls[:2]] == ["/users/@me", "/oauth2/applications/@me"]
    sync = sandbox.calls_to("PUT", rf"/applications/{sandbox.application_id}/guilds/{scene.guild.id}/commands")
    assert len(sync) == 1 and sync[0].status == 200
    synced = {c["name"]: c for c in sandbox.synced_commands(scene.guild)}
    assert set(synced) == {
        "character",
        "render",
        "twice",
        "slow",
        "panel",
        "Make character",
        "feedback",
        "pick",
        "Inspect",
    }
    assert [c["name"] for c in sandbox.synced_commands()] == ["ping"]
    create = next(o for o in synced["character"]["options"] if o["name"] == "create")
    assert {o["name"]: o["type"] for o in create["options"]} == {"name": 3, "video": 11}
    # The bot built its cache from READY + GUILD_CREATE.
    guild = bot.get_guild(scene.guild.id)
    assert guild is not None and guild.name == "Castbot Test"
    assert bot.user is not None and bot.user.id == sandbox.bot.id
    assert sandbox.unknown_routes == []


async def test_slash_reply_reads_attachment_through_cdn(sandbox: DiscordSandbox, scene: Scene, bot: SandboxBot) -> None:
    data = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40
    video = sandbox.add_attachment(data, "hero.mp4")
    handle = await sandbox.invoke(
        scene.guild, scene.channel, scene.alice, "character create", name="Hero", video=video, locale="ru"
    )
    reply = await handle.wait_final_message()
    assert reply.content == f"создан Hero: {len(data)} bytes video/mp4 {hashlib.sha256(data).hexdigest()}"
    assert handle.response_type == 4 and not handle.is_ephemeral
    assert reply in scene.channel.visible_messages
    assert (int(video["id"]), 200) in sandbox.cdn_fetches
    # The payload came from the synced definition: nested subcommand, typed options, resolved.
    option = handle.payload["data"]["options"][0]
    assert option["name"] == "create" and option["type"] == 1
    assert {o["name"]: o["type"] for o in option["options"]} == {"name": 3, "video": 11}
    assert handle.payload["member"]["permissions"].isdigit()
    assert handle.payload["locale"] == "ru" and handle.payload["guild_locale"] == "en-US"


async def test_invoking_what_was_not_synced_fails_loudly(
    sandbox: DiscordSandbox, scene: Scene, bot: SandboxBot
) -> None:
    with pytest.raises(SandboxUsageError, match="was not synced"):
        await sandbox.invoke(scene.guild, scene.channel, scene.alice, "budget show")
    with pytest.raises(SandboxUsageError, match="unknown option"):
        await sandbox.invoke(scene.guild, scene.channel, scene.alice, "character info", nam="typo")
    with pytest.raises(SandboxUsageError, match="string option"):
        await sandbox.invoke(scene.guild, scene.channel, scene.alice, "character info", name=5)


async def test_defer_then_followup_file_and_token_expiry(
    sandbox: DiscordSandbox, scene: Scene, bot: SandboxBot
) -> None:
    handle = await sandbox.invoke(scene.guild, scene.channel, scene.alice, "render", prompt="a fox")
    final = await handle.wait_final_message()
    assert handle.response_type == 5
    # The first followup after a thinking defer replaces the loading message.
    assert handle.original is final and not final.loading
    assert final.content == "done: a fox @everyone"
    assert final.file("clip.mp4").data == b"rendered-video-bytes"
    assert final.allowed_mentions == {"parse": []} and not final.pinged_everyone
    call = sandbox.calls_to("POST", rf"/webhooks/{sandbox.application_id}/")[0]
    assert call.files[0].field == "files[0]" and call.files[0].data == b"rendered-video-bytes"

    sandbox.advance(15 * 60 + 1)
    interaction = bot.kept["render"]
    with pytest.raises(discord.HTTPException) as late:
        await interaction.followup.send("too late")
    assert (late.value.status, late.value.code) == (401, 50027)
    with pytest.raises(discord.HTTPException) as edit:
        await interaction.edit_original_response(content="edited")
    assert edit.value.code == 50027


async def test_double_ack_and_late_ack_are_refused(sandbox: DiscordSandbox, scene: Scene, bot: SandboxBot) -> None:
    handle = await sandbox.invoke(scene.guild, scene.channel, scene.alice, "twice")
    followup = await handle.wait_followup()
    assert followup.content == "second ack refused: 40060"
    assert handle.rejected == [(400, 40060)]
    assert isinstance(bot.errors[0], discord.HTTPException) and bot.errors[0].status == 400

    slow = await sandbox.invoke(scene.guild, scene.channel, scene.alice, "slow")
    sandbox.advance(3.5)
    bot.gate.set()
    assert await slow.wait_rejected() == (404, 10062)
    await sandbox.wait_for(lambda: len(bot.errors) == 2)
    assert isinstance(bot.errors[1], discord.NotFound) and bot.errors[1].code == 10062
    assert slow.response_type is None


async def test_channel_uploads_limits_nonce_and_faults(sandbox: DiscordSandbox, scene: Scene, bot: SandboxBot) -> None:
    channel = bot.get_partial_messageable(scene.channel.id)
    sent = await channel.send("your video", file=discord.File(io.BytesIO(b"mp4" * 1000), "out.mp4"))
    stored = sandbox.message(sent.id)
    assert stored.file().data == b"mp4" * 1000 and stored.allowed_mentions == {"parse": []}
    assert await sent.attachments[0].read() == b"mp4" * 1000  # through the sandbox CDN

    with pytest.raises(discord.HTTPException) as too_big:
        await channel.send(file=discord.File(io.BytesIO(b"\0" * (10 * MIB + 1)), "big.mp4"))
    assert (too_big.value.status, too_big.value.code) == (413, 40005)
    boosted = sandbox.add_guild("Boosted", premium_tier=2).add_text_channel("media")
    ok = await bot.get_partial_messageable(boosted.id).send(
        file=discord.File(io.BytesIO(b"\0" * (10 * MIB + 1)), "big.mp4")
    )
    assert ok.attachments[0].size == 10 * MIB + 1

    first = await channel.send("job 7 done", nonce="job-7")
    again = await channel.send("job 7 done", nonce="job-7")
    assert first.id == again.id
    assert sum(1 for m in scene.channel.visible_messages if m.nonce == "job-7") == 1

    with pytest.raises(discord.HTTPException) as too_long:
        await channel.send("x" * 2001)
    assert too_long.value.code == 50035
    with pytest.raises(discord.NotFound) as unknown:
        await bot.get_partial_messageable(123).send("hello")
    assert unknown.value.code == 10003
    scene.channel.deny_bot()
    with pytest.raises(discord.Forbidden) as forbidden:
        await channel.send("no perms")
    assert forbidden.value.code == 50013
    scene.channel.allow_bot()
    sandbox.fail_next("POST", r"/channels/\d+/messages$", 503, code=0)
    with pytest.raises(discord.DiscordServerError):
        await channel.send("unlucky")
    assert (await channel.send("lucky")).content == "lucky"
    assert sandbox.calls_to("POST", r"/channels/")[-2].injected


async def test_autocomplete_returns_the_bots_choices(sandbox: DiscordSandbox, scene: Scene, bot: SandboxBot) -> None:
    choices = await sandbox.autocomplete(
        scene.guild, scene.channel, scene.alice, "character info", focused="name", value="an"
    )
    assert choices == [{"name": "Anna", "value": "anna"}, {"name": "Andrei", "value": "andrei"}]


async def test_persistent_button_click_updates_message(sandbox: DiscordSandbox, scene: Scene, bot: SandboxBot) -> None:
    # A panel posted by an earlier bot process: only the persistent view can answer it.
    row = {"type": 1, "components": [{"type": 2, "style": 1, "label": "Ping", "custom_id": "panel:ping"}]}
    old = scene.channel.add_message(sandbox.bot, "panel", components=[row])
    handle = await sandbox.click(old, "panel:ping", scene.alice)
    updated = await handle.wait_final_message()
    assert handle.response_type == 7 and updated is old
    assert old.content == "pinged by alice" and old.edit_count == 1
    assert handle.payload["message"]["id"] == str(old.id)

    fresh = await (await sandbox.invoke(scene.guild, scene.channel, scene.alice, "panel")).wait_final_message()
    assert fresh.custom_ids() == ["panel:ping"]
    with pytest.raises(SandboxUsageError, match="no component"):
        await sandbox.click(fresh, "panel:nope", scene.alice)


async def test_message_context_menu(sandbox: DiscordSandbox, scene: Scene, bot: SandboxBot) -> None:
    source = scene.channel.add_message(scene.alice, "a red fox in the snow")
    handle = await sandbox.context_menu(scene.guild, scene.channel, scene.alice, "Make character", source)
    reply = await handle.wait_final_message()
    assert reply.content == f"from {source.id}: a red fox in the snow"
    assert handle.is_ephemeral and reply not in scene.channel.visible_messages
    assert handle.payload["data"]["resolved"]["messages"][str(source.id)]["content"] == "a red fox in the snow"


async def test_reconnect_resumes_the_session(sandbox: DiscordSandbox, scene: Scene, bot: SandboxBot) -> None:
    session = await sandbox.wait_ready()
    sandbox.request_reconnect()
    await sandbox.wait_for(lambda: session.resumes == 1)
    assert sandbox.gateway.resume_requests[-1]["session_id"] == session.session_id
    handle = await sandbox.invoke(scene.guild, scene.channel, scene.alice, "character info", name="anna")
    assert (await handle.wait_final_message()).content == "info anna"


async def test_close_shuts_the_websocket_cleanly(sandbox: DiscordSandbox, scene: Scene, bot: SandboxBot) -> None:
    await bot.close()
    connection = await sandbox.wait_disconnected()
    # discord.py asks for 1000, but with a poll_event pending aiohttp hands the reader a
    # CLOSING message first and discord.py's handler closes with 4000; both are the client's.
    assert connection.closed_by == "client" and connection.close_code in (1000, 4000)
    assert bot.is_closed() and len(sandbox.connections) == 1 and len(sandbox.gateway.identifies) == 1


async def test_modal_select_user_menu_and_dm(sandbox: DiscordSandbox, scene: Scene, bot: SandboxBot) -> None:
    opened = await sandbox.invoke(scene.guild, scene.channel, scene.alice, "feedback")
    modal = await opened.wait_modal()
    assert modal["custom_id"] and opened.response_type == 9
    submitted = await sandbox.submit_modal(opened, {"feedback:text": "love it"})
    thanks = await submitted.wait_final_message()
    assert thanks.content == "thanks: love it" and submitted.is_ephemeral

    menu = await (await sandbox.invoke(scene.guild, scene.channel, scene.alice, "pick")).wait_final_message()
    with pytest.raises(SandboxUsageError, match="not options"):
        await sandbox.click(menu, "pick:color", scene.alice, values=["green"])
    picked = await sandbox.click(menu, "pick:color", scene.alice, values=["blue"])
    edited = await picked.wait_final_message()
    assert picked.response_type == 6 and edited is menu
    assert menu.content == "picked blue" and menu.components == []

    boss = scene.guild.add_member("boss", roles=[scene.guild.add_role("mods", permissions=MANAGE_GUILD)])
    inspected = await sandbox.context_menu(scene.guild, scene.channel, scene.alice, "Inspect", boss)
    assert (await inspected.wait_final_message()).content == "boss manage_guild=True"

    dm = await sandbox.invoke(None, None, scene.alice, "ping")
    reply = await dm.wait_final_message()
    assert reply.content == "pong from dm" and reply.channel is sandbox.dm_channel(scene.alice)
    assert dm.payload["context"] == 1 and "user" in dm.payload and "member" not in dm.payload


async def test_rate_limit_is_retried_by_discord_py(sandbox: DiscordSandbox, scene: Scene, bot: SandboxBot) -> None:
    sandbox.fail_next("POST", r"/channels/\d+/messages$", 429, retry_after=0.01)
    sent = await bot.get_partial_messageable(scene.channel.id).send("after a 429")
    posts = sandbox.calls_to("POST", rf"/channels/{scene.channel.id}/messages")
    assert [(c.status, c.injected) for c in posts] == [(429, True), (200, False)]
    assert sandbox.message(sent.id).content == "after a 429"


async def test_channel_posts_can_be_paced_like_discord(sandbox: DiscordSandbox, scene: Scene, bot: SandboxBot) -> None:
    limit, window = 2, 0.5
    sandbox.pace_channel_posts(limit, window)
    other = scene.guild.add_text_channel("other")
    channel = bot.get_partial_messageable(scene.channel.id)
    sent = await asyncio.gather(*(channel.send(f"post {i}") for i in range(5)))
    elsewhere = await bot.get_partial_messageable(other.id).send("not held up")

    # every post landed, in order; those over the pace were answered 429 and retried by discord.py
    assert [sandbox.message(m.id).content for m in sent] == [f"post {i}" for i in range(5)]
    posts = sandbox.calls_to("POST", rf"^/channels/{scene.channel.id}/messages$")
    taken = [c.at for c in posts if c.status == 200]
    assert len(taken) == 5 and any(c.status == 429 for c in posts)
    assert all(taken[i + limit] - taken[i] >= window for i in range(len(taken) - limit))
    # the pace is per channel
    assert [c.status for c in sandbox.calls_to("POST", rf"^/channels/{other.id}/messages$")] == [200]
    assert sandbox.message(elsewhere.id).content == "not held up"


async def test_sharded_bot_uses_gateway_bot_and_chunks_members(
    sandbox: DiscordSandbox, scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Route, "BASE", sandbox.api_base)  # no DEFAULT_GATEWAY patch: /gateway/bot
    intents = discord.Intents.default()
    intents.members = True
    sharded = commands.AutoShardedBot(command_prefix="!", intents=intents, guild_ready_timeout=0.05)
    task = await start_bot(sharded, sandbox)
    try:
        assert sandbox.calls_to("GET", r"^/gateway/bot$")
        identify = sandbox.identify_payload
        assert identify is not None and identify["shard"] == [0, 1]
        guild = sharded.get_guild(scene.guild.id)
        assert guild is not None and guild.get_member(scene.alice.id) is not None
        assert any(frame.get("op") == 8 for frame in sandbox.connections[-1].received)
    finally:
        await sharded.close()
        await asyncio.wait_for(task, 5)


async def test_rest_lookups_edits_dms_and_unknown_routes(
    sandbox: DiscordSandbox, scene: Scene, bot: SandboxBot
) -> None:
    fetched = await bot.fetch_channel(scene.channel.id)
    assert isinstance(fetched, discord.TextChannel) and fetched.name == "general"
    guild = await bot.fetch_guild(scene.guild.id)
    assert guild.premium_tier == 0 and guild.filesize_limit == 10 * MIB
    member = await guild.fetch_member(scene.alice.id)
    assert member.name == "alice"

    sent = await fetched.send("draft")
    await sent.edit(content="final")
    stored = sandbox.message(sent.id)
    assert stored.content == "final" and stored.history[0]["content"] == "draft"
    await sent.delete()
    assert stored.deleted and stored not in scene.channel.visible_messages

    user = await bot.fetch_user(scene.alice.id)
    dm = await user.send("your video is ready")
    assert sandbox.dm_channel(scene.alice).last_message is sandbox.message(dm.id)
    scene.alice.user.dms_closed = True
    with pytest.raises(discord.Forbidden) as closed:
        await user.send("again")
    assert closed.value.code == 50007

    eleven = {"embeds": [{"title": str(i)} for i in range(11)]}
    route = Route("POST", "/channels/{channel_id}/messages", channel_id=scene.channel.id)
    with pytest.raises(discord.HTTPException) as embeds:
        await bot.http.request(route, json=eleven)
    assert embeds.value.code == 50035 and "embeds" in embeds.value.text

    with pytest.raises(discord.NotFound):
        await bot.http.request(Route("GET", "/skus/{sku_id}/subscriptions", sku_id=1))
    assert [c.path for c in sandbox.unknown_routes] == ["/skus/1/subscriptions"]


# -- sharding: several connections at once, each identifying its shard -------------------------


async def raw_identify(sandbox: DiscordSandbox, shard: Any = None) -> tuple[int | None, list[dict[str, Any]]]:
    """IDENTIFY over a bare websocket; returns (close code or None, the dispatches received)."""
    identify: dict[str, Any] = {"token": TOKEN, "intents": 1, "properties": {}}
    if shard is not None:
        identify["shard"] = shard
    frames: list[dict[str, Any]] = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{sandbox.gateway_url}?v=10&encoding=json") as ws,
    ):
        hello = await ws.receive_json(timeout=5)
        assert hello["op"] == 10
        await ws.send_json({"op": 2, "d": identify})
        while True:
            msg = await ws.receive(timeout=5)
            if msg.type != aiohttp.WSMsgType.TEXT:
                return ws.close_code, frames
            frame = json.loads(msg.data)
            frames.append(frame)
            guilds = [f for f in frames if f["t"] == "GUILD_CREATE"]
            ready = next((f for f in frames if f["t"] == "READY"), None)
            if ready is not None and len(guilds) == len(ready["d"]["guilds"]):
                return None, frames


async def test_identify_with_a_shard_gets_only_that_shards_guilds() -> None:
    async with DiscordSandbox(token=TOKEN, shards=2, max_concurrency=4, max_guilds_per_shard=1) as sandbox:
        first = sandbox.add_guild("on shard 0", shard=(0, 2))
        second = sandbox.add_guild("on shard 1", shard=(1, 2))
        assert (sandbox.shard_of(first, 2), sandbox.shard_of(second, 2)) == (0, 1)
        assert (first.id >> 22) % 2 == 0 and (second.id >> 22) % 2 == 1

        for shard_id, guild in ((0, first), (1, second)):
            code, frames = await raw_identify(sandbox, [shard_id, 2])
            assert code is None
            ready = frames[0]
            assert ready["t"] == "READY" and ready["d"]["shard"] == [shard_id, 2]
            assert [g["id"] for g in ready["d"]["guilds"]] == [str(guild.id)]
            assert [f["d"]["id"] for f in frames if f["t"] == "GUILD_CREATE"] == [str(guild.id)]

        # Discord's close codes: an impossible shard, and one connection for more guilds than a shard may hold
        for bad in ([2, 2], [-1, 2], [0, 0], [0], ["0", "2"]):
            assert (await raw_identify(sandbox, bad))[0] == 4010, bad
        assert (await raw_identify(sandbox))[0] == 4011
        assert (await raw_identify(sandbox, [0, 1]))[0] == 4011

        auth = {"Authorization": f"Bot {TOKEN}"}
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{sandbox.api_base}/gateway/bot", headers=auth) as r,
        ):
            body = await r.json()
        assert body["shards"] == 2 and body["session_start_limit"]["max_concurrency"] == 4
        assert body["session_start_limit"]["remaining"] == 1000 - len(sandbox.gateway.identifies)


class ShardBot(commands.AutoShardedBot):
    """One process's share of the shards; only the process on shard 0 syncs the commands."""

    def __init__(self, label: str, shard_ids: list[int], shard_count: int) -> None:
        super().__init__(
            command_prefix="!",
            intents=discord.Intents.default(),
            shard_ids=shard_ids,
            shard_count=shard_count,
            guild_ready_timeout=0.05,
            help_command=None,
        )
        self.label = label
        self.tree.add_command(whoami)

    async def setup_hook(self) -> None:
        if 0 in (self.shard_ids or []):
            await self.tree.sync()


@app_commands.command(name="whoami", description="Which process and shard answered")
async def whoami(interaction: discord.Interaction) -> None:
    bot: ShardBot = interaction.client  # type: ignore[assignment]
    shard = interaction.guild.shard_id if interaction.guild is not None else "dm"
    await interaction.response.send_message(f"{bot.label} shard {shard}")


async def test_three_processes_split_the_shards_and_answer_their_own_guilds(
    sandbox: DiscordSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    guilds = [sandbox.add_guild(f"g{i}", shard=(i, 4)) for i in range(4)]
    channels = [g.add_text_channel("general") for g in guilds]
    alice = sandbox.add_user("alice")
    members = [g.add_member("alice", user=alice) for g in guilds]
    sandbox.patch_discord(monkeypatch)
    # shards 0-1, 2 and 3 of 4: one bot each, connected to the same gateway at once
    bots = {"low": ShardBot("low", [0, 1], 4), "two": ShardBot("two", [2], 4), "three": ShardBot("three", [3], 4)}
    owner = ["low", "low", "two", "three"]
    tasks = [asyncio.create_task(b.start(TOKEN)) for b in bots.values()]
    try:
        sessions = await sandbox.wait_shards(4, timeout=15)
        assert {i: s.identify["shard"] for i, s in sessions.items()} == {i: [i, 4] for i in range(4)}
        await asyncio.wait_for(asyncio.gather(*(b.wait_until_ready() for b in bots.values())), 10)
        for name, bot in bots.items():
            assert sorted(g.id for g in bot.guilds) == [g.id for i, g in enumerate(guilds) if owner[i] == name]
        assert len(sandbox.calls_to("PUT", r"/commands$")) == 1  # one process synced

        for i in range(4):
            handle = await sandbox.invoke(guilds[i], channels[i], members[i], "whoami")
            assert (await handle.wait_final_message()).content == f"{owner[i]} shard {i}"
            assert handle.record.shard == (i, 4)
        dm = await sandbox.invoke(None, None, alice, "whoami")
        assert (await dm.wait_final_message()).content == "low shard dm" and dm.record.shard == (0, 4)

        # a guild joined later reaches only the bot that owns its shard
        joined = sandbox.add_guild("joined later", shard=(2, 4))
        await sandbox.wait_for(lambda: bots["two"].get_guild(joined.id), 5, "the new guild on shard 2")
        assert all(bots[n].get_guild(joined.id) is None for n in ("low", "three"))

        # a dropped shard resumes its own session; the other shards' connections stay up
        before = {i: s.connection for i, s in sessions.items()}
        await sandbox.drop_connections(shard_id=3)
        await sandbox.wait_for(lambda: sessions[3].resumes == 1 and sessions[3].live, 10, "shard 3 to resume")
        assert [r["session_id"] for r in sandbox.gateway.resume_requests] == [sessions[3].session_id]
        assert all(sessions[i].connection is before[i] for i in range(3))
        handle = await sandbox.invoke(guilds[3], channels[3], members[3], "whoami")
        assert (await handle.wait_final_message()).content == "three shard 3"
    finally:
        await asyncio.gather(*(b.close() for b in bots.values()))
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
