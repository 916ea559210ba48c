"""Stateful fake directories for Okta, Microsoft Graph and Google Workspace.

Each is one of tests/token_servers.py's token servers (real token minting: Okta
``private_key_jwt``, Entra client credentials over TLS through MSAL, Google's JWT-bearer grant)
with a small user directory behind the API. What they enforce, as the vendors document it:

* **Tokens.** Short-lived (``lifetime``, a few seconds); a stale or unknown token gets 401
  (token_servers.py).
* **Permissions.** Every endpoint needs its scope (Okta: ``okta.users.read``/``.manage``,
  ``okta.logs.read`` in the minted token; Google: the delegated scope in the token) or its
  application permission (Graph: the app roles in :attr:`GraphDirectory.roles`, put into
  each token); otherwise the vendor's 403 body (Okta ``E0000006``, Graph
  ``Authorization_RequestDenied``, Google ``insufficientPermissions``).
* **Shapes.** Unknown path: the vendor's 404; known path, wrong method: 405; a body that is
  not the documented shape (unknown property, wrong type): 400; an unknown user: 404.
* **State per user.** Okta: ``status`` with the documented lifecycle transitions (suspend
  only ACTIVE, unsuspend only SUSPENDED, deactivate anything not DEPROVISIONED, activate
  STAGED/DEPROVISIONED, expire_password ACTIVE/PASSWORD_EXPIRED; anything else 400
  ``E0000001``), factors, OAuth grants, and System Log ``user.session.clear`` events that
  become searchable ``log_delay`` seconds after the clear. Graph: ``accountEnabled``,
  ``passwordProfile``, authentication methods and ``signInSessionsValidFromDateTime``, set
  (whole seconds) by revokeSignInSessions but readable only ``session_readback_delay``
  seconds later. Google: ``suspended``, ``changePasswordAtNextLogin``, ``isEnrolledIn2Sv``,
  OAuth ``tokens`` and ``asps`` (lists omit ``items`` when empty, as Google does).
* **Latency.** ``latency`` (seconds, from token_servers.py) delays every API answer:
  :data:`BENCH_LATENCY` holds the usual figures for a benchmark.

Build one with :func:`okta_directory`, :func:`graph_directory`, :func:`google_directory`: each
starts the fake and returns it with the provider settings that mint tokens from it (pass them
to ``connectors.base.catalogue.build_provider``); add users with ``add_user``. Graph is TLS:
:func:`tls_context` makes a certificate for 127.0.0.1, and ``REQUESTS_CA_BUNDLE`` must name
its file while the provider talks to the fake (MSAL and requests read it).
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from cryptography.hazmat.primitives.asymmetric import rsa

from streams.support.secrets import Secret
from tests.token_servers import (
    NOT_JSON,
    ApiCall,
    EntraServer,
    GoogleServer,
    OktaServer,
    Reply,
    pem,
)

#: Typical answer times of the real APIs, for a benchmark's ``latency`` knob.
BENCH_LATENCY = {"okta": 0.150, "graph": 0.300, "google": 0.250}


def iso(epoch: float, millis: bool = True) -> str:
    """UTC ISO 8601 with ``Z`` (milliseconds, or whole seconds as Graph shows them)."""
    text = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return (text[:-3] if millis else text[:-7]) + "Z"


def _parse_iso(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


#: A vendor's routes: path template -> (its pattern, the methods it answers).
Routes = dict[str, tuple[re.Pattern[str], list[str]]]


def routes(table: dict[str, list[str]]) -> Routes:
    """Compile ``{"/users/{id}": ["GET"]}`` (each ``{name}`` one path segment)."""
    out: Routes = {}
    for template, methods in table.items():
        regex = re.sub(r"\\\{[a-z_]+\\\}", "([^/]+)", re.escape(template))
        out[template] = (re.compile(regex), methods)
    return out


def route(table: Routes, path: str) -> tuple[str, tuple[str, ...], list[str]]:
    """(template, path values, allowed methods) of ``path``; ("", (), []) when unknown."""
    for template, (pattern, methods) in table.items():
        match = pattern.fullmatch(path)
        if match:
            return template, match.groups(), methods
    return "", (), []


# --- Okta ---------------------------------------------------------------------------------


class Recording:
    """What every directory's API shares: one lock over the vendor state, each call kept in
    ``calls`` as (method, path, query), the answer from the directory's ``_answer``."""

    def recording(self) -> None:
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self._state = threading.Lock()

    def handle_api(self, call: ApiCall) -> Reply:
        with self._state:
            self.calls.append((call.method, call.path, call.query))
            return self._answer(call)

    def _answer(self, call: ApiCall) -> Reply:
        raise NotImplementedError


