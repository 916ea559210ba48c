"""The append-only JSONL journal: round trip, torn lines, replay selection, write failures."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from structlog.testing import capture_logs

from streams.bus.journal import Journal, read_journal, replay_records
from streams.support.errors import JournalError


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "data" / "journal.jsonl", fsync=True)
    yield j
    j.close()


def test_append_then_read_round_trip(journal: Journal) -> None:
    """Entries come back in order with their kind, fields and a timestamp; append returns
    what was written."""
    first = journal.append("hr_event", durable=True, key="E1", value={"event_id": "a"})
    journal.append("decision", event_id="a", outcome="offboard")
    entries = list(read_journal(journal.path))
    assert entries[0] == first
    assert [e["kind"] for e in entries] == ["hr_event", "decision"]
    assert entries[1]["outcome"] == "offboard"
    assert all(isinstance(e["ts"], float) for e in entries)
    assert oct(journal.path.stat().st_mode & 0o777) == oct(0o600)


def test_journal_creates_its_directory_and_appends_across_reopen(tmp_path: Path) -> None:
    """Opening again appends after the existing entries (never truncates)."""
    path = tmp_path / "nested" / "dir" / "journal.jsonl"
    one = Journal(path)
    one.append("state", key="k", value=1)
    one.close()
    two = Journal(path)
    two.append("state", key="k", value=2)
    two.close()
    assert [e["value"] for e in read_journal(path)] == [1, 2]


def test_read_missing_journal_is_empty(tmp_path: Path) -> None:
    """No journal yet (first start) reads as no entries, not an error."""
    assert list(read_journal(tmp_path / "absent.jsonl")) == []
    assert all(v == [] for v in replay_records(tmp_path / "absent.jsonl").values())


def test_torn_last_line_is_skipped_with_a_warning(journal: Journal) -> None:
    """A crash mid-write leaves half a line; reading skips it, warns with the line number,
    and keeps every complete entry before it."""
    journal.append("state", key="a", value=1)
    journal.append("state", key="b", value=2)
    with journal.path.open("ab") as fh:
        fh.write(b'{"ts": 1.0, "kind": "state", "key": "c", "val')
    with capture_logs() as logs:
        entries = list(read_journal(journal.path))
    assert [e["key"] for e in entries] == ["a", "b"]
    torn = [e for e in logs if e["event"] == "journal.torn_line"]
    assert len(torn) == 1
    assert torn[0]["line"] == 3
    assert torn[0]["log_level"] == "warning"


def test_blank_and_non_object_lines_are_ignored(journal: Journal) -> None:
    """Blank lines and JSON that is not an object are not entries."""
    journal.append("state", key="a", value=1)
    with journal.path.open("ab") as fh:
        fh.write(b"\n   \n[1, 2]\n")
    journal.append("state", key="b", value=2)
    assert [e["key"] for e in read_journal(journal.path)] == ["a", "b"]


def test_replay_keeps_last_value_per_key_for_compacted_kinds(journal: Journal) -> None:
    """Registry, state and ledger behave like compacted topics: the last write of a key wins,
    ordered by the time of that last write; tombstones (None) are kept as None."""
    journal.append("registry", key="identity:alice", value={"v": 1})
    journal.append("registry", key="account:x", value={"v": 1})
    journal.append("registry", key="identity:alice", value={"v": 2})
    journal.append("registry", key="grant:alice:x", value={"role": "admin"})
    journal.append("registry", key="grant:alice:x", value=None)
    journal.append("ledger", key="k1", value={"status": "done"})
    journal.append("state", key="identity:bob", value={"status": "suspended"})
    records = replay_records(journal.path)
    assert records["registry.changes"] == [
        ("account:x", orjson.dumps({"v": 1})),
        ("identity:alice", orjson.dumps({"v": 2})),
        ("grant:alice:x", None),
    ]
    assert records["ledger"] == [("k1", orjson.dumps({"status": "done"}))]
    assert records["lifecycle"] == [("identity:bob", orjson.dumps({"status": "suspended"}))]


def test_replay_keeps_every_hr_event_in_order_and_skips_audit_kinds(journal: Journal) -> None:
    """HR events are a log, not a table: every one is replayed, in order, duplicates too.
    Audit kinds (decision, action, alert, dead_letter) are never replayed."""
    journal.append("hr_event", key="E1", value={"event_id": "1"})
    journal.append("decision", event_id="1")
    journal.append("hr_event", key="E2", value={"event_id": "2"})
    journal.append("action", key="x")
    journal.append("hr_event", key="E1", value={"event_id": "3"})
    journal.append("dead_letter", topic="t", reason="r")
    records = replay_records(journal.path)
    assert [(k, orjson.loads(v or b"null")["event_id"]) for k, v in records["hr.events"]] == [
        ("E1", "1"),
        ("E2", "2"),
        ("E1", "3"),
    ]
    assert set(records) == {
        "registry.changes",
        "lifecycle",
        "ledger",
        "rule.state",
        "hr.events",
        "alerts.pending",
    }
    assert sum(len(v) for v in records.values()) == 3


def test_concurrent_appends_never_interleave(journal: Journal) -> None:
    """Many threads appending at once produce only whole, parseable lines."""

    def writer(n: int) -> None:
        for i in range(50):
            journal.append("state", key=f"{n}-{i}", value="x" * 500)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = journal.path.read_bytes().splitlines()
    assert len(lines) == 400
    assert len({orjson.loads(line)["key"] for line in lines}) == 400


def test_write_failure_raises_journal_error_saying_to_free_disk_space(
    journal: Journal,
) -> None:
    """A full disk (a real ENOSPC from /dev/full) becomes a JournalError telling the operator
    to free disk space, and is logged."""
    os.close(journal._fd)
    journal._fd = os.open("/dev/full", os.O_WRONLY)
    with (
        capture_logs() as logs,
        pytest.raises(JournalError, match="free disk space under data_dir"),
    ):
        journal.append("hr_event", durable=True, key="E1", value={"event_id": "x"})
    assert [e["event"] for e in logs] == ["journal.write_failed"]
    assert "No space left" in logs[0]["error"]


def test_write_on_closed_journal_raises_journal_error(journal: Journal) -> None:
    """Writing after close is a JournalError (EBADF), not a bare OSError."""
    journal.close()
    with pytest.raises(JournalError, match="cannot write journal"):
        journal.append("state", key="k", value=1)


def test_unopenable_path_raises_journal_error(tmp_path: Path) -> None:
    """A journal path that cannot be opened (it is a directory) names the path."""
    target = tmp_path / "journal.jsonl"
    target.mkdir()
    with pytest.raises(JournalError, match=r"cannot open journal .*journal\.jsonl"):
        Journal(target)


# A child process that fills "the disk" for itself: RLIMIT_FSIZE caps the size of every file
# it writes (Python ignores SIGXFSZ, so writes past the cap fail with EFBIG, and a write that
# crosses it is a real short write). argv: journal path, bytes of room left for the 2nd entry.
_FULL_DISK_CHILD = """
import os, resource, sys
from pathlib import Path
from streams.support.errors import JournalError
from streams.bus.journal import Journal

