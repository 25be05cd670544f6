"""What every provider simulator does the same way: serve an aiohttp app on a free loopback port,
and send a video whole or in chunks (a CDN without Content-Length)."""

from __future__ import annotations

from aiohttp import web

CHUNK = 16 * 1024


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """Start `app` on 127.0.0.1 at a port the OS picks; returns its runner and base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    return runner, f"http://127.0.0.1:{port}"


async def send_video(request: web.Request, data: bytes, *, chunked: bool) -> web.StreamResponse:
    """An MP4 answer: with Content-Length, or chunked without one."""
    if not chunked:
        return web.Response(body=data, content_type="video/mp4")
    response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for start in range(0, len(data), CHUNK):
        await response.write(data[start : start + CHUNK])
    await response.write_eof()
    return response
