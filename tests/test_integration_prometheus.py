"""Dashboards and alert rules proven against a real Prometheus scraping the real service.

`accessguard run` (embedded broker) and Prometheus (Debian's package, on loopback, scraping
every second with deploy/prometheus/accessguard-rules.yaml loaded) run side by side. A
scenario drives offboardings, a login detection, a failing provider and rejected input; then
every panel query of every dashboard and every alert expression must return data. An Okta
System Log poller runs inside the stack (tests/fake_logs.py) and the sources have cadences,
so the source-health series (last event, cadence, rejections, failed rounds) exist. A custody
vault (``bao server -dev``, tests/openbao.py) holds the shared logins: the leavers are cut
from it and their shared logins' re-enrolment tasks stay open, so the custody gauges have
series. Needs /usr/bin/prometheus: `make prometheus` installs it; without it these tests fail,
never skip.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from streams.model.registry_yaml import load_registry
from tests.fake_logs import OKTA_TOKEN, FakeOktaLogs, okta_event
from tests.fakes import FakeVendorServer
from tests.openbao import DevVault
from tests.promtools import (
    CATALOGUE,
    REPO,
    PrometheusServer,
    alert_rules,
    data_queries,
    grafana_to_promql,
    panel_targets,
    recording_rules,
)
from tests.stack import INGEST_TOKEN, Stack, free_port, metric_value, wait_until, write_config
from tests.test_integration_login import okta_login
from tests.test_integration_offboarding import hr_event

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOGIN_IP = "203.0.113.77"


@pytest.fixture(scope="module")
def scenario(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Stack, PrometheusServer, FakeVendorServer]]:
    """The stack and Prometheus after the scenario, with Prometheus holding its results."""
    base = tmp_path_factory.mktemp("prometheus")
    with (
        FakeVendorServer() as vendor,
        DevVault(log_path=base / "bao.log") as vault,
        FakeOktaLogs() as okta_logs,
    ):
        okta_logs.add(okta_event("prom-poll-1", _minutes_ago(2)))
        custody = {
            "type": "openbao",
            "address": vault.url,
            "token": vault.accessguard_token(),
            "alias_mount": "userpass/",
            "poll_interval": 1,
        }
        cfg = write_config(
            base / "config.yaml",
            data_dir=base / "data",
            vendor_url=vendor.url,
            extra={
                "worker.metrics_interval": 0.5,
                "retry.max_attempts": 2,
                "providers.custody": custody,
                "pollers.okta-logs": {
                    "type": "okta",
                    "base_url": okta_logs.url,
                    "token": OKTA_TOKEN,
                    "interval": 0.5,
                    "start": _minutes_ago(5),
                },
                "sources.cadence": dict.fromkeys(SOURCES, 3600),
            },
        )
        stack = Stack(cfg)
        target = stack.url.removeprefix("http://")
        with PrometheusServer(base, [target], free_port()) as prom, stack:
            # Prometheus must see the failure counters at 0 before the first failure, or
            # increase() has nothing to compare with.
            wait_until(
                lambda: prom.query('accessguard_actions_total{outcome="failed"} == 0'),
                30,
                interval=0.2,
                what="first scrape",
            )
            _drive(stack, vendor)
            _wait_custody(stack)
            _wait_scraped(prom)
            yield stack, prom, vendor


#: The sources the scenario feeds, each given a cadence.
SOURCES = ("hr_webhook", "auth_ingest:okta", "poller:okta-logs")


def _minutes_ago(minutes: int) -> str:
    when = datetime.now(UTC) - timedelta(minutes=minutes)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _drive(stack: Stack, vendor: FakeVendorServer) -> None:
    # A provider that refuses for good (403 at Graph: a permanent error) and one that is
    # flaky (two 503 answers: retried), then two offboardings.
    vendor.force_status("/revokeSignInSessions", 403)
    vendor.fail_next(2, status=503, retry_after=None)
    assert stack.post_hr(hr_event("prom-1", who="alice")).status_code == 202
    assert stack.post_hr(hr_event("prom-2", who="carol")).status_code == 202
    # Rejected input: a bad signature at the HR edge, a bad record in a login batch.
    assert stack.post_hr(hr_event("prom-3", who="bob"), secret="wrong").status_code == 401
    # Graph refuses for good, so neither offboarding revoked everything: each is counted as
    # unrevoked (against the objective), not as a time to revoke.
    wait_until(
        lambda: metric_value(stack.metrics(), "accessguard_offboardings_unrevoked_total") >= 2,
        20,
        what="two offboardings settled, unrevoked at Graph",
    )
    # A detection: the offboarded Alice logs in with her Okta session.
    resp = requests.post(
        f"{stack.url}/v1/auth/events?vendor=okta",
        json=[
            okta_login(
                "prom-login-1",
                user_id="00u1alicexyz0A1b2C3d4",
                login="alice.nguyen@lumen-outdoor.example",
                ip=LOGIN_IP,
            ),
            {"uuid": "broken", "eventType": "user.session.start"},
        ],
        headers={"Authorization": f"Bearer {INGEST_TOKEN}"},
        timeout=15,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["rejected"] == 1
    wait_until(
        lambda: (
            metric_value(
                stack.metrics(),
                "accessguard_rule_matches_total",
                rule="login_by_offboarded_identity",
            )
            >= 1
        ),
        20,
        what="detection",
    )
    wait_until(
        lambda: metric_value(stack.metrics(), "accessguard_actions_total", outcome="failed") >= 1,
        20,
        what="a failed revocation",
    )


def _wait_custody(stack: Stack) -> None:
    """Alice and Carol (and Gina, offboarded by the agency timer) held the shared X and
    TikTok logins: each offboarding cut them from the vault (read back: verified) and rotated
    the logins, leaving re-enrolment tasks open (deadlines of hours: open, not overdue) that
    the worker's custody monitor exports."""

    def cut() -> bool:
        records = [r for r in stack.ledger().values() if r.get("action") == "revoke_shared_access"]
        done = {r["identity"] for r in records if r["status"] == "done"}
        checked = all((r.get("verification") or {}).get("status") == "verified" for r in records)
        return done >= {"alice", "carol"} and checked

    wait_until(cut, 20, what="alice and carol cut from the vault, read back")
    wait_until(
        lambda: metric_value(stack.metrics(), "accessguard_custody_tasks_open") >= 1,
        20,
        what="a re-enrolment task open in the vault",
    )


