"""Benchmark 3: admission throughput, and no overspend.

The production wiring (`open_bot`: SQLite, the openai adapter's prices, the services) admits
`/generate` requests straight through `GenerationService.admit` - the budget hold in one
BEGIN IMMEDIATE transaction - from 50 concurrent members: first all on one guild (one guild
counter, contended), then spread over 1,000 guilds under a global monthly cap. More requests are
made than the budget allows; the run asserts that exactly the budget's worth was held, that no
counter ever exceeds its limit and that the ledger matches every counter. The database already
holds 50,000 finished jobs, as a server that has been running for a while would.

    .venv/bin/python -m bench.admission            # about 30 s
    .venv/bin/python -m bench.admission --quick    # smoke test
    .venv/bin/python -m bench.admission --legacy-indexes   # before migration 0005
    .venv/bin/python -m bench.admission --postgres         # on a temporary PostgreSQL server
    .venv/bin/python -m bench.admission --database-url postgresql://…   # on yours
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import random
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

import httpx
from pydantic import SecretStr

from bench._common import Summary, bounded, fmt, report, workdir
from bench._pg import BenchPostgres, add_arguments
from bench._seed import legacy_indexes, seed_history
from bot.__main__ import open_bot
from bot.config import Settings
from bot.errors import UserFacingError
from bot.providers.base import GenerationRequest, Orientation, Quality
from bot.providers.openai import OpenAIProvider
from bot.providers.pricing import PriceBook
from bot.services.actors import Actor
from bot.services.budget import BudgetExceeded
from bot.services.generation import DEFAULT_SECONDS, GenerateCommand

OPENAI_KEY = "sk-bench-admission-0123456789"
UNREACHABLE = "http://127.0.0.1:9/v1"  # admission never calls the provider; nothing listens here
MEMBERS_PER_GUILD = 5


@dataclass(frozen=True)
class Config:
    members: int = 50  # concurrent members (coroutines), each admitting one request after another
    one_guild_holds: int = 2000  # the single guild's monthly budget, in holds
    guilds: int = 1000
    global_holds: int = 3000  # the operator's global cap in the many-guild case, in holds
    overshoot: float = 1.25  # requests made = budget x overshoot
    history: int = 50_000  # finished jobs already in the database
    legacy_indexes: bool = False
    postgres: BenchPostgres | None = None  # None: the SQLite file
    processes: int = 1  # bot processes admitting at once (more than one: PostgreSQL only)


QUICK = Config(members=5, one_guild_holds=40, guilds=20, global_holds=60, history=500)


@dataclass
class Outcome:
    name: str
    requests: int
    admitted: int
    refused: Counter[str]
    elapsed: float  # first request to last answer
    holds_elapsed: float  # first request to the last successful hold
    latency_ms: Summary
    capacity: int

    @property
    def holds_per_s(self) -> float:
        return self.admitted / self.holds_elapsed if self.holds_elapsed else float("nan")

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.elapsed if self.elapsed else float("nan")


def hold_of_one_request() -> int:
    """What admission holds for a default /generate on openai (the chain's worst case)."""
    provider = OpenAIProvider(
        httpx.AsyncClient(), api_key=SecretStr(OPENAI_KEY), base_url=UNREACHABLE, prices=PriceBook()
    )
    return provider.estimate(GenerationRequest("x", DEFAULT_SECONDS, Orientation.LANDSCAPE, Quality.STANDARD))


def usd(micros: int) -> str:
    return str(Decimal(micros) / Decimal(1_000_000))


@dataclass
class Share:
    """What one process's members did: counts, latencies, and when (wall clock) they ran."""

    admitted: int
    refused: Counter[str]
    latencies: list[float]
    started: float
    last_hold: float
    ended: float


def settings_for(data_dir: Path, hold: int, global_holds: int | None, url: str | None) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=data_dir,
        providers=("openai",),
        openai_api_key=SecretStr(OPENAI_KEY),
        openai_base_url=UNREACHABLE,
        global_monthly_budget_usd=Decimal(usd(global_holds * hold)) if global_holds else None,
        log_level="WARNING",
        database_url=SecretStr(url) if url else None,
    )


