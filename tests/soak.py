"""The soak scenario shared by ``tests/test_soak.py`` (which asserts) and ``bench/soak.py``
(which reports): the real ``accessguard run`` (embedded Tansu broker, Faust worker, HTTP
server) against local vendor servers (tests/fakes.py), loopback only, for a bounded time.

While it runs:

- a thread posts Okta System Log login events to ``POST /v1/auth/events?vendor=okta`` (bearer
  token) in batches, at a steady rate, for a pool of login-only identities. The traffic is
  benign on purpose (each person keeps one IP, device and country; one failure in a thousand)
  so no rule fires: what is measured is the steady state of the pipeline, not alert storms;
- the main thread sends a signed HR ``terminated`` (every ``suspend_every``-th one
  ``suspended``) through the HR webhook every ``offboard_every`` seconds, each for another
  identity of a disjoint offboarding pool (10 grants each: the objective's size). Login
  traffic never names an offboarded person, so every revocation call the vendors see belongs
  to exactly one offboarding;
- a sampler thread reads, every ``sample_every`` seconds, the resident memory (VmRSS) of the
  ``accessguard run`` process and of its Tansu child, and scrapes ``/metrics`` for the consumer
  lag gauge and the login counter.

Afterwards it stops the load, waits for the consumer lag to drain to 0 and for the worker's
login counter to reach what the endpoint accepted, waits for every offboarding's revocation
calls, and attributes every vendor call to the identity it names (time to revoke: the 202 of
the HR event to the last revocation call for that identity reaching the vendor server).
"""

from __future__ import annotations

import math
import os
import re
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import requests
import yaml

from streams.model.registry_yaml import load_registry
from tests.fakes import FakeVendorServer
from tests.stack import INGEST_TOKEN, Stack, metric_value, write_config

MIB = 1024 * 1024
AUTH_TOPIC = "accessguard.auth.events"
LAG = "accessguard_consumer_lag_messages"
EVALUATED = "accessguard_login_events_evaluated_total"
ACCEPTED = "accessguard_events_accepted_total"
PLATFORM_PROVIDERS = ("hootsuite", "meta-business")
ACCOUNTS = 50
PLACES = (
    ("US", "New York", 40.71, -74.01),
    ("GB", "London", 51.51, -0.13),
    ("DE", "Berlin", 52.52, 13.40),
    ("FR", "Paris", 48.86, 2.35),
    ("NL", "Amsterdam", 52.37, 4.90),
    ("ES", "Madrid", 40.42, -3.70),
)
AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
    "Okta Verify/9.12.0 (Android 14)",
)
ROLES = ("read_only", "can_reply", "full_publishing", "admin")

#: Revocation calls as the fake vendors see them; group 1 is the user reference.
_REVOCATIONS = (
    ("DELETE", re.compile(r"^/api/v1/users/([^/]+)/sessions$")),
    # the default policy disables the account first and revokes the user's OAuth grants
    ("POST", re.compile(r"^/api/v1/users/([^/]+)/lifecycle/suspend$")),
    ("DELETE", re.compile(r"^/api/v1/users/([^/]+)/grants$")),
    ("POST", re.compile(r"^/platform/members/([^/]+)/sessions/revoke$")),
    ("DELETE", re.compile(r"^/platform/profiles/[^/]+/members/([^/]+)$")),
)


@dataclass(frozen=True)
class SoakSettings:
    seconds: float = 120.0  # length of the load phase
    rate: float = 2500.0  # login events per second
    batch: int = 250  # login events per POST
    offboard_every: float = 2.0  # seconds between HR events
    suspend_every: int = 4  # every Nth HR event is `suspended` (sessions only)
    login_identities: int = 1000
    grants: int = 10  # grants of each offboarded identity
    sample_every: float = 2.0
    drain_timeout: float = 30.0
    revoke_timeout: float = 30.0
    settle: float = 2.0  # extra wait after the last revocation, to catch repeats
    #: extra configuration keys for the stack, e.g. (("worker.rule_interval", 5.0),)
    config: tuple[tuple[str, Any], ...] = ()

    @property
    def offboardings(self) -> int:
        return max(1, math.floor(self.seconds / self.offboard_every))


