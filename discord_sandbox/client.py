"""Test-side driving: build INTERACTION_CREATE payloads the way Discord's client would, from
the commands the bot actually synced, dispatch them over the gateway, and wait for outcomes.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .commands import (
    ATTACHMENT,
    BOOLEAN,
    CHANNEL,
    CHAT_INPUT,
    INTEGER,
    MENTIONABLE,
    MESSAGE_COMMAND,
    NUMBER,
    OPTION_TYPE_NAMES,
    ROLE,
    STRING,
    USER,
    USER_COMMAND,
    SandboxUsageError,
    check_scalar,
    locate,
)
from .interactions import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    AUTOCOMPLETE_RESULT,
    DEFERRED_MESSAGE,
    DEFERRED_UPDATE,
    MESSAGE,
    MESSAGE_COMPONENT,
    MODAL,
    MODAL_SUBMIT,
    UPDATE_MESSAGE,
    InteractionRecord,
)
from .model import (
    ADMINISTRATOR,
    FLAG_EPHEMERAL,
    USER_UPLOAD_LIMITS,
    Channel,
    Guild,
    Json,
    Member,
    Role,
    StoredFile,
    StoredMessage,
    User,
)
from .payloads import (
    bot_channel_permissions,
    channel_payload,
    file_payload,
    member_channel_permissions,
    member_payload,
    message_payload,
    role_payload,
    user_payload,
)

if TYPE_CHECKING:
    from .server import DiscordSandbox

SELECT_TYPES = {3, 5, 6, 7, 8}
Who = Member | User


class InteractionHandle:
    """One dispatched interaction; await its outcome instead of sleeping."""

    def __init__(self, sandbox: DiscordSandbox, record: InteractionRecord) -> None:
        self.sandbox = sandbox
        self.record = record

    def __repr__(self) -> str:
        return f"<InteractionHandle id={self.id} type={self.record.type} ack={self.record.ack_type}>"

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def token(self) -> str:
        return self.record.token

    @property
    def payload(self) -> Json:
        """The INTERACTION_CREATE body as dispatched."""
        return self.record.payload

    @property
    def response_type(self) -> int | None:
        return self.record.ack_type

    @property
    def response(self) -> Json | None:
        return self.record.ack_body

    @property
    def original(self) -> StoredMessage | None:
        return self.record.original

    @property
    def followups(self) -> list[StoredMessage]:
        return list(self.record.followups)

    @property
    def rejected(self) -> list[tuple[int, int]]:
        """(HTTP status, Discord code) of callbacks the sandbox refused."""
        return list(self.record.rejected)

    @property
    def is_ephemeral(self) -> bool:
        """Whether the visible reply is ephemeral (from the response flags or final message)."""
        record = self.record
        if record.ack_type in (MESSAGE, DEFERRED_MESSAGE) and record.ack_body is not None:
            return bool(int((record.ack_body.get("data") or {}).get("flags") or 0) & FLAG_EPHEMERAL)
        final = self._final()
        if final is None:
            raise SandboxUsageError("the interaction has no visible reply yet")
        return final.ephemeral

    async def wait_response(self, timeout: float = 5.0) -> Json:
        """The accepted callback body ({"type": ..., "data": ...})."""
        await self.sandbox.wait_for(lambda: self.record.ack_body is not None, timeout, f"a response to {self!r}")
        assert self.record.ack_body is not None
        return self.record.ack_body

    async def wait_rejected(self, timeout: float = 5.0) -> tuple[int, int]:
        """The first refused callback attempt as (status, code)."""
        await self.sandbox.wait_for(lambda: bool(self.record.rejected), timeout, f"a refused callback on {self!r}")
        return self.record.rejected[0]

    async def wait_followup(self, index: int = 0, timeout: float = 5.0) -> StoredMessage:
        await self.sandbox.wait_for(
            lambda: len(self.record.followups) > index, timeout, f"followup #{index} of {self!r}"
        )
        return self.record.followups[index]

    async def wait_final_message(self, timeout: float = 5.0) -> StoredMessage:
        """The reply a user finally sees: the message response, the edited original after a
        defer, the first followup, or the updated component message."""
        await self.sandbox.wait_for(lambda: self._final() is not None, timeout, f"the final reply of {self!r}")
        final = self._final()
        assert final is not None
        return final

    async def wait_choices(self, timeout: float = 5.0) -> list[Json]:
        await self.sandbox.wait_for(lambda: self.record.choices is not None, timeout, f"choices for {self!r}")
        assert self.record.choices is not None
        return self.record.choices

    async def wait_modal(self, timeout: float = 5.0) -> Json:
        await self.sandbox.wait_for(lambda: self.record.modal is not None, timeout, f"a modal from {self!r}")
        assert self.record.modal is not None
        return self.record.modal

    def _final(self) -> StoredMessage | None:
        record = self.record
        original = record.original
        if record.ack_type == MESSAGE:
            return original
        if record.ack_type == DEFERRED_MESSAGE:
            if original is not None and not original.loading:
                return original
            return record.followups[0] if record.followups else None
        if record.ack_type == UPDATE_MESSAGE:
            return original
        if record.ack_type == DEFERRED_UPDATE:
            if record.followups:
                return record.followups[0]
            if original is not None and original.edit_count > record.source_edits_at_ack:
                return original
            return None
        if record.ack_type in (AUTOCOMPLETE_RESULT, MODAL):
            raise SandboxUsageError(f"{self!r} was answered with type {record.ack_type}, which shows no message")
        return None


# -- building and dispatching interactions -----------------------------------------------


def _resolve_who(guild: Guild | None, who: Who) -> tuple[User, Member | None]:
    if guild is None:
        return (who.user if isinstance(who, Member) else who), None
    member = guild.members.get(who.id)
    if member is None:
        raise SandboxUsageError(f"{who!r} is not a member of guild {guild.name!r}")
    return member.user, member


def _base_payload(
    sandbox: DiscordSandbox,
    interaction_type: int,
    guild: Guild | None,
    channel: Channel | None,
    who: Who,
    data: Json,
    locale: str | None,
) -> tuple[InteractionRecord, Json]:
    world = sandbox.world
    user, member = _resolve_who(guild, who)
    if channel is None:
        if guild is not None:
            raise SandboxUsageError("a guild interaction needs a channel")
        channel = world.dm_channel(user)
    if guild is not None and channel.guild is not guild:
        raise SandboxUsageError(f"channel {channel.name!r} is not in guild {guild.name!r}")
    interaction_id = world.ids.next()
    token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)
    size_limit = max(channel.upload_limit, USER_UPLOAD_LIMITS.get(user.premium_type, USER_UPLOAD_LIMITS[0]))
    payload: Json = {
        "id": str(interaction_id),
        "application_id": str(world.application_id),
        "type": interaction_type,
        "data": data,
        "channel_id": str(channel.id),
        "token": token,
        "version": 1,
        "locale": locale or user.locale,
        "app_permissions": str(bot_channel_permissions(world, channel)),
        "entitlements": [],
        "entitlement_sku_ids": [],
        "attachment_size_limit": size_limit,
    }
    if guild is not None and member is not None:
        payload["guild_id"] = str(guild.id)
        payload["guild"] = {"id": str(guild.id), "locale": guild.preferred_locale, "features": list(guild.features)}
        payload["guild_locale"] = guild.preferred_locale
        permissions = member_channel_permissions(member, channel)
        payload["channel"] = {**channel_payload(channel), "permissions": str(permissions)}
        payload["member"] = member_payload(member, channel=channel)
        payload["authorizing_integration_owners"] = {"0": str(guild.id)}
        payload["context"] = 0
    else:
        payload["channel"] = channel_payload(channel)
        payload["user"] = user_payload(user)
        payload["authorizing_integration_owners"] = {"0": "0"}
        payload["context"] = 1
    record = InteractionRecord(
        id=interaction_id,
        token=token,
        type=interaction_type,
        payload=payload,
        channel=channel,
        user=user,
        member=member,
        created_at=world.clock.monotonic(),
        attachment_size_limit=size_limit,
    )
    return record, payload


def _dispatch(sandbox: DiscordSandbox, record: InteractionRecord) -> InteractionHandle:
    guild_id = record.channel.guild.id if record.channel.guild is not None else None
    # Discord sends an interaction to the shard of its guild (DMs: shard 0), to no other. The
    # frame is only queued here, so registering it next is still before the bot can answer.
    session = sandbox.gateway.dispatch_to_owner("INTERACTION_CREATE", record.payload, guild_id)
    sandbox.interactions.register(record)
    record.shard = session.shard
    record.session_id = session.session_id
    record.dispatched_at = sandbox.world.clock.monotonic()
    sandbox.world.changed()
    return InteractionHandle(sandbox, record)


def _check_visible(command: Json, guild: Guild | None, member: Member | None, override: bool) -> None:
    """Discord's client hides commands a member may not use; invoking one cannot happen."""
    contexts = command.get("contexts")
    context = 0 if guild is not None else 1
    if contexts is not None and context not in contexts:
        raise SandboxUsageError(f"{command['name']!r} is not available in context {context} (contexts={contexts})")
    if guild is None and command.get("dm_permission") is False:
        raise SandboxUsageError(f"{command['name']!r} is disabled in DMs")
    needed_raw = command.get("default_member_permissions")
    if needed_raw is None or member is None or override:
        return
    needed = int(needed_raw)
    have = member.effective_permissions()
    allowed = bool(have & ADMINISTRATOR) if needed == 0 else (have & needed) == needed
    if not allowed:
        raise SandboxUsageError(
            f"{member.name!r} lacks default_member_permissions={needed} for {command['name']!r}, so Discord "
            "hides the command; pass override_permissions=True to model an Integrations override"
        )