path, room = Path(sys.argv[1]), int(sys.argv[2])
journal = Journal(path, probe_interval=0.0)
journal.append("state", key="a", value="x" * 100)
size = path.stat().st_size
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (size + room, hard))
try:
    journal.append("hr_event", durable=True, key="E1", value="y" * 300)
except JournalError as exc:
    print("ERROR", exc)
    print("REASON", exc.reason)
assert path.stat().st_size == size, (path.stat().st_size, size)
assert not journal.healthy
assert not journal.check_writable()
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
assert journal.check_writable()
journal.append("hr_event", durable=True, key="E1", value="y" * 300)
print("OK")
"""


@pytest.mark.parametrize("room", [0, 37], ids=["no-room", "short-write"])
def test_full_disk_leaves_no_partial_line_and_recovers(tmp_path: Path, room: int) -> None:
    """A write that fails on a full disk (EFBIG from a real file size limit), also after a
    short write of part of the line, leaves the file as it was: the next entry is whole, and
    a replay reads every entry. The error names the cause and what to do; once space is back
    the readiness probe records the outage (``journal_recovered``) and appends work again."""
    path = tmp_path / "journal.jsonl"
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_CHILD, str(path), str(room)],
        capture_output=True,
        text=True,
        cwd=repo,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout
    assert "ERROR cannot write journal" in done.stdout
    assert "File too large" in done.stdout
    assert "free disk space under data_dir" in done.stdout
    assert "REASON File too large" in done.stdout
    lines = path.read_bytes().splitlines()
    entries = [orjson.loads(line) for line in lines]  # every line is whole JSON
    assert [e["kind"] for e in entries] == ["state", "journal_recovered", "hr_event"]
    assert entries[1]["error"] == "File too large"
    assert replay_records(path)["hr.events"] == [("E1", orjson.dumps("y" * 300))]


def test_failed_write_makes_the_journal_unhealthy_until_a_write_succeeds(
    journal: Journal,
) -> None:
    """Readiness: a failed append marks the journal unhealthy; the probe keeps failing while
    the disk is full (at most one try per interval) and succeeds, once, when it is not."""
    real_fd = journal._fd
    journal._fd = os.open("/dev/full", os.O_WRONLY)
    journal.probe_interval = 0.0
    with pytest.raises(JournalError):
        journal.append("state", key="k", value=1)
    assert not journal.healthy
    assert journal.last_error == "No space left on device"
    assert not journal.check_writable()
    os.close(journal._fd)
    journal._fd = real_fd
    with capture_logs() as logs:
        assert journal.check_writable()
    assert journal.healthy
    assert journal.check_writable()  # healthy: no probe entry written again
    assert [e["event"] for e in logs] == ["journal.recovered"]
    assert logs[0]["last_error"] == "No space left on device"
    kinds = [e["kind"] for e in read_journal(journal.path)]
    assert kinds == ["journal_recovered"]


def test_failed_fsync_cuts_the_line(journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    """An fsync that fails (delayed allocation finds no space) is a failed append: the line
    it wrote is cut, so a sender's retry does not leave the event twice."""
    journal.append("state", key="a", value=1)

    def no_space(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("streams.bus.journal.os.fsync", no_space)
    with pytest.raises(JournalError, match="No space left on device"):
        journal.append("hr_event", durable=True, key="E1", value={"event_id": "x"})
    monkeypatch.undo()
    journal.append("hr_event", durable=True, key="E1", value={"event_id": "x"})
    assert [e["kind"] for e in read_journal(journal.path)] == ["state", "hr_event"]


def test_torn_tail_from_a_crash_does_not_swallow_the_next_entry(tmp_path: Path) -> None:
    """After a crash mid-write the journal ends in half a line; the next process's first
    entry starts on a new line, so only the fragment is lost, never the new entry."""
    path = tmp_path / "journal.jsonl"
    first = Journal(path)
    first.append("state", key="a", value=1)
    first.close()
    with path.open("ab") as fh:
        fh.write(b'{"ts": 1.0, "kind": "state", "key": "b", "val')
    again = Journal(path)
    again.append("hr_event", key="E1", value={"event_id": "x"})
    again.append("state", key="c", value=3)
    again.close()
    assert [e.get("key") for e in read_journal(path)] == ["a", "E1", "c"]


class DiskModel:
    """What a crash would leave: ``os.fsync`` replaced by one that copies the file as it is
    when the fsync begins (the page cache it flushes) after ``delay`` seconds; ``on_disk`` is
    the last copy an fsync finished, everything after it is lost in a power cut."""

    def __init__(self, path: Path, delay: float = 0.002, fail: int = 0) -> None:
        self.path = path
        self.delay = delay
        self.fail = fail
        self.on_disk = b""
        self.calls = 0

    def fsync(self, fd: int) -> None:
        self.calls += 1
        snapshot = self.path.read_bytes()
        time.sleep(self.delay)  # the disk takes a while; more writes arrive meanwhile
        if self.fail:
            self.fail -= 1
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        self.on_disk = snapshot


def test_group_commit_releases_each_writer_only_after_an_fsync_covering_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many concurrent durable writes share a few fsyncs (group commit), and a crash-
    equivalent cut right after any writer was released (the disk as the last finished fsync
    left it) still holds that writer's entry: nothing acknowledged is lost."""
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, fsync=True)
    disk = DiskModel(path)
    monkeypatch.setattr(os, "fsync", disk.fsync)
    lost: list[str] = []

    async def writer(n: int) -> None:
        for i in range(10):
            entry, seq = journal.write("ledger", key=f"w{n}-{i}", value={"status": "done"})
            await journal.commit(seq)
            # acknowledged: a power cut now keeps only what the disk holds
            # whole lines only: an fsync that began during a write flushed part of its line
            # (a torn tail, which the journal's reader also skips)
            whole = disk.on_disk[: disk.on_disk.rfind(b"\n") + 1]
            on_disk = {e["key"] for e in map(orjson.loads, whole.splitlines())}
            if entry["key"] not in on_disk:
                lost.append(entry["key"])
            # staggered, so that writes also arrive while an fsync is running
            await asyncio.sleep(random.uniform(0, 0.004))

    async def burst() -> None:
        await asyncio.gather(*(writer(n) for n in range(50)))

    asyncio.run(burst())
    journal.close()
    assert lost == []
    assert len(read_journal_list(path)) == 500
    assert disk.calls < 100, f"{disk.calls} fsyncs for 500 durable writes: not grouped"
    assert journal.fsyncs == disk.calls