def _wait_scraped(prom: PrometheusServer) -> None:
    """Until Prometheus holds the scenario's results and enough samples for 1m rates."""
    wait_until(
        lambda: prom.query(
            'accessguard_rule_matches_total{rule="login_by_offboarded_identity"} > 0'
        ),
        30,
        interval=0.5,
        what="prometheus scraped the detection",
    )
    wait_until(
        lambda: prom.query('accessguard_actions_total{outcome="failed"} > 0'),
        30,
        interval=0.5,
        what="prometheus scraped the failure",
    )
    wait_until(
        lambda: prom.query('count_over_time(up{job="accessguard"}[1m]) >= 5'),
        30,
        interval=0.5,
        what="five scrapes",
    )
    wait_until(
        lambda: (
            prom.query("accessguard_custody_tasks_open > 0")
            and prom.query("accessguard_custody_up == 1")
        ),
        30,
        interval=0.5,
        what="prometheus scraped the custody gauges",
    )
    wait_until(
        lambda: prom.query("accessguard:time_to_revoke_over_objective:ratio_rate6h"),
        30,
        interval=0.5,
        what="recording rules evaluated",
    )
    wait_until(
        lambda: (
            len(prom.query("accessguard_source_last_event_timestamp_seconds")) >= 3
            and prom.query("accessguard:source_rejected_share:ratio_rate30m")
        ),
        30,
        interval=0.5,
        what="prometheus scraped the sources' last events, and the rejected share recorded",
    )