@dataclass
class OktaUser:
    id: str
    login: str
    status: str = "ACTIVE"
    has_password: bool = True
    #: factorType -> status ("ACTIVE", "PENDING_ACTIVATION")
    factors: dict[str, str] = field(default_factory=lambda: {"token:software:totp": "ACTIVE"})
    grants: list[str] = field(default_factory=lambda: ["oag-1", "oag-2"])


def _okta_error(status: int, code: str, summary: str) -> Reply:
    return status, {
        "errorCode": code,
        "errorSummary": summary,
        "errorLink": code,
        "errorId": uuid.uuid4().hex[:20],
        "errorCauses": [],
    }


OKTA_ROUTES = routes(
    {
        "/api/v1/users/{id}": ["GET"],
        "/api/v1/users/{id}/lifecycle/{op}": ["POST"],
        "/api/v1/users/{id}/sessions": ["DELETE"],
        "/api/v1/users/{id}/grants": ["GET", "DELETE"],
        "/api/v1/users/{id}/factors": ["GET"],
        "/api/v1/logs": ["GET"],
    }
)
#: Lifecycle operation -> (states it is allowed from, the state it leads to; None: activate
#: (ACTIVE with a password, else PROVISIONED) and reset_factors (no change of status)).
OKTA_LIFECYCLE: dict[str, tuple[frozenset[str], str | None]] = {
    "suspend": (frozenset({"ACTIVE"}), "SUSPENDED"),
    "unsuspend": (frozenset({"SUSPENDED"}), "ACTIVE"),
    "deactivate": (
        frozenset(
            {
                "STAGED",
                "PROVISIONED",
                "ACTIVE",
                "RECOVERY",
                "PASSWORD_EXPIRED",
                "LOCKED_OUT",
                "SUSPENDED",
            }
        ),
        "DEPROVISIONED",
    ),
    "activate": (frozenset({"STAGED", "DEPROVISIONED"}), None),
    "expire_password": (frozenset({"ACTIVE", "PASSWORD_EXPIRED"}), "PASSWORD_EXPIRED"),
    "reset_factors": (
        frozenset(
            {"ACTIVE", "PASSWORD_EXPIRED", "RECOVERY", "LOCKED_OUT", "SUSPENDED", "PROVISIONED"}
        ),
        None,
    ),
}
_OKTA_LOG_FILTER = re.compile(r'eventType eq "user\.session\.clear" and target\.id eq "([^"]+)"')


