"""The Shared Signals receiver: SETs in (push, RFC 8935: ``POST /ssf/push/<transmitter>``;
poll, RFC 8936: :mod:`connectors.ingest.ssf.poller`), verified, deduplicated, journaled,
published.

The edge contract of every inbound door (ARCHITECTURE decision 14):

* **Authenticate.** Push: the ``Authorization`` header the stream was created with
  (``push_token``), compared in constant time, failures throttled per client
  (:class:`~connectors.ingest.edge.AuthGuard`). Then the SET's own signature, issuer,
  audience and age (:mod:`connectors.ingest.ssf.verify`).
* **Validate.** ``Content-Type: application/secevent+jwt``; at most ``ssf.max_set_bytes``
  (413 above); refusals answer 400 with ``{"err": ..., "description": ...}`` (RFC 8935 §2.3).
* **Journal, then broker.** The SET's record (``ssf_set``: transmitter, a hash of iss+jti,
  the events and what each became) and the records it maps to are appended with an fsync,
  then published; only then 202. When the journal or the broker is down: 503 with
  Retry-After, the journal entries marked withdrawn (the transmitter's retry counts).
* **Dedup across restarts.** A ``jti`` already accepted (per issuer) within
  ``ssf.dedup_ttl_seconds`` is answered 202 ``duplicate`` and not published again; the memory
  is refilled at start from the journal's ``ssf_set`` entries (:meth:`SsfReceiver.restore`).
  Counted as refused with reason ``duplicate``: nothing is acted on twice.

One receiver per process; the secrets (push tokens) are re-read at each use.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiohttp import web

from connectors.ingest.edge import AuthGuard, read_body
from connectors.ingest.ssf.events import Mapped, map_set
from connectors.ingest.ssf.verify import SetRefused, SetVerifier, VerifiedSet
from streams.bus.journal import WITHDRAWN, Journal, read_journal
from streams.bus.topics import partition_for
from streams.model.identity import IdentityEvent
from streams.model.records import HrEvent, LeakRecord
from streams.model.registry import Registry
from streams.support import metrics
from streams.support.errors import BrokerError, JournalError
from streams.support.secrets import Secret

log = structlog.get_logger(__name__)

SOURCE = "ssf"
CONTENT_TYPE = "application/secevent+jwt"
#: Journal kind of an accepted SET (not replayed into a topic: the dedup memory's source).
JOURNAL_KIND = "ssf_set"


class Unavailable(Exception):
    """The journal or the broker could not take the SET now: the transmitter must retry."""


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


class SeenJtis:
    """Accepted jti keys -> when, for ``ttl`` seconds, bounded (oldest forgotten first)."""

    def __init__(self, ttl: float, max_entries: int = 200_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, key: str, now: float) -> bool:
        at = self._seen.get(key)
        if at is None:
            return False
        if now - at > self.ttl:
            del self._seen[key]
            return False
        return True

    def add(self, key: str, at: float) -> None:
        self._seen[key] = at
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)


def seen_in_journal(path: Path) -> list[tuple[str, float]]:
    """``(jti key, accepted_at)`` of every SET the journal holds as accepted (entries marked
    withdrawn are left out: the sender was told 503)."""
    accepted: dict[str, tuple[str, float]] = {}
    for entry in read_journal(path):
        kind = entry.get("kind")
        if kind == JOURNAL_KIND and isinstance(entry.get("jti_key"), str):
            accepted[str(entry.get("entry"))] = (entry["jti_key"], float(entry.get("at") or 0))
        elif kind == WITHDRAWN:
            accepted.pop(str(entry.get("entry")), None)
    return list(accepted.values())


class SsfReceiver:
    """Verifies, deduplicates, journals and publishes SETs of the configured streams."""

    def __init__(
        self,
        streams: dict[str, SsfStream],
        *,
        publisher: Any,
        journal: Journal,
        topics: Any,
        partitions: int,
        publish_leaks: Callable[[list[LeakRecord]], Awaitable[None]],
        registry: Callable[[], Registry],
        max_bytes: int,
        dedup_ttl: float,
        guard: AuthGuard | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.streams = streams
        self.publisher = publisher
        self.journal = journal
        self.topics = topics
        self.partitions = partitions
        self.publish_leaks = publish_leaks
        self.registry = registry
        self.max_bytes = max_bytes
        self.seen = SeenJtis(dedup_ttl)
        self.guard = guard or AuthGuard()
        self.clock = clock
        self._lock = asyncio.Lock()

    def restore(self, entries: Iterable[tuple[str, float]]) -> int:
        """Remember the jti keys accepted before a restart (younger than the TTL)."""
        now = self.clock()
        kept = 0
        for key, at in sorted(entries, key=lambda e: e[1]):
            if now - at <= self.seen.ttl:
                self.seen.add(key, at)
                kept += 1
        return kept

    def _refused(self, stream: str, reason: str) -> None:
        metrics.SSF_SETS_REFUSED.labels(stream, reason).inc()

    async def accept(self, stream: SsfStream, token: str) -> Accepted:
        """Verify one SET and hand its events on. Raises :class:`SetRefused` (answer 400 /
        a poll ``setErrs``) or :class:`Unavailable` (answer 503 / do not ack)."""
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
            if self.seen.seen(key, now):
                self._refused(stream.name, "duplicate")
                return Accepted(verified.jti, duplicate=True)
            mapped = map_set(
                verified,
                transmitter=stream.name,
                registry=self.registry(),
                alias_provider=stream.alias_provider,
                now=now,
            )
            await self._record(stream, verified, key, mapped, now)
            self.seen.add(key, now)
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

    async def _record(
        self, stream: SsfStream, verified: VerifiedSet, key: str, mapped: list[Mapped], now: float
    ) -> None:
        """Journal (one fsync for all entries), then publish; withdraw on a broker failure."""
        if not self.publisher.reachable:
            self._refused(stream.name, "unavailable")
            raise Unavailable("broker unavailable")
        entries: list[str] = []
        try:
            for item in mapped:
                if isinstance(item.record, HrEvent):
                    entries.append(uuid.uuid4().hex)
                    self.journal.append(
                        "hr_event",
                        key=item.record.partition_key,
                        value=item.record.to_dict(),
                        entry=entries[-1],
                    )
                elif isinstance(item.record, tuple):
                    self.journal.append("registry", key=item.record[0], value=item.record[1])
            entries.append(uuid.uuid4().hex)
            self.journal.append(
                JOURNAL_KIND,
                durable=True,
                entry=entries[-1],
                transmitter=stream.name,
                jti_key=key,
                at=now,
                events=[{"event": m.event, "outcome": m.outcome} for m in mapped],
            )
        except JournalError as exc:
            self._refused(stream.name, "unavailable")
            raise Unavailable(f"journal unavailable ({exc.reason})") from None
        try:
            await self._publish(mapped)
        except BrokerError:
            self._withdraw(entries)
            self._refused(stream.name, "unavailable")
            raise Unavailable("broker unavailable") from None

    async def _publish(self, mapped: list[Mapped]) -> None:
        leaks: list[LeakRecord] = []
        for item in mapped:
            record = item.record
            if isinstance(record, HrEvent):
                await self.publisher.send(
                    self.topics.hr_events, record.partition_key, record.dumps()
                )
            elif isinstance(record, IdentityEvent):
                key = record.partition_key
                await self.publisher.send(
                    self.topics.identity_events,
                    key,
                    orjson.dumps([record.to_dict()]),
                    partition=partition_for(key, self.partitions),
                )
            elif isinstance(record, LeakRecord):
                leaks.append(record)
            elif isinstance(record, tuple):
                await self.publisher.send(self.topics.registry, record[0], orjson.dumps(record[1]))
        if leaks:
            await self.publish_leaks(leaks)

    def _withdraw(self, entries: list[str]) -> None:
        try:
            for entry in entries:
                self.journal.append(WITHDRAWN, durable=entry == entries[-1], entry=entry)
        except JournalError:
            log.error(
                "ssf.withdraw_failed",
                effect="a refused SET may be replayed after a restart of the embedded stack; "
                "the transmitter's retry is then a duplicate",
            )

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
        name = request.match_info.get("transmitter", "")
        stream = self.streams.get(name)
        if stream is None:
            return _answer(404, {"err": "invalid_request", "description": "no such stream"})
        denied = self.guard.blocked(request, SOURCE)
        if denied is not None:
            self._refused(name, "not_authorized")
            return denied
        header = request.headers.get("Authorization")
        if not self._authorized(stream, header):
            self.guard.failed(request, SOURCE, "missing" if not header else "wrong")
            self._refused(name, "not_authorized")
            return _answer(
                401,
                {"err": "authentication_failed", "description": "missing or wrong Authorization"},
                {"WWW-Authenticate": "Bearer"},
            )
        self.guard.succeeded(request)
        raw = await read_body(request, self.max_bytes)
        if raw is None:
            self._refused(name, "too_large")
            return _answer(
                413,
                {"err": "invalid_request", "description": f"SET larger than {self.max_bytes}"},
            )
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != CONTENT_TYPE:
            self._refused(name, "invalid_request")
            return _answer(
                400,
                {"err": "invalid_request", "description": f"Content-Type must be {CONTENT_TYPE}"},
            )
        try:
            token = raw.decode("ascii").strip()
            accepted = await self.accept(stream, token)
        except UnicodeDecodeError:
            self._refused(name, "invalid_request")
            return _answer(400, {"err": "invalid_request", "description": "not a compact JWS"})
        except SetRefused as exc:
            if exc.retry_after is not None:
                retry = str(max(1, math.ceil(exc.retry_after)))
                body = {"err": exc.err, "description": f"{exc.description}; retry later"}
                return _answer(503, body, {"Retry-After": retry})
            return _answer(400, {"err": exc.err, "description": exc.description})
        except Unavailable as exc:
            return _answer(
                503,
                {"err": "unavailable", "description": f"{exc}; retry later"},
                {"Retry-After": "5"},
            )
        # RFC 8935 §2.2: 202 and no body on success; a duplicate is a success too (already
        # taken), so the transmitter stops retrying it.
        status = "duplicate" if accepted.duplicate else "accepted"
        return web.Response(status=202, headers={"X-AccessGuard-Status": status})


def _answer(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )
