"""Breach dumps: every format streamed into LeakRecords or rejections with reasons, and a
plaintext password never past the parser."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from connectors.ingest.dumps import (
    DumpOptions,
    DumpReader,
    Item,
    Rejection,
    parse_body,
    sniff_format,
)
from streams.model.records import LeakRecord
from streams.support.secrets import Secret

KEY = "leak-hmac-test-key"
SECRET_PW = "Hunter2-Plaintext!"


def read(data: bytes, name: str, **options: object) -> tuple[list[Item], DumpReader]:
    opts = DumpOptions(hmac_key=Secret(KEY), breach="TestBreach", **options)  # type: ignore[arg-type]
    reader = DumpReader(opts)
    return list(reader.read_stream(io.BytesIO(data), name)), reader


def records(items: list[Item]) -> list[LeakRecord]:
    return [i for i in items if isinstance(i, LeakRecord)]


def rejections(items: list[Item]) -> list[Rejection]:
    return [i for i in items if isinstance(i, Rejection)]


def expected_hmac(password: str) -> str:
    return hmac.new(KEY.encode(), password.encode(), hashlib.sha256).hexdigest()


CSV = (
    b"Email,Password,Breach_Date\n"
    b"  Ana@Brand.example ,s3cret,2021-02-03\n"
    b'"ben@brand.example","pa,ss",\n'
    b",orphan-password,\n"
    b"cy@brand.example,,2021-02-03\n"
)


def test_csv_with_a_header_maps_columns_and_hashes_passwords() -> None:
    """Header names map case-insensitively; principals are stripped and lower-cased; a
    quoted comma stays in the password; an empty principal is rejected with its line."""
    items, reader = read(CSV, "dump.csv")
    recs = records(items)
    assert [r.principal for r in recs] == [
        "ana@brand.example",
        "ben@brand.example",
        "cy@brand.example",
    ]
    assert recs[0].password_hmac == expected_hmac("s3cret")
    assert recs[1].password_hmac == expected_hmac("pa,ss")
    assert recs[0].breach_date is not None
    assert recs[0].breach_date.day == 3
    assert not recs[2].password_present
    assert recs[2].password_hmac is None
    assert [(r.line, r.code) for r in rejections(items)] == [(4, "no_principal")]
    assert reader.summary.to_dict() | {"reasons": None} == {
        "format": "csv",
        "compressed": False,
        "read": 4,
        "parsed": 3,
        "rejected": 1,
        "with_password": 2,
        "reasons": None,
        "warnings": {},
    }


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"user;pass\nana;pw1\nben;pw2\n", "dump.csv"),
        (b"login\thash\nana\t5f4dcc3b\nben\t5f4dcc3c\n", "dump.tsv"),
        (b"ana,pw1\nben,pw2\n", "noheader.csv"),
    ],
)
def test_csv_delimiters_aliases_and_headerless_files(data: bytes, name: str) -> None:
    """; and tab delimiters, username/login/hash aliases, and principal,password without a
    header all read."""
    items, _ = read(data, name)
    assert [r.principal for r in records(items)] == ["ana", "ben"]
    assert all(r.password_present for r in records(items))


def test_a_hash_column_marks_the_credential_present_without_an_hmac() -> None:
    """A password hash is not a password: present, classed "Password hashes", no HMAC."""
    items, _ = read(b"email,hash\nana@x.example,$2a$10$abc\n", "d.csv")
    (rec,) = records(items)
    assert rec.password_present
    assert rec.password_hmac is None
    assert rec.data_classes == ("Password hashes",)


def test_json_array_is_split_incrementally_with_odd_elements() -> None:
    """Whitespace, nested objects, braces inside strings, a non-object, an invalid element and
    a too-long element: each becomes a record or a rejection, and the rest still reads."""
    big = b'{"email":"big@x.example","pad":"' + b"y" * 70_000 + b'"}'
    data = (
        b'[\n {"email":"a@x.example","password":"p1"} ,\n'
        b' {"user":"b","meta":{"n":[1,{"k":"}],"}]}},\n'
        b" 42,\n {bad json},\n" + big + b",\n"
        b' {"email":"c@x.example","note":"a \\" quote, and ] bracket"}\n]'
    )
    items, reader = read(data, "dump.json")
    assert [r.principal for r in records(items)] == ["a@x.example", "b", "c@x.example"]
    assert [(r.index, r.code) for r in rejections(items)] == [
        (2, "not_an_object"),
        (3, "invalid_json"),
        (4, "too_long"),
    ]
    assert rejections(items)[0].line == 4
    assert reader.summary.read == 6


def test_json_array_across_chunk_boundaries(tmp_path: Path) -> None:
    """A multi-megabyte array streams through the 1 MiB chunks without losing an element."""
    n = 40_000
    body = (
        b"["
        + b",".join(
            b'{"email":"user%d@x.example","password":"p%d","s":"},{"}' % (i, i) for i in range(n)
        )
        + b"]"
    )
    assert len(body) > 2 * (1 << 20)
    path = tmp_path / "big.json"
    path.write_bytes(body)
    reader = DumpReader(DumpOptions(breach="B"))
    got = list(reader.read_path(path))
    assert len(got) == n
    assert all(isinstance(i, LeakRecord) for i in got)
    assert reader.summary.parsed == n


def test_a_truncated_json_array_reports_and_keeps_what_was_read() -> None:
    """A file cut mid-array keeps its complete elements and says the array is not closed."""
    items, _ = read(b'[{"email":"a@x.example"},{"email":"b@x.', "cut.json")
    assert [r.principal for r in records(items)] == ["a@x.example"]
    assert "not closed" in rejections(items)[-1].reason


def test_ndjson_with_blank_invalid_latin1_and_huge_lines() -> None:
    """Blank lines are skipped; invalid JSON is rejected with its line; a Latin-1 line is read
    with a flag and a warning; a line over the cap is rejected unread; reading goes on."""
    data = (
        b'{"email":"a@x.example","password":"p"}\n'
        b"\n"
        b"{not json}\n"
        b'{"email":"jos\xe9@x.example"}\n'
        b'{"email":"huge@x.example","pad":"' + b"z" * 100_000 + b'"}\n'
        b'{"email":"last@x.example"}\n'
    )
    items, reader = read(data, "dump.ndjson")
    recs = records(items)
    assert [r.principal for r in recs] == ["a@x.example", "josé@x.example", "last@x.example"]
    assert recs[1].flags == ("latin1_fallback",)
    assert [(r.line, r.code) for r in rejections(items)] == [(3, "invalid_json"), (5, "too_long")]
    assert reader.summary.warnings["latin1_fallback"] == 1


def test_latin1_csv_and_utf8_bom() -> None:
    """A UTF-8 BOM is skipped; a Latin-1 CSV line is flagged, not rejected."""
    items, _ = read(b"\xef\xbb\xbfemail,password\nfran\xe7ois@x.example,pw\n", "d.csv")
    (rec,) = records(items)
    assert rec.principal == "françois@x.example"
    assert rec.flags == ("latin1_fallback",)


def test_combo_lists_split_at_the_first_colon() -> None:
    """email:password lines; the password may contain colons."""
    items, _ = read(b"ana@x.example:pa:ss\nben@x.example;pw\nno-password-here\n", "combo.txt")
    recs = records(items)
    assert recs[0].password_hmac == expected_hmac("pa:ss")
    assert recs[1].password_hmac == expected_hmac("pw")
    assert not recs[2].password_present


@pytest.mark.parametrize(
    ("plain", "name"),
    [
        (CSV, "dump.csv.gz"),
        (b'[{"email":"a@x.example"},{"email":"b@x.example"}]', "dump.json.gz"),
        (b'{"email":"a@x.example"}\n{"email":"b@x.example"}\n', "dump.ndjson.gz"),
        (b'{"email":"a@x.example"}\n{"email":"b@x.example"}\n', "no-extension"),
    ],
)
def test_gzip_is_detected_by_magic_bytes(plain: bytes, name: str) -> None:
    """Gzip'd dumps decompress on the fly, whatever the name says; the same records result."""
    items, reader = read(gzip.compress(plain), name)
    plain_items, _ = read(plain, name.removesuffix(".gz"))
    assert reader.summary.compressed
    assert [r.principal for r in records(items)] == [r.principal for r in records(plain_items)]


