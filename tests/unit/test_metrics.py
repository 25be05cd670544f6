"""bot/services/metrics.py: its own registry, the text format, the 429 counter and the
tracking loop's staleness as /healthz judges it (bot/services/liveness.py)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from bot.db import Database
from bot.services.encoding import EncodingService, Fitted
from bot.services.liveness import LivenessService
from bot.services.metrics import Metrics


def values(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_two_instances_keep_their_own_registries_and_the_global_one_is_untouched() -> None:
    first, second = Metrics(), Metrics()
    first.submit("fal", "accepted")
    first.webhook_received("fal", "accepted")
    assert values(first)[("castbot_provider_submits_total", (("outcome", "accepted"), ("provider", "fal")))] == 1
    assert ("castbot_provider_submits_total", (("outcome", "accepted"), ("provider", "fal"))) not in values(second)
    assert values(first)[("castbot_webhooks_received_total", (("outcome", "accepted"), ("provider", "fal")))] == 1
    labels = {"provider": "fal", "outcome": "accepted"}
    assert REGISTRY.get_sample_value("castbot_provider_submits_total", labels) is None


def test_scrape_time_values_replace_the_previous_scrape() -> None:
    metrics = Metrics()
    metrics.set_jobs([("running", "fal", 3), ("held", "", 1)])
    metrics.set_breakers({"fal": "open"})
    metrics.set_ledger({"hold": 500_000, "capture": 300_000, "release": 200_000})
    got = values(metrics)
    assert got[("castbot_jobs", (("provider", "fal"), ("state", "running")))] == 3
    assert got[("castbot_jobs", (("provider", "none"), ("state", "held")))] == 1
    assert got[("castbot_provider_breaker_state", (("provider", "fal"), ("state", "open")))] == 1
    assert got[("castbot_provider_breaker_state", (("provider", "fal"), ("state", "closed")))] == 0
    assert got[("castbot_money_micro_usd_total", (("kind", "capture"),))] == 300_000
    metrics.set_jobs([("delivered", "fal", 4)])
    got = values(metrics)
    assert ("castbot_jobs", (("provider", "fal"), ("state", "running"))) not in got
    assert got[("castbot_jobs", (("provider", "fal"), ("state", "delivered")))] == 4


def test_discord_429s_are_counted_from_discord_py_s_log() -> None:
    metrics = Metrics()
    logger = logging.getLogger("discord.http.test-metrics")
    logger.setLevel(logging.WARNING)
    handler = metrics.rate_limit_handler()
    logger.addHandler(handler)
    try:
        fmt = "We are being rate limited. %s %s responded with 429. Retrying in %.2f seconds."
        logger.warning(fmt, "POST", "https://discord.test/channels/1/messages", 1.5)
        logger.warning("Global rate limit has been hit. Retrying in %.2f seconds.", 1.5)  # same 429, not another
        logger.warning(
            "We are being rate limited. %s %s responded with 429. Timeout of %.2f was too long, erroring instead.",
            "GET",
            "https://discord.test/x",
            99.0,
        )
    finally:
        logger.removeHandler(handler)
    got = values(metrics)
    assert got[("castbot_discord_rate_limited_total", (("outcome", "retried"),))] == 1
    assert got[("castbot_discord_rate_limited_total", (("outcome", "raised"),))] == 1


class _Tracker:
    last_pass_at: float | None = None


async def test_tracking_is_stale_after_a_few_poll_max(db: Database) -> None:
    now = [1000.0]
    tracker = _Tracker()
    liveness = LivenessService(
        db,
        tracker,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        (),
        poll_max=30.0,
        clock=lambda: now[0],
    )
    assert liveness.stale_after == 120.0
    assert liveness.tracking().ok  # starting: the loop waits for the gateway
    now[0] += 121
    assert not liveness.tracking().ok
    tracker.last_pass_at = now[0] - 5
    assert liveness.tracking().ok
    now[0] += 200
    check = liveness.tracking()
    assert not check.ok and "last pass" in check.detail
    assert (await liveness.database()).ok


async def test_database_writes_are_timed_through_the_observer(db: Database) -> None:
    seen: list[float] = []
    db.write_observer = seen.append
    async with db.transaction() as conn:
        await conn.execute("UPDATE guild_settings SET locale = NULL WHERE guild_id = 0")
    assert len(seen) == 1 and seen[0] >= 0


async def test_the_encode_queue_is_reported_while_fits_wait(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    metrics = Metrics()
    encoding = EncodingService(1)
    encoding.metrics = metrics
    release = asyncio.Event()

    async def slow_fit(original: Path, limit: int) -> Fitted:
        await release.wait()
        return Fitted(None)

    monkeypatch.setattr(encoding, "_fit", slow_fit)
    fits = [asyncio.create_task(encoding.fit(tmp_path / f"{i}.mp4", 1000)) for i in range(3)]
    await asyncio.sleep(0)
    got = values(metrics)
    assert got[("castbot_encodes_running", ())] == 1
    assert got[("castbot_encodes_waiting", ())] == 2
    release.set()
    await asyncio.gather(*fits)
    got = values(metrics)
    assert got[("castbot_encodes_running", ())] == 0
    assert got[("castbot_encodes_waiting", ())] == 0
