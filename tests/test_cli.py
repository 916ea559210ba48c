"""The ``accessguard`` command line: registry check, replay output shapes, and start-up
failures that must be one line naming the key, with no broker left behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from click.testing import CliRunner, Result

from streams import __version__
from streams.cli import main
from tests.stack import free_port, wait_until, write_config

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

    def test_run_refuses_every_connector_problem_at_once_before_any_broker(
        self, tmp_path: Path
    ) -> None:
        """A misspelt provider key (which would make a dry-run provider call for real) and a
        poller of an unknown type stop `run` together, each named, before a broker starts."""
        config = tmp_path / "config.yaml"
        config.write_text(
            "providers:\n"
            "  idp:\n"
            "    type: okta\n"
            "    base_url: https://example.okta.com\n"
            "    dryrun: true\n"
            "pollers:\n"
            "  logs:\n"
            "    type: ldap\n",
            encoding="utf-8",
        )
        proc = accessguard("run", "--config", str(config), tmp_path=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "config providers.idp.dryrun: " in proc.stderr
        assert "did you mean dry_run?" in proc.stderr
        assert "config pollers.logs.type: " in proc.stderr
        assert "broker.started" not in proc.stdout + proc.stderr

    def test_run_refuses_a_registry_relying_on_unconfigured_providers(self, tmp_path: Path) -> None:
        """Only okta configured: the example registry's other identity providers and its
        management platforms would silently get no action, so `run` stops with exit 2 and
        one line per provider, before serving anything."""
        config = tmp_path / "config.yaml"
        config.write_text(
            "hr: {webhook_secret: s3cret}\n"
            "providers:\n"
            "  okta: {type: okta, base_url: 'https://example.okta.com', dry_run: true}\n",
            encoding="utf-8",
        )
        proc = accessguard("run", "--config", str(config), "--port", "0", tmp_path=tmp_path)
        assert proc.returncode == 2, proc.stderr
        keys = [
            line.removeprefix("error: ").split(":")[0]
            for line in proc.stderr.splitlines()
            if "config providers." in line
        ]
        assert keys == [
            "config providers.hootsuite",
            "config providers.meta-business",
            "config providers.entra",
            "config providers.google",
        ]
        assert " ready\n" not in proc.stdout

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
        """When `run` fails after starting the embedded broker (the registry it imports
        there is invalid), it exits non-zero and the Tansu process it started is gone."""
        broken = tmp_path / "broken.yaml"
        broken.write_text(BROKEN_REGISTRY, encoding="utf-8")
        proc = accessguard(
            "run",
            "--registry",
            str(broken),
            "--port",
            "0",
            tmp_path=tmp_path,
            ACCESSGUARD_HR_WEBHOOK_SECRET="s",
        )
        assert proc.returncode != 0
        assert "error: registry invalid:" in proc.stderr
        started = [e for e in _logs(proc.stderr) if e.get("event") == "broker.started"]
        assert len(started) == 1, proc.stderr[-2000:]
        assert _process_gone(int(started[0]["pid"]))
        assert any(e.get("event") == "broker.stopped" for e in _logs(proc.stderr))

    @pytest.mark.parametrize(
        "command",
        [
            ("worker",),
            ("connect", "hr-webhook"),
            ("connect", "poller", "nope"),
            ("connect", "ssf-transmitter"),
            ("registry", "import", str(REGISTRY)),
        ],
        ids=["worker", "connect", "poller", "transmitter", "import"],
    )
    def test_commands_for_an_external_broker_require_it(self, command: tuple[str, ...]) -> None:
        """worker, connect hr-webhook, connect poller and registry import refuse to run
        without ACCESSGUARD_BROKER, naming the `broker` key (before anything else)."""
        result = cli(*command)
        assert result.exit_code == 2
        assert result.stderr.startswith("error: config broker: ")
        assert "ACCESSGUARD_BROKER=kafka://" in result.stderr

    @pytest.mark.parametrize(
        ("command", "what"),
        [
            (("audit", "verify"), "`audit` reads the audit topic"),
            (("leaks", "import", str(REGISTRY)), "`leaks import` publishes to a broker"),
        ],
        ids=["audit", "leaks"],
    )
    def test_one_shot_commands_name_the_broker_they_need(
        self, command: tuple[str, ...], what: str
    ) -> None:
        """audit and leaks import need the running stack's broker: without --broker or
        ACCESSGUARD_BROKER they say what they do with it and how to give it."""
        result = cli(*command)
        assert result.exit_code == 2
        assert result.stderr.startswith(f"error: config broker: {what}: pass --broker kafka://")

    def test_connect_poller_names_an_unknown_poller(self) -> None:
        """The poller NAME must be configured; the error names ``pollers.NAME``."""
        result = cli("connect", "poller", "nope", ACCESSGUARD_BROKER="kafka://127.0.0.1:1")
        assert result.exit_code == 2
        assert result.stderr == (
            "error: config pollers.nope: no such poller in the configuration\n"
        )

    def test_connect_ssf_transmitter_needs_its_signing_key(self) -> None:
        """The transmitter signs every SET: without ``ssf.signing_key`` it refuses to start,
        naming the key, before it waits for the broker."""
        result = cli("connect", "ssf-transmitter", ACCESSGUARD_BROKER="kafka://127.0.0.1:1")
        assert result.exit_code == 2
        assert result.stderr.startswith("error: config ssf.signing_key: ")

    def test_worker_doors_are_named(self) -> None:
        """``worker.doors`` takes only the doors a worker can serve; a typo names the key."""
        result = cli(
            "worker", ACCESSGUARD_BROKER="kafka://127.0.0.1:1", ACCESSGUARD_WORKER_DOORS="scim,hr"
        )
        assert result.exit_code == 2
        assert "worker.doors" in result.stderr
        assert "'scim' or 'ssf'" in result.stderr

    def test_hr_send_without_secret_names_the_key(self, tmp_path: Path) -> None:
        """Signing needs hr.webhook_secret; without it the error names that key."""
        event = tmp_path / "event.json"
        event.write_text("{}", encoding="utf-8")
        result = cli("hr", "send", str(event))
        assert result.exit_code == 2
        assert result.stderr.startswith("error: config hr.webhook_secret: ")


def one_error_line(stderr: str, code: int, *parts: str) -> str:
    """An expected failure: a non-zero exit and one line `error: ...` on stderr holding
    every one of ``parts``, no traceback."""
    assert code != 0
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith("error: "), lines[0]
    for part in parts:
        assert part in lines[0]
    return lines[0]


def closed_port() -> int:
    """A local port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "command",
    [(), ("run",), ("hr", "send"), ("leaks", "import"), ("registry", "check"), ("rules", "test")],
    ids=lambda c: " ".join(c) or "main",
)
def test_dash_h_prints_help_everywhere(command: tuple[str, ...]) -> None:
    """`-h` is `--help`, on the group and on every subcommand."""
    result = cli(*command, "-h")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: ")
    assert "-h, --help" in result.stdout


