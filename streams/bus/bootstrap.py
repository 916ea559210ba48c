"""Start-up steps that run before the worker: journal replay and registry import.

Both use kafka-python (synchronous, no event loop yet) and wait for the broker's
acknowledgement of every record before returning.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog
from kafka import KafkaProducer, TopicPartition

from streams.bus.journal import Journal, replay_records
from streams.bus.security import kafka_consumer, kafka_producer
from streams.bus.topics import LEAK_INDEX_MAX_BYTES, Topics
from streams.bus.views import SCIM_IDENTITY_PREFIX, SCIM_KEY_PREFIX
from streams.config import Config
from streams.model.coverage import gap_problems, provider_gaps
from streams.model.leak_index import LeakIndex
from streams.model.records import HrEvent
from streams.model.registry import Registry, diff_changes
from streams.model.registry_yaml import load_registry
from streams.support.errors import AccessGuardError, ConfigError, RegistryError, ValidationError

log = structlog.get_logger(__name__)


def _producer(bootstrap: str) -> KafkaProducer:
    return kafka_producer(bootstrap, acks="all", linger_ms=5, client_id="accessguard-bootstrap")


def topics_empty(bootstrap: str, topics: list[str]) -> bool:
    consumer = kafka_consumer(bootstrap, client_id="accessguard-probe")
    try:
        parts = [
            TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or {0})
        ]
        return all(v == 0 for v in consumer.end_offsets(parts).values())
    finally:
        consumer.close()


def replay_journal(config: Config, bootstrap: str) -> dict[str, int]:
    """Republish the journal's durable records into empty topics (embedded broker restart).
    Does nothing when any of those topics already holds data (a durable broker)."""
    path = config.data_dir / "journal.jsonl"
    if not path.exists():
        return {}
    by_suffix = replay_records(path)
    names = {config.topic(suffix): records for suffix, records in by_suffix.items()}
    if not topics_empty(bootstrap, list(names)):
        log.info("journal.replay_skipped", reason="topics already hold data")
        return {}
    producer = _producer(bootstrap)
    counts: dict[str, int] = {}
    try:
        for topic, records in names.items():
            futures = [
                producer.send(topic, key=key.encode(), value=value) for key, value in records
            ]
            for fut in futures:
                fut.get(timeout=30)
            counts[topic] = len(futures)
        producer.flush()
    finally:
        producer.close()
    log.info("journal.replayed", **{k.rsplit(".", 1)[-1]: v for k, v in counts.items()})
    return counts


#: One record's identity, to recognise it again: offset, timestamp, key, sha256 of the value.
Fingerprint = tuple[int, int, str, str]


class _Moved(Exception):
    """The record a snapshot ends at is not where the snapshot says (topic recreated or
    compacted past it): read from the beginning."""


def fingerprint(rec: Any) -> Fingerprint:
    value = hashlib.sha256(rec.value).hexdigest() if rec.value is not None else "-"
    return (rec.offset, rec.timestamp, (rec.key or b"").decode(errors="replace"), value)


def _read_changes(
    bootstrap: str,
    topic: str,
    apply: Callable[[str, bytes | None], None],
    *,
    timeout_ms: int,
    client_id: str,
    after: dict[int, Fingerprint] | None = None,
) -> dict[int, Fingerprint | None]:
    """``apply(key, value)`` for every keyed record of ``topic`` up to its end offsets now;
    with ``after``, only for those after the record each partition's fingerprint names,
    which must still be there (:class:`_Moved` if not). Returns the fingerprint of each
    partition's last record (None for an empty partition)."""
    consumer = kafka_consumer(
        bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id=client_id,
        # Large fetches: a registry of 100k identities is ~40 MB of changes, read at start.
        fetch_max_bytes=64 * 1048576,
        max_partition_fetch_bytes=32 * 1048576,
    )
    after = after or {}
    try:
        parts = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or {0})]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        if set(after) - {tp.partition for tp in parts}:
            raise _Moved("partitions changed")
        last: dict[int, Fingerprint | None] = {
            tp.partition: after.get(tp.partition) for tp in parts
        }
        unchecked: set[int] = set()
        remaining = {tp for tp, off in end.items() if off > 0}
        for tp in parts:
            mark = after.get(tp.partition)
            if mark is not None:
                # Not "end <= mark means it is gone": Tansu answers ListOffsets(LATEST) with
                # the last batch's base offset + 1, short of the real end. Fetch and look.
                consumer.seek(tp, mark[0])
                unchecked.add(tp.partition)
                remaining.add(tp)
        while remaining:
            # The snapshot's record is on the broker already, or not at all: no long wait.
            wait = min(timeout_ms, 5000) if unchecked else timeout_ms
            batch = consumer.poll(timeout_ms=wait, max_records=10000)
            if not batch:
                if unchecked:
                    raise _Moved("the snapshot's last record is not on the topic")
                raise TimeoutError(f"registry topic {topic} not readable to its end")
            for tp, records in batch.items():
                if not records:
                    continue
                fresh = records
                if tp.partition in unchecked:
                    if fingerprint(records[0]) != after[tp.partition]:
                        raise _Moved("the snapshot's last record is gone or different")
                    unchecked.discard(tp.partition)
                    fresh = records[1:]  # that record is in the snapshot already
                for rec in fresh:
                    if rec.key:
                        apply(rec.key.decode(), rec.value)
                if fresh:
                    last[tp.partition] = fingerprint(fresh[-1])
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
        return last
    finally:
        consumer.close()


