"""/generate: admission (one transaction), then submission through the outbox with safe fallback.

Money rules: the worst-case cost of the whole provider chain is held before anything
is sent; an attempt row is committed before each provider call, so after a crash we know a request
*may* have gone out and never send it again; only provably-unsent or definitively-refused outcomes
fall back to the next provider, and only when the guild opted in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bot.db import Database
from bot.domain.job_state import FINISHED, OPEN, WITH_PROVIDER, JobState
from bot.domain.jobs import Job
from bot.errors import GuildOnly, UserFacingError
from bot.faults import crash_point
from bot.prompts import clean_member_text, distinct_keys, find_mentions
from bot.providers.base import (
    Ambiguous,
    CharacterRef,
    GenerationRequest,
    JobStatus,
    NotSent,
    Orientation,
    ProviderError,
    Quality,
    RateLimited,
    Rejected,
    RejectReason,
    VideoProvider,
)
from bot.services.actors import Actor
from bot.services.budget import BudgetService
from bot.services.characters import CharacterService, UsableCharacter
from bot.services.characters.text import shown
from bot.services.guilds import GuildService
from bot.services.health import HealthService
from bot.services.job_outcome import outcome_of
from bot.services.job_request import characters_of, request_of
from bot.services.metrics import Metrics
from bot.services.routing import RouteNeeds, chain_hold, fallback_allowed, route
from bot.services.storage import StorageService, refused_when_full
from bot.services.webhooks import callback_url, new_token
from bot.store import jobs as store
from bot.store.jobs import NewJob
from bot.store.jobs import Shards as Shards  # re-exported for the composition root

log = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 1500
DEFAULT_SECONDS = 8
MIN_SECONDS, MAX_SECONDS = 2, 20
JOB_DEADLINE_SECONDS = 6 * 3600  # past this a job is "expired": polled slowly, hold kept
RATE_LIMIT_RETRIES = 3
MAX_RETRY_AFTER = 60.0


class PromptProblem(UserFacingError):
    pass


@dataclass(frozen=True)
class GenerateCommand:
    actor: Actor
    interaction_id: int | None
    channel_id: int
    locale: str | None
    prompt: str
    seconds: int | None = None
    orientation: str | None = None
    quality: str | None = None
    provider: str | None = None


@dataclass(frozen=True)
class RouteStep:
    """One provider of a job's chain: sent to (accepted/ambiguous/...) or passed over (not_sent)."""

    provider: str
    outcome: str  # the attempt state: accepted, not_sent, rejected, ambiguous, sending
    error_class: str | None  # the ProviderError class name, e.g. QuotaExhausted
    error: str | None  # safe to show a member


@dataclass(frozen=True)
class Admitted:
    job: Job
    characters: tuple[UsableCharacter, ...]
    duplicate: bool  # the same interaction was admitted before: nothing new was held


# How long a job stays this process's without renewal (PostgreSQL: several processes). The loop
# renews every pass, and a pass comes at least every POLL_MAX_SECONDS, so the lease is several
# passes long; it is also how long a dead process's jobs wait before another process takes them.
LEASE_FLOOR_SECONDS = 60.0


def lease_seconds(poll_max_seconds: float) -> float:
    return max(LEASE_FLOOR_SECONDS, 4 * poll_max_seconds)


