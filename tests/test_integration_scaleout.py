"""Scale-out against one external broker (a real Tansu started by the ``broker`` fixture): two
``accessguard worker`` processes in the same consumer group share the partitions; one is
SIGKILLed mid-stream and the other takes its partitions over. Every offboarding completes, no
provider action is called twice and no page is sent twice.

The in-flight-call window: the executor records an action as done in its ledger (a changelog
topic) only after the provider answered. A worker killed while an action's HTTP request is in
flight (sent, answer not yet recorded) leaves that action "not done", and whoever resumes the
plan sends it again: at-least-once for that one call, which the providers' revoke/remove
operations tolerate (idempotent) but which the "no call twice" assertion here would count. The
scenario is therefore designed so that no call is in flight at the kill: the first offboardings
have completed (their call counts have been stable for a while) when the worker is killed, and
the next offboardings are published right after the kill, onto the dead worker's partition,
where they wait until the group notices the death (session timeout) and the survivor is
assigned that partition. The survivor must then (a) process the waiting offboardings, (b) not
redo the completed plans of the dead worker when it resumes plans on assignment.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from streams.bus.broker import EmbeddedBroker
from streams.bus.topics import partition_for
from tests.fakes import FakeVendorServer
from tests.s3 import LocalS3
from tests.stack import (
    Stack,
    free_port,
    plans_done,
    terminated_event,
    wait_until,
    write_config,
)
from tests.test_integration_external import EXAMPLE_REGISTRY, imported

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 4
#: employee id, email, the provider refs of that person's calls (examples/registry.yaml)
PEOPLE: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "alice": (
        "E1001",
        "alice.nguyen@lumen-outdoor.example",
        (
            "00u1alicexyz0A1b2C3d4",
            "6f1c2d3e-1111-4a5b-9c8d-a11ce0000001",
            "hs-2231",
            "100200300400501",
            "alice.nguyen",
        ),
    ),
    "bob": (
        "E1002",
        "bob.okafor@lumen-outdoor.example",
        ("00u1bobxyz0A1b2C3d4e5", "hs-2232", "bob.okafor"),
    ),
    "carol": (
        "E1003",
        "carol.ruiz@lumen-outdoor.example",
        (
            "00u1carolxyz0A1b2C3d4",
            "6f1c2d3e-1111-4a5b-9c8d-ca7010000003",
            "hs-2233",
            "100200300400503",
        ),
    ),
    "dan": (
        "C2001",
        "dan.meyer@freelance.example",
        ("00u1danxyz0A1b2C3d4e5", "hs-2234", "dan.meyer%40freelance.example"),
    ),
}
#: provider actions per offboarding (examples/registry.yaml with tests/stack.py's providers)
# the default policy: disable at each identity provider, sessions, tokens (Okta one DELETE,
# Google a token and an app password), grants
EXPECTED_CALLS = {"alice": 16, "bob": 11, "carol": 10, "dan": 8}
#: gina's grants, revoked by the agency timer (her agency's contract has ended)
GINA_REFS = ("hs-6001", "100200300400601")
GINA_CALLS = 4
SINK_PATHS = ("/slack/", "/v2/enqueue")
WORKER_TIMING = {
    # the killed member's session expires quickly, so the survivor takes over within seconds
    "worker.session_timeout": 2.0,
    "worker.rebalance_timeout": 2.0,
    "worker.heartbeat_interval": 0.5,
}


def hr_event(event_id: str, who: str) -> dict[str, Any]:
    employee_id, email, _ = PEOPLE[who]
    return terminated_event(event_id, employee_id, email)


def calls_of(server: FakeVendorServer, who: str) -> list[tuple[str, str]]:
    refs = PEOPLE[who][2]
    return [
        (c["method"], c["path"]) for c in list(server.calls) if any(r in c["path"] for r in refs)
    ]


def gina_calls(server: FakeVendorServer) -> list[tuple[str, str]]:
    return [
        (c["method"], c["path"])
        for c in list(server.calls)
        if any(r in c["path"] for r in GINA_REFS)
    ]


def assigned(stack: Stack) -> set[int] | None:
    """The partitions of the stack's latest ``engine.assigned`` log line (None: none yet)."""
    lines = [e for e in stack.logs() if e.get("event") == "engine.assigned"]
    return set(lines[-1]["partitions"]) if lines else None


