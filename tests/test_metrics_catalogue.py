"""The metrics: documented in docs/metrics.md, named per Prometheus conventions, and the
timer-refreshed gauges (registry figures, consumer lag, progress) computed right."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from prometheus_client import Counter, Gauge, Histogram

from streams.model.registry_yaml import load_registry
from streams.model.state import IdentityState, StateStore
from streams.runtime.observe import LagReport, Progress, consumer_lag, registry_figures
from streams.support import metrics

REPO = Path(__file__).resolve().parent.parent
CATALOGUE = (REPO / "docs" / "metrics.md").read_text(encoding="utf-8")


def _registered() -> dict[str, str]:
    """Exported family name -> type, for every metric the service registers."""
    out = {}
    for family in metrics.REGISTRY.collect():
        name = family.name
        if family.type == "counter":
            name += "_total"
        elif family.type == "info":
            name += "_info"
        out[name] = family.type
    return out


def test_every_registered_metric_is_catalogued_with_its_type() -> None:
    """Each metric has a row in docs/metrics.md naming its type; no row names a metric the
    service does not register."""
    registered = _registered()
    rows = dict(re.findall(r"^\| `(accessguard_[a-z0-9_]+)` \| ([a-z]+)", CATALOGUE, re.M))
    for name, kind in registered.items():
        assert name in rows, f"{name} missing from docs/metrics.md"
        expected = "gauge" if kind == "info" else kind
        assert rows[name] == expected, (name, rows[name], kind)
    assert set(rows) == set(registered)


def test_metric_names_follow_prometheus_conventions() -> None:
    """Prefix, `_total` counters, `_seconds` histograms, no unit-less timers."""
    for collector in metrics.REGISTRY._collector_to_names:
        for name in metrics.REGISTRY._collector_to_names[collector]:
            assert name.startswith("accessguard_"), name
        if isinstance(collector, Counter):
            assert collector._name.startswith("accessguard_")
        if isinstance(collector, Histogram):
            assert collector._name.endswith("_seconds"), collector._name
        if isinstance(collector, Gauge):
            assert not collector._name.endswith("_total"), collector._name


def test_no_label_can_carry_a_person() -> None:
    """Label names are from a bounded vocabulary: never user, email, ip, identity."""
    allowed = {"source", "reason", "type", "outcome", "provider", "action", "sink", "severity"}
    allowed |= {"topic", "rule", "kind", "role", "check", "version"}
    # the HTTP ingest endpoints (three), and the failure classes of streams.runtime.outages (seven)
    allowed |= {"endpoint", "failure"}
    # custody tasks: registry account ids, platforms and criticalities (configured names), and
    # the task event enum
    allowed |= {"account", "platform", "criticality", "event"}
    # where an alert went: page, notify, review, severity (streams/runtime/incidents.py)
    allowed |= {"intent"}
    # Shared Signals: configured transmitter and receiver names (streams/config/ssf.py)
    allowed |= {"transmitter", "receiver"}
    # identity-security events evaluated per vendor (the closed set kinds.LOGIN_VENDORS, which
    # IdentityEvent validates)
    allowed |= {"vendor"}
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            assert set(sample.labels) - {"le"} <= allowed, (family.name, sample.labels)


def test_registry_figures_count_drift_and_agency_grants() -> None:
    """Identities by kind, grants by role and without MFA; an offboarded identity counts as
    drift only while it holds a grant accessguard has not removed; expired agency members'
    grants count until removed."""
    registry = load_registry(REPO / "examples" / "registry.yaml")
    now = datetime(2026, 11, 26, 12, tzinfo=UTC)
    lifecycle = StateStore()
    base = registry_figures(registry, lifecycle, now)
    assert sum(base.identities.values()) == len(registry.identities)
    assert sum(base.grants.values()) == len(registry.grants)
    assert base.without_mfa == sum(g.mfa == "none" for g in registry.grants.values())
    assert base.offboarded_with_grants == 0
    expired = [a for a in registry.agencies.values() if a.contract_ends <= now]
    assert expired  # OldCo in the example registry
    held = sum(len(registry.grants_of(m)) for a in expired for m in a.members)
    assert base.agency_grants_past_end == held > 0

    alice = [g.account for g in registry.grants_of("alice")]
    lifecycle.put(IdentityState("alice", status="offboarded", removed_grants=tuple(alice[:-1])))
    assert registry_figures(registry, lifecycle, now).offboarded_with_grants == 1
    lifecycle.put(replace(lifecycle.identity("alice"), removed_grants=tuple(alice)))
    assert registry_figures(registry, lifecycle, now).offboarded_with_grants == 0
    for agency in expired:
        for member in agency.members:
            grants = tuple(g.account for g in registry.grants_of(member))
            lifecycle.put(IdentityState(member, status="offboarded", removed_grants=grants))
    assert registry_figures(registry, lifecycle, now).agency_grants_past_end == 0


class _TP(NamedTuple):
    topic: str
    partition: int


class _Consumer:
    def __init__(self, ends: dict[_TP, int], committed: dict[_TP, int | None]) -> None:
        self.ends = ends
        self._committed_offset = committed

    def assignment(self) -> set[_TP]:
        return set(self.ends)

    async def highwaters(self, *tps: Any) -> dict[_TP, int]:
        return {tp: self.ends[tp] for tp in tps}


def test_consumer_lag_sums_end_minus_committed_per_topic() -> None:
    """Lag per topic over the assigned partitions; unassigned input topics report 0."""
    hr0, hr1, auth0 = _TP("hr", 0), _TP("hr", 1), _TP("auth", 0)
    consumer = _Consumer({hr0: 10, hr1: 5, auth0: 7}, {hr0: 4, hr1: None, auth0: 7})
    report = asyncio.run(consumer_lag(consumer, ("hr", "auth", "leaks")))
    assert report.lag == {"hr": 11, "auth": 0, "leaks": 0}
    assert report.committed == {"hr": 4, "auth": 7, "leaks": 0}


def test_progress_fails_only_when_lagging_without_commits() -> None:
    """No lag is progress; lag with moving commits is progress; lag with commits frozen for
    the stall window is not."""
    progress = Progress(stall_after=60)
    assert progress.observe(LagReport({"hr": 0}, {"hr": 5}), now=0)
    assert progress.observe(LagReport({"hr": 9}, {"hr": 5}), now=30)
    assert not progress.observe(LagReport({"hr": 9}, {"hr": 5}), now=61)
    assert progress.observe(LagReport({"hr": 8}, {"hr": 6}), now=62)
    assert progress.observe(LagReport({"hr": 0}, {"hr": 6}), now=500)
