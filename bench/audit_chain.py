"""Benchmark: what the audit hash chain costs per audit record on the worker's write path.

Runs :meth:`streams.runtime.writes.Writer.audit` (journal append, then the publish, with a
publisher that serialises the value as the real one does and sends nothing) for a detection-
shaped record, in two phases within one run, alternated ``--rounds`` times (identical runs
minutes apart drift +-20% on this machine, so phases are compared within one run):

* **unchained**: the write path as it was before the chain (journal append + publish);
* **chained**: ``Writer.audit`` as it is (seal: canonical JSON + SHA-256, then the same).

Also times :meth:`AuditChain.seal` alone. The journal is a real file (fsync off: audit
records are not fsynced, ``durable=False``) in a temporary directory.

    .venv/bin/python bench/audit_chain.py                 # 20,000 records x 3 rounds
    .venv/bin/python bench/audit_chain.py --records 5000  # quicker

Prints microseconds per record (median of the rounds) and the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from streams.bus.auditchain import AuditChain  # noqa: E402
from streams.bus.journal import Journal  # noqa: E402
from streams.bus.topics import Topics  # noqa: E402
from streams.config import load_config  # noqa: E402
from streams.runtime.writes import Writer  # noqa: E402

#: The fields of a ``detection`` audit record (streams/runtime/engine.py), typical sizes.
FIELDS: dict[str, Any] = {
    "rule": "impossible_travel",
    "severity": "high",
    "identity": "ana",
    "event_id": "okta-7f3a1c2b9d4e",
    "group": "3f9a0c1e5b7d2a4c",
    "actions": [
        {"action": "revoke_sessions", "provider": "okta", "target": "ana", "key": "k" * 40},
        {"action": "force_mfa_reenrolment", "provider": "okta", "target": "ana", "key": "m" * 40},
    ],
    "dropped": [],
}


class NullPublisher:
    """Serialises like :class:`streams.bus.views.Publisher.send_json`, sends nothing."""

    async def send_json(self, topic: str, key: str, value: Any) -> None:
        orjson.dumps(value)


class UnchainedWriter(Writer):
    """The audit write as it was before the chain."""

    async def audit(self, kind: str, key: str, **fields: Any) -> None:
        entry = await self.record(kind, **fields)
        await self.publish(self.topics.audit, key, entry)


async def _phase(writer: Writer, records: int) -> float:
    started = time.perf_counter()
    for i in range(records):
        await writer.audit("detection", f"evt-{i}", **FIELDS)
    return (time.perf_counter() - started) / records * 1e6


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    topics = Topics.from_config(load_config(None, env={}))
    results: dict[str, list[float]] = {"unchained": [], "chained": [], "seal": []}
    with tempfile.TemporaryDirectory() as tmp:

        def writer(cls: type[Writer], name: str) -> Writer:
            journal = Journal(Path(tmp) / f"{name}.jsonl", fsync=False)
            return cls(
                topics=topics,
                publisher=NullPublisher(),  # type: ignore[arg-type]
                views=None,  # type: ignore[arg-type]
                journal=journal,
                clock=time.time,
            )

        async def run() -> None:
            plain, chained = writer(UnchainedWriter, "plain"), writer(Writer, "chained")
            await _phase(plain, 500)  # warm-up
            await _phase(chained, 500)
            for _ in range(args.rounds):
                results["unchained"].append(await _phase(plain, args.records))
                results["chained"].append(await _phase(chained, args.records))
                chain = AuditChain("bench-0-00000000")
                started = time.perf_counter()
                for _i in range(args.records):
                    chain.advance(chain.seal("detection", 1.0, FIELDS))
                results["seal"].append((time.perf_counter() - started) / args.records * 1e6)
            plain.journal.close()
            chained.journal.close()

        asyncio.run(run())
    median = {k: statistics.median(v) for k, v in results.items()}
    print(f"records per phase: {args.records}, rounds: {args.rounds} (median shown)")
    for name in ("unchained", "chained", "seal"):
        rounds = ", ".join(f"{x:.2f}" for x in results[name])
        print(f"  {name:<10} {median[name]:7.2f} us/record   rounds: {rounds}")
    extra = median["chained"] - median["unchained"]
    print(f"  chain adds {extra:.2f} us/record ({extra / median['unchained'] * 100:.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
