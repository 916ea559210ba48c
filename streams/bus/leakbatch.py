"""Leak records on the bus: many :class:`~streams.model.records.LeakRecord` per Kafka message.

The edge (``POST /v1/leaks``, ``accessguard leaks import``) batches matched records per
partition with :class:`LeakBatcher`; the worker reads each message back with
:func:`decode_batch`, rejections going to the dead-letter topic with their reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.bus.topics import partition_for
from streams.model.records import LeakRecord
from streams.support.errors import ValidationError


@dataclass
class LeakBatcher:
    """Groups records into Kafka messages: many records per message (a JSON array), one
    message stream per partition, keyed like :func:`streams.bus.topics.partition_for`. The
    per-message cost of a Faust hop is what caps throughput, so batch (docs/operations-notes.md)."""

    partitions: int
    batch_size: int = 1000
    _pending: dict[int, list[bytes]] = field(default_factory=dict)

    def add(self, record: LeakRecord) -> tuple[int, bytes] | None:
        """Queue one record; returns ``(partition, message)`` when a batch is full."""
        part = partition_for(record.partition_key, self.partitions)
        queue = self._pending.setdefault(part, [])
        queue.append(record.dumps())
        if len(queue) >= self.batch_size:
            self._pending[part] = []
            return part, b"[" + b",".join(queue) + b"]"
        return None

    def flush(self) -> list[tuple[int, bytes]]:
        """Every partly filled batch."""
        out = [(p, b"[" + b",".join(q) + b"]") for p, q in sorted(self._pending.items()) if q]
        self._pending.clear()
        return out


def decode_batch(raw: bytes) -> tuple[list[LeakRecord], list[tuple[Any, str]]]:
    """One ``leak.records`` message (a JSON array or one object) -> records and
    ``(payload, reason)`` rejections for the dead-letter topic."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return [], [(raw[:1000].decode("utf-8", "replace"), f"invalid JSON: {exc.msg}")]
    items = data if isinstance(data, list) else [data]
    records: list[LeakRecord] = []
    rejected: list[tuple[Any, str]] = []
    for item in items:
        try:
            records.append(LeakRecord.from_dict(item))
        except ValidationError as exc:
            rejected.append((item, exc.reason))
    return records, rejected
