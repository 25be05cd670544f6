"""Request/answer records shared by the REST handlers and the call log tests read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .model import Json
from .rules import Rejection


@dataclass(frozen=True)
class UploadedFile:
    """One `files[n]` part of a multipart request, with its bytes."""

    field: str
    filename: str
    content_type: str | None
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def index(self) -> int | None:
        if self.field.startswith("files[") and self.field.endswith("]"):
            return int(self.field[6:-1])
        return None


@dataclass
class ApiRequest:
    method: str
    path: str  # relative to /api/v10, e.g. "/channels/1/messages"
    query: Mapping[str, str]
    json: Any
    files: list[UploadedFile]
    headers: Mapping[str, str]

    @property
    def body(self) -> Json:
        return self.json if isinstance(self.json, dict) else {}

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("1", "true")


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON value; None means an empty body (204)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def ok(cls, body: Any, status: int = 200) -> Reply:
        return cls(status, body)

    @classmethod
    def no_content(cls) -> Reply:
        return cls(204, None)

    @classmethod
    def reject(cls, problem: Rejection) -> Reply:
        return cls(problem.status, problem.body)


@dataclass
class Call:
    """One REST request as the sandbox saw it, with the answer it gave."""

    method: str
    path: str
    query: dict[str, str]
    json: Any  # the JSON body, or the parsed `payload_json` of a multipart request
    files: list[UploadedFile]
    status: int
    response: Any
    injected: bool = False  # answered by fail_next()
    at: float = 0.0  # sandbox monotonic time

    @property
    def body(self) -> Json:
        return self.json if isinstance(self.json, dict) else {}

    @property
    def error_code(self) -> int | None:
        if isinstance(self.response, dict) and self.status >= 400:
            code = self.response.get("code")
            return int(code) if code is not None else None
        return None

    def __repr__(self) -> str:
        files = f" files={[f.filename for f in self.files]}" if self.files else ""
        return f"<Call {self.method} {self.path} -> {self.status}{files}>"
