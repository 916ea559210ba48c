"""Login events keyed right (streams/runtime/engine.py ``handle_login_batch`` with a partition,
``handle_routed_batch``): a rule whose group key (resolved identity, source IP) belongs to
another partition is evaluated there, so the detections do not depend on how the edge keyed
the events or on how many workers share the partitions."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.bus.rulelog import RuleStateLog
from streams.bus.topics import partition_for
from streams.decide.login import LoginPipeline
from streams.detect.load import load_rules
from tests.engine_harness import EngineHarness, build_engine

RULES = Path(__file__).resolve().parent.parent / "rules"
PARTITIONS = 4
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

#: Seven people, each with an e-mail and an Okta id, all admins of one brand account.
PEOPLE = ("ana", "ben", "cy", "dee", "eli", "fay", "gus")
REGISTRY = (
    "accounts:\n  - {id: ig-brand, platform: instagram, handle: '@b', criticality: high,"
    " provider: hootsuite}\n"
)
REGISTRY += "identities:\n" + "".join(
    f"  - {{id: {p}, name: {p}, kind: employee, emails: [{p}@brand.example], "
    f"aliases: {{okta: 00u-{p}}}}}\n"
    for p in PEOPLE
)
REGISTRY += "grants:\n" + "".join(
    f"  - {{identity: {p}, account: ig-brand, role: admin, via: sso, mfa: webauthn}}\n"
    for p in PEOPLE
)


def event(
    n: int, who: str, *, outcome: str, ip: str, okta_id: bool, minute: float
) -> dict[str, Any]:
    return {
        "event_id": f"e-{n}",
        "vendor": "okta",
        "time": (T0 + timedelta(minutes=minute)).isoformat(),
        "principal": f"00u-{who}" if okta_id else f"{who}@brand.example",
        "outcome": outcome,
        "event_type": "user.session.start",
        "ip": ip,
    }


def workload() -> list[dict[str, Any]]:
    """A brute force against ana under her two login names, a spray from one address across
    everyone, and ordinary successes: keyed by principal, they land on several partitions."""
    rng = random.Random(11)
    events = []
    n = 0
    for i in range(12):  # ana: 12 failures in 6 minutes, alternating login names
        n += 1
        events.append(
            event(
                n, "ana", outcome="failure", ip=f"198.51.100.{i}", okta_id=i % 2 == 0, minute=i / 2
            )
        )
    for i, who in enumerate(PEOPLE[1:]):  # six people fail from one address
        n += 1
        events.append(
            event(n, who, outcome="failure", ip="203.0.113.9", okta_id=i % 2 == 1, minute=1 + i)
        )
    for _ in range(60):
        n += 1
        who = rng.choice(PEOPLE)
        events.append(
            event(
                n,
                who,
                outcome="success",
                ip=f"192.0.2.{rng.randint(1, 9)}",
                okta_id=rng.random() < 0.5,
                minute=rng.uniform(0, 30),
            )
        )
    events.sort(key=lambda e: e["time"])
    return events


def keyed_by_principal(events: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """The events per partition as an edge without the registry keys them."""
    by_partition: dict[int, list[dict[str, Any]]] = {}
    for e in events:
        by_partition.setdefault(
            partition_for(f"principal:{e['principal']}", PARTITIONS), []
        ).append(e)
    return by_partition


def engine(tmp_path: Path) -> EngineHarness:
    h = build_engine(tmp_path, registry=REGISTRY, config={"topics": {"partitions": PARTITIONS}})
    h.engine.login = LoginPipeline(load_rules(RULES), h.config.provider_types())
    h.engine.rule_log = RuleStateLog(h.engine.login.state, shards=PARTITIONS, writer=tmp_path.name)
    return h


def detections(harnesses: list[EngineHarness]) -> Counter[tuple[str, str]]:
    """(rule, group) of every detection audited by any of the engines."""
    found: Counter[tuple[str, str]] = Counter()
    for h in harnesses:
        for _key, value in h.publisher.on(h.topics.audit):
            if value.get("kind") == "detection":
                found[(value["rule"], value["group"])] += 1
    return found


def run_cluster(
    tmp_path: Path, workers: int, events: list[dict[str, Any]]
) -> Counter[tuple[str, str]]:
    """The events keyed by principal (an edge without the registry), one message per
    partition, consumed by ``workers`` engines that own the partitions round-robin; what one
    routes is delivered to the owner of the target partition until nothing is left."""
    cluster = [engine(tmp_path / f"w{i}") for i in range(workers)]
    owner = {p: cluster[p % workers] for p in range(PARTITIONS)}
    for h in cluster:
        h.engine.owned = {p for p, o in owner.items() if o is h}
    by_partition = keyed_by_principal(events)

    async def scenario() -> None:
        for p, batch in sorted(by_partition.items()):
            await owner[p].engine.handle_login_batch(orjson.dumps(batch), p)
        delivered = {id(h): 0 for h in cluster}
        while True:
            pending = [
                (h, rec)
                for h in cluster
                for rec in h.publisher.records[delivered[id(h)] :]
                if rec[0] == h.topics.auth_routed
            ]
            for h in cluster:
                delivered[id(h)] = len(h.publisher.records)
            if not pending:
                return
            for _h, (_topic, key, value) in pending:
                target = owner[int(key.split(":")[1])]
                await target.engine.handle_routed_batch(orjson.dumps(value))

    try:
        asyncio.run(scenario())
        return detections(cluster)
    finally:
        for h in cluster:
            h.close()


def replay(tmp_path: Path, events: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """One engine, no partition: every key is local (what ``accessguard replay`` does)."""
    h = engine(tmp_path / "replay")

    async def scenario() -> None:
        await h.engine.handle_login_batch(orjson.dumps(events))

    try:
        asyncio.run(scenario())
        return detections([h])
    finally:
        h.close()


def test_workload_really_spreads_over_partitions() -> None:
    """The test is only worth something if the principal keys of one identity and of one
    spraying address do land on different partitions."""
    events = workload()
    ana = {
        partition_for(f"principal:{e['principal']}", PARTITIONS)
        for e in events
        if "ana" in e["principal"]
    }
    spray = {
        partition_for(f"principal:{e['principal']}", PARTITIONS)
        for e in events
        if e["ip"] == "203.0.113.9"
    }
    assert len(ana) == 2
    assert len(spray) >= 3


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_the_same_detections_with_one_two_or_four_workers_as_replay(
    tmp_path: Path, workers: int
) -> None:
    """Brute force (by identity, two login names on two partitions) and spray (by IP, six
    people on several partitions) are each detected exactly once, as replay detects them."""
    events = workload()
    expected = replay(tmp_path, events)
    rules = {rule for rule, _ in expected}
    assert {"brute_force_identity", "password_spray_ip"} <= rules
    assert run_cluster(tmp_path, workers, events) == expected


def test_without_routing_the_split_identity_is_missed(tmp_path: Path) -> None:
    """The control: each partition evaluating every rule locally (the old behaviour) splits
    ana's failures and the spray, and both detections are lost."""
    events = workload()
    h = engine(tmp_path / "split")
    by_partition = keyed_by_principal(events)

    async def scenario() -> None:
        for _p, batch in sorted(by_partition.items()):
            # a fresh rule state per partition: what separate workers held
            h.engine.login = LoginPipeline(load_rules(RULES), h.config.provider_types())
            await h.engine.handle_login_batch(orjson.dumps(batch))

    try:
        asyncio.run(scenario())
        found = detections([h])
    finally:
        h.close()
    # failures_then_success still fires here (each login name alone has 6 failures before a
    # success), once per partition: duplicated, which routing also prevents
    split = {rule for rule, _ in found}
    assert not split & {"brute_force_identity", "password_spray_ip"}


