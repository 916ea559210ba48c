"""The Shared Signals receiver: SETs in (push, RFC 8935: ``POST /ssf/push/<transmitter>``;
poll, RFC 8936: :mod:`connectors.ingest.ssf.poller`), verified, deduplicated, journaled,
published.

The edge contract of every inbound door (ARCHITECTURE decision 14) is
:class:`~connectors.ingest.contract.EdgeContract` (source ``ssf``), as for the HR webhook,
the Okta Event Hook and SCIM; what is particular to Shared Signals:

* **Authenticate.** Push: the ``Authorization`` header the stream was created with
  (``push_token``), compared in constant time, failures throttled per client
  (:class:`~connectors.ingest.edge.AuthGuard`). Then the SET's own signature, issuer,
  audience and age (:mod:`connectors.ingest.ssf.verify`).
* **Validate.** ``Content-Type: application/secevent+jwt``; at most ``ssf.max_set_bytes``
  (413 above); refusals answer 400 with ``{"err": ..., "description": ...}`` (RFC 8935 §2.3).
* **Journal, then broker.** One SET is one sender event that becomes several deliveries:
  one per record it maps to (an HR event replayed into hr.events after an embedded-broker
  restart, a registry change replayed likewise, an identity event, a leak), then the
  ``ssf_set`` entry (transmitter, the events and what each became), journal only. The
  contract journals them with one fsync, publishes, and only then the push answers 202;
  503 with Retry-After when the journal or the broker is down (the entries withdrawn, the
  transmitter's retry counts).
* **Dedup across restarts.** The contract's id is a hash of iss+jti (a jti is unique per
  issuer); a jti already accepted within ``ssf.dedup_ttl_seconds`` is answered 202
  ``duplicate`` and not published again. The memory is refilled at start from the journal
  (``receiver.contract.restore``). Counted as refused with reason ``duplicate`` here (and
  in ``accessguard_events_duplicate_total{source="ssf"}``): nothing is acted on twice.

One receiver per process; the secrets (push tokens) are re-read at each use.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from aiohttp import web

from connectors.ingest.contract import Delivery, EdgeContract, SeenEvents, Unavailable, answer
from connectors.ingest.edge import AuthGuard, read_body
from connectors.ingest.ssf.events import Mapped, map_set
from connectors.ingest.ssf.verify import SetRefused, SetVerifier
from streams.bus.journal import Journal
from streams.bus.leakbatch import LeakBatcher
from streams.bus.topics import partition_for
from streams.bus.views import Publisher
from streams.model.identity import IdentityEvent
from streams.model.records import HrEvent, LeakRecord
from streams.model.registry import Registry
from streams.support import metrics
from streams.support.secrets import Secret

log = structlog.get_logger(__name__)

SOURCE = "ssf"
CONTENT_TYPE = "application/secevent+jwt"
#: Journal kind of an accepted SET's own entry (not replayed into a topic: the audit trail
#: of what its events became, and the dedup memory of a SET that published nothing).
JOURNAL_KIND = "ssf_set"
#: A refusal's reason (accessguard_ssf_sets_refused_total) -> the edge-wide reason
#: (accessguard_events_rejected_total{source="ssf"}, one of metrics.REJECT_REASONS).
EDGE_REASONS: dict[str, str] = {
    "too_large": "too_large",
    "not_authorized": "missing_signature",
    "invalid_request": "invalid_field",
    "invalid_key": "bad_signature",
    "invalid_signature": "bad_signature",
    "invalid_issuer": "bad_signature",
    "invalid_audience": "bad_signature",
    "stale": "stale_signature",
}


@dataclass
class SsfStream:
    """One configured transmitter's stream."""

    name: str
    verifier: SetVerifier
    push_token: Secret | None = None
    alias_provider: str = ""
    #: The ``state`` of the last verification event received (stream proven to work).
    verified_state: str | None = None
    #: The ``state`` accessguard asked the transmitter for (stream management), if it did.
    expected_state: str | None = None
    last_set_at: float | None = field(default=None)


@dataclass(frozen=True, slots=True)
class Accepted:
    """What :meth:`SsfReceiver.accept` did with one SET."""

    jti: str
    duplicate: bool
    mapped: tuple[Mapped, ...] = ()


