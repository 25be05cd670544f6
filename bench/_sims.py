"""The provider simulators of tests/fakes, extended for benchmarks: per-job render times, jobs
created directly (as if submitted earlier), cheap request counting instead of a full request log.

The wire behaviour is the simulators' own; only bookkeeping differs.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.kling_sim import KlingSim, VideoTask
from tests.fakes.openai_sim import OpenAISim, SimJob

OPENAI_KEY = "sk-bench-openai-0123456789"
KLING_KEY = "api-key-kling-bench-0123456789"


@dataclass
class TimedJob(SimJob):
    """A simulator job with its own render time (the simulator's is one value for every job)."""

    duration: float = 1.0

    def state(self, duration: float) -> tuple[str, int]:
        return super().state(self.duration)

    @property
    def completes_at(self) -> float:
        return self.started + self.duration


class BenchOpenAISim(OpenAISim):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(api_key=OPENAI_KEY, **kwargs)
        self.counts: Counter[str] = Counter()  # "status", "content", "create", "list", "other"

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path
        if request.method == "GET" and path.startswith("/v1/videos/") and path.count("/") == 3:
            kind = "status"
        elif path.endswith("/content"):
            kind = "content"
        elif request.method == "POST" and path == "/v1/videos":
            kind = "create"
        elif request.method == "GET" and path == "/v1/videos":
            kind = "list"
        else:
            kind = "other"
        self.counts[kind] += 1
        result: web.StreamResponse = await handler(request)
        return result

    def add_job(self, duration: float, started: float, seconds: str = "8") -> TimedJob:
        """A job that started at `started` (time.monotonic()) and renders for `duration` seconds."""
        job = TimedJob(
            id=f"video_{secrets.token_hex(12)}_{len(self.jobs) + 1}",
            model="sora-2",
            prompt="a paper boat on a canal",
            size="1280x720",
            seconds=seconds,
            characters=[],
            created_at=int(time.time()),
            started=started,
            duration=duration,
        )
        self.jobs[job.id] = job
        return job


class BenchKlingSim(KlingSim):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(api_key=KLING_KEY, **kwargs)
        self.durations: dict[str, float] = {}
        self.counts: Counter[str] = Counter()  # "status", "download", "create", "other"

    async def _record(self, request: web.Request) -> Any:
        if request.method == "GET" and request.path == "/tasks":
            kind = "status"
        elif request.path.startswith("/cdn/"):
            kind = "download"
        elif request.method == "POST" and request.path.startswith("/omni-video/"):
            kind = "create"
        else:
            kind = "other"
        self.counts[kind] += 1
        raw = await request.read()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    def _video_state(self, task: VideoTask) -> str:
        elapsed = time.monotonic() - task.created
        duration = self.durations.get(task.id, self.video_seconds)
        if elapsed < duration * 0.3:
            return "submitted"
        if elapsed < duration:
            return "processing"
        return "succeeded" if task.outcome == "succeed" else "failed"

    def add_task(self, duration: float, started: float, video_seconds: int = 5) -> VideoTask:
        task = VideoTask(
            id=str(self._next_id()),
            external_id="",
            created=started,
            created_ms=int((time.time() - (time.monotonic() - started)) * 1000),
            outcome="succeed",
            resolution="720p",
            duration=video_seconds,
            audio="off",
            body={},
        )
        self.tasks[task.id] = task
        self.durations[task.id] = duration
        return task
