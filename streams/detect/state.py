"""Rule state: what threshold, velocity, first_seen and sequence rules remember between
events (windows, last location and time, known values, pending sequences, dedup times), per
group key, bounded, and movable one key at a time in and out of a Faust table."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson

# Bounds on RuleState (per key and overall); see RuleState.
MAX_KEYS = 200_000
MAX_PENDING = 16
DEFAULT_MAX_VALUES = 64


class RuleState:
    """Per-key rule state: windows, last location and time, known values, dedup times.

    Keys are group keys (an identity id, ``principal:<login>`` for an unresolved principal,
    or ``<field>:<value>`` such as ``ip:203.0.113.9``); each key holds one small JSON-able slot
    per rule. :meth:`key_to_dict` / :meth:`load_key` move one key in and out, so a worker keeps
    its state in a Faust table (or a compacted topic) keyed the same way and rebuilds after a
    restart; :meth:`take_dirty` says which keys changed since the last call.

    Bounded: every slot is capped (``count`` timestamps for a threshold, ``max_values`` known
    values, ``MAX_PENDING`` pending sequences), :meth:`expire` drops slots older than their
    rule's horizon by *event* time, and at most ``max_keys`` keys stay in memory (least
    recently used evicted first, counted in ``evicted``). Not thread-safe: event loop only.
    """

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self.max_keys = max_keys
        self.evicted = 0
        self._keys: OrderedDict[str, dict[str, dict[str, Any]]] = OrderedDict()
        self._dirty: set[str] = set()

    def slot(self, key: str, rule_id: str) -> dict[str, Any]:
        """The mutable slot of ``rule_id`` under ``key`` (created empty); marks ``key`` dirty."""
        slots = self._keys.get(key)
        if slots is None:
            slots = {}
            self._keys[key] = slots
            if len(self._keys) > self.max_keys:
                old, _ = self._keys.popitem(last=False)
                self._dirty.discard(old)
                self.evicted += 1
        else:
            self._keys.move_to_end(key)
        self._dirty.add(key)
        found = slots.get(rule_id)
        if found is None:
            found = {}
            slots[rule_id] = found
        return found

    def peek(self, key: str, rule_id: str) -> dict[str, Any] | None:
        """``rule_id``'s slot under ``key`` to read, or None; creates nothing, marks nothing
        dirty and leaves the key's recency alone (a check that will not write)."""
        slots = self._keys.get(key)
        return slots.get(rule_id) if slots is not None else None

    def learned(self, key: str, rule_ids: Iterable[str]) -> list[str]:
        """The values the first_seen rules ``rule_ids`` know under ``key`` (their ``seen``),
        sorted; reads only, like :meth:`holds`."""
        slots = self._keys.get(key)
        if not slots:
            return []
        found: set[str] = set()
        for rule_id in rule_ids:
            found.update((slots.get(rule_id) or {}).get("seen") or ())
        return sorted(found)

    def keys(self) -> list[str]:
        return list(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def size(self) -> int:
        """Entries held in all slots (timestamps, known values, pending items): for bounds."""
        total = 0
        for slots in self._keys.values():
            for slot in slots.values():
                for value in slot.values():
                    total += len(value) if isinstance(value, list | dict) else 1
        return total

    def take_dirty(self) -> list[str]:
        """Keys changed since the last call (persist ``key_to_dict`` of each)."""
        dirty = sorted(self._dirty)
        self._dirty.clear()
        return dirty

    def mark_dirty(self, keys: Iterable[str]) -> None:
        """Mark ``keys`` changed again (a checkpoint that could not write them)."""
        self._dirty.update(keys)

    def key_to_dict(self, key: str) -> dict[str, Any] | None:
        """One key's state as JSON-able data (None when the key holds nothing)."""
        slots = self._keys.get(key)
        if not slots:
            return None
        return {"v": 1, "rules": {rid: _copy_slot(slot) for rid, slot in slots.items()}}

    def key_to_json(self, key: str) -> bytes | None:
        """:meth:`key_to_dict` already serialised, straight from the live slots (no copy:
        the checkpoint writes thousands of keys a second)."""
        slots = self._keys.get(key)
        if not slots:
            return None
        return orjson.dumps({"v": 1, "rules": slots})

    def load_key(self, key: str, data: Mapping[str, Any] | None) -> None:
        """Restore one key from :meth:`key_to_dict` output (None removes it)."""
        if not data:
            self._keys.pop(key, None)
            return
        rules = data.get("rules") or {}
        self._keys[key] = {str(rid): _copy_slot(slot) for rid, slot in rules.items()}
        self._keys.move_to_end(key)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
            self.evicted += 1

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in self._keys:
            value = self.key_to_dict(key)
            if value is not None:
                out[key] = value
        return {"v": 1, "keys": out}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], max_keys: int = MAX_KEYS) -> RuleState:
        state = cls(max_keys=max_keys)
        for key, value in (data.get("keys") or {}).items():
            state.load_key(str(key), value)
        return state

    def expire(self, now: datetime | float, horizons: Mapping[str, float]) -> int:
        """Drop every slot whose last event is older than its rule's horizon at ``now``
        (event time). Returns the number of slots dropped; emptied keys are removed too."""
        ts = now.timestamp() if isinstance(now, datetime) else float(now)
        dropped = 0
        for key in list(self._keys):
            slots = self._keys[key]
            for rid in list(slots):
                horizon = horizons.get(rid)
                last = slots[rid].get("last")
                if horizon is None or last is None or ts - float(last) >= horizon:
                    del slots[rid]
                    dropped += 1
            if not slots:
                del self._keys[key]
                self._dirty.add(key)
        return dropped


def _copy_slot(slot: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in slot.items():
        if isinstance(v, list):
            out[k] = [list(x) if isinstance(x, list) else x for x in v]
        elif isinstance(v, dict):
            out[k] = dict(v)
        else:
            out[k] = v
    return out
