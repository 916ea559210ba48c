"""The offboarding policy and read-back, through a real Engine (tests/engine_harness.py).

The default policy's order (disable, then revoke sessions and tokens, then remove grants),
the bounded wait between steps, and issued -> acknowledged -> verified: the ledger and the
audit trail keep each state with its time, a read-back that shows the opposite (or never shows
the effect) pages once with the evidence, a restarted plan reads back what was not read back
without acting again, and the offboarding summary says "verified at N of M providers".

The providers here are stand-ins whose read-back answers are scripted; the vendors' own
read-backs are tested against vendor fakes in tests/test_lifecycle_providers.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog
import yaml

from connectors.base.provider import (
    NOT_VERIFIABLE,
    PENDING,
    UNVERIFIED,
    VERIFIED,
    Verification,
    dry_run_result,
)
from streams.config import load_config
from streams.decide.hr import decide_hr
from streams.decide.policy import DEFAULT_STEPS, OffboardingPolicy
from streams.model.records import Action
from streams.runtime.executor import VerifyPolicy
from streams.runtime.plans import STEP_TIMEOUT_LOG_EVERY
from streams.runtime.policy import offboarding_problems
from tests.engine_harness import (
    CLOCK,
    EngineHarness,
    FakeProvider,
    build_engine,
    counter,
    hr_event,
)

T = TypeVar("T")
NOW = datetime.fromtimestamp(CLOCK, UTC)

DEFAULT_POLICY_CONFIG = {
    "offboarding": {"steps": {k: [list(s) for s in v] for k, v in DEFAULT_STEPS.items()}}
}


class ReadBackProvider(FakeProvider):
    """A :class:`FakeProvider` that also reads actions back.

    ``answers[action]`` is the list of verifications the next reads return (the last one
    repeats); actions not listed are "not verifiable". ``block(action)`` holds performs of
    that action until ``unblock(action)``. Every perform is timed in ``spans``.
    """

    type = "okta"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.answers: dict[str, list[Verification]] = {}
        self.reads: list[tuple[str, float]] = []
        self.spans: list[tuple[str, float, float]] = []
        self._blocked: dict[str, threading.Event] = {}
        self.delays: dict[str, float] = {}
        #: actions whose perform began (before any block)
        self.entered: list[str] = []
        self.dry = False

    def block(self, action: str) -> None:
        self._blocked[action] = threading.Event()

    def unblock(self, action: str) -> None:
        self._blocked[action].set()

    def perform(self, action: Action) -> dict[str, Any]:
        start = time.monotonic()
        self.entered.append(action.action)
        gate = self._blocked.get(action.action)
        if gate is not None:
            gate.wait(5.0)
        time.sleep(self.delays.get(action.action, 0.0))
        if self.dry:
            return dry_run_result(f"POST /{action.action}")
        result = super().perform(action)
        self.spans.append((action.action, start, time.monotonic()))
        return result

    def can_verify(self, action: Action) -> bool:
        return action.action in self.answers

    def verify(self, action: Action, result: Mapping[str, Any], issued_at: float) -> Verification:
        self.reads.append((action.action, issued_at))
        queue = self.answers[action.action]
        return queue.pop(0) if len(queue) > 1 else queue[0]


class TimedProvider(FakeProvider):
    """A FakeProvider that times its performs (no read-back)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.spans: list[tuple[str, float, float]] = []

    def perform(self, action: Action) -> dict[str, Any]:
        start = time.monotonic()
        result = super().perform(action)
        self.spans.append((action.action, start, time.monotonic()))
        return result


@pytest.fixture
def h(tmp_path: Path) -> Iterator[EngineHarness]:
    harness = build_engine(tmp_path, config=DEFAULT_POLICY_CONFIG)
    okta = ReadBackProvider("okta")
    hootsuite = TimedProvider("hootsuite")
    for name, provider in (("okta", okta), ("hootsuite", hootsuite)):
        harness.providers[name] = provider
        harness.executor.providers[name] = provider
    harness.executor.verify_policy = VerifyPolicy(
        timeout=0.5, first_interval=0.01, max_interval=0.05
    )
    yield harness
    harness.close()


def okta_of(h: EngineHarness) -> ReadBackProvider:
    provider = h.providers["okta"]
    assert isinstance(provider, ReadBackProvider)
    return provider


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(scenario(), 10.0)

    return asyncio.run(main())


async def settle(h: EngineHarness) -> None:
    await asyncio.wait_for(h.engine.wait_plans(), 8.0)


def terminate(h: EngineHarness) -> tuple[Action, ...]:
    async def scenario() -> tuple[Action, ...]:
        decision = await h.engine.handle_hr(hr_event())
        await settle(h)
        return decision.actions

    return run(scenario)


