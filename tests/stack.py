"""Runs the real ``accessguard`` CLI as a subprocess for integration tests, against the real
embedded Tansu broker and local vendor servers (tests/fakes.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests
import yaml

from connectors.ingest.hr_webhook import SIGNATURE_HEADER, sign
from streams.config import SECRET_KEYS
from tests.fakes import (
    GOOGLE_TOKEN,
    GRAPH_TOKEN,
    OKTA_TOKEN,
    PD_ROUTING_KEY,
    PLATFORM_TOKEN,
    SLACK_WEBHOOK_PATH,
)

SECRET = "integration-test-secret"
INGEST_TOKEN = "integration-ingest-token"
LEAK_TOKEN = "integration-leak-token"
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(
    path: Path,
    *,
    data_dir: Path,
    vendor_url: str,
    google_url: str | None = None,
    http_port: int | None = None,
    broker: str = "",
    extra: dict[str, Any] | None = None,
) -> Path:
    """A config whose providers and sinks all point at local vendor servers."""
    platform_actions = {
        "revoke_sessions": {
            "method": "POST",
            "path": "/platform/members/{user_ref}/sessions/revoke",
        },
        "remove_grant": {
            "method": "DELETE",
            "path": "/platform/profiles/{account}/members/{user_ref}",
        },
        "downgrade_grant": {
            "method": "PUT",
            "path": "/platform/profiles/{account}/members/{user_ref}",
            "body": {"role": "{role}"},
        },
    }
    config: dict[str, Any] = {
        "broker": broker,
        "data_dir": str(data_dir),
        "registry": str(REPO / "examples" / "registry.yaml"),
        "http": {"host": "127.0.0.1", "port": http_port or free_port()},
        "hr": {"webhook_secret": SECRET},
        "auth": {"ingest_token": INGEST_TOKEN},
        "leaks": {"ingest_token": LEAK_TOKEN},
        "rules": {"dir": str(REPO / "rules")},
        "log": {"format": "json", "level": "info"},
        "worker": {"schedule_interval": 0.2},
        "retry": {
            "base_delay": 0.1,
            "max_delay": 1.0,
            "slow_retry_interval": 2.0,
            "read_timeout": 5.0,
        },
        "providers": {
            "okta": {"type": "okta", "base_url": vendor_url, "token": OKTA_TOKEN},
            "entra": {"type": "graph", "base_url": vendor_url, "token": GRAPH_TOKEN},
            "google": {
                "type": "google",
                "base_url": google_url or vendor_url,
                "token": GOOGLE_TOKEN,
            },
            "hootsuite": {
                "type": "generic",
                "base_url": vendor_url,
                "token": PLATFORM_TOKEN,
                "actions": platform_actions,
            },
            "meta-business": {
                "type": "generic",
                "base_url": vendor_url,
                "token": PLATFORM_TOKEN,
                "actions": platform_actions,
            },
            "secret-store": {"type": "secret_store", "path": str(data_dir / "secrets")},
        },
        "alerts": {
            "sinks": {
                "pagerduty": {
                    "type": "pagerduty",
                    "url": vendor_url,
                    "routing_key": PD_ROUTING_KEY,
                },
                "slack": {"type": "slack", "webhook_url": vendor_url + SLACK_WEBHOOK_PATH},
            }
        },
    }
    for key, value in (extra or {}).items():
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


class Stack:
    """``accessguard <command>`` in a subprocess. ``start()`` waits for /readyz."""

    def __init__(
        self,
        config_path: Path,
        command: tuple[str, ...] = ("run",),
        log_dir: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.extra_env = env or {}
        self.config_path = config_path
        self.config = yaml.safe_load(config_path.read_text())
        self.command = command
        self.url = f"http://127.0.0.1:{self.config['http']['port']}"
        self.log_dir = log_dir or config_path.parent
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def data_dir(self) -> Path:
        return Path(self.config["data_dir"])

    def start(self, timeout: float = 60.0, *, wait_ready: bool = True) -> Stack:
        """Start the process; wait until /readyz says 200 (``wait_ready``), else only
        until the HTTP port answers at all."""
        self.starts += 1
        out = open(self.log_dir / f"stack-{self.starts}.out", "wb")  # noqa: SIM115
        err = open(self.log_dir / f"stack-{self.starts}.err", "wb")  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSGUARD_")}
        env.update(self.extra_env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", *self.command, "--config", str(self.config_path)],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env=env,
        )
        out.close()
        err.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"accessguard exited with {self.proc.returncode}:\n{self.stderr()[-3000:]}"
                )
            try:
                resp = requests.get(f"{self.url}/readyz", timeout=1)
                if resp.status_code == 200 or not wait_ready:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"stack not ready within {timeout}s:\n{self.stderr()[-3000:]}")

    def stderr(self) -> str:
        path = self.log_dir / f"stack-{self.starts}.err"
        return path.read_text(errors="replace") if path.exists() else ""

    def stdout(self) -> str:
        path = self.log_dir / f"stack-{self.starts}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.stderr().splitlines():
            if line.startswith("{"):
                try:
                    entries.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    continue
        return entries

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def post_hr(
        self,
        event: dict[str, Any] | bytes,
        *,
        secret: str = SECRET,
        timestamp: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        body = event if isinstance(event, bytes) else orjson.dumps(event)
        hdrs = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body, timestamp)}
        hdrs.update(headers or {})
        return requests.post(f"{self.url}/v1/hr/events", data=body, headers=hdrs, timeout=15)

    def metrics(self) -> str:
        return requests.get(f"{self.url}/metrics", timeout=5).text

    def journal(self) -> list[dict[str, Any]]:
        path = self.data_dir / "journal.jsonl"
        return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]

    def journal_so_far(self) -> list[dict[str, Any]]:
        """The journal while the process writes it: a missing file is empty and a line
        still being written (no newline yet) is left for the next read."""
        return read_journal(self.data_dir / "journal.jsonl")

    def ledger(self) -> dict[str, dict[str, Any]]:
        """The ledger as journaled so far: idempotency key -> its latest record."""
        return {e["key"]: e["value"] for e in self.journal_so_far() if e.get("kind") == "ledger"}

    def decided_actions(self, event_id: str) -> list[dict[str, Any]]:
        """The actions the decision on ``event_id`` planned (its journal entry)."""
        return [
            action
            for e in self.journal_so_far()
            if e.get("kind") == "decision" and e.get("event_id") == event_id
            for action in e.get("actions") or []
        ]

    def wait_for_ledger(
        self,
        event_id: str,
        *,
        skip: Callable[[dict[str, Any]], bool] | None = None,
        status: str = "done",
        timeout: float = 20.0,
    ) -> list[dict[str, Any]]:
        """Wait until every action decided for ``event_id`` (except those ``skip`` picks)
        has a ledger record with ``status`` in the journal: what a restart consults to not
        call a provider twice. Returns those records."""

        def recorded() -> list[dict[str, Any]] | None:
            actions = [a for a in self.decided_actions(event_id) if not (skip and skip(a))]
            ledger = self.ledger()
            records = [ledger.get(a["idempotency_key"]) for a in actions]
            if actions and all(r is not None and r.get("status") == status for r in records):
                return [r for r in records if r is not None]
            return None

        try:
            return list(wait_until(recorded, timeout, 0.05))
        except TimeoutError:
            missing = [
                f"{a['provider']}:{a['action']}:{a.get('account')}"
                for a in self.decided_actions(event_id)
                if not (skip and skip(a))
                and (self.ledger().get(a["idempotency_key"]) or {}).get("status") != status
            ]
            raise AssertionError(
                f"{event_id}: ledger records not {status!r} within {timeout}s: "
                f"{missing or 'no decision journaled'}"
            ) from None

    # --- secrets ---------------------------------------------------------------------

    def secrets(self) -> dict[str, str]:
        """Every secret value the stack was started with: config keys that hold secrets
        (tokens, hr.webhook_secret, auth.ingest_token, routing keys, Slack webhook URLs and
        their token segment, leaks.hmac_key), ``env:``/``file:`` ones resolved, and
        ``ACCESSGUARD_*`` environment overrides of such keys."""
        found = config_secrets(self.config, self.extra_env)
        suffixes = tuple(f"_{k.upper()}" for k in (*SECRET_KEYS, "hmac_key"))
        for name, value in self.extra_env.items():
            if name.startswith("ACCESSGUARD_") and name.endswith(suffixes) and value:
                found[f"env {name}"] = value
        return found

    def assert_no_secret_leaked(self, *, metrics: bool = True) -> None:
        """No configured secret appears in what the process wrote (stdout and stderr of
        every start), in its journal, in any other file under data_dir except the secret
        store, or (``metrics``, the process running) in its /metrics text."""
        secrets = self.secrets()
        assert secrets, "no secrets found in the config: the scan would prove nothing"
        short = sorted(name for name, value in secrets.items() if len(value) < 8)
        assert not short, f"secrets too short to scan for without false hits: {short}"
        journal = self.data_dir / "journal.jsonl"
        assert journal.is_file(), f"no journal at {journal}: nothing ran?"
        places: dict[str, bytes] = {}
        for n in range(1, self.starts + 1):
            for ext in ("out", "err"):
                path = self.log_dir / f"stack-{n}.{ext}"
                if path.exists():
                    places[path.name] = path.read_bytes()
        assert any(places.values()), "the process wrote no output: nothing to scan"
        stores = [
            Path(p["path"]).resolve()
            for p in (self.config.get("providers") or {}).values()
            if isinstance(p, dict) and p.get("type") == "secret_store" and p.get("path")
        ]
        for path in sorted(self.data_dir.rglob("*")):
            resolved = path.resolve()
            if path.is_file() and not any(resolved.is_relative_to(s) for s in stores):
                places[str(path.relative_to(self.data_dir))] = path.read_bytes()
        if metrics:
            assert self.proc is not None, "not running: no /metrics to scan"
            assert self.proc.poll() is None, "exited: no /metrics to scan"
            places["/metrics"] = self.metrics().encode()
        leaks = [
            f"{name} in {where}"
            for name, value in sorted(secrets.items())
            for where, data in places.items()
            if value.encode() in data
        ]
        assert not leaks, f"secrets leaked: {leaks}"

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def config_secrets(config: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, str]:
    """Dotted config key -> secret value, for every secret-holding key in ``config``."""
    keys = SECRET_KEYS | {"hmac_key"}
    env = {**os.environ, **(env or {})}
    found: dict[str, str] = {}

    def resolve(raw: str) -> str:
        if raw.startswith("env:"):
            return env.get(raw[4:], "")
        if raw.startswith("file:"):
            path = Path(raw[5:])
            return path.read_text(encoding="utf-8").strip() if path.exists() else ""
        return raw

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                name = f"{where}.{key}" if where else str(key)
                if key in keys and isinstance(value, str) and value:
                    secret = resolve(value)
                    if secret:
                        found[name] = secret
                    if key == "webhook_url" and secret:
                        # the last path segment of a Slack webhook URL is its token
                        token = urlsplit(secret).path.rstrip("/").rpartition("/")[2]
                        if token:
                            found[f"{name} (token segment)"] = token
                else:
                    walk(value, name)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(config, "")
    return found


def read_journal(path: Path) -> list[dict[str, Any]]:
    """A journal file's complete lines (a line still being written is skipped)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    entries = []
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n") or not line.strip():
            continue
        try:
            entries.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    return entries