def test_a_gz_name_on_a_plain_file_is_read_plain() -> None:
    """The extension alone is not trusted: no magic bytes, no decompression."""
    items, reader = read(b'{"email":"a@x.example"}\n', "dump.ndjson.gz")
    assert not reader.summary.compressed
    assert len(records(items)) == 1


def test_a_corrupt_gzip_stream_reports_and_keeps_what_was_read() -> None:
    """A truncated gzip file yields its complete records, then one unreadable rejection."""
    data = gzip.compress(b"".join(b'{"email":"u%d@x.example"}\n' % i for i in range(5000)))
    items, _ = read(data[: len(data) // 2], "d.ndjson.gz")
    assert records(items)
    assert rejections(items)[-1].code == "unreadable"


@pytest.mark.parametrize(
    "data", [b"", b"   \n\n", gzip.compress(b"")], ids=["empty", "blank-lines", "gzipped-empty"]
)
@pytest.mark.parametrize("name", ["e.csv", "e.json", "e.ndjson", "e"])
def test_empty_files_yield_nothing(data: bytes, name: str) -> None:
    """An empty (or blank, or empty gzip) file is not an error: zero records."""
    items, reader = read(data, name)
    assert items == []
    assert reader.summary.format == "empty"


def test_format_sniffing() -> None:
    """Extension first (under .gz), then the first byte."""
    assert sniff_format("x.jsonl.gz", b"") == "ndjson"
    assert sniff_format("x", b"  [") == "json"
    assert sniff_format("x", b"{") == "ndjson"
    assert sniff_format("x", b"email,") == "csv"


def test_plaintext_passwords_never_leave_the_parser() -> None:
    """No record, repr, dict, rejection, summary or log line carries the plaintext."""
    data = (
        b"email,password\n"
        + f"ana@x.example,{SECRET_PW}\n".encode()
        + f",{SECRET_PW}\n".encode()
        + f'"unterminated,{SECRET_PW}\n'.encode()
    )
    ndjson = (
        f'{{"email":"b@x.example","password":"{SECRET_PW}"}}\n'
        f'{{"email":"c@x.example","password":"{SECRET_PW}"\n'
        f'["{SECRET_PW}"]\n'
    ).encode()
    with capture_logs() as logs:
        items = read(data, "d.csv")[0] + read(ndjson, "d.ndjson")[0]
        body_items, summary = parse_body(ndjson, "application/x-ndjson")
    seen = [repr(i) for i in items + body_items]
    seen += [str(i.to_dict()) for i in items + body_items]
    seen += [str(summary.to_dict()), str(logs)]
    assert records(items)
    assert not any(SECRET_PW in text for text in seen)
    assert records(items)[0].password_hmac == expected_hmac(SECRET_PW)


def test_without_a_key_the_password_is_only_marked_present() -> None:
    """No hmac_key: password_present, no digest (the plaintext is still dropped)."""
    reader = DumpReader(DumpOptions(breach="B"))
    (rec,) = list(reader.read_stream(io.BytesIO(b"ana@x.example:pw\n"), "c.txt"))
    assert isinstance(rec, LeakRecord)
    assert rec.password_present
    assert rec.password_hmac is None


def test_parse_body_for_post_v1_leaks() -> None:
    """JSON object, JSON array, NDJSON and CSV bodies parse like files; source is "api"."""
    one, _ = parse_body(b'{"principal":"a@x.example","breach":"X"}', "application/json")
    arr, _ = parse_body(b'[{"email":"a@x.example"},{"email":"b@x.example"}]', "application/json")
    nd, _ = parse_body(b'{"email":"a@x.example"}\n{"email":"b@x.example"}', "application/json")
    csv_items, _ = parse_body(b"email\na@x.example\n", "text/csv; charset=utf-8")
    assert [r.breach for r in records(one)] == ["X"]
    assert len(records(arr)) == len(records(nd)) == 2
    assert records(csv_items)[0].source == "api"
    bad, summary = parse_body(b"{nope", "application/json")
    assert rejections(bad)[0].code == "invalid_json"
    assert summary.rejected == 1


def test_canonical_fields_and_flags_are_read_and_validated() -> None:
    """LeakRecord-shaped JSON keeps breach, dates, data classes, flags and a given HMAC;
    an unknown flag or a malformed HMAC is a rejection with a reason."""
    digest = expected_hmac("x")
    data = (
        b'{"principal":"a@x.example","breach":"Adobe","breach_date":"2013-10-04",'
        b'"added_at":"2013-12-04T00:00:00Z","data_classes":["Passwords"],'
        b'"flags":["stealer_log"],"password_hmac":"' + digest.encode() + b'"}\n'
        b'{"principal":"b@x.example","flags":["nope"]}\n'
        b'{"principal":"c@x.example","password_hmac":"XYZ"}\n'
        b'{"principal":"d@x.example","breach_date":"yesterday"}\n'
    )
    items, _ = read(data, "d.ndjson")
    (rec,) = records(items)
    assert rec.breach == "Adobe"
    assert rec.flags == ("stealer_log",)
    assert rec.password_hmac == digest
    assert rec.password_present
    assert [r.code for r in rejections(items)] == ["flags", "password_hmac", "breach_date"]


@pytest.mark.parametrize("key", ["k", "x" * 64, "a-key-longer-than-one-sha256-block-" * 3])
def test_password_hmac_is_standard_hmac_sha256(key: str) -> None:
    """The parser's HMAC equals hmac.new(key, password, sha256) for any key length."""
    reader = DumpReader(DumpOptions(hmac_key=Secret(key), breach="B"))
    (rec,) = list(reader.read_stream(io.BytesIO("a@x.example:pässword\n".encode()), "c.txt"))
    assert isinstance(rec, LeakRecord)
    want = hmac.new(key.encode(), "pässword".encode(), hashlib.sha256).hexdigest()
    assert rec.password_hmac == want


def test_deeply_nested_array_elements_stop_the_array_at_once() -> None:
    """``[[[[...`` nested past MAX_DEPTH is refused without following it token by token
    (10 MB of it took 4.7 s of a parse slot before)."""
    depth = 2_000_000
    started = time.monotonic()
    items, reader = read(b"[" + b"[" * depth + b"]" * depth + b"]", "x.json")
    assert time.monotonic() - started < 1.0
    (rejection,) = rejections(items)
    assert rejection.reason == "nested deeper than 256 levels; rest skipped"
    assert reader.summary.parsed == 0
