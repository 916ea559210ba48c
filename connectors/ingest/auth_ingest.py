"""Login-event ingest: ``POST /v1/auth/events?vendor=okta|entra|google|generic``.

Bearer-token authenticated (constant-time compare). The body is a JSON array, a single JSON
object, or NDJSON (one payload a line). Each record is normalised at the edge into
LoginEvents; one bad record never rejects its batch: the answer lists per-record results, and
every rejected record goes to the dead-letter topic with its reason.

Accepted events are published in batches — many events per Kafka message, one message per
partition — because the cost of a Faust hop is per message, not per event
(docs/operations-notes.md). The 200 is returned only after the broker acknowledged every
batch.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
import structlog
from aiohttp import web

from connectors.base.health import SourceHealth
from connectors.base.sources import NORMALISERS, normalise, normalise_all
from connectors.ingest.edge import AuthGuard, json_answer, read_body
from streams.bus.topics import partition_for
from streams.bus.views import Publisher
from streams.model.identity import IdentityEvent
from streams.model.records import LoginEvent
from streams.support import metrics
from streams.support.errors import BrokerError, ValidationError
from streams.support.secrets import Secret

log = structlog.get_logger(__name__)

SOURCE = "auth_ingest"
#: Events per Kafka message: large enough to amortise Faust's per-message cost, small enough
#: to stay far under the broker's message size limit (an event is ~0.5 KiB).
BATCH_EVENTS = 500


def split_records(body: bytes, content_type: str) -> Iterator[tuple[int, Any, str | None]]:
    """Yield ``(index, payload, error)`` for each record of a JSON array, object or NDJSON."""
    text = body.strip()
    if not text:
        return
    if content_type != "application/x-ndjson" and text[:1] in (b"[", b"{"):
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            if text[:1] == b"[":
                raise ValidationError("body is not valid JSON") from None
            data = None  # several objects: NDJSON without the content type
        if data is not None:
            for index, item in enumerate(data if isinstance(data, list) else [data]):
                yield index, item, None
            return
    for index, line in enumerate(text.split(b"\n")):
        if not line.strip():
            continue
        try:
            yield index, orjson.loads(line), None
        except orjson.JSONDecodeError as exc:
            yield index, None, f"line {index + 1}: invalid JSON: {exc.msg}"


#: Bodies larger than this are parsed and normalised off the event loop (a 10 MB batch
#: takes a few hundred milliseconds of CPU).
OFFLOAD_BYTES = 256 * 1024

Parsed = tuple[list[dict[str, Any]], list[tuple[int, Any, str]], list[LoginEvent | IdentityEvent]]


def parse_batch(body: bytes, ctype: str, vendor: str, *, identity: bool = False) -> Parsed:
    """Split and normalise one request body: per-record results, the rejected records with
    their reasons, the LoginEvents (and, with ``identity``, the IdentityEvents; audit types
    outside the vendor's security allow-list are then accepted with 0 events, counted, not
    rejected). Raises ValidationError for a body that is not JSON."""
    results: list[dict[str, Any]] = []
    rejected: list[tuple[int, Any, str]] = []
    events: list[LoginEvent | IdentityEvent] = []
    for index, payload, split_error in split_records(body, ctype):
        error = split_error
        normalised: list[LoginEvent | IdentityEvent] = []
        if error is None:
            try:
                if identity:
                    normalised = normalise_all(vendor, payload)
                else:
                    normalised = list(normalise(vendor, payload))
            except ValidationError as exc:
                error = exc.reason
        if error is not None:
            rejected.append((index, payload, error))
            results.append({"index": index, "status": "rejected", "reason": error})
            continue
        events.extend(normalised)
        results.append({"index": index, "status": "accepted", "events": len(normalised)})
    return results, rejected, events


class AuthIngest:
    """The aiohttp handler. One instance per process."""

    def __init__(
        self,
        *,
        token: Secret | None,
        max_body: int,
        publisher: Publisher,
        topic: str,
        dlq_topic: str,
        partitions: int,
        guard: AuthGuard | None = None,
        key_of: Callable[[LoginEvent], str] | None = None,
        identity_topic: str | None = None,
    ) -> None:
        self.token = token
        self.guard = guard or AuthGuard()
        self.max_body = max_body
        #: With a topic for them, identity-security events in a vendor's audit payloads are
        #: published there instead of rejected as "not a login event".
        self.identity = identity_topic is not None
        self.out = LoginPublisher(
            publisher,
            topic=topic,
            dlq_topic=dlq_topic,
            partitions=partitions,
            key_of=key_of,
            identity_topic=identity_topic,
        )
        #: One source per vendor (``auth_ingest:<vendor>``), as the dashboards show them.
        self.health = {v: SourceHealth(f"{SOURCE}:{v}") for v in NORMALISERS}

    def _reject(self, status: int, reason: str, metric: str, vendor: str = "-") -> web.Response:
        metrics.EVENTS_REJECTED.labels(f"{SOURCE}:{vendor}", metric).inc()
        return json_answer(status, {"error": reason})

    async def handle(self, request: web.Request) -> web.Response:
        if self.token is None:
            return self._reject(
                403, "POST /v1/auth/events is not enabled: set auth.ingest_token", "not_enabled"
            )
        denied = self.guard.bearer(request, SOURCE, self.token)
        if denied is not None:
            reason = "throttled" if denied.status == 429 else "bad_signature"
            metrics.EVENTS_REJECTED.labels(f"{SOURCE}:-", reason).inc()
            return denied
        vendor = request.query.get("vendor", "generic")
        if vendor not in NORMALISERS:
            return self._reject(
                400, f"vendor must be one of {', '.join(NORMALISERS)}", "invalid_field"
            )
        body = await read_body(request, self.max_body)
        if body is None:
            return self._reject(413, f"body larger than {self.max_body} bytes", "too_large", vendor)
        ctype = request.headers.get("Content-Type", "application/json").split(";")[0].strip()

        def prepare() -> tuple[Parsed, list[tuple[int, bytes]], list[tuple[int, bytes]]]:
            parsed = parse_batch(body, ctype, vendor, identity=self.identity)
            logins = [e for e in parsed[2] if isinstance(e, LoginEvent)]
            others = [e for e in parsed[2] if isinstance(e, IdentityEvent)]
            found = (
                encode_batches(others, self.out.identity_key_of, self.out.partitions)
                if others
                else []
            )
            return parsed, self.out.encode(logins), found

        try:
            if len(body) > OFFLOAD_BYTES:
                # A big batch is parsed and encoded in a thread: /healthz and the HR webhook
                # keep answering meanwhile.
                parsed, batches, found = await asyncio.get_running_loop().run_in_executor(
                    None, prepare
                )
            else:
                parsed, batches, found = prepare()
        except ValidationError as exc:
            return self._reject(400, exc.reason, "bad_json", vendor)
        results, rejected, events = parsed
        if not results:
            return self._reject(400, "no records in body", "invalid_field", vendor)
        try:
            if not self.out.publisher.reachable:  # known down: answer now
                raise BrokerError("broker unreachable")
            await self.out.send(batches)
            if found and self.out.identity_topic is not None:
                await self.out.send(found, topic=self.out.identity_topic)
            await self._dead_letter(vendor, rejected)
        except BrokerError:
            return self._reject(
                503, "broker unavailable; retry later", "broker_unavailable", vendor
            )
        self.health[vendor].accepted(len(events))
        self.health[vendor].rejected("bad_record", len(rejected))
        return web.json_response(
            {
                "accepted": len(results) - len(rejected),
                "rejected": len(rejected),
                "events": len(events),
                "results": results,
            },
            status=200,
            dumps=lambda o: orjson.dumps(o).decode(),
        )

    async def _dead_letter(self, vendor: str, rejected: list[tuple[int, Any, str]]) -> None:
        # Concurrently, a chunk at a time: the producer batches them (one awaited round trip
        # per rejected record made a batch of bad records take seconds per thousand).
        for start in range(0, len(rejected), BATCH_EVENTS):
            await asyncio.gather(
                *(
                    self.out.reject(payload, reason, vendor=vendor, index=index)
                    for index, payload, reason in rejected[start : start + BATCH_EVENTS]
                )
            )


def _principal_key(event: LoginEvent) -> str:
    return event.partition_key


def _subject_key(event: IdentityEvent) -> str:
    return event.partition_key


def encode_batches(
    events: Sequence[IdentityEvent], key_of: Callable[[IdentityEvent], str], partitions: int
) -> list[tuple[int, bytes]]:
    """IdentityEvents as ``(partition, JSON array)`` batches of at most BATCH_EVENTS."""
    by_partition: dict[int, list[bytes]] = defaultdict(list)
    for event in events:
        by_partition[partition_for(key_of(event), partitions)].append(orjson.dumps(event.to_dict()))
    return [
        (partition, b"[" + b",".join(encoded[start : start + BATCH_EVENTS]) + b"]")
        for partition, encoded in sorted(by_partition.items())
        for start in range(0, len(encoded), BATCH_EVENTS)
    ]


class LoginPublisher:
    """Writes normalised login events to the auth.events topic, many per Kafka message and one
    message per partition, and rejected payloads to its dead-letter topic. Shared by the HTTP
    ingest and the pollers. Every call returns only after the broker acknowledged.

    With ``identity_topic``, :meth:`publish` also takes IdentityEvents (what a poller's audit
    log holds beside logins) and writes them there, batched and keyed the same way."""

    def __init__(
        self,
        publisher: Publisher,
        *,
        topic: str,
        dlq_topic: str,
        partitions: int,
        key_of: Callable[[LoginEvent], str] | None = None,
        identity_topic: str | None = None,
        identity_key_of: Callable[[IdentityEvent], str] | None = None,
    ) -> None:
        self.publisher = publisher
        self.topic = topic
        self.identity_topic = identity_topic
        self.identity_key_of = identity_key_of or _subject_key
        self.dlq_topic = dlq_topic
        self.partitions = partitions
        #: The key an event is partitioned by. Where the process holds the registry (the
        #: worker's own edges and pollers) it is the resolved identity's key, so the worker
        #: that owns that identity gets the event first hand; without it, the principal's,
        #: and workers route events to the owner (streams/runtime/engine.py).
        self.key_of = key_of or _principal_key

    def encode(self, events: list[LoginEvent]) -> list[tuple[int, bytes]]:
        """``(partition, message)`` batches of at most BATCH_EVENTS events (pure CPU: the
        HTTP edge runs it in a thread with the parse for a big body)."""
        by_partition: dict[int, list[bytes]] = defaultdict(list)
        key_of = self.key_of
        for event in events:
            by_partition[partition_for(key_of(event), self.partitions)].append(
                orjson.dumps(event.to_dict())
            )
        batches: list[tuple[int, bytes]] = []
        for partition, encoded in sorted(by_partition.items()):
            for start in range(0, len(encoded), BATCH_EVENTS):
                chunk = encoded[start : start + BATCH_EVENTS]
                batches.append((partition, b"[" + b",".join(chunk) + b"]"))
        return batches

    async def send(self, batches: list[tuple[int, bytes]], *, topic: str | None = None) -> None:
        for partition, value in batches:
            await self.publisher.send(
                topic or self.topic, f"batch:{partition}", value, partition=partition
            )

    async def publish(self, events: Sequence[LoginEvent | IdentityEvent]) -> None:
        logins = [e for e in events if isinstance(e, LoginEvent)]
        if len(logins) != len(events):
            others = [e for e in events if isinstance(e, IdentityEvent)]
            if self.identity_topic is None:
                raise ValueError("identity events given to a publisher without identity_topic")
            await self.send(
                encode_batches(others, self.identity_key_of, self.partitions),
                topic=self.identity_topic,
            )
        await self.send(self.encode(logins))

    async def reject(
        self, payload: Any, reason: str, *, vendor: str = "-", index: int | None = None
    ) -> None:
        record = {
            "topic": self.topic,
            "vendor": vendor,
            "index": index,
            "reason": reason,
            "value": payload,
            "ts": time.time(),
        }
        try:
            orjson.dumps(record)
        except TypeError:  # orjson.JSONEncodeError: decoded JSON nested deeper than orjson
            # writes (254 levels; it reads 1024). Was a 500 for the whole batch.
            record["value"] = None
            record["value_dropped"] = "nested too deeply to serialise"
        await self.publisher.send_json(self.dlq_topic, f"dlq:{vendor}", record)
        metrics.DEAD_LETTERS.labels(self.topic, "invalid").inc()