# ------------------------------------------------------------------------------ the world


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    employee_id: str
    email: str
    okta: str
    hootsuite: str
    meta: str
    accounts: tuple[str, ...]
    place: tuple[str, str, float, float] = PLACES[0]
    ip: str = ""
    device: str = ""
    agent: str = AGENTS[0]

    def ref_for(self, provider: str) -> str:
        return self.hootsuite if provider == "hootsuite" else self.meta


def account_provider(account: str) -> str:
    return PLATFORM_PROVIDERS[int(account.rsplit("-", 1)[1]) % len(PLATFORM_PROVIDERS)]


@dataclass
class World:
    login_pool: list[Person]
    offboard_pool: list[Person]
    registry: dict[str, int]

    def owners(self) -> dict[str, str]:
        """user reference at a vendor -> identity id, for every person."""
        return {
            ref: p.id
            for p in (*self.login_pool, *self.offboard_pool)
            for ref in (p.okta, p.hootsuite, p.meta)
        }


def build_world(path: Path, settings: SoakSettings) -> World:
    """Writes the registry YAML (the shape of examples/registry.yaml) and checks it loads."""
    accounts = [
        {
            "id": f"acct-{a:03d}",
            "platform": ("instagram", "facebook", "x", "tiktok", "linkedin")[a % 5],
            "handle": f"@soak{a:03d}",
            "criticality": ("medium", "high", "critical")[a % 3],
            "provider": PLATFORM_PROVIDERS[a % len(PLATFORM_PROVIDERS)],
        }
        for a in range(ACCOUNTS)
    ]
    login_pool = [
        Person(
            id=f"l{n:05d}",
            name=f"Soak Login {n:05d}",
            employee_id=f"SL{n:06d}",
            email=f"login{n:05d}@soak.example",
            okta=f"00usoakL{n:06d}",
            hootsuite=f"hs-l{n:05d}",
            meta=f"mb-l{n:05d}",
            accounts=tuple(f"acct-{(n * 3 + k) % ACCOUNTS:03d}" for k in range(1 + n % 3)),
            place=PLACES[n % len(PLACES)],
            ip=f"100.{64 + n // 65536}.{(n // 256) % 256}.{n % 256}",
            device=f"soak-dev-{n:05d}",
            agent=AGENTS[n % len(AGENTS)],
        )
        for n in range(settings.login_identities)
    ]
    offboard_pool = [
        Person(
            id=f"o{n:04d}",
            name=f"Soak Leaver {n:04d}",
            employee_id=f"SO{n:06d}",
            email=f"leaver{n:04d}@soak.example",
            okta=f"00usoakO{n:06d}",
            hootsuite=f"hs-o{n:04d}",
            meta=f"mb-o{n:04d}",
            accounts=tuple(
                f"acct-{(n * 7 + k) % ACCOUNTS:03d}" for k in range(min(settings.grants, ACCOUNTS))
            ),
        )
        for n in range(max(200, settings.offboardings))
    ]
    identities = []
    grants = []
    for i, person in enumerate((*login_pool, *offboard_pool)):
        identities.append(
            {
                "id": person.id,
                "name": person.name,
                "kind": "contractor" if i % 7 == 3 else "employee",
                "employee_id": person.employee_id,
                "emails": [person.email],
                "aliases": {
                    "okta": person.okta,
                    "hootsuite": person.hootsuite,
                    "meta-business": person.meta,
                },
            }
        )
        for k, account in enumerate(person.accounts):
            grants.append(
                {
                    "identity": person.id,
                    "account": account,
                    "role": ROLES[(i + k) % len(ROLES)],
                    "via": ("sso", "native")[k % 2],
                    "mfa": ("push", "totp", "webauthn")[(i + k) % 3],
                }
            )
    doc = {"accounts": accounts, "identities": identities, "grants": grants}
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    registry = load_registry(path)  # raises RegistryError listing every problem
    info = {
        "accounts": len(registry.accounts),
        "identities": len(registry.identities),
        "grants": sum(len(registry.grants_of(i)) for i in registry.identities),
        "login_identities": len(login_pool),
        "offboard_identities": len(offboard_pool),
    }
    return World(login_pool, offboard_pool, info)