class OktaDirectory(Recording, OktaServer):
    """An Okta org with users (see the module). ``log_delay``: seconds before a System Log
    event is searchable."""

    def __init__(
        self,
        public_key: Any,
        client_id: str,
        scopes: set[str],
        lifetime: float = 2.0,
        *,
        log_delay: float = 0.0,
        latency: float = 0.0,
    ) -> None:
        super().__init__(public_key, client_id, scopes, lifetime)
        self.log_delay = log_delay
        self.latency = latency
        self.users: dict[str, OktaUser] = {}
        #: (published epoch, event) of the System Log.
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.recording()

    def add_user(self, login: str, **kw: Any) -> OktaUser:
        user = OktaUser(id=f"00u{uuid.uuid4().hex[:17]}", login=login, **kw)
        self.users[user.id] = user
        return user

    def find(self, ref: str) -> OktaUser | None:
        user = self.users.get(ref)
        if user is None:
            user = next((u for u in self.users.values() if u.login == ref), None)
        return user

    def _answer(self, call: ApiCall) -> Reply:
        name, groups, methods = route(OKTA_ROUTES, call.path)
        if not name:
            return _okta_error(404, "E0000007", f"Not found: Resource not found: {call.path}")
        if call.method not in methods:
            return _okta_error(
                405, "E0000022", "The endpoint does not support the provided HTTP method"
            )
        needed = "okta.logs.read" if name == "/api/v1/logs" else "okta.users.manage"
        granted = call.grants
        if needed == "okta.users.manage" and call.method == "GET":
            ok = bool(granted & {"okta.users.read", "okta.users.manage"})
        else:
            ok = needed in granted
        if not ok:
            return _okta_error(
                403, "E0000006", "You do not have permission to perform the requested action"
            )
        if name == "/api/v1/logs":
            return self._logs(call.query)
        user = self.find(unquote(groups[0]))
        if user is None:
            return _okta_error(
                404, "E0000007", f"Not found: Resource not found: {groups[0]} (User)"
            )
        if call.body is NOT_JSON:
            return _okta_error(400, "E0000003", "The request body was not well-formed.")
        if name == "/api/v1/users/{id}":
            return 200, {"id": user.id, "status": user.status, "profile": {"login": user.login}}
        if name == "/api/v1/users/{id}/factors":
            return 200, [
                {"id": f"fct{i}", "factorType": t, "status": s}
                for i, (t, s) in enumerate(sorted(user.factors.items()))
            ]
        if name == "/api/v1/users/{id}/grants":
            if call.method == "GET":
                return 200, [{"id": g, "status": "ACTIVE", "userId": user.id} for g in user.grants]
            user.grants.clear()
            return 204, None
        if name == "/api/v1/users/{id}/sessions":
            if call.query.get("oauthTokens") not in (None, "true", "false"):
                return _okta_error(400, "E0000001", "Api validation failed: oauthTokens")
            now = time.time()
            self.events.append(
                (
                    now,
                    {
                        "uuid": str(uuid.uuid4()),
                        "published": iso(now),
                        "eventType": "user.session.clear",
                        "target": [{"id": user.id, "type": "User"}],
                        "outcome": {"result": "SUCCESS"},
                    },
                )
            )
            return 204, None
        return self._lifecycle(user, groups[1], call.query)

    def _lifecycle(self, user: OktaUser, op: str, query: dict[str, str]) -> Reply:
        rule = OKTA_LIFECYCLE.get(op)
        if rule is None:
            return _okta_error(
                404, "E0000022", "The endpoint does not support the provided HTTP method"
            )
        if query.get("sendEmail") not in (None, "true", "false"):
            return _okta_error(400, "E0000001", "Api validation failed: sendEmail")
        allowed, target = rule
        if user.status not in allowed:
            return _okta_error(
                400, "E0000001", f"Api validation failed: {op} not allowed in {user.status}"
            )
        if op == "reset_factors":
            user.factors.clear()
            return 200, {}
        if op == "activate":
            user.status = "ACTIVE" if user.has_password else "PROVISIONED"
        elif target is not None:
            user.status = target
        return 200, {}

    def _logs(self, query: dict[str, str]) -> Reply:
        since = _parse_iso(query.get("since", ""))
        match = _OKTA_LOG_FILTER.fullmatch(query.get("filter", ""))
        if since is None or match is None:
            return _okta_error(400, "E0000031", "Invalid search criteria.")
        now = time.time()
        found = [
            event
            for published, event in self.events
            if published >= since
            and published + self.log_delay <= now
            and any(t["id"] == match.group(1) for t in event["target"])
        ]
        limit = int(query.get("limit", "100"))
        return 200, found[:limit]


# --- Microsoft Graph ----------------------------------------------------------------------


@dataclass
class GraphUser:
    id: str
    upn: str
    accountEnabled: bool = True
    forceChangePasswordNextSignIn: bool = False
    #: (visible from epoch, value) of signInSessionsValidFromDateTime, oldest first.
    sessions_valid_from: list[tuple[float, str]] = field(
        default_factory=lambda: [(0.0, "2024-01-01T00:00:00Z")]
    )
    #: (collection, id) of each non-password method.
    methods: list[tuple[str, str]] = field(
        default_factory=lambda: [
            ("microsoftAuthenticatorMethods", "m-auth"),
            ("phoneMethods", "m-phone"),
        ]
    )