class TestHrSendErrors:
    SECRET = {"ACCESSGUARD_HR_WEBHOOK_SECRET": "s3cret"}

    @pytest.fixture
    def event(self, tmp_path: Path) -> Path:
        path = tmp_path / "event.json"
        path.write_text('{"event_id": "e-1"}', encoding="utf-8")
        return path

    def test_no_server_is_one_line_naming_the_url(self, event: Path) -> None:
        """Nothing listening at http.host:http.port: one line with the URL, the reason and
        what to do (start `accessguard run`, or --url), not ~60 lines of traceback."""
        port = closed_port()
        result = cli("hr", "send", str(event), ACCESSGUARD_HTTP_PORT=str(port), **self.SECRET)
        line = one_error_line(
            result.stderr,
            result.exit_code,
            f"http://127.0.0.1:{port}/v1/hr/events",
            "Connection refused",
            "accessguard run",
            "--url",
        )
        assert result.exit_code == 2, line

    @pytest.mark.parametrize("url", ["notaurl", "ftp://127.0.0.1:1", "http://"])
    def test_invalid_url_is_one_line(self, event: Path, url: str) -> None:
        """An --url that is not an http(s) URL: one line naming it and the expected form."""
        result = cli("hr", "send", str(event), "--url", url, **self.SECRET)
        one_error_line(
            result.stderr, result.exit_code, url.rstrip("/"), "not an http(s) URL", "--url"
        )

    @pytest.mark.parametrize(
        ("exc", "says"),
        [
            (requests.ConnectTimeout, "no connection to http://127.0.0.1:1/v1/hr/events"),
            (requests.ReadTimeout, "gave no answer within 15 s"),
        ],
        ids=["connect", "read"],
    )
    def test_timeouts_are_one_line(
        self, event: Path, monkeypatch: pytest.MonkeyPatch, exc: type[Exception], says: str
    ) -> None:
        """A server that does not answer in time: one line saying which wait ran out."""

        def post(*_args: Any, **_kwargs: Any) -> None:
            raise exc("timed out")

        monkeypatch.setattr(requests, "post", post)
        result = cli("hr", "send", str(event), "--url", "http://127.0.0.1:1", **self.SECRET)
        one_error_line(result.stderr, result.exit_code, says)

    def test_missing_file_is_one_line(self, tmp_path: Path) -> None:
        result = cli("hr", "send", str(tmp_path / "absent.json"), **self.SECRET)
        one_error_line(result.stderr, result.exit_code, "absent.json", "does not exist")