def _resolve_value(
    sandbox: DiscordSandbox,
    option: Json,
    value: Any,
    guild: Guild | None,
    channel: Channel,
    resolved: dict[str, dict[str, Json]],
) -> Any:
    kind = option["type"]
    name = option["name"]
    if kind in (STRING, INTEGER, NUMBER, BOOLEAN):
        return check_scalar(option, value)
    if kind in (USER, MENTIONABLE) and isinstance(value, Member | User):
        user = value.user if isinstance(value, Member) else value
        resolved.setdefault("users", {})[str(user.id)] = user_payload(user)
        member = guild.members.get(user.id) if guild is not None else None
        if member is not None:
            resolved.setdefault("members", {})[str(user.id)] = member_payload(member, with_user=False, channel=channel)
        return str(user.id)
    if kind in (ROLE, MENTIONABLE) and isinstance(value, Role):
        resolved.setdefault("roles", {})[str(value.id)] = role_payload(value)
        return str(value.id)
    if kind == CHANNEL and isinstance(value, Channel):
        allowed_types = option.get("channel_types")
        if allowed_types and value.type not in allowed_types:
            raise SandboxUsageError(f"option {name!r} accepts channel types {allowed_types}, not {value.type}")
        entry = channel_payload(value)
        if guild is not None and value.guild is not None:
            viewer = next(iter(m for m in guild.members.values() if m.user is not sandbox.world.bot), None)
            if viewer is not None:
                entry["permissions"] = str(member_channel_permissions(viewer, value))
        entry.setdefault("permissions", "0")
        resolved.setdefault("channels", {})[str(value.id)] = entry
        return str(value.id)
    if kind == ATTACHMENT and isinstance(value, dict | StoredFile):
        stored = sandbox.world.file_from(value)
        # Files picked for an attachment option are uploaded as ephemeral attachments.
        entry = {**file_payload(stored, sandbox.world.base_url), "ephemeral": True}
        resolved.setdefault("attachments", {})[str(stored.id)] = entry
        return str(stored.id)
    raise SandboxUsageError(f"option {name!r} is a {OPTION_TYPE_NAMES.get(kind, kind)} option; got {value!r}")


