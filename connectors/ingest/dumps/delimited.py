"""The line formats of a dump read, as a mixin over :class:`ReaderCore`: CSV (a header naming
known columns, else ``principal,password``; ``,``, ``;``, tab or ``|`` delimited) and combo
lists (``principal:password``). Each has a match-first fast path that counts and drops the
plain lines whose principal no one holds."""

from __future__ import annotations

import csv
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from connectors.ingest.dumps.core import _BLANK, ReaderCore
from connectors.ingest.dumps.options import _DELIMITERS, COLUMNS, Item, Rejection


class DelimitedFormats(ReaderCore):
    """CSV and combo lists (:meth:`_csv`, :meth:`_combo`) for :class:`DumpReader`."""

    def _combo(self, stream: IO[bytes]) -> Iterator[Item | None]:
        """``principal:password`` (or ``;``) per line; the password may contain ``:``."""
        wanted = self.wanted
        summary = self.summary
        for number, raw in self._lines(stream):
            if raw is None:
                yield self._too_long(number)
                continue
            if wanted is not None and raw.isascii():
                # match first: a plain line no one holds is counted and dropped here
                text = raw.decode("ascii").rstrip("\r\n")
                cut = min((i for i in (text.find(":"), text.find(";")) if i >= 0), default=-1)
                principal = (text[:cut] if cut >= 0 else text).strip().lower()
                if (
                    principal
                    and len(principal) <= 320
                    and _BLANK(principal) is None
                    and not wanted(principal)
                ):
                    summary.read += 1
                    summary.parsed += 1
                    summary.filtered += 1
                    if cut >= 0 and text[cut + 1 :]:
                        summary.with_password += 1
                    continue
            text, latin1 = self._decode(number, raw)
            text = text.rstrip("\r\n")
            if not text.strip():
                continue
            cut = min((i for i in (text.find(":"), text.find(";")) if i >= 0), default=-1)
            if cut < 0:
                yield self._record(number, text, latin1=latin1)
            else:
                yield self._record(number, text[:cut], password=text[cut + 1 :], latin1=latin1)

    def _csv(self, stream: IO[bytes]) -> Iterator[Item | None]:
        pending: list[Rejection] = []
        state = _CsvState()
        fast: Callable[[list[bytes | None], int], int] | None = None

        def text_lines() -> Iterator[str]:
            for number, lines, ended in self._line_blocks(stream):
                i, n = 0, len(lines)
                while i < n:
                    # Between records (csv.reader is not inside a quoted field), the plain
                    # lines whose principal no one holds are counted and skipped here.
                    if fast is not None and state.between:
                        i = fast(lines, i)
                        if i == n:
                            break
                    raw = lines[i]
                    state.line = number + i
                    i += 1
                    if raw is None:
                        pending.append(self._too_long(state.line))
                        continue
                    state.between = False
                    text, latin1 = self._decode(state.line, raw)
                    state.latin1 = state.latin1 or latin1
                    yield text + "\n" if ended or i < n else text

        lines = text_lines()
        header_text = next(lines, None)
        while pending:
            yield pending.pop(0)
        if header_text is None:
            return
        header_line = state.line
        delimiter = max(_DELIMITERS, key=header_text.count)
        if not header_text.count(delimiter):
            delimiter = ","
        header = next(csv.reader([header_text], delimiter=delimiter), [])
        mapped = [COLUMNS.get(h.strip().lower().lstrip("\ufeff")) for h in header]
        first_data: list[str] | None = None
        if "principal" not in mapped:
            mapped = ["principal", "password"]
            first_data = header
        pi = mapped.index("principal")
        pw = mapped.index("password") if "password" in mapped else -1
        hi = mapped.index("hash") if "hash" in mapped else -1
        extras = [
            (i, c) for i, c in enumerate(mapped) if c not in (None, "principal", "password", "hash")
        ]
        width = len(mapped)

        def row_item(number: int, row: list[str], latin1: bool) -> Item | None:
            if len(row) <= pi:
                return self._reject(
                    number, "missing_columns", f"{len(row)} column(s), expected {width}"
                )
            extra = {c: row[i] for i, c in extras if i < len(row) and row[i] != ""} or None
            return self._record(
                number,
                row[pi],
                password=row[pw] if 0 <= pw < len(row) else None,
                pw_hash=row[hi] if 0 <= hi < len(row) else None,
                extra=extra,
                latin1=latin1,
            )

        if first_data is not None and any(cell.strip() for cell in first_data):
            yield row_item(header_line, first_data, state.latin1)
        if self.wanted is not None:
            fast = self._csv_fast(delimiter, width, pi, pw, hi, extras)
        reader = csv.reader(lines, delimiter=delimiter)
        while True:
            state.latin1 = False
            state.between = True
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                while pending:
                    yield pending.pop(0)
                yield self._reject(state.line, "bad_csv", f"CSV: {exc}"[:200])
                continue
            while pending:
                yield pending.pop(0)
            if not row or not any(cell.strip() for cell in row):
                continue
            yield row_item(state.line, row, state.latin1)
        while pending:
            yield pending.pop(0)

    def _csv_fast(  # noqa: PLR0917 - the header's facts, computed once by _csv
        self,
        delimiter: str,
        width: int,
        pi: int,
        pw: int,
        hi: int,
        extras: list[tuple[int, str]],
    ) -> Callable[[list[bytes | None], int], int]:
        """``fast(lines, i)`` counts (as parsed and filtered) the valid records no one holds
        from ``lines[i]`` on and returns the index of the first line it leaves to the general
        path, which decides everything else. Only lines csv.reader would split exactly like
        ``str.split`` qualify: ASCII, no quote or inner CR, every column present; and only
        principals the general path would take as they are."""
        wanted = self.wanted
        assert wanted is not None
        summary = self.summary
        limit = csv.field_size_limit()
        pick = operator.itemgetter(*(i for i, _c in extras)) if extras else None
        columns = [c for _i, c in extras]
        seen = self._extras_seen
        extras_ok = self._extras_ok
        has_pw, has_hash = pw >= 0, hi >= 0

        def fast(lines: list[bytes | None], i: int) -> int:
            parsed = with_password = 0
            n = len(lines)
            try:
                while i < n:
                    raw = lines[i]
                    if raw is None or not raw.isascii() or b'"' in raw:
                        return i
                    text = raw.decode("ascii")
                    if text[-1:] == "\r":
                        text = text[:-1]
                    if "\r" in text or len(text) >= limit:
                        return i
                    cells = text.split(delimiter)
                    if len(cells) < width:  # more is fine: csv.reader ignores them too
                        return i
                    principal = cells[pi].strip().lower()
                    if (
                        not principal
                        or len(principal) > 320
                        or " " in principal
                        or not principal.isprintable()
                        or wanted(principal)
                    ):
                        return i
                    present = (has_pw and cells[pw] != "") or (has_hash and cells[hi] != "")
                    if pick is not None:
                        key = pick(cells)
                        if key in seen:
                            verdict = seen[key]
                        else:
                            values = key if len(columns) > 1 else (key,)
                            extra = {c: v for c, v in zip(columns, values, strict=True) if v}
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


@dataclass(slots=True)
class _CsvState:
    line: int = 0
    latin1: bool = False
    #: csv.reader is between records (it returned its last row): the next line starts one.
    between: bool = True
