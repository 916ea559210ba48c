"""Runs the real ``accessguard`` CLI as a subprocess for integration tests, against the real
embedded Tansu broker and local vendor servers (tests/fakes.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import requests
import yaml

from connectors.hr_webhook import SIGNATURE_HEADER, sign
from tests.fakes import GOOGLE_TOKEN, GRAPH_TOKEN, OKTA_TOKEN, PLATFORM_TOKEN

SECRET = "integration-test-secret"
INGEST_TOKEN = "integration-ingest-token"
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
                "pagerduty": {"type": "pagerduty", "url": vendor_url, "routing_key": "R0UT1NGKEY"},
                "slack": {"type": "slack", "webhook_url": f"{vendor_url}/slack/T000/B000/XXXX"},
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

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
