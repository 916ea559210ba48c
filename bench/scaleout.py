"""Benchmark: scale-out of ``accessguard worker`` on one broker, side by side in one run.

The same world, events and pre-filled ``accessguard.auth.events`` topic as
bench/login_throughput.py (its helpers are imported: build_world, make_events, publish,
registry_import, WorkerProc), one embedded Tansu broker, every provider and sink on a local
FakeVendorServer. Then, each phase on topics and a consumer group (``worker.id``) of its own;
its events are published once all its workers are up and the group has settled (with the topic
filled before, the first worker up would take most of it alone):

(1) one worker: login events/s from /metrics ``accessguard_login_events_evaluated_total``,
    from the first poll that sees it move to the poll that sees N;
(2) two workers (same group, own ports and data dirs): the sum of both counters, measured
    from the first poll where both counters move (both own partitions) to the poll that sees
    the sum reach N;
(3) four workers, likewise;
(4) two workers again; when the sum passes --kill-at of N, worker 2 is SIGKILLed. Recovery
    time = time from the kill until the survivor's counter grows, over a 1 s window, at >= 80 %
    of its own rate before the kill
    (its rate over the 2 s before the kill). Also reported: the time until its rate is >= 80 %
    of the one-worker rate of (1), and the events re-evaluated (the victim's uncommitted work
    that the survivor reads again: sum of counters at the end minus N). This phase ends when the
    sum has passed N and the survivor's counter has not moved for 2 s (drained).

Correctness across worker counts: after phases (1)-(3) the bench waits until the phase's
audit topic stops growing and collects its detections as (rule, hashed group key); they must
equal each other and what one in-process pipeline over the same events in order concludes
(``accessguard replay``'s path: every key local). Events are keyed as the worker's own edges
key them (resolved identity; ``--keying principal``: by login name, so most are routed).

The workers use a short group session (session 2 s, rebalance 2 s, heartbeat 0.5 s), as the
scale-out integration test does, so the dead member is noticed quickly. Two workers and the
broker share this machine's cores: on 2 cores the second worker competes with the first and
with the broker for CPU.

    .venv/bin/python bench/scaleout.py               # 300k events, about 2 minutes
    .venv/bin/python bench/scaleout.py --quick       # 100k events

Prints a table and writes bench/results/scaleout-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
for entry in (REPO, REPO / "bench"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from login_throughput import (  # noqa: E402
    METRIC,
    RESULTS,
    WorkerProc,
    build_world,
    end_offsets,
    machine,
    make_events,
    publish,
    registry_import,
    write_registry,
)

from streams.model.records import LoginEvent  # noqa: E402

TIMING = {
    "worker.session_timeout": 2.0,
    "worker.rebalance_timeout": 2.0,
    "worker.heartbeat_interval": 0.5,
}
POLL = 0.25


def counter(worker: WorkerProc) -> float | None:
    from tests.stack import metric_value

    try:
        return metric_value(worker.metrics(), METRIC)
    except Exception:  # a dead or busy worker reads as "no value"
        return None


def make_workers(
    tmp: Path,
    count: int,
    *,
    group: str,
    registry: Path,
    vendor_url: str,
    broker_url: str,
    prefix: str = "accessguard",
) -> list[WorkerProc]:
    from tests.stack import free_port, write_config

    workers = []
    for k in range(count):
        wdir = tmp / f"{group}-w{k + 1}"
        wdir.mkdir(parents=True)
        cfg = write_config(
            wdir / "config.yaml",
            data_dir=wdir / "data",
            vendor_url=vendor_url,
            broker=broker_url,
            http_port=free_port(),
            extra={
                "registry": str(registry),
                "log.level": "info",
                "worker.id": group,
                "topics.prefix": prefix,
                **TIMING,
            },
        )
        workers.append(WorkerProc(cfg, wdir))
    return workers


def responses(workers: list[WorkerProc]) -> dict[str, int]:
    """Plans completed and alerts sent by the phase's workers (from their logs): the
    response work that rides on the login path, which must be alike across phases."""
    counts = {"plans": 0, "alerts": 0}
    for w in workers:
        text = w.stderr()
        counts["plans"] += text.count('"event": "plan.completed"')
        counts["alerts"] += text.count('"event": "alert.sent"')
    return counts


def audit_detections(bootstrap: str, topic: str) -> Counter[tuple[str, str]]:
    """(rule, hashed group key) of every detection record on an audit topic."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, client_id="bench-audit", enable_auto_commit=False
    )
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        found: Counter[tuple[str, str]] = Counter()
        while any(consumer.position(tp) < end[tp] for tp in parts):
            for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                for rec in records:
                    value = json.loads(rec.value)
                    if value.get("kind") == "detection":
                        found[(value["rule"], value["group"])] += 1
        return found
    finally:
        consumer.close()