GRAPH_METHOD_TYPES = {
    "microsoftAuthenticatorMethods": "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod",
    "phoneMethods": "#microsoft.graph.phoneAuthenticationMethod",
    "fido2Methods": "#microsoft.graph.fido2AuthenticationMethod",
    "softwareOathMethods": "#microsoft.graph.softwareOathAuthenticationMethod",
}
GRAPH_ROUTES = routes(
    {
        "/v1.0/users/{id}": ["GET", "PATCH"],
        "/v1.0/users/{id}/revokeSignInSessions": ["POST"],
        "/v1.0/users/{id}/authentication/methods": ["GET"],
        "/v1.0/users/{id}/authentication/{collection}/{method}": ["GET", "DELETE"],
    }
)
#: The application permissions a Graph app needs for everything the provider does.
GRAPH_ROLES = frozenset(
    {
        "User.Read.All",
        "User.EnableDisableAccount.All",
        "User.RevokeSessions.All",
        "User-PasswordProfile.ReadWrite.All",
        "UserAuthenticationMethod.ReadWrite.All",
    }
)
_GRAPH_SELECTABLE = frozenset(
    {
        "id",
        "userPrincipalName",
        "accountEnabled",
        "passwordProfile",
        "signInSessionsValidFromDateTime",
    }
)


def _graph_error(status: int, code: str, message: str) -> Reply:
    return status, {"error": {"code": code, "message": message, "innerError": {}}}


