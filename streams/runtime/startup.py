"""Starting against a broker that is not there yet, visibly.

A service started before its Kafka (a pod scheduled before the cluster is up, a broker being
restarted) waits rather than dies: it retries with backoff, logs each failure with the
reason, and meanwhile answers on its HTTP port — ``/healthz`` 200 (alive: do not restart
me), ``/readyz`` 503 with the reason (do not route to me), ``/metrics`` (readiness gauge
``broker`` at 0), and 503 with Retry-After to anything else, so senders retry instead of
losing input. Once the broker answers, that stand-in server closes and the real one takes
the port. ``startup.broker_timeout`` (seconds, 0 = forever) bounds the wait for callers who
prefer to fail fast and be restarted.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.bus.broker import wait_for_kafka
from streams.runtime.observe import update_readiness_gauges
from streams.support import metrics
from streams.support.errors import BrokerError

log = structlog.get_logger(__name__)

#: Longest pause between two attempts (seconds).
MAX_BACKOFF = 15.0


class _Waiting(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], bootstrap: str) -> None:
        super().__init__(address, _Handler)
        self.bootstrap = bootstrap
        self.reason = "not tried yet"


class _Handler(BaseHTTPRequestHandler):
    server: _Waiting

    def _answer(self, status: int, body: Any, ctype: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        if status == 503:
            self.send_header("Retry-After", "5")
        self.end_headers()
        self.wfile.write(data)

    def _waiting(self) -> dict[str, Any]:
        return {
            "error": f"starting: waiting for the broker at {self.server.bootstrap}",
            "reason": self.server.reason,
        }

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._answer(200, {"status": "alive", "starting": True})
        elif self.path == "/readyz":
            self._answer(503, {"ready": False, "checks": {"broker": False}, **self._waiting()})
        elif self.path == "/metrics":
            self._answer(200, generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST)
        else:
            self._answer(503, self._waiting())

    def do_POST(self) -> None:
        # the body is not read: the connection closes after the answer
        self.close_connection = True
        self._answer(503, self._waiting())

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        """Quiet: the wait is logged once per attempt, not per probe."""


def wait_for_broker(
    bootstrap: str,
    *,
    timeout: float = 0.0,
    http: tuple[str, int] | None = None,
    what: str = "accessguard",
) -> None:
    """Return once ``bootstrap`` answers a metadata request; retry with backoff until then
    (forever when ``timeout`` is 0, else raise :class:`BrokerError` after it). With ``http``
    (host, port), answer health, readiness and metrics there while waiting."""
    server: _Waiting | None = None
    attempt = 0
    started = time.monotonic()
    backoff = 1.0
    try:
        while True:
            attempt += 1
            try:
                accepts(bootstrap)
                wait_for_kafka(bootstrap, timeout=5.0)
            except BrokerError as exc:
                waited = time.monotonic() - started
                if timeout and waited >= timeout:
                    raise BrokerError(
                        f"{what}: broker {bootstrap} unreachable for {waited:.0f}s "
                        f"(startup.broker_timeout={timeout:g}): {exc}"
                    ) from exc
                if server is None and http is not None:
                    server = _serve(http, bootstrap)
                if server is not None:
                    server.reason = str(exc)
                update_readiness_gauges({"broker": False})
                log.error(
                    "broker.unreachable",
                    service=what,
                    bootstrap=bootstrap,
                    error=str(exc),
                    attempt=attempt,
                    retry_in=backoff,
                    effect="not ready; input is refused with 503 until the broker answers",
                )
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if attempt > 1:
                log.info(
                    "broker.reachable",
                    service=what,
                    bootstrap=bootstrap,
                    attempts=attempt,
                    waited=round(time.monotonic() - started, 1),
                )
            return
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()


def accepts(bootstrap: str) -> None:
    """Raise BrokerError unless some bootstrap server accepts a TCP connection: a refused
    port fails here in a millisecond, quietly (a Kafka client would back off for seconds
    and log each refusal)."""
    errors = []
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2.0):
                return
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            errors.append(f"{server.strip()}: {why}")
    raise BrokerError("no bootstrap server accepts connections (" + "; ".join(errors) + ")")


def _serve(http: tuple[str, int], bootstrap: str) -> _Waiting | None:
    try:
        server = _Waiting(http, bootstrap)
    except OSError as exc:  # the port is taken: waiting still works, only unseen
        log.warning("startup.http_unavailable", address=f"{http[0]}:{http[1]}", error=str(exc))
        return None
    threading.Thread(target=server.serve_forever, name="waiting-for-broker", daemon=True).start()
    return server