def test_routed_records_name_their_rules_groups_and_go_to_the_owner(tmp_path: Path) -> None:
    """What leaves for another partition: the resolved event (identity filled in) and the
    group fields whose rules run there, on the owner's partition of auth.routed."""
    h = engine(tmp_path)
    events = workload()
    arrived = partition_for("principal:00u-ana", PARTITIONS)

    async def scenario() -> None:
        mine = [e for e in events if e["principal"] == "00u-ana"]
        await h.engine.handle_login_batch(orjson.dumps(mine), arrived)

    try:
        asyncio.run(scenario())
        routed = [(k, v) for t, k, v in h.publisher.records if t == h.topics.auth_routed]
    finally:
        h.close()
    home = partition_for("ana", PARTITIONS)
    assert home != arrived
    assert routed
    for key, entries in routed:
        target = int(key.split(":")[1])
        for entry in entries:
            assert entry["e"]["identity"] == "ana"
            if target == home:
                assert "identity" in entry["g"]
            else:
                assert entry["g"] == ["ip"]
                assert partition_for(f"ip:{entry['e']['ip']}", PARTITIONS) == target


def test_a_key_whose_partition_this_worker_owns_is_evaluated_in_place(tmp_path: Path) -> None:
    """Routing is for keys another worker owns: a worker that owns the key's partition too
    (one worker owns them all) evaluates it where the event arrived, with the same
    detections, instead of sending the event round the broker to itself. Owning only the
    partition it arrived on, the same message routes."""
    events = workload()
    expected = replay(tmp_path, events)
    by_partition = keyed_by_principal(events)

    def routed_and_found(owned: set[int] | None, name: str) -> tuple[int, Counter[Any]]:
        h = engine(tmp_path / name)
        h.engine.owned = owned

        async def scenario() -> None:
            for p, batch in sorted(by_partition.items()):
                await h.engine.handle_login_batch(orjson.dumps(batch), p)

        try:
            asyncio.run(scenario())
            routed = [r for r in h.publisher.records if r[0] == h.topics.auth_routed]
            return len(routed), detections([h])
        finally:
            h.close()

    assert routed_and_found(set(range(PARTITIONS)), "all") == (0, expected)
    some = {0, 1}  # the spray's key is elsewhere: routed, the rest in place
    spray_home = partition_for("ip:203.0.113.9", PARTITIONS)
    assert spray_home not in some
    routed, _ = routed_and_found(some, "some")
    assert routed > 0


