"""Helpers for the tests that run the real Prometheus (Debian's `prometheus` package):
finding the binaries, running a server on loopback, and turning dashboard and alert
expressions into queries that must return data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
import yaml

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))
RULES_FILE = REPO / "deploy" / "prometheus" / "accessguard-rules.yaml"
PROMETHEUSRULE_FILE = REPO / "deploy" / "k8s" / "base" / "prometheusrule.yaml"
CATALOGUE = REPO / "docs" / "metrics.md"

HOW_TO_GET = (
    "is not installed: run `make prometheus` (or `apt-get install prometheus` as root on "
    "Debian/Ubuntu, which provides /usr/bin/prometheus and /usr/bin/promtool)"
)

#: Grafana's variables, as the test substitutes them before querying Prometheus.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "${__rate_interval}": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "${__range}": "1h",
}


def binary(name: str) -> str:
    """Path of ``prometheus`` or ``promtool``; a test that needs one fails (never skips)."""
    found = shutil.which(name)
    if found is None and Path(f"/usr/bin/{name}").is_file():
        found = f"/usr/bin/{name}"
    if found is None:
        raise AssertionError(f"{name} {HOW_TO_GET}")
    return found


def load_rules() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    return data


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in load_rules()["groups"] for r in g["rules"] if "alert" in r]


def recording_rules() -> list[dict[str, Any]]:
    return [r for g in load_rules()["groups"] for r in g["rules"] if "record" in r]


def dashboards() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, json.loads(p.read_text(encoding="utf-8"))) for p in DASHBOARDS]


def panel_targets() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) for every query of every panel."""
    out = []
    for name, dash in dashboards():
        for panel in dash["panels"]:
            for target in panel.get("targets", ()):
                out.append((name, str(panel["title"]), str(target["expr"])))
    return out


def grafana_to_promql(expr: str) -> str:
    for var, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unsubstituted Grafana variable in {expr!r}"
    return expr


_SET_OPERATOR = re.compile(r"\s+(?:and|or|unless)\s+")
_THRESHOLD = re.compile(r"\s*(?:>=|<=|==|!=|>|<)\s*(?:bool\s+)?\(?[-+*/0-9.e\s]+\)?\s*$")
_ABSENT = re.compile(r"^absent\((.*)\)$", re.DOTALL)


def _split_top_level(expr: str) -> list[str]:
    """Split on and/or/unless outside parentheses and braces."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(expr):
        if char in "({[":
            depth += 1
        elif char in ")}]":
            depth -= 1
        elif depth == 0:
            match = _SET_OPERATOR.match(expr, index)
            if match:
                parts.append(expr[start:index])
                start = match.end()
    parts.append(expr[start:])
    return [p.strip() for p in parts if p.strip()]


def data_queries(expr: str) -> list[str]:
    """The queries that must return data for an alert expression to be meaningful: each
    operand of and/or/unless with its threshold comparison removed, and ``absent(x)`` as
    ``x`` (absent() returns data only while the series is missing)."""
    out = []
    for operand in _split_top_level(" ".join(expr.split())):
        query = _THRESHOLD.sub("", operand).strip()
        absent = _ABSENT.match(query)
        out.append(absent.group(1) if absent else query)
    return out


class PrometheusServer:
    """A real Prometheus on loopback scraping ``targets`` every second, with the rules file."""

    def __init__(self, workdir: Path, targets: list[str], port: int) -> None:
        self.workdir = workdir
        self.targets = targets
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES_FILE)],
            "scrape_configs": [
                {
                    "job_name": "accessguard",
                    "scrape_interval": "1s",
                    "scrape_timeout": "900ms",
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config), encoding="utf-8")
        log = open(self.workdir / "prometheus.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={cfg}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log()[-3000:]}")
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"prometheus not ready within {timeout}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def query(self, expr: str) -> list[dict[str, Any]]:
        resp = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = resp.json()
        assert resp.status_code == 200, (expr, body)
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
