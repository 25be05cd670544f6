"""Inbound HTTP: the operator's /healthz and /metrics, and the providers' webhooks.

An adapter like the cogs: it turns requests into calls on the services (`bot.services`) and
answers; it never reaches the store or the database itself. `server.py` runs the one aiohttp
server (off unless HTTP_PORT is set); other modules add routes through `extra_routes()`.
"""

from __future__ import annotations

from bot.web.server import RouteRegistrar


def extra_routes() -> list[RouteRegistrar]:
    """Route registrars beyond /healthz and /metrics, each called once with the aiohttp
    application and the bot (`server.build_app`). The webhook routes go here."""
    from bot.web import webhooks  # imports the server's types: loaded once the package is

    return [webhooks.register]
