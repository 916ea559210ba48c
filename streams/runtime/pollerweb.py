"""The HTTP face of a poller run on its own (``accessguard connect poller NAME``).

Before this a poller process served nothing: a poller whose token had expired kept its pod
green while it polled nothing. It now serves, on ``sources.health_port``:

* ``/healthz`` (and ``/readyz``, the name the other processes use): 200 only while the last
  round succeeded recently; 503 with the reason (``starting``, ``auth``, ``failing``,
  ``stale``) otherwise (:func:`connectors.base.health.poller_health`). The Deployment's
  readiness probe: a poller that cannot read its source shows as not ready, loudly.
* ``/livez``: 200 while the poll loop runs. The liveness probe: a restart fixes a loop that
  died, never an expired credential, so liveness does not look at rounds (a restart loop on
  a bad token would only hide the reason in CrashLoopBackOff).
* ``/metrics``: the process's Prometheus registry (the source's events, rejections, last
  event, cadence and failed rounds), scraped by the ServiceMonitor.

Nothing here names a vendor: any :class:`~connectors.base.pollers.PollLoop` (or a runner
that offers ``health_check``) is served the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connectors.base.health import Health
from connectors.ingest.edge import expect_continue
from streams.runtime.web import errors_as_json
from streams.support import metrics


class Watched(Protocol):
    """What the server needs of a poller: its name and its health now."""

    name: str

    def health_check(
        self, *, ready_within: float, max_failures: int, now: float | None = None
    ) -> Health: ...


def _json(status: int, body: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def build_poller_app(
    poller: Watched,
    *,
    ready_within: float,
    max_failures: int,
    running: Callable[[], bool],
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The poller's app; ``running()`` says whether its poll loop is still alive."""
    app = web.Application(middlewares=[errors_as_json], client_max_size=1024)

    async def health(_request: web.Request) -> web.Response:
        found = poller.health_check(
            ready_within=ready_within, max_failures=max_failures, now=clock()
        )
        body: dict[str, Any] = {
            "poller": poller.name,
            "healthy": found.healthy,
            "reason": found.reason,
            **found.detail,
        }
        return _json(200 if found.healthy else 503, body)

    async def live(_request: web.Request) -> web.Response:
        alive = running()
        return _json(200 if alive else 503, {"poller": poller.name, "alive": alive})

    async def metrics_view(_request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(metrics.REGISTRY))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    for path, view in (
        ("/healthz", health),
        ("/readyz", health),
        ("/livez", live),
        ("/metrics", metrics_view),
    ):
        app.router.add_get(path, view, expect_handler=expect_continue)
    return app
