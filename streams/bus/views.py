"""Materialised views of the compacted state topics, and the producer every write goes through.

Every worker reads the whole ``registry.changes``, ``lifecycle`` and ``ledger`` topics into
memory (a replicated table), with its own group-less consumer. This is deliberate rather than
Faust tables: the registry must be complete on every worker (any identity's event may need any
account), and Faust table recovery has known hangs (faust#74, #21) that a plain consumer read
to the end offsets avoids. Readiness means "caught up to the end offsets seen at start".

Writes are applied locally first (read-your-writes) and tagged with this process's writer id,
so the tail consumer skips its own records instead of re-applying an older value over a newer.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from streams.bus.rulelog import RuleStateLog
from streams.bus.security import aio_consumer, aio_producer
from streams.model.leak_index import LeakIndex
from streams.model.registry import Registry
from streams.model.state import StateStore
from streams.support.errors import BrokerError
from streams.support.gcpause import gc_paused

log = structlog.get_logger(__name__)

WRITER_HEADER = "ag-writer"
#: Registry-topic keys of the SCIM service's resource state (connectors/ingest/scim): kept
#: beside the registry, not in it, and left alone by ``registry import``.
SCIM_KEY_PREFIX = "scim:"
#: Registry ids of the identities the SCIM service created: a registry file does not declare
#: them, and ``registry import`` does not remove them for that.
SCIM_IDENTITY_PREFIX = "scim-"


class Publisher:
    """One aiokafka producer per process; :meth:`send` returns only after the broker acked.

    :attr:`reachable` says whether the broker answered lately: a metadata probe every
    ``probe_interval`` seconds (every second while it does not answer, and at once after a
    failed send). It is the ``broker`` readiness check, and the HTTP edges answer 503 at once
    while it is False instead of holding a request for the send timeout."""

    def __init__(
        self, bootstrap: str, *, client_id: str = "accessguard", probe_interval: float = 2.0
    ) -> None:
        self.bootstrap = bootstrap
        self.writer_id = uuid.uuid4().hex[:12].encode()
        self.client_id = client_id
        self.probe_interval = probe_interval
        self._producer: AIOKafkaProducer | None = None
        self._started = False
        self._reachable = False
        self._watcher: asyncio.Task[None] | None = None
        self._poke: asyncio.Event | None = None

    @property
    def started(self) -> bool:
        return self._started

    @property
    def reachable(self) -> bool:
        return self._started and self._reachable

    async def _probe(self) -> str | None:
        """None when the broker answers a metadata request, else why not."""
        assert self._producer is not None
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), 3.0)
        except (KafkaError, TimeoutError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    async def _watch(self) -> None:
        assert self._poke is not None
        while self._started:
            interval = self.probe_interval if self._reachable else 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), interval)
            self._poke.clear()
            if not self._started:
                return
            error = await self._probe()
            if error is None and not self._reachable:
                log.info("broker.recovered", bootstrap=self.bootstrap)
            elif error is not None and self._reachable:
                log.error(
                    "broker.lost",
                    bootstrap=self.bootstrap,
                    error=error,
                    effect="input is refused with 503 until the broker answers again",
                )
            self._reachable = error is None

    async def start(self, timeout: float = 30.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            # aiokafka binds the running loop at construction, so build it here, not in __init__
            self._producer = aio_producer(
                self.bootstrap,
                client_id=self.client_id,
                acks="all",
                linger_ms=0,
                request_timeout_ms=10000,
                max_request_size=1048576,
            )
            try:
                await self._producer.start()
                self._started = True
                self._reachable = True
                self._poke = asyncio.Event()
                self._watcher = asyncio.get_running_loop().create_task(self._watch())
                return
            except KafkaError as exc:
                with contextlib.suppress(Exception):
                    await self._producer.stop()
                if asyncio.get_running_loop().time() > deadline:
                    raise BrokerError(f"cannot reach broker {self.bootstrap}: {exc}") from exc
                log.warning("broker.unreachable", bootstrap=self.bootstrap, error=str(exc))
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self._started and self._producer is not None:
            self._started = False
            if self._watcher is not None:
                self._watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._watcher
            await self._producer.stop()

    async def send(
        self,
        topic: str,
        key: str,
        value: bytes | None,
        *,
        timeout: float = 10.0,
        partition: int | None = None,
    ) -> Any:
        """Send one record and wait for the broker's acknowledgement."""
        if self._producer is None or not self._started:
            raise BrokerError(f"producer not started; cannot write to {topic}")
        try:
            return await asyncio.wait_for(
                self._producer.send_and_wait(
                    topic,
                    value,
                    key=key.encode(),
                    partition=partition,
                    headers=[(WRITER_HEADER, self.writer_id)],
                ),
                timeout,
            )
        except (KafkaError, TimeoutError) as exc:
            if self._poke is not None:
                self._poke.set()  # probe now: readiness follows within a second
            raise BrokerError(f"broker did not acknowledge a write to {topic}: {exc!r}") from exc

    async def send_json(
        self, topic: str, key: str, value: Any, *, partition: int | None = None
    ) -> Any:
        return await self.send(
            topic, key, None if value is None else orjson.dumps(value), partition=partition
        )


