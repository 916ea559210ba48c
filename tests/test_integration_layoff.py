"""A layoff end to end: 60 signed terminations at once through `accessguard run` (embedded
Tansu broker, Faust worker, HTTP server) against vendor fakes that enforce their documented
rate limits (tests/ratelimits.py): every action done exactly once and read back, the rate
limits waited out rather than failed, and one batch incident instead of sixty summaries."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ratelimits import Limit, RateLimitedVendorServer
from tests.stack import Stack, metric_value, terminated_event, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PEOPLE = 60
GRANTS = 2
PLATFORMS = ("hootsuite", "meta-business")


def write_registry(path: Path) -> list[dict[str, Any]]:
    """``PEOPLE`` employees with aliases at every provider and ``GRANTS`` grants each."""
    accounts = [
        {
            "id": f"acct-{a}",
            "platform": ("instagram", "x")[a % 2],
            "handle": f"@layoff{a}",
            "criticality": "high",
            "provider": PLATFORMS[a % 2],
        }
        for a in range(4)
    ]
    people = []
    grants = []
    for n in range(PEOPLE):
        pid = f"l{n:03d}"
        people.append(
            {
                "id": pid,
                "name": f"Layoff {pid}",
                "kind": "employee",
                "employee_id": f"L{n:04d}",
                "emails": [f"{pid}@layoff.example"],
                "aliases": {
                    "okta": f"00ulayoff{pid}",
                    "entra": f"layoff-{pid}",
                    "google": f"{pid}@layoff.example",
                    "hootsuite": f"hs-{pid}",
                    "meta-business": f"mb-{pid}",
                },
            }
        )
        for k in range(GRANTS):
            grants.append(
                {
                    "identity": pid,
                    "account": f"acct-{(n + k) % 4}",
                    "role": "full_publishing",
                    "via": "native",
                    "mfa": "totp",
                }
            )
    doc = {"accounts": accounts, "identities": people, "grants": grants}
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return people


@pytest.fixture
def vendor() -> Iterator[RateLimitedVendorServer]:
    limits = {"okta": Limit(25, 1.0), "graph": Limit(25, 1.0), "google": Limit(25, 1.0)}
    with RateLimitedVendorServer(**limits) as server:
        yield server


def send_all(stack: Stack, people: list[dict[str, Any]], clients: int = 10) -> list[int]:
    statuses: list[int] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        for person in people[number::clients]:
            event = terminated_event(
                f"layoff-{person['id']}", person["employee_id"], person["emails"][0]
            )
            status = stack.post_hr(event).status_code
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def settled(stack: Stack, event_ids: list[str]) -> dict[str, dict[str, Any]] | None:
    """The ledger once every decided action of every event is done and read back."""
    decided: dict[str, list[str]] = {}
    for entry in stack.journal_so_far():
        if entry.get("kind") == "decision" and entry.get("event_id") in event_ids:
            decided[entry["event_id"]] = [a["idempotency_key"] for a in entry["actions"]]
    if len(decided) < len(event_ids):
        return None
    ledger = stack.ledger()
    for keys in decided.values():
        for key in keys:
            record = ledger.get(key)
            if record is None or "verification" not in record:
                return None
    return {key: ledger[key] for keys in decided.values() for key in keys}


def test_a_layoff_under_rate_limits_acts_once_verifies_and_pages_once(
    tmp_path: Path, vendor: RateLimitedVendorServer
) -> None:
    """60 terminations at once: every action of every offboarding is done and read back,
    each acting call reached its vendor exactly once, the vendors' rate limits were met
    (calls held or refused, counted in accessguard_provider_rate_limited_total) without a
    failed action, and on-call got one batch incident, resolved at the end, instead of
    sixty summaries."""
    people = write_registry(tmp_path / "registry.yaml")
    config = write_config(
        tmp_path / "config.yaml",
        data_dir=tmp_path / "data",
        vendor_url=vendor.url,
        extra={
            "registry": str(tmp_path / "registry.yaml"),
            "log.level": "warning",
            "verify.timeout": 300.0,
            "alerts.batch_window": 3.0,
            "alerts.outage_update_interval": 2.0,
        },
    )
    event_ids = [f"layoff-{p['id']}" for p in people]
    stack = Stack(config, log_dir=tmp_path)
    try:
        stack.start(timeout=120)
        assert Counter(send_all(stack, people)) == {202: PEOPLE}
        deadline = time.monotonic() + 240
        ledger = None
        while ledger is None and time.monotonic() < deadline:
            time.sleep(1.0)
            ledger = settled(stack, event_ids)
        assert ledger is not None, "not every action was done and read back in 240 s"
        time.sleep(5.0)  # the batch closes alerts.batch_window after its last offboarding
        metrics = stack.metrics()
    finally:
        stack.stop()
    statuses = Counter(record["status"] for record in ledger.values())
    assert statuses == {"done": len(ledger)}
    checks = Counter(record["verification"]["status"] for record in ledger.values())
    assert set(checks) <= {"verified", "not_verifiable"}, checks
    acting = Counter((c["method"], c["path"]) for c in vendor.calls)
    alerts = ("/v2/enqueue", "/slack/")  # pages and messages, not actions
    repeated = {k: n for k, n in acting.items() if n > 1 and not k[1].startswith(alerts)}
    assert repeated == {}
    assert metric_value(metrics, "accessguard_provider_rate_limited_total") > 0
    assert metric_value(metrics, "accessguard_actions_total", outcome="failed") == 0
    pages = [c["json"] for c in vendor.calls if c["path"] == "/v2/enqueue"]
    opened = [p for p in pages if "Offboarding batch" in str(p.get("payload", ""))]
    keys = {p["dedup_key"] for p in opened}
    assert len(keys) == 1
    batch = [p for p in pages if p["dedup_key"] in keys]  # a resolve carries no payload
    assert [p["event_action"] for p in batch][-1] == "resolve", [
        (p["event_action"], p.get("payload", {}).get("summary")) for p in batch[-3:]
    ]
    slack = [c for c in vendor.calls if c["path"].startswith("/slack/")]
    summaries = [c for c in slack if "Offboarded" in str(c["json"])]
    assert len(summaries) < 10, "batch members sent their own summaries"
