"""Callbacks as wake-ups: fal's signature (the reference vector), Gemini's JWT, the rate limit, and a verified
callback that only moves its own job's next check, at most once per gap however often it comes."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import RSAAlgorithm

from bot.db import Database
from bot.services.webhooks import (
    Outcome,
    TokenBucket,
    WebhookService,
    ed25519_keys,
    fal_key_set,
    fal_message,
    gemini_key_set,
    rs256_keys,
    verify_fal,
)

VECTOR_JWKS = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg"}]}
VECTOR_BODY = (
    b'{"request_id":"req-1","gateway_request_id":"req-1","status":"OK",'
    b'"payload":{"video":{"url":"https://v3b.fal.media/files/x/out.mp4"}}}'
)
VECTOR_HEADERS = {
    "x-fal-webhook-request-id": "req-1",
    "x-fal-webhook-user-id": "user-123",
    "x-fal-webhook-timestamp": "1781080794",
    "x-fal-webhook-signature": "d6216a0a505c5ba6ce6ab38eab6431e668dd1187127901b8823ec74b7f659bed"
    "4683eea4d2b624e105fffa341ac6f0c4b989fba238275d6c21ea688b02ecce00",
}
VECTOR_TS = 1781080794.0


def test_the_reference_vector_verifies() -> None:
    keys = ed25519_keys(VECTOR_JWKS)
    assert len(keys) == 1
    assert fal_message("req-1", "user-123", "1781080794", VECTOR_BODY).endswith(
        b"f1665d04370e7e87d9b1c6f388c3c8cf70237007b1cd3e9cd91bbc8b83744eda"
    )
    assert verify_fal(VECTOR_HEADERS, VECTOR_BODY, keys, VECTOR_TS + 299)
    # the private key of the vector (bytes 0..31) signs to the same bytes
    private = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    signature = private.sign(fal_message("req-1", "user-123", "1781080794", VECTOR_BODY)).hex()
    assert signature == VECTOR_HEADERS["x-fal-webhook-signature"]


def test_a_changed_body_header_key_or_late_timestamp_fails() -> None:
    keys = ed25519_keys(VECTOR_JWKS)
    assert not verify_fal(VECTOR_HEADERS, VECTOR_BODY + b" ", keys, VECTOR_TS)
    assert not verify_fal({**VECTOR_HEADERS, "x-fal-webhook-user-id": "user-124"}, VECTOR_BODY, keys, VECTOR_TS)
    assert not verify_fal(VECTOR_HEADERS, VECTOR_BODY, keys, VECTOR_TS + 301)
    assert not verify_fal(VECTOR_HEADERS, VECTOR_BODY, keys, VECTOR_TS - 301)
    assert not verify_fal({**VECTOR_HEADERS, "x-fal-webhook-signature": "zz"}, VECTOR_BODY, keys, VECTOR_TS)
    other = Ed25519PrivateKey.generate().public_key()
    assert not verify_fal(VECTOR_HEADERS, VECTOR_BODY, [other], VECTOR_TS)
    assert not verify_fal({}, VECTOR_BODY, keys, VECTOR_TS)
    assert ed25519_keys({"keys": [{"kty": "RSA"}, {"kty": "OKP", "crv": "Ed25519", "x": "!!"}, 3]}) == []


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=20, burst=50, clock=lambda: now[0], size=2)
    assert sum(bucket.allow("a") for _ in range(1000)) == 50
    assert bucket.allow("b")  # another source has its own bucket
    now[0] += 1.0
    assert sum(bucket.allow("a") for _ in range(1000)) == 20
    bucket.refund("a")  # a request that woke a job is given its token back
    assert bucket.allow("a") and not bucket.allow("a")


async def _job(db: Database, provider: str, token: str, state: str = "running", next_poll_at: float = 1000.0) -> int:
    async with db.transaction() as conn:
        cursor = await conn.execute(
            "INSERT INTO jobs (guild_id, channel_id, user_id, prompt, request_json, providers, provider, state,"
            " estimate_micros, global_period, guild_period, member_period, next_poll_at, created_at, updated_at,"
            " callback_token) VALUES (1, 2, 3, 'p', '{}', ?, ?, ?, 0, 'g', 'g', 'm', ?, 0, 0, ?) RETURNING id",
            (provider, provider, state, next_poll_at, token),
        )
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0])


async def _next_poll(db: Database, job_id: int) -> float:
    row = await db.fetchone("SELECT next_poll_at FROM jobs WHERE id = ?", (job_id,))
    assert row is not None
    return float(row["next_poll_at"])


async def test_a_callback_moves_only_its_own_jobs_next_check(db: Database) -> None:
    now = [100.0]
    woken: list[int] = []
    service = WebhookService(db, lambda: woken.append(1), clock=lambda: now[0], min_gap=2.0)
    mine = await _job(db, "kling", "tok-a")
    other = await _job(db, "kling", "tok-b")
    before = await db.fetchall("SELECT * FROM jobs ORDER BY id")
    received = await service.receive("kling", "tok-a", {}, b"{}")
    assert (received.outcome, received.job_id, received.status) == (Outcome.WOKEN, mine, 200)
    assert await _next_poll(db, mine) == 100.0 and await _next_poll(db, other) == 1000.0
    after = await db.fetchall("SELECT * FROM jobs ORDER BY id")
    changed = [k for b, a in zip(before, after, strict=True) for k, v in dict(b).items() if v != a[k]]
    assert changed == ["next_poll_at"]
    assert woken == [1]
    # fal unverifiable, the wrong provider, an unknown one, an unknown token, a body too large
    assert (await service.receive("fal", "tok-a", {}, b"{}")).status == 503  # fal keys unknown: fal retries
    assert (await service.receive("gemini", "tok-a", {}, b"{}")).status == 503  # Google's keys unknown
    assert (await service.receive("kling", "nope", {}, b"{}")).status == 404
    assert (await service.receive("openai", "tok-a", {}, b"{}")).status == 404
    assert (await service.receive("kling", "tok-a", {}, b"x" * (64 * 1024 + 1))).status == 413


async def test_replays_bring_a_job_forward_at_most_once_per_gap(db: Database) -> None:
    now = [100.0]
    service = WebhookService(db, lambda: None, clock=lambda: now[0], min_gap=2.0)
    job = await _job(db, "kling", "tok")
    outcomes = [(await service.receive("kling", "tok", {}, b"{}")).outcome for _ in range(100)]
    assert outcomes == [Outcome.WOKEN] + [Outcome.DUPLICATE] * 99  # the same body again: a replay
    assert await _next_poll(db, job) == 100.0
    # the tracker looked and pushed the next check out; other bodies within the gap wait for its end
    await db.execute("UPDATE jobs SET next_poll_at = 130 WHERE id = ?", (job,))
    now[0] = 101.0
    for i in range(100):
        assert (await service.receive("kling", "tok", {}, b'{"n": %d}' % i)).outcome == Outcome.WOKEN
    assert await _next_poll(db, job) == 102.0


async def test_a_finished_jobs_callback_is_late_and_changes_nothing(db: Database) -> None:
    service = WebhookService(db, lambda: None, clock=lambda: 100.0)
    job = await _job(db, "kling", "tok", state="delivered", next_poll_at=500.0)
    assert (await service.receive("kling", "tok", {}, b"{}")).outcome == Outcome.LATE
    assert await _next_poll(db, job) == 500.0


async def test_fal_callbacks_are_checked_against_the_cached_jwks(db: Database) -> None:
    fetches: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        fetches.append(str(request.url))
        return httpx.Response(200, json=VECTOR_JWKS)

    now = [VECTOR_TS]
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        keys = fal_key_set(http, "http://rest.example/.well-known/jwks.json", clock=lambda: now[0])
        service = WebhookService(db, lambda: None, fal_keys=keys, clock=lambda: now[0])
        job = await _job(db, "fal", "tok")
        assert (await service.receive("fal", "tok", VECTOR_HEADERS, VECTOR_BODY)).outcome == Outcome.WOKEN
        forged = json.dumps({"request_id": "req-1", "status": "OK"}).encode()
        assert (await service.receive("fal", "tok", VECTOR_HEADERS, forged)).outcome == Outcome.FORGED
        now[0] += 301
        assert (await service.receive("fal", "tok", VECTOR_HEADERS, VECTOR_BODY)).outcome == Outcome.FORGED
        assert fetches == ["http://rest.example/.well-known/jwks.json"]  # cached
        now[0] += 24 * 3600
        await service.receive("fal", "tok", VECTOR_HEADERS, VECTOR_BODY)
        assert len(fetches) == 2  # refreshed after a day
        assert job


async def test_a_callback_during_a_status_read_is_not_lost(db: Database) -> None:
    """The tracker read the job (still running) just before the callback: its write of the next
    look (POLL_MAX away) keeps the callback's sooner one."""
    from bot.domain.job_state import JobState
    from bot.store import jobs as jobs_store

    service = WebhookService(db, lambda: None, clock=lambda: 100.0)
    job = await _job(db, "kling", "tok", next_poll_at=99.0)  # due: the tracker is reading it
    assert (await service.receive("kling", "tok", {}, b"{}")).outcome == Outcome.WOKEN
    row = jobs_store.Progress(job, JobState.RUNNING, JobState.RUNNING, None, 130.0, seen_next_poll_at=99.0)
    async with db.transaction() as conn:
        await jobs_store.record_progress(conn, [row], 100.5)
    assert await _next_poll(db, job) == 100.0
    # without a callback in between, the tracker's next look stands
    async with db.transaction() as conn:
        await jobs_store.record_progress(conn, [replace(row, seen_next_poll_at=100.0)], 101.0)
    assert await _next_poll(db, job) == 130.0


