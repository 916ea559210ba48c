"""Benchmark: what the login rules cost per event, evaluation only, for one rules directory.

20,000 events of bench/login_throughput.py's world (2,000 identities, six hours), resolved once,
then evaluated by a fresh RuleEngine five times; CPU time per event of the best run. Compare
two rule sets, or two checkouts with the same rules, to tell the engine's cost from the rules':

    .venv/bin/python bench/rule_cost.py rules            # the shipped rules
    .venv/bin/python bench/rule_cost.py rules --per-rule # and what each rule costs
    .venv/bin/python bench/rule_cost.py /tmp/old-rules   # e.g. an older checkout's rules/
    (cd ../old-checkout && PYTHONPATH=. ../main/.venv/bin/python ../main/bench/rule_cost.py rules)

The machine is noisy: alternate the runs and compare them, not a run with a figure from another
day.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(Path.cwd()) not in sys.path:
    sys.path.insert(0, str(Path.cwd()))  # the checkout run from (its streams/, its bench/)

from bench.login_throughput import (  # noqa: E402
    PLATFORM_PROVIDERS,
    build_world,
    load_registry,
    make_events,
    write_registry,
)
from streams.decide.login import LoginPipeline  # noqa: E402
from streams.decide.resolve import resolve  # noqa: E402
from streams.detect.fields import Ctx  # noqa: E402
from streams.detect.load import load_rules  # noqa: E402
from streams.model.records import LoginEvent  # noqa: E402
from streams.model.state import StateStore  # noqa: E402

RUNS = 5


def per_rule(pipeline: LoginPipeline, events: list[LoginEvent], registry: Any) -> dict[str, int]:
    """Nanoseconds each login rule took over ``events`` (match, group key, check), with the
    event's registry facts computed before the clock starts (they are shared by all rules)."""
    engine, state, lifecycle = pipeline.engine, pipeline.state, StateStore()
    cost = dict.fromkeys((c.id for c in engine._compiled), 0)
    clock = time.perf_counter_ns
    for event in events:
        ctx = Ctx(event, registry, lifecycle)
        ctx.identity(), ctx.life(), ctx.status(), ctx.max_role(), ctx.grant(), ctx.account()
        for c in engine._compiled:
            started = clock()
            if c.match(ctx):
                key = c.group(ctx)
                if key is not None:
                    c.check(ctx, key, state)
            cost[c.id] += clock() - started
    return cost


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--per-rule"]
    rules_dir = Path(args[0] if args else REPO / "rules")
    rng = random.Random(7)
    world = build_world(2000, rng)
    raw = make_events(world, 20_000, 6 * 3600, rng)
    tmp = Path(tempfile.mkdtemp(prefix="accessguard-rule-cost-"))
    write_registry(tmp / "registry.yaml", world)
    registry = load_registry(tmp / "registry.yaml")
    ruleset = load_rules(rules_dir)
    providers = dict.fromkeys(PLATFORM_PROVIDERS, "generic")
    providers.update(okta="okta", entra="graph", google="google")
    events = [resolve(LoginEvent.from_dict(e), registry) for e in raw]
    best, detections = float("inf"), 0
    for _ in range(RUNS):
        pipeline = LoginPipeline(ruleset, providers)
        lifecycle = StateStore()
        started = time.process_time()
        found = 0
        for event in events:
            found += len(pipeline.engine.evaluate(event, registry, lifecycle, pipeline.state))
        best = min(best, time.process_time() - started)
        detections = found
    login_rules = sum("login" in r.inputs for r in ruleset.rules)
    print(
        f"{rules_dir}: {login_rules} login rules, evaluate {best / len(events) * 1e6:.2f} "
        f"us/event (best of {RUNS}), {detections} detections"
    )
    if "--per-rule" in sys.argv:
        providers = dict.fromkeys(PLATFORM_PROVIDERS, "generic")
        runs = [per_rule(LoginPipeline(ruleset, providers), events, registry) for _ in range(3)]
        least = {rule: min(run[rule] for run in runs) for rule in runs[0]}
        print("per rule (us/event, best of 3; ~0.05 of each is the timer):")
        for rule, ns in sorted(least.items(), key=lambda kv: -kv[1]):
            print(f"  {rule:40s} {ns / len(events) / 1000:5.2f}")


if __name__ == "__main__":
    main()
