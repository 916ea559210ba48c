"""Benchmark: the soak scenario of tests/test_soak.py, longer and without assertions.

Starts ``accessguard run`` (embedded Tansu broker, Faust worker, HTTP server) as a subprocess
with a generated registry (1,000 login-only identities, a pool of identities to offboard with
10 grants each) and local vendor servers (tests/fakes.py), all on loopback. For ``--seconds``
it posts Okta login events to ``POST /v1/auth/events`` at ``--rate`` events/s (batches of
``--batch``) and sends a signed HR event every ``--offboard-every`` seconds (three
``terminated`` for each ``suspended``), while sampling every 2 s the resident memory of the
``accessguard run`` process and of its Tansu child and the consumer lag from ``/metrics``.
Then it stops the load and measures how long the lag takes to drain, and the time to revoke
of each offboarding (202 -> last revocation call at the vendor). See tests/soak.py.

    .venv/bin/python bench/soak.py                    # 300 s at 2,500 events/s
    .venv/bin/python bench/soak.py --seconds 180 --rate 3000

Prints the figures and writes bench/results/soak-<UTC time>.json (with every sample).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from tests.soak import MIB, SoakSettings, run_soak  # noqa: E402

RESULTS = REPO / "bench" / "results"


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    git = shutil.which("git") or "/usr/bin/git"
    try:
        commit = subprocess.run(
            [git, "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()
        dirty = subprocess.run(
            [git, "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.splitlines()
    except OSError:
        commit, dirty = "", []
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()),
        "git_commit": commit,
        "git_modified": [line[3:] for line in dirty if line.strip()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="seconds of load")
    parser.add_argument("--rate", type=float, default=2500.0, help="login events per second")
    parser.add_argument("--batch", type=int, default=250, help="login events per request")
    parser.add_argument(
        "--offboard-every", type=float, default=2.0, help="seconds between HR events"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra stack configuration (YAML value), e.g. --set worker.rule_interval=5",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, journal)")
    parser.add_argument("--out", type=Path, help="result JSON (default bench/results/...)")
    args = parser.parse_args()

    settings = SoakSettings(
        seconds=args.seconds,
        rate=args.rate,
        batch=args.batch,
        offboard_every=args.offboard_every,
        config=tuple(
            (key, yaml.safe_load(value))
            for key, _, value in (item.partition("=") for item in args.set)
        ),
    )
    info = machine()
    tmp = Path(tempfile.mkdtemp(prefix="accessguard-soak-"))
    print(
        f"soak: {args.seconds:g}s, {args.rate:g} login events/s in batches of {args.batch},"
        f" an HR event every {args.offboard_every:g}s; nproc {info['nproc']}, load"
        f" {info['loadavg_at_start'][0]:.2f}\n  workdir {tmp}",
        flush=True,
    )
    started = time.time()
    try:
        result = run_soak(tmp, settings, log=lambda line: print(line, flush=True))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    data = result.to_dict()
    w = result.worker_memory
    goal = {
        "ttr_p99_s": result.ttr["p99"],
        "ttr_objective_met": result.ttr["p99"] is not None and result.ttr["p99"] <= 1.0,
        "worker_rss_growth_mib": None if w["growth"] is None else w["growth"] / MIB,
        "worker_rss_slope_mib_per_min": (
            None if w["slope_per_min"] is None else w["slope_per_min"] / MIB
        ),
        "lost_login_events": result.events_accepted - result.evaluated_final,
    }
    out = args.out or RESULTS / f"soak-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "soak",
                "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
                "duration_s": time.time() - started,
                "command": " ".join(["python", *sys.argv]),
                "machine": info,
                "goal": goal,
                **data,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print()
    print(result.summary())
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
