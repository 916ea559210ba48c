"""Rule time: event time while events flow, wall clock once the stream is idle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from streams.decide.login import LoginPipeline
from streams.detect.load import load_rules
from streams.model.records import LoginEvent
from streams.model.registry_yaml import load_registry
from streams.model.state import StateStore

ROOT = Path(__file__).resolve().parent.parent
PROVIDERS = {"okta": "okta", "hootsuite": "generic", "meta-business": "generic"}


def failure(n: int, when: datetime) -> LoginEvent:
    return LoginEvent(
        event_id=f"bf-{n}",
        vendor="okta",
        time=when,
        principal="bob.okafor@lumen-outdoor.example",
        outcome="failure",
        event_type="user.session.start",
        failure_reason="VERIFICATION_ERROR",
    )


def test_a_backlog_hours_old_keeps_its_windows_while_it_is_worked_through() -> None:
    """Ten failures from two hours ago, with a checkpoint tick (expiry) between them: the
    brute-force window survives because expiry follows event time, and the rule fires."""
    registry = load_registry(ROOT / "examples" / "registry.yaml")
    pipeline = LoginPipeline(load_rules(ROOT / "rules"), PROVIDERS)
    lifecycle = StateStore()
    start = datetime.now(UTC) - timedelta(hours=2)
    fired = []
    for n in range(10):
        _event, detections = pipeline.process(
            failure(n, start + timedelta(seconds=20 * n)), registry, lifecycle
        )
        fired += [d.rule for d in detections]
        if n == 4:
            clock = pipeline.rule_clock(datetime.now(UTC))
            assert clock == start + timedelta(seconds=80)
            pipeline.state.expire(clock, pipeline.engine.horizons)
    assert "brute_force_identity" in fired


def test_an_idle_stream_follows_the_wall_clock() -> None:
    """With no event for longer than IDLE_AFTER, rule time is the wall clock again, so
    absence windows close and old state expires on a quiet stream."""
    registry = load_registry(ROOT / "examples" / "registry.yaml")
    pipeline = LoginPipeline(load_rules(ROOT / "rules"), PROVIDERS)
    now = datetime.now(UTC)
    pipeline.process(failure(0, now - timedelta(hours=3)), registry, StateStore())
    assert pipeline.rule_clock(now) == now - timedelta(hours=3)
    assert pipeline.rule_clock(now, idle_after=-1.0) == now