def test_a_failed_group_fsync_raises_to_its_waiters_and_a_retry_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the fsync fails (EIO) the waiters get JournalError, not a silent release; the
    next commit runs a new fsync and returns once it succeeded."""
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, fsync=True)
    disk = DiskModel(path, fail=1)
    monkeypatch.setattr(os, "fsync", disk.fsync)

    async def scenario() -> None:
        _, seq = journal.write("ledger", key="k", value=1)
        with pytest.raises(JournalError, match=r"cannot fsync journal .*Input/output error"):
            await journal.commit(seq)
        await journal.commit(seq)

    asyncio.run(scenario())
    journal.close()
    assert b'"key":"k"' in disk.on_disk


def test_commit_without_fsync_configured_returns_at_once(tmp_path: Path) -> None:
    """``fsync: false`` (tests, throwaway stacks): commit does not wait for a disk flush."""
    journal = Journal(tmp_path / "journal.jsonl", fsync=False)

    async def scenario() -> None:
        _, seq = journal.write("ledger", key="k", value=1)
        await asyncio.wait_for(journal.commit(seq), 0.5)

    asyncio.run(scenario())
    assert journal.fsyncs == 0
    journal.close()


def read_journal_list(path: Path) -> list[dict[str, object]]:
    return list(read_journal(path))
