"""`POST /hooks/{provider}/{token}`: the providers' callbacks, as wake-ups only.

The checks and the poke are `bot.services.webhooks`; this route only turns a request into a call
on it, cheapest refusal first: the sender's rate (429), the body's size (413, never read whole),
then the service's verdict (404 unknown token, 401 a bad fal signature, 503 fal's keys not
reachable, 200 taken). Each answer is counted in the metrics by provider and outcome.
"""

from __future__ import annotations

from aiohttp import web

from bot.app import Castbot
from bot.services.webhooks import HOOK_PATH, HTTP_STATUS, MAX_BODY_BYTES, Outcome, WebhookService

BOT_KEY = web.AppKey("castbot_hooks", Castbot)
CHUNK = 16 * 1024


def register(app: web.Application, bot: Castbot) -> None:
    app[BOT_KEY] = bot
    app.router.add_post(HOOK_PATH + "/{provider}/{token}", receive)


async def _body(request: web.Request) -> bytes | None:
    """The body, or None past MAX_BODY_BYTES (read no further than one chunk beyond it)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return None
    parts: list[bytes] = []
    size = 0
    while chunk := await request.content.read(CHUNK):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _answer(bot: Castbot, provider: str, outcome: Outcome) -> web.Response:
    bot.services.metrics.webhook_received(provider if provider in KNOWN else "other", outcome.value)
    status = HTTP_STATUS[outcome]
    headers = {"Retry-After": "1"} if outcome is Outcome.RATE_LIMITED else {}
    if outcome is Outcome.TOO_LARGE:
        headers["Connection"] = "close"  # the rest of that body is not read
    return web.json_response({"outcome": outcome.value}, status=status, headers=headers)


KNOWN = frozenset({"fal", "kling", "gemini"})


async def receive(request: web.Request) -> web.Response:
    bot = request.app[BOT_KEY]
    service: WebhookService = bot.services.webhooks
    provider = request.match_info["provider"]
    source = request.remote or "unknown"
    if not service.admit(source):
        return _answer(bot, provider, Outcome.RATE_LIMITED)
    body = await _body(request)
    if body is None:
        return _answer(bot, provider, Outcome.TOO_LARGE)
    headers = {k.lower(): v for k, v in request.headers.items()}
    received = await service.receive(provider, request.match_info["token"], headers, body)
    service.settle(source, received)
    return _answer(bot, provider, received.outcome)
