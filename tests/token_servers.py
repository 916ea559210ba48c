"""Local token endpoints (and the APIs behind them) that really verify what they are sent.

Each server runs on 127.0.0.1 in a thread (started and stopped by fixtures in
tests/test_credentials.py) and serves one vendor's token endpoint next to a tiny version of
its API. The token endpoint checks the client's proof the way the vendor does:

* :class:`OktaServer`: ``private_key_jwt`` client assertion, RS256 signature against the
  registered public key, ``aud`` = the org token endpoint, ``iss`` = ``sub`` = client id,
  ``exp`` at most 5 minutes after ``iat`` and not past, a ``jti`` never seen before, and
  scopes granted to the app.
* :class:`GoogleServer`: the JWT-bearer grant of a service account: signature with the
  service account's public key, ``aud`` = Google's token endpoint (what Google requires
  and google-auth signs for, whatever ``token_uri`` says), ``iss`` = the client e-mail,
  ``sub`` = the delegated admin, ``scope`` among those delegated.
* :class:`EntraServer` (TLS: MSAL only talks https): OpenID configuration, then client
  credentials with a client secret or a certificate assertion (RS256 with ``x5t``).

Tokens live ``lifetime`` seconds (a few, so tests cross several). The API endpoints answer
401 to an unknown or expired token, so a client that sends a stale token is caught; their
clock runs ``skew`` (0.1 s) ahead of the token endpoint's, as between real servers (and as
network latency does), so a client that uses a token up to its last instant is caught too. Counts:
``token_requests``, ``issued``, ``api_calls``, ``api_unauthorized``.

Each token remembers what it was granted (``token_grants``: Okta's and Google's scopes, the
app roles an Entra fake hands out), and :meth:`TokenServer.handle_api` receives the whole call
(:class:`ApiCall`: method, path, query, JSON body, bearer token) so that a fake directory
(tests/idp_fakes.py) can check scopes and body shapes; by default it answers
:meth:`TokenServer.api` as before. ``latency`` (seconds) delays every API answer.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

#: (status, JSON body); a body of None answers with no content (a 204).
Reply = tuple[int, dict[str, Any] | list[Any] | None]
GOOGLE_AUDIENCE = "https://oauth2.googleapis.com/token"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # 8 client threads: the default backlog (5) overflows and a SYN is retried after 1 s,
    # which would make a valid token arrive expired.
    request_queue_size = 128


#: The body of a request whose body is not JSON.
NOT_JSON = object()


@dataclass(frozen=True)
class ApiCall:
    """One authorised API request, as a fake directory sees it."""

    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    #: The parsed JSON body, None when empty, :data:`NOT_JSON` when not JSON.
    body: Any = None
    token: str = ""
    #: What the token was granted (scopes or app roles).
    grants: frozenset[str] = frozenset()


class TokenServer:
    """Shared machinery: the HTTP server, issued tokens, counters, faults."""

    scheme = "http"

    def __init__(self, lifetime: float = 2.0, skew: float = 0.1) -> None:
        self.lifetime = lifetime
        self.skew = skew
        self.lock = threading.Lock()
        self.tokens: dict[str, float] = {}
        self.token_grants: dict[str, frozenset[str]] = {}
        #: Seconds added to every API answer (a benchmark's network and vendor time).
        self.latency = 0.0
        self.token_requests = 0
        self.issued = 0
        self.api_calls = 0
        self.api_unauthorized = 0
        #: When set, the token endpoint answers this (status, body) instead.
        self.fault: Reply | None = None
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self.scheme}://{host!s}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- tokens -----------------------------------------------------------------------

    def issue(self, grants: Iterable[str] = ()) -> Reply:
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[token] = time.monotonic() + self.lifetime
            self.token_grants[token] = frozenset(grants)
            self.issued += 1
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime}

    def authorised(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        with self.lock:
            expires = self.tokens.get(token) if scheme == "Bearer" else None
            ok = expires is not None and time.monotonic() + self.skew < expires
            self.api_calls += 1
            if not ok:
                self.api_unauthorized += 1
        return ok

    # --- routing ----------------------------------------------------------------------

    def token(self, path: str, form: dict[str, str]) -> Reply | None:
        """The token endpoint's answer, or None when ``path`` is not it."""
        raise NotImplementedError

    def get(self, path: str) -> Reply | None:
        return None

    def api(self, method: str, path: str) -> Reply:
        return 200, {}

    def handle_api(self, call: ApiCall) -> Reply:
        """The answer to an authorised API call (a fake directory overrides this)."""
        return self.api(call.method, call.path)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the vendors

            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, reply: Reply) -> None:
                status, body = reply
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                split = urlsplit(self.path)
                path = split.path
                if method == "GET":
                    reply = server.get(path)
                    if reply is not None:
                        self._reply(reply)
                        return
                if method == "POST" and "x-www-form-urlencoded" in (
                    self.headers.get("Content-Type") or ""
                ):
                    form = {k: v[0] for k, v in parse_qs(raw).items()}
                    with server.lock:
                        server.token_requests += 1
                        fault = server.fault
                    if fault is not None:
                        self._reply(fault)
                        return
                    reply = server.token(path, form)
                    if reply is not None:
                        self._reply(reply)
                        return
                header = self.headers.get("Authorization")
                if not server.authorised(header):
                    self._reply((401, {"error": "invalid_token"}))
                    return
                token = (header or "").partition(" ")[2]
                body: Any = None
                if raw:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        body = NOT_JSON
                call = ApiCall(
                    method,
                    path,
                    {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()},
                    body,
                    token,
                    server.token_grants.get(token, frozenset()),
                )
                reply = server.handle_api(call)
                if server.latency:
                    time.sleep(server.latency)
                self._reply(reply)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

            def do_PUT(self) -> None:
                self._handle("PUT")

        return Handler


