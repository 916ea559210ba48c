"""Benchmark: what instrumentation costs the login pipeline (goal: at most 5% of throughput).

In process, no broker: the worker's login path as ``Engine.handle_login_batch`` runs it —
``LoginEvent.from_dict`` per event, ``LoginPipeline.process`` (resolve + every rule) per event,
and the metric calls as the engine makes them: once per batch ``accessguard_login_events_
evaluated_total.inc(n)`` and one pre-bound ``inc(n)`` per rule on
``accessguard_rule_evaluations_total``, plus a pre-bound ``inc()`` on
``accessguard_rule_matches_total`` per detection. Three variants over the same batches:

- ``off``:      the metric calls replaced by no-ops;
- ``on``:       the metric calls as shipped (pre-bound children, counted per batch);
- ``naive``:    for comparison, what per-event ``labels(...).inc()`` would cost (one lookup per
                rule and event) — the pattern docs/operations-notes.md warns about.

Each round builds a fresh pipeline (empty rule state) per variant, so every variant does the
same rule work. The variants run in lockstep, batch by batch with a rotating order, and each is
timed in CPU seconds of this process (``time.process_time``), so other work on a shared machine
hits all variants alike; the median of the rounds is reported.

    .venv/bin/python bench/metrics_overhead.py                 # 40k events x 7 rounds
    .venv/bin/python bench/metrics_overhead.py --events 10000 --rounds 3

Prints a table and writes bench/results/metrics_overhead-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from streams.decide.login import LoginPipeline  # noqa: E402
from streams.detect.load import load_rules  # noqa: E402
from streams.detect.model import RuleSet  # noqa: E402
from streams.model.records import Geo, LoginEvent  # noqa: E402
from streams.model.registry import Registry  # noqa: E402
from streams.model.registry_yaml import load_registry  # noqa: E402
from streams.model.state import StateStore  # noqa: E402
from streams.support import metrics  # noqa: E402

PROVIDERS = {
    "okta": "okta",
    "entra": "graph",
    "google": "google",
    "hootsuite": "generic",
    "meta-business": "generic",
    "secret-store": "secret_store",
}
VARIANTS = ("off", "on", "naive")
COUNTRIES = [("US", 40.7, -74.0), ("DE", 52.5, 13.4), ("GB", 51.5, -0.1), ("BR", -23.5, -46.6)]


def generate(registry: Registry, n: int, seed: int = 7) -> list[dict[str, Any]]:
    """Canonical login events (as the edge publishes them): people log in to accounts they
    hold from their usual country, mostly successfully; a few failures, challenges, logins
    from elsewhere and unknown principals — so rules run on every event and fire on a few."""
    rng = random.Random(seed)
    people: list[tuple[str, str | None, list[str], tuple[str, float, float]]] = []
    for ident in registry.identities.values():
        held = [g.account for g in registry.grants_of(ident.id)] or list(registry.accounts)
        home = COUNTRIES[len(people) % len(COUNTRIES)]
        people.extend((email, ident.aliases.get("okta"), held, home) for email in ident.emails)
    start = datetime(2026, 11, 26, 8, tzinfo=UTC)
    out = []
    for k in range(n):
        email, okta_id, accounts, (country, lat, lon) = rng.choice(people)
        if rng.random() < 0.01:
            email, okta_id = f"stranger{rng.randrange(500)}@unknown.example", None
        if rng.random() < 0.01:
            country, lat, lon = rng.choice(COUNTRIES)
        outcome = rng.choices(["success", "failure", "challenge"], [94, 4, 2])[0]
        event = LoginEvent(
            event_id=f"bench-{k}",
            vendor="okta",
            time=start + timedelta(seconds=k * 0.05),
            principal=email,
            principal_id=okta_id,
            outcome=outcome,
            event_type="user.session.start",
            failure_reason="INVALID_CREDENTIALS" if outcome == "failure" else None,
            ip=f"198.51.100.{rng.randrange(1, 255)}",
            geo=Geo(country=country, lat=lat, lon=lon) if rng.random() < 0.9 else None,
            user_agent="Mozilla/5.0",
            target=rng.choice(accounts),
        )
        out.append(event.to_dict())
    return out


def batches_of(events: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [events[i : i + size] for i in range(0, len(events), size)]


class _Noop:
    def inc(self, _amount: float = 1) -> None:
        return None


class Runner:
    """One variant's pipeline (its own rule state), fed batch by batch."""

    def __init__(self, variant: str, ruleset: RuleSet, registry: Registry) -> None:
        self.variant = variant
        self.registry = registry
        self.lifecycle = StateStore()
        self.pipeline = LoginPipeline(ruleset, PROVIDERS)
        rules = self.pipeline.engine.rules
        self.rule_ids = [r.id for r in rules]
        if variant == "off":
            self.login_events: Any = _Noop()
            self.evaluations: tuple[Any, ...] = tuple(_Noop() for _ in rules)
            self.matches: dict[tuple[str, str], Any] = {(r.id, r.severity): _Noop() for r in rules}
        else:
            self.login_events = metrics.LOGIN_EVENTS
            self.evaluations = tuple(metrics.RULE_EVALUATIONS.labels(r.id) for r in rules)
            self.matches = {
                (r.id, r.severity): metrics.RULE_MATCHES.labels(r.id, r.severity) for r in rules
            }
        self.seconds = 0.0
        self.evaluated = 0
        self.detections = 0

    def batch(self, batch: list[dict[str, Any]]) -> None:
        """Engine.handle_login_batch's work for one message, minus the I/O of detections."""
        from_dict: Callable[[Any], LoginEvent] = LoginEvent.from_dict
        process, registry, lifecycle = self.pipeline.process, self.registry, self.lifecycle
        naive = self.variant == "naive"
        labelled = metrics.RULE_EVALUATIONS
        matches = self.matches
        started = time.process_time()
        evaluated = 0
        for item in batch:
            event = from_dict(item)
            _resolved, detections = process(event, registry, lifecycle)
            evaluated += 1
            if naive:
                for rule_id in self.rule_ids:
                    labelled.labels(rule_id).inc()
            for detection in detections:
                self.detections += 1
                if detection.error is None:
                    matches[(detection.rule, detection.severity)].inc()
        self.login_events.inc(evaluated)
        if evaluated and not naive:
            for child in self.evaluations:
                child.inc(evaluated)
        self.seconds += time.process_time() - started
        self.evaluated += evaluated