def settled(server: FakeVendorServer, quiet: float = 1.5, timeout: float = 30.0) -> int:
    """Wait until the vendor has seen no new call for ``quiet`` seconds; the call count."""
    deadline = time.monotonic() + timeout
    count, since = len(server.calls), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = len(server.calls)
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return count
    raise TimeoutError(f"vendor calls still moving after {timeout}s")


@pytest.fixture
def connector(tmp_path: Path, broker: EmbeddedBroker, vendor: FakeVendorServer) -> Iterator[Stack]:
    (tmp_path / "connector").mkdir()
    cfg = write_config(
        tmp_path / "connector" / "config.yaml",
        data_dir=tmp_path / "connector" / "data",
        vendor_url=vendor.url,
        broker=broker.url,
        http_port=free_port(),
    )
    with Stack(cfg, command=("connect", "hr-webhook")) as running:
        yield running


def worker_stack(tmp_path: Path, name: str, broker: EmbeddedBroker, vendor_url: str) -> Stack:
    (tmp_path / name).mkdir()
    cfg = write_config(
        tmp_path / name / "config.yaml",
        data_dir=tmp_path / name / "data",
        vendor_url=vendor_url,
        broker=broker.url,
        http_port=free_port(),
        extra=WORKER_TIMING,
    )
    return Stack(cfg, command=("worker",))