def read_registry_topic(bootstrap: str, topic: str, timeout_ms: int = 10000) -> Registry:
    """The registry as the compacted topic holds it now (RegistryError on a change this
    version cannot read)."""
    registry = Registry.from_changes([])

    def apply(key: str, value: bytes | None) -> None:
        if key.startswith(SCIM_KEY_PREFIX):
            return  # the SCIM service's state, not a registry record
        try:
            decoded = None if value is None else orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise RegistryError([f"{key}: unreadable registry change: {exc}"]) from None
        registry.apply_change(key, decoded)

    _read_changes(
        bootstrap, topic, apply, timeout_ms=timeout_ms, client_id="accessguard-registry-reader"
    )
    return registry


def read_hr_seen(
    bootstrap: str, topic: str, timeout_ms: int = 10000
) -> tuple[list[tuple[str, str, float]], int]:
    """Every event the HR edge accepted, as ``(event_id, digest, accepted_at)``, from the
    hr.events topic (which the journal refills after an embedded-broker restart), and the
    number of unreadable records skipped: the edge rebuilds its memory of seen event ids
    from it at start, so a re-sent event is still a duplicate (and a changed one a 409)."""
    seen: list[tuple[str, str, float]] = []
    unreadable = 0

    def apply(_key: str, value: bytes | None) -> None:
        nonlocal unreadable
        try:
            event = HrEvent.loads(value or b"")
        except ValidationError:
            unreadable += 1
            return
        seen.append((event.event_id, event.digest(), event.accepted_at or 0.0))

    _read_changes(bootstrap, topic, apply, timeout_ms=timeout_ms, client_id="accessguard-hr-seen")
    return seen, unreadable


@dataclass
class LeakIndexRead:
    """What :func:`read_leak_index` did: ``snapshot`` is "none" (no usable snapshot: read
    from the beginning), "used" (snapshot plus ``changes`` since) or "stale" (one was there
    but the registry topic no longer matches it: read from the beginning)."""

    snapshot: str = "none"
    changes: int = 0
    unreadable: int = 0
    wrote_snapshot: bool = False


#: Write a new snapshot once an import has read this many changes past the last one.
SNAPSHOT_AFTER_CHANGES = 1000
#: Snapshots looked at (the newest few records of the snapshot topic).
_SNAPSHOT_TAIL = 8


def _snapshot_key(registry_topic: str, plus_tag_domains: frozenset[str]) -> bytes:
    domains = hashlib.sha256(",".join(sorted(plus_tag_domains)).encode()).hexdigest()[:16]
    return f"{registry_topic}|{domains}".encode()


