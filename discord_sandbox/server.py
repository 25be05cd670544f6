"""The Discord sandbox: one aiohttp server on 127.0.0.1 serving REST (/api/v10), the CDN
(/cdn, /media) and the gateway websocket (/gateway/), plus the API tests drive it with.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar

from aiohttp import BodyPartReader, web

from . import client
from .client import InteractionHandle, Who
from .commands import CommandStore
from .gateway import MAX_GUILDS_PER_SHARD, Gateway, GatewayConnection, GatewaySession, shard_for
from .interactions import DEFERRED_MESSAGE, DEFERRED_UPDATE, InteractionApi, describe_interaction
from .messages import guess_type
from .model import Channel, Guild, Json, Member, StoredMessage, User, World
from .payloads import error_body, file_payload
from .rest import BotApi, Route, route
from .rules import FormErrors
from .spec import Violation, check_request
from .wire import ApiRequest, Call, Reply, UploadedFile

T = TypeVar("T")
POLL_INTERVAL = 0.02
MAX_REQUEST = 600 * 1024 * 1024  # above every upload limit, so the sandbox (not aiohttp) answers 413


_CHANNEL_POST = re.compile(r"^/channels/\d+/messages$")


def _rate_limited(wait: float, scope: str = "shared", code: int = 0, message: str | None = None) -> Reply:
    body = {
        "message": message or "You are being rate limited.",
        "retry_after": round(wait, 3),
        "global": False,
        "code": code,
    }
    # discord.py only retries a 429 that came through Discord's proxy (Via header).
    headers = {"Via": "1.1 google", "Retry-After": str(round(wait, 3)), "X-RateLimit-Scope": scope}
    return Reply(429, body, headers)


@dataclass
class FailRule:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: Json
    headers: dict[str, str]
    times: int

    def matches(self, req: ApiRequest) -> bool:
        return self.times > 0 and self.method in ("*", req.method) and bool(self.pattern.search(req.path))


class DiscordSandbox:
    """A loopback fake of Discord for the real discord.py client.

    Use as `async with DiscordSandbox() as sandbox:`; point discord.py at it with
    `sandbox.patch_discord(monkeypatch)` (or set Route.BASE / DEFAULT_GATEWAY yourself).
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        bot_name: str = "castbot",
        app_name: str = "Castbot",
        ack_timeout: float = 3.0,
        heartbeat_interval_ms: int = 41250,
        host: str = "127.0.0.1",
        shards: int = 1,
        max_concurrency: int = 1,
        max_guilds_per_shard: int = MAX_GUILDS_PER_SHARD,
    ) -> None:
        """`shards` and `max_concurrency` are what GET /gateway/bot recommends; an IDENTIFY whose
        shard would hold more than `max_guilds_per_shard` guilds is refused (4011)."""
        self.token = token
        self.host = host
        self.world = World(bot_name=bot_name, app_name=app_name)
        self.commands = CommandStore(self.world)
        self.interactions = InteractionApi(self.world, ack_timeout=ack_timeout)
        self.gateway = Gateway(
            self.world,
            heartbeat_interval_ms=heartbeat_interval_ms,
            token_ok=self._token_ok,
            url=lambda: self.gateway_url,
        )
        self.gateway.recommended_shards = shards
        self.gateway.max_concurrency = max_concurrency
        self.gateway.max_guilds_per_shard = max_guilds_per_shard
        self.rest = BotApi(self.world, self.commands, lambda: self.gateway_url, self.gateway.bot_gateway)
        self.world.emit = self.gateway.emit
        self.world.changed = self._notify
        self.calls: list[Call] = []
        self.unknown_routes: list[Call] = []
        # Requests Discord's API description (or its documented limits) refuses; answered 400.
        self.violations: list[Violation] = []
        self.pending_allowed: str | None = None  # why this test may leave interactions unanswered
        self.cdn_fetches: list[tuple[int, int]] = []  # (file id, HTTP status)
        self._fail_rules: list[FailRule] = []
        self._post_pace: tuple[int, float] | None = None
        self._posts: dict[str, deque[float]] = {}  # channel messages path -> when its posts were taken
        self._changed = asyncio.Event()
        self._routes: list[Route] = [
            *self.rest.routes(),
            route("POST", r"/interactions/(?P<id>\d+)/(?P<token>[^/]+)/callback", self._callback),
            route("POST", r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)", self._followup),
            route("GET", r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)/messages/(?P<msg>@original|\d+)", self._wh_get),
            route("PATCH", r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)/messages/(?P<msg>@original|\d+)", self._wh_edit),
            route("DELETE", r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)/messages/(?P<msg>@original|\d+)", self._wh_del),
        ]
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> DiscordSandbox:
        app = web.Application(client_max_size=MAX_REQUEST)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._api)
        app.router.add_get("/gateway/", self.gateway.handle)
        app.router.add_get("/gateway", self.gateway.handle)  # tolerate a URL without the slash
        app.router.add_get("/cdn/{kind}/{scope}/{id}/{filename}", self._cdn)
        app.router.add_get("/media/{kind}/{scope}/{id}/{filename}", self._cdn)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, 0).start()
        self._port = int(self._runner.addresses[0][1])
        self.world.base_url = self.base_url
        return self

    async def close(self) -> None:
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DiscordSandbox:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("the sandbox is not started")
        return f"http://{self.host}:{self._port}"

    @property
    def api_base(self) -> str:
        """Value for discord.http.Route.BASE / DISCORD_API_BASE."""
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        """Value for DiscordWebSocket.DEFAULT_GATEWAY / DISCORD_GATEWAY_URL."""
        return f"ws://{self.host}:{self._port}/gateway/"

    def patch_discord(self, monkeypatch: Any) -> None:
        """Point discord.py's REST base and default gateway at this sandbox (pytest monkeypatch)."""
        import discord.gateway
        import discord.http
        import yarl

        monkeypatch.setattr(discord.http.Route, "BASE", self.api_base)
        monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(self.gateway_url))

    # -- world ---------------------------------------------------------------------------

    @property
    def bot(self) -> User:
        return self.world.bot

    @property
    def application_id(self) -> int:
        return self.world.application_id

    def add_guild(
        self,
        name: str = "Sandbox Guild",
        *,
        premium_tier: int = 0,
        preferred_locale: str = "en-US",
        owner_id: int | None = None,
        features: tuple[str, ...] = (),
        shard: tuple[int, int] | None = None,
    ) -> Guild:
        """A guild the bot is in; `shard=(shard_id, shard_count)` picks an id on that shard."""
        return self.world.add_guild(
            name,
            premium_tier=premium_tier,
            preferred_locale=preferred_locale,
            owner_id=owner_id,
            features=features,
            shard=shard,
        )

    def add_user(self, name: str, *, locale: str = "en-US", premium_type: int = 0) -> User:
        return self.world.add_user(name, locale=locale, premium_type=premium_type)

    def dm_channel(self, user: User | Member) -> Channel:
        return self.world.dm_channel(user)

    def add_attachment(
        self,
        data: bytes,
        filename: str,
        content_type: str | None = None,
        *,
        width: int | None = None,
        height: int | None = None,
        duration_secs: float | None = None,
        description: str | None = None,
    ) -> Json:
        """Register bytes a user "uploads" (e.g. for an attachment option); returns the
        attachment payload whose url/proxy_url the sandbox CDN serves."""
        stored = self.world.add_file(
            data,
            filename,
            guess_type(filename, content_type),
            path_prefix=f"ephemeral-attachments/{self.application_id}",
            width=width,
            height=height,
            duration_secs=duration_secs,
            description=description,
        )
        return file_payload(stored, self.base_url)

    def message(self, message_id: int) -> StoredMessage:
        return self.world.messages[message_id]

    def channel(self, channel_id: int) -> Channel:
        return self.world.channels[channel_id]

    def read_attachment(self, attachment: Json | str) -> bytes:
        """Bytes behind an attachment payload or CDN url."""
        if isinstance(attachment, str):
            match = re.search(r"/(\d+)/[^/?]+(?:\?|$)", attachment)
            if match is None:
                raise LookupError(f"not a sandbox attachment url: {attachment}")
            return self.world.files[int(match[1])].data
        return self.world.file_from(attachment).data

    def advance(self, seconds: float) -> None:
        """Move the sandbox clock (ack window, token expiry, nonce window, signed URLs)."""
        self.world.clock.advance(seconds)
        self._notify()

    def synced_commands(self, guild: Guild | int | None = None) -> list[Json]:
        guild_id = guild.id if isinstance(guild, Guild) else guild
        return self.commands.in_scope(guild_id)

    # -- gateway state -------------------------------------------------------------------

    @property
    def identify_payload(self) -> Json | None:
        """The most recent IDENTIFY `d` the bot sent."""
        return self.gateway.identifies[-1] if self.gateway.identifies else None

    @property
    def connections(self) -> list[GatewayConnection]:
        return list(self.gateway.connections)

    async def wait_ready(self, timeout: float = 5.0) -> GatewaySession:
        """Resolves once a client identified and was sent READY plus every GUILD_CREATE."""
        return await self.wait_for(lambda: self.gateway.active_session, timeout, "a bot to identify")

    async def wait_session_for(self, guild: Guild | None, timeout: float = 5.0) -> GatewaySession:
        """The live session that receives `guild`'s events (None: DMs, shard 0), once it is ready."""
        guild_id = None if guild is None else guild.id
        what = "a bot session for DMs (shard 0)" if guild is None else f"a bot session owning guild {guild.name!r}"
        return await self.wait_for(lambda: self.gateway.session_for(guild_id), timeout, what)

    async def wait_shards(
        self, shard_count: int, shard_ids: Iterable[int] | None = None, timeout: float = 10.0
    ) -> dict[int, GatewaySession]:
        """Resolves once every shard in `shard_ids` (default: all of `shard_count`) is identified
        and ready on a live connection, from one process or several."""
        wanted = set(range(shard_count) if shard_ids is None else shard_ids)

        def ready() -> dict[int, GatewaySession] | None:
            live = self.gateway.live_shards(shard_count)
            return {i: live[i] for i in sorted(wanted)} if wanted <= set(live) else None

        return await self.wait_for(ready, timeout, f"shards {sorted(wanted)} of {shard_count} to be ready")

    @staticmethod
    def shard_of(guild: Guild | int, shard_count: int) -> int:
        """The shard that receives a guild's events: (guild_id >> 22) % shard_count."""
        return shard_for(guild if isinstance(guild, int) else guild.id, shard_count)

    async def wait_disconnected(self, timeout: float = 5.0) -> GatewayConnection:
        """Resolves once every gateway connection is closed; returns the last one."""
        await self.wait_for(
            lambda: bool(self.gateway.connections) and not self.gateway.open_connections(),
            timeout,
            "the bot to close its gateway connection",
        )
        return self.gateway.connections[-1]

    def request_reconnect(self, *, shard_id: int | None = None) -> None:
        self.gateway.request_reconnect(shard_id=shard_id)

    def invalidate_session(self, *, resumable: bool = False, shard_id: int | None = None) -> None:
        self.gateway.invalidate_sessions(resumable=resumable, shard_id=shard_id)

    async def drop_connections(self, code: int = 4000, *, shard_id: int | None = None) -> None:
        await self.gateway.drop_connections(code, shard_id=shard_id)

    # -- interactions left without an answer ---------------------------------------------

    def unanswered(self) -> list[str]:
        """Interactions a member would be left staring at: never acknowledged (Discord shows
        "This interaction failed" after 3 s), or deferred and then neither followed up nor
        edited ("thinking..." forever)."""
        out = []
        for record in self.interactions.by_id.values():
            what = describe_interaction(record)
            if record.ack_type is None:
                late = " (a late answer was refused)" if record.rejected else ""
                out.append(f"{what}: never acknowledged{late}")
            elif record.ack_type == DEFERRED_MESSAGE:
                original = record.original
                if (original is None or original.loading) and not record.followups:
                    out.append(f"{what}: deferred, then neither a follow-up nor an edit")
            elif record.ack_type == DEFERRED_UPDATE:
                source = record.source_message
                edited = source is not None and source.edit_count > record.source_edits_at_ack
                if not edited and not record.followups:
                    out.append(f"{what}: deferred (update), then neither a follow-up nor an edit")
        return out

    def allow_pending(self, reason: str) -> None:
        """This test deliberately leaves interactions unanswered (a crash between defer and reply)."""
        if not reason.strip():
            raise ValueError("say why the test leaves interactions unanswered")
        self.pending_allowed = reason

    async def wait_answered(self, timeout: float = 3.5) -> None:
        """Give interactions in flight up to `timeout` to be answered (no error if they are not)."""
        with contextlib.suppress(TimeoutError):
            await self.wait_for(lambda: not self.unanswered(), timeout, "every interaction to be answered")

    # -- fault injection and the call log ------------------------------------------------

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        *,
        code: int = 0,
        message: str | None = None,
        times: int = 1,
        retry_after: float | None = None,
        errors: Json | None = None,
    ) -> None:
        """Answer the next `times` requests matching (method or "*", regex searched in the path
        relative to /api/v10) with `status` and a Discord error body."""
        headers: dict[str, str] = {}
        if message is None:
            try:
                message = f"{status}: {HTTPStatus(status).phrase}"
            except ValueError:
                message = f"{status}: Error"
        body = error_body(code, message, errors)
        if status == 429:
            wait = 0.01 if retry_after is None else retry_after
            limited = _rate_limited(wait, "user", code, None if message.startswith("429") else message)
            body, headers = limited.body, limited.headers
        self._fail_rules.append(FailRule(method.upper(), re.compile(path_regex), status, body, headers, times))

    def pace_channel_posts(self, limit: int = 5, window: float = 5.0) -> None:
        """Take at most `limit` posts per `window` seconds in each channel, as Discord does
        (about 5 per 5 s); the rest are answered 429 with the wait until a post is free."""
        self._post_pace = (limit, window)

    def calls_to(self, method: str, path_regex: str) -> list[Call]:
        pattern = re.compile(path_regex)
        return [c for c in self.calls if c.method in (method.upper(), "*") and pattern.search(c.path)]

    async def wait_call(
        self,
        method: str,
        path_regex: str,
        *,
        where: Callable[[Call], bool] | None = None,
        timeout: float = 5.0,
    ) -> Call:
        """The first recorded call matching method/path (and `where`)."""

        def found() -> Call | None:
            return next((c for c in self.calls_to(method, path_regex) if where is None or where(c)), None)

        return await self.wait_for(found, timeout, f"a {method} call matching {path_regex!r}")

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float = 5.0, what: str | None = None) -> T:
        """Await until `predicate()` is truthy and return its value.

        Re-checked at once whenever the sandbox records something (call, message, gateway
        event, clock move), and every POLL_INTERVAL for conditions on the bot's own state
        (which changes after the sandbox has answered)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            changed = self._changed
            value = predicate()
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = ", ".join(repr(c) for c in self.calls[-8:]) or "none"
                waited = what or repr(predicate)
                raise TimeoutError(f"timed out after {timeout}s waiting for {waited}; last calls: {recent}")
            try:
                await asyncio.wait_for(changed.wait(), min(remaining, POLL_INTERVAL))
            except TimeoutError:
                continue

    def _notify(self) -> None:
        # Swap in a fresh event so each waiter sees every change after it last checked.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # -- test-side driving (see client.py) -------------------------------------------------

    async def invoke(
        self,
        guild: Guild | None,
        channel: Channel | None,
        member: Who,
        command: str,
        *,
        locale: str | None = None,
        options: Mapping[str, Any] | None = None,
        override_permissions: bool = False,
        **kwargs: Any,
    ) -> InteractionHandle:
        """Run a synced slash command ("group sub" paths allowed) with typed option values:
        str/int/float/bool, Member/User, Channel, Role, or an attachment payload.

        `guild=None, channel=None` invokes it in the member's DM with the bot. Options whose
        names clash with these keywords go in `options={...}`. Commands the member may not
        see (default_member_permissions) raise unless `override_permissions=True`."""
        return await client.invoke(
            self,
            guild,
            channel,
            member,
            command,
            locale=locale,
            options=options,
            override_permissions=override_permissions,
            **kwargs,
        )

    async def autocomplete(
        self,
        guild: Guild | None,
        channel: Channel | None,
        member: Who,
        command: str,
        *,
        focused: str,
        value: str,
        locale: str | None = None,
        timeout: float = 5.0,
        **kwargs: Any,
    ) -> list[Json]:
        """Type `value` into the autocomplete option `focused`; returns the bot's choices."""
        handle = await client.invoke(
            self,
            guild,
            channel,
            member,
            command,
            locale=locale,
            focused=focused,
            options={**kwargs, focused: value},
        )
        return await handle.wait_choices(timeout)

    async def click(
        self,
        message: StoredMessage,
        custom_id: str,
        member: Who,
        *,
        values: list[Any] | None = None,
        locale: str | None = None,
    ) -> InteractionHandle:
        return await client.click(self, message, custom_id, member, values=values, locale=locale)

    async def context_menu(
        self,
        guild: Guild | None,
        channel: Channel | None,
        member: Who,
        name: str,
        target: StoredMessage | Member | User,
        *,
        locale: str | None = None,
        override_permissions: bool = False,
    ) -> InteractionHandle:
        return await client.context_menu(
            self, guild, channel, member, name, target, locale=locale, override_permissions=override_permissions
        )

    async def submit_modal(
        self, handle: InteractionHandle, values: Mapping[str, Any], *, locale: str | None = None
    ) -> InteractionHandle:
        return await client.submit_modal(self, handle, values, locale=locale)

    # -- HTTP plumbing -------------------------------------------------------------------

    def _token_ok(self, token: str) -> bool:
        return self.token is None or token == self.token

    async def _api(self, request: web.Request) -> web.StreamResponse:
        at = self.world.clock.monotonic()  # when the call arrived: pacing and Call.at agree
        try:
            req = await self._parse(request)
        except ValueError:
            path = "/" + request.match_info["tail"].rstrip("/")
            req = ApiRequest(request.method, path, dict(request.query), None, [], dict(request.headers))
            reply, known, injected = (
                Reply(400, error_body(50109, "The request body contains invalid JSON.")),
                True,
                False,
            )
        else:
            violation = check_request(req.method, req.path, dict(req.query), req.json, has_files=bool(req.files))
            if violation is not None:
                self.violations.append(violation)
            reply, known, injected = self._answer(req, at, violation)
        call = Call(
            method=req.method,
            path=req.path,
            query=dict(req.query),
            json=req.json,
            files=req.files,
            status=reply.status,
            response=reply.body,
            injected=injected,
            at=at,
        )
        self.calls.append(call)
        if not known:
            self.unknown_routes.append(call)
        self._notify()
        return _to_response(reply)

    def _answer(self, req: ApiRequest, now: float, violation: Violation | None = None) -> tuple[Reply, bool, bool]:
        """(reply, route known, answered by fail_next)."""
        rule = next((r for r in self._fail_rules if r.matches(req)), None)
        if rule is not None:
            rule.times -= 1
            return Reply(rule.status, rule.body, dict(rule.headers)), True, True
        if violation is not None and violation.problems != ("no such route in Discord's API",):
            form = FormErrors()
            for problem in violation.problems:
                form.add(["_spec"], "SPEC_VIOLATION", problem)
            refused = form.rejection()
            assert refused is not None
            return Reply.reject(refused), True, False
        taken: deque[float] | None = None
        if self._post_pace is not None and req.method == "POST" and _CHANNEL_POST.match(req.path):
            limit, window = self._post_pace
            taken = self._posts.setdefault(req.path, deque())
            while taken and taken[0] <= now - window:
                taken.popleft()
            if len(taken) >= limit:
                return _rate_limited(taken[0] + window - now), True, True
        reply, known = self._route(req)
        if taken is not None and reply.status < 300:
            taken.append(now)
        return reply, known, False

    def _route(self, req: ApiRequest) -> tuple[Reply, bool]:
        """The reply, and whether the sandbox knows this route at all."""
        needs_bot_auth = not req.path.startswith(("/interactions/", "/webhooks/")) and req.path != "/gateway"
        if needs_bot_auth:
            auth = req.headers.get("Authorization", "")
            if not auth.startswith("Bot ") or not self._token_ok(auth[4:]):
                return Reply(401, error_body(0, "401: Unauthorized")), True
        path_matched = False
        for method, pattern, handler in self._routes:
            match = pattern.match(req.path)
            if match is None:
                continue
            path_matched = True
            if method == req.method:
                return handler(req, match), True
        if path_matched:
            return Reply(405, error_body(0, "405: Method Not Allowed")), False
        return Reply(404, error_body(0, "404: Not Found")), False

    async def _parse(self, request: web.Request) -> ApiRequest:
        path = "/" + request.match_info["tail"].rstrip("/")  # aiohttp already percent-decoded it
        payload: Any = None
        files: list[UploadedFile] = []
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    continue
                name = part.name or ""
                if name == "payload_json":
                    payload = json.loads(await part.text())
                elif part.filename is not None:
                    data = bytes(await part.read(decode=False))
                    content_type = part.headers.get("Content-Type")
                    files.append(UploadedFile(name, part.filename, content_type, data))
        else:
            raw = await request.read()
            if raw:
                payload = json.loads(raw)
        return ApiRequest(
            method=request.method,
            path=path,
            query=dict(request.query),
            json=payload,
            files=files,
            headers=dict(request.headers),
        )

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        try:
            file_id = int(request.match_info["id"])
        except ValueError:
            raise web.HTTPNotFound(text="This content is no longer available.") from None
        stored = self.world.files.get(file_id)
        status = 200
        if stored is None or request.match_info["filename"] != stored.filename:
            status = 404
        else:
            ex, _issued, hm = stored.signature()
            fresh = self.world.clock.now() < stored.expires_at
            if request.query.get("ex") != ex or request.query.get("hm") != hm or not fresh:
                status = 404
        self.cdn_fetches.append((file_id, status))
        self._notify()
        if stored is None or status != 200:
            return web.Response(status=404, text="This content is no longer available.")
        return web.Response(body=stored.data, content_type=stored.content_type or "application/octet-stream")

    def _callback(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        return self.interactions.callback(req, int(m["id"]), m["token"])

    def _followup(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        return self.interactions.followup(req, int(m["app"]), m["token"])

    def _wh_get(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        return self.interactions.get_message(req, int(m["app"]), m["token"], m["msg"])

    def _wh_edit(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        return self.interactions.edit_message(req, int(m["app"]), m["token"], m["msg"])

    def _wh_del(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        return self.interactions.delete_message(req, int(m["app"]), m["token"], m["msg"])


def _to_response(reply: Reply) -> web.Response:
    if reply.body is None:
        return web.Response(status=reply.status, headers=reply.headers)
    # Exactly "application/json": discord.py's json_or_text rejects "; charset=utf-8".
    body = json.dumps(reply.body, separators=(",", ":")).encode()
    return web.Response(status=reply.status, body=body, headers={**reply.headers, "Content-Type": "application/json"})
