"""`python -m bot`: run Castbot."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import discord
import httpx
from pydantic import ValidationError

from bot import __version__
from bot.app import Castbot, build_services, configure_discord_endpoints
from bot.config import Settings
from bot.db import MigrationError, open_database
from bot.log import setup_logging
from bot.providers.registry import ProviderNotConfigured, build_providers
from bot.web import extra_routes
from bot.web.server import serve

log = logging.getLogger("bot")

SHUTDOWN_SECONDS = 10.0
EXIT_CONFIG = 2
# Gateway close codes that mean the shard settings are wrong: retrying cannot help.
SHARD_REFUSALS = {
    4010: "Discord refused the shard (SHARD_COUNT / SHARD_IDS): every id must be below the count",
    4011: "Discord requires more shards: raise SHARD_COUNT, or unset it to use Discord's recommendation",
}


def _fail(message: str, code: int = EXIT_CONFIG) -> int:
    print(f"castbot: {message}", file=sys.stderr)
    return code


def load_settings() -> Settings | str:
    """Settings, or one line saying what is wrong (never the offending values: they may be secrets)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper() or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        return f"invalid configuration: {problems}"


@asynccontextmanager
async def open_bot(settings: Settings, **bot_options: Any) -> AsyncIterator[Castbot]:
    """Everything the bot needs, opened in order and closed in reverse: the data folder, the
    migrated database, the shared HTTP client, the provider adapters and, when HTTP_PORT is set,
    the HTTP endpoint (bot/web/). Tests use this too."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    configure_discord_endpoints(settings)
    async with contextlib.AsyncExitStack() as stack:
        url = settings.database_url.get_secret_value() if settings.database_url is not None else None
        db = await open_database(url, settings.database_path)
        stack.push_async_callback(db.close)
        version = await db.migrate()
        log.info("Castbot %s, database schema %d, data in %s", __version__, version, settings.data_dir)
        timeout = httpx.Timeout(30.0, connect=10.0)
        http_client = await stack.enter_async_context(httpx.AsyncClient(timeout=timeout, follow_redirects=False))
        providers = build_providers(settings, http_client)
        for provider in providers.values():
            stack.push_async_callback(provider.aclose)
        services = build_services(settings, db, http_client, providers)
        rate_limits = services.metrics.rate_limit_handler()  # discord.py logs its 429s there
        logging.getLogger("discord.http").addHandler(rate_limits)
        stack.callback(logging.getLogger("discord.http").removeHandler, rate_limits)
        bot = Castbot(settings, db, http_client, services, providers, **bot_options)
        if settings.http_port is not None:
            # closed first on the way out: no request reaches a closing database
            server = await stack.enter_async_context(serve(bot, settings.http_host, settings.http_port, extra_routes()))
            bot.http_url = server.url
        yield bot


async def run(settings: Settings) -> int:
    assert settings.discord_token is not None
    try:
        async with open_bot(settings) as bot:
            return await _run_until_stopped(bot, settings.discord_token.get_secret_value())
    except MigrationError as exc:
        return _fail(str(exc), 1)
    except ProviderNotConfigured as exc:
        return _fail(str(exc))
    except (OSError, sqlite3.Error) as exc:
        where = "at DATABASE_URL" if settings.database_url is not None else f"at {settings.database_path}"
        return _fail(f"cannot open the database {where}: {exc}", 1)


async def _run_until_stopped(bot: Castbot, token: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with bot:
        runner = asyncio.create_task(bot.start(token), name="discord")
        stopper = asyncio.create_task(stop.wait(), name="stop-signal")
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stopper.done():
            log.info("shutting down")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(bot.close(), SHUTDOWN_SECONDS)
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner
            return 0
        stopper.cancel()
        try:
            runner.result()
        except discord.LoginFailure:
            return _fail("Discord refused the token (DISCORD_TOKEN): check it in the developer portal")
        except discord.ConnectionClosed as exc:
            if exc.code in SHARD_REFUSALS:
                return _fail(SHARD_REFUSALS[exc.code])
            log.exception("the gateway closed the connection")
            return 1
        except Exception:
            log.exception("the bot stopped on an unexpected error")
            return 1
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Castbot: character-consistent AI video")
    parser.add_argument(
        "command", nargs="?", default="run", choices=["run", "demo"], help="run the bot (default), or an offline demo"
    )
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="demo: where to write its output")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from bot.demo import main as demo_main

        return demo_main(args.out)
    settings = load_settings()
    if isinstance(settings, str):
        return _fail(settings)
    if settings.discord_token is None or not settings.discord_token.get_secret_value().strip():
        return _fail("DISCORD_TOKEN is not set; put it in the environment or in .env (see README)")
    setup_logging(settings.log_level, settings.secret_values())
    return asyncio.run(run(settings))


if __name__ == "__main__":
    sys.exit(main())