def _build_options(
    sandbox: DiscordSandbox,
    definitions: list[Json],
    values: Mapping[str, Any],
    guild: Guild | None,
    channel: Channel,
    *,
    focused: str | None = None,
) -> tuple[list[Json], dict[str, dict[str, Json]]]:
    by_name = {o["name"]: o for o in definitions}
    for name in values:
        if name not in by_name:
            raise SandboxUsageError(f"unknown option {name!r}; the synced options are {sorted(by_name)}")
    if focused is None:
        missing = [o["name"] for o in definitions if o.get("required") and o["name"] not in values]
        if missing:
            raise SandboxUsageError(f"required options missing: {missing}")
    resolved: dict[str, dict[str, Json]] = {}
    out: list[Json] = []
    for option in definitions:
        name = option["name"]
        if name not in values:
            continue
        if name == focused:
            if not option.get("autocomplete"):
                raise SandboxUsageError(f"option {name!r} was not synced with autocomplete")
            out.append({"name": name, "type": option["type"], "value": str(values[name]), "focused": True})
            continue
        value = _resolve_value(sandbox, option, values[name], guild, channel, resolved)
        out.append({"name": name, "type": option["type"], "value": value})
    return out, resolved


async def invoke(
    sandbox: DiscordSandbox,
    guild: Guild | None,
    channel: Channel | None,
    member: Who,
    command: str,
    *,
    locale: str | None = None,
    options: Mapping[str, Any] | None = None,
    override_permissions: bool = False,
    focused: str | None = None,
    **kwargs: Any,
) -> InteractionHandle:
    await sandbox.wait_session_for(guild)
    root, *subpath = command.split()
    definition = sandbox.commands.find(guild.id if guild else None, root, CHAT_INPUT)
    _, resolved_member = _resolve_who(guild, member)
    _check_visible(definition, guild, resolved_member, override_permissions)
    leaf, wrap = locate(definition, subpath)
    values = {**(options or {}), **kwargs}
    if focused is not None and focused not in values:
        raise SandboxUsageError(f"the focused option {focused!r} needs a value")
    if channel is None and guild is not None:
        raise SandboxUsageError("a guild interaction needs a channel")
    target_channel = channel if channel is not None else sandbox.world.dm_channel(member)
    built, resolved = _build_options(sandbox, leaf, values, guild, target_channel, focused=focused)
    data: Json = {"id": definition["id"], "name": root, "type": CHAT_INPUT, "options": wrap(built)}
    if resolved:
        data["resolved"] = resolved
    if "guild_id" in definition:
        data["guild_id"] = definition["guild_id"]
    kind = AUTOCOMPLETE if focused is not None else APPLICATION_COMMAND
    record, _ = _base_payload(sandbox, kind, guild, channel, member, data, locale)
    record.command_name = command
    record.command_type = CHAT_INPUT
    return _dispatch(sandbox, record)


