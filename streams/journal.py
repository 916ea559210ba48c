"""The append-only JSONL journal: the audit trail on disk and the restart journal of the
embedded stack (ARCHITECTURE decision 5).

Each line is one JSON object ``{"ts": unix, "kind": ..., ...}``. Kinds that carry durable state
(``hr_event``, ``registry``, ``state``, ``ledger``) are replayed into empty topics when the
embedded in-memory broker starts again; the others (``decision``, ``action``, ``alert``) are audit
entries. Secrets never reach the journal: records hold references (``credential_ref``) only.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import structlog

from streams.errors import JournalError

log = structlog.get_logger(__name__)

#: Kinds replayed into topics at start, with the topic suffix they belong to and whether only
#: the last value per key matters (compacted topics).
REPLAYED_KINDS: dict[str, tuple[str, bool]] = {
    "registry": ("registry.changes", True),
    "state": ("lifecycle", True),
    "ledger": ("ledger", True),
    "rule_state": ("rule.state", True),
    "hr_event": ("hr.events", False),
}


class Journal:
    """Append-only JSONL file. Appends are serialised by a lock and written whole-line with
    O_APPEND, so concurrent writers never interleave within a line."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise JournalError(f"cannot open journal {path}: {exc.strerror}") from exc

    def append(self, kind: str, *, durable: bool = False, **fields: Any) -> dict[str, Any]:
        """Write one entry. ``durable`` forces an fsync when the journal is configured for it:
        used for what must survive a power cut (accepted events, ledger outcomes)."""
        entry = {"ts": round(time.time(), 6), "kind": kind, **fields}
        line = orjson.dumps(entry) + b"\n"
        with self._lock:
            try:
                written = os.write(self._fd, line)
                if written != len(line):
                    raise OSError(errno.ENOSPC, "short write")
                if durable and self.fsync:
                    os.fsync(self._fd)
            except OSError as exc:
                log.error("journal.write_failed", path=str(self.path), error=exc.strerror)
                raise JournalError(
                    f"cannot write journal {self.path}: {exc.strerror}; "
                    "free disk space under data_dir — accepted input is refused until then"
                ) from exc
        return entry

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def read_journal(path: Path) -> Iterator[dict[str, Any]]:
    """Entries in order. A torn last line (crash mid-write) is skipped with a warning."""
    if not path.exists():
        return
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                entry = orjson.loads(raw)
            except orjson.JSONDecodeError:
                log.warning("journal.torn_line", path=str(path), line=number)
                continue
            if isinstance(entry, dict):
                yield entry


def replay_records(path: Path) -> dict[str, list[tuple[str, bytes | None]]]:
    """The records to republish per topic suffix, in order; compacted kinds keep the last
    value per key (what Kafka compaction would keep)."""
    ordered: dict[str, list[tuple[str, bytes | None]]] = {t: [] for t, _ in REPLAYED_KINDS.values()}
    latest: dict[str, dict[str, bytes | None]] = {
        t: {} for t, compacted in REPLAYED_KINDS.values() if compacted
    }
    for entry in read_journal(path):
        spec = REPLAYED_KINDS.get(str(entry.get("kind")))
        if spec is None:
            continue
        topic, compacted = spec
        key = str(entry.get("key"))
        value = entry.get("value")
        payload = None if value is None else orjson.dumps(value)
        if compacted:
            latest[topic].pop(key, None)  # keep insertion order = order of the last write
            latest[topic][key] = payload
        else:
            ordered[topic].append((key, payload))
    for topic, values in latest.items():
        ordered[topic] = list(values.items())
    return ordered
