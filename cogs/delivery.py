"""The background loop: dispatch held jobs, track them, edit status messages, post results.

One long-lived task. It wakes when a job is admitted or when the earliest job is due, never
sleeps per job, and survives any exception: a failing job, provider, database hiccup or Discord
error is logged and retried on a later pass. The pass itself never waits on Discord: dispatches,
posts and status-message edits (`StatusEdits`, paced per channel) run in tasks of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import discord
from discord.ext import commands

from bot.app import Castbot
from bot.domain.job_state import JobState
from bot.domain.jobs import Job
from bot.domain.money import format_usd
from bot.faults import crash_point
from bot.i18n import t
from bot.services.status_edits import StatusEdits
from bot.ui.generation import failure_text, human_size, route_notes, status_embed
from bot.ui.job_buttons import DELIVERY_COG, result_view, status_view

log = logging.getLogger(__name__)

STATUS_EDIT_EVERY = 10.0  # a job's status message shows a new progress step at most this often (seconds)
STATUS_CHANGES_PER_PASS = 1000
# Submissions in flight at once. Each takes the database's single writer several times: hundreds
# at once (a burst of /generate) would make every reply wait for the writer. Jobs beyond the caps
# stay held and start as slots free up (each finished dispatch wakes the loop).
DISPATCH_PER_PROVIDER = 8
DISPATCH_TOTAL = 16
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
IDLE_SECONDS = 5.0


class DeliveryCog(commands.Cog, name=DELIVERY_COG):
    def __init__(self, bot: Castbot) -> None:
        self.bot = bot
        self._task: asyncio.Task[None] | None = None
        self._dispatching: dict[int, asyncio.Task[None]] = {}
        self._dispatch_provider: dict[int, str | None] = {}
        # posts run in their own tasks: a Discord outage retried inside discord.py (up to ~25 s)
        # must not hold up polling and dispatch for every other job
        self._posting: dict[int, asyncio.Task[None]] = {}
        self.status_edits = StatusEdits(
            lambda job_id: self.bot.services.delivery.job(job_id),
            lambda job, final: self._edit_status(job, final=final),
            progress_every=STATUS_EDIT_EVERY,
        )

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
        tasks = [t for t in (self._task, *self._dispatching.values(), *self._posting.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.status_edits.close()

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

    async def _sleep_for(self) -> float:
        settings = self.bot.settings
        try:
            due = await self.bot.services.generation.next_due_at()
        except Exception:
            log.exception("could not read the next due job")
            return settings.poll_min_seconds
        if due is None:
            return IDLE_SECONDS
        return float(min(max(due - time.time(), 0.01), settings.poll_max_seconds))

    async def tick(self) -> None:
        """One pass; each step is contained so one failure never starves the others."""
        services = self.bot.services
        for step in (self._dispatch_held, services.tracker.poll_once, self._note_statuses, self._deliver_finished):
            try:
                await step()
            except Exception:
                log.exception("delivery loop step %s failed", getattr(step, "__name__", step))

    async def _dispatch_held(self) -> None:
        if len(self._dispatching) >= DISPATCH_TOTAL:
            return
        busy = Counter(self._dispatch_provider.values())
        # a job being dispatched can still read as held: ask for enough to fill every free slot
        for job_id, provider in await self.bot.services.delivery.held_due(2 * DISPATCH_PER_PROVIDER):
            if len(self._dispatching) >= DISPATCH_TOTAL:
                break
            if job_id in self._dispatching or busy[provider] >= DISPATCH_PER_PROVIDER:
                continue
            busy[provider] += 1
            self._dispatch_provider[job_id] = provider
            self._dispatching[job_id] = asyncio.create_task(self._dispatch(job_id), name=f"dispatch-{job_id}")

    async def _dispatch(self, job_id: int) -> None:
        try:
            await self.bot.services.generation.dispatch(job_id)
        except Exception:
            log.exception("dispatching job %d failed; it stays held and will be retried", job_id)
            await asyncio.sleep(self.bot.settings.poll_min_seconds)
        finally:
            self._dispatching.pop(job_id, None)
            self._dispatch_provider.pop(job_id, None)
            self.bot.services.wake_loop()

    # --- status messages -----------------------------------------------------------------------

    async def _note_statuses(self) -> None:
        """Hand the jobs whose state or progress step changed to the background status edits."""
        self.status_edits.progress_every = STATUS_EDIT_EVERY  # read each pass: tests turn it down
        changes = await self.bot.services.delivery.status_changes(STATUS_CHANGES_PER_PASS)
        self.status_edits.offer(changes)
        if len(changes) == STATUS_CHANGES_PER_PASS:
            self.bot.services.wake_loop()  # more are waiting

    async def _edit_status(self, job: Job, *, final: bool = False) -> bool:
        """Show the job's current state on its status message; False if Discord refused."""
        if job.status_message_id is None:
            return False
        locale = await self._channel_locale(job)
        message = self.bot.get_partial_messageable(job.channel_id).get_partial_message(job.status_message_id)
        view = None if final else status_view(job.id, locale)
        try:
            await message.edit(embed=status_embed(job, f"<@{job.user_id}>", locale), view=view)
            if view is not None:
                view.stop()  # the registered dynamic items handle clicks; keep no per-message view
        except discord.HTTPException as exc:
            log.info("job %d: status message not edited (%s)", job.id, exc.status)
            return False
        return True

    async def show_if_posted(self, job_id: int) -> None:
        """Make the final edit of a job whose result was posted before /generate recorded its
        status message (render, download and post all inside the member's confirmation): that
        post made no edit. A job not posted yet is left alone: its post will make the edit, and an
        edit from here could land after it, showing an older state."""
        job = await self.bot.services.generation.job_row(job_id)
        if job.notified_at is None or job.status_message_id is None:
            return
        async with self.status_edits.final_turn(job.channel_id, job.id):
            await self._edit_status(job, final=True)

    # --- final messages ------------------------------------------------------------------------

    async def _deliver_finished(self) -> None:
        for job in await self.bot.services.delivery.pending():
            if job.id not in self._posting:
                self._posting[job.id] = asyncio.create_task(self._deliver(job), name=f"post-{job.id}")

    async def _deliver(self, job: Job) -> None:
        try:
            await self._post_final(job)
        except Exception:
            log.exception("posting job %d failed", job.id)
            try:
                if not await self.bot.services.delivery.retry_later(job.id):
                    await self.bot.services.delivery.mark_posted(job.id, None)
            except Exception:
                log.exception("could not reschedule the post of job %d", job.id)
        finally:
            self._posting.pop(job.id, None)
            self.bot.services.wake_loop()

    async def _channel_locale(self, job: Job) -> str:
        settings = await self.bot.services.guilds.get(job.guild_id)
        if settings.locale:
            return settings.locale
        guild = self.bot.get_guild(job.guild_id)
        return guild.preferred_locale.value if guild else (job.locale or "en-US")

    def _upload_limit(self, guild_id: int) -> int:
        guild = self.bot.get_guild(guild_id)
        return guild.filesize_limit if guild else DEFAULT_UPLOAD_LIMIT

    async def _post_final(self, job: Job) -> None:
        locale = await self._channel_locale(job)
        user = f"<@{job.user_id}>"
        view: discord.ui.View | None = None
        file_path: Path | None = None
        if job.state != JobState.SUCCEEDED:
            content = failure_text(job, locale)
        else:
            view = result_view(job.id, locale)
            cost = format_usd(job.cost_micros or 0, locale)
            content = t("delivery.done", locale, user=user, job=job.id, provider=job.provider, cost=cost)
            size, limit = job.result_size or 0, self._upload_limit(job.guild_id)
            if job.result_path and size <= limit:
                file_path = Path(job.result_path)
            else:
                key = "delivery.too_large_link" if job.result_url else "delivery.too_large"
                content = t(
                    key,
                    locale,
                    user=user,
                    job=job.id,
                    size=human_size(size),
                    limit=human_size(limit),
                    url=job.result_url or "",
                )
        # which provider ran and why the earlier ones did not; providers turned off; fallback hint
        fallback_possible = False
        if job.state == JobState.FAILED and job.request.get("requested_provider") is None:
            guild = await self.bot.services.guilds.get(job.guild_id)
            others = [p for p in guild.providers or self.bot.providers if p in self.bot.providers]
            fallback_possible = not guild.fallback and any(p not in job.providers for p in others)
        steps = await self.bot.services.generation.route_history(job.id)
        notes = route_notes(job, steps, locale, fallback_possible=fallback_possible)
        if notes:
            content = "\n".join((content, *notes))
        message = await self._send(job, content, file_path, view)
        if view is not None:
            view.stop()  # the registered dynamic items handle clicks; keep no per-message view
        crash_point("after_post")
        await self.bot.services.delivery.mark_posted(job.id, message.id if message else None)
        done = await self.bot.services.generation.job_row(job.id)
        if done.status_message_id is not None:
            # after any edit of it still in flight, and within the channel's pace
            async with self.status_edits.final_turn(done.channel_id, done.id):
                await self._edit_status(done, final=True)

    async def _send(
        self, job: Job, content: str, file_path: Path | None, view: discord.ui.View | None
    ) -> discord.Message | None:
        """Post in the job's channel as a reply to its status message, pinging only the requester."""
        channel = self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
        options: dict[str, Any] = {
            "allowed_mentions": discord.AllowedMentions(users=[discord.Object(job.user_id)]),
            # Discord answers a repeated nonce with the earlier message: a crash between posting
            # and recording it cannot make a second post.
            "nonce": f"castbot-job-{job.id}",
        }
        if view is not None:
            options["view"] = view
        if job.status_message_id is not None:
            options["reference"] = discord.MessageReference(
                message_id=job.status_message_id, channel_id=job.channel_id, fail_if_not_exists=False
            )
        try:
            if file_path is not None:
                file = discord.File(file_path, filename=f"castbot-job-{job.id}.mp4")
                return await channel.send(content, file=file, **options)
            return await channel.send(content, **options)
        except discord.HTTPException as exc:
            if file_path is not None and (exc.status == 413 or exc.code == 40005):
                # Our idea of the limit was wrong: say so once, never retry the upload.
                locale = await self._channel_locale(job)
                text = t(
                    "delivery.too_large",
                    locale,
                    user=f"<@{job.user_id}>",
                    job=job.id,
                    size=human_size(job.result_size or 0),
                    limit=human_size(self._upload_limit(job.guild_id)),
                )
                options["nonce"] = f"castbot-job-{job.id}-nf"
                return await channel.send(text, **options)
            if isinstance(exc, discord.Forbidden | discord.NotFound):
                log.warning(
                    "job %d: cannot post in channel %s (%s); telling the member by DM", job.id, job.channel_id, exc.code
                )
                await self._dm(job, content, file_path)
                return None
            raise

    async def _dm(self, job: Job, content: str, file_path: Path | None) -> None:
        try:
            user = await self.bot.fetch_user(job.user_id)
            file = discord.File(file_path, filename=f"castbot-job-{job.id}.mp4") if file_path else None
            locale = job.locale or "en-US"
            text = t("delivery.dm", locale, job=job.id) + "\n" + content
            if file is not None:
                await user.send(text, file=file)
            else:
                await user.send(text)
        except discord.HTTPException as exc:
            log.warning("job %d: DM to the member failed too (%s); the result stays in /jobs", job.id, exc.code)


async def setup(bot: Castbot) -> None:
    await bot.add_cog(DeliveryCog(bot))
