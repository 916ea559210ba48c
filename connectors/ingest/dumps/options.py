"""What a dump read takes and gives, and what a dump is: :class:`DumpOptions`, the running
:class:`DumpSummary`, a :class:`Rejection` (or :class:`DumpTooLarge`), breach names, the
column names and the format detection.

Detection: gzip by its magic bytes (``1f 8b``; a ``.gz`` name alone is not trusted); the
format from the content (:func:`sniff_format`: ``[`` JSON array, ``{`` NDJSON, a header
naming a known column is CSV, ``principal:password`` lines are a combo list), the extension
only breaking a tie, and ``DumpOptions.format`` (``--format``) overriding both.

Bounds: ``DumpOptions.max_bytes`` (decompressed bytes) and ``max_records`` stop a read with
:class:`DumpTooLarge` — ``POST /v1/leaks`` sets both, so a small gzip bomb cannot expand into
gigabytes; ``leaks import`` of a file sets neither (its memory is flat in the file size).

Columns (CSV header names and JSON keys, case-insensitive) are mapped by :data:`COLUMNS`:
``email``/``username``/``user``/``login`` -> principal, ``password``/``pass`` -> password,
``hash`` -> a password hash (counted as present, never HMAC'd), ``breach``, ``date`` and so
on. A CSV without a recognisable header is read as ``principal,password``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from streams.model.records import LeakRecord
from streams.support.errors import ValidationError
from streams.support.secrets import Secret

MAX_RECORD_BYTES = 65536
#: Bytes asked of the stream per read (lines and JSON arrays alike). Imported by name into
#: ``core`` and ``jsonsplit``: a test that shrinks it patches both modules.
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
_DELIMITERS = (",", ";", "\t", "|")


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
