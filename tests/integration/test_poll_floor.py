"""Engines polled one request per job (Gemini, fal) are looked at no more often than their floor:
without a batch, a list or a hint, POLL_MIN would cost more requests than it saves lag. The floor
stays inside POLL_MAX, and providers polled in batches keep POLL_MIN.

The production wiring (open_bot: real SQLite, the real Gemini adapter) against the loopback
Gemini simulator, driven pass by pass.
"""

from __future__ import annotations

import pytest

from bot.__main__ import open_bot
from bot.providers.gemini import POLL_FLOOR
from bot.services.actors import Actor
from bot.services.generation import GenerateCommand
from tests.conftest import BotHarness, Simulators
from tests.fakes.gemini_sim import GeminiSim

KEY = "AIzaSy-poll-floor-0123456789"
GUILD, CHANNEL, ADMIN, MEMBER = 9101, 9102, 9103, 9104


@pytest.mark.parametrize(("poll_max", "expected"), [(60.0, POLL_FLOOR), (3.0, 3.0)])
async def test_a_per_job_engine_is_looked_at_no_sooner_than_its_floor_within_poll_max(
    harness: BotHarness, sims: Simulators, poll_max: float, expected: float
) -> None:
    gemini = await sims.start(GeminiSim(api_key=KEY, video_seconds=120.0))
    settings = harness.settings(
        providers="gemini", gemini_api_key=KEY, gemini_base_url=gemini.base_url, poll_max_seconds=poll_max
    )
    async with open_bot(settings) as bot:
        await bot.services.budget.set_limits(Actor(ADMIN, GUILD, manage_guild=True), "20")
        command = GenerateCommand(
            actor=Actor(MEMBER, GUILD), interaction_id=None, channel_id=CHANNEL, locale="en-US", prompt="a lake"
        )
        generation = bot.services.generation
        admitted = await generation.admit(command)
        job = await generation.dispatch(admitted.job.id)
        assert job.state == "running" and job.next_poll_at is not None
        # the first look comes at POLL_MIN, as for every provider; then the floor holds
        async with bot.db.transaction() as conn:
            await conn.execute("UPDATE jobs SET next_poll_at = 0 WHERE id = ?", (job.id,))
        before = gemini.status_requests
        report = await bot.services.tracker.poll_once()
        assert report.errors == 0 and gemini.status_requests == before + 1
        looked = await generation.job_row(job.id)
        assert looked.state == "running" and looked.next_poll_at is not None
        assert looked.next_poll_at - looked.updated_at == pytest.approx(expected, abs=0.5)
