"""Benchmark: the edge fuzzing of tests/test_fuzz_edges.py at a larger count (issue 13).

The same generators, checks and in-process server (tests/edge_harness.py: the real aiohttp
handlers over loopback, an in-memory broker producer) as the CI-sized tests, with
``--examples`` generated cases per endpoint (100,000 by default; the tests run 10,000). Each
endpoint gets a fresh server. Prints, per endpoint: cases, seconds, cases/s, server errors
(5xx other than the 503 of a case that took the broker down) and other problems (a status
docs/openapi.yaml does not list, a 4xx that is not a JSON error, ...), then each distinct
problem with the shortest request that showed it.

    .venv/bin/python bench/fuzz_edges.py                       # 100k cases per endpoint
    .venv/bin/python bench/fuzz_edges.py --examples 20000 --endpoints hr,leaks
    .venv/bin/python bench/fuzz_edges.py --seed 7              # other cases than the tests'

Without ``--seed`` the run is derandomized (the same cases every time; the first 10,000 per
endpoint are not those of the tests, whose hypothesis settings differ in max_examples).
Writes bench/results/fuzz_edges-<UTC time>.json. Exit status 1 when any server error was seen.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.edge_harness import edge_server  # noqa: E402
from tests.test_fuzz_edges import (  # noqa: E402
    ENDPOINTS,
    FUZZ_SERVER,
    Problems,
    fuzz,
    server_logs,
)


def run_one(name: str, examples: int, seed: int | None) -> tuple[Problems, float]:
    with (
        tempfile.TemporaryDirectory(prefix="fuzz-edges-") as tmp,
        server_logs() as errors,
        edge_server(Path(tmp), **FUZZ_SERVER) as edge,
    ):
        started = time.perf_counter()
        problems = fuzz(edge, errors, name, examples, seed=seed)
        elapsed = time.perf_counter() - started
    return problems, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=100_000, help="cases per endpoint")
    parser.add_argument(
        "--endpoints",
        default=",".join(ENDPOINTS),
        help=f"comma-separated, of: {', '.join(ENDPOINTS)}",
    )
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: fixed)")
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/")
    args = parser.parse_args()
    names = [n.strip() for n in args.endpoints.split(",") if n.strip()]
    unknown = [n for n in names if n not in ENDPOINTS]
    if unknown:
        parser.error(f"unknown endpoint(s) {', '.join(unknown)}: use {', '.join(ENDPOINTS)}")

    rows: list[dict[str, Any]] = []
    reports: list[str] = []
    print(f"{'endpoint':<22} {'cases':>8} {'seconds':>8} {'cases/s':>8} {'5xx':>6} {'other':>6}")
    for name in names:
        problems, elapsed = run_one(name, args.examples, args.seed)
        server_errors = problems.server_errors
        other = sum(problems.counts.values()) - server_errors
        rate = problems.cases / elapsed if elapsed else 0.0
        print(
            f"{ENDPOINTS[name].name:<22} {problems.cases:>8} {elapsed:>8.1f} {rate:>8.0f}"
            f" {server_errors:>6} {other:>6}",
            flush=True,
        )
        rows.append(
            {
                "endpoint": ENDPOINTS[name].name,
                "cases": problems.cases,
                "generated": problems.generated,
                "seconds": round(elapsed, 2),
                "cases_per_second": round(rate, 1),
                "server_errors": server_errors,
                "other_problems": other,
                "statuses": problems.summary(),
                "problems": [
                    {"label": label, "status": status, "what": what, "count": count}
                    for (label, status, what), count in problems.counts.most_common()
                ],
            }
        )
        if problems.counts:
            reports.append(problems.report())
    for report in reports:
        print()
        print(report[:20000])
    if not args.no_json:
        out = REPO / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"fuzz_edges-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
        path.write_text(
            json.dumps(
                {
                    "examples": args.examples,
                    "seed": args.seed,
                    "endpoints": rows,
                    "python": platform.python_version(),
                },
                indent=2,
            )
        )
        print(f"wrote {path.relative_to(REPO)}")
    return 1 if any(row["server_errors"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
