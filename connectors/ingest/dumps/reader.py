"""The dump reader: :class:`DumpReader` opens a file or stream (gzip by its magic bytes,
bounded by ``DumpOptions.max_bytes``), picks the format and yields its records. The
per-format parsing lives in the mixins it is made of (:mod:`connectors.ingest.dumps.delimited`,
:mod:`connectors.ingest.dumps.jsonfmt`), over :mod:`connectors.ingest.dumps.core`."""

from __future__ import annotations

import contextlib
import gzip
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, cast

from connectors.ingest.dumps.delimited import DelimitedFormats
from connectors.ingest.dumps.jsonfmt import JsonFormats
from connectors.ingest.dumps.jsonsplit import _Limited, _peek
from connectors.ingest.dumps.options import (
    _GZIP_MAGIC,
    DumpTooLarge,
    Item,
    breach_from_name,
    sniff_format,
)


class DumpReader(DelimitedFormats, JsonFormats):
    """Reads one dump. Iterate :meth:`read_path` or :meth:`read_stream`; :attr:`summary`
    counts as records go by, and :meth:`position` is how far into the raw file (compressed
    bytes) the reader is, for a progress bar.

    ``wanted`` (a normalised principal -> whether anyone holds it; ``LeakIndex.wants``) makes
    the reader match first: a valid record nobody holds is validated like any other (its
    rejections are the same) and counted in :attr:`DumpSummary.filtered`, but no password is
    hashed and no LeakRecord is built for it, and plain CSV / combo lines and NDJSON objects
    whose principal nobody holds skip the general per-record path altogether (see
    :meth:`_csv_fast`). A dump is mostly strangers, so this is where an import's time goes."""

    # ---- entry points ----------------------------------------------------------------

    def read_path(self, path: str | Path) -> Iterator[Item]:
        """Every record of the file at ``path`` (opened here, closed when exhausted).
        Without ``options.breach`` the breach is named after the file
        (:func:`breach_from_name`; ValidationError when that name is not a valid one)."""
        path = Path(path)
        if self.options.breach is None:
            self._breach = breach_from_name(path.name)
        if self.options.source is None:
            self._source = f"dump:{path.name}"
        with path.open("rb") as raw:
            yield from self.read_stream(raw, path.name)

    def read_stream(self, raw: IO[bytes], name: str = "") -> Iterator[Item]:
        """Every record of an open binary stream (not closed here). Raises
        :class:`DumpTooLarge` past ``options.max_bytes`` or ``options.max_records``."""
        self._raw = raw
        stream: IO[bytes] = raw
        head = _peek(raw, 2)
        if head.startswith(_GZIP_MAGIC):
            self.summary.compressed = True
            stream = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
        if self.options.max_bytes is not None:
            stream = cast(IO[bytes], _Limited(stream, self.options.max_bytes))
        try:
            first = _peek(stream, 4096)
        except (OSError, EOFError, zlib.error) as exc:
            self.summary.format = "unreadable"
            yield self._reject(0, "unreadable", f"cannot read: {type(exc).__name__}")
            return
        if not first.strip(b"\xef\xbb\xbf \t\r\n"):
            self.summary.format = "empty"
            return
        fmt = self.options.format or sniff_format(name, first)
        self.summary.format = fmt
        reader: Callable[[IO[bytes]], Iterator[Item | None]] = {
            "csv": self._csv,
            "json": self._json_array,
            "ndjson": self._ndjson,
            "combo": self._combo,
        }[fmt]
        most = self.options.max_records
        summary = self.summary
        try:
            for item in reader(stream):
                if most is not None and summary.read > most:
                    raise DumpTooLarge(f"more than {most} records")
                if item is not None:
                    yield item
        except (OSError, EOFError, zlib.error) as exc:
            # A truncated or corrupt gzip stream (an invalid deflate block is a zlib.error,
            # not an OSError): what was read stays read.
            yield self._reject(0, "unreadable", f"stream ended early: {type(exc).__name__}")

    def position(self) -> int:
        """Bytes of the raw (possibly compressed) file consumed so far."""
        if self._raw is not None:
            # closed at the end: the last position stands
            with contextlib.suppress(OSError, ValueError):
                self._position = self._raw.tell()
        return self._position
