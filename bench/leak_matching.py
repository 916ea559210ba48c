"""Benchmark: leaked-credential import — parse only, parse + match, and end to end.

Generates a registry of ``--identities`` (default 100,000) identities with Registry.from_changes
and a dump of ``--records`` (default 1,000,000) records in a temporary file (CSV, NDJSON, JSON
array; ``--gzip`` compresses it), about ``--hit-rate`` of them (default 2 %) addresses of
registry identities, half of the records with a plaintext password (HMAC'd by the parser).
Then:

* ``lookup``       — LeakIndex.lookup alone over pre-built principals (the dict probe);
* ``parse``        — DumpReader over the file, every record built (what ``POST /v1/leaks``
  does: it answers per record);
* ``parse+match``  — the same, plus LeakIndex.lookup per record and decide_leak per match;
* ``match-first``  — DumpReader(wanted=LeakIndex.wants), what ``leaks import`` does: every
  record validated, only the matches built (and decide_leak per match);
* ``--e2e``        — the real ``accessguard leaks import`` command, a process of its own,
  through a real broker to a spawned deciding process (:func:`end_to_end`), with 1 and 2
  importer processes (``--jobs``): records/s from its first byte read to the last
  decision, and for the whole command (start-up and registry read included), and the
  command's peak RSS;
* memory           — peak RSS growth (ru_maxrss) of the process, and with ``--memory`` the
  tracemalloc peak of a streamed parse at two file sizes (flat in the file size).

    .venv/bin/python bench/leak_matching.py --e2e           # 1M records, csv + ndjson
    .venv/bin/python bench/leak_matching.py --e2e-only --records 5000000 --jobs 1
    .venv/bin/python bench/leak_matching.py --quick         # 100k records
    .venv/bin/python bench/leak_matching.py --formats json --gzip --memory

Prints a table and writes bench/results/leak_matching-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from connectors.ingest.dumps import DumpOptions, DumpReader  # noqa: E402
from streams.bus.topics import Topics  # noqa: E402
from streams.decide.leaks import LeakSettings, decide_leak  # noqa: E402
from streams.model.leak_index import LeakIndex  # noqa: E402
from streams.model.records import LeakRecord  # noqa: E402
from streams.model.registry import Registry  # noqa: E402
from streams.model.state import StateStore  # noqa: E402
from streams.support.secrets import Secret  # noqa: E402

RESULTS = REPO / "bench" / "results"
PROVIDERS = {"okta": "okta", "hootsuite": "generic", "vault": "secret_store"}
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def make_registry(n: int, accounts: int = 200) -> Registry:
    def changes() -> Iterator[tuple[str, dict[str, Any]]]:
        for a in range(accounts):
            shared = (
                {"totp": True, "ref": f"shared/acc{a}", "login": f"social{a}@brand.example"}
                if a % 10 == 0
                else None
            )
            yield (
                f"account:acc{a}",
                {
                    "id": f"acc{a}",
                    "platform": "x",
                    "handle": f"@brand{a}",
                    "criticality": "high",
                    "provider": "hootsuite",
                    "shared_credential": shared,
                },
            )
        roles = ("admin", "full_publishing", "can_reply", "read_only")
        for i in range(n):
            yield (
                f"identity:u{i}",
                {
                    "id": f"u{i}",
                    "name": f"User {i}",
                    "kind": "employee",
                    "emails": [f"user{i}@brand.example"],
                    "aliases": {"okta": f"00u{i}", "hootsuite": f"hs{i}"},
                },
            )
            if i % 4 != 3:
                yield (
                    f"grant:u{i}:acc{i % accounts}",
                    {
                        "identity": f"u{i}",
                        "account": f"acc{i % accounts}",
                        "role": roles[i % len(roles)],
                        "via": "sso",
                        "mfa": "push",
                    },
                )

    return Registry.from_changes(changes())


def principals(n: int, identities: int, hit_rate: float, seed: int = 7) -> Iterator[str]:
    rnd = random.Random(seed)
    for i in range(n):
        if rnd.random() < hit_rate:
            yield f"User{rnd.randrange(identities)}@Brand.example"
        else:
            yield f"someone{i}@mail{i % 97}.example"


def write_dump(path: Path, fmt: str, n: int, *, identities: int, hit_rate: float, gz: bool) -> None:
    opener = gzip.open if gz else open
    with opener(path, "wt", encoding="utf-8", newline="") as out:  # type: ignore[operator]
        if fmt == "csv":
            out.write("email,password,breach_date\n")
        elif fmt == "json":
            out.write("[\n")
        for i, principal in enumerate(principals(n, identities, hit_rate)):
            password = f"pw{i:07d}!" if i % 2 == 0 else ""
            if fmt == "csv":
                out.write(f"{principal},{password},2025-11-02\n")
            else:
                line = json.dumps(
                    {"email": principal, "password": password or None, "date": "2025-11-02"}
                )
                if fmt == "json":
                    out.write(("," if i else "") + line + "\n")
                else:
                    out.write(line + "\n")
        if fmt == "json":
            out.write("]\n")


HMAC_KEY = "bench-leak-key"


def options() -> DumpOptions:
    return DumpOptions(hmac_key=Secret(HMAC_KEY), breach="BenchBreach")


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_lookup(index: LeakIndex, n: int, identities: int, hit_rate: float) -> dict[str, Any]:
    names = [p.lower() for p in principals(n, identities, hit_rate)]
    lookup = index.lookup
    started = time.perf_counter()
    hits = 0
    for name in names:
        if lookup(name) is not None:
            hits += 1
    took = time.perf_counter() - started
    return {"lookups": n, "hits": hits, "seconds": round(took, 3), "per_s": round(n / took)}


def bench_parse(path: Path) -> dict[str, Any]:
    reader = DumpReader(options())
    started = time.perf_counter()
    n = 0
    for _item in reader.read_path(path):
        n += 1
    took = time.perf_counter() - started
    return {"items": n, "seconds": round(took, 3), "per_s": round(n / took), **_summary(reader)}


def bench_parse_match(path: Path, registry: Registry, index: LeakIndex) -> dict[str, Any]:
    reader = DumpReader(options())
    lifecycle = StateStore()
    settings = LeakSettings()
    lookup = index.lookup
    started = time.perf_counter()
    n = matched = actions = 0
    for item in reader.read_path(path):
        n += 1
        if type(item) is not LeakRecord or lookup(item.principal) is None:
            continue
        matched += 1
        decision = decide_leak(
            registry, lifecycle, item, NOW, PROVIDERS, index=index, settings=settings
        )
        actions += len(decision.actions)
    took = time.perf_counter() - started
    return {
        "items": n,
        "matched": matched,
        "actions": actions,
        "seconds": round(took, 3),
        "per_s": round(n / took),
        **_summary(reader),
    }


def bench_match_first(path: Path, registry: Registry, index: LeakIndex) -> dict[str, Any]:
    """The importer's path: only the records someone holds are built, then decided."""
    reader = DumpReader(options(), wanted=index.wants)
    lifecycle = StateStore()
    settings = LeakSettings()
    started = time.perf_counter()
    matched = actions = 0
    for item in reader.read_path(path):
        if type(item) is not LeakRecord:
            continue
        matched += 1
        decision = decide_leak(
            registry, lifecycle, item, NOW, PROVIDERS, index=index, settings=settings
        )
        actions += len(decision.actions)
    took = time.perf_counter() - started
    n = reader.summary.read
    return {
        "items": n,
        "matched": matched,
        "actions": actions,
        "seconds": round(took, 3),
        "per_s": round(n / took),
        **_summary(reader),
    }


