"""Interaction lifecycle: callbacks (/interactions/.../callback) and webhook followups/edits.

Rules modelled on Discord: the first response must arrive within 3 s of dispatch (else 404
10062), a second response is 400 40060, and the token serves followups and
`messages/@original` for 15 minutes (then 401 50027).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .messages import apply_edit, delete_message, new_message, precheck, store_uploads
from .model import (
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    FLAG_SUPPRESS_EMBEDS,
    Channel,
    Json,
    Member,
    StoredFile,
    StoredMessage,
    User,
    World,
)
from .payloads import message_payload, user_payload
from .rules import MAX_CHOICES, FormErrors, Rejection, rejection
from .wire import ApiRequest, Reply

APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3
AUTOCOMPLETE = 4
MODAL_SUBMIT = 5

PONG, MESSAGE, DEFERRED_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE, AUTOCOMPLETE_RESULT, MODAL = (1, 4, 5, 6, 7, 8, 9)
ALLOWED_CALLBACKS = {
    APPLICATION_COMMAND: {MESSAGE, DEFERRED_MESSAGE, MODAL},
    MESSAGE_COMPONENT: {MESSAGE, DEFERRED_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE, MODAL},
    AUTOCOMPLETE: {AUTOCOMPLETE_RESULT},
    MODAL_SUBMIT: {MESSAGE, DEFERRED_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE},
}
TOKEN_LIFETIME = 15 * 60.0


@dataclass(eq=False)
class InteractionRecord:
    """Everything the sandbox knows about one dispatched interaction."""

    id: int
    token: str
    type: int
    payload: Json
    channel: Channel
    user: User
    member: Member | None
    created_at: float  # sandbox monotonic time
    attachment_size_limit: int
    command_name: str | None = None
    command_type: int | None = None
    source_message: StoredMessage | None = None
    dispatched_at: float | None = None
    ack_type: int | None = None
    ack_body: Json | None = None
    original: StoredMessage | None = None
    followups: list[StoredMessage] = field(default_factory=list)
    choices: list[Json] | None = None
    source_edits_at_ack: int = 0  # to tell a later edit after a type-6 deferred update
    modal: Json | None = None
    # (status, Discord error code) of every refused callback attempt.
    rejected: list[tuple[int, int]] = field(default_factory=list)
    # The gateway session it was sent to, and that session's [shard_id, shard_count] (None: unsharded).
    session_id: str | None = None
    shard: tuple[int, int] | None = None

    @property
    def acknowledged(self) -> bool:
        return self.ack_type is not None

    def metadata(self) -> Json:
        meta: Json = {
            "id": str(self.id),
            "type": self.type,
            "user": user_payload(self.user),
            "authorizing_integration_owners": self.payload.get("authorizing_integration_owners", {}),
        }
        if self.command_name is not None:
            meta["name"] = self.command_name
        if self.source_message is not None:
            meta["interacted_message_id"] = str(self.source_message.id)
        return meta

    def legacy_interaction(self) -> Json:
        # The deprecated `interaction` field discord.py still reads into Message.interaction.
        legacy: Json = {
            "id": str(self.id),
            "type": self.type,
            "name": self.command_name or "",
            "user": user_payload(self.user),
        }
        return legacy


def describe_interaction(record: InteractionRecord) -> str:
    """`/generate`, `button castbot:cancel:7`, `modal ...`: which interaction, for failure messages."""
    data = record.payload.get("data") or {}
    if record.type == MESSAGE_COMPONENT:
        return f"interaction {record.id} (component {data.get('custom_id')!r})"
    if record.type == MODAL_SUBMIT:
        return f"interaction {record.id} (modal {data.get('custom_id')!r})"
    kind = "autocomplete" if record.type == AUTOCOMPLETE else "command"
    return f"interaction {record.id} ({kind} {record.command_name!r})"


class InteractionApi:
    """Handlers for the interaction callback and the interaction webhook routes."""

    def __init__(self, world: World, *, ack_timeout: float) -> None:
        self.world = world
        self.ack_timeout = ack_timeout
        self.by_id: dict[int, InteractionRecord] = {}
        self.by_token: dict[str, InteractionRecord] = {}

    def register(self, record: InteractionRecord) -> None:
        self.by_id[record.id] = record
        self.by_token[record.token] = record

    # -- POST /interactions/{id}/{token}/callback -----------------------------------------

    def callback(self, req: ApiRequest, interaction_id: int, token: str) -> Reply:
        record = self.by_id.get(interaction_id)
        if record is None or record.token != token:
            return Reply.reject(rejection(404, 10062, "Unknown interaction"))
        problem = self._callback_problem(record, req)
        if problem is not None:
            record.rejected.append((problem.status, problem.code))
            self.world.changed()
            return Reply.reject(problem)
        body = req.body
        cb_type = int(body["type"])
        data: Json = body.get("data") or {}
        if cb_type in (MESSAGE, UPDATE_MESSAGE):
            outcome = self._message_response(record, cb_type, data, req)
            if isinstance(outcome, Rejection):
                record.rejected.append((outcome.status, outcome.code))
                self.world.changed()
                return Reply.reject(outcome)
        elif cb_type == DEFERRED_MESSAGE:
            ephemeral = int(data.get("flags") or 0) & FLAG_EPHEMERAL
            record.original = self._bot_message(record, {}, [], flags=FLAG_LOADING | ephemeral)
        elif cb_type == DEFERRED_UPDATE:
            record.original = record.source_message
            if record.source_message is not None:
                record.source_edits_at_ack = record.source_message.edit_count
        elif cb_type == AUTOCOMPLETE_RESULT:
            record.choices = list(data.get("choices") or [])
        elif cb_type == MODAL:
            record.modal = data
        record.ack_type = cb_type
        record.ack_body = body
        self.world.changed()
        if not req.flag("with_response"):
            return Reply.no_content()
        return Reply.ok(self._callback_response(record, cb_type))

    def _callback_problem(self, record: InteractionRecord, req: ApiRequest) -> Rejection | None:
        if record.acknowledged:
            return rejection(400, 40060, "Interaction has already been acknowledged.")
        dispatched = record.dispatched_at if record.dispatched_at is not None else record.created_at
        if self.world.clock.monotonic() - dispatched > self.ack_timeout:
            return rejection(404, 10062, "Unknown interaction")
        body = req.body
        cb_type = body.get("type")
        form = FormErrors()
        if not isinstance(cb_type, int) or cb_type not in ALLOWED_CALLBACKS.get(record.type, set()):
            form.add(["type"], "INTERACTION_RESPONSE_TYPE_INVALID", "Invalid interaction response type")
            return form.rejection()
        data: Json = body.get("data") or {}
        if cb_type in (DEFERRED_MESSAGE, DEFERRED_UPDATE) and int(data.get("flags") or 0) & ~FLAG_EPHEMERAL:
            form.add(["data", "flags"], "INTERACTION_DEFER_FLAGS_INVALID", "Only EPHEMERAL may be set")
        if cb_type == AUTOCOMPLETE_RESULT and len(data.get("choices") or []) > MAX_CHOICES:
            form.too_long(["data", "choices"], MAX_CHOICES)
        if cb_type == MODAL:
            if not data.get("custom_id"):
                form.add(["data", "custom_id"], "BASE_TYPE_REQUIRED", "This field is required")
            if not 1 <= len(str(data.get("title") or "")) <= 45:
                form.add(["data", "title"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 45 in length.")
            if not 1 <= len(data.get("components") or []) <= 5:
                form.add(["data", "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
        return form.rejection()

    def _message_response(
        self, record: InteractionRecord, cb_type: int, data: Json, req: ApiRequest
    ) -> Rejection | None:
        creating = cb_type == MESSAGE
        problem = precheck(data, req.files, record.attachment_size_limit, creating=creating)
        if problem is not None:
            return problem
        if cb_type == MESSAGE:
            ephemeral = bool(int(data.get("flags") or 0) & FLAG_EPHEMERAL)
            files = store_uploads(self.world, data, req.files, path_prefix=self._prefix(record, ephemeral))
            if isinstance(files, Rejection):
                return files
            record.original = self._bot_message(record, data, files)
            return None
        source = record.source_message
        if source is None:
            return rejection(400, 50035, "Invalid Form Body", {"type": {"_errors": [{"code": "NO_MESSAGE"}]}})
        files = store_uploads(
            self.world, data, req.files, path_prefix=self._prefix(record, source.ephemeral), keep=source.attachments
        )
        if isinstance(files, Rejection):
            return files
        apply_edit(self.world, source, data, files)
        record.original = source
        return None

    def _callback_response(self, record: InteractionRecord, cb_type: int) -> Json:
        original = record.original
        interaction: Json = {"id": str(record.id), "type": record.type}
        response: Json = {"interaction": interaction}
        if original is not None and cb_type in (MESSAGE, DEFERRED_MESSAGE, UPDATE_MESSAGE):
            interaction["response_message_id"] = str(original.id)
            interaction["response_message_loading"] = original.loading
            interaction["response_message_ephemeral"] = original.ephemeral
            response["resource"] = {"type": cb_type, "message": message_payload(original, self.world)}
        return response

    def _prefix(self, record: InteractionRecord, ephemeral: bool) -> str:
        kind = "ephemeral-attachments" if ephemeral else "attachments"
        return f"{kind}/{record.channel.id}"

    def _bot_message(
        self,
        record: InteractionRecord,
        body: Json,
        files: list[StoredFile],
        *,
        flags: int | None = None,
        followup: bool = False,
    ) -> StoredMessage:
        if record.type == APPLICATION_COMMAND and not followup:
            # CHAT_INPUT_COMMAND (20) or CONTEXT_MENU_COMMAND (23) for the original response.
            message_type = 23 if record.command_type in (2, 3) else 20
        else:
            message_type = 0
        message = new_message(
            self.world,
            record.channel,
            self.world.bot,
            body,
            files,
            flags=flags,
            type=message_type,
            webhook_id=self.world.application_id,
            application_id=self.world.application_id,
            interaction_id=record.id,
            interaction_metadata=record.metadata(),
        )
        self.world.store_message(message)
        return message

    # -- /webhooks/{app}/{token}[/messages/{id}] -----------------------------------------

    def _webhook_record(self, app_id: int, token: str) -> InteractionRecord | Rejection:
        if app_id != self.world.application_id:
            return rejection(404, 10015, "Unknown Webhook")
        record = self.by_token.get(token)
        if record is None or self.world.clock.monotonic() - record.created_at > TOKEN_LIFETIME:
            return rejection(401, 50027, "Invalid Webhook Token")
        return record

    def followup(self, req: ApiRequest, app_id: int, token: str) -> Reply:
        record = self._webhook_record(app_id, token)
        if isinstance(record, Rejection):
            return Reply.reject(record)
        if not record.acknowledged or record.ack_type in (AUTOCOMPLETE_RESULT, MODAL):
            return Reply.reject(rejection(404, 10015, "Unknown Webhook"))
        body = req.body
        problem = precheck(body, req.files, record.attachment_size_limit, creating=True)
        if problem is not None:
            return Reply.reject(problem)
        original = record.original
        if record.ack_type == DEFERRED_MESSAGE and original is not None and original.loading and not record.followups:
            # The first followup after a "thinking" defer replaces the loading message; the
            # defer decided whether it is ephemeral.
            files = store_uploads(self.world, body, req.files, path_prefix=self._prefix(record, original.ephemeral))
            if isinstance(files, Rejection):
                return Reply.reject(files)
            flags = int(body.get("flags") or 0) & FLAG_SUPPRESS_EMBEDS
            apply_edit(self.world, original, {**body, "flags": flags}, files)
            message = original
        else:
            ephemeral = bool(int(body.get("flags") or 0) & FLAG_EPHEMERAL)
            files = store_uploads(self.world, body, req.files, path_prefix=self._prefix(record, ephemeral))
            if isinstance(files, Rejection):
                return Reply.reject(files)
            message = self._bot_message(record, body, files, followup=True)
        record.followups.append(message)
        self.world.changed()
        if not req.flag("wait"):
            return Reply.no_content()
        return Reply.ok(message_payload(message, self.world))

    def _webhook_message(
        self, app_id: int, token: str, message_ref: str
    ) -> tuple[InteractionRecord, StoredMessage] | Rejection:
        record = self._webhook_record(app_id, token)
        if isinstance(record, Rejection):
            return record
        unknown = rejection(404, 10008, "Unknown Message")
        if message_ref == "@original":
            target = record.original
        else:
            wanted = int(message_ref)
            candidates = [m for m in [record.original, *record.followups] if m is not None]
            target = next((m for m in candidates if m.id == wanted), None)
        if target is None or target.deleted:
            return unknown
        return record, target

    def get_message(self, req: ApiRequest, app_id: int, token: str, message_ref: str) -> Reply:
        found = self._webhook_message(app_id, token, message_ref)
        if isinstance(found, Rejection):
            return Reply.reject(found)
        return Reply.ok(message_payload(found[1], self.world))

    def edit_message(self, req: ApiRequest, app_id: int, token: str, message_ref: str) -> Reply:
        found = self._webhook_message(app_id, token, message_ref)
        if isinstance(found, Rejection):
            return Reply.reject(found)
        record, message = found
        body = req.body
        problem = precheck(body, req.files, record.attachment_size_limit, creating=False)
        if problem is not None:
            return Reply.reject(problem)
        files = None
        if req.files or "attachments" in body:
            stored = store_uploads(
                self.world,
                body,
                req.files,
                path_prefix=self._prefix(record, message.ephemeral),
                keep=message.attachments,
            )
            if isinstance(stored, Rejection):
                return Reply.reject(stored)
            files = stored
        apply_edit(self.world, message, body, files)
        return Reply.ok(message_payload(message, self.world))

    def delete_message(self, req: ApiRequest, app_id: int, token: str, message_ref: str) -> Reply:
        found = self._webhook_message(app_id, token, message_ref)
        if isinstance(found, Rejection):
            return Reply.reject(found)
        delete_message(self.world, found[1])
        return Reply.no_content()
