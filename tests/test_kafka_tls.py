"""Kafka over TLS for real: the embedded broker behind a TLS-terminating proxy that requires
a client certificate (mTLS, as Strimzi's TLS listener with ``authentication: tls``), with a
test CA. Through it, configured once by the ``kafka`` section: the start-up path (topics,
registry import and read: kafka-python), the publisher and views (aiokafka), the Faust app's
worker consumer and producer, the real `accessguard registry import` command, and a real
`connect hr-webhook` and `worker` offboarding someone end to end. A client
without a certificate, or one that does not trust the CA, fails at once with an error naming
the key to fix, and nothing reaches the broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams.bus import security
from streams.bus.bootstrap import import_registry, read_registry_topic
from streams.bus.broker import EmbeddedBroker, free_port, wait_for_kafka
from streams.bus.security import KafkaSecurity
from streams.bus.topics import Topics, create_topics
from streams.bus.views import Publisher, Views
from streams.config import Config, load_config
from streams.runtime.app import create_app
from streams.support.errors import BrokerError, ConfigError
from tests.fakes import FakeVendorServer
from tests.pki import Pki, write_pki
from tests.stack import Stack, wait_until, write_config
from tests.test_cli import accessguard
from tests.test_integration_external import ALICE_CALLS, alice_calls, hr_event

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return write_pki(tmp_path_factory.mktemp("pki"))


# -- the TLS-terminating proxy --------------------------------------------------------------


class TlsProxy:
    """Terminates TLS on ``port`` (client certificate required, checked against the test
    CA) and forwards the plaintext to the broker. :attr:`forwarded` counts the connections
    that passed the handshake and reached the broker."""

    def __init__(self, pki: Pki, port: int, target: int) -> None:
        self.port, self.target = port, target
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
        self.context.load_cert_chain(pki.server_cert, pki.server_key)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.forwarded = 0
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
            writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target
            )
        except OSError:
            writer.close()
            return
        self.forwarded += 1
        await asyncio.gather(
            self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
        )

    def __enter__(self) -> TlsProxy:
        self._thread.start()

        async def serve() -> asyncio.Server:
            return await asyncio.start_server(
                self._client, "127.0.0.1", self.port, ssl=self.context, ssl_handshake_timeout=5
            )

        self._server = asyncio.run_coroutine_threadsafe(serve(), self.loop).result(10)
        # A refused handshake is this proxy doing its job, not an error worth a traceback.
        self.loop.set_exception_handler(lambda _loop, _context: None)
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class Secured:
    bootstrap: str
    proxy: TlsProxy
    config: Config


@pytest.fixture
def secured(tansu_bin: str, pki: Pki, tmp_path: Path) -> Iterator[Secured]:
    """Tansu advertising the proxy's address, the mTLS proxy in front of it, and the
    process's Kafka settings from a configuration that points at the test CA and the
    client's certificate (restored to plaintext afterwards)."""
    proxy_port = free_port()
    bootstrap = f"127.0.0.1:{proxy_port}"
    broker = EmbeddedBroker(
        tansu_bin, log_path=tmp_path / "tansu.log", advertised=bootstrap
    ).start()
    config = load_config(
        env={
            "ACCESSGUARD_DATA_DIR": str(tmp_path / "data"),
            "ACCESSGUARD_BROKER": f"kafka://{bootstrap}",
            "ACCESSGUARD_KAFKA_SECURITY_PROTOCOL": "SSL",
            "ACCESSGUARD_KAFKA_CA_FILE": str(pki.ca),
            "ACCESSGUARD_KAFKA_CERT_FILE": str(pki.client_cert),
            "ACCESSGUARD_KAFKA_KEY_FILE": str(pki.client_key),
        }
    )
    try:
        with TlsProxy(pki, proxy_port, broker.port) as proxy, security.using(security.PLAINTEXT):
            security.configure(config)
            wait_for_kafka(bootstrap, timeout=20)
            create_topics(config, bootstrap)
            yield Secured(bootstrap, proxy, config)
    finally:
        broker.stop()