def _summary(reader: DumpReader) -> dict[str, Any]:
    s = reader.summary
    return {"parsed": s.parsed, "rejected": s.rejected}


def traced_peak(path: Path) -> float:
    """Peak traced memory (MiB) of a streamed parse of ``path``."""
    tracemalloc.start()
    try:
        for _item in DumpReader(options()).read_path(path):
            pass
        return tracemalloc.get_traced_memory()[1] / (1024 * 1024)
    finally:
        tracemalloc.stop()


def _decide_consumer(bootstrap: str, registry_topic: str, topic: str, conn: Any) -> None:
    """Process (spawned: a fresh interpreter, as the worker is its own process): the worker's
    side of the path. Reads the registry topic and builds its LeakIndex (a worker holds both
    before any import starts), positions itself at the end of ``topic`` and sends "ready";
    then, on every new message: decode_batch -> LeakIndex.lookup -> decide_leak. Receives the
    expected count once the import is done and answers ``(decided, actions, time.time() of
    the last decision)`` (wall clock: compared with the importer's own start time)."""
    from kafka import KafkaConsumer, TopicPartition

    from streams.bus.bootstrap import read_registry_topic
    from streams.bus.leakbatch import decode_batch

    registry = read_registry_topic(bootstrap, registry_topic)
    index = LeakIndex.build(registry)
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_bytes=64 * 1048576,
        max_partition_fetch_bytes=16 * 1048576,
        client_id="bench-leak-decider",
    )
    lifecycle = StateStore()
    settings = LeakSettings()
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        consumer.seek_to_end(*parts)
        # Tansu answers ListOffsets(LATEST) with the last batch's base offset + 1: drain the
        # rest of that batch (earlier runs' records) before the import starts.
        while consumer.poll(timeout_ms=1000):
            pass
        conn.send("ready")
        decided = actions = 0
        expected: int | None = None
        last = time.time()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if expected is None and conn.poll():
                expected = conn.recv()
            if expected is not None and decided >= expected:
                break
            for records in consumer.poll(timeout_ms=100, max_records=1000).values():
                for rec in records:
                    leaks, _rejected = decode_batch(rec.value)
                    for leak in leaks:
                        if index.lookup(leak.principal) is None:
                            continue
                        decision = decide_leak(
                            registry,
                            lifecycle,
                            leak,
                            NOW,
                            PROVIDERS,
                            index=index,
                            settings=settings,
                        )
                        actions += len(decision.actions)
                        decided += 1
                        last = time.time()
        conn.send((decided, actions, last))
    finally:
        consumer.close()


