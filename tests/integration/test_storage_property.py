"""Property: whatever the history (characters made, shared and deleted, jobs in every state with
or without their files, any size cap), the janitor never deletes a file a live character or a job
still needing it refers to. The oracle below is written from the rules, not from the store's SQL."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.db import Database
from bot.domain.job_state import JobState
from bot.services.storage import StorageService
from tests.storage_world import NOW, Files

STATES = [s.value for s in JobState]
DONE = {"delivered", "failed", "rejected", "canceled"}  # nothing more will happen to the job

ages = st.one_of(st.none(), st.floats(min_value=0, max_value=40))
characters = st.lists(st.tuples(ages, st.integers(0, 3)), max_size=6)  # (deleted days ago, clip)
jobs = st.lists(
    st.tuples(
        st.sampled_from(STATES),
        ages,  # finished (notified) days ago
        st.lists(st.integers(0, 5), max_size=3),  # characters it refers to (indices)
        st.integers(1_000, 30_000_000),  # video size
        st.booleans(),  # has a video
        st.booleans(),  # has a fitted copy
    ),
    max_size=8,
)


async def scenario(
    chars: list[tuple[float | None, int]],
    history: list[tuple[str, float | None, list[int], int, bool, bool]],
    cap: int,
    days: float,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = await Database.open(Path(tmp) / "castbot.sqlite3")
        try:
            await db.migrate()
            files = Files(Path(tmp) / "data", db)
            made = [await files.character(deleted_days_ago=d, sha=f"{clip:064x}") for d, clip in chars]
            clips = {made[i]: f"{chars[i][1]:064x}" for i in range(len(made))}
            needed: set[Path] = set()
            for i, (_deleted, clip) in enumerate(chars):
                if chars[i][0] is None:  # live
                    needed.update(files.character_files(made[i]))
                    needed.add(files.clip(f"{clip:064x}"))
            for state, finished, refs, size, video, fit in history:
                used = [made[r] for r in refs if r < len(made)]
                job = await files.job(
                    state=state, finished_days_ago=finished, characters=used, size=size, video=video, fit=video and fit
                )
                owed = state not in DONE or finished is None  # its video is still to be posted
                if owed and video:
                    needed.add(files.videos[job])
                    if fit:
                        needed.add(files.fit_copy(job))
                # still to be sent or rendered (a made video needs no character any more)
                if state not in DONE and (state != "succeeded" or finished is None):
                    for c in used:
                        needed.update(files.character_files(c))
                        needed.add(files.clip(clips[c]))
            janitor = StorageService(db, files.data, retention_days=days, max_bytes=cap, clock=lambda: NOW)
            await janitor.sweep()
            missing = sorted(str(p) for p in needed if not p.exists())
            assert not missing, f"the janitor deleted files still needed: {missing}"
        finally:
            await db.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chars=characters, history=jobs, cap=st.sampled_from([1_000, 50_000_000, 10**12]), days=st.sampled_from([1, 14]))
def test_the_janitor_never_deletes_what_a_live_job_or_character_needs(
    chars: list[tuple[float | None, int]],
    history: list[tuple[str, float | None, list[int], int, bool, bool]],
    cap: int,
    days: float,
) -> None:
    asyncio.run(scenario(chars, history, cap, days))
