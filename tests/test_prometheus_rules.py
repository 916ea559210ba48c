"""The alert rules: valid for the real promtool, unit-tested alert by alert, deployed the same
way on Kubernetes, each routed by severity and linked to a runbook. Needs /usr/bin/promtool
(`make prometheus`); without it these tests fail, never skip."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests import promtools
from tests.promtools import (
    PROMETHEUSRULE_FILE,
    REPO,
    RULES_FILE,
    alert_rules,
    binary,
    data_queries,
    load_rules,
)

UNIT_TESTS = sorted((REPO / "tests" / "prometheus").glob("*.test.yaml"))


def _promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_promtool_check_rules_accepts_the_rules_file() -> None:
    """The rules file is valid for Prometheus (syntax, PromQL, templates)."""
    result = _promtool("check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    """Every alert fires when it should and stays quiet when it should not."""
    assert UNIT_TESTS
    for path in UNIT_TESTS:
        result = _promtool("test", "rules", path.name, cwd=path.parent)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    """Each alert name appears in a promtool test with at least one expected alert."""
    fired = set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for check in case.get("alert_rule_test", ()):
                if check.get("exp_alerts"):
                    fired.add(check["alertname"])
    assert {r["alert"] for r in alert_rules()} <= fired


def test_every_alert_routes_by_severity_and_links_a_runbook() -> None:
    """`severity` is page or ticket; `runbook_url` names a runbook that exists."""
    names = [r["alert"] for r in alert_rules()]
    assert len(names) == len(set(names))
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        runbook = rule["annotations"]["runbook_url"]
        assert runbook.startswith("docs/runbooks/"), runbook
        assert (REPO / runbook).is_file(), runbook
        assert rule["annotations"]["summary"], rule["alert"]


def test_the_issue_s_alerts_are_all_there() -> None:
    """Monitor down (dead man's switch), lag, dead letters, rule errors, revocation
    failures, the time-to-revoke burn and registry drift each have an alert."""
    exprs = " ".join(r["expr"] for r in alert_rules())
    for needle in (
        'absent(up{job="accessguard"})',
        "accessguard_consumer_lag_messages",
        "accessguard_dead_letters_total",
        "accessguard_rule_errors_total",
        'accessguard_actions_total{outcome="failed"}',
        "accessguard:time_to_revoke_over_objective:ratio_rate5m",
        "accessguard:time_to_revoke_over_objective:ratio_rate1h",
        "accessguard_registry_offboarded_identities_with_grants",
    ):
        assert needle in exprs, needle


def test_the_prometheusrule_carries_the_same_groups() -> None:
    """deploy/k8s/base/prometheusrule.yaml is the rules file wrapped for the operator
    (regenerate with deploy/prometheus/sync_prometheusrule.py)."""
    resource = yaml.safe_load(PROMETHEUSRULE_FILE.read_text(encoding="utf-8"))
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    assert resource["kind"] == "PrometheusRule"
    assert resource["spec"]["groups"] == load_rules()["groups"]


def test_threshold_removal_keeps_the_series_queried() -> None:
    """How the integration test turns alert expressions into data queries."""
    assert data_queries('up{job="a"} == 0') == ['up{job="a"}']
    assert data_queries('absent(up{job="a"})') == ['up{job="a"}']
    assert data_queries("sum by (t) (x) > 100\nand\nsum by (t) (deriv(x[10m])) > 0") == [
        "sum by (t) (x)",
        "sum by (t) (deriv(x[10m]))",
    ]
    assert data_queries(
        "a:b:ratio_rate1h > (14.4 * 0.01) and a:b:ratio_rate5m > (14.4 * 0.01)"
    ) == [
        "a:b:ratio_rate1h",
        "a:b:ratio_rate5m",
    ]


def test_a_missing_prometheus_fails_and_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that need Prometheus fail (never skip) and name `make prometheus`."""
    monkeypatch.setattr(promtools.shutil, "which", lambda _name: None)
    with pytest.raises(AssertionError, match=r"make prometheus.*apt-get install prometheus"):
        promtools.binary("prometheus-not-installed")
