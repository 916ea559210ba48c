"""Benchmark: login-event throughput on the embedded broker, three ways over the same topic.

One embedded Tansu broker; the topics created by accessguard (streams.bus.topics); a generated
registry (a few thousand identities with Okta and Entra aliases, grants on 50 brand accounts),
imported with ``accessguard registry import``; N canonical login events (a realistic mix:
mostly successes, some failures and MFA challenges, geo for most, a few unknown principals,
targets on brand accounts, plus a handful of attacks the shipped rules must catch) published
into ``accessguard.auth.events`` exactly as the edge does it (connectors/ingest/auth_ingest.py
``LoginPublisher.publish``: one JSON array of at most 500 events per message, per partition,
keyed by ``partition_for(event.partition_key)``). Then, each on its own consumer group:

(a) a raw aiokafka consumer (group-less, all partitions assigned, ``getmany``) that decodes
    every message (orjson) and counts its events;
(b) a bare Faust agent built by streams.runtime.app.create_app (the same tuned transport
    and settings as the worker, raw value serializer) that only decodes and counts;
(c) the full pipeline: ``accessguard worker`` as a subprocess against the same broker, with
    every provider and sink on a local FakeVendorServer (tests/fakes.py). Measured from
    /metrics ``accessguard_login_events_evaluated_total``: from the first poll that sees it
    move to the poll that sees N. Consumer lag (committed offsets of the worker's group vs the
    end offsets) is read when N is reached and again once commits settle.

Rates exclude start-up: each is (N - events seen at the first observation) / (time from the
first observation to the last event). A /metrics scrape costs the worker ~10 ms of its event
loop, so (c) polls every 0.25 s and every 10 ms only when N is less than 0.6 s away. CPU
seconds of the worker (per thread), of the broker and of everything else on the machine during
(c) come from /proc: other processes on the same cores move the numbers by 10-30 %.
Event times cover the last --span-hours up to the start (a backlog, as after an outage).

    .venv/bin/python bench/login_throughput.py              # 200k events, about 1 minute
    .venv/bin/python bench/login_throughput.py --quick      # 20k events, about 30 seconds
    .venv/bin/python bench/login_throughput.py --profile-worker   # (c) under cProfile
    .venv/bin/python bench/login_throughput.py --inproc     # no broker: per-stage costs

Prints a table and writes bench/results/login_throughput-<UTC time>.json (with
--profile-worker also the .prof file and its top functions).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
import requests  # noqa: E402
import yaml  # noqa: E402

from streams.model.records import LoginEvent  # noqa: E402
from streams.model.registry_yaml import load_registry  # noqa: E402
from streams.support.times import format_time  # noqa: E402

RESULTS = REPO / "bench" / "results"
METRIC = "accessguard_login_events_evaluated_total"
#: In-process stages: one rule-state checkpoint per this many 500-event messages (25,000
#: events: one ``worker.rule_interval`` of 1 s at the issue's goal of 25k events/s).
CHECKPOINT_BATCHES = 50
PLATFORMS = ("instagram", "facebook", "x", "tiktok", "linkedin", "youtube", "threads")
PLATFORM_PROVIDERS = ("hootsuite", "meta-business")
ROLES = ("read_only", "needs_approval", "can_reply", "full_publishing", "admin")
ROLE_WEIGHTS = (15, 15, 30, 30, 10)
#: country, city, lat, lon (homes are drawn mostly from the first seven)
PLACES = (
    ("US", "New York", 40.71, -74.01),
    ("GB", "London", 51.51, -0.13),
    ("DE", "Berlin", 52.52, 13.40),
    ("FR", "Paris", 48.86, 2.35),
    ("IT", "Milan", 45.46, 9.19),
    ("ES", "Madrid", 40.42, -3.70),
    ("NL", "Amsterdam", 52.37, 4.90),
    ("SG", "Singapore", 1.35, 103.82),
    ("JP", "Tokyo", 35.68, 139.69),
    ("AU", "Sydney", -33.87, 151.21),
    ("BR", "Sao Paulo", -23.55, -46.63),
    ("CA", "Toronto", 43.65, -79.38),
    ("IN", "Bengaluru", 12.97, 77.59),
)
APPS = ("Okta Dashboard", "Microsoft 365", "Google Workspace", "Slack", "Jira", None)
AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Okta Verify/9.12.0 (Android 14)",
)


# ------------------------------------------------------------------------------ the world


@dataclass
class Person:
    n: int
    id: str
    email: str
    okta: str
    entra: str
    status: str
    grants: list[str]  # account ids
    home: tuple[str, str, float, float]
    ip: str
    device: str
    agent: str
    weight: float


@dataclass
class World:
    people: list[Person]
    accounts: list[dict[str, Any]]
    doc: dict[str, Any]
    unknown: list[str]
    mix: Counter[str] = field(default_factory=Counter)
    epoch: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def by_id(self) -> dict[str, dict[str, Any]]:
        return {a["id"]: a for a in self.accounts}


def build_world(identities: int, rng: random.Random) -> World:
    accounts = [
        {
            "id": f"acct-{a:02d}",
            "platform": PLATFORMS[a % len(PLATFORMS)],
            "handle": f"@brand{a:02d}",
            "criticality": ("medium", "high", "critical")[a % 3],
            "provider": PLATFORM_PROVIDERS[a % 2],
        }
        for a in range(50)
    ]
    people: list[Person] = []
    idents: list[dict[str, Any]] = []
    grants: list[dict[str, Any]] = []
    for n in range(identities):
        status = "active"
        if n % 997 == 500:
            status = "offboarded"
        elif n % 1499 == 700:
            status = "suspended"
        pid = f"u{n:05d}"
        okta = f"00ub{n:08d}xyzA1"
        entra = f"6f1c2d3e-0000-4000-8000-{n:012d}"
        email = f"user{n:05d}@brand.example"
        held: list[str] = []
        if rng.random() >= 0.3:
            k = rng.choice((1, 1, 2, 2, 3, 4))
            for acct in rng.sample(accounts, k):
                grant: dict[str, Any] = {
                    "identity": pid,
                    "account": acct["id"],
                    "role": rng.choices(ROLES, ROLE_WEIGHTS)[0],
                    "via": rng.choice(("sso", "sso", "native")),
                    "mfa": rng.choice(("push", "totp", "webauthn")),
                }
                roll = rng.random()
                if roll < 0.004:
                    grant["expires_at"] = date(2026, 1, 15)  # past: expired_grant_used
                elif roll < 0.05:
                    grant["expires_at"] = date(2027, 6, 30)
                grants.append(grant)
                held.append(acct["id"])
        home = PLACES[rng.choice((0, 0, 1, 1, 2, 3, 4, 5, 6))]
        weight = rng.lognormvariate(0.0, 0.8)
        if status != "active":
            weight *= 0.02  # offboarded people rarely still get in
        people.append(
            Person(
                n=n,
                id=pid,
                email=email,
                okta=okta,
                entra=entra,
                status=status,
                grants=held,
                home=home,
                ip=f"100.{64 + n // 65536}.{(n // 256) % 256}.{n % 256}",
                device=f"okta-dev-{n:05d}",
                agent=rng.choice(AGENTS),
                weight=weight,
            )
        )
        idents.append(
            {
                "id": pid,
                "name": f"Bench User {n:05d}",
                "kind": "contractor" if n % 7 == 3 else "employee",
                "employee_id": f"E{n:06d}",
                "emails": [email],
                "aliases": {
                    "okta": okta,
                    "entra": entra,
                    "hootsuite": f"hs-{n}",
                    "meta-business": f"mb-{n}",
                },
                "status": status,
            }
        )
    doc = {"accounts": accounts, "identities": idents, "grants": grants}
    unknown = [
        *(f"former.contractor{j}@brand.example" for j in range(10)),
        *(f"someone{j}@gmail.example" for j in range(20)),
    ]
    return World(people, accounts, doc, unknown)


def write_registry(path: Path, world: World) -> dict[str, int]:
    path.write_text(yaml.safe_dump(world.doc, sort_keys=False), encoding="utf-8")
    registry = load_registry(path)  # raises RegistryError listing every problem
    return {
        "accounts": len(registry.accounts),
        "identities": len(registry.identities),
        "grants": sum(len(registry.grants_of(i)) for i in registry.identities),
        "offboarded_or_suspended": sum(
            1 for i in registry.identities.values() if i.status != "active"
        ),
    }


def _base(world: World, i: int, vendor: str, t: float, principal: str) -> dict[str, Any]:
    return {
        "event_id": f"bench-{i}",
        "vendor": vendor,
        "time": format_time(world.epoch + timedelta(seconds=t)),
        "principal": principal,
        "event_type": "user.session.start",
    }


def _geo(place: tuple[str, str, float, float]) -> dict[str, Any]:
    return {"country": place[0], "city": place[1], "lat": place[2], "lon": place[3]}


def known_event(
    i: int, t: float, p: Person, world: World, rng: random.Random, *, outcome: str | None = None
) -> dict[str, Any]:
    vendor = rng.choices(("okta", "entra", "google"), (70, 20, 10))[0]
    if outcome is None:
        outcome = rng.choices(("success", "failure", "challenge"), (88, 8, 4))[0]
    ev = _base(world, i, vendor, t, p.email)
    ev["outcome"] = outcome
    ev["vendor_event_id"] = f"{vendor}-{i:09d}"
    if vendor == "okta":
        ev["principal_id"] = p.okta
    elif vendor == "entra":
        ev["principal_id"] = p.entra
        ev["event_type"] = "signIn"
    else:
        ev["event_type"] = "login_success" if outcome == "success" else "login_failure"
    if outcome == "failure":
        ev["failure_reason"] = "INVALID_CREDENTIALS"
    elif outcome == "challenge":
        ev["event_type"] = "user.mfa.okta_verify.push"
        ev["mfa_method"] = "push"
        ev["mfa_result"] = rng.choices(("none", "denied", "timeout"), (60, 25, 15))[0]
    else:
        roll = rng.random()
        if roll < 0.35:
            ev["mfa_method"], ev["mfa_result"] = "push", "success"
        elif roll < 0.50:
            ev["mfa_method"], ev["mfa_result"] = "totp", "success"
        elif roll < 0.60:
            ev["mfa_method"], ev["mfa_result"] = "webauthn", "success"
    place = p.home
    if outcome == "success" and rng.random() < 0.0002:
        place = rng.choice([pl for pl in PLACES if pl[0] != p.home[0]])
        world.mix["travel"] += 1
    if vendor in ("okta", "entra"):
        if rng.random() < 0.85:
            ev["geo"] = _geo(place)
        ev["device"] = p.device if rng.random() < 0.9 else None
        if ev["device"] and rng.random() < 0.0002:
            ev["device"] = f"{p.device}-new{i}"
            world.mix["new_device"] += 1
    elif rng.random() < 0.5:
        ev["geo"] = {"country": place[0]}
    ev["ip"] = p.ip if rng.random() < 0.95 else f"100.100.{rng.randrange(2)}.{rng.randrange(250)}"
    ev["user_agent"] = p.agent
    ev["risk"] = "low"
    if p.grants and rng.random() < 0.6:
        acct = world.by_id[rng.choice(p.grants)]
        form = rng.random()
        if form < 0.4:
            ev["target"] = acct["id"]
        elif form < 0.7:
            ev["target"] = acct["handle"]
        else:
            ev["target"] = f"{acct['platform']}:{acct['handle']}"
        world.mix["target_granted"] += 1
    elif rng.random() < 0.0001:
        ev["target"] = rng.choice(world.accounts)["id"]  # a brand account without a grant
        world.mix["target_without_grant"] += 1
    else:
        ev["target"] = rng.choice(APPS)
    world.mix[f"known_{outcome}"] += 1
    return ev


def unknown_event(i: int, t: float, world: World, rng: random.Random) -> dict[str, Any]:
    j = rng.randrange(len(world.unknown))
    principal = world.unknown[j]
    outcome = rng.choices(("success", "failure", "challenge"), (50, 40, 10))[0]
    vendor = rng.choice(("okta", "google"))
    ev = _base(world, i, vendor, t, principal)
    ev["outcome"] = outcome
    if vendor == "okta":
        ev["principal_id"] = f"00uunknown{j:04d}"
    if outcome == "failure":
        ev["failure_reason"] = "INVALID_CREDENTIALS"
    ev["ip"] = f"198.51.100.{rng.randrange(200)}"
    if rng.random() < 0.5:
        ev["geo"] = _geo(rng.choice(PLACES))
    if j < 5 and rng.random() < 0.1:
        ev["target"] = rng.choice(world.accounts)["handle"]
        world.mix["unknown_to_brand"] += 1
    world.mix[f"unknown_{outcome}"] += 1
    return ev


def make_events(world: World, n: int, span: float, rng: random.Random) -> list[dict[str, Any]]:
    """``n`` canonical events over the last ``span`` seconds of event time, in time order."""
    # The stream ends now (a backlog of the last hours): the worker's rule timer expires state
    # by wall-clock time, so events dated long ago would lose their windows at every tick.
    world.epoch = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=span)
    timed: list[tuple[float, dict[str, Any]]] = []
    scale = max(1, n // 100_000)
    i = 0
    people = world.people
    active = [p for p in people if p.status == "active"]

    def at(t: float, ev: dict[str, Any]) -> None:
        timed.append((t, ev))

    # attacks the shipped rules must catch (a few per 100k events)
    for _ in range(scale):
        victim = rng.choice(active)  # brute force: 12 failures in 3 minutes
        t0 = rng.uniform(600, span - 600)
        for k in range(12):
            i += 1
            at(t0 + k * 15, known_event(i, t0 + k * 15, victim, world, rng, outcome="failure"))
        world.mix["scenario_brute_force"] += 1
        t0 = rng.uniform(600, span - 600)  # password spray: one IP, 8 people, 4 minutes
        sprayer = f"203.0.113.{rng.randrange(250)}"
        for k, target in enumerate(rng.sample(active, 8)):
            i += 1
            ev = known_event(i, t0 + k * 30, target, world, rng, outcome="failure")
            ev["ip"] = sprayer
            at(t0 + k * 30, ev)
        world.mix["scenario_password_spray"] += 1
        victim = rng.choice(active)  # MFA fatigue: 4 denied pushes, then an accepted one
        t0 = rng.uniform(600, span - 600)
        for k in range(5):
            i += 1
            ev = known_event(i, t0 + k * 40, victim, world, rng, outcome="challenge")
            ev["mfa_method"], ev["mfa_result"] = "push", "denied"
            if k == 4:
                ev["outcome"], ev["mfa_result"] = "success", "success"
            at(t0 + k * 40, ev)
        world.mix["scenario_mfa_fatigue"] += 1
    chosen = rng.choices(people, weights=[p.weight for p in people], k=n - len(timed))
    for p in chosen:
        i += 1
        t = rng.uniform(0, span)
        if rng.random() < 0.01:
            at(t, unknown_event(i, t, world, rng))
        else:
            at(t, known_event(i, t, p, world, rng))
    timed.sort(key=lambda x: x[0])
    return [ev for _, ev in timed]


# ------------------------------------------------------------------------------ broker side


def registry_import(
    bootstrap_url: str, data_dir: Path, file: Path, prefix: str = "accessguard"
) -> dict[str, Any]:
    """``accessguard registry import FILE`` against the broker, configured by env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSGUARD_")}
    env.update(
        ACCESSGUARD_TOPICS_PREFIX=prefix,
        ACCESSGUARD_BROKER=bootstrap_url,
        ACCESSGUARD_DATA_DIR=str(data_dir),
        ACCESSGUARD_LOG_FORMAT="json",
        ACCESSGUARD_LOG_LEVEL="warning",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cli", "registry", "import", str(file)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"registry import failed: {proc.stderr[-2000:]}")
    summary: dict[str, Any] = orjson.loads(proc.stdout)
    return summary


async def publish(
    bootstrap: str,
    topic: str,
    partitions: int,
    events: list[LoginEvent],
    registry_path: Path | None = None,
) -> dict[str, Any]:
    """Publish through the edge's own code (LoginPublisher.publish): same batching, same keys.
    With ``registry_path`` the edge keys each event by the identity it resolves to (as the
    worker's own edges and ``connect poller`` do); without, by the login name (an edge that
    holds no registry: the workers then route most events to the identity's owner)."""
    from connectors.ingest.auth_ingest import BATCH_EVENTS, AuthIngest
    from streams.bus.views import Publisher
    from streams.runtime.parts import identity_key

    key_of = None
    if registry_path is not None:
        registry = load_registry(registry_path)
        key_of = identity_key(lambda: registry)

    publisher = Publisher(bootstrap, client_id="bench-producer")
    await publisher.start()
    sent: list[int] = []
    original = publisher.send

    async def counting_send(topic: str, key: str, value: bytes | None, **kw: Any) -> Any:
        sent.append(len(value or b""))
        return await original(topic, key, value, **kw)

    publisher.send = counting_send  # type: ignore[method-assign]
    ingest = AuthIngest(
        token=None,
        max_body=1 << 30,
        publisher=publisher,
        topic=topic,
        dlq_topic=f"{topic}.dlq",
        partitions=partitions,
        key_of=key_of,
    )
    t = time.perf_counter()
    try:
        await ingest.out.publish(events)
    finally:
        await publisher.stop()
    return {
        "messages": len(sent),
        "bytes": sum(sent),
        "events_per_message": BATCH_EVENTS,
        "mean_message_bytes": sum(sent) / max(1, len(sent)),
        "seconds": time.perf_counter() - t,
    }


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="bench-offsets")
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        return {tp.partition: off for tp, off in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


def group_lag(bootstrap: str, group: str, topic: str) -> dict[str, Any]:
    """Committed offsets of ``group`` on ``topic`` against the end offsets."""
    from kafka import KafkaAdminClient

    ends = end_offsets(bootstrap, topic)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-lag")
    try:
        committed = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    per: dict[str, dict[str, int | None]] = {}
    total = 0
    for part, end in ends.items():
        offset = next(
            (m.offset for tp, m in committed.items() if tp.topic == topic and tp.partition == part),
            None,
        )
        lag = end - (offset if offset is not None and offset >= 0 else 0)
        total += lag
        per[str(part)] = {"end": end, "committed": offset, "lag": lag}
    return {"messages": total, "partitions": per}


def settle_lag(bootstrap: str, group: str, topic: str, timeout: float = 6.0) -> dict[str, Any]:
    t = time.monotonic()
    while True:
        lag = group_lag(bootstrap, group, topic)
        if lag["messages"] == 0 or time.monotonic() - t > timeout:
            lag["after_s"] = round(time.monotonic() - t, 2)
            return lag
        time.sleep(0.25)


def cpu_seconds(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_seconds(pid: int | None) -> dict[str, float]:
    """CPU seconds per thread of ``pid`` (name -> seconds; same names summed)."""
    out: dict[str, float] = {}
    if pid is None:
        return out
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if task.name == str(pid):
            name = "main"
        fields = stat.rpartition(")")[2].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all CPUs), from /proc/stat."""
    try:
        cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    return (sum(cpu[:8]) - cpu[3] - cpu[4]) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------ (a) raw


async def raw_consume(bootstrap: str, topic: str, n: int, timeout: float) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="bench-raw",
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        events = messages = 0
        first_events = 0
        t_first = t_last = None
        start = time.perf_counter()
        while events < n:
            if time.perf_counter() - start > timeout:
                break
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            for records in batch.values():
                for rec in records:
                    events += len(orjson.loads(rec.value))
                    messages += 1
            if events and t_first is None:
                t_first, first_events = time.perf_counter(), events
            t_last = time.perf_counter()
    finally:
        await consumer.stop()
    return _rate(
        "raw aiokafka",
        n,
        events=events,
        messages=messages,
        first_events=first_events,
        t_first=t_first,
        t_last=t_last,
        start=start,
    )


def _rate(
    name: str,
    n: int,
    *,
    events: int,
    messages: int,
    first_events: float,
    t_first: float | None,
    t_last: float | None,
    start: float | None,
) -> dict[str, Any]:
    span = (t_last - t_first) if t_first is not None and t_last is not None else None
    rate = (events - first_events) / span if span else None
    return {
        "name": name,
        "events": events,
        "complete": events >= n,
        "messages": messages,
        "events_at_first_observation": first_events,
        "seconds": span,
        "seconds_incl_startup": (t_last - start) if t_last is not None and start else None,
        "events_per_s": rate,
    }


# ------------------------------------------------------------------------------ (b) bare


def bare_agent_main(config_path: str, group: str, n: int, out: str) -> int:
    """Child process: a Faust agent on the auth topic that only decodes and counts."""
    import faust

    from streams.bus.broker import bootstrap_from_url
    from streams.config import load_config
    from streams.runtime.app import create_app

    data_dir = Path(out).parent / "bare-data"
    data_dir.mkdir(parents=True, exist_ok=True)  # Faust exits quietly (code 1) without it
    config = load_config(config_path).with_overrides(worker__id=group, data_dir=str(data_dir))
    app = create_app(config, bootstrap_from_url(config["broker"]))
    topic = app.topic(
        config.topic("auth.events"),
        value_serializer="raw",
        key_serializer="raw",
        partitions=int(config["topics.partitions"]),
    )
    state: dict[str, Any] = {"events": 0, "messages": 0, "t_first": None, "first": 0}
    start = time.perf_counter()

    async def count(stream: Any) -> None:
        async for value in stream:
            state["events"] += len(orjson.loads(value))
            state["messages"] += 1
            if state["t_first"] is None:
                state["t_first"], state["first"] = time.perf_counter(), state["events"]
            if state["events"] >= n and "done" not in state:
                state["done"] = time.perf_counter()
                result = _rate(
                    "bare Faust agent",
                    n,
                    events=state["events"],
                    messages=state["messages"],
                    first_events=state["first"],
                    t_first=state["t_first"],
                    t_last=state["done"],
                    start=start,
                )
                Path(out).write_text(json.dumps(result), encoding="utf-8")
                # let the 0.5 s commit interval pass so the lag read after exit is meaningful
                asyncio.get_running_loop().call_later(1.5, os.kill, os.getpid(), signal.SIGTERM)

    app.agent(topic, name="bench.bare-count")(count)
    worker = faust.Worker(
        app,
        loglevel="warning",
        override_logging=False,
        redirect_stdouts=False,
        console_port=0,
        quiet=True,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def run_bare(
    config_path: Path, group: str, n: int, *, out: Path, log: Path, timeout: float
) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSGUARD_")}
    argv = [sys.executable, __file__, "--_bare", str(config_path), group, str(n), str(out)]
    with log.open("wb") as fh:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=fh, stderr=fh)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if not out.exists():
        tail = log.read_text(errors="replace")[-2000:]
        return {"name": "bare Faust agent", "error": f"no result (exit {proc.returncode}): {tail}"}
    result: dict[str, Any] = json.loads(out.read_text())
    result["exit_code"] = proc.returncode
    return result


# ------------------------------------------------------------------------------ (c) pipeline


class WorkerProc:
    """``accessguard worker`` (optionally under cProfile) in a subprocess."""

    def __init__(self, config_path: Path, log_dir: Path, profile: Path | None = None) -> None:
        self.config_path = config_path
        config = yaml.safe_load(config_path.read_text())
        self.url = f"http://127.0.0.1:{config['http']['port']}"
        self.log_dir = log_dir
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSGUARD_")}
        prefix = [sys.executable]
        if self.profile is not None:
            prefix += ["-m", "cProfile", "-o", str(self.profile)]
        with (
            (self.log_dir / "worker.out").open("wb") as out,
            (self.log_dir / "worker.err").open("wb") as err,
        ):
            self.proc = subprocess.Popen(
                [*prefix, "-m", "streams.cli", "worker", "--config", str(self.config_path)],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}: {self.stderr()[-3000:]}")
            try:
                if requests.get(f"{self.url}/metrics", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"worker not serving /metrics within {timeout}s")

    def metrics(self) -> str:
        return requests.get(f"{self.url}/metrics", timeout=5).text

    def stderr(self) -> str:
        path = self.log_dir / "worker.err"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 60.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(5)


def metric_samples(text: str, name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, _, value = line.rpartition(" ")
            out[head[len(name) :] or "-"] = float(value)
    return out


def run_pipeline(
    worker: WorkerProc,
    n: int,
    *,
    timeout: float,
    broker_pid: int | None,
    bootstrap: str,
    group: str,
    topic: str,
) -> dict[str, Any]:
    from tests.stack import metric_value

    t_start = time.perf_counter()
    worker.start(timeout=90)
    pid = worker.proc.pid if worker.proc else None
    t_first = t_last = None
    first = value = 0.0
    cpu0 = cpu1 = bcpu0 = bcpu1 = None
    busy0 = busy1 = own0 = own1 = 0.0
    threads0: dict[str, float] = {}
    threads1: dict[str, float] = {}
    polls = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = metric_value(worker.metrics(), METRIC)
        polls += 1
        now = time.perf_counter()
        if value > 0 and t_first is None:
            t_first, first = now, value
            cpu0, bcpu0 = cpu_seconds(pid), cpu_seconds(broker_pid)
            busy0, own0 = busy_seconds(), time.process_time()
            threads0 = thread_seconds(pid)
        if value >= n:
            t_last = now
            cpu1, bcpu1 = cpu_seconds(pid), cpu_seconds(broker_pid)
            busy1, own1 = busy_seconds(), time.process_time()
            threads1 = thread_seconds(pid)
            break
        # a scrape costs the worker ~10 ms of CPU: poll slowly, and fast only near the end
        # (the rate's error is the delay between reaching N and seeing it)
        rate = (value - first) / (now - t_first) if t_first is not None and now > t_first else 0
        near = rate > 0 and (n - value) / rate < 0.6
        time.sleep(0.01 if near else 0.25)
    result = _rate(
        "full pipeline",
        n,
        events=int(value),
        messages=0,
        first_events=first,
        t_first=t_first,
        t_last=t_last,
        start=t_start,
    )
    result["metric_polls"] = polls
    result["lag_when_done"] = group_lag(bootstrap, group, topic)
    # the rule-state checkpoint (tick_rules, once a second) shares the event loop with the
    # agent: how many key records it had written by the end, and a few seconds later
    state_topic = topic.replace("auth.events", "rule.state")
    result["rule_state_records_when_done"] = sum(end_offsets(bootstrap, state_topic).values())
    result["lag_settled"] = settle_lag(bootstrap, group, topic)
    time.sleep(3.0)
    result["rule_state_records_3s_later"] = sum(end_offsets(bootstrap, state_topic).values())
    if cpu0 is not None and cpu1 is not None and result["seconds"]:
        used = cpu1 - cpu0
        result["worker_cpu_s"] = used
        result["worker_cpu_util"] = used / result["seconds"]
        result["worker_cpu_us_per_event"] = used / max(1, n - first) * 1e6
        # the event loop (main thread) bounds the rate; the rest is Faust's consumer thread,
        # the executor's provider threads and the kernel
        result["worker_threads_us_per_event"] = {
            name: round((threads1[name] - threads0.get(name, 0.0)) / max(1, n - first) * 1e6, 2)
            for name in sorted(threads1)
            if threads1[name] - threads0.get(name, 0.0) > 0
        }
    if bcpu0 is not None and bcpu1 is not None and result["seconds"]:
        result["broker_cpu_util"] = (bcpu1 - bcpu0) / result["seconds"]
        # everything else on the machine (other processes compete for the same cores)
        others = (busy1 - busy0) - (cpu1 or 0) + (cpu0 or 0) - (bcpu1 - bcpu0) - (own1 - own0)
        result["other_cpu_util"] = max(0.0, others / result["seconds"])
    text = worker.metrics()
    result["rule_matches"] = metric_samples(text, "accessguard_rule_matches_total")
    result["alerts"] = metric_samples(text, "accessguard_alerts_total")
    result["rule_errors"] = metric_value(text, "accessguard_rule_errors_total")
    result["dead_letters"] = metric_value(text, "accessguard_dead_letters_total")
    result["routed"] = metric_value(text, "accessguard_login_events_routed_total")
    result["actions"] = metric_samples(text, "accessguard_actions_total")
    return result


# ------------------------------------------------------------------------------ in-process


def inproc_profile(world: World, events: list[dict[str, Any]], out_dir: Path) -> dict[str, Any]:
    """The worker's per-event path without the broker or Faust (what handle_login_batch does
    per message, minus alert I/O): decode, validate, resolve, every shipped rule with state,
    the metric. CPU time (process_time), best of 3 runs on fresh rule state; then the time per
    stage (timer overhead included: decode, validation, resolution, rules, and the writes of
    rule-state durability: a checkpoint every CHECKPOINT_BATCHES messages and at the end) and
    one run under cProfile (top functions by own time)."""
    from streams.bus.rulelog import RuleStateLog
    from streams.decide.login import LoginPipeline
    from streams.decide.resolve import resolve
    from streams.detect.load import load_rules
    from streams.model.state import StateStore
    from streams.support import metrics

    tmp = Path(tempfile.mkdtemp(prefix="accessguard-bench-inproc-"))
    write_registry(tmp / "registry.yaml", world)
    registry = load_registry(tmp / "registry.yaml")
    ruleset = load_rules(REPO / "rules")
    providers = dict.fromkeys(PLATFORM_PROVIDERS, "generic")
    providers.update(okta="okta", entra="graph", google="google")
    batches = [
        b"[" + b",".join(orjson.dumps(LoginEvent.from_dict(e).to_dict()) for e in chunk) + b"]"
        for chunk in (events[i : i + 500] for i in range(0, len(events), 500))
    ]
    n = len(events)
    lifecycle = StateStore()

    def whole() -> int:
        pipeline = LoginPipeline(ruleset, providers)
        found = 0
        for raw in batches:
            evaluated = 0
            for item in orjson.loads(raw):
                found += len(pipeline.process(LoginEvent.from_dict(item), registry, lifecycle)[1])
                evaluated += 1
            metrics.LOGIN_EVENTS.inc(evaluated)
        return found

    runs = []
    detections = 0
    for _ in range(3):
        t = time.process_time()
        detections = whole()
        runs.append(time.process_time() - t)
    best = min(runs)

    stages = dict.fromkeys(("decode", "from_dict", "resolve", "evaluate", "checkpoint"), 0.0)
    pipeline = LoginPipeline(ruleset, providers)
    rule_log = RuleStateLog(pipeline.state, shards=4, writer="bench")
    clock = time.perf_counter

    def checkpoint() -> None:
        # the worker's rule-state writes (Engine.tick_rules, minus the broker and journal
        # I/O): expiry, then the changed keys as the records the producer would send
        t = clock()
        pipeline.state.expire(pipeline.rule_clock(datetime.now(UTC)), pipeline.engine.horizons)
        prepared = rule_log.prepare(pipeline.state.take_dirty(), lambda _shard: True)
        for _key, value in prepared.writes:
            orjson.dumps(value)
        rule_log.written(prepared, tombstoned=True)
        stages["checkpoint"] += clock() - t

    for done, raw in enumerate(batches, 1):
        t0 = clock()
        items = orjson.loads(raw)
        stages["decode"] += clock() - t0
        for item in items:
            t1 = clock()
            event = LoginEvent.from_dict(item)
            t2 = clock()
            resolved = resolve(event, registry)
            t3 = clock()
            pipeline.engine.evaluate(resolved, registry, lifecycle, pipeline.state)
            t4 = clock()
            stages["from_dict"] += t2 - t1
            stages["resolve"] += t3 - t2
            stages["evaluate"] += t4 - t3
        if done % CHECKPOINT_BATCHES == 0 or done == len(batches):
            checkpoint()

    prof = cProfile.Profile()
    prof.enable()
    whole()
    prof.disable()
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    prof_path = out_dir / f"login_throughput-inproc-{stamp}.prof"
    prof.dump_stats(str(prof_path))
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
    return {
        "events": n,
        "detections": detections,
        "cpu_us_per_event_runs": [r / n * 1e6 for r in runs],
        "cpu_us_per_event": best / n * 1e6,
        "events_per_cpu_s": n / best,
        "stage_us_per_event": {k: v / n * 1e6 for k, v in stages.items()},
        "profile": str(prof_path),
        "top_tottime": buf.getvalue(),
    }


# ------------------------------------------------------------------------------ main


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    git_bin = shutil.which("git") or "/usr/bin/git"
    git = subprocess.run(
        [git_bin, "status", "--porcelain", "--untracked-files=no"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    commit = subprocess.run(
        [git_bin, "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "loadavg_at_start": os.getloadavg(),
        "git_commit": commit,
        "git_modified": [line[3:] for line in git if line.strip()],
    }


def fmt_rate(r: dict[str, Any]) -> str:
    v = r.get("events_per_s")
    return "-" if v is None else f"{v:,.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--events", type=int, default=200_000, help="login events (200k)")
    parser.add_argument("--quick", action="store_true", help="20k events")
    parser.add_argument("--identities", type=int, default=3000, help="registry identities")
    parser.add_argument("--span-hours", type=float, default=6.0, help="event-time span")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile-worker", action="store_true", help="run (c) under cProfile")
    parser.add_argument("--inproc", action="store_true", help="no broker: per-stage costs only")
    parser.add_argument("--skip", default="", help="phases to skip, e.g. 'ab'")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, journal)")
    parser.add_argument(
        "--keying",
        choices=("identity", "principal"),
        default="identity",
        help="how the edge keys events: by resolved identity (the worker's edges and "
        "`connect poller`) or by login name (an edge without the registry)",
    )
    parser.add_argument("--out", type=Path, help="result JSON (default bench/results/...)")
    parser.add_argument("--_bare", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._bare:
        config_path, group, n, out = args._bare
        return bare_agent_main(config_path, group, int(n), out)
    if args.quick:
        args.events = 20_000

    from streams.bus.broker import EmbeddedBroker, find_tansu
    from streams.bus.topics import Topics, create_topics
    from streams.config import load_config
    from tests.fakes import FakeVendorServer
    from tests.stack import free_port, write_config

    started = time.time()
    info = machine()
    rng = random.Random(args.seed)
    t = time.perf_counter()
    world = build_world(args.identities, rng)
    raw_events = make_events(world, args.events, args.span_hours * 3600, rng)
    n = len(raw_events)
    events = [LoginEvent.from_dict(e) for e in raw_events]
    gen_s = time.perf_counter() - t
    print(
        f"login_throughput: {n} events, {args.identities} identities; nproc {info['nproc']}, "
        f"load {info['loadavg_at_start'][0]:.2f}; generated in {gen_s:.1f}s",
        flush=True,
    )
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    if args.inproc:
        result = inproc_profile(world, raw_events, RESULTS)
        print(
            f"\nin-process login path: {result['cpu_us_per_event']:.2f} us/event of CPU = "
            f"{result['events_per_cpu_s']:,.0f} events per CPU-second (best of "
            + ", ".join(f"{r:.1f}" for r in result["cpu_us_per_event_runs"])
            + f"; {result['detections']} detections)"
        )
        print(
            "per stage (us/event, timer overhead included): "
            + ", ".join(f"{k} {v:.2f}" for k, v in result["stage_us_per_event"].items())
        )
        print(result["top_tottime"])
        out = args.out or RESULTS / f"login_throughput-inproc-{stamp}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"machine": info, **result}, indent=2) + "\n")
        print(f"results: {out}")
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="accessguard-bench-login-"))
    print(f"  workdir {tmp}", flush=True)
    registry_info = write_registry(tmp / "registry.yaml", world)
    server = FakeVendorServer()
    broker = EmbeddedBroker(find_tansu(), log_path=tmp / "tansu.log").start()
    phases: dict[str, dict[str, Any]] = {}
    extra: dict[str, Any] = {}
    worker: WorkerProc | None = None
    code: int | None = None
    try:
        group_c = f"bench-pipeline-{stamp.lower()}"
        config_path = write_config(
            tmp / "config.yaml",
            data_dir=tmp / "data",
            vendor_url=server.url,
            broker=broker.url,
            http_port=free_port(),
            extra={
                "registry": str(tmp / "registry.yaml"),
                "log.level": "info",
                "worker.id": group_c,
            },
        )
        config = load_config(config_path)
        topics = Topics.from_config(config)
        partitions = int(config["topics.partitions"])
        create_topics(config, broker.bootstrap)
        extra["registry_import"] = registry_import(
            broker.url, tmp / "import", tmp / "registry.yaml"
        )
        extra["publish"] = asyncio.run(
            publish(
                broker.bootstrap,
                topics.auth_events,
                partitions,
                events,
                None if args.keying == "principal" else tmp / "registry.yaml",
            )
        )
        extra["end_offsets"] = end_offsets(broker.bootstrap, topics.auth_events)
        print(
            f"  registry {registry_info}; published {extra['publish']['messages']} messages "
            f"({extra['publish']['mean_message_bytes'] / 1024:.0f} KiB each) in "
            f"{extra['publish']['seconds']:.1f}s",
            flush=True,
        )
        timeout = max(120.0, n / 2000)
        if "a" not in args.skip:
            phases["a"] = asyncio.run(raw_consume(broker.bootstrap, topics.auth_events, n, timeout))
            print(f"  (a) raw aiokafka: {fmt_rate(phases['a'])} events/s", flush=True)
        if "b" not in args.skip:
            group_b = f"bench-bare-{stamp.lower()}"
            phases["b"] = run_bare(
                config_path,
                group_b,
                n,
                out=tmp / "bare.json",
                log=tmp / "bare.log",
                timeout=timeout,
            )
            if "error" not in phases["b"]:
                phases["b"]["lag_settled"] = settle_lag(
                    broker.bootstrap, group_b, topics.auth_events, timeout=2.0
                )
            print(f"  (b) bare Faust agent: {fmt_rate(phases['b'])} events/s", flush=True)
        if "c" not in args.skip:
            profile = RESULTS / f"login_throughput-worker-{stamp}.prof"
            if args.profile_worker:
                profile.parent.mkdir(parents=True, exist_ok=True)
            worker = WorkerProc(config_path, tmp, profile if args.profile_worker else None)
            phases["c"] = run_pipeline(
                worker,
                n,
                timeout=timeout,
                broker_pid=broker.pid,
                bootstrap=broker.bootstrap,
                group=group_c,
                topic=topics.auth_events,
            )
            print(f"  (c) full pipeline: {fmt_rate(phases['c'])} events/s", flush=True)
            code = worker.stop()
            worker = None
            if args.profile_worker and profile.exists():
                buf = io.StringIO()
                stats = pstats.Stats(str(profile), stream=buf)
                stats.sort_stats("tottime").print_stats(30)
                stats.sort_stats("cumulative").print_stats(40)
                top = profile.with_suffix(".txt")
                top.write_text(buf.getvalue())
                extra["worker_profile"] = {"prof": str(profile), "top": str(top)}
    finally:
        if worker is not None:
            code = worker.stop()
        broker.stop()
        server.stop()

    a, b, c = (phases.get(k, {}).get("events_per_s") for k in "abc")
    ratios = {
        "c/b": c / b if b and c else None,
        "c/a": c / a if a and c else None,
    }
    goal = {
        "target_events_per_s": 25_000,
        "target_c_over_b": 0.8,
        "events_per_s_met": bool(c and c >= 25_000),
        "c_over_b_met": bool(ratios["c/b"] and ratios["c/b"] >= 0.8),
    }
    worker_stderr = (tmp / "worker.err").read_text(errors="replace") if "c" in phases else ""
    result = {
        "benchmark": "login_throughput",
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
        "duration_s": time.time() - started,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "settings": {
            "events": n,
            "identities": args.identities,
            "span_hours": args.span_hours,
            "seed": args.seed,
            "partitions": partitions,
        },
        "registry": registry_info,
        "mix": dict(world.mix),
        **extra,
        "phases": phases,
        "ratios": ratios,
        "goal": goal,
        "worker_exit_code": code,
        "worker_stderr_errors": [
            line[:300] for line in worker_stderr.splitlines() if '"level": "error"' in line
        ][-10:],
    }
    out = args.out or RESULTS / f"login_throughput-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    names = {
        "a": "(a) raw aiokafka consumer",
        "b": "(b) bare Faust agent (count)",
        "c": "(c) full pipeline (worker)",
    }
    print(f"\n  {'phase':<32}{'events':>9}{'msgs':>6}{'seconds':>9}{'events/s':>11}")
    for key, r in phases.items():
        secs = r.get("seconds")
        print(
            f"  {names[key]:<32}{r.get('events', 0):>9}{r.get('messages', 0) or '-':>6}"
            f"{'-' if secs is None else f'{secs:.2f}':>9}{fmt_rate(r):>11}"
        )
    print(
        "  c/b = "
        + ("-" if ratios["c/b"] is None else f"{ratios['c/b']:.2f}")
        + "   c/a = "
        + ("-" if ratios["c/a"] is None else f"{ratios['c/a']:.3f}")
    )
    if "c" in phases:
        pc = phases["c"]
        print(
            f"  consumer lag (worker group): {pc['lag_when_done']['messages']} messages when N was"
            f" counted, {pc['lag_settled']['messages']} after {pc['lag_settled']['after_s']}s"
        )
        if "worker_cpu_util" in pc:
            print(
                f"  worker CPU {pc['worker_cpu_util']:.0%} of a core "
                f"({pc['worker_cpu_us_per_event']:.1f} us/event; event loop "
                f"{pc['worker_threads_us_per_event'].get('main', 0):.1f}), broker "
                f"{pc.get('broker_cpu_util', 0):.0%}, other processes "
                f"{pc.get('other_cpu_util', 0):.0%}; matches {sum(pc['rule_matches'].values()):g}"
                f", alerts {sum(pc['alerts'].values()):g}, rule errors {pc['rule_errors']:g}, "
                f"dead letters {pc['dead_letters']:g}, routed to their owner "
                f"{pc.get('routed', 0):g}"
            )
    print(
        f"  goal: c >= 25,000 events/s {'MET' if goal['events_per_s_met'] else 'NOT MET'}; "
        f"c/b >= 0.8 {'MET' if goal['c_over_b_met'] else 'NOT MET'}"
    )
    if "worker_profile" in extra:
        print(f"  worker profile: {extra['worker_profile']['top']}")
    print(f"results: {out}")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(r.get("complete") for r in phases.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
