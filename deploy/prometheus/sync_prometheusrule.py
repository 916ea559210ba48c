"""Write deploy/k8s/base/prometheusrule.yaml from deploy/prometheus/accessguard-rules.yaml.

The plain rules file is the source; the PrometheusRule (prometheus-operator) carries the same
groups. tests/test_prometheus_rules.py fails when the two differ: run this after editing.

    .venv/bin/python deploy/prometheus/sync_prometheusrule.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "deploy" / "prometheus" / "accessguard-rules.yaml"
TARGET = REPO / "deploy" / "k8s" / "base" / "prometheusrule.yaml"

HEADER = """\
# Generated from deploy/prometheus/accessguard-rules.yaml by
# deploy/prometheus/sync_prometheusrule.py - edit the source and re-run, never this file.
"""


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def prometheus_rule(groups: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "accessguard",
            "labels": {
                "app.kubernetes.io/name": "accessguard",
                "app.kubernetes.io/component": "monitoring",
            },
        },
        "spec": {"groups": groups},
    }


def render() -> str:
    source = yaml.safe_load(SOURCE.read_text(encoding="utf-8"))
    body = yaml.dump(prometheus_rule(source["groups"]), Dumper=_Dumper, sort_keys=False, width=1000)
    return HEADER + body


def main() -> int:
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {TARGET.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
