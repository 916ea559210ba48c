"""Local servers that serve login logs the way Okta and Microsoft Graph do, for the pollers.

Not mocks that accept anything: each checks its auth header and query parameters the way the
vendor documents them and answers with the vendor's status codes, error bodies, paging and
rate-limit headers. Events can be appended while a poller runs. Every request is recorded in
``.calls`` (with its status), and faults can be injected.

* :class:`FakeOktaLogs` — ``GET /api/v1/logs``: ``SSWS`` token (401 ``E0000011``), ``since``,
  ``after``, ``limit`` (<= 1000), ``sortOrder`` (ASCENDING only: polling), ``filter``
  (``eventType eq|sw "..."`` joined by ``or``), ``Link`` headers ``rel="self"`` and
  ``rel="next"`` (always present: a polling request), ``X-Rate-Limit-Limit/-Remaining/-Reset``
  (epoch seconds) over a fixed window, and 429 ``E0000047`` once the budget is spent.
* :class:`FakeGraphSignIns` — ``GET /v1.0/auditLogs/signIns`` (and
  :class:`FakeGraphDirectoryAudits`, ``/v1.0/auditLogs/directoryAudits`` on
  ``activityDateTime``): ``Bearer`` token (401
  ``InvalidAuthenticationToken``), ``$filter`` with ``createdDateTime ge|le <time>`` joined
  by ``and``, ``$top`` (<= 1000), newest first, ``@odata.nextLink`` with a ``$skiptoken`` over
  a snapshot taken at the first page, 400 for ``$orderby`` (not supported on this list),
  429 with or without ``Retry-After``, 503.
* :class:`FakeGoogleReports` — ``GET /admin/reports/v1/activity/users/all/applications/<app>``
  (login, admin, token): ``Bearer`` token (401), ``startTime``/``endTime`` (RFC 3339, start
  inclusive, end exclusive, start before end, else 400), ``maxResults`` (1-1000), newest
  first, ``nextPageToken`` valid only for the query that issued it (else 400 "Invalid page
  token"), ``items`` left out when empty, 403 ``userRateLimitExceeded`` (no ``Retry-After``)
  once ``rate_limit`` calls were made in ``window`` seconds. An activity added with
  ``visible_at`` appears only from that clock time on: the Reports lag.

Time comes from ``clock`` (epoch seconds), so a test can share one fake clock between the
server's rate-limit window and the poller.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlencode, urlsplit

OKTA_TOKEN = "okta-logs-test-token"
GRAPH_TOKEN = "graph-logs-test-token"

Call = dict[str, Any]


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: list[tuple[str, str]] = field(default_factory=list)


class FakeClock:
    """Epoch seconds that only move when told (thread-safe enough for a float)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