def test_two_workers_share_partitions_and_survive_a_sigkill(
    broker: EmbeddedBroker, tmp_path: Path, vendor: FakeVendorServer, connector: Stack
) -> None:
    """Two workers (same group, own ports and data dirs) both get partitions and together
    cover all four. Alice (partition 1) and Bob (partition 0) are offboarded and complete;
    the owner of partition 0 is SIGKILLed (nothing in flight); Carol and Dan (partition 0) are
    offboarded right after the kill; the survivor takes partition 0 over and completes them.
    Each provider action is called exactly once and no page is sent twice."""
    assert {partition_for(PEOPLE[w][0], PARTITIONS) for w in ("bob", "carol", "dan")} == {0}
    assert partition_for(PEOPLE["alice"][0], PARTITIONS) == 1
    imported(broker, tmp_path / "import", EXAMPLE_REGISTRY)
    one = worker_stack(tmp_path, "w1", broker, vendor.url)
    two = worker_stack(tmp_path, "w2", broker, vendor.url)
    try:
        one.start(timeout=90)
        two.start(timeout=90)

        def shared() -> bool:
            a, b = assigned(one), assigned(two)
            return bool(a and b and a | b == set(range(PARTITIONS)) and not a & b)

        wait_until(shared, 60, 0.2, what="both workers assigned, covering all partitions")
        for stack in (one, two):
            ready = requests.get(f"{stack.url}/readyz", timeout=5).json()
            assert ready["checks"]["consumers_assigned"] is True, ready
        victim, survivor = (one, two) if 0 in (assigned(one) or set()) else (two, one)
        assert 0 in (assigned(victim) or set())

        # the agency timer offboards gina (OldCo's contract ended) on start: let it finish
        # first, so that none of her calls is in flight at the kill
        wait_until(
            lambda: len(gina_calls(vendor)) >= GINA_CALLS, 30, what="the agency timer's calls"
        )

        assert connector.post_hr(hr_event("so-alice", "alice")).status_code == 202
        assert connector.post_hr(hr_event("so-bob", "bob")).status_code == 202
        wait_until(
            lambda: len(calls_of(vendor, "alice")) >= EXPECTED_CALLS["alice"],
            30,
            what="alice's calls",
        )
        wait_until(lambda: calls_of(vendor, "bob"), 30, what="bob's calls")
        # nothing in flight at the kill: every plan so far is over in the journals (each
        # action's outcome in the ledger, the plan's alerts sent)
        wait_until(
            lambda: plans_done((one, two), ("alice", "bob", "gina")),
            30,
            what="alice's, bob's and gina's plans completed in the journals",
        )
        before = {w: sorted(calls_of(vendor, w)) for w in ("alice", "bob")}
        pages_before = len(vendor.calls_to("/v2/enqueue"))

        victim.kill()  # nothing in flight: every call so far has been answered and recorded
        kill_at = time.monotonic()
        assert connector.post_hr(hr_event("so-carol", "carol")).status_code == 202
        assert connector.post_hr(hr_event("so-dan", "dan")).status_code == 202

        wait_until(
            lambda: assigned(survivor) == set(range(PARTITIONS)),
            30,
            0.2,
            what="survivor assigned every partition",
        )
        takeover_s = time.monotonic() - kill_at
        wait_until(lambda: calls_of(vendor, "carol"), 30, what="carol's calls")
        wait_until(lambda: calls_of(vendor, "dan"), 30, what="dan's calls")
        settled(vendor, quiet=3.0)

        calls = [
            (c["method"], c["path"])
            for c in vendor.calls
            if not c["path"].startswith(SINK_PATHS)  # alert sinks: one path, many messages
        ]
        counts = Counter(calls)
        dupes = {k: v for k, v in counts.items() if v > 1}
        assert not dupes, f"called more than once: {dupes}"
        assert len(calls) == len(set(calls))
        assert vendor.replays == []  # not even with the same Idempotency-Key
        # the survivor resumed no completed plan of the victim
        assert {w: sorted(calls_of(vendor, w)) for w in ("alice", "bob")} == before
        assert {w: len(calls_of(vendor, w)) for w in PEOPLE} == EXPECTED_CALLS
        assert len(gina_calls(vendor)) == GINA_CALLS
        assert len(set(calls)) == sum(EXPECTED_CALLS.values()) + GINA_CALLS
        for who in ("alice", "bob", "carol", "dan"):
            assert ("DELETE", f"/api/v1/users/{PEOPLE[who][2][0]}/sessions") in calls, who
        pages = [
            orjson.dumps(c["json"], option=orjson.OPT_SORT_KEYS)
            for c in vendor.calls
            if c["path"] == "/v2/enqueue"
        ]
        assert len(pages) == len(set(pages)), pages
        assert len(pages) >= pages_before
        slack = [
            orjson.dumps(c["json"], option=orjson.OPT_SORT_KEYS)
            for c in vendor.calls
            if c["path"].startswith("/slack/")
        ]
        assert len(slack) == len(set(slack)), slack
        assert takeover_s < 30
        assert survivor.proc is not None
        assert survivor.proc.poll() is None
    finally:
        one.stop()
        two.stop()


