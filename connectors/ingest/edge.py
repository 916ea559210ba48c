"""What every HTTP source shares: a size-limited body read, bearer auth with throttling of
repeated failures (:class:`AuthGuard`), JSON answers.

The throttle is written here rather than taken from a library: aiohttp has no maintained
rate-limit middleware that knows which requests *failed authentication*, and counting only
those (not all traffic) is the point — a sender that authenticates is never slowed.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from aiohttp import HttpVersion11, web

from streams.support import metrics
from streams.support.secrets import Secret

log = structlog.get_logger(__name__)


class SignatureError(Exception):
    """A request's signature is missing, malformed, stale, replayed or wrong: a 401 with
    ``reason``; ``metric`` is the rejection reason it is counted under."""

    def __init__(self, reason: str, metric: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.metric = metric


#: Longest wait for the next piece of a request body before the request is refused.
BODY_IDLE_TIMEOUT = 10.0


class BodyStalled(web.HTTPBadRequest):
    """No body data for :data:`BODY_IDLE_TIMEOUT` seconds: a 400, and the connection is
    closed after it (the error middleware, streams/runtime/web.py), since what remains of the
    body will never be read.

    aiohttp (3.14) leaves a handler waiting forever when a ``Content-Encoding: deflate`` body
    that does not decode arrives after the headers, in a later read: its parser raises at
    the end of the message, answers nothing for the request already dispatched, and never
    ends that request's body stream. The same bytes in one read get aiohttp's own 400. A
    client that stops sending mid-body (slowloris) ends here too.
    """

    close_connection = True


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` bytes (answer 413).

    Checks Content-Length first, then counts while streaming, so a chunked upload or a lying
    header never makes the server buffer more than ``limit`` bytes. Waits at most
    :data:`BODY_IDLE_TIMEOUT` for each next piece (:class:`BodyStalled`).
    """
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    content = request.content
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(content.readany(), BODY_IDLE_TIMEOUT)
            except TimeoutError:
                raise BodyStalled(
                    reason=(
                        f"request body could not be read: nothing for {BODY_IDLE_TIMEOUT:g} s "
                        "(incomplete, or a Content-Encoding that does not decode)"
                    )
                ) from None
            if not chunk:
                break
            body += chunk
            if len(body) > limit:
                return None
    except web.RequestPayloadError as exc:  # e.g. Content-Encoding: gzip over bytes that are not
        # The sender's mistake, not ours: a JSON 400 (the error middleware), not a 500.
        why = " ".join(str(exc).split())  # a reason may not hold a line break
        raise web.HTTPBadRequest(reason=f"request body could not be read: {why}"[:200]) from None
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
    # surrogateescape: aiohttp decodes header bytes that are not UTF-8 to surrogates, which a
    # plain encode() refuses (a 500, and a failure never counted by the throttle).
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode("utf-8", "surrogateescape"), expected.encode()
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


@dataclass
class _Client:
    failures: list[float]
    blocked_until: float = 0.0
    #: Blocks in a row without a success in between: each doubles the block (up to the cap).
    strikes: int = 0


class AuthGuard:
    """Counts authentication failures and throttles the clients that keep failing.

    A client (its address; behind a proxy listed in ``trusted_proxies``, the nearest
    untrusted ``X-Forwarded-For`` hop) that fails ``limit`` times within ``window`` seconds
    is refused for ``block`` seconds with 429 + Retry-After, *before* its credential is
    looked at, so a guesser learns nothing while blocked; each further block in a row
    doubles, up to ``max_block``. A success forgets the client. One guard is shared by every
    endpoint of a process, so a guesser cannot spread its attempts over them.

    Memory is bounded (``max_clients``, least recently seen forgotten first). Counted in
    ``accessguard_auth_failures_total{endpoint,reason}`` (reasons: missing, wrong, stale,
    throttled) — never by address; the log line of a block carries the address.
    """

    def __init__(
        self,
        *,
        limit: int = 20,
        window: float = 60.0,
        block: float = 60.0,
        max_block: float = 900.0,
        trusted_proxies: Iterable[str] = (),
        max_clients: int = 65536,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.block = block
        self.max_block = max_block
        self.max_clients = max_clients
        self.clock = clock
        self.trusted = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def client(self, request: web.Request) -> str:
        """The address failures are counted against."""
        peer = request.remote or "-"
        if not self.trusted or not self._trusted(peer):
            return peer
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
        for hop in reversed([h for h in hops if h]):
            if not self._trusted(hop):
                return hop
        return peer

    def blocked(self, request: web.Request, endpoint: str) -> web.Response | None:
        """429 + Retry-After while the client is blocked, else None (go on and check)."""
        if not self._clients:
            return None
        key = self.client(request)
        state = self._clients.get(key)
        if state is None:
            return None
        wait = state.blocked_until - self.clock()
        if wait <= 0:
            return None
        metrics.AUTH_FAILURES.labels(endpoint, "throttled").inc()
        return web.json_response(
            {"error": "too many failed authentications from this client; retry later"},
            status=429,
            headers={"Retry-After": str(max(1, round(wait)))},
            dumps=lambda o: orjson.dumps(o).decode(),
        )

    def failed(self, request: web.Request, endpoint: str, reason: str) -> None:
        """Count one failed authentication; block the client at the limit."""
        metrics.AUTH_FAILURES.labels(endpoint, reason).inc()
        key = self.client(request)
        now = self.clock()
        state = self._clients.get(key)
        if state is None:
            state = self._clients[key] = _Client([])
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(key)
        cutoff = now - self.window
        failures = [t for t in state.failures if t > cutoff]
        failures.append(now)
        state.failures = failures
        if len(failures) >= self.limit and state.blocked_until <= now:
            seconds = min(self.block * (2**state.strikes), self.max_block)
            state.blocked_until = now + seconds
            state.strikes += 1
            state.failures = []
            log.warning(
                "auth.client_blocked",
                endpoint=endpoint,
                client=key,
                failures=len(failures),
                window_s=self.window,
                blocked_s=seconds,
            )

    def succeeded(self, request: web.Request) -> None:
        """A client that authenticated starts again with a clean slate."""
        if self._clients:
            self._clients.pop(self.client(request), None)

    def bearer(
        self, request: web.Request, endpoint: str, token: Secret | None
    ) -> web.Response | None:
        """The bearer check of an ingest endpoint: None when ``Authorization`` carries
        ``token``, else the answer (429 while blocked, 401 otherwise, counted)."""
        denied = self.blocked(request, endpoint)
        if denied is not None:
            return denied
        header = request.headers.get("Authorization")
        if bearer_ok(token, header):
            self.succeeded(request)
            return None
        self.failed(request, endpoint, "missing" if not header else "wrong")
        return json_answer(401, {"error": "missing or wrong bearer token"})


async def expect_continue(request: web.Request) -> None:
    """``Expect: 100-continue`` as aiohttp answers it; any other expectation is ignored, as
    RFC 9110 allows, instead of aiohttp's text/plain 417 (and its 500 for an Expect value
    that is not UTF-8, raised outside the error middleware). Every route of every door takes
    it as ``expect_handler``, the SCIM sub-application's and the SSF push endpoint's too."""
    expect = request.headers.get("Expect", "")
    if request.version == HttpVersion11 and expect.lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