# --- Gemini: an RS256 JWT for the exact URL the job was given ------------------------------------

PUBLIC = "https://castbot.example"


@functools.cache
def _rsa(name: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwks(*kids: str) -> dict[str, Any]:
    keys = [json.loads(RSAAlgorithm.to_jwk(_rsa(kid).public_key())) | {"kid": kid, "use": "sig"} for kid in kids]
    return {"keys": keys}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(alg: str, kid: str, secret: bytes = b"") -> dict[str, str]:
    """A JWT for tok-a's URL under an algorithm of the sender's choosing ("none": no signature)."""
    head = _b64(json.dumps({"alg": alg, "typ": "JWT", "kid": kid}).encode())
    claims = _b64(json.dumps({"aud": f"{PUBLIC}/hooks/gemini/tok-a", "exp": 2**40}).encode())
    mac = _b64(hmac.new(secret, f"{head}.{claims}".encode(), hashlib.sha256).digest()) if secret else ""
    return {"webhook-signature": f"{head}.{claims}.{mac}"}


def _signed(
    token: str, *, kid: str = "k1", aud: str | None = None, exp: float | None = None, **claims: Any
) -> dict[str, str]:
    now = time.time()
    body = {"aud": aud or f"{PUBLIC}/hooks/gemini/{token}", "exp": int(exp or now + 300), "iat": int(now)} | claims
    return {"webhook-signature": jwt.encode(body, _rsa(kid), algorithm="RS256", headers={"kid": kid})}


@pytest.fixture
async def google() -> AsyncIterator[tuple[list[dict[str, Any]], list[str], httpx.AsyncClient]]:
    """A JWKS endpoint whose document the test sets (`published[0]`), recording each fetch."""
    published: list[dict[str, Any]] = [_jwks("k1")]
    fetches: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        fetches.append(str(request.url))
        return httpx.Response(200, json=published[0]) if published[0] else httpx.Response(503)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        yield published, fetches, http


async def test_a_gemini_callback_needs_a_jwt_for_its_own_url(db: Database, google: Any) -> None:
    _, fetches, http = google
    now = [1000.0]
    keys = gemini_key_set(http, "http://google.example/.well-known/jwks.json", clock=lambda: now[0])
    service = WebhookService(db, lambda: None, gemini_keys=keys, public_url=PUBLIC, clock=lambda: now[0])
    mine = await _job(db, "gemini", "tok-a")
    await _job(db, "gemini", "tok-b")
    assert (await service.receive("gemini", "tok-a", _signed("tok-a"), b"{}")).outcome is Outcome.WOKEN
    refused = [
        {},  # no signature
        {"webhook-signature": "not-a-jwt"},
        _signed("tok-b"),  # signed for the other job's URL: it wakes neither
        _signed("tok-a", aud=f"{PUBLIC}/hooks/fal/tok-a"),
        _signed("tok-a", exp=time.time() - 301),  # expired, past the clock leeway
        _signed("tok-a", kid="stranger"),  # a key Google never published
        _unsigned("none", "k1"),  # alg "none"
    ]
    for headers in refused:
        assert (await service.receive("gemini", "tok-a", headers, b"{}")).outcome is Outcome.FORGED, headers
    # HS256 "signed" with the public key's text (PyJWT will not make one): refused, the algorithm is ours
    public_pem = _rsa("k1").public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    hs = _unsigned("HS256", "k1", public_pem)
    assert (await service.receive("gemini", "tok-a", hs, b"{}")).outcome is Outcome.FORGED
    # a kid we do not know asks for a fresh copy at most once a minute: a forger cannot make us fetch
    assert len(fetches) == 1
    assert await _next_poll(db, mine) == 1000.0


async def test_gemini_keys_rotate_and_an_outage_answers_503(db: Database, google: Any) -> None:
    published, fetches, http = google
    now = [1000.0]
    keys = gemini_key_set(http, "http://google.example/.well-known/jwks.json", clock=lambda: now[0])
    service = WebhookService(db, lambda: None, gemini_keys=keys, public_url=PUBLIC, clock=lambda: now[0])
    await _job(db, "gemini", "tok")
    assert (await service.receive("gemini", "tok", _signed("tok"), b"{}")).outcome is Outcome.WOKEN
    published[0] = _jwks("k1", "k2")  # Google rotates in a new key
    now[0] += 61
    assert (await service.receive("gemini", "tok", _signed("tok", kid="k2"), b"1")).outcome is Outcome.WOKEN
    assert len(fetches) == 2
    published[0] = {}  # Google's keys out of reach: cached ones still serve, none at all answers 503
    now[0] += 61
    assert (await service.receive("gemini", "tok", _signed("tok", kid="k3"), b"2")).outcome is Outcome.FORGED
    fresh = gemini_key_set(http, "http://google.example/.well-known/jwks.json", clock=lambda: now[0])
    cold = WebhookService(db, lambda: None, gemini_keys=fresh, public_url=PUBLIC, clock=lambda: now[0])
    received = await cold.receive("gemini", "tok", _signed("tok"), b"3")
    assert (received.outcome, received.status) == (Outcome.UNVERIFIABLE, 503)


async def test_gemini_issuer_is_checked_when_configured(db: Database, google: Any) -> None:
    _, _, http = google
    keys = gemini_key_set(http, "http://google.example/.well-known/jwks.json")
    issuer = "https://generativelanguage.googleapis.com"
    service = WebhookService(db, lambda: None, gemini_keys=keys, public_url=PUBLIC, gemini_issuer=issuer)
    await _job(db, "gemini", "tok")
    assert (await service.receive("gemini", "tok", _signed("tok", iss=issuer), b"{}")).outcome is Outcome.WOKEN
    forged = _signed("tok", iss="https://evil.example")
    assert (await service.receive("gemini", "tok", forged, b"1")).outcome is Outcome.FORGED
    assert (await service.receive("gemini", "tok", _signed("tok"), b"2")).outcome is Outcome.FORGED  # no iss


def test_rs256_keys_skips_what_it_cannot_use() -> None:
    good = _jwks("k1")["keys"][0]
    document = {
        "keys": [
            good,
            {**good, "kid": None},
            {**good, "kid": "e", "use": "enc"},
            {"kty": "OKP"},
            {**good, "kid": "bad", "n": "!!"},
        ]
    }
    assert set(rs256_keys(document)) == {"k1"}
    assert rs256_keys([]) == {} and rs256_keys({"keys": "x"}) == {}
