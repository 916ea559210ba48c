"""Leak import plumbing without a broker: matching before publishing, batching, and the byte
range split of a dump across processes (cuts at line starts, never inside a quoted CSV
field, line numbers kept)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import orjson

from connectors.ingest.dumps import DumpOptions, DumpReader, Rejection
from connectors.ingest.leak_import import import_dump, split_ranges
from connectors.ingest.leak_ingest import LeakMatcher
from streams.model.leak_index import LeakIndex
from streams.model.records import LeakRecord
from streams.model.registry_yaml import load_registry

ROOT = Path(__file__).resolve().parent.parent


def test_import_dump_publishes_only_matched_records_in_batches(tmp_path: Path) -> None:
    index = LeakIndex.build(load_registry(ROOT / "examples" / "registry.yaml"))
    dump = tmp_path / "mixed.csv"
    rows = ["email,password"]
    rows += [f"stranger{i}@elsewhere.example,pw{i}" for i in range(50)]
    rows += ["ALICE.NGUYEN@lumen-outdoor.example,pw", ",missing-email"]
    dump.write_text("\n".join(rows) + "\n", encoding="utf-8")
    sent: list[tuple[int, bytes]] = []
    summary = import_dump(
        dump,
        index=index,
        partitions=4,
        send=lambda p, m: sent.append((p, m)),
        options=DumpOptions(),
    )
    assert summary["read"] == 52
    assert summary["matched"] == 1
    assert summary["unmatched"] == 50
    assert summary["rejected"] == 1
    assert summary["rejections"][0]["line"] == 53
    assert len(sent) == 1
    (record,) = orjson.loads(sent[0][1])
    assert record["principal"] == "alice.nguyen@lumen-outdoor.example"
    assert record["breach"] == "mixed"
    assert "password" not in record


def test_a_partial_batch_waits_at_most_the_linger_time(tmp_path: Path) -> None:
    """A match early in a long stretch of strangers is sent once it has waited ``linger``,
    not at the end of the file; progress moves while nothing matches."""
    index = LeakIndex.build(load_registry(ROOT / "examples" / "registry.yaml"))
    dump = tmp_path / "sparse.csv"
    rows = ["email,password", "alice.nguyen@lumen-outdoor.example,pw"]
    rows += [f"stranger{i}@elsewhere.example,pw{i}" for i in range(200_000)]
    dump.write_text("\n".join(rows) + "\n", encoding="utf-8")
    events: list[tuple[str, int]] = []
    clock = itertools.count()

    def send(part: int, message: bytes) -> None:
        events.append(("sent", next(clock)))

    def progress(position: int) -> None:
        events.append(("progress", position))

    summary = import_dump(
        dump,
        index=index,
        partitions=4,
        send=send,
        options=DumpOptions(),
        progress=progress,
        linger=0.0,
    )
    assert summary["matched"] == 1
    assert summary["messages"] == 1
    kinds = [kind for kind, _ in events]
    # sent at the first block boundary after the match, with blocks still to read
    assert kinds.index("sent") < len(kinds) - 2
    positions = [v for kind, v in events if kind == "progress"]
    assert len(positions) >= 4
    assert positions == sorted(positions)
    assert positions[-1] == dump.stat().st_size


def test_linger_holds_a_partial_batch_until_it_is_due() -> None:
    matcher = LeakMatcher(None, 2, linger=0.05)
    assert matcher.due() == []
    record = LeakRecord.from_dict({"principal": "a@x.example", "breach": "B", "source": "t"})
    assert matcher.add(record) is None
    assert matcher.due() == []
    time.sleep(0.06)
    (batch,) = matcher.due()
    assert orjson.loads(batch[1])[0]["principal"] == "a@x.example"
    assert matcher.due() == []


def _pieces(path: Path, fmt: str, jobs: int) -> tuple[bytes, list[tuple[int, int, int]]]:
    header, ranges = split_ranges(path, fmt, jobs)
    return header, [(r.start, r.end, r.lines_before) for r in ranges]


def test_split_ranges_cut_at_line_starts_and_count_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.ndjson"
    lines = [orjson.dumps({"email": f"u{i}@x.example"}) for i in range(1000)]
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(data)
    header, pieces = _pieces(path, "ndjson", 3)
    assert header == b""
    assert pieces[0][0] == 0
    assert pieces[-1][1] == len(data)
    for (_s1, e1, _l1), (s2, _e2, l2) in itertools.pairwise(pieces):
        assert e1 == s2
        assert data[s2 - 1 : s2] == b"\n"
        assert data[:s2].count(b"\n") == l2


def test_split_ranges_never_cut_a_quoted_csv_field(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    body = "email,password\n" + "".join(f"u{i}@x.example,pw{i}\n" for i in range(400))
    # A password with newlines inside quotes, right across the middle of the file.
    middle = 'quoted@x.example,"line one\n' + "\n" * 30 + 'line two"\n'
    body += middle + "".join(f"v{i}@x.example,pw{i}\n" for i in range(400))
    path.write_text(body, encoding="utf-8")
    data = path.read_bytes()
    header, pieces = _pieces(path, "csv", 2)
    assert header == b"email,password\n"
    cut = pieces[1][0]
    assert data[:cut].count(b'"') % 2 == 0
    # Each piece, read with the header in front, gives the same records and line numbers.
    whole = list(DumpReader(DumpOptions(format="csv")).read_path(path))
    parts = []
    for start, end, before in pieces:
        chunk = header + data[start:end]
        piece_path = tmp_path / f"piece{start}.csv"
        piece_path.write_bytes(chunk)
        for item in DumpReader(DumpOptions(format="csv")).read_path(piece_path):
            if isinstance(item, Rejection):
                parts.append(Rejection(item.line + before - 1, item.code, item.reason))
            else:
                parts.append(item)
    assert [getattr(i, "principal", None) for i in whole] == [
        getattr(i, "principal", None) for i in parts
    ]
    assert [i.line for i in whole if isinstance(i, Rejection)] == [
        i.line for i in parts if isinstance(i, Rejection)
    ]
