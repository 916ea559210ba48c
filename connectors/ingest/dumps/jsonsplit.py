"""Byte-level helpers of a dump read: :class:`_ArraySplitter` splits a JSON array into its
elements' bytes without loading the array, :class:`_Limited` bounds the decompressed bytes
of a stream (``DumpOptions.max_bytes``), and :func:`_peek` looks ahead without consuming."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import IO, Any

import orjson

from connectors.ingest.dumps.options import _CHUNK, MAX_DEPTH, DumpTooLarge


class _Limited:
    """A (decompressed) stream that raises :class:`DumpTooLarge` once more than ``limit``
    bytes came out of it: a gzip bomb stops at the bound, not at the end of memory."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._total = 0

    def _count(self, data: bytes) -> bytes:
        self._total += len(data)
        if self._total > self._limit:
            raise DumpTooLarge(f"more than {self._limit} bytes once decompressed")
        return data

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._limit - self._total + 1
        return self._count(self._stream.read(size))

    def read1(self, size: int = -1) -> bytes:
        read1 = getattr(self._stream, "read1", self._stream.read)
        if size is None or size < 0:
            size = self._limit - self._total + 1
        return self._count(read1(size))

    def peek(self, size: int = 0) -> bytes:
        return _peek(self._stream, size)


def _peek(stream: IO[bytes], n: int) -> bytes:
    peek = getattr(stream, "peek", None)
    if peek is not None:
        return bytes(peek(n)[:n])
    pos = stream.tell()
    data = stream.read(n)
    stream.seek(pos)
    return data


_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|"|[{}\[\],]', re.DOTALL)
_OBJECT_END = re.compile(rb"\}[ \t\r\n]*[,\]]")
_WS = b" \t\r\n"
#: Element errors after which the next element can still be read.
_RECOVERABLE = frozenset({"too_long", "empty element"})


class _ArraySplitter:
    """Splits a JSON array into its elements' bytes without holding more than about
    ``cap`` plus one chunk. Yields ``(index, line, element, error)``.

    Objects take a fast path: the first ``}`` followed by ``,`` or ``]`` whose prefix parses
    is the end (a JSON value's end is unique, so the first complete parse is the element).
    Anything else is scanned token by token (strings are skipped whole by the regex), which
    also finds the end of an invalid or oversized element so the next one can be read.
    """

    def __init__(self, read: Callable[[int], bytes], cap: int) -> None:
        self.read = read
        self.cap = cap
        self.buf = b""
        self.pos = 0
        self.eof = False
        self.line = 1
        self._counted = 0
        #: The element the fast path already parsed (its bytes are then b"").
        self.parsed: Any = None

    def _fill(self) -> bool:
        if self.eof:
            return False
        self._line_at(self.pos)
        data = self.read(_CHUNK)
        self.buf = self.buf[self.pos :] + data
        self._counted -= self.pos
        self.pos = 0
        if not data:
            self.eof = True
            return False
        return True

    def _line_at(self, pos: int) -> int:
        if pos > self._counted:
            self.line += self.buf.count(b"\n", self._counted, pos)
            self._counted = pos
        return self.line

    def _skip_ws(self) -> bytes:
        """The next non-blank byte (not consumed), or b"" at the end."""
        while True:
            buf, pos = self.buf, self.pos
            n = len(buf)
            while pos < n and buf[pos] in _WS:
                pos += 1
            self.pos = pos
            if pos < n:
                return buf[pos : pos + 1]
            if not self._fill():
                return b""

    def __iter__(self) -> Iterator[tuple[int, int, bytes | None, str | None]]:
        first = self._skip_ws()
        if first == b"\xef":
            self.pos += 3
            first = self._skip_ws()
        if first != b"[":
            yield 0, self.line, None, "not a JSON array"
            return
        self.pos += 1
        index = 0
        if self._skip_ws() == b"]":
            return
        while True:
            start_char = self._skip_ws()
            if not start_char:
                yield index, self._line_at(self.pos), None, "array not closed (file truncated?)"
                return
            line = self._line_at(self.pos)
            self.parsed = None
            element, error = self._element()
            yield index, line, element, error
            if element is None and error not in _RECOVERABLE:
                return
            index += 1
            sep = self._skip_ws()
            if sep == b",":
                self.pos += 1
                continue
            if sep == b"]" or (not sep and error is not None):
                return
            if not sep:
                yield index, self._line_at(self.pos), None, "array not closed (file truncated?)"
                return
            yield index, self._line_at(self.pos), None, "expected , or ] between elements"
            return

    def _element(self) -> tuple[bytes | None, str | None]:
        if self.buf[self.pos : self.pos + 1] == b"{":
            found = self._fast_object()
            if found is not None:
                return found, None
        return self._scan()

    def _fast_object(self) -> bytes | None:
        """Returns b"" with the object in :attr:`parsed` (parsed once), or None."""
        rel = 0  # where to search from, relative to the element's start
        while True:
            buf, start = self.buf, self.pos
            m = _OBJECT_END.search(buf, start + rel)
            while m is not None:
                end = m.start() + 1
                if end - start > self.cap:
                    return None
                try:
                    parsed = orjson.loads(buf[start:end])
                except orjson.JSONDecodeError:
                    m = _OBJECT_END.search(buf, end)
                    continue
                self.pos = end
                self.parsed = parsed
                return b""
            if len(buf) - start > self.cap:
                return None
            # the end pattern may straddle the chunk boundary: look again a little before it
            rel = max(0, len(buf) - start - 64)
            if not self._fill():
                return None

    def _scan(self) -> tuple[bytes | None, str | None]:
        """Find the element's end by tokens. Too long -> skipped (memory flat), reported."""
        depth = 0
        start = self.pos
        scan = start
        too_long = False
        while True:
            buf = self.buf
            for m in _TOKEN.finditer(buf, scan):
                tok = m.group()
                c = tok[:1]
                if c == b'"':
                    if len(tok) == 1:  # no closing quote in this chunk: the string goes on
                        scan = m.start()
                        break
                    continue
                if c in b"{[":
                    depth += 1
                    if depth > MAX_DEPTH:
                        # No record nests this deep; following it token by token would
                        # take seconds per megabyte of "[[[[".
                        return None, f"nested deeper than {MAX_DEPTH} levels; rest skipped"
                elif c in b"}]":
                    if depth == 0:
                        return self._done(start, m.start(), too_long)
                    depth -= 1
                elif depth == 0:  # a comma between elements
                    return self._done(start, m.start(), too_long)
            else:
                scan = len(buf)
            if scan - start > self.cap:
                too_long = True
            if too_long:
                # forget what was scanned; keep only an unfinished string's start
                self._line_at(scan)
                self.pos = scan
                start = scan
            if len(buf) - self.pos > 4 * self.cap + _CHUNK:
                return None, "a string longer than the record cap; rest of the array skipped"
            keep = scan - self.pos
            origin = start - self.pos
            if not self._fill():
                return None, "array not closed (file truncated?)"
            scan = self.pos + keep
            start = self.pos + origin

    def _done(self, start: int, end: int, too_long: bool) -> tuple[bytes | None, str | None]:
        self._line_at(end)
        self.pos = end
        if too_long or end - start > self.cap:
            return None, "too_long"
        element = self.buf[start:end].strip()
        if not element:
            return None, "empty element"
        return element, None