# ------------------------------------------------------------------------------ login load


def okta_event(seq: int, person: Person, published: str) -> dict[str, Any]:
    """One Okta System Log event: mostly session starts, some MFA logins, 1 in 1000 a
    failure (far from any brute-force or spray threshold)."""
    country, city, lat, lon = person.place
    roll = seq % 1000
    event_type = "user.authentication.auth_via_mfa" if roll % 10 == 0 else "user.session.start"
    event: dict[str, Any] = {
        "uuid": f"soak-{seq}",
        "published": published,
        "eventType": event_type,
        "actor": {
            "id": person.okta,
            "type": "User",
            "alternateId": person.email,
            "displayName": person.name,
        },
        "client": {
            "ipAddress": person.ip,
            "userAgent": {"rawUserAgent": person.agent},
            "geographicalContext": {
                "country": country,
                "city": city,
                "geolocation": {"lat": lat, "lon": lon},
            },
        },
        "device": {"id": person.device},
        "outcome": {"result": "FAILURE", "reason": "INVALID_CREDENTIALS"}
        if roll == 999
        else {"result": "SUCCESS"},
        "target": [{"type": "AppInstance", "displayName": "Okta Dashboard"}],
    }
    if event_type == "user.authentication.auth_via_mfa":
        event["debugContext"] = {"debugData": {"factor": "OKTA_VERIFY_PUSH"}}
    return event


class LoginLoad(threading.Thread):
    """Posts ``rate`` events/s in batches of ``batch``; never bursts more than 1 s to catch
    up after a slow answer, so the rate it achieves is what the stack accepted."""

    def __init__(self, url: str, people: list[Person], settings: SoakSettings) -> None:
        super().__init__(name="soak-login-load", daemon=True)
        self.url = f"{url}/v1/auth/events?vendor=okta"
        self.people = people
        self.settings = settings
        self.stop_event = threading.Event()
        self.requests = 0
        self.sent = 0  # events posted
        self.accepted = 0  # events the endpoint answered as accepted (its "events")
        self.rejected_records = 0
        self.failed_requests = 0
        self.errors: Counter[str] = Counter()
        self.bytes = 0
        self.latencies: list[float] = []
        self.started = 0.0
        self.finished = 0.0
        self._seq = 0

    def make_batch(self) -> bytes:
        published = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        events = []
        n = len(self.people)
        for _ in range(self.settings.batch):
            self._seq += 1
            # A stride coprime with the pool size walks every person evenly.
            person = self.people[(self._seq * 7919) % n]
            events.append(okta_event(self._seq, person, published))
        return orjson.dumps(events)

    def run(self) -> None:
        interval = self.settings.batch / self.settings.rate
        session = requests.Session()
        headers = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}
        self.started = time.monotonic()
        next_at = self.started
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                if now < next_at:
                    self.stop_event.wait(next_at - now)
                    continue
                body = self.make_batch()
                t0 = time.monotonic()
                try:
                    resp = session.post(self.url, data=body, headers=headers, timeout=30)
                except requests.RequestException as exc:
                    self.failed_requests += 1
                    self.errors[type(exc).__name__] += 1
                    next_at = time.monotonic() + interval
                    continue
                self.latencies.append(time.monotonic() - t0)
                self.requests += 1
                self.sent += self.settings.batch
                self.bytes += len(body)
                if resp.status_code == 200:
                    answer = orjson.loads(resp.content)
                    self.accepted += int(answer["events"])
                    self.rejected_records += int(answer["rejected"])
                else:
                    self.failed_requests += 1
                    self.errors[f"HTTP {resp.status_code}: {resp.text[:120]}"] += 1
                next_at += interval
                next_at = max(next_at, time.monotonic() - 1.0)
        finally:
            self.finished = time.monotonic()
            session.close()

    @property
    def rate(self) -> float:
        elapsed = (self.finished or time.monotonic()) - self.started
        return self.accepted / elapsed if elapsed > 0 else 0.0


