"""Shared fixtures: the Discord sandbox and the real Castbot started against it, a migrated
database, an HTTP client for the loopback simulators, and a starter that closes simulators."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import pytest

from bot.__main__ import open_bot
from bot.app import Castbot
from bot.config import Settings
from bot.db import Database, SqliteDatabase
from discord_sandbox import MANAGE_GUILD, Channel, DiscordSandbox, Guild, Member
from discord_sandbox.spec import SCHEMAS_CHECKED
from tests.postgres import ENGINES, MISSING, PostgresServer, find_bin_dir, open_test_database

SANDBOX_TOKEN = "sandbox-bot-token"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "allow_pending(reason): the test deliberately leaves an interaction unanswered (say why)",
    )
    config.addinivalue_line(
        "markers",
        "allow_spec_violation(reason): the test deliberately sends Discord a request it refuses (say why)",
    )


def _opted_out(request: pytest.FixtureRequest, name: str) -> bool:
    marker = request.node.get_closest_marker(name)
    if marker is None:
        return False
    reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
    assert str(reason).strip(), f"@pytest.mark.{name} needs a reason"
    return True


@pytest.fixture
async def sandbox(request: pytest.FixtureRequest) -> AsyncIterator[DiscordSandbox]:
    """The Discord sandbox, with two standing checks when the test ends: every request the bot
    sent was one Discord accepts (its OpenAPI description and documented limits), and every
    interaction was answered (acknowledged within 3 s, and a deferral followed up or edited)."""
    assert SCHEMAS_CHECKED, "the sandbox checks schemas with jsonschema-rs: pip install -e '.[dev]'"
    async with DiscordSandbox(token=SANDBOX_TOKEN) as sb:
        yield sb
        problems = []
        if sb.violations and not _opted_out(request, "allow_spec_violation"):
            problems += [f"Discord would refuse {v}" for v in sb.violations]
        unanswered = sb.unanswered()
        if unanswered and sb.pending_allowed is None and not _opted_out(request, "allow_pending"):
            problems += unanswered
        if problems:
            pytest.fail("\n".join(problems[:20]), pytrace=False)


@dataclass
class World:
    """A guild with a channel, its owner (Manage Server), a plain member, and a second guild."""

    guild: Guild
    channel: Channel
    admin: Member
    member: Member
    other_guild: Guild
    other_channel: Channel
    other_member: Member


@pytest.fixture
def world(sandbox: DiscordSandbox) -> World:
    guild = sandbox.add_guild("Castle", premium_tier=0)
    other = sandbox.add_guild("Elsewhere", premium_tier=0)
    return World(
        guild=guild,
        channel=guild.add_text_channel("general"),
        admin=guild.add_member("ada", permissions=MANAGE_GUILD),
        member=guild.add_member("bob"),
        other_guild=other,
        other_channel=other.add_text_channel("lobby"),
        other_member=other.add_member("cyd"),
    )


@dataclass
class BotHarness:
    """Starts the real bot (the same open_bot() as `python -m bot`) against the sandbox."""

    sandbox: DiscordSandbox
    data_dir: Path
    monkeypatch: pytest.MonkeyPatch
    overrides: dict[str, Any] = field(default_factory=dict)
    bot: Castbot | None = None
    _stack: contextlib.AsyncExitStack | None = None
    _task: asyncio.Task[None] | None = None

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "discord_token": SANDBOX_TOKEN,
            "discord_api_base": self.sandbox.api_base,
            "discord_gateway_url": self.sandbox.gateway_url,
            "data_dir": self.data_dir,
            "providers": "local",
            "local_render_seconds": 0.2,
            "poll_min_seconds": 0.05,
            "poll_max_seconds": 0.5,
        }
        values.update(self.overrides)
        values.update(overrides)
        return Settings(_env_file=None, **values)

    async def start(self, **overrides: Any) -> Castbot:
        assert self.bot is None, "already running"
        # restores discord.py's class-level endpoints after the test
        self.sandbox.patch_discord(self.monkeypatch)
        stack = contextlib.AsyncExitStack()
        bot = await stack.enter_async_context(open_bot(self.settings(**overrides), guild_ready_timeout=0.05))
        task = asyncio.create_task(bot.start(SANDBOX_TOKEN), name="castbot")
        self._stack, self._task, self.bot = stack, task, bot
        ready = asyncio.create_task(self.sandbox.wait_ready(timeout=10))
        await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            await self.stop()
            task.result()  # re-raise why the bot died
            raise AssertionError("the bot stopped before connecting")
        await ready
        await asyncio.wait_for(bot.wait_until_ready(), 10)
        return bot

    async def stop(self) -> None:
        bot, task, stack = self.bot, self._task, self._stack
        self.bot = self._task = self._stack = None
        if bot is not None:
            await asyncio.wait_for(bot.close(), 10)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
        if stack is not None:
            await stack.aclose()

    async def restart(self, **overrides: Any) -> Castbot:
        await self.stop()
        return await self.start(**overrides)


@pytest.fixture
async def harness(
    sandbox: DiscordSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[BotHarness]:
    h = BotHarness(sandbox=sandbox, data_dir=tmp_path / "data", monkeypatch=monkeypatch)
    yield h
    if h.bot is not None:
        await sandbox.wait_answered()  # answers still in flight when the test ended
    await h.stop()


@pytest.fixture
async def castbot(harness: BotHarness, world: World) -> Castbot:
    """The bot running with the default (local) provider, after `world` exists."""
    return await harness.start()


@pytest.fixture(params=ENGINES)
async def store_engine(request: pytest.FixtureRequest, harness: BotHarness) -> AsyncIterator[str]:
    """The harness's bot on each store engine: its SQLite file in DATA_DIR, or a fresh PostgreSQL
    database (the bot migrates it at start) that every start and restart uses, dropped afterwards."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = await server.new_database(migrated=False)
    harness.overrides["database_url"] = url
    try:
        yield "postgresql"
    finally:
        if harness.bot is not None:
            await harness.sandbox.wait_answered()
        await harness.stop()  # before its database is dropped
        await server.drop_database(url)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for this test process (one per xdist worker), stopped at the end.

    Skipped, with what is missing, only where no PostgreSQL can be found; CASTBOT_REQUIRE_POSTGRES=1
    (set by .ci/run) turns that skip into a failure."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        if os.environ.get("CASTBOT_REQUIRE_POSTGRES"):
            pytest.fail(MISSING, pytrace=False)
        pytest.skip(MISSING)
    server = PostgresServer(bin_dir)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    """A migrated SQLite database, for tests of what only the SQLite file does (its locks, its path)."""
    database = await Database.open(tmp_path / "castbot.sqlite3")
    await database.migrate()
    yield database
    await database.close()


@pytest.fixture(params=ENGINES)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database, once on each engine: SQLite in the test's own folder, and PostgreSQL."""
    async with open_test_database(request.param, request, tmp_path) as database:
        yield database


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the loopback simulators (no proxy from the environment)."""
    async with httpx.AsyncClient(trust_env=False) as c:
        yield c


class Simulator(Protocol):
    async def start(self) -> Any: ...
    async def close(self) -> None: ...


SimT = TypeVar("SimT", bound=Simulator)


class Simulators:
    """Starts provider simulators for a test and closes them, last started first, when it ends."""

    def __init__(self) -> None:
        self._started: list[Simulator] = []

    async def start(self, sim: SimT) -> SimT:
        await sim.start()
        self._started.append(sim)
        return sim

    async def close(self) -> None:
        while self._started:
            await self._started.pop().close()


@pytest.fixture
async def sims() -> AsyncIterator[Simulators]:
    """`await sims.start(OpenAISim(...))`: each module states its simulator's parameters."""
    started = Simulators()
    yield started
    await started.close()
