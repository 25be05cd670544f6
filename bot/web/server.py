"""The bot's one HTTP server: `/healthz` and `/metrics` for the operator, and whatever routes
other modules register (the providers' webhooks, `bot/web/__init__.py extra_routes`).

Off unless HTTP_PORT is set. It runs inside the bot's process and event loop, opened after the
bot is built and closed before it (`bot/__main__.py open_bot`). /healthz and /metrics are for
the operator's monitoring, not the internet: README *HTTP endpoint* says how to keep them private
behind a reverse proxy.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from bot.app import Castbot

log = logging.getLogger(__name__)

# Adds routes to the application; called once, before the server starts.
RouteRegistrar = Callable[[web.Application, Castbot], None]

BOT_KEY = web.AppKey("castbot", Castbot)
SHUTDOWN_SECONDS = 3.0


class GatewayWatch:
    """Whether every Discord shard this process runs is up: READY or RESUMED seen on it since its
    last disconnect. (discord.py keeps `is_ready()` true across a dropped connection while it
    reconnects, and with several shards one may be down while the others serve.)"""

    def __init__(self, bot: Castbot) -> None:
        self._bot = bot
        self.up: set[int] = set()
        bot.add_listener(self._up, "on_shard_ready")
        bot.add_listener(self._up, "on_shard_resumed")
        bot.add_listener(self._down, "on_shard_disconnect")

    async def _up(self, shard_id: int) -> None:
        self.up.add(shard_id)

    async def _down(self, shard_id: int) -> None:
        self.up.discard(shard_id)

    def shards(self) -> dict[int, str]:
        """Each shard this process runs: "ok", or why not."""
        out: dict[int, str] = {}
        for shard_id in self._bot.own_shard_ids:
            shard = self._bot.get_shard(shard_id)
            if shard is None:
                out[shard_id] = "not connected yet"
            elif shard_id not in self.up:
                out[shard_id] = "disconnected"
            elif not math.isfinite(shard.latency):
                out[shard_id] = "no heartbeat"
            else:
                out[shard_id] = "ok"
        return out

    def check(self) -> tuple[bool, str, dict[int, str]]:
        """(healthy, what is wrong or "ok", each shard's state)."""
        bot = self._bot
        shards = self.shards()
        if bot.is_closed():
            return False, "closed", shards
        down = "; ".join(f"shard {i} {why}" for i, why in shards.items() if why != "ok")
        if not bot.is_ready():
            return False, f"not ready yet: {down}" if down else "not ready yet", shards
        if down:
            return False, down, shards
        return True, "ok", shards


WATCH_KEY = web.AppKey("gateway", GatewayWatch)


async def healthz(request: web.Request) -> web.Response:
    """200 when every shard this process runs is connected, the database takes a write and the
    tracking loop ran recently; otherwise 503. Either way a small JSON body names each part's state
    (and each shard's)."""
    bot = request.app[BOT_KEY]
    liveness = bot.services.liveness
    gateway_ok, gateway, shards = request.app[WATCH_KEY].check()
    database = await liveness.database()
    tracking = liveness.tracking()
    checks = {
        "gateway": {"ok": gateway_ok, "detail": gateway, "shards": {str(i): why for i, why in shards.items()}},
        "database": {"ok": database.ok, "detail": database.detail},
        "tracking": {"ok": tracking.ok, "detail": tracking.detail},
    }
    healthy = gateway_ok and database.ok and tracking.ok
    failed = [name for name, check in checks.items() if not check["ok"]]
    body = {"status": "ok" if healthy else "fail", "failed": failed, "checks": checks}
    return web.json_response(body, status=200 if healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format, from the bot's own registry (bot/services/metrics.py)."""
    registry = request.app[BOT_KEY].services.metrics
    await registry.refresh()
    response = web.Response(body=registry.render())
    response.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
    return response


def build_app(bot: Castbot, extra_routes: Sequence[RouteRegistrar] = ()) -> web.Application:
    """The application: /healthz, /metrics, then each registrar's routes."""
    app = web.Application(client_max_size=1024**2)
    app[BOT_KEY] = bot
    app[WATCH_KEY] = GatewayWatch(bot)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    for register in extra_routes:
        register(app, bot)
    return app


@dataclass(frozen=True)
class WebServer:
    host: str
    port: int  # the bound port (HTTP_PORT=0 asks for a free one)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"


@contextlib.asynccontextmanager
async def serve(
    bot: Castbot, host: str, port: int, extra_routes: Sequence[RouteRegistrar] = ()
) -> AsyncIterator[WebServer]:
    """Listen on host:port until the block ends; then stop accepting and close within
    SHUTDOWN_SECONDS (requests in flight are given that long)."""
    app = build_app(bot, extra_routes)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        server = WebServer(host, int(bound))
        log.info("HTTP endpoint on %s:%d (/healthz, /metrics)", host, server.port)
        yield server
    finally:
        await runner.cleanup()
