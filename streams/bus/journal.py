"""The append-only JSONL journal: the audit trail on disk and the restart journal of the
embedded stack (docs/architecture.md, decision 5).

Each line is one JSON object ``{"ts": unix, "kind": ..., ...}``. Kinds that carry durable state
(``hr_event``, ``registry``, ``state``, ``ledger``) are replayed into empty topics when the
embedded in-memory broker starts again; the others (``decision``, ``action``, ``alert``) are audit
entries. Secrets never reach the journal: records hold references (``credential_ref``) only.
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import structlog

from streams.support.errors import JournalError

log = structlog.get_logger(__name__)

#: Kinds replayed into topics at start, with the topic suffix they belong to and whether only
#: the last value per key matters (compacted topics).
REPLAYED_KINDS: dict[str, tuple[str, bool]] = {
    "registry": ("registry.changes", True),
    "state": ("lifecycle", True),
    "ledger": ("ledger", True),
    "rule_state": ("rule.state", True),
    "hr_event": ("hr.events", False),
    # alerts decided but maybe not yet sent (the alert agent skips what the ledger has)
    "alert_pending": ("alerts.pending", False),
}


#: While appends keep failing, a repeated failure is logged at most this often (seconds).
REPEAT_LOG_INTERVAL = 10.0

#: errno values that mean "no room": the disk, a quota or a file size limit is full.
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def _hint(err: int | None) -> str:
    """What the operator should do about a failed write, by errno."""
    if err in _NO_ROOM:
        return "free disk space under data_dir (disk, quota or file size limit full)"
    if err in _NOT_WRITABLE:
        return "make data_dir writable (read-only mount or permissions)"
    return "check the disk and data_dir"


def _ends_torn(path: Path) -> bool:
    """True when the file's last byte is not a newline (a line was cut by a crash)."""
    try:
        with path.open("rb") as fh:
            if fh.seek(0, os.SEEK_END) == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"
    except OSError:
        return False