def end_to_end(path: Path, registry: Registry, jobs: tuple[int, ...] = (1,)) -> dict[str, Any]:
    """The whole import path through a real (embedded Tansu) broker, as it runs in production:

    1. the registry is published to its topic, as `accessguard run` does;
    2. a deciding process is spawned (a fresh interpreter: the worker's side). It reads the
       registry topic, builds its LeakIndex and waits at the end of leak.records;
    3. the real command runs as its own process: ``accessguard leaks import FILE --jobs N``.
       It reads the registry topic, builds its LeakIndex, streams the dump, matches and
       publishes matched records in LeakBatcher messages (1000 a message, per partition),
       and prints its summary with its timing;
    4. the decider does the worker's per-message work (decode_batch, lookup, decide_leak) on
       every new message until every matched record is decided.

    ``per_s`` is timed from the importer's first byte read to the last decision; the
    ``command`` figures from the command's launch (interpreter start and registry read
    included: paid once per import, not per record).

    Not included: the Faust hop and the executor's provider calls (the matched records are
    ~2 % of the dump: the worker's cost per dump record is the importer's, here).

    One broker and registry for every entry of ``jobs`` (1 is the CLI's default path, N > 1
    ``leaks import --jobs N``), after a first ``--jobs 1`` import ("cold") that finds no leak
    index snapshot yet; every run appends to leak.records, the decider counts only what is
    new."""
    import multiprocessing

    from kafka import KafkaProducer

    from streams.bus.broker import EmbeddedBroker, find_tansu
    from streams.bus.topics import create_topics
    from streams.config import load_config

    with tempfile.TemporaryDirectory(prefix="leakbench-e2e-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSGUARD_")}
        env.update(ACCESSGUARD_DATA_DIR=tmp, ACCESSGUARD_LEAKS_HMAC_KEY=HMAC_KEY)
        config = load_config(None, env=env)
        topics = Topics.from_config(config)
        broker = EmbeddedBroker(find_tansu(None), log_path=Path(tmp) / "tansu.log").start()
        try:
            create_topics(config, broker.bootstrap)
            producer = KafkaProducer(
                bootstrap_servers=broker.bootstrap,
                acks="all",
                linger_ms=5,
                max_request_size=4 * 1048576,
                client_id="bench-leak-registry",
            )
            started = time.perf_counter()
            futures = [
                producer.send(topics.registry, key=k.encode(), value=json.dumps(v).encode())
                for k, v in registry.to_changes()
            ]
            for fut in futures:
                fut.get(timeout=60)
            producer.close()
            registry_publish = time.perf_counter() - started
            context = multiprocessing.get_context("spawn")
            runs: dict[str, Any] = {}
            # The first import finds no leak index snapshot (it reads the whole registry
            # topic and writes one); the next ones read the snapshot and the changes since.
            for name, n_jobs in [("jobs=1 cold", 1), *((f"jobs={n}", n) for n in jobs)]:
                runs[name] = _e2e_run(
                    path,
                    context,
                    bootstrap=broker.bootstrap,
                    topics=topics,
                    jobs=n_jobs,
                    env=env,
                    cwd=tmp,
                )
        finally:
            broker.stop()
    return {"registry_publish_seconds": round(registry_publish, 2), **runs}


