"""Leaked credentials into the ``leak.records`` topic: dump imports, ``POST /v1/leaks`` and
the HIBP feed share the batching here.

Records are matched against the registry **before** they travel (:class:`LeakMatcher`): a
dump of a million addresses usually holds a few hundred of ours, and only those are worth a
Kafka message. Matched records go many to a message (a JSON array, :class:`LeakBatcher`), one
message stream per partition keyed like the worker's partitioner, because the cost of a Faust
hop is per message (docs/operations-notes.md). The worker matches again against its own,
current registry view and decides (:func:`streams.decide.leaks.decide_leak`); every effect is keyed
by the record's
cause, so publishing the same records twice (a re-import, a retried request, a feed round
replayed after a crash) does nothing twice. Importing a dump file, in one process or several,
is :mod:`connectors.ingest.leak_import`.

``POST /v1/leaks`` takes its own bearer token ``leaks.ingest_token`` (the login-ingest token
only when ``leaks.accept_auth_token`` says so); the body is parsed exactly like a dump file
(:func:`connectors.ingest.dumps.parse_body`; ``?format=``, else ``Content-Type``, else the content
picks the format) within bounds (:class:`LeakIngest`), and the answer lists every record's
result (``matched``, ``unmatched`` or ``rejected`` with the line and reason).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import structlog
from aiohttp import web

from connectors.base.health import SourceHealth
from connectors.ingest.dumps import (
    FORMATS,
    DumpOptions,
    DumpSummary,
    DumpTooLarge,
    Rejection,
    check_breach_name,
    parse_body,
)
from connectors.ingest.edge import AuthGuard, json_answer, read_body
from streams.bus.leakbatch import LeakBatcher
from streams.bus.views import Publisher
from streams.model.leak_index import LeakIndex
from streams.model.records import LeakRecord
from streams.support import metrics
from streams.support.errors import BrokerError, ValidationError
from streams.support.secrets import Secret

log = structlog.get_logger(__name__)

SOURCE = "leak_ingest"
#: Records per Kafka message (a record is ~0.3 KiB: far under the 1 MiB message limit).
BATCH_RECORDS = 1000
#: Longest a matched record waits in a partly filled batch during an import (seconds).
LINGER_SECONDS = 0.1
#: Rejections listed (line, code, reason) in an import's summary; all are counted.
MAX_REJECTIONS_LISTED = 100


@dataclass
class LeakMatcher:
    """Keeps the records someone in the registry holds and batches them by partition.
    ``index`` None keeps every record (the worker matches anyway). A partly filled batch
    waits at most ``linger`` seconds (:meth:`due`): a dump is mostly strangers, and the
    matches of a sparse stretch should not wait for the end of the file."""

    index: LeakIndex | None
    partitions: int
    batch_size: int = BATCH_RECORDS
    linger: float = LINGER_SECONDS
    matched: int = 0
    unmatched: int = 0
    batcher: LeakBatcher = field(init=False)
    _since: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.batcher = LeakBatcher(self.partitions, self.batch_size)

    def matches(self, record: LeakRecord) -> bool:
        return self.index is None or self.index.lookup(record.principal) is not None

    def add(self, record: LeakRecord) -> tuple[int, bytes] | None:
        """Queue ``record`` if it matches; returns a full ``(partition, message)`` batch."""
        if not self.matches(record):
            self.unmatched += 1
            return None
        self.matched += 1
        if self._since is None:
            self._since = time.monotonic()
        return self.batcher.add(record)

    def due(self) -> list[tuple[int, bytes]]:
        """The partly filled batches when the oldest has waited ``linger`` seconds."""
        if self._since is None or time.monotonic() - self._since < self.linger:
            return []
        return self.flush()

    def flush(self) -> list[tuple[int, bytes]]:
        self._since = None
        return self.batcher.flush()


class LeakPublisher:
    """Writes LeakRecords to ``leak.records`` (batched per partition) and rejected payloads to
    its dead-letter topic. Every call returns only after the broker acknowledged."""

    def __init__(
        self, publisher: Publisher, *, topic: str, dlq_topic: str, partitions: int
    ) -> None:
        self.publisher = publisher
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.partitions = partitions

    async def send_batches(self, batches: Iterable[tuple[int, bytes]]) -> int:
        sent = 0
        for part, message in batches:
            await self.publisher.send(self.topic, f"batch:{part}", message, partition=part)
            sent += 1
        return sent

    async def publish(self, records: list[LeakRecord]) -> None:
        matcher = LeakMatcher(None, self.partitions)
        full = [b for b in (matcher.add(r) for r in records) if b is not None]
        await self.send_batches([*full, *matcher.flush()])

    async def reject(self, payload: Any, reason: str, *, source: str = "-") -> None:
        record = {
            "topic": self.topic,
            "source": source,
            "reason": reason,
            "value": payload,
            "ts": time.time(),
        }
        await self.publisher.send_json(self.dlq_topic, f"dlq:{source}", record)


#: Defaults of ``leaks.max_request_bytes`` / ``leaks.max_request_records``.
MAX_REQUEST_BYTES = 64 * 1048576
MAX_REQUEST_RECORDS = 100_000
#: Uploads parsed at once; more are answered 503 + Retry-After (memory stays bounded).
MAX_CONCURRENT_UPLOADS = 2


@dataclass
class _Parsed:
    """What the parsing thread hands back to the event loop."""

    summary: DumpSummary
    results: list[dict[str, Any]]
    batches: list[tuple[int, bytes]]
    matched: int
    rejections: list[dict[str, Any]]


def _parse_and_match(
    body: bytes, ctype: str, options: DumpOptions, index: LeakIndex | None, partitions: int
) -> _Parsed:
    """Parse, match and batch one request body (runs in a thread, off the event loop)."""
    items, summary = parse_body(body, ctype, options)
    matcher = LeakMatcher(index, partitions)
    results: list[dict[str, Any]] = []
    batches: list[tuple[int, bytes]] = []
    rejections: list[dict[str, Any]] = []
    for position, item in enumerate(items):
        if isinstance(item, Rejection):
            entry = {
                "index": position,
                "status": "rejected",
                "line": item.line,
                "code": item.code,
                "reason": item.reason,
            }
            results.append(entry)
            if len(rejections) < MAX_REJECTIONS_LISTED:
                rejections.append(entry)
            continue
        matched = matcher.matches(item)
        full = matcher.add(item)
        if full is not None:
            batches.append(full)
        results.append({"index": position, "status": "matched" if matched else "unmatched"})
    batches.extend(matcher.flush())
    return _Parsed(summary, results, batches, matcher.matched, rejections)


class LeakIngest:
    """The ``POST /v1/leaks`` handler. ``index`` gives the worker's current LeakIndex.

    A body is at most ``max_body`` bytes as sent and ``max_bytes`` once decompressed, with at
    most ``max_records`` records (413 past either: a 51 KB gzip bomb used to expand into
    gigabytes). It is parsed in a thread, off the event loop, so health checks and the
    other endpoints answer while it runs; at most ``concurrency`` at a time (503 +
    Retry-After beyond)."""

    def __init__(
        self,
        *,
        token: Secret | None,
        max_body: int,
        out: LeakPublisher,
        index: Callable[[], LeakIndex | None],
        options: DumpOptions,
        max_bytes: int = MAX_REQUEST_BYTES,
        max_records: int = MAX_REQUEST_RECORDS,
        concurrency: int = MAX_CONCURRENT_UPLOADS,
        guard: AuthGuard | None = None,
    ) -> None:
        self.token = token
        self.max_body = max_body
        self.out = out
        self.index = index
        self.options = options
        self.max_bytes = max_bytes
        self.max_records = max_records
        self.concurrency = concurrency
        self.guard = guard or AuthGuard()
        self._busy = 0
        self.health = SourceHealth(SOURCE, ())
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="leak-upload")

    _answer = staticmethod(json_answer)

    def _reject(self, status: int, reason: str, metric: str, **extra: Any) -> web.Response:
        metrics.EVENTS_REJECTED.labels(SOURCE, metric).inc()
        return self._answer(status, {"error": reason, **extra})

    def _options(self, request: web.Request) -> DumpOptions | str:
        """The read options of this request, or why its query is invalid."""
        changes: dict[str, Any] = {"max_bytes": self.max_bytes, "max_records": self.max_records}
        for name in ("breach", "source"):
            value = request.query.get(name)
            if value is not None:
                try:
                    changes[name] = check_breach_name(value, name)
                except ValidationError as exc:
                    return exc.reason
        fmt = request.query.get("format")
        if fmt is not None:
            if fmt not in FORMATS:
                return f"format: must be one of {', '.join(FORMATS)}"
            changes["format"] = fmt
        if "breach" in changes and "source" not in changes:
            changes["source"] = "api"
        return replace(self.options, **changes)

    async def handle(self, request: web.Request) -> web.Response:
        if self.token is None:
            return self._reject(
                403, "POST /v1/leaks is not enabled: set leaks.ingest_token", "not_enabled"
            )
        denied = self.guard.bearer(request, SOURCE, self.token)
        if denied is not None:
            return denied
        if self._busy >= self.concurrency:
            return self._reject(
                503, f"{self._busy} leak uploads are being parsed; retry later", "busy"
            )
        self._busy += 1
        try:
            return await self._handle(request)
        finally:
            self._busy -= 1

    async def _handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Content-Encoding", "identity").lower() not in ("", "identity"):
            return self._reject(
                415,
                "Content-Encoding is not accepted: send a gzip file as the body itself "
                "(Content-Type application/gzip)",
                "invalid_field",
            )
        body = await read_body(request, self.max_body)
        if body is None:
            return self._reject(413, f"body larger than {self.max_body} bytes", "too_large")
        options = self._options(request)
        if isinstance(options, str):
            return self._reject(400, options, "invalid_field")
        ctype = request.headers.get("Content-Type", "application/json")
        loop = asyncio.get_running_loop()
        try:
            parsed = await loop.run_in_executor(
                self._pool,
                _parse_and_match,
                body,
                ctype,
                options,
                self.index(),
                self.out.partitions,
            )
        except DumpTooLarge as exc:
            return self._reject(
                413,
                f"upload too large ({exc.reason}): at most {self.max_records} records and "
                f"{self.max_bytes} bytes decompressed per request; split it, or import the "
                "file with `accessguard leaks import`",
                "too_large",
            )
        summary = parsed.summary
        if summary.format == "unreadable":
            return self._reject(400, "body is not readable (corrupt gzip?)", "bad_record")
        if summary.format == "empty" or not parsed.results:
            return self._reject(400, "no records in body", "invalid_field")
        if summary.parsed == 0:
            return self._reject(
                400,
                f"no record understood (read as {summary.format}): {summary.rejected} "
                "rejected; check the format (?format=csv|json|ndjson|combo)",
                "bad_record",
                reasons=dict(summary.reasons),
                rejections=parsed.rejections,
            )
        try:
            if not self.out.publisher.reachable:  # known down: answer now
                raise BrokerError("broker unreachable")
            await self.out.send_batches(parsed.batches)
        except BrokerError:
            return self._reject(503, "broker unavailable; retry later", "broker_unavailable")
        self.health.accepted(summary.parsed)
        # Records of the batch it could not read: the schema-drift alert's share.
        self.health.rejected("bad_record", summary.rejected)
        log.info(
            "leaks.ingested",
            parsed=summary.parsed,
            rejected=summary.rejected,
            matched=parsed.matched,
        )
        return self._answer(
            200,
            {
                "read": summary.read,
                "parsed": summary.parsed,
                "matched": parsed.matched,
                "rejected": summary.rejected,
                "reasons": dict(summary.reasons),
                "results": parsed.results,
            },
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
