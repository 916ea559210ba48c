"""Benchmark: hostile and heavy uploads against the real HTTP edges, with /healthz probed.

The real handlers in-process (tests/edge_harness.py: aiohttp over loopback, the broker
producer stood in), one upload at a time while a second thread probes ``/healthz`` every
10 ms. For each body: the answer, how long it took, the peak RSS growth of the process
during it (``/proc/self/clear_refs`` resets VmHWM before each), and the slowest /healthz
answer meanwhile. The issue measured the code before: a 51 KB gzip bomb took 14 s and 444 MB,
153 KB took 87 s and 1.19 GB with /healthz blocked for 20 s. Then ``--guesses`` wrong bearer
tokens from one client (20,000 were all answered 401 at ~6,000/s before the throttle).

    .venv/bin/python bench/hostile_uploads.py            # every case, about 20 s
    .venv/bin/python bench/hostile_uploads.py --repeat 3 # each case three times

Prints a table and writes bench/results/hostile_uploads-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.edge_harness import Edge, edge_server, healthz_latencies, login_batch  # noqa: E402

RESULTS = REPO / "bench" / "results"
ALICE = b"alice.nguyen@lumen-outdoor.example"


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def cases() -> list[tuple[str, Callable[[Edge], requests.Response]]]:
    bomb_51k = gzip.compress(b"a\n" * 27_000_000, 9)
    bomb_153k = gzip.compress(b"a\n" * 80_000_000, 9)
    bomb_lines = gzip.compress(b"x" * 200_000_000, 9)
    cr_csv = b"\r".join(
        [b"email,password", *(b"u%d@x.example,pw" % i for i in range(99_000)), ALICE + b",pw"]
    )
    legit = b"\n".join(
        [b"email,password", *(b"u%d@x.example,pw%d" % (i, i) for i in range(99_998)), ALICE + b",p"]
    )
    nested = b"[" * 5_000_000 + b"]" * 5_000_000
    long_line = b"email,password\n" + b"y" * 9_000_000 + b"\n" + ALICE + b",pw\n"
    login = login_batch()

    def leaks(body: bytes, ctype: str) -> Callable[[Edge], requests.Response]:
        return lambda e: e.post_leaks(body, ctype=ctype)

    def auth(body: bytes) -> Callable[[Edge], requests.Response]:
        return lambda e: e.post_auth(body)

    gz = "application/gzip"
    return [
        (f"gzip bomb {len(bomb_51k) // 1024} KB -> 54 MB lines", leaks(bomb_51k, gz)),
        (f"gzip bomb {len(bomb_153k) // 1024} KB -> 160 MB lines", leaks(bomb_153k, gz)),
        (f"gzip bomb {len(bomb_lines) // 1024} KB -> 200 MB, no newline", leaks(bomb_lines, gz)),
        ("CR-only CSV 2 MB, 99k records", leaks(cr_csv, "text/csv")),
        ("legit CSV 2.4 MB, 100k records", leaks(legit, "text/csv")),
        ("one 9 MB line", leaks(long_line, "text/csv")),
        ("nested JSON 10 MB -> leaks", leaks(nested, "application/json")),
        ("nested JSON 10 MB -> auth", auth(nested)),
        ("login batch 9.5 MB, 35k events", auth(login)),
    ]


def guessing(count: int) -> dict[str, object]:
    """``count`` wrong bearer tokens from one client, one after the other, with the default
    throttle (20 failures a minute): how they were answered, and at what rate."""
    with tempfile.TemporaryDirectory() as tmp, edge_server(Path(tmp)) as edge:
        codes: Counter[int] = Counter()
        started = time.perf_counter()
        for i in range(count):
            codes[edge.post_auth(b"[]", token=f"guess-{i}").status_code] += 1
        took = time.perf_counter() - started
        right = edge.post_auth(b"[]").status_code
    result = {
        "guesses": count,
        "answers": {str(k): v for k, v in sorted(codes.items())},
        "per_second": round(count / took),
        "right_token_while_blocked": right,
    }
    print(
        f"{count} wrong bearer tokens from one client: {dict(sorted(codes.items()))} at "
        f"{result['per_second']:,}/s; then the right token: {right}"
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--guesses", type=int, default=20_000, help="wrong tokens to send")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, edge_server(Path(tmp), auth_limit=10**9) as edge:
        for name, send in cases():
            for _ in range(args.repeat):
                stop, latencies = threading.Event(), []
                probe = threading.Thread(target=healthz_latencies, args=(edge.url, stop, latencies))
                base = _vm("VmRSS")
                _reset_peak()
                probe.start()
                started = time.perf_counter()
                try:
                    resp = send(edge)
                finally:
                    took = time.perf_counter() - started
                    stop.set()
                    probe.join()
                edge.publisher.records.clear()
                row = {
                    "case": name,
                    "status": resp.status_code,
                    "seconds": round(took, 3),
                    "peak_rss_growth_mb": round(max(0, _vm("VmHWM") - base) / 1024, 1),
                    "healthz_probes": len(latencies),
                    "healthz_max_ms": round(max(latencies, default=0.0) * 1000, 1),
                    "answer": resp.text[:90],
                }
                rows.append(row)
                print(
                    f"{name:<44} {row['status']:>4} {row['seconds']:>7.3f} s "
                    f"{row['peak_rss_growth_mb']:>7.1f} MB  "
                    f"healthz max {row['healthz_max_ms']:>6.1f} ms ({len(latencies)} probes)",
                    flush=True,
                )
    guesses = guessing(args.guesses)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS / f"hostile_uploads-{stamp}.json"
    out.write_text(json.dumps({"rows": rows, "guessing": guesses}, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
