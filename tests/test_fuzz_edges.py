"""Fuzzing the HTTP edges: no request is answered with a server error (issue 13).

Every operation of ``docs/openapi.yaml`` (``POST /v1/hr/events``, ``POST /v1/auth/events``,
``POST /v1/leaks``, ``GET /healthz``, ``/readyz``, ``/metrics``) gets
``ACCESSGUARD_FUZZ_EXAMPLES`` generated requests (10,000 by default; ``bench/fuzz_edges.py``
runs 100,000) against the real handlers (``tests/edge_harness.py``), after a few explicit
ones (:func:`explicit_cases`: requests that once got a server error). Each answer must:

- not be a 5xx, except 503 where the case took the broker down (the spec's retry answer);
- carry a status that ``docs/openapi.yaml`` lists for the operation;
- for a 4xx, be a JSON object with an ``error`` string; for a 2xx, hold the keys the spec's
  schema requires (and be JSON or text as the spec says).

Requests that break HTTP/1.1 itself (a control byte in a header, a request line over 8190
bytes, more than 128 headers, a duplicated Content-Type or Host, Content-Length with
Transfer-Encoding, a Content-Encoding aiohttp cannot decode here: br, zstd) are answered by
aiohttp's parser before any handler runs, with a text/plain 400: for those only "no 5xx" is
checked. A separate test runs the default throttle (401 until the 20th failure, then 429).

The lifecycle doors of issue 19 are served by the same server and fuzzed the same way, with
``ACCESSGUARD_FUZZ_EXAMPLES / 5`` cases each (:data:`DOOR_EXAMPLES`): Standard Webhooks on
``POST /v1/hr/events`` (``webhook-*`` header variants), the Okta Event Hook (``GET``
challenges, ``POST`` batches), SCIM (hostile filters, PATCH dialects, odd ids and bodies;
statuses of RFC 7644 §3.12, errors in its format) and ``POST /ssf/push/{transmitter}``
(hostile JWS, odd claims; errors in RFC 8935's ``{"err", "description"}``).

How the cases are made: hypothesis draws a kind of case (weighted), a 64-bit seed and a short
unicode text; the request is built from ``random.Random(seed)`` with the text spliced in
where a value goes (for the three GETs the text comes from the seed too). A case costs
1-1.8 ms on a 2-core machine, about 0.5 ms of it hypothesis' own bookkeeping and the rest
building, sending and answering the request; composite strategies for whole bodies cost
several times that, and 10,000 cases per operation would not fit a CI run. Bodies
are built from the spec's component schemas (``HrEvent``) and the vendors' documented shapes,
then mutated (wrong types, nulls, unicode, huge strings, numbers as strings, odd dates, extra
fields, deep nesting); HR bodies are signed (and sometimes wrongly: stale, missing, several
``v1=``, non-ASCII bytes). Requests go over one keep-alive ``http.client`` connection
(``requests`` is 2.5 times slower here and refuses raw header bytes).

A failing run does not stop at the first problem: it runs every case and then lists each
distinct problem (kind of case, status, what is wrong; for a 500 the exception and the
innermost frame the server logged) with the shortest request that showed it.
``ACCESSGUARD_FUZZ_SHRINK=1`` raises at the first problem instead, so hypothesis shrinks it.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import logging
import os
import random
import sys
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt
import orjson
import pytest
import structlog
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from connectors.ingest import standard_webhooks
from connectors.ingest.edge import AuthGuard
from connectors.ingest.hr_webhook import SIGNATURE_HEADER, sign
from connectors.ingest.ssf.receiver import SsfReceiver, SsfStream
from connectors.ingest.ssf.verify import JwksCache, SetVerifier
from streams.model.registry_yaml import load_registry
from streams.runtime.ssfpart import SsfPart
from streams.support.secrets import Secret
from tests.edge_harness import (
    AUTH_TOKEN,
    HR_SECRET,
    LEAK_TOKEN,
    REPO,
    TOPIC_AUTH,
    TOPIC_HR,
    TOPIC_IDENTITY,
    TOPIC_LEAKS,
    Edge,
    edge_server,
)
from tests.scim_harness import TOPIC_REGISTRY

#: Generated cases per endpoint (the CI-sized run); the benchmark passes more.
FUZZ_EXAMPLES = int(os.environ.get("ACCESSGUARD_FUZZ_EXAMPLES", "10000"))
#: Raise at the first problem (hypothesis then shrinks the case) instead of collecting all.
SHRINK = os.environ.get("ACCESSGUARD_FUZZ_SHRINK", "") not in ("", "0")

# ------------------------------------------------------------------------------ the spec

SPEC: dict[str, Any] = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text())


def _resolve(node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node_path = node["$ref"].removeprefix("#/").split("/")
        node = SPEC
        for part in node_path:
            node = node[part]
    return node


@dataclass(frozen=True)
class Operation:
    """What docs/openapi.yaml says one operation answers."""

    method: str
    path: str
    statuses: frozenset[int]
    #: status -> media types of the answer
    media: dict[int, tuple[str, ...]]
    #: status -> keys the JSON answer's schema requires
    required: dict[int, tuple[str, ...]]
    #: the string keys of a 4xx body (a door's protocol may fix its own error format)
    error_keys: tuple[str, ...] = ("error",)


def operation(method: str, path: str) -> Operation:
    spec_op = SPEC["paths"][path][method.lower()]
    statuses: set[int] = set()
    media: dict[int, tuple[str, ...]] = {}
    required: dict[int, tuple[str, ...]] = {}
    for code, answer in spec_op["responses"].items():
        status = int(code)
        statuses.add(status)
        content = _resolve(answer).get("content", {})
        media[status] = tuple(content)
        schema = _resolve(content.get("application/json", {}).get("schema", {}))
        required[status] = tuple(schema.get("required", ()))
    return Operation(method, path, frozenset(statuses), media, required)


HR_OP = operation("POST", "/v1/hr/events")
AUTH_OP = operation("POST", "/v1/auth/events")
LEAKS_OP = operation("POST", "/v1/leaks")
GET_OPS = {p: operation("GET", p) for p in ("/healthz", "/readyz", "/metrics")}

HR_SCHEMA: dict[str, Any] = SPEC["components"]["schemas"]["HrEvent"]
HR_PROPS: dict[str, Any] = HR_SCHEMA["properties"]
HR_TYPES: list[str] = HR_PROPS["type"]["enum"]
HR_ROLES: list[str] = HR_PROPS["new_role"]["enum"]
AUTH_VENDORS: list[str] = next(
    p["schema"]["enum"]
    for p in SPEC["paths"]["/v1/auth/events"]["post"]["parameters"]
    if p["name"] == "vendor"
)


def _registry_principals() -> list[str]:
    data = yaml.safe_load((REPO / "examples" / "registry.yaml").read_text())
    found: list[str] = []
    for ident in data.get("identities") or []:
        found.extend(str(e) for e in ident.get("emails") or [])
    for account in data.get("accounts") or []:
        login = (account.get("shared_credential") or {}).get("login")
        if login:
            found.append(str(login))
    return found or ["someone@example.com"]


REGISTRY_PRINCIPALS = _registry_principals()

# ------------------------------------------------------------------------------ the doors' server
#
# The doors of issue 19 on the same server: Standard Webhooks on POST /v1/hr/events, the Okta
# Event Hook (GET verification, POST batches), SCIM at /scim/v2 and the Shared Signals push
# endpoint. Their 4xx bodies follow their protocols: the Okta hook's is {"error"} like the
# HR edge's; SCIM's is RFC 7644's error ({"schemas", "status", "detail"}); SSF's is RFC 8935's
# {"err", "description"}.

STANDARD_SECRET = "whsec_" + base64.b64encode(b"fuzz-standard-webhooks-secret-32b").decode()
HOOK_SECRET = "fuzz-okta-event-hook-secret"
SCIM_TOKEN = "fuzz-scim-bearer-token"
SSF_TOKEN = "fuzz-ssf-push-token"
SSF_ISSUER = "https://idp.fuzz.example"
SSF_AUD = "https://accessguard.fuzz.example/ssf"
SSF_KEY = ec.generate_private_key(ec.SECP256R1())
SSF_KID = "fuzz-k1"
SSF_MAX_BYTES = 16384
SCIM_IDS = ["alice", "bob", "carol", "dan", "erin", "frank", "gina"]
SCIM_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
SCIM_PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SCIM_OPS = (
    "POST /scim/v2/Users", "PATCH /scim/v2/Users/{id}", "PUT /scim/v2/Users/{id}",
    "GET /scim/v2/Users", "DELETE /scim/v2/Users/{id}",
)  # fmt: skip


class _SsfTopics:
    hr_events = TOPIC_HR
    identity_events = TOPIC_IDENTITY
    registry = TOPIC_REGISTRY
    leak_records = TOPIC_LEAKS


def ssf_part(publisher: Any, journal: Any, guard: AuthGuard) -> SsfPart:
    """The SSF receiver (one stream, ``idp``) on the harness's publisher and journal; its
    JWKS comes from a function (no fetch), refetched for every unknown kid."""
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(SSF_KEY.public_key(), as_dict=True)
    keys = {"keys": [{**jwk, "kid": SSF_KID, "alg": "ES256", "use": "sig"}]}
    verifier = SetVerifier(
        "idp",
        issuer=SSF_ISSUER,
        audience=SSF_AUD,
        algorithms=["RS256", "ES256"],
        jwks=JwksCache("idp", lambda: keys, refetch_seconds=0),
        max_age=3600,
        skew=60,
    )
    registry = load_registry(REPO / "examples" / "registry.yaml")
    receiver = SsfReceiver(
        {"idp": SsfStream("idp", verifier, Secret(SSF_TOKEN), "okta")},
        publisher=publisher,
        journal=journal,
        topics=_SsfTopics,
        partitions=4,
        registry=lambda: registry,
        max_bytes=SSF_MAX_BYTES,
        dedup_ttl=3600,
        guard=guard,
    )
    return SsfPart(receiver, None, "")


#: Bounds of the fuzzed server, lower than the defaults so that every 413 is cheap to reach.
FUZZ_LIMITS = {"max_batch": 1048576, "leak_max_bytes": 2 * 1048576, "leak_max_records": 1000}
#: ``edge_server`` options of the fuzz runs: no throttle (its own test has the default).
FUZZ_SERVER: dict[str, Any] = {
    "auth_limit": 10**9,
    **FUZZ_LIMITS,
    # the lifecycle doors of issue 19 beside the ingest endpoints
    "standard_secret": Secret(STANDARD_SECRET),
    "event_hook_secret": Secret(HOOK_SECRET),
    "scim_token": Secret(SCIM_TOKEN),
    "extra": ssf_part,
}

# ------------------------------------------------------------------------------ requests


@dataclass
class Case:
    """One request. ``label`` names the strategy (and variant) that built it."""

    label: str
    method: str
    target: str  # path and query, ASCII
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    body: bytes = b""
    #: The case takes the broker down while it is sent (503 is then the right answer).
    broker_down: bool = False
    #: Breaks HTTP/1.1 itself: aiohttp's parser answers, no handler runs.
    malformed: bool = False
    #: The body is already chunk-encoded (``Transfer-Encoding: chunked``): no Content-Length.
    chunked: bool = False
    #: The body is not in its Content-Encoding. aiohttp decodes while it parses: a short
    #: body fails there (at its end) and aiohttp's parser answers a text/plain 400 itself;
    #: a longer one fails in the handler's read. Either way: never a 5xx.
    undecodable: bool = False

    def __post_init__(self) -> None:
        self.malformed = self.malformed or "malformed." in self.label
        self.undecodable = self.undecodable or ".undecodable" in self.label

    def size(self) -> int:
        return len(self.body) + len(self.target) + sum(len(v) + len(k) for k, v in self.headers)

    def describe(self, limit: int = 400) -> str:
        body = self.body if len(self.body) <= limit else self.body[:limit] + b"..."
        headers = "".join(
            f"\n    {k}: {v[:120]!r}" + (f"... ({len(v)} bytes)" if len(v) > 120 else "")
            for k, v in self.headers
        )
        down = " (broker down)" if self.broker_down else ""
        return (
            f"{self.method} {self.target[:limit]}{down}{headers}\n"
            f"    body ({len(self.body)} bytes): {body!r}"
        )


@dataclass
class Answer:
    status: int  # 0: no answer (the connection failed twice)
    headers: dict[str, str]
    body: bytes
    error: str = ""
    #: What the server logged as unhandled while answering (a 500's exception and frame).
    cause: str = ""
    detail: str = ""


class Client:
    """HTTP/1.1 over one keep-alive connection (``http.client``: raw header bytes allowed)."""

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def send(self, case: Case) -> Answer:
        failure = ""
        for _attempt in range(2):  # a kept-alive connection the server closed: once more
            try:
                return self._send(case)
            except (http.client.InvalidURL, UnicodeEncodeError) as exc:
                # http.client refused to write it: the generator's bug, not the server's
                self.close()
                raise AssertionError(f"unsendable case: {case.describe()}") from exc
            except (http.client.HTTPException, OSError) as exc:
                failure = f"{type(exc).__name__}: {exc}"
                self.close()
        return Answer(0, {}, b"", failure)

    def _send(self, case: Case) -> Answer:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        conn = self._conn
        names = {k.lower() for k, _ in case.headers}
        conn.putrequest(
            case.method, case.target, skip_host="host" in names, skip_accept_encoding=True
        )
        for name, value in case.headers:
            conn.putheader(name, value)
        framed = case.chunked or "content-length" in names
        if not framed and (case.body or case.method == "POST"):
            conn.putheader("Content-Length", str(len(case.body)))
        conn.endheaders(case.body or None)
        resp = conn.getresponse()
        body = resp.read()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        if resp.will_close:
            self.close()
        return Answer(resp.status, headers, body)


# ------------------------------------------------------------------------------ checking


@dataclass(repr=False)
class Problems:
    """Every problem seen, by (kind of case, status, what), with the shortest request."""

    endpoint: str
    #: Cases checked (the explicit ones included) and cases hypothesis generated.
    cases: int = 0
    generated: int = 0
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    counts: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    samples: dict[tuple[str, int, str], Case] = field(default_factory=dict)
    details: dict[tuple[str, int, str], str] = field(default_factory=dict)

    def check(self, op: Operation, case: Case, answer: Answer) -> list[str]:
        self.cases += 1
        status = answer.status
        kind = case.label.split(":", 1)[0]
        self.statuses[kind, status] += 1
        found = what_is_wrong(op, case, answer)
        for what in found:
            key = (case.label, status, what)
            self.counts[key] += 1
            best = self.samples.get(key)
            if best is None or case.size() < best.size():
                self.samples[key] = case
                self.details[key] = answer.detail
        if found and SHRINK:
            raise AssertionError(f"{self.endpoint}: {found}\n{case.describe()}")
        return found

    def __repr__(self) -> str:  # short: pytest prints it beside a failed assert
        total = sum(self.counts.values())
        return f"<Problems {self.endpoint}: {total} problem(s) in {self.cases} cases>"

    @property
    def server_errors(self) -> int:
        return sum(n for (_label, status, what), n in self.counts.items() if status >= 500)

    def report(self) -> str:
        lines = [f"{self.endpoint}: {sum(self.counts.values())} problem(s) in {self.cases} cases"]
        for key, count in sorted(self.counts.items(), key=lambda kv: (-kv[0][1], kv[0])):
            label, status, what = key
            detail = f" [{self.details[key]}]" if self.details.get(key) else ""
            lines.append(f"- [{label}] {what}{detail} (status {status}, {count} case(s)); e.g.")
            lines.append("    " + self.samples[key].describe())
        return "\n".join(lines)

    def summary(self) -> str:
        by_kind: dict[str, list[str]] = {}
        for (kind, status), n in sorted(self.statuses.items()):
            by_kind.setdefault(kind, []).append(f"{status}x{n}")
        return "; ".join(f"{k}: {' '.join(v)}" for k, v in by_kind.items())


def what_is_wrong(op: Operation, case: Case, answer: Answer) -> list[str]:
    status = answer.status
    if status == 0:
        return [f"no answer ({answer.error.split(':', 1)[0]})"]
    found: list[str] = []
    if status >= 500 and not (status == 503 and case.broker_down):
        found.append(f"server error {status}: {answer.cause or 'no exception logged'}")
    if case.malformed:
        return found  # aiohttp's parser answered: not the operation's own answer
    if status not in op.statuses and not found:
        found.append(f"status {status} not in docs/openapi.yaml for {op.method} {op.path}")
    ctype = answer.headers.get("content-type", "")
    parser_refused = case.undecodable and status == 400 and ctype.startswith("text/plain")
    if 400 <= status < 500 and not parser_refused:
        data = _json(answer.body)
        if not (
            isinstance(data, dict) and all(isinstance(data.get(k), str) for k in op.error_keys)
        ):
            said = answer.body.decode("utf-8", "replace").strip().split(":", 1)[0][:60]
            keys = "/".join(op.error_keys)
            found.append(f"{status} body is not a JSON object with {keys} string(s): {said!r}")
    elif 200 <= status < 300:
        media = op.media.get(status, ())
        if "application/json" in media:
            data = _json(answer.body)
            if not isinstance(data, dict):
                found.append(f"{status} body is not a JSON object")
            elif missing := [k for k in op.required.get(status, ()) if k not in data]:
                found.append(f"{status} body lacks {', '.join(missing)}")
        if media and not any(ctype.startswith(m) for m in media):
            found.append(f"{status} Content-Type {ctype!r} is not one of {', '.join(media)}")
    return found


_NOT_JSON = object()


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _NOT_JSON


# ------------------------------------------------------------------------------ values


@dataclass(frozen=True)
class Raw:
    """JSON text written as is (deep nesting, NaN, numbers past 64 bits, broken tokens)."""

    data: bytes


PALETTE = [
    "", " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u200b", "\ufeff", "\u2028", "\u202e", "\x00",
    "\x1f", "\x7f", "\x85", "é", "ß", "İ", "ﬀ", "Ω", "漢字", "😀", "👩\u200d💻", "e\u0301",
    "²", "٣", "\uff15", "Ⅻ", "\U0001d7d8", "null", "None", "nil", "undefined", "redacted",
    "<REDACTED>",
    "<IP ADDRESS>", "{yourOktaDomain}", "-", "n/a", "unknown", "City", "Country", "--5", "+5",
    "1e999", "NaN", "-0", "0x1f", "1_000", "' OR 1=1 --", "<script>", "%00", "\\", '"', "'",
    "a@b", "@", "a@@b", "@b.c", "a@", "true", "[]", "{}", ";", ",", ":", "|", "=", "&", "?",
    "../../etc/passwd", "${jndi:x}", "{{7*7}}", "\\u0000", "SUCCESS", "FAILURE", "CHALLENGE",
    "login_success", "user.session.start", "terminated", "admin",
]  # fmt: skip
NUMBERISH = [
    "0", "-0", "--5", "+5", "²", "٣", "\uff15", "1_000", "1e3", "1e999", " 42 ", "0x10", "50126",
    "500121", "-1", "NaN", "∞", "9" * 30, "9" * 5000, "00000000000001", "1.5",
    "\u0661\u0667" + "\u0660" * 8,
]  # fmt: skip
BIG_NUMBERS: list[Any] = [
    0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**30,
    -(10**40), 0.5, -0.0, 1e308, 5e-324, 1.7976931348623157e308, 123456789.123456789,
]  # fmt: skip
RAW_TOKENS = [
    b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"01", b".5", b"+1", b"1.", b"0x10",
    b"tru", b"nul", b"'single'", b'"\\ud800"', b'"\\x41"', b'"\xff"', b'"a\x00b"', b"undefined",
]  # fmt: skip
DATES = [
    "2024-02-29T12:00:00Z", "2023-02-29T12:00:00Z", "2024-01-01T00:00:00+00:00",
    "2024-01-01T00:00:00.123456789Z", "2024-01-01T00:00:00,5Z", "2024-01-01 00:00:00Z",
    "2024-01-01t00:00:00z", "2024-01-01T00:00:00", "2024-01-01", "2024-01-01T24:00:00Z",
    "2024-13-01T00:00:00Z", "2024-00-10T00:00:00Z", "0001-01-01T00:00:00+01:00",
    "0001-01-01T00:00:00Z", "0001-01-01", "9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59Z",
    "10000-01-01T00:00:00Z", "2024-01-01T00:00:00+24:00", "2024-01-01T00:00:00+23:59",
    "2024-01-01T00:00:00-0530", "2024-01-01T00:00:00+05", "2024-W01-1T00:00:00Z",
    "2024-001T00:00:00Z", "20240101T000000Z", "20240101", "1700000000", "1700000000000000",
    "\uff12\uff10\uff12\uff14-01-01T00:00:00Z",
    "\u0662\u0660\u0662\u0664-\u0660\u0661-\u0660\u0661T00:00:00Z", "2024-01-01T00:00:00Z ",
    " 2024-01-01T00:00:00Z", "2024-01-01T00:00:00ZZ", "Mon, 01 Jan 2024 00:00:00 GMT",
    "01/02/2024", "2024-01-01T00:00:00.Z", "2024-01-01T00:00Z", "2024-01-01T00Z",
    "2024-01-01T00:00:00+00:00:00", "2024-01-01T00:00:00+00:00:00.000001",
    "2024-01-01T00:00:00.0000000000001Z", "2024-01-01T00:00:00\u00a0Z", "-2024-01-01T00:00:00Z",
    "+2024-01-01T00:00:00Z", "2024-1-1T0:0:0Z", "2024-01-01T00:00:60Z", "2024-01-01T00:00:00-00:00",
]  # fmt: skip
IPS = [
    "203.0.113.5", "2001:db8::1", "[2001:db8::1]:443", "10.0.0.1", "127.0.0.1", "999.1.1.1",
    "null", "redacted", "<IP ADDRESS>", "::ffff:1.2.3.4", "fe80::1%eth0", "", "1.2.3", "::",
    "0.0.0.0", "1.2.3.4, 5.6.7.8", "x" * 70,
]  # fmt: skip
DOMAINS = ["example.com", "lumen-outdoor.example", "brand.example", "xn--bcher-kva.example", "b"]
CONTENT_TYPES = [
    b"application/json", b"application/json; charset=utf-8", b"APPLICATION/JSON",
    b"application/x-ndjson", b"application/x-ndjson; charset=latin-1", b"application/jsonl",
    b"text/csv", b"text/csv; header=present", b"application/csv", b"text/plain",
    b"text/plain; charset=utf-8", b"application/gzip", b"application/octet-stream",
    b"multipart/form-data; boundary=x", b"application/x-www-form-urlencoded", b"", b";", b";;;",
    b"application/json;;;", b"application/json; charset=\xff", b"text/\xc3\xa9", b"*/*",
    b"application/json, text/csv", b" application/json ", b"application/problem+json",
]  # fmt: skip
ENCODINGS = [b"gzip", b"x-gzip", b"deflate", b"br", b"zstd", b"compress", b"identity", b"",
             b"gzip, identity", b"GZIP", b"gzip, gzip", b"chunked", b"\xff"]  # fmt: skip
TIME_KEYS = ("time", "Time", "published", "effective_at", "date", "added", "timestamp")
QUERY_LITERALS = [
    "%zz", "%", "%f", "%ff%fe", "%ED%A0%80", "%C0%80", "%00", "%0A", "%0D%0A", "a+b", "a&b=c",
    "=", "", "%2e%2e%2f", "%u0041", "%%", "a;b",
]  # fmt: skip
#: aiohttp refuses a request line over 8190 bytes (a malformed case, not a query case).
MAX_TARGET = 8000
#: Headers aiohttp refuses to see twice (``aiohttp.http_parser.SINGLETON_HEADERS``).
SINGLETON_HEADERS = frozenset({
    "content-length", "content-location", "content-range", "content-type", "etag", "host",
    "max-forwards", "server", "transfer-encoding", "user-agent",
})  # fmt: skip
#: Content-Encodings aiohttp's parser cannot decode here (no Brotli, no zstd installed): it
#: answers a text/plain 400 itself, before any handler, like a malformed request.
UNDECODABLE = frozenset({b"br", b"zstd"})


class Gen:
    """Cheap random values from one seed, with hypothesis' unicode text spliced in where a
    value goes (with ``derive_text``, the text is drawn from the seed too: ~0.1 ms cheaper a
    case, for the GET endpoints). ``blob`` is a few random bytes."""

    def __init__(self, seed: int, text: str = "", *, derive_text: bool = False) -> None:
        self.r = random.Random(seed)
        self.text = text
        if derive_text:
            blocks = ((0x20, 0x7E), (0xA0, 0x17F), (0x370, 0x3FF), (0x4E00, 0x4E20),
                      (0x1F600, 0x1F610), (0x2000, 0x206F))  # fmt: skip
            low, high = self.pick(blocks)
            size = self.r.randint(0, 24)
            self.text = "".join(chr(self.r.randint(low, high)) for _ in range(size))
        self.blob = self.r.randbytes(self.r.randint(0, 48))

    def chance(self, p: float) -> bool:
        return self.r.random() < p

    def pick(self, seq: Any) -> Any:
        return seq[self.r.randrange(len(seq))]

    # ---- strings

    def odd_text(self) -> str:
        r = self.r.random()
        if r < 0.25:
            return self.text
        if r < 0.55:
            return "".join(self.pick(PALETTE) for _ in range(self.r.randint(1, 6)))
        if r < 0.62:
            return self.long_text()
        if r < 0.72:
            return self.date()
        if r < 0.8:
            return self.pick(NUMBERISH)
        if r < 0.88:
            return self.email()
        blocks = ((0x20, 0x7E), (0xA0, 0x2FF), (0x370, 0x52F), (0x4E00, 0x4E80), (0x1F600, 0x1F64F))
        low, high = self.pick(blocks)
        return "".join(chr(self.r.randint(low, high)) for _ in range(self.r.randint(1, 30)))

    def long_text(self) -> str:
        unit = self.pick(["a", "é", "😀", " ", "a b", "\u00a0", self.text or "x"])
        size = self.pick([101, 129, 201, 321, 513, 1025, 4097, 66000])
        return (unit * (size // max(1, len(unit)) + 1))[:size]

    def date(self) -> str:
        if self.chance(0.5):
            return self.pick(DATES)
        year = self.pick([1, 2, 1969, 1970, 2024, 2038, 9999])
        month, day = self.r.randint(0, 13), self.r.randint(0, 32)
        hour, minute, second = self.r.randint(0, 25), self.r.randint(0, 61), self.r.randint(0, 61)
        frac = self.pick(["", ".5", ".123", ".1234567", ".123456789", ","])
        zone = self.pick(["Z", "z", "+00:00", "-23:59", "+14:00", "+01:00", "+99:99", "", " Z"])
        sep = self.pick(["T", "T", " ", "t", "_"])
        clock = f"{hour:02d}:{minute:02d}:{second:02d}{frac}{zone}"
        return f"{year:04d}-{month:02d}-{day:02d}{sep}{clock}"

    def now_iso(self, spread: int = 86400 * 30) -> str:
        when = datetime.now(UTC) + timedelta(seconds=self.r.randint(-spread, spread))
        if self.chance(0.5):
            return when.isoformat(timespec=self.pick(["seconds", "milliseconds"])).replace(
                "+00:00", "Z"
            )
        offset = timedelta(minutes=self.r.randint(-12 * 60, 14 * 60))
        return when.astimezone(timezone(offset)).isoformat(timespec="seconds")

    def email(self) -> str:
        if self.chance(0.2):
            return self.pick(REGISTRY_PRINCIPALS)
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789._+-"
        local = "".join(self.pick(alphabet) for _ in range(self.r.randint(1, 16)))
        return f"{local}@{self.pick(DOMAINS)}"

    def odd_email(self) -> str:
        base = self.email()
        return self.pick([
            base.upper(), f" {base} ", base.replace("@", "@@"), base.replace("@", ""),
            f"{self.text}@{self.pick(DOMAINS)}", "a" * 65 + "@b.c", "a@" + "b" * 300,
            base + "\n", f"{base}\u00a0", "é@ü.example", base.replace("@", " @ "), "@", base,
        ])  # fmt: skip

    def ident(self, max_len: int = 40) -> str:
        first = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        rest = first + "._:@+-"
        tail = "".join(self.pick(rest) for _ in range(self.r.randint(0, max_len - 1)))
        return self.pick(first) + tail

    def odd_ident(self) -> str:
        return self.pick([
            "-leading", ".dot", "a b", "a/b", "é", "a" * 201, "a\n", "", " ", self.text,
            "a" * 200, "a\x00", "😀", "a,b", "a;b", self.ident(200),
        ])  # fmt: skip

    def line_ending(self) -> str:
        return self.pick(["\n", "\n", "\r\n", "\r", "\n\n", "\r\r\n", "\n\r"])

    # ---- JSON values

    def junk(self, depth: int = 0) -> Any:
        k = self.r.randrange(14 if depth < 3 else 9)
        if k == 0:
            return None
        if k == 1:
            return self.chance(0.5)
        if k == 2:
            return self.pick(BIG_NUMBERS)
        if k == 3:
            return Raw(self.pick(RAW_TOKENS)) if self.chance(0.3) else self.pick(NUMBERISH)
        if k <= 7:
            return self.odd_text()
        if k == 8:
            return self.date()
        if k in (9, 10):
            return [self.junk(depth + 1) for _ in range(self.r.randint(0, 4))]
        if k in (11, 12):
            return {self.odd_key(): self.junk(depth + 1) for _ in range(self.r.randint(0, 4))}
        return self.deep()

    def odd_key(self) -> str:
        return self.pick([
            self.text, "", " ", "kind", "accepted_at", "extra", "__proto__", "constructor",
            "email", "Email ", "PASSWORD", "e-mail", "x" * 300, "é", "time", "principal",
            "event_id", "😀", "a.b", "$ref",
        ])  # fmt: skip

    def deep(self) -> Raw:
        depth = self.pick([3, 50, 253, 254, 255, 256, 300, 600, 1000, 1023, 1024, 1025, 10000])
        if self.chance(0.5):
            return Raw(b"[" * depth + b"]" * depth)
        if self.chance(0.5):
            return Raw(b'{"a":' * depth + b"1" + b"}" * depth)
        return Raw(b"[" * depth)  # never closed: the whole body is invalid

    def value_for(self, key: str) -> Any:
        """An odd value that fits what the key is about (times, addresses, codes)."""
        lower = key.lower() if isinstance(key, str) else ""
        if any(t.lower() in lower for t in TIME_KEYS):
            return self.date() if self.chance(0.7) else self.junk()
        if "ip" in lower:
            return self.pick(IPS)
        if any(w in lower for w in ("mail", "principal", "alternateid", "user")):
            return self.odd_email() if self.chance(0.7) else self.junk()
        if any(w in lower for w in ("code", "lat", "lon", "level")):
            return self.pick(NUMBERISH) if self.chance(0.5) else self.pick(BIG_NUMBERS)
        return self.junk()

    def mutate(self, obj: Any, times: int) -> Any:
        """A copy of ``obj`` with ``times`` random changes deep inside it."""
        holder = [copy_json(obj)]
        for _ in range(times):
            spots = list(_spots(holder[0]))
            if not spots:
                break
            parent, key = self.pick(spots)
            op = self.r.random()
            if op < 0.15 and isinstance(parent, dict):
                del parent[key]
            elif op < 0.25 and isinstance(parent, dict):
                parent[self.odd_key()] = self.junk()
            elif op < 0.7:
                parent[key] = self.value_for(key if isinstance(key, str) else "")
            elif op < 0.8:
                parent[key] = [parent[key]] if self.chance(0.5) else {"value": parent[key]}
            else:
                parent[key] = self.junk()
        return holder[0]

    # ---- bytes

    def raw_body(self) -> tuple[str, bytes]:
        """A body that is mostly not what the endpoint reads: (variant, bytes)."""
        variant = self.pick([
            "random", "blob", "deep", "deep_object", "bom", "nul", "latin1", "crlf_json",
            "truncated", "long_line", "empty", "spaces", "nan", "scalar", "many_objects",
        ])  # fmt: skip
        r = self.r
        if variant == "random":
            return variant, r.randbytes(r.randint(1, 3000))
        if variant == "blob":
            return variant, self.blob
        if variant == "deep":
            depth = self.pick([255, 1023, 1024, 1025, 10000])
            return variant, b"[" * depth + b"]" * depth
        if variant == "deep_object":
            depth = self.pick([255, 1025, 10000])
            return variant, b'{"a":' * depth + b"null" + b"}" * depth
        if variant == "bom":
            return variant, b"\xef\xbb\xbf" + encode({"a": self.junk()}, r)
        if variant == "nul":
            return variant, b"\x00" * r.randint(1, 100)
        if variant == "latin1":
            return variant, ("é@ü.example:pässwörd\n" * r.randint(1, 20)).encode("latin-1")
        if variant == "crlf_json":
            return variant, b"\r\n".join(encode(self.junk(), r) for _ in range(r.randint(1, 10)))
        if variant == "truncated":
            whole = encode({"k": self.junk(), "l": [self.junk() for _ in range(3)]}, r)
            return variant, whole[: r.randint(0, max(0, len(whole) - 1))]
        if variant == "long_line":
            return variant, b"x" * r.choice([8191, 65536, 65537, 200_000])
        if variant == "empty":
            return variant, b""
        if variant == "spaces":
            return variant, self.line_ending().encode() * r.randint(1, 50) + b" \t"
        if variant == "nan":
            return variant, b'{"a": NaN, "b": Infinity}'
        if variant == "scalar":
            return variant, encode(self.pick([None, 1, "s", True, 1.5, [], {}]), r)
        return variant, b"".join(encode({"n": i, "v": self.junk()}, r) for i in range(5))

    def header_value(self) -> bytes:
        """A legal field value (VCHAR, SP, HTAB, obs-text): odd, never malformed."""
        options = [
            self.text.encode("utf-8"),
            bytes(self.r.choice(range(0x80, 0x100)) for _ in range(self.r.randint(1, 20))),
            b"a\tb", b"  padded  ", b"", b"x" * self.r.randint(100, 4000), "é".encode(),
            "é".encode("latin-1"), b"\xff\xfe", b'"quoted"', b"a, b, c", b"=?utf-8?q?x?=",
        ]  # fmt: skip
        value = self.pick(options)
        return bytes(b for b in value if (b >= 0x20 and b != 0x7F) or b == 0x09)

    def query_value(self) -> str:
        """A percent-encoded (ASCII) query value: long, unicode, invalid escapes."""
        if self.chance(0.3):  # as is: broken escapes, separators
            return self.pick(QUERY_LITERALS)
        raw = self.pick([
            self.text, self.odd_text(), "a" * self.r.choice([1, 199, 200, 201, 2000, 7000]),
        ])  # fmt: skip
        return quote(raw[:7000], safe=self.pick(["", "/", "=&+%"]))


def _spots(obj: Any) -> Iterator[tuple[Any, Any]]:
    stack = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                yield node, key
                stack.append(value)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield node, index
                stack.append(value)


def copy_json(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: copy_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [copy_json(v) for v in obj]
    return obj


def encode(value: Any, r: random.Random | None = None) -> bytes:
    """JSON text of ``value``; ints of any size, :class:`Raw` as is, odd spacing."""
    out: list[bytes] = []
    _encode(value, out, r)
    return b"".join(out)


def _encode(value: Any, out: list[bytes], r: random.Random | None) -> None:
    if isinstance(value, Raw):
        out.append(value.data)
    elif value is None:
        out.append(b"null")
    elif value is True:
        out.append(b"true")
    elif value is False:
        out.append(b"false")
    elif isinstance(value, int):
        out.append(str(value).encode())
    elif isinstance(value, float):
        out.append(orjson.dumps(value))
    elif isinstance(value, str):
        if r is not None and r.random() < 0.2:
            out.append(json.dumps(value).encode())  # \u escapes, surrogate pairs
        else:
            out.append(orjson.dumps(value))
    else:
        spaced = r is not None and r.random() < 0.1
        sep = b" ,\n " if spaced else b","
        if isinstance(value, dict):
            out.append(b"{")
            for i, (key, item) in enumerate(value.items()):
                if i:
                    out.append(sep)
                out.append(orjson.dumps(str(key)))
                out.append(b" : " if spaced else b":")
                _encode(item, out, r)
            out.append(b"}")
        else:
            out.append(b"[")
            for i, item in enumerate(value):
                if i:
                    out.append(sep)
                _encode(item, out, r)
            out.append(b"]")


def chunk_encode(body: bytes, r: random.Random) -> bytes:
    out = []
    pos = 0
    while pos < len(body):
        size = r.randint(1, max(1, len(body) // 3 + 1))
        piece = body[pos : pos + size]
        out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        pos += size
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def finish(case: Case, kind: str, body: bytes, g: Gen) -> Case:
    """The last touch every POST strategy shares: a ``broker_down`` case takes the broker
    down while it is sent; a ``chunked`` one sends ``body`` chunk-encoded."""
    case.broker_down = kind == "broker_down"
    if kind == "chunked":
        case.headers.append(("Transfer-Encoding", b"chunked"))
        case.body = chunk_encode(body, g.r)
        case.chunked = True
    return case


def gzip_variants(g: Gen, body: bytes) -> tuple[str, bytes]:
    """The body gzipped: whole, truncated, corrupted, or gzip magic and garbage."""
    packed = gzip.compress(body, compresslevel=1, mtime=0)
    variant = g.pick(["whole", "whole", "truncated", "corrupt", "magic_only", "deflate_raw"])
    if variant == "whole":
        return variant, packed
    if variant == "truncated":
        return variant, packed[: g.r.randint(2, max(2, len(packed) - 1))]
    if variant == "corrupt":
        data = bytearray(packed)
        for _ in range(g.r.randint(1, 4)):
            data[g.r.randrange(10, max(11, len(data)))] = g.r.randrange(256)
        return variant, bytes(data)
    if variant == "magic_only":
        return variant, b"\x1f\x8b" + g.r.randbytes(g.r.randint(0, 40))
    return variant, zlib.compress(body)


def malformed_case(g: Gen, label: str, method: str, target: str) -> Case:
    """A request aiohttp's HTTP parser refuses (never reaches a handler)."""
    variant = g.pick(["ctl_header", "long_line", "long_header", "many_headers", "cl_and_te",
                      "bad_length", "obs_fold", "duplicate_singleton"])  # fmt: skip
    case = Case(f"{label}:{variant}", method, target, malformed=True)
    if variant == "ctl_header":
        case.headers.append(("X-Fuzz", b"a" + bytes([g.pick([0, 1, 8, 0x1F, 0x7F])]) + b"b"))
    elif variant == "long_line":
        case.target = target + ("&" if "?" in target else "?") + "x=" + "a" * 9000
    elif variant == "long_header":
        case.headers.append(("X-Fuzz", b"a" * 9000))
    elif variant == "many_headers":
        case.headers.extend((f"X-Fuzz-{i}", b"v") for i in range(200))
    elif variant == "cl_and_te":
        case.headers.append(("Transfer-Encoding", b"chunked"))
        case.headers.append(("Content-Length", b"5"))
        case.chunked = True
        case.body = b"0\r\n\r\n"
    elif variant == "duplicate_singleton":
        name = g.pick(sorted(SINGLETON_HEADERS - {"content-length", "transfer-encoding"}))
        case.headers.extend([(name, b"a"), (name, b"b")])
    elif variant == "bad_length":
        case.headers.append(("Content-Length", g.pick([b"abc", b"-1", b"1, 2", b"+1", b"0x10"])))
    else:
        case.headers.append(("X-Fuzz", b"a\r\n b"))
    return case


