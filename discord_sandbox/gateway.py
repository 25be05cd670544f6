"""Gateway v10 over a real websocket: HELLO, IDENTIFY -> READY + GUILD_CREATE, heartbeats,
RESUME with replay, member chunk requests and event dispatch.

Sharding as Discord does it: any number of connections at once, each IDENTIFY may carry
`shard: [shard_id, shard_count]`; a session gets READY, GUILD_CREATE and every guild event only
for guilds with `(guild_id >> 22) % shard_count == shard_id`, and DMs only on shard 0. An
IDENTIFY without `shard` is shard 0 of 1 (every guild), as before.

discord.py connects to `<gateway>?v=10&encoding=json&compress=zlib-stream` and accepts both
TEXT frames and zlib-stream BINARY frames; we honour zlib-stream so its real decompression
path runs, and answer with plain TEXT frames for any other compression it might ask for.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .model import Json, World
from .payloads import (
    INTENT_DIRECT_MESSAGES,
    INTENT_GUILD_MEMBERS,
    INTENT_GUILD_MESSAGES,
    INTENT_GUILDS,
    PRIVILEGED_INTENTS,
    bot_self_payload,
    channel_payload,
    gateway_message_payload,
    guild_create_payload,
    member_payload,
    role_payload,
)

log = logging.getLogger(__name__)

DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE, VOICE_STATE, RESUME, RECONNECT = 0, 1, 2, 3, 4, 6, 7
REQUEST_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 8, 9, 10, 11

# Discord's limit before it refuses an IDENTIFY with 4011 "Sharding required".
MAX_GUILDS_PER_SHARD = 2500

# Which intent an event needs (events not listed are always sent).
_EVENT_INTENTS = {
    "GUILD_CREATE": INTENT_GUILDS,
    "CHANNEL_CREATE": INTENT_GUILDS,
    "GUILD_ROLE_CREATE": INTENT_GUILDS,
    "GUILD_MEMBER_ADD": INTENT_GUILD_MEMBERS,
}

Frame = dict[str, Any]
QueueItem = Frame | asyncio.Event | None


@dataclass(eq=False)
class GatewayConnection:
    """One websocket connection (a session may span several after RESUMEs)."""

    ws: web.WebSocketResponse
    compress: str | None
    queue: asyncio.Queue[QueueItem] = field(default_factory=asyncio.Queue)
    session: GatewaySession | None = None
    heartbeats: int = 0
    close_code: int | None = None
    closed_by: str | None = None  # "client" or "server"
    received: list[Frame] = field(default_factory=list)
    _zlib: Any = None

    def __post_init__(self) -> None:
        if self.compress == "zlib-stream":
            self._zlib = zlib.compressobj()

    @property
    def open(self) -> bool:
        return self.close_code is None and not self.ws.closed

    def encode(self, frame: Frame) -> bytes | str:
        text = json.dumps(frame, separators=(",", ":"))
        if self._zlib is None:
            return text
        compressed: bytes = self._zlib.compress(text.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
        return compressed


@dataclass(eq=False)
class GatewaySession:
    """A gateway session: survives reconnects, keeps its backlog for RESUME."""

    session_id: str
    identify: Json
    intents: int
    shard: tuple[int, int] | None
    seq: int = 0
    backlog: list[Frame] = field(default_factory=list)
    connection: GatewayConnection | None = None
    ready: bool = False  # READY and every GUILD_CREATE were written to the socket
    resumes: int = 0
    invalidated: bool = False
    identified_at: float = 0.0  # sandbox monotonic time of its IDENTIFY

    @property
    def shard_id(self) -> int:
        return 0 if self.shard is None else self.shard[0]

    def owns_guild(self, guild_id: int) -> bool:
        if self.shard is None:
            return True
        shard_id, shard_count = self.shard
        return shard_for(guild_id, shard_count) == shard_id

    def owns(self, guild_id: int | None) -> bool:
        """Guild events go to the guild's shard; DMs (no guild) to shard 0, as on Discord."""
        return self.shard_id == 0 if guild_id is None else self.owns_guild(guild_id)

    @property
    def live(self) -> bool:
        return self.ready and not self.invalidated and self.connection is not None and self.connection.open

    def dispatch(self, event: str, data: Json) -> int:
        self.seq += 1
        frame: Frame = {"op": DISPATCH, "t": event, "s": self.seq, "d": data}
        self.backlog.append(frame)
        if self.connection is not None and self.connection.open:
            self.connection.queue.put_nowait(frame)
        return self.seq


