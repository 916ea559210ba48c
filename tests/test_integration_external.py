"""The pieces run separately against an external Kafka (a real Tansu broker started by the
``broker`` fixture stands in for it): ``registry import``, ``connect hr-webhook`` and
``worker`` as their own processes; a worker SIGKILLed while the broker stays up; poison
records on the HR topic; and ``accessguard run`` stopping cleanly on SIGTERM."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
import yaml

from streams.bus.bootstrap import _snapshot_key, read_leak_index, read_registry_topic
from streams.bus.broker import EmbeddedBroker, TopicSpec, ensure_topics
from streams.decide.hr import AGENCY_TIMER_SOURCE
from streams.model.leak_index import LeakIndex, LeakMatch
from streams.model.registry import Identity
from streams.support.errors import RegistryError
from tests.fakes import FakeVendorServer
from tests.stack import REPO, Stack, free_port, wait_until, write_config

pytestmark = [pytest.mark.integration]

EXAMPLE_REGISTRY = REPO / "examples" / "registry.yaml"
HR_TOPIC = "accessguard.hr.events"
DLQ_TOPIC = "accessguard.hr.events.dlq"
REGISTRY_TOPIC = "accessguard.registry.changes"
SNAPSHOT_TOPIC = "accessguard.leak.index"

ALICE_REFS = (
    "00u1alicexyz0A1b2C3d4",
    "6f1c2d3e-1111-4a5b-9c8d-a11ce0000001",
    "hs-2231",
    "100200300400501",
    "alice.nguyen%40lumen-outdoor.example",
    "alice.nguyen@lumen-outdoor.example",
)
PEOPLE = {
    "alice": ("E1001", "alice.nguyen@lumen-outdoor.example"),
    "bob": ("E1002", "bob.okafor@lumen-outdoor.example"),
    "dan": ("C2001", "dan.meyer@freelance.example"),
}


def hr_event(event_id: str, kind: str = "terminated", who: str = "alice") -> dict[str, Any]:
    employee_id, email = PEOPLE[who]
    when = datetime.now(UTC) - timedelta(minutes=1)
    return {
        "event_id": event_id,
        "type": kind,
        "employee_id": employee_id,
        "email": email,
        "effective_at": when.isoformat().replace("+00:00", "Z"),
        "source": "workday",
    }


#: Alice's termination under the default policy (tests/test_integration_offboarding.py).
ALICE_CALLS = 16


def alice_calls(server: FakeVendorServer) -> list[tuple[str, str]]:
    return [
        (c["method"], c["path"])
        for c in list(server.calls)
        if any(ref in c["path"] for ref in ALICE_REFS)
    ]


def registry_import(
    broker: EmbeddedBroker, data_dir: Path, file: Path
) -> subprocess.CompletedProcess[str]:
    """``accessguard registry import FILE`` against the external broker, configured by env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSGUARD_")}
    env.update(
        ACCESSGUARD_BROKER=broker.url,
        ACCESSGUARD_DATA_DIR=str(data_dir),
        ACCESSGUARD_LOG_FORMAT="json",
    )
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "registry", "import", str(file)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def imported(broker: EmbeddedBroker, data_dir: Path, file: Path) -> dict[str, Any]:
    proc = registry_import(broker, data_dir, file)
    assert proc.returncode == 0, proc.stderr
    summary: dict[str, Any] = orjson.loads(proc.stdout)  # stdout is the summary only
    return summary


def topic_records(bootstrap: str, topic: str, expect: int, timeout: float = 15.0) -> list[Any]:
    """Every record of a topic (all partitions), waiting until ``expect`` are there."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, client_id="test-reader"
    )
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or {0}]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < expect and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=300).values():
                records.extend(recs)
        return records
    finally:
        consumer.close()


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
    """Write raw records straight onto a topic, in order, waiting for each ack."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value).get(timeout=15)
    finally:
        producer.close()