class Views:
    """Registry, lifecycle state and action ledger, materialised from their topics."""

    def __init__(
        self,
        bootstrap: str,
        *,
        registry_topic: str,
        lifecycle_topic: str | None,
        ledger_topic: str | None,
        writer_id: bytes,
        rule_state_topic: str | None = None,
        rule_state: RuleStateLog | None = None,
        plus_tag_domains: frozenset[str] = frozenset(),
    ) -> None:
        self.bootstrap = bootstrap
        self.registry = Registry.from_changes([])
        #: Who a leaked principal is; built once caught up, then kept current change by change.
        self.plus_tag_domains = plus_tag_domains
        self.leak_index: LeakIndex | None = None
        self.state = StateStore()
        self.ledger: dict[str, dict[str, Any]] = {}
        #: SCIM id -> the SCIM service's stored resource (keys ``scim:<id>`` of the registry
        #: topic): durable, and the same on every worker, like the registry it describes.
        self.scim: dict[str, dict[str, Any]] = {}
        self.writer_id = writer_id
        # lifecycle and ledger None: a registry-only view (the SSF transmitter's subjects)
        self._topics = {registry_topic: self._apply_registry}
        if lifecycle_topic is not None:
            self._topics[lifecycle_topic] = self._apply_state
        if ledger_topic is not None:
            self._topics[ledger_topic] = self._apply_ledger
        self.rule_state = rule_state
        if rule_state_topic is not None and rule_state is not None:
            self._topics[rule_state_topic] = self._apply_rule_state
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self.records_applied = 0
        #: Next offset to apply, per partition of the state topics (what caught_up waits for).
        self._position: dict[TopicPartition, int] = {}
        self.on_registry_change: list[Callable[[], None]] = []

    @property
    def tailing(self) -> bool:
        """The tail consumer is running (caught up at start and still following the topics)."""
        return self._task is not None and not self._task.done()

    def put_registry(self, key: str, value: Any) -> None:
        """Apply one registry change this process wrote (read-your-writes: the tail skips
        this writer's own records)."""
        self._apply_registry(key, value)

    def _apply_registry(self, key: str, value: Any) -> None:
        if key.startswith(SCIM_KEY_PREFIX):
            if value is None:
                self.scim.pop(key[len(SCIM_KEY_PREFIX) :], None)
            else:
                self.scim[key[len(SCIM_KEY_PREFIX) :]] = value
            return
        self.registry.apply_change(key, value)
        if self.leak_index is not None:
            self.leak_index.apply_change(key, value)
        for hook in self.on_registry_change:
            hook()

    def _apply_state(self, key: str, value: Any) -> None:
        self.state.apply(key, value)

    def _apply_ledger(self, key: str, value: Any) -> None:
        if value is None:
            self.ledger.pop(key, None)
        else:
            self.ledger[key] = value

    def _apply_rule_state(self, key: str, value: Any) -> None:
        if self.rule_state is not None:
            self.rule_state.apply(key, value)

    async def start(self, timeout: float = 60.0) -> None:
        consumer = aio_consumer(
            self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
            client_id="accessguard-views",
        )
        await consumer.start()
        self._consumer = consumer
        parts: list[TopicPartition] = []
        for topic in self._topics:
            found = consumer.partitions_for_topic(topic)
            if not found:
                await consumer._client.force_metadata_update()  # new topics after start
                found = consumer.partitions_for_topic(topic) or {0}
            parts.extend(TopicPartition(topic, p) for p in sorted(found))
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        pending = {tp: off for tp, off in end.items() if off > 0}
        deadline = asyncio.get_running_loop().time() + timeout
        while pending:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, records in batch.items():
                # Catching up builds the whole registry (2.6 records per identity): the cyclic
                # collector's passes over it cost a quarter of the time and find no cycles.
                with gc_paused():
                    self._apply_batch(tp.topic, records, own_too=True)
                if records:
                    self._position[tp] = records[-1].offset + 1
                if tp in pending and records and records[-1].offset + 1 >= pending[tp]:
                    del pending[tp]
            if asyncio.get_running_loop().time() > deadline:
                raise BrokerError(f"state topics not caught up after {timeout:.0f}s: {pending}")
        with gc_paused():
            self.leak_index = LeakIndex.build(self.registry, self.plus_tag_domains)
        self.ready.set()
        log.info(
            "views.ready",
            identities=len(self.registry.identities),
            accounts=len(self.registry.accounts),
            ledger=len(self.ledger),
        )
        self._task = asyncio.create_task(self._tail(), name="views-tail")

    def _apply_batch(self, topic: str, records: list[Any], *, own_too: bool) -> None:
        apply = self._topics[topic]
        for rec in records:
            if not own_too and any(
                h[0] == WRITER_HEADER and h[1] == self.writer_id for h in rec.headers or ()
            ):
                continue
            key = rec.key.decode() if rec.key else ""
            if not key:
                log.warning("views.keyless_record", topic=topic, offset=rec.offset)
                continue
            try:
                value = None if rec.value is None else orjson.loads(rec.value)
                apply(key, value)
                self.records_applied += 1
            except Exception as exc:  # noqa: BLE001 - one bad record must not stop the view
                log.error("views.bad_record", topic=topic, offset=rec.offset, error=repr(exc))

    async def caught_up(self, topic: str, timeout: float = 10.0) -> bool:
        """Wait until everything on ``topic`` when called has been applied (a partition
        handover: the new owner must hold the old owner's last checkpoint before it
        evaluates a key). False when ``timeout`` passed first (logged; work goes on)."""
        consumer = self._consumer
        if consumer is None or topic not in self._topics:
            return True
        parts = [tp for tp in consumer.assignment() if tp.topic == topic]
        try:
            end = await consumer.end_offsets(parts)
        except KafkaError as exc:
            log.warning("views.catch_up_failed", topic=topic, error=str(exc))
            return False
        deadline = asyncio.get_running_loop().time() + timeout
        while any(self._position.get(tp, 0) < off for tp, off in end.items()):
            if asyncio.get_running_loop().time() > deadline:
                log.warning("views.catch_up_timeout", topic=topic, timeout_s=timeout)
                return False
            await asyncio.sleep(0.01)
        return True

    async def _tail(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=500, max_records=5000)
            except KafkaError as exc:
                log.warning("views.fetch_failed", error=str(exc))
                await asyncio.sleep(1.0)
                continue
            for tp, records in batch.items():
                self._apply_batch(tp.topic, records, own_too=False)
                if records:
                    self._position[tp] = records[-1].offset + 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
