"""Okta Event Hooks: ``GET`` and ``POST /v1/okta/event-hooks``.

What Okta sends (developer.okta.com, "Event hooks"): a one-time verification ``GET`` with
``X-Okta-Verification-Challenge: <value>``, answered ``{"verification": "<value>"}``; then
``POST`` deliveries ``{"eventType": "com.okta.event_hook", "data": {"events": [...]}, ...}``
whose ``data.events[]`` are System Log events (``uuid``, ``published``, ``eventType``,
``actor``, ``target[]``, ``outcome``, ...). Every request carries the authentication field
configured at registration (header ``hooks.event_hook_header``, value
``hooks.event_hook_secret``), compared in constant time; 401 otherwise (failures throttled by
the shared :class:`~connectors.ingest.edge.AuthGuard`). Okta waits 3 s and retries once on a
timeout or a 5xx.

Each event of a batch is handled on its own, with its own result in the answer and in the
journal (``accepted``, ``duplicate``, ``ignored`` with the reason, ``rejected`` with the
reason; one bad event never refuses its batch):

- ``user.lifecycle.deactivate`` (and ``.delete.initiated``) -> HR ``terminated``,
  ``.suspend`` -> ``suspended``, ``.unsuspend`` and ``.reactivate`` -> ``reinstated``: an
  :class:`HrEvent` about the first ``User`` target (``alternateId`` as the e-mail, ``id`` as
  the employee id, which the registry falls back from to the e-mail) on hr.events, so the
  offboarding is exactly the one an HR termination gets.
- Everything else goes through the System Log normaliser the Okta poller uses
  (:func:`connectors.okta.security.normalise_all`), so the same event reaches the same rules
  whichever way it came: ``user.account.lock`` is a failed login (``LOCKED_OUT``: the
  brute-force rules count it), ``user.mfa.factor.reset_all`` an identity-security
  ``mfa_factor_reset`` (rule ``mfa_removed_by_other`` when someone else did it; the HR path
  has no MFA type). Types outside both lists are ignored and counted in
  ``accessguard_identity_events_dropped_total{source="okta_event_hook"}``.

Dedup: by the event's ``uuid`` together with a digest of its content
(:func:`~connectors.base.normalise.make_event_id`, the id the poller gives it too): Okta's
retry resends the same event, a duplicate; Okta's uuid is not unique in practice (the vendor
samples reuse one over five different events), so the same uuid with other content is
another event, not dropped. The memory survives restarts (the journal,
:meth:`~connectors.ingest.contract.EdgeContract.restore`).

The answer is 200 only after every accepted event is journaled (fsync) and acknowledged by
the broker (:class:`~connectors.ingest.contract.EdgeContract`); 503 with Retry-After when
either is down, so Okta's retry brings the batch again (what was accepted before is then a
duplicate).
"""

from __future__ import annotations

import hmac
import time
from dataclasses import replace
from typing import Any

import orjson
import structlog
from aiohttp import web

from connectors.base.identity import DROP_REASONS, NotSecurityEvent
from connectors.base.normalise import (
    items,
    make_event_id,
    obj,
    parse_timestamp,
    payload_digest,
    text,
)
from connectors.ingest.contract import (
    Delivery,
    EdgeContract,
    Route,
    SeenEvents,
    Unavailable,
    answer,
)
from connectors.ingest.edge import AuthGuard, read_body
from connectors.okta import security
from connectors.okta.normaliser import VENDOR
from streams.bus.journal import Journal
from streams.bus.topics import partition_for
from streams.bus.views import Publisher
from streams.model.identity import IdentityEvent
from streams.model.records import HrEvent, LoginEvent, subject_hash
from streams.support import metrics
from streams.support.errors import ValidationError
from streams.support.secrets import Secret
from streams.support.times import format_time

log = structlog.get_logger(__name__)

PATH = "/v1/okta/event-hooks"
SOURCE = "okta_event_hook"
VERIFICATION_HEADER = "X-Okta-Verification-Challenge"
#: ``HrEvent.source`` of the events this door makes.
HR_SOURCE = "okta-event-hook"
#: Okta lifecycle eventType -> HR event type (streams/model/records.py HR_TYPES).
LIFECYCLE: dict[str, str] = {
    "user.lifecycle.deactivate": "terminated",
    "user.lifecycle.delete.initiated": "terminated",
    "user.lifecycle.suspend": "suspended",
    "user.lifecycle.unsuspend": "reinstated",
    "user.lifecycle.reactivate": "reinstated",
}
#: Okta sends at most a few dozen events per request; this bounds the work of one request.
MAX_EVENTS = 1000
_NOT_APPLIED = frozenset({"FAILURE", "DENY"})