class TestInputFileErrors:
    """Input files that are missing, directories or not text: one line naming the file."""

    @pytest.mark.parametrize(
        ("option", "name", "says"),
        [
            ("--input", "absent.ndjson", "does not exist"),
            ("--input", "", "is a directory"),
            ("--registry", "absent.yaml", "does not exist"),
        ],
        ids=["input-missing", "input-directory", "registry-missing"],
    )
    def test_replay_missing_files(self, tmp_path: Path, option: str, name: str, says: str) -> None:
        files = {"--registry": str(REGISTRY), "--input": str(EVENTS)}
        files[option] = str(tmp_path / name) if name else str(tmp_path)
        result = cli("replay", *(arg for pair in files.items() for arg in pair))
        one_error_line(result.stderr, result.exit_code, option, says)

    def test_replay_binary_input(self, tmp_path: Path) -> None:
        """A compressed or binary --input: one line saying it is not UTF-8 text."""
        path = tmp_path / "events.ndjson.gz"
        path.write_bytes(b"\x1f\x8b\x08\x00\xff\xfe binary")
        config = str(REPO / "examples" / "config.yaml")  # no provider warning, only the error
        result = cli(
            "replay", "--config", config, "--registry", str(REGISTRY), "--input", str(path)
        )
        one_error_line(result.stderr, result.exit_code, str(path), "not UTF-8 text")

    @pytest.mark.parametrize("command", [("registry", "show"), ("registry", "import")])
    def test_registry_file_missing(self, tmp_path: Path, command: tuple[str, ...]) -> None:
        """A registry FILE that does not exist fails at once, before any broker is asked."""
        result = cli(
            *command,
            str(tmp_path / "absent.yaml"),
            ACCESSGUARD_BROKER=f"kafka://127.0.0.1:{closed_port()}",
        )
        one_error_line(result.stderr, result.exit_code, "absent.yaml", "does not exist")

    def test_config_that_is_a_directory(self, tmp_path: Path) -> None:
        result = cli("run", "--config", str(tmp_path))
        one_error_line(result.stderr, result.exit_code, "--config", "is a directory")


class TestUnreachableBroker:
    """`leaks import` and `registry import` against a broker address that refuses
    connections: one line at once naming the address and where it came from, not 30 s of
    Kafka client warnings then an error."""

    def test_leaks_import(self, tmp_path: Path) -> None:
        dump = tmp_path / "dump.txt"
        dump.write_text("alice@example.com:hunter2\n", encoding="utf-8")
        port = closed_port()
        proc = accessguard(
            "leaks",
            "import",
            str(dump),
            "--broker",
            f"kafka://127.0.0.1:{port}",
            tmp_path=tmp_path,
        )
        one_error_line(
            proc.stderr, proc.returncode, f"127.0.0.1:{port}", "Connection refused", "--broker"
        )

    def test_registry_import(self, tmp_path: Path) -> None:
        port = closed_port()
        proc = accessguard(
            "registry",
            "import",
            str(REGISTRY),
            tmp_path=tmp_path,
            ACCESSGUARD_BROKER=f"kafka://127.0.0.1:{port}",
        )
        one_error_line(
            proc.stderr,
            proc.returncode,
            f"127.0.0.1:{port}",
            "Connection refused",
            "ACCESSGUARD_BROKER",
        )


