"""The ``accessguard`` command line: registry check, replay output shapes, and start-up
failures that must be one line naming the key, with no broker left behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from streams import __version__
from streams.cli import main

REPO = Path(__file__).resolve().parent.parent
REGISTRY = REPO / "examples" / "registry.yaml"
EVENTS = REPO / "examples" / "events.ndjson"
#: Every ACCESSGUARD_* variable of the test process is removed for the CLI under test.
CLEAN_ENV: dict[str, str | None] = {k: None for k in os.environ if k.startswith("ACCESSGUARD_")}

BROKEN_REGISTRY = """\
accounts:
  - id: ig
    platform: instagram
    handle: "@x"
    criticality: critical
    provider: meta
identities:
  - id: alice
    name: Alice
    kind: employee
    emails: [alice@example.com]
  - id: bob
    name: Bob
    kind: robot
    emails: [bob@example.com]
grants:
  - identity: alice
    account: nope
    role: admin
    via: sso
    mfa: totp
  - identity: alice
    account: ig
    role: god
    via: sso
    mfa: totp
agencies: []
"""


def cli(*args: str, stdin: str | None = None, **env: str) -> Result:
    runner = CliRunner()
    return runner.invoke(main, list(args), input=stdin, env={**CLEAN_ENV, **env})


def accessguard(
    *args: str, tmp_path: Path, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess (for commands that start processes)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSGUARD_")}
    clean.update(ACCESSGUARD_DATA_DIR=str(tmp_path / "data"), ACCESSGUARD_LOG_FORMAT="json", **env)
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        cwd=REPO,
        env=clean,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] == "Z"
    except OSError:
        return True


def _logs(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_version() -> None:
    """--version prints the package version."""
    result = cli("--version")
    assert result.exit_code == 0
    assert __version__ in result.output


class TestRegistryCheck:
    def test_example_registry_is_ok(self) -> None:
        """The shipped example registry passes the check with exit 0."""
        result = cli("registry", "check", str(REGISTRY))
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == f"{REGISTRY}: ok"

    def test_broken_registry_lists_every_error_with_file_and_line(self, tmp_path: Path) -> None:
        """Every problem is reported at once as file:line: message, then a count on stderr,
        and the exit code is 1."""
        path = tmp_path / "broken.yaml"
        path.write_text(BROKEN_REGISTRY, encoding="utf-8")
        result = cli("registry", "check", str(path))
        assert result.exit_code == 1
        lines = result.stdout.splitlines()
        assert len(lines) == 3
        assert lines[0].startswith(f"{path}:14: ")
        assert "kind: must be one of" in lines[0]
        assert lines[1].startswith(f"{path}:18: ")
        assert "unknown account 'nope'" in lines[1]
        assert lines[2].startswith(f"{path}:24: ")
        assert "role: must be one of" in lines[2]
        assert result.stderr.strip() == f"3 problem(s) in {path}"

    def test_missing_registry_file_is_a_problem_not_a_traceback(self, tmp_path: Path) -> None:
        """A file that does not exist is one reported problem, exit 1."""
        result = cli("registry", "check", str(tmp_path / "absent.yaml"))
        assert result.exit_code == 1
        assert "cannot read the registry" in result.stdout
        assert result.exception is None or isinstance(result.exception, SystemExit)


class TestReplay:
    SHAPES: dict[str, set[str]] = {
        "action": {"type", "action", "identity", "account", "provider", "cause", "idempotency_key"},
        "alert": {"type", "severity", "rule", "identity", "dedup_key", "title"},
        "rejected": {"type", "line", "reason"},
        "scheduled": {"type", "event_id", "identity", "effective_at"},
        "skipped": {"type", "event_id", "identity", "outcome", "reason"},
        "detection": {
            "type",
            "rule",
            "severity",
            "event_id",
            "identity",
            "deduplicated",
            "actions",
            "error",
        },
    }

    def _replay(self, *extra: str, stdin: str | None = None) -> list[dict[str, Any]]:
        result = cli(
            "replay",
            "--registry",
            str(REGISTRY),
            "--at",
            "2026-11-26T12:00:00Z",
            *extra,
            stdin=stdin,
        )
        assert result.exit_code == 0, result.output
        return [orjson.loads(line) for line in result.stdout.splitlines()]

    def test_prints_ndjson_in_the_documented_shapes(self) -> None:
        """Every output line is one JSON object with exactly the documented keys for its
        type; the example file yields actions, alerts, a schedule, a duplicate, rule
        detections for its login lines, and the two unusable lines as rejected with their
        1-based line numbers."""
        out = self._replay("--input", str(EVENTS))
        for obj in out:
            assert set(obj) == self.SHAPES[obj["type"]], obj
        types = {o["type"] for o in out}
        assert types == set(self.SHAPES)
        rejected = [o for o in out if o["type"] == "rejected"]
        assert [(r["line"], r["reason"]) for r in rejected] == [
            (7, "email: not an e-mail address"),
            (8, "time: missing"),
        ]
        alice = [
            o
            for o in out
            if o["type"] == "action" and o["identity"] == "alice" and o["cause"].startswith("hr:")
        ]
        assert {a["cause"] for a in alice} == {"hr:terminated:evt-2026-0001"}
        fired = {o["rule"] for o in out if o["type"] == "detection"}
        assert fired == {"login_by_offboarded_identity", "unknown_principal_brand_login"}
        assert len({a["idempotency_key"] for a in alice}) == len(alice)
        summary = next(o for o in out if o["type"] == "alert" and o["identity"] == "alice")
        assert summary["severity"] == "info"
        assert summary["rule"] == "offboarding.completed"
        assert summary["title"].startswith("Offboarded Alice Nguyen")
        scheduled = next(o for o in out if o["type"] == "scheduled")
        assert scheduled["event_id"] == "evt-2026-0004"

    def test_reads_stdin_and_is_deterministic(self) -> None:
        """``--input -`` reads stdin; the same input and clock give the same output."""
        text = EVENTS.read_text(encoding="utf-8")
        first = self._replay("--input", "-", stdin=text)
        assert first == self._replay("--input", str(EVENTS))

    def test_bad_at_is_a_usage_error(self) -> None:
        """An --at that is not an ISO-8601 time is a usage error (exit 2) naming --at."""
        result = cli(
            "replay", "--registry", str(REGISTRY), "--input", str(EVENTS), "--at", "tomorrow"
        )
        assert result.exit_code == 2
        assert "Invalid value for --at" in result.stderr
        assert result.stdout == ""

    def test_missing_input_option_is_a_usage_error(self) -> None:
        """--input is required."""
        result = cli("replay", "--registry", str(REGISTRY))
        assert result.exit_code == 2
        assert "--input" in result.stderr


class TestStartupErrors:
    def test_run_with_missing_registry_fails_in_one_line_before_any_broker(
        self, tmp_path: Path
    ) -> None:
        """`accessguard run` with a registry file that does not exist exits 2 with one line
        naming the `registry` key, and starts no broker at all."""
        proc = accessguard("run", "--registry", str(tmp_path / "absent.yaml"), tmp_path=tmp_path)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith("error: config registry: ")
        assert "absent.yaml" in lines[0]
        assert "broker.started" not in proc.stdout + proc.stderr

    @pytest.mark.parametrize(
        ("env", "key"),
        [
            ({"ACCESSGUARD_HTTP_PORT": "abc"}, "http.port"),
            ({"ACCESSGUARD_TOPICS_PARTITIONS": "-3"}, "topics.partitions"),
            ({"ACCESSGUARD_LOG_FORMAT": "xml"}, "log.format"),
        ],
    )
    def test_run_with_bad_config_fails_in_one_line_naming_the_key(
        self, tmp_path: Path, env: dict[str, str], key: str
    ) -> None:
        """A bad configuration value stops `run` with exit 2 and a single line naming the
        key (no traceback)."""
        result = cli("run", **env)
        assert result.exit_code == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(f"error: config {key}: ")

    def test_run_with_unknown_key_in_config_file_names_it(self, tmp_path: Path) -> None:
        """A misspelt key in --config is named in the one-line error."""
        cfg = tmp_path / "config.yaml"
        cfg.write_text("http:\n  prot: 9000\n", encoding="utf-8")
        result = cli("run", "--config", str(cfg))
        assert result.exit_code == 2
        assert result.stderr.startswith("error: config http.prot: unknown key")

    @pytest.mark.integration
    def test_run_failing_after_the_broker_started_leaves_no_broker(self, tmp_path: Path) -> None:
        """When `run` fails after starting the embedded broker (its HTTP port is taken),
        it exits non-zero and the Tansu process it started is gone."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            proc = accessguard(
                "run",
                "--registry",
                str(REGISTRY),
                "--port",
                str(port),
                tmp_path=tmp_path,
            )
        assert proc.returncode != 0
        started = [e for e in _logs(proc.stderr) if e.get("event") == "broker.started"]
        assert len(started) == 1, proc.stderr[-2000:]
        assert _process_gone(int(started[0]["pid"]))
        assert any(e.get("event") == "broker.stopped" for e in _logs(proc.stderr))

    @pytest.mark.parametrize(
        "command",
        [("worker",), ("connect", "hr-webhook"), ("registry", "import", str(REGISTRY))],
        ids=["worker", "connect", "import"],
    )
    def test_commands_for_an_external_broker_require_it(self, command: tuple[str, ...]) -> None:
        """worker, connect hr-webhook and registry import refuse to run without
        ACCESSGUARD_BROKER, naming the `broker` key."""
        result = cli(*command)
        assert result.exit_code == 2
        assert result.stderr.startswith("error: config broker: ")
        assert "ACCESSGUARD_BROKER=kafka://" in result.stderr

    def test_hr_send_without_secret_names_the_key(self, tmp_path: Path) -> None:
        """Signing needs hr.webhook_secret; without it the error names that key."""
        event = tmp_path / "event.json"
        event.write_text("{}", encoding="utf-8")
        result = cli("hr", "send", str(event))
        assert result.exit_code == 2
        assert result.stderr.startswith("error: config hr.webhook_secret: ")
