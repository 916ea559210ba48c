"""The broker fails, accessguard keeps its promises (issue 6, points 3 and 4):

* a broker unreachable at start: the worker and the HR connector wait — /healthz 200,
  /readyz 503 with the reason, input refused with 503 + Retry-After, one log line per retry —
  and start by themselves when it arrives;
* a durable broker (Tansu on S3 storage: a local S3 API) SIGKILLed under a running worker
  and connector: both turn not-ready, input is refused at once (not journaled, not lost: the
  sender retries), and when the broker is back everything resumes with no repeated call;
* `accessguard run`'s embedded broker dying: an in-memory one took its topics with it, so
  run stops with exit code 3 and the next start restores the state from the journal; a
  durable one is started again in place on the same port.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests

from streams.bus.broker import EmbeddedBroker
from tests.fakes import FakeVendorServer
from tests.s3 import LocalS3
from tests.stack import Stack, free_port, metric_value, plans_done, wait_until, write_config
from tests.test_integration_external import (
    ALICE_CALLS,
    EXAMPLE_REGISTRY,
    alice_calls,
    hr_event,
    imported,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAN_OKTA = "00u1danxyz0A1b2C3d4e5"


def ready(stack: Stack) -> bool:
    try:
        return requests.get(f"{stack.url}/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def not_ready_because_of_the_broker(stack: Stack) -> bool:
    try:
        resp = requests.get(f"{stack.url}/readyz", timeout=2)
    except requests.RequestException:
        return False
    return resp.status_code == 503 and resp.json()["checks"].get("broker") is False


def events(stack: Stack, name: str) -> list[dict[str, object]]:
    return [e for e in stack.logs() if e.get("event") == name]


def dan_calls(vendor: FakeVendorServer) -> list[tuple[str, str]]:
    return [(c["method"], c["path"]) for c in list(vendor.calls) if "danxyz" in c["path"]]


def external_pair(tmp_path: Path, vendor: FakeVendorServer, broker_url: str) -> tuple[Stack, Stack]:
    (tmp_path / "c").mkdir()
    (tmp_path / "w").mkdir()
    fast = {"worker.session_timeout": 3.0, "worker.heartbeat_interval": 0.5}
    connector = Stack(
        write_config(
            tmp_path / "c" / "config.yaml",
            data_dir=tmp_path / "c" / "data",
            vendor_url=vendor.url,
            broker=broker_url,
        ),
        command=("connect", "hr-webhook"),
    )
    worker = Stack(
        write_config(
            tmp_path / "w" / "config.yaml",
            data_dir=tmp_path / "w" / "data",
            vendor_url=vendor.url,
            broker=broker_url,
            extra=fast,
        ),
        command=("worker",),
    )
    return connector, worker


def test_services_wait_for_an_unreachable_broker_then_start(
    tansu_bin: str, tmp_path: Path, vendor: FakeVendorServer
) -> None:
    port = free_port()
    connector, worker = external_pair(tmp_path, vendor, f"kafka://127.0.0.1:{port}")
    connector.start(wait_ready=False)
    worker.start(wait_ready=False)
    try:
        for stack in (connector, worker):
            assert requests.get(f"{stack.url}/healthz", timeout=5).status_code == 200
            resp = requests.get(f"{stack.url}/readyz", timeout=5)
            assert resp.status_code == 503
            body = resp.json()
            assert body["checks"] == {"broker": False}
            assert f"127.0.0.1:{port}" in body["error"]
            assert body["reason"]
            text = requests.get(f"{stack.url}/metrics", timeout=5).text
            assert metric_value(text, "accessguard_readiness_check", check="broker") == 0
        refused = connector.post_hr(hr_event("wait-1"))
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "5"
        assert "waiting for the broker" in refused.json()["error"]
        wait_until(
            lambda: len(events(worker, "broker.unreachable")) >= 2, 20, what="retries logged"
        )
        first = events(worker, "broker.unreachable")[0]
        assert first["level"] == "error"
        assert first["bootstrap"] == f"127.0.0.1:{port}"
        assert "503" in str(first["effect"])
        assert connector.proc is not None
        assert connector.proc.poll() is None  # still waiting, not dead

        with EmbeddedBroker(tansu_bin, port=port, log_path=tmp_path / "tansu.log") as broker:
            imported(broker, tmp_path / "import", EXAMPLE_REGISTRY)
            wait_until(lambda: ready(connector), 60, interval=0.3, what="connector ready")
            wait_until(lambda: ready(worker), 90, interval=0.3, what="worker ready")
            assert events(worker, "broker.reachable")
            resp = connector.post_hr(hr_event("wait-1"))
            assert resp.status_code == 202, resp.text
            wait_until(lambda: len(alice_calls(vendor)) >= ALICE_CALLS, 30, what="alice revoked")
            time.sleep(0.5)
            assert len(alice_calls(vendor)) == ALICE_CALLS
            worker.stop()
            connector.stop()
    finally:
        worker.stop()
        connector.stop()


def test_a_durable_broker_killed_and_restarted_under_running_services(
    tansu_bin: str, tmp_path: Path, vendor: FakeVendorServer
) -> None:
    with LocalS3(tmp_path / "s3.log") as s3:
        port = free_port()

        def durable_broker() -> EmbeddedBroker:
            return EmbeddedBroker(
                tansu_bin,
                port=port,
                log_path=tmp_path / "tansu.log",
                storage=s3.storage,
                env=s3.broker_env(),
            ).start()

        broker = durable_broker()
        connector, worker = external_pair(tmp_path, vendor, broker.url)
        try:
            imported(broker, tmp_path / "import", EXAMPLE_REGISTRY)
            connector.start()
            worker.start(timeout=90)
            assert connector.post_hr(hr_event("dur-1")).status_code == 202
            wait_until(lambda: len(alice_calls(vendor)) >= ALICE_CALLS, 30, what="alice revoked")
            assert s3.objects() > 0  # the records are in the S3 store, not in Tansu's memory

            os.kill(broker.pid or 0, signal.SIGKILL)
            wait_until(
                lambda: not_ready_because_of_the_broker(connector), 10, what="connector unready"
            )
            wait_until(lambda: not_ready_because_of_the_broker(worker), 10, what="worker unready")
            started = time.monotonic()
            refused = connector.post_hr(hr_event("dur-2", kind="suspended", who="dan"))
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "5"
            assert time.monotonic() - started < 2.0  # known down: refused at once
            # refused input is not journaled: the sender still owns it and retries
            assert [e["value"]["event_id"] for e in connector.journal()] == ["dur-1"]
            assert events(connector, "broker.lost")

            broker.restart()
            wait_until(lambda: ready(connector), 20, interval=0.3, what="connector ready again")
            wait_until(lambda: ready(worker), 60, interval=0.3, what="worker ready again")
            assert events(worker, "broker.recovered")
            resp = connector.post_hr(hr_event("dur-2", kind="suspended", who="dan"))
            assert resp.status_code == 202, resp.text
            wait_until(lambda: dan_calls(vendor), 30, what="dan's suspension processed")
            time.sleep(2.0)
            calls = dan_calls(vendor)
            assert len(calls) == len(set(calls))
            assert len(alice_calls(vendor)) == ALICE_CALLS  # nothing before the outage ran again
            for stack in (connector, worker):
                assert stack.proc is not None
                assert stack.proc.poll() is None
        finally:
            worker.stop()
            connector.stop()
            broker.stop()


def tansu_pid(stack: Stack) -> int:
    return int(next(e["pid"] for e in stack.logs() if e.get("event") == "broker.started"))


def test_run_stops_with_code_3_when_its_in_memory_broker_dies(
    tmp_path: Path, vendor: FakeVendorServer
) -> None:
    """Carrying on against an empty broker would be wrong; stopping loudly is right, and
    the next start restores everything from the journal."""
    cfg = write_config(tmp_path / "config.yaml", data_dir=tmp_path / "data", vendor_url=vendor.url)
    stack = Stack(cfg).start()
    event = hr_event("mem-1")
    try:
        assert stack.post_hr(event).status_code == 202
        wait_until(lambda: len(alice_calls(vendor)) >= ALICE_CALLS, 30, what="alice revoked")
        # the kill comes once the plan is over in the journal (every action in the ledger,
        # the summary sent): what the next start replays
        wait_until(lambda: plans_done((stack,), ("alice",)), 15, what="alice's plan journaled")
        os.kill(tansu_pid(stack), signal.SIGKILL)
        assert stack.proc is not None
        assert stack.proc.wait(30) == 3
        exited = events(stack, "broker.exited")
        assert exited
        assert "journal" in str(exited[0]["effect"])
        stack.proc = None
        stack.start()
        resp = stack.post_hr(event)  # the sender retries it: the journal knows it
        assert resp.status_code == 202, resp.text
        time.sleep(1.5)
        assert len(alice_calls(vendor)) == ALICE_CALLS
    finally:
        stack.stop()


def test_run_restarts_a_durable_embedded_broker_in_place(
    tmp_path: Path, vendor: FakeVendorServer
) -> None:
    with LocalS3(tmp_path / "s3.log") as s3:
        cfg = write_config(
            tmp_path / "config.yaml",
            data_dir=tmp_path / "data",
            vendor_url=vendor.url,
            extra={"embedded.storage": s3.storage},
        )
        stack = Stack(cfg, env=s3.broker_env()).start()
        try:
            assert "durable: s3://tansu/" in stack.stdout()
            assert stack.post_hr(hr_event("inplace-1")).status_code == 202
            wait_until(lambda: len(alice_calls(vendor)) >= ALICE_CALLS, 30, what="alice revoked")
            os.kill(tansu_pid(stack), signal.SIGKILL)
            wait_until(lambda: events(stack, "broker.restarted"), 20, what="broker restarted")
            wait_until(lambda: ready(stack), 60, interval=0.3, what="ready again")
            resp = stack.post_hr(hr_event("inplace-2", kind="suspended", who="dan"))
            assert resp.status_code == 202, resp.text
            wait_until(lambda: dan_calls(vendor), 30, what="dan's suspension processed")
            time.sleep(1.5)
            assert len(alice_calls(vendor)) == ALICE_CALLS
            assert stack.proc is not None
            assert stack.proc.poll() is None  # the same process carried on
        finally:
            stack.stop()


def test_a_worker_write_waits_for_the_broker_instead_of_failing(
    tansu_bin: str, tmp_path: Path
) -> None:
    """The worker's writes (lifecycle state, ledger, audit, alerts) wait in place while the
    broker is gone and land once it is back: a write that failed instead would leave a
    decision applied in memory but not on its topic, and the retried event would be taken
    for a duplicate. Real producer, real (durable) broker, SIGKILLed and restarted."""
    import asyncio

    from streams.bus.broker import TopicSpec, ensure_topics
    from streams.bus.views import Publisher
    from streams.runtime.writes import publish_waiting
    from tests.test_integration_external import topic_records

    with LocalS3(tmp_path / "s3.log") as s3:
        broker = EmbeddedBroker(
            tansu_bin,
            port=free_port(),
            log_path=tmp_path / "tansu.log",
            storage=s3.storage,
            env=s3.broker_env(),
        ).start()
        try:
            ensure_topics(broker.bootstrap, [TopicSpec("t.lifecycle", 1, compacted=True)])

            async def scenario() -> float:
                publisher = Publisher(broker.bootstrap, probe_interval=0.5)
                await publisher.start()
                try:
                    await publish_waiting(publisher, "t.lifecycle", "identity:a", {"v": 1})
                    os.kill(broker.pid or 0, signal.SIGKILL)
                    await asyncio.sleep(1.0)
                    write = asyncio.create_task(
                        publish_waiting(publisher, "t.lifecycle", "identity:a", {"v": 2})
                    )
                    await asyncio.sleep(12.0)  # longer than one send's 10 s timeout
                    assert not write.done()  # waiting, not failed
                    restarted = time.monotonic()
                    # on this thread: the broker dies with the thread that started it
                    # (PR_SET_PDEATHSIG follows the thread), so not asyncio.to_thread
                    broker.restart()
                    await asyncio.wait_for(write, 60)
                    return time.monotonic() - restarted
                finally:
                    await publisher.stop()

            after = asyncio.run(scenario())
            values = [r.value for r in topic_records(broker.bootstrap, "t.lifecycle", 2)]
            assert values == [b'{"v":1}', b'{"v":2}']
            assert after < 30
        finally:
            broker.stop()