def the(actions: tuple[Action, ...], kind: str, provider: str) -> Action:
    (found,) = [a for a in actions if a.action == kind and a.provider == provider]
    return found


def summary_of(h: EngineHarness) -> Any:
    (summary,) = [a for a in h.alerts("slack") if a.rule == "offboarding.completed"]
    return summary


# ------------------------------------------------------------------------------ order


def test_default_policy_disables_first_then_revokes_then_removes_grants(
    h: EngineHarness,
) -> None:
    """ana's termination: disable at okta (a slow vendor here) is acknowledged before any
    session or token is revoked anywhere, and every revocation before a grant is removed."""
    okta_of(h).delays["disable_account"] = 0.15
    okta_of(h).delays["revoke_tokens"] = 0.1
    actions = terminate(h)
    kinds = {a.action for a in actions}
    assert kinds == {
        "disable_account",
        "revoke_sessions",
        "revoke_tokens",
        "remove_grant",
        "rotate_shared_credential",
    }
    spans = okta_of(h).spans + h.providers["hootsuite"].spans  # type: ignore[attr-defined]
    ends = {k: max(e for a, _, e in spans if a == k) for k in ("disable_account",)}
    starts = {
        k: min(s for a, s, _ in spans if a == k)
        for k in ("revoke_sessions", "revoke_tokens", "remove_grant")
    }
    assert ends["disable_account"] <= starts["revoke_sessions"]
    assert ends["disable_account"] <= starts["revoke_tokens"]
    last_revoke = max(e for a, _, e in spans if a in ("revoke_sessions", "revoke_tokens"))
    assert last_revoke <= starts["remove_grant"]


def test_a_step_waits_for_the_one_before_at_most_step_timeout(h: EngineHarness) -> None:
    """A disable that hangs (a provider outage) holds the revocations back for
    ``offboarding.step_timeout`` only, never until the outage ends."""
    h.engine.plans.step_timeout = 0.2
    okta = okta_of(h)
    okta.block("disable_account")
    hootsuite = h.providers["hootsuite"]

    async def scenario() -> float:
        start = time.monotonic()
        await h.engine.handle_hr(hr_event())
        while not any(a == "revoke_sessions" for a, _, _ in hootsuite.spans):  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)
            assert time.monotonic() - start < 3.0, "revocation held back by the hung disable"
        waited = time.monotonic() - start
        okta.unblock("disable_account")
        await settle(h)
        return waited

    waited = run(scenario)
    assert 0.15 <= waited < 2.0
    assert all(h.views.ledger[k]["status"] == "done" for k in h.calls())


def test_step_timeouts_are_logged_once_per_interval_with_a_count(h: EngineHarness) -> None:
    """A layoff under rate limits times out a step in most of its plans: the first timeout
    is a warning, the next ones within ``STEP_TIMEOUT_LOG_EVERY`` are only counted, and the
    next warning says how many there were."""
    plans = h.engine.plans
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):
            plans._step_timed_out(0, 2)
        plans._step_timeout_logged -= STEP_TIMEOUT_LOG_EVERY  # the interval has passed
        plans._step_timed_out(1, 1)
    lines = [e for e in logs if e["event"] == "plan.step_timeout"]
    assert [(e["log_level"], e["step"], e["steps_timed_out"]) for e in lines] == [
        ("warning", 0, 1),
        ("warning", 1, 5),
    ]


# ------------------------------------------------------------------------------ read-back


def test_verified_read_back_is_in_the_ledger_the_audit_trail_and_the_summary(
    h: EngineHarness,
) -> None:
    """The okta disable reads back PENDING twice (eventual consistency), then VERIFIED: the
    ledger keeps issued, acknowledged and verified times and the evidence, the audit trail
    has the verification, the metric counts it, and the summary says where it was proven."""
    okta = okta_of(h)
    okta.answers["disable_account"] = [
        Verification(PENDING, {"status": "ACTIVE"}, "not yet"),
        Verification(PENDING, {"status": "ACTIVE"}, "not yet"),
        Verification(VERIFIED, {"status": "SUSPENDED"}),
    ]
    okta.answers["revoke_sessions"] = [Verification(VERIFIED, {"event": "user.session.clear"})]
    okta.answers["revoke_tokens"] = [Verification(VERIFIED, {"grants": 0})]
    before = counter("accessguard_action_verifications_total", provider="okta", outcome="verified")
    seconds = counter("accessguard_revocation_verify_seconds_count", provider="okta")
    actions = terminate(h)
    disable = the(actions, "disable_account", "okta")
    record = h.views.ledger[disable.idempotency_key]
    assert record["status"] == "done"
    assert record["issued_at"] <= record["acknowledged_at"] <= record["verification"]["verified_at"]
    assert record["verification"]["status"] == VERIFIED
    assert record["verification"]["evidence"] == {"status": "SUSPENDED"}
    assert [a for a, _ in okta.reads].count("disable_account") == 3
    (audit,) = [
        e for e in h.journal_entries("action.verification") if e["action"] == "disable_account"
    ]
    assert audit["verification"]["status"] == VERIFIED
    assert audit["provider"] == "okta"
    assert audit["acknowledged_at"] == record["acknowledged_at"]
    # an action with no read-back is recorded so, in its one ledger write
    revoke = the(actions, "revoke_sessions", "hootsuite")
    assert h.views.ledger[revoke.idempotency_key]["verification"]["status"] == NOT_VERIFIABLE
    assert (
        counter("accessguard_action_verifications_total", provider="okta", outcome="verified")
        == before + 3
    )
    assert counter("accessguard_revocation_verify_seconds_count", provider="okta") == seconds + 3
    summary = summary_of(h)
    assert "verified at 1 of 3 providers (2 acknowledged, not verifiable)" in summary.title
    assert summary.details["verification"] == {
        "hootsuite": "not_verifiable",
        "okta": "verified",
        "secret-store": "not_verifiable",
    }
    assert not [a for a in h.alerts("pagerduty") if a.rule == "action.unverified"]


