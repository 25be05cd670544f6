"""Every REST request the bot sends, checked against Discord's published OpenAPI description
(openapi/discord-openapi.json, MIT, see openapi/LICENSE) and the documented limits the
description states more loosely (a bot's message content is 2,000 characters, not 4,000).

The description is loaded and each operation's schemas compiled once per process, on first use,
so checking a request costs microseconds. Quirks of discord.py that Discord accepts are listed
in ALLOWED with the reason; anything else is a violation the sandbox answers like Discord
(400 50035) and records for the test fixtures to fail the test on.

The schemas are checked with jsonschema-rs, a development dependency: without it (`python -m bot
demo` after a plain install) routes and Discord's limits are still checked, schemas are not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .model import Json
from .rules import validate_message

try:
    import jsonschema_rs
except ImportError:
    SCHEMAS_CHECKED = False
else:
    SCHEMAS_CHECKED = True

SPEC_FILE = Path(__file__).parent / "openapi" / "discord-openapi.json"
_METHODS = ("get", "put", "post", "patch", "delete")

# Operations whose JSON body is a message (Discord's own limits apply on top of the schema).
_MESSAGE_BODIES = {"create_message", "update_message", "execute_webhook", "update_original_webhook_message",
                   "update_webhook_message"}  # fmt: skip


@dataclass(frozen=True)
class Allowed:
    """A documented difference between what discord.py sends and what the description says,
    which Discord accepts. `where` matches "METHOD operation_id location" of a problem."""

    where: re.Pattern[str]
    reason: str


ALLOWED: tuple[Allowed, ...] = (
    Allowed(
        re.compile(r"^GET /gateway(/bot)? query:(encoding|v|compress)$"),
        "discord.py adds its connection options to the gateway URL request; Discord ignores unknown ones",
    ),
    Allowed(
        re.compile(r"^POST create_interaction_response body:/data/flags$"),
        "a deferred response carries data.flags (EPHEMERAL); the description lists no data on type 5",
    ),
)


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    pattern: re.Pattern[str]
    literal_segments: int
    op_id: str
    query: dict[str, Json]  # name -> parameter schema
    body: Json | None  # the JSON request schema
    body_required: bool


@dataclass(frozen=True)
class Violation:
    method: str
    path: str
    problems: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.method} {self.path}: " + "; ".join(self.problems)


@cache
def _document() -> Json:
    with SPEC_FILE.open(encoding="utf-8") as f:
        doc: Json = json.load(f)
    # discord.py writes ids it holds as ints (message_reference, allowed_mentions.users, an
    # attachment's index id); Discord reads a snowflake from a JSON string or number alike.
    schemas = doc["components"]["schemas"]
    schemas["SnowflakeType"] = {"anyOf": [schemas["SnowflakeType"], {"type": "integer", "minimum": 0}]}
    return doc


def _resolve(node: Json) -> Json:
    doc = _document()
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


@cache
def _operations() -> tuple[Operation, ...]:
    ops: list[Operation] = []
    for template, item in _document()["paths"].items():
        shared = item.get("parameters") or []
        parts = template.strip("/").split("/")
        regex = "/".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
        pattern = re.compile(f"^/{regex}$")
        literal = sum(1 for p in parts if not p.startswith("{"))
        for method in _METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            params = [_resolve(p) for p in [*shared, *(operation.get("parameters") or [])]]
            query = {p["name"]: p.get("schema") or {} for p in params if p.get("in") == "query"}
            body_spec = operation.get("requestBody") or {}
            content = body_spec.get("content") or {}
            schema = (content.get("application/json") or {}).get("schema")
            ops.append(
                Operation(
                    method.upper(),
                    template,
                    pattern,
                    literal,
                    str(operation.get("operationId") or template),
                    query,
                    schema,
                    bool(body_spec.get("required")),
                )
            )
    # a literal segment beats a parameter: /messages/@original before /messages/{message_id}
    ops.sort(key=lambda o: -o.literal_segments)
    return tuple(ops)


@cache
def _validator(op_id: str, kind: str, name: str = "") -> Callable[[Any], list[str]]:
    if not SCHEMAS_CHECKED:
        return lambda value: []
    op = next(o for o in _operations() if o.op_id == op_id)
    schema = op.body if kind == "body" else op.query[name]
    assert schema is not None
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    root["components"] = _document()["components"]
    compiled = jsonschema_rs.validator_for(root)

    def check(value: Any) -> list[str]:
        out = []
        for error in compiled.iter_errors(value):
            where = "/" + "/".join(str(p) for p in error.instance_path)
            out.append(f"{where}: {error.message[:300]}")
        return out

    return check


def find_operation(method: str, path: str) -> Operation | None:
    for op in _operations():
        if op.method == method and op.pattern.match(path):
            return op
    return None


def _query_value(schema: Json, raw: str) -> Any:
    kinds = _resolve(schema).get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "boolean" in kinds and raw.lower() in ("true", "false", "1", "0"):  # Discord reads all four
        return raw.lower() in ("true", "1")
    if "integer" in kinds and re.fullmatch(r"-?[0-9]+", raw):
        return int(raw)
    return raw


def check_request(method: str, path: str, query: dict[str, str], body: Any, *, has_files: bool) -> Violation | None:
    """The problems Discord would find with this request (allow-listed quirks left out)."""
    op = find_operation(method, path)
    if op is None:
        return Violation(method, path, ("no such route in Discord's API",))
    problems: list[tuple[str, str]] = []  # (location, message)
    for name, raw in query.items():
        if name not in op.query:
            problems.append((f"query:{name}", f"unknown query parameter {name!r}"))
            continue
        for message in _validator(op.op_id, "query", name)(_query_value(op.query[name], raw)):
            problems.append((f"query:{name}", message))
    if body is None:
        if op.body_required and not has_files:
            problems.append(("body", "a request body is required"))
    elif op.body is None:
        problems.append(("body", "this route takes no body"))
    else:
        for message in _validator(op.op_id, "body")(body):
            problems.append((f"body:{message.split(':', 1)[0]}", message))
        problems += _discord_limits(op, body, has_files)
    kept = [
        message
        for location, message in problems
        if not any(a.where.search(f"{method} {op.op_id} {location}") for a in ALLOWED)
    ]
    return Violation(method, path, tuple(kept)) if kept else None


def _discord_limits(op: Operation, body: Any, has_files: bool) -> list[tuple[str, str]]:
    """Documented message limits the description states loosely (content 4,000 -> 2,000)."""
    if not isinstance(body, dict):
        return []
    message: Json | None = None
    if op.op_id in _MESSAGE_BODIES:
        message = body
    elif op.op_id == "create_interaction_response" and isinstance(body.get("data"), dict):
        message = body["data"] if body.get("type") in (4, 7) else None
    if message is None:
        return []
    rejection = validate_message(message, file_count=1 if has_files else 0, creating=False)
    if rejection is None:
        return []
    return [("limits", f"Discord's limits: {json.dumps(rejection.body.get('errors'))[:400]}")]