def _vm_hwm_mib(pid: int) -> float:
    """Peak RSS of ``pid`` since its exec (VmHWM; getrusage's ru_maxrss would carry the
    forking parent's size over the exec), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _watch_peak_rss(proc: subprocess.Popen[bytes]) -> dict[str, float]:
    """Wait for ``proc``, sampling its peak RSS and its children's (``--jobs``) every 20 ms."""
    command = child = 0.0
    while proc.poll() is None:
        command = max(command, _vm_hwm_mib(proc.pid))
        try:
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        except OSError:
            kids = []
        for kid in kids:
            child = max(child, _vm_hwm_mib(int(kid)))
        time.sleep(0.02)
    return {"command": round(command, 1), "child": round(child, 1)}


def _e2e_run(
    path: Path,
    context: Any,
    *,
    bootstrap: str,
    topics: Topics,
    jobs: int,
    env: dict[str, str],
    cwd: str,
) -> dict[str, Any]:
    """One run of ``accessguard leaks import`` against a waiting decider."""
    conn, child_conn = context.Pipe()
    decider = context.Process(
        target=_decide_consumer, args=(bootstrap, topics.registry, topics.leak_records, child_conn)
    )
    decider.start()
    if not conn.poll(180):
        decider.kill()
        raise TimeoutError("the deciding process did not get ready")
    conn.recv()
    command = [
        sys.executable,
        "-m",
        "streams.cli",
        "leaks",
        "import",
        str(path),
        "--broker",
        f"kafka://{bootstrap}",
        "--breach",
        "BenchBreach",
        "--no-progress",
        "--jobs",
        str(jobs),
    ]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        launched = time.time()
        proc = subprocess.Popen(
            command, stdout=out, stderr=err, env={**env, "PYTHONPATH": str(REPO)}, cwd=cwd
        )
        peaks = _watch_peak_rss(proc)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            decider.kill()
            raise RuntimeError(f"leaks import failed ({proc.returncode}): {err.read()[-2000:]!r}")
        summary = json.loads(out.read().decode().splitlines()[0])
    timing = summary["timing"]
    conn.send(summary["matched"])
    decided, actions, t_done = conn.recv() if conn.poll(600) else (None, None, time.time())
    decider.join(30)
    seconds = t_done - timing["import_started_unix"]
    items = summary["read"]
    return {
        "jobs": summary["jobs"],
        "records": items,
        "matched": summary["matched"],
        "messages": summary["messages"],
        "decided": decided,
        "actions": actions,
        "registry_read_seconds": timing["registry_read_seconds"],
        "index_snapshot": timing["index_snapshot"],
        "registry_changes_read": timing["registry_changes_read"],
        "import_seconds": timing["import_seconds"],
        "seconds": round(seconds, 3),
        "per_s": round(items / seconds),
        "command_seconds": round(t_done - launched, 3),
        "command_per_s": round(items / (t_done - launched)),
        "command_peak_rss_mib": peaks["command"],
        "command_child_peak_rss_mib": peaks["child"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--identities", type=int, default=100_000)
    parser.add_argument("--hit-rate", type=float, default=0.02)
    parser.add_argument("--formats", default="csv,ndjson", help="csv, ndjson, json")
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--memory", action="store_true", help="tracemalloc peaks (slow)")
    parser.add_argument("--e2e", action="store_true", help="end to end through the broker")
    parser.add_argument(
        "--e2e-only", action="store_true", help="only the end-to-end runs (implies --e2e)"
    )
    parser.add_argument("--quick", action="store_true", help="100k records")
    parser.add_argument("--jobs", default="1,2", help="importer processes to time end to end")
    args = parser.parse_args()
    if args.quick:
        args.records = 100_000
    args.e2e = args.e2e or args.e2e_only

    rss0 = rss_mib()
    started = time.perf_counter()
    registry = make_registry(args.identities)
    index = LeakIndex.build(registry)
    setup = {
        "registry_seconds": round(time.perf_counter() - started, 2),
        "index_keys": len(index),
        "rss_after_registry_mib": round(rss_mib(), 1),
    }
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "args": vars(args),
        "setup": setup,
        "lookup": bench_lookup(index, args.records, args.identities, args.hit_rate),
        "formats": {},
    }
    with tempfile.TemporaryDirectory(prefix="leakbench-") as tmp:
        for fmt in [f.strip() for f in args.formats.split(",") if f.strip()]:
            path = Path(tmp) / f"dump.{fmt}{'.gz' if args.gzip else ''}"
            write_dump(
                path,
                fmt,
                args.records,
                identities=args.identities,
                hit_rate=args.hit_rate,
                gz=args.gzip,
            )
            rss_before = rss_mib()
            entry: dict[str, Any] = {"file_mib": round(path.stat().st_size / 2**20, 1)}
            if not args.e2e_only:
                entry["parse"] = bench_parse(path)
                entry["parse_match"] = bench_parse_match(path, registry, index)
                entry["match_first"] = bench_match_first(path, registry, index)
                entry["rss_growth_mib"] = round(rss_mib() - rss_before, 1)
            if args.memory:
                small = Path(tmp) / f"small.{fmt}{'.gz' if args.gzip else ''}"
                write_dump(
                    small,
                    fmt,
                    max(1, args.records // 10),
                    identities=args.identities,
                    hit_rate=args.hit_rate,
                    gz=args.gzip,
                )
                entry["traced_peak_mib"] = {
                    f"{args.records // 10}": round(traced_peak(small), 2),
                    f"{args.records}": round(traced_peak(path), 2),
                }
            if args.e2e:
                jobs = tuple(int(j) for j in args.jobs.split(","))
                entry["end_to_end"] = end_to_end(path, registry, jobs)
            result["formats"][fmt] = entry
            path.unlink()
    result["rss_total_growth_mib"] = round(rss_mib() - rss0, 1)

    print(
        f"registry {args.identities} identities, index {setup['index_keys']} keys, "
        f"built in {setup['registry_seconds']} s"
    )
    lk = result["lookup"]
    print(f"lookup only: {lk['per_s']:>12,} /s  ({lk['hits']} hits of {lk['lookups']})")
    for fmt, entry in result["formats"].items():
        if "parse" not in entry:
            print(f"{fmt:7} {entry['file_mib']:>7} MiB")
        else:
            p, pm, mf = entry["parse"], entry["parse_match"], entry["match_first"]
            print(
                f"{fmt:7} {entry['file_mib']:>7} MiB  parse {p['per_s']:>9,} rec/s  "
                f"parse+match {pm['per_s']:>9,} rec/s  match-first {mf['per_s']:>9,} rec/s  "
                f"matched {pm['matched']} "
                f"actions {pm['actions']}  rss +{entry['rss_growth_mib']} MiB"
            )
        if "traced_peak_mib" in entry:
            print(f"{'':7} traced peak (MiB, by records): {entry['traced_peak_mib']}")
        e2e = entry.get("end_to_end") or {}
        if e2e:
            print(f"{'':7} registry published in {e2e['registry_publish_seconds']} s")
        for name, run in e2e.items():
            if name.startswith("jobs="):
                print(
                    f"{'':7} end to end {name:11} {run['per_s']:>9,} rec/s ({run['seconds']} s; "
                    f"{run['matched']} matched in {run['messages']} messages, "
                    f"{run['decided']} decided); whole command {run['command_per_s']:>9,} "
                    f"rec/s ({run['command_seconds']} s, registry read "
                    f"{run['registry_read_seconds']} s with snapshot {run['index_snapshot']}, "
                    f"{run['registry_changes_read']} changes; peak rss "
                    f"{run['command_peak_rss_mib']} MiB"
                    + (
                        f", its --jobs processes {run['command_child_peak_rss_mib']} MiB)"
                        if run["command_child_peak_rss_mib"]
                        else ")"
                    )
                )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"leak_matching-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
