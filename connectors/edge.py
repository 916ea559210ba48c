"""What every HTTP source shares: reading a body under a size limit."""

from __future__ import annotations

from aiohttp import web


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` bytes (answer 413).

    Checks Content-Length first, then counts while streaming, so a chunked upload or a lying
    header never makes the server buffer more than ``limit`` bytes.
    """
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)