async def context_menu(
    sandbox: DiscordSandbox,
    guild: Guild | None,
    channel: Channel | None,
    member: Who,
    name: str,
    target: StoredMessage | Member | User,
    *,
    locale: str | None = None,
    override_permissions: bool = False,
) -> InteractionHandle:
    await sandbox.wait_session_for(guild)
    command_type = MESSAGE_COMMAND if isinstance(target, StoredMessage) else USER_COMMAND
    definition = sandbox.commands.find(guild.id if guild else None, name, command_type)
    _, resolved_member = _resolve_who(guild, member)
    _check_visible(definition, guild, resolved_member, override_permissions)
    data: Json = {"id": definition["id"], "name": name, "type": command_type}
    if isinstance(target, StoredMessage):
        if target.deleted:
            raise SandboxUsageError("cannot run a message command on a deleted message")
        message = message_payload(target, sandbox.world)
        if target.guild_id is not None:
            message["guild_id"] = str(target.guild_id)
        data["target_id"] = str(target.id)
        data["resolved"] = {"messages": {str(target.id): message}}
    else:
        user = target.user if isinstance(target, Member) else target
        data["target_id"] = str(user.id)
        resolved: Json = {"users": {str(user.id): user_payload(user)}}
        target_member = guild.members.get(user.id) if guild is not None else None
        if target_member is not None and channel is not None:
            resolved["members"] = {str(user.id): member_payload(target_member, with_user=False, channel=channel)}
        data["resolved"] = resolved
    if "guild_id" in definition:
        data["guild_id"] = definition["guild_id"]
    record, _ = _base_payload(sandbox, APPLICATION_COMMAND, guild, channel, member, data, locale)
    record.command_name = name
    record.command_type = command_type
    return _dispatch(sandbox, record)


