"""Match-first reading (``DumpReader(wanted=...)``, what ``leaks import`` does): the records
it yields, the rejections and every count of the summary are exactly those of the general
path followed by a filter, whatever the dump holds. The fast paths only skip work; these
tests read ugly dumps both ways, with blocks small enough that lines straddle every read."""

from __future__ import annotations

import gzip
import io
import json
import random
import zlib
from collections.abc import Callable

import pytest

from connectors.ingest.dumps import DumpOptions, DumpReader, Item, Rejection, core, jsonsplit
from streams.model.records import LeakRecord
from streams.support.secrets import Secret

CAP = 200


def wanted(principal: str) -> bool:
    """A third of all principals, decided by their normalised text only."""
    return zlib.crc32(principal.encode()) % 3 == 0


def read(
    data: bytes, name: str, want: Callable[[str], bool] | None
) -> tuple[list[Item], DumpReader]:
    options = DumpOptions(hmac_key=Secret("k"), breach="B", max_record_bytes=CAP)
    reader = DumpReader(options, wanted=want)
    return list(reader.read_stream(io.BytesIO(data), name)), reader


def assert_same(data: bytes, name: str) -> DumpReader:
    everything, general = read(data, name, None)
    kept, first = read(data, name, wanted)
    expected = [i for i in everything if isinstance(i, Rejection) or wanted(i.principal)]
    assert kept == expected
    g, f = general.summary, first.summary
    for counter in ("format", "read", "parsed", "rejected", "with_password", "reasons", "warnings"):
        assert getattr(f, counter) == getattr(g, counter), counter
    assert g.filtered == 0
    assert f.filtered == sum(
        1 for i in everything if isinstance(i, LeakRecord) and not wanted(i.principal)
    )
    return first


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 97 bytes: every kind of line crosses a block boundary somewhere."""
    # read by name in both modules: the line reader and the JSON array splitter
    monkeypatch.setattr(core, "_CHUNK", 97)
    monkeypatch.setattr(jsonsplit, "_CHUNK", 97)


def csv_lines(rnd: random.Random, n: int, d: str) -> list[bytes]:
    kinds: list[Callable[[int], str | bytes]] = [
        lambda i: f"user{i}@x.example{d}pw{i}{d}2025-01-02{d}Big",
        lambda i: f"  User{i}@X.Example {d}pw{d}2025-01-02{d}Big",
        lambda i: f"user{i}+tag@x.example{d}{d}2025-01-02{d}",
        lambda i: f'"q{i}@x.example"{d}"p{d}w"{d}2025-01-02{d}Big',
        lambda i: f'm{i}@x.example{d}"line one\nline two"{d}2025-01-02{d}Big',
        # a quoted field whose middle line looks like a record of its own
        lambda i: f'n{i}@x.example{d}"a\nfake{i}@y.example{d}pw{d}2025-01-02{d}Big\nc"{d}{d}',
        lambda i: f"bad{i}@x.example{d}pw{d}2025-13-45{d}Big",
        lambda i: f"{d}orphan{d}2025-01-02{d}",
        lambda i: f"{d}{d}{d}",
        lambda i: "",
        lambda i: f"a b{i}@x.example{d}pw{d}{d}",
        lambda i: f"nul{i}@x.example\x00{d}pw{d}{d}",
        lambda i: f"nulpw{i}@x.example{d}p\x00w{d}{d}",
        lambda i: f"cr{i}@x.example{d}p\rw{d}{d}",
        lambda i: f"crlf{i}@x.example{d}pw{d}2025-01-02{d}Big\r",
        lambda i: f"ü{i}@x.example{d}pw{d}{d}",
        lambda i: f"lat{i}@x.example{d}p\xe4ss{d}{d}".encode("latin-1"),
        lambda i: f"long{i}@x.example{d}" + "a" * (CAP + 5),
        lambda i: f"ctl\x1c{i}@x.example{d}pw{d}{d}",
        lambda i: f"wide{i}@x.example{d}pw{d}2025-01-02{d}Big{d}more",
        lambda i: f"short{i}@x.example",
        lambda i: f'stray{i}@x.example{d}p"w{d}2025-01-02{d}Big',
        lambda i: f'open{i}@x.example{d}a"b{d}"c\nstill{i}@x.example{d}in{d}quotes"{d}',
        lambda i: f"tab\t{i}@x.example{d}pw{d}{d}",
        lambda i: f"{'e' * 330}@x.example{d}pw{d}{d}",
        lambda i: f"CAPS{i}@X.EXAMPLE{d}{d}2021-06-01T10:00:00Z{d}Other",
        lambda i: f"date{i}@x.example{d}pw{d}2025-01-02T00:00:00{d}Big",
    ]
    out = []
    for i in range(n):
        # plain strangers most of the time, like a real dump
        line = kinds[0](i) if rnd.random() < 0.5 else rnd.choice(kinds)(i)
        out.append(line if isinstance(line, bytes) else line.encode())
    return out


@pytest.mark.parametrize("delimiter", [",", "\t", ";"])
@pytest.mark.parametrize("seed", range(4))
def test_csv_match_first_equals_general_path(delimiter: str, seed: int) -> None:
    rnd = random.Random(seed)
    header = delimiter.join(["Email", "Password", "Breach_Date", "Breach"]).encode()
    body = b"\n".join([header, *csv_lines(rnd, 600, delimiter)])
    if seed % 2:
        body += b"\n"  # with and without a final newline
    first = assert_same(body, "dump.csv")
    assert first.summary.filtered > 100  # the fast path did run
    assert_same(gzip.compress(body), "dump.csv.gz")
    assert_same(b"\xef\xbb\xbf" + body, "dump.csv")


def test_csv_without_header_and_with_a_hash_column() -> None:
    rnd = random.Random(9)
    plain = b"\n".join(line.replace(b",2025-01-02,Big", b"") for line in csv_lines(rnd, 400, ","))
    assert_same(b"a1@x.example,first\n" + plain, "dump.csv")
    hashed = b"email,hash,password_hmac\n" + b"\n".join(
        f"h{i}@x.example,{'ab' * (i % 2)},{'0' * 64 if i % 3 else 'nothex'}".encode()
        for i in range(300)
    )
    assert_same(hashed, "dump.csv")


def json_objects(rnd: random.Random, n: int) -> list[bytes]:
    kinds: list[Callable[[int], object]] = [
        lambda i: {"email": f"user{i}@x.example", "password": f"pw{i}", "date": "2025-01-02"},
        lambda i: {"password": "pw", "Email": f" User{i}@X.example "},
        lambda i: {"email": None, "username": f"alt{i}@x.example"},
        lambda i: {"email": 5, "password": "pw"},
        lambda i: {"email": f"num{i}@x.example", "password": 1234},
        lambda i: {"email": f"emptypw{i}@x.example", "password": 0},
        lambda i: {"email": f"dc{i}@x.example", "data_classes": ["Passwords", "Names"]},
        lambda i: {"email": f"fl{i}@x.example", "flags": ["sensitive"]},
        lambda i: {"email": f"badfl{i}@x.example", "flags": ["nope"]},
        lambda i: {"email": f"pp{i}@x.example", "password_present": True},
        lambda i: {"email": f"pp1{i}@x.example", "password_present": 1},
        lambda i: {"email": f"bd{i}@x.example", "breach_date": "yesterday"},
        lambda i: {"email": f"bd2{i}@x.example", "breach_date": 20250102},
        lambda i: {"email": f"h{i}@x.example", "password_hmac": "f" * 64},
        lambda i: {"email": f"h2{i}@x.example", "password_hmac": "F" * 64},
        lambda i: {"user": f"u{i}", "login": f"second{i}", "pass": "x", "pass ": ""},
        lambda i: {"email": f"a b{i}@x.example"},
        lambda i: {"email": f"hash{i}@x.example", "hash": "5f4dcc3b5aa765d61d8327deb882cf99"},
        lambda i: {"email": f"two{i}@x.example", "date": "2025-01-02", "breach_date": "bad"},
        lambda i: {"email": f"owt{i}@x.example", "breach_date": "bad", "date": "2025-01-02"},
        lambda i: {"nothing": i},
        lambda i: [f"arr{i}@x.example"],
        lambda i: {"email": f"ü{i}@x.example", "breach": "  Named  ", "source": "s"},
    ]
    out = []
    for i in range(n):
        kind = kinds[0] if rnd.random() < 0.5 else rnd.choice(kinds)
        out.append(json.dumps(kind(i), ensure_ascii=False).encode())
    out[5] = b'{"email": "broken'
    out[7] = '{"email": "lat\xe4@x.example"}'.encode("latin-1")
    out[9] = b'{"email": "long@x.example", "pad": "' + b"a" * CAP + b'"}'
    out[11] = b"   "
    return out


@pytest.mark.parametrize("seed", range(3))
def test_ndjson_and_json_match_first_equal_general_path(seed: int) -> None:
    objects = json_objects(random.Random(seed), 600)
    first = assert_same(b"\n".join(objects) + b"\n", "dump.ndjson")
    assert first.summary.filtered > 100
    assert_same(b"\r\n".join(objects), "dump.ndjson")
    valid = [o for o in objects if o.strip() and b"broken" not in o]
    assert_same(b"[" + b",\n".join(valid) + b"]", "dump.json")


@pytest.mark.parametrize("seed", range(3))
def test_combo_match_first_equals_general_path(seed: int) -> None:
    rnd = random.Random(seed)
    kinds: list[Callable[[int], bytes]] = [
        lambda i: f"user{i}@x.example:pw{i}".encode(),
        lambda i: f" User{i}@X.example ;pw:with:colons".encode(),
        lambda i: f"nopw{i}@x.example".encode(),
        lambda i: f"emptypw{i}@x.example:".encode(),
        lambda i: f":orphan{i}".encode(),
        lambda i: f"a b{i}@x.example:pw".encode(),
        lambda i: f"ü{i}@x.example:pw".encode(),
        lambda i: f"lat{i}@x.example:p\xe4ss".encode("latin-1"),
        lambda i: f"long{i}@x.example:".encode() + b"a" * (CAP + 1),
        lambda i: f"crlf{i}@x.example:pw\r".encode(),
        lambda i: b"  ",
    ]
    lines = [kinds[0](i) if rnd.random() < 0.5 else rnd.choice(kinds)(i) for i in range(600)]
    first = assert_same(b"\n".join(lines), "combo.txt")
    assert first.summary.filtered > 100


def test_line_numbers_and_the_cap_match_the_file() -> None:
    """Blocks never shift a line number: each rejection names the line it came from, with
    lines exactly at and just over the cap, and an over-long last line with no newline."""
    lines = [b"email,password"]
    for i in range(300):
        if i % 7 == 3:
            lines.append(b",no-principal")
        elif i % 11 == 5:
            lines.append(b"x@y.example," + b"p" * (CAP - 12 + i % 3))  # CAP-1 .. CAP+1
        else:
            lines.append(b"ok%d@x.example,pw" % i)
    lines.append(b"last@x.example," + b"z" * (CAP * 3))
    data = b"\n".join(lines)
    items, _ = read(data, "dump.csv", wanted)
    for item in items:
        if isinstance(item, Rejection):
            content = lines[item.line - 1]
            if item.code == "too_long":
                assert len(content) > CAP
            else:
                assert item.code == "no_principal"
                assert content == b",no-principal"
    too_long = sorted(i.line for i in items if isinstance(i, Rejection) and i.code == "too_long")
    assert too_long == [n + 1 for n, line in enumerate(lines) if len(line) > CAP]
