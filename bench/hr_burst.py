"""Benchmark: offboarding bursts — many signed terminations at once, decided in seconds.

Starts ``accessguard run`` (embedded Tansu broker, Faust worker, HTTP server) as a subprocess
with a generated registry and a local vendor server (tests/fakes.py) for Okta, Graph, Google
and two generic platform providers, like bench/time_to_revoke.py (whose registry, call
watcher and audit-trail reader it reuses).

``burst`` (issue 17, deliverable 4a): ``--events`` (2,000) signed ``terminated`` events sent by
``--clients`` (48) concurrent HTTP clients as fast as they are answered, vendors answering at
once. Reports accepted/s and HTTP p99, and per event "202 -> last revocation call", "202 ->
last action acknowledged" and "202 -> last action verified" (p50/p99, nearest rank), and
whether every action was executed exactly once: the fake counts acting calls per
method + path, and any path called twice is a repeat.

``layoff`` (4b): ``--layoff-events`` (1,000) terminations spread over ``--layoff-window``
seconds (60), 10 grants each, against vendor fakes that enforce documented rate limits
(tests/ratelimits.py): time from the first 202 to the last verified action, provider calls vs
the minimum possible, throughput as a share of the allowed rate, 429/403 answers received and
pages sent.

    .venv/bin/python bench/hr_burst.py burst              # about a minute
    .venv/bin/python bench/hr_burst.py burst --events 300 # quicker
    .venv/bin/python bench/hr_burst.py layoff
    .venv/bin/python bench/hr_burst.py burst --events 600 --set executor.per_provider_concurrency=4

The burst's last line is the stack's CPU per provider call: on 2 cores a burst is CPU-bound
(about 2.5 ms per call, 11 actions and 7 read-backs per offboarding), so that is the figure
that decides how fast a burst can go.

Prints a summary and writes bench/results/hr_burst-<phase>-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
import requests  # noqa: E402
import yaml  # noqa: E402

from bench.login_throughput import cpu_seconds  # noqa: E402
from bench.time_to_revoke import (  # noqa: E402
    SESSION_PROVIDERS,
    AuditTail,
    Person,
    Sample,
    Watcher,
    machine,
    make_people,
    stats,
    write_registry,
)
from connectors.ingest.hr_webhook import SIGNATURE_HEADER, sign  # noqa: E402
from tests.fakes import FakeVendorServer  # noqa: E402
from tests.ratelimits import Limit, RateLimitedVendorServer  # noqa: E402
from tests.stack import SECRET, Stack, metric_value, write_config  # noqa: E402

RESULTS = REPO / "bench" / "results"


def event_for(person: Person) -> dict[str, Any]:
    return {
        "event_id": f"burst-{person.id}",
        "type": "terminated",
        "employee_id": person.employee_id,
        "email": person.email,
        "effective_at": (datetime.now(UTC) - timedelta(minutes=1))
        .isoformat()
        .replace("+00:00", "Z"),
        "source": "bench",
    }


def send_all(url: str, people: list[Person], clients: int, *, window: float = 0.0) -> list[Sample]:
    """Post one signed termination per person from ``clients`` threads; ``window`` > 0
    spreads the sends evenly over that many seconds (else as fast as they are answered)."""
    samples: list[Sample | None] = [None] * len(people)
    start = time.time() + 0.2
    step = window / len(people) if window > 0 else 0.0

    def client(number: int) -> None:
        session = requests.Session()
        for index in range(number, len(people), clients):
            if step:
                time.sleep(max(0.0, start + index * step - time.time()))
            person = people[index]
            body = orjson.dumps(event_for(person))
            headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(SECRET, body)}
            sent = time.time()
            try:
                resp = session.post(f"{url}/v1/hr/events", data=body, headers=headers, timeout=30)
                error = None if resp.status_code == 202 else f"HTTP {resp.status_code}"
            except requests.RequestException as exc:
                error = type(exc).__name__
            sample = Sample(person.id, person.grants, "burst", sent, time.time())
            sample.expected = len(SESSION_PROVIDERS) + person.grants
            sample.error = error
            samples[index] = sample

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [s for s in samples if s is not None]


def wait_revoked(watcher: Watcher, samples: list[Sample], timeout: float) -> bool:
    """Until every accepted event's revocation calls reached the fakes (or ``timeout``)."""
    wanted = {s.identity: s.expected for s in samples if s.error is None}

    def done(calls: list[dict[str, Any]]) -> bool:
        watcher._absorb(calls)
        return all(len(watcher.revocations.get(i, ())) >= n for i, n in wanted.items())

    try:
        watcher.server.wait_for_calls(done, timeout=timeout)
    except TimeoutError:
        return False
    return True


