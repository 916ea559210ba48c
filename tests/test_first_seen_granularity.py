"""first_seen rules refresh a known value's time only once it is older than lookback / 64
(streams.detect.checks.SEEN_GRANULARITY): the common login — a holder seen again the same day —
costs a read and no state write, and what counts as new moves by at most that much."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from streams.detect.checks import SEEN_GRANULARITY
from streams.detect.engine import RuleEngine
from streams.detect.load import parse_rule
from streams.detect.model import RuleSet
from streams.detect.state import RuleState
from streams.model.records import LoginEvent
from streams.model.registry_yaml import load_registry
from streams.model.state import StateStore

REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
DAY = 86400.0


def dormant() -> tuple[RuleEngine, float, float]:
    """The shipped dormant_holder_active alone, its lookback and its granularity (s)."""
    text = (REPO / "rules" / "dormant_holder_active.yaml").read_text(encoding="utf-8")
    rule, problems = parse_rule(text, "dormant_holder_active.yaml")
    assert rule is not None, problems
    lookback = float(rule.params["lookback_days"]) * DAY
    return RuleEngine(RuleSet((rule,)), {}), lookback, lookback / SEEN_GRANULARITY


def login(n: int, offset: float) -> LoginEvent:
    return LoginEvent.from_dict(
        {
            "event_id": f"e{n}",
            "vendor": "okta",
            "principal": "bob@brand.example",
            "identity": "bob",
            "outcome": "success",
            "time": (T0 + timedelta(seconds=offset)).isoformat(),
        }
    )


def run(offsets: list[float]) -> tuple[list[str], list[list[str]]]:
    """The event ids fired on, and the keys dirtied by each login."""
    engine, _, _ = dormant()
    registry = load_registry(REPO / "rules" / "tests" / "registry.yaml")
    state, lifecycle = RuleState(), StateStore()
    fired: list[str] = []
    dirty: list[list[str]] = []
    for n, offset in enumerate(offsets):
        found = engine.evaluate(login(n, offset), registry, lifecycle, state)
        assert all(d.error is None for d in found)
        fired.extend(d.event_id for d in found if d.alerts)
        dirty.append(state.take_dirty())
    return fired, dirty


def test_logins_within_the_granularity_write_no_state() -> None:
    """bob learned at his first login; ten more that day (hourly) neither fire nor dirty a
    key for the checkpoint; the next day's login refreshes his time."""
    _, _, granularity = dormant()
    assert granularity < DAY
    fired, dirty = run([0.0, *(3600.0 * h for h in range(1, 11)), DAY + 60])
    assert fired == []
    assert dirty[0] == ["bob"]
    assert all(d == [] for d in dirty[1:11])
    assert dirty[11] == ["bob"]


def test_what_counts_as_dormant_moves_by_at_most_the_granularity() -> None:
    """A login skipped within the granularity leaves the stored time at the first one, so
    silence is measured from it: a return within lookback - granularity of the true last
    login never fires, one after the lookback always does."""
    _, lookback, granularity = dormant()
    half = granularity / 2
    quiet, _ = run([0.0, half, half + lookback - granularity - 60])
    assert quiet == []
    loud, _ = run([0.0, half, half + lookback + 60])
    assert loud == ["e2"]
