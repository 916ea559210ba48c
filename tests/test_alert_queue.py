"""Detection alerts off the event path (streams/runtime/alerts.py ``enqueue``/``dispatch``): the
event path only queues; a stuck pager stalls nothing but the alert agent; a queued alert
survives a crash (journal replay) and is sent once."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from streams.bus.journal import replay_records
from streams.model.records import Alert
from tests.engine_harness import EngineHarness, build_engine


def page(n: int) -> Alert:
    return Alert(
        severity="critical",
        rule="test.page",
        identity="ana",
        dedup_key=f"test:page:{n}",
        title="Something needs a human",
    )


class StuckSink:
    """A pager that does not answer until released (a slow PagerDuty)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.sent: list[str] = []

    def send(self, alert: Alert) -> dict[str, Any]:
        self.release.wait(10)
        self.sent.append(alert.dedup_key)
        return {"status": 202}


def test_a_stuck_pager_does_not_stall_queueing(tmp_path: Path) -> None:
    """While the alert agent waits on a pager that does not answer, the event path still
    queues 50 alerts in well under a second; once the pager answers, each is sent once."""
    h = build_engine(tmp_path)
    stuck = StuckSink()
    h.engine.alerts.sinks = {"pagerduty": stuck}
    h.engine.alerts.routes = {"critical": ["pagerduty"]}

    async def scenario() -> float:
        await h.engine.alerts.enqueue(page(0))
        agent = asyncio.create_task(h.dispatch_alerts())  # blocks on the stuck pager
        await asyncio.sleep(0.05)
        start = time.perf_counter()
        for n in range(1, 51):
            await h.engine.alerts.enqueue(page(n))
        elapsed = time.perf_counter() - start
        assert not agent.done()
        stuck.release.set()
        await agent
        await h.dispatch_alerts()
        return elapsed

    try:
        elapsed = asyncio.run(asyncio.wait_for(scenario(), 20))
    finally:
        stuck.release.set()
        h.close()
    assert elapsed < 1.0
    assert sorted(stuck.sent) == sorted(f"test:page:{n}" for n in range(51))


def test_the_same_alert_is_queued_once_and_sent_once(tmp_path: Path) -> None:
    """A rule repeating an alert before it was sent queues it once; the agent dispatching a
    redelivered record sends nothing the ledger already has."""
    h = build_engine(tmp_path)

    async def scenario() -> None:
        await h.engine.alerts.enqueue(page(1))
        await h.engine.alerts.enqueue(page(1))
        await h.dispatch_alerts()
        (raw,) = h.publisher.on(h.topics.alert_queue)
        await h.engine.dispatch_alert(orjson.dumps(raw[1]))  # redelivered
        await h.engine.alerts.enqueue(page(1))  # sent already: the ledger says so

    try:
        asyncio.run(scenario())
        assert h.publisher.keys(h.topics.alert_queue) == ["test:page:1"]
        assert [a.dedup_key for a in h.alerts("pagerduty")] == ["test:page:1"]
    finally:
        h.close()


def test_a_queued_alert_survives_a_crash_before_it_was_sent(tmp_path: Path) -> None:
    """Queued, then the process dies before the agent ran: the journal replays it into the
    queue topic at the next start, and the new process sends it (once)."""
    first = build_engine(tmp_path / "a")

    async def queue() -> None:
        await first.engine.alerts.enqueue(page(7))

    asyncio.run(queue())
    first.close()
    replayed = replay_records(first.journal.path)["alerts.pending"]
    assert [k for k, _ in replayed] == ["test:page:7"]

    second: EngineHarness = build_engine(tmp_path / "b")

    async def restart() -> None:
        for _key, payload in replayed:
            await second.engine.dispatch_alert(payload)

    try:
        asyncio.run(restart())
        assert [a.dedup_key for a in second.alerts("pagerduty")] == ["test:page:7"]
    finally:
        second.close()


def test_a_malformed_queue_record_is_dead_lettered(tmp_path: Path) -> None:
    h = build_engine(tmp_path)

    async def scenario() -> None:
        await h.engine.dispatch_alert(b'{"severity": "critical"}')

    try:
        asyncio.run(scenario())
        (record,) = h.publisher.on(h.topics.hr_dlq)
        assert record[1]["topic"] == h.topics.alert_queue
        assert record[1]["reason"].startswith("invalid:")
    finally:
        h.close()