def test_start_up_path_imports_and_reads_the_registry_over_mtls(secured: Secured) -> None:
    """Topic creation (admin), the registry import (producer) and the registry read
    (consumer) of kafka-python all go through TLS with the client certificate."""
    config = secured.config
    summary = import_registry(config, secured.bootstrap, REPO / "examples" / "registry.yaml")
    assert summary["changes"] > 0
    registry = read_registry_topic(secured.bootstrap, Topics.from_config(config).registry)
    assert len(registry.identities) == summary["identities"]
    assert secured.proxy.forwarded > 0


def test_publisher_and_views_work_over_mtls(secured: Secured) -> None:
    """aiokafka's producer (the Publisher every write goes through) and consumer (the
    materialised views) connect through TLS; the record written is read back."""
    topics = Topics.from_config(secured.config)

    async def scenario() -> dict[str, object]:
        publisher = Publisher(secured.bootstrap)
        await publisher.start(timeout=10)
        try:
            await publisher.send_json(topics.ledger, "action-1", {"outcome": "done"})
        finally:
            await publisher.stop()
        views = Views(
            secured.bootstrap,
            registry_topic=topics.registry,
            lifecycle_topic=topics.lifecycle,
            ledger_topic=topics.ledger,
            writer_id=b"reader",
        )
        await views.start(timeout=10)
        try:
            return dict(views.ledger)
        finally:
            await views.stop()

    assert asyncio.run(scenario()) == {"action-1": {"outcome": "done"}}


def test_faust_worker_consumer_and_producer_work_over_mtls(secured: Secured) -> None:
    """The Faust app's own producer and worker consumer (built by Faust from the app's
    ``broker_credentials``) write and read a record through TLS."""
    topic = Topics.from_config(secured.config).alerts
    app = create_app(secured.config, secured.bootstrap)
    thread = app.consumer._thread

    async def scenario() -> bytes:
        from aiokafka import TopicPartition

        producer = app.producer._new_producer()
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"over-tls", key=b"k")
        finally:
            await producer.stop()
        consumer = thread._create_worker_consumer(app.transport)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            batch = await consumer.getmany(tp, timeout_ms=10000)
            return bytes(batch[tp][0].value)
        finally:
            await consumer.stop()

    try:
        assert asyncio.run(scenario()) == b"over-tls"
    finally:
        thread.thread_loop.close()


def test_a_client_without_a_certificate_is_refused(secured: Secured, pki: Pki) -> None:
    """With mTLS required, a client that trusts the CA but has no certificate is refused
    at once, told to set kafka.cert_file (this proxy, like Python's TLS servers, hangs up
    without an alert: a BrokerError that says what it may mean); nothing it sent reached
    the broker."""
    before = secured.proxy.forwarded
    no_cert = KafkaSecurity(protocol="SSL", ca_file=str(pki.ca))
    started = time.monotonic()
    with (
        security.using(no_cert),
        pytest.raises(BrokerError, match=r"may refuse a client without one .*kafka\.cert_file"),
    ):
        wait_for_kafka(secured.bootstrap, timeout=10)
    assert time.monotonic() - started < 5
    assert secured.proxy.forwarded == before


def test_a_client_that_does_not_trust_the_ca_fails_clearly(secured: Secured, pki: Pki) -> None:
    """A client whose CA did not sign the broker's certificate fails at once naming
    kafka.ca_file and the verification error, rather than retrying until a timeout."""
    untrusting = KafkaSecurity(
        protocol="SSL",
        ca_file=str(pki.other_ca),
        cert_file=str(pki.client_cert),
        key_file=str(pki.client_key),
    )
    started = time.monotonic()
    with (
        security.using(untrusting),
        pytest.raises(ConfigError, match=r"kafka\.ca_file: the broker at .* is not trusted"),
    ):
        wait_for_kafka(secured.bootstrap, timeout=10)
    assert time.monotonic() - started < 5


def test_the_aiokafka_publisher_does_not_hang_on_an_untrusted_broker(
    secured: Secured, pki: Pki
) -> None:
    """The publisher's own start (aiokafka) against a broker it does not trust ends with a
    BrokerError after its start timeout, not a hang."""
    untrusting = KafkaSecurity(protocol="SSL", ca_file=str(pki.other_ca))

    async def scenario() -> None:
        await Publisher(secured.bootstrap).start(timeout=2)

    started = time.monotonic()
    with security.using(untrusting), pytest.raises(BrokerError, match="cannot reach broker"):
        asyncio.run(scenario())
    assert time.monotonic() - started < 15