def _load_snapshot(bootstrap: str, snapshot_topic: str, key: bytes) -> dict[str, Any] | None:
    """The newest snapshot under ``key`` among the last records of the topic, or None."""
    consumer = kafka_consumer(
        bootstrap,
        enable_auto_commit=False,
        client_id="accessguard-leak-index-reader",
        fetch_max_bytes=LEAK_INDEX_MAX_BYTES,
        max_partition_fetch_bytes=LEAK_INDEX_MAX_BYTES,
    )
    try:
        partitions = consumer.partitions_for_topic(snapshot_topic)
        if not partitions:
            return None
        parts = [TopicPartition(snapshot_topic, p) for p in partitions]
        consumer.assign(parts)
        end = consumer.end_offsets(parts)
        begin = consumer.beginning_offsets(parts)
        remaining = set()
        for tp in parts:
            if end[tp] > begin[tp]:
                consumer.seek(tp, max(begin[tp], end[tp] - _SNAPSHOT_TAIL))
                remaining.add(tp)
        found: bytes | None = None
        while remaining:
            batch = consumer.poll(timeout_ms=10000, max_records=_SNAPSHOT_TAIL)
            if not batch:
                return None
            for tp, records in batch.items():
                for rec in records:
                    if rec.key == key:
                        found = rec.value
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    finally:
        consumer.close()
    if found is None:
        return None
    try:
        data = orjson.loads(found)
        if not isinstance(data, dict) or data.get("version") != 1:
            return None
        return data
    except orjson.JSONDecodeError:
        return None


def _write_snapshot(
    bootstrap: str,
    snapshot_topic: str,
    key: bytes,
    *,
    registry_topic: str,
    index: LeakIndex,
    positions: dict[int, Fingerprint | None],
) -> bool:
    """Publish a snapshot of ``index`` at ``positions``; a failure is logged, not raised (the
    snapshot only saves the next import a full read)."""
    from kafka.errors import KafkaError  # noqa: PLC0415

    value = orjson.dumps(
        {
            "version": 1,
            "registry_topic": registry_topic,
            "positions": {str(p): list(f) for p, f in positions.items() if f is not None},
            "index": index.snapshot(),
        }
    )
    try:
        producer = kafka_producer(
            bootstrap,
            acks="all",
            compression_type="gzip",
            max_request_size=LEAK_INDEX_MAX_BYTES,
            client_id="accessguard-leak-index-writer",
        )
        try:
            producer.send(snapshot_topic, key=key, value=value).get(timeout=30)
        finally:
            producer.close()
    except KafkaError as exc:
        log.warning("leak_index.snapshot_not_written", topic=snapshot_topic, error=repr(exc))
        return False
    return True


