"""Disk full for the journal, end to end on the real `accessguard run` process.

"The disk fills up" for real: the test lowers the running process's RLIMIT_FSIZE (soft limit
only, so it can be raised again without privileges) to the journal's current size, so its
next journal writes fail in the kernel with EFBIG ("File too large") — after a real short
write when a little room is left — exactly where ENOSPC would hit on a full disk. Python
ignores SIGXFSZ, so the process keeps running; raising the limit again "frees the disk".
The limit applies to every regular file the process writes; its stdout and stderr are pipes
here (a file would be limited too), so the logs keep flowing.

What must hold: an HR event that cannot be journaled gets 503 + Retry-After with a JSON
reason (never 202, never 500) and causes no provider call; the logs say what is wrong and what
to do; /readyz is not ready until a write succeeds again (and finds that out by itself); no
partial line is left in the journal; what the worker must record while the disk is full
(ledger outcomes, lifecycle state) waits in place and is written once space is back, so
nothing is lost and no provider is called twice; and a restart on the same data directory
replays the journal cleanly and repeats nothing.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import pytest
import requests

from streams.model.records import HrEvent
from tests.fakes import FakeVendorServer
from tests.stack import REPO, Stack, wait_until, write_config
from tests.test_integration_offboarding import ALICE_CALLS, alice_calls, hr_event

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CAROL_REFS = ("00u1carolxyz0A1b2C3d4", "carol.ruiz")
ALERT_PATHS = ("/slack/", "/v2/enqueue")


class PipedStack(Stack):
    """A Stack whose stdout/stderr are pipes copied to the usual files by this process: a
    file size limit on the stack must hit its journal, not its own log files."""

    def start(self, timeout: float = 60.0, **_: Any) -> Stack:
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSGUARD_")}
        env.update(getattr(self, "extra_env", {}))
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", *self.command, "--config", str(self.config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env=env,
        )
        self.proc = proc
        for pipe, name in ((proc.stdout, "out"), (proc.stderr, "err")):
            assert pipe is not None
            target = self.log_dir / f"stack-{self.starts}.{name}"
            threading.Thread(target=_copy, args=(pipe, target), daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"accessguard exited with {proc.returncode}:\n{self.stderr()}")
            try:
                if requests.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"stack not ready within {timeout}s:\n{self.stderr()[-3000:]}")

    def fill_disk(self, room: int = 0) -> int:
        """Leave ``room`` bytes of space for the journal; returns its size now."""
        assert self.pid is not None
        size = self.journal_path.stat().st_size
        hard = resource.prlimit(self.pid, resource.RLIMIT_FSIZE)[1]
        resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (size + room, hard))
        return size

    def free_disk(self) -> None:
        assert self.pid is not None
        hard = resource.prlimit(self.pid, resource.RLIMIT_FSIZE)[1]
        resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (hard, hard))

    @property
    def journal_path(self) -> Path:
        return self.data_dir / "journal.jsonl"

    def readyz(self) -> tuple[int, dict[str, Any]]:
        resp = requests.get(f"{self.url}/readyz", timeout=5)
        return resp.status_code, resp.json()

    def events(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.logs()
            if e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
        ]


def _copy(pipe: IO[bytes], target: Path) -> None:
    with pipe, target.open("wb") as out:
        for chunk in iter(lambda: pipe.read1(65536), b""):  # type: ignore[attr-defined]
            out.write(chunk)
            out.flush()


def _wait_quiet(path: Path, quiet: float = 1.0, timeout: float = 15.0) -> int:
    """Wait until the journal stopped growing (start-up work such as the agency timer's
    offboarding is done), so a size measured now is the size the next write starts at."""
    deadline = time.monotonic() + timeout
    size, since = path.stat().st_size, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now_size = path.stat().st_size
        if now_size != size:
            size, since = now_size, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return size
    raise TimeoutError(f"journal still growing after {timeout}s")


def _hr_line_upper_bound(event: dict[str, Any]) -> int:
    """The longest journal line the webhook can write for ``event``: both timestamps at
    their longest repr (17 and 18 characters for a 10-digit Unix time)."""
    accepted = HrEvent.from_dict({**event, "accepted_at": 1795707211.1512344})
    entry = {
        "ts": 1795707211.151234,
        "kind": "hr_event",
        "key": accepted.partition_key,
        "value": accepted.to_dict(),
        "entry": "0" * 32,  # the journal entry's id (a uuid4 hex), which a withdrawal names
        # the edge contract's own fields (connectors/ingest/contract.py): which door, the
        # sender's id and the body's digest (the dedup memory refilled at start), when
        "edge": "hr_webhook",
        "sender_id": accepted.event_id,
        "digest": "0" * 32,
        "accepted_at": 1795707211.1512344,
    }
    return len(orjson.dumps(entry)) + 1


def _provider_calls(*servers: FakeVendorServer) -> list[tuple[str, str]]:
    return [
        (c["method"], c["path"])
        for server in servers
        for c in list(server.calls)
        if not c["path"].startswith(ALERT_PATHS)
    ]


def _journal_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of the journal, parsed: a partial (torn) line fails here."""
    lines = path.read_bytes().splitlines()
    assert all(line.strip() for line in lines), "blank line in the journal"
    return [orjson.loads(line) for line in lines]


