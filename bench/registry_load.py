"""Benchmark: loading an enterprise-size registry — from the YAML file and from the topic.

Generates a registry of N identities with every feature the registry has: employees,
contractors and agency members; one or two e-mails; aliases at Okta, Entra, Google and the
management platforms (some at a social platform too); an HR employee id; a password-change
time for some; 0-4 grants each on 60 brand accounts (roles, access paths sso / native /
shared_credential / api_token, MFA, some expiring); shared logins with TOTP; agencies with
members and contract ends. Then, each measurement in a fresh spawned child process (wall
time and peak memory as VmHWM from /proc/<pid>/status: ru_maxrss would carry the parent's
RSS, see FIELD-NOTES):

* ``yaml``   — :func:`streams.model.registry_yaml.load_registry` (read, parse, validate,
  build the indices) at each of ``--sizes`` (default 10k, 40k, 100k);
* ``topic``  — at ``--topic-size`` (default 100k): the file is imported with the real
  ``accessguard registry import`` command into an embedded broker (timed on its own), then a
  fresh process materialises the registry from the compacted topic the way a worker does
  (:class:`streams.bus.views.Views.start` until ready; the leak index is built there too).
  Records and bytes on the topic per identity are counted. The import is timed twice: the
  first publishes everything, the second (``again``: what ``accessguard run`` does at every
  start) reads the full topic back and publishes nothing.

    .venv/bin/python bench/registry_load.py                  # 10k/40k/100k + topic at 100k
    .venv/bin/python bench/registry_load.py --quick          # 2k/10k + topic at 10k
    .venv/bin/python bench/registry_load.py --sizes 20000 --no-topic --profile

The goal (issue 17): 100k identities in at most 10 s and 500 MB, both ways. Prints a table
and writes bench/results/registry_load-<UTC time>.json (``--profile``: cProfile's top
functions and tracemalloc's top allocation sites of the YAML load, in the JSON too).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results"
GOAL_SECONDS = 10.0
GOAL_MIB = 500.0
PLATFORMS = ("instagram", "facebook", "x", "tiktok", "linkedin", "youtube", "threads")
PROVIDERS = ("hootsuite", "meta-business")
ROLES = ("read_only", "needs_approval", "can_reply", "full_publishing", "admin")
ROLE_WEIGHTS = (15, 15, 30, 30, 10)
FIRST = ("Alice", "Bob", "Carol", "Dan", "Erin", "Frank", "Gina", "Hiro", "Ines", "Jon")
LAST = ("Nguyen", "Okafor", "Ruiz", "Meyer", "Walsh", "Lee", "Rossi", "Sato", "Costa", "Berg")


# ------------------------------------------------------------------------------ the registry


def build_registry_doc(identities: int, seed: int = 17) -> dict[str, Any]:
    """A registry document (the YAML file's content) with ``identities`` identities."""
    rng = random.Random(seed)
    accounts: list[dict[str, Any]] = []
    for a in range(60):
        account: dict[str, Any] = {
            "id": f"acct-{a:02d}",
            "platform": PLATFORMS[a % len(PLATFORMS)],
            "handle": f"@brand{a:02d}",
            "criticality": ("medium", "high", "critical", "low")[a % 4],
            "provider": PROVIDERS[a % 2],
        }
        if a % 6 == 2:
            account["shared_credential"] = {
                "totp": a % 12 == 2,
                "login": f"social{a:02d}@brand.example",
            }
        accounts.append(account)
    shared = [a for a in accounts if "shared_credential" in a]
    idents: list[dict[str, Any]] = []
    grants: list[dict[str, Any]] = []
    agencies: list[dict[str, Any]] = []
    members: list[str] = []
    changed = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    for n in range(identities):
        pid = f"u{n:06d}"
        first, last = FIRST[n % 10], LAST[(n // 10) % 10]
        kind = "agency" if n % 50 == 49 else ("contractor" if n % 7 == 3 else "employee")
        email = f"{first.lower()}.{last.lower()}.{n}@brand.example"
        ident: dict[str, Any] = {
            "id": pid,
            "name": f"{first} {last} {n}",
            "kind": kind,
            "emails": [email] if n % 5 else [email, f"{pid}@brand.example"],
            "aliases": {
                "okta": f"00u{n:08d}xyzA1b2",
                "entra": f"6f1c2d3e-0000-4000-8000-{n:012d}",
                "google": email,
                "hootsuite": f"hs-{n}",
                "meta-business": f"1002003{n:08d}",
            },
        }
        if kind != "agency":
            ident["employee_id"] = f"E{n:07d}"
        if n % 9 == 0:
            ident["aliases"]["instagram"] = f"{first.lower()}_{n}"
        if n % 997 == 500:
            ident["status"] = "offboarded"
        elif n % 1499 == 700:
            ident["status"] = "suspended"
        if n % 4 == 0:
            ident["credential_changed_at"] = changed + timedelta(minutes=n)
        idents.append(ident)
        if kind == "agency":
            members.append(pid)
            if len(members) == 8:
                agencies.append(
                    {
                        "id": f"agency-{len(agencies):04d}",
                        "name": f"Agency {len(agencies)}",
                        "contract_ends": date(2027, 1 + len(agencies) % 12, 28),
                        "members": members,
                    }
                )
                members = []
        if rng.random() < 0.25:
            continue
        for acct in rng.sample(accounts, rng.choice((1, 1, 2, 2, 3, 4))):
            via = rng.choice(("sso", "sso", "native", "api_token"))
            if acct in shared and rng.random() < 0.7:
                via = "shared_credential"
            grant: dict[str, Any] = {
                "identity": pid,
                "account": acct["id"],
                "role": rng.choices(ROLES, ROLE_WEIGHTS)[0],
                "via": via,
                "mfa": "totp" if via == "shared_credential" else rng.choice(("push", "webauthn")),
            }
            if rng.random() < 0.05:
                grant["expires_at"] = date(2027, 6, 30)
            grants.append(grant)
    if members:
        agencies.append(
            {
                "id": f"agency-{len(agencies):04d}",
                "name": f"Agency {len(agencies)}",
                "contract_ends": datetime(2026, 12, 31, 17, 0, tzinfo=UTC),
                "members": members,
            }
        )
    return {"accounts": accounts, "identities": idents, "grants": grants, "agencies": agencies}


def write_registry_yaml(path: Path, identities: int, seed: int = 17) -> int:
    """Write the generated registry to ``path`` (block style, as people write it); bytes."""
    import yaml

    doc = build_registry_doc(identities, seed)
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    with path.open("w", encoding="utf-8") as fh:
        yaml.dump(doc, fh, Dumper=dumper, sort_keys=False, allow_unicode=True, width=120)
    return path.stat().st_size


# ------------------------------------------------------------------------------ measurements

#: Run in a fresh interpreter with the measured checkout first on sys.path; prints one JSON
#: line. Nothing of the bench is imported there (``--code`` may be an older checkout).
_CHILD_YAML = """
import json, sys, time
from streams.model.registry_yaml import load_registry
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
base = hwm()
t, cpu = time.perf_counter(), time.process_time()
reg = load_registry(sys.argv[1])
seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
print(json.dumps({"seconds": seconds, "cpu_s": cpu, "vmhwm_mib": hwm(), "before_mib": base,
    "identities": len(reg.identities), "grants": len(reg.grants)}))
"""

_CHILD_TOPIC = """
import asyncio, json, sys, time
from streams.bus.views import Views
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
class Counting(Views):
    bytes_read = 0
    def _apply_batch(self, topic, records, *, own_too):
        self.bytes_read += sum(len(r.key or b"") + len(r.value or b"") for r in records)
        super()._apply_batch(topic, records, own_too=own_too)
async def main():
    prefix = sys.argv[2]
    views = Counting(sys.argv[1], registry_topic=prefix + ".registry.changes",
        lifecycle_topic=prefix + ".lifecycle", ledger_topic=prefix + ".ledger",
        writer_id=b"bench")
    base = hwm()
    t, cpu = time.perf_counter(), time.process_time()
    await views.start(timeout=600)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    await views.stop()
    return {"seconds": seconds, "cpu_s": cpu, "vmhwm_mib": hwm(), "before_mib": base,
        "identities": len(views.registry.identities), "grants": len(views.registry.grants),
        "records": views.records_applied, "bytes": views.bytes_read}
print(json.dumps(asyncio.run(main())))
"""


def _vmhwm_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def spawn(
    argv: list[str], *, code: Path, timeout: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``argv`` with ``code`` on PYTHONPATH; wall time, peak memory (VmHWM, polled every
    50 ms: the last value read before it exits) and its last stdout line as JSON."""
    child_env = dict(env or os.environ)
    child_env["PYTHONPATH"] = str(code)
    t = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=code, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, _vmhwm_mib(proc.pid) or 0.0)
        if time.perf_counter() - t > timeout:
            proc.kill()
            proc.wait()
            return {"finished": False, "wall_s": timeout, "vmhwm_mib": peak}
        time.sleep(0.05)
    wall = time.perf_counter() - t
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed ({proc.returncode}): {err[-2000:]}")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    result.setdefault("vmhwm_mib", peak)
    return {"finished": True, "wall_s": wall, **result}


def measure_yaml(path: Path, code: Path, timeout: float) -> dict[str, Any]:
    return spawn([sys.executable, "-c", _CHILD_YAML, str(path)], code=code, timeout=timeout)


def measure_topic(
    path: Path, identities: int, code: Path, timeout: float, tmp: Path
) -> dict[str, Any]:
    """Import ``path`` with ``accessguard registry import`` (this checkout's, timed) into a
    fresh embedded broker, then materialise it with ``code``'s Views in a fresh process."""
    from streams.bus.broker import EmbeddedBroker, find_tansu
    from streams.bus.topics import create_topics
    from streams.config import load_config

    broker = EmbeddedBroker(find_tansu(), log_path=tmp / "tansu.log").start()
    try:
        prefix = "agbench"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSGUARD_")}
        env.update(
            ACCESSGUARD_TOPICS_PREFIX=prefix,
            ACCESSGUARD_BROKER=broker.url,
            ACCESSGUARD_DATA_DIR=str(tmp / "data"),
            ACCESSGUARD_LOG_FORMAT="json",
            ACCESSGUARD_LOG_LEVEL="warning",
        )
        create_topics(load_config(None, env=env), broker.bootstrap)
        imported = spawn(
            [sys.executable, "-m", "streams.cli", "registry", "import", str(path)],
            code=REPO,
            timeout=timeout,
            env=env,
        )
        if not imported["finished"]:
            return {"import": imported}
        # what `accessguard run` does at every start: the file again, against a full topic
        reimported = spawn(
            [sys.executable, "-m", "streams.cli", "registry", "import", str(path)],
            code=REPO,
            timeout=timeout,
            env=env,
        )
        loaded = spawn(
            [sys.executable, "-c", _CHILD_TOPIC, broker.bootstrap, prefix],
            code=code,
            timeout=timeout,
            env=env,
        )
        if loaded.get("records"):
            loaded["records_per_identity"] = loaded["records"] / identities
            loaded["bytes_per_identity"] = loaded["bytes"] / identities
        return {"import": imported, "reimport": reimported, "load": loaded}
    finally:
        broker.stop()


# ------------------------------------------------------------------------------ report


def _cell(result: dict[str, Any]) -> str:
    if not result.get("finished"):
        return f"> {result['wall_s']:.0f} s (stopped), {result['vmhwm_mib']:.0f} MiB+"
    seconds = result.get("seconds", result["wall_s"])
    ok = seconds <= GOAL_SECONDS and result["vmhwm_mib"] <= GOAL_MIB
    cpu = f" (cpu {result['cpu_s']:5.2f} s)" if "cpu_s" in result else " " * 15
    return f"{seconds:6.2f} s{cpu} {result['vmhwm_mib']:6.0f} MiB  {'ok' if ok else 'OVER'}"


def machine() -> dict[str, Any]:
    git = shutil.which("git") or "/usr/bin/git"
    commit = subprocess.run(
        [git, "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    import yaml

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "pyyaml": yaml.__version__,
        "libyaml": bool(getattr(yaml, "__with_libyaml__", False)),
        "loadavg_at_start": os.getloadavg(),
        "git_commit": commit,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--topic-size", type=int, default=100_000)
    parser.add_argument("--no-topic", action="store_true", help="YAML loads only")
    parser.add_argument("--quick", action="store_true", help="2k and 10k, topic at 10k")
    parser.add_argument(
        "--code", type=Path, default=REPO, help="checkout whose code is measured (PYTHONPATH)"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="per measurement (s)")
    parser.add_argument("--profile", action="store_true", help="cProfile + tracemalloc of a load")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    sizes = args.sizes or ([2_000, 10_000] if args.quick else [10_000, 40_000, 100_000])
    topic_size = 10_000 if args.quick else args.topic_size
    info = machine()
    print(
        f"registry_load: code {args.code}, nproc {info['nproc']}, load "
        f"{info['loadavg_at_start'][0]:.2f}, libyaml {info['libyaml']}",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="accessguard-bench-registry-"))
    try:
        files: dict[int, dict[str, Any]] = {}
        for n in sorted({*sizes, *([] if args.no_topic else [topic_size])}):
            path = tmp / f"registry-{n}.yaml"
            files[n] = {"path": path, "bytes": write_registry_yaml(path, n)}
        result: dict[str, Any] = {"machine": info, "code": str(args.code), "yaml": {}, "topic": {}}
        for n in sizes:
            r = measure_yaml(files[n]["path"], args.code, args.timeout)
            r["file_bytes"] = files[n]["bytes"]
            result["yaml"][str(n)] = r
            print(f"  yaml  {n:>7,} identities  {_cell(r)}", flush=True)
        if not args.no_topic:
            r = measure_topic(files[topic_size]["path"], topic_size, args.code, args.timeout, tmp)
            result["topic"][str(topic_size)] = r
            print(f"  import {topic_size:>6,} identities  {_cell(r['import'])}", flush=True)
            if "reimport" in r:
                print(f"  again  {topic_size:>6,} identities  {_cell(r['reimport'])}", flush=True)
            if "load" in r:
                print(f"  topic {topic_size:>7,} identities  {_cell(r['load'])}", flush=True)
        if args.profile:
            result["profile"] = profile_load(files[min(sizes)]["path"])
            print(result["profile"]["top_tottime"])
        print(f"\ngoal: <= {GOAL_SECONDS:.0f} s and <= {GOAL_MIB:.0f} MiB")
        print("(s: wall time of the load itself; cpu: its process time, steadier on a shared")
        print("machine; MiB: the process's peak resident memory, interpreter and imports included)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # ~50 MB of YAML per 100k identities
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    out = args.out or RESULTS / f"registry_load-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"results: {out}")
    return 0


def profile_load(path: Path) -> dict[str, Any]:
    """cProfile's top functions and tracemalloc's top allocation sites of one load (here)."""
    import cProfile
    import io
    import pstats
    import tracemalloc

    from streams.model.registry_yaml import load_registry

    prof = cProfile.Profile()
    prof.runcall(load_registry, path)
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(15)
    tracemalloc.start()
    registry = load_registry(path)
    current, peak = tracemalloc.get_traced_memory()
    sites = tracemalloc.take_snapshot().statistics("lineno")[:10]
    tracemalloc.stop()
    n = len(registry.identities)
    return {
        "identities": n,
        "top_tottime": text.getvalue(),
        "traced_bytes_per_identity": current / n,
        "traced_peak_bytes_per_identity": peak / n,
        "top_allocations": [str(s) for s in sites],
    }


if __name__ == "__main__":
    raise SystemExit(main())
