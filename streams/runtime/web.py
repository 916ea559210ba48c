"""The HTTP server: one per process (ingest endpoints, /metrics, /healthz, /readyz)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connectors.ingest.auth_ingest import AuthIngest
from connectors.ingest.edge import expect_continue
from connectors.ingest.hr_webhook import HrWebhook
from connectors.ingest.leak_ingest import LeakIngest
from connectors.ingest.scim.service import ScimService
from streams.support import metrics
from streams.support.errors import ConfigError

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
        answer = _json(exc.status, {"error": exc.reason})
        if getattr(exc, "close_connection", False):
            # The rest of the body will never be read (connectors/ingest/edge.py
            # BodyStalled): answer, then close, instead of aiohttp lingering over it.
            answer.force_close()
            await answer.prepare(request)
            await answer.write_eof()
            if request.protocol is not None:
                request.protocol.force_close()
        return answer
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
    scim: ScimService | None = None,
    extra: Any = None,
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

    app.router.add_get("/metrics", metrics_view, expect_handler=expect_continue)
    app.router.add_get("/healthz", healthz, expect_handler=expect_continue)
    app.router.add_get("/readyz", readyz, expect_handler=expect_continue)
    if hr is not None:
        app.router.add_post("/v1/hr/events", hr.handle, expect_handler=expect_continue)
        for door in hr.doors:  # the other doors of the HR path (connectors/ingest/doors.py)
            for method, path, handler in door.routes():
                app.router.add_route(method, path, handler, expect_handler=expect_continue)
    if auth is not None:
        app.router.add_post("/v1/auth/events", auth.handle, expect_handler=expect_continue)
    if leaks is not None:
        app.router.add_post("/v1/leaks", leaks.handle, expect_handler=expect_continue)
    if scim is not None:
        app.add_subapp("/scim/v2", scim.app())
    if extra is not None:  # routes of a part with its own module (streams/runtime/ssfpart.py)
        extra.mount(app)
    return app


def listen_error(host: str, port: int, exc: OSError) -> ConfigError:
    """Why the HTTP server cannot listen on host:port, naming the key and what to do."""
    where = f"{host}:{port}"
    why = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            "http.port",
            f"{where} is already in use (another accessguard?): stop what listens there, "
            "or choose another port with --port or ACCESSGUARD_HTTP_PORT",
        )
    if exc.errno == errno.EACCES:
        return ConfigError(
            "http.port",
            f"cannot listen on {where}: {why}: choose a port above 1023 with --port or "
            "ACCESSGUARD_HTTP_PORT",
        )
    return ConfigError("http.host", f"cannot listen on {where}: {why} (set ACCESSGUARD_HTTP_HOST)")


def check_listen(host: str, port: int) -> None:
    """Raise :func:`listen_error` unless host:port can be bound now, as the server will bind
    it (SO_REUSEADDR, every address the host resolves to). Called before anything is started,
    so a taken port is one line with nothing to clean up."""
    if port == 0:
        return  # any free port
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise listen_error(host, port, exc) from None
    for family, kind, proto, _name, address in dict.fromkeys(infos):
        try:
            sock = socket.socket(family, kind, proto)
        except OSError:  # a family this host lacks (IPv6): the server skips it too
            continue
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise listen_error(host, port, exc) from None


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
        try:
            await site.start()
        except OSError as exc:  # taken since check_listen looked, or it was not called
            await self._runner.cleanup()
            self._runner = None
            raise listen_error(self.host, self.port, exc) from exc
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
