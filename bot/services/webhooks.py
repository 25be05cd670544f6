"""Provider callbacks as wake-ups, never as truth.

When PUBLIC_URL is set, every submission to a provider that calls back carries
`{PUBLIC_URL}/hooks/{provider}/{token}`, the token unguessable and made per attempt. A callback that
passes the checks here only brings its job's next status check forward to now; the tracker then
reads the job's state from the provider as usual. So a forged, replayed, late, duplicated or
out-of-order callback can cost at most one status read, never change a job, money or a post.

Checks, cheapest first: a per-source token bucket (429; a callback that wakes a job is given
its token back), the body size (413, refused by the route before it is read whole), the
provider's signature where it signs (401), and a known token (404):
- fal: Ed25519 over its request id, user id, timestamp and the body's SHA-256, by a key of fal's
  JWKS, the timestamp within 5 minutes;
- Gemini (a per-request `webhook_config`): an RS256 JWT in `webhook-signature` by the key its `kid`
  names in Google's JWKS, unexpired, its audience the very URL the job was given (so a token
  signed for one job's URL wakes no other) and, when GEMINI_WEBHOOK_ISSUER is set, that issuer;
- Kling: the token alone (it does not sign per-request callbacks).
Keys that cannot be fetched answer 503, so the provider retries later.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bot.db import Database
from bot.store import callbacks as store

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
SIGNATURE_TOLERANCE = 300.0  # seconds between fal's timestamp and now; a JWT's clock leeway
JWKS_TTL = 24 * 3600.0
JWKS_RETRY = 60.0  # after a failed fetch, how long before the next try
HOOK_PATH = "/hooks"
WAKE_CHANNEL = "castbot_wake"  # the processes sharing a database wake each other's loops on it
# providers whose submissions carry a callback URL
CALLBACK_PROVIDERS = frozenset({"fal", "kling", "gemini"})


def new_token() -> str:
    return secrets.token_urlsafe(24)


def callback_url(public_url: str, provider: str, token: str) -> str:
    return f"{public_url.rstrip('/')}{HOOK_PATH}/{provider}/{token}"


class Outcome(enum.StrEnum):
    WOKEN = "woken"  # a job's next check moved to now (or was already due)
    LATE = "late"  # a known token whose job is no longer polled: nothing to do
    DUPLICATE = "duplicate"  # the same body for the same job again (a retry or a replay)
    UNKNOWN = "unknown"  # no job holds this token
    FORGED = "forged"  # a signature missing, wrong or out of its time window
    UNVERIFIABLE = "unverifiable"  # the provider's keys could not be fetched: it retries later
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"


HTTP_STATUS: Mapping[Outcome, int] = {
    Outcome.WOKEN: 200,
    Outcome.LATE: 200,
    Outcome.DUPLICATE: 200,
    Outcome.UNKNOWN: 404,
    Outcome.FORGED: 401,
    Outcome.UNVERIFIABLE: 503,
    Outcome.TOO_LARGE: 413,
    Outcome.RATE_LIMITED: 429,
}


class TokenBucket:
    """Per-source rate limit: `rate` requests a second with bursts of `burst`; bounded memory."""

    def __init__(
        self,
        rate: float = 20.0,
        burst: float = 50.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        size: int = 10_000,
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._size = size
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # source -> (tokens, at)

    def allow(self, source: str) -> bool:
        now = self._clock()
        tokens, at = self._buckets.pop(source, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        allowed = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self._size:
            self._buckets.popitem(last=False)  # the longest idle source: it starts full again
        return allowed

    def refund(self, source: str) -> None:
        """Give back what a request took: a callback that woke a job is not held against its sender."""
        tokens, at = self._buckets.get(source, (self._burst, self._clock()))
        self._buckets[source] = (min(self._burst, tokens + 1.0), at)


def _b64url(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def ed25519_keys(jwks: Any) -> list[Ed25519PublicKey]:
    """The OKP/Ed25519 keys of a JWKS document; anything else in it is ignored."""
    keys: list[Ed25519PublicKey] = []
    entries = jwks.get("keys") if isinstance(jwks, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
            continue
        x = entry.get("x")
        try:
            keys.append(Ed25519PublicKey.from_public_bytes(_b64url(x if isinstance(x, str) else "")))
        except (ValueError, binascii.Error):
            continue
    return keys


def fal_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    return f"{request_id}\n{user_id}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}".encode()


def verify_fal(headers: Mapping[str, str], body: bytes, keys: list[Ed25519PublicKey], now: float) -> bool:
    """fal's webhook signature: Ed25519 (hex) over request id, user id, timestamp and the body's
    SHA-256, by any of its keys, the timestamp within SIGNATURE_TOLERANCE of now. `headers` is
    case-insensitive (lower-case keys)."""
    request_id = headers.get("x-fal-webhook-request-id", "")
    user_id = headers.get("x-fal-webhook-user-id", "")
    timestamp = headers.get("x-fal-webhook-timestamp", "")
    signature_hex = headers.get("x-fal-webhook-signature", "")
    if not (request_id and user_id and timestamp.isdigit() and signature_hex):
        return False
    if abs(now - int(timestamp)) > SIGNATURE_TOLERANCE:
        return False
    try:
        signature = bytes.fromhex(signature_hex)
    except ValueError:
        return False
    message = fal_message(request_id, user_id, timestamp, body)
    for key in keys:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return True
    return False


def rs256_keys(jwks: Any) -> dict[str, jwt.PyJWK]:
    """The RSA signing keys of a JWKS document by `kid`; keys for other uses or algorithms, and
    entries PyJWT cannot read, are left out."""
    keys: dict[str, jwt.PyJWK] = {}
    entries = jwks.get("keys") if isinstance(jwks, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA" or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("use", "sig") != "sig" or entry.get("alg", "RS256") != "RS256":
            continue
        try:
            keys[entry["kid"]] = jwt.PyJWK(entry, algorithm="RS256")
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
    return keys


def verify_gemini(headers: Mapping[str, str], keys: Mapping[str, jwt.PyJWK], audience: str, issuer: str | None) -> bool:
    """Gemini's per-request webhook signature: an RS256 JWT in `webhook-signature` (lower-case
    keys in `headers`), by the key its `kid` names, unexpired, its `aud` equal to `audience`."""
    token = _bearer(headers.get("webhook-signature", ""))
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        key = keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            return False
        jwt.decode(
            token,
            key,
            algorithms=["RS256"],  # never the token's own choice: no "none", no HS256 with the public key
            audience=audience,
            issuer=issuer,
            leeway=SIGNATURE_TOLERANCE,
            options={"require": ["exp", "aud"]},
        )
    except jwt.PyJWTError:
        return False
    return True


def _bearer(value: str) -> str:
    value = value.strip()
    return value[7:].strip() if value[:7].lower() == "bearer " else value


def gemini_kid(headers: Mapping[str, str]) -> str | None:
    """The `kid` a Gemini callback's JWT names, unverified: whether our cached keys know it."""
    try:
        kid = jwt.get_unverified_header(_bearer(headers.get("webhook-signature", ""))).get("kid")
    except jwt.PyJWTError:
        return None
    return kid if isinstance(kid, str) else None


