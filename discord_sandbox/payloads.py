"""Discord JSON shapes built from the world model (REST answers and gateway event bodies)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .model import (
    ADD_REACTIONS,
    ATTACH_FILES,
    DM,
    EMBED_LINKS,
    POSTING_PERMISSIONS,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES,
    VIEW_CHANNEL,
    Channel,
    Guild,
    Json,
    Member,
    Role,
    StoredFile,
    StoredMessage,
    User,
    World,
    iso,
)

# Intents bits the gateway honours.
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

DM_PERMISSIONS = VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES | READ_MESSAGE_HISTORY | ADD_REACTIONS


def error_body(code: int, message: str, errors: Json | None = None) -> Json:
    body: Json = {"message": message, "code": code}
    if errors:
        body["errors"] = errors
    return body


def user_payload(user: User) -> Json:
    return {
        "id": str(user.id),
        "username": user.username,
        "discriminator": "0",
        "global_name": user.global_name,
        "avatar": user.avatar,
        "avatar_decoration_data": None,
        "collectibles": None,
        "primary_guild": None,
        "public_flags": 0,
        "flags": 0,
        "banner": None,
        "accent_color": None,
        "bot": user.bot,
        **({"premium_type": user.premium_type} if not user.bot else {}),
    }


def bot_self_payload(world: World) -> Json:
    """GET /users/@me for the bot (adds the private fields a token owner sees)."""
    return {
        **user_payload(world.bot),
        "verified": True,
        "mfa_enabled": False,
        "email": None,
        "locale": "en-US",
        "bio": "",
    }


def role_payload(role: Role) -> Json:
    payload: Json = {
        "id": str(role.id),
        "name": role.name,
        "description": None,
        "permissions": str(role.permissions),
        "position": role.position,
        "color": role.color,
        "colors": {"primary_color": role.color, "secondary_color": None, "tertiary_color": None},
        "hoist": role.hoist,
        "managed": role.managed,
        "mentionable": role.mentionable,
        "icon": None,
        "unicode_emoji": None,
        "flags": 0,
    }
    if role.managed:
        payload["tags"] = {"bot_id": str(role.guild_id)}
    return payload


def member_payload(member: Member, *, with_user: bool = True, channel: Channel | None = None) -> Json:
    """A guild member; `channel` adds the interaction-only `permissions` string."""
    payload: Json = {
        "roles": [str(r.id) for r in member.roles],
        "nick": member.nick,
        "avatar": None,
        "banner": None,
        "joined_at": iso(member.joined_at),
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "pending": False,
        "flags": 0,
        "communication_disabled_until": None,
        "unusual_dm_activity_until": None,
        "avatar_decoration_data": None,
        "collectibles": None,
    }
    if with_user:
        payload["user"] = user_payload(member.user)
    if channel is not None:
        payload["permissions"] = str(member_channel_permissions(member, channel))
    return payload


def member_channel_permissions(member: Member, channel: Channel) -> int:
    bits = member.effective_permissions()
    if member.user.bot and channel.bot_missing_permissions:
        bits &= ~POSTING_PERMISSIONS
    return bits


def bot_channel_permissions(world: World, channel: Channel) -> int:
    if channel.guild is None:
        return DM_PERMISSIONS
    return member_channel_permissions(channel.guild.bot_member, channel)


def channel_payload(channel: Channel, *, include_guild_id: bool = True) -> Json:
    if channel.type == DM:
        return {
            "id": str(channel.id),
            "type": DM,
            "last_message_id": _last_message_id(channel),
            "flags": 0,
            "recipients": [user_payload(u) for u in channel.recipients],
        }
    payload: Json = {
        "id": str(channel.id),
        "type": channel.type,
        "name": channel.name,
        "position": channel.position,
        "parent_id": None if channel.parent_id is None else str(channel.parent_id),
        "topic": channel.topic,
        "nsfw": channel.nsfw,
        "last_message_id": _last_message_id(channel),
        "rate_limit_per_user": 0,
        "permission_overwrites": [],
        "flags": 0,
        "icon_emoji": None,
        "theme_color": None,
    }
    if include_guild_id and channel.guild is not None:
        payload["guild_id"] = str(channel.guild.id)
    return payload


def _last_message_id(channel: Channel) -> str | None:
    last = channel.last_message
    return None if last is None else str(last.id)


def guild_payload(guild: Guild, *, with_counts: bool = False) -> Json:
    """GET /guilds/{id} shape."""
    payload: Json = {
        "id": str(guild.id),
        "name": guild.name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(guild.owner_id),
        "afk_channel_id": None,
        "afk_timeout": 300,
        "widget_enabled": False,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "application_id": None,
        "system_channel_id": None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "max_presences": None,
        "max_members": 500000,
        "max_video_channel_users": 25,
        "max_stage_video_channel_users": 50,
        "vanity_url_code": None,
        "premium_tier": guild.premium_tier,
        "premium_subscription_count": {0: 0, 1: 2, 2: 7, 3: 14}.get(guild.premium_tier, 0),
        "premium_progress_bar_enabled": False,
        "preferred_locale": guild.preferred_locale,
        "features": list(guild.features),
        "roles": [role_payload(r) for r in guild.roles.values()],
        "emojis": [],
        "stickers": [],
        "incidents_data": None,
    }
    if with_counts:
        payload["approximate_member_count"] = len(guild.members)
        payload["approximate_presence_count"] = 0
    return payload


def guild_create_payload(guild: Guild, *, intents: int) -> Json:
    """GUILD_CREATE: the REST shape plus the gateway-only fields."""
    members = list(guild.members.values())
    if not intents & INTENT_GUILD_PRESENCES:
        # Without GUILD_PRESENCES Discord sends only the bot (and voice users); a client with
        # the members intent then asks for the rest with op 8 REQUEST_GUILD_MEMBERS.
        members = [guild.bot_member]
    return {
        **guild_payload(guild),
        "joined_at": iso(guild.joined_at),
        "large": len(guild.members) > 250,
        "unavailable": False,
        "lazy": True,
        "member_count": len(guild.members),
        "members": [member_payload(m) for m in members],
        "channels": [channel_payload(c, include_guild_id=False) for c in guild.channels.values()],
        "threads": [],
        "presences": [],
        "voice_states": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
        "embedded_activities": [],
        "activity_instances": [],
        "application_command_counts": {},
    }


def file_payload(stored: StoredFile, base_url: str) -> Json:
    ex, issued, hm = stored.signature()
    path = f"{stored.path_prefix}/{stored.id}/{quote(stored.filename)}?ex={ex}&is={issued}&hm={hm}&"
    payload: Json = {
        "id": str(stored.id),
        "filename": stored.filename,
        "size": stored.size,
        "url": f"{base_url}/cdn/{path}",
        "proxy_url": f"{base_url}/media/{path}",
        "content_type": stored.content_type,
        "placeholder": None,
        "placeholder_version": None,
    }
    for key in ("description", "width", "height", "duration_secs", "title"):
        value = getattr(stored, key)
        if value is not None:
            payload[key] = value
    if stored.ephemeral:
        payload["ephemeral"] = True
    return payload


def message_payload(message: StoredMessage, world: World, *, depth: int = 0) -> Json:
    """REST message shape (no guild_id/member; gateway events add those)."""
    mentions = []
    for user_id in message.pinged_user_ids:
        user = world.users.get(user_id)
        if user is not None:
            mentions.append(user_payload(user))
    payload: Json = {
        "id": str(message.id),
        "channel_id": str(message.channel.id),
        "type": message.type,
        "content": message.content,
        "author": user_payload(message.author),
        "attachments": [file_payload(f, world.base_url) for f in message.attachments],
        "embeds": message.embeds,
        "components": message.components,
        "mentions": mentions,
        "mention_roles": [str(r) for r in message.pinged_role_ids],
        "mention_everyone": message.pinged_everyone,
        "pinned": False,
        "tts": message.tts,
        "timestamp": iso(message.created_at),
        "edited_timestamp": iso(message.edited_at),
        "flags": message.flags,
    }
    if message.nonce is not None:
        payload["nonce"] = message.nonce
    if message.webhook_id is not None:
        payload["webhook_id"] = str(message.webhook_id)
    if message.application_id is not None:
        payload["application_id"] = str(message.application_id)
    if message.interaction_metadata is not None:
        payload["interaction_metadata"] = message.interaction_metadata
    if message.poll is not None:
        payload["poll"] = message.poll
    if message.message_reference is not None:
        payload["message_reference"] = message.message_reference
        ref_id = message.message_reference.get("message_id")
        referenced = world.messages.get(int(ref_id)) if ref_id is not None else None
        if depth == 0:
            payload["referenced_message"] = (
                None if referenced is None or referenced.deleted else message_payload(referenced, world, depth=1)
            )
    return payload


def gateway_message_payload(message: StoredMessage, world: World, *, intents: int) -> Json:
    """MESSAGE_CREATE/UPDATE body: adds guild_id + member, honours MESSAGE_CONTENT."""
    payload = message_payload(message, world)
    guild = message.channel.guild
    if guild is not None:
        payload["guild_id"] = str(guild.id)
        member = guild.members.get(message.author.id)
        if member is not None:
            payload["member"] = member_payload(member, with_user=False)
    if not intents & INTENT_MESSAGE_CONTENT and not _content_visible(message, world):
        payload.update(content="", embeds=[], attachments=[], components=[])
        payload.pop("poll", None)
    return payload


def _content_visible(message: StoredMessage, world: World) -> bool:
    # Discord still shows content for DMs, the bot's own messages and messages mentioning it.
    return message.channel.guild is None or message.author is world.bot or world.bot.id in message.pinged_user_ids


def application_payload(world: World) -> Json:
    """GET /oauth2/applications/@me."""
    app_id = str(world.application_id)
    return {
        "id": app_id,
        "name": world.app_name,
        "icon": None,
        "description": "",
        "summary": "",
        "type": None,
        "hook": True,
        "bot_public": True,
        "bot_require_code_grant": False,
        "verify_key": "0" * 64,
        "owner": user_payload(world.owner),
        "team": None,
        "flags": (1 << 15) | (1 << 19) | (1 << 23),
        "bot": user_payload(world.bot),
        "tags": [],
        "redirect_uris": [],
        "interactions_endpoint_url": None,
        "role_connections_verification_url": None,
        "approximate_guild_count": len(world.guilds),
        "approximate_user_install_count": 0,
        "install_params": {"scopes": ["bot", "applications.commands"], "permissions": "0"},
        "integration_types_config": {"0": {}},
        "rpc_origins": [],
        "custom_install_url": None,
        "terms_of_service_url": None,
        "privacy_policy_url": None,
    }


def dump_value(value: Any) -> Any:
    """Model objects -> JSON for gateway events carrying them (see World.emit users)."""
    if isinstance(value, Role):
        return role_payload(value)
    if isinstance(value, Member):
        return member_payload(value)
    if isinstance(value, User):
        return user_payload(value)
    if isinstance(value, Channel):
        return channel_payload(value)
    return value
