"""The rule-state checkpoint: a handful of records per interval instead of one per key.

The worker keeps the rules' per-key state (:class:`~streams.detect.state.RuleState`) in memory
and checkpoints it to the compacted ``rule.state`` topic (and the journal, for the embedded
stack) every ``worker.rule_interval``. Writing one acknowledged record per changed key cost
the login pipeline three quarters of its throughput (issue 17: ~66,000 broker sends for
200,000 events), so the keys are grouped in *shards* (the partition of the key, so that a
shard has one owner once events are keyed by identity) and written as a small log per shard:

- a **delta** record (``#rs/<shard>/d/<writer>/<n>``) carries the keys of one shard that changed
  in one interval (``None`` for a key that expired), chunked at ``chunk_bytes``;
- a **base** (``#rs/<shard>/b/<i>``, chunks ``0..m-1``) carries every key of the shard. The
  shard's owner writes it when the deltas since the last base weigh as much as the base (or
  number ``max_deltas``), then tombstones those deltas and any base chunk past ``m``: what
  compaction keeps stays about twice the live state, and every key is written at most once per
  interval plus its share of the occasional base.

Every record is a set of key loads applied in topic order, so the state read back is the state
written: in the live tail, after a restart (journal replay keeps the last value per record key
in the order of its last write, as compaction does) and after a partition handover (every
worker reads the whole topic). Records of the old one-key-per-record format are still loaded
and are tombstoned by the next base of their shard.

Why by hand: Faust's tables write one changelog record per key change, the very cost this
removes, and no library here offers a batched, compacted changelog.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.bus.topics import partition_for
from streams.detect.state import RuleState

#: Record keys of the batched format start with this (a group key never does: identities,
#: ``principal:`` and ``<field>:`` keys).
PREFIX = "#rs/"
#: Format marker in every batched record's value.
FORMAT = 2
#: A record's keys are cut into chunks of about this many bytes (Kafka's default message limit
#: is 1 MiB; the embedded broker enforces none, so we keep well under it ourselves).
CHUNK_BYTES = 256 * 1024
#: A shard's base is rewritten once its live deltas weigh at least this much...
MIN_BASE_BYTES = 64 * 1024
#: ... and at least as much as the base itself, or once there are this many deltas.
MAX_DELTAS = 64


@dataclass
class _Shard:
    """What the topic holds for one shard: live delta records (key -> bytes), base chunks."""

    deltas: dict[str, int] = field(default_factory=dict)
    legacy: set[str] = field(default_factory=set)
    base_chunks: int = 0
    base_bytes: int = 0

    @property
    def delta_bytes(self) -> int:
        return sum(self.deltas.values())


@dataclass(frozen=True)
class Checkpoint:
    """The records of one checkpoint: ``writes`` first (acknowledged), then ``tombstones``
    (only once every write landed: a tombstone that overtook its base would lose state).
    ``keys`` are the state keys it covers (marked dirty again if a write fails)."""

    writes: list[tuple[str, dict[str, Any]]]
    tombstones: list[str]
    keys: list[str]
    bases: list[int]

    @property
    def records(self) -> int:
        return len(self.writes) + len(self.tombstones)


class RuleStateLog:
    """Reads and writes the batched rule-state records of one worker. Event loop only."""

    def __init__(
        self,
        state: RuleState,
        *,
        shards: int,
        writer: str,
        chunk_bytes: int = CHUNK_BYTES,
        min_base_bytes: int = MIN_BASE_BYTES,
        max_deltas: int = MAX_DELTAS,
    ) -> None:
        self.state = state
        self.shards = max(1, shards)
        self.writer = writer
        self.chunk_bytes = chunk_bytes
        self.min_base_bytes = min_base_bytes
        self.max_deltas = max_deltas
        self._shard_of: dict[str, int] = {}
        self._known: dict[int, _Shard] = {}
        self._seq = 0

    def shard_of(self, key: str) -> int:
        shard = self._shard_of.get(key)
        if shard is None:
            # murmur2 in Python costs microseconds: once per key, not per checkpoint
            shard = partition_for(key, self.shards)
            if len(self._shard_of) > 4 * self.state.max_keys:
                self._shard_of.clear()
            self._shard_of[key] = shard
        return shard

    def _shard(self, shard: int) -> _Shard:
        known = self._known.get(shard)
        if known is None:
            known = self._known[shard] = _Shard()
        return known

    # ------------------------------------------------------------------ reading
    def apply(self, record_key: str, value: Any) -> None:
        """One record of the topic (or the journal), in order."""
        if not record_key.startswith(PREFIX):
            # the one-key-per-record format of earlier versions
            self.state.load_key(record_key, value)
            if value is not None:
                self._shard(self.shard_of(record_key)).legacy.add(record_key)
            return
        shard, kind, index = _parse(record_key)
        known = self._shard(shard)
        if value is None:  # a tombstone: that record is gone
            known.deltas.pop(record_key, None)
            return
        keys = value.get("keys") if isinstance(value, Mapping) else None
        if not isinstance(keys, Mapping):
            raise TypeError(f"rule-state record {record_key} holds no keys")
        for key, data in keys.items():
            self.state.load_key(str(key), data)
        size = int(value.get("bytes") or 0)
        if kind == "d":
            known.deltas[record_key] = size
        elif index == 0:
            known.base_chunks = int(value.get("chunks") or 1)
            known.base_bytes = int(value.get("total") or size)

    # ------------------------------------------------------------------ writing
    def prepare(self, dirty: Iterable[str], owns: Callable[[int], bool]) -> Checkpoint:
        """The records that persist ``dirty`` keys (and any base that is due)."""
        by_shard: dict[int, list[str]] = {}
        for key in dirty:
            by_shard.setdefault(self.shard_of(key), []).append(key)
        writes: list[tuple[str, dict[str, Any]]] = []
        tombstones: list[str] = []
        keys: list[str] = []
        bases: list[int] = []
        held: dict[int, list[str]] | None = None
        for shard in sorted(by_shard):
            changed = by_shard[shard]
            keys.extend(changed)
            # each key serialised once per checkpoint: a due base reuses the delta's values
            serialised = {k: self.state.key_to_json(k) for k in changed}
            known = self._shard(shard)
            weight = sum(len(k) + (4 if v is None else len(v)) + 4 for k, v in serialised.items())
            due = owns(shard) and (
                len(known.deltas) + 1 >= self.max_deltas
                or known.delta_bytes + weight >= max(self.min_base_bytes, known.base_bytes)
                or bool(known.legacy)
            )
            if not due:
                for chunk, size in self._chunks(list(serialised.items())):
                    self._seq += 1
                    rkey = f"{PREFIX}{shard}/d/{self.writer}/{self._seq}"
                    writes.append((rkey, {"f": FORMAT, "keys": chunk, "bytes": size}))
                continue
            bases.append(shard)
            if held is None:  # every held key by shard, once for all the bases due
                held = {}
                everything = self.state.keys()  # RuleState's list of keys, LRU order
                for k in everything:
                    held.setdefault(self.shard_of(k), []).append(k)
            items = [
                (k, v)
                for k in held.get(shard, ())
                if (v := serialised[k] if k in serialised else self.state.key_to_json(k))
                is not None
            ]
            chunks = list(self._chunks(items)) or [({}, 0)]
            total = sum(size for _, size in chunks)
            for i, (chunk, size) in enumerate(chunks):
                record = {"f": FORMAT, "keys": chunk, "bytes": size}
                if i == 0:
                    record.update(chunks=len(chunks), total=total)
                writes.append((f"{PREFIX}{shard}/b/{i}", record))
            tombstones.extend(known.deltas)
            tombstones.extend(sorted(known.legacy))
            tombstones.extend(
                f"{PREFIX}{shard}/b/{i}" for i in range(len(chunks), known.base_chunks)
            )
        return Checkpoint(writes, tombstones, keys, bases)

    def written(
        self,
        checkpoint: Checkpoint,
        *,
        tombstoned: bool,
        landed: Iterable[tuple[str, dict[str, Any]]] | None = None,
    ) -> None:
        """Bookkeeping once the checkpoint's writes (only ``landed`` of them, when some were
        refused) and, if ``tombstoned``, its tombstones were acknowledged: our own records
        never come back through the views' tail, and a landed delta must be tombstoned by a
        later base even if its checkpoint as a whole failed."""
        for rkey, value in checkpoint.writes if landed is None else landed:
            shard, kind, index = _parse(rkey)
            known = self._shard(shard)
            if kind == "d":
                known.deltas[rkey] = int(value["bytes"])
            elif index == 0:
                known.base_chunks = int(value["chunks"])
                known.base_bytes = int(value["total"])
        if tombstoned:
            for shard in checkpoint.bases:
                known = self._shard(shard)
                known.deltas.clear()
                known.legacy.clear()

    def live_records(self) -> int:
        """Records the topic keeps for the rule state after compaction (a gauge, and tests)."""
        return sum(len(k.deltas) + len(k.legacy) + k.base_chunks for k in self._known.values())

    def _chunks(
        self, items: Sequence[tuple[str, bytes | None]]
    ) -> Iterable[tuple[dict[str, Any], int]]:
        """Keys with their serialised values (embedded as they are: orjson.Fragment), cut
        into chunks of about ``chunk_bytes``."""
        chunk: dict[str, Any] = {}
        size = 0
        for key, value in items:
            weight = len(key) + (4 if value is None else len(value)) + 4
            if chunk and size + weight > self.chunk_bytes:
                yield chunk, size
                chunk, size = {}, 0
            chunk[key] = None if value is None else orjson.Fragment(value)
            size += weight
        if chunk:
            yield chunk, size


def _parse(record_key: str) -> tuple[int, str, int]:
    """``#rs/<shard>/d/<writer>/<n>`` or ``#rs/<shard>/b/<i>`` -> (shard, kind, chunk index)."""
    parts = record_key[len(PREFIX) :].split("/")
    if len(parts) < 3 or parts[1] not in ("d", "b"):
        raise ValueError(f"not a rule-state record key: {record_key!r}")
    index = int(parts[2]) if parts[1] == "b" else 0
    return int(parts[0]), parts[1], index
