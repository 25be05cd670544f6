"""Discord sandbox: a loopback fake of Discord (REST + CDN + gateway) for the real discord.py.

async with DiscordSandbox() as sandbox:
    sandbox.patch_discord(monkeypatch)          # Route.BASE + DEFAULT_GATEWAY
    guild = sandbox.add_guild("Test", premium_tier=0)
    member = guild.add_member("alice")
    channel = guild.add_text_channel("general")
    ...start the bot, await sandbox.wait_ready()...
    handle = await sandbox.invoke(guild, channel, member, "character create", name="x")
    reply = await handle.wait_final_message()
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