def jti_key(iss: str, jti: str) -> str:
    """The dedup key: a jti is unique per issuer only (RFC 8417 §2.2)."""
    return hashlib.sha256(f"{iss}\x1f{jti}".encode()).hexdigest()[:32]


class SsfReceiver:
    """Verifies SETs of the configured streams and hands each to its :attr:`contract`."""

    def __init__(
        self,
        streams: dict[str, SsfStream],
        *,
        publisher: Publisher,
        journal: Journal,
        topics: Any,
        partitions: int,
        registry: Callable[[], Registry],
        max_bytes: int,
        dedup_ttl: float,
        guard: AuthGuard | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.streams = streams
        self.topics = topics
        self.partitions = partitions
        self.registry = registry
        self.max_bytes = max_bytes
        self.contract = EdgeContract(
            SOURCE, publisher=publisher, journal=journal, seen=SeenEvents(dedup_ttl)
        )
        self.guard = guard or AuthGuard()
        self.clock = clock
        self._lock = asyncio.Lock()

    def _refused(self, stream: str, reason: str, edge_reason: str | None = None) -> None:
        """Count a refusal per transmitter and, but for duplicates (the contract counts
        those), in the edge-wide rejection counter."""
        metrics.SSF_SETS_REFUSED.labels(stream, reason).inc()
        if reason != "duplicate":
            self.contract.health.rejected(edge_reason or EDGE_REASONS[reason])

    async def accept(self, stream: SsfStream, token: str) -> Accepted:
        """Verify one SET and hand its events on. Raises :class:`SetRefused` (answer 400 /
        a poll ``setErrs``) or :class:`~connectors.ingest.contract.Unavailable` (answer 503
        / do not ack)."""
        try:
            verified = await asyncio.to_thread(stream.verifier.verify, token)
        except SetRefused as exc:
            self._refused(stream.name, exc.metric)
            log.info("ssf.refused", transmitter=stream.name, err=exc.err, reason=exc.description)
            raise
        key = jti_key(verified.iss, verified.jti)
        # One SET at a time past this point: two deliveries of one jti racing each other
        # would otherwise both pass the dedup check.
        async with self._lock:
            now = self.clock()
            # The key is the digest too: a jti names one SET whatever bytes carry it (a
            # transmitter may sign its retry anew), so a repeat is never a conflict.
            if self.contract.check(key, key, now) != "new":
                self._refused(stream.name, "duplicate")
                return Accepted(verified.jti, duplicate=True)
            mapped = map_set(
                verified,
                transmitter=stream.name,
                registry=self.registry(),
                alias_provider=stream.alias_provider,
                now=now,
            )
            try:
                await self.contract.deliver(self._deliveries(stream, key, mapped), now)
            except Unavailable as exc:
                self._refused(stream.name, "unavailable", exc.metric)
                raise
        stream.last_set_at = now
        for item in mapped:
            metrics.SSF_EVENTS.labels(stream.name, item.event, item.outcome).inc()
            if item.outcome == "verification":
                stream.verified_state = item.note
            log.info(
                "ssf.event",
                transmitter=stream.name,
                jti_key=key,
                event_type=item.event,
                outcome=item.outcome,
                note=item.note or None,
            )
        return Accepted(verified.jti, duplicate=False, mapped=tuple(mapped))

    def _deliveries(self, stream: SsfStream, key: str, mapped: list[Mapped]) -> list[Delivery]:
        """What one SET hands the contract: its records, then its own ``ssf_set`` entry.
        Leaks are journaled by count only (a LeakRecord may carry a credential)."""
        topics = self.topics
        out: list[Delivery] = []
        leaks = LeakBatcher(self.partitions)
        leak_counts: Counter[int] = Counter()
        for item in mapped:
            record = item.record
            if isinstance(record, HrEvent):
                value: Any = record.to_dict()
                out.append(
                    Delivery(key, key, topics.hr_events, record.partition_key, record.dumps(),
                             journal_value=value, journal_kind="hr_event")
                )  # fmt: skip
            elif isinstance(record, IdentityEvent):
                value = record.to_dict()
                part = partition_for(record.partition_key, self.partitions)
                out.append(
                    Delivery(key, key, topics.identity_events, record.partition_key,
                             orjson.dumps([value]), journal_value={"event_id": value["event_id"]},
                             partition=part)
                )  # fmt: skip
            elif isinstance(record, LeakRecord):
                leaks.add(record)
                leak_counts[partition_for(record.partition_key, self.partitions)] += 1
            elif isinstance(record, tuple):
                out.append(
                    Delivery(key, key, topics.registry, record[0], orjson.dumps(record[1]),
                             journal_value=record[1], journal_kind="registry")
                )  # fmt: skip
        # leak.records carries batches (a JSON array per message), as the leak feeds send them
        for part, message in leaks.flush():
            out.append(
                Delivery(key, key, topics.leak_records, f"batch:{part}", message,
                         journal_value={"leaks": leak_counts[part]}, partition=part)
            )  # fmt: skip
        summary = {
            "transmitter": stream.name,
            "events": [{"event": m.event, "outcome": m.outcome} for m in mapped],
        }
        out.append(
            Delivery(key, key, None, stream.name, b"", journal_value=summary,
                     journal_kind=JOURNAL_KIND)
        )  # fmt: skip
        return out

    # ------------------------------------------------------------------ push (RFC 8935)
    def _authorized(self, stream: SsfStream, header: str | None) -> bool:
        if stream.push_token is None or not header:
            return False
        try:
            expected = stream.push_token.reveal()
        except OSError:
            return False
        if not expected:
            return False
        # The configured value is the whole header, or the token of a Bearer header.
        candidates = (expected, f"Bearer {expected}")
        given = header.strip().encode("utf-8", "surrogateescape")
        matched = False
        for candidate in candidates:
            matched |= hmac.compare_digest(given, candidate.encode())
        return matched

    async def handle_push(self, request: web.Request) -> web.Response:
        """RFC 8935: 202 (no body) once the SET is journaled and published or a duplicate;
        400/401/413 with ``{"err", "description"}``; 503 with Retry-After to retry later.
        Every refusal is counted (:meth:`_refused`) before it is answered."""
        name = request.match_info.get("transmitter", "")
        stream = self.streams.get(name)
        if stream is None:
            return _error(404, "invalid_request", "no such stream")
        denied = self.guard.blocked(request, SOURCE)
        if denied is not None:
            self._refused(name, "not_authorized", "throttled")
            return denied
        header = request.headers.get("Authorization")
        if not self._authorized(stream, header):
            self.guard.failed(request, SOURCE, "missing" if not header else "wrong")
            self._refused(name, "not_authorized")
            return _error(
                401,
                "authentication_failed",
                "missing or wrong Authorization",
                {"WWW-Authenticate": "Bearer"},
            )
        self.guard.succeeded(request)
        raw = await read_body(request, self.max_bytes)
        if raw is None:
            self._refused(name, "too_large")
            return _error(413, "invalid_request", f"SET larger than {self.max_bytes}")
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != CONTENT_TYPE:
            self._refused(name, "invalid_request")
            return _error(400, "invalid_request", f"Content-Type must be {CONTENT_TYPE}")
        try:
            token = raw.decode("ascii").strip()
            accepted = await self.accept(stream, token)
        except UnicodeDecodeError:
            self._refused(name, "invalid_request")
            return _error(400, "invalid_request", "not a compact JWS")
        except SetRefused as exc:
            if exc.retry_after is not None:
                retry = str(max(1, math.ceil(exc.retry_after)))
                description = f"{exc.description}; retry later"
                return _error(503, exc.err, description, {"Retry-After": retry})
            return _error(400, exc.err, exc.description)
        except Unavailable as exc:
            return _error(503, "unavailable", exc.reason)
        # RFC 8935 §2.2: 202 and no body on success; a duplicate is a success too (already
        # taken), so the transmitter stops retrying it.
        status = "duplicate" if accepted.duplicate else "accepted"
        return web.Response(status=202, headers={"X-AccessGuard-Status": status})


def _error(
    status: int, err: str, description: str, headers: dict[str, str] | None = None
) -> web.Response:
    """An RFC 8935 §2.3 error body (a 503 carries Retry-After: the contract's answer)."""
    return answer(status, headers=headers, err=err, description=description)