class _LogServer:
    """A loopback ThreadingHTTPServer answering GETs through :meth:`_handle`."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.calls: list[Call] = []
        self.lock = threading.Lock()
        self._faults: list[Reply] = []
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def fail_next(self, n: int, status: int, headers: dict[str, str] | None = None) -> None:
        """Answer the next ``n`` requests with ``status`` (after the auth check)."""
        with self.lock:
            for _ in range(n):
                self._faults.append(
                    Reply(status, self._fault_body(status), list((headers or {}).items()))
                )

    def statuses(self) -> list[int]:
        with self.lock:
            return [c["status"] for c in self.calls]

    def _fault_body(self, status: int) -> Any:
        return {"error": status}

    def _take_fault(self) -> Reply | None:
        with self.lock:
            return self._faults.pop(0) if self._faults else None

    def _handle(self, path: str, query: dict[str, str], headers: dict[str, str]) -> Reply:
        raise NotImplementedError

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                raw_query = parse_qs(parts.query, keep_blank_values=True)
                query = {k: v[-1] for k, v in raw_query.items()}
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply = server._handle(parts.path, query, headers)
                with server.lock:
                    server.calls.append(
                        {
                            "path": parts.path,
                            "query": query,
                            "headers": headers,
                            "status": reply.status,
                            "time": server.clock(),
                        }
                    )
                body = json.dumps(reply.body).encode() if reply.body is not None else b""
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                for name, value in reply.headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                pass

        return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


# --- Okta ---------------------------------------------------------------------------------


def okta_event(
    uuid: str,
    published: str,
    *,
    event_type: str = "user.session.start",
    user: str = "ana@example.com",
    result: str = "SUCCESS",
    ip: str = "198.51.100.7",
) -> dict[str, Any]:
    """A System Log event as ``/api/v1/logs`` returns it (the fields the normaliser reads)."""
    return {
        "uuid": uuid,
        "published": published,
        "eventType": event_type,
        "version": "0",
        "severity": "INFO",
        "displayMessage": "User login to Okta",
        "actor": {
            "id": "00u1abcd",
            "type": "User",
            "alternateId": user,
            "displayName": "Ana Example",
        },
        "client": {
            "userAgent": {"rawUserAgent": "Mozilla/5.0", "os": "Mac OS X", "browser": "CHROME"},
            "geographicalContext": {
                "city": "Milan",
                "country": "Italy",
                "geolocation": {"lat": 45.46, "lon": 9.19},
            },
            "ipAddress": ip,
        },
        "outcome": {"result": result},
        "target": [],
        "transaction": {"type": "WEB", "id": f"tx-{uuid}"},
    }


_OKTA_FILTER_TERM = re.compile(r'^eventType (eq|sw) "([^"\\]*)"$')


def _okta_filter(expression: str) -> Callable[[dict[str, Any]], bool] | None:
    """The subset of Okta's filter syntax the pollers use; None when it does not parse."""
    terms: list[tuple[str, str]] = []
    for part in expression.split(" or "):
        m = _OKTA_FILTER_TERM.fullmatch(part.strip())
        if m is None:
            return None
        terms.append((m.group(1), m.group(2)))

    def matches(event: dict[str, Any]) -> bool:
        kind = str(event.get("eventType", ""))
        return any(kind == v if op == "eq" else kind.startswith(v) for op, v in terms)

    return matches


class FakeOktaLogs(_LogServer):
    """``GET /api/v1/logs`` as a polling client sees it. See the module docstring."""

    def __init__(
        self,
        *,
        token: str = OKTA_TOKEN,
        clock: Callable[[], float] = time.time,
        rate_limit: int = 60,
        window: float = 60.0,
        next_host: str | None = None,
    ) -> None:
        self.token = token
        self.events: list[dict[str, Any]] = []
        self.rate_limit = rate_limit
        self.window = window
        #: Write next links against this origin instead of our own (tampering tests).
        self.next_host = next_host
        self._remaining = rate_limit
        self._reset: float | None = None
        super().__init__(clock)

    def add(self, *events: dict[str, Any]) -> None:
        """Append events as Okta would write them (``published`` ascending)."""
        with self.lock:
            self.events.extend(events)

    def _fault_body(self, status: int) -> Any:
        if status == 429:
            return _okta_error("E0000047", "API call exceeded rate limit due to too many requests.")
        return _okta_error("E0000009", "Internal Server Error")

    def _rate_headers(self) -> list[tuple[str, str]]:
        return [
            ("X-Rate-Limit-Limit", str(self.rate_limit)),
            ("X-Rate-Limit-Remaining", str(max(0, self._remaining))),
            ("X-Rate-Limit-Reset", str(int(self._reset or 0))),
        ]

    def _handle(self, path: str, query: dict[str, str], headers: dict[str, str]) -> Reply:
        if path != "/api/v1/logs":
            return Reply(404, _okta_error("E0000022", "The endpoint does not support the method"))
        if headers.get("authorization") != f"SSWS {self.token}":
            return Reply(401, _okta_error("E0000011", "Invalid token provided"))
        with self.lock:
            now = self.clock()
            if self._reset is None or now >= self._reset:
                self._reset = float(int(now + self.window))
                self._remaining = self.rate_limit
            self._remaining -= 1
            if self._remaining < 0:
                body = _okta_error(
                    "E0000047", "API call exceeded rate limit due to too many requests."
                )
                return Reply(429, body, self._rate_headers())
            rate = self._rate_headers()
        fault = self._take_fault()
        if fault is not None:
            return Reply(fault.status, fault.body, fault.headers + rate)
        try:
            limit = int(query.get("limit", "100"))
        except ValueError:
            limit = -1
        if not 1 <= limit <= 1000:
            return Reply(400, _okta_error("E0000001", "Api validation failed: limit"), rate)
        if query.get("sortOrder", "ASCENDING") != "ASCENDING" or "until" in query:
            return Reply(400, _okta_error("E0000001", "Not a polling request"), rate)
        flt = query.get("filter", "")
        matches = _okta_filter(flt) if flt else (lambda _event: True)
        if matches is None:
            return Reply(400, _okta_error("E0000031", "Invalid search criteria."), rate)
        with self.lock:
            events = list(self.events)
        if "after" in query:
            m = re.fullmatch(r"1(\d{6})", query["after"])
            if m is None:
                return Reply(400, _okta_error("E0000001", "Api validation failed: after"), rate)
            start = int(m.group(1))
        elif "since" in query:
            try:
                since = parse_time(query["since"])
            except ValueError:
                return Reply(400, _okta_error("E0000001", "Api validation failed: since"), rate)
            start = next(
                (i for i, e in enumerate(events) if parse_time(e["published"]) >= since),
                len(events),
            )
        else:
            return Reply(400, _okta_error("E0000001", "Give since or after"), rate)
        page: list[dict[str, Any]] = []
        position = start
        while position < len(events) and len(page) < limit:
            if matches(events[position]):
                page.append(events[position])
            position += 1
        base = self.next_host or self.url
        keep = {k: v for k, v in query.items() if k in ("limit", "filter", "sortOrder")}
        self_link = f"{self.url}/api/v1/logs?{urlencode(query)}"
        next_link = f"{base}/api/v1/logs?{urlencode({**keep, 'after': f'1{position:06d}'})}"
        links = [("Link", f'<{self_link}>; rel="self"'), ("Link", f'<{next_link}>; rel="next"')]
        return Reply(200, page, rate + links)


