"""HR source: ``POST /v1/hr/events``, signed like Stripe webhooks or with Standard Webhooks.

Two signature schemes, picked by the headers the request carries:

- ``X-AccessGuard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``
  (``hr.webhook_secret``). Several ``v1=`` values are accepted (secret rotation on the
  sender's side). The dedup key is the body's ``event_id``.
- Standard Webhooks: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``
  (``hooks.standard_webhooks_secret``; :mod:`connectors.ingest.standard_webhooks`). The
  dedup key is ``webhook-id``: it becomes the event's ``event_id`` (a body may omit
  ``event_id``, or give the same value; another value is a 400). An identical signed
  message (same id, timestamp and body) accepted before is a replay: 401.

Either way the comparison is constant-time, the timestamp must be within
``hr.tolerance_seconds`` (replay protection), and a repeated id is acknowledged without
being published again (webhook senders retry for days), also across restarts
(:class:`SeenEvents`, refilled from the hr.events topic). A client that keeps failing the
signature check is throttled (:class:`connectors.ingest.edge.AuthGuard`).

The rest is the shared edge contract (:class:`connectors.ingest.contract.EdgeContract`): a
202 only after the event is in the journal (fsync) and acknowledged by the broker, 503 with
Retry-After when either is unavailable (the journal entry then withdrawn, so an
embedded-stack restart does not run what was refused).

``doors`` holds the other doors that feed the HR path (the Okta Event Hook): the web app
mounts them beside this one (streams/runtime/web.py).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import orjson
import structlog
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from connectors.ingest import standard_webhooks as stdwh
from connectors.ingest.contract import (
    Delivery,
    Door,
    EdgeContract,
    SeenEvents,
    Unavailable,
    answer,
)
from connectors.ingest.edge import AuthGuard, SignatureError, read_body
from streams.bus.journal import Journal
from streams.bus.views import Publisher
from streams.model.records import HrEvent, subject_hash
from streams.support.errors import ValidationError
from streams.support.secrets import Secret

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-AccessGuard-Signature"
SOURCE = "hr_webhook"
#: SignatureError.metric -> accessguard_auth_failures_total reason.
_AUTH_REASON = {"missing_signature": "missing", "stale_signature": "stale"}

__all__ = ["SIGNATURE_HEADER", "HrWebhook", "SeenEvents", "SignatureError", "sign"]


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
        standard_secret: Secret | None = None,
    ) -> None:
        self.secret = secret
        self.standard_secret = standard_secret
        self.tolerance = tolerance
        self.max_body = max_body
        self.topic = topic
        self.guard = guard or AuthGuard()
        self.seen = SeenEvents(dedup_ttl)
        self.contract = EdgeContract(SOURCE, publisher=publisher, journal=journal, seen=self.seen)
        self.health = self.contract.health
        self.replays = stdwh.Replays(tolerance)
        #: Other doors feeding the HR path, mounted beside this one (streams/runtime/web.py).
        self.doors: list[Door] = []

    @property
    def publisher(self) -> Publisher:
        return self.contract.publisher

    @publisher.setter
    def publisher(self, publisher: Publisher) -> None:
        self.contract.publisher = publisher

    @property
    def journal(self) -> Journal:
        """The edge's journal (the SCIM service journals its registry writes there too)."""
        return self.contract.journal

    def _reject(self, status: int, reason: str, metric: str) -> web.Response:
        return self.contract.reject(status, reason, metric)

    def _refuse(self, status: int, reason: str, metric: str) -> tuple[int, dict[str, Any]]:
        """:meth:`_reject` as the status and body, for :meth:`admit`'s callers."""
        response = self._reject(status, reason, metric)
        return response.status, {"error": reason}

    def _reveal(self, secret: Secret | None) -> str | None:
        """A signing secret now, or None when it cannot be read (a mounted file gone)."""
        if secret is None:
            return None
        try:
            return secret.reveal() or None
        except OSError:
            return None

    def _unavailable(self, key: str, secret: Secret | None) -> web.Response:
        # Our fault, not the sender's: 503 makes it retry, and nothing is lost. Start-up
        # refuses an unresolvable secret; this is one that vanished since (readiness is
        # false meanwhile, see streams.runtime.secretcheck).
        log.error(
            "hr.secret_unavailable",
            secret=secret.reference if secret else "<unset>",
            effect=f"HR events signed for {key} are refused with 503 until it resolves",
        )
        return self._reject(
            503, "webhook secret unavailable on the server; retry later", "not_enabled"
        )

    def _standard_keys(self) -> list[Webhook] | None:
        """The Standard Webhooks keys now, or None when the secret is unreadable or unusable
        (start-up checks the format; a mounted file may change since)."""
        value = self._reveal(self.standard_secret)
        if value is None:
            return None
        try:
            return stdwh.keys(value)
        except ValueError:
            return None

    async def handle(self, request: web.Request) -> web.Response:
        denied = self.guard.blocked(request, SOURCE)
        if denied is not None:
            self.health.rejected("throttled")
            return denied
        raw = await read_body(request, self.max_body)
        if raw is None:
            return self._reject(413, f"body larger than {self.max_body} bytes", "too_large")
        now = time.time()
        standard = stdwh.SIGNATURE_HEADER in request.headers
        msg: tuple[str, int] | None = None
        try:
            if standard:
                if self.standard_secret is None:
                    raise SignatureError(
                        "Standard Webhooks signatures are not accepted here "
                        "(hooks.standard_webhooks_secret is unset)",
                        "missing_signature",
                    )
                keys = self._standard_keys()
                if keys is None:
                    return self._unavailable("hooks.standard_webhooks_secret", self.standard_secret)
                msg = stdwh.verify(keys, request.headers, raw, now=now, tolerance=self.tolerance)
                if self.replays.seen(*msg, raw, now):
                    raise SignatureError(
                        "replayed: this signed message (webhook-id, webhook-timestamp, body) "
                        "was accepted before; a retry is signed anew",
                        "bad_signature",
                    )
            else:
                if self.secret is None:  # a Standard Webhooks sender only
                    raise SignatureError(
                        f"{SIGNATURE_HEADER} signatures are not accepted here "
                        "(hr.webhook_secret is unset): sign with Standard Webhooks "
                        "(webhook-id, webhook-timestamp, webhook-signature)",
                        "missing_signature",
                    )
                secret = self._reveal(self.secret)
                if secret is None:
                    return self._unavailable("hr.webhook_secret", self.secret)
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
        if msg is not None and isinstance(data, dict):
            given = data.get("event_id")
            if given is not None and given != msg[0]:
                return self._reject(
                    400,
                    "event_id must equal webhook-id (the dedup key) or be left out",
                    "invalid_field",
                )
            data = {**data, "event_id": msg[0]}
        try:
            event = HrEvent.from_dict(data)
        except ValidationError as exc:
            return self._reject(400, exc.reason, "invalid_field")
        status, body = await self.admit(event, now)
        if msg is not None and status == 202:
            self.replays.add(*msg, raw, now)
        return answer(status, **body)

    async def admit(self, event: HrEvent, now: float) -> tuple[int, dict[str, Any]]:
        """Dedup, journal (fsync) and publish one validated event: the edge contract after
        authentication (:class:`~connectors.ingest.contract.EdgeContract`), shared by every
        door that turns its input into an HrEvent (this webhook, SCIM:
        connectors/ingest/scim). Returns the HTTP status and JSON body: 202 ``accepted`` or
        ``duplicate``; 409 for the event_id of another event; 503 (the sender retries) when
        the journal or the broker cannot take it. Refusals are counted and logged as this
        edge's own."""
        digest = event.digest()
        state = self.contract.check(event.event_id, digest, now)
        if state == "conflict":
            return self._refuse(409, "event_id already used for a different event", "conflict")
        if state == "duplicate":
            return 202, {"status": "duplicate", "event_id": event.event_id}
        event = HrEvent.from_dict({**event.to_dict(), "accepted_at": now})
        delivery = Delivery(
            sender_id=event.event_id,
            digest=digest,
            topic=self.topic,
            key=event.partition_key,
            value=event.dumps(),
            journal_value=event.to_dict(),
            journal_kind="hr_event",
        )
        try:
            await self.contract.deliver([delivery], now)
        except Unavailable as exc:
            return self._refuse(503, exc.reason, exc.metric)
        log.info(
            "hr.accepted",
            event_id=event.event_id,
            type=event.type,
            subject=subject_hash(event.email),
            source=event.source,
        )
        return 202, {"status": "accepted", "event_id": event.event_id}