def settled_detections(bootstrap: str, topic: str, quiet: float = 3.0) -> Counter[tuple[str, str]]:
    """The detections once the audit topic has not changed for ``quiet`` seconds (the routed
    tail and the plans finish after the last event was counted)."""
    last: Counter[tuple[str, str]] | None = None
    still = time.monotonic()
    deadline = still + 60
    while time.monotonic() < deadline:
        now = audit_detections(bootstrap, topic)
        if now != last:
            last, still = now, time.monotonic()
        elif time.monotonic() - still >= quiet:
            break
        time.sleep(0.5)
    return last or Counter()


def replay_detections(
    events: list[LoginEvent], registry_path: Path, config: Any
) -> Counter[tuple[str, str]]:
    """What one pipeline over the events in order concludes (every key local, as replay)."""
    from streams.decide.login import LoginPipeline
    from streams.detect.load import load_rules
    from streams.model.records import subject_hash
    from streams.model.registry_yaml import load_registry
    from streams.model.state import StateStore

    registry = load_registry(registry_path)
    pipeline = LoginPipeline(load_rules(config["rules.dir"]), config.provider_types())
    lifecycle = StateStore()
    found: Counter[tuple[str, str]] = Counter()
    for event in events:
        _resolved, detections = pipeline.process(event, registry, lifecycle)
        for d in detections:
            if d.error is None and not d.deduplicated:
                found[(d.rule, subject_hash(d.group_key))] += 1
    return found


def run_phase(
    workers: list[WorkerProc],
    n: int,
    timeout: float,
    kill_at: float | None = None,
    feed: Any = None,
) -> dict[str, Any]:
    """Start the workers, then ``feed()`` (publish the events) once every one of them is up
    and the group has settled, and follow their counters until their sum reaches ``n``:
    with the topic filled before, the first worker up would take most of it alone."""
    for w in workers:
        w.start(timeout=90)
    if feed is not None:
        time.sleep(TIMING["worker.rebalance_timeout"] + 1.0)  # the last join's rebalance
        feed()
    t_start = time.perf_counter()
    series: list[tuple[float, list[float]]] = []
    t_all = t_last = None
    first = 0.0
    killed_at: float | None = None
    deadline = time.monotonic() + timeout
    last = [0.0] * len(workers)
    while time.monotonic() < deadline:
        now = time.perf_counter()
        values = []
        for k, w in enumerate(workers):
            v = None if (killed_at is not None and k == 1) else counter(w)
            values.append(last[k] if v is None else v)
        last = values
        series.append((now, values))
        total = sum(values)
        if t_all is None and all(v > 0 for v in values):
            t_all, first = now, total
        if kill_at is not None and killed_at is None and t_all is not None and total >= kill_at * n:
            proc = workers[1].proc
            assert proc is not None
            proc.kill()
            proc.wait(10)
            workers[1].proc = None
            killed_at = time.perf_counter()
        if killed_at is None and kill_at is None and total >= n:
            t_last = now
            break
        if killed_at is not None and total >= n:
            grew = [t for (t, v), (_, p) in zip(series[1:], series, strict=False) if v[0] > p[0]]
            if grew and now - grew[-1] >= 2.0:
                t_last = grew[-1]
                break
        time.sleep(POLL)
    span = (t_last - t_all) if t_all is not None and t_last is not None else None
    result: dict[str, Any] = {
        "workers": len(workers),
        "events": int(sum(last)),
        "complete": t_last is not None,
        "events_at_first_observation": first,
        "seconds": span,
        "seconds_incl_startup": (t_last - t_start) if t_last is not None else None,
        "events_per_s": (sum(last) - first) / span if span else None,
        "per_worker_events": [int(v) for v in last],
    }
    result["series"] = [(round(t - t_start, 3), v) for t, v in series]
    if killed_at is not None:
        result["killed_at_s"] = killed_at - t_start
    return result