def shard_for(guild_id: int, shard_count: int) -> int:
    """The shard a guild's events go to (Discord's sharding formula)."""
    return (guild_id >> 22) % shard_count


def _valid_shard(raw: Any) -> tuple[int, int] | None:
    if not isinstance(raw, list) or len(raw) != 2 or not all(type(v) is int for v in raw):
        return None
    shard_id, shard_count = raw
    return (shard_id, shard_count) if 0 <= shard_id < shard_count else None


class Gateway:
    def __init__(
        self,
        world: World,
        *,
        heartbeat_interval_ms: int,
        token_ok: Callable[[str], bool],
        url: Callable[[], str],
    ) -> None:
        self.world = world
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.token_ok = token_ok
        self.url = url
        self.privileged_intents_enabled = True
        # What GET /gateway/bot tells the bot, and when IDENTIFY is refused with 4011.
        self.recommended_shards = 1
        self.max_concurrency = 1
        self.max_guilds_per_shard = MAX_GUILDS_PER_SHARD
        self.session_start_total = 1000
        self.sessions: dict[str, GatewaySession] = {}
        self.connections: list[GatewayConnection] = []
        self.identifies: list[Json] = []
        self.resume_requests: list[Json] = []

    # -- state tests read ---------------------------------------------------------------

    @property
    def active_session(self) -> GatewaySession | None:
        """The newest ready session with an open connection."""
        for session in reversed(list(self.sessions.values())):
            if session.ready and session.connection is not None and session.connection.open:
                return session
        return None

    def open_connections(self) -> list[GatewayConnection]:
        return [c for c in self.connections if c.open]

    def session_for(self, guild_id: int | None) -> GatewaySession | None:
        """The newest live session that receives this guild's events (a DM's: shard 0)."""
        for session in reversed(list(self.sessions.values())):
            if session.live and session.owns(guild_id):
                return session
        return None

    def live_shards(self, shard_count: int) -> dict[int, GatewaySession]:
        """Shard id -> the newest live session identified as that shard of `shard_count`."""
        out: dict[int, GatewaySession] = {}
        for session in self.sessions.values():
            if session.live and session.shard is not None and session.shard[1] == shard_count:
                out[session.shard[0]] = session
        return out

    def bot_gateway(self) -> Json:
        """GET /gateway/bot: the recommended shard count and the session start limits."""
        remaining = max(self.session_start_total - len(self.identifies), 0)
        return {
            "url": self.url(),
            "shards": self.recommended_shards,
            "session_start_limit": {
                "total": self.session_start_total,
                "remaining": remaining,
                "reset_after": 14_400_000,
                "max_concurrency": self.max_concurrency,
            },
        }

    # -- dispatch -----------------------------------------------------------------------

    def emit(self, event: str, data: Json, guild_id: int | None) -> None:
        """World hook: turn model objects into the event body each session should get."""
        for session in self.sessions.values():
            if session.invalidated or not session.owns(guild_id):
                continue
            body = self._event_body(event, data, session)
            if body is not None:
                session.dispatch(event, body)

    def _event_body(self, event: str, data: Json, session: GatewaySession) -> Json | None:
        needed = _EVENT_INTENTS.get(event)
        if needed is not None and not session.intents & needed:
            return None
        if event == "GUILD_CREATE":
            return guild_create_payload(data["guild"], intents=session.intents)
        if event == "GUILD_ROLE_CREATE":
            return {"guild_id": data["guild_id"], "role": role_payload(data["role"])}
        if event == "GUILD_MEMBER_ADD":
            member = data["member"]
            return {**member_payload(member), "guild_id": str(member.guild.id)}
        if event == "CHANNEL_CREATE":
            return channel_payload(data["channel"])
        if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE"):
            message = data["message"]
            intent = INTENT_GUILD_MESSAGES if message.guild_id is not None else INTENT_DIRECT_MESSAGES
            if not session.intents & intent:
                return None
            if event == "MESSAGE_DELETE":
                body: Json = {"id": data["id"], "channel_id": data["channel_id"]}
                if message.guild_id is not None:
                    body["guild_id"] = str(message.guild_id)
                return body
            return gateway_message_payload(message, self.world, intents=session.intents)
        return data

    def dispatch_active(self, event: str, data: Json) -> GatewaySession:
        session = self.active_session
        if session is None:
            raise RuntimeError("no bot is connected to the sandbox gateway (did it start and identify?)")
        session.dispatch(event, data)
        return session

    def dispatch_to_owner(self, event: str, data: Json, guild_id: int | None) -> GatewaySession:
        """Send an event to the one connection that owns the guild's shard (DMs: shard 0)."""
        session = self.session_for(guild_id)
        if session is None:
            where = "DMs (shard 0)" if guild_id is None else f"guild {guild_id}"
            shards = sorted(s.shard or (0, 1) for s in self.sessions.values() if s.live)
            raise RuntimeError(f"no connected bot session receives {where}; live shards: {shards}")
        session.dispatch(event, data)
        return session

    # -- sandbox-initiated disruptions -----------------------------------------------------

    def _open_on(self, shard_id: int | None) -> list[GatewayConnection]:
        """Open connections, only those of sessions on `shard_id` when it is given."""
        return [
            c
            for c in self.open_connections()
            if shard_id is None or (c.session is not None and c.session.shard_id == shard_id)
        ]

    def request_reconnect(self, *, shard_id: int | None = None) -> None:
        """Send op 7 RECONNECT: the client should reconnect and RESUME."""
        for connection in self._open_on(shard_id):
            connection.queue.put_nowait({"op": RECONNECT, "d": None, "s": None, "t": None})

    def invalidate_sessions(self, *, resumable: bool = False, shard_id: int | None = None) -> None:
        """Send op 9 INVALID_SESSION to every open connection (of one shard when given)."""
        for connection in self._open_on(shard_id):
            if connection.session is not None and not resumable:
                connection.session.invalidated = True
            connection.queue.put_nowait({"op": INVALID_SESSION, "d": resumable, "s": None, "t": None})

    async def drop_connections(self, code: int = 4000, *, shard_id: int | None = None) -> None:
        """Close every socket (of one shard when given) from the server side, like a Discord-side
        disconnect."""
        for connection in self._open_on(shard_id):
            connection.closed_by = "server"
            connection.close_code = code
            await connection.ws.close(code=code)
        self.world.changed()

    async def close(self) -> None:
        for connection in self.open_connections():
            connection.closed_by = "server"
            connection.close_code = 1001
            connection.queue.put_nowait(None)
            await connection.ws.close(code=1001)

    # -- the websocket handler ----------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        query = request.query
        compress = query.get("compress")
        connection = GatewayConnection(ws=ws, compress=compress if compress == "zlib-stream" else None)
        self.connections.append(connection)
        sender = asyncio.create_task(self._sender(connection))
        try:
            if query.get("v", "10") != "10":
                await self._close(connection, 4012, "Invalid API version")
            elif query.get("encoding", "json") != "json":
                await self._close(connection, 4002, "Decode error (the sandbox only speaks json)")
            else:
                connection.queue.put_nowait(
                    {
                        "op": HELLO,
                        "d": {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["discord-sandbox"]},
                        "s": None,
                        "t": None,
                    }
                )
                await self._receive_loop(connection)
        finally:
            if connection.close_code is None:
                connection.close_code = ws.close_code if ws.close_code is not None else 1006
                connection.closed_by = connection.closed_by or "client"
            connection.queue.put_nowait(None)
            await sender
            if connection.session is not None and connection.session.connection is connection:
                connection.session.connection = None
            self.world.changed()
        return ws

    async def _receive_loop(self, connection: GatewayConnection) -> None:
        async for msg in connection.ws:
            if msg.type == WSMsgType.TEXT:
                try:
                    frame = json.loads(msg.data)
                except ValueError:
                    await self._close(connection, 4002, "Decode error")
                    return
                connection.received.append(frame)
                if not await self._on_frame(connection, frame):
                    return
            elif msg.type == WSMsgType.BINARY:
                await self._close(connection, 4002, "Decode error (binary frames are not accepted)")
                return
            elif msg.type == WSMsgType.ERROR:
                return

    async def _on_frame(self, connection: GatewayConnection, frame: Frame) -> bool:
        op = frame.get("op")
        data = frame.get("d")
        if op == HEARTBEAT:
            connection.heartbeats += 1
            connection.queue.put_nowait({"op": HEARTBEAT_ACK, "d": None, "s": None, "t": None})
            return True
        if op == IDENTIFY:
            return await self._identify(connection, data or {})
        if op == RESUME:
            return await self._resume(connection, data or {})
        if connection.session is None:
            await self._close(connection, 4003, "Not authenticated.")
            return False
        if op == REQUEST_MEMBERS:
            self._member_chunk(connection.session, data or {})
            return True
        if op in (PRESENCE, VOICE_STATE):
            return True
        await self._close(connection, 4001, "Unknown opcode.")
        return False

    async def _identify(self, connection: GatewayConnection, data: Json) -> bool:
        if connection.session is not None:
            await self._close(connection, 4005, "Already authenticated.")
            return False
        self.identifies.append(data)
        self.world.changed()
        if not self.token_ok(str(data.get("token", ""))):
            await self._close(connection, 4004, "Authentication failed.")
            return False
        if "intents" not in data:
            await self._close(connection, 4013, "Invalid intent(s).")
            return False
        intents = int(data["intents"])
        if intents & PRIVILEGED_INTENTS and not self.privileged_intents_enabled:
            await self._close(connection, 4014, "Disallowed intent(s).")
            return False
        shard = None
        if data.get("shard") is not None:
            shard = _valid_shard(data["shard"])
            if shard is None:
                await self._close(connection, 4010, "Invalid shard.")
                return False
        guilds = [g for g in self.world.guilds.values() if shard is None or shard_for(g.id, shard[1]) == shard[0]]
        if len(guilds) > self.max_guilds_per_shard:
            await self._close(connection, 4011, "Sharding required.")
            return False
        session = GatewaySession(
            session_id=secrets.token_hex(16),
            identify=data,
            intents=intents,
            shard=shard,
            connection=connection,
            identified_at=self.world.clock.monotonic(),
        )
        self.sessions[session.session_id] = session
        connection.session = session
        ready: Json = {
            "v": 10,
            "user": bot_self_payload(self.world),
            "user_settings": {},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.url(),
            "application": {"id": str(self.world.application_id), "flags": (1 << 15) | (1 << 19) | (1 << 23)},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["sandbox"],
            "auth": {},
            "_trace": ["discord-sandbox"],
        }
        if shard is not None:
            ready["shard"] = list(shard)
        session.dispatch("READY", ready)
        for guild in guilds:
            session.dispatch("GUILD_CREATE", guild_create_payload(guild, intents=intents))
        marker = asyncio.Event()
        connection.queue.put_nowait(marker)
        await marker.wait()
        session.ready = True
        self.world.changed()
        return True

    async def _resume(self, connection: GatewayConnection, data: Json) -> bool:
        self.resume_requests.append(data)
        session = self.sessions.get(str(data.get("session_id")))
        if session is None or session.invalidated or not self.token_ok(str(data.get("token", ""))):
            connection.queue.put_nowait({"op": INVALID_SESSION, "d": False, "s": None, "t": None})
            return True
        old = session.connection
        if old is not None and old is not connection and old.open:
            old.closed_by = "server"
            old.close_code = 4000
            await old.ws.close(code=4000)
        session.connection = connection
        connection.session = session
        seq = int(data.get("seq") or 0)
        for frame in session.backlog:
            if frame["s"] > seq:
                connection.queue.put_nowait(frame)
        session.resumes += 1
        session.dispatch("RESUMED", {"_trace": ["discord-sandbox"]})
        self.world.changed()
        return True

    def _member_chunk(self, session: GatewaySession, data: Json) -> None:
        guild = self.world.guilds.get(int(data.get("guild_id") or 0))
        if guild is None:
            return
        members = list(guild.members.values())
        query = data.get("query")
        if data.get("user_ids"):
            wanted = {int(u) for u in data["user_ids"]}
            members = [m for m in members if m.id in wanted]
        elif query:
            members = [m for m in members if m.name.lower().startswith(str(query).lower())]
        limit = int(data.get("limit") or 0)
        if limit:
            members = members[:limit]
        chunk: Json = {
            "guild_id": str(guild.id),
            "members": [member_payload(m) for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        session.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    async def _close(self, connection: GatewayConnection, code: int, reason: str) -> None:
        log.info("sandbox gateway closing with %s: %s", code, reason)
        connection.closed_by = "server"
        connection.close_code = code
        connection.queue.put_nowait(None)
        await connection.ws.close(code=code, message=reason.encode())

    async def _sender(self, connection: GatewayConnection) -> None:
        # Keeps draining after a send failure so markers (identify waits on them) still fire.
        while True:
            item = await connection.queue.get()
            if item is None:
                return
            if isinstance(item, asyncio.Event):
                item.set()
                continue
            if connection.ws.closed:
                continue
            payload = connection.encode(item)
            try:
                if isinstance(payload, bytes):
                    await connection.ws.send_bytes(payload)
                else:
                    await connection.ws.send_str(payload)
            except (ConnectionError, RuntimeError) as exc:
                log.debug("sandbox gateway send failed: %s", exc)
