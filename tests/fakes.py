"""Local HTTP servers that behave like the vendors accessguard calls.

Not a mock that accepts anything: each endpoint checks the method, the auth header and the
body the way the vendor does, and answers with the vendor's status codes and error shapes.
Every successful call is recorded in ``.calls``; every non-2xx answer (injected faults,
auth failures, validation errors) in ``.rejected``, so tests can count effective calls. A
platform request that repeats an ``Idempotency-Key`` already answered gets the first answer
again without a second effect and is recorded in ``.replays`` (not in ``.calls``).

Where accessguard promises more than the vendor demands, the fake holds it to the promise
and says so: Okta's session revocation must carry ``oauthTokens=true`` (Okta's default keeps
OAuth tokens alive) and unknown query parameters are refused.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fake_pagers import PagerDutyState, SlackWorkspace

Call = dict[str, Any]

#: Credentials the fake expects by default (tests pass the same values as Secrets).
OKTA_TOKEN = "okta-test-token"
GRAPH_TOKEN = "graph-test-token"
GOOGLE_TOKEN = "google-test-token"
PLATFORM_TOKEN = "platform-test-token"
#: A PagerDuty integration (routing) key is 32 characters.
PD_ROUTING_KEY = "R0UT1NGKEY0000000000000000000000"
#: Slack incoming webhook: ``https://hooks.slack.com/services/T<team>/B<bot>/<24-char token>``;
#: the fake serves hooks.slack.com under ``/slack``. The token segment is the secret.
SLACK_TEAM = "T0ACCGRD1"
SLACK_BOT = "B0ACCGRD1"
SLACK_TOKEN = "sl4ckT0kenF0rTests000000"
SLACK_WEBHOOK_PATH = f"/slack/services/{SLACK_TEAM}/{SLACK_BOT}/{SLACK_TOKEN}"
_SLACK_HOOK_RE = re.compile(r"/slack/services/(T[A-Z0-9]+)/(B[A-Z0-9]+)/([A-Za-z0-9]+)")

#: The platform's roles (the management-platform model accessguard's registry uses).
PLATFORM_ROLES = frozenset(
    {"no_access", "read_only", "needs_approval", "can_reply", "full_publishing", "admin"}
)

GRAPH_COLLECTIONS: dict[str, str] = {
    "microsoftAuthenticatorMethods": "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod",
    "softwareOathMethods": "#microsoft.graph.softwareOathAuthenticationMethod",
    "phoneMethods": "#microsoft.graph.phoneAuthenticationMethod",
    "fido2Methods": "#microsoft.graph.fido2AuthenticationMethod",
    "emailMethods": "#microsoft.graph.emailAuthenticationMethod",
    "windowsHelloForBusinessMethods": (
        "#microsoft.graph.windowsHelloForBusinessAuthenticationMethod"
    ),
    "temporaryAccessPassMethods": "#microsoft.graph.temporaryAccessPassAuthenticationMethod",
}


def default_graph_methods() -> list[dict[str, Any]]:
    """A typical Entra user: password, Authenticator app, phone."""
    return [
        {"@odata.type": "#microsoft.graph.passwordAuthenticationMethod", "id": "28c10230-6103"},
        {
            "@odata.type": "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod",
            "id": "auth-app-1",
            "displayName": "Pixel 8",
        },
        {
            "@odata.type": "#microsoft.graph.phoneAuthenticationMethod",
            "id": "3179e48a-750b-4051-897c-87b9720928f7",
            "phoneType": "mobile",
        },
    ]


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    #: An Idempotency-Key replay: the first answer again, no effect (``.replays``).
    replay: bool = False
    #: A read-back (GET of the user, its grants, factors, tokens, the System Log): recorded
    #: in ``.reads``, not ``.calls``, which count the calls that act.
    read: bool = False

    @classmethod
    def json(cls, status: int, payload: Any, **headers: str) -> _Response:
        return cls(status, json.dumps(payload).encode(), "application/json", dict(headers))

    @classmethod
    def text(cls, status: int, text: str, **headers: str) -> _Response:
        return cls(status, text.encode(), "text/plain; charset=utf-8", dict(headers))


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw: bytes
    json: Any
    json_error: bool


def _role_body(allowed: frozenset[str]) -> Callable[[Any], str | None]:
    """A body validator: a JSON object with a known ``role`` and only ``allowed`` keys."""

    def check(body: Any) -> str | None:
        if not isinstance(body, dict):
            return "body must be a JSON object"
        unknown = sorted(set(body) - allowed)
        if unknown:
            return f"unknown field(s): {', '.join(unknown)}"
        if body.get("role") not in PLATFORM_ROLES:
            return f"role must be one of {', '.join(sorted(PLATFORM_ROLES))}"
        if "reason" in body and not isinstance(body["reason"], str):
            return "reason must be a string"
        if "meta" in body and not isinstance(body["meta"], dict):
            return "meta must be an object"
        return None

    return check


@dataclass(frozen=True)
class PlatformRoute:
    """One endpoint of the fake platform's admin API: method, path regex and, for calls
    that take one, a body validator returning an error message (None: valid). Routes
    without a validator refuse a body."""

    method: str
    pattern: str
    body: Callable[[Any], str | None] | None = None
    status: int = 200


_SEG = r"[^/]+"
#: The endpoints the platform offers: what tests/stack.py and tests/test_providers.py
#: configure the generic provider for. Anything else is a 404 (or 405 on a wrong method).
PLATFORM_ROUTES: tuple[PlatformRoute, ...] = (
    PlatformRoute("POST", rf"/platform/members/{_SEG}/sessions/revoke"),
    PlatformRoute("DELETE", rf"/platform/profiles/{_SEG}/members/{_SEG}", status=204),
    PlatformRoute(
        "PUT", rf"/platform/profiles/{_SEG}/members/{_SEG}", _role_body(frozenset({"role"}))
    ),
    PlatformRoute("DELETE", rf"/platform/accounts/{_SEG}/members/{_SEG}", status=204),
    PlatformRoute(
        "PATCH",
        rf"/platform/accounts/{_SEG}/members/{_SEG}",
        _role_body(frozenset({"role", "reason", "meta"})),
    ),
)


class _Fault:
    def __init__(self, remaining: int, response: Callable[[_Request], _Response]) -> None:
        self.remaining = remaining
        self.response = response


class FakeVendorServer:
    """Okta, Graph, Google, a generic platform, PagerDuty and Slack on one loopback port.

    Paths: ``/api/v1/...`` (Okta), ``/v1.0/...`` (Graph), ``/admin/directory/v1/...``
    (Google), ``/platform/...`` (generic platform, :data:`PLATFORM_ROUTES`), ``/v2/enqueue``
    (PagerDuty, accepting only ``pagerduty_routing_key``), ``/slack/services/T../B../<token>``
    (Slack incoming webhooks; only ``slack_webhook_path`` is a live hook, see
    :attr:`slack_webhook_url`), ``/api/chat.postMessage`` (a Slack app: :attr:`slack_app`).
    """

    def __init__(
        self,
        *,
        okta_token: str = OKTA_TOKEN,
        graph_token: str = GRAPH_TOKEN,
        google_token: str = GOOGLE_TOKEN,
        platform_token: str = PLATFORM_TOKEN,
        platform_auth_header: str = "Authorization",
        platform_auth_scheme: str = "Bearer",
        platform_routes: Iterable[PlatformRoute] = PLATFORM_ROUTES,
        pagerduty_routing_key: str = PD_ROUTING_KEY,
        slack_webhook_path: str = SLACK_WEBHOOK_PATH,
        known_users: Iterable[str] | None = None,
        graph_methods: dict[str, list[dict[str, Any]]] | None = None,
    ) -> None:
        self.okta_token = okta_token
        self.graph_token = graph_token
        self.google_token = google_token
        self.platform_token = platform_token
        self.platform_auth_header = platform_auth_header.lower()
        self.platform_auth_scheme = platform_auth_scheme
        self.platform_routes = tuple(platform_routes)
        self.pagerduty_routing_key = pagerduty_routing_key
        hook = _SLACK_HOOK_RE.fullmatch(slack_webhook_path)
        if hook is None:
            raise ValueError("slack_webhook_path must look like /slack/services/T../B../token")
        self.slack_webhook_path = slack_webhook_path
        self._slack_hook: tuple[str, str, str] = (hook.group(1), hook.group(2), hook.group(3))
        self.known_users: set[str] | None = set(known_users) if known_users is not None else None
        #: PagerDuty's incidents (pages) and Slack's chat.postMessage workspace (threads).
        self.pagerduty = PagerDutyState()
        self.slack_app = SlackWorkspace()
        #: Seconds before Graph shows a revocation in signInSessionsValidFromDateTime.
        self.graph_session_delay = 0.0
        #: user id -> methods; users not listed get :func:`default_graph_methods` on first use.
        self.graph_methods: dict[str, list[dict[str, Any]]] = {
            k: [dict(m) for m in v] for k, v in (graph_methods or {}).items()
        }
        self.calls: list[Call] = []
        #: Successful read-backs (``_Response.read``), apart from the calls that act.
        self.reads: list[Call] = []
        #: Per-user vendor state, created on first use and kept across reset() (see
        #: :meth:`okta_user`, :meth:`graph_user`, :meth:`google_user`); the System Log.
        self.okta_users: dict[str, dict[str, Any]] = {}
        self.okta_log: list[dict[str, Any]] = []
        self.graph_users: dict[str, dict[str, Any]] = {}
        self.google_users: dict[str, dict[str, Any]] = {}
        self.rejected: list[Call] = []
        #: Platform requests that repeated an Idempotency-Key: answered, not acted on.
        self.replays: list[Call] = []
        #: Idempotency-Key -> (request fingerprint, first answer); kept across reset() like
        #: any vendor state.
        self._idempotent: dict[str, tuple[tuple[str, str, str], _Response]] = {}
        self._cond = threading.Condition()
        self._faults: list[_Fault] = []
        self._forced: list[tuple[str, int, Any]] = []
        self._down_until = 0.0
        self._down_status = 503
        self._delay = 0.0
        self._latency: dict[str, float] = {}
        self._stall_until = 0.0
        self._stall_hold_s = 0.0
        self.stalled: list[dict[str, str]] = []
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        #: The one live Slack incoming-webhook URL (a secret: the token grants posting).
        self.slack_webhook_url = self.url + slack_webhook_path
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()

    # --- lifecycle ------------------------------------------------------------------

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeVendorServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- inspection -----------------------------------------------------------------

    def calls_to(self, path_substring: str) -> list[Call]:
        with self._cond:
            return [c for c in self.calls if path_substring in c["path"]]

    def reset(self) -> None:
        """Forget calls and faults (configuration such as tokens and users stays)."""
        with self._cond:
            self.calls.clear()
            self.reads.clear()
            self.rejected.clear()
            self.replays.clear()
            self._faults.clear()
            self._forced.clear()
            self._down_until = 0.0
            self._delay = 0.0
            self._stall_until = 0.0
            self.stalled.clear()

    def wait_for_calls(
        self, predicate_or_count: int | Callable[[list[Call]], bool], timeout: float = 5.0
    ) -> list[Call]:
        """Block until ``len(calls) >= n`` or ``predicate(calls)``; TimeoutError otherwise."""
        predicate: Callable[[list[Call]], bool]
        if isinstance(predicate_or_count, int):
            count = predicate_or_count
            predicate = lambda calls: len(calls) >= count  # noqa: E731 - a one-line closure
        else:
            predicate = predicate_or_count
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(list(self.calls)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"condition not met within {timeout}s; {len(self.calls)} calls, "
                        f"{len(self.rejected)} rejected"
                    )
                self._cond.wait(left)
            return list(self.calls)

    # --- fault injection ------------------------------------------------------------

    def fail_next(self, n: int, status: int = 429, retry_after: float | str | None = 1) -> None:
        """Answer the next ``n`` requests (any path) with ``status``.

        ``retry_after`` becomes a ``Retry-After`` header (seconds or an HTTP-date string);
        None sends none (as Graph sometimes does).
        """

        def respond(_: _Request) -> _Response:
            headers = {} if retry_after is None else {"Retry-After": _fmt_retry(retry_after)}
            return _Response.json(
                status, {"error": {"code": status, "message": "injected fault"}}, **headers
            )

        with self._cond:
            self._faults.append(_Fault(n, respond))

    def google_rate_limit_next(self, n: int, reason: str = "userRateLimitExceeded") -> None:
        """Answer the next ``n`` requests the way Google signals rate limits: 403 + reason."""

        def respond(_: _Request) -> _Response:
            return _Response.json(
                403,
                {
                    "error": {
                        "code": 403,
                        "message": "Rate Limit Exceeded",
                        "errors": [
                            {"domain": "usageLimits", "reason": reason, "message": "Rate Limit"}
                        ],
                    }
                },
            )

        with self._cond:
            self._faults.append(_Fault(n, respond))

    def down_for(self, seconds: float, status: int = 503) -> None:
        """Answer every request with ``status`` until ``seconds`` have passed."""
        with self._cond:
            self._down_until = time.monotonic() + seconds
            self._down_status = status

    def stall_for(self, seconds: float, hold: float = 3.0) -> None:
        """Until ``seconds`` have passed, hold each request ``hold`` seconds and then close
        the connection without an answer and without doing anything (listed in
        :attr:`stalled`): a provider that times out rather than fails."""
        with self._cond:
            self._stall_until = time.monotonic() + seconds
            self._stall_hold_s = hold

    def _stall_hold(self) -> float:
        with self._cond:
            return self._stall_hold_s if time.monotonic() < self._stall_until else 0.0

    def set_delay(self, seconds: float) -> None:
        """Sleep this long before answering each request (to exercise read timeouts)."""
        with self._cond:
            self._delay = seconds

    def set_latency(self, prefix: str, seconds: float) -> None:
        """Answer requests whose path starts with ``prefix`` after ``seconds`` (a vendor's
        typical latency: ``/api/v1/`` Okta, ``/v1.0/`` Graph, ``/admin/directory/v1/`` Google).
        Kept across reset(), like set_delay."""
        with self._cond:
            self._latency[prefix] = seconds

    def force_status(self, path_substring: str, status: int, body: Any = None) -> None:
        """Always answer requests whose path contains ``path_substring`` with ``status``.

        ``body`` may be a dict (sent as JSON) or a string (plain text).
        """
        with self._cond:
            self._forced.append((path_substring, status, body))

    # --- dispatch -------------------------------------------------------------------

    def _injected(self, req: _Request) -> _Response | None:
        with self._cond:
            for sub, status, body in self._forced:
                if sub in req.path:
                    if isinstance(body, str):
                        return _Response.text(status, body)
                    return _Response.json(status, body if body is not None else {})
            if time.monotonic() < self._down_until:
                return _Response.json(
                    self._down_status, {"error": "service unavailable (injected outage)"}
                )
            while self._faults and self._faults[0].remaining <= 0:
                self._faults.pop(0)
            if self._faults:
                fault = self._faults[0]
                fault.remaining -= 1
                return fault.response(req)
        return None

    def _handle(self, req: _Request) -> _Response:
        with self._cond:
            delay = self._delay + next(
                (v for k, v in self._latency.items() if req.path.startswith(k)), 0.0
            )
        if delay:
            time.sleep(delay)
        injected = self._injected(req)
        if injected is not None:
            return injected
        if req.path.startswith("/slack/"):
            return self._slack(req)  # Slack answers bad bodies in plain text
        if req.json_error:
            return _Response.json(400, {"error": "request body is not valid JSON"})
        path = req.path
        if path.startswith("/api/v1/"):
            return self._okta(req)
        if path.startswith("/v1.0/"):
            return self._graph(req)
        if path.startswith("/admin/directory/v1/"):
            return self._google(req)
        if path.startswith("/platform/"):
            return self._platform(req)
        if path == "/v2/enqueue":
            return self._pagerduty(req)
        if path == "/api/chat.postMessage" and req.method == "POST":
            return _Response.json(*self.slack_app.post(req.headers, req.json))
        return _Response.json(404, {"error": "not found"})

    def _record(self, req: _Request, resp: _Response) -> None:
        call: Call = {
            "method": req.method,
            "path": req.path,
            "query": {k: v[0] if len(v) == 1 else v for k, v in req.query.items()},
            "headers": req.headers,
            "json": req.json,
            "time": time.time(),
        }
        with self._cond:
            if resp.replay:
                call["status"] = resp.status
                self.replays.append(call)
            elif resp.read and 200 <= resp.status < 300:
                self.reads.append(call)
            elif 200 <= resp.status < 300:
                self.calls.append(call)
            else:
                call["status"] = resp.status
                self.rejected.append(call)
            self._cond.notify_all()

    def _user_unknown(self, user: str) -> bool:
        return self.known_users is not None and user not in self.known_users

    # --- Okta -----------------------------------------------------------------------

    def okta_user(self, ref: str) -> dict[str, Any]:
        """Okta's state of user ``ref`` (login or id), created ACTIVE with one OAuth grant
        and one active factor. Call with ``_cond`` held, or in a test between requests."""
        if ref not in self.okta_users:
            self.okta_users[ref] = {
                "id": f"00u{abs(hash(ref)) % 10**12:012d}",
                "status": "ACTIVE",
                "grants": [{"id": "oag1", "clientId": "0oa-brand-tool", "status": "ACTIVE"}],
                "factors": [{"id": "opf1", "factorType": "push", "status": "ACTIVE"}],
            }
        return self.okta_users[ref]

    #: Okta lifecycle operation -> (allowed from, new status). Anything else is Okta's 400
    #: E0000001 ("not allowed from the user's state").
    OKTA_LIFECYCLE: dict[str, tuple[frozenset[str], str]] = {
        "suspend": (frozenset({"ACTIVE"}), "SUSPENDED"),
        "unsuspend": (frozenset({"SUSPENDED"}), "ACTIVE"),
        "deactivate": (
            frozenset({"ACTIVE", "PASSWORD_EXPIRED", "SUSPENDED", "PROVISIONED"}),
            "DEPROVISIONED",
        ),
        "activate": (frozenset({"DEPROVISIONED"}), "ACTIVE"),
        "expire_password": (frozenset({"ACTIVE", "PASSWORD_EXPIRED"}), "PASSWORD_EXPIRED"),
    }

    def _okta(self, req: _Request) -> _Response:
        if req.headers.get("authorization") != f"SSWS {self.okta_token}":
            return _okta_error(401, "E0000011", "Invalid token provided")
        if req.path == "/api/v1/logs":
            return self._okta_logs(req)
        m = re.fullmatch(
            r"/api/v1/users/([^/]+)(?:/(sessions|grants|factors|lifecycle/([a-z_]+)))?", req.path
        )
        if m is None:
            return _okta_error(
                404, "E0000022", "The endpoint does not support the provided HTTP method"
            )
        sub, operation = m.group(2), m.group(3)
        expected = {
            None: "GET",
            "sessions": "DELETE",
            "factors": "GET",
        }.get(sub, "POST")
        if sub == "grants":
            expected = req.method if req.method in ("GET", "DELETE") else "DELETE"
        if req.method != expected or (
            operation is not None
            and operation != "reset_factors"
            and operation not in self.OKTA_LIFECYCLE
        ):
            return _okta_error(
                405, "E0000022", "The endpoint does not support the provided HTTP method"
            )
        allowed = {
            "sessions": {"oauthTokens", "forgetDevices"},
            "lifecycle/deactivate": {"sendEmail"},
            "lifecycle/activate": {"sendEmail"},
        }.get(sub or "", set())
        unknown = sorted(set(req.query) - allowed)
        if unknown:
            return _okta_error(
                400, "E0000001", f"Api validation failed: unknown parameter(s) {unknown}"
            )
        if sub == "sessions" and req.query.get("oauthTokens") != ["true"]:
            # Okta itself defaults to false, which leaves OAuth tokens alive: accessguard
            # promises oauthTokens=true, so the fake refuses anything else.
            return _okta_error(400, "E0000001", "Api validation failed: oauthTokens must be true")
        user = unquote(m.group(1))
        if self._user_unknown(user):
            return _okta_error(404, "E0000007", f"Not found: Resource not found: {user} (User)")
        with self._cond:
            state = self.okta_user(user)
            if sub is None:
                return _Response(
                    200,
                    json.dumps(
                        {"id": state["id"], "status": state["status"], "profile": {"login": user}}
                    ).encode(),
                    read=True,
                )
            if sub == "factors":
                return _Response(200, json.dumps(state["factors"]).encode(), read=True)
            if sub == "grants":
                if req.method == "GET":
                    return _Response(200, json.dumps(state["grants"]).encode(), read=True)
                state["grants"] = []
                return _Response(204)
            if sub == "sessions":
                self.okta_log.append(
                    {
                        "uuid": f"evt-{len(self.okta_log) + 1}",
                        "eventType": "user.session.clear",
                        "published": time.time(),
                        "target": [{"id": state["id"], "type": "User"}],
                    }
                )
                return _Response(204)
            if operation == "reset_factors":
                state["factors"] = []
                return _Response.json(200, {})
            assert operation is not None
            sources, target = self.OKTA_LIFECYCLE[operation]
            if state["status"] not in sources:
                return _okta_error(
                    400,
                    "E0000001",
                    f"Api validation failed: {operation} is not allowed for status "
                    f"{state['status']}",
                )
            state["status"] = target
        return _Response.json(200, {})

    def _okta_logs(self, req: _Request) -> _Response:
        if req.method != "GET":
            return _okta_error(405, "E0000022", "The endpoint does not support the method")
        unknown = sorted(set(req.query) - {"since", "until", "filter", "limit", "sortOrder"})
        if unknown:
            return _okta_error(400, "E0000001", f"unknown parameter(s) {unknown}")
        since = (req.query.get("since") or [""])[0]
        wanted = re.fullmatch(
            r'eventType eq "([a-z._]+)" and target\.id eq "([^"]+)"',
            (req.query.get("filter") or [""])[0],
        )
        if wanted is None:
            return _okta_error(400, "E0000031", "Invalid search criteria (filter)")
        try:
            from_time = (
                datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp() if since else 0.0
            )
        except ValueError:
            return _okta_error(400, "E0000001", "since: not an ISO 8601 time")
        with self._cond:
            found = [
                {**e, "published": _iso(e["published"])}
                for e in self.okta_log
                if e["eventType"] == wanted.group(1)
                and any(t["id"] == wanted.group(2) for t in e["target"])
                and e["published"] >= from_time
            ]
        return _Response(200, json.dumps(found).encode(), read=True)

    # --- Microsoft Graph ------------------------------------------------------------

    def _graph(self, req: _Request) -> _Response:
        user_path = re.fullmatch(r"/v1\.0/users/([^/]+)", req.path)
        if user_path is not None:
            return self._graph_user(req, unquote(user_path.group(1)))
        revoke = re.fullmatch(r"/v1\.0/users/([^/]+)/revokeSignInSessions", req.path)
        listing = re.fullmatch(r"/v1\.0/users/([^/]+)/authentication/methods", req.path)
        delete = re.fullmatch(
            r"/v1\.0/users/([^/]+)/authentication/([A-Za-z0-9]+)/([^/]+)", req.path
        )
        match = revoke or listing or delete
        if match is None:
            return _graph_error(404, "Request_ResourceNotFound", "Resource not found")
        expected = "POST" if revoke else ("GET" if listing else "DELETE")
        if req.method != expected:
            return _graph_error(405, "Request_BadRequest", "Method not allowed")
        if req.headers.get("authorization") != f"Bearer {self.graph_token}":
            return _graph_error(
                401, "InvalidAuthenticationToken", "Access token validation failure."
            )
        user = unquote(match.group(1))
        if self._user_unknown(user):
            return _graph_error(
                404, "Request_ResourceNotFound", f"Resource '{user}' does not exist"
            )
        if revoke:
            with self._cond:
                state = self.graph_user(user)
                # Graph truncates to whole seconds and shows the new value a moment later
                # (graph_session_delay).
                state["_sessions_from"] = (
                    int(time.time()),
                    time.monotonic() + self.graph_session_delay,
                )
            return _Response.json(
                200,
                {
                    "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Edm.Boolean",
                    "value": True,
                },
            )
        with self._cond:
            methods = self.graph_methods.setdefault(user, default_graph_methods())
            if listing:
                return _Response.json(
                    200,
                    {
                        "@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#users('{user}')/authentication/methods",
                        "value": [dict(m) for m in methods],
                    },
                )
            assert delete is not None
            collection, method_id = delete.group(2), unquote(delete.group(3))
            odata_type = GRAPH_COLLECTIONS.get(collection)
            for i, method in enumerate(methods):
                if method["id"] == method_id and method["@odata.type"] == odata_type:
                    del methods[i]
                    return _Response(204)
        return _graph_error(
            404, "itemNotFound", "The requested authentication method was not found"
        )

    def graph_user(self, user: str) -> dict[str, Any]:
        """Graph's state of ``user``: enabled, no forced password change, sessions valid
        since long ago. Call with ``_cond`` held, or in a test between requests."""
        if user not in self.graph_users:
            self.graph_users[user] = {
                "accountEnabled": True,
                "passwordProfile": {"forceChangePasswordNextSignIn": False},
                "_sessions_shown": "2026-01-01T00:00:00Z",
                "_sessions_from": None,
            }
        return self.graph_users[user]

    #: The user properties accessguard may PATCH, and their shapes.
    GRAPH_PATCHABLE = frozenset({"accountEnabled", "passwordProfile"})
    GRAPH_SELECTABLE = frozenset(
        {"id", "accountEnabled", "signInSessionsValidFromDateTime", "passwordProfile"}
    )

    def _graph_user(self, req: _Request, user: str) -> _Response:
        if req.method not in ("GET", "PATCH"):
            return _graph_error(405, "Request_BadRequest", "Method not allowed")
        if req.headers.get("authorization") != f"Bearer {self.graph_token}":
            return _graph_error(
                401, "InvalidAuthenticationToken", "Access token validation failure."
            )
        if self._user_unknown(user):
            return _graph_error(
                404, "Request_ResourceNotFound", f"Resource '{user}' does not exist"
            )
        with self._cond:
            state = self.graph_user(user)
            if req.method == "PATCH":
                body = req.json
                if not isinstance(body, dict) or not body:
                    return _graph_error(400, "Request_BadRequest", "Invalid request body")
                bad = sorted(set(body) - self.GRAPH_PATCHABLE)
                if bad:
                    return _graph_error(
                        400, "Request_BadRequest", f"Property {bad[0]} is not writable here"
                    )
                if "accountEnabled" in body and not isinstance(body["accountEnabled"], bool):
                    return _graph_error(400, "Request_BadRequest", "accountEnabled: boolean")
                profile = body.get("passwordProfile")
                if profile is not None and (
                    not isinstance(profile, dict)
                    or set(profile) - {"forceChangePasswordNextSignIn", "password"}
                    or not isinstance(profile.get("forceChangePasswordNextSignIn"), bool)
                ):
                    return _graph_error(400, "Request_BadRequest", "passwordProfile: invalid")
                if "accountEnabled" in body:
                    state["accountEnabled"] = body["accountEnabled"]
                if profile is not None:
                    state["passwordProfile"] = {
                        "forceChangePasswordNextSignIn": profile["forceChangePasswordNextSignIn"]
                    }
                return _Response(204)
            select = (req.query.get("$select") or [""])[0]
            fields = [f for f in select.split(",") if f]
            bad = sorted(set(fields) - self.GRAPH_SELECTABLE)
            if not fields or bad:
                return _graph_error(400, "Request_BadRequest", f"Invalid $select: {bad}")
            pending = state["_sessions_from"]
            if pending is not None and time.monotonic() >= pending[1]:
                state["_sessions_shown"] = _iso(pending[0])
                state["_sessions_from"] = None
            view = {
                "id": user,
                "accountEnabled": state["accountEnabled"],
                "passwordProfile": dict(state["passwordProfile"]),
                "signInSessionsValidFromDateTime": state["_sessions_shown"],
            }
            body_out = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users"}
            body_out.update({f: view[f] for f in fields})
        return _Response(200, json.dumps(body_out).encode(), read=True)

    # --- Google Admin SDK -----------------------------------------------------------

    def google_user(self, key: str) -> dict[str, Any]:
        """Google's state of user ``key``: active, enrolled in 2SV, one OAuth token and one
        app password. Call with ``_cond`` held, or in a test between requests."""
        if key not in self.google_users:
            self.google_users[key] = {
                "suspended": False,
                "changePasswordAtNextLogin": False,
                "isEnrolledIn2Sv": True,
                "tokens": [{"kind": "admin#directory#token", "clientId": "brand-tool.apps"}],
                "asps": [{"kind": "admin#directory#asp", "codeId": 17, "name": "mail"}],
            }
        return self.google_users[key]

    #: The user fields accessguard may PATCH (users.patch takes any; it sends only these).
    GOOGLE_PATCHABLE = frozenset({"suspended", "changePasswordAtNextLogin"})

    def _google(self, req: _Request) -> _Response:
        m = re.fullmatch(
            r"/admin/directory/v1/users/([^/]+)"
            r"(?:/(signOut|twoStepVerification/turnOff|tokens|asps)(?:/([^/]+))?)?",
            req.path,
        )
        if m is None:
            return _google_error(404, "notFound", "Not Found")
        sub, item = m.group(2), m.group(3)
        if sub in (None, "tokens", "asps") and item is None:
            allowed = ("GET", "PATCH", "PUT") if sub is None else ("GET",)
        elif sub in ("tokens", "asps"):
            allowed = ("DELETE",)
        else:
            allowed = ("POST",)
        if req.method not in allowed:
            return _google_error(405, "httpMethodNotAllowed", "Method not allowed")
        if req.headers.get("authorization") != f"Bearer {self.google_token}":
            return _google_error(
                401, "authError", "Request had invalid authentication credentials."
            )
        key = unquote(m.group(1))
        if self._user_unknown(key):
            return _google_error(404, "notFound", "Resource Not Found: userKey")
        with self._cond:
            state = self.google_user(key)
            if sub is None and req.method == "GET":
                public = {k: v for k, v in state.items() if k not in ("tokens", "asps")}
                return _Response(
                    200,
                    json.dumps(
                        {"kind": "admin#directory#user", "primaryEmail": key, **public}
                    ).encode(),
                    read=True,
                )
            if sub is None:
                body = req.json
                if not isinstance(body, dict) or not body:
                    return _google_error(400, "invalid", "Invalid Input: user body")
                bad = sorted(k for k in body if k not in self.GOOGLE_PATCHABLE)
                if bad or not all(isinstance(v, bool) for v in body.values()):
                    return _google_error(400, "invalid", f"Invalid Input: {bad or 'value'}")
                state.update(body)
                return _Response.json(200, {"kind": "admin#directory#user", "primaryEmail": key})
            if sub in ("tokens", "asps") and item is None:
                listing: dict[str, Any] = {"kind": f"admin#directory#{sub[:-1]}List"}
                if state[sub]:  # Google leaves out an empty items list
                    listing["items"] = state[sub]
                return _Response(200, json.dumps(listing).encode(), read=True)
            if sub in ("tokens", "asps"):
                field_name = "clientId" if sub == "tokens" else "codeId"
                before = len(state[sub])
                state[sub] = [i for i in state[sub] if str(i[field_name]) != unquote(item or "")]
                if len(state[sub]) == before:
                    return _google_error(404, "notFound", f"Resource Not Found: {field_name}")
                return _Response(204)
            if sub == "twoStepVerification/turnOff":
                state["isEnrolledIn2Sv"] = False
        return _Response(204)

    # --- generic platform -----------------------------------------------------------

    def _platform(self, req: _Request) -> _Response:
        on_path = [r for r in self.platform_routes if re.fullmatch(r.pattern, req.path)]
        if not on_path:
            return _Response.json(404, {"error": "not_found"})
        route = next((r for r in on_path if r.method == req.method), None)
        if route is None:
            return _Response.json(405, {"error": "method_not_allowed"})
        token = (
            f"{self.platform_auth_scheme} {self.platform_token}"
            if self.platform_auth_scheme
            else self.platform_token
        )
        if req.headers.get(self.platform_auth_header) != token:
            return _Response.json(401, {"error": "unauthorized"})
        key = req.headers.get("idempotency-key")
        if not key:
            return _Response.json(400, {"error": "Idempotency-Key header is required"})
        fingerprint = (req.method, req.path, json.dumps(req.json, sort_keys=True))
        if route.body is None:
            problem = "this endpoint takes no body" if req.raw else None
        else:
            problem = route.body(req.json)
        with self._cond:  # one lock from lookup to store: two racing requests, one effect
            seen = self._idempotent.get(key)
            if seen is not None:
                if seen[0] != fingerprint:
                    return _Response.json(
                        422,
                        {"error": "idempotency_key_reused", "message": "key used elsewhere"},
                    )
                return replace(seen[1], replay=True)
            if problem:
                return _Response.json(400, {"error": "invalid_body", "message": problem})
            if route.status == 204:
                resp = _Response(204)
            elif isinstance(req.json, dict) and "role" in req.json:
                resp = _Response.json(route.status, {"ok": True, "role": req.json["role"]})
            else:
                resp = _Response.json(route.status, {"ok": True})
            # the effect happened: the key answers this again, whatever comes after
            self._idempotent[key] = (fingerprint, resp)
        return resp

    # --- PagerDuty Events v2 --------------------------------------------------------

    def _pagerduty(self, req: _Request) -> _Response:
        if req.method != "POST":
            return _Response.json(405, {"status": "invalid method"})
        body = req.json
        errors: list[str] = []
        if not isinstance(body, dict):
            return _pd_invalid(["Event object is invalid"])
        if body.get("routing_key") != self.pagerduty_routing_key:
            # PagerDuty refuses a missing, malformed or unknown integration key outright.
            return _pd_invalid(["Invalid routing key"])
        action = body.get("event_action")
        if action not in ("trigger", "resolve", "acknowledge"):
            errors.append("'event_action' is invalid (must be trigger, acknowledge or resolve)")
        dedup = body.get("dedup_key")
        if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
            errors.append("'dedup_key' must be a string of at most 255 characters")
        if action in ("resolve", "acknowledge") and not dedup:
            errors.append("'dedup_key' is required for resolve and acknowledge")
        if action == "trigger":
            payload = body.get("payload")
            if not isinstance(payload, dict):
                errors.append("'payload' is missing or not an object")
            else:
                for key in ("summary", "source", "severity"):
                    if not payload.get(key):
                        errors.append(f"'payload.{key}' is missing or blank")
                summary = payload.get("summary")
                if isinstance(summary, str) and len(summary) > 1024:
                    errors.append("'payload.summary' is longer than 1024 characters")
                if payload.get("severity") not in (None, "critical", "error", "warning", "info"):
                    errors.append("'payload.severity' is invalid")
        if errors:
            return _pd_invalid(errors)
        self.pagerduty.event(action, dedup or "generated")
        return _Response.json(
            202,
            {"status": "success", "message": "Event processed", "dedup_key": dedup or "generated"},
        )

    # --- Slack ----------------------------------------------------------------------

    def _slack(self, req: _Request) -> _Response:
        """hooks.slack.com: 404 ``no_service`` for anything but a live team/bot hook, 403
        ``invalid_token`` for a wrong token segment, 400 ``invalid_payload`` for a body that
        is not a JSON object, 400 ``no_text`` without ``text``; plain-text bodies."""
        hook = _SLACK_HOOK_RE.fullmatch(req.path)
        if hook is None or (hook.group(1), hook.group(2)) != self._slack_hook[:2]:
            return _Response.text(404, "no_service")
        if hook.group(3) != self._slack_hook[2]:
            return _Response.text(403, "invalid_token")
        if req.method != "POST":
            return _Response.text(405, "invalid_method")
        content_type = req.headers.get("content-type", "").split(";")[0].strip().lower()
        body = req.json
        if content_type != "application/json" or req.json_error or not isinstance(body, dict):
            return _Response.text(400, "invalid_payload")
        if not isinstance(body.get("text"), str) or not body["text"].strip():
            return _Response.text(400, "no_text")
        return _Response.text(200, "ok")

    # --- HTTP plumbing --------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; with Nagle on, each response
            # waits ~40 ms for a delayed ACK and the suite slows down tenfold.
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parsed: Any = None
                json_error = False
                if raw:
                    try:
                        parsed = json.loads(raw)
                    except ValueError:
                        json_error = True
                req = _Request(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    raw=raw,
                    json=parsed,
                    json_error=json_error,
                )
                hold = server._stall_hold()
                if hold:
                    # a hung provider: no answer, no effect; the client's read timeout fires
                    time.sleep(hold)
                    with server._cond:
                        server.stalled.append({"method": req.method, "path": req.path})
                    self.close_connection = True
                    return
                resp = server._handle(req)
                server._record(req, resp)
                try:
                    self.send_response(resp.status)
                    if resp.body or resp.status != 204:
                        self.send_header("Content-Type", resp.content_type)
                    for name, value in resp.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(resp.body)))
                    self.end_headers()
                    if resp.body:
                        self.wfile.write(resp.body)
                except (BrokenPipeError, ConnectionResetError):
                    # The client gave up (read timeout tests); nothing to answer.
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                pass

        return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and closed is expected in timeout tests; anything else
        # is a bug in the fake and should be loud.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            return
        super().handle_error(request, client_address)


def _fmt_retry(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


def _iso(epoch: float) -> str:
    """RFC 3339 UTC with seconds, as Graph and Okta write times."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _okta_error(status: int, code: str, summary: str) -> _Response:
    return _Response.json(
        status,
        {
            "errorCode": code,
            "errorSummary": summary,
            "errorLink": code,
            "errorId": "oaeFakeErrorId",
            "errorCauses": [],
        },
    )


def _graph_error(status: int, code: str, message: str) -> _Response:
    return _Response.json(
        status,
        {
            "error": {
                "code": code,
                "message": message,
                "innerError": {"request-id": "fake-request-id", "date": "2026-01-01T00:00:00"},
            }
        },
    )


def _google_error(status: int, reason: str, message: str) -> _Response:
    return _Response.json(
        status,
        {
            "error": {
                "code": status,
                "message": message,
                "errors": [{"domain": "global", "reason": reason, "message": message}],
            }
        },
    )


def _pd_invalid(errors: list[str]) -> _Response:
    return _Response.json(
        400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
    )
