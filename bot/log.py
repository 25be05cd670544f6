"""Logging to stdout in one format, with known secrets redacted from every line."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

FORMAT = "%(asctime)s | %(levelname)-7s | %(name)s | %(message)s"
MIN_SECRET = 6  # shorter values are not treated as secrets (they would redact ordinary words)
WINDOW = 12  # any run of this many characters of a secret, in any of its written forms, is redacted
REDACTED = "[redacted]"


def _written_forms(secret: str) -> set[str]:
    """How a secret can appear in a log line: as is, escaped (repr, JSON, bytes), URL-encoded."""
    forms = {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1], quote(secret, safe=""), quote_plus(secret)}
    forms.add(repr(secret.encode("utf-8", "backslashreplace"))[2:-1])
    return {f for f in forms if len(f) >= MIN_SECRET}


class Redactor:
    """Finds every configured secret in a text, whole, escaped or in part (any WINDOW characters
    of it), and replaces it. A text is scanned once per window size: a few microseconds a line."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._grams: dict[int, set[str]] = {}
        for secret in {s for s in secrets if len(s) >= MIN_SECRET}:
            for form in _written_forms(secret):
                n = min(WINDOW, len(form))
                self._grams.setdefault(n, set()).update(form[i : i + n] for i in range(len(form) - n + 1))

    def __bool__(self) -> bool:
        return bool(self._grams)

    def redact(self, text: str) -> str:
        spans: list[tuple[int, int]] = []
        for n, grams in self._grams.items():
            spans += [(i, i + n) for i in range(len(text) - n + 1) if text[i : i + n] in grams]
        if not spans:
            return text
        spans.sort()
        out, last = [], 0
        start, end = spans[0]
        for s, e in spans[1:]:
            if s <= end:
                end = max(end, e)
                continue
            out += [text[last:start], REDACTED]
            last, (start, end) = end, (s, e)
        out += [text[last:start], REDACTED, text[end:]]
        return "".join(out)


class RedactSecrets(logging.Filter):
    """Redact secrets from a record's message (for every handler that sees the record after it)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._redactor = Redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._redactor:
            return True
        message = record.getMessage()
        redacted = self._redactor.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class RedactingFormatter(logging.Formatter):
    """The whole formatted line, traceback and stack included, with secrets redacted."""

    def __init__(self, fmt: str, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        self._redactor = Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return self._redactor.redact(super().format(record))


def setup_logging(level: str, secrets: Iterable[str] = ()) -> None:
    secrets = list(secrets)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(RedactingFormatter(FORMAT, secrets))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # discord.py's HTTP layer is chatty at INFO; keep the gateway's INFO lines.
    logging.getLogger("discord.http").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
