"""Creating and editing stored messages from request bodies (shared by bot and webhook routes)."""

from __future__ import annotations

import mimetypes
from typing import Any

from .model import (
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    FLAG_SUPPRESS_EMBEDS,
    Channel,
    Json,
    StoredFile,
    StoredMessage,
    User,
    World,
)
from .payloads import message_payload
from .rules import Rejection, apply_mentions, check_uploads, rejection, validate_message
from .wire import UploadedFile

# Flags a sender may set on a message; others are read-only server state.
SETTABLE_FLAGS = FLAG_SUPPRESS_EMBEDS | FLAG_EPHEMERAL | (1 << 12) | (1 << 15)


def guess_type(filename: str, declared: str | None) -> str | None:
    # discord.py always declares application/octet-stream; Discord sniffs the real type.
    if declared and declared != "application/octet-stream":
        return declared
    return mimetypes.guess_type(filename)[0] or declared


def precheck(body: Json, uploads: list[UploadedFile], limit: int, *, creating: bool) -> Rejection | None:
    """413 for oversize files, then the message-body rules (400)."""
    problem = check_uploads((u.size for u in uploads), limit)
    if problem is None:
        problem = validate_message(body, file_count=len(uploads), creating=creating)
    return problem


def store_uploads(
    world: World,
    body: Json,
    uploads: list[UploadedFile],
    *,
    path_prefix: str,
    keep: list[StoredFile] | None = None,
) -> list[StoredFile] | Rejection:
    """Resolve the `attachments` array against `files[n]` parts (and kept attachments on edit)."""
    by_index = {u.index: u for u in uploads if u.index is not None}
    current = {f.id: f for f in keep or []}
    entries = body.get("attachments")
    if entries is None:
        # No attachments array: every upload is new and existing ones stay.
        entries = [{"id": index} for index in sorted(i for i in by_index if i is not None)]
        result: list[StoredFile] = list(keep or [])
    else:
        result = []
    for entry in entries:
        raw_id = entry.get("id")
        try:
            ref = int(raw_id) if raw_id is not None else -1
        except (TypeError, ValueError):
            ref = -1
        if ref in current:
            result.append(current[ref])
            continue
        upload = by_index.get(ref)
        if upload is None:
            return rejection(
                400,
                50035,
                "Invalid Form Body",
                {"attachments": {"_errors": [{"code": "ATTACHMENT_NOT_FOUND", "message": "Unknown file"}]}},
            )
        filename = entry.get("filename") or upload.filename
        result.append(
            world.add_file(
                upload.data,
                filename,
                guess_type(filename, upload.content_type),
                path_prefix=path_prefix,
                description=entry.get("description"),
                duration_secs=entry.get("duration_secs"),
                title=entry.get("title"),
            )
        )
    return result


def new_message(
    world: World,
    channel: Channel,
    author: User,
    body: Json,
    files: list[StoredFile],
    *,
    flags: int | None = None,
    **extra: Any,
) -> StoredMessage:
    message = StoredMessage(
        id=world.ids.next(),
        channel=channel,
        author=author,
        content=str(body.get("content") or ""),
        embeds=list(body.get("embeds") or []),
        components=list(body.get("components") or []),
        attachments=files,
        flags=(int(body.get("flags") or 0) & SETTABLE_FLAGS) if flags is None else flags,
        tts=bool(body.get("tts", False)),
        nonce=body.get("nonce"),
        allowed_mentions=body.get("allowed_mentions"),
        message_reference=body.get("message_reference"),
        poll=body.get("poll"),
        created_at=world.clock.now(),
        **extra,
    )
    apply_mentions(message, world)
    return message


def apply_edit(world: World, message: StoredMessage, body: Json, files: list[StoredFile] | None) -> None:
    """PATCH semantics: only fields present in the body change; history keeps the old payload."""
    message.history.append(message_payload(message, world))
    if "content" in body:
        message.content = str(body["content"] or "")
    if "embeds" in body:
        message.embeds = list(body["embeds"] or [])
    if "components" in body:
        message.components = list(body["components"] or [])
    if "allowed_mentions" in body:
        message.allowed_mentions = body["allowed_mentions"]
    if "flags" in body and body["flags"] is not None:
        # Only SUPPRESS_EMBEDS / IS_COMPONENTS_V2 can change on edit; ephemeral stays as created.
        changeable = FLAG_SUPPRESS_EMBEDS | (1 << 15)
        message.flags = (message.flags & ~changeable) | (int(body["flags"]) & changeable)
    if files is not None:
        message.attachments = files
    message.flags &= ~FLAG_LOADING
    message.edited_at = world.clock.now()
    apply_mentions(message, world)
    if not message.ephemeral:
        world.emit("MESSAGE_UPDATE", {"message": message}, message.guild_id)
    world.changed()


def delete_message(world: World, message: StoredMessage) -> None:
    message.deleted = True
    if not message.ephemeral:
        world.emit(
            "MESSAGE_DELETE",
            {"id": str(message.id), "channel_id": str(message.channel_id), "message": message},
            message.guild_id,
        )
    world.changed()