def test_the_rule_clock_follows_the_slowest_origin_still_sending() -> None:
    """One partition hours ahead of another must not expire the windows of keys the slower
    one still feeds (that made detections depend on how partitions were interleaved); once
    the slow one has gone quiet, the clock follows the others."""
    import time

    from streams.model.records import LoginEvent
    from streams.model.registry import Registry
    from streams.model.state import StateStore

    pipeline = LoginPipeline(load_rules(RULES), {})
    registry, lifecycle = Registry.from_changes([]), StateStore()
    early = LoginEvent.from_dict(
        event(1, "ana", outcome="success", ip="192.0.2.1", okta_id=False, minute=0)
    )
    late = LoginEvent.from_dict(
        event(2, "ben", outcome="success", ip="192.0.2.2", okta_id=False, minute=300)
    )
    wall = T0 + timedelta(days=1)
    pipeline.process(early, registry, lifecycle, origin=0)
    time.sleep(0.2)
    pipeline.process(late, registry, lifecycle, origin=1)
    assert pipeline.rule_clock(wall, idle_after=30) == early.time
    assert pipeline.rule_clock(wall, idle_after=0.1) == late.time


def test_the_edge_keys_by_the_identity_it_resolves_or_else_by_the_login_name() -> None:
    """The worker's edges and pollers key an event by its resolved identity (so its owner gets
    it first hand); an unknown login name, or a registry that cannot answer, keys it by the
    principal, and the workers route it."""
    from streams.model.records import LoginEvent
    from streams.model.registry_yaml import parse_registry
    from streams.runtime.parts import identity_key

    registry, problems = parse_registry(REGISTRY)
    assert problems == []
    key_of = identity_key(lambda: registry)
    known = LoginEvent.from_dict(
        event(1, "ana", outcome="success", ip="192.0.2.1", okta_id=True, minute=0)
    )
    unknown = LoginEvent.from_dict(
        {
            **event(2, "ana", outcome="success", ip="192.0.2.1", okta_id=False, minute=0),
            "principal": "zed@x.example",
        }
    )
    assert key_of(known) == "ana"
    assert key_of(unknown) == "principal:zed@x.example"

    def broken() -> Any:
        raise RuntimeError("registry being replaced")

    assert identity_key(broken)(known) == "principal:00u-ana"