KeysT = TypeVar("KeysT")


class RemoteKeys(Generic[KeysT]):
    """A provider's published webhook keys (a JWKS document), cached for at most JWKS_TTL and
    fetched again sooner when asked (a key rotated in), at most once per JWKS_RETRY."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        jwks_url: str,
        parse: Callable[[Any], KeysT],
        *,
        provider: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        self._url = jwks_url
        self._parse = parse
        self._provider = provider
        self._clock = clock
        self._keys: KeysT | None = None
        self._fetched_at: float | None = None
        self._tried_at: float | None = None
        self._lock = asyncio.Lock()

    async def keys(self, *, refresh: bool = False) -> KeysT | None:
        """The keys; None when they have never been fetched and cannot be now. `refresh` asks for
        a new copy (a signature names a key we do not have), given only if the last try is old.
        Callers arriving during a fetch wait for it rather than fetch again or give up."""
        asked_at = self._clock()
        async with self._lock:
            now = self._clock()
            fresh = self._fetched_at is not None and now - self._fetched_at < JWKS_TTL
            if fresh and not (refresh and (self._tried_at is None or self._tried_at < asked_at)):
                return self._keys
            if self._tried_at is not None and now - self._tried_at < JWKS_RETRY:
                return self._keys if fresh else None
            self._tried_at = now
            try:
                response = await self._http.get(self._url, timeout=10.0)
                response.raise_for_status()
                keys = self._parse(response.json())
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("%s's webhook keys could not be fetched: %s", self._provider, type(exc).__name__)
                return self._keys if fresh else None
            if not keys:
                log.warning("%s's webhook key set has no key we can use", self._provider)
                return self._keys if fresh else None
            self._keys, self._fetched_at = keys, now
            return keys


def fal_key_set(http: httpx.AsyncClient, jwks_url: str, *, clock: Callable[[], float] = time.time) -> FalKeys:
    return RemoteKeys(http, jwks_url, ed25519_keys, provider="fal", clock=clock)


def gemini_key_set(http: httpx.AsyncClient, jwks_url: str, *, clock: Callable[[], float] = time.time) -> GeminiKeys:
    return RemoteKeys(http, jwks_url, rs256_keys, provider="gemini", clock=clock)


FalKeys = RemoteKeys[list[Ed25519PublicKey]]
GeminiKeys = RemoteKeys[dict[str, jwt.PyJWK]]


@dataclass(frozen=True)
class Received:
    provider: str
    outcome: Outcome
    job_id: int | None = None

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.outcome]


class WebhookService:
    """Checks one inbound callback and, when it holds, pokes its job and wakes the loop."""

    def __init__(
        self,
        db: Database,
        wake: Callable[[], None],
        *,
        fal_keys: FalKeys | None = None,
        gemini_keys: GeminiKeys | None = None,
        public_url: str | None = None,
        gemini_issuer: str | None = None,
        providers: frozenset[str] = CALLBACK_PROVIDERS,
        min_gap: float = 2.0,
        limiter: TokenBucket | None = None,
        clock: Callable[[], float] = time.time,
        woken: Callable[[int], None] | None = None,
    ) -> None:
        self._db = db
        self._wake = wake
        self._woken = woken  # told which job was poked (the tracker reads it before safety polls)
        self._fal_keys = fal_keys
        self._gemini_keys = gemini_keys
        self._public_url = public_url  # Gemini's JWT is signed for the exact URL we gave it
        self._gemini_issuer = gemini_issuer
        self._providers = providers
        self._min_gap = min_gap  # the least time between two pokes of one job
        self._limiter = limiter or TokenBucket()
        self._clock = clock
        self._poked: OrderedDict[int, float] = OrderedDict()  # job id -> when it was last poked for
        self._seen: OrderedDict[tuple[int, str], None] = OrderedDict()  # (job id, body's SHA-256)

    def admit(self, source: str) -> bool:
        """The per-source rate limit, checked before anything is read."""
        return self._limiter.allow(source)

    def settle(self, source: str, received: Received) -> None:
        """Only refused, duplicate and late callbacks count against the sender's rate: one behind
        a reverse proxy (every provider's callbacks share its address) keeps its genuine wake-ups
        however many jobs end at once, while a flood of guesses or replays is cut off."""
        if received.outcome is Outcome.WOKEN:
            self._limiter.refund(source)

    async def receive(self, provider: str, token: str, headers: Mapping[str, str], body: bytes) -> Received:
        if provider not in self._providers or not token or len(token) > 128:
            return Received(provider, Outcome.UNKNOWN)
        if len(body) > MAX_BODY_BYTES:
            return Received(provider, Outcome.TOO_LARGE)
        now = self._clock()
        if provider == "fal":
            keys = await self._fal_keys.keys() if self._fal_keys is not None else None
            if keys is None:
                return Received(provider, Outcome.UNVERIFIABLE)
            if not verify_fal(headers, body, keys, now):
                return Received(provider, Outcome.FORGED)
        elif provider == "gemini":
            verdict = await self._check_gemini(token, headers)
            if verdict is not None:
                return Received(provider, verdict)
        job_id = await store.job_for_token(self._db, provider, token)
        if job_id is None:
            return Received(provider, Outcome.UNKNOWN)
        seen = (job_id, hashlib.sha256(body).hexdigest())
        if seen in self._seen:
            return Received(provider, Outcome.DUPLICATE, job_id)
        self._seen[seen] = None
        while len(self._seen) > 10_000:
            self._seen.popitem(last=False)
        # a replayed or repeated callback brings a job's check forward at most once per min_gap
        # (pokes of one job are spaced by at least min_gap; one already ahead stands)
        last = self._poked.pop(job_id, None)
        if last is None or now >= last + self._min_gap:
            at = now
        elif last > now:
            at = last
        else:
            at = last + self._min_gap
        self._poked[job_id] = at
        while len(self._poked) > 10_000:
            self._poked.popitem(last=False)
        if not await store.poke(self._db, job_id, at, now):
            return Received(provider, Outcome.LATE, job_id)
        if self._woken is not None:
            self._woken(job_id)
        self._wake()
        # another process may hold the job (PostgreSQL, several processes): wake every loop
        await self._db.notify(WAKE_CHANNEL)
        return Received(provider, Outcome.WOKEN, job_id)

    async def _check_gemini(self, token: str, headers: Mapping[str, str]) -> Outcome | None:
        """None when the JWT holds; else FORGED, or UNVERIFIABLE when Google's keys are out of reach."""
        if self._gemini_keys is None or self._public_url is None:
            return Outcome.UNVERIFIABLE
        kid = gemini_kid(headers)
        if kid is None:
            return Outcome.FORGED
        keys = await self._gemini_keys.keys()
        if keys is not None and kid not in keys:
            keys = await self._gemini_keys.keys(refresh=True)  # rotated since we fetched them?
        if keys is None:
            return Outcome.UNVERIFIABLE
        audience = callback_url(self._public_url, "gemini", token)
        if not verify_gemini(headers, keys, audience, self._gemini_issuer):
            return Outcome.FORGED
        return None
