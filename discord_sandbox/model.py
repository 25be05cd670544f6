"""World model of the sandbox: users, guilds, roles, channels, messages and stored files.

Objects here are plain mutable records. Turning them into Discord JSON lives in
`payloads.py`; the sandbox server wires `World.emit` to the gateway so that changes made
from a test (a new guild, a user message) reach the connected bot like real events.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

Json = dict[str, Any]

DISCORD_EPOCH_MS = 1_420_070_400_000
MIB = 1024 * 1024

# Permission bits (subset that matters to a bot; see Discord's permissions table).
CREATE_INSTANT_INVITE = 1 << 0
ADMINISTRATOR = 1 << 3
MANAGE_CHANNELS = 1 << 4
MANAGE_GUILD = 1 << 5
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
MENTION_EVERYONE = 1 << 17
USE_EXTERNAL_EMOJIS = 1 << 18
CHANGE_NICKNAME = 1 << 26
USE_APPLICATION_COMMANDS = 1 << 31
SEND_MESSAGES_IN_THREADS = 1 << 38
ALL_PERMISSIONS = (1 << 51) - 1

DEFAULT_MEMBER_PERMISSIONS = (
    CREATE_INSTANT_INVITE
    | ADD_REACTIONS
    | VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_EXTERNAL_EMOJIS
    | CHANGE_NICKNAME
    | USE_APPLICATION_COMMANDS
    | SEND_MESSAGES_IN_THREADS
)
# What an invited bot usually gets: everything a member has plus message management.
DEFAULT_BOT_PERMISSIONS = DEFAULT_MEMBER_PERMISSIONS | MANAGE_MESSAGES | MENTION_EVERYONE
# Removed in a channel marked as "bot lacks permissions".
POSTING_PERMISSIONS = SEND_MESSAGES | ATTACH_FILES | EMBED_LINKS | SEND_MESSAGES_IN_THREADS

# Upload limits per file (discord.py Guild._PREMIUM_GUILD_LIMITS; Discord docs 2025).
GUILD_UPLOAD_LIMITS = {0: 10 * MIB, 1: 10 * MIB, 2: 50 * MIB, 3: 100 * MIB}
DM_UPLOAD_LIMIT = 10 * MIB
# Nitro limits by premium_type (1 classic, 2 nitro, 3 basic); they raise attachment_size_limit.
USER_UPLOAD_LIMITS = {0: 10 * MIB, 1: 50 * MIB, 2: 500 * MIB, 3: 50 * MIB}

# Channel types.
GUILD_TEXT = 0
DM = 1
GUILD_CATEGORY = 4

# Message flags.
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_COMPONENTS_V2 = 1 << 15

ATTACHMENT_URL_LIFETIME = timedelta(hours=24)


class Clock:
    """Sandbox time: real time plus an offset tests move with `advance`.

    Only the sandbox's own rules (3 s ack window, 15 min tokens, nonce window, signed CDN
    URLs) read this clock; discord.py keeps using the real one.
    """

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the sandbox clock only moves forward")
        self.offset += seconds


class Snowflakes:
    """Unique, increasing snowflakes stamped with the *real* time.

    Real time keeps `created_at` consistent with discord.py's own clock.
    """

    def __init__(self) -> None:
        self._last = 0
        self._increment = itertools.count()

    def next(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        value = (ms << 22) | (1 << 17) | (next(self._increment) & 0xFFF)
        if value <= self._last:
            value = self._last + 1
        self._last = value
        return value

    def next_on_shard(self, shard_id: int, shard_count: int) -> int:
        """The next id whose (id >> 22) % shard_count is shard_id: at most shard_count - 1 ms ahead."""
        if not 0 <= shard_id < shard_count:
            raise ValueError(f"shard {shard_id} is not below the shard count {shard_count}")
        ms = max(int(time.time() * 1000) - DISCORD_EPOCH_MS, (self._last >> 22) + 1)
        ms += (shard_id - ms) % shard_count
        value = (ms << 22) | (1 << 17) | (next(self._increment) & 0xFFF)
        self._last = value
        return value


def iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat()


@dataclass(eq=False)
class User:
    id: int
    username: str
    global_name: str | None = None
    bot: bool = False
    avatar: str | None = None
    locale: str = "en-US"
    premium_type: int = 0
    # A user who blocks DMs from server members: DMs answer 403 50007.
    dms_closed: bool = False

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


@dataclass(eq=False)
class Role:
    id: int
    guild_id: int
    name: str
    permissions: int = 0
    position: int = 0
    color: int = 0
    hoist: bool = False
    mentionable: bool = False
    managed: bool = False

    @property
    def mention(self) -> str:
        return f"<@&{self.id}>"


@dataclass(eq=False)
class StoredFile:
    """Bytes behind one attachment, served by the sandbox CDN route."""

    id: int
    filename: str
    content_type: str | None
    data: bytes
    path_prefix: str  # "attachments/<channel>" or "ephemeral-attachments/<app>"
    expires_at: datetime
    description: str | None = None
    width: int | None = None
    height: int | None = None
    duration_secs: float | None = None
    ephemeral: bool = False
    title: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)

    def signature(self) -> tuple[str, str, str]:
        ex = format(int(self.expires_at.timestamp()), "x")
        issued = format(int((self.expires_at - ATTACHMENT_URL_LIFETIME).timestamp()), "x")
        hm = hashlib.sha256(f"{self.id}:{ex}:{issued}".encode()).hexdigest()
        return ex, issued, hm


@dataclass(eq=False)
class Member:
    user: User
    guild: Guild
    permissions: int = DEFAULT_MEMBER_PERMISSIONS
    roles: list[Role] = field(default_factory=list)
    nick: str | None = None
    joined_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def id(self) -> int:
        return self.user.id

    @property
    def name(self) -> str:
        return self.user.username

    @property
    def locale(self) -> str:
        return self.user.locale

    @property
    def mention(self) -> str:
        return self.user.mention

    def effective_permissions(self) -> int:
        """Guild-level permissions as Discord computes them (owner/admin get everything)."""
        if self.guild.owner_id == self.user.id:
            return ALL_PERMISSIONS
        bits = self.permissions | self.guild.everyone_role.permissions
        for role in self.roles:
            bits |= role.permissions
        if bits & ADMINISTRATOR:
            return ALL_PERMISSIONS
        return bits


@dataclass(eq=False)
class StoredMessage:
    """A message as the sandbox stores it; `history` holds the payload before each edit."""

    id: int
    channel: Channel
    author: User
    content: str = ""
    embeds: list[Json] = field(default_factory=list)
    components: list[Json] = field(default_factory=list)
    attachments: list[StoredFile] = field(default_factory=list)
    flags: int = 0
    tts: bool = False
    type: int = 0
    nonce: str | int | None = None
    # Exactly what the sender put in `allowed_mentions` (None when the field was absent).
    allowed_mentions: Json | None = None
    message_reference: Json | None = None
    poll: Json | None = None
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_id: int | None = None
    interaction_metadata: Json | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    edited_at: datetime | None = None
    deleted: bool = False
    history: list[Json] = field(default_factory=list)
    pinged_user_ids: list[int] = field(default_factory=list)
    pinged_role_ids: list[int] = field(default_factory=list)
    pinged_everyone: bool = False

    @property
    def channel_id(self) -> int:
        return self.channel.id

    @property
    def guild_id(self) -> int | None:
        return None if self.channel.guild is None else self.channel.guild.id

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & FLAG_LOADING)

    @property
    def edit_count(self) -> int:
        return len(self.history)

    def file(self, filename: str | None = None) -> StoredFile:
        """The attachment named `filename` (or the only one)."""
        if filename is None:
            if len(self.attachments) != 1:
                raise LookupError(f"message {self.id} has {len(self.attachments)} attachments")
            return self.attachments[0]
        for stored in self.attachments:
            if stored.filename == filename:
                return stored
        raise LookupError(f"message {self.id} has no attachment {filename!r}")

    def iter_components(self) -> Iterator[Json]:
        """Every component dict at any depth (rows, containers, sections, accessories)."""
        yield from walk_components(self.components)

    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in self.iter_components() if "custom_id" in c]


def walk_components(items: Iterable[Json]) -> Iterator[Json]:
    for item in items:
        yield item
        children: list[Json] = list(item.get("components") or [])
        for key in ("accessory", "component"):
            if isinstance(item.get(key), dict):
                children.append(item[key])
        yield from walk_components(children)


@dataclass(eq=False)
class Channel:
    id: int
    world: World
    name: str
    type: int = GUILD_TEXT
    guild: Guild | None = None
    topic: str | None = None
    nsfw: bool = False
    position: int = 0
    parent_id: int | None = None
    recipients: list[User] = field(default_factory=list)
    messages: list[StoredMessage] = field(default_factory=list)
    # When True the bot lacks Send/Attach/Embed here: bot-token posts answer 403 50013.
    bot_missing_permissions: bool = False
    # nonce -> (message, sandbox monotonic time) for enforce_nonce dedupe.
    nonces: dict[str, tuple[StoredMessage, float]] = field(default_factory=dict)

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"

    @property
    def is_dm(self) -> bool:
        return self.type == DM

    @property
    def upload_limit(self) -> int:
        if self.guild is None:
            return DM_UPLOAD_LIMIT
        return self.guild.upload_limit

    def deny_bot(self) -> None:
        """Make the bot lack posting permissions in this channel (403 50013 on send)."""
        self.bot_missing_permissions = True

    def allow_bot(self) -> None:
        self.bot_missing_permissions = False

    @property
    def visible_messages(self) -> list[StoredMessage]:
        """What a user scrolling the channel sees: not deleted, not ephemeral, oldest first."""
        return [m for m in self.messages if not m.deleted and not m.ephemeral]

    @property
    def last_message(self) -> StoredMessage | None:
        visible = self.visible_messages
        return visible[-1] if visible else None

    def messages_by(self, author: User | Member) -> list[StoredMessage]:
        user = author.user if isinstance(author, Member) else author
        return [m for m in self.visible_messages if m.author is user]

    def add_message(
        self,
        author: User | Member,
        content: str = "",
        *,
        attachments: Iterable[Json | StoredFile] = (),
        embeds: Iterable[Json] = (),
        components: Iterable[Json] = (),
        flags: int = 0,
        dispatch: bool = True,
    ) -> StoredMessage:
        """Store a message as if `author` had posted it (seed data or a user's message).

        Dispatches MESSAGE_CREATE to the bot unless `dispatch=False`.
        """
        user = author.user if isinstance(author, Member) else author
        files = [self.world.file_from(a) for a in attachments]
        message = StoredMessage(
            id=self.world.ids.next(),
            channel=self,
            author=user,
            content=content,
            embeds=list(embeds),
            components=list(components),
            attachments=files,
            flags=flags,
            created_at=self.world.clock.now(),
        )
        self.world.store_message(message, dispatch=dispatch)
        return message


@dataclass(eq=False)
class Guild:
    id: int
    world: World
    name: str
    owner_id: int
    premium_tier: int = 0
    preferred_locale: str = "en-US"
    features: list[str] = field(default_factory=list)
    roles: dict[int, Role] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    joined_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def everyone_role(self) -> Role:
        return self.roles[self.id]

    @property
    def upload_limit(self) -> int:
        return GUILD_UPLOAD_LIMITS.get(self.premium_tier, 10 * MIB)

    @property
    def bot_member(self) -> Member:
        return self.members[self.world.bot.id]

    @property
    def text_channels(self) -> list[Channel]:
        return [c for c in self.channels.values() if c.type == GUILD_TEXT]

    def add_role(
        self,
        name: str,
        *,
        permissions: int = 0,
        color: int = 0,
        mentionable: bool = False,
        hoist: bool = False,
    ) -> Role:
        role = Role(
            id=self.world.ids.next(),
            guild_id=self.id,
            name=name,
            permissions=permissions,
            position=len(self.roles),
            color=color,
            mentionable=mentionable,
            hoist=hoist,
        )
        self.roles[role.id] = role
        self.world.emit_guild("GUILD_ROLE_CREATE", self, {"guild_id": str(self.id), "role": role})
        return role

    def add_member(
        self,
        name: str,
        *,
        permissions: int = DEFAULT_MEMBER_PERMISSIONS,
        roles: Iterable[Role] = (),
        locale: str = "en-US",
        nick: str | None = None,
        premium_type: int = 0,
        user: User | None = None,
    ) -> Member:
        """Add a member; `permissions` are its own bits, OR-ed with its roles' and @everyone's."""
        if user is None:
            user = self.world.add_user(name, locale=locale, premium_type=premium_type)
        member = Member(
            user=user,
            guild=self,
            permissions=permissions,
            roles=list(roles),
            nick=nick,
            joined_at=self.world.clock.now(),
        )
        self.members[user.id] = member
        self.world.emit_guild("GUILD_MEMBER_ADD", self, {"member": member})
        return member

    def add_text_channel(self, name: str, *, topic: str | None = None, nsfw: bool = False) -> Channel:
        channel = Channel(
            id=self.world.ids.next(),
            world=self.world,
            name=name,
            type=GUILD_TEXT,
            guild=self,
            topic=topic,
            nsfw=nsfw,
            position=len(self.channels),
        )
        self.channels[channel.id] = channel
        self.world.channels[channel.id] = channel
        self.world.emit_guild("CHANNEL_CREATE", self, {"channel": channel})
        return channel

    def member(self, who: User | Member | int) -> Member:
        user_id = who if isinstance(who, int) else who.id
        return self.members[user_id]


class World:
    """Registry of everything the sandbox knows, plus hooks the server plugs into."""

    def __init__(self, *, bot_name: str, app_name: str) -> None:
        self.clock = Clock()
        self.ids = Snowflakes()
        self.base_url = ""  # http://127.0.0.1:PORT once the server runs
        self.users: dict[int, User] = {}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, StoredMessage] = {}
        self.files: dict[int, StoredFile] = {}
        self.application_id = self.ids.next()
        self.app_name = app_name
        self.bot = User(id=self.application_id, username=bot_name, bot=True)
        self.users[self.bot.id] = self.bot
        self.owner = self.add_user("app-owner")
        # Set by the server: gateway dispatch (event, model objects, guild id) and a
        # "something changed" notification for waiters.
        self.emit: Callable[[str, Json, int | None], None] = lambda event, data, guild_id: None
        self.changed: Callable[[], None] = lambda: None

    # -- users, guilds -------------------------------------------------------------------

    def add_user(self, name: str, *, locale: str = "en-US", premium_type: int = 0, bot: bool = False) -> User:
        user = User(id=self.ids.next(), username=name, locale=locale, premium_type=premium_type, bot=bot)
        self.users[user.id] = user
        return user

    def add_guild(
        self,
        name: str,
        *,
        premium_tier: int = 0,
        preferred_locale: str = "en-US",
        owner_id: int | None = None,
        features: Iterable[str] = (),
        shard: tuple[int, int] | None = None,
    ) -> Guild:
        guild_id = self.ids.next() if shard is None else self.ids.next_on_shard(*shard)
        guild = Guild(
            id=guild_id,
            world=self,
            name=name,
            owner_id=owner_id if owner_id is not None else self.owner.id,
            premium_tier=premium_tier,
            preferred_locale=preferred_locale,
            features=list(features),
            joined_at=self.clock.now(),
        )
        # @everyone has the guild's id; members get their bits on top of it.
        guild.roles[guild_id] = Role(id=guild_id, guild_id=guild_id, name="@everyone", permissions=0)
        bot_role = Role(
            id=self.ids.next(),
            guild_id=guild_id,
            name=self.bot.username,
            permissions=DEFAULT_BOT_PERMISSIONS,
            position=1,
            managed=True,
        )
        guild.roles[bot_role.id] = bot_role
        guild.members[self.bot.id] = Member(
            user=self.bot, guild=guild, permissions=0, roles=[bot_role], joined_at=self.clock.now()
        )
        if guild.owner_id in self.users and guild.owner_id not in guild.members:
            guild.members[guild.owner_id] = Member(
                user=self.users[guild.owner_id], guild=guild, joined_at=self.clock.now()
            )
        self.guilds[guild_id] = guild
        self.emit("GUILD_CREATE", {"guild": guild}, guild_id)
        return guild

    def dm_channel(self, user: User | Member) -> Channel:
        """The bot's DM channel with `user` (created on first use, like POST /users/@me/channels)."""
        target = user.user if isinstance(user, Member) else user
        for channel in self.channels.values():
            if channel.is_dm and channel.recipients and channel.recipients[0] is target:
                return channel
        channel = Channel(id=self.ids.next(), world=self, name="", type=DM, recipients=[target])
        self.channels[channel.id] = channel
        return channel

    # -- messages and files --------------------------------------------------------------

    def store_message(self, message: StoredMessage, *, dispatch: bool = True) -> None:
        message.channel.messages.append(message)
        self.messages[message.id] = message
        if dispatch and not message.ephemeral:
            self.emit("MESSAGE_CREATE", {"message": message}, message.guild_id)
        self.changed()

    def add_file(
        self,
        data: bytes,
        filename: str,
        content_type: str | None,
        *,
        path_prefix: str,
        description: str | None = None,
        width: int | None = None,
        height: int | None = None,
        duration_secs: float | None = None,
        ephemeral: bool = False,
        title: str | None = None,
    ) -> StoredFile:
        stored = StoredFile(
            id=self.ids.next(),
            filename=filename,
            content_type=content_type,
            data=data,
            path_prefix=path_prefix,
            expires_at=self.clock.now() + ATTACHMENT_URL_LIFETIME,
            description=description,
            width=width,
            height=height,
            duration_secs=duration_secs,
            ephemeral=ephemeral,
            title=title,
        )
        self.files[stored.id] = stored
        return stored

    def file_from(self, ref: Json | StoredFile) -> StoredFile:
        """A stored file from an attachment payload dict (as returned by add_attachment)."""
        if isinstance(ref, StoredFile):
            return ref
        try:
            return self.files[int(ref["id"])]
        except (KeyError, ValueError) as exc:
            raise LookupError(f"attachment {ref!r} is not stored in the sandbox") from exc

    def emit_guild(self, event: str, guild: Guild, data: Json) -> None:
        if guild.id in self.guilds:
            self.emit(event, data, guild.id)
