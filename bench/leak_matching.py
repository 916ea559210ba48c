"""Benchmark: leaked-credential import — parse only, parse + match, (end to end: to be wired).

Generates a registry of ``--identities`` (default 100,000) identities with Registry.from_changes
and a dump of ``--records`` (default 1,000,000) records in a temporary file (CSV, NDJSON, JSON
array; ``--gzip`` compresses it), about ``--hit-rate`` of them (default 2 %) addresses of
registry identities, half of the records with a plaintext password (HMAC'd by the parser).
Then, single-threaded:

* ``lookup``      — LeakIndex.lookup alone over pre-built principals (the dict probe);
* ``parse``       — DumpReader over the file, streamed (records/s);
* ``parse+match`` — the same, plus LeakIndex.lookup per record and decide_leak per match;
* memory          — peak RSS growth (ru_maxrss) of the process, and with ``--memory`` the
  tracemalloc peak of a streamed parse at two file sizes (flat in the file size).

End to end through the broker is the lead's to wire: :func:`end_to_end` is the hook
(``accessguard leaks import`` -> LeakBatcher -> leak.records -> worker -> decide_leak).

    .venv/bin/python bench/leak_matching.py                 # 1M records, csv + ndjson
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

from connectors.dumps import DumpOptions, DumpReader  # noqa: E402
from streams.leaks import LeakIndex, LeakSettings, decide_leak  # noqa: E402
from streams.records import LeakRecord  # noqa: E402
from streams.registry import Registry  # noqa: E402
from streams.secrets import Secret  # noqa: E402
from streams.state import StateStore  # noqa: E402

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


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def options() -> DumpOptions:
    return DumpOptions(hmac_key=Secret("bench-leak-key"), breach="BenchBreach")


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


def end_to_end(path: Path, registry: Registry) -> dict[str, Any]:
    """HOOK for the lead: import ``path`` through the embedded broker and a worker, and time
    first record read -> last decision made. Expected wiring: DumpReader -> LeakBatcher
    (streams.leaks) -> publisher.send(leak.records, batch) -> worker's leak agent ->
    decode_batch -> LeakIndex.lookup -> decide_leak -> plans. Not wired yet."""
    raise NotImplementedError("end-to-end leak import is wired by the lead (see docstring)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--identities", type=int, default=100_000)
    parser.add_argument("--hit-rate", type=float, default=0.02)
    parser.add_argument("--formats", default="csv,ndjson", help="csv, ndjson, json")
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--memory", action="store_true", help="tracemalloc peaks (slow)")
    parser.add_argument("--e2e", action="store_true", help="end to end (hook; not wired yet)")
    parser.add_argument("--quick", action="store_true", help="100k records")
    args = parser.parse_args()
    if args.quick:
        args.records = 100_000

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
            entry["parse"] = bench_parse(path)
            entry["parse_match"] = bench_parse_match(path, registry, index)
            entry["rss_growth_mib"] = round(rss_mib() - rss_before, 1)
            if args.memory:
                small = Path(tmp) / f"small.{fmt}{'.gz' if args.gzip else ''}"
                write_dump(
                    small,
                    fmt,
                    max(1, args.records // 10),
                    args.identities,
                    args.hit_rate,
                    args.gzip,
                )
                entry["traced_peak_mib"] = {
                    f"{args.records // 10}": round(traced_peak(small), 2),
                    f"{args.records}": round(traced_peak(path), 2),
                }
            if args.e2e:
                try:
                    entry["end_to_end"] = end_to_end(path, registry)
                except NotImplementedError as exc:
                    entry["end_to_end"] = str(exc)
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
        p, pm = entry["parse"], entry["parse_match"]
        print(
            f"{fmt:7} {entry['file_mib']:>7} MiB  parse {p['per_s']:>9,} rec/s  "
            f"parse+match {pm['per_s']:>9,} rec/s  matched {pm['matched']} "
            f"actions {pm['actions']}  rss +{entry['rss_growth_mib']} MiB"
            + (f"  traced peak {entry['traced_peak_mib']}" if "traced_peak_mib" in entry else "")
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"leak_matching-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
