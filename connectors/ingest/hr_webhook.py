"""HR source: ``POST /v1/hr/events``, signed like Stripe webhooks.

Header ``X-AccessGuard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``.
Several ``v1=`` values are accepted (secret rotation on the sender's side). The comparison is
constant-time, the timestamp must be within the tolerance (replay protection), and a repeated
``event_id`` is acknowledged without being published again (webhook senders retry for days),
also across restarts (:class:`SeenEvents`). A client that keeps failing the signature check
is throttled (:class:`connectors.ingest.edge.AuthGuard`).

A 202 is returned only after the event is in the journal (fsync) and acknowledged by the
broker; when either is unavailable the answer is 503 with Retry-After, so the sender retries.
An event journaled but not acknowledged by the broker is marked withdrawn in the journal
(:meth:`HrWebhook._withdraw`), so an embedded-stack restart does not run what was refused.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import orjson
import structlog
from aiohttp import web

from connectors.base.health import SourceHealth
from connectors.ingest.edge import AuthGuard, read_body
from streams.bus.journal import WITHDRAWN, Journal
from streams.bus.views import Publisher
from streams.model.records import HrEvent, subject_hash
from streams.support import metrics
from streams.support.errors import BrokerError, JournalError, ValidationError
from streams.support.secrets import Secret

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-AccessGuard-Signature"
SOURCE = "hr_webhook"
#: SignatureError.metric -> accessguard_auth_failures_total reason.
_AUTH_REASON = {"missing_signature": "missing", "stale_signature": "stale"}


class SignatureError(Exception):
    def __init__(self, reason: str, metric: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.metric = metric


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The header value a sender puts on ``body`` (used by `accessguard hr send` and tests)."""
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def verify_signature(
    secret: str, header: str | None, body: bytes, *, now: float, tolerance: int
) -> int:
    """Return the signed timestamp, or raise SignatureError. Constant-time comparison."""
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header", "missing_signature")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError(
                    "signature timestamp is not an integer", "bad_signature"
                ) from None
        elif name == "v1":
            candidates.append(value.strip().lower())
    if timestamp is None or not candidates:
        raise SignatureError("signature header needs t=<unix seconds>,v1=<hex>", "bad_signature")
    # A timestamp of 400 digits overflows a float (a 500 before): anything beyond a few
    # centuries of the clock is stale whatever the tolerance; the rest compares as floats.
    if abs(timestamp) > 10**12 or abs(now - timestamp) > tolerance:
        raise SignatureError(
            f"signature timestamp outside the {tolerance}s tolerance", "stale_signature"
        )
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
    ).hexdigest()
    # compare_digest on every candidate, no early exit on the first match. Bytes, because
    # compare_digest raises TypeError on a non-ASCII str (a header byte >= 0x80 became a 500).
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(
            expected.encode(), candidate.encode("utf-8", "surrogatepass")
        )
    if not matched:
        raise SignatureError("signature does not match", "bad_signature")
    return timestamp


class SeenEvents:
    """Bounded memory of accepted event ids -> event digest, for ``hr.dedup_ttl_seconds``.

    In memory, but not forgotten at a restart: :meth:`load` refills it at start from what
    the edge accepted before (``streams.bus.bootstrap.read_hr_seen`` reads the hr.events topic),
    so a sender retrying across a restart still gets ``duplicate`` (or 409)."""

    def __init__(self, ttl: float, max_entries: int = 200_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._seen: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def get(self, event_id: str, now: float) -> str | None:
        entry = self._seen.get(event_id)
        if entry is None:
            return None
        if now - entry[1] > self.ttl:
            del self._seen[event_id]
            return None
        return entry[0]

    def add(self, event_id: str, digest: str, now: float) -> None:
        self._seen[event_id] = (digest, now)
        self._seen.move_to_end(event_id)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)

    def load(self, entries: Iterable[tuple[str, str, float]], now: float) -> int:
        """Remember ``(event_id, digest, accepted_at)`` entries younger than the TTL, oldest
        first (the bound keeps the newest). Returns how many were kept."""
        kept = 0
        for event_id, digest, accepted_at in sorted(entries, key=lambda e: e[2]):
            if now - accepted_at <= self.ttl:
                self.add(event_id, digest, accepted_at)
                kept += 1
        return kept


def _json(http_status: int, **body: Any) -> web.Response:
    headers = {"Retry-After": "5"} if http_status == 503 else None
    return web.Response(
        status=http_status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers=headers,
    )