def _error(status: int, code: str, description: str) -> Reply:
    return status, {"error": code, "error_description": description}


def verify_assertion(
    assertion: str,
    public_key: Any,
    *,
    audience: str,
    issuer: str,
    seen: set[str] | None = None,
    max_lifetime: int = 300,
) -> dict[str, Any] | str:
    """The verified claims, or why the assertion is refused."""
    try:
        claims: dict[str, Any] = jwt.decode(
            assertion,
            public_key,
            algorithms=["RS256"],
            audience=audience,
            issuer=issuer,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    except jwt.PyJWTError as exc:
        return f"assertion refused: {type(exc).__name__}"
    if claims["exp"] - claims["iat"] > max_lifetime:
        return "assertion lives too long"
    if seen is not None:
        jti = claims.get("jti")
        if not isinstance(jti, str) or jti in seen:
            return "jti missing or reused"
        seen.add(jti)
    return claims


class OktaServer(TokenServer):
    """An Okta org: ``/oauth2/v1/token`` (private_key_jwt) and the Users/Logs API."""

    def __init__(
        self, public_key: Any, client_id: str, scopes: set[str], lifetime: float = 2.0
    ) -> None:
        super().__init__(lifetime)
        self.public_key = public_key
        self.client_id = client_id
        self.scopes = scopes
        self.jtis: set[str] = set()

    def token(self, path: str, form: dict[str, str]) -> Reply | None:
        if path != "/oauth2/v1/token":
            return None
        if form.get("grant_type") != "client_credentials":
            return _error(400, "unsupported_grant_type", "grant_type")
        if form.get("client_assertion_type") != (
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        ):
            return _error(401, "invalid_client", "client_assertion_type")
        with self.lock:
            claims = verify_assertion(
                form.get("client_assertion", ""),
                self.public_key,
                audience=f"{self.url}/oauth2/v1/token",
                issuer=self.client_id,
                seen=self.jtis,
            )
        if isinstance(claims, str):
            return _error(401, "invalid_client", claims)
        if claims["sub"] != self.client_id:
            return _error(401, "invalid_client", "sub")
        asked = set(form.get("scope", "").split())
        if not asked or not asked <= self.scopes:
            return _error(400, "invalid_scope", "scope not granted")
        return self.issue(asked)

    def api(self, method: str, path: str) -> Reply:
        if path.endswith("/api/v1/logs"):
            return 200, []
        return 200, {}


class GoogleServer(TokenServer):
    """Google's OAuth token endpoint (JWT-bearer grant) and the Directory API."""

    def __init__(
        self,
        public_key: Any,
        client_email: str,
        subject: str,
        scopes: set[str],
        lifetime: float = 2.0,
    ) -> None:
        super().__init__(lifetime)
        self.public_key = public_key
        self.client_email = client_email
        self.subject = subject
        self.scopes = scopes

    def token(self, path: str, form: dict[str, str]) -> Reply | None:
        if path != "/token":
            return None
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return _error(400, "unsupported_grant_type", "grant_type")
        claims = verify_assertion(
            form.get("assertion", ""),
            self.public_key,
            # google-auth signs for Google's token endpoint whatever token_uri says, and
            # Google requires exactly that audience.
            audience=GOOGLE_AUDIENCE,
            issuer=self.client_email,
            max_lifetime=3600,
        )
        if isinstance(claims, str):
            return _error(400, "invalid_grant", f"Invalid JWT Signature. ({claims})")
        if claims["sub"] != self.subject:
            return _error(401, "unauthorized_client", "Client is unauthorized for this subject")
        asked = set(str(claims.get("scope", "")).split())
        if not asked or not asked <= self.scopes:
            return _error(401, "unauthorized_client", "scope not delegated")
        return self.issue(asked)


class EntraServer(TokenServer):
    """The Microsoft identity platform for one tenant (over TLS) and Graph's endpoints."""

    scheme = "https"

    def __init__(
        self,
        tenant: str,
        client_id: str,
        *,
        wrap_tls: Callable[[Any], Any],
        client_secret: str | None = None,
        certificate_key: Any = None,
        lifetime: float = 2.0,
    ) -> None:
        super().__init__(lifetime)
        self.tenant = tenant
        self.client_id = client_id
        self.client_secret = client_secret
        self.certificate_key = certificate_key
        #: Application permissions (app roles) granted to the app, put into each token.
        self.roles: set[str] = set()
        self.jtis: set[str] = set()
        self._server.socket = wrap_tls(self._server.socket)

    @property
    def token_endpoint(self) -> str:
        return f"{self.url}/{self.tenant}/oauth2/v2.0/token"

    def get(self, path: str) -> Reply | None:
        if path == f"/{self.tenant}/v2.0/.well-known/openid-configuration":
            base = f"{self.url}/{self.tenant}"
            return 200, {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": self.token_endpoint,
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            }
        return None

    def token(self, path: str, form: dict[str, str]) -> Reply | None:
        if path != f"/{self.tenant}/oauth2/v2.0/token":
            return None
        if form.get("grant_type") != "client_credentials":
            return _error(400, "unsupported_grant_type", "AADSTS70003")
        if form.get("client_id") != self.client_id:
            return _error(400, "unauthorized_client", "AADSTS700016: application not found")
        if form.get("scope", "").split() != ["https://graph.microsoft.com/.default"]:
            return _error(400, "invalid_scope", "AADSTS1002012")
        if "client_assertion" in form:
            if self.certificate_key is None:
                return _error(401, "invalid_client", "AADSTS700027: no certificate")
            with self.lock:
                claims = verify_assertion(
                    form["client_assertion"],
                    self.certificate_key,
                    audience=self.token_endpoint,
                    issuer=self.client_id,
                    seen=self.jtis,
                    max_lifetime=3600,
                )
            if isinstance(claims, str):
                return _error(401, "invalid_client", f"AADSTS700027: {claims}")
        elif self.client_secret is None or form.get("client_secret") != self.client_secret:
            return _error(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
        return self.issue(self.roles)

    def api(self, method: str, path: str) -> Reply:
        if path.endswith(("/authentication/methods", "/auditLogs/signIns")):
            return 200, {"value": []}
        return 200, {"value": True}


# --- keys and TLS for the fakes and their clients ---------------------------------------


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def tls_context(folder: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a self-signed certificate for 127.0.0.1, and the certificate's
    file (set ``REQUESTS_CA_BUNDLE`` to it)."""
    key = rsa_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=6))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_text(pem(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context, folder / "cert.pem"
