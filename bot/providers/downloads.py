"""A finished video at a provider's public URL (a signed CDN link), streamed to a file.

No key is ever sent: such URLs need none, and a CDN must not see it. Failures map onto the
provider errors: gone (403/404/410) is definitive, anything else is worth another try later.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from bot.media import DownloadTooLarge, stream_to_file
from bot.providers.base import DownloadResult, Rejected, Unavailable


async def download_public(
    client: httpx.AsyncClient,
    url: str,
    dest: Path,
    max_bytes: int,
    *,
    provider: str,
    label: str,
    http_timeout: httpx.Timeout,
) -> DownloadResult:
    """Stream `url` to `dest`, at most `max_bytes`; `label` names the provider to members."""
    try:
        async with client.stream("GET", url, timeout=http_timeout, follow_redirects=True) as response:
            if response.status_code in (403, 404, 410):
                raise Rejected(provider, f"the video is no longer available on {label}")
            if response.status_code != 200:
                raise Unavailable(provider, f"video download failed (HTTP {response.status_code})")
            size, digest = await stream_to_file(response, dest, max_bytes)
            content_type = response.headers.get("content-type", "video/mp4").split(";")[0].strip()
    except DownloadTooLarge:
        raise Rejected(provider, f"the video is larger than {max_bytes} bytes") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise Unavailable(provider, f"video download failed ({type(exc).__name__})") from None
    except OSError as exc:
        raise Unavailable(provider, f"could not store the video ({type(exc).__name__})") from None
    return DownloadResult(path=dest, size=size, content_type=content_type or "video/mp4", sha256=digest)