@pytest.fixture
def google() -> Iterator[FakeVendorServer]:
    with FakeVendorServer() as server:
        yield server


def test_disk_full_refuses_input_waits_in_place_and_loses_nothing(
    tmp_path: Path, vendor: FakeVendorServer, google: FakeVendorServer
) -> None:
    cfg = write_config(
        tmp_path / "config.yaml",
        data_dir=tmp_path / "data",
        vendor_url=vendor.url,
        google_url=google.url,
        # Google is kept failing below; stay in fast retries (no page) to keep it simple.
        extra={"retry.max_attempts": 100},
    )
    stack = PipedStack(cfg)
    stack.start()
    try:
        # Start-up work first: the agency timer offboards gina (OldCo's contract ended).
        wait_until(lambda: stack.events("plan.completed", identity="gina"), 15, what="gina")
        _wait_quiet(stack.journal_path)
        google.down_for(3600, status=503)

        # --- 1. The webhook: the journal line does not fit (a real short write, then EFBIG).
        before = stack.journal_path.read_bytes()
        stack.fill_disk(room=37)
        event = hr_event("disk-1")
        resp = stack.post_hr(event)
        assert resp.status_code == 503, resp.text
        assert resp.headers["Retry-After"] == "5"
        assert resp.headers["Content-Type"].startswith("application/json")
        reason = resp.json()["error"]
        assert reason.startswith("journal unavailable (File too large)"), reason
        assert "retry later" in reason
        assert str(stack.data_dir) not in reason  # the sender learns no server path
        assert stack.journal_path.read_bytes() == before  # the partial line was cut off

        status, ready = stack.readyz()
        assert status == 503
        assert ready["ready"] is False
        assert ready["checks"]["journal_writable"] is False
        assert all(ok for name, ok in ready["checks"].items() if name != "journal_writable")

        failed = wait_until(lambda: stack.events("journal.write_failed"), 5, what="error log")
        assert failed[0]["level"] == "error"
        assert failed[0]["error"] == "File too large"
        assert failed[0]["errno"] == "EFBIG"
        assert failed[0]["partial_line_cut"] is True
        assert "free disk space under data_dir" in failed[0]["hint"]
        assert failed[0]["path"] == str(stack.journal_path)
        rejected = stack.events("edge.rejected", source="hr_webhook", status=503)
        assert rejected
        assert "File too large" in rejected[0]["reason"]

        # The sender retries while the disk is still full: refused again, nothing written.
        again = stack.post_hr(event)
        assert again.status_code == 503
        time.sleep(0.5)
        assert not alice_calls(vendor)
        assert not alice_calls(google)
        assert not google.rejected  # no attempt at all, not even a failed one
        assert stack.journal_path.read_bytes() == before
        assert not stack.events("http.unhandled")

        # --- 2. Space is back: readiness finds out by itself (no input needed) and the
        # outage is recorded in the audit trail; the sender's retry is accepted.
        stack.free_disk()
        wait_until(lambda: stack.readyz()[0] == 200, 10, what="ready again")
        # the log line travels through the stack's stderr pipe: it may land just after
        wait_until(lambda: bool(stack.events("journal.recovered")), 5, what="journal.recovered")
        recovered = [
            e for e in _journal_lines(stack.journal_path) if e["kind"] == "journal_recovered"
        ]
        assert len(recovered) == 1
        assert recovered[0]["error"] == "File too large"

        resp = stack.post_hr(event)
        assert resp.status_code == 202, resp.text
        assert resp.json() == {"status": "accepted", "event_id": "disk-1"}
        wait_until(
            lambda: len(alice_calls(vendor)) >= ALICE_CALLS - 4,
            20,
            what="alice's calls but Google's four",
        )
        wait_until(lambda: len(google.rejected) >= 2, 10, what="google in backoff")
        # the ledger records of the done actions land before the disk fills
        stack.wait_for_ledger("disk-1", skip=lambda a: a["provider"] == "google")

        # --- 3. The worker: the disk fills while alice's plan runs. Google comes back, its
        # call is made, and recording its outcome (ledger, audit) waits for space.
        stack.fill_disk()
        google.reset()
        wait_until(lambda: google.calls_to("/signOut"), 10, what="google called")
        time.sleep(2.5)  # several journal retries fail meanwhile
        assert len(google.calls_to("/signOut")) == 1  # made once, not retried
        assert not stack.events("plan.completed", plan="disk-1")
        assert not stack.events("plan.crashed")
        status, ready = stack.readyz()
        assert status == 503
        assert ready["checks"]["journal_writable"] is False
        google_ledger = [
            e
            for e in _journal_lines(stack.journal_path)
            if e["kind"] == "ledger" and e["value"].get("provider") == "google"
        ]
        assert google_ledger == []

        stack.free_disk()
        wait_until(lambda: stack.events("plan.completed", plan="disk-1"), 15, what="plan completed")
        wait_until(lambda: stack.readyz()[0] == 200, 10, what="ready again")
        summary = wait_until(
            lambda: [c for c in vendor.calls_to("/slack/") if "Offboarded Alice" in str(c["json"])],
            10,
            what="summary alert",
        )
        assert len(summary) == 1
        assert len(google.calls_to("/signOut")) == 1
        assert len(alice_calls(vendor)) == ALICE_CALLS - 4

        # --- 4. The HR agent: the webhook's line fits, the worker's decision does not. The
        # event was accepted (202), so it must be applied once space is back — not dropped
        # as "already applied" because its state was in memory but never written.
        carol = hr_event("disk-3", who="carol")
        _wait_quiet(stack.journal_path)
        stack.fill_disk(room=_hr_line_upper_bound(carol))
        calls_before = len(_provider_calls(vendor, google))
        resp = stack.post_hr(carol)
        assert resp.status_code == 202, resp.text
        time.sleep(2.0)
        assert len(_provider_calls(vendor, google)) == calls_before  # waiting, not acting
        assert not stack.events("hr.duplicate", event_id="disk-3")
        assert stack.readyz()[0] == 503
        stack.free_disk()
        wait_until(lambda: stack.events("plan.completed", plan="disk-3"), 15, what="carol's plan")
        assert len(stack.events("hr.decided", event_id="disk-3")) == 1
        assert not stack.events("hr.duplicate", event_id="disk-3")
        carol_calls = [
            c for c in _provider_calls(vendor, google) if any(r in c[1] for r in CAROL_REFS)
        ]
        assert carol_calls
        time.sleep(1.0)

        # Every provider call happened exactly once; the journal is whole, each event in it
        # once, and every action's outcome recorded.
        calls = _provider_calls(vendor, google)
        assert [k for k, n in Counter(calls).items() if n > 1] == []
        entries = _journal_lines(stack.journal_path)
        hr_ids = Counter(e["value"]["event_id"] for e in entries if e["kind"] == "hr_event")
        assert hr_ids["disk-1"] == 1
        assert hr_ids["disk-3"] == 1
        ledger_google = [
            e for e in entries if e["kind"] == "ledger" and e["value"].get("provider") == "google"
        ]
        # once each: the acknowledgement, and for what Google can read back the verification
        # (sign-out cannot be read back: its one record says so)
        alice_google = Counter(
            e["value"]["action"] for e in ledger_google if e["value"]["identity"] == "alice"
        )
        assert alice_google == {"disable_account": 2, "revoke_sessions": 1, "revoke_tokens": 2}
        assert not stack.events("plan.crashed")
        assert not stack.events("http.unhandled")
    finally:
        assert stack.stop() == 0

    # --- 5. Restart on the same data directory: the journal replays, the stack is ready,
    # nobody's plan resumes and no provider is called again.
    vendor.reset()
    google.reset()
    stack.start()
    try:
        assert stack.readyz()[1]["checks"]["journal_writable"] is True
        assert stack.events("journal.replayed")
        assert not stack.events("journal.torn_line")
        time.sleep(3.0)
        assert _provider_calls(vendor, google) == []
        assert vendor.calls_to("/slack/") == []
        assert not stack.events("plans.resumed")
        entries = _journal_lines(stack.journal_path)
        last_state = {e["key"]: e["value"] for e in entries if e["kind"] == "state"}
        for who in ("alice", "carol"):
            assert last_state[f"identity:{who}"]["status"] == "offboarded"
            assert last_state[f"identity:{who}"]["plans"] == {}
    finally:
        stack.stop()


