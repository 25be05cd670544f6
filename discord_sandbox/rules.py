"""Limits real Discord enforces on message bodies, uploads and mentions."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .model import FLAG_COMPONENTS_V2, Json, StoredMessage, World, walk_components
from .payloads import error_body

MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_EMBED_TOTAL = 6000
MAX_ACTION_ROWS = 5
MAX_V2_COMPONENTS = 40
MAX_CUSTOM_ID = 100
MAX_CHOICES = 25

_EMBED_FIELD_LIMITS = (("title", 256), ("description", 4096))
_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")
_EVERYONE = re.compile(r"@(everyone|here)\b")


@dataclass(frozen=True)
class Rejection:
    """An error answer: HTTP status plus Discord's JSON error body."""

    status: int
    body: Json

    @property
    def code(self) -> int:
        return int(self.body["code"])


def rejection(status: int, code: int, message: str, errors: Json | None = None) -> Rejection:
    return Rejection(status, error_body(code, message, errors))


class FormErrors:
    """Collects Discord's nested `errors` object for a 400 50035 Invalid Form Body."""

    def __init__(self) -> None:
        self.errors: Json = {}

    def add(self, path: Iterable[str | int], code: str, message: str) -> None:
        node = self.errors
        for part in path:
            node = node.setdefault(str(part), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})

    def too_long(self, path: Iterable[str | int], limit: int) -> None:
        self.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")

    def rejection(self) -> Rejection | None:
        if not self.errors:
            return None
        return rejection(400, 50035, "Invalid Form Body", self.errors)


def validate_message(body: Json, *, file_count: int, creating: bool) -> Rejection | None:
    """Checks content/embeds/components/allowed_mentions like Discord's message endpoints."""
    form = FormErrors()
    content = body.get("content")
    flags = int(body.get("flags") or 0)
    if isinstance(content, str) and len(content) > MAX_CONTENT:
        form.too_long(["content"], MAX_CONTENT)
    embeds = body.get("embeds") or []
    if len(embeds) > MAX_EMBEDS:
        form.too_long(["embeds"], MAX_EMBEDS)
    else:
        _validate_embeds(embeds, form)
    _validate_components(body.get("components") or [], flags, form)
    _validate_allowed_mentions(body.get("allowed_mentions"), form)
    if (problem := form.rejection()) is not None:
        return problem
    has_body = (
        bool(content)
        or bool(embeds)
        or file_count > 0
        or bool(body.get("components"))
        or bool(body.get("sticker_ids"))
        or body.get("poll") is not None
        or bool(body.get("attachments"))
    )
    if creating and not has_body:
        return rejection(400, 50006, "Cannot send an empty message")
    return None


def _text_len(value: Any) -> int:
    return len(value) if isinstance(value, str) else 0


def _validate_embeds(embeds: list[Json], form: FormErrors) -> None:
    total = 0
    for index, embed in enumerate(embeds):
        for key, limit in _EMBED_FIELD_LIMITS:
            size = _text_len(embed.get(key))
            total += size
            if size > limit:
                form.too_long(["embeds", index, key], limit)
        fields = embed.get("fields") or []
        if len(fields) > 25:
            form.too_long(["embeds", index, "fields"], 25)
        for f_index, fld in enumerate(fields):
            total += _text_len(fld.get("name")) + _text_len(fld.get("value"))
            if _text_len(fld.get("name")) > 256:
                form.too_long(["embeds", index, "fields", f_index, "name"], 256)
            if _text_len(fld.get("value")) > 1024:
                form.too_long(["embeds", index, "fields", f_index, "value"], 1024)
        footer = (embed.get("footer") or {}).get("text")
        author = (embed.get("author") or {}).get("name")
        total += _text_len(footer) + _text_len(author)
        if _text_len(footer) > 2048:
            form.too_long(["embeds", index, "footer", "text"], 2048)
        if _text_len(author) > 256:
            form.too_long(["embeds", index, "author", "name"], 256)
    if total > MAX_EMBED_TOTAL:
        form.add(["embeds"], "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")


def _validate_components(components: list[Json], flags: int, form: FormErrors) -> None:
    if flags & FLAG_COMPONENTS_V2:
        if sum(1 for _ in walk_components(components)) > MAX_V2_COMPONENTS:
            form.too_long(["components"], MAX_V2_COMPONENTS)
    elif len(components) > MAX_ACTION_ROWS:
        form.too_long(["components"], MAX_ACTION_ROWS)
    seen: set[str] = set()
    for index, component in enumerate(walk_components(components)):
        custom_id = component.get("custom_id")
        if custom_id is None:
            continue
        if not 1 <= len(custom_id) <= MAX_CUSTOM_ID:
            form.add(
                ["components", index, "custom_id"],
                "BASE_TYPE_BAD_LENGTH",
                f"Must be between 1 and {MAX_CUSTOM_ID} in length.",
            )
        if custom_id in seen:
            form.add(
                ["components", index, "custom_id"],
                "COMPONENT_CUSTOM_ID_DUPLICATED",
                "Component custom id cannot be duplicated",
            )
        seen.add(custom_id)


def _validate_allowed_mentions(allowed: Json | None, form: FormErrors) -> None:
    if not allowed:
        return
    parse = allowed.get("parse") or []
    for kind in ("users", "roles"):
        if kind in parse and allowed.get(kind):
            form.add(
                ["allowed_mentions", kind],
                "MUTUALLY_EXCLUSIVE",
                f'parse:["{kind}"] and {kind}: [ids...] are mutually exclusive.',
            )


def check_uploads(sizes: Iterable[int], limit: int) -> Rejection | None:
    """Per-attachment size limit (Discord applies it per file since 2025-04)."""
    if any(size > limit for size in sizes):
        return rejection(413, 40005, "Request entity too large")
    return None


def apply_mentions(message: StoredMessage, world: World) -> None:
    """Fill in who actually gets pinged, honouring `allowed_mentions` like Discord does."""
    allowed = message.allowed_mentions
    content = message.content or ""
    users = [int(u) for u in _USER_MENTION.findall(content)]
    roles = [int(r) for r in _ROLE_MENTION.findall(content)]
    everyone = bool(_EVERYONE.search(content))
    if allowed is None:
        parse = {"users", "roles", "everyone"}
        allowed_users: set[int] = set()
        allowed_roles: set[int] = set()
        replied_user = True
    else:
        parse = set(allowed.get("parse") or [])
        allowed_users = {int(u) for u in allowed.get("users") or []}
        allowed_roles = {int(r) for r in allowed.get("roles") or []}
        replied_user = bool(allowed.get("replied_user", False))
    pinged_users = [u for u in dict.fromkeys(users) if "users" in parse or u in allowed_users]
    if replied_user and message.message_reference:
        ref = world.messages.get(int(message.message_reference.get("message_id") or 0))
        if ref is not None and ref.author.id not in pinged_users:
            pinged_users.append(ref.author.id)
    message.pinged_user_ids = pinged_users
    message.pinged_role_ids = [r for r in dict.fromkeys(roles) if "roles" in parse or r in allowed_roles]
    message.pinged_everyone = everyone and "everyone" in parse