PANELS = panel_targets()


@pytest.mark.parametrize(
    ("dashboard", "title", "expr"), PANELS, ids=[f"{d}:{t}:{e[:40]}" for d, t, e in PANELS]
)
def test_every_dashboard_panel_returns_data(
    scenario: tuple[Stack, PrometheusServer, FakeVendorServer],
    dashboard: str,
    title: str,
    expr: str,
) -> None:
    """Each panel query (Grafana variables substituted) returns a non-empty result."""
    _, prom, _ = scenario
    query = grafana_to_promql(expr)
    assert prom.query(query), f"{dashboard} / {title}: no data for {query}"


ALERTS = alert_rules()


@pytest.mark.parametrize("rule", ALERTS, ids=[r["alert"] for r in ALERTS])
def test_every_alert_expression_returns_data(
    scenario: tuple[Stack, PrometheusServer, FakeVendorServer], rule: dict[str, Any]
) -> None:
    """Each operand of each alert expression, threshold removed, returns data: no alert
    watches a series the service does not export."""
    _, prom, _ = scenario
    for query in data_queries(rule["expr"]):
        assert prom.query(query), f"{rule['alert']}: no data for {query}"


RECORDS = recording_rules()


@pytest.mark.parametrize("rule", RECORDS, ids=[r["record"] for r in RECORDS])
def test_every_recording_rule_returns_data(
    scenario: tuple[Stack, PrometheusServer, FakeVendorServer], rule: dict[str, Any]
) -> None:
    """The raw recording expressions and the recorded series both return data."""
    _, prom, _ = scenario
    assert prom.query(" ".join(rule["expr"].split())), rule["record"]
    assert prom.query(rule["record"]), rule["record"]


def test_rules_are_loaded_and_healthy_in_prometheus(
    scenario: tuple[Stack, PrometheusServer, FakeVendorServer],
) -> None:
    """Prometheus loaded every rule of the file and none failed to evaluate."""
    _, prom, _ = scenario
    groups = requests.get(f"{prom.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == len(ALERTS) + len(RECORDS)
    assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]


def test_the_revocation_failure_alert_is_pending_or_firing(
    scenario: tuple[Stack, PrometheusServer, FakeVendorServer],
) -> None:
    """The failing provider of the scenario really trips the revocation-failure alert."""
    _, prom, _ = scenario
    wait_until(
        lambda: prom.query('ALERTS{alertname="AccessGuardRevocationFailures",provider="entra"}'),
        15,
        interval=0.5,
        what="AccessGuardRevocationFailures",
    )


def _scrape(stack: Stack) -> list[Any]:
    return list(text_string_to_metric_families(stack.metrics()))


def test_dashboard_metrics_are_documented_and_exported(
    scenario: tuple[Stack, PrometheusServer, FakeVendorServer],
) -> None:
    """Every metric a dashboard or an alert queries is in docs/metrics.md and on /metrics;
    every recording rule a dashboard uses is defined in the rules file."""
    stack, _, _ = scenario
    exported = {s.name for fam in _scrape(stack) for s in fam.samples}
    catalogue = CATALOGUE.read_text(encoding="utf-8")
    recorded = {r["record"] for r in RECORDS}
    exprs = [e for _, _, e in PANELS] + [r["expr"] for r in ALERTS + RECORDS]
    names = {n for e in exprs for n in re.findall(r"\baccessguard_[a-z0-9_]+", e)}
    assert names
    for name in sorted(names):
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        assert f"`{base}`" in catalogue, f"{name} is not documented in docs/metrics.md"
        assert name in exported, f"{name} is not exported on /metrics"
    for name in {n for e in exprs for n in re.findall(r"\baccessguard:[a-z0-9_:]+", e)}:
        assert name in recorded, f"{name} is not a recording rule"


