"""The engine's plan, ledger, alert-dedup, timer and write-wait paths, fast and in memory.

A real :class:`streams.runtime.engine.Engine` (real config, registry, state store, journal file,
executor) over in-memory stand-ins for the broker producer, the views, the providers and
the sinks (tests/engine_harness.py). The end-to-end tests check the same paths on the real
broker; these fail in a second when the ledger skip or the page dedup is broken.

Failure pages (``offboarding.revocation_failed``) are only counted here, never matched by
key or title: how they are grouped is the engine's to decide.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from streams.bus.topics import partition_for
from streams.decide.hr import decide_hr
from streams.decide.login import LoginPipeline
from streams.detect.load import load_rules
from streams.detect.model import Detection
from streams.model.records import Action, Alert, HrEvent, LoginEvent, idempotency_key
from streams.runtime import writes as writes_module
from streams.runtime.engine import EXPIRE_EVERY
from streams.support.errors import PermanentError, RetryableError
from tests.engine_harness import CLOCK, EngineHarness, build_engine, counter, hr_event

REPO = Path(__file__).resolve().parent.parent

T = TypeVar("T")

#: The engine's clock as a datetime; ana's termination (hr_event()) took effect an hour before.
NOW = datetime.fromtimestamp(CLOCK, UTC)
ACTIONS_TOTAL = "accessguard_actions_total"


@pytest.fixture
def h(tmp_path: Path) -> Iterator[EngineHarness]:
    harness = build_engine(tmp_path)
    yield harness
    harness.close()


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., EngineHarness]]:
    """Build an engine with extra configuration (merged into the harness's)."""
    built: list[EngineHarness] = []

    def _make(**config: Any) -> EngineHarness:
        harness = build_engine(tmp_path / f"engine-{len(built)}", config=config)
        built.append(harness)
        return harness

    yield _make
    for harness in built:
        harness.close()


@pytest.fixture
def fast_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Millisecond backoff while the broker or the journal refuses writes (0.2 s+ in prod)."""
    monkeypatch.setattr(writes_module, "BROKER_RETRY_MIN", 0.001)
    monkeypatch.setattr(writes_module, "BROKER_RETRY_MAX", 0.005)
    monkeypatch.setattr(writes_module, "JOURNAL_RETRY_MIN", 0.001)
    monkeypatch.setattr(writes_module, "JOURNAL_RETRY_MAX", 0.005)


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    """One event loop per test (the engine's locks and plan tasks belong to it)."""

    async def main() -> T:
        return await asyncio.wait_for(scenario(), 10.0)

    return asyncio.run(main())


async def settle(h: EngineHarness) -> None:
    """Wait until every running plan has finished."""
    await asyncio.wait_for(h.engine.wait_plans(), 5.0)


async def until(condition: Callable[[], bool], what: str, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


def keys_of(actions: tuple[Action, ...] | list[Action]) -> list[str]:
    return sorted(a.idempotency_key for a in actions)


def alert_key(dedup_key: str, event_action: str = "trigger") -> str:
    return "alert:" + idempotency_key(dedup_key, event_action)


def page(dedup_key: str = "test:page:1", **fields: Any) -> Alert:
    values: dict[str, Any] = {
        "severity": "critical",
        "rule": "test.page",
        "identity": "ana",
        "dedup_key": dedup_key,
        "title": "Something needs a human",
        **fields,
    }
    return Alert(**values)


def seed_plan(h: EngineHarness, event: HrEvent) -> tuple[Action, ...]:
    """Decide ``event`` and store its state as a crashed worker left it: the plan is in the
    lifecycle state, nothing has run yet. Returns the plan's actions."""
    decision = decide_hr(
        h.views.registry,
        h.views.state,
        event,
        NOW,
        h.config.provider_types(),
        policy=h.engine.policy,
    )
    assert decision.plan_id == event.event_id
    for value in decision.state_updates:
        h.views.state.put(value)
    return decision.actions


def skipped(action: Action) -> float:
    return counter(
        ACTIONS_TOTAL, provider=action.provider, action=action.action, outcome="skipped_done"
    )


# ------------------------------------------------------------------------------ HR plans


class TestHrPlan:
    def test_termination_persists_the_plan_before_running_it(self, h: EngineHarness) -> None:
        """When handle_hr returns, the decision is applied: the plan (every action) is in the
        lifecycle state and on the lifecycle topic, the decision in the audit trail, and no
        provider has been called yet (the plan runs as its own task)."""

        async def scenario() -> None:
            decision = await h.engine.handle_hr(hr_event())
            assert decision.outcome == "applied"
            assert decision.plan_id == "evt-1"
            assert len(decision.actions) == 5
            plan = h.views.state.identity("ana").plans["evt-1"]
            assert [a.idempotency_key for a in plan.actions] == [
                a.idempotency_key for a in decision.actions
            ]
            (published,) = [v for k, v in h.publisher.on(h.topics.lifecycle) if k == "identity:ana"]
            assert list(published["plans"]) == ["evt-1"]
            assert published["status"] == "offboarded"
            assert [e["event_id"] for e in h.journal_entries("decision")] == ["evt-1"]
            assert h.calls() == []
            await settle(h)

        run(scenario)

    def test_the_decision_is_recorded_before_the_state_that_applies_it(
        self, h: EngineHarness
    ) -> None:
        """A stop between the two writes must not leave an applied event with no decision in
        the audit trail (the replayed event would then be a duplicate and never recorded):
        the ``decision`` journal entry comes before the ``state`` entries it causes."""

        async def scenario() -> None:
            await h.engine.handle_hr(hr_event())
            kinds = [e["kind"] for e in h.journal_entries() if e["kind"] in ("decision", "state")]
            assert kinds[0] == "decision"
            assert "state" in kinds
            await settle(h)

        run(scenario)

    def test_every_action_runs_once_and_its_outcome_is_recorded(self, h: EngineHarness) -> None:
        """Each action of the plan is performed once, and its outcome is recorded under its
        idempotency key three times over: in the ledger view, as a durable ``ledger`` journal
        entry, and on the ledger topic; each also gets an ``action`` audit entry."""

        async def scenario() -> tuple[Action, ...]:
            decision = await h.engine.handle_hr(hr_event())
            await settle(h)
            return decision.actions

        actions = run(scenario)
        keys = keys_of(actions)
        assert sorted(h.calls()) == keys
        for action in actions:
            record = h.views.ledger[action.idempotency_key]
            assert record["status"] == "done"
            assert record["attempts"] == 1
            assert (record["action"], record["provider"]) == (action.action, action.provider)
            assert record["identity"] == "ana"
            assert record["cause"] == "hr:terminated:evt-1"
        journal = [e for e in h.journal_entries("ledger") if e["key"] in keys]
        assert sorted(e["key"] for e in journal) == keys
        assert all(e["value"]["status"] == "done" for e in journal)
        assert {d for kind, d in h.journal.appended if kind == "ledger"} == {True}
        on_topic = Counter(h.publisher.keys(h.topics.ledger))
        assert all(on_topic[k] == 1 for k in keys)
        audited = Counter(h.publisher.keys(h.topics.audit))
        assert all(audited[k] == 1 for k in keys)
        assert sorted(e["idempotency_key"] for e in h.journal_entries("action")) == keys

    def test_summary_is_sent_after_the_plan_and_the_plan_is_then_forgotten(
        self, h: EngineHarness
    ) -> None:
        """The plan's alerts go out once every action has an outcome: the summary counts
        what was done and how long revocation took; then the plan leaves the lifecycle
        state (and the topic's latest value), and the identity stays offboarded."""

        async def scenario() -> tuple[Action, ...]:
            decision = await h.engine.handle_hr(hr_event(accepted_at=time.time()))
            await settle(h)
            return decision.actions

        actions = run(scenario)
        keys = set(keys_of(actions))
        (summary,) = [a for a in h.alerts("slack") if a.rule == "offboarding.completed"]
        assert summary.dedup_key == "offboarding:evt-1"
        assert summary.details["actions_done"] == 5
        assert summary.details["actions_failed"] == 0
        assert 0 <= summary.details["seconds_to_revoke"] < 10
        order = [(t, k) for t, k, _ in h.publisher.records]
        last_action = max(i for i, (t, k) in enumerate(order) if k in keys)
        sent_at = order.index((h.topics.alerts, "offboarding:evt-1"))
        assert sent_at > last_action
        assert h.views.ledger[alert_key("offboarding:evt-1")]["status"] == "sent"
        st = h.views.state.identity("ana")
        assert st.plans == {}
        assert st.status == "offboarded"
        latest = [v for k, v in h.publisher.on(h.topics.lifecycle) if k == "identity:ana"][-1]
        assert latest["plans"] == {}
        assert h.engine.plans_completed == 1
        assert h.alerts("pagerduty") == []  # info and low alerts do not page


# ------------------------------------------------------------------------------ ledger skip


class TestLedgerSkip:
    def test_resumed_plan_runs_only_the_actions_missing_from_the_ledger(
        self, h: EngineHarness
    ) -> None:
        """After a crash mid-plan (plan still in the state, two actions already in the
        ledger), resume_plans runs the plan again: the recorded actions are skipped (no
        provider call, no new ledger write, metric outcome skipped_done), the others run."""
        actions = seed_plan(h, hr_event())
        done, missing = actions[:2], actions[2:]
        for action in done:
            h.views.ledger[action.idempotency_key] = {
                "status": "done",
                "attempts": 1,
                "result": {"status": 204},
                "error": None,
                "finished_at": CLOCK - 5.0,
            }
        before = [skipped(a) for a in done]

        async def scenario() -> int:
            started = h.engine.resume_plans()
            await settle(h)
            return started

        assert run(scenario) == 1
        assert sorted(h.calls()) == keys_of(missing)
        assert [skipped(a) - b for a, b in zip(done, before, strict=True)] == [1.0, 1.0]
        for action in done:
            assert h.views.ledger[action.idempotency_key]["finished_at"] == CLOCK - 5.0
            assert action.idempotency_key not in h.publisher.keys(h.topics.ledger)
        for action in missing:
            assert h.views.ledger[action.idempotency_key]["status"] == "done"
        (summary,) = [a for a in h.alerts("slack") if a.rule == "offboarding.completed"]
        assert summary.details["actions_done"] == 5
        assert h.views.state.identity("ana").plans == {}

    def test_a_failure_recorded_in_the_ledger_is_reported_not_retried(
        self, h: EngineHarness
    ) -> None:
        """A ledger entry is the action's final outcome, failed ones too: the resumed plan
        neither calls the provider again nor pages again, and its summary counts the
        recorded failure."""
        actions = seed_plan(h, hr_event())
        failed = actions[0]
        h.views.ledger[failed.idempotency_key] = {
            "status": "failed",
            "attempts": 1,
            "result": {},
            "error": "hootsuite: 404 member not found",
            "finished_at": CLOCK - 5.0,
        }

        async def scenario() -> None:
            h.engine.resume_plans()
            await settle(h)

        run(scenario)
        assert failed.idempotency_key not in h.calls()
        assert sorted(h.calls()) == keys_of(actions[1:])
        assert h.views.ledger[failed.idempotency_key]["status"] == "failed"
        (summary,) = [a for a in h.alerts("slack") if a.rule == "offboarding.completed"]
        assert (summary.details["actions_done"], summary.details["actions_failed"]) == (4, 1)
        assert h.alerts("pagerduty") == []

    def test_redelivered_event_after_state_loss_calls_no_provider_again(
        self, h: EngineHarness
    ) -> None:
        """When the event is decided again (its id dropped from applied_events, as after a
        lost lifecycle write), the new plan's actions carry the same idempotency keys: every
        one is skipped from the ledger and the summary is not sent a second time."""

        async def scenario() -> tuple[tuple[Action, ...], tuple[Action, ...]]:
            first = await h.engine.handle_hr(hr_event())
            await settle(h)
            st = h.views.state.identity("ana")
            h.views.state.put(replace(st, applied_events=()))
            second = await h.engine.handle_hr(hr_event())
            assert second.outcome == "applied"
            await settle(h)
            return first.actions, second.actions

        first, second = run(scenario)
        assert second  # sessions are revoked again: same cause, same keys
        assert set(keys_of(second)) <= set(keys_of(first))
        assert sorted(h.calls()) == keys_of(first)  # each provider call made once in all
        assert [a.rule for a in h.alerts("slack")].count("offboarding.completed") == 1
        assert h.publisher.keys(h.topics.alerts).count("offboarding:evt-1") == 1
        assert h.views.state.identity("ana").plans == {}
        assert h.engine.plans_completed == 2


# ------------------------------------------------------------------------------ alert dedup


class TestAlertDedup:
    def test_same_alert_twice_reaches_each_sink_once(self, h: EngineHarness) -> None:
        """send_alert with a dedup key and action already sent does nothing: each routed
        sink (critical: pagerduty and slack) gets the alert once, the alerts topic and the
        audit trail have it once, and the ledger holds ``alert:<key>`` with each sink's
        result."""

        async def scenario() -> None:
            await h.engine.send_alert(page())
            await h.engine.send_alert(page())

        run(scenario)
        assert len(h.alerts("pagerduty")) == 1
        assert len(h.alerts("slack")) == 1
        assert h.publisher.keys(h.topics.alerts) == ["test:page:1"]
        assert len(h.journal_entries("alert")) == 1
        record = h.views.ledger[alert_key("test:page:1")]
        assert record["status"] == "sent"
        assert record["sinks"] == {"pagerduty": "done", "slack": "done"}
        assert record["finished_at"] == CLOCK
        assert h.publisher.keys(h.topics.ledger) == [alert_key("test:page:1")]

    def test_dedup_is_by_key_and_action_not_by_content(self, h: EngineHarness) -> None:
        """A second trigger with the same dedup key but another title or severity is the
        same page: not sent again."""

        async def scenario() -> None:
            await h.engine.send_alert(page())
            await h.engine.send_alert(page(title="Same thing, new words", severity="high"))

        run(scenario)
        assert [a.title for a in h.alerts("pagerduty")] == ["Something needs a human"]

    def test_resolve_after_trigger_is_sent_once(self, h: EngineHarness) -> None:
        """A resolve is its own event for the same dedup key: sent after the trigger, and
        itself deduplicated."""

        async def scenario() -> None:
            await h.engine.send_alert(page())
            await h.engine.send_alert(page(event_action="resolve"))
            await h.engine.send_alert(page(event_action="resolve"))
            await h.engine.send_alert(page())

        run(scenario)
        for sink in ("pagerduty", "slack"):
            assert [a.event_action for a in h.alerts(sink)] == ["trigger", "resolve"]
        assert alert_key("test:page:1", "resolve") in h.views.ledger

    def test_alert_already_in_the_ledger_is_not_sent(self, h: EngineHarness) -> None:
        """An alert another worker sent (its ledger entry materialised from the topic) is not
        sent, published or audited again."""
        h.views.ledger[alert_key("test:page:1")] = {"status": "sent", "sinks": {}}

        async def scenario() -> None:
            await h.engine.send_alert(page())

        run(scenario)
        assert h.alerts("pagerduty") == []
        assert h.alerts("slack") == []
        assert h.publisher.records == []
        assert h.journal_entries() == []

    def test_a_failing_sink_does_not_stop_the_others(self, h: EngineHarness) -> None:
        """A sink that fails permanently is recorded as failed in the ledger entry; the
        other sinks of the route still get the alert."""
        h.sinks["pagerduty"].fail_next(1, PermanentError("pagerduty", "400 invalid routing key"))

        async def scenario() -> None:
            await h.engine.send_alert(page())

        run(scenario)
        assert len(h.alerts("slack")) == 1
        sinks = h.views.ledger[alert_key("test:page:1")]["sinks"]
        assert sinks["slack"] == "done"
        assert sinks["pagerduty"].startswith("failed: ")
        assert "400 invalid routing key" in sinks["pagerduty"]

    def test_runbook_path_becomes_a_link(self, make: Callable[..., EngineHarness]) -> None:
        """With alerts.runbook_base_url set, a relative runbook path is sent as a link under
        it; an absolute URL is left alone."""
        h = make(alerts={"runbook_base_url": "https://git.example/ag/blob/main/"})

        async def scenario() -> None:
            await h.engine.send_alert(page("a", runbook="docs/runbooks/x.md"))
            await h.engine.send_alert(page("b", runbook="https://wiki.example/y"))

        run(scenario)
        assert [a.runbook for a in h.alerts("pagerduty")] == [
            "https://git.example/ag/blob/main/docs/runbooks/x.md",
            "https://wiki.example/y",
        ]

    def test_redelivered_detection_pages_once_and_acts_once(self, h: EngineHarness) -> None:
        """A login detection handled twice (the consumer redelivers after a restart) pages
        once and performs its action once: the page by its ledger key, the action by its
        idempotency key. A detection the rule engine deduplicated does nothing."""
        login = LoginEvent(
            event_id="login-1",
            vendor="okta",
            time=NOW - timedelta(minutes=1),
            principal="ana@brand.example",
            outcome="success",
            event_type="user.session.start",
            identity="ana",
        )
        action = Action.make(
            "revoke_sessions",
            identity="ana",
            account=None,
            provider="okta",
            cause="rule:test.takeover:login-1",
            params={"user_ref": "00u-ana"},
        )
        detection = Detection(
            rule="test.takeover",
            severity="critical",
            group_key="ana",
            title="Possible takeover of ana",
            why="test",
            event_id="login-1",
            identity="ana",
            actions=(action,),
            alerts=(page("takeover:ana", rule="test.takeover"),),
        )

        async def scenario() -> None:
            await h.engine.handle_detection(login, detection)
            await settle(h)
            # the event path queued the alert and sent nothing itself
            assert h.alerts("pagerduty") == []
            assert await h.dispatch_alerts() == 1
            await h.engine.handle_detection(login, detection)
            await settle(h)
            await h.engine.handle_detection(
                login, replace(detection, event_id="login-2", alerts=(), deduplicated=True)
            )
            await settle(h)
            await h.dispatch_alerts()

        run(scenario)
        assert [a.dedup_key for a in h.alerts("pagerduty")] == ["takeover:ana"]
        assert [a.dedup_key for a in h.alerts("slack")] == ["takeover:ana"]
        assert h.calls() == [action.idempotency_key]
        assert h.views.ledger[action.idempotency_key]["status"] == "done"
        assert h.views.state.identity("ana").plans == {}


# ------------------------------------------------------------------------------ duplicates


class TestDuplicateEvent:
    def test_same_event_id_twice_is_decided_once(self, h: EngineHarness) -> None:
        """The same HR event delivered twice (here while its plan still runs) is decided
        once: the second is a ``duplicate`` with no actions, no state write, no audit
        entry, no plan and no alert."""

        async def scenario() -> tuple[Any, Any, int]:
            first = await h.engine.handle_hr(hr_event())
            writes = len(h.publisher.records)
            second = await h.engine.handle_hr(hr_event())
            assert len(h.publisher.records) == writes
            await settle(h)
            return first, second, writes

        first, second, _ = run(scenario)
        assert first.outcome == "applied"
        assert second.outcome == "duplicate"
        assert (second.actions, second.alerts, second.state_updates) == ((), (), ())
        assert sorted(h.calls()) == keys_of(first.actions)
        assert len(h.journal_entries("decision")) == 1
        assert [a.rule for a in h.alerts("slack")] == [
            "offboarding.completed",
            "shared_credential.reenrolment",
        ]
        assert h.engine.plans_completed == 1

    def test_same_event_id_for_another_event_is_dead_lettered(self, h: EngineHarness) -> None:
        """An event_id re-used for a different event (another type here) is a ``conflict``:
        dead-lettered on hr.events.dlq with the reason, never applied and never taken for a
        duplicate. The same event again with only another accepted_at is a duplicate."""

        async def scenario() -> tuple[str, str]:
            await h.engine.handle_hr(hr_event())
            await settle(h)
            calls, state = h.calls(), h.views.state.identity("ana")
            again = await h.engine.handle_hr(hr_event(accepted_at=CLOCK + 60.0))
            other = await h.engine.handle_hr(hr_event(etype="suspended"))
            await settle(h)
            assert h.calls() == calls
            assert h.views.state.identity("ana") == state
            return again.outcome, other.outcome

        assert run(scenario) == ("duplicate", "conflict")
        ((_, record),) = h.publisher.on(h.topics.hr_dlq)
        assert record["topic"] == h.topics.hr_events
        assert record["reason"].startswith("conflict")
        assert '"suspended"' in record["value"]
        assert len(h.journal_entries("decision")) == 1
        assert len(h.journal_entries("dead_letter")) == 1

    def test_unknown_identity_alerts_at_once_without_a_plan(self, h: EngineHarness) -> None:
        """An event for nobody in the registry starts no plan: its alert is sent at once
        (and once, when the event comes again)."""

        async def scenario() -> str:
            event = hr_event("evt-x", employee_id="E404", email="nobody@brand.example")
            decision = await h.engine.handle_hr(event)
            await h.engine.handle_hr(event)
            return decision.outcome

        assert run(scenario) == "unknown_identity"
        assert [a.rule for a in h.alerts("pagerduty")] == ["hr.unknown_identity"]
        assert h.calls() == []


# ------------------------------------------------------------------------------ timers


class TestSchedule:
    def test_future_event_is_scheduled_not_run(self, h: EngineHarness) -> None:
        """An event effective in the future is stored in the identity's ``scheduled`` map
        (and published), with no plan, no provider call and no alert."""

        async def scenario() -> str:
            event = hr_event(effective_at=NOW + timedelta(days=1))
            decision = await h.engine.handle_hr(event, NOW)
            await settle(h)
            return decision.outcome

        assert run(scenario) == "scheduled"
        st = h.views.state.identity("ana")
        assert list(st.scheduled) == ["evt-1"]
        assert st.plans == {}
        assert st.status == "active"
        assert h.calls() == []
        assert h.alerts("slack") == []
        (published,) = [v for k, v in h.publisher.on(h.topics.lifecycle) if k == "identity:ana"]
        assert list(published["scheduled"]) == ["evt-1"]

    def test_tick_runs_a_due_event_once(self, h: EngineHarness) -> None:
        """tick_schedule before the effective time fires nothing; after it, the event is
        decided and its plan run once; a later tick finds nothing left to fire."""
        effective = NOW + timedelta(days=1)

        async def scenario() -> list[int]:
            await h.engine.handle_hr(hr_event(effective_at=effective), NOW)
            fired = [await h.engine.tick_schedule(effective - timedelta(seconds=1))]
            fired.append(await h.engine.tick_schedule(effective + timedelta(seconds=1)))
            await settle(h)
            fired.append(await h.engine.tick_schedule(effective + timedelta(minutes=1)))
            await settle(h)
            return fired

        assert run(scenario) == [0, 1, 0]
        assert len(h.calls()) == 5
        assert len(set(h.calls())) == 5
        st = h.views.state.identity("ana")
        assert st.scheduled == {}
        assert st.status == "offboarded"
        assert "evt-1" in st.applied_events
        assert [a.rule for a in h.alerts("slack")].count("offboarding.completed") == 1

    def test_tick_leaves_events_of_partitions_it_does_not_own(self, h: EngineHarness) -> None:
        """A worker only fires scheduled events of the hr.events partitions it owns."""
        effective = NOW + timedelta(days=1)
        theirs = partition_for("E1", h.engine.partitions)

        async def scenario() -> int:
            await h.engine.handle_hr(hr_event(effective_at=effective), NOW)
            h.engine.owned = {p for p in range(h.engine.partitions) if p != theirs}
            return await h.engine.tick_schedule(effective + timedelta(seconds=1))

        assert run(scenario) == 0
        assert list(h.views.state.identity("ana").scheduled) == ["evt-1"]
        assert h.calls() == []


# ------------------------------------------------------------------------------ plan resumption


class TestPlanResumption:
    def test_assignment_resumes_only_plans_of_owned_partitions(self, h: EngineHarness) -> None:
        """set_assignment starts the unfinished plans whose partition key falls in the
        assigned partitions, and leaves the others in the state for their owner."""
        parts = h.engine.partitions
        ana_part, ben_part = partition_for("E1", parts), partition_for("E2", parts)
        assert ana_part != ben_part  # the registry's employee ids are chosen for this
        ana = seed_plan(h, hr_event())
        ben = seed_plan(h, hr_event("evt-2", employee_id="E2", email="ben@brand.example"))

        async def scenario() -> None:
            h.engine.set_assignment([ana_part])
            await settle(h)
            assert sorted(h.calls()) == keys_of(ana)
            assert list(h.views.state.identity("ben").plans) == ["evt-2"]
            h.engine.set_assignment([ben_part])
            await settle(h)

        run(scenario)
        assert sorted(h.calls()) == sorted(keys_of(ana) + keys_of(ben))
        assert h.views.state.identity("ana").plans == {}
        assert h.views.state.identity("ben").plans == {}
        assert h.engine.plans_completed == 2

    def test_resuming_a_running_plan_does_not_start_it_twice(self, h: EngineHarness) -> None:
        """resume_plans while a plan is still running (a second rebalance) leaves the
        running task alone: every action is still performed once."""
        actions = seed_plan(h, hr_event())
        okta = h.providers["okta"]
        okta.hold()

        async def scenario() -> None:
            h.engine.resume_plans()
            await until(okta.started.is_set, "the okta call to start")
            h.engine.resume_plans()
            h.engine.set_assignment(range(h.engine.partitions))
            okta.release()
            await settle(h)

        run(scenario)
        assert sorted(h.calls()) == keys_of(actions)
        assert h.engine.plans_completed == 1

    def test_cancelled_plan_stays_in_the_state_and_resumes(self, h: EngineHarness) -> None:
        """cancel_plans (shutdown, partitions revoked) stops a running plan without
        recording it done: the plan stays in the state, and when resumed only the action
        without a ledger entry runs again."""
        actions = seed_plan(h, hr_event())
        (stuck,) = [a for a in actions if a.provider == "okta"]
        okta = h.providers["okta"]
        okta.hold()

        async def scenario() -> None:
            h.engine.resume_plans()
            await until(lambda: len(h.views.ledger) == 4, "the other four actions")
            await until(okta.started.is_set, "the okta call to start")
            await h.engine.cancel_plans()
            await h.engine.wait_plans()
            assert list(h.views.state.identity("ana").plans) == ["evt-1"]
            assert stuck.idempotency_key not in h.views.ledger
            assert h.engine.plans_completed == 0
            okta.release()
            assert h.engine.resume_plans() == 1
            await settle(h)

        run(scenario)
        calls = Counter(h.calls())
        assert calls.pop(stuck.idempotency_key) == 2  # the cancelled call, then the resumed one
        assert sorted(calls) == keys_of([a for a in actions if a is not stuck])
        assert set(calls.values()) == {1}
        assert h.views.ledger[stuck.idempotency_key]["status"] == "done"
        assert h.views.state.identity("ana").plans == {}


# ------------------------------------------------------------------------------ provider errors


class TestProviderErrors:
    def test_retryable_failure_is_retried_until_done(self, h: EngineHarness) -> None:
        """Two 503s then success (retry.max_attempts 3, millisecond backoff): the action is
        done after three attempts, recorded once with attempts 3, and nobody is paged."""
        okta = h.providers["okta"]
        okta.fail_next(2, RetryableError("okta", "503 service unavailable", status=503))
        (action,) = [a for a in seed_plan(h, hr_event()) if a.provider == "okta"]
        retries = counter(ACTIONS_TOTAL, provider="okta", action=action.action, outcome="retry")

        async def scenario() -> None:
            h.engine.resume_plans()
            await settle(h)

        run(scenario)
        assert okta.call_keys() == [action.idempotency_key] * 3
        record = h.views.ledger[action.idempotency_key]
        assert (record["status"], record["attempts"], record["error"]) == ("done", 3, None)
        assert h.publisher.keys(h.topics.ledger).count(action.idempotency_key) == 1
        after = counter(ACTIONS_TOTAL, provider="okta", action=action.action, outcome="retry")
        assert after - retries == 2
        assert h.alerts("pagerduty") == []

    def test_permanent_failure_ends_the_action_failed_without_retry(self, h: EngineHarness) -> None:
        """A PermanentError is not retried: the action is recorded failed (attempts 1, the
        error kept), the rest of the plan completes, the summary counts the failure, a
        critical page goes out, and the plan is finished (not left to run again)."""
        hootsuite = h.providers["hootsuite"]
        hootsuite.fail_always(
            "remove_grant", PermanentError("hootsuite", "404 member not found", status=404)
        )
        actions = seed_plan(h, hr_event())
        removes = [a for a in actions if a.action == "remove_grant"]

        async def scenario() -> None:
            h.engine.resume_plans()
            await settle(h)

        run(scenario)
        assert sorted(h.calls()) == keys_of(actions)  # each once: no retry
        for action in removes:
            record = h.views.ledger[action.idempotency_key]
            assert (record["status"], record["attempts"]) == ("failed", 1)
            assert "404 member not found" in record["error"]
        others = [a for a in actions if a.action != "remove_grant"]
        assert {h.views.ledger[a.idempotency_key]["status"] for a in others} == {"done"}
        (summary,) = [a for a in h.alerts("slack") if a.rule == "offboarding.completed"]
        assert (summary.details["actions_done"], summary.details["actions_failed"]) == (3, 2)
        assert h.alerts("pagerduty")
        assert {a.severity for a in h.alerts("pagerduty")} == {"critical"}
        assert h.views.state.identity("ana").plans == {}


# ------------------------------------------------------------------------------ write waits


@pytest.mark.usefixtures("fast_waits")
class TestBrokerWaits:
    def test_put_ledger_waits_while_the_broker_does_not_acknowledge(self, h: EngineHarness) -> None:
        """put_ledger applies the value locally and journals it, then waits in place while
        the broker refuses the write, and publishes it exactly once when the broker is
        back: the write is delayed, never lost or doubled."""
        value = {"status": "done", "attempts": 1}
        h.publisher.down = True

        async def scenario() -> None:
            write = asyncio.create_task(h.engine.put_ledger("k1", value))
            await until(lambda: h.publisher.failures >= 3, "three refused sends")
            assert not write.done()
            assert h.views.ledger["k1"] == value
            assert [e["key"] for e in h.journal_entries("ledger")] == ["k1"]
            assert h.publisher.on(h.topics.ledger) == []
            h.publisher.down = False
            await asyncio.wait_for(write, 2.0)

        run(scenario)
        assert h.publisher.on(h.topics.ledger) == [("k1", value)]
        assert len(h.journal_entries("ledger")) == 1

    def test_plan_completes_when_the_broker_refuses_some_writes(self, h: EngineHarness) -> None:
        """With the broker refusing seven writes along the way, an HR event still ends as
        it does with a healthy broker: every action performed once and every outcome on the
        ledger topic once."""
        h.publisher.fail_next(7)

        async def scenario() -> tuple[Action, ...]:
            decision = await h.engine.handle_hr(hr_event())
            await settle(h)
            return decision.actions

        actions = run(scenario)
        assert h.publisher.failures == 7
        assert sorted(h.calls()) == keys_of(actions)
        on_topic = Counter(h.publisher.keys(h.topics.ledger))
        assert [on_topic[k] for k in keys_of(actions)] == [1] * 5
        assert h.views.state.identity("ana").plans == {}
        assert h.publisher.keys(h.topics.alerts).count("offboarding:evt-1") == 1


@pytest.mark.usefixtures("fast_waits")
class TestJournalWaits:
    def test_record_waits_while_the_journal_is_full_and_writes_once(self, h: EngineHarness) -> None:
        """Engine.record retries in place while the journal cannot be written (disk full)
        and returns the entry once a write succeeds; the entry is in the file once."""
        h.journal.full = True

        async def scenario() -> dict[str, Any]:
            write = asyncio.create_task(
                h.engine.record("ledger", durable=True, key="k1", value={"status": "done"})
            )
            await until(lambda: h.journal.refused >= 3, "three refused appends")
            assert not write.done()
            h.journal.full = False
            return await asyncio.wait_for(write, 2.0)

        entry = run(scenario)
        assert (entry["kind"], entry["key"]) == ("ledger", "k1")
        assert [e["key"] for e in h.journal_entries("ledger")] == ["k1"]
        assert h.journal.appended == [("ledger", True)]

    def test_waiting_records_land_in_the_order_they_were_made(self, h: EngineHarness) -> None:
        """Two values of one key written while the journal is full are appended in the
        order they were decided once it has room: the newer one last."""
        h.journal.full = True

        async def scenario() -> None:
            first = asyncio.create_task(h.engine.record("state", key="identity:a", value=1))
            second = asyncio.create_task(h.engine.record("state", key="identity:a", value=2))
            await until(lambda: h.journal.refused >= 3, "three refused appends")
            h.journal.full = False
            await asyncio.wait_for(asyncio.gather(first, second), 2.0)

        run(scenario)
        assert [e["value"] for e in h.journal_entries("state")] == [1, 2]

    def test_provider_calls_made_while_the_journal_is_full_are_not_made_again(
        self, h: EngineHarness
    ) -> None:
        """When the journal fills up while a plan runs, the provider calls already made are
        recorded once it has room again, not made again."""
        actions = seed_plan(h, hr_event())

        async def scenario() -> None:
            h.journal.full = True
            h.engine.resume_plans()
            await until(lambda: len(h.calls()) == 5, "every provider call")
            await until(lambda: h.journal.refused >= 3, "refused appends")
            assert h.engine.plans_completed == 0
            h.journal.full = False
            await settle(h)

        run(scenario)
        assert sorted(h.calls()) == keys_of(actions)
        recorded = [e["key"] for e in h.journal_entries("ledger")]
        assert all(recorded.count(k) == 1 for k in keys_of(actions))
        assert h.engine.plans_completed == 1


def test_rule_state_expiry_runs_at_most_every_ten_seconds(tmp_path: Path) -> None:
    """tick_rules runs once a second; the expiry pass over every slot (11 ms for the login
    bench's 4,000 keys) runs on the first tick, then only once EXPIRE_EVERY has passed."""
    clock = [CLOCK]
    h = build_engine(tmp_path, clock=lambda: clock[0])
    try:
        h.engine.login = LoginPipeline(load_rules(REPO / "rules"), {})
        state = h.engine.login.state
        now = datetime.fromtimestamp(CLOCK, UTC)
        horizon = h.engine.login.engine.horizons["brute_force_identity"]
        stale = CLOCK - horizon - 1

        def stale_slot(key: str) -> None:
            state.slot(key, "brute_force_identity")["last"] = stale

        stale_slot("alice")
        asyncio.run(h.engine.tick_rules(now))
        assert state.keys() == []  # the first tick expires
        stale_slot("bob")
        clock[0] += EXPIRE_EVERY - 1
        asyncio.run(h.engine.tick_rules(now))
        assert state.keys() == ["bob"]  # too soon
        clock[0] += 1
        asyncio.run(h.engine.tick_rules(now))
        assert state.keys() == []
    finally:
        h.close()
