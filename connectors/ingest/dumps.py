"""Breach dumps -> LeakRecords, streamed: CSV, JSON arrays, NDJSON, ``email:password`` combo
lists, each optionally gzip'd (``accessguard leaks import FILE`` and ``POST /v1/leaks``).

Streaming, memory flat in the file size: the file is read in chunks and line by line with a
per-record cap (``max_record_bytes``, 64 KiB by default); a JSON array is split into its
elements by :class:`_ArraySplitter` without loading the array. Nothing is fatal but an
unreadable file: every record is either a :class:`~streams.model.records.LeakRecord` or a
:class:`Rejection` (line number, short ``code`` and a ``reason``), in file order, and
:class:`DumpSummary` counts them as they go (read, parsed, rejected by code, warnings).

**Passwords stop here.** A plaintext password is read only to compute
``HMAC-SHA256(leak key, password)``; the record keeps ``password_present`` and that hex digest
(None without a key). A rejection never carries the line's text, and nothing here logs a
record: a dump line is a credential.

Detection: gzip by its magic bytes (``1f 8b``; a ``.gz`` name alone is not trusted); the
format from the content (:func:`sniff_format`: ``[`` JSON array, ``{`` NDJSON, a header
naming a known column is CSV, ``principal:password`` lines are a combo list), the extension
only breaking a tie, and ``DumpOptions.format`` (``--format``) overriding both. Lines end at
LF, CRLF or a lone CR (old Mac exports). Encodings: UTF-8 (a BOM is skipped); a line that is
not UTF-8 is read as Latin-1, counted as a warning and flagged ``latin1_fallback`` on its
record.

Bounds: ``DumpOptions.max_bytes`` (decompressed bytes) and ``max_records`` stop a read with
:class:`DumpTooLarge` — ``POST /v1/leaks`` sets both, so a small gzip bomb cannot expand into
gigabytes; ``leaks import`` of a file sets neither (its memory is flat in the file size).

Columns (CSV header names and JSON keys, case-insensitive) are mapped by :data:`COLUMNS`:
``email``/``username``/``user``/``login`` -> principal, ``password``/``pass`` -> password,
``hash`` -> a password hash (counted as present, never HMAC'd), ``breach``, ``date`` and so
on. A CSV without a recognisable header is read as ``principal,password``.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import operator
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, cast

import orjson

from streams.model.records import (
    CREDENTIAL_DATA_CLASSES,
    LEAK_FLAGS,
    LeakRecord,
    parse_date_or_time,
)
from streams.support.errors import ValidationError
from streams.support.secrets import Secret

MAX_RECORD_BYTES = 65536
_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
FORMATS: tuple[str, ...] = ("csv", "json", "ndjson", "combo")
#: Deepest nesting of one JSON array element (orjson refuses past 1024 anyway).
MAX_DEPTH = 256
#: Longest breach (and source) name a LeakRecord accepts (``LeakRecord.from_dict``).
MAX_BREACH_NAME = 200

#: Header names / JSON keys (lower-case) -> canonical column.
COLUMNS: dict[str, str] = {
    **dict.fromkeys(
        (
            "principal", "email", "e-mail", "mail", "email_address", "emailaddress",
            "username", "user", "user_name", "login", "account", "userid", "user_id",
        ),
        "principal",
    ),
    **dict.fromkeys(("password", "pass", "passwd", "pwd", "plaintext", "cleartext"), "password"),
    **dict.fromkeys(
        ("hash", "password_hash", "passwordhash", "hashed_password", "pwhash"), "hash"
    ),
    **dict.fromkeys(("breach", "breach_name", "breachname", "source_breach"), "breach"),
    **dict.fromkeys(("breach_date", "breachdate", "date", "leak_date"), "breach_date"),
    **dict.fromkeys(("added_at", "added", "added_date", "addeddate"), "added_at"),
    **dict.fromkeys(("data_classes", "dataclasses"), "data_classes"),
    "password_present": "password_present",
    "password_hmac": "password_hmac",
    "flags": "flags",
    "source": "source",
}  # fmt: skip
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_BLANK = re.compile(r"\s").search
_DELIMITERS = (",", ";", "\t", "|")
_UNSEEN: Any = object()


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that did not become a LeakRecord. Never holds the record's text."""

    line: int
    code: str
    reason: str
    index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "index": self.index, "code": self.code, "reason": self.reason}


