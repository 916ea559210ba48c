"""Offboarding batches (streams/runtime/batches.py): offboardings running at once page once
for the batch, updated as they finish and closed at the end, instead of one summary each;
one-at-a-time offboardings keep their own summaries."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.runtime.batches import Batches
from tests.engine_harness import CLOCK, EngineHarness, build_engine, hr_event

BEN = {"employee_id": "E2", "email": "ben@brand.example"}


@pytest.fixture
def h(tmp_path: Path) -> Iterator[EngineHarness]:
    harness = build_engine(
        tmp_path,
        config={"alerts": {"batch_threshold": 2, "batch_window": 5.0}},
    )
    yield harness
    harness.close()


def rules(h: EngineHarness, sink: str) -> list[str]:
    return [f"{a.rule}:{a.event_action}" for a in h.alerts(sink)]


def test_offboardings_running_at_once_page_once_for_the_batch(h: EngineHarness) -> None:
    """Ana's and Ben's offboardings decided in one poll: one batch incident
    opens as the second starts, no per-person summary goes out (each is in the audit trail),
    and once the window passed with both finished the same incident is resolved with the
    counts: 2 offboarded, every action done."""

    async def scenario() -> None:
        await h.engine.handle_hr_batch([hr_event().dumps(), hr_event("evt-2", **BEN).dumps()])
        assert rules(h, "pagerduty") == ["offboarding.batch:trigger"]
        await asyncio.wait_for(h.engine.wait_plans(), 5.0)
        assert await h.engine.plans.tick_batches(CLOCK + 1.0) == 0  # window still open
        assert await h.engine.plans.tick_batches(CLOCK + 6.0) == 1

    asyncio.run(scenario())
    pages = [a for a in h.alerts("pagerduty") if a.rule == "offboarding.batch"]
    assert [p.event_action for p in pages] == ["trigger", "resolve"]
    assert len({p.dedup_key for p in pages}) == 1
    assert "0 of 2 offboarded" in pages[0].title
    final = pages[-1]
    assert "Offboarding batch done: 2 offboarded" in final.title
    assert final.details["finished"] == 2
    assert final.details["actions_failed"] == 0
    assert final.details["actions_done"] == 9
    assert "offboarding.completed:trigger" not in rules(h, "slack")
    summaries = h.journal_entries("offboarding.summary")
    assert sorted(e["alert"]["identity"] for e in summaries) == ["ana", "ben"]


def test_one_at_a_time_offboardings_keep_their_own_summaries(h: EngineHarness) -> None:
    """Ana's offboarding finishes before Ben's starts: never two running at once, so no
    batch forms and each sends its own summary."""

    async def scenario() -> None:
        await h.engine.handle_hr(hr_event())
        await asyncio.wait_for(h.engine.wait_plans(), 5.0)
        await h.engine.handle_hr(hr_event("evt-2", **BEN))
        await asyncio.wait_for(h.engine.wait_plans(), 5.0)
        await h.engine.plans.tick_batches(CLOCK + 60.0)

    asyncio.run(scenario())
    assert [a for a in h.alerts("pagerduty") if a.rule == "offboarding.batch"] == []
    completed = [a.identity for a in h.alerts("slack") if a.rule == "offboarding.completed"]
    assert sorted(completed) == ["ana", "ben"]


def test_a_batch_with_failures_stays_open_and_names_who() -> None:
    """Updates go out at most once per interval; a batch that finished with a failed
    action ends with a trigger (left open for a person), naming the identity."""
    batches = Batches(threshold=2, window=5.0, update_interval=10.0)
    assert batches.started("ana", "p1", 0.0) is None
    batch = batches.started("ben", "p2", 0.1)
    assert batch is not None
    batches.sent(batch, 0.1)
    assert batches.started("cy", "p3", 3.0) is batch  # joins within the window
    batches.finished("ana", "p1", done=5, failed=0, verified=3)
    assert not batches.due(batch, 4.0)  # changed, but updated 3.9 s ago
    assert batches.due(batch, 10.2)
    batches.finished("ben", "p2", done=3, failed=2, verified=1)
    batches.finished("cy", "p3", done=4, failed=0, verified=2)
    (due,) = batches.tick(8.1)  # closed: 5 s without a new one, all finished
    alert = due.alert()
    assert alert.event_action == "trigger"
    assert "1 offboarding(s) with FAILED actions" in alert.title
    assert alert.details["identities_with_failures"] == ["ben"]
    assert (alert.details["actions_done"], alert.details["actions_failed"]) == (12, 2)
    batches.sent(due, 8.1)
    assert batches.live == []