class TestHttpPortErrors:
    """A process whose HTTP port cannot be had fails in one line naming the address and the
    key, before it starts (or waits for) a broker."""

    SECRET = {"ACCESSGUARD_HR_WEBHOOK_SECRET": "s3cret"}

    def test_run_on_a_busy_port(self, tmp_path: Path) -> None:
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
                **self.SECRET,
            )
        line = one_error_line(
            proc.stderr, proc.returncode, f"127.0.0.1:{port}", "http.port", "--port", "in use"
        )
        assert proc.returncode == 2, line
        assert "broker.started" not in proc.stdout + proc.stderr

    def test_run_on_an_address_not_of_this_host(self, tmp_path: Path) -> None:
        """http.host set to an address this machine does not have (TEST-NET-1)."""
        proc = accessguard(
            "run",
            "--registry",
            str(REGISTRY),
            tmp_path=tmp_path,
            ACCESSGUARD_HTTP_HOST="192.0.2.1",
            **self.SECRET,
        )
        one_error_line(proc.stderr, proc.returncode, "192.0.2.1:8080", "http.host")
        assert "broker.started" not in proc.stdout + proc.stderr

    @pytest.mark.parametrize("command", [("worker",), ("connect", "hr-webhook")])
    def test_external_broker_commands_on_a_busy_port(
        self, tmp_path: Path, command: tuple[str, ...]
    ) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            proc = accessguard(
                *command,
                "--port",
                str(port),
                tmp_path=tmp_path,
                ACCESSGUARD_BROKER=f"kafka://127.0.0.1:{closed_port()}",
                ACCESSGUARD_STARTUP_BROKER_TIMEOUT="1",
                **self.SECRET,
            )
        one_error_line(proc.stderr, proc.returncode, f"127.0.0.1:{port}", "http.port")

    def test_run_when_data_dir_is_a_file(self, tmp_path: Path) -> None:
        path = tmp_path / "data"
        path.write_text("not a directory", encoding="utf-8")
        proc = accessguard(
            "run", "--registry", str(REGISTRY), "--port", "0", tmp_path=tmp_path, **self.SECRET
        )
        one_error_line(proc.stderr, proc.returncode, "data_dir", str(path))
        assert "broker.started" not in proc.stdout + proc.stderr

    @pytest.mark.parametrize("command", [("worker",), ("connect", "hr-webhook")])
    def test_external_broker_commands_when_data_dir_is_a_file(
        self, tmp_path: Path, command: tuple[str, ...]
    ) -> None:
        """The shared start-up (streams.cli.wiring) checks the data directory of every
        long-running command before it waits for the broker: one line, no wait."""
        path = tmp_path / "data"
        path.write_text("not a directory", encoding="utf-8")
        proc = accessguard(
            *command,
            "--port",
            "0",
            tmp_path=tmp_path,
            ACCESSGUARD_BROKER=f"kafka://127.0.0.1:{closed_port()}",
            ACCESSGUARD_STARTUP_BROKER_TIMEOUT="30",
            timeout=20,
            **self.SECRET,
        )
        one_error_line(proc.stderr, proc.returncode, "data_dir", str(path))


@pytest.mark.integration
def test_run_output_through_pipes_is_the_banner_and_json_lines(tmp_path: Path) -> None:
    """The real `accessguard run` with stdout and stderr as pipes (a container, systemd,
    `2>&1 | tee`): stdout is exactly the documented ready banner, every stderr line is one
    JSON object, and no terminal control sequence (Faust's spinner) appears in either."""
    port = free_port()
    config = write_config(
        tmp_path / "config.yaml",
        data_dir=tmp_path / "data",
        vendor_url=f"http://127.0.0.1:{closed_port()}",
        http_port=port,
        extra={"executor.dry_run": True},
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSGUARD_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "run", "--config", str(config)],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _ready(url) or proc.poll() is not None, timeout=90, what="readyz")
        assert proc.poll() is None, "accessguard run exited before it was ready"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err[-3000:]
    stdout, stderr = out.decode(), err.decode()
    for text in (stdout, stderr):
        assert "\x1b" not in text
        assert "\b" not in text
    lines = stdout.splitlines()
    assert stdout.endswith("\n")
    assert lines[0] == f"accessguard {__version__} ready"
    assert re.fullmatch(
        r"  broker   kafka://127\.0\.0\.1:\d+ \(embedded Tansu, in memory\)", lines[1]
    )
    assert lines[2:] == [
        f"  http     {url}/v1/hr/events",
        f"  metrics  {url}/metrics",
        f"  health   {url}/healthz  {url}/readyz",
        f"  journal  {tmp_path / 'data' / 'journal.jsonl'}",
    ]
    logs = [orjson.loads(line) for line in stderr.splitlines()]  # each line, or it raises
    events = [entry.get("event") for entry in logs]
    assert "broker.started" in events
    assert "broker.stopped" in events


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/readyz", timeout=1).status_code == 200
    except requests.RequestException:
        return False
