"""The worker's writes: journal first, then the topic, each waited for until it lands.

Everything the worker decides is written whole (a new value for one key) to the journal and
then to its compacted topic, awaiting the broker's ack, before anything depends on it; a crash
at any point is then repaired by redelivery. :class:`Writer` holds those writes for
:class:`~streams.runtime.engine.Engine` (which is one) and for the plan runner and alert router
it hands them to (:mod:`streams.runtime.plans`, :mod:`streams.runtime.alerts`).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Any

import structlog

from streams.bus.auditchain import AuditChain
from streams.bus.journal import Journal
from streams.bus.topics import Topics
from streams.bus.views import Publisher, Views
from streams.model.state import StateValue
from streams.support import metrics
from streams.support.errors import BrokerError, JournalError

# One logger name for the worker's core, as before it was split into modules.
log = structlog.get_logger("streams.runtime.engine")

#: Backoff between attempts while the journal cannot be written (disk full), seconds.
JOURNAL_RETRY_MIN = 0.2
JOURNAL_RETRY_MAX = 2.0
#: The same while the broker does not acknowledge the worker's writes, seconds.
BROKER_RETRY_MIN = 0.2
BROKER_RETRY_MAX = 5.0


class Writer:
    """Journal, topics and the local views, written in that order. Event loop only."""

    def __init__(
        self,
        *,
        topics: Topics,
        publisher: Publisher,
        views: Views,
        journal: Journal,
        clock: Callable[[], float],
    ) -> None:
        self.topics = topics
        self.publisher = publisher
        self.views = views
        self.journal = journal
        self.clock = clock
        #: Serialises the worker's journal writes while they wait for space (FIFO): two
        #: values of one key land in the order they were decided, never the older last.
        self._journal_lock = asyncio.Lock()
        #: This writer's audit hash chain, resumed from the journal's last chained entry.
        self.chain = AuditChain.resume(journal.path)

    async def record(self, kind: str, *, durable: bool = False, **fields: Any) -> dict[str, Any]:
        """Append to the journal, waiting in place while it cannot be written (disk full).

        What the worker records is never dropped, and the work before it is not redone: a
        provider call already made is recorded once space is back, not made again; a decision
        already taken (and applied in memory) is written, not re-decided as a duplicate.
        Meanwhile the journal logs the failure and the ``journal_writable`` readiness check
        fails. Cancelled at shutdown: the unfinished plan resumes from the journal at the next
        start, and the ledger keeps what was recorded from being done twice.

        ``durable`` returns only once an fsync covers the entry (group commit,
        :meth:`~streams.bus.journal.Journal.commit`): concurrent plans share fsyncs, which
        run off the event loop, instead of each blocking it for one."""
        delay = JOURNAL_RETRY_MIN
        async with self._journal_lock:
            while True:
                try:
                    entry, seq = self.journal.write(kind, **fields)
                    break
                except JournalError:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, JOURNAL_RETRY_MAX)
        if durable:
            # Outside the lock: the next writes go on while this one waits for its fsync.
            delay = JOURNAL_RETRY_MIN
            while True:
                try:
                    await self.journal.commit(seq)
                    break
                except JournalError as exc:
                    log.warning("journal.fsync_waiting", error=str(exc)[:300])
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, JOURNAL_RETRY_MAX)
        return entry

    async def _append_waiting(
        self, kind: str, durable: bool, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """:meth:`record`'s retry loop for a caller that holds the journal lock (the audit
        chain seals and writes under it)."""
        delay = JOURNAL_RETRY_MIN
        while True:
            try:
                return self.journal.append(kind, durable=durable, **fields)
            except JournalError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, JOURNAL_RETRY_MAX)

    async def publish(self, topic: str, key: str, value: Any) -> None:
        await publish_waiting(self.publisher, topic, key, value)

    async def put_state(self, value: StateValue) -> None:
        self.views.state.put(value)
        data = value.to_dict()
        await self.record("state", key=value.key, value=data)
        await self.publish(self.topics.lifecycle, value.key, data)

    async def put_ledger(self, key: str, value: dict[str, Any]) -> None:
        self.views.ledger[key] = value
        await self.record("ledger", durable=True, key=key, value=value)
        await self.publish(self.topics.ledger, key, value)

    async def audit(self, kind: str, key: str, **fields: Any) -> None:
        """Journal, then publish, one link of the audit chain (:mod:`streams.bus.auditchain`).
        Sealed under the journal lock, so seq follows journal order; the head advances only
        once the journal has the record (one cancelled while the disk is full leaves no gap).
        The first call after a restart first republishes the chain's last journaled records,
        which a crash may have kept off the topic."""
        if self.chain.unconfirmed:
            pending, self.chain.unconfirmed = self.chain.unconfirmed, []
            await asyncio.gather(
                *(self.publish(self.topics.audit, self.chain.chain_id, old) for old in pending)
            )
        async with self._journal_lock:
            sealed = self.chain.seal(kind, round(time.time(), 6), fields)
            del sealed["kind"]  # the journal's own argument; the entry it writes has it again
            entry = await self._append_waiting(kind, False, sealed)
            self.chain.advance(entry)
        await self.publish(self.topics.audit, key, entry)

    async def dead_letter(
        self, source_topic: str, raw: bytes | None, reason: str, *, dlq: str | None = None
    ) -> None:
        text = (raw or b"")[:65536]
        try:
            body: str = text.decode()
            encoding = "utf-8"
        except UnicodeDecodeError:
            body, encoding = base64.b64encode(text).decode(), "base64"
        record = {
            "topic": source_topic,
            "reason": reason,
            "value": body,
            "encoding": encoding,
            "ts": self.clock(),
        }
        short = reason.split(":", 1)[0][:40]
        metrics.DEAD_LETTERS.labels(source_topic, short).inc()
        await self.record("dead_letter", topic=source_topic, reason=reason)
        await self.publish(dlq or self.topics.hr_dlq, "dlq", record)
        log.warning("record.dead_lettered", topic=source_topic, reason=reason)


async def publish_waiting(
    publisher: Publisher, topic: str, key: str, value: Any, *, partition: int | None = None
) -> None:
    """Write to the broker, waiting in place while it is unreachable (like
    :meth:`Writer.record` for the journal). A write the worker has decided must land:
    failing here would leave the decision applied in memory and in the journal but not on
    its topic, and the retried event would then look like a duplicate and be dropped.
    Waiting keeps the writes of a key in order; the agent stalls meanwhile, as it must,
    since nothing can be committed either. Cancelled at shutdown: the journal has it."""
    delay = BROKER_RETRY_MIN
    failing = False
    while True:
        try:
            await publisher.send_json(topic, key, value, partition=partition)
        except BrokerError as exc:
            if not failing:
                log.warning(
                    "broker.write_waiting",
                    topic=topic,
                    error=str(exc)[:300],
                    effect="processing waits until the broker acknowledges",
                )
            failing = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, BROKER_RETRY_MAX)
            continue
        if failing:
            log.info("broker.write_done", topic=topic)
        return


async def with_broker_retry(what: str, fn: Callable[[], Any], *, attempts: int = 0) -> Any:
    """Retry an infrastructure write (broker or journal) until it works: the event must not
    be acknowledged before its effects are recorded. ``attempts`` 0 means forever."""
    delay = 0.2
    tries = 0
    while True:
        tries += 1
        try:
            return await fn()
        except (BrokerError, JournalError) as exc:
            if attempts and tries >= attempts:
                raise
            log.warning("infrastructure.retry", what=what, error=str(exc), delay=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
