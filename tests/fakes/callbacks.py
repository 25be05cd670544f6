"""The simulators' side of webhooks: POST a provider-shaped callback to the URL a job was given
when the job changes, and keep what was sent (with the answer) for the tests and the bench.

    poster = CallbackPoster()
    poster.later(0.3, url, lambda: (body_bytes, headers))   # sent 0.3 s from now
    await poster.close()
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx
from aiohttp import web

from tests.fakes.loopback import serve

Build = Callable[[], "tuple[bytes, Mapping[str, str]] | None"]


@dataclass(frozen=True)
class Sent:
    url: str
    body: bytes
    headers: Mapping[str, str]
    status: int | None  # the bot's answer; None: no answer (refused connection, timeout)
    at: float  # time.monotonic() when it was sent


class CallbackPoster:
    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.enabled = True  # False: the provider "forgets" to call back (a missed callback)
        self.retries = 3  # sends of one callback at most, while the answer is none, a 429 or a 5xx
        self.retry_after = 0.5  # seconds, times the attempt
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    def later(self, delay: float, url: str, build: Build) -> None:
        """Build the callback when `delay` seconds have passed (None: nothing to send) and POST it."""
        task = asyncio.get_running_loop().create_task(self._later(delay, url, build))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def when(self, ready: Callable[[], bool], url: str, build: Build, every: float = 0.01) -> None:
        """POST once `ready()` holds, looked at every `every` seconds (until the sim closes)."""
        task = asyncio.get_running_loop().create_task(self._when(ready, url, build, every))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _when(self, ready: Callable[[], bool], url: str, build: Build, every: float) -> None:
        while not ready():
            await asyncio.sleep(every)
        await self._send(url, build)

    async def _later(self, delay: float, url: str, build: Build) -> None:
        await asyncio.sleep(max(0.0, delay))
        await self._send(url, build)

    async def _send(self, url: str, build: Build) -> None:
        built = build()
        if built is None or not self.enabled:
            return
        body, headers = built
        # as fal does (up to 10 retries over 2 h), try again when the bot did not take it; faster
        for attempt in range(1, self.retries + 1):
            status = await self.post(url, body, headers)
            if status is not None and status < 500 and status != 429:
                return
            if attempt < self.retries:
                await asyncio.sleep(self.retry_after * attempt)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int | None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=15.0)  # fal's delivery timeout
        at = time.monotonic()
        try:
            response = await self._client.post(
                url, content=body, headers={"content-type": "application/json", **headers}
            )
            status: int | None = response.status_code
        except httpx.HTTPError:
            status = None
        self.sent.append(Sent(url, body, dict(headers), status, at))
        return status

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None


@dataclass(frozen=True)
class Received:
    path: str
    body: bytes
    headers: Mapping[str, str]
    at: float


class CallbackReceiver:
    """A loopback endpoint that keeps every POST: where a provider's callbacks land in contract tests."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> CallbackReceiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._post)
        self._runner, self.url = await serve(app)
        return self

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(Received(request.path, body, dict(request.headers), time.monotonic()))
        return web.Response(status=200)

    async def wait(self, count: int = 1, timeout: float = 5.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.received

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