def repeats(server: FakeVendorServer) -> dict[str, int]:
    """Acting calls (2xx, not reads, not idempotent replays) per method + path: a path
    acted on twice is an action executed twice."""
    counts = Counter(f"{c['method']} {c['path']}" for c in server.calls)
    alerts = ("POST /slack/", "POST /v2/enqueue")  # pages and messages, not actions
    return {k: v for k, v in counts.items() if v > 1 and not k.startswith(alerts)}


def decided_actions(journal: Path, counts: dict[str, int], offset: int) -> int:
    """Add the number of actions each decision planned (by event id) from ``offset`` on;
    returns the new offset."""
    try:
        with journal.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return offset
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines():
        if b'"kind":"decision"' in line:
            entry = orjson.loads(line)
            counts[str(entry.get("event_id"))] = len(entry.get("actions") or ())
    return offset + end


def fill(samples: list[Sample], watcher: Watcher, audit: AuditTail, deadline: float) -> None:
    """Per sample: revocation calls from the watcher, acks and read-backs from the journal,
    waiting (until ``deadline``) until every action its decision planned is settled (done
    and read back, or not verifiable)."""
    planned: dict[str, int] = {}
    offset = 0
    while True:
        offset = decided_actions(audit.path, planned, offset)
        pending = 0
        for s in samples:
            if s.error is not None and not s.error.startswith("pending"):
                continue
            times = watcher.revocations.get(s.identity, [])
            s.revocations = len(times)
            if times:
                s.first_call, s.last_call = min(times), max(times)
            audit.fill(s, f"burst-{s.identity}")
            settled = s.verified + s.not_verifiable + s.unverified
            wanted = planned.get(f"burst-{s.identity}", 1 << 30)
            s.error = None if settled >= wanted else f"pending: {settled} of {wanted} settled"
            pending += s.error is not None
        if not pending or time.time() > deadline:
            return
        time.sleep(0.5)


def process_cpu(stack: Stack) -> float:
    """User + system CPU seconds the stack's process has used so far (Linux /proc)."""
    return cpu_seconds(stack.proc.pid if stack.proc is not None else None) or 0.0