def test_the_registry_import_command_runs_over_mtls(secured: Secured, tmp_path: Path) -> None:
    """The real `accessguard registry import`, in its own process, configured only by
    ACCESSGUARD_KAFKA_* variables: it checks the broker over TLS, sees the topics and
    publishes the registry; without the client certificate it stops at once, naming the
    key, and publishes nothing."""
    env = {
        "ACCESSGUARD_BROKER": f"kafka://{secured.bootstrap}",
        "ACCESSGUARD_KAFKA_SECURITY_PROTOCOL": "SSL",
        "ACCESSGUARD_KAFKA_CA_FILE": secured.config.settings.kafka.ca_file,
    }
    registry = str(REPO / "examples" / "registry.yaml")
    refused = accessguard("registry", "import", registry, tmp_path=tmp_path, **env)
    assert refused.returncode != 0
    assert "may refuse a client without one (mTLS: set kafka.cert_file" in refused.stderr
    env["ACCESSGUARD_KAFKA_CERT_FILE"] = secured.config.settings.kafka.cert_file
    env["ACCESSGUARD_KAFKA_KEY_FILE"] = secured.config.settings.kafka.key_file
    done = accessguard("registry", "import", registry, tmp_path=tmp_path, **env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["changes"] > 0


@pytest.fixture
def alerting_server(pki: Pki) -> Iterator[str]:
    """A TLS server that requires a client certificate and, like a Kafka broker's JVM TLS,
    answers a client without one with a TLS alert (asyncio's proxy above hangs up
    silently). It speaks no Kafka: the refusal comes before any request."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn, contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        thread.join(10)
        listener.close()


def test_a_broker_alert_refusing_the_client_is_a_setting_to_fix(
    alerting_server: str, pki: Pki
) -> None:
    """A broker that refuses the client's certificate (or its absence) with a TLS alert is
    a ConfigError naming kafka.cert_file and the alert, at once: nothing to wait for."""
    no_cert = KafkaSecurity(protocol="SSL", ca_file=str(pki.ca))
    with pytest.raises(
        ConfigError, match=r"kafka\.cert_file: .* refused a client without one \(.*CERTIFICATE"
    ):
        security.check_tls(alerting_server, no_cert)


@pytest.mark.slow
def test_hr_webhook_and_worker_offboard_over_mtls(
    secured: Secured, tmp_path: Path, vendor: FakeVendorServer
) -> None:
    """The real `connect hr-webhook` and `worker`, each its own process configured with the
    kafka section, reach the broker only through the mTLS proxy: the event the edge accepts
    is consumed by the worker's Faust agent and Alice is revoked everywhere, each call once,
    and no configured secret shows up in their output."""
    import_registry(secured.config, secured.bootstrap, REPO / "examples" / "registry.yaml")
    kafka = secured.config.settings.kafka
    tls = {
        "kafka.security_protocol": "SSL",
        "kafka.ca_file": kafka.ca_file,
        "kafka.cert_file": kafka.cert_file,
        "kafka.key_file": kafka.key_file,
    }

    def config(name: str) -> Path:
        (tmp_path / name).mkdir()
        return write_config(
            tmp_path / name / "config.yaml",
            data_dir=tmp_path / name / "data",
            vendor_url=vendor.url,
            broker=f"kafka://{secured.bootstrap}",
            http_port=free_port(),
            extra=tls,
        )

    before = secured.proxy.forwarded
    with (
        Stack(config("edge"), command=("connect", "hr-webhook")) as edge,
        Stack(config("worker"), command=("worker",)) as worker,
    ):
        resp = edge.post_hr(hr_event("tls-1"))
        assert resp.status_code == 202, resp.text
        wait_until(lambda: len(alice_calls(vendor)) >= ALICE_CALLS, 30, what="every alice call")
        calls = alice_calls(vendor)
        assert len(calls) == len(set(calls)) == ALICE_CALLS
        edge.assert_no_secret_leaked()
        worker.assert_no_secret_leaked()
    assert secured.proxy.forwarded > before
