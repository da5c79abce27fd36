"""A tiny aiohttp.web server that answers with scripted responses (real sockets, no patching)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

Reply = tuple[int, dict[str, str], bytes]


@asynccontextmanager
async def scripted_server(
    replies: Sequence[Reply] | Callable[[web.Request], Reply],
) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """Serve ``replies`` in order (the last one repeats), or whatever a function returns.
    Yields the base URL and the list of requests seen (path, headers, body)."""
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        seen.append(
            {
                "path": request.path,
                "headers": dict(request.headers),
                "body": await request.read(),
                "peer": peer,
            }
        )
        if callable(replies):
            status, headers, body = replies(request)
        else:
            status, headers, body = replies[min(len(seen), len(replies)) - 1]
        return web.Response(status=status, headers=headers, body=body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


def gzip_bomb(mebibytes: int) -> bytes:
    """A valid gzip body that inflates to ``mebibytes`` MiB of zeros (about 1 KiB per MiB).

    One MiB is compressed after a full flush, which makes every further MiB compress to the
    same bytes: they are repeated instead of compressed again (fast, and little memory)."""
    block = bytes(1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    first = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = deflate.flush()[:-8]  # the trailer is rewritten for the whole stream below
    crc = 0
    for _ in range(mebibytes):
        crc = zlib.crc32(block, crc)
    trailer = struct.pack("<II", crc, (mebibytes << 20) & 0xFFFFFFFF)
    return first + again * (mebibytes - 1) + end + trailer
