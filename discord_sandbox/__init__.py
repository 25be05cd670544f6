"""Discord sandbox: a loopback fake of Discord (REST + CDN + gateway) for the real discord.py.

async with DiscordSandbox() as sandbox:
    sandbox.patch_discord(monkeypatch)          # Route.BASE + DEFAULT_GATEWAY
    guild = sandbox.add_guild("Test", premium_tier=0)
    member = guild.add_member("alice")
    channel = guild.add_text_channel("general")
    ...start the bot, await sandbox.wait_ready()...
    handle = await sandbox.invoke(guild, channel, member, "character create", name="x")
    reply = await handle.wait_final_message()

Sharded bots: `DiscordSandbox(shards=4, max_concurrency=4)` is what GET /gateway/bot recommends;
`add_guild(..., shard=(2, 4))` makes a guild on shard 2 of 4; any number of processes may connect,
each IDENTIFYing its shards, and `await sandbox.wait_shards(4)` waits for all of them. Guild events
and interactions go to the connection owning the guild's shard, DMs to shard 0.
"""

from .client import InteractionHandle
from .commands import SandboxUsageError
from .gateway import GatewayConnection, GatewaySession
from .interactions import InteractionRecord
from .model import (
    ADMINISTRATOR,
    ALL_PERMISSIONS,
    ATTACH_FILES,
    DEFAULT_MEMBER_PERMISSIONS,
    MANAGE_GUILD,
    MIB,
    SEND_MESSAGES,
    Channel,
    Guild,
    Member,
    Role,
    StoredFile,
    StoredMessage,
    User,
)
from .server import DiscordSandbox
from .wire import Call, UploadedFile

__all__ = [
    "ADMINISTRATOR",
    "ALL_PERMISSIONS",
    "ATTACH_FILES",
    "DEFAULT_MEMBER_PERMISSIONS",
    "MANAGE_GUILD",
    "MIB",
    "SEND_MESSAGES",
    "Call",
    "Channel",
    "DiscordSandbox",
    "GatewayConnection",
    "GatewaySession",
    "Guild",
    "InteractionHandle",
    "InteractionRecord",
    "Member",
    "Role",
    "SandboxUsageError",
    "StoredFile",
    "StoredMessage",
    "UploadedFile",
    "User",
]