class HrWebhook:
    """The aiohttp handler. One instance per process."""

    def __init__(
        self,
        *,
        secret: Secret | None,
        tolerance: int,
        dedup_ttl: float,
        max_body: int,
        publisher: Publisher,
        journal: Journal,
        topic: str,
        guard: AuthGuard | None = None,
    ) -> None:
        self.secret = secret
        self.tolerance = tolerance
        self.max_body = max_body
        self.publisher = publisher
        self.journal = journal
        self.topic = topic
        self.guard = guard or AuthGuard()
        self.seen = SeenEvents(dedup_ttl)
        self.health = SourceHealth(SOURCE, ())
        self._duplicate = metrics.EVENTS_DUPLICATE.labels(SOURCE)

    def _reject(self, status: int, reason: str, metric: str) -> web.Response:
        status, body = self._refuse(status, reason, metric)
        return _json(status, **body)

    def _refuse(self, status: int, reason: str, metric: str) -> tuple[int, dict[str, Any]]:
        metrics.EVENTS_REJECTED.labels(SOURCE, metric).inc()
        log.info("hr.rejected", status=status, reason=reason)
        return status, {"error": reason}

    def _secret(self) -> str | None:
        """The signing secret now, or None when it cannot be read (a mounted file gone)."""
        if self.secret is None:
            return None
        try:
            return self.secret.reveal() or None
        except OSError:
            return None

    async def handle(self, request: web.Request) -> web.Response:
        denied = self.guard.blocked(request, SOURCE)
        if denied is not None:
            metrics.EVENTS_REJECTED.labels(SOURCE, "throttled").inc()
            return denied
        raw = await read_body(request, self.max_body)
        if raw is None:
            return self._reject(413, f"body larger than {self.max_body} bytes", "too_large")
        secret = self._secret()
        if secret is None:
            # Our fault, not the sender's: 503 makes it retry, and nothing is lost. Start-up
            # refuses an unresolvable secret; this is one that vanished since (readiness is
            # false meanwhile, see streams.runtime.secretcheck).
            log.error(
                "hr.secret_unavailable",
                secret=self.secret.reference if self.secret else "<unset>",
                effect="every HR event is refused with 503 until hr.webhook_secret resolves",
            )
            return self._reject(
                503, "webhook secret unavailable on the server; retry later", "not_enabled"
            )
        now = time.time()
        try:
            verify_signature(
                secret,
                request.headers.get(SIGNATURE_HEADER),
                raw,
                now=now,
                tolerance=self.tolerance,
            )
        except SignatureError as exc:
            self.guard.failed(request, SOURCE, _AUTH_REASON.get(exc.metric, "wrong"))
            return self._reject(401, exc.reason, exc.metric)
        self.guard.succeeded(request)
        ctype = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
        if ctype not in ("application/json", ""):
            return self._reject(415, "Content-Type must be application/json", "invalid_field")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return self._reject(400, f"invalid JSON: {exc.msg}", "bad_json")
        if isinstance(data, dict) and "accepted_at" in data:
            return self._reject(400, "unknown field(s): accepted_at", "invalid_field")
        try:
            event = HrEvent.from_dict(data)
        except ValidationError as exc:
            return self._reject(400, exc.reason, "invalid_field")
        status, body = await self.admit(event, now)
        return _json(status, **body)

    async def admit(self, event: HrEvent, now: float) -> tuple[int, dict[str, Any]]:
        """Dedup, journal (fsync) and publish one validated event: the edge contract after
        authentication, shared by every door that turns its input into an HrEvent (this
        webhook, SCIM: connectors/ingest/scim). Returns the HTTP status and JSON body: 202
        ``accepted`` or ``duplicate``; 409 for the event_id of another event; 503 (the
        sender retries) when the journal or the broker cannot take it. Rejections are
        counted and logged as the webhook's own."""
        digest = event.digest()
        previous = self.seen.get(event.event_id, now)
        if previous is not None:
            if previous != digest:
                return self._refuse(409, "event_id already used for a different event", "conflict")
            self._duplicate.inc()
            return 202, {"status": "duplicate", "event_id": event.event_id}
        if not self.publisher.reachable:  # known down: answer now, journal nothing
            return self._refuse(503, "broker unavailable; retry later", "broker_unavailable")
        event = HrEvent.from_dict({**event.to_dict(), "accepted_at": now})
        entry = uuid.uuid4().hex
        try:
            self.journal.append(
                "hr_event",
                durable=True,
                key=event.partition_key,
                value=event.to_dict(),
                entry=entry,
            )
        except JournalError as exc:
            # The journal logged the operator's message (path, cause, what to do); the sender
            # gets the cause only, and retries after Retry-After.
            return self._refuse(
                503,
                f"journal unavailable ({exc.reason}): the event cannot be recorded durably; "
                "retry later",
                "journal_unavailable",
            )
        try:
            await self.publisher.send(self.topic, event.partition_key, event.dumps())
        except BrokerError:
            self._withdraw(entry, event)
            return self._refuse(503, "broker unavailable; retry later", "broker_unavailable")
        self.seen.add(event.event_id, digest, now)
        self.health.accepted()
        log.info(
            "hr.accepted",
            event_id=event.event_id,
            type=event.type,
            subject=subject_hash(event.email),
            source=event.source,
        )
        return 202, {"status": "accepted", "event_id": event.event_id}

    def _withdraw(self, entry: str, event: HrEvent) -> None:
        """The event was journaled but the broker did not take it, and the sender is told
        503: mark the journal entry so a replay does not run what was refused (the sender's
        retry, with the same event_id, is the one that counts)."""
        try:
            self.journal.append(WITHDRAWN, durable=True, entry=entry, event_id=event.event_id)
        except JournalError:
            # Then a replay after a restart may run it; the retry is a duplicate of it then.
            log.error(
                "hr.withdraw_failed",
                event_id=event.event_id,
                effect="the refused event may be executed after a restart of the embedded "
                "stack; the sender's retry is then answered as a duplicate",
            )
