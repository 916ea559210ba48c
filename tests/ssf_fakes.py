"""A Shared Signals transmitter and receiver on loopback HTTP, written from the specs.

:class:`FakeTransmitter` (an identity provider as SSF transmitter): serves its configuration
metadata (``/.well-known/ssf-configuration``, SSF 1.0 §7.1) and JWKS (``/jwks.json``, counting
fetches), signs SETs (RFC 8417: ``typ: secevent+jwt``, ``kid``) with keys it can rotate, and
answers RFC 8936 poll requests at ``/poll``: bearer token required, the request body's shape
enforced (``ack`` a list of strings, ``maxEvents`` a non-negative integer,
``returnImmediately`` a boolean, ``setErrs`` an object of ``{err, description}``), acked and
errored jtis removed from what it still has to deliver, at most ``maxEvents`` SETs per answer
with ``moreAvailable``.

:class:`FakeReceiver` (a downstream app as SSF receiver, RFC 8935): accepts ``POST`` of
``application/secevent+jwt`` with its bearer token, verifies each SET with PyJWT against the
JWKS fetched from the transmitter's URL (accessguard's ``/.well-known/jwks.json``), checks
``iss``/``aud``, answers 202, or 400 with ``{"err", "description"}``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

RISC = "https://schemas.openid.net/secevent/risc/event-type/"
CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
POLL_TOKEN = "ssf-poll-token"
RECEIVER_TOKEN = "ssf-receiver-token"
MANAGEMENT_TOKEN = "ssf-management-token"
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"
EVENTS_SUPPORTED = [
    RISC + "account-disabled", RISC + "account-purged", RISC + "credential-compromise",
    RISC + "identifier-changed", CAEP + "session-revoked", CAEP + "credential-change",
    CAEP + "assurance-level-change",
]  # fmt: skip


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class FakeTransmitter:
    def __init__(
        self,
        *,
        issuer: str = "https://idp.example.test",
        audience: str = "https://accessguard.example.test/ssf",
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.streams: dict[str, dict[str, Any]] = {}
        #: (status, body) of each verification SET it pushed
        self.pushes: list[tuple[int, str]] = []
        self.keys: dict[str, rsa.RSAPrivateKey] = {"k1": rsa_key()}
        self.current = "k1"
        self.jwks_fetches = 0
        self.pending: dict[str, str] = {}
        self.poll_requests: list[dict[str, Any]] = []
        self.set_errs: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.server = _serve(self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeTransmitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def metadata_url(self) -> str:
        return f"{self.url}/.well-known/ssf-configuration"

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self.keys.items():
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
        return {"keys": keys}

    def rotate(self, *, drop_old: bool = True) -> str:
        """A new current key (the old one leaves the JWKS unless ``drop_old`` is False)."""
        kid = f"k{len(self.keys) + 1}-{uuid.uuid4().hex[:6]}"
        if drop_old:
            self.keys = {}
        self.keys[kid] = rsa_key()
        self.current = kid
        return kid

    def make_set(
        self,
        events: Mapping[str, Any],
        *,
        audience: str,
        sub_id: Mapping[str, Any] | None = None,
        jti: str | None = None,
        iat: float | None = None,
        iss: str | None = None,
        key: rsa.RSAPrivateKey | None = None,
        kid: str | None = None,
    ) -> str:
        claims: dict[str, Any] = {
            "iss": iss or self.issuer,
            "aud": audience,
            "iat": int(time.time() if iat is None else iat),
            "jti": jti or uuid.uuid4().hex,
            "events": dict(events),
        }
        if sub_id is not None:
            claims["sub_id"] = dict(sub_id)
        return jwt.encode(
            claims,
            key or self.keys[self.current],
            algorithm="RS256",
            headers={"typ": "secevent+jwt", "kid": kid or self.current},
        )

    def queue(self, jti: str, token: str) -> None:
        with self._lock:
            self.pending[jti] = token

    def _poll(self, body: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict):
            return 400, {"err": "invalid_request", "description": "body must be an object"}
        ack = body.get("ack", [])
        max_events = body.get("maxEvents", 10)
        immediately = body.get("returnImmediately", False)
        errs = body.get("setErrs", {})
        if not isinstance(ack, list) or not all(isinstance(a, str) for a in ack):
            return 400, {"err": "invalid_request", "description": "ack: list of jti"}
        if not isinstance(max_events, int) or isinstance(max_events, bool) or max_events < 0:
            return 400, {"err": "invalid_request", "description": "maxEvents"}
        if not isinstance(immediately, bool):
            return 400, {"err": "invalid_request", "description": "returnImmediately"}
        if not isinstance(errs, dict) or not all(
            isinstance(v, dict) and {"err", "description"} <= set(v) for v in errs.values()
        ):
            return 400, {"err": "invalid_request", "description": "setErrs"}
        with self._lock:
            self.poll_requests.append(body)
            for jti in ack:
                self.pending.pop(jti, None)
            for jti, err in errs.items():
                self.pending.pop(jti, None)
                self.set_errs[jti] = err
            items = list(self.pending.items())
        return 200, {"sets": dict(items[:max_events]), "moreAvailable": len(items) > max_events}

    def _create(self, body: Any) -> tuple[int, dict[str, Any]]:
        """SSF 1.0 §8.1.1.1: create a stream (push delivery needs endpoint_url)."""
        delivery = body.get("delivery") if isinstance(body, dict) else None
        requested = body.get("events_requested") if isinstance(body, dict) else None
        if not isinstance(delivery, dict) or delivery.get("method") not in (
            "urn:ietf:rfc:8935",
            "urn:ietf:rfc:8936",
        ):
            return 400, {"err": "invalid_request", "description": "delivery.method"}
        if delivery["method"] == "urn:ietf:rfc:8935" and not isinstance(
            delivery.get("endpoint_url"), str
        ):
            return 400, {"err": "invalid_request", "description": "delivery.endpoint_url"}
        if not isinstance(requested, list):
            return 400, {"err": "invalid_request", "description": "events_requested"}
        stream_id = uuid.uuid4().hex
        config = {
            "stream_id": stream_id,
            "iss": self.issuer,
            "aud": self.audience,
            "delivery": delivery,
            "events_supported": EVENTS_SUPPORTED,
            "events_requested": requested,
            "events_delivered": [e for e in requested if e in EVENTS_SUPPORTED],
        }
        self.streams[stream_id] = config
        return 201, config

    def _verify(self, body: Any) -> tuple[int, Any]:
        """SSF 1.0 §8.1.4.2: 204 now, then a verification SET pushed to the stream."""
        stream = self.streams.get(body.get("stream_id")) if isinstance(body, dict) else None
        if stream is None:
            return 404, {"err": "not_found", "description": "no such stream"}
        state = body.get("state")
        token = self.make_set(
            {VERIFICATION: {"state": state} if state else {}},
            audience=stream["aud"],
            sub_id={"format": "opaque", "id": stream["stream_id"]},
        )
        delivery = stream["delivery"]

        def deliver() -> None:
            resp = requests.post(
                delivery["endpoint_url"],
                data=token,
                headers={
                    "Content-Type": "application/secevent+jwt",
                    "Authorization": delivery.get("authorization_header", ""),
                },
                timeout=10,
            )
            self.pushes.append((resp.status_code, resp.text))

        threading.Timer(0.05, deliver).start()
        return 204, None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/.well-known/ssf-configuration":
                    self._send(
                        200,
                        {
                            "issuer": outer.issuer,
                            "jwks_uri": f"{outer.url}/jwks.json",
                            "configuration_endpoint": f"{outer.url}/ssf/stream",
                            "verification_endpoint": f"{outer.url}/ssf/verify",
                            "delivery_methods_supported": [
                                "urn:ietf:rfc:8935",
                                "urn:ietf:rfc:8936",
                            ],
                        },
                    )
                elif self.path.startswith("/ssf/stream"):
                    if self.headers.get("Authorization") != f"Bearer {MANAGEMENT_TOKEN}":
                        self._send(401, {"err": "authentication_failed", "description": "token"})
                        return
                    self._send(200, list(outer.streams.values()))
                elif self.path == "/jwks.json":
                    outer.jwks_fetches += 1
                    self._send(200, outer.jwks())
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self) -> None:
                if self.path in ("/ssf/stream", "/ssf/verify"):
                    if self.headers.get("Authorization") != f"Bearer {MANAGEMENT_TOKEN}":
                        self._send(401, {"err": "authentication_failed", "description": "token"})
                        return
                    length = int(self.headers.get("Content-Length") or 0)
                    body = json.loads(self.rfile.read(length) or b"null")
                    handle = outer._create if self.path == "/ssf/stream" else outer._verify
                    self._send(*handle(body))
                    return
                if self.path != "/poll":
                    self._send(404, {"error": "not found"})
                    return
                if self.headers.get("Authorization") != f"Bearer {POLL_TOKEN}":
                    self._send(401, {"err": "authentication_failed", "description": "token"})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"null")
                except ValueError:
                    self._send(400, {"err": "invalid_request", "description": "not JSON"})
                    return
                self._send(*outer._poll(body))

        return Handler


class FakeReceiver:
    """A downstream SSF receiver that verifies what it is pushed against ``jwks_url``."""

    def __init__(self, *, issuer: str, audience: str, jwks_url: str | None = None) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks_url = jwks_url
        self.received: list[dict[str, Any]] = []
        self.refused: list[dict[str, Any]] = []
        #: While True every push is answered 503 (an outage).
        self.down = False
        self.server = _serve(self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _verify(self, token: str) -> dict[str, Any]:
        assert self.jwks_url is not None
        header = jwt.get_unverified_header(token)
        if header.get("typ") != "secevent+jwt":
            raise jwt.InvalidTokenError("typ is not secevent+jwt")
        jwks = requests.get(self.jwks_url, timeout=5).json()
        key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
        claims: dict[str, Any] = jwt.decode(
            token,
            jwt.PyJWK(key),
            algorithms=["RS256", "ES256"],
            audience=self.audience,
            issuer=self.issuer,
            options={"require": ["iss", "aud", "iat", "jti"]},
        )
        return claims

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                if outer.down:
                    self._send(503, {"err": "unavailable", "description": "outage"})
                    return
                if self.headers.get("Authorization") != f"Bearer {RECEIVER_TOKEN}":
                    self._send(401, {"err": "authentication_failed", "description": "token"})
                    return
                if self.headers.get("Content-Type") != "application/secevent+jwt":
                    self._send(400, {"err": "invalid_request", "description": "content type"})
                    return
                try:
                    claims = outer._verify(raw)
                except (jwt.PyJWTError, StopIteration, requests.RequestException) as exc:
                    outer.refused.append({"error": str(exc)})
                    self._send(400, {"err": "invalid_key", "description": str(exc)})
                    return
                outer.received.append(claims)
                self._send(202)

        return Handler


@contextmanager
def fake_receiver(**kwargs: Any) -> Iterator[FakeReceiver]:
    receiver = FakeReceiver(**kwargs)
    try:
        yield receiver
    finally:
        receiver.close()
