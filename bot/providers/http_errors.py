"""Shared mapping of httpx failures and HTTP answers onto the base.py error taxonomy.

The rule that matters for money: a failure is *not sent* only when the request provably never
reached the provider (connect errors, pool timeouts); anything after the request may have been
read (read timeouts, dropped connections, 5xx) is *ambiguous* for a create call and merely
*unavailable* for an idempotent read, which can simply be repeated later.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime

import httpx

from bot.providers.base import (
    Ambiguous,
    AuthFailed,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    Rejected,
    Unavailable,
)

# Transport errors raised before a single byte of the request could have been processed.
NOT_SENT_ERRORS: tuple[type[httpx.HTTPError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)

QUOTA_CODES = frozenset(
    {"insufficient_quota", "billing_hard_limit_reached", "billing_not_active", "insufficient_balance"}
)
# Phrases only: a plain "billing" also appears in ordinary rate-limit messages (a billing URL).
_QUOTA_PHRASES = ("exceeded your current quota", "insufficient_quota", "insufficient balance")
_SECRET_PATTERNS = (
    re.compile(r"\bsk-[\w\-*.]{4,}", re.IGNORECASE),
    re.compile(r"\bBearer\s+\S+", re.IGNORECASE),
)
MAX_MESSAGE = 300


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with the given secret values and anything shaped like an API key masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub("***", text)
    return text


def safe_message(text: str, secrets: Iterable[str] = (), limit: int = MAX_MESSAGE) -> str:
    """A provider's message made safe to show: redacted, one line, bounded."""
    one_line = " ".join(redact(text, secrets).split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def retry_after_seconds(headers: Mapping[str, str] | httpx.Headers, *, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` (preferred, finer) or `retry-after` (seconds or a date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(0.0, value)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    return max(0.0, value) if math.isfinite(value) else None


def header_ms(headers: Mapping[str, str] | httpx.Headers, name: str) -> float | None:
    """A millisecond header (e.g. `openai-poll-after-ms`) in seconds, or None when absent or junk."""
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw) / 1000
    except ValueError:
        return None
    return max(0.0, value) if math.isfinite(value) else None


def error_fields(body: bytes | str) -> tuple[str, str | None, str | None]:
    """(message, code, type) from the common error body shapes; never raises.

    Handles `{"error": {"message", "code", "type"}}`, `{"error": "text"}` and flat
    `{"message"|"msg", "code"}` bodies; anything else yields an empty message.
    """
    try:
        data = json.loads(body)
    except (ValueError, TypeError):
        return "", None, None
    if not isinstance(data, dict):
        return "", None, None
    err = data.get("error", data)
    if isinstance(err, str):
        return err, None, None
    if not isinstance(err, dict):
        return "", None, None
    message = err.get("message", err.get("msg", ""))
    code = err.get("code")
    etype = err.get("type")
    return (
        message if isinstance(message, str) else "",
        str(code) if isinstance(code, str | int) and not isinstance(code, bool) else None,
        etype if isinstance(etype, str) else None,
    )


def looks_like_quota(message: str, code: str | None, etype: str | None) -> bool:
    if (code or "").lower() in QUOTA_CODES or (etype or "").lower() in QUOTA_CODES:
        return True
    lowered = message.lower()
    return any(p in lowered for p in _QUOTA_PHRASES)


def transport_error(provider: str, exc: httpx.HTTPError, *, idempotent: bool) -> ProviderError:
    """Map an httpx exception. Only provably-unsent failures are NotSent for a create call."""
    kind = type(exc).__name__
    if isinstance(exc, NOT_SENT_ERRORS):
        return Unavailable(provider, f"could not reach the provider ({kind})", code=kind)
    if idempotent:
        return Unavailable(provider, f"the provider did not answer ({kind}); will try again", code=kind)
    return Ambiguous(provider, f"the request may have been accepted ({kind}); not resubmitting", code=kind)


def status_error(
    provider: str,
    status: int,
    headers: Mapping[str, str] | httpx.Headers,
    *,
    message: str = "",
    code: str | None = None,
    etype: str | None = None,
    idempotent: bool,
    secrets: Iterable[str] = (),
) -> ProviderError:
    """Map a non-2xx answer generically; adapters refine provider-specific cases first."""
    retry_after = retry_after_seconds(headers)
    shown = safe_message(message, secrets)
    if looks_like_quota(message, code, etype) or status == 402:
        return QuotaExhausted(provider, "the provider account has no quota or balance left", code=code)
    if status in (401, 403):
        # Never echo the provider's text here: auth errors often quote the key back.
        return AuthFailed(provider, f"the provider refused the API key (HTTP {status})", code=code)
    if status == 429:
        return RateLimited(provider, "rate limited by the provider", code=code, retry_after=retry_after)
    overloaded = "overloaded" in f"{message} {code or ''} {etype or ''}".lower()
    if status in (408, 503, 529) or overloaded:
        return Unavailable(provider, "the provider is overloaded or unavailable", code=code, retry_after=retry_after)
    if 400 <= status < 500:
        return Rejected(provider, shown or f"the provider refused the request (HTTP {status})", code=code)
    if idempotent:
        return Unavailable(
            provider,
            f"the provider failed (HTTP {status}); will try again",
            code=code,
            retry_after=retry_after,
        )
    return Ambiguous(provider, f"the provider failed (HTTP {status}); the request may have been accepted", code=code)


__all__ = [
    "NOT_SENT_ERRORS",
    "QUOTA_CODES",
    "error_fields",
    "header_ms",
    "looks_like_quota",
    "redact",
    "retry_after_seconds",
    "safe_message",
    "status_error",
    "transport_error",
]