# ------------------------------------------------------------------------------ sampling


def rss_bytes(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            found.extend(int(c) for c in text)
    except OSError:
        pass
    return found


def find_broker_pid(pid: int) -> int | None:
    """The embedded Tansu broker: the child of ``accessguard run`` whose command is tansu."""
    for child in children(pid):
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"tansu" in cmd and b" broker" in cmd:
            return child
    return None


@dataclass
class MemSample:
    t: float  # seconds since the load started (negative: before)
    worker_rss: int | None
    broker_rss: int | None
    lag: float | None  # auth.events consumer lag, messages
    lag_all: float | None  # all input topics
    evaluated: float | None  # worker's login counter
    accepted: int  # what the endpoint had accepted by then


class Sampler(threading.Thread):
    def __init__(
        self, stack: Stack, broker_pid: int | None, load: LoginLoad, every: float, t0: float
    ) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.stack = stack
        self.pid = stack.pid
        self.broker_pid = broker_pid
        self.load = load
        self.every = every
        self.t0 = t0
        self.samples: list[MemSample] = []
        self.stop_event = threading.Event()
        self.scrape_errors = 0

    def sample(self) -> MemSample:
        lag = lag_all = evaluated = None
        try:
            text = requests.get(f"{self.stack.url}/metrics", timeout=5).text
            lag = metric_value(text, LAG, topic=AUTH_TOPIC)
            lag_all = metric_value(text, LAG)
            evaluated = metric_value(text, EVALUATED)
        except requests.RequestException:
            self.scrape_errors += 1
        s = MemSample(
            t=time.monotonic() - self.t0,
            worker_rss=rss_bytes(self.pid),
            broker_rss=rss_bytes(self.broker_pid),
            lag=lag,
            lag_all=lag_all,
            evaluated=evaluated,
            accepted=self.load.accepted,
        )
        self.samples.append(s)
        return s

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            self.sample()
            next_at += self.every
            self.stop_event.wait(max(0.0, next_at - time.monotonic()))


# ------------------------------------------------------------------------------ offboardings


@dataclass
class Offboarding:
    identity: str
    kind: str
    event_id: str
    sent: float  # time.time() before the request
    accepted: float | None = None  # time.time() after the 202
    status: str = ""
    expected: list[tuple[str, str]] = field(default_factory=list)
    #: Calls that may come too: Okta's suspend (a 400, not a call, once the user is
    #: suspended by an earlier event) and its grant revocation.
    allowed: list[tuple[str, str]] = field(default_factory=list)
    calls: list[tuple[str, str, float]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        got = Counter((m, p) for m, p, _ in self.calls)
        return all(got[key] >= 1 for key in self.expected)

    @property
    def repeats(self) -> int:
        return sum(n - 1 for n in Counter((m, p) for m, p, _ in self.calls).values() if n > 1)

    @property
    def unexpected(self) -> list[tuple[str, str]]:
        wanted = {*self.expected, *self.allowed}
        return [(m, p) for m, p, _ in self.calls if (m, p) not in wanted]

    @property
    def ttr(self) -> float | None:
        """202 -> last revocation call received, once every expected call arrived."""
        if self.accepted is None or not self.complete:
            return None
        return max(t for _, _, t in self.calls) - self.accepted


def expected_calls(person: Person, kind: str) -> list[tuple[str, str]]:
    calls = [
        ("DELETE", f"/api/v1/users/{person.okta}/sessions"),
        ("POST", f"/platform/members/{person.hootsuite}/sessions/revoke"),
        ("POST", f"/platform/members/{person.meta}/sessions/revoke"),
    ]
    if kind == "terminated":
        for account in person.accounts:
            ref = person.ref_for(account_provider(account))
            calls.append(("DELETE", f"/platform/profiles/{account}/members/{ref}"))
    return calls


def hr_event(person: Person, kind: str, event_id: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": kind,
        "employee_id": person.employee_id,
        "email": person.email,
        "effective_at": (datetime.now(UTC) - timedelta(minutes=1))
        .isoformat()
        .replace("+00:00", "Z"),
        "source": "soak",
    }


def attribute(
    calls: list[dict[str, Any]], owners: dict[str, str]
) -> tuple[dict[str, list[tuple[str, str, float]]], list[tuple[str, str]]]:
    """Vendor calls by the identity they name; the calls that name nobody."""
    by_identity: dict[str, list[tuple[str, str, float]]] = {}
    other: list[tuple[str, str]] = []
    for call in calls:
        path, method = call["path"], call["method"]
        owner = None
        for want, pattern in _REVOCATIONS:
            found = pattern.match(path)
            if found and method == want:
                owner = owners.get(found.group(1))
                break
        if owner is None:
            if not path.startswith(("/slack/", "/v2/enqueue")):
                other.append((method, path))
            continue
        by_identity.setdefault(owner, []).append((method, path, float(call["time"])))
    return by_identity, other


# ------------------------------------------------------------------------------ statistics


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (with fewer than 100 samples p99 is the maximum)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def memory_figures(samples: list[MemSample], seconds: float, attr: str) -> dict[str, Any]:
    """Medians over the thirds of the load phase (the first third is warm-up), the growth
    from the second to the last third, and the least-squares slope after warm-up."""
    during = [(s.t, getattr(s, attr)) for s in samples if 0 <= s.t <= seconds]
    during = [(t, v) for t, v in during if v is not None]
    thirds = [
        [v for t, v in during if k * seconds / 3 <= t < (k + 1) * seconds / 3] for k in range(3)
    ]
    thirds[2] += [v for t, v in during if t >= seconds]
    before = [getattr(s, attr) for s in samples if s.t < 0 and getattr(s, attr) is not None]
    after = [getattr(s, attr) for s in samples if s.t > seconds and getattr(s, attr) is not None]
    medians = [_median([float(v) for v in third]) for third in thirds]
    growth = None if medians[1] is None or medians[2] is None else medians[2] - medians[1]
    tail = [(t, float(v)) for t, v in during if t >= seconds / 3]
    slope = None
    if len(tail) >= 3:
        mt = statistics.fmean(t for t, _ in tail)
        mv = statistics.fmean(v for _, v in tail)
        den = sum((t - mt) ** 2 for t, _ in tail)
        if den > 0:
            slope = sum((t - mt) * (v - mv) for t, v in tail) / den
    return {
        "start": before[-1] if before else (during[0][1] if during else None),
        "end": after[-1] if after else (during[-1][1] if during else None),
        "max": max((v for _, v in during), default=None),
        "median_thirds": medians,
        "growth": growth,
        "growth_ratio": growth / medians[1] if growth is not None and medians[1] else None,
        "slope_per_min": None if slope is None else slope * 60,
        "samples": len(during),
    }


# ------------------------------------------------------------------------------ the run


@dataclass
class SoakResult:
    settings: dict[str, Any]
    registry: dict[str, int]
    startup_s: float
    load_s: float
    requests: int
    events_sent: int
    events_accepted: int
    events_rejected: int
    failed_requests: int
    request_errors: dict[str, int]
    bytes_sent: int
    events_per_s: float
    ingest_latency: dict[str, float | None]
    evaluated_final: float
    accepted_metric_final: float
    drain_s: float | None
    lag_final: float | None
    max_lag: float | None
    max_lag_all: float | None
    worker_memory: dict[str, Any]
    broker_memory: dict[str, Any]
    journal_bytes: dict[str, int]
    offboardings: list[dict[str, Any]]
    ttr: dict[str, float | None]
    ttr_terminated: dict[str, float | None]
    incomplete: list[str]
    repeated_calls: int
    unexpected_calls: list[str]
    unattributed_calls: list[str]
    calls_for_others: int
    rejected_vendor_calls: int
    actions_retried: float
    actions_failed: float
    stack_exit_code: int | None
    stack_alive_at_end: bool
    log_levels: dict[str, int]
    log_warnings: dict[str, int]
    samples: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        w, b = self.worker_memory, self.broker_memory

        def mib(v: float | None) -> str:
            return "-" if v is None else f"{v / MIB:.1f}"

        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v * 1000:.0f}"

        ttr = "/".join(ms(self.ttr[k]) for k in ("p50", "p90", "p99", "max"))
        thirds = "/".join(mib(m) for m in w["median_thirds"])
        ratio = "-" if w["growth_ratio"] is None else f"{w['growth_ratio'] * 100:.1f}%"
        slope = "-" if w["slope_per_min"] is None else f"{w['slope_per_min'] / MIB:.2f}"
        drained = "-" if self.drain_s is None else f"{self.drain_s:.2f} s"
        b_growth = None if b["start"] is None or b["end"] is None else b["end"] - b["start"]
        return "\n".join(
            [
                f"soak: {self.load_s:.0f}s of load: {self.events_accepted} login events accepted"
                f" in {self.requests} requests = {self.events_per_s:.0f} ev/s (target"
                f" {self.settings['rate']:.0f}); ingest p50/p99"
                f" {ms(self.ingest_latency['p50'])}/{ms(self.ingest_latency['p99'])} ms;"
                f" failed requests {self.failed_requests}",
                f"  worker counted {self.evaluated_final:.0f} login events (endpoint accepted"
                f" {self.events_accepted}); max lag {self.max_lag} msgs on auth.events (all"
                f" inputs {self.max_lag_all}); lag {self.lag_final} {drained} after the load",
                f"  offboardings {len(self.offboardings)}: time to revoke p50/p90/p99/max {ttr} ms"
                f" (terminations p99 {ms(self.ttr_terminated['p99'])} ms); incomplete"
                f" {len(self.incomplete)}, repeated calls {self.repeated_calls}, unexpected"
                f" {len(self.unexpected_calls)}",
                f"  worker RSS start/end {mib(w['start'])}/{mib(w['end'])} MiB, thirds {thirds}"
                f" MiB, growth 2nd->3rd third {mib(w['growth'])} MiB ({ratio}), slope after"
                f" warm-up {slope} MiB/min",
                f"  tansu RSS start/end {mib(b['start'])}/{mib(b['end'])} MiB (+{mib(b_growth)}"
                f" MiB; {self.bytes_sent / MIB:.1f} MiB of login bodies sent); journal"
                f" {self.journal_bytes['start'] / MIB:.1f} -> {self.journal_bytes['end'] / MIB:.1f}"
                " MiB",
                f"  actions retried {self.actions_retried:g}, failed {self.actions_failed:g};"
                f" rejected vendor calls {self.rejected_vendor_calls}; stack log levels"
                f" {self.log_levels}",
            ]
        )


def _journal_size(stack: Stack) -> int:
    try:
        return (stack.data_dir / "journal.jsonl").stat().st_size
    except OSError:
        return 0


def run_soak(
    workdir: Path, settings: SoakSettings, log: Callable[[str], None] = print
) -> SoakResult:
    """Runs the whole scenario; always stops the stack and the vendor server."""
    world = build_world(workdir / "registry.yaml", settings)
    owners = world.owners()
    server = FakeVendorServer()
    config = write_config(
        workdir / "config.yaml",
        data_dir=workdir / "data",
        vendor_url=server.url,
        extra={
            "registry": str(workdir / "registry.yaml"),
            # Lag gauge every second (default 5 s) so the soak sees its peaks.
            "worker.metrics_interval": 1.0,
            **dict(settings.config),
        },
    )
    stack = Stack(config, log_dir=workdir)
    load = LoginLoad(stack.url, world.login_pool, settings)
    sampler: Sampler | None = None
    offboardings: list[Offboarding] = []
    exit_code: int | None = None
    alive = False
    try:
        t = time.monotonic()
        stack.start(timeout=90)
        startup = time.monotonic() - t
        assert stack.pid is not None
        broker_pid = find_broker_pid(stack.pid)
        journal_start = _journal_size(stack)
        log(
            f"soak: stack ready in {startup:.1f}s (pid {stack.pid}, tansu {broker_pid}),"
            f" registry {world.registry}; {settings.seconds:g}s at {settings.rate:g} ev/s,"
            f" an HR event every {settings.offboard_every:g}s"
        )
        sampler = Sampler(stack, broker_pid, load, settings.sample_every, time.monotonic())
        sampler.sample().t = -0.001  # the baseline, before any load
        sampler.t0 = t0 = time.monotonic()
        load.start()
        sampler.start()
        deadline = t0 + settings.seconds
        for i in range(settings.offboardings):
            at = t0 + (i + 0.5) * settings.offboard_every
            if at >= deadline:
                break
            time.sleep(max(0.0, at - time.monotonic()))
            if stack.proc is None or stack.proc.poll() is not None:
                raise RuntimeError(f"accessguard exited during the soak:\n{stack.stderr()[-3000:]}")
            person = world.offboard_pool[i]
            kind = (
                "suspended"
                if settings.suspend_every and i % settings.suspend_every == 3
                else "terminated"
            )
            ob = Offboarding(person.id, kind, f"soak-hr-{i:04d}", sent=time.time())
            ob.expected = expected_calls(person, kind)
            ob.allowed = [
                ("POST", f"/api/v1/users/{person.okta}/lifecycle/suspend"),
                ("DELETE", f"/api/v1/users/{person.okta}/grants"),
            ]
            resp = stack.post_hr(hr_event(person, kind, ob.event_id))
            ob.status = f"{resp.status_code} {resp.json().get('status', '')}"
            if resp.status_code == 202:
                ob.accepted = time.time()
            offboardings.append(ob)
            if (i + 1) % 15 == 0:
                last = sampler.samples[-1]
                log(
                    f"  t={time.monotonic() - t0:5.1f}s {load.accepted} events,"
                    f" lag {last.lag}, worker RSS {(last.worker_rss or 0) / MIB:.1f} MiB,"
                    f" tansu RSS {(last.broker_rss or 0) / MIB:.1f} MiB"
                )
        time.sleep(max(0.0, deadline - time.monotonic()))
        load.stop_event.set()
        load.join(timeout=60)
        load_end = time.monotonic()
        load_s = load_end - t0

        # Drain: the lag gauge back to 0 and the worker's counter at what was accepted.
        drain_s: float | None = None
        text = ""
        while time.monotonic() - load_end < settings.drain_timeout:
            text = stack.metrics()
            lag_now = metric_value(text, LAG)
            if lag_now == 0 and metric_value(text, EVALUATED) >= load.accepted:
                drain_s = time.monotonic() - load_end
                break
            time.sleep(0.25)

        # Every offboarding's calls, then a pause in which a repeat would show.
        wanted = {ob.identity: ob for ob in offboardings}
        wait_until = time.monotonic() + settings.revoke_timeout
        while time.monotonic() < wait_until:
            by_identity, _ = attribute(server.calls_to(""), owners)
            for ident, ob in wanted.items():
                ob.calls = by_identity.get(ident, [])
            if all(ob.complete for ob in offboardings):
                break
            time.sleep(0.2)
        time.sleep(settings.settle)
        sampler.stop_event.set()
        sampler.join(timeout=10)
        final = stack.metrics()
        alive = stack.proc is not None and stack.proc.poll() is None
        journal_end = _journal_size(stack)
    finally:
        if sampler is not None:
            sampler.stop_event.set()
        load.stop_event.set()
        try:
            exit_code = stack.stop()
        finally:
            server.stop()

    calls = server.calls_to("")
    by_identity, unattributed = attribute(calls, owners)
    for ob in offboardings:
        ob.calls = by_identity.get(ob.identity, [])
    offboarded = {ob.identity for ob in offboardings}
    ttrs = [ob.ttr for ob in offboardings if ob.ttr is not None]
    terminated = [ob.ttr for ob in offboardings if ob.ttr is not None and ob.kind == "terminated"]
    levels: Counter[str] = Counter()
    warnings: Counter[str] = Counter()
    for entry in stack.logs():
        level = str(entry.get("level", "?"))
        levels[level] += 1
        if level in ("warning", "error", "critical"):
            warnings[f"{level}: {entry.get('event')}"] += 1

    def stats(values: list[float]) -> dict[str, float | None]:
        return {
            "count": float(len(values)),
            "p50": percentile(values, 50),
            "p90": percentile(values, 90),
            "p99": percentile(values, 99),
            "max": max(values) if values else None,
        }

    samples = sampler.samples if sampler is not None else []
    lags = [s.lag for s in samples if s.lag is not None]
    lags_all = [s.lag_all for s in samples if s.lag_all is not None]
    return SoakResult(
        settings=asdict(settings),
        registry=world.registry,
        startup_s=startup,
        load_s=load_s,
        requests=load.requests,
        events_sent=load.sent,
        events_accepted=load.accepted,
        events_rejected=load.rejected_records,
        failed_requests=load.failed_requests,
        request_errors=dict(load.errors),
        bytes_sent=load.bytes,
        events_per_s=load.rate,
        ingest_latency={
            "p50": percentile(load.latencies, 50),
            "p99": percentile(load.latencies, 99),
            "max": max(load.latencies) if load.latencies else None,
        },
        evaluated_final=metric_value(final, EVALUATED),
        accepted_metric_final=metric_value(final, ACCEPTED, source="auth_ingest:okta"),
        drain_s=drain_s,
        lag_final=metric_value(text, LAG) if text else None,
        max_lag=max(lags) if lags else None,
        max_lag_all=max(lags_all) if lags_all else None,
        worker_memory=memory_figures(samples, load_s, "worker_rss"),
        broker_memory=memory_figures(samples, load_s, "broker_rss"),
        journal_bytes={"start": journal_start, "end": journal_end},
        offboardings=[
            {
                "identity": ob.identity,
                "kind": ob.kind,
                "status": ob.status,
                "expected": len(ob.expected),
                "calls": len(ob.calls),
                "ttr": ob.ttr,
                "sent": ob.sent,
                "accepted": ob.accepted,
            }
            for ob in offboardings
        ],
        ttr=stats(ttrs),
        ttr_terminated=stats(terminated),
        incomplete=[ob.identity for ob in offboardings if not ob.complete],
        repeated_calls=sum(ob.repeats for ob in offboardings),
        unexpected_calls=[
            f"{ob.identity} {m} {p}" for ob in offboardings for m, p in ob.unexpected
        ],
        unattributed_calls=[f"{m} {p}" for m, p in unattributed][:50],
        calls_for_others=sum(len(v) for k, v in by_identity.items() if k not in offboarded),
        rejected_vendor_calls=len(server.rejected),
        actions_retried=metric_value(final, "accessguard_actions_total", outcome="retry"),
        actions_failed=metric_value(final, "accessguard_actions_total", outcome="failed"),
        stack_exit_code=exit_code,
        stack_alive_at_end=alive,
        log_levels=dict(levels),
        log_warnings=dict(warnings.most_common(20)),
        samples=[asdict(s) for s in samples],
    )


def env_seconds(default: float) -> float:
    value = os.environ.get("ACCESSGUARD_SOAK_SECONDS")
    return float(value) if value else default
