"""A breach dump file into the ``leak.records`` topic (``accessguard leaks import FILE``):
:func:`import_dump` streams it through a :class:`~connectors.ingest.dumps.DumpReader` and a
:class:`~connectors.ingest.leak_ingest.LeakMatcher` in this process, sending each batch of
matched records as it fills; :func:`import_dump_parallel` splits a large plain file into byte
ranges cut at line starts (:func:`split_ranges`) and imports each in its own process.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from connectors.ingest.dumps import (
    DumpOptions,
    DumpReader,
    DumpSummary,
    Rejection,
    breach_from_name,
    sniff_format,
)
from connectors.ingest.leak_ingest import (
    BATCH_RECORDS,
    LINGER_SECONDS,
    MAX_REJECTIONS_LISTED,
    LeakMatcher,
)
from streams.model.leak_index import LeakIndex
from streams.model.records import LeakRecord


def import_dump(
    path: str | Path,
    *,
    index: LeakIndex | None,
    partitions: int,
    send: Callable[[int, bytes], None],
    options: DumpOptions | None = None,
    progress: Callable[[int], None] | None = None,
    batch_size: int = BATCH_RECORDS,
    linger: float = LINGER_SECONDS,
) -> dict[str, Any]:
    """Stream the dump at ``path``: parse, match, ``send(partition, message)`` each full
    batch, and a partial one once it has waited ``linger`` seconds, then the rest.
    ``progress(bytes_read)`` is called after each block read. Returns the summary (the
    reader's counts plus ``matched``/``unmatched``/``messages``)."""
    reader = DumpReader(options, wanted=index.probe() if index is not None else None)
    matcher = LeakMatcher(index, partitions, batch_size, linger)
    messages = 0
    rejections: list[dict[str, Any]] = []

    def on_block() -> None:
        nonlocal messages
        if progress is not None:
            progress(reader.position())
        for part, message in matcher.due():
            send(part, message)
            messages += 1

    reader.on_block = on_block
    for item in reader.read_path(path):
        if type(item) is Rejection:
            assert isinstance(item, Rejection)
            if len(rejections) < MAX_REJECTIONS_LISTED:
                rejections.append(item.to_dict())
            continue
        assert isinstance(item, LeakRecord)
        full = matcher.add(item)
        if full is not None:
            send(*full)
            messages += 1
    for part, message in matcher.flush():
        send(part, message)
        messages += 1
    if progress is not None:
        progress(reader.position())
    return {
        **reader.summary.to_dict(),
        "matched": matcher.matched,
        "unmatched": matcher.unmatched + reader.summary.filtered,
        "messages": messages,
        "jobs": 1,
        "rejections": rejections,
    }


# --------------------------------------------------------------------------------------------
# Parallel import: one dump split by byte ranges across processes
# --------------------------------------------------------------------------------------------

#: Formats whose records are lines, so a split at a line start is a split between records.
SPLITTABLE = frozenset({"csv", "ndjson", "combo"})
_SCAN = 1 << 22


class _RangeReader(io.RawIOBase):
    """``prefix`` then bytes ``[start, end)`` of a file, as one raw stream."""

    def __init__(self, path: Path, start: int, end: int, prefix: bytes = b"") -> None:
        super().__init__()
        self._file = path.open("rb")
        self._file.seek(start)
        self._left = end - start
        self._prefix = prefix

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        if self._left <= 0:
            return 0
        n = self._file.readinto(view[: min(len(view), self._left)])
        self._left -= n
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


@dataclass(frozen=True)
class _Range:
    start: int
    end: int
    #: Physical lines of the file before ``start`` (to number rejections as in the file).
    lines_before: int


def split_ranges(path: Path, fmt: str, jobs: int) -> tuple[bytes, list[_Range]]:
    """The CSV header (empty for other formats) and up to ``jobs`` byte ranges, each
    starting at a line start. For CSV a cut moves on, a line at a time, while the quotes
    before it are unbalanced, so a quoted field holding a newline is never cut."""
    size = path.stat().st_size
    with path.open("rb") as f:
        header = f.readline() if fmt == "csv" else b""
        begin = len(header)
        targets = []
        for k in range(1, jobs):
            f.seek(begin + (size - begin) * k // jobs)
            f.readline()
            targets.append(f.tell())
        cuts = [begin]
        lines_at = [1 if header else 0]
        lines, quotes, pos = lines_at[0], 0, begin
        f.seek(begin)
        for target in targets:
            while pos < target:
                chunk = f.read(min(_SCAN, target - pos))
                if not chunk:
                    break
                lines += chunk.count(b"\n")
                quotes += chunk.count(b'"')
                pos += len(chunk)
            while fmt == "csv" and quotes % 2 and pos < size:
                more = f.readline()
                lines += more.count(b"\n")
                quotes += more.count(b'"')
                pos += len(more)
            if pos > cuts[-1]:
                cuts.append(pos)
                lines_at.append(lines)
        cuts.append(size)
    ranges = [
        _Range(cuts[i], cuts[i + 1], lines_at[i])
        for i in range(len(cuts) - 1)
        if cuts[i] < cuts[i + 1]
    ]
    return header, ranges


def dump_names(path: Path, options: DumpOptions) -> DumpOptions:
    """``options`` with the breach and source names :meth:`DumpReader.read_path` derives
    (ValidationError when the file's name makes no valid breach name and none is given)."""
    return replace(
        options,
        breach=options.breach or breach_from_name(path.name),
        source=options.source or f"dump:{path.name}",
    )


#: Set in the parent before the worker processes fork (copy-on-write: the index is not
#: pickled).
_SHARED: dict[str, Any] = {}


def _import_range(
    path: str,
    part: _Range,
    *,
    fmt: str,
    header: bytes,
    partitions: int,
    bootstrap: str,
    topic: str,
) -> dict[str, Any]:
    # The parent configured the Kafka security settings before forking: they are inherited.
    from streams.bus.security import kafka_producer  # noqa: PLC0415 - the worker processes only

    index: LeakIndex | None = _SHARED.get("index")
    options: DumpOptions = _SHARED["options"]
    producer = kafka_producer(
        bootstrap,
        acks="all",
        linger_ms=5,
        max_request_size=4 * 1048576,
        client_id="accessguard-leaks-import",
    )
    futures: list[Any] = []
    try:
        raw = _RangeReader(Path(path), part.start, part.end, header)
        stream = io.BufferedReader(raw, 1 << 20)
        reader = DumpReader(
            replace(options, format=fmt), wanted=index.probe() if index is not None else None
        )
        matcher = LeakMatcher(index, partitions)
        # Line n of this piece is line n + shift of the file (a CSV piece starts with the
        # header, line 1 of both).
        shift = part.lines_before - (1 if header else 0)
        rejections: list[dict[str, Any]] = []

        def send(p: int, message: bytes) -> None:
            futures.append(
                producer.send(topic, key=f"batch:{p}".encode(), value=message, partition=p)
            )

        def on_block() -> None:
            for p, message in matcher.due():
                send(p, message)

        reader.on_block = on_block
        for item in reader.read_stream(stream, Path(path).name):
            if type(item) is Rejection:
                assert isinstance(item, Rejection)
                if len(rejections) < MAX_REJECTIONS_LISTED:
                    line = item.line + shift if item.line else item.line
                    rejections.append({**item.to_dict(), "line": line})
                continue
            assert isinstance(item, LeakRecord)
            full = matcher.add(item)
            if full is not None:
                send(*full)
        for p, message in matcher.flush():
            send(p, message)
        for fut in futures:
            fut.get(timeout=60)
        stream.close()
    finally:
        producer.close()
    return {
        "summary": reader.summary.to_dict(),
        "matched": matcher.matched,
        "unmatched": matcher.unmatched + reader.summary.filtered,
        "messages": len(futures),
        "rejections": rejections,
    }


def import_dump_parallel(
    path: str | Path,
    *,
    index: LeakIndex | None,
    partitions: int,
    bootstrap: str,
    topic: str,
    options: DumpOptions | None = None,
    jobs: int = 2,
) -> dict[str, Any] | None:
    """:func:`import_dump` over ``jobs`` processes, each parsing, matching and publishing one
    byte range of the file (cut at line starts). Returns None when the file cannot be split
    (gzip, a JSON array, or too small): use :func:`import_dump` then. Rejections keep the
    line numbers of the file; the summary is the sum of the pieces'."""
    import multiprocessing  # noqa: PLC0415
    from concurrent.futures import ProcessPoolExecutor  # noqa: PLC0415

    path = Path(path)
    options = options or DumpOptions()
    with path.open("rb") as f:
        head = f.read(4096)
    fmt = options.format or sniff_format(path.name, head)
    if jobs < 2 or head.startswith(b"\x1f\x8b") or fmt not in SPLITTABLE:
        return None
    if path.stat().st_size < 8 * 1048576:
        return None
    header, ranges = split_ranges(path, fmt, jobs)
    _SHARED.update(index=index, options=dump_names(path, options))
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(len(ranges), mp_context=context) as pool:
            futures = [
                pool.submit(
                    _import_range,
                    str(path),
                    r,
                    fmt=fmt,
                    header=header,
                    partitions=partitions,
                    bootstrap=bootstrap,
                    topic=topic,
                )
                for r in ranges
            ]
            parts = [f.result() for f in futures]
    finally:
        _SHARED.clear()
    total = DumpSummary(format=fmt)
    for piece in parts:
        s = piece["summary"]
        total.read += s["read"]
        total.parsed += s["parsed"]
        total.rejected += s["rejected"]
        total.with_password += s["with_password"]
        total.reasons.update(s["reasons"])
        total.warnings.update(s["warnings"])
    return {
        **total.to_dict(),
        "matched": sum(p["matched"] for p in parts),
        "unmatched": sum(p["unmatched"] for p in parts),
        "messages": sum(p["messages"] for p in parts),
        "jobs": len(ranges),
        "rejections": [r for p in parts for r in p["rejections"]][:MAX_REJECTIONS_LISTED],
    }