class DumpTooLarge(Exception):
    """A read stopped at :attr:`DumpOptions.max_bytes` or :attr:`DumpOptions.max_records`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_breach_name(value: str, what: str = "breach") -> str:
    """A breach or source name as a LeakRecord accepts it (stripped, 1-200 printable
    characters), else :class:`ValidationError` naming ``what``: checked where the name
    enters (``--breach``, ``?breach=``, a file's name), not later in the worker."""
    name = value.strip()
    if not name:
        raise ValidationError(f"{what}: must not be empty")
    if len(name) > MAX_BREACH_NAME:
        raise ValidationError(f"{what}: longer than {MAX_BREACH_NAME} characters")
    if not name.isprintable():
        raise ValidationError(f"{what}: control characters are not allowed")
    return name


@dataclass
class DumpSummary:
    """Running counts of one import; :meth:`to_dict` is the end-of-import report."""

    format: str = ""
    compressed: bool = False
    read: int = 0
    parsed: int = 0
    rejected: int = 0
    with_password: int = 0
    #: Valid records that matched no one (``DumpReader(wanted=...)``): counted in ``read`` and
    #: ``parsed`` but never built, so not yielded. Importers report them as unmatched.
    filtered: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "compressed": self.compressed,
            "read": self.read,
            "parsed": self.parsed,
            "rejected": self.rejected,
            "with_password": self.with_password,
            "reasons": dict(self.reasons.most_common()),
            "warnings": dict(self.warnings.most_common()),
        }


@dataclass(frozen=True)
class DumpOptions:
    """How to read a dump. ``hmac_key`` is the deployment's leak key (``leaks.hmac_key``);
    ``breach`` names the breach when records do not (default: the file name's stem)."""

    hmac_key: Secret | None = None
    breach: str | None = None
    source: str | None = None
    breach_date: datetime | None = None
    format: str | None = None
    max_record_bytes: int = MAX_RECORD_BYTES
    #: Most (decompressed) bytes one read may take; None: no bound (a file import).
    max_bytes: int | None = None
    #: Most records (valid or rejected) one read may take; None: no bound.
    max_records: int | None = None


Item = LeakRecord | Rejection


_COMBO_LINE = re.compile(rb'^[^\s,;\t|:"]+:')
_LINE_END = re.compile(rb"\r\n|\r|\n")


def _format_by_name(name: str) -> str | None:
    lower = name.lower()
    if lower.endswith(".gz"):
        lower = lower[:-3]
    for suffixes, fmt in (
        ((".csv", ".tsv"), "csv"),
        ((".ndjson", ".jsonl"), "ndjson"),
        ((".json",), "json"),
        ((".txt",), "combo"),
    ):
        if lower.endswith(suffixes):
            return fmt
    return None


def sniff_format(name: str, head: bytes) -> str:
    """The format of a (decompressed) dump from its first bytes; the name only breaks a tie.

    ``[`` is a JSON array and ``{`` NDJSON; a first line whose cells name a known column
    (:data:`COLUMNS`) is a CSV header; mostly ``principal:password`` lines (nothing but a
    principal before the first ``:``) are a combo list. Otherwise the extension decides
    (``.txt`` combo, ``.csv`` CSV, ...), else CSV. A combo list named ``combo.gz`` or
    ``x.csv`` is thus read as one, instead of as one-column CSV that matches nobody."""
    text = head.removeprefix(_BOM)
    start = text.lstrip(b" \t\r\n")[:1]
    if start == b"[":
        return "json"
    if start == b"{":
        return "ndjson"
    lines = [line for line in _LINE_END.split(text) if line.strip()]
    if len(head) >= 4096 and len(lines) > 1:
        lines.pop()  # the sample may end inside a line
    by_name = _format_by_name(name)
    if not lines:
        return by_name or "csv"
    first = lines[0].decode("utf-8", "replace")
    delimiter = max(_DELIMITERS, key=first.count)
    if first.count(delimiter):
        cells = (c.strip().strip('"').lower().lstrip("\ufeff") for c in first.split(delimiter))
        if any(cell in COLUMNS for cell in cells):
            return "csv"
    combo = sum(1 for line in lines if _COMBO_LINE.match(line))
    if combo * 5 >= len(lines) * 4:
        return "combo"
    return by_name or "csv"