class Journal:
    """Append-only JSONL file. Appends are serialised by a lock and written whole-line with
    O_APPEND, so concurrent writers never interleave within a line.

    A failed append leaves nothing behind: a partial line (a short write when the disk fills
    up mid-line) is cut off again, so the next entry starts on a line of its own and a later
    replay reads every entry that was acknowledged. :attr:`healthy` is False from a failed
    append until one succeeds again; :meth:`check_writable` (the ``journal_writable``
    readiness check) tries a small entry while it is False, so readiness comes back by itself
    once space is freed, without waiting for input that readiness keeps away."""

    def __init__(self, path: Path, *, fsync: bool = True, probe_interval: float = 1.0) -> None:
        self.path = path
        self.fsync = fsync
        self.probe_interval = probe_interval
        self._lock = threading.Lock()
        #: False from a failed append until an append succeeds again.
        self.healthy = True
        #: Why the last append failed (strerror), while not healthy.
        self.last_error: str | None = None
        self._failed_since: float | None = None
        self._failures = 0
        self._last_probe = 0.0
        self._last_failure_log = 0.0
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise JournalError(f"cannot open journal {path}: {exc.strerror}") from exc
        # A crash mid-write (or a cut that failed) leaves a torn last line: start the next
        # entry on a new line, or it would be glued to the fragment and lost with it.
        self._torn = _ends_torn(path)
        #: Where the next line starts. One process appends, under the lock, so the size is
        #: tracked here instead of an fstat per append (a tenth of the append's cost in a
        #: burst); None when a failed cut left it unknown (read again at the next append).
        self._size: int | None = os.fstat(self._fd).st_size
        #: Group commit: lines written so far, and how many of them an fsync covered.
        self._written = 0
        self._synced = 0
        self._flush_task: asyncio.Future[None] | None = None
        self.fsyncs = 0

    def append(self, kind: str, *, durable: bool = False, **fields: Any) -> dict[str, Any]:
        """Write one entry. ``durable`` forces an fsync when the journal is configured for it:
        used for what must survive a power cut (accepted events, ledger outcomes).

        Raises :class:`JournalError` when the entry could not be written whole (nothing of it
        is left in the file then)."""
        return self._append(kind, durable, fields)[0]

    def write(self, kind: str, **fields: Any) -> tuple[dict[str, Any], int]:
        """Write one entry without an fsync; returns it with its sequence number, which
        :meth:`commit` takes to wait until the entry is on disk (group commit)."""
        return self._append(kind, False, fields)

    async def commit(self, seq: int) -> None:
        """Return once an fsync that began after entry ``seq`` was written has succeeded.

        Group commit: every caller waiting while one fsync runs is released by the next one,
        so a burst of durable writes costs a few fsyncs, not one each, and none of them
        blocks the event loop (they run in a thread). Nothing is released before the fsync
        that covers it: the durability promise of ``append(durable=True)`` holds. Raises
        :class:`JournalError` when the fsync failed (the caller retries)."""
        if not self.fsync:
            return
        while self._synced < seq:
            task = self._flush_task
            if task is None:
                task = self._flush_task = asyncio.ensure_future(self._flush())
            # shielded: a cancelled waiter must not cancel the fsync the others wait on
            await asyncio.shield(task)

    async def _flush(self) -> None:
        """One fsync for every line written before it began."""
        try:
            with self._lock:
                target, fd = self._written, self._fd
            try:
                await asyncio.to_thread(os.fsync, fd)
            except OSError as exc:
                raise JournalError(
                    f"cannot fsync journal {self.path}: {exc.strerror} — {_hint(exc.errno)}",
                    reason=exc.strerror or str(exc),
                ) from exc
            self.fsyncs += 1
            self._synced = max(self._synced, target)
        finally:
            self._flush_task = None

    def _append(
        self, kind: str, durable: bool, fields: dict[str, Any]
    ) -> tuple[dict[str, Any], int]:
        entry = {"ts": round(time.time(), 6), "kind": kind, **fields}
        line = orjson.dumps(entry) + b"\n"
        with self._lock:
            if self._torn:
                line = b"\n" + line
            start: int | None = None
            written = 0
            try:
                if self._fd >= 0:
                    # Where this line starts: one process appends, under this lock (a second
                    # process appending to the same file is not supported anyway).
                    if self._size is None:
                        self._size = os.fstat(self._fd).st_size
                    start = self._size
                view = memoryview(line)
                while written < len(line):
                    # A short write is not an error yet: write the rest, and let the kernel
                    # say why it cannot (ENOSPC, EFBIG, EDQUOT) instead of guessing.
                    n = os.write(self._fd, view[written:])
                    if n <= 0:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    written += n
                self._size = start + written if start is not None else None
                self._written += 1
                if durable and self.fsync:
                    os.fsync(self._fd)
                    self.fsyncs += 1
                    self._synced = self._written
            except OSError as exc:
                self._failed(exc, start, written)
                raise JournalError(
                    f"cannot write journal {self.path}: {exc.strerror} — {_hint(exc.errno)}; "
                    "accepted input is refused (HTTP 503) until a write succeeds",
                    reason=exc.strerror or str(exc),
                ) from exc
            self._torn = False
            if not self.healthy:
                self._recovered()
            return entry, self._written

    def _failed(self, exc: OSError, start: int | None, written: int) -> None:
        """Cut what this append wrote, and remember the failure. Lock held."""
        torn = False
        if written and start is not None:
            try:
                os.ftruncate(self._fd, start)
                self._size = start
            except OSError:
                torn = True  # cannot cut it: the next append starts on a new line instead
                self._size = None
        self._torn = self._torn or torn
        first = self.healthy
        self.healthy = False
        self.last_error = exc.strerror or str(exc)
        self._failures += 1
        if self._failed_since is None:
            self._failed_since = time.time()
        now = time.monotonic()
        if not first and now - self._last_failure_log < REPEAT_LOG_INTERVAL:
            return  # the worker retries every few seconds: one line per interval is enough
        self._last_failure_log = now
        (log.error if first else log.warning)(
            "journal.write_failed",
            path=str(self.path),
            error=exc.strerror,
            errno=errno.errorcode.get(exc.errno or 0, str(exc.errno)),
            partial_line_cut=bool(written) and not torn,
            hint=_hint(exc.errno),
            failed_writes=self._failures,
            effect="accepted input is refused with 503 and the worker waits until a write succeeds",
        )

    def _recovered(self) -> None:
        """An append succeeded after failures. Lock held."""
        log.warning(
            "journal.recovered",
            path=str(self.path),
            failed_for_seconds=round(time.time() - (self._failed_since or time.time()), 3),
            failed_writes=self._failures,
            last_error=self.last_error,
        )
        self.healthy = True
        self.last_error = None
        self._failed_since = None
        self._failures = 0

    def check_writable(self) -> bool:
        """Readiness: True while appends succeed. While they fail, try (at most once per
        ``probe_interval``) to append a ``journal_recovered`` entry, which records the outage
        in the audit trail once space is back."""
        if self.healthy:
            return True
        now = time.monotonic()
        if now - self._last_probe < self.probe_interval:
            return False
        self._last_probe = now
        since, error = self._failed_since, self.last_error
        try:
            self.append("journal_recovered", durable=True, failed_since=since, error=error)
        except JournalError:
            return False
        return True

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


#: Marks an ``hr_event`` entry (by its ``entry`` id) whose publish failed after it was
#: journaled: the sender was answered 503 and retries, so a replay must not run it.
WITHDRAWN = "hr_event_withdrawn"


def replay_records(path: Path) -> dict[str, list[tuple[str, bytes | None]]]:
    """The records to republish per topic suffix, in order; compacted kinds keep the last
    value per key (what Kafka compaction would keep); withdrawn entries (:data:`WITHDRAWN`)
    are left out."""
    ordered: dict[str, list[tuple[str, bytes | None]]] = {t: [] for t, _ in REPLAYED_KINDS.values()}
    latest: dict[str, dict[str, bytes | None]] = {
        t: {} for t, compacted in REPLAYED_KINDS.values() if compacted
    }
    #: (topic, position in ordered[topic]) of each entry that carries an ``entry`` id
    positions: dict[str, tuple[str, int]] = {}
    withdrawn: set[tuple[str, int]] = set()
    for entry in read_journal(path):
        kind = str(entry.get("kind"))
        if kind == WITHDRAWN:
            where = positions.get(str(entry.get("entry")))
            if where is not None:
                withdrawn.add(where)
            continue
        spec = REPLAYED_KINDS.get(kind)
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
            if entry.get("entry") is not None:
                positions[str(entry["entry"])] = (topic, len(ordered[topic]))
            ordered[topic].append((key, payload))
    if withdrawn:
        for topic in {t for t, _ in withdrawn}:
            ordered[topic] = [
                r for i, r in enumerate(ordered[topic]) if (topic, i) not in withdrawn
            ]
    for topic, values in latest.items():
        ordered[topic] = list(values.items())
    return ordered