_DENIED = (403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")


class GraphDirectory(Recording, EntraServer):
    """An Entra tenant with users behind Graph (see the module). ``roles``: the application
    permissions granted to the app (default :data:`GRAPH_ROLES`);
    ``session_readback_delay``: seconds before a new ``signInSessionsValidFromDateTime`` is
    readable."""

    def __init__(
        self,
        tenant: str,
        client_id: str,
        *,
        wrap_tls: Callable[[Any], Any],
        client_secret: str | None = None,
        certificate_key: Any = None,
        lifetime: float = 2.0,
        session_readback_delay: float = 0.0,
        latency: float = 0.0,
        roles: set[str] | None = None,
    ) -> None:
        super().__init__(
            tenant,
            client_id,
            wrap_tls=wrap_tls,
            client_secret=client_secret,
            certificate_key=certificate_key,
            lifetime=lifetime,
        )
        self.roles = set(GRAPH_ROLES if roles is None else roles)
        self.session_readback_delay = session_readback_delay
        self.latency = latency
        self.users: dict[str, GraphUser] = {}
        self.recording()

    def add_user(self, upn: str, **kw: Any) -> GraphUser:
        user = GraphUser(id=str(uuid.uuid4()), upn=upn, **kw)
        self.users[user.id] = user
        return user

    def find(self, ref: str) -> GraphUser | None:
        return self.users.get(ref) or next(
            (u for u in self.users.values() if u.upn.lower() == ref.lower()), None
        )

    def _answer(self, call: ApiCall) -> Reply:
        name, groups, methods = route(GRAPH_ROUTES, call.path)
        if not name:
            return _graph_error(
                404, "BadRequest", f"Resource not found for the segment '{call.path}'."
            )
        if call.method not in methods:
            return _graph_error(405, "Request_BadRequest", "The HTTP method is not allowed.")
        user = self.find(unquote(groups[0]))
        roles = call.grants
        if name.endswith("/authentication/methods") or "{collection}" in name:
            needed = {"UserAuthenticationMethod.ReadWrite.All"}
            if call.method == "GET":
                needed.add("UserAuthenticationMethod.Read.All")
            if not roles & needed:
                return _graph_error(*_DENIED)
        elif name.endswith("revokeSignInSessions"):
            if "User.RevokeSessions.All" not in roles:
                return _graph_error(*_DENIED)
        elif not roles & {"User.Read.All", "User.ReadWrite.All"}:
            return _graph_error(*_DENIED)
        if user is None:
            return _graph_error(
                404, "Request_ResourceNotFound", f"Resource '{groups[0]}' does not exist."
            )
        if name == "/v1.0/users/{id}":
            return self._patch(user, call) if call.method == "PATCH" else self._get(user, call)
        if name.endswith("revokeSignInSessions"):
            now = time.time()
            user.sessions_valid_from.append(
                (now + self.session_readback_delay, iso(int(now), millis=False))
            )
            return 200, {
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Edm.Boolean",
                "value": True,
            }
        if name.endswith("/authentication/methods"):
            methods_out = [
                {"@odata.type": "#microsoft.graph.passwordAuthenticationMethod", "id": "pw"}
            ] + [{"@odata.type": GRAPH_METHOD_TYPES[c], "id": i} for c, i in user.methods]
            return 200, {"value": methods_out}
        collection, method_id = groups[1], unquote(groups[2])
        if (collection, method_id) not in user.methods:
            return _graph_error(404, "itemNotFound", "The method was not found.")
        if call.method == "DELETE":
            user.methods.remove((collection, method_id))
            return 204, None
        return 200, {"@odata.type": GRAPH_METHOD_TYPES[collection], "id": method_id}

    def _get(self, user: GraphUser, call: ApiCall) -> Reply:
        select = [s for s in call.query.get("$select", "id,userPrincipalName").split(",") if s]
        unknown = [s for s in select if s not in _GRAPH_SELECTABLE]
        if unknown:
            return _graph_error(
                400, "Request_BadRequest", f"Could not find a property named '{unknown[0]}'."
            )
        now = time.time()
        visible = [v for at, v in user.sessions_valid_from if at <= now]
        full = {
            "id": user.id,
            "userPrincipalName": user.upn,
            "accountEnabled": user.accountEnabled,
            "passwordProfile": {
                "forceChangePasswordNextSignIn": user.forceChangePasswordNextSignIn,
                "forceChangePasswordNextSignInWithMfa": False,
                "password": None,
            },
            "signInSessionsValidFromDateTime": visible[-1],
        }
        return 200, {"@odata.context": "users/$entity", **{k: full[k] for k in select}}

    def _patch(self, user: GraphUser, call: ApiCall) -> Reply:
        body = call.body
        if not isinstance(body, dict) or not body:
            return _graph_error(400, "BadRequest", "Empty Payload. JSON content expected.")
        for key, value in body.items():
            if key == "accountEnabled":
                if not isinstance(value, bool):
                    return _graph_error(
                        400, "Request_BadRequest", "Invalid value for accountEnabled"
                    )
                if not call.grants & {"User.EnableDisableAccount.All", "User.ReadWrite.All"}:
                    return _graph_error(*_DENIED)
            elif key == "passwordProfile":
                if (
                    not isinstance(value, dict)
                    or set(value)
                    - {"forceChangePasswordNextSignIn", "forceChangePasswordNextSignInWithMfa"}
                    or not all(isinstance(v, bool) for v in value.values())
                ):
                    return _graph_error(400, "Request_BadRequest", "Invalid passwordProfile")
                if "User-PasswordProfile.ReadWrite.All" not in call.grants:
                    return _graph_error(*_DENIED)
            else:
                return _graph_error(400, "Request_BadRequest", f"Invalid property '{key}'.")
        if "accountEnabled" in body:
            user.accountEnabled = body["accountEnabled"]
        profile = body.get("passwordProfile") or {}
        if "forceChangePasswordNextSignIn" in profile:
            user.forceChangePasswordNextSignIn = profile["forceChangePasswordNextSignIn"]
        return 204, None


# --- Google Workspace ---------------------------------------------------------------------

GOOGLE_USER_SCOPE = "https://www.googleapis.com/auth/admin.directory.user"
GOOGLE_READONLY_SCOPE = "https://www.googleapis.com/auth/admin.directory.user.readonly"
GOOGLE_SECURITY_SCOPE = "https://www.googleapis.com/auth/admin.directory.user.security"


@dataclass
class GoogleUser:
    id: str
    primaryEmail: str
    suspended: bool = False
    changePasswordAtNextLogin: bool = False
    isEnrolledIn2Sv: bool = True
    tokens: list[str] = field(
        default_factory=lambda: ["123.apps.googleusercontent.com", "456.apps.googleusercontent.com"]
    )
    asps: list[int] = field(default_factory=lambda: [11, 12])
    signouts: int = 0


GOOGLE_ROUTES = routes(
    {
        "/admin/directory/v1/users/{key}": ["GET", "PATCH"],
        "/admin/directory/v1/users/{key}/signOut": ["POST"],
        "/admin/directory/v1/users/{key}/twoStepVerification/turnOff": ["POST"],
        "/admin/directory/v1/users/{key}/tokens": ["GET"],
        "/admin/directory/v1/users/{key}/tokens/{client}": ["GET", "DELETE"],
        "/admin/directory/v1/users/{key}/asps": ["GET"],
        "/admin/directory/v1/users/{key}/asps/{code}": ["GET", "DELETE"],
    }
)


def _google_error(status: int, reason: str, message: str) -> Reply:
    return status, {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
        }
    }