class DumpReader:
    """Reads one dump. Iterate :meth:`read_path` or :meth:`read_stream`; :attr:`summary`
    counts as records go by, and :meth:`position` is how far into the raw file (compressed
    bytes) the reader is, for a progress bar.

    ``wanted`` (a normalised principal -> whether anyone holds it; ``LeakIndex.wants``) makes
    the reader match first: a valid record nobody holds is validated like any other (its
    rejections are the same) and counted in :attr:`DumpSummary.filtered`, but no password is
    hashed and no LeakRecord is built for it, and plain CSV / combo lines and NDJSON objects
    whose principal nobody holds skip the general per-record path altogether (see
    :meth:`_csv_fast`). A dump is mostly strangers, so this is where an import's time goes."""

    def __init__(
        self, options: DumpOptions | None = None, *, wanted: Callable[[str], bool] | None = None
    ) -> None:
        self.options = options or DumpOptions()
        self.wanted = wanted
        #: Called after each block (about 1 MiB) is read: an importer's progress bar and
        #: partial-batch flush, which a match-first read may otherwise not reach for long.
        self.on_block: Callable[[], None] | None = None
        #: extra cells (a tuple) -> None when they are invalid, else whether they make a
        #: password present: the fast paths validate a dump's few distinct extras once.
        self._extras_seen: dict[Any, bool | None] = {}
        self._layouts: dict[tuple[str, ...], _Layout] = {}
        if self.options.format is not None and self.options.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}")
        key = self.options.hmac_key.reveal() if self.options.hmac_key else ""
        self._hmac = _Hmac(key.encode()) if key else None
        self.cap = self.options.max_record_bytes
        self.summary = DumpSummary()
        self._raw: IO[bytes] | None = None
        self._position = 0
        self._dates: dict[str, datetime | None] = {}
        self._breach = self.options.breach or "dump"
        self._source = self.options.source or "dump"

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

    # ---- building records ------------------------------------------------------------

    def _reject(self, line: int, code: str, reason: str, index: int | None = None) -> Rejection:
        if code != "unreadable":
            self.summary.read += 1
        self.summary.rejected += 1
        self.summary.reasons[code] += 1
        return Rejection(line, code, reason, index)

    def _date(self, value: Any, name: str) -> datetime | None:
        if not isinstance(value, str):
            return parse_date_or_time(value, name)
        if value in self._dates:
            return self._dates[value]
        parsed = parse_date_or_time(value.strip(), name)
        if len(self._dates) > 4096:
            self._dates.clear()
        self._dates[value] = parsed
        return parsed

    def _record(
        self,
        line: int,
        principal: Any,
        *,
        password: Any = None,
        pw_hash: Any = None,
        extra: dict[str, Any] | None = None,
        latin1: bool = False,
        index: int | None = None,
    ) -> Item | None:
        """The record, its rejection, or None when ``wanted`` says no one holds it."""
        # The per-record hot path of every format: locals, no helper objects, C-level checks.
        if not isinstance(principal, str):
            return self._reject(line, "no_principal", "no e-mail or username", index)
        principal = principal.strip().lower()
        if not principal:
            return self._reject(line, "no_principal", "no e-mail or username", index)
        if len(principal) > 320 or _BLANK(principal) is not None:
            return self._reject(line, "bad_principal", "principal: too long or has blanks", index)
        present = False
        if password:
            if not isinstance(password, str):
                return self._reject(line, "bad_password", "password: expected a string", index)
            present = True
        if pw_hash:
            present = True
        meta = _Meta(self._breach, self._source, self.options.breach_date)
        if latin1:
            meta.flags = ("latin1_fallback",)
        if extra:
            try:
                self._extra(extra, meta)
            except ValidationError as exc:
                return self._reject(line, exc.reason.split(":", 1)[0], exc.reason, index)
            present = present or meta.present or meta.digest is not None
        summary = self.summary
        summary.read += 1
        summary.parsed += 1
        if present:
            summary.with_password += 1
        if self.wanted is not None and not self.wanted(principal):
            summary.filtered += 1
            return None
        digest = None
        if password and self._hmac is not None:
            digest = self._hmac.hexdigest(password.encode("utf-8"))
        digest = digest or meta.digest
        classes = meta.classes
        if present and (not classes or CREDENTIAL_DATA_CLASSES.isdisjoint(classes)):
            classes = (*classes, "Password hashes" if pw_hash and not password else "Passwords")
        return LeakRecord(
            principal=principal,
            breach=meta.breach,
            source=meta.source,
            breach_date=meta.breach_date,
            added_at=meta.added_at,
            data_classes=classes,
            password_present=present,
            password_hmac=digest,
            flags=meta.flags,
        )

    def _extras_ok(self, key: Any, extra: dict[str, Any]) -> bool | None:
        """For the fast paths: None if ``extra`` (cells ``key``) would reject the record,
        else whether it makes a password present. Cached: a dump has few distinct extras."""
        seen = self._extras_seen
        if key in seen:
            return seen[key]
        meta = _Meta(self._breach, self._source, None)
        try:
            self._extra(extra, meta)
            verdict: bool | None = meta.present or meta.digest is not None
        except ValidationError:
            verdict = None
        if len(seen) > 4096:
            seen.clear()
        seen[key] = verdict
        return verdict

    def _extra(self, extra: dict[str, Any], meta: _Meta) -> None:
        for column, value in extra.items():
            if column == "breach_date":
                if value not in (None, ""):
                    meta.breach_date = self._date(value, "breach_date")
            elif column == "added_at":
                meta.added_at = self._date(value, "added_at")
            elif column in ("breach", "source"):
                if isinstance(value, str) and value.strip():
                    setattr(meta, column, value.strip()[:200])
            elif column == "data_classes":
                items = re.split(r"[;|,]", value) if isinstance(value, str) else value
                if isinstance(items, list):
                    # names only: str() of a nested list recursed past the limit (a 500)
                    names = (str(v).strip() for v in items[:64] if isinstance(v, str | int))
                    meta.classes = tuple(n for n in names if n)
            elif column == "flags":
                if isinstance(value, list):
                    bad = [v for v in value if not isinstance(v, str) or v not in LEAK_FLAGS]
                    if bad:
                        shown = bad[0][:40] if isinstance(bad[0], str) else type(bad[0]).__name__
                        raise ValidationError(f"flags: unknown flag {shown!r}")
                    meta.flags = tuple(dict.fromkeys((*meta.flags, *value)))
            elif column == "password_hmac":
                if value is not None:
                    if not isinstance(value, str) or not _HEX64.match(value):
                        raise ValidationError(
                            "password_hmac: expected 64 lower-case hex characters"
                        )
                    meta.digest = value
            elif column == "password_present" and value is True:
                meta.present = True

    def _mapping(self, line: int, data: Any, latin1: bool, index: int | None = None) -> Item | None:
        if not isinstance(data, dict):
            return self._reject(line, "not_an_object", "record is not a JSON object", index)
        principal: Any = None
        password: Any = None
        pw_hash: Any = None
        extra: dict[str, Any] | None = None
        for key, value in data.items():
            column = COLUMNS.get(key) or COLUMNS.get(key.strip().lower())
            if column is None:
                continue
            if column == "principal":
                if principal is None:
                    principal = value
            elif column == "password":
                password = value
            elif column == "hash":
                pw_hash = value
            else:
                if extra is None:
                    extra = {}
                extra[column] = value
        return self._record(
            line,
            principal,
            password=password,
            pw_hash=pw_hash,
            extra=extra,
            latin1=latin1,
            index=index,
        )

    # ---- lines -----------------------------------------------------------------------

    def _line_blocks(self, stream: IO[bytes]) -> Iterator[tuple[int, list[bytes | None], bool]]:
        """The lines of ``stream`` a block (about 1 MiB) at a time: ``(number of the first
        line, lines without their "\\n", ended)``. A line longer than the cap is None (its
        bytes are dropped as they are read: memory stays flat), and ``ended`` is False only
        for the file's last line when it has no "\\n". Lines end at "\\n" only, like
        ``readline``, except that a CRLF or a lone CR ends a line too (they become "\\n"
        here, so no reader sees a CR); a UTF-8 BOM before line 1 is dropped."""
        # read1: what a gzip stream decompressed before a corrupt part still comes out
        read = getattr(stream, "read1", stream.read)
        cap = self.cap
        size = max(_CHUNK, cap + 1)
        number = 1
        tail = b""
        skipping = False  # inside an over-long line: drop bytes up to its end
        first = True
        after_cr = False  # the last block ended with CR: a LF opening this one is its pair
        while True:
            data = read(size)
            if not data:
                break
            if self.on_block is not None:
                self.on_block()
            if first:
                first = False
                if data.startswith(_BOM):
                    data = data[3:]
            if after_cr and data[:1] == b"\n":
                data = data[1:]
            after_cr = False
            if b"\r" in data:  # memchr: LF-only files pay nothing more
                after_cr = data[-1:] == b"\r"
                data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if not data:
                continue
            if skipping:
                cut = data.find(b"\n")
                if cut < 0:
                    continue
                data = data[cut + 1 :]
                skipping = False
                yield number, [None], True
                number += 1
            lines: list[bytes | None] = (tail + data if tail else data).split(b"\n")  # type: ignore[assignment]
            tail = lines.pop() or b""
            if len(tail) > cap:
                tail = b""
                skipping = True
            if lines:
                if max(map(len, lines)) > cap:  # type: ignore[arg-type]
                    lines = [line if len(line) <= cap else None for line in lines]  # type: ignore[arg-type]
                yield number, lines, True
                number += len(lines)
        if skipping:
            yield number, [None], True
        elif tail:
            yield number, [tail], False

    def _lines(self, stream: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
        """``(line number, bytes without the "\\n")``; None for a line over the cap."""
        for number, lines, _ended in self._line_blocks(stream):
            yield from enumerate(lines, number)

    def _too_long(self, line: int, index: int | None = None) -> Rejection:
        return self._reject(
            line, "too_long", f"record longer than {self.cap} bytes: rejected unread", index
        )

    def _decode(self, line: int, raw: bytes) -> tuple[str, bool]:
        try:
            return raw.decode("utf-8"), False
        except UnicodeDecodeError:
            self.summary.warnings["latin1_fallback"] += 1
            return raw.decode("latin-1"), True

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


class _Hmac:
    """HMAC-SHA256 (RFC 2104) with the key's pads hashed once: per password two hash copies,
    ~0.9 us against ~3 us for :func:`hmac.digest` (measured). Same output as :mod:`hmac`."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        block = 64
        if len(key) > block:
            key = hashlib.sha256(key).digest()
        key = key.ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def hexdigest(self, message: bytes) -> str:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


@dataclass(slots=True)
class _Meta:
    """A record's fields besides principal and password, while they are being read."""

    breach: str
    source: str
    breach_date: datetime | None
    added_at: datetime | None = None
    classes: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    present: bool = False
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class _Layout:
    """The keys of one shape of JSON object that :meth:`DumpReader._mapping` reads: the
    first principal key, the last password and hash keys, the last key of each other
    column (``extra_columns`` in first-seen order, ``extra_keys`` beside them)."""

    principal: str | None
    password: str | None
    pw_hash: str | None
    extra_columns: tuple[str, ...]
    extra_keys: tuple[str, ...]
    #: The one extra key when there is exactly one (the fast path's common case).
    single_extra: str | None = None


@dataclass(slots=True)
class _CsvState:
    line: int = 0
    latin1: bool = False
    #: csv.reader is between records (it returned its last row): the next line starts one.
    between: bool = True


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


def breach_from_name(name: str) -> str:
    """The breach a dump is named after: its file name without the known extensions.
    ValidationError when that is not a valid breach name (pass ``--breach`` then)."""
    stem = name
    for suffix in (".gz", ".csv", ".tsv", ".json", ".ndjson", ".jsonl", ".txt"):
        stem = stem.removesuffix(suffix)
    try:
        return check_breach_name(stem or "dump")
    except ValidationError as exc:
        raise ValidationError(
            f"the file name does not make a breach name ({exc.reason}): pass --breach NAME"
        ) from None


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