def run_burst(args: argparse.Namespace) -> dict[str, Any]:
    people = make_people("b", args.grants, args.events)
    tmp = Path(tempfile.mkdtemp(prefix="accessguard-burst-"))
    registry_info = write_registry(tmp / "registry.yaml", people)
    server = FakeVendorServer()
    config = write_config(
        tmp / "config.yaml",
        data_dir=tmp / "data",
        vendor_url=server.url,
        extra={"registry": str(tmp / "registry.yaml"), "log.level": "warning", **args.set},
    )
    stack = Stack(config, log_dir=tmp, command=tuple(args.command.split()))
    watcher = Watcher(
        server, {r: p.id for p in people for r in p.refs.values()}, {p.name: p.id for p in people}
    )
    audit = AuditTail(tmp / "data" / "journal.jsonl")
    print(f"burst: {args.events} events x {args.grants} grants, {args.clients} clients; {tmp}")
    try:
        stack.start(timeout=120)
        print(f"  stack ready ({registry_info})", flush=True)
        t0 = time.time()
        cpu0 = process_cpu(stack)
        samples = send_all(stack.url, people, args.clients)
        sent_s = time.time() - t0
        accepted = [s for s in samples if s.error is None]
        print(f"  {len(accepted)} accepted in {sent_s:.2f}s", flush=True)
        complete = wait_revoked(watcher, samples, timeout=args.timeout)
        cpu_s = process_cpu(stack) - cpu0
        fill(accepted, watcher, audit, time.time() + 60)
        final = stack.metrics()
    finally:
        code = stack.stop()
        server.stop()
    ok = [s for s in accepted if s.error is None]
    first_202 = min(s.accepted for s in accepted)
    last_202 = max(s.accepted for s in accepted)
    last_call = max((s.last_call or 0.0) for s in accepted)
    result = {
        "phase": "burst",
        "events": args.events,
        "grants": args.grants,
        "clients": args.clients,
        "accepted": len(accepted),
        "rejected": len(samples) - len(accepted),
        "accept_seconds": last_202 - first_202,
        "accepted_per_s": len(accepted) / max(last_202 - first_202, 1e-9),
        "http_202": stats([s.http for s in accepted]),
        "from_202_to_first_call": stats([s.to_first for s in accepted if s.to_first is not None]),
        "from_202_to_last_call": stats([s.from_202 for s in accepted if s.from_202 is not None]),
        "from_202_to_last_ack": stats([s.to_ack for s in ok if s.to_ack is not None]),
        "from_202_to_last_verified": stats(
            [s.to_verified for s in ok if s.to_verified is not None]
        ),
        "last_call_after_last_202_s": last_call - last_202,
        "all_revocations_seen": complete,
        "unsettled_events": len(accepted) - len(ok),
        "repeated_calls": repeats(server),
        "idempotent_replays": len(server.replays),
        "rejected_vendor_calls": len(server.rejected),
        "actions_retried": metric_value(final, "accessguard_actions_total", outcome="retry"),
        "actions_failed": metric_value(final, "accessguard_actions_total", outcome="failed"),
        "stack_exit_code": code,
        # CPU seconds of the accessguard process from the first request to the last call
        # seen (the vendor fake runs in this process, not in that one)
        "stack_cpu_s": cpu_s,
        "provider_calls": len(server.calls),
        "settings": args.set,
        "machine": machine(),
    }
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def provider_calls(server: FakeVendorServer) -> dict[str, int]:
    """Calls that reached the identity providers' fakes: acting, read-backs, refused."""
    idp = ("/api/v1/", "/v1.0/", "/admin/directory/v1/")
    return {
        "acting": sum(c["path"].startswith(idp) for c in server.calls),
        "read_backs": sum(c["path"].startswith(idp) for c in server.reads),
        "refused": sum(c["path"].startswith(idp) for c in server.rejected),
    }


def minimum_calls(server: FakeVendorServer, journal: Path) -> dict[str, int]:
    """The fewest identity-provider calls the decided plans need: each acting call once
    (distinct method + path: an action may take two calls, like Google's token and app
    password deletes) and one read-back per action its provider reads back (the ledger's
    last value of each identity-provider action)."""
    idp_paths = ("/api/v1/", "/v1.0/", "/admin/directory/v1/")
    acting = len(
        {(c["method"], c["path"]) for c in server.calls if c["path"].startswith(idp_paths)}
    )
    latest: dict[str, dict[str, Any]] = {}
    with journal.open("rb") as handle:
        for line in handle:
            if b'"kind":"ledger"' in line:
                entry = orjson.loads(line)
                latest[str(entry.get("key"))] = entry.get("value") or {}
    idp = {"okta", "entra", "google"}
    chosen = [v for v in latest.values() if v.get("provider") in idp]
    verifiable = sum(
        (v.get("verification") or {}).get("status") in ("verified", "failed") for v in chosen
    )
    return {
        "actions": len(chosen),
        "acting_calls": acting,
        "read_backs": verifiable,
        "total": acting + verifiable,
    }


