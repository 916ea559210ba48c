"""Start-up steps that run before the worker: journal replay and registry import.

Both use kafka-python (synchronous, no event loop yet) and wait for the broker's
acknowledgement of every record before returning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import structlog
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.config import Config
from streams.errors import AccessGuardError, RegistryError
from streams.journal import Journal, replay_records
from streams.leaks import LeakIndex
from streams.registry import Registry, diff_changes, load_registry
from streams.topics import Topics

log = structlog.get_logger(__name__)


def _producer(bootstrap: str) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, client_id="accessguard-bootstrap"
    )


def topics_empty(bootstrap: str, topics: list[str]) -> bool:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="accessguard-probe")
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


def _read_changes(
    bootstrap: str,
    topic: str,
    apply: Callable[[str, bytes | None], None],
    timeout_ms: int,
    client_id: str,
) -> None:
    """``apply(key, value)`` for every keyed record of ``topic`` up to its end offsets now."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id=client_id,
        # Large fetches: a registry of 100k identities is ~40 MB of changes, read at start.
        fetch_max_bytes=64 * 1048576,
        max_partition_fetch_bytes=32 * 1048576,
    )
    try:
        parts = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or {0})]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        remaining = {tp for tp, off in end.items() if off > 0}
        while remaining:
            batch = consumer.poll(timeout_ms=timeout_ms, max_records=10000)
            if not batch:
                raise TimeoutError(f"registry topic {topic} not readable to its end")
            for tp, records in batch.items():
                for rec in records:
                    if rec.key:
                        apply(rec.key.decode(), rec.value)
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    finally:
        consumer.close()


def read_registry_topic(bootstrap: str, topic: str, timeout_ms: int = 10000) -> Registry:
    """The registry as the compacted topic holds it now (RegistryError on a change this
    version cannot read)."""
    registry = Registry.from_changes([])

    def apply(key: str, value: bytes | None) -> None:
        try:
            decoded = None if value is None else orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise RegistryError([f"{key}: unreadable registry change: {exc}"]) from None
        registry.apply_change(key, decoded)

    _read_changes(bootstrap, topic, apply, timeout_ms, "accessguard-registry-reader")
    return registry


def read_leak_index(
    bootstrap: str, topic: str, plus_tag_domains: Iterable[str] = (), timeout_ms: int = 10000
) -> tuple[LeakIndex, int]:
    """Only the LeakIndex of the registry topic, for ``leaks import``: identity and account
    changes are decoded, grants and agencies skipped, no Registry built (half the time of
    :func:`read_registry_topic` at 100k identities). A change it cannot read is counted and
    skipped, as the worker sends it to the dead-letter topic and keeps the rest. Returns the
    index and that count."""
    index = LeakIndex(plus_tag_domains)
    unreadable = 0

    def apply(key: str, value: bytes | None) -> None:
        nonlocal unreadable
        if not key.startswith(("identity:", "account:")):
            return
        try:
            index.apply_change(key, None if value is None else orjson.loads(value))
        except (KeyError, TypeError, ValueError, AccessGuardError):
            unreadable += 1

    _read_changes(bootstrap, topic, apply, timeout_ms, "accessguard-leak-index-reader")
    if unreadable:
        log.warning("registry.unreadable_changes", topic=topic, count=unreadable)
    return index, unreadable


def import_registry(config: Config, bootstrap: str, path: Path) -> dict[str, Any]:
    """Publish the difference between the file and the registry topic (tombstones included).
    Raises RegistryError listing every problem when the file is invalid."""
    new = load_registry(path)
    topics = Topics.from_config(config)
    current = read_registry_topic(bootstrap, topics.registry)
    changes = diff_changes(current, new)
    journal = Journal(config.data_dir / "journal.jsonl", fsync=bool(config["journal.fsync"]))
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
