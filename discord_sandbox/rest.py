"""Bot-token REST routes: users, application info, gateway, commands, channels, guilds."""

from __future__ import annotations

import re
from collections.abc import Callable

from .commands import CommandStore
from .messages import apply_edit, delete_message, new_message, precheck, store_uploads
from .model import DM, MANAGE_MESSAGES, Channel, Guild, Json, StoredMessage, World
from .payloads import (
    application_payload,
    bot_self_payload,
    channel_payload,
    guild_payload,
    member_payload,
    message_payload,
    role_payload,
    user_payload,
)
from .rules import FormErrors, Rejection, rejection
from .wire import ApiRequest, Reply

Handler = Callable[[ApiRequest, re.Match[str]], Reply]
Route = tuple[str, re.Pattern[str], Handler]

NONCE_WINDOW = 5 * 60.0  # Discord dedupes enforce_nonce sends "for a few minutes"


def route(method: str, pattern: str, handler: Handler) -> Route:
    return (method, re.compile(f"^{pattern}$"), handler)


class BotApi:
    def __init__(
        self,
        world: World,
        commands: CommandStore,
        gateway_url: Callable[[], str],
        bot_gateway: Callable[[], Json],
    ) -> None:
        self.world = world
        self.commands = commands
        self.gateway_url = gateway_url
        self.bot_gateway = bot_gateway

    def routes(self) -> list[Route]:
        app = r"/applications/(?P<app>\d+)"
        guild_cmds = app + r"/guilds/(?P<guild>\d+)/commands"
        msg = r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)"
        return [
            route("GET", r"/users/@me", lambda r, m: Reply.ok(bot_self_payload(self.world))),
            route("GET", r"/users/@me/guilds", self.my_guilds),
            route("POST", r"/users/@me/channels", self.create_dm),
            route("GET", r"/users/(?P<user>\d+)", self.get_user),
            route("GET", r"/oauth2/applications/@me", lambda r, m: Reply.ok(application_payload(self.world))),
            route("GET", r"/applications/@me", lambda r, m: Reply.ok(application_payload(self.world))),
            route("GET", r"/gateway", lambda r, m: Reply.ok({"url": self.gateway_url()})),
            route("GET", r"/gateway/bot", self.gateway_bot),
            route("GET", app + r"/commands", self.list_commands),
            route("PUT", app + r"/commands", self.bulk_commands),
            route("POST", app + r"/commands", self.upsert_command),
            route("GET", app + r"/commands/(?P<command>\d+)", self.get_command),
            route("PATCH", app + r"/commands/(?P<command>\d+)", self.edit_command),
            route("DELETE", app + r"/commands/(?P<command>\d+)", self.delete_command),
            route("GET", guild_cmds + r"/permissions", self.command_permissions),
            route("GET", guild_cmds, self.list_commands),
            route("PUT", guild_cmds, self.bulk_commands),
            route("POST", guild_cmds, self.upsert_command),
            route("GET", guild_cmds + r"/(?P<command>\d+)", self.get_command),
            route("PATCH", guild_cmds + r"/(?P<command>\d+)", self.edit_command),
            route("DELETE", guild_cmds + r"/(?P<command>\d+)", self.delete_command),
            route("GET", r"/channels/(?P<channel>\d+)", self.get_channel),
            route("GET", r"/channels/(?P<channel>\d+)/messages", self.list_messages),
            route("POST", r"/channels/(?P<channel>\d+)/messages", self.create_message),
            route("POST", r"/channels/(?P<channel>\d+)/typing", self.typing),
            route("GET", msg, self.get_message),
            route("PATCH", msg, self.edit_message),
            route("DELETE", msg, self.delete_message),
            route("PUT", msg + r"/reactions/(?P<emoji>[^/]+)/@me", self.react),
            route("DELETE", msg + r"/reactions/(?P<emoji>[^/]+)/@me", self.react),
            route("GET", r"/guilds/(?P<guild>\d+)", self.get_guild),
            route("GET", r"/guilds/(?P<guild>\d+)/channels", self.guild_channels),
            route("GET", r"/guilds/(?P<guild>\d+)/roles", self.guild_roles),
            route("GET", r"/guilds/(?P<guild>\d+)/members", self.guild_members),
            route("GET", r"/guilds/(?P<guild>\d+)/members/(?P<user>\d+)", self.guild_member),
        ]

    # -- users, gateway -----------------------------------------------------------------

    def my_guilds(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        return Reply.ok(
            [
                {
                    "id": str(g.id),
                    "name": g.name,
                    "icon": None,
                    "banner": None,
                    "owner": False,
                    "permissions": str(g.bot_member.effective_permissions()),
                    "features": list(g.features),
                }
                for g in self.world.guilds.values()
            ]
        )

    def get_user(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        user = self.world.users.get(int(m["user"]))
        if user is None:
            return Reply.reject(rejection(404, 10013, "Unknown User"))
        return Reply.ok(user_payload(user))

    def create_dm(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        user = self.world.users.get(int(req.body.get("recipient_id") or 0))
        if user is None:
            return Reply.reject(rejection(404, 10013, "Unknown User"))
        return Reply.ok(channel_payload(self.world.dm_channel(user)))

    def gateway_bot(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        return Reply.ok(self.bot_gateway())

    # -- application commands -----------------------------------------------------------

    def _scope(self, m: re.Match[str]) -> int | Rejection | None:
        if int(m["app"]) != self.world.application_id:
            return rejection(404, 10002, "Unknown Application")
        guild = m.groupdict().get("guild")
        if guild is None:
            return None
        if int(guild) not in self.world.guilds:
            return rejection(403, 50001, "Missing Access")
        return int(guild)

    def list_commands(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        scope = self._scope(m)
        if isinstance(scope, Rejection):
            return Reply.reject(scope)
        return Reply.ok(self.commands.in_scope(scope))

    def bulk_commands(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        scope = self._scope(m)
        if isinstance(scope, Rejection):
            return Reply.reject(scope)
        if not isinstance(req.json, list):
            return Reply.reject(rejection(400, 50035, "Invalid Form Body"))
        result = self.commands.bulk_overwrite(scope, req.json)
        if isinstance(result, Rejection):
            return Reply.reject(result)
        self.world.changed()
        return Reply.ok(result)

    def upsert_command(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        scope = self._scope(m)
        if isinstance(scope, Rejection):
            return Reply.reject(scope)
        result = self.commands.upsert(scope, req.body)
        if isinstance(result, Rejection):
            return Reply.reject(result)
        command, created = result
        self.world.changed()
        return Reply.ok(command, status=201 if created else 200)

    def get_command(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        scope = self._scope(m)
        if isinstance(scope, Rejection):
            return Reply.reject(scope)
        command = self.commands.get(scope, int(m["command"]))
        if command is None:
            return Reply.reject(rejection(404, 10063, "Unknown application command"))
        return Reply.ok(command)

    def edit_command(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        scope = self._scope(m)
        if isinstance(scope, Rejection):
            return Reply.reject(scope)
        command = self.commands.edit(scope, int(m["command"]), req.body)
        if command is None:
            return Reply.reject(rejection(404, 10063, "Unknown application command"))
        return Reply.ok(command)

    def delete_command(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        scope = self._scope(m)
        if isinstance(scope, Rejection):
            return Reply.reject(scope)
        if not self.commands.delete(scope, int(m["command"])):
            return Reply.reject(rejection(404, 10063, "Unknown application command"))
        return Reply.no_content()

    def command_permissions(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        scope = self._scope(m)
        if isinstance(scope, Rejection):
            return Reply.reject(scope)
        return Reply.ok([])

    # -- channels and messages ----------------------------------------------------------

    def _channel(self, m: re.Match[str]) -> Channel | Rejection:
        channel = self.world.channels.get(int(m["channel"]))
        if channel is None:
            return rejection(404, 10003, "Unknown Channel")
        return channel

    def _message(self, m: re.Match[str]) -> tuple[Channel, StoredMessage] | Rejection:
        channel = self._channel(m)
        if isinstance(channel, Rejection):
            return channel
        message = self.world.messages.get(int(m["message"]))
        if message is None or message.channel is not channel or message.deleted or message.ephemeral:
            return rejection(404, 10008, "Unknown Message")
        return channel, message

    def get_channel(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        channel = self._channel(m)
        if isinstance(channel, Rejection):
            return Reply.reject(channel)
        return Reply.ok(channel_payload(channel))

    def list_messages(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        channel = self._channel(m)
        if isinstance(channel, Rejection):
            return Reply.reject(channel)
        limit = max(1, min(100, int(req.query.get("limit", "50"))))
        messages = channel.visible_messages
        if "before" in req.query:
            messages = [x for x in messages if x.id < int(req.query["before"])]
        if "after" in req.query:
            messages = [x for x in messages if x.id > int(req.query["after"])][:limit]
        newest_first = list(reversed(messages))[:limit]
        return Reply.ok([message_payload(x, self.world) for x in newest_first])

    def create_message(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        channel = self._channel(m)
        if isinstance(channel, Rejection):
            return Reply.reject(channel)
        body = req.body
        refusal = self._posting_refusal(channel)
        problem = precheck(body, req.files, channel.upload_limit, creating=True)
        if problem is not None and problem.status == 413:
            return Reply.reject(problem)
        if refusal is not None:
            return Reply.reject(refusal)
        if problem is not None:
            return Reply.reject(problem)
        nonce = body.get("nonce")
        now = self.world.clock.monotonic()
        if nonce is not None and body.get("enforce_nonce"):
            earlier = channel.nonces.get(str(nonce))
            if earlier is not None and now - earlier[1] <= NONCE_WINDOW and not earlier[0].deleted:
                return Reply.ok(message_payload(earlier[0], self.world))
        reference = body.get("message_reference")
        if reference and reference.get("message_id") is not None:
            target = self.world.messages.get(int(reference["message_id"]))
            if (target is None or target.deleted) and reference.get("fail_if_not_exists", True):
                form = FormErrors()
                form.add(["message_reference"], "REPLIES_UNKNOWN_MESSAGE", "Unknown message")
                return Reply.reject(form.rejection() or rejection(400, 50035, "Invalid Form Body"))
        files = store_uploads(self.world, body, req.files, path_prefix=f"attachments/{channel.id}")
        if isinstance(files, Rejection):
            return Reply.reject(files)
        message = new_message(self.world, channel, self.world.bot, body, files, type=19 if reference else 0)
        self.world.store_message(message)
        if nonce is not None and body.get("enforce_nonce"):
            channel.nonces[str(nonce)] = (message, now)
        return Reply.ok(message_payload(message, self.world))

    def _posting_refusal(self, channel: Channel) -> Rejection | None:
        if channel.type == DM:
            if channel.recipients and channel.recipients[0].dms_closed:
                return rejection(403, 50007, "Cannot send messages to this user")
            return None
        if channel.bot_missing_permissions:
            return rejection(403, 50013, "Missing Permissions")
        return None

    def typing(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        channel = self._channel(m)
        if isinstance(channel, Rejection):
            return Reply.reject(channel)
        refusal = self._posting_refusal(channel)
        return Reply.reject(refusal) if refusal is not None else Reply.no_content()

    def get_message(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        found = self._message(m)
        if isinstance(found, Rejection):
            return Reply.reject(found)
        return Reply.ok(message_payload(found[1], self.world))

    def edit_message(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        found = self._message(m)
        if isinstance(found, Rejection):
            return Reply.reject(found)
        channel, message = found
        if message.author is not self.world.bot:
            return Reply.reject(rejection(403, 50005, "Cannot edit a message authored by another user"))
        body = req.body
        problem = precheck(body, req.files, channel.upload_limit, creating=False)
        if problem is not None:
            return Reply.reject(problem)
        files = None
        if req.files or "attachments" in body:
            stored = store_uploads(
                self.world, body, req.files, path_prefix=f"attachments/{channel.id}", keep=message.attachments
            )
            if isinstance(stored, Rejection):
                return Reply.reject(stored)
            files = stored
        apply_edit(self.world, message, body, files)
        return Reply.ok(message_payload(message, self.world))

    def delete_message(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        found = self._message(m)
        if isinstance(found, Rejection):
            return Reply.reject(found)
        channel, message = found
        if message.author is not self.world.bot and channel.guild is not None:
            bot_bits = channel.guild.bot_member.effective_permissions()
            if not bot_bits & MANAGE_MESSAGES or channel.bot_missing_permissions:
                return Reply.reject(rejection(403, 50013, "Missing Permissions"))
        delete_message(self.world, message)
        return Reply.no_content()

    def react(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        found = self._message(m)
        return Reply.reject(found) if isinstance(found, Rejection) else Reply.no_content()

    # -- guilds -------------------------------------------------------------------------

    def _guild(self, m: re.Match[str]) -> Guild | Rejection:
        guild = self.world.guilds.get(int(m["guild"]))
        if guild is None:
            return rejection(404, 10004, "Unknown Guild")
        return guild

    def get_guild(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        guild = self._guild(m)
        if isinstance(guild, Rejection):
            return Reply.reject(guild)
        return Reply.ok(guild_payload(guild, with_counts=req.flag("with_counts")))

    def guild_channels(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        guild = self._guild(m)
        if isinstance(guild, Rejection):
            return Reply.reject(guild)
        return Reply.ok([channel_payload(c) for c in guild.channels.values()])

    def guild_roles(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        guild = self._guild(m)
        if isinstance(guild, Rejection):
            return Reply.reject(guild)
        return Reply.ok([role_payload(r) for r in guild.roles.values()])

    def guild_members(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        guild = self._guild(m)
        if isinstance(guild, Rejection):
            return Reply.reject(guild)
        after = int(req.query.get("after", "0"))
        limit = max(1, min(1000, int(req.query.get("limit", "1"))))
        members = sorted((x for x in guild.members.values() if x.id > after), key=lambda x: x.id)[:limit]
        return Reply.ok([member_payload(x) for x in members])

    def guild_member(self, req: ApiRequest, m: re.Match[str]) -> Reply:
        guild = self._guild(m)
        if isinstance(guild, Rejection):
            return Reply.reject(guild)
        member = guild.members.get(int(m["user"]))
        if member is None:
            return Reply.reject(rejection(404, 10007, "Unknown Member"))
        return Reply.ok(member_payload(member))