def run_round(
    ruleset: RuleSet, registry: Registry, batches: list[list[dict[str, Any]]], round_no: int
) -> dict[str, Runner]:
    """Every variant in lockstep, batch by batch (rotating which goes first), so a change in
    machine load hits all of them alike; CPU time of this process, not wall time."""
    runners = {v: Runner(v, ruleset, registry) for v in VARIANTS}
    order = list(VARIANTS)
    for index, batch in enumerate(batches):
        shift = (index + round_no) % len(order)
        for variant in order[shift:] + order[:shift]:
            runners[variant].batch(batch)
    return runners


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=40000)
    parser.add_argument("--batch", type=int, default=500, help="events per message (edge: 500)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results")
    args = parser.parse_args()

    registry = load_registry(REPO / "examples" / "registry.yaml")
    ruleset = load_rules(REPO / "rules")
    batches = batches_of(generate(registry, args.events), args.batch)
    variants = VARIANTS
    run_round(ruleset, registry, batches[:2], 0)  # warm-up: imports, caches
    times: dict[str, list[float]] = {v: [] for v in variants}
    counts: dict[str, tuple[int, int]] = {}
    for round_no in range(args.rounds):
        for variant, runner in run_round(ruleset, registry, batches, round_no).items():
            times[variant].append(runner.seconds)
            counts[variant] = (runner.evaluated, runner.detections)
    rate = {v: args.events / statistics.median(ts) for v, ts in times.items()}
    cost = {v: (1 - rate[v] / rate["off"]) * 100 for v in variants}
    rules = len(LoginPipeline(ruleset, PROVIDERS).engine.rules)
    print(
        f"login pipeline, {args.events} events in batches of {args.batch}, {rules} rules, "
        f"median of {args.rounds} rounds ({platform.python_version()})"
    )
    print(f"{'metrics':<8} {'events/s':>10} {'cost':>8}  detections")
    for v in variants:
        print(f"{v:<8} {rate[v]:>10,.0f} {cost[v]:>7.2f}%  {counts[v][1]}")
    verdict = "OK" if cost["on"] <= 5 else "OVER BUDGET"
    print(f"metrics on cost {cost['on']:.2f}% of throughput (goal <= 5%): {verdict}")
    if not args.no_write:
        out = REPO / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = out / f"metrics_overhead-{stamp}.json"
        path.write_text(
            json.dumps(
                {
                    "events": args.events,
                    "batch": args.batch,
                    "rounds": args.rounds,
                    "rules": rules,
                    "seconds": times,
                    "events_per_second": rate,
                    "cost_percent": cost,
                    "python": platform.python_version(),
                },
                indent=2,
            )
        )
        print(f"wrote {path.relative_to(REPO)}")
    return 0 if cost["on"] <= 5 else 1


if __name__ == "__main__":
    sys.exit(main())