def produce_batch(bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
    """Like :func:`produce`, but the records go in one batch (one produce request)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=500)
    try:
        futures = [producer.send(topic, key=key, value=value) for key, value in records]
        offsets = [f.get(timeout=15).offset for f in futures]
        assert offsets == list(range(offsets[0], offsets[0] + len(records)))
    finally:
        producer.close()


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] == "Z"
    except OSError:
        return True


@pytest.fixture
def worker_config(tmp_path: Path, broker: EmbeddedBroker, vendor: FakeVendorServer) -> Path:
    (tmp_path / "worker").mkdir()
    return write_config(
        tmp_path / "worker" / "config.yaml",
        data_dir=tmp_path / "worker" / "data",
        vendor_url=vendor.url,
        broker=broker.url,
    )


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


class TestRegistryImport:
    def test_import_publishes_then_only_changes_then_the_tombstone(
        self, broker: EmbeddedBroker, tmp_path: Path
    ) -> None:
        """The first import publishes the whole registry; importing the same file again
        publishes nothing; a file with one grant removed publishes exactly that tombstone,
        and the topic then materialises to the new file."""
        data = tmp_path / "data"
        first = imported(broker, data, EXAMPLE_REGISTRY)
        assert first["changes"] > 0
        assert first["removed"] == 0
        assert first["grants"] == 19
        records = topic_records(broker.bootstrap, REGISTRY_TOPIC, first["changes"])
        assert len(records) == first["changes"]

        again = imported(broker, data, EXAMPLE_REGISTRY)
        assert (again["changes"], again["removed"]) == (0, 0)

        doc = yaml.safe_load(EXAMPLE_REGISTRY.read_text(encoding="utf-8"))
        dropped = doc["grants"].pop(0)
        smaller = tmp_path / "registry-smaller.yaml"
        smaller.write_text(yaml.safe_dump(doc), encoding="utf-8")
        third = imported(broker, data, smaller)
        assert (third["changes"], third["removed"], third["grants"]) == (1, 1, 18)

        records = topic_records(broker.bootstrap, REGISTRY_TOPIC, first["changes"] + 1)
        assert len(records) == first["changes"] + 1
        last = records[-1]
        assert last.value is None
        assert dropped["identity"] in last.key.decode()
        assert dropped["account"] in last.key.decode()
        registry = read_registry_topic(broker.bootstrap, REGISTRY_TOPIC)
        remaining = {g.account for g in registry.grants_of(dropped["identity"])}
        assert dropped["account"] not in remaining

    def test_import_of_an_invalid_file_publishes_nothing(
        self, broker: EmbeddedBroker, tmp_path: Path
    ) -> None:
        """An invalid registry file lists its problems with file:line, exits 1, and
        nothing reaches the topic."""
        bad = tmp_path / "bad.yaml"
        bad.write_text("accounts:\n  - id: x\n", encoding="utf-8")
        proc = registry_import(broker, tmp_path / "data", bad)
        assert proc.returncode == 1
        assert f"{bad}:2:" in proc.stderr
        assert topic_records(broker.bootstrap, REGISTRY_TOPIC, 1, timeout=1.0) == []

    def test_leak_index_read_alone_matches_the_full_registry_read(
        self, broker: EmbeddedBroker
    ) -> None:
        """``leaks import`` reads only the LeakIndex from the topic (no Registry): it is the
        index of the full read, later changes and tombstones included, and it counts and
        skips a change it cannot read where the full read stops."""

        def ident(i: str, email: str, **extra: Any) -> bytes:
            value = {"id": i, "name": i, "kind": "employee", "emails": [email], **extra}
            return orjson.dumps(value)

        shared = {"totp": True, "ref": "shared/x", "login": "Social@Brand.example"}
        account = {
            "id": "x",
            "platform": "x",
            "handle": "@b",
            "criticality": "high",
            "provider": "h",
        }
        good = [
            (b"identity:ann", ident("ann", "ann@brand.example", aliases={"okta": "00uANN"})),
            (b"identity:bob", ident("bob", "bob@brand.example")),
            (b"identity:cy", ident("cy", "cy@brand.example")),
            (b"account:x", orjson.dumps({**account, "shared_credential": shared})),
            (b"account:y", orjson.dumps({**account, "id": "y", "shared_credential": shared})),
            (
                b"grant:ann:x",
                orjson.dumps(
                    {
                        "identity": "ann",
                        "account": "x",
                        "role": "admin",
                        "via": "sso",
                        "mfa": "push",
                    }
                ),
            ),
            (b"identity:bob", ident("bob", "robert@brand.example")),  # e-mail changed
            (b"identity:cy", None),  # cy removed
            (b"account:y", None),
        ]
        produce(broker.bootstrap, REGISTRY_TOPIC, good)
        full = LeakIndex.build(read_registry_topic(broker.bootstrap, REGISTRY_TOPIC))
        alone, read = read_leak_index(broker.bootstrap, REGISTRY_TOPIC)
        assert read.unreadable == 0
        assert (read.snapshot, read.wrote_snapshot) == ("none", False)
        probes = [
            "ann@brand.example",
            "00uann",
            "bob@brand.example",
            "robert@brand.example",
            "cy@brand.example",
            "social@brand.example",
            "nobody@brand.example",
        ]
        assert [alone.lookup(p) for p in probes] == [full.lookup(p) for p in probes]
        assert alone.lookup("bob@brand.example") is None
        assert alone.lookup("robert@brand.example") == LeakMatch(("bob",), ())
        assert alone.lookup("social@brand.example") == LeakMatch((), ("x",))
        assert len(alone) == len(full)

        produce(
            broker.bootstrap,
            REGISTRY_TOPIC,
            [
                (b"identity:dee", orjson.dumps({"id": "dee"})),  # no name, no kind
                (b"account:z", b"{not json"),
                (b"identity:eve", ident("eve", "eve@brand.example")),
            ],
        )
        with pytest.raises(RegistryError):
            read_registry_topic(broker.bootstrap, REGISTRY_TOPIC)
        alone, read = read_leak_index(broker.bootstrap, REGISTRY_TOPIC)
        assert read.unreadable == 2
        assert alone.lookup("eve@brand.example") == LeakMatch(("eve",), ())

    def test_leak_index_snapshot_then_only_the_changes_since(self, broker: EmbeddedBroker) -> None:
        """The first read writes a snapshot; the next reads it and only the changes after
        it, and ends with the index a full read gives. A snapshot whose last record is not
        on the topic as it says (recreated or compacted topic) is not trusted, and other
        plus-tag domains get a snapshot of their own."""
        ensure_topics(
            broker.bootstrap,
            [
                TopicSpec(REGISTRY_TOPIC, 1, compacted=True),
                TopicSpec(SNAPSHOT_TOPIC, 1, compacted=True, max_message_bytes=64 << 20),
            ],
        )

        def ident(i: str, *emails: str) -> bytes:
            return orjson.dumps({"id": i, "name": i, "kind": "employee", "emails": list(emails)})

        account = {"id": "x", "platform": "x", "handle": "@b", "criticality": "high"}
        shared = {"totp": True, "ref": "shared/x", "login": "social@brand.example"}
        produce(
            broker.bootstrap,
            REGISTRY_TOPIC,
            [
                (b"identity:ann", ident("ann", "ann@brand.example")),
                (b"identity:bob", ident("bob", "bob@brand.example", "b@brand.example")),
                (b"identity:cy", ident("cy", "b@brand.example")),  # b@ is bob's and cy's
                (
                    b"account:x",
                    orjson.dumps({**account, "provider": "h", "shared_credential": shared}),
                ),
            ],
        )

        def full() -> LeakIndex:
            return LeakIndex.build(read_registry_topic(broker.bootstrap, REGISTRY_TOPIC))

        def read(domains: tuple[str, ...] = ()) -> tuple[LeakIndex, Any]:
            return read_leak_index(
                broker.bootstrap, REGISTRY_TOPIC, domains, snapshot_topic=SNAPSHOT_TOPIC
            )

        probes = [
            "ann@brand.example",
            "bob@brand.example",
            "b@brand.example",
            "robert@brand.example",
            "fay@brand.example",
            "social@brand.example",
        ]

        def same(index: LeakIndex, expected: LeakIndex) -> None:
            assert index.snapshot() == expected.snapshot()
            for probe in probes:
                got, want = index.lookup(probe), expected.lookup(probe)
                assert (got is None) == (want is None), probe
                if got is not None and want is not None:
                    assert set(got.identities) == set(want.identities), probe
                    assert set(got.accounts) == set(want.accounts), probe

        first, report = read()
        assert (report.snapshot, report.changes, report.wrote_snapshot) == ("none", 4, True)
        same(first, full())

        produce_batch(
            broker.bootstrap,
            REGISTRY_TOPIC,
            [
                (b"identity:bob", ident("bob", "robert@brand.example")),
                (b"identity:ann", None),
                (b"identity:fay", ident("fay", "fay@brand.example")),
                (b"account:x", None),
                (
                    b"grant:fay:x",
                    orjson.dumps(
                        {
                            "identity": "fay",
                            "account": "x",
                            "role": "admin",
                            "via": "sso",
                            "mfa": "push",
                        }
                    ),
                ),
            ],
        )
        second, report = read()
        assert (report.snapshot, report.changes, report.wrote_snapshot) == ("used", 5, False)
        same(second, full())
        # Nothing new: the snapshot's record ends the topic. It was written in one batch with
        # the others, and Tansu's ListOffsets answers that batch's base offset + 1 as the end.
        assert read()[1].snapshot == "used"
        assert second.lookup("ann@brand.example") is None
        assert second.lookup("b@brand.example") == LeakMatch(("cy",), ())
        assert second.lookup("social@brand.example") is None

        # A snapshot that names a record the topic does not hold (as after the topic was
        # recreated): its index (here with a ghost in it) is not used.
        ghost = LeakIndex()
        ghost.put_identity(Identity.from_dict(orjson.loads(ident("ghost", "ghost@brand.example"))))
        lying = {
            "version": 1,
            "registry_topic": REGISTRY_TOPIC,
            "positions": {"0": [8, 0, "identity:fay", "0" * 64]},
            "index": ghost.snapshot(),
        }
        key = _snapshot_key(REGISTRY_TOPIC, frozenset())
        produce(broker.bootstrap, SNAPSHOT_TOPIC, [(key, orjson.dumps(lying))])
        third, report = read()
        assert (report.snapshot, report.changes, report.wrote_snapshot) == ("stale", 9, True)
        assert third.lookup("ghost@brand.example") is None
        same(third, full())
        assert read()[1].snapshot == "used"

        # One without a position.
        produce(broker.bootstrap, SNAPSHOT_TOPIC, [(key, orjson.dumps({**lying, "positions": {}}))])
        nowhere, report = read()
        assert (report.snapshot, report.changes, report.wrote_snapshot) == ("stale", 9, True)
        assert nowhere.lookup("ghost@brand.example") is None
        # One that names an offset past the end of the topic.
        lying["positions"] = {"0": [500, 0, "identity:fay", "0" * 64]}
        produce(broker.bootstrap, SNAPSHOT_TOPIC, [(key, orjson.dumps(lying))])
        started = time.monotonic()
        past, report = read()
        assert (report.snapshot, report.changes, report.wrote_snapshot) == ("stale", 9, True)
        assert past.lookup("ghost@brand.example") is None
        same(past, full())
        assert time.monotonic() - started < 10

        plus, report = read(("brand.example",))
        assert (report.snapshot, report.wrote_snapshot) == ("none", True)
        assert plus.lookup("Robert+news@brand.example") == LeakMatch(("bob",), ())
        assert read(("brand.example",))[1].snapshot == "used"
        assert read()[1].snapshot == "used"


class TestSeparateProcesses:
    def test_connector_and_worker_offboard_through_the_external_broker(
        self,
        broker: EmbeddedBroker,
        tmp_path: Path,
        vendor: FakeVendorServer,
        worker_config: Path,
        connector: Stack,
    ) -> None:
        """`connect hr-webhook` accepts the signed event and publishes it; a separate
        `accessguard worker` consumes it and revokes Alice everywhere, each call once. The
        worker itself does not serve the HR endpoint."""
        imported(broker, tmp_path / "import", EXAMPLE_REGISTRY)
        with Stack(worker_config, command=("worker",)) as worker:
            resp = connector.post_hr(hr_event("ext-1"))
            assert resp.status_code == 202, resp.text
            assert resp.json() == {"status": "accepted", "event_id": "ext-1"}
            wait_until(lambda: len(alice_calls(vendor)) >= ALICE_CALLS, 20, what="every alice call")
            time.sleep(0.5)
            calls = alice_calls(vendor)
            assert len(calls) == ALICE_CALLS
            assert len(set(calls)) == ALICE_CALLS
            assert ("DELETE", "/api/v1/users/00u1alicexyz0A1b2C3d4/sessions") in calls
            assert worker.post_hr(hr_event("to-worker")).status_code == 404
            assert vendor.replays == []
            # neither process wrote a configured secret anywhere (output, data, /metrics)
            worker.assert_no_secret_leaked()
            connector.assert_no_secret_leaked()

        # the worker's agency timer publishes its own (synthetic) events beside ours
        events = [
            r
            for r in topic_records(broker.bootstrap, HR_TOPIC, 1)
            if orjson.loads(r.value)["source"] != AGENCY_TIMER_SOURCE
        ]
        assert [orjson.loads(r.value)["event_id"] for r in events] == ["ext-1"]
        assert events[0].key == b"E1001"
        # the connector journals what it accepted, in its own data dir
        kinds = [e["kind"] for e in connector.journal()]
        assert kinds == ["hr_event"]

    def test_worker_sigkill_with_broker_up_every_action_once(
        self,
        broker: EmbeddedBroker,
        tmp_path: Path,
        vendor: FakeVendorServer,
        connector: Stack,
    ) -> None:
        """The worker is SIGKILLed while Google fails (its action in backoff) and the other
        nine actions are done; the external broker keeps running. A new worker resumes the
        plan: Google gets its one call, no other provider is called again."""
        imported(broker, tmp_path / "import", EXAMPLE_REGISTRY)
        with FakeVendorServer() as google:
            google.down_for(3600, status=503)
            (tmp_path / "w").mkdir()
            cfg = write_config(
                tmp_path / "w" / "config.yaml",
                data_dir=tmp_path / "w" / "data",
                vendor_url=vendor.url,
                google_url=google.url,
                broker=broker.url,
                # the killed member's session expires sooner, so the restart is quicker
                extra={"worker.session_timeout": 2.0, "worker.heartbeat_interval": 0.5},
            )
            worker = Stack(cfg, command=("worker",)).start()
            try:
                assert connector.post_hr(hr_event("kill-ext")).status_code == 202
                wait_until(
                    lambda: len(alice_calls(vendor)) >= ALICE_CALLS - 4, 20, what="all but Google's"
                )
                wait_until(lambda: len(google.rejected) >= 2, 15, what="google retried")
                # the nine done actions are in the ledger the next worker resumes from
                worker.wait_for_ledger("kill-ext", skip=lambda a: a["provider"] == "google")
                worker.kill()
            finally:
                worker.stop()
            assert broker.alive()
            before = alice_calls(vendor)
            assert len(before) == ALICE_CALLS - 4
            assert google.calls == []
            google.reset()
            worker.start(timeout=90)
            try:
                wait_until(lambda: google.calls_to("/signOut"), 40, what="google after restart")
                time.sleep(2.0)
                assert alice_calls(vendor) == before
                assert vendor.replays == []
                assert len(google.calls_to("/signOut")) == 1
            finally:
                worker.stop()

    def test_poison_records_go_to_the_dlq_and_the_partition_keeps_moving(
        self,
        broker: EmbeddedBroker,
        tmp_path: Path,
        vendor: FakeVendorServer,
        worker_config: Path,
    ) -> None:
        """Records the worker cannot use (invalid JSON, a bad field, binary garbage) are
        dead-lettered with the reason and the original bytes; a valid event behind them on
        the same partition is still processed."""
        imported(broker, tmp_path / "import", EXAMPLE_REGISTRY)
        key = PEOPLE["dan"][0].encode()
        bad_field = {**hr_event("poison-2", kind="suspended", who="dan"), "type": "fired"}
        with Stack(worker_config, command=("worker",)):
            produce(
                broker.bootstrap,
                HR_TOPIC,
                [
                    (key, b"{not json"),
                    (key, orjson.dumps(bad_field)),
                    (key, b"\xff\xfe\x00garbage"),
                    (key, orjson.dumps(hr_event("after-poison", kind="suspended", who="dan"))),
                ],
            )
            wait_until(
                lambda: vendor.calls_to("00u1danxyz0A1b2C3d4"), 20, what="valid event processed"
            )
        dlq = [orjson.loads(r.value) for r in topic_records(broker.bootstrap, DLQ_TOPIC, 3)]
        assert len(dlq) == 3
        assert all(d["topic"] == HR_TOPIC for d in dlq)
        assert dlq[0]["value"] == "{not json"
        assert dlq[0]["reason"].startswith("invalid: invalid JSON")
        assert dlq[1]["reason"].startswith("invalid: type: must be one of")
        assert orjson.loads(dlq[1]["value"])["event_id"] == "poison-2"
        assert dlq[2]["encoding"] == "base64"
        assert dlq[2]["reason"].startswith("invalid: ")


class TestEmbeddedShutdown:
    def test_sigterm_on_run_exits_0_and_leaves_no_tansu(
        self, tmp_path: Path, vendor: FakeVendorServer
    ) -> None:
        """`accessguard run` on SIGTERM stops the worker, the HTTP server and the embedded
        broker it started: exit code 0, and the broker's pid is gone."""
        cfg = write_config(
            tmp_path / "config.yaml", data_dir=tmp_path / "data", vendor_url=vendor.url
        )
        stack = Stack(cfg).start()
        pid = next(int(e["pid"]) for e in stack.logs() if e.get("event") == "broker.started")
        assert not _process_gone(pid)
        url = stack.url
        assert stack.stop() == 0
        wait_until(lambda: _process_gone(pid), 10, what="tansu gone")
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/healthz", timeout=2)