def test_two_workers_ride_out_a_durable_broker_restart(
    tansu_bin: str, tmp_path: Path, vendor: FakeVendorServer
) -> None:
    """The same promises across a broker restart, where the broker is durable (Tansu on S3
    storage, a local S3 API): two workers share the partitions; Alice and Bob complete; the
    broker is SIGKILLed; the connector refuses Carol's and Dan's offboardings with 503 while
    it is down (the sender retries, as HR systems do on 503 + Retry-After); the broker comes
    back on the same port; both workers and the connector recover by themselves, Carol and
    Dan complete, and no provider action or page happens twice.

    What the embedded in-memory broker cannot survive: its topics and offsets die with it.
    `accessguard run` then stops (exit 3) and its next start replays the journal
    (test_integration_broker_faults.py). On a real cluster, a broker restart is a leader
    change: with replication 3 and min.insync.replicas 2 (deploy/k8s), acknowledged writes
    survive it and clients move to the new leader, as here."""
    with LocalS3(tmp_path / "s3.log") as s3:
        broker = EmbeddedBroker(
            tansu_bin,
            port=free_port(),
            log_path=tmp_path / "tansu.log",
            storage=s3.storage,
            env=s3.broker_env(),
        ).start()
        imported(broker, tmp_path / "import", EXAMPLE_REGISTRY)
        (tmp_path / "c").mkdir()
        connector = Stack(
            write_config(
                tmp_path / "c" / "config.yaml",
                data_dir=tmp_path / "c" / "data",
                vendor_url=vendor.url,
                broker=broker.url,
                http_port=free_port(),
            ),
            command=("connect", "hr-webhook"),
        )
        one = worker_stack(tmp_path, "w1", broker, vendor.url)
        two = worker_stack(tmp_path, "w2", broker, vendor.url)
        try:
            connector.start()
            one.start(timeout=90)
            two.start(timeout=90)

            def shared() -> bool:
                a, b = assigned(one), assigned(two)
                return bool(a and b and a | b == set(range(PARTITIONS)) and not a & b)

            wait_until(shared, 60, 0.2, what="both workers assigned, covering all partitions")
            wait_until(lambda: len(gina_calls(vendor)) >= GINA_CALLS, 30, what="the agency timer")
            assert connector.post_hr(hr_event("br-alice", "alice")).status_code == 202
            assert connector.post_hr(hr_event("br-bob", "bob")).status_code == 202
            wait_until(
                lambda: len(calls_of(vendor, "alice")) >= EXPECTED_CALLS["alice"],
                30,
                what="alice's calls",
            )
            wait_until(lambda: calls_of(vendor, "bob"), 30, what="bob's calls")
            wait_until(
                lambda: plans_done((one, two), ("alice", "bob", "gina")),
                30,
                what="alice's, bob's and gina's plans completed in the journals",
            )

            os.kill(broker.pid or 0, signal.SIGKILL)
            down_at = time.monotonic()
            refused = 0
            for who in ("carol", "dan"):
                # the sender's retry loop: 503 + Retry-After until the broker is back
                while True:
                    resp = connector.post_hr(hr_event(f"br-{who}", who))
                    if resp.status_code == 202:
                        break
                    assert resp.status_code == 503, resp.text
                    assert resp.headers["Retry-After"] == "5"
                    refused += 1
                    if refused == 3:
                        broker.restart()
                    time.sleep(0.5)
            assert refused >= 3
            for stack in (one, two):
                wait_until(
                    lambda s=stack: requests.get(f"{s.url}/readyz", timeout=5).status_code == 200,
                    60,
                    0.3,
                    what="worker ready again",
                )
            recovered_s = time.monotonic() - down_at
            wait_until(lambda: calls_of(vendor, "carol"), 60, what="carol's calls")
            wait_until(lambda: calls_of(vendor, "dan"), 60, what="dan's calls")
            settled(vendor, quiet=3.0)
            calls = [
                (c["method"], c["path"])
                for c in vendor.calls
                if not c["path"].startswith(SINK_PATHS)
            ]
            dupes = {k: v for k, v in Counter(calls).items() if v > 1}
            assert not dupes, f"called more than once: {dupes}"
            assert vendor.replays == []
            assert {w: len(calls_of(vendor, w)) for w in PEOPLE} == EXPECTED_CALLS
            assert len(gina_calls(vendor)) == GINA_CALLS
            pages = [
                orjson.dumps(c["json"], option=orjson.OPT_SORT_KEYS)
                for c in vendor.calls
                if c["path"] == "/v2/enqueue"
            ]
            assert len(pages) == len(set(pages)), pages
            for stack in (one, two, connector):
                assert stack.proc is not None
                assert stack.proc.poll() is None
            assert recovered_s < 90
        finally:
            one.stop()
            two.stop()
            connector.stop()
            broker.stop()