async def run_members(services, askers: list[tuple[int, int]], members: int, first_interaction: int) -> Share:
    """`members` coroutines admitting the `askers`' requests one after another."""
    queue = iter(askers)
    interaction_ids = itertools.count(first_interaction)
    latencies: list[float] = []
    refused: Counter[str] = Counter()
    admitted = 0
    last_hold = 0.0

    async def member() -> None:
        nonlocal admitted, last_hold
        for guild_id, user_id in queue:
            command = GenerateCommand(
                actor=Actor(user_id=user_id, guild_id=guild_id),
                interaction_id=next(interaction_ids),
                channel_id=guild_id + 1,
                locale="en-US",
                prompt="a lighthouse in the fog, the beam turning slowly",
            )
            began = time.perf_counter()
            try:
                await services.generation.admit(command)
            except BudgetExceeded as exc:
                refused[exc.scope] += 1
            except UserFacingError as exc:
                refused[exc.key] += 1
            else:
                admitted += 1
                last_hold = time.time()
            latencies.append((time.perf_counter() - began) * 1000)

    started = time.time()
    await asyncio.gather(*(member() for _ in range(members)))
    return Share(admitted, refused, latencies, started, last_hold, time.time())


def _process_share(
    where: tuple[Path, int, int | None, str | None], askers: list[tuple[int, int]], members: int, first: int, go: float
) -> Share:
    """One more bot process (spawned): the production wiring on the same PostgreSQL database,
    admitting its share of the requests from `go` (wall clock) on."""

    async def main() -> Share:
        async with open_bot(settings_for(*where)) as bot:
            await asyncio.sleep(max(0.0, go - time.time()))
            return await run_members(bot.services, askers, members, first)

    return asyncio.run(main())