def read_leak_index(
    bootstrap: str,
    topic: str,
    plus_tag_domains: Iterable[str] = (),
    timeout_ms: int = 10000,
    *,
    snapshot_topic: str | None = None,
) -> tuple[LeakIndex, LeakIndexRead]:
    """Only the LeakIndex of the registry topic, for ``leaks import``: identity and account
    changes are decoded, grants and agencies skipped, no Registry built (half the time of
    :func:`read_registry_topic` at 100k identities). A change it cannot read is counted and
    skipped, as the worker sends it to the dead-letter topic and keeps the rest.

    With ``snapshot_topic``, it starts from the newest snapshot there (the index, and the
    offset, timestamp, key and value hash of the last registry record it reflects) and
    reads only the changes after it; it reads from the beginning instead when that record
    is not found unchanged at that offset (a recreated or compacted topic). It writes a new
    snapshot after a read from the beginning or of :data:`SNAPSHOT_AFTER_CHANGES` changes
    or more."""
    domains = frozenset(d.strip().lower() for d in plus_tag_domains)
    report = LeakIndexRead()
    key = _snapshot_key(topic, domains)
    snapshot = _load_snapshot(bootstrap, snapshot_topic, key) if snapshot_topic else None
    start = _from_snapshot(snapshot, domains) if snapshot is not None else None
    if snapshot is not None and start is None:
        report.snapshot = "stale"
    positions: dict[int, Fingerprint | None]
    for index, after in ([start] if start is not None else []) + [(LeakIndex(domains), {})]:
        report.changes = report.unreadable = 0

        def apply(key: str, value: bytes | None, index: LeakIndex = index) -> None:
            report.changes += 1
            if not key.startswith(("identity:", "account:")):
                return
            try:
                index.apply_change(key, None if value is None else orjson.loads(value))
            except (KeyError, TypeError, ValueError, AccessGuardError):
                report.unreadable += 1

        try:
            positions = _read_changes(
                bootstrap,
                topic,
                apply,
                timeout_ms=timeout_ms,
                client_id="accessguard-leak-index-reader",
                after=after,
            )
        except _Moved as exc:
            log.info("leak_index.snapshot_stale", topic=topic, reason=str(exc))
            report.snapshot = "stale"
            continue
        if after:
            report.snapshot = "used"
        break
    if report.unreadable:
        log.warning("registry.unreadable_changes", topic=topic, count=report.unreadable)
    if snapshot_topic and (report.snapshot != "used" or report.changes >= SNAPSHOT_AFTER_CHANGES):
        report.wrote_snapshot = _write_snapshot(
            bootstrap, snapshot_topic, key, registry_topic=topic, index=index, positions=positions
        )
    return index, report


def _from_snapshot(
    snapshot: dict[str, Any], domains: frozenset[str]
) -> tuple[LeakIndex, dict[int, Fingerprint]] | None:
    """The index and start positions a snapshot holds, or None when it is not usable."""
    try:
        index = LeakIndex.from_snapshot(snapshot["index"])
        after = {
            int(p): (int(f[0]), int(f[1]), str(f[2]), str(f[3]))
            for p, f in snapshot["positions"].items()
        }
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return None
    if index.plus_tag_domains != domains or not after:
        return None  # no position: nothing says which changes the index already holds
    return index, after


def import_registry(config: Config, bootstrap: str, path: Path) -> dict[str, Any]:
    """Publish the difference between the file and the registry topic (tombstones included).
    Raises RegistryError listing every problem when the file is invalid, and ConfigError when
    it relies on a provider that is neither configured nor in ``ignored_providers``
    (:mod:`streams.model.coverage`): those actions would silently never happen. A
    configuration with no provider at all (a publishing-only or demo one) gets a warning
    naming each gap instead."""
    new = load_registry(path)
    gaps = provider_gaps(new, config.provider_types(), config.settings.ignored_providers)
    if gaps and config.providers:
        raise ConfigError.of(gap_problems(gaps, str(path)))
    for gap in gaps:
        log.warning(
            "registry.provider_not_configured",
            path=str(path),
            provider=gap.provider,
            problem=gap.message(),
        )
    topics = Topics.from_config(config)
    current = read_registry_topic(bootstrap, topics.registry)
    # Identities an identity provider created over SCIM are not in the file: not a removal.
    scim_created = f"identity:{SCIM_IDENTITY_PREFIX}"
    changes = [
        (key, value)
        for key, value in diff_changes(current, new)
        if value is not None or not key.startswith(scim_created)
    ]
    journal = Journal(config.data_dir / "journal.jsonl", fsync=config.settings.journal.fsync)
    producer = _producer(bootstrap)
    try:
        futures = []
        for key, value in changes:
            journal.append("registry", key=key, value=value)
            payload = None if value is None else orjson.dumps(value)
            futures.append(producer.send(topics.registry, key=key.encode(), value=payload))
        for fut in futures:
            fut.get(timeout=30)
        producer.flush()
    finally:
        producer.close()
        journal.close()
    summary = {
        "changes": len(changes),
        "removed": sum(1 for _, v in changes if v is None),
        "identities": len(new.identities),
        "accounts": len(new.accounts),
        "grants": sum(len(new.grants_of(i)) for i in new.identities),
        "agencies": len(new.agencies),
    }
    log.info("registry.imported", path=str(path), **summary)
    return summary