def hr_event(event: dict[str, Any], hr_type: str, event_id: str) -> HrEvent:
    """A lifecycle event -> the HrEvent about its first ``User`` target. NotSecurityEvent
    (ignored) when the outcome says it did not happen; ValidationError when unusable."""
    event_type = str(event.get("eventType"))
    result = obj(event, "outcome").get("result")
    if isinstance(result, str) and result.strip().upper() in _NOT_APPLIED:
        raise NotSecurityEvent(f"{event_type}: outcome {result.strip()[:20]}", "not_applied")
    target = next(
        (t for t in items(event, "target") if isinstance(t, dict) and t.get("type") == "User"),
        None,
    )
    if target is None:
        raise ValidationError(f"{event_type}: no target of type User")
    login = text(target, "alternateId", max_len=320)
    if login is None:
        raise ValidationError(f"{event_type}: the User target has no alternateId")
    published = parse_timestamp(event.get("published"), "published")
    return HrEvent.from_dict(
        {
            "event_id": event_id,
            "type": hr_type,
            "employee_id": text(target, "id", max_len=200) or login,
            "email": login,
            "effective_at": format_time(published),
            "source": HR_SOURCE,
        }
    )


class OktaEventHook:
    """The door's two handlers (:meth:`routes`). One instance per process."""

    def __init__(
        self,
        *,
        secret: Secret,
        header: str,
        publisher: Publisher,
        journal: Journal,
        hr_topic: str,
        auth_topic: str,
        identity_topic: str,
        partitions: int,
        max_body: int,
        dedup_ttl: float,
        guard: AuthGuard | None = None,
    ) -> None:
        self.secret = secret
        self.header = header
        self.hr_topic = hr_topic
        self.auth_topic = auth_topic
        self.identity_topic = identity_topic
        self.partitions = partitions
        self.max_body = max_body
        self.guard = guard or AuthGuard()
        self.contract = EdgeContract(
            SOURCE, publisher=publisher, journal=journal, seen=SeenEvents(dedup_ttl)
        )
        self._dropped = {r: metrics.IDENTITY_EVENTS_DROPPED.labels(SOURCE, r) for r in DROP_REASONS}
        self._bad = metrics.EVENTS_REJECTED.labels(SOURCE, "bad_record")

    def routes(self) -> list[Route]:
        return [("GET", PATH, self.verify), ("POST", PATH, self.handle)]

    def _denied(self, request: web.Request) -> web.Response | None:
        """None when the configured header carries the secret, else the answer."""
        blocked = self.guard.blocked(request, SOURCE)
        if blocked is not None:
            self.contract.health.rejected("throttled")
            return blocked
        try:
            expected = self.secret.reveal()
        except OSError:
            expected = ""
        if not expected:
            log.error(
                "okta_hook.secret_unavailable",
                secret=self.secret.reference,
                effect="every event hook request is refused with 503 until it resolves",
            )
            return self.contract.reject(
                503, "event hook secret unavailable on the server; retry later", "not_enabled"
            )
        given = request.headers.get(self.header)
        # surrogateescape: aiohttp decodes header bytes that are not UTF-8 to surrogates.
        if given and hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), expected.encode()
        ):
            self.guard.succeeded(request)
            return None
        self.guard.failed(request, SOURCE, "missing" if not given else "wrong")
        return self.contract.reject(
            401, f"missing or wrong {self.header} header", "missing_signature"
        )

    async def verify(self, request: web.Request) -> web.Response:
        """The one-time verification: echo the challenge (after the same authentication)."""
        denied = self._denied(request)
        if denied is not None:
            return denied
        challenge = request.headers.get(VERIFICATION_HEADER, "").strip()
        if not challenge or len(challenge) > 1024 or not challenge.isascii():
            return self.contract.reject(
                400,
                f"missing, oversized or non-ASCII {VERIFICATION_HEADER} header",
                "invalid_field",
            )
        log.info("okta_hook.verified")
        return answer(200, verification=challenge)

    async def handle(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied is not None:
            return denied
        raw = await read_body(request, self.max_body)
        if raw is None:
            return self.contract.reject(413, f"body larger than {self.max_body} bytes", "too_large")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return self.contract.reject(400, f"invalid JSON: {exc.msg}", "bad_json")
        events = obj(body, "data").get("events")
        if not isinstance(events, list):
            return self.contract.reject(400, "data.events must be an array", "invalid_field")
        if len(events) > MAX_EVENTS:
            return self.contract.reject(
                413, f"more than {MAX_EVENTS} events in one request", "too_large"
            )
        now = time.time()
        results: list[dict[str, Any]] = []
        deliveries: list[Delivery] = []
        notes: list[tuple[str, str, str]] = []
        batch: set[str] = set()
        for event in events:
            result, new = self._one(event, now, batch)
            results.append(result)
            if new:
                deliveries += new
            else:
                notes.append((result["id"], result["result"], result.get("reason", "")))
        try:
            await self.contract.deliver(deliveries, now)
        except Unavailable as exc:
            return self.contract.reject(503, exc.reason, exc.metric)
        for sender_id, outcome, reason in notes:
            self.contract.note(sender_id, outcome, reason)
        log.info(
            "okta_hook.batch",
            events=len(events),
            accepted=sum(1 for r in results if r["result"] == "accepted"),
        )
        return answer(200, results=results)

    def _one(
        self, event: Any, now: float, batch: set[str]
    ) -> tuple[dict[str, Any], list[Delivery]]:
        """One event's result, and what to deliver for it (nothing unless accepted)."""
        if not isinstance(event, dict):
            self._bad.inc()
            return {"id": "-", "result": "rejected", "reason": "not a JSON object"}, []
        uuid = text(event, "uuid", max_len=200)
        try:
            digest = payload_digest(event)
        except ValidationError as exc:  # nested deeper than JSON is written back (255 levels)
            self._bad.inc()
            return {"id": "-", "uuid": uuid, "result": "rejected", "reason": exc.reason}, []
        sender_id = make_event_id(VENDOR, uuid, digest)
        event_type = text(event, "eventType", max_len=200) or "-"
        result: dict[str, Any] = {"id": sender_id, "uuid": uuid, "eventType": event_type}
        if sender_id in batch or self.contract.check(sender_id, digest, now) == "duplicate":
            return {**result, "result": "duplicate"}, []
        try:
            deliveries = self._deliveries(event, event_type, sender_id, digest, now)
        except NotSecurityEvent as exc:
            self._dropped[exc.code].inc()
            return {**result, "result": "ignored", "reason": exc.reason}, []
        except ValidationError as exc:
            self._bad.inc()
            return {**result, "result": "rejected", "reason": exc.reason}, []
        if not deliveries:
            self._dropped["not_security_type"].inc()
            return {**result, "result": "ignored", "reason": "nothing to record"}, []
        batch.add(sender_id)
        routes: dict[str | None, str] = {self.hr_topic: "hr", self.auth_topic: "login"}
        route = routes.get(deliveries[0].topic, "identity")
        return {**result, "result": "accepted", "route": route}, deliveries

    def _deliveries(
        self, event: dict[str, Any], event_type: str, sender_id: str, digest: str, now: float
    ) -> list[Delivery]:
        hr_type = LIFECYCLE.get(event_type)
        if hr_type is not None:
            # accepted_at: the start of time-to-revoke, as at the HR webhook.
            hr = replace(hr_event(event, hr_type, sender_id), accepted_at=now)
            log.info(
                "okta_hook.lifecycle",
                event_id=sender_id,
                type=hr.type,
                subject=subject_hash(hr.email),
            )
            return [
                Delivery(
                    sender_id=sender_id,
                    digest=digest,
                    topic=self.hr_topic,
                    key=hr.partition_key,
                    value=hr.dumps(),
                    journal_value=hr.to_dict(),
                    journal_kind="hr_event",
                )
            ]
        out: list[Delivery] = []
        for record in security.normalise_all(event):
            topic = self.auth_topic if isinstance(record, LoginEvent) else self.identity_topic
            partition = partition_for(record.partition_key, self.partitions)
            value = record.to_dict()
            out.append(
                Delivery(
                    sender_id=sender_id,
                    digest=digest,
                    topic=topic,
                    key=f"batch:{partition}",
                    value=b"[" + orjson.dumps(value) + b"]",
                    journal_value={"event_id": value["event_id"], "type": _kind(record)},
                    partition=partition,
                )
            )
        return out


def _kind(record: LoginEvent | IdentityEvent) -> str:
    return "login" if isinstance(record, LoginEvent) else f"identity:{record.type}"
