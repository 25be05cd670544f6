"""Size-capped, streamed downloads and file hashing for `bot.media`."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO

import httpx

_MB = 1024 * 1024


class DownloadTooLarge(Exception):
    """The body is (or announces itself as) larger than the cap. Carries no URL: URLs can hold tokens."""

    def __init__(self, max_bytes: int, seen: int, *, declared: bool) -> None:
        self.max_bytes = max_bytes
        self.seen = seen
        self.declared = declared
        how = "announced" if declared else "more than"
        super().__init__(f"the file is larger than allowed ({how} {_fmt_mb(seen)}; limit {_fmt_mb(max_bytes)})")


def _fmt_mb(n: int) -> str:
    return f"{n / _MB:.1f} MB" if n >= _MB // 10 else f"{n} bytes"


def sha256_file(path: Path, *, chunk: int = 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


async def download_capped(
    client: httpx.AsyncClient, url: str, dest: Path, max_bytes: int, *, chunk: int = 64 * 1024
) -> tuple[int, str]:
    """Stream `url` into `dest`, never holding more than one chunk in memory.

    Returns (size, sha256 hex). Raises DownloadTooLarge if the declared Content-Length or the
    running byte count exceeds `max_bytes`; non-2xx answers raise httpx.HTTPStatusError; other
    httpx errors propagate. `dest` is never a partial file (see `stream_to_file`).
    """
    async with client.stream("GET", url) as response:
        response.raise_for_status()
        return await stream_to_file(response, dest, max_bytes, chunk=chunk)


async def stream_to_file(
    response: httpx.Response, dest: Path, max_bytes: int, *, chunk: int = 64 * 1024
) -> tuple[int, str]:
    """Write the body of an open streamed `response` to `dest`, hashing it on the way.

    Returns (size, sha256 hex). Raises DownloadTooLarge past `max_bytes` (declared or counted);
    httpx and OS errors propagate. The body goes to a temporary file in dest's folder, renamed
    into place only when complete, so `dest` is never a partial file.
    """
    declared = response.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise DownloadTooLarge(max_bytes, int(declared), declared=True)
    await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
    digest = hashlib.sha256()
    size = 0
    fh: BinaryIO | None = None
    try:
        fh = await asyncio.to_thread(tmp.open, "wb")
        # Decoded bytes are counted, so a compressed body cannot expand past the cap either.
        async for block in response.aiter_bytes(chunk):
            size += len(block)
            if size > max_bytes:
                raise DownloadTooLarge(max_bytes, size, declared=False)
            digest.update(block)
            await asyncio.to_thread(fh.write, block)
        await asyncio.to_thread(_finish, fh, tmp, dest)
        fh = None
    except BaseException:
        if fh is not None:
            fh.close()
        tmp.unlink(missing_ok=True)
        raise
    return size, digest.hexdigest()


def _finish(fh: BinaryIO, tmp: Path, dest: Path) -> None:
    fh.flush()
    os.fsync(fh.fileno())
    fh.close()
    os.replace(tmp, dest)