class GenerationService:
    def __init__(
        self,
        db: Database,
        providers: Mapping[str, VideoProvider],
        guilds: GuildService,
        characters: CharacterService,
        budget: BudgetService,
        health: HealthService,
        *,
        clock: Callable[[], float] = time.time,
        poll_min_seconds: float = 2.0,
        public_url: str | None = None,
        storage: StorageService | None = None,
        metrics: Metrics | None = None,
        lease_seconds: float = LEASE_FLOOR_SECONDS,
        shards: Shards | None = None,
    ) -> None:
        self._db = db
        self._lease_seconds = lease_seconds
        self._shards = shards  # this process's Discord shards: it takes its own guilds' new jobs
        self._storage = storage  # None: no space check
        self._metrics = metrics
        self._providers = providers
        self._guilds = guilds
        self._characters = characters
        self._budget = budget
        self._health = health
        self._clock = clock
        self._poll_min = poll_min_seconds
        self._public_url = public_url  # None: no callbacks are asked for

    # --- admission ---------------------------------------------------------------------------

    async def admit(self, cmd: GenerateCommand) -> Admitted:
        actor = cmd.actor
        if actor.guild_id is None:
            raise GuildOnly()
        prompt = clean_member_text(cmd.prompt)
        if not prompt:
            raise PromptProblem("generate.prompt_empty")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise PromptProblem("generate.prompt_too_long", length=len(prompt), limit=MAX_PROMPT_CHARS)
        seconds = cmd.seconds if cmd.seconds is not None else DEFAULT_SECONDS
        if not MIN_SECONDS <= seconds <= MAX_SECONDS:
            raise PromptProblem("generate.bad_seconds", low=MIN_SECONDS, high=MAX_SECONDS)
        try:
            orientation = Orientation(cmd.orientation or Orientation.LANDSCAPE)
            quality = Quality(cmd.quality or Quality.STANDARD)
        except ValueError as exc:
            raise PromptProblem("generate.bad_option") from exc

        # the provider option is echoed in refusals: a name, never an essay or a control character
        requested = shown(cmd.provider.strip(), 40) if cmd.provider and cmd.provider.strip() else None
        keys = distinct_keys(find_mentions(prompt))
        characters = tuple(await self._characters.resolve_for_generation(actor, keys)) if keys else ()
        settings = await self._guilds.get(actor.guild_id)
        refs = tuple(CharacterRef(key=c.key, asset=c.asset) for c in characters)
        probe = GenerationRequest(prompt, seconds, orientation, quality, refs)
        refused = frozenset(p for c in characters for p in c.refused)
        needs = RouteNeeds(seconds, orientation, quality, len(characters), refused)
        states = await self._health.states()
        candidates = route(needs, self._providers, settings, states, requested, request=probe)
        chain = candidates if settings.fallback and requested is None else candidates[:1]
        hold = chain_hold(chain, settings.fallback)
        paid = any(c.provider.capabilities.paid for c in chain)
        now = self._clock()
        plan = await self._budget.plan(actor.guild_id, actor.user_id, paid=paid, now=now)
        request_json: dict[str, Any] = {
            "seconds": seconds,
            "orientation": orientation.value,
            "quality": quality.value,
            "characters": [{"id": c.character_id, "key": c.key, "name": c.name} for c in characters],
            "requested_provider": requested,
        }
        if self._storage is not None:
            await self._storage.require_space()  # a full disk: refused before anything is held
        # a write failing for lack of space is rolled back whole and refused the same way
        with refused_when_full():
            async with self._db.transaction() as conn:
                if cmd.interaction_id is not None:
                    existing = await store.by_interaction(conn, cmd.interaction_id)
                    if existing is not None:
                        return Admitted(existing, characters, duplicate=True)
                await self._budget.check_activity(conn, actor.guild_id, actor.user_id, settings)
                job_id = await store.insert(
                    conn,
                    NewJob(
                        interaction_id=cmd.interaction_id,
                        guild_id=actor.guild_id,
                        channel_id=cmd.channel_id,
                        user_id=actor.user_id,
                        locale=cmd.locale,
                        prompt=prompt,
                        request=request_json,
                        providers=tuple(c.name for c in chain),
                        estimate_micros=hold,
                        global_period=plan.periods.global_month,
                        guild_period=plan.periods.guild_month,
                        member_period=plan.periods.member_day,
                        deadline_at=now + JOB_DEADLINE_SECONDS,
                    ),
                    now,
                )
                await self._budget.hold(conn, job_id, plan, hold, now)
                job = await store.get(conn, job_id)
        assert job is not None
        crash_point("after_hold")
        if characters:
            await self._characters.record_use([c.character_id for c in characters])
        log.info("job %d admitted: guild=%s provider chain=%s hold=%d", job.id, job.guild_id, job.providers, hold)
        return Admitted(job, characters, duplicate=False)

    async def set_status_message(self, job_id: int, message_id: int) -> None:
        async with self._db.transaction() as conn:
            await store.update_fields(conn, job_id, self._clock(), status_message_id=message_id)

    # --- submission --------------------------------------------------------------------------

    async def dispatch(self, job_id: int) -> Job:
        """Send a held job to its provider chain, one attempt at a time; returns the job after."""
        job = await store.get(self._db, job_id)
        assert job is not None
        if job.state != JobState.HELD:
            return job
        characters = await characters_of(self._characters, job)
        chain = list(job.providers)
        start = chain.index(job.provider) if job.provider in chain else 0
        last_error: ProviderError | None = None
        for index in range(start, len(chain)):
            name = chain[index]
            has_next = index + 1 < len(chain)
            provider = self._providers.get(name)
            if provider is None:
                last_error = Rejected(name, "this provider is no longer configured", reason=RejectReason.UNSUPPORTED)
                await self._note_skip(job_id, last_error)
                continue
            if not await self._health.allow(name):
                last_error = await self._blocked(name)
                await self._note_skip(job_id, last_error)
                continue
            try:
                refs = await self._refs_for(characters, provider)
            except ProviderError as exc:
                await self._health.record(name, ok=False, error=exc, phase="submit")
                last_error = exc
                await self._note_skip(job_id, exc)
                # No video was requested, and this provider refusing a character (or its clip
                # URL having expired) says nothing about the next one, which registers from the
                # stored clip: always safe to move on.
                if has_next:
                    continue
                break
            outcome = await self._attempt(job, provider, refs, has_next)
            if outcome is None:  # accepted, ambiguous, or handled (e.g. rate limited, retried later)
                fresh = await store.get(self._db, job_id)
                assert fresh is not None
                return fresh
            last_error = outcome
            if not (fallback_allowed(outcome) and has_next):
                break
        assert last_error is not None
        return await self._give_up(job_id, last_error)

    async def _blocked(self, name: str) -> Rejected:
        state = await self._health.state(name)
        if state.state == "disabled":
            message = f"turned off until a moderator turns it back on ({state.reason or 'account problem'})"
            return Rejected(name, message, code="disabled", reason=RejectReason.UNSUPPORTED)
        return Rejected(name, "paused after repeated failures", code="breaker_open", reason=RejectReason.UNSUPPORTED)

    async def _note_skip(self, job_id: int, error: ProviderError) -> None:
        """Record a provider of the chain that was passed over without a request, and why: the
        final message tells the member which provider ran and why the earlier ones did not."""
        now = self._clock()
        async with self._db.transaction() as conn:
            client_ref = await store.start_attempt(conn, job_id, error.provider, now)
            await store.finish_attempt(
                conn, client_ref, "not_sent", now, error_class=type(error).__name__, error=error.message
            )

    async def route_history(self, job_id: int) -> list[RouteStep]:
        """Every provider the job went to or passed over, in order (for the final message)."""
        return [
            RouteStep(r["provider"], r["state"], r["error_class"], r["error"])
            for r in await store.attempts_for(self._db, job_id)
        ]

    async def _refs_for(self, characters: Sequence[UsableCharacter], provider: VideoProvider) -> list[CharacterRef]:
        """Registers characters lazily on `provider` (ensure_handle remembers real refusals)."""
        refs = []
        for character in characters:
            handle = None
            if provider.capabilities.needs_handle:
                handle = await self._characters.ensure_handle(character, provider)
            refs.append(CharacterRef(key=character.key, asset=character.asset, handle=handle))
        return refs

    async def _attempt(
        self, job: Job, provider: VideoProvider, refs: Sequence[CharacterRef], has_next: bool
    ) -> ProviderError | None:
        """One submission. Returns the error when the caller should fall back or give up."""
        now = self._clock()
        # a token per attempt, written before the call: an earlier attempt's token finds nothing
        token = new_token() if self._public_url and provider.capabilities.callbacks else None
        async with self._db.transaction() as conn:
            if not await store.transition(
                conn,
                job.id,
                (JobState.HELD,),
                JobState.SUBMITTING,
                now,
                provider=provider.name,
                callback_token=token,
            ):
                return None  # someone else (cancel, another dispatcher) got there first
            client_ref = await store.start_attempt(conn, job.id, provider.name, now)
        crash_point("after_attempt")
        request = request_of(job, refs, client_ref)
        if token is not None and self._public_url:
            request = replace(request, callback_url=callback_url(self._public_url, provider.name, token))
        # the router priced this provider's next allowed length; some (the relay) refuse any other
        request = replace(request, seconds=provider.capabilities.fit_seconds(request.seconds))
        try:
            result = await provider.submit(request)
        except Ambiguous as exc:
            self._count_submit(provider.name, "ambiguous")
            await self._health.record(provider.name, ok=False, error=exc, phase="submit")
            async with self._db.transaction() as conn:
                await store.finish_attempt(
                    conn, client_ref, "ambiguous", self._clock(), error_class="Ambiguous", error=exc.message
                )
                await store.transition(
                    conn,
                    job.id,
                    (JobState.SUBMITTING,),
                    JobState.AMBIGUOUS,
                    self._clock(),
                    error=exc.message,
                    error_code=exc.code,
                    next_poll_at=self._clock() + self._poll_min,
                )
            log.warning("job %d: submission to %s is ambiguous (%s); reconciling", job.id, provider.name, exc.code)
            return None
        except ProviderError as exc:
            busy = isinstance(exc, RateLimited) and exc.account_busy
            if not busy:  # a full account is the member's turn to wait, not the provider failing
                await self._health.record(provider.name, ok=False, error=exc, phase="submit")
            state = "not_sent" if isinstance(exc, NotSent) else "rejected"
            self._count_submit(provider.name, state)
            tries = await self._attempts_on(job.id, provider.name)
            in_time = job.deadline_at is None or self._clock() < job.deadline_at
            retry = isinstance(exc, RateLimited) and ((busy and in_time) or tries < RATE_LIMIT_RETRIES)
            async with self._db.transaction() as conn:
                await store.finish_attempt(
                    conn, client_ref, state, self._clock(), error_class=type(exc).__name__, error=exc.message
                )
                # back to held: nothing is in flight for this job any more; a long wait backs off
                wait = exc.retry_after or self._poll_min
                if busy:
                    wait = max(wait, self._poll_min * 2 ** min(max(tries - 1, 0), 5))
                wait = min(wait, MAX_RETRY_AFTER)
                await store.transition(
                    conn,
                    job.id,
                    (JobState.SUBMITTING,),
                    JobState.HELD,
                    self._clock(),
                    next_poll_at=self._clock() + wait if retry else None,
                )
            if retry:
                log.info("job %d: %s rate limited; retrying in %.1fs", job.id, provider.name, wait)
                return None
            return exc
        self._count_submit(provider.name, "accepted")
        await self._health.record(provider.name, ok=True, error=None, phase="submit")
        snapshot = result.snapshot
        poll_after = max(self._poll_min, snapshot.poll_after or 0.0)
        async with self._db.transaction() as conn:
            await store.finish_attempt(conn, client_ref, "accepted", self._clock(), external_id=result.external_id)
            await store.transition(
                conn,
                job.id,
                (JobState.SUBMITTING,),
                JobState.QUEUED if snapshot.status == JobStatus.QUEUED else JobState.RUNNING,
                self._clock(),
                external_id=result.external_id,
                progress=snapshot.progress,
                next_poll_at=self._clock() + poll_after,
            )
        crash_point("after_accepted")
        log.info("job %d accepted by %s as %s", job.id, provider.name, result.external_id)
        return None

    def _count_submit(self, provider: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.submit(provider, outcome)

    async def _attempts_on(self, job_id: int, provider: str) -> int:
        return sum(1 for a in await store.attempts_for(self._db, job_id) if a["provider"] == provider)

    async def _give_up(self, job_id: int, error: ProviderError) -> Job:
        outcome = outcome_of(error)
        now = self._clock()
        async with self._db.transaction() as conn:
            if await store.transition(
                conn,
                job_id,
                (JobState.HELD,),
                outcome.state,
                now,
                error=error.message,
                error_code=outcome.error_code,
            ):
                await self._budget.release(conn, job_id, now, reason=f"{error.provider}: {error.message}"[:200])
        job = await store.get(self._db, job_id)
        assert job is not None
        log.info("job %d %s: %s", job_id, job.state, error)
        return job

    # --- restart ----------------------------------------------------------------------------

    async def recover(self) -> dict[str, int]:
        """Run before commands are accepted: settle what a crash left half-done.

        held jobs are dispatched by the loop as usual; a job caught mid-submission becomes
        ambiguous (reconciled, never resubmitted); queued/running are polled; succeeded but
        unposted are delivered. Returns the open jobs by state, for the log.
        """
        now = self._clock()
        async with self._db.transaction() as conn:
            interrupted = await store.take_over(
                conn, self._db.lease_owner, now, self._lease_seconds, restart=True, shards=self._shards
            )
        for job_id in interrupted:
            log.warning("job %d was being submitted when the bot stopped; reconciling, not resending", job_id)
        counts = await store.count_by_state(self._db)
        return {state: n for state, n in counts.items() if state in OPEN}

    async def renew_leases(self) -> None:
        """Every loop pass: keep this process's jobs, and take over those of a process that stopped
        renewing (it died), with the restart rules: a job it left mid-submission becomes ambiguous."""
        orphaned = await store.renew_leases(self._db, self._clock(), self._lease_seconds, self._shards)
        for job_id in orphaned:
            log.warning("job %d was being submitted by a process that stopped; reconciling, not resending", job_id)

    async def release_leases(self) -> None:
        """At a clean stop: another process may take this one's jobs at once."""
        released = await store.release_leases(self._db)
        if released:
            log.info("released the leases of %d jobs", released)

    async def next_due_at(self, exclude: Collection[int] = ()) -> float | None:
        """When the loop next has something to do (dispatch, poll or post); jobs in `exclude` (being
        polled now) do not count."""
        return await store.next_due_at(self._db, OPEN | FINISHED, unnotified_only=True, exclude=exclude)

    async def job_row(self, job_id: int) -> Job:
        job = await store.get(self._db, job_id)
        assert job is not None
        return job

    async def job(self, actor: Actor, job_id: int) -> Job:
        """A job of the actor's guild (buttons carry job ids; never trust them across guilds)."""
        job = await store.get(self._db, job_id)
        if job is None or job.guild_id != actor.guild_id:
            raise UserFacingError("generate.no_such_job", job=job_id)
        return job

    # --- cancel ------------------------------------------------------------------------------

    async def cancel(self, actor: Actor, job_id: int) -> Job:
        """Cancel before the provider accepted the job (nothing billed): the hold is released.
        Once a provider has it, our providers cannot stop a render, so we say so instead."""
        job = await store.get(self._db, job_id)
        if job is None or job.guild_id != actor.guild_id:
            raise UserFacingError("generate.no_such_job", job=job_id)
        if job.user_id != actor.user_id and not await self._guilds.is_moderator(actor):
            raise UserFacingError("generate.not_your_job", job=job_id)
        now = self._clock()
        async with self._db.transaction() as conn:
            if await store.transition(conn, job_id, (JobState.HELD,), JobState.CANCELED, now, error="canceled"):
                await self._budget.release(conn, job_id, now, reason="canceled by member")
                canceled = True
            else:
                canceled = False
        fresh = await store.get(self._db, job_id)
        assert fresh is not None
        if not canceled:
            if fresh.state in WITH_PROVIDER:
                raise UserFacingError("generate.cannot_cancel_running", job=job_id, provider=fresh.provider or "?")
            raise UserFacingError("generate.already_finished", job=job_id)
        return fresh
