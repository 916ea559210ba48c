"""``POST /v1/leaks``: a request body parsed exactly like a dump file (:func:`parse_body`)."""

from __future__ import annotations

import io
from typing import Any

import orjson

from connectors.ingest.dumps.options import DumpOptions, DumpSummary, Item
from connectors.ingest.dumps.reader import DumpReader

#: ``Content-Type`` of a ``POST /v1/leaks`` body -> its format (others: from the content).
BODY_FORMATS: dict[str, str] = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/x-ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "application/json": "json",
    "text/plain": "combo",
}


def parse_body(
    body: bytes, content_type: str, options: DumpOptions | None = None
) -> tuple[list[Item], DumpSummary]:
    """``POST /v1/leaks``: the same parsing as a dump file. ``options.format`` (``?format=``)
    or else ``content_type`` picks the format (``text/csv``, ``application/x-ndjson``,
    ``application/json``, ``text/plain`` for combo lists); ``application/gzip``,
    ``application/octet-stream`` and the like leave it to the content. Gzip (by its magic
    bytes) is decompressed first; a single JSON object is one record. ``options.max_bytes``
    and ``max_records`` bound the read (:class:`DumpTooLarge`)."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    opts = options or DumpOptions()
    fmt = opts.format or BODY_FORMATS.get(ctype)
    if fmt == "json" and body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{":
        fmt = "ndjson" if body.strip().count(b"\n") and _looks_ndjson(body) else "single"
    if fmt == "single":
        reader = DumpReader(_with(opts, format="ndjson", source=opts.source or "api"))
        reader.summary.format = "json"
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return [reader._reject(1, "invalid_json", f"invalid JSON: {exc.msg}")], reader.summary
        item = reader._mapping(1, data, False)
        assert item is not None  # no `wanted`: every record is built
        return [item], reader.summary
    reader = DumpReader(_with(opts, format=fmt, source=opts.source or "api"))
    items = list(reader.read_stream(io.BytesIO(body), "body"))
    return items, reader.summary


def _looks_ndjson(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return True
    return False


def _with(options: DumpOptions, **changes: Any) -> DumpOptions:
    from dataclasses import replace  # noqa: PLC0415 - local to the one helper that needs it

    return replace(options, **changes)