def run_layoff(args: argparse.Namespace) -> dict[str, Any]:
    people = make_people("l", args.layoff_grants, args.layoff_events)
    tmp = Path(tempfile.mkdtemp(prefix="accessguard-layoff-"))
    registry_info = write_registry(tmp / "registry.yaml", people)
    limits = {
        "okta": Limit(args.okta_limit, 1.0),
        "graph": Limit(args.graph_limit, 1.0),
        "google": Limit(args.google_limit, 1.0),
    }
    server = RateLimitedVendorServer(**limits)
    config = write_config(
        tmp / "config.yaml",
        data_dir=tmp / "data",
        vendor_url=server.url,
        extra={
            "registry": str(tmp / "registry.yaml"),
            "log.level": "warning",
            "verify.timeout": 600.0,
            "alerts.outage_update_interval": 10.0,
            "alerts.batch_window": 10.0,
            **args.set,
        },
    )
    stack = Stack(config, log_dir=tmp, command=tuple(args.command.split()))
    watcher = Watcher(
        server, {r: p.id for p in people for r in p.refs.values()}, {p.name: p.id for p in people}
    )
    audit = AuditTail(tmp / "data" / "journal.jsonl")
    print(
        f"layoff: {args.layoff_events} events x {args.layoff_grants} grants over "
        f"{args.layoff_window:g}s; limits/s okta {args.okta_limit} per endpoint, graph "
        f"{args.graph_limit}, google {args.google_limit}; {tmp}",
        flush=True,
    )
    try:
        stack.start(timeout=120)
        samples = send_all(stack.url, people, args.clients, window=args.layoff_window)
        accepted = [s for s in samples if s.error is None]
        print(f"  {len(accepted)} accepted", flush=True)
        wait_revoked(watcher, samples, timeout=args.timeout)
        fill(accepted, watcher, audit, time.time() + args.timeout)
        # the batch incident closes batch_window after its last offboarding, once all finished
        closed_by = time.time() + 120
        while time.time() < closed_by and not any(
            c["path"] == "/v2/enqueue" and (c["json"] or {}).get("event_action") == "resolve"
            for c in server.calls
        ):
            time.sleep(1.0)
        final = stack.metrics()
    finally:
        code = stack.stop()
        server.stop()
    ok = [s for s in accepted if s.error is None]
    first_202 = min(s.accepted for s in accepted)
    verified = [s.last_verified for s in ok if s.last_verified is not None]
    acked = [s.last_ack for s in ok if s.last_ack is not None]
    pages = [c for c in server.calls if c["path"] == "/v2/enqueue"]
    batch_keys = {
        (c["json"] or {}).get("dedup_key")
        for c in pages
        if "Offboarding batch" in str((c["json"] or {}).get("payload", ""))
    }
    batch_pages = [c for c in pages if (c["json"] or {}).get("dedup_key") in batch_keys]
    slack = [c for c in server.calls if c["path"].startswith("/slack/")]
    utilisation = server.utilisation()
    binding = {k: v for k, v in utilisation.items() if v["requests"] >= 50}
    calls = provider_calls(server)
    minimum = minimum_calls(server, tmp / "data" / "journal.jsonl")
    result = {
        "phase": "layoff",
        "events": args.layoff_events,
        "grants": args.layoff_grants,
        "window_s": args.layoff_window,
        "limits_per_s": {k: v.rate for k, v in limits.items()},
        "registry": registry_info,
        "accepted": len(accepted),
        "unsettled_events": len(accepted) - len(ok),
        "first_202_to_last_ack_s": (max(acked) - first_202) if acked else None,
        "first_202_to_last_verified_s": (max(verified) - first_202) if verified else None,
        "from_202_to_last_verified": stats(
            [s.to_verified for s in ok if s.to_verified is not None]
        ),
        "idp_calls": calls,
        "idp_minimum_calls": minimum,
        "idp_calls_over_minimum": (calls["acting"] + calls["read_backs"] + calls["refused"])
        / max(minimum["total"], 1),
        "rate_limit_refusals": dict(server.limited),
        "utilisation": utilisation,
        "share_of_allowed_rate_min": min(
            (v["share_of_allowed"] for v in binding.values()), default=None
        ),
        "client_held_calls": metric_value(
            final, "accessguard_provider_rate_limited_total", source="client"
        ),
        "vendor_refused_calls": metric_value(
            final, "accessguard_provider_rate_limited_total", source="vendor"
        ),
        "repeated_calls": repeats(server),
        "pages_sent": len(pages),
        "batch_pages": len(batch_pages),
        "batch_incidents": len(batch_keys),
        "batch_resolved": bool(batch_pages)
        and (batch_pages[-1]["json"] or {}).get("event_action") == "resolve",
        "slack_messages": len(slack),
        "actions_failed": metric_value(final, "accessguard_actions_total", outcome="failed"),
        "stack_exit_code": code,
        "settings": args.set,
        "machine": machine(),
    }
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def show_layoff(result: dict[str, Any]) -> None:
    print(
        f"accepted {result['accepted']}, unsettled {result['unsettled_events']}; first 202 -> "
        f"last verified {result['first_202_to_last_verified_s']:.1f}s "
        f"(last ack {result['first_202_to_last_ack_s']:.1f}s)"
    )
    calls, minimum = result["idp_calls"], result["idp_minimum_calls"]
    print(
        f"  identity-provider calls: {calls['acting']} acting + {calls['read_backs']} "
        f"read-backs + {calls['refused']} refused vs minimum {minimum['total']} "
        f"({minimum['acting_calls']} acting calls for {minimum['actions']} actions + "
        f"{minimum['read_backs']} read-backs) = "
        f"x{result['idp_calls_over_minimum']:.2f}"
    )
    print(
        f"  refusals by vendor {result['rate_limit_refusals']}; held client-side "
        f"{result['client_held_calls']:g}; repeated calls {len(result['repeated_calls'])}"
    )
    for bucket, u in result["utilisation"].items():
        print(
            f"  {bucket:<60} {u['requests']:>6} req in {u['seconds']:6.1f}s = "
            f"{u['share_of_allowed'] * 100:5.1f}% of allowed"
        )
    print(
        f"  pages {result['pages_sent']} (batch pages {result['batch_pages']}, batch incidents "
        f"{result['batch_incidents']}); slack messages {result['slack_messages']}; actions "
        f"failed {result['actions_failed']:g}"
    )