def test_read_back_showing_the_opposite_pages_once_with_the_evidence(h: EngineHarness) -> None:
    """Okta acknowledged the disable but reads the account back ACTIVE: one page with the
    evidence, the summary says NOT VERIFIED, the offboarding counts as unrevoked; the plan
    run again (a restart) neither reads again nor pages again."""
    okta = okta_of(h)
    okta.answers["disable_account"] = [
        Verification(UNVERIFIED, {"status": "ACTIVE"}, "status is ACTIVE, not SUSPENDED")
    ]
    unrevoked = counter("accessguard_offboardings_unrevoked_total")
    actions = terminate(h)
    pages = [a for a in h.alerts("pagerduty") if a.rule == "action.unverified"]
    assert len(pages) == 1
    assert pages[0].details["evidence"] == {"status": "ACTIVE"}
    assert pages[0].details["provider"] == "okta"
    assert "status is ACTIVE" in pages[0].title
    assert "NOT VERIFIED" in summary_of(h).title
    assert counter("accessguard_offboardings_unrevoked_total") == unrevoked + 1
    disable = the(actions, "disable_account", "okta")
    assert h.views.ledger[disable.idempotency_key]["verification"]["status"] == UNVERIFIED

    # the same plan again, as a restart would resume it
    reads = len(okta.reads)
    event = hr_event()
    st = h.views.state.identity("ana")
    decision = decide_hr(
        h.views.registry,
        type(h.views.state)(),
        event,
        NOW,
        h.config.provider_types(),
        policy=h.engine.policy,
    )
    assert decision.plan_id is not None
    plan = next(u for u in decision.state_updates if getattr(u, "identity", None) == "ana")
    h.views.state.put(st.with_plan(decision.plan_id, plan.plans[decision.plan_id]))  # type: ignore[union-attr]

    async def again() -> None:
        h.engine.resume_plans()
        await settle(h)

    run(again)
    assert len(okta.reads) == reads
    assert len([a for a in h.alerts("pagerduty") if a.rule == "action.unverified"]) == 1


def test_read_back_that_never_shows_the_effect_fails_at_the_timeout(h: EngineHarness) -> None:
    okta = okta_of(h)
    okta.answers["revoke_tokens"] = [Verification(PENDING, {"grants": 2}, "2 grants remain")]
    actions = terminate(h)
    record = h.views.ledger[the(actions, "revoke_tokens", "okta").idempotency_key]
    assert record["verification"]["status"] == UNVERIFIED
    assert record["verification"]["reason"].startswith("not read back within 0.5s")
    assert record["verification"]["evidence"] == {"grants": 2}
    assert len(okta.reads) >= 3
    (page,) = [a for a in h.alerts("pagerduty") if a.rule == "action.unverified"]
    assert page.details["evidence"] == {"grants": 2}


def test_a_resumed_plan_reads_back_what_was_acknowledged_without_acting_again(
    h: EngineHarness,
) -> None:
    """A crash after the disable was acknowledged but before it was read back: the resumed
    plan makes no second call for it, only the read-back."""
    okta = okta_of(h)
    okta.answers["disable_account"] = [Verification(VERIFIED, {"status": "SUSPENDED"})]
    decision = decide_hr(
        h.views.registry,
        h.views.state,
        hr_event(),
        NOW,
        h.config.provider_types(),
        policy=h.engine.policy,
    )
    for value in decision.state_updates:
        h.views.state.put(value)
    disable = the(decision.actions, "disable_account", "okta")
    h.views.ledger[disable.idempotency_key] = {
        "status": "done",
        "attempts": 1,
        "result": {"status": 200},
        "error": None,
        "finished_at": CLOCK - 5.0,
        "issued_at": CLOCK - 5.2,
        "acknowledged_at": CLOCK - 5.0,
    }

    async def scenario() -> None:
        h.engine.resume_plans()
        await settle(h)

    run(scenario)
    assert disable.idempotency_key not in h.calls()
    assert okta.reads == [("disable_account", CLOCK - 5.2)]
    record = h.views.ledger[disable.idempotency_key]
    assert record["finished_at"] == CLOCK - 5.0
    assert record["verification"]["status"] == VERIFIED


