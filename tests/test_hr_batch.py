"""HR events decided a poll at a time (Engine.handle_hr_batch): the same outcomes, order,
duplicates and conflicts as one at a time, with the batch's writes made together."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engine_harness import CLOCK, EngineHarness, build_engine, hr_event


@pytest.fixture
def h(tmp_path: Path) -> Iterator[EngineHarness]:
    harness = build_engine(tmp_path)
    yield harness
    harness.close()


def run_batch(h: EngineHarness, raws: list[bytes | None]) -> list[Any]:
    async def scenario() -> list[Any]:
        decisions = await h.engine.handle_hr_batch(raws)
        await asyncio.wait_for(h.engine.wait_plans(), 5.0)
        return decisions

    return asyncio.run(scenario())


def test_a_batch_decides_in_order_and_dedups_within_itself(h: EngineHarness) -> None:
    """One poll holding ana's termination, the same event again, a re-used id for another
    event, ben's termination and an invalid record: decided as one at a time would (applied,
    duplicate, conflict, applied, dead-lettered), every action once, one decision record per
    applied event, the audit record of each before the state that makes it applied."""
    raws: list[bytes | None] = [
        hr_event().dumps(),
        hr_event(accepted_at=CLOCK + 5).dumps(),
        hr_event(etype="suspended").dumps(),
        hr_event("evt-2", employee_id="E2", email="ben@brand.example").dumps(),
        b'{"event_id": "x"}',
    ]
    decisions = run_batch(h, raws)
    assert [d.outcome if d else None for d in decisions] == [
        "applied",
        "duplicate",
        "conflict",
        "applied",
        None,
    ]
    keys = sorted(a.idempotency_key for d in decisions if d for a in d.actions)
    assert sorted(h.calls()) == keys  # each action once
    assert len(keys) == len(set(keys)) > 0
    journal = h.journal_entries()
    decided = [e["event_id"] for e in journal if e["kind"] == "decision"]
    assert decided == ["evt-1", "evt-2"]
    first_state = next(i for i, e in enumerate(journal) if e["kind"] == "state")
    last_decision = max(i for i, e in enumerate(journal) if e["kind"] == "decision")
    assert last_decision < first_state
    reasons = sorted(r["reason"].split(":", 1)[0] for _, r in h.publisher.on(h.topics.hr_dlq))
    assert reasons == ["conflict", "invalid"]
    assert {s.identity for s in h.views.state.identities() if s.status == "offboarded"} == {
        "ana",
        "ben",
    }


def test_two_events_of_one_identity_in_a_batch_apply_in_order(h: EngineHarness) -> None:
    """A suspension and then a termination of ana in one poll: the termination is decided
    against the suspended state (as it would be one at a time), and the lifecycle topic gets
    the last value of ana's state once, not a stale one last."""
    decisions = run_batch(
        h,
        [
            hr_event("evt-s", etype="suspended").dumps(),
            hr_event("evt-t").dumps(),
        ],
    )
    assert [d.outcome for d in decisions if d] == ["applied", "applied"]
    assert h.views.state.identity("ana").status == "offboarded"
    lifecycle = [v for k, v in h.publisher.on(h.topics.lifecycle) if "ana" in k]
    assert lifecycle
    assert lifecycle[-1]["status"] == "offboarded"