def show(result: dict[str, Any]) -> None:
    def ms(section: str) -> str:
        s = result[section]
        if not s["count"]:
            return f"{section}: -"
        return (
            f"{section}: n {s['count']}  p50 {s['p50'] * 1000:.0f} ms  "
            f"p99 {s['p99'] * 1000:.0f} ms  max {s['max'] * 1000:.0f} ms"
        )

    print(
        f"accepted {result['accepted']} (rejected {result['rejected']}) in "
        f"{result['accept_seconds']:.2f}s = {result['accepted_per_s']:.0f}/s"
    )
    for section in (
        "http_202",
        "from_202_to_first_call",
        "from_202_to_last_call",
        "from_202_to_last_ack",
        "from_202_to_last_verified",
    ):
        print("  " + ms(section))
    print(
        f"  last call {result['last_call_after_last_202_s']:.2f}s after the last 202; "
        f"unsettled {result['unsettled_events']}; repeated calls {len(result['repeated_calls'])}"
        f"; rejected vendor calls {result['rejected_vendor_calls']}; retried "
        f"{result['actions_retried']:g}; failed {result['actions_failed']:g}"
    )
    calls = max(result["provider_calls"], 1)
    print(
        f"  accessguard CPU {result['stack_cpu_s']:.1f}s for {result['provider_calls']} provider "
        f"calls = {1000 * result['stack_cpu_s'] / calls:.2f} ms per call"
        + (f"; settings {result['settings']}" if result["settings"] else "")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("phase", choices=("burst", "layoff"))
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=48)
    parser.add_argument("--grants", type=int, default=1, help="grants per person (burst)")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--layoff-events", type=int, default=1000)
    parser.add_argument("--layoff-grants", type=int, default=10)
    parser.add_argument("--layoff-window", type=float, default=60.0, help="seconds")
    parser.add_argument("--okta-limit", type=int, default=30, help="calls/s per endpoint")
    parser.add_argument("--graph-limit", type=int, default=30, help="calls/s")
    parser.add_argument("--google-limit", type=int, default=30, help="calls/s")
    parser.add_argument("--command", default="run", help="accessguard command line")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument(
        "--profile", type=Path, help="run the stack under cProfile, stats written here"
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=YAML",
        help="a configuration setting for the stack (repeatable), e.g. "
        "executor.per_provider_concurrency=4",
    )
    args = parser.parse_args()
    args.set = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}
    if args.profile is not None:
        # Stack starts `sys.executable -m streams.cli ...`: put cProfile in front of it.
        wrapper = Path(tempfile.mkdtemp(prefix="burst-profile-")) / "python"
        wrapper.write_text(
            f'#!/bin/sh\nexec {sys.executable} -m cProfile -o {args.profile.resolve()} "$@"\n'
        )
        wrapper.chmod(0o755)
        sys.executable = str(wrapper)
    if args.phase == "layoff":
        result = run_layoff(args)
        show_layoff(result)
    else:
        result = run_burst(args)
        show(result)
    out = args.out or RESULTS / f"hr_burst-{args.phase}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"results: {out}")
    return 0 if result["unsettled_events"] == 0 and not result["repeated_calls"] else 1


if __name__ == "__main__":
    sys.exit(main())