def test_stopped_while_waiting_for_space_the_accepted_event_is_applied_after_restart(
    tmp_path: Path, vendor: FakeVendorServer
) -> None:
    """The disk stays full and the process is stopped while the worker waits to record an
    accepted event's decision: it stops promptly and cleanly, and the next start (space
    back) replays the journal and applies the event, each provider call once."""
    cfg = write_config(tmp_path / "config.yaml", data_dir=tmp_path / "data", vendor_url=vendor.url)
    stack = PipedStack(cfg)
    stack.start()
    try:
        wait_until(lambda: stack.events("plan.completed", identity="gina"), 15, what="gina")
        _wait_quiet(stack.journal_path)
        event = hr_event("disk-stop", who="carol")
        stack.fill_disk(room=_hr_line_upper_bound(event))
        before = len(_provider_calls(vendor))
        assert stack.post_hr(event).status_code == 202
        wait_until(lambda: stack.events("journal.write_failed"), 5, what="write failed")
        time.sleep(1.0)
        assert len(_provider_calls(vendor)) == before
    finally:
        started = time.monotonic()
        assert stack.stop(timeout=20) == 0
    assert time.monotonic() - started < 10
    assert not stack.events("hr.duplicate", event_id="disk-stop")

    stack.start()
    try:
        wait_until(lambda: stack.events("plan.completed", plan="disk-stop"), 20, what="applied")
        time.sleep(1.0)
        calls = _provider_calls(vendor)[before:]
        assert any(r in path for _, path in calls for r in CAROL_REFS)
        assert [k for k, n in Counter(calls).items() if n > 1] == []
        assert len(stack.events("hr.decided", event_id="disk-stop")) == 1
        hr_ids = Counter(
            e["value"]["event_id"]
            for e in _journal_lines(stack.journal_path)
            if e["kind"] == "hr_event"
        )
        assert hr_ids["disk-stop"] == 1
    finally:
        stack.stop()