def _okta_error(code: str, summary: str) -> dict[str, Any]:
    return {
        "errorCode": code,
        "errorSummary": summary,
        "errorLink": code,
        "errorId": "oaeFakeLogs",
        "errorCauses": [],
    }


# --- Microsoft Graph ----------------------------------------------------------------------


def signin(
    record_id: str,
    created: str,
    *,
    user: str = "ana@example.com",
    error_code: int = 0,
    ip: str = "203.0.113.9",
) -> dict[str, Any]:
    """A Graph ``signIn`` as ``/v1.0/auditLogs/signIns`` returns it."""
    return {
        "id": record_id,
        "createdDateTime": created,
        "userDisplayName": "Ana Example",
        "userPrincipalName": user,
        "userId": "d1f0c1a2-0000-4000-8000-000000000001",
        "appId": "00000002-0000-0ff1-ce00-000000000000",
        "appDisplayName": "Office 365 Exchange Online",
        "ipAddress": ip,
        "clientAppUsed": "Browser",
        "correlationId": f"corr-{record_id}",
        "conditionalAccessStatus": "notApplied",
        "isInteractive": True,
        "riskLevelDuringSignIn": "none",
        "status": {
            "errorCode": error_code,
            "failureReason": "Other." if error_code == 0 else "Invalid username or password.",
            "additionalDetails": None,
        },
        "deviceDetail": {"deviceId": "", "operatingSystem": "Windows 10", "browser": "Edge"},
        "location": {
            "city": "Singapore",
            "state": "Singapore",
            "countryOrRegion": "SG",
            "geoCoordinates": {"latitude": 1.29, "longitude": 103.85},
        },
    }


_GRAPH_TERM = re.compile(r"^(\w+) (ge|le|eq) (\d{4}-\d\d-\d\dT[0-9:.]+Z)$")


