"""The Grafana dashboards and provisioning files follow the usual provisioning conventions:
a stable uid, `id: null`, a `${datasource}` Prometheus variable and no hard-coded data source;
every query names only
catalogued metrics and defined recording rules. (That each query returns data on a real
Prometheus is tests/test_integration_prometheus.py.)"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.promtools import CATALOGUE, REPO, dashboards, grafana_to_promql, recording_rules

DASHBOARDS = dashboards()
EXPECTED = {
    "accessguard-overview",
    "accessguard-offboarding",
    "accessguard-detections",
    "accessguard-pipeline",
}


def _datasource_refs(node: Any) -> list[Any]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                found.append(value)
            else:
                found.extend(_datasource_refs(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_datasource_refs(item))
    return found


def test_the_four_dashboards_exist_with_stable_unique_uids() -> None:
    """Overview, offboarding, detections and pipeline; uids fixed, ids null."""
    uids = [d["uid"] for _, d in DASHBOARDS]
    assert set(uids) == EXPECTED
    assert len(uids) == len(set(uids))
    for _, dash in DASHBOARDS:
        assert dash["id"] is None
        assert len(dash["uid"]) <= 40


@pytest.mark.parametrize(("name", "dash"), DASHBOARDS, ids=[n for n, _ in DASHBOARDS])
def test_dashboard_uses_the_datasource_variable_only(name: str, dash: dict[str, Any]) -> None:
    """A `datasource` variable of type prometheus; every panel and target uses it."""
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    refs = _datasource_refs(dash["panels"])
    assert refs
    for ref in refs:
        assert ref == {"type": "prometheus", "uid": "${datasource}"}, (name, ref)
    assert "Prometheus" not in str(refs)


@pytest.mark.parametrize(("name", "dash"), DASHBOARDS, ids=[n for n, _ in DASHBOARDS])
def test_panels_have_ids_positions_and_queries(name: str, dash: dict[str, Any]) -> None:
    """Each panel has a unique id, a grid position, a description and at least one query."""
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), name
    for panel in dash["panels"]:
        assert panel["gridPos"]["w"] <= 24
        assert panel["description"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            grafana_to_promql(target["expr"])


def test_every_queried_metric_is_catalogued_and_every_recording_rule_defined() -> None:
    """Dashboard queries name only metrics in docs/metrics.md and recording rules in the
    rules file."""
    catalogue = CATALOGUE.read_text(encoding="utf-8")
    recorded = {r["record"] for r in recording_rules()}
    for _, dash in DASHBOARDS:
        for panel in dash["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                for name in re.findall(r"\baccessguard_[a-z0-9_]+", expr):
                    base = re.sub(r"_(bucket|count|sum)$", "", name)
                    assert f"`{base}`" in catalogue, (panel["title"], name)
                for name in re.findall(r"\baccessguard:[a-z0-9_:]+", expr):
                    assert name in recorded, (panel["title"], name)


def test_time_to_revoke_is_shown_against_the_one_second_objective() -> None:
    """The offboarding dashboard draws the 1 s objective as a threshold line."""
    dash = next(d for _, d in DASHBOARDS if d["uid"] == "accessguard-offboarding")
    panel = next(p for p in dash["panels"] if p["title"].startswith("Time to revoke vs"))
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert any(s["value"] == 1 for s in steps)
    assert panel["fieldConfig"]["defaults"]["unit"] == "s"


def test_provisioning_files_load_the_dashboards_and_a_prometheus_datasource() -> None:
    """Grafana provisioning: a file provider and one Prometheus data source."""
    base = REPO / "dashboards" / "provisioning"
    providers = yaml.safe_load((base / "dashboards" / "accessguard.yaml").read_text())
    assert providers["apiVersion"] == 1
    assert providers["providers"][0]["type"] == "file"
    sources = yaml.safe_load((base / "datasources" / "prometheus.yaml").read_text())
    assert sources["datasources"][0]["type"] == "prometheus"
