"""The edge contract every inbound door keeps (docs/architecture.md, decision 14), in one place.

A door (the HR webhook with either signature scheme, the Okta Event Hook, SCIM, Shared
Signals) authenticates and validates a request in its own way; what happens next is the same
for all of them, and is this module:

1. **Dedup by the sender's id, across restarts.** :class:`SeenEvents` remembers the ids a
   door accepted (with a digest of what each said) for the door's TTL; senders retry for
   hours to days. :meth:`EdgeContract.check` says ``new``, ``duplicate`` (the same id and the
   same content: acknowledge, publish nothing) or ``conflict`` (the same id, other content).
   The memory is refilled at start from the journal (:meth:`EdgeContract.restore`), where
   every accepted delivery is written with its door, id and digest.
2. **Journal (fsync), then broker-ack, before success.** :meth:`EdgeContract.deliver` writes
   each delivery to the journal, waits for one fsync covering all of them (group commit),
   then sends each record and waits for the broker's acknowledgement. Only then does it
   return, and only then may the door answer 2xx. One sender's event may become several
   records on several topics (a SET: an HR event, an identity event, a leak) and a
   journal-only entry (``topic`` None: the audit record of what the event became, which
   also remembers its id when it published nothing); its id counts as seen only once all
   of them are acknowledged.
3. **503 with Retry-After when either is down.** :class:`Unavailable` (raised by ``deliver``)
   carries the reason; :meth:`EdgeContract.reject` answers it. A delivery journaled but
   refused by the broker is marked withdrawn in the journal, so an embedded-stack restart
   neither replays it nor counts it as seen (the sender's retry is the one that counts);
   so are the other entries of the same sender's id, even those already acknowledged (the
   retry publishes them again, and the deterministic ids downstream make that a duplicate).
4. **4xx with the reason** for bad input, **413** on oversize
   (:func:`connectors.ingest.edge.read_body` returns None), each counted in
   ``accessguard_events_rejected_total{source,reason}`` by :meth:`EdgeContract.reject`. The
   answer is ``{"error": reason}``; a door whose protocol fixes another error body (RFC 8935's
   ``{"err", "description"}`` for Shared Signals) passes it as ``body``.

Use (a door's handler, after authenticating and validating)::

    contract = EdgeContract("scim", publisher=..., journal=..., seen=SeenEvents(ttl))
    state = contract.check(sender_id, digest, now)          # new | duplicate | conflict
    try:
        await contract.deliver([Delivery(sender_id, digest, topic, key, value, ...)], now)
    except Unavailable as exc:
        return contract.reject(503, exc.reason, exc.metric)

Everything here may run more than once for one event (a sender's retry after a 503): the
dedup memory and the deterministic ids downstream make the second run a duplicate.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson
import structlog
from aiohttp import web

from connectors.base.health import SourceHealth
from streams.bus.journal import WITHDRAWN, Journal
from streams.bus.views import Publisher
from streams.support import metrics
from streams.support.errors import BrokerError, JournalError

log = structlog.get_logger(__name__)

#: Journal kind of an accepted delivery that is not replayed into a topic (an audit entry
#: that also refills the dedup memory); ``hr_event`` deliveries are replayed (journal.py).
EDGE_EVENT = "edge_event"
#: Journal kind of a per-event result that published nothing (duplicate, ignored, rejected).
EDGE_RESULT = "edge_result"
#: Seconds a 503 asks the sender to wait (the journal or broker is down).
RETRY_AFTER = "5"

Check = Literal["new", "duplicate", "conflict"]
#: One route of a door: ``(method, path, handler)``.
Route = tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]


class SeenEvents:
    """Bounded memory of accepted event ids -> event digest, for a door's dedup TTL.

    In memory, but not forgotten at a restart: :meth:`load` refills it at start from what
    the door accepted before (the journal, :meth:`EdgeContract.restore`; the HR webhook also
    reads the hr.events topic, ``streams.bus.bootstrap.read_hr_seen``), so a sender retrying
    across a restart still gets ``duplicate`` (or 409)."""

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
        first (the bound keeps the newest). Returns how many ids were kept (an event that
        became several records has an entry for each)."""
        kept: set[str] = set()
        for event_id, digest, accepted_at in sorted(entries, key=lambda e: e[2]):
            if now - accepted_at <= self.ttl:
                self.add(event_id, digest, accepted_at)
                kept.add(event_id)
        return len(kept)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One record a door hands over for a sender's event: the sender's id (the dedup key), a
    digest of what it says, the record to publish (``topic``/``key``/``value``, ``partition``
    when the door picks it; ``topic`` None: journal only, nothing is published) and how the
    journal keeps it: a kind of :data:`streams.bus.journal.REPLAYED_KINDS` (``hr_event``,
    ``registry``) is replayed into its topic after an embedded-broker restart; any other
    (:data:`EDGE_EVENT`, a door's own audit kind) is kept for the audit trail and the dedup
    memory only. ``journal_value`` is what the journal stores (never a secret)."""

    sender_id: str
    digest: str
    topic: str | None
    key: str
    value: bytes
    journal_value: Any
    journal_kind: str = EDGE_EVENT
    partition: int | None = None


class Unavailable(Exception):
    """The journal or the broker cannot take the event now: answer 503 with Retry-After."""

    def __init__(self, reason: str, metric: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.metric = metric


def answer(
    http_status: int, /, *, headers: Mapping[str, str] | None = None, **body: Any
) -> web.Response:
    """A JSON answer with ``headers``; a 503 carries Retry-After (5 s unless ``headers`` says
    otherwise: the sender retries, nothing is lost)."""
    merged = dict(headers or {})
    if http_status == 503:
        merged.setdefault("Retry-After", RETRY_AFTER)
    return web.Response(
        status=http_status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers=merged or None,
    )


class EdgeContract:
    """Dedup, journal, broker-ack and the counted answers of one door (``source`` names it
    in metrics, logs and the journal). One instance per door and process."""

    def __init__(
        self, source: str, *, publisher: Publisher, journal: Journal, seen: SeenEvents
    ) -> None:
        self.source = source
        self.publisher = publisher
        self.journal = journal
        self.seen = seen
        #: accessguard_events_accepted_total and the source's last-event time (silence alert)
        self.health = SourceHealth(source, ())
        self._duplicate = metrics.EVENTS_DUPLICATE.labels(source)

    def reject(
        self,
        status: int,
        reason: str,
        metric: str,
        *,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        """Count, log and answer a refusal: ``{"error": reason}``, or ``body`` where the
        door's protocol fixes the error format (503: with Retry-After). ``metric`` is one of
        :data:`streams.support.metrics.REJECT_REASONS`."""
        self.health.rejected(metric)
        log.info("edge.rejected", source=self.source, status=status, reason=reason)
        return answer(status, headers=headers, **(body if body is not None else {"error": reason}))

    def check(self, sender_id: str, digest: str, now: float) -> Check:
        """Whether ``sender_id`` is new, a duplicate (same digest: count it) or a conflict."""
        previous = self.seen.get(sender_id, now)
        if previous is None:
            return "new"
        if previous != digest:
            return "conflict"
        self._duplicate.inc()
        return "duplicate"

    def note(self, sender_id: str, result: str, reason: str = "") -> None:
        """Journal a per-event result that published nothing (duplicate, ignored, rejected):
        the audit trail of a batch, one line per event. Not fsynced: nothing depends on it
        surviving a power cut, and a failure to write it refuses nothing."""
        try:
            self.journal.append(
                EDGE_RESULT, edge=self.source, sender_id=sender_id, result=result, reason=reason
            )
        except JournalError:
            log.warning("edge.result_not_journaled", source=self.source, result=result)

    async def deliver(self, deliveries: Sequence[Delivery], now: float) -> None:
        """Journal every delivery (one fsync for all), then publish each (``topic`` None:
        nothing to publish) and wait for the broker's acknowledgement; remember a sender's
        id as seen once all its deliveries are acknowledged. Raises :class:`Unavailable`
        (answer 503) when the broker is known down, the journal cannot write, or a send is
        refused; the entries of every id not wholly acknowledged are then withdrawn from the
        journal."""
        if not deliveries:
            return
        if not self.publisher.reachable:  # known down: answer now, journal nothing
            raise Unavailable("broker unavailable; retry later", "broker_unavailable")
        entries: list[str] = []
        try:
            seq = 0
            for d in deliveries:
                entry = uuid.uuid4().hex
                _line, seq = self.journal.write(
                    d.journal_kind,
                    key=d.key,
                    value=d.journal_value,
                    entry=entry,
                    edge=self.source,
                    sender_id=d.sender_id,
                    digest=d.digest,
                    accepted_at=now,
                )
                entries.append(entry)
            await self.journal.commit(seq)
        except JournalError as exc:
            # The journal logged the operator's message (path, cause, what to do); the
            # sender gets the cause only, and retries after Retry-After.
            self._withdraw(entries, "journal")
            raise Unavailable(
                f"journal unavailable ({exc.reason}): the event cannot be recorded durably; "
                "retry later",
                "journal_unavailable",
            ) from None
        last = {d.sender_id: i for i, d in enumerate(deliveries)}
        for done, d in enumerate(deliveries):
            if d.topic is not None:
                try:
                    await self.publisher.send(d.topic, d.key, d.value, partition=d.partition)
                except BrokerError:
                    pending = {p.sender_id for p in deliveries[done:]}
                    self._withdraw(
                        [
                            e
                            for e, p in zip(entries, deliveries, strict=True)
                            if p.sender_id in pending
                        ],
                        "broker",
                    )
                    raise Unavailable(
                        "broker unavailable; retry later", "broker_unavailable"
                    ) from None
            if last[d.sender_id] == done:
                self.seen.add(d.sender_id, d.digest, now)
                self.health.accepted()

    def _withdraw(self, entries: Sequence[str], cause: str) -> None:
        """Mark journaled entries the sender is told 503 about, so a replay after a restart
        neither runs them nor remembers them as seen (the sender's retry counts)."""
        for entry in entries:
            try:
                self.journal.append(WITHDRAWN, durable=True, entry=entry, edge=self.source)
            except JournalError:
                # Then a replay after a restart may run it; the retry is a duplicate of it.
                log.error(
                    "edge.withdraw_failed",
                    source=self.source,
                    cause=cause,
                    effect="a refused event may run after a restart of the embedded stack; "
                    "the sender's retry is then answered as a duplicate",
                )

    def restore(self, path: Path, now: float) -> int:
        """Refill the dedup memory from the journal at ``path``: every delivery this door
        journaled and did not withdraw, within the TTL. Returns how many were kept. Reads
        the file line by line and parses only this door's lines, so a long audit trail costs
        a scan, not a parse."""
        return self.seen.load(journaled_ids(path, self.source), now)


class Door(Protocol):
    """A door beside the HR webhook (streams/runtime/web.py mounts its routes; the start-up
    refills its contract's dedup memory from the journal)."""

    contract: EdgeContract

    def routes(self) -> list[Route]: ...


def journaled_ids(path: Path, source: str) -> list[tuple[str, str, float]]:
    """``(sender_id, digest, accepted_at)`` of every delivery of door ``source`` in the
    journal at ``path``, less the withdrawn ones."""
    marker = orjson.dumps(source)
    accepted: dict[str, tuple[str, str, float]] = {}
    withdrawn: set[str] = set()
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return []
    with handle:
        for line in handle:
            if b'"edge"' not in line or marker not in line:
                continue
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a torn last line: it was never acknowledged
            if not isinstance(entry, dict) or entry.get("edge") != source:
                continue
            if entry.get("kind") == WITHDRAWN:
                withdrawn.add(str(entry.get("entry")))
                continue
            sender_id, digest = entry.get("sender_id"), entry.get("digest")
            if "entry" in entry and isinstance(sender_id, str) and isinstance(digest, str):
                at = entry.get("accepted_at")
                accepted[str(entry["entry"])] = (
                    sender_id,
                    digest,
                    float(at) if isinstance(at, int | float) else 0.0,
                )
    return [v for k, v in accepted.items() if k not in withdrawn]
