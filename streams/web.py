"""The HTTP server: one per process (ingest endpoints, /metrics, /healthz, /readyz)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connectors.auth_ingest import AuthIngest
from connectors.hr_webhook import HrWebhook
from connectors.leak_ingest import LeakIngest
from streams import metrics

log = structlog.get_logger(__name__)

ReadinessCheck = Callable[[], dict[str, bool]]


def _json(status: int, body: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


@web.middleware
async def errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _json(exc.status, {"error": exc.reason})
    except Exception:
        # A bug, not user input: log it with the traceback, tell the client nothing internal.
        log.exception("http.unhandled", path=request.path)
        return _json(500, {"error": "internal error"})


def build_web_app(
    *,
    hr: HrWebhook | None,
    readiness: ReadinessCheck,
    max_body: int,
    auth: AuthIngest | None = None,
    leaks: LeakIngest | None = None,
) -> web.Application:
    app = web.Application(middlewares=[errors_as_json], client_max_size=max_body + 1)

    async def metrics_view(_request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(metrics.REGISTRY))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def healthz(_request: web.Request) -> web.Response:
        return _json(200, {"status": "alive"})

    async def readyz(_request: web.Request) -> web.Response:
        checks = readiness()
        ok = all(checks.values())
        return _json(200 if ok else 503, {"ready": ok, "checks": checks})

    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if hr is not None:
        app.router.add_post("/v1/hr/events", hr.handle)
    if auth is not None:
        app.router.add_post("/v1/auth/events", auth.handle)
    if leaks is not None:
        app.router.add_post("/v1/leaks", leaks.handle)
    return app


class WebServer:
    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server: Any = site._server
        if self.port == 0 and server is not None and server.sockets:
            self.port = int(server.sockets[0].getsockname()[1])
        log.info("http.listening", url=self.url)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
