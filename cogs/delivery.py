"""The background loop: dispatch held jobs, track them, edit status messages, post results.

One long-lived task. It wakes when a job is admitted, a provider calls back, a job settles or a
tracking pass ends, or when the earliest job not being polled is due; it never sleeps per job, and
survives any exception: a failing job, provider, database hiccup or Discord error is logged and
retried on a later pass. A pass only starts work and never waits for it: dispatches
(`services.dispatcher`), status polls, downloads and settlement (`services.tracker`, in passes
that overlap, each job held by one), posts and status-message edits (`actions.delivery`) run in
tasks of their own. So a callback's job is polled at once, and its post starts as soon as it
settles, whatever else is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from discord.ext import commands

from bot.app import Castbot

log = logging.getLogger(__name__)

IDLE_SECONDS = 5.0
COALESCE_SECONDS = 0.02


class DeliveryCog(commands.Cog):
    def __init__(self, bot: Castbot) -> None:
        self.bot = bot
        self._task: asyncio.Task[None] | None = None

    async def cog_load(self) -> None:
        # Runs inside setup_hook, before the gateway connects: no command can arrive before this.
        services = self.bot.services
        # status edits follow changes from here on, including what recovery changes
        await services.delivery.watch_status_changes()
        open_jobs = await services.generation.recover()
        drift = await services.budget.audit_and_report()
        log.info("recovered open jobs %s; ledger drift in %d counters", open_jobs or "none", len(drift))
        self._task = asyncio.create_task(self._run(), name="delivery-loop")

    async def cog_unload(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.bot.services.tracker.close()
        await self.bot.services.dispatcher.close()
        await self.bot.services.storage.close()
        await self.bot.actions.delivery.close()
        with contextlib.suppress(Exception):  # best effort: unrenewed leases expire anyway
            await self.bot.services.generation.release_leases()

    async def _run(self) -> None:
        await self.bot.wait_until_ready()
        wake = self.bot.services.loop_wakeup
        while not self.bot.is_closed():
            try:
                await self.tick()
            except Exception:
                log.exception("delivery loop pass failed; continuing")
            wake.clear()
            sleep_for = await self._sleep_for()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), sleep_for)
                await asyncio.sleep(COALESCE_SECONDS)  # one pass for a burst of wake-ups

    async def _sleep_for(self) -> float:
        settings = self.bot.settings
        try:
            # the jobs a pass is polling are due until it ends
            due = await self.bot.services.generation.next_due_at(self.bot.services.tracker.in_flight)
        except Exception:
            log.exception("could not read the next due job")
            return settings.poll_min_seconds
        # the jobs being polled get their next look when their pass ends: look again by then
        longest = settings.poll_min_seconds if self.bot.services.tracker.in_flight else settings.poll_max_seconds
        if due is None:
            return min(IDLE_SECONDS, longest)
        return float(min(max(due - time.time(), 0.01), longest))

    async def tick(self) -> None:
        """One pass; each step is contained so one failure never starves the others. Each step only
        starts work in tasks (none waits on a provider or Discord): the pass takes milliseconds.
        A step that must come before the tracking work of every pass goes first."""
        services, actions = self.bot.services, self.bot.actions.delivery
        steps = (
            services.generation.renew_leases,  # first: the steps below act only on this process's jobs
            services.dispatcher.fill,
            services.tracker.start_pass,  # polls the due jobs no running pass holds
            actions.note_statuses,
            actions.deliver_finished,
            services.storage.maybe_sweep,  # the storage janitor, every few minutes, in a task of its own
        )
        for step in steps:
            try:
                await step()
            except Exception:
                log.exception("delivery loop step %s failed", getattr(step, "__name__", step))


async def setup(bot: Castbot) -> None:
    await bot.add_cog(DeliveryCog(bot))