async def click(
    sandbox: DiscordSandbox,
    message: StoredMessage,
    custom_id: str,
    member: Who,
    *,
    values: list[Any] | None = None,
    locale: str | None = None,
) -> InteractionHandle:
    """Press a button (or pick `values` in a select) on a message the bot posted."""
    await sandbox.wait_session_for(message.channel.guild)
    if message.deleted:
        raise SandboxUsageError("cannot click a component on a deleted message")
    component = next((c for c in message.iter_components() if c.get("custom_id") == custom_id), None)
    if component is None:
        raise SandboxUsageError(f"message {message.id} has no component {custom_id!r}; it has {message.custom_ids()}")
    if component.get("disabled"):
        raise SandboxUsageError(f"component {custom_id!r} is disabled; Discord does not let users press it")
    component_type = int(component["type"])
    data: Json = {"custom_id": custom_id, "component_type": component_type}
    guild = message.channel.guild
    if component_type in SELECT_TYPES:
        if values is None:
            raise SandboxUsageError(f"{custom_id!r} is a select menu; pass values=[...]")
        data["values"], resolved = _select_values(sandbox, component, values, guild, message.channel)
        if resolved:
            data["resolved"] = resolved
    elif values is not None:
        raise SandboxUsageError(f"{custom_id!r} is not a select menu")
    record, payload = _base_payload(sandbox, MESSAGE_COMPONENT, guild, message.channel, member, data, locale)
    message_json = message_payload(message, sandbox.world)
    payload["message"] = message_json
    record.source_message = message
    return _dispatch(sandbox, record)


def _select_values(
    sandbox: DiscordSandbox,
    component: Json,
    values: list[Any],
    guild: Guild | None,
    channel: Channel,
) -> tuple[list[str], dict[str, dict[str, Json]]]:
    low, high = int(component.get("min_values", 1)), int(component.get("max_values", 1))
    if not low <= len(values) <= high:
        raise SandboxUsageError(f"select {component['custom_id']!r} takes {low}..{high} values, got {len(values)}")
    if component["type"] == 3:
        allowed = [o["value"] for o in component.get("options") or []]
        bad = [v for v in values if v not in allowed]
        if bad:
            raise SandboxUsageError(f"values {bad} are not options of {component['custom_id']!r}: {allowed}")
        return [str(v) for v in values], {}
    kind = {5: USER, 6: ROLE, 7: MENTIONABLE, 8: CHANNEL}[int(component["type"])]
    resolved: dict[str, dict[str, Json]] = {}
    option = {"name": component["custom_id"], "type": kind}
    ids = [str(_resolve_value(sandbox, option, v, guild, channel, resolved)) for v in values]
    return ids, resolved


async def submit_modal(
    sandbox: DiscordSandbox,
    handle: InteractionHandle,
    values: Mapping[str, Any],
    *,
    locale: str | None = None,
) -> InteractionHandle:
    """Fill in and submit the modal the bot answered `handle` with (callback type 9)."""
    modal = handle.record.modal
    if modal is None:
        raise SandboxUsageError(f"{handle!r} did not open a modal")
    unused = set(values)
    submitted: list[Json] = []
    for top in modal.get("components") or []:
        if top.get("type") == 1:
            row = [_submit_field(c, values, unused) for c in top.get("components") or []]
            submitted.append({"type": 1, "components": row})
        elif top.get("type") == 18:
            submitted.append({"type": 18, "component": _submit_field(top["component"], values, unused)})
    if unused:
        raise SandboxUsageError(f"the modal has no inputs {sorted(unused)}")
    data: Json = {"custom_id": modal["custom_id"], "components": submitted}
    original = handle.record
    guild = original.channel.guild
    who: Who = original.member if original.member is not None else original.user
    record, payload = _base_payload(sandbox, MODAL_SUBMIT, guild, original.channel, who, data, locale)
    if original.source_message is not None:
        payload["message"] = message_payload(original.source_message, sandbox.world)
        record.source_message = original.source_message
    return _dispatch(sandbox, record)


def _submit_field(component: Json, values: Mapping[str, Any], unused: set[str]) -> Json:
    custom_id = component.get("custom_id")
    value = values.get(custom_id, "") if custom_id else ""
    unused.discard(str(custom_id))
    if component.get("type") == 4:
        text = str(value)
        if component.get("required", True) and not text:
            raise SandboxUsageError(f"modal input {custom_id!r} is required")
        low, high = component.get("min_length"), component.get("max_length")
        if text and ((low is not None and len(text) < low) or (high is not None and len(text) > high)):
            raise SandboxUsageError(f"modal input {custom_id!r}: length {len(text)} outside [{low}, {high}]")
        return {"type": 4, "custom_id": custom_id, "value": text}
    picked = value if isinstance(value, list) else [value]
    return {"type": component.get("type"), "custom_id": custom_id, "values": [str(v) for v in picked]}
