"""Benchmark: what one first_seen rule costs per successful login, alone.

20,000 successful logins of 3,000 admins over about six hours (most people seen several times,
mostly from one country), evaluated by a RuleEngine holding only the named rule; CPU time per
event, best of five fresh runs, minus the same run with no rule (event context and loop).
The rule's own conditions are included (``identity.max_role`` is computed here for it alone;
in the full rule set other rules share it), so compare runs, not this with the whole pipeline.

    PYTHONPATH=. .venv/bin/python bench/first_seen_cost.py \
        dormant_holder_active new_country_for_privileged

Alternate it with a checkout of the previous version: identical runs drift by 10-20 %.
"""

from __future__ import annotations

import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from streams.detect.engine import RuleEngine
from streams.detect.load import parse_rule
from streams.detect.model import RuleSet
from streams.detect.state import RuleState
from streams.model.records import LoginEvent
from streams.model.registry import Registry
from streams.model.registry_yaml import parse_registry
from streams.model.state import StateStore

REPO = Path(__file__).resolve().parent.parent
PEOPLE = 3000
EVENTS = 20_000
RUNS = 5


def registry() -> Registry:
    ids = [f"u{i}" for i in range(PEOPLE)]
    lines = [
        "accounts:",
        "  - {id: a1, platform: x, handle: '@b', criticality: high, provider: p}",
        "identities:",
        *(f"  - {{id: {i}, name: N, kind: employee, emails: [{i}@b.example]}}" for i in ids),
        "grants:",
        *(f"  - {{identity: {i}, account: a1, role: admin, via: sso, mfa: push}}" for i in ids),
    ]
    found, problems = parse_registry("\n".join(lines) + "\n")
    assert not problems, problems
    return found


def events() -> list[LoginEvent]:
    rng = random.Random(1)
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    out = []
    for n in range(EVENTS):
        who = f"u{rng.randrange(PEOPLE)}"
        out.append(
            LoginEvent.from_dict(
                {
                    "event_id": f"e{n}",
                    "vendor": "okta",
                    "principal": f"{who}@b.example",
                    "identity": who,
                    "outcome": "success",
                    "time": (t0 + timedelta(seconds=n)).isoformat(),
                    "geo": {"country": rng.choice(["IT", "IT", "IT", "FR"])},
                }
            )
        )
    return out


def ruleset(names: list[str]) -> RuleSet:
    rules = []
    for name in names:
        path = REPO / "rules" / f"{name}.yaml"
        rule, problems = parse_rule(path.read_text(encoding="utf-8"), path)
        assert rule is not None, problems
        rules.append(rule)
    return RuleSet(tuple(rules))


def us_per_event(names: list[str], reg: Registry, logins: list[LoginEvent]) -> float:
    best = float("inf")
    for _ in range(RUNS):
        engine, state, lifecycle = RuleEngine(ruleset(names), {}), RuleState(), StateStore()
        start = time.process_time()
        for event in logins:
            engine.evaluate(event, reg, lifecycle, state)
        best = min(best, time.process_time() - start)
    return best / len(logins) * 1e6


def main(names: list[str]) -> None:
    reg, logins = registry(), events()
    for name in names:
        base = us_per_event([], reg, logins)
        cost = us_per_event([name], reg, logins) - base
        print(f"{name}: {cost:.2f} us/event over the no-rule run")


if __name__ == "__main__":
    main(sys.argv[1:] or ["dormant_holder_active"])