async def scenario(
    name: str,
    data_dir: Path,
    config: Config,
    hold: int,
    guilds: list[int],
    guild_holds: int,
    global_holds: int | None,
    capacity: int,
) -> Outcome:
    url = await config.postgres.new_database(data_dir.name) if config.postgres else None
    settings = settings_for(data_dir, hold, global_holds, url)
    async with open_bot(settings) as bot:
        if config.legacy_indexes:
            await legacy_indexes(bot.db)
        members = [(g, g * 100 + 1 + j) for g in guilds for j in range(MEMBERS_PER_GUILD)]
        await seed_history(bot.db, config.history, members)
        services = bot.services
        for guild_id in guilds:
            owner = Actor(user_id=guild_id * 100, guild_id=guild_id, manage_guild=True)
            await services.guilds.update(owner, max_active_per_member=10**6, max_active_per_guild=10**6)
            await services.budget.set_limits(owner, usd(guild_holds * hold))
        requests = int(capacity * config.overshoot)
        rng = random.Random(3)
        # who asks, in order: on one guild each worker is one member; across guilds anyone anywhere
        askers = [
            (guilds[0], guilds[0] * 100 + 1 + i % config.members)
            if len(guilds) == 1
            else (g := rng.choice(guilds), g * 100 + 1 + rng.randrange(MEMBERS_PER_GUILD))
            for i in range(requests)
        ]
        if config.processes == 1:
            shares = [await run_members(services, askers, config.members, 10**15)]
        else:
            # the members split over several bot processes on the same database (this one idles)
            n = config.processes
            loop = asyncio.get_running_loop()
            where = (data_dir, hold, global_holds, url)
            with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
                go = time.time() + 8.0  # every process open before the first request
                futures = [
                    loop.run_in_executor(
                        pool,
                        _process_share,
                        where,
                        askers[k::n],
                        max(1, config.members // n),
                        10**15 + k * 10**9,
                        go,
                    )
                    for k in range(n)
                ]
                shares = list(await asyncio.gather(*futures))
        await check_no_overspend(bot, sum(x.admitted for x in shares), capacity, hold)
    start = min(x.started for x in shares)
    refused: Counter[str] = Counter()
    for x in shares:
        refused.update(x.refused)
    return Outcome(
        name=name + (f", {config.processes} processes" if config.processes > 1 else ""),
        requests=requests,
        admitted=sum(x.admitted for x in shares),
        refused=refused,
        elapsed=max(x.ended for x in shares) - start,
        holds_elapsed=max(max(x.last_hold for x in shares) - start, 1e-9),
        latency_ms=Summary.of([v for x in shares for v in x.latencies]),
        capacity=capacity,
    )


class Overspend(AssertionError):
    pass


def require(condition: bool, message: str) -> None:
    if not condition:  # not `assert`: python -O must not skip the check
        raise Overspend(message)


async def check_no_overspend(bot, admitted: int, capacity: int, hold: int) -> None:
    """The point of the exercise: asserted, not just reported."""
    db = bot.db
    over = await db.fetchall(
        "SELECT scope, scope_id, period_key, limit_micros, held_micros, spent_micros FROM budget_counters"
        " WHERE limit_micros IS NOT NULL AND held_micros + spent_micros > limit_micros"
    )
    require(not over, f"overspend: {[tuple(r) for r in over]}")
    require(admitted == capacity, f"admitted {admitted} requests, the budget allows exactly {capacity}")
    row = await db.fetchone(
        "SELECT COUNT(*), COALESCE(SUM(l.amount_micros), 0) FROM ledger l JOIN jobs j ON j.id = l.job_id"
        " WHERE l.kind = 'hold' AND j.state = 'held'"
    )
    holds = tuple(row) if row is not None else ()
    require(holds == (admitted, admitted * hold), f"ledger holds {holds} for {admitted} admitted jobs")
    held = await db.fetchone("SELECT held_micros FROM budget_counters WHERE scope = 'global'")
    require(held is not None and held[0] == admitted * hold, "the global counter disagrees with the ledger")
    drift = await bot.services.budget.audit()
    require(not drift, f"counters disagree with the ledger: {drift}")


async def run(config: Config, *, keep: bool = False) -> list[Outcome]:
    hold = hold_of_one_request()
    outcomes = []
    with workdir("admission", keep) as root:
        one = [7_000_001]
        outcomes.append(
            await scenario(
                f"{config.members} members, 1 guild",
                root / "one",
                config,
                hold,
                one,
                guild_holds=config.one_guild_holds,
                global_holds=None,
                capacity=config.one_guild_holds,
            )
        )
        many = [8_000_000 + i * 1000 for i in range(config.guilds)]
        outcomes.append(
            await scenario(
                f"{config.members} members, {config.guilds:,} guilds",
                root / "many",
                config,
                hold,
                many,
                guild_holds=max(20, 4 * config.global_holds // config.guilds),  # the global cap binds
                global_holds=config.global_holds,
                capacity=config.global_holds,
            )
        )
    return outcomes


def print_result(config: Config, outcomes: list[Outcome]) -> None:
    rows = [
        [
            o.name,
            f"{o.requests:,}",
            f"{o.admitted:,} / {o.capacity:,}",
            ", ".join(f"{k} {v}" for k, v in sorted(o.refused.items())) or "—",
            fmt(o.holds_per_s, 0),
            fmt(o.requests_per_s, 0),
            fmt(o.latency_ms.p50),
            fmt(o.latency_ms.p99),
            "none (asserted)",
        ]
        for o in outcomes
    ]
    report(
        f"Admission throughput (GenerationService.admit, real {'PostgreSQL' if config.postgres else 'SQLite'})",
        [
            "scenario",
            "requests",
            "held / budget",
            "refused (scope)",
            "holds/s",
            "requests/s",
            "admit p50 ms",
            "admit p99 ms",
            "overspend",
        ],
        rows,
        [
            f"database with {config.history:,} finished jobs"
            + (" and the indexes before migration 0005" if config.legacy_indexes else ""),
            "holds/s: successful holds over the time to the last one; requests/s: every answer, refusals included",
        ],
    )


def main(argv: list[str] | None = None) -> list[Outcome]:
    parser = argparse.ArgumentParser(prog="python -m bench.admission", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run (smoke test)")
    parser.add_argument("--history", type=int, default=None, help="finished jobs already in the database")
    parser.add_argument("--legacy-indexes", action="store_true", help="the job indexes before migration 0005")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--processes", type=int, default=1, help="bot processes admitting at once, on PostgreSQL (with --postgres)"
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.processes > 1 and not (args.postgres or args.database_url):
        parser.error("--processes needs PostgreSQL (--postgres or --database-url): SQLite is one process's")
    config = QUICK if args.quick else Config()
    if args.history is not None:
        config = replace(config, history=args.history)
    if args.legacy_indexes:
        config = replace(config, legacy_indexes=True)
    postgres = BenchPostgres.from_args(args)
    if postgres is not None:
        config = replace(config, postgres=postgres, processes=args.processes)

    async def go() -> list[Outcome]:
        try:
            return await bounded(run(config, keep=args.keep), 280, "admission")  # type: ignore[no-any-return]
        finally:
            if postgres is not None:
                await postgres.close()

    outcomes: list[Outcome] = asyncio.run(go())
    print_result(config, outcomes)
    return outcomes


if __name__ == "__main__":
    main()
