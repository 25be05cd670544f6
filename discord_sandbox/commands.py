"""Application command store (what the bot synced) and lookup of commands by path."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .model import Json, World
from .rules import FormErrors, Rejection

CHAT_INPUT = 1
USER_COMMAND = 2
MESSAGE_COMMAND = 3

SUB_COMMAND = 1
SUB_COMMAND_GROUP = 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = 3, 4, 5, 6, 7, 8, 9, 10, 11
OPTION_TYPE_NAMES = {
    SUB_COMMAND: "subcommand",
    SUB_COMMAND_GROUP: "subcommand group",
    STRING: "string",
    INTEGER: "integer",
    BOOLEAN: "boolean",
    USER: "user",
    CHANNEL: "channel",
    ROLE: "role",
    MENTIONABLE: "mentionable",
    NUMBER: "number",
    ATTACHMENT: "attachment",
}

_NAME = re.compile(r"^[-_'\w]{1,32}$")


class SandboxUsageError(AssertionError):
    """A test drove the sandbox in a way real Discord's client could not (loud on purpose)."""


class CommandStore:
    """Synced command definitions per scope (None = global, else a guild id)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.scopes: dict[int | None, dict[int, Json]] = {}
        self.sync_count = 0

    def in_scope(self, guild_id: int | None) -> list[Json]:
        return list(self.scopes.get(guild_id, {}).values())

    def get(self, guild_id: int | None, command_id: int) -> Json | None:
        return self.scopes.get(guild_id, {}).get(command_id)

    def bulk_overwrite(self, guild_id: int | None, definitions: list[Json]) -> list[Json] | Rejection:
        form = FormErrors()
        seen: set[tuple[str, int]] = set()
        for index, definition in enumerate(definitions):
            _validate_command(definition, [index], form)
            key = (str(definition.get("name")), int(definition.get("type", CHAT_INPUT)))
            if key in seen:
                form.add([index, "name"], "APPLICATION_COMMANDS_DUPLICATE_NAME", "Duplicate name")
            seen.add(key)
        if (problem := form.rejection()) is not None:
            return problem
        old = {(c["name"], c["type"]): int(c["id"]) for c in self.in_scope(guild_id)}
        scope: dict[int, Json] = {}
        for definition in definitions:
            key = (definition["name"], int(definition.get("type", CHAT_INPUT)))
            command_id = old.get(key) or self.world.ids.next()
            scope[command_id] = self._normalize(definition, guild_id, command_id)
        self.scopes[guild_id] = scope
        self.sync_count += 1
        return list(scope.values())

    def upsert(self, guild_id: int | None, definition: Json) -> tuple[Json, bool] | Rejection:
        form = FormErrors()
        _validate_command(definition, [], form)
        if (problem := form.rejection()) is not None:
            return problem
        scope = self.scopes.setdefault(guild_id, {})
        key = (definition["name"], int(definition.get("type", CHAT_INPUT)))
        for command_id, existing in scope.items():
            if (existing["name"], existing["type"]) == key:
                scope[command_id] = self._normalize(definition, guild_id, command_id)
                return scope[command_id], False
        command_id = self.world.ids.next()
        scope[command_id] = self._normalize(definition, guild_id, command_id)
        return scope[command_id], True

    def edit(self, guild_id: int | None, command_id: int, patch: Json) -> Json | None:
        existing = self.get(guild_id, command_id)
        if existing is None:
            return None
        merged = {**existing, **patch}
        self.scopes[guild_id][command_id] = self._normalize(merged, guild_id, command_id)
        return self.scopes[guild_id][command_id]

    def delete(self, guild_id: int | None, command_id: int) -> bool:
        return self.scopes.get(guild_id, {}).pop(command_id, None) is not None

    def find(self, guild_id: int | None, name: str, command_type: int) -> Json:
        """The command a user in `guild_id` sees under `name` (guild commands shadow global)."""
        scopes = [guild_id, None] if guild_id is not None else [None]
        for scope in scopes:
            for command in self.scopes.get(scope, {}).values():
                if command["name"] == name and command["type"] == command_type:
                    return command
        known = sorted(
            f"{c['name']} (type {c['type']}, {'global' if s is None else f'guild {s}'})"
            for s in scopes
            for c in self.scopes.get(s, {}).values()
        )
        raise SandboxUsageError(
            f"command {name!r} (type {command_type}) was not synced for "
            f"{'global' if guild_id is None else f'guild {guild_id}'}; synced: {known or 'nothing'}"
        )

    def _normalize(self, definition: Json, guild_id: int | None, command_id: int) -> Json:
        command_type = int(definition.get("type", CHAT_INPUT))
        out: Json = {
            "id": str(command_id),
            "application_id": str(self.world.application_id),
            "version": str(self.world.ids.next()),
            "type": command_type,
            "name": definition["name"],
            "description": definition.get("description", "") if command_type == CHAT_INPUT else "",
            "default_member_permissions": definition.get("default_member_permissions"),
            "nsfw": bool(definition.get("nsfw", False)),
            "name_localizations": definition.get("name_localizations"),
            "description_localizations": definition.get("description_localizations"),
            "contexts": definition.get("contexts"),
            "integration_types": definition.get("integration_types", [0]),
        }
        if guild_id is not None:
            out["guild_id"] = str(guild_id)
        else:
            out["dm_permission"] = definition.get("dm_permission", True)
        if command_type == CHAT_INPUT:
            out["options"] = [_normalize_option(o) for o in definition.get("options") or []]
        return out


def _normalize_option(option: Json) -> Json:
    out = dict(option)
    if option["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP):
        out["options"] = [_normalize_option(o) for o in option.get("options") or []]
    else:
        out["required"] = bool(option.get("required", False))
    return out


def _validate_command(definition: Json, path: list[str | int], form: FormErrors) -> None:
    command_type = int(definition.get("type", CHAT_INPUT))
    name = definition.get("name")
    if command_type == CHAT_INPUT:
        valid = isinstance(name, str) and bool(_NAME.match(name)) and name.lower() == name
    else:  # context menu names may contain spaces and capitals
        valid = isinstance(name, str) and 1 <= len(name) <= 32
    if not valid:
        form.add([*path, "name"], "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
    if command_type == CHAT_INPUT:
        description = definition.get("description")
        if not isinstance(description, str) or not 1 <= len(description) <= 100:
            form.add([*path, "description"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        _validate_options(definition.get("options") or [], [*path, "options"], form)


def _validate_options(options: list[Json], path: list[str | int], form: FormErrors) -> None:
    if len(options) > 25:
        form.too_long(path, 25)
    optional_seen = False
    for index, option in enumerate(options):
        if option.get("type") in (SUB_COMMAND, SUB_COMMAND_GROUP):
            _validate_options(option.get("options") or [], [*path, index, "options"], form)
            continue
        if option.get("required"):
            if optional_seen:
                form.add(
                    [*path, index, "required"],
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                    "Required options must be placed before non-required options",
                )
        else:
            optional_seen = True
        if len(option.get("choices") or []) > 25:
            form.too_long([*path, index, "choices"], 25)
        if option.get("autocomplete") and option.get("choices"):
            form.add(
                [*path, index, "autocomplete"],
                "APPLICATION_COMMAND_OPTION_CHOICES_AUTOCOMPLETE",
                "Autocomplete and choices are mutually exclusive",
            )


def locate(command: Json, subpath: list[str]) -> tuple[list[Json], Callable[[list[Json]], list[Json]]]:
    """Walk subcommand groups/subcommands; return the leaf option definitions and a wrapper
    that nests leaf option values the way Discord sends them."""
    options: list[Json] = command.get("options") or []
    wrappers: list[tuple[int, str]] = []
    for token in subpath:
        match = next(
            (o for o in options if o["name"] == token and o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP)),
            None,
        )
        if match is None:
            subs = [o["name"] for o in options if o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP)]
            raise SandboxUsageError(f"{command['name']!r} has no subcommand {token!r}; it has {subs}")
        wrappers.append((match["type"], match["name"]))
        options = match.get("options") or []
    if any(o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP) for o in options):
        subs = [o["name"] for o in options]
        raise SandboxUsageError(f"{command['name']!r} needs a subcommand path: one of {subs}")

    def wrap(values: list[Json]) -> list[Json]:
        for option_type, name in reversed(wrappers):
            values = [{"type": option_type, "name": name, "options": values}]
        return values

    return options, wrap


def check_scalar(option: Json, value: Any) -> Any:
    """Validate a scalar option value the way Discord's client would before sending."""
    kind = option["type"]
    name = option["name"]
    if kind == STRING:
        if not isinstance(value, str):
            raise SandboxUsageError(f"option {name!r} is a string option, got {value!r}")
        lo, hi = option.get("min_length"), option.get("max_length", 6000)
        if (lo is not None and len(value) < lo) or (hi is not None and len(value) > hi):
            raise SandboxUsageError(f"option {name!r}: length {len(value)} outside [{lo}, {hi}]")
    elif kind == INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SandboxUsageError(f"option {name!r} is an integer option, got {value!r}")
    elif kind == NUMBER:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SandboxUsageError(f"option {name!r} is a number option, got {value!r}")
    elif kind == BOOLEAN and not isinstance(value, bool):
        raise SandboxUsageError(f"option {name!r} is a boolean option, got {value!r}")
    if kind in (INTEGER, NUMBER):
        lo, hi = option.get("min_value"), option.get("max_value")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise SandboxUsageError(f"option {name!r}: {value} outside [{lo}, {hi}]")
    choices = option.get("choices")
    if choices and value not in [c["value"] for c in choices]:
        raise SandboxUsageError(f"option {name!r}: {value!r} is not one of {[c['value'] for c in choices]}")
    return value