_INSUFFICIENT = (403, "insufficientPermissions", "Request had insufficient authentication scopes.")


class GoogleDirectory(Recording, GoogleServer):
    """A Workspace domain behind the Directory API (see the module). ``scopes``: what the
    service account may be delegated."""

    def __init__(
        self,
        public_key: Any,
        client_email: str,
        subject: str,
        scopes: set[str],
        lifetime: float = 2.0,
        *,
        latency: float = 0.0,
    ) -> None:
        super().__init__(public_key, client_email, subject, scopes, lifetime)
        self.latency = latency
        self.users: dict[str, GoogleUser] = {}
        self.recording()

    def add_user(self, email: str, **kw: Any) -> GoogleUser:
        user = GoogleUser(id=str(uuid.uuid4().int)[:21], primaryEmail=email, **kw)
        self.users[user.id] = user
        return user

    def find(self, ref: str) -> GoogleUser | None:
        return self.users.get(ref) or next(
            (u for u in self.users.values() if u.primaryEmail.lower() == ref.lower()), None
        )

    def _answer(self, call: ApiCall) -> Reply:
        name, groups, methods = route(GOOGLE_ROUTES, call.path)
        if not name:
            return _google_error(404, "notFound", "Not Found")
        if call.method not in methods:
            return _google_error(405, "httpMethodNotAllowed", "Method Not Allowed")
        scopes = call.grants
        if name == "/admin/directory/v1/users/{key}":
            allowed = {GOOGLE_USER_SCOPE} | (
                {GOOGLE_READONLY_SCOPE} if call.method == "GET" else set()
            )
        else:
            allowed = {GOOGLE_SECURITY_SCOPE}
        if not scopes & allowed:
            return _google_error(*_INSUFFICIENT)
        user = self.find(unquote(groups[0]))
        if user is None:
            return _google_error(404, "notFound", "Resource Not Found: userKey")
        if call.body is NOT_JSON:
            return _google_error(400, "parseError", "Parse Error")
        if name == "/admin/directory/v1/users/{key}":
            if call.method == "GET":
                return 200, self._resource(user)
            return self._patch(user, call.body)
        if name.endswith("/signOut"):
            user.signouts += 1
            return 204, None
        if name.endswith("/turnOff"):
            user.isEnrolledIn2Sv = False
            return 204, None
        if name.endswith("/tokens"):
            items = [{"kind": "admin#directory#token", "clientId": c} for c in user.tokens]
            return 200, {"kind": "admin#directory#tokenList", **({"items": items} if items else {})}
        if name.endswith("/asps"):
            asps = [{"kind": "admin#directory#asp", "codeId": c} for c in user.asps]
            return 200, {"kind": "admin#directory#aspList", **({"items": asps} if asps else {})}
        item = unquote(groups[1])
        if "/tokens/" in name:
            if item not in user.tokens:
                return _google_error(404, "notFound", "Resource Not Found: clientId")
            if call.method == "DELETE":
                user.tokens.remove(item)
                return 204, None
            return 200, {"kind": "admin#directory#token", "clientId": item}
        code = int(item) if item.isdigit() else -1
        if code not in user.asps:
            return _google_error(404, "notFound", "Resource Not Found: codeId")
        if call.method == "DELETE":
            user.asps.remove(code)
            return 204, None
        return 200, {"kind": "admin#directory#asp", "codeId": code}

    @staticmethod
    def _resource(user: GoogleUser) -> dict[str, Any]:
        return {
            "kind": "admin#directory#user",
            "id": user.id,
            "primaryEmail": user.primaryEmail,
            "suspended": user.suspended,
            "changePasswordAtNextLogin": user.changePasswordAtNextLogin,
            "isEnrolledIn2Sv": user.isEnrolledIn2Sv,
        }

    def _patch(self, user: GoogleUser, body: Any) -> Reply:
        if not isinstance(body, dict) or not body:
            return _google_error(400, "invalid", "Invalid Input")
        for key, value in body.items():
            if key not in ("suspended", "changePasswordAtNextLogin") or not isinstance(value, bool):
                return _google_error(400, "invalid", f"Invalid Input: {key}")
        if "suspended" in body:
            user.suspended = body["suspended"]
        if "changePasswordAtNextLogin" in body:
            user.changePasswordAtNextLogin = body["changePasswordAtNextLogin"]
        return 200, self._resource(user)