# ------------------------------------------------------------------------------ HR cases


def hr_event(g: Gen) -> dict[str, Any]:
    """A valid HrEvent as docs/openapi.yaml describes it (required fields, enums, limits)."""
    etype = g.pick(HR_TYPES)
    event: dict[str, Any] = {
        "event_id": g.ident(),
        "type": etype,
        "employee_id": g.pick(["E1", "E2", g.ident(12), g.text.strip()[:200] or "E3"]),
        "email": g.email(),
        "effective_at": g.now_iso(),
        "source": g.pick(["workday", "bamboohr", "personio", "fuzz"]),
    }
    if etype == "role_changed":
        event["new_role"] = g.pick(HR_ROLES)
    missing = [k for k in HR_SCHEMA["required"] if k not in event]
    assert not missing, missing  # the spec grew a required field: teach hr_event about it
    return event


def hr_mutation(g: Gen, event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """One schema-aware change to a valid event: (variant, event)."""
    key = g.pick([*HR_PROPS, "accepted_at", "kind", "extra"])
    variant = g.pick(["wrong_type", "null", "missing", "too_long", "unicode", "date",
                      "number_string", "nested", "extra", "odd_value"])  # fmt: skip
    event = dict(event)
    if variant == "wrong_type":
        event[key] = g.pick([1, 1.5, True, [], {}, [event.get(key)], 2**64])
    elif variant == "null":
        event[key] = None
    elif variant == "missing":
        event.pop(key, None)
    elif variant == "too_long":
        limit = HR_PROPS.get(key, {}).get("maxLength", 256)
        event[key] = g.pick(["a", "é", "😀"]) * (limit + g.pick([1, 2, 1000]))
    elif variant == "unicode":
        event[key] = g.odd_text()
    elif variant == "date":
        event[key] = g.date()
    elif variant == "number_string":
        event[key] = g.pick(NUMBERISH)
    elif variant == "nested":
        event[key] = g.junk(1) if g.chance(0.7) else g.deep()
    elif variant == "extra":
        event[g.odd_key()] = g.junk()
    elif key == "event_id":
        event[key] = g.odd_ident()
    elif key == "email":
        event[key] = g.odd_email()
    elif key in ("type", "new_role"):
        event[key] = g.pick([*HR_TYPES, *HR_ROLES, "TERMINATED", " terminated", "", "fired"])
    else:
        event[key] = g.value_for(key)
    return f"{variant}.{key}", event


def hr_signature_headers(g: Gen, body: bytes) -> tuple[str, list[tuple[str, bytes]]]:
    """Ways to sign (and mis-sign) ``body``: (variant, X-AccessGuard-Signature headers)."""
    now = int(time.time())
    good = sign(HR_SECRET, body).encode()
    mac = good.split(b"v1=", 1)[1]
    variant = g.pick([
        "missing", "empty", "wrong_secret", "stale", "future", "edge_of_tolerance", "t_text",
        "t_float", "t_negative", "t_huge", "no_t", "no_v1", "v0_only", "several_v1_one_good",
        "several_v1_all_bad", "upper_hex", "spaces", "non_ascii", "utf8", "two_headers",
        "other_body", "long", "empty_parts", "duplicate_t",
    ])  # fmt: skip
    name = SIGNATURE_HEADER
    if variant == "missing":
        return variant, []
    values: dict[str, bytes] = {
        "empty": b"",
        "wrong_secret": sign("not-the-secret", body).encode(),
        "stale": sign(HR_SECRET, body, now - 301 - g.r.randint(0, 10**6)).encode(),
        "future": sign(HR_SECRET, body, now + 301 + g.r.randint(0, 10**6)).encode(),
        "edge_of_tolerance": sign(HR_SECRET, body, now - 290).encode(),
        "t_text": b"t=" + g.pick([b"abc", b"", b"1e9", b"\xc2\xb2", b"0x10"]) + b",v1=" + mac,
        "t_float": b"t=%d.5,v1=" % now + mac,
        "t_negative": b"t=-%d,v1=" % now + mac,
        "t_huge": b"t=1" + b"0" * g.pick([20, 309, 400, 4000]) + b",v1=" + mac,
        "no_t": b"v1=" + mac,
        "no_v1": b"t=%d" % now,
        "v0_only": b"t=%d,v0=" % now + mac,
        "several_v1_one_good": b"t=%d,v1=%s,v1=%s,v1=%s"
        % (now, b"0" * 64, good.split(b"v1=")[1], b"zz"),
        "several_v1_all_bad": b"t=%d" % now + b"".join(b",v1=%064x" % i for i in range(5)),
        "upper_hex": good.upper().replace(b"T=", b"t=").replace(b"V1=", b"v1="),
        "spaces": b" t = %d , v1 = " % now + mac + b" ",
        "non_ascii": b"t=%d,v1=" % now + bytes(g.r.randrange(0x80, 0x100) for _ in range(64)),
        "utf8": b"t=%d,v1=" % now + "é".encode() * 32,
        "other_body": sign(HR_SECRET, body + b" ").encode(),
        "long": good + b",v1=" + b"a" * 7000,
        "empty_parts": b",,," + good + b",,=,",
        "duplicate_t": b"t=1," + good,
    }
    if variant == "two_headers":
        return variant, [(name, b"t=1,v1=00"), (name, good)]
    return variant, [(name, values[variant])]


HR_KINDS = [
    *["valid"] * 3, *["mutated"] * 6, *["signature"] * 4, *["raw"] * 3, *["headers"] * 3,
    "oversize", "broker_down", "chunked", "malformed",
]  # fmt: skip


def hr_case(kind: str, g: Gen) -> Case:
    target = "/v1/hr/events"
    if kind == "malformed":
        return malformed_case(g, "malformed", "POST", target)
    variant = ""
    if kind in ("valid", "broker_down", "chunked"):
        if g.chance(0.25):  # a small pool of ids: duplicates (202) and conflicts (409)
            pool = g.r.randrange(6)
            event = hr_event(Gen(pool)) if g.chance(0.5) else hr_event(g)
            event["event_id"] = f"fz-dup-{pool}"
        else:
            event = hr_event(g)
        body = encode(event, g.r)
    elif kind == "mutated":
        event = hr_event(g)
        parts = []
        for _ in range(g.r.randint(1, 3)):
            part, event = hr_mutation(g, event)
            parts.append(part)
        variant = "+".join(parts)
        body = encode(event, g.r)
    elif kind == "raw":
        variant, body = g.raw_body()
    elif kind == "oversize":
        body = encode({**hr_event(g), "source": "x" * g.r.randint(65536, 70000)})
    else:
        body = encode(hr_event(g) if g.chance(0.8) else g.mutate(hr_event(g), 1), g.r)
    headers: list[tuple[str, bytes]] = []
    wire = body
    if kind == "signature":
        variant, headers = hr_signature_headers(g, body)
    else:
        headers.append((SIGNATURE_HEADER, sign(HR_SECRET, body).encode()))
    if kind == "headers":
        variant, extra, wire = header_variant(g, body)
        headers.extend(extra)
    else:
        headers.append(("Content-Type", b"application/json"))
    case = Case(f"{kind}:{variant}" if variant else kind, "POST", target, headers, wire)
    return finish(case, kind, body, g)


def header_variant(g: Gen, body: bytes) -> tuple[str, list[tuple[str, bytes]], bytes]:
    """Content-Type and Content-Encoding variants: (variant, headers, body on the wire)."""
    variant = g.pick(["content_type", "content_type", "no_content_type", "gzip", "encoding",
                      "both", "junk_headers"])  # fmt: skip
    headers: list[tuple[str, bytes]] = []
    wire = body
    if variant in ("content_type", "both"):
        headers.append(("Content-Type", g.pick(CONTENT_TYPES)))
    elif variant != "no_content_type":
        headers.append(("Content-Type", b"application/json"))
    if variant in ("gzip", "both"):
        how, wire = gzip_variants(g, body)
        headers.append(("Content-Encoding", b"deflate" if how == "deflate_raw" else b"gzip"))
        variant = f"{variant}.{how}"
        if how not in ("whole", "deflate_raw"):
            variant = f"{variant}.undecodable"
    elif variant == "encoding":
        coding = g.pick(ENCODINGS)
        headers.append(("Content-Encoding", coding))
        variant = f"encoding.{coding.decode('latin-1')}"
        if coding in UNDECODABLE:
            variant = f"malformed.{variant}"
        elif coding.lower().strip() not in (b"", b"identity", b"chunked"):
            variant = f"{variant}.undecodable"  # the body is not in that encoding
    elif variant == "junk_headers":
        for _ in range(g.r.randint(1, 8)):
            headers.append((g.pick(["X-Fuzz", "Accept", "Cookie", "Expect", "X-Forwarded-For",
                                    "Accept-Encoding", "If-None-Match", "Range", "Origin"]),
                            g.header_value()))  # fmt: skip
    return variant, headers, wire


# ------------------------------------------------------------------------------ login cases


OKTA_TYPES = [
    "user.session.start", "user.authentication.sso", "user.authentication.auth_via_mfa",
    "user.mfa.okta_verify.deny_push", "system.push.send_factor_verify_push",
    "user.account.lock", "user.authentication.slo", "user.lifecycle.create",
]  # fmt: skip


def okta_event(g: Gen) -> dict[str, Any]:
    principal = g.email()
    return {
        "uuid": g.ident(36),
        "published": g.now_iso(),
        "eventType": g.pick(OKTA_TYPES),
        "actor": {"id": "00u" + g.ident(12), "type": "User", "alternateId": principal},
        "client": {
            "ipAddress": g.pick(IPS),
            "userAgent": {"rawUserAgent": "Mozilla/5.0"},
            "geographicalContext": {
                "city": "Paris",
                "country": "France",
                "geolocation": {"lat": 48.85, "lon": 2.35},
            },
        },
        "outcome": {
            "result": g.pick(["SUCCESS", "FAILURE", "CHALLENGE", "DENY", "ALLOW", "SKIPPED"]),
            "reason": g.pick(["INVALID_CREDENTIALS", "VERIFICATION_ERROR", None]),
        },
        "debugContext": {
            "debugData": {
                "factor": "OKTA_VERIFY_PUSH",
                "risk": "{level=LOW}",
                "deviceFingerprint": "fp",
            }
        },
        "authenticationContext": {"credentialType": "PASSWORD"},
        "request": {"ipChain": [{"ip": g.pick(IPS), "geographicalContext": {"city": "Lyon"}}]},
        "target": [{"type": "AppInstance", "displayName": "Hootsuite", "alternateId": "hs"}],
        "device": {"id": "dev-1"},
    }


def entra_event(g: Gen) -> dict[str, Any]:
    when = g.now_iso()
    return {
        "id": g.ident(36),
        "createdDateTime": when,
        "userPrincipalName": g.email(),
        "userId": g.ident(36),
        "appDisplayName": "Hootsuite",
        "ipAddress": g.pick(IPS),
        "status": {
            "errorCode": g.pick([0, 50126, 500121, 50074, "0", "50053"]),
            "failureReason": "Invalid username or password.",
            "additionalDetails": "MFA requirement satisfied by claim in the token",
        },
        "location": {
            "city": "Paris",
            "countryOrRegion": "FR",
            "geoCoordinates": {"latitude": 48.85, "longitude": 2.35},
        },
        "deviceDetail": {"deviceId": "d-1"},
        "userAgent": "Mozilla/5.0",
        "riskLevelDuringSignIn": g.pick(["low", "medium", "high", "none", "hidden"]),
        "authenticationRequirement": "multiFactorAuthentication",
        "authenticationDetails": [
            {
                "authenticationMethod": "Password",
                "succeeded": True,
                "authenticationStepDateTime": when,
            },
            {"authenticationMethod": "Mobile app notification", "succeeded": g.chance(0.7)},
        ],
        "mfaDetail": {"authMethod": "PhoneAppNotification"},
    }


def google_event(g: Gen) -> dict[str, Any]:
    principal = g.email()
    names = ["login_success", "login_failure", "login_challenge", "suspicious_login", "logout"]
    return {
        "id": {
            "time": g.now_iso(),
            "uniqueQualifier": str(g.r.randint(-(2**63), 2**63)),
            "applicationName": g.pick(["login", "login", "drive"]),
        },
        "actor": {"email": principal, "profileId": str(g.r.randint(0, 10**20))},
        "ipAddress": g.pick(IPS),
        "networkInfo": {"regionCode": "FR"},
        "events": [
            {
                "type": "login",
                "name": g.pick(names),
                "parameters": [
                    {"name": "login_type", "value": "google_password"},
                    {"name": "login_challenge_method", "multiValue": ["password", "totp"]},
                    {"name": "is_suspicious", "boolValue": g.chance(0.2)},
                    {"name": "login_timestamp", "intValue": str(int(time.time() * 1e6))},
                    {"name": "login_challenge_status", "value": "Challenge Passed."},
                    {"name": "affected_email_address", "value": principal},
                ],
            }
            for _ in range(g.r.randint(1, 3))
        ],
    }


def generic_event(g: Gen) -> dict[str, Any]:
    event = {
        "time": g.now_iso(),
        "principal": g.email(),
        "outcome": g.pick(["success", "failure", "challenge"]),
        "event_type": "login",
        "vendor_event_id": g.ident(20),
        "failure_reason": "bad password",
        "mfa_method": g.pick(["OKTA_VERIFY_PUSH", "totp", "sms", "webauthn", "Phone call"]),
        "mfa_result": g.pick(["success", "denied", "timeout", "none"]),
        "ip": g.pick(IPS),
        "geo": {"country": "FR", "city": "Paris", "lat": 48.85, "lon": 2.35},
        "device": "d-1",
        "user_agent": "Mozilla/5.0",
        "target": g.pick(["ig-lumen", "x:@lumen_outdoor", "Hootsuite"]),
        "risk": g.pick(["low", "medium", "high"]),
        "principal_id": g.ident(12),
    }
    for key in list(event):
        if key not in ("time", "principal", "outcome") and g.chance(0.3):
            del event[key]
    return event


VENDOR_EVENTS: dict[str, Callable[[Gen], dict[str, Any]]] = {
    "okta": okta_event,
    "entra": entra_event,
    "google": google_event,
    "generic": generic_event,
}
assert set(VENDOR_EVENTS) == set(AUTH_VENDORS), "the spec's vendors changed"


def login_batch(g: Gen, records: list[Any]) -> tuple[str, bytes, bytes]:
    """Records as a JSON array, one object, or NDJSON: (shape, body, Content-Type)."""
    shape = g.pick(["array", "array", "object", "ndjson", "ndjson_untyped", "ndjson_dirty"])
    if shape == "object" or (shape == "array" and not records):
        return shape, encode(records[0] if records else {}, g.r), b"application/json"
    if shape == "array":
        return shape, encode(records, g.r), b"application/json"
    lines = [encode(rec, g.r) for rec in records]
    if shape == "ndjson_dirty":  # blank lines, broken lines, mixed line endings
        for _ in range(g.r.randint(1, 4)):
            lines.insert(g.r.randint(0, len(lines)), g.pick([b"", b"   ", b"{", b"[1,", b"\xff"]))
    body = b"".join(line + g.line_ending().encode() for line in lines)
    ctype = b"application/json" if shape == "ndjson_untyped" else b"application/x-ndjson"
    return shape, body, ctype


def bearer_variant(g: Gen, token: str) -> tuple[str, list[tuple[str, bytes]]]:
    """Authorization header variants, mostly wrong: (variant, headers)."""
    tok = token.encode()
    variant = g.pick([
        "missing", "empty", "scheme_only", "wrong", "basic", "token_scheme", "lower_scheme",
        "padded", "tab", "unicode", "latin1", "long", "two_headers", "prefix", "suffix",
        "other_endpoint_token", "non_ascii_bytes",
    ])  # fmt: skip
    values = {
        "empty": b"",
        "scheme_only": b"Bearer",
        "wrong": b"Bearer " + g.ident(30).encode(),
        "basic": b"Basic ZnV6ejpmdXp6",
        "token_scheme": b"Token " + tok,
        "lower_scheme": b"bearer " + tok,  # accepted: the scheme is case-insensitive
        "padded": b"Bearer    " + tok + b"   ",  # accepted: the token is stripped
        "tab": b"Bearer\t" + tok,
        "unicode": "Bearer tökén-😀".encode(),
        "latin1": "Bearer tökén".encode("latin-1"),
        "long": b"Bearer " + b"a" * 7000,
        "prefix": b"Bearer " + tok[:-1],
        "suffix": b"Bearer " + tok + b"x",
        "other_endpoint_token": b"Bearer "
        + (LEAK_TOKEN if token == AUTH_TOKEN else AUTH_TOKEN).encode(),
        "non_ascii_bytes": b"Bearer " + bytes(g.r.randrange(0x80, 0x100) for _ in range(8)),
    }
    if variant == "missing":
        return variant, []
    if variant == "two_headers":
        return variant, [("Authorization", b"Bearer wrong"), ("Authorization", b"Bearer " + tok)]
    return variant, [("Authorization", values[variant])]


AUTH_KINDS = [
    *["vendor"] * 4, *["mutated"] * 6, "mismatch", *["auth"] * 3, *["raw"] * 3, *["query"] * 2,
    *["headers"] * 2, "deep", "broker_down", "chunked", "malformed", "big",
]  # fmt: skip


def auth_case(kind: str, g: Gen) -> Case:
    vendor = g.pick(AUTH_VENDORS)
    query = f"?vendor={vendor}" if g.chance(0.85) or vendor != "generic" else ""
    target = "/v1/auth/events" + query
    if kind == "malformed":
        return malformed_case(g, "malformed", "POST", target)
    make = VENDOR_EVENTS[vendor]
    count = g.pick([0, 1, 1, 1, 2, 3, 5, 20])
    variant = ""
    if kind == "mutated":
        records = [g.mutate(make(g), g.r.randint(1, 4)) for _ in range(max(1, count))]
        if g.chance(0.1):
            records.append(g.junk())
    elif kind == "mismatch":
        other = g.pick(AUTH_VENDORS)
        records = [VENDOR_EVENTS[other](g) for _ in range(max(1, count))]
        variant = f"{other}_as_{vendor}"
    elif kind == "deep":  # a record nested deeper than orjson writes: to the dead letters
        rec = make(g)
        rec[g.pick(list(rec))] = g.deep()
        records = [rec, make(g)]
    else:
        records = [make(g) for _ in range(count)]
    shape, body, ctype = login_batch(g, records)
    variant = variant or shape
    if kind == "big":  # parsed off the event loop (over 256 KiB), or over the limit (413)
        size = g.pick([300 * 1024, FUZZ_LIMITS["max_batch"] + 1, FUZZ_LIMITS["max_batch"] + 999])
        body = b"\n".join(encode(make(g)) for _ in range(g.r.randint(1, 5)))
        padding = g.pick([b" ", b"\n", b"\r\n", b"\t"])  # the size, not the parsing, is the point
        body += padding * ((size - len(body)) // len(padding) + 1)
        ctype = b"application/x-ndjson"
        variant = f"big.{'over' if size > FUZZ_LIMITS['max_batch'] else 'offloaded'}"
    headers: list[tuple[str, bytes]] = []
    if kind == "auth":
        variant, headers = bearer_variant(g, AUTH_TOKEN)
        headers.append(("Content-Type", ctype))
    else:
        headers.append(("Authorization", b"Bearer " + AUTH_TOKEN.encode()))
    if kind == "raw":
        variant, body = g.raw_body()
        headers.append(("Content-Type", g.pick([ctype, b"application/x-ndjson"])))
    elif kind == "query":
        variant = g.pick(["vendor", "vendor", "repeated", "extra", "empty"])
        if variant == "vendor":
            target = "/v1/auth/events?vendor=" + g.pick(
                [g.query_value(), "OKTA", "okta%20", "okta%00", "%20okta", "generic%0A"]
            )
        elif variant == "repeated":
            target = f"/v1/auth/events?vendor={g.query_value()}&vendor={vendor}"
        elif variant == "extra":
            target = f"/v1/auth/events?{g.query_value()}={g.query_value()}&vendor={vendor}"
        else:
            target = "/v1/auth/events?" + g.pick(["", "vendor", "vendor=", "&&", "=", "%"])
        headers.append(("Content-Type", ctype))
    elif kind == "headers":
        variant, extra, body = header_variant(g, body)
        headers.extend(extra)
    elif kind != "auth":
        headers.append(("Content-Type", ctype))
    case = Case(f"{kind}:{vendor}.{variant}", "POST", target[:MAX_TARGET], headers, body)
    return finish(case, kind, body, g)


# ------------------------------------------------------------------------------ leak cases

CSV_HEADERS = [
    ["email", "password"], ["username", "pass"],
    ["e-mail", "hash", "breach", "date", "data_classes"],
    ["Email", "Password", "Breach", "Breach_Date", "Added", "Data_Classes", "Flags",
     "Password_HMAC", "Password_Present", "Source"],
    ["\ufeffemail", "password"], ["login"], ["principal", "password_hmac"], [],
    ["EMAIL ", " Password"], ["user", "user_id", "account"], ["x", "y", "z"],
]  # fmt: skip


def leak_record(g: Gen) -> dict[str, Any]:
    record: dict[str, Any] = {"email": g.email() if g.chance(0.9) else g.odd_email()}
    if g.chance(0.6):
        record["password"] = g.pick(["hunter2", "pässwörd", "", g.text, "a:b:c", "x" * 300])
    if g.chance(0.2):
        record["hash"] = g.pick(["5f4dcc3b5aa765d61d8327deb882cf99", ""])
    if g.chance(0.3):
        record["breach"] = g.pick(["Adobe", "", "x" * 201, g.text, "Breach\x00"])
    if g.chance(0.3):
        record["breach_date"] = g.date() if g.chance(0.7) else g.now_iso()
    if g.chance(0.2):
        record["data_classes"] = g.pick([["Passwords"], ["Email addresses"], "Passwords;Names", []])
    if g.chance(0.1):
        record["flags"] = g.pick([["stealer_log"], ["nope"], [], "stealer_log"])
    if g.chance(0.1):
        record["password_hmac"] = g.pick(["a" * 64, "A" * 64, "a" * 63, 5])
    if g.chance(0.1):
        record["password_present"] = g.pick([True, False, "yes", 1])
    return record


def csv_body(g: Gen, count: int) -> tuple[str, str]:
    header = list(g.pick(CSV_HEADERS))
    delim = g.pick([",", ",", ";", "\t", "|"])
    end = g.line_ending() if g.chance(0.8) else None
    width = max(1, len(header))
    lines = [delim.join(header)] if header else []
    for _ in range(count):
        cells = [g.email() if g.chance(0.85) else g.odd_email()]
        for column in header[1:]:
            low = column.lower()
            if "date" in low or "added" in low:
                cells.append(g.date() if g.chance(0.5) else g.now_iso())
            elif "class" in low:
                cells.append(g.pick(["Passwords;Email addresses", "", "Names|Phones"]))
            elif "flag" in low:
                cells.append(g.pick(["stealer_log", "", "bogus"]))
            else:
                cells.append(g.pick(["hunter2", "", "a,b", '"quoted"', g.text, "x" * 100]))
        if g.chance(0.1):
            cells = cells[: g.r.randint(0, width)]
        if g.chance(0.1):
            cells.append('"multi\nline"' if g.chance(0.5) else '"unbalanced')
        lines.append(delim.join(cells))
    text = "".join(line + (end or g.line_ending()) for line in lines)
    return f"csv.{len(header)}cols", text


LEAK_KINDS = [
    *["csv"] * 4, *["ndjson"] * 3, *["json"] * 3, "single", *["combo"] * 2, *["gzip"] * 3,
    *["query"] * 2, *["auth"] * 2, *["headers"] * 2, *["raw"] * 2, "deep", "broker_down",
    "chunked", "malformed", "big",
]  # fmt: skip
LEAK_FORMAT_TYPES = {
    "csv": b"text/csv",
    "ndjson": b"application/x-ndjson",
    "json": b"application/json",
    "single": b"application/json",
    "combo": b"text/plain",
}


def leak_body(g: Gen, fmt: str) -> tuple[str, bytes]:
    count = g.pick([1, 1, 2, 3, 5, 10, 50])
    if fmt == "csv":
        variant, text = csv_body(g, count)
        data = text.encode("utf-8")
    elif fmt == "combo":
        lines = [
            g.pick([f"{g.email()}:{g.text}", f"{g.email()};pw", g.email(), f" {g.email()} : x",
                    f"{g.odd_email()}:pw", ":", "", "é@ü.example:pässwörd"])
            for _ in range(count)
        ]  # fmt: skip
        variant, data = "combo", "".join(x + g.line_ending() for x in lines).encode()
    else:
        records: list[Any] = [leak_record(g) for _ in range(count)]
        if g.chance(0.3):
            records = [g.mutate(r, g.r.randint(1, 3)) for r in records]
        if g.chance(0.1):
            records.append(g.junk())
        if fmt == "single":
            variant, data = "single", encode(records[0], g.r)
        elif fmt == "json":
            variant, data = "json", encode(records, g.r)
            if g.chance(0.1):
                variant, data = "json.truncated", data[: g.r.randint(1, len(data))]
        else:
            variant = "ndjson"
            data = b"".join(encode(r, g.r) + g.line_ending().encode() for r in records)
    if g.chance(0.05):
        data = b"\xef\xbb\xbf" + data
    if g.chance(0.05):
        data = data.decode("utf-8", "replace").encode("latin-1", "replace")
    return variant, data


def leak_case(kind: str, g: Gen) -> Case:
    target = "/v1/leaks"
    if kind == "malformed":
        return malformed_case(g, "malformed", "POST", target)
    fmt = kind if kind in LEAK_FORMAT_TYPES else g.pick(list(LEAK_FORMAT_TYPES))
    variant, body = leak_body(g, fmt)
    ctype = LEAK_FORMAT_TYPES[fmt] if g.chance(0.8) else g.pick(CONTENT_TYPES)
    headers: list[tuple[str, bytes]] = []
    if kind == "auth":
        variant, headers = bearer_variant(g, LEAK_TOKEN)
    else:
        headers.append(("Authorization", b"Bearer " + LEAK_TOKEN.encode()))
    if kind == "gzip":
        how, body = gzip_variants(g, body)
        variant = f"{variant}.gzip_{how}"
        ctype = g.pick([ctype, b"application/gzip", b"application/octet-stream"])
    elif kind == "raw":
        variant, body = g.raw_body()
    elif kind == "big":  # past each bound: bytes sent, bytes decompressed, records
        variant = g.pick(["bytes", "gzip_bomb", "records", "gzip_records"])
        line = f"{g.email()}:pw\n".encode()
        if variant == "bytes":
            body = line * (FUZZ_LIMITS["max_batch"] // len(line) + 2)
        elif variant == "gzip_bomb":
            body = gzip.compress(b"a" * (FUZZ_LIMITS["leak_max_bytes"] + 10), compresslevel=1)
        else:
            body = line * (FUZZ_LIMITS["leak_max_records"] + g.pick([1, 2, 100]))
            if variant == "gzip_records":
                body = gzip.compress(body, compresslevel=1)
        variant, ctype = f"big.{variant}", b"text/plain"
    elif kind == "deep":  # a value nested deeper than Python's repr recursion
        field_name = g.pick(["data_classes", "flags", "breach", "password", "email", "extra"])
        deep = g.pick([b"[" * 1000 + b"]" * 1000, b"[" * 300 + b"]" * 300, b"[" * 1025])
        body = b'[{"email":"a@example.com","%s":[%s]}]' % (field_name.encode(), deep)
        variant, ctype = f"deep.{field_name}", b"application/json"
    elif kind == "query":
        params = []
        for name in g.r.sample(["breach", "source", "format", "breach", "x"], g.r.randint(1, 3)):
            value = (
                g.pick(["csv", "json", "ndjson", "combo", "CSV", "xml", ""])
                if (name == "format" and g.chance(0.5))
                else g.query_value()
            )
            params.append(f"{name}={value}")
        target += "?" + "&".join(params)
        variant = "+".join(p.split("=", 1)[0] for p in params)
    if kind == "headers":
        variant, extra, body = header_variant(g, body)
        headers.extend(extra)
    else:
        headers.append(("Content-Type", ctype))
    case = Case(f"{kind}:{variant}", "POST", target[:MAX_TARGET], headers, body)
    return finish(case, kind, body, g)


# ------------------------------------------------------------------------------ GET cases

GET_KINDS = ["plain", "query", "query", "headers", "headers", "body", "broker_down", "malformed"]


def get_case(path: str, kind: str, g: Gen) -> Case:
    if kind == "malformed":
        return malformed_case(g, "malformed", "GET", path)
    case = Case(kind, "GET", path)
    if kind == "query":
        params = [
            f"{g.query_value()}={g.query_value()}" if g.chance(0.8) else g.query_value()
            for _ in range(g.r.randint(1, 6))
        ]
        case.target = (path + "?" + g.pick(["&", ";", "&&"]).join(params))[:MAX_TARGET]
    elif kind == "headers":
        names = ["Accept", "Accept-Encoding", "Authorization", "Cookie", "If-None-Match", "Range",
                 "X-Forwarded-For", "User-Agent", "Content-Type", "Origin", "X-Fuzz", "Host",
                 "Connection", "Expect", "Upgrade", "TE", "Via", "Forwarded"]  # fmt: skip
        for _ in range(g.r.randint(1, 10)):
            name = g.pick(names)
            if name.lower() in SINGLETON_HEADERS and any(k == name for k, _ in case.headers):
                continue  # a duplicate is malformed (see malformed_case)
            case.headers.append((name, g.header_value()))
    elif kind == "body":
        case.body = g.raw_body()[1][:10000]
        case.headers.append(("Content-Type", g.pick(CONTENT_TYPES)))
    elif kind == "broker_down":
        case.broker_down = True
    return case


# ------------------------------------------------------------------------------ explicit cases
# Sent before the generated ones on every run: requests that once got (or still get) a server
# error, so a run reports them however the generated cases fall.

HR_VALID = (
    b'{"event_id":"fz-explicit","type":"terminated","employee_id":"E1","email":"a@b.c",'
    b'"effective_at":"2024-01-01T00:00:00Z","source":"fuzz"}'
)
#: A gzip header, then a deflate block of the reserved type 3 (zlib: "invalid block type").
BAD_GZIP = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\x07\x00"


def _signed(body: bytes, *extra: tuple[str, bytes]) -> list[tuple[str, bytes]]:
    return [
        (SIGNATURE_HEADER, sign(HR_SECRET, body).encode()),
        ("Content-Type", b"application/json"),
        *extra,
    ]


def _bearer(token: str, ctype: bytes, *extra: tuple[str, bytes]) -> list[tuple[str, bytes]]:
    return [("Authorization", b"Bearer " + token.encode()), ("Content-Type", ctype), *extra]


def explicit_cases(name: str) -> list[Case]:
    expect_bytes = ("Expect", b"\xff\xfe")
    expect_junk = ("Expect", b"202-accepted")
    if name == "hr":
        year_1 = HR_VALID.replace(b"2024-01-01T00:00:00Z", b"0001-01-01T00:00:00+01:00")
        return [
            Case("explicit:t_huge", "POST", "/v1/hr/events",
                 [(SIGNATURE_HEADER, b"t=1" + b"0" * 400 + b",v1=00")], HR_VALID),
            Case("explicit:gzip.undecodable", "POST", "/v1/hr/events",
                 _signed(b"not gzip", ("Content-Encoding", b"gzip")), b"not gzip"),
            Case("explicit:deflate.undecodable", "POST", "/v1/hr/events",
                 _signed(b"not deflate", ("Content-Encoding", b"deflate")), b"not deflate"),
            Case("explicit:expect_bytes", "POST", "/v1/hr/events",
                 _signed(HR_VALID, expect_bytes), HR_VALID),
            Case("explicit:expect_unknown", "POST", "/v1/hr/events",
                 _signed(HR_VALID, expect_junk), HR_VALID),
            Case("explicit:year_1", "POST", "/v1/hr/events", _signed(year_1), year_1),
        ]  # fmt: skip
    if name == "auth":
        target = "/v1/auth/events?vendor="
        ok = b'{"time":"2024-01-01T00:00:00Z","principal":"a@b.c","outcome":"success"}'
        json_type = b"application/json"
        return [
            Case("explicit:bearer_bytes", "POST", target + "generic",
                 [("Authorization", b"Bearer \xff\xfe"), ("Content-Type", json_type)], ok),
            Case("explicit:gzip.undecodable", "POST", target + "generic",
                 _bearer(AUTH_TOKEN, json_type, ("Content-Encoding", b"gzip")), b"not gzip"),
            Case("explicit:short_deflate.undecodable", "POST", target + "generic",
                 _bearer(AUTH_TOKEN, json_type, ("Content-Encoding", b"deflate")), b"{}"),
            Case("explicit:expect_bytes", "POST", target + "generic",
                 _bearer(AUTH_TOKEN, json_type, expect_bytes), ok),
            Case("explicit:expect_unknown", "POST", target + "generic",
                 _bearer(AUTH_TOKEN, json_type, expect_junk), ok),
            *(
                Case(f"explicit:regression.{i}", "POST", target + opts.get("vendor", "generic"),
                     _bearer(AUTH_TOKEN, json_type), body)
                for i, (where, _why, body, opts, _status) in enumerate(REGRESSIONS)
                if where == "auth"
            ),
        ]  # fmt: skip
    if name == "leaks":
        json_type = b"application/json"
        deep = b"[" * 1000 + b"]" * 1000
        return [
            Case("explicit:bearer_bytes", "POST", "/v1/leaks",
                 [("Authorization", b"Bearer \xff\xfe"), ("Content-Type", b"text/plain")],
                 b"a@example.com:pw\n"),
            Case("explicit:corrupt_gzip", "POST", "/v1/leaks",
                 _bearer(LEAK_TOKEN, b"application/gzip"), BAD_GZIP),
            Case("explicit:deep_data_classes", "POST", "/v1/leaks", _bearer(LEAK_TOKEN, json_type),
                 b'[{"email":"a@example.com","data_classes":[' + deep + b"]}]"),
            Case("explicit:deep_flags", "POST", "/v1/leaks", _bearer(LEAK_TOKEN, json_type),
                 b'[{"email":"a@example.com","flags":[' + deep + b"]}]"),
            Case("explicit:expect_bytes", "POST", "/v1/leaks",
                 _bearer(LEAK_TOKEN, b"text/plain", expect_bytes), b"a@example.com:pw\n"),
            Case("explicit:expect_unknown", "POST", "/v1/leaks",
                 _bearer(LEAK_TOKEN, b"text/plain", expect_junk), b"a@example.com:pw\n"),
            *(
                Case(f"explicit:regression.{i}", "POST", "/v1/leaks",
                     _bearer(LEAK_TOKEN, json_type), body)
                for i, (where, _why, body, _opts, _status) in enumerate(REGRESSIONS)
                if where == "leaks"
            ),
        ]  # fmt: skip
    if name in DOOR_REQUESTS:
        method, path, headers, body = DOOR_REQUESTS[name]()
        return [
            Case("explicit:expect_bytes", method, path, [*headers, expect_bytes], body),
            Case("explicit:expect_unknown", method, path, [*headers, expect_junk], body),
        ]
    path = f"/{name}"
    return [
        Case("explicit:expect_bytes", "GET", path, [expect_bytes]),
        Case("explicit:expect_unknown", "GET", path, [expect_junk]),
    ]


# ----------------------------------------------------------------------- lifecycle door cases


def door_operation(method: str, path: str, error_keys: tuple[str, ...]) -> Operation:
    return replace(operation(method, path), error_keys=error_keys)


HOOK_GET_OP = operation("GET", "/v1/okta/event-hooks")
HOOK_POST_OP = operation("POST", "/v1/okta/event-hooks")
SSF_OP = door_operation("POST", "/ssf/push/{transmitter}", ("err", "description"))
#: SCIM is not in docs/openapi.yaml (RFC 7644 is its spec): the answers RFC 7644 §3.12 lists,
#: and 415 for a body that is not JSON by its Content-Type.
SCIM_STATUSES = frozenset({200, 201, 204, 400, 401, 403, 404, 409, 412, 413, 415, 429, 501, 503})
SCIM_OP = Operation("*", "/scim/v2", SCIM_STATUSES, {}, {}, error_keys=("status", "detail"))


def _std_sign(
    body: bytes, msg_id: str, ts: int | None = None, secret: str = STANDARD_SECRET
) -> bytes:
    return standard_webhooks.sign(secret, msg_id, body, ts)[
        standard_webhooks.SIGNATURE_HEADER
    ].encode()


def standard_headers(g: Gen, body: bytes, msg_id: str) -> tuple[str, list[tuple[str, bytes]]]:
    """Standard Webhooks headers on ``body``, mostly wrong: (variant, headers)."""
    now = int(time.time())
    good = _std_sign(body, msg_id, now)
    sig = good.split(b",", 1)[1]
    variant = g.pick([
        "good", "good", "wrong_secret", "stale", "future", "ts_text", "ts_huge", "ts_float",
        "no_id", "odd_id", "no_ts", "no_sig", "v1a", "no_comma", "several_one_good",
        "several_bad", "not_base64", "non_ascii", "long", "both_schemes", "other_body",
        "spaces", "empty",
    ])  # fmt: skip
    ident = msg_id.encode()
    stamp = str(now).encode()
    sig_header = good
    if variant == "wrong_secret":
        other = "whsec_" + base64.b64encode(b"not-the-secret").decode()
        sig_header = _std_sign(body, msg_id, now, other)
    elif variant == "stale":
        stamp = str(now - 301 - g.r.randint(0, 10**6)).encode()
        sig_header = _std_sign(body, msg_id, int(stamp))
    elif variant == "future":
        stamp = str(now + 301 + g.r.randint(0, 10**6)).encode()
        sig_header = _std_sign(body, msg_id, int(stamp))
    elif variant == "ts_text":
        stamp = g.pick([b"abc", b"", b"1e9", b"\xc2\xb2", b"0x10", b"-1", b" "])
    elif variant == "ts_huge":
        stamp = b"1" + b"0" * g.pick([20, 309, 400, 4000])
    elif variant == "ts_float":
        stamp = b"%d.5" % now
    elif variant == "no_id":
        ident = b""
    elif variant == "odd_id":
        ident = g.odd_ident().encode("utf-8", "replace")[:300]
        ident = bytes(b for b in ident if b >= 0x20 and b != 0x7F)
    elif variant == "v1a":
        sig_header = b"v1a," + sig
    elif variant == "no_comma":
        sig_header = b"v1" + sig
    elif variant == "several_one_good":
        sig_header = b"v1,AAAA v2,xyz " + good + b" v1,"
    elif variant == "several_bad":
        sig_header = b" ".join(b"v1," + base64.b64encode(g.r.randbytes(32)) for _ in range(5))
    elif variant == "not_base64":
        sig_header = b"v1,!!!not base64###"
    elif variant == "non_ascii":
        sig_header = b"v1," + bytes(g.r.randrange(0x80, 0x100) for _ in range(44))
    elif variant == "long":
        sig_header = good + b" v1," + b"A" * 7000
    elif variant == "other_body":
        sig_header = _std_sign(body + b" ", msg_id, now)
    elif variant == "spaces":
        sig_header = b"  " + good + b"  "
    elif variant == "empty":
        sig_header = b""
    headers = []
    if variant != "no_id":
        headers.append(("webhook-id", ident))
    if variant != "no_ts":
        headers.append(("webhook-timestamp", stamp))
    if variant != "no_sig":
        headers.append(("webhook-signature", sig_header))
    if variant == "both_schemes":
        headers.append((SIGNATURE_HEADER, sign(HR_SECRET, body).encode()))
    return variant, headers


STANDARD_KINDS = [*["valid"] * 3, *["mutated"] * 4, *["signature"] * 6, *["raw"] * 2,
                  "oversize", "broker_down", "chunked", "malformed"]  # fmt: skip


def standard_case(kind: str, g: Gen) -> Case:
    """POST /v1/hr/events signed with Standard Webhooks: the webhook-id is the event id."""
    target = "/v1/hr/events"
    if kind == "malformed":
        return malformed_case(g, "malformed", "POST", target)
    event = hr_event(g)
    msg_id = f"msg_{g.ident(24)}" if not g.chance(0.2) else f"msg_fz-dup-{g.r.randrange(6)}"
    if g.chance(0.5):
        event.pop("event_id")
    elif g.chance(0.7):
        event["event_id"] = msg_id
    variant = ""
    if kind == "mutated":
        variant, event = hr_mutation(g, event)
        body = encode(event, g.r)
    elif kind == "raw":
        variant, body = g.raw_body()
    elif kind == "oversize":
        body = encode({**event, "source": "x" * g.r.randint(65536, 70000)})
    else:
        body = encode(event, g.r)
    if kind == "signature":
        variant, headers = standard_headers(g, body, msg_id)
    else:
        now = int(time.time())
        headers = [
            ("webhook-id", msg_id.encode()),
            ("webhook-timestamp", str(now).encode()),
            ("webhook-signature", _std_sign(body, msg_id, now)),
        ]
    headers.append(("Content-Type", b"application/json"))
    case = Case(f"{kind}:{variant}" if variant else kind, "POST", target, headers, body)
    return finish(case, kind, body, g)


HOOK_LIFECYCLE = [
    "user.lifecycle.deactivate", "user.lifecycle.suspend", "user.lifecycle.unsuspend",
    "user.lifecycle.reactivate", "user.lifecycle.delete.initiated", "user.account.lock",
    "user.mfa.factor.reset_all", "user.session.start", "group.user_membership.add",
]  # fmt: skip


def hook_event(g: Gen) -> dict[str, Any]:
    """A System Log event as an Event Hook delivers it: a lifecycle one about a User."""
    event = okta_event(g)
    event["eventType"] = g.pick(HOOK_LIFECYCLE)
    if g.chance(0.2):
        event["uuid"] = f"fz-dup-{g.r.randrange(6)}"
    event["target"] = [
        {"id": "00u" + g.ident(12), "type": "User", "alternateId": g.email(),
         "displayName": g.odd_text()},
    ]  # fmt: skip
    return event


def hook_body(g: Gen, events: list[Any]) -> dict[str, Any]:
    return {
        "eventType": "com.okta.event_hook",
        "eventTypeVersion": "1.0",
        "cloudEventsVersion": "0.1",
        "source": "https://example.okta.com/api/v1/eventHooks/who8ze1",
        "eventId": g.ident(36),
        "eventTime": g.now_iso(),
        "contentType": "application/json",
        "data": {"events": events},
    }


def secret_variant(g: Gen, name: str, secret: str) -> tuple[str, list[tuple[str, bytes]]]:
    """A shared-secret header (the hook's ``Authorization``), mostly wrong."""
    tok = secret.encode()
    variant = g.pick(["missing", "empty", "wrong", "bearer", "padded", "prefix", "suffix",
                      "unicode", "latin1", "long", "two_headers", "non_ascii"])  # fmt: skip
    values = {
        "empty": b"", "wrong": g.ident(30).encode(), "bearer": b"Bearer " + tok,
        "padded": b"  " + tok + b"  ",  # accepted: compared stripped
        "prefix": tok[:-1], "suffix": tok + b"x", "unicode": "tökén-😀".encode(),
        "latin1": "tökén".encode("latin-1"), "long": b"a" * 7000,
        "non_ascii": bytes(g.r.randrange(0x80, 0x100) for _ in range(8)),
    }  # fmt: skip
    if variant == "missing":
        return variant, []
    if variant == "two_headers":
        return variant, [(name, b"wrong"), (name, tok)]
    return variant, [(name, values[variant])]


HOOK_KINDS = [*["valid"] * 3, *["mutated"] * 5, *["raw"] * 2, "auth", "auth", "headers",
              "many", "oversize", "broker_down", "chunked", "malformed"]  # fmt: skip


def hook_case(kind: str, g: Gen) -> Case:
    """POST /v1/okta/event-hooks: batches of lifecycle events, mutated, raw, too many."""
    target = "/v1/okta/event-hooks"
    if kind == "malformed":
        return malformed_case(g, "malformed", "POST", target)
    variant = ""
    events = [hook_event(g) for _ in range(g.r.randint(0, 4))]
    if kind == "mutated":
        if g.chance(0.6):
            mutated = g.mutate(hook_body(g, events), g.r.randint(1, 4))
        else:
            mutated = hook_body(g, [g.mutate(e, g.r.randint(1, 3)) for e in events])
        body = encode(mutated, g.r)
    elif kind == "raw":
        variant, body = g.raw_body()
    elif kind == "many":
        body = encode(hook_body(g, [{"uuid": str(i)} for i in range(g.pick([1001, 5000]))]))
    elif kind == "oversize":
        body = encode(hook_body(g, [{"x": "x" * (FUZZ_LIMITS["max_batch"] + 1)}]))
    else:
        body = encode(hook_body(g, events), g.r)
    headers: list[tuple[str, bytes]] = []
    wire = body
    if kind == "auth":
        variant, headers = secret_variant(g, "Authorization", HOOK_SECRET)
    else:
        headers.append(("Authorization", HOOK_SECRET.encode()))
    if kind == "headers":
        variant, extra, wire = header_variant(g, body)
        headers.extend(extra)
    else:
        headers.append(("Content-Type", b"application/json"))
    case = Case(f"{kind}:{variant}" if variant else kind, "POST", target, headers, wire)
    return finish(case, kind, body, g)


HOOK_VERIFY_KINDS = ["valid", "odd", "odd", "missing", "long", "auth", "auth", "malformed"]


def hook_verify_case(kind: str, g: Gen) -> Case:
    """GET /v1/okta/event-hooks: the one-time verification with odd challenges."""
    target = "/v1/okta/event-hooks"
    if kind == "malformed":
        return malformed_case(g, "malformed", "GET", target)
    variant = ""
    headers: list[tuple[str, bytes]] = []
    if kind == "auth":
        variant, headers = secret_variant(g, "Authorization", HOOK_SECRET)
    else:
        headers.append(("Authorization", HOOK_SECRET.encode()))
    challenge = {"valid": g.ident(40).encode(), "odd": g.header_value(), "long": b"c" * 5000}
    if kind in challenge:
        headers.append(("X-Okta-Verification-Challenge", challenge[kind]))
    elif kind == "auth":
        headers.append(("X-Okta-Verification-Challenge", b"fuzz-challenge"))
    return Case(f"{kind}:{variant}" if variant else kind, "GET", target, headers)


def scim_user(g: Gen) -> dict[str, Any]:
    """A SCIM User as Okta and Entra send it (RFC 7643 §4.1)."""
    email = g.email()
    user: dict[str, Any] = {
        "schemas": [SCIM_USER],
        "userName": email,
        "externalId": g.pick(["E1001", g.ident(12), "00u" + g.ident(12)]),
        "name": {"givenName": g.odd_text()[:40], "familyName": g.odd_text()[:40]},
        "displayName": g.odd_text()[:80],
        "emails": [{"value": email, "type": "work", "primary": True}],
        "active": g.pick([True, False, "False", "true"]),
    }
    if g.chance(0.3):
        user["id"] = g.pick(SCIM_IDS)
    return user


def scim_patch(g: Gen) -> dict[str, Any]:
    """PatchOp in the Okta and Entra dialects (path-less values, "False" strings)."""
    op = g.pick(["replace", "Replace", "add", "Add", "remove", "Remove", "move", "", None])
    path = g.pick([None, "active", "userName", "emails", 'emails[type eq "work"].value',
                   "name.givenName", "externalId", "displayName", "members", "emails[",
                   "urn:ietf:params:scim:schemas:core:2.0:User:active", "a.b.c.d", ""])  # fmt: skip
    value = g.pick([False, True, "False", "True", "false", None, {"active": False},
                    {"active": "False", "displayName": g.odd_text()}, [{"value": g.email()}],
                    g.odd_text(), g.junk()])  # fmt: skip
    operation: dict[str, Any] = {"op": op, "value": value}
    if path is not None:
        operation["path"] = path
    return {"schemas": [SCIM_PATCH], "Operations": [operation] * g.r.randint(1, 3)}


SCIM_FILTERS = [
    'userName eq "{e}"', 'externalId eq "{i}"', 'userName sw "a"', 'userName eq {e}',
    'userName eq "', "userName", 'userName eq "a" and active eq true', 'emails[type eq "work"]',
    'emails.value eq "{e}"', 'not (userName eq "a")', '(((((userName eq "a")))))', "()",
    'userName eq "\\u0000"', 'userName eq "a" or ' * 50 + 'userName eq "b"', "[", "]", '"',
    'meta.lastModified gt "2011-05-13T04:42:34Z"', 'userName pr', 'x eq 1', "userName eq null",
    '(' * 300 + 'userName eq "a"' + ')' * 300, 'userName eq "{t}"',
]  # fmt: skip

SCIM_KINDS = [*["filter"] * 4, *["create"] * 3, *["patch"] * 4, "put", "put", "get", "delete",
              "meta", "search", "raw", "raw", "auth", "headers", "oversize", "broker_down",
              "malformed"]  # fmt: skip


def scim_case(kind: str, g: Gen) -> Case:
    """The SCIM resource endpoints with hostile filters, bodies and ids."""
    if kind == "malformed":
        return malformed_case(g, "malformed", "GET", "/scim/v2/Users")
    uid = g.pick(SCIM_IDS) if g.chance(0.7) else quote(g.odd_ident(), safe="")
    method, target, body, variant = "GET", "/scim/v2/Users", b"", ""
    if kind == "filter":
        raw = g.pick(SCIM_FILTERS).format(e=g.email(), i=g.ident(12), t=g.text)
        params = [f"filter={quote(raw, safe='')}"]
        for name in ("startIndex", "count", "attributes", "excludedAttributes", "sortBy"):
            if g.chance(0.3):
                params.append(f"{name}={g.query_value()}")
        target = f"/scim/v2/Users?{'&'.join(params)}"[:MAX_TARGET]
    elif kind in ("create", "put", "oversize", "broker_down"):
        user = scim_user(g)
        if g.chance(0.6):
            variant = f"mutated.{g.r.randint(1, 4)}"
            user = g.mutate(user, int(variant.split(".")[1]))
        if kind == "oversize":
            user["displayName"] = "x" * 70000
        method = "PUT" if kind == "put" else "POST"
        target = f"/scim/v2/Users/{uid}" if kind == "put" else "/scim/v2/Users"
        if kind == "broker_down":  # a deprovisioning: the HR path's contract answers 503
            method, target = "PATCH", f"/scim/v2/Users/{g.pick(SCIM_IDS)}"
            user = {"schemas": [SCIM_PATCH],
                    "Operations": [{"op": "replace", "value": {"active": False}}]}  # fmt: skip
        body = encode(user, g.r)
    elif kind == "patch":
        patch = scim_patch(g)
        if g.chance(0.4):
            variant = "mutated"
            patch = g.mutate(patch, g.r.randint(1, 3))
        method, target, body = "PATCH", f"/scim/v2/Users/{uid}", encode(patch, g.r)
    elif kind in ("get", "delete"):
        method, target = kind.upper(), f"/scim/v2/Users/{uid}"
        if g.chance(0.3):
            target += "?attributes=" + g.query_value()
    elif kind == "meta":
        target = g.pick(["/scim/v2/ServiceProviderConfig", "/scim/v2/ResourceTypes",
                         "/scim/v2/Schemas", f"/scim/v2/Schemas/{quote(g.odd_text(), safe='')}",
                         f"/scim/v2/ResourceTypes/{quote(g.odd_text(), safe='')}",
                         "/scim/v2/Groups", "/scim/v2/Bulk", "/scim/v2/Me"])  # fmt: skip
    elif kind == "search":
        method, target = "POST", g.pick(["/scim/v2/Users/.search", "/scim/v2/.search"])
        search = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                  "filter": g.pick(SCIM_FILTERS).format(e=g.email(), i="x", t=g.text),
                  "startIndex": g.junk(), "count": g.junk()}  # fmt: skip
        body = encode(g.mutate(search, 1) if g.chance(0.5) else search, g.r)
    elif kind == "raw":
        method = g.pick(["POST", "PATCH", "PUT"])
        target = "/scim/v2/Users" if method == "POST" else f"/scim/v2/Users/{uid}"
        variant, body = g.raw_body()
    else:  # auth, headers
        method, target, body = "POST", "/scim/v2/Users", encode(scim_user(g), g.r)
    headers: list[tuple[str, bytes]] = []
    if kind == "auth":
        variant, headers = bearer_variant(g, SCIM_TOKEN)
    else:
        headers.append(("Authorization", b"Bearer " + SCIM_TOKEN.encode()))
    if kind == "headers":
        hv, extra, body = header_variant(g, body)
        variant = hv
        headers.extend(extra)
    elif body:
        headers.append(("Content-Type", g.pick([b"application/scim+json", b"application/json"])))
    case = Case(f"{kind}:{variant}" if variant else kind, method, target, headers, body)
    return finish(case, kind, body, g)


SSF_EVENTS = [
    "https://schemas.openid.net/secevent/risc/event-type/account-disabled",
    "https://schemas.openid.net/secevent/risc/event-type/account-purged",
    "https://schemas.openid.net/secevent/risc/event-type/credential-compromise",
    "https://schemas.openid.net/secevent/risc/event-type/identifier-changed",
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked",
    "https://schemas.openid.net/secevent/caep/event-type/credential-change",
    "https://schemas.openid.net/secevent/caep/event-type/assurance-level-change",
    "https://schemas.openid.net/secevent/ssf/event-type/verification",
    "https://example.com/not-an-event", "",
]  # fmt: skip


def ssf_subject(g: Gen) -> Any:
    email = g.email() if g.chance(0.7) else g.odd_email()
    return g.pick([
        {"format": "email", "email": email},
        {"format": "iss_sub", "iss": SSF_ISSUER, "sub": "00u" + g.ident(12)},
        {"format": "opaque", "id": g.odd_ident()},
        {"format": "phone_number", "phone_number": g.pick(NUMBERISH)},
        {"format": "complex", "user": {"format": "email", "email": email}},
        {"format": "aliases", "identifiers": [{"format": "email", "email": email}, g.junk()]},
        {"format": g.odd_text()}, g.junk(),
    ])  # fmt: skip


def ssf_claims(g: Gen) -> dict[str, Any]:
    event = g.pick(SSF_EVENTS)
    payload: dict[str, Any] = {}
    if "identifier-changed" in event:
        payload["new-value"] = g.email() if g.chance(0.7) else g.junk()
    elif "verification" in event:
        payload["state"] = g.odd_text()
    elif "assurance" in event:
        payload.update(namespace="NIST-AAL", current_level=g.junk(), previous_level="nist-aal2",
                       change_direction=g.pick(["decrease", "increase", g.junk()]))  # fmt: skip
    elif g.chance(0.3):
        payload["reason_admin"] = {"en": g.odd_text()}
    claims: dict[str, Any] = {
        "iss": SSF_ISSUER,
        "aud": SSF_AUD if g.chance(0.8) else [SSF_AUD, "https://other.example"],
        "iat": int(time.time()) - g.r.randint(0, 60),
        "jti": g.ident(32) if not g.chance(0.2) else f"fz-dup-{g.r.randrange(6)}",
        "events": {event: payload},
    }
    if g.chance(0.7):
        claims["sub_id"] = ssf_subject(g)
    else:
        payload["subject"] = ssf_subject(g)
    return claims


def ssf_sign(claims: Any, headers: dict[str, Any] | None = None) -> bytes:
    """A compact JWS over any JSON claims (PyJWT's api_jws signs bytes; jwt.encode wants
    a dict)."""
    head = {"typ": "secevent+jwt", "kid": SSF_KID, **(headers or {})}
    return jwt.api_jws.encode(encode(claims), SSF_KEY, algorithm="ES256", headers=head).encode()


def _b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def ssf_token(g: Gen) -> tuple[str, bytes]:
    """A hostile compact JWS: (variant, token)."""
    good = ssf_sign(ssf_claims(g))
    head, payload, sig = good.split(b".")
    variant = g.pick([
        "alg_none", "alg_hs256", "alg_junk", "no_kid", "unknown_kid", "kid_junk", "typ_other",
        "head_not_json", "head_not_object", "head_huge", "payload_not_json", "payload_array",
        "bad_sig", "no_sig", "two_dots", "four_parts", "not_base64", "padding", "empty",
        "spaces", "deep_payload", "claims_junk",
    ])  # fmt: skip
    if variant == "alg_none":
        return variant, _b64(b'{"alg":"none","typ":"secevent+jwt"}') + b"." + payload + b"."
    if variant == "alg_hs256":
        header = {"alg": "HS256", "typ": "secevent+jwt", "kid": SSF_KID}
        return variant, _b64(orjson.dumps(header)) + b"." + payload + b"." + _b64(g.r.randbytes(32))
    if variant in ("alg_junk", "kid_junk", "typ_other", "no_kid", "unknown_kid"):
        header = {"alg": "ES256", "typ": "secevent+jwt", "kid": SSF_KID}
        if variant == "alg_junk":
            header["alg"] = g.junk()
        elif variant == "kid_junk":
            header["kid"] = g.junk()
        elif variant == "typ_other":
            header["typ"] = g.pick(["JWT", "", None, 1, "secevent+jwt ", g.odd_text()])
        elif variant == "no_kid":
            del header["kid"]
        else:
            header["kid"] = g.odd_ident()
        return variant, _b64(encode(header)) + b"." + payload + b"." + sig
    if variant == "head_not_json":
        return variant, _b64(g.blob) + b"." + payload + b"." + sig
    if variant == "head_not_object":
        return variant, _b64(encode(g.pick([[], 1, "s", None]))) + b"." + payload + b"." + sig
    if variant == "head_huge":
        return variant, _b64(
            b'{"alg":"ES256","x":"' + b"a" * 20000 + b'"}'
        ) + b"." + payload + b"." + sig
    if variant == "payload_not_json":
        return variant, ssf_sign_raw(g.blob)
    if variant == "payload_array":
        return variant, ssf_sign([ssf_claims(g)])
    if variant == "bad_sig":
        return variant, head + b"." + payload + b"." + _b64(g.r.randbytes(64))
    if variant == "no_sig":
        return variant, head + b"." + payload + b"."
    if variant == "two_dots":
        return variant, head + b".." + sig
    if variant == "four_parts":
        return variant, good + b"." + sig
    if variant == "not_base64":
        return variant, head + b".!!*&^." + sig
    if variant == "padding":
        return variant, head + b"==." + payload + b"=." + sig
    if variant == "empty":
        return variant, b""
    if variant == "spaces":
        return variant, b"  " + head + b" . " + payload + b"." + sig + b"\r\n"
    if variant == "deep_payload":
        depth = g.pick([255, 1025, 10000])
        return variant, ssf_sign_raw(b'{"a":' * depth + b"1" + b"}" * depth)
    claims = g.mutate(ssf_claims(g), g.r.randint(1, 4))
    return variant, ssf_sign(claims)


def ssf_sign_raw(payload: bytes) -> bytes:
    return jwt.api_jws.encode(payload, SSF_KEY, algorithm="ES256",
                              headers={"typ": "secevent+jwt", "kid": SSF_KID}).encode()  # fmt: skip


SSF_KINDS = [*["valid"] * 3, *["claims"] * 4, *["token"] * 6, "auth", "auth", "ctype", "path",
             "raw", "oversize", "broker_down", "chunked", "malformed"]  # fmt: skip


def ssf_case(kind: str, g: Gen) -> Case:
    """POST /ssf/push/{transmitter}: signed SETs (valid and odd claims), hostile JWS."""
    target = "/ssf/push/idp"
    if kind == "malformed":
        return malformed_case(g, "malformed", "POST", target)
    variant = ""
    if kind == "claims":
        variant = "mutated"
        body = ssf_sign(g.mutate(ssf_claims(g), g.r.randint(1, 4)))
    elif kind == "token":
        variant, body = ssf_token(g)
    elif kind == "raw":
        variant, body = g.raw_body()
    elif kind == "oversize":
        claims = ssf_claims(g)
        claims["pad"] = "x" * (SSF_MAX_BYTES + g.r.randint(1, 5000))
        body = ssf_sign(claims)
    else:
        body = ssf_sign(ssf_claims(g))
    headers: list[tuple[str, bytes]] = []
    if kind == "auth":
        variant, headers = bearer_variant(g, SSF_TOKEN)
    else:
        headers.append(("Authorization", b"Bearer " + SSF_TOKEN.encode()))
    if kind == "ctype":
        ctype = g.pick([b"application/jwt", b"application/json", b"", b"text/plain",
                        b"application/secevent+jwt; charset=utf-8", b"APPLICATION/SECEVENT+JWT",
                        g.header_value()])  # fmt: skip
        variant = ctype.decode("latin-1")[:30]
        headers.append(("Content-Type", ctype))
    else:
        headers.append(("Content-Type", b"application/secevent+jwt"))
    if kind == "path":
        # a name the route matches (one path segment, not empty): an unknown stream's 404
        name = quote(g.pick(["other", "IDP", "idp ", g.odd_text() or "x", "..", "%"]), safe="")
        target = f"/ssf/push/{name}"
    case = Case(f"{kind}:{variant}" if variant else kind, "POST", target, headers, body)
    return finish(case, kind, body, g)


def _standard_request() -> tuple[str, str, list[tuple[str, bytes]], bytes]:
    now = int(time.time())
    headers = [("webhook-id", b"msg_fz-explicit"), ("webhook-timestamp", str(now).encode()),
               ("webhook-signature", _std_sign(HR_VALID, "msg_fz-explicit", now)),
               ("Content-Type", b"application/json")]  # fmt: skip
    return "POST", "/v1/hr/events", headers, HR_VALID


#: One good request per lifecycle door, for the explicit cases: ``() -> (method, target,
#: headers, body)`` (a function: signatures carry the time).
DOOR_REQUESTS: dict[str, Callable[[], tuple[str, str, list[tuple[str, bytes]], bytes]]] = {
    "standard": _standard_request,
    "hook": lambda: ("POST", "/v1/okta/event-hooks",
                     [("Authorization", HOOK_SECRET.encode()),
                      ("Content-Type", b"application/json")], b'{"data":{"events":[]}}'),
    "hook_verify": lambda: ("GET", "/v1/okta/event-hooks",
                            [("Authorization", HOOK_SECRET.encode()),
                             ("X-Okta-Verification-Challenge", b"c")], b""),
    "scim": lambda: ("GET", "/scim/v2/Users/alice",
                     [("Authorization", b"Bearer " + SCIM_TOKEN.encode())], b""),
    "ssf": lambda: ("POST", "/ssf/push/idp",
                    [("Authorization", b"Bearer " + SSF_TOKEN.encode()),
                     ("Content-Type", b"application/secevent+jwt")],
                    ssf_sign({"iss": SSF_ISSUER, "aud": SSF_AUD, "iat": int(time.time()),
                              "jti": "fz-explicit", "events": {SSF_EVENTS[7]: {}}})),
}  # fmt: skip


# ------------------------------------------------------------------------------ running


@dataclass
class Endpoint:
    name: str
    op: Operation
    kinds: list[str]
    build: Callable[[str, Gen], Case]
    #: The text comes from the seed, not from hypothesis (the cheap GET endpoints).
    lite: bool = False


ENDPOINTS: dict[str, Endpoint] = {
    "hr": Endpoint("POST /v1/hr/events", HR_OP, HR_KINDS, hr_case),
    "auth": Endpoint("POST /v1/auth/events", AUTH_OP, AUTH_KINDS, auth_case),
    "leaks": Endpoint("POST /v1/leaks", LEAKS_OP, LEAK_KINDS, leak_case),
    "standard": Endpoint(
        "POST /v1/hr/events (Standard Webhooks)", HR_OP, STANDARD_KINDS, standard_case
    ),
    "hook": Endpoint("POST /v1/okta/event-hooks", HOOK_POST_OP, HOOK_KINDS, hook_case),
    "hook_verify": Endpoint(
        "GET /v1/okta/event-hooks", HOOK_GET_OP, HOOK_VERIFY_KINDS, hook_verify_case
    ),
    "scim": Endpoint("/scim/v2 (Users, filters, PATCH)", SCIM_OP, SCIM_KINDS, scim_case),
    "ssf": Endpoint("POST /ssf/push/{transmitter}", SSF_OP, SSF_KINDS, ssf_case),
    **{
        path.strip("/"): Endpoint(
            f"GET {path}",
            op,
            GET_KINDS,
            lambda kind, g, path=path: get_case(path, kind, g),
            lite=True,
        )
        for path, op in GET_OPS.items()
    },
}


class ServerErrors(logging.Handler):
    """What the server logged while fuzzed: every line is dropped (nothing printed, memory
    flat over 100k cases), but the last exception logged is kept as its type and innermost
    frame (:attr:`last`) and message (:attr:`detail`). As a structlog processor it sees the
    ``http.unhandled`` of ``streams.runtime.web.errors_as_json`` (in the server's thread, inside the
    ``except``); as a logging handler on ``aiohttp.server``, the errors aiohttp answers with
    a 500 itself, outside the application's middleware."""

    def __init__(self) -> None:
        super().__init__()
        self.last = ""
        self.detail = ""

    def note(self, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            return
        frames = traceback.extract_tb(tb)
        ours = [f for f in frames if f.filename.startswith(str(REPO))]
        ours = [f for f in ours if "/.venv/" not in f.filename]
        inner = (ours or frames or [None])[-1]
        where = ""
        if inner is not None:
            name = inner.filename.split("site-packages/")[-1].removeprefix(f"{REPO}/")
            where = f" at {name}:{inner.lineno} ({inner.name})"
        self.last = f"{type(exc).__name__}{where}"
        self.detail = str(exc).strip()[:200]

    def __call__(self, _logger: Any, _method: str, event: Any) -> Any:
        if event.get("exc_info"):
            _type, exc, tb = sys.exc_info()
            self.note(exc, tb)
        raise structlog.DropEvent

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.note(record.exc_info[1], record.exc_info[2])


@contextmanager
def server_logs() -> Iterator[ServerErrors]:
    """Route structlog through :class:`ServerErrors` (as ``structlog.testing.capture_logs``
    routes it through its list) and ``aiohttp.server``'s log to it; restored after."""
    errors = ServerErrors()
    processors = structlog.get_config()["processors"]
    saved = processors.copy()
    aiohttp_log = logging.getLogger("aiohttp.server")
    propagate = aiohttp_log.propagate
    try:
        processors.clear()
        processors.append(errors)
        structlog.configure(processors=processors)
        aiohttp_log.addHandler(errors)
        aiohttp_log.propagate = False
        yield errors
    finally:
        aiohttp_log.propagate = propagate
        aiohttp_log.removeHandler(errors)
        processors.clear()
        processors.extend(saved)
        structlog.configure(processors=processors)


def send_case(edge: Edge, client: Client, case: Case, errors: ServerErrors) -> Answer:
    edge.publisher.down = case.broker_down
    errors.last = errors.detail = ""
    try:
        answer = client.send(case)
    finally:
        edge.publisher.down = False
        edge.publisher.records.clear()  # memory stays flat over 100k cases
    answer.cause, answer.detail = errors.last, errors.detail
    return answer


def fuzz(
    edge: Edge, errors: ServerErrors, name: str, examples: int, *, seed: int | None = None
) -> Problems:
    """Run ``examples`` generated cases against one endpoint; every problem is collected.
    Without ``seed`` the run is derandomized (the same cases every time)."""
    endpoint = ENDPOINTS[name]
    problems = Problems(endpoint.name)
    client = Client(edge.url)
    wanted = [*Phase] if SHRINK else [Phase.explicit, Phase.generate]

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=seed is None,
        phases=wanted,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        kind=st.sampled_from(endpoint.kinds),
        seed=st.integers(0, 2**64 - 1),
        text=st.just("") if endpoint.lite else st.text(max_size=24),
    )
    def run(kind: str, seed: int, text: str) -> None:
        case = endpoint.build(kind, Gen(seed, text, derive_text=endpoint.lite))
        problems.generated += 1
        problems.check(endpoint.op, case, send_case(edge, client, case, errors))

    if seed is not None:
        run = hypothesis_seed(seed)(run)
    try:
        for case in explicit_cases(name):
            problems.check(endpoint.op, case, send_case(edge, client, case, errors))
        run()
    finally:
        client.close()
    return problems


def run_fuzz(tmp_path: Path, name: str, examples: int = FUZZ_EXAMPLES) -> Problems:
    with server_logs() as errors, edge_server(tmp_path, **FUZZ_SERVER) as edge:
        return fuzz(edge, errors, name, examples)


def assert_clean(problems: Problems, examples: int) -> None:
    ran = problems.generated or problems.cases
    assert ran >= examples, f"only {ran} of {examples} cases ran"
    if problems.counts:
        pytest.fail(problems.report() + "\nstatuses: " + problems.summary(), pytrace=False)


# ------------------------------------------------------------------------------ the tests


@pytest.mark.slow
def test_fuzz_hr_events(tmp_path: Path) -> None:
    """POST /v1/hr/events: signed schema-valid and mutated events, signature variants, raw
    bodies, Content-Type/-Encoding variants, oversize and chunked bodies, broker down."""
    assert_clean(run_fuzz(tmp_path, "hr"), FUZZ_EXAMPLES)


@pytest.mark.slow
def test_fuzz_auth_events(tmp_path: Path) -> None:
    """POST /v1/auth/events: Okta/Entra/Google/generic payloads (valid, mutated, of another
    vendor) as array/object/NDJSON, Authorization and ?vendor= variants, raw bodies, gzip."""
    assert_clean(run_fuzz(tmp_path, "auth"), FUZZ_EXAMPLES)


@pytest.mark.slow
def test_fuzz_leaks(tmp_path: Path) -> None:
    """POST /v1/leaks: CSV/NDJSON/JSON/combo dumps with random principals (some in the
    registry), plain and gzipped (whole, truncated, corrupt), ?breach=/source=/format=,
    Authorization and Content-Type/-Encoding variants, raw bodies, deep nesting."""
    assert_clean(run_fuzz(tmp_path, "leaks"), FUZZ_EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["healthz", "readyz", "metrics"])
def test_fuzz_operational_endpoints(tmp_path: Path, name: str) -> None:
    """GET /healthz, /readyz, /metrics with random query strings, headers and bodies, and
    with the broker down (/readyz then answers 503)."""
    assert_clean(run_fuzz(tmp_path, name), FUZZ_EXAMPLES)


#: Cases per lifecycle door: a fifth of the ingest endpoints' count. These doors take little
#: traffic and their handlers cost more per case (SET signatures, SCIM validation).
DOOR_EXAMPLES = max(1, FUZZ_EXAMPLES // 5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["standard", "hook", "hook_verify", "scim", "ssf"])
def test_fuzz_lifecycle_doors(tmp_path: Path, name: str) -> None:
    """Standard Webhooks on POST /v1/hr/events (signature header variants), the Okta Event
    Hook (GET challenges, POST batches mutated, too many, oversize), SCIM (hostile filters,
    PATCH dialects, odd ids and bodies) and the SSF push endpoint (hostile JWS, odd claims,
    Content-Type and Authorization variants): never a 5xx but for the broker down, a
    documented status, and a 4xx body in the door's own error format."""
    assert_clean(run_fuzz(tmp_path, name, DOOR_EXAMPLES), DOOR_EXAMPLES)


THROTTLE_LIMIT = 20
CREDENTIALS = ["good", *["bad"] * 6]
#: Variants that authenticate (one good v1= among others, a later t=, a case-insensitive
#: scheme...) or that hit a server error of their own (the fuzz tests report those).
THROTTLE_HR_SKIPPED = frozenset({
    "several_v1_one_good", "edge_of_tolerance", "upper_hex", "empty_parts", "duplicate_t",
    "long", "t_huge", "two_headers",
})  # fmt: skip
THROTTLE_BEARER_SKIPPED = frozenset(
    {"lower_scheme", "padded", "two_headers", "non_ascii_bytes", "latin1"}
)


@pytest.mark.slow
def test_failed_authentication_is_throttled_never_5xx(tmp_path: Path) -> None:
    """The default guard (20 failures a minute, shared by the three ingest endpoints): a client
    that keeps failing gets 401 until the 20th failure, then 429 with Retry-After even with
    the right credential; a success before that starts the count again; an X-Forwarded-For
    (no trusted proxy) changes nothing. Never a 5xx. ACCESSGUARD_FUZZ_EXAMPLES / 50 sequences
    of 22-50 requests each (about 7,000 requests by default), a fresh guard per sequence."""
    problems = Problems("auth throttle")
    examples = max(50, FUZZ_EXAMPLES // 50)

    with server_logs() as errors, edge_server(tmp_path) as edge:
        client = Client(edge.url)

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(
            steps=st.lists(
                st.tuples(
                    st.sampled_from(["hr", "auth", "leaks"]),
                    st.sampled_from(CREDENTIALS),
                    st.integers(0, 2**32),
                ),
                min_size=THROTTLE_LIMIT + 2,
                max_size=2 * THROTTLE_LIMIT + 10,
            )
        )
        def run(steps: list[tuple[str, str, int]]) -> None:
            guard = AuthGuard(limit=THROTTLE_LIMIT, window=60.0, block=60.0)
            edge.hr.guard = edge.auth.guard = edge.leaks.guard = guard
            failures, blocked = 0, False
            for name, credential, seed in steps:
                case = throttle_case(name, credential == "good", Gen(seed))
                answer = send_case(edge, client, case, errors)
                op = ENDPOINTS[name].op
                problems.check(op, case, answer)
                expected = "429" if blocked else ("ok" if credential == "good" else "401")
                got = answer.status
                if expected == "429":
                    ok = got == 429 and answer.headers.get("retry-after", "").isdigit()
                elif expected == "401":
                    ok = got == 401
                else:
                    ok = got not in (401, 429) and 0 < got < 500
                if not ok:
                    what = f"expected {expected} after {failures} failure(s), got {got}"
                    key = (f"throttle:{name}.{credential}", got, what)
                    problems.counts[key] += 1
                    problems.samples.setdefault(key, case)
                if blocked:
                    continue
                if credential == "good":
                    failures = 0
                else:
                    failures += 1
                    blocked = failures >= THROTTLE_LIMIT

        try:
            run()
        finally:
            client.close()
    assert_clean(problems, examples * (THROTTLE_LIMIT + 2))


def throttle_case(name: str, good: bool, g: Gen) -> Case:
    """A small request to ``name`` with a right or a wrong credential (several kinds)."""
    forwarded = [("X-Forwarded-For", g.pick([b"203.0.113.9", b"10.0.0.1, 198.51.100.7"]))]
    if name == "hr":
        body = encode(hr_event(g))
        if good:
            headers = [(SIGNATURE_HEADER, sign(HR_SECRET, body).encode())]
            variant = "good"
        else:
            variant, headers = hr_signature_headers(g, body)
            while variant in THROTTLE_HR_SKIPPED:
                variant, headers = hr_signature_headers(g, body)
        ctype = b"application/json"
    else:
        token = AUTH_TOKEN if name == "auth" else LEAK_TOKEN
        if name == "auth":
            body, ctype = encode(generic_event(g)), b"application/json"
        else:
            body, ctype = f"{g.email()}:pw\n".encode(), b"text/plain"
        if good:
            variant, headers = "good", [("Authorization", b"Bearer " + token.encode())]
        else:
            variant, headers = bearer_variant(g, token)
            while variant in THROTTLE_BEARER_SKIPPED:
                variant, headers = bearer_variant(g, token)
    headers = [*headers, ("Content-Type", ctype)]
    if g.chance(0.3):
        headers.extend(forwarded)  # no trusted proxy: X-Forwarded-For never moves the count
    target = {"hr": "/v1/hr/events", "auth": "/v1/auth/events", "leaks": "/v1/leaks"}[name]
    return Case(f"throttle:{name}.{variant}", "POST", target, headers, body)


# ------------------------------------------------------------------------------ regressions
# Server errors the fuzzing found and that were fixed; each once through HTTP, unmarked (fast).


def _post(edge: Edge, client: Client, name: str, body: bytes, **kw: Any) -> Answer:
    if name == "hr":
        headers = [(SIGNATURE_HEADER, sign(HR_SECRET, body).encode())]
        target = "/v1/hr/events"
    else:
        token = AUTH_TOKEN if name == "auth" else LEAK_TOKEN
        headers = [("Authorization", b"Bearer " + token.encode())]
        vendor = kw.get("vendor", "generic")
        target = f"/v1/auth/events?vendor={vendor}" if name == "auth" else "/v1/leaks"
    headers.append(("Content-Type", kw.get("ctype", b"application/json")))
    return client.send(Case("regression", "POST", target, headers, body))


REGRESSIONS: list[tuple[str, str, bytes, dict[str, Any], int]] = [
    # (endpoint, why, body, options (vendor, ctype, a record's result), expected status)
    ("hr", "effective_at before year 1 in UTC (OverflowError in astimezone)",
     b'{"event_id":"e1","type":"terminated","employee_id":"E1","email":"a@b.c",'
     b'"effective_at":"0001-01-01T00:00:00+01:00","source":"x"}', {}, 400),
    ("hr", "effective_at past year 9999 in UTC",
     b'{"event_id":"e2","type":"terminated","employee_id":"E1","email":"a@b.c",'
     b'"effective_at":"9999-12-31T23:59:59-01:00","source":"x"}', {}, 400),
    ("auth", "generic time before year 1 in UTC",
     b'{"time":"0001-01-01T00:00:00+01:00","principal":"a@b.c","outcome":"success"}', {}, 200),
    ("auth", "okta published before year 1 in UTC",
     b'{"eventType":"user.session.start","actor":{"alternateId":"a@b.c"},'
     b'"published":"0001-01-01T00:00:00+01:00","outcome":{"result":"SUCCESS"}}',
     {"vendor": "okta"}, 200),
    ("auth", "entra errorCode '--5' (isdigit after lstrip, not an int)",
     b'{"userPrincipalName":"a@b.c","createdDateTime":"2024-01-01T00:00:00Z",'
     b'"status":{"errorCode":"--5"}}', {"vendor": "entra"}, 200),
    ("auth", "entra errorCode superscript two (a digit to isdigit, not to int)",
     '{"userPrincipalName":"a@b.c","createdDateTime":"2024-01-01T00:00:00Z",'
     '"status":{"errorCode":"²"}}'.encode(), {"vendor": "entra"}, 200),
    ("auth", "entra errorCode of 5000 digits (int() refuses over 4300)",
     b'{"userPrincipalName":"a@b.c","createdDateTime":"2024-01-01T00:00:00Z",'
     b'"status":{"errorCode":"' + b"9" * 5000 + b'"}}', {"vendor": "entra"}, 200),
    ("auth", "google login_timestamp superscript two",
     '{"id":{"time":"2024-01-01T00:00:00Z"},"actor":{"email":"a@b.c"},"events":[{"name":'
     '"login_success","parameters":[{"name":"login_timestamp","value":"²"}]}]}'.encode(),
     {"vendor": "google", "result": "accepted"}, 200),  # id.time stands in
    ("auth", "google login_timestamp of 5000 digits",
     b'{"id":{"time":"2024-01-01T00:00:00Z"},"actor":{"email":"a@b.c"},"events":[{"name":'
     b'"login_success","parameters":[{"name":"login_timestamp","value":"'
     + b"9" * 5000 + b'"}]}]}', {"vendor": "google", "result": "accepted"}, 200),
    ("auth", "a rejected record nested deeper than orjson writes (dead letter dump failed)",
     b'[{"x":' + b"[" * 400 + b"]" * 400 + b'},{"time":"2024-01-01T00:00:00Z",'
     b'"principal":"a@b.c","outcome":"success"}]', {}, 200),
    ("leaks", "breach_date before year 1 in UTC",
     b'[{"email":"a@example.com","breach_date":"0001-01-01T00:00:00+01:00"},'
     b'{"email":"b@example.com"}]', {}, 200),
]  # fmt: skip


@pytest.mark.parametrize(
    "regression", REGRESSIONS, ids=[f"{r[0]}-{i}" for i, r in enumerate(REGRESSIONS)]
)
def test_fixed_server_errors_stay_fixed(
    tmp_path: Path, regression: tuple[str, str, bytes, dict[str, Any], int]
) -> None:
    name, why, body, options, status = regression
    with server_logs(), edge_server(tmp_path) as edge:
        client = Client(edge.url)
        try:
            answer = _post(edge, client, name, body, **options)
        finally:
            client.close()
        dead = edge.publisher.on(TOPIC_AUTH + ".dlq")
    assert answer.status == status, (why, answer.status, answer.body[:300])
    data = orjson.loads(answer.body)
    if status == 200 and name in ("auth", "leaks"):
        result = options.get("result", "rejected")
        assert any(r["status"] == result for r in data["results"]), (why, data)
    if name == "auth" and b"[[[[" in body:
        deep = [v for _k, v in dead if v["index"] == 0]
        assert deep, dead
        assert deep[0]["value"] is None, deep
        assert deep[0]["value_dropped"], deep


#: Server errors the lifecycle doors' fuzzing found: (door, why, method, target, headers,
#: body, expected status). Each request is otherwise good (DOOR_REQUESTS).
DEEP_EVENT = b'{"data":{"events":[{"uuid":"u1","x":' + b"[" * 300 + b"]" * 300 + b"}]}}"
DOOR_REGRESSIONS: list[tuple[str, str, bytes | None, bytes | None, int]] = [
    # (door, why, Expect header, body instead of the good one, expected status)
    ("hook", "an event nested deeper than orjson writes (its content digest raised)",
     None, DEEP_EVENT, 200),
    ("ssf", "Expect not UTF-8 (aiohttp's default expect handler: 500)", b"\xff\xfe", None, 202),
    ("ssf", "an unknown Expect (aiohttp's default: a text/plain 417)", b"202-accepted", None, 202),
    ("scim", "Expect not UTF-8 on a SCIM route", b"\xff\xfe", None, 200),
    ("scim", "an unknown Expect on a SCIM route", b"202-accepted", None, 200),
]  # fmt: skip


@pytest.mark.parametrize(
    "regression", DOOR_REGRESSIONS, ids=[f"{r[0]}-{i}" for i, r in enumerate(DOOR_REGRESSIONS)]
)
def test_fixed_door_server_errors_stay_fixed(
    tmp_path: Path, regression: tuple[str, str, bytes | None, bytes | None, int]
) -> None:
    """Each request that once got a 500 (or a non-JSON 417) from a lifecycle door now gets
    the door's own answer."""
    name, why, expect, body, status = regression
    method, target, headers, good = DOOR_REQUESTS[name]()
    if expect is not None:
        headers.append(("Expect", expect))
    with server_logs(), edge_server(tmp_path, **FUZZ_SERVER) as edge:
        client = Client(edge.url)
        try:
            answer = client.send(Case("regression", method, target, headers, body or good))
        finally:
            client.close()
    assert answer.status == status, (why, answer.status, answer.body[:300])
    if name == "hook":
        [result] = orjson.loads(answer.body)["results"]
        assert result["result"] == "rejected", result