class FakeGraphSignIns(_LogServer):
    """``GET /v1.0/auditLogs/signIns``. See the module docstring."""

    path = "/v1.0/auditLogs/signIns"
    time_field = "createdDateTime"

    def __init__(
        self,
        *,
        token: str = GRAPH_TOKEN,
        clock: Callable[[], float] = time.time,
        next_host: str | None = None,
    ) -> None:
        self.token = token
        self.records: list[dict[str, Any]] = []
        self.next_host = next_host
        self._snapshots: dict[str, tuple[list[dict[str, Any]], int, int]] = {}
        super().__init__(clock)

    def add(self, *records: dict[str, Any]) -> None:
        with self.lock:
            self.records.extend(records)

    def expire_skiptokens(self) -> None:
        with self.lock:
            self._snapshots.clear()

    def _fault_body(self, status: int) -> Any:
        if status == 429:
            return _graph_error("TooManyRequests", "Too many requests")
        return _graph_error("UnknownError", "Service unavailable")

    def _handle(self, path: str, query: dict[str, str], headers: dict[str, str]) -> Reply:
        if path != self.path:
            return Reply(404, _graph_error("ResourceNotFound", "Resource not found"))
        if headers.get("authorization") != f"Bearer {self.token}":
            return Reply(401, _graph_error("InvalidAuthenticationToken", "Access token is empty."))
        fault = self._take_fault()
        if fault is not None:
            return fault
        if "$orderby" in query:
            return Reply(400, _graph_error("BadRequest", "$orderby is not supported"))
        if "$skiptoken" in query:
            with self.lock:
                snap = self._snapshots.get(query["$skiptoken"])
            if snap is None:
                return Reply(400, _graph_error("BadRequest", "Invalid $skiptoken"))
            rows, offset, top = snap
        else:
            try:
                top = int(query.get("$top", "1000"))
            except ValueError:
                top = -1
            if not 1 <= top <= 1000:
                return Reply(400, _graph_error("BadRequest", "Invalid $top"))
            keep = _graph_filter(query.get("$filter", ""), self.time_field)
            if keep is None:
                return Reply(400, _graph_error("BadRequest", "Invalid filter clause"))
            with self.lock:
                rows = [r for r in self.records if keep(r)]
            rows.sort(key=lambda r: parse_time(r[self.time_field]), reverse=True)
            offset = 0
        page = rows[offset : offset + top]
        body: dict[str, Any] = {
            "@odata.context": f"{self.url}/v1.0/$metadata#{self.path.rsplit('/v1.0/', 1)[1]}",
            "value": page,
        }
        if offset + top < len(rows):
            with self.lock:
                token = f"{len(self._snapshots) + 1:04d}fa0e77c60c2d"
                self._snapshots[token] = (rows, offset + top, top)
            base = self.next_host or self.url
            params = {k: v for k, v in query.items() if k == "$filter"}
            params.update({"$top": str(top), "$skiptoken": token})
            body["@odata.nextLink"] = f"{base}{self.path}?{urlencode(params)}"
        return Reply(200, body)


def _graph_filter(
    expression: str, field: str = "createdDateTime"
) -> Callable[[dict[str, Any]], bool] | None:
    if not expression:
        return lambda _record: True
    terms: list[tuple[str, datetime]] = []
    for part in expression.split(" and "):
        m = _GRAPH_TERM.fullmatch(part.strip())
        if m is None or m.group(1) != field:  # Graph filters each list on its own time
            return None
        terms.append((m.group(2), parse_time(m.group(3))))

    def keep(record: dict[str, Any]) -> bool:
        created = parse_time(record[field])
        return all(
            created >= t if op == "ge" else created <= t if op == "le" else created == t
            for op, t in terms
        )

    return keep


def _graph_error(code: str, message: str) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {"request-id": "fake-logs", "date": "2026-01-01T00:00:00"},
        }
    }


class FakeGraphDirectoryAudits(FakeGraphSignIns):
    """``GET /v1.0/auditLogs/directoryAudits``: the sign-in fake on ``activityDateTime``."""

    path = "/v1.0/auditLogs/directoryAudits"
    time_field = "activityDateTime"


def directory_audit(
    record_id: str, when: str, activity: str = "Add member to role", *, user: str = "bob"
) -> dict[str, Any]:
    """An Entra directory audit by alice on ``user@brand.example``."""
    return {
        "id": record_id,
        "category": "RoleManagement",
        "activityDateTime": when,
        "activityDisplayName": activity,
        "loggedByService": "Core Directory",
        "result": "success",
        "initiatedBy": {"user": {"id": "u-alice", "userPrincipalName": "alice@brand.example"}},
        "targetResources": [
            {"id": f"u-{user}", "type": "User", "userPrincipalName": f"{user}@brand.example"}
        ],
    }


GOOGLE_TOKEN = "google-reports-test-token"
REPORTS_PREFIX = "/admin/reports/v1/activity/users/all/applications/"


