"""The naive client of the seed article, as a separate process: one `wait_for_video` loop per job.

    while True:
        GET status
        if done: break
        await asyncio.sleep(5)        # time-scaled like the simulators
    download the video

It uses aiohttp (not httpx) so that the client itself is as cheap as it can be: the comparison is
about the polling pattern, not a slow HTTP library. Run by bench.tracking_scale (config as JSON on
stdin, results as JSON on stdout), in a process of its own so that its CPU time is measured apart
from the simulators it polls.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

DONE = {"openai": {"completed", "failed"}, "kling": {"succeeded", "failed"}}


async def wait_for_video(
    client: aiohttp.ClientSession, job: dict[str, Any], cfg: dict[str, Any], folder: Path
) -> dict[str, Any]:
    provider = job["provider"]
    base, key = cfg["bases"][provider], cfg["keys"][provider]
    headers = {"Authorization": f"Bearer {key}"}
    requests = 0
    status = ""
    entry: dict[str, Any] = {}
    while True:
        try:
            if provider == "openai":
                async with client.get(f"{base}/videos/{job['id']}", headers=headers) as response:
                    requests += 1
                    entry = await response.json()
            else:
                params = {"task_ids": job["id"]}
                async with client.get(f"{base}/tasks", params=params, headers=headers) as response:
                    requests += 1
                    entry = ((await response.json()).get("data") or [{}])[0]
            status = str(entry.get("status", ""))
        except (aiohttp.ClientError, ValueError):
            status = ""
        if status in DONE[provider]:
            break
        await asyncio.sleep(cfg["interval"])
    seen_at = time.monotonic()
    url = f"{base}/videos/{job['id']}/content" if provider == "openai" else entry["outputs"][0]["url"]
    await save(client, url, headers if provider == "openai" else None, folder / f"{job['id']}.mp4")
    return {"id": job["id"], "requests": requests, "seen_at": seen_at, "done_at": time.monotonic()}


async def save(client: aiohttp.ClientSession, url: str, headers: dict[str, str] | None, path: Path) -> None:
    """Download `url` to `path` in chunks, as the article's client does."""
    async with client.get(url, headers=headers) as response:
        with path.open("wb") as out:
            async for chunk in response.content.iter_chunked(64 * 1024):
                out.write(chunk)


Waiter = Callable[[aiohttp.ClientSession, dict[str, Any], dict[str, Any], Path], Awaitable[dict[str, Any]]]


async def run(cfg: dict[str, Any], waiter: Waiter = wait_for_video) -> dict[str, Any]:
    """Every job's loop at once; `waiter` is one job's loop (bench.tracking_scale brings its own
    for the providers without a batch)."""
    started = time.monotonic()
    cpu = time.process_time()
    connector = aiohttp.TCPConnector(limit=cfg.get("connections", 100))
    timeout = aiohttp.ClientTimeout(total=120)
    with tempfile.TemporaryDirectory(prefix="castbot-bench-naive-") as tmp:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
            results = await asyncio.gather(*(waiter(client, j, cfg, Path(tmp)) for j in cfg["jobs"]))
    return {"started": started, "cpu_seconds": time.process_time() - cpu, "jobs": results}


def main() -> None:
    cfg = json.loads(sys.stdin.read())
    out = asyncio.run(run(cfg))
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    main()