def test_a_dry_run_is_never_read_back(h: EngineHarness) -> None:
    okta = okta_of(h)
    okta.dry = True
    okta.answers["disable_account"] = [Verification(VERIFIED)]
    terminate(h)
    assert okta.reads == []
    assert "verified at 0 of 2 providers (2 acknowledged, not verifiable)" in summary_of(h).title


# ------------------------------------------------------------------------------ reinstatement


def test_reinstatement_re_enables_where_the_suspension_disabled(h: EngineHarness) -> None:
    okta = okta_of(h)

    async def scenario() -> None:
        await h.engine.handle_hr(hr_event("evt-s", "suspended"))
        await settle(h)
        await h.engine.handle_hr(hr_event("evt-r", "reinstated"))
        await settle(h)

    run(scenario)
    done = [a.action for a in okta.calls]
    assert done.index("disable_account") < done.index("enable_account")
    assert h.views.state.identity("ana").disabled_at == ()
    assert any(a.rule == "reinstatement.completed" for a in h.alerts("slack"))


# ------------------------------------------------------------------------------ configuration


def _config(tmp_path: Path, offboarding: dict[str, Any]) -> Any:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "providers": {"okta": {"type": "okta", "dry_run": True}},
                "offboarding": offboarding,
            }
        ),
        encoding="utf-8",
    )
    return load_config(path, env={})


def test_policy_problems_are_named_with_their_line(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        {
            "steps": {
                "terminated": [["disable_account"], ["revoke_sessions", "downgrade_grant"]],
                "suspended": [["revoke_sessions"], ["revoke_sessions"]],
                "role_changed": [["downgrade_grant"]],
            },
            "providers": {"okta-prod": {"terminated": ["revoke_sessions"]}},
        },
    )
    problems = {(p.key, p.message) for p in offboarding_problems(config)}
    assert any(
        k == "offboarding.steps.terminated.1" and "'downgrade_grant' is not an action" in m
        for k, m in problems
    ), problems
    assert ("offboarding.steps.suspended.1", "'revoke_sessions' is in two steps") in problems
    assert any(k == "offboarding.steps.role_changed" for k, _ in problems)
    assert (
        "offboarding.providers.okta-prod",
        "no provider of that name (providers.*)",
    ) in problems
    located = [p.located() for p in offboarding_problems(config)]
    assert all(line.startswith(str(tmp_path / "config.yaml") + ":") for line in located)


def test_a_provider_can_be_narrowed_per_event_type(tmp_path: Path) -> None:
    """``offboarding.providers.okta.terminated: [revoke_sessions]``: okta is not asked to
    disable or revoke tokens on a termination; other providers and event types keep the
    default."""
    h = build_engine(
        tmp_path,
        config={
            **DEFAULT_POLICY_CONFIG,
            "offboarding": {
                **DEFAULT_POLICY_CONFIG["offboarding"],
                "providers": {"okta": {"terminated": ["revoke_sessions"]}},
            },
        },
    )
    try:
        policy = h.engine.policy
        assert isinstance(policy, OffboardingPolicy)
        assert not policy.allows("terminated", "disable_account", "okta")
        assert policy.allows("suspended", "disable_account", "okta")
        actions = terminate(h)
        at_okta = sorted(a.action for a in actions if a.provider == "okta")
        assert at_okta == ["revoke_sessions"]
    finally:
        h.close()


def test_a_plan_cancelled_between_steps_starts_nothing_more(h: EngineHarness) -> None:
    """A stop (or a lost partition) while a step waits for the one before: the plan stays in
    the state to resume, no later step's action is started, and the step in flight is
    cancelled with it (no orphan records an outcome beside the worker that resumes it)."""
    okta = okta_of(h)
    okta.block("disable_account")

    async def scenario() -> None:
        await h.engine.handle_hr(hr_event())
        while "disable_account" not in okta.entered:
            await asyncio.sleep(0.01)
        await h.engine.plans.cancel()
        okta.unblock("disable_account")
        await asyncio.sleep(0.3)

    run(scenario)
    assert [a.action for a in h.providers["hootsuite"].calls] == []
    assert "evt-1" in h.views.state.identity("ana").plans
    assert not [r for r in h.views.ledger.values() if r.get("action") == "disable_account"]
