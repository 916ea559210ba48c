"""What every HTTP source shares: a size-limited body read, bearer auth, JSON answers."""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from aiohttp import web

from streams.secrets import Secret


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


def bearer_ok(token: Secret | None, header: str | None) -> bool:
    """``Authorization: Bearer <token>`` matches, compared in constant time. An unset token
    refuses everything: an ingest endpoint is never open by omission."""
    if token is None or not header:
        return False
    expected = token.reveal()
    if not expected:
        return False
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), expected.encode()
    )


def json_answer(status: int, body: Any) -> web.Response:
    """A JSON response; a 401 says which scheme to use (RFC 6750), a 503 when to retry."""
    headers = None
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    elif status == 503:
        headers = {"Retry-After": "5"}
    return web.json_response(
        body, status=status, headers=headers, dumps=lambda o: orjson.dumps(o).decode()
    )
