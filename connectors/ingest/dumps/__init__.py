"""Breach dumps -> LeakRecords, streamed: CSV, JSON arrays, NDJSON, ``email:password`` combo
lists, each optionally gzip'd (``accessguard leaks import FILE`` and ``POST /v1/leaks``).

Streaming, memory flat in the file size: the file is read in chunks and line by line with a
per-record cap (``max_record_bytes``, 64 KiB by default); a JSON array is split into its
elements by :class:`~connectors.ingest.dumps.jsonsplit._ArraySplitter` without loading the
array. Nothing is fatal but an unreadable file: every record is either a
:class:`~streams.model.records.LeakRecord` or a :class:`Rejection` (line number, short
``code`` and a ``reason``), in file order, and :class:`DumpSummary` counts them as they go
(read, parsed, rejected by code, warnings).

**Passwords stop here.** A plaintext password is read only to compute
``HMAC-SHA256(leak key, password)``; the record keeps ``password_present`` and that hex digest
(None without a key). A rejection never carries the line's text, and nothing here logs a
record: a dump line is a credential.

The modules, along the read:

* :mod:`~connectors.ingest.dumps.options`: what a read takes and gives (:class:`DumpOptions`,
  :class:`DumpSummary`, :class:`Rejection`, :class:`DumpTooLarge`, breach names), the column
  names (:data:`COLUMNS`), format detection (:func:`sniff_format`) and the read's bounds;
* :mod:`~connectors.ingest.dumps.reader`: :class:`DumpReader`, the entry points, made of
  :mod:`~connectors.ingest.dumps.core` (the read's state, record building, line splitting)
  and one mixin per family of formats: :mod:`~connectors.ingest.dumps.delimited` (CSV, combo
  lists) and :mod:`~connectors.ingest.dumps.jsonfmt` (NDJSON, JSON arrays);
* :mod:`~connectors.ingest.dumps.jsonsplit`: splitting a JSON array into its elements, and
  the bounded stream behind ``DumpOptions.max_bytes``;
* :mod:`~connectors.ingest.dumps.body`: :func:`parse_body` for ``POST /v1/leaks``.

This package re-exports the public names: import them from ``connectors.ingest.dumps``.
"""

from __future__ import annotations

from connectors.ingest.dumps.body import BODY_FORMATS, parse_body
from connectors.ingest.dumps.options import (
    COLUMNS,
    FORMATS,
    MAX_BREACH_NAME,
    MAX_DEPTH,
    MAX_RECORD_BYTES,
    DumpOptions,
    DumpSummary,
    DumpTooLarge,
    Item,
    Rejection,
    breach_from_name,
    check_breach_name,
    sniff_format,
)
from connectors.ingest.dumps.reader import DumpReader

__all__ = [
    "BODY_FORMATS",
    "COLUMNS",
    "FORMATS",
    "MAX_BREACH_NAME",
    "MAX_DEPTH",
    "MAX_RECORD_BYTES",
    "DumpOptions",
    "DumpReader",
    "DumpSummary",
    "DumpTooLarge",
    "Item",
    "Rejection",
    "breach_from_name",
    "check_breach_name",
    "parse_body",
    "sniff_format",
]