def recovery(phase: dict[str, Any], one_worker_rate: float | None) -> dict[str, Any]:
    """Time from the kill until the survivor's rate is back to >= 80 % of its pre-kill rate.

    The survivor keeps its own partitions, so it does not stop at the kill: it stalls when the
    group notices the dead member (session timeout) and rebalances. So: the pre-kill rate is
    the survivor's rate over the 3 s before the kill; the dip is the first 1 s window after the
    kill whose rate is below 80 % of it; recovery is the end of the first 2 s window after the
    dip whose rate is >= 80 % again (rates from 0.25 s polls of a counter that moves in
    batches of up to 500 events, hence the 2 s window)."""
    series = [(t, v[0]) for t, v in phase["series"]]
    kill = phase["killed_at_s"]

    def rate_between(t0: float, t1: float) -> float | None:
        pts = [(t, v) for t, v in series if t0 <= t <= t1]
        if len(pts) < 2 or pts[-1][0] - pts[0][0] < 0.5 * (t1 - t0):
            return None
        return (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])

    pre = rate_between(kill - 3.0, kill)
    out: dict[str, Any] = {"survivor_pre_kill_rate": pre, "one_worker_rate": one_worker_rate}
    after = [t for t, _ in series if t >= kill]
    dip = None
    if pre:
        dip = next(
            (t for t in after if (r := rate_between(t, t + 1.0)) is not None and r < 0.8 * pre),
            None,
        )
    out["dip_after_kill_s"] = round(dip - kill, 3) if dip is not None else None
    for name, target in (
        ("recover_to_80pct_of_pre_kill_s", 0.8 * pre if pre else None),
        ("recover_to_80pct_of_one_worker_s", 0.8 * one_worker_rate if one_worker_rate else None),
    ):
        out[name] = None
        if target is None:
            continue
        for t in after:
            if dip is not None and t < dip:
                continue
            r = rate_between(t, t + 2.0)
            if r is not None and r >= target:
                out[name] = round(t + 2.0 - kill, 3)  # the window's end: when it is seen
                break
    moving = next(
        (t for (t, v), (_, v2) in itertools.pairwise(series) if t >= kill and v2 > v), None
    )
    out["survivor_first_growth_after_kill_s"] = round(moving - kill, 3) if moving else None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--quick", action="store_true", help="100k events")
    parser.add_argument("--identities", type=int, default=3000)
    parser.add_argument("--span-hours", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--kill-at", type=float, default=0.3, help="fraction of N at the kill")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a worker setting for every phase (e.g. worker.rule_interval=5)",
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--keying",
        choices=("identity", "principal"),
        default="identity",
        help="how the edge keys events (see bench/login_throughput.py --keying)",
    )
    args = parser.parse_args()
    if args.quick:
        args.events = 100_000

    from streams.bus.broker import EmbeddedBroker, find_tansu
    from streams.bus.topics import Topics, create_topics
    from streams.config import load_config
    from tests.fakes import FakeVendorServer
    from tests.stack import free_port, write_config

    for item in args.set:
        key, _, value = item.partition("=")
        TIMING[key] = yaml.safe_load(value)
    started = time.time()
    info = machine()
    rng = random.Random(args.seed)
    world = build_world(args.identities, rng)
    raw = make_events(world, args.events, args.span_hours * 3600, rng)
    n = len(raw)
    events = [LoginEvent.from_dict(e) for e in raw]
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    tmp = Path(tempfile.mkdtemp(prefix="accessguard-bench-scaleout-"))
    print(f"scaleout: {n} events; nproc {info['nproc']}; workdir {tmp}", flush=True)
    registry = tmp / "registry.yaml"
    registry_info = write_registry(registry, world)
    server = FakeVendorServer()
    broker = EmbeddedBroker(find_tansu(), log_path=tmp / "tansu.log").start()
    phases: dict[str, dict[str, Any]] = {}
    live: list[WorkerProc] = []
    try:
        cfg = write_config(
            tmp / "config.yaml",
            data_dir=tmp / "data",
            vendor_url=server.url,
            broker=broker.url,
            http_port=free_port(),
            extra={"registry": str(registry)},
        )
        pub: dict[str, Any] = {}
        offsets: dict[int, int] = {}
        timeout = max(180.0, n / 1000)
        partitions = 0
        detections: dict[str, Counter[tuple[str, str]]] = {}
        for key, count, kill in (
            ("one", 1, None),
            ("two", 2, None),
            ("four", 4, None),
            ("kill", 2, args.kill_at),
        ):
            # Each phase on topics of its own (registry, events, lifecycle, ledger, rule
            # state): the same work for each, not the rule state and ledger the phase before
            # left behind (which changes how many detections fire, and so the rate).
            prefix = f"bench-{key}"
            config = load_config(cfg, env={"ACCESSGUARD_TOPICS_PREFIX": prefix})
            topics = Topics.from_config(config)
            partitions = int(config["topics.partitions"])
            create_topics(config, broker.bootstrap)
            registry_import(broker.url, tmp / f"import-{key}", registry, prefix=prefix)
            group = f"scaleout-{key}-{stamp.lower()}"
            live = make_workers(
                tmp,
                count,
                group=group,
                registry=registry,
                vendor_url=server.url,
                broker_url=broker.url,
                prefix=prefix,
            )

            def feed(topics: Topics = topics, key: str = key, parts: int = partitions) -> None:
                nonlocal pub, offsets
                pub = asyncio.run(
                    publish(
                        broker.bootstrap,
                        topics.auth_events,
                        parts,
                        events,
                        None if args.keying == "principal" else registry,
                    )
                )
                offsets = end_offsets(broker.bootstrap, topics.auth_events)
                print(f"  {key}: published {pub['messages']} messages; end offsets {offsets}")

            phases[key] = run_phase(live, n, timeout, kill_at=kill, feed=feed)
            if kill is None:
                detections[key] = settled_detections(broker.bootstrap, topics.audit)
                phases[key]["detections"] = sum(detections[key].values())
            codes = [w.stop() for w in live]
            phases[key]["exit_codes"] = codes
            phases[key]["responses"] = responses(live)
            live = []
            rate = phases[key]["events_per_s"]
            print(f"  {key}: {rate and f'{rate:,.0f}'} events/s", flush=True)
        phases["kill"]["recovery"] = recovery(phases["kill"], phases["one"]["events_per_s"])
        expected = replay_detections(events, registry, load_config(cfg))
        same = {key: found == expected for key, found in detections.items()}
        diff = {
            key: {
                "missing": sorted(map(list, (expected - found).keys())),
                "extra": sorted(map(list, (found - expected).keys())),
            }
            for key, found in detections.items()
            if found != expected
        }
    finally:
        for w in live:
            w.stop()
        broker.stop()
        server.stop()

    one, two = phases["one"]["events_per_s"], phases["two"]["events_per_s"]
    four = phases["four"]["events_per_s"]
    rec = phases["kill"]["recovery"]
    result = {
        "benchmark": "scaleout",
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
        "duration_s": time.time() - started,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "settings": {
            "events": n,
            "identities": args.identities,
            "partitions": partitions,
            "kill_at": args.kill_at,
            "worker_timing": TIMING,
            "poll_s": POLL,
        },
        "registry": registry_info,
        "publish": pub,
        "phases": phases,
        "speedup_two_over_one": two / one if one and two else None,
        "speedup_four_over_one": four / one if one and four else None,
        "per_core_efficiency": {
            "two": two / one / min(2, info["nproc"]) if one and two else None,
            "four": four / one / min(4, info["nproc"]) if one and four else None,
        },
        "detections": {
            "replay": sum(expected.values()),
            "by_rule": dict(Counter(rule for rule, _ in expected.elements())),
            "same_as_replay": same,
            "differences": diff,
        },
        "reevaluated_after_kill": phases["kill"]["events"] - n,
    }
    out = args.out or RESULTS / f"scaleout-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    print(f"\n  {'phase':<34}{'events':>9}{'seconds':>9}{'events/s':>11}")
    names = {
        "one": "1 worker",
        "two": "2 workers",
        "four": "4 workers",
        "kill": "2 workers, one SIGKILLed",
    }
    for key, r in phases.items():
        secs = r.get("seconds")
        rate = r.get("events_per_s")
        print(
            f"  {names[key]:<34}{r['events']:>9}{'-' if secs is None else f'{secs:.2f}':>9}"
            f"{'-' if rate is None else f'{rate:,.0f}':>11}"
        )
    print(
        "  speedup 2/1 = "
        + (
            "-"
            if result["speedup_two_over_one"] is None
            else f"{result['speedup_two_over_one']:.2f}"
        )
    )
    print(
        "  speedup 4/1 = "
        + (
            "-"
            if result["speedup_four_over_one"] is None
            else f"{result['speedup_four_over_one']:.2f}"
        )
        + f" on {info['nproc']} cores"
    )
    print(
        f"  detections: replay {sum(expected.values())}; same as replay with 1/2/4 workers: "
        + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in same.items())
    )
    pre = rec["survivor_pre_kill_rate"]
    print(
        f"  kill at {phases['kill']['killed_at_s']:.1f}s: survivor pre-kill "
        f"{'-' if pre is None else f'{pre:,.0f}'} events/s; first growth after "
        f"{rec['survivor_first_growth_after_kill_s']}s; dip (rebalance) at "
        f"{rec['dip_after_kill_s']}s; >= 80% of pre-kill rate after "
        f"{rec['recover_to_80pct_of_pre_kill_s']}s; >= 80% of one-worker rate after "
        f"{rec['recover_to_80pct_of_one_worker_s']}s; re-evaluated "
        f"{result['reevaluated_after_kill']} events"
    )
    print(f"results: {out}")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    ok = all(r.get("complete") for r in phases.values()) and all(same.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