def reports_activity(
    app: str, qualifier: int, when: str, name: str, **params: str
) -> dict[str, Any]:
    """A Reports activity of ``app`` with one event ``name`` and string parameters."""
    return {
        "kind": "admin#reports#activity",
        "id": {
            "time": when,
            "uniqueQualifier": str(qualifier),
            "applicationName": app,
            "customerId": "C0fake",
        },
        "actor": {"email": "admin@brand.example", "profileId": "1001"},
        "ipAddress": "198.51.100.20",
        "events": [
            {"name": name, "parameters": [{"name": k, "value": v} for k, v in params.items()]}
        ],
    }


class FakeGoogleReports(_LogServer):
    """Reports ``activities.list``. See the module docstring."""

    def __init__(
        self,
        *,
        token: str = GOOGLE_TOKEN,
        clock: Callable[[], float] = time.time,
        rate_limit: int = 1000,
        window: float = 100.0,
    ) -> None:
        self.token = token
        self.activities: list[tuple[float, dict[str, Any]]] = []
        self.rate_limit = rate_limit
        self.window = window
        self._window_start: float | None = None
        self._used = 0
        self._tokens: dict[str, tuple[tuple[str, str, str, str], int]] = {}
        super().__init__(clock)

    def add(self, *activities: dict[str, Any], visible_at: float | None = None) -> None:
        with self.lock:
            for activity in activities:
                self.activities.append((visible_at or 0.0, activity))

    def expire_page_tokens(self) -> None:
        with self.lock:
            self._tokens.clear()

    def _fault_body(self, status: int) -> Any:
        return _google_error(status, "userRateLimitExceeded" if status == 403 else "backendError")

    def _handle(self, path: str, query: dict[str, str], headers: dict[str, str]) -> Reply:
        app = path.removeprefix(REPORTS_PREFIX)
        if not path.startswith(REPORTS_PREFIX) or app not in ("login", "admin", "token"):
            return Reply(404, _google_error(404, "notFound", "Not Found"))
        if headers.get("authorization") != f"Bearer {self.token}":
            return Reply(401, _google_error(401, "authError", "Invalid Credentials"))
        fault = self._take_fault()
        if fault is not None:
            return fault
        with self.lock:
            now = self.clock()
            if self._window_start is None or now >= self._window_start + self.window:
                self._window_start, self._used = now, 0
            self._used += 1
            if self._used > self.rate_limit:
                return Reply(403, _google_error(403, "userRateLimitExceeded", "Rate Limit"))
        try:
            start, end = parse_time(query["startTime"]), parse_time(query["endTime"])
        except (KeyError, ValueError):
            return Reply(400, _google_error(400, "invalid", "Invalid value for: startTime"))
        if start >= end:
            return Reply(400, _google_error(400, "invalid", "Start time must precede end time"))
        try:
            max_results = int(query.get("maxResults", "1000"))
        except ValueError:
            max_results = -1
        if not 1 <= max_results <= 1000:
            return Reply(400, _google_error(400, "invalid", "Invalid value for: maxResults"))
        shape = (app, query["startTime"], query["endTime"], str(max_results))
        offset = 0
        if "pageToken" in query:
            with self.lock:
                issued = self._tokens.get(query["pageToken"])
            if issued is None or issued[0] != shape:
                return Reply(400, _google_error(400, "invalid", "Invalid page token"))
            offset = issued[1]
        with self.lock:
            rows = [
                a
                for visible, a in self.activities
                if visible <= now
                and a["id"]["applicationName"] == app
                and start <= parse_time(a["id"]["time"]) < end
            ]
        rows.sort(key=lambda a: parse_time(a["id"]["time"]), reverse=True)
        page = rows[offset : offset + max_results]
        body: dict[str, Any] = {"kind": "admin#reports#activities", "etag": '"fake"'}
        if page:
            body["items"] = page
        if offset + max_results < len(rows):
            with self.lock:
                token = f"A:{len(self._tokens) + 1:05d}:fake"
                self._tokens[token] = (shape, offset + max_results)
            body["nextPageToken"] = token
        return Reply(200, body)


def _google_error(status: int, reason: str, message: str = "error") -> dict[str, Any]:
    return {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"domain": "global", "reason": reason, "message": message}],
        }
    }
