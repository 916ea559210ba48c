"""The JSON formats of a dump read, as a mixin over :class:`ReaderCore`: NDJSON (one object a
line, with a match-first fast path keyed by each object shape's :class:`_Layout`) and JSON
arrays (split into elements by :class:`~connectors.ingest.dumps.jsonsplit._ArraySplitter`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import IO, Any

import orjson

from connectors.ingest.dumps.core import ReaderCore, _Layout
from connectors.ingest.dumps.jsonsplit import _ArraySplitter
from connectors.ingest.dumps.options import COLUMNS, Item

_UNSEEN: Any = object()


class JsonFormats(ReaderCore):
    """NDJSON and JSON arrays (:meth:`_ndjson`, :meth:`_json_array`) for :class:`DumpReader`."""

    def _ndjson(self, stream: IO[bytes]) -> Iterator[Item | None]:
        loads = orjson.loads
        fast = self._ndjson_fast() if self.wanted is not None else None
        for first, lines, _ended in self._line_blocks(stream):
            i, n = 0, len(lines)
            while i < n:
                if fast is not None:
                    i = fast(lines, i)
                    if i == n:
                        break
                number, line = first + i, lines[i]
                i += 1
                if line is None:
                    yield self._too_long(number)
                    continue
                raw = line.strip()
                if not raw:
                    continue
                try:
                    data = loads(raw)
                    latin1 = False
                except orjson.JSONDecodeError as exc:
                    text, latin1 = self._decode(number, raw)
                    if not latin1:
                        yield self._reject(number, "invalid_json", f"invalid JSON: {exc.msg}")
                        continue
                    try:
                        data = loads(text)
                    except orjson.JSONDecodeError as exc2:
                        yield self._reject(number, "invalid_json", f"invalid JSON: {exc2.msg}")
                        continue
                yield self._mapping(number, data, latin1)

    def _layout(self, keys: tuple[str, ...]) -> _Layout:
        """Which of a JSON object's ``keys`` :meth:`_mapping` reads, as it reads them."""
        principal: list[str] = []
        password = pw_hash = None
        extras: dict[str, str] = {}
        for key in keys:
            column = COLUMNS.get(key) or COLUMNS.get(key.strip().lower())
            if column == "principal":
                principal.append(key)
            elif column == "password":
                password = key
            elif column == "hash":
                pw_hash = key
            elif column is not None:
                extras[column] = key  # the last key of a column wins, as in _mapping
        return _Layout(
            principal[0] if principal else None,
            password,
            pw_hash,
            tuple(extras),
            tuple(extras.values()),
            next(iter(extras.values())) if len(extras) == 1 else None,
        )

    def _ndjson_fast(self) -> Callable[[list[bytes | None], int], int]:
        """:meth:`_csv_fast` for NDJSON: ``fast(lines, i)`` counts the objects from
        ``lines[i]`` on that are valid records no one holds, and returns the index of the
        first line it leaves to the general path (anything but such an object)."""
        wanted = self.wanted
        assert wanted is not None
        summary = self.summary
        loads = orjson.loads
        decode_error = orjson.JSONDecodeError
        layouts = self._layouts
        seen = self._extras_seen
        extras_ok = self._extras_ok

        def fast(lines: list[bytes | None], i: int) -> int:
            parsed = with_password = 0
            n = len(lines)
            try:
                while i < n:
                    line = lines[i]
                    if line is None:
                        return i
                    try:
                        data = loads(line)
                    except decode_error:
                        return i  # blank, invalid, or Latin-1
                    if type(data) is not dict:
                        return i
                    keys = tuple(data)
                    layout = layouts.get(keys)
                    if layout is None:
                        if len(layouts) > 256:
                            layouts.clear()
                        layout = layouts[keys] = self._layout(keys)
                    if layout.principal is None:
                        return i
                    principal = data[layout.principal]
                    if type(principal) is not str:
                        return i  # None (then a later key may serve), or a rejection
                    principal = principal.strip().lower()
                    if (
                        not principal
                        or len(principal) > 320
                        or " " in principal
                        or not principal.isprintable()  # other blanks are not printable
                        or wanted(principal)
                    ):
                        return i
                    present = False
                    if layout.password is not None:
                        password = data[layout.password]
                        if password:
                            if type(password) is not str:
                                return i
                            present = True
                    if layout.pw_hash is not None and data[layout.pw_hash]:
                        present = True
                    if layout.single_extra is not None:  # the common shape: one key
                        value = data[layout.single_extra]
                        # the type is part of the key: True and 1 are equal, not to _extra
                        key1 = (layout.extra_columns, value.__class__, value)
                        try:
                            verdict = seen.get(key1, _UNSEEN)
                        except TypeError:  # an unhashable value (a list)
                            return i
                        if verdict is _UNSEEN:
                            verdict = extras_ok(key1, {layout.extra_columns[0]: value})
                        if verdict is None:
                            return i
                        present = present or verdict
                    elif layout.extra_keys:
                        values = tuple(map(data.__getitem__, layout.extra_keys))
                        # types too: True and 1 are equal, but not to _extra
                        key = (layout.extra_columns, values, tuple(map(type, values)))
                        try:
                            verdict = seen.get(key, _UNSEEN)
                        except TypeError:  # an unhashable value (a list)
                            return i
                        if verdict is _UNSEEN:
                            extra = dict(zip(layout.extra_columns, values, strict=True))
                            verdict = extras_ok(key, extra)
                        if verdict is None:
                            return i
                        present = present or verdict
                    parsed += 1
                    if present:
                        with_password += 1
                    i += 1
                return i
            finally:
                summary.read += parsed
                summary.parsed += parsed
                summary.filtered += parsed
                summary.with_password += with_password

        return fast

    def _json_array(self, stream: IO[bytes]) -> Iterator[Item | None]:
        def read(size: int) -> bytes:
            if self.on_block is not None:
                self.on_block()
            return stream.read(size)

        splitter = _ArraySplitter(read, self.cap)
        loads = orjson.loads
        for index, line, element, error in splitter:
            if error is not None:
                if error == "too_long":
                    yield self._too_long(line, index)
                else:
                    yield self._reject(line, "invalid_json", error, index)
                continue
            if element is None:
                continue
            if not element:
                yield self._mapping(line, splitter.parsed, False, index)
                continue
            try:
                data = loads(element)
                latin1 = False
            except orjson.JSONDecodeError as exc:
                text, latin1 = self._decode(line, element)
                failure = exc
                if latin1:
                    try:
                        data = loads(text)
                    except orjson.JSONDecodeError as exc2:
                        failure = exc2
                    else:
                        yield self._mapping(line, data, latin1, index)
                        continue
                yield self._reject(line, "invalid_json", f"invalid JSON: {failure.msg}", index)
                continue
            yield self._mapping(line, data, latin1, index)
