"""What an operator's dashboard shows, in Prometheus's text format (`/metrics`, bot/web/server.py).

One `Metrics` per bot, built in the composition root (bot/app.py) and handed to what records:
the dispatch (submits), the tracker (status requests, settle times), the delivery (posts), the
budget (money), the encoder (queue), the database (write latency) and the webhook routes.
It keeps a registry of its own, not prometheus_client's global one, so several bots in one
process (the tests) never clash. Labels stay low-cardinality: a provider, a state, an outcome,
never a member, a server or a job.

Gauges read from the database (jobs by state, breaker states) are filled at scrape time by
`refresh()`, which the HTTP handler awaits before rendering.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST
BREAKER_STATES = ("closed", "open", "half_open", "disabled")
SUBMIT_OUTCOMES = ("accepted", "not_sent", "ambiguous", "rejected")
MONEY_KINDS = ("hold", "capture", "release")

# Buckets in seconds for the lag from a provider's finish to the post in the channel, and for a
# database write transaction.
LAG_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
DB_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

Refresher = Callable[["Metrics"], Awaitable[None]]


class RateLimitLogHandler(logging.Handler):
    """Counts the 429s discord.py logs on `discord.http` (WARNING, "We are being rate limited.
    ... responded with 429"): waited out and retried, or raised when the wait was too long."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(level=logging.WARNING)
        self._metrics = metrics

    def emit(self, record: logging.LogRecord) -> None:
        message = str(record.msg)
        if "responded with 429" in message:
            outcome = "raised" if "erroring instead" in message else "retried"
            self._metrics.discord_rate_limited.labels(outcome=outcome).inc()


class _LedgerCollector(Collector):
    """Money held, captured and released: the append-only ledger's totals, read at scrape. A
    counter that is exact (a transaction rolled back never counts) and survives restarts."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily("castbot_money_micro_usd", _LEDGER_HELP, labels=["kind"])]

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily("castbot_money_micro_usd", _LEDGER_HELP, labels=["kind"])
        for kind in (*MONEY_KINDS, *sorted(set(self.totals) - set(MONEY_KINDS))):
            family.add_metric([kind], self.totals.get(kind, 0))
        return [family]


_LEDGER_HELP = "Money written to the ledger since the database was created, micro-USD, by kind (hold, capture, release)"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs = Gauge(
            "castbot_jobs",
            "Jobs in each state by the provider responsible (read at scrape)",
            ["state", "provider"],
            registry=r,
        )
        self.submits = Counter(
            "castbot_provider_submits",
            "Requests to create a video, by provider and outcome (accepted, not_sent, ambiguous, rejected)",
            ["provider", "outcome"],
            registry=r,
        )
        self.status_requests = Counter(
            "castbot_provider_status_requests",
            "Status requests to the providers (one may ask about many jobs), by provider and outcome"
            " (ok, partial, error)",
            ["provider", "outcome"],
            registry=r,
        )
        self.webhooks = Counter(
            "castbot_webhooks_received",
            "Provider webhooks received, by provider and outcome",
            ["provider", "outcome"],
            registry=r,
        )
        self.delivery_lag = Histogram(
            "castbot_delivery_lag_seconds",
            "From the job's settlement (the tracker saw it succeed, downloaded and captured it) to its post"
            " in the channel: a proxy for the lag from the provider's finish to the post",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self._ledger = _LedgerCollector()
        r.register(self._ledger)
        self.breaker = Gauge(
            "castbot_provider_breaker_state",
            "1 for the breaker state each provider is in (read at scrape)",
            ["provider", "state"],
            registry=r,
        )
        self.discord_rate_limited = Counter(
            "castbot_discord_rate_limited",
            "Discord HTTP 429s, by what discord.py did: retried after the wait, or raised (the wait too long)",
            ["outcome"],
            registry=r,
        )
        self.encodes_running = Gauge("castbot_encodes_running", "Videos being re-encoded to fit a channel", registry=r)
        self.encodes_waiting = Gauge("castbot_encodes_waiting", "Re-encodes waiting for a worker", registry=r)
        self.db_write_seconds = Histogram(
            "castbot_db_write_seconds",
            "How long a database write transaction held the writer (BEGIN IMMEDIATE to COMMIT)",
            buckets=DB_BUCKETS,
            registry=r,
        )
        self.tracking_last_pass = Gauge(
            "castbot_tracking_last_pass_timestamp_seconds",
            "When the tracking loop last finished a pass (Unix time)",
            registry=r,
        )
        self._refreshers: list[Refresher] = []

    # --- recording ---------------------------------------------------------------------------

    def submit(self, provider: str, outcome: str) -> None:
        self.submits.labels(provider=provider, outcome=outcome).inc()

    def status_request(self, provider: str, outcome: str) -> None:
        """`outcome`: ok, partial (some jobs answered) or error."""
        self.status_requests.labels(provider=provider, outcome=outcome).inc()

    def webhook_received(self, provider: str, outcome: str) -> None:
        """For the webhook routes: one per request, `outcome` a short fixed word (accepted,
        bad_token, unknown_job, ...)."""
        self.webhooks.labels(provider=provider, outcome=outcome).inc()

    def delivered(self, lag_seconds: float) -> None:
        self.delivery_lag.observe(max(lag_seconds, 0.0))

    def db_write(self, seconds: float) -> None:
        self.db_write_seconds.observe(seconds)

    def encode_queue(self, running: int, waiting: int) -> None:
        self.encodes_running.set(running)
        self.encodes_waiting.set(waiting)

    def tracked(self, at: float) -> None:
        self.tracking_last_pass.set(at)

    def rate_limit_handler(self) -> RateLimitLogHandler:
        return RateLimitLogHandler(self)

    # --- read at scrape ----------------------------------------------------------------------

    def set_jobs(self, counts: Iterable[tuple[str, str, int]]) -> None:
        """(state, provider, count) rows, replacing the previous scrape's."""
        self.jobs.clear()
        for state, provider, count in counts:
            self.jobs.labels(state=state, provider=provider or "none").set(count)

    def set_breakers(self, states: Mapping[str, str]) -> None:
        """provider -> breaker state name."""
        self.breaker.clear()
        for provider, current in states.items():
            for name in BREAKER_STATES:
                self.breaker.labels(provider=provider, state=name).set(1 if current == name else 0)

    def set_ledger(self, totals: Mapping[str, int]) -> None:
        """kind -> the ledger's total, micro-USD (hold, capture, release, overrun)."""
        self._ledger.totals = dict(totals)

    def on_refresh(self, refresher: Refresher) -> None:
        self._refreshers.append(refresher)

    async def refresh(self) -> None:
        for refresher in self._refreshers:
            try:
                await refresher(self)
            except Exception:
                logging.getLogger(__name__).warning("a metrics refresh failed", exc_info=True)

    def render(self) -> bytes:
        return generate_latest(self.registry)
