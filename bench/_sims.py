"""The provider simulators of tests/fakes, extended for benchmarks: per-job render times, jobs
created directly (as if submitted earlier), cheap request counting instead of a full request log.

The wire behaviour is the simulators' own; only bookkeeping differs.
"""

from __future__ import annotations

import base64
import heapq
import json
import os
import secrets
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.fal_sim import SIM_MODELS, FalSim, app_of
from tests.fakes.fal_sim import SimJob as FalJob
from tests.fakes.gemini_sim import API as GEMINI_API
from tests.fakes.gemini_sim import GeminiSim, SimInteraction
from tests.fakes.kling_sim import KlingSim, VideoTask
from tests.fakes.openai_sim import OpenAISim, SimJob

OPENAI_KEY = "sk-bench-openai-0123456789"
KLING_KEY = "api-key-kling-bench-0123456789"
GEMINI_KEY = "gemini-bench-key-0123456789"
FAL_KEY = "fal-key-bench-0123456789abcdef"
GEMINI_MODEL = "gemini-omni-1.1-flash"
FAL_MODEL = "wan/v2.6/reference-to-video"


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
        self.reads: dict[str, list[float]] = {}  # task id -> when a status request asked about it

    async def _record(self, request: web.Request) -> Any:
        if request.method == "GET" and request.path == "/tasks":
            kind = "status"
            now = time.monotonic()
            for task_id in request.query.get("task_ids", "").split(","):
                self.reads.setdefault(task_id, []).append(now)
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


def _parse(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class BenchGeminiSim(GeminiSim):
    """Interactions with their own render times. Counts: "status" (GET of an interaction),
    "result" (GET of a file's metadata: the adapter reads the video file's state before the
    download), "download", "create", "other"."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(api_key=GEMINI_KEY, **kwargs)
        self.durations: dict[str, float] = {}
        self.counts: Counter[str] = Counter()
        self.reads: dict[str, list[float]] = {}  # interaction id -> when its status was read

    async def _record(self, request: web.Request) -> Any:
        method, path = request.method, request.path
        if method == "GET" and path.startswith(f"{GEMINI_API}/interactions/"):
            kind = "status"
            self.reads.setdefault(path.rsplit("/", 1)[-1], []).append(time.monotonic())
        elif path.endswith(":download") or path.startswith("/cdn/"):
            kind = "download"
        elif method == "GET" and path.startswith(f"{GEMINI_API}/files/"):
            kind = "result"
        elif method == "POST" and path == f"{GEMINI_API}/interactions":
            kind = "create"
        else:
            kind = "other"
        self.counts[kind] += 1
        return _parse(await request.read())

    def _state(self, interaction: SimInteraction) -> str:
        duration = self.durations.get(interaction.id)
        if duration is None or interaction.outcome != "succeed":
            return super()._state(interaction)
        return "in_progress" if time.monotonic() - interaction.created < duration else "completed"

    def add_interaction(self, duration: float, started: float, seconds: int = 8) -> SimInteraction:
        """A background interaction (video delivered as a file URI, as the adapter asks) that started
        at `started` (time.monotonic()) and renders for `duration` seconds."""
        prompt = "a paper boat on a canal"
        response_format = {
            "type": "video",
            "aspect_ratio": "16:9",
            "resolution": "720p",
            "duration": f"{seconds}s",
            "delivery": "uri",
        }
        interaction = SimInteraction(
            id=base64.urlsafe_b64encode(b"\x0a\x10" + os.urandom(22)).decode().rstrip("="),
            created=started,
            created_wall=time.time() - (time.monotonic() - started),
            model=GEMINI_MODEL,
            outcome="succeed",
            body={
                "model": GEMINI_MODEL,
                "input": prompt,
                "background": True,
                "store": True,
                "response_format": response_format,
            },
            resolution="720p",
            duration=float(seconds),
            aspect_ratio="16:9",
            delivery="uri",
            images=0,
            videos=0,
            video_seconds=0.0,
            text=prompt,
        )
        self.interactions[interaction.id] = interaction
        self.durations[interaction.id] = duration
        return interaction


class BenchFalSim(FalSim):
    """fal's queue with a render time per request and no concurrency limit: every request runs from
    the moment it is queued, as many requests in flight at once do on an account whose concurrency
    covers them (the simulator's default of 2 running would measure fal's queue, not the tracking).
    Counts: "status", "result" (GET response_url), "download" (CDN), "submit", "cancel", "other"."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(api_key=FAL_KEY, **kwargs)
        self.durations: dict[str, float] = {}
        self.counts: Counter[str] = Counter()
        self._ends: list[tuple[float, str]] = []  # (ends at, request id), a heap
        self.reads: dict[str, list[float]] = {}  # request id -> when its status was read

    async def _record(self, host: str, request: web.Request) -> Any:
        method, path = request.method, request.path
        if host == "queue" and method == "GET":
            kind = "status" if path.endswith("/status") else "result"
            if kind == "status":
                self.reads.setdefault(path.split("/")[-2], []).append(time.monotonic())
        elif host == "queue" and method == "POST":
            kind = "submit"
        elif host == "queue" and method == "PUT":
            kind = "cancel"
        elif host == "cdn" and method == "GET":
            kind = "download"
        else:
            kind = "other"
        self.counts[kind] += 1
        return _parse(await request.read())

    def _make_job(self, endpoint_id: str, spec: Any, body: dict[str, Any]) -> FalJob:
        job = super()._make_job(endpoint_id, spec, body)  # a request submitted over the wire
        self.start_clock(job.request_id, job.submitted, self.job_seconds)
        return job

    def start_clock(self, request_id: str, started: float, duration: float | None = None) -> None:
        """(Re)start a request's render at `started`; it takes `duration` (default: as before)."""
        job = self.jobs[request_id]
        if duration is not None:
            self.durations[request_id] = duration
        job.submitted = job.started = started
        job.finished = None
        heapq.heappush(self._ends, (started + self.durations[request_id], request_id))

    def _advance(self) -> None:
        # The simulator's own scheduler scans every request on every call; with thousands in flight
        # and none waiting, a heap of end times gives the same answers.
        now = time.monotonic()
        while self._ends and self._ends[0][0] <= now:
            _, request_id = heapq.heappop(self._ends)
            job = self.jobs[request_id]
            if job.finished is not None or job.outcome == "stuck" or job.started is None:
                continue
            end = job.started + self.durations[request_id]
            if end > now:  # its clock was restarted later: an entry of its own is still queued
                continue
            job.finished = end

    def add_job(self, duration: float, started: float, endpoint_id: str = FAL_MODEL) -> dict[str, Any]:
        """A request queued at `started` (time.monotonic()) that renders for `duration` seconds;
        returns the answer fal's submit would have given for it."""
        body = {"prompt": "a paper boat on a canal", "video_urls": [f"{self.cdn_url}/files/ref/clip.mp4"]}
        job = FalJob(
            request_id=str(uuid.uuid4()),
            endpoint_id=endpoint_id,
            body=body,
            outcome="succeed",
            errors=[],
            submitted=started,
        )
        assert endpoint_id in SIM_MODELS, endpoint_id
        self.jobs[job.request_id] = job
        self.start_clock(job.request_id, started, duration)
        base = f"{self.queue_url}/{app_of(endpoint_id)}/requests/{job.request_id}"
        return {
            "request_id": job.request_id,
            "status": "IN_PROGRESS",
            "response_url": base,
            "status_url": base + "/status",
            "cancel_url": base + "/cancel",
        }