# --- building a fake and the provider settings for it ------------------------------------

OKTA_CLIENT_ID = "0oa-accessguard"
GRAPH_TENANT = "tenant-1"
GRAPH_CLIENT_ID = "app-1"
GRAPH_SECRET = "graph-client-secret"
GOOGLE_SA = "accessguard@project.iam.gserviceaccount.com"
GOOGLE_ADMIN = "admin@example.com"


def okta_directory(
    key: rsa.RSAPrivateKey,
    *,
    lifetime: float = 2.0,
    log_delay: float = 0.0,
    latency: float = 0.0,
    scopes: set[str] | None = None,
) -> tuple[OktaDirectory, dict[str, Any]]:
    """A started :class:`OktaDirectory` granting ``scopes`` (default the provider's two) and
    the settings of an Okta provider with a private_key_jwt service app for it."""
    granted = scopes if scopes is not None else {"okta.users.manage", "okta.logs.read"}
    server = OktaDirectory(
        key.public_key(),
        OKTA_CLIENT_ID,
        granted,
        lifetime,
        log_delay=log_delay,
        latency=latency,
    ).start()
    settings = {
        "type": "okta",
        "base_url": server.url,
        "client_id": OKTA_CLIENT_ID,
        "private_key": Secret(pem(key)),
        "key_id": "kid-1",
    }
    return server, settings


def graph_directory(
    context: ssl.SSLContext,
    *,
    lifetime: float = 2.0,
    session_readback_delay: float = 0.0,
    latency: float = 0.0,
    roles: set[str] | None = None,
) -> tuple[GraphDirectory, dict[str, Any]]:
    """A started :class:`GraphDirectory` (TLS with ``context``, see :func:`tls_context`) and
    the settings of a Graph provider with a client secret for it."""
    server = GraphDirectory(
        GRAPH_TENANT,
        GRAPH_CLIENT_ID,
        wrap_tls=lambda sock: context.wrap_socket(sock, server_side=True),
        client_secret=GRAPH_SECRET,
        lifetime=lifetime,
        session_readback_delay=session_readback_delay,
        latency=latency,
        roles=roles,
    ).start()
    settings = {
        "type": "graph",
        "base_url": server.url,
        "authority": server.url,
        "tenant_id": GRAPH_TENANT,
        "client_id": GRAPH_CLIENT_ID,
        "client_secret": Secret(GRAPH_SECRET),
    }
    return server, settings


def google_directory(
    key: rsa.RSAPrivateKey,
    *,
    lifetime: float = 2.0,
    latency: float = 0.0,
    scopes: set[str] | None = None,
) -> tuple[GoogleDirectory, dict[str, Any]]:
    """A started :class:`GoogleDirectory` delegating ``scopes`` (default the provider's two)
    and the settings of a Google provider with a service account key for it."""
    granted = scopes if scopes is not None else {GOOGLE_USER_SCOPE, GOOGLE_SECURITY_SCOPE}
    server = GoogleDirectory(
        key.public_key(), GOOGLE_SA, GOOGLE_ADMIN, granted, lifetime, latency=latency
    ).start()
    service_account = {
        "type": "service_account",
        "project_id": "project",
        "private_key_id": "abc123",
        "private_key": pem(key),
        "client_email": GOOGLE_SA,
        "client_id": "1234567890",
        "token_uri": f"{server.url}/token",
    }
    settings = {
        "type": "google",
        "base_url": server.url,
        "service_account": Secret(json.dumps(service_account)),
        "subject": GOOGLE_ADMIN,
    }
    return server, settings
