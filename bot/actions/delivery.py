"""What the delivery loop does in Discord: edit status messages, post each finished job's result.

Posts run in tasks of their own: a Discord outage retried inside discord.py (up to ~25 s) must
not hold up polling and dispatch for every other job. Status-message edits are paced per channel
by `StatusEdits`, in its own tasks too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import discord

from bot.actions.buttons import result_view, status_view
from bot.actions.languages import guild_language
from bot.domain.job_state import JobState
from bot.domain.jobs import Job
from bot.domain.money import format_usd
from bot.faults import crash_point
from bot.i18n import t
from bot.services.delivery import DeliveryService
from bot.services.encoding import EncodingService
from bot.services.generation import GenerationService
from bot.services.guilds import GuildService
from bot.services.status_edits import StatusEdits
from bot.ui.generation import failure_text, human_size, route_notes, status_embed

log = logging.getLogger(__name__)

STATUS_EDIT_EVERY = 10.0  # a job's status message shows a new progress step at most this often (seconds)
STATUS_CHANGES_PER_PASS = 1000
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


class DeliveryActions:
    def __init__(
        self,
        client: discord.Client,
        delivery: DeliveryService,
        generation: GenerationService,
        guilds: GuildService,
        wake: Callable[[], None],
        encoding: EncodingService,
    ) -> None:
        self._client = client
        self._encoding = encoding
        self._delivery = delivery
        self._generation = generation
        self._guilds = guilds
        self._wake = wake
        self._posting: dict[int, asyncio.Task[None]] = {}
        # Whether a job used someone else's shared character (its video gets a Report button)
        self.reportable: Callable[[int], Awaitable[bool]] | None = None
        self.status_edits = StatusEdits(
            lambda job_id: self._delivery.job(job_id),
            lambda job, final: self.edit_status(job, final=final),
            progress_every=STATUS_EDIT_EVERY,
        )

    async def close(self) -> None:
        tasks = list(self._posting.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.status_edits.close()

    # --- status messages -----------------------------------------------------------------------

    async def note_statuses(self) -> None:
        """Hand the jobs whose state or progress step changed to the background status edits."""
        changes = await self._delivery.status_changes(STATUS_CHANGES_PER_PASS)
        self.status_edits.offer(changes)
        if len(changes) == STATUS_CHANGES_PER_PASS:
            self._wake()  # more are waiting

    async def edit_status(self, job: Job, *, final: bool = False) -> bool:
        """Show the job's current state on its status message; False if Discord refused."""
        if job.status_message_id is None:
            return False
        locale = await self.channel_locale(job)
        message = self._client.get_partial_messageable(job.channel_id).get_partial_message(job.status_message_id)
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
        job = await self._generation.job_row(job_id)
        if job.notified_at is None or job.status_message_id is None:
            return
        async with self.status_edits.final_turn(job.channel_id, job.id):
            await self.edit_status(job, final=True)

    # --- the channel ---------------------------------------------------------------------------

    async def channel_locale(self, job: Job) -> str:
        """The language of the job's channel posts: the /settings choice, else the guild's."""
        return await guild_language(self._client, self._guilds, job.guild_id, job.locale or "en-US")

    def upload_limit(self, guild_id: int) -> int:
        guild = self._client.get_guild(guild_id)
        return guild.filesize_limit if guild else DEFAULT_UPLOAD_LIMIT

    # --- final messages ------------------------------------------------------------------------

    async def deliver_finished(self) -> None:
        """Start posting each finished job's result (one task per job, never two for the same)."""
        for job in await self._delivery.pending():
            if job.id not in self._posting:
                self._posting[job.id] = asyncio.create_task(self._deliver(job), name=f"post-{job.id}")

    async def _deliver(self, job: Job) -> None:
        try:
            await self.post_final(job)
        except Exception:
            log.exception("posting job %d failed", job.id)
            try:
                if not await self._delivery.retry_later(job.id):
                    await self._delivery.mark_posted(job.id, None)
            except Exception:
                log.exception("could not reschedule the post of job %d", job.id)
        finally:
            self._posting.pop(job.id, None)
            self._wake()

    async def post_final(self, job: Job) -> None:
        """Post the job's result (or why there is none), record it, and make the last status edit."""
        locale = await self.channel_locale(job)
        user = f"<@{job.user_id}>"
        view: discord.ui.View | None = None
        file_path: Path | None = None
        if job.state != JobState.SUCCEEDED:
            content = failure_text(job, locale)
        else:
            report = self.reportable is not None and await self.reportable(job.id)
            view = result_view(job.id, locale, report=report)
            cost = format_usd(job.cost_micros or 0, locale)
            content = t("delivery.done", locale, user=user, job=job.id, provider=job.provider, cost=cost)
            size, limit = job.result_size or 0, self.upload_limit(job.guild_id)
            original = Path(job.result_path) if job.result_path else None
            if original is not None and size <= limit:
                file_path = original
            else:
                # Too large: a re-encoded copy under the limit (next to the original, which stays
                # for /character extract and Re-roll), else the provider's link and why.
                fitted = await self._encoding.fit(original, limit) if original and original.exists() else None
                if fitted is not None and fitted.result is not None:
                    file_path = fitted.result.path
                    content = "\n".join(
                        (content, t("delivery.fitted", locale, size=human_size(size), limit=human_size(limit)))
                    )
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
                    if fitted is not None:
                        why = "delivery.fit_too_long" if fitted.too_long else "delivery.fit_failed"
                        content = "\n".join((content, t(why, locale, limit=human_size(limit))))
        # which provider ran and why the earlier ones did not; providers turned off; fallback hint
        fallback_possible = await self._delivery.fallback_would_help(job)
        steps = await self._generation.route_history(job.id)
        notes = route_notes(job, steps, locale, fallback_possible=fallback_possible)
        if notes:
            content = "\n".join((content, *notes))
        message = await self._send(job, content, file_path, view)
        if view is not None:
            view.stop()  # the registered dynamic items handle clicks; keep no per-message view
        crash_point("after_post")
        await self._delivery.mark_posted(job.id, message.id if message else None)
        done = await self._generation.job_row(job.id)
        if done.status_message_id is not None:
            # after any edit of it still in flight, and within the channel's pace
            async with self.status_edits.final_turn(done.channel_id, done.id):
                await self.edit_status(done, final=True)

    async def _send(
        self, job: Job, content: str, file_path: Path | None, view: discord.ui.View | None
    ) -> discord.Message | None:
        """Post in the job's channel as a reply to its status message, pinging only the requester."""
        channel = self._client.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
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
                locale = await self.channel_locale(job)
                text = t(
                    "delivery.too_large",
                    locale,
                    user=f"<@{job.user_id}>",
                    job=job.id,
                    size=human_size(job.result_size or 0),
                    limit=human_size(self.upload_limit(job.guild_id)),
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
            user = await self._client.fetch_user(job.user_id)
            file = discord.File(file_path, filename=f"castbot-job-{job.id}.mp4") if file_path else None
            locale = job.locale or "en-US"
            text = t("delivery.dm", locale, job=job.id) + "\n" + content
            if file is not None:
                await user.send(text, file=file)
            else:
                await user.send(text)
        except discord.HTTPException as exc:
            log.warning("job %d: DM to the member failed too (%s); the result stays in /jobs", job.id, exc.code)