def plans_done(stacks: Iterable[Stack], identities: Iterable[str]) -> bool:
    """Whether every identity named had a plan decided, and its latest lifecycle state
    (newest across the stacks' journals) holds no unfinished plan: each action's outcome is
    in the ledger and the plan's alerts are out."""
    latest: dict[str, tuple[float, dict[str, Any]]] = {}
    decided: set[str] = set()
    for stack in stacks:
        for e in stack.journal_so_far():
            if e.get("kind") == "decision" and e.get("actions"):
                decided.add(str(e.get("identity")))
            elif e.get("kind") == "state" and str(e.get("key", "")).startswith("identity:"):
                who = e["key"].partition(":")[2]
                if who not in latest or e["ts"] >= latest[who][0]:
                    latest[who] = (e["ts"], e["value"])
    return all(
        who in decided and who in latest and not latest[who][1].get("plans") for who in identities
    )


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


def terminated_event(event_id: str, employee_id: str, email: str) -> dict[str, Any]:
    """A ``terminated`` HR event that took effect a minute ago (the webhook's body)."""
    when = datetime.now(UTC) - timedelta(minutes=1)
    return {
        "event_id": event_id,
        "type": "terminated",
        "employee_id": employee_id,
        "email": email,
        "effective_at": when.isoformat().replace("+00:00", "Z"),
        "source": "workday",
    }


def wait_until(
    predicate: Any, timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")