def test_no_identity_email_or_ip_in_metrics(
    scenario: tuple[Stack, PrometheusServer, FakeVendorServer],
) -> None:
    """After offboardings, a detection and rejected input, no label value on /metrics is an
    identity id, an e-mail, an alias or an IP address (docs/architecture.md, decision 8)."""
    stack, _, _ = scenario
    registry = load_registry(REPO / "examples" / "registry.yaml")
    forbidden = {LOGIN_IP}
    for ident in registry.identities.values():
        forbidden |= {ident.id, ident.hr_id, *ident.emails, *ident.aliases.values()}
    values = {v for fam in _scrape(stack) for s in fam.samples for v in s.labels.values()}
    assert not values & forbidden, values & forbidden
    for value in values:
        assert "@" not in value, value
        with pytest.raises(ValueError, match="does not appear to be"):
            ipaddress.ip_address(value)


def test_readiness_reports_progress_and_exports_its_checks(
    scenario: tuple[Stack, PrometheusServer, FakeVendorServer],
) -> None:
    """/readyz includes the progress checks, and each check is a gauge Prometheus sees."""
    stack, prom, _ = scenario
    ready = requests.get(f"{stack.url}/readyz", timeout=5).json()
    assert ready["ready"] is True
    assert {"views_tailing", "consumers_progressing"} <= set(ready["checks"])
    seen = {r["metric"]["check"] for r in prom.query("accessguard_readiness_check == 1")}
    assert seen == set(ready["checks"])
    lag = prom.query("accessguard_consumer_lag_messages")
    assert {r["metric"]["topic"] for r in lag} == {
        "accessguard.hr.events",
        "accessguard.auth.events",
        "accessguard.leak.records",
        "accessguard.auth.routed",
        "accessguard.alerts.pending",
        "accessguard.identity.events",
    }
    assert (
        time.time() - float(prom.query("accessguard_observed_timestamp_seconds")[0]["value"][1])
        < 30
    )


def test_each_rule_counts_every_login_event_evaluated(
    scenario: tuple[Stack, PrometheusServer, FakeVendorServer],
) -> None:
    """Rule evaluations are counted per batch, yet add up to one per rule and event; every
    loaded rule exports its evaluation, match and error series."""
    stack, _, _ = scenario
    text = stack.metrics()
    evaluated = metric_value(text, "accessguard_login_events_evaluated_total")
    assert evaluated >= 1
    rules = {
        s.labels["rule"]: s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "accessguard_rule_evaluations_total"
    }
    assert len(rules) >= 5
    assert set(rules.values()) == {evaluated}
    matched = {
        s.labels["rule"]
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "accessguard_rule_matches_total"
    }
    errors = {
        s.labels["rule"]
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "accessguard_rule_errors_total"
    }
    assert set(rules) <= matched
    assert set(rules) <= errors


def test_every_source_exports_its_health(
    scenario: tuple[Stack, PrometheusServer, FakeVendorServer],
) -> None:
    """The HR webhook, the Okta login ingest and the poller inside the stack each have a
    last event and a cadence in Prometheus; the poller's failed-rounds gauge is 0; the
    ingest's refused record shows in its rejected share, and no source is silent."""
    _, prom, _ = scenario
    last = {
        r["metric"]["source"] for r in prom.query("accessguard_source_last_event_timestamp_seconds")
    }
    cadence = {
        r["metric"]["source"]: float(r["value"][1])
        for r in prom.query("accessguard_source_expected_cadence_seconds")
    }
    assert set(SOURCES) <= last
    assert {s: cadence.get(s) for s in SOURCES} == dict.fromkeys(SOURCES, 3600.0)
    failures = prom.query('accessguard_poller_consecutive_failures{source="poller:okta-logs"}')
    assert [r["value"][1] for r in failures] == ["0"]
    shares = {
        r["metric"]["source"]: float(r["value"][1])
        for r in prom.query("accessguard:source_rejected_share:ratio_rate1d")
    }
    assert shares.get("auth_ingest:okta", 0) > 0, shares
    assert not prom.query('ALERTS{alertname="AccessGuardSourceSilent"}')
