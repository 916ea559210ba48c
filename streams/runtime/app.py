"""The Faust application.

One :class:`AccessGuardApp` per worker process, built by :func:`create_app` from the validated
configuration (broker URL, group id and timeouts are known only at start, and tests build
several apps in one process, so the app is not a module-level singleton bound at import).

The app uses a transport whose worker consumer takes ``worker.fetch_max_wait_ms`` instead of
Faust's hard-coded 1500 ms: with the embedded Tansu broker a waiting fetch does not return when
data arrives, so every hop would cost up to 1.5 s
(docs/operations-notes.md). This is done through the classes Faust lets you subclass
(Transport -> Consumer -> ConsumerThread), not by patching.
"""

from __future__ import annotations

from typing import Any, ClassVar

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.bus import security
from streams.config import Config


class TunedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    """Faust's consumer thread with a configurable fetch wait for the worker consumer."""

    fetch_max_wait_ms: ClassVar[int] = 20

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this attribute when start() builds its Fetcher; the consumer is not
        # started yet here. tests/test_app.py asserts the fetcher really uses it.
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer


class TunedConsumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    thread_class: ClassVar[type[TunedConsumerThread]] = TunedConsumerThread

    def _new_consumer_thread(self) -> TunedConsumerThread:
        return self.thread_class(self, loop=self.loop, beacon=self.beacon)


class TunedTransport(faust_aiokafka.Transport):  # type: ignore[misc]
    Consumer = TunedConsumer


class AccessGuardApp(faust.App):  # type: ignore[misc]
    """faust.App with the tuned transport."""

    def _new_transport(self) -> Any:
        return TunedTransport(url=self.conf.broker, app=self, loop=self.loop)


def create_app(config: Config, bootstrap: str) -> AccessGuardApp:
    """Build the Faust app for one worker process against ``bootstrap`` (host:port,...)."""
    fetch_wait = config.settings.worker.fetch_max_wait_ms
    thread_cls = type(
        "ConfiguredConsumerThread", (TunedConsumerThread,), {"fetch_max_wait_ms": fetch_wait}
    )
    consumer_cls = type("ConfiguredConsumer", (TunedConsumer,), {"thread_class": thread_cls})
    transport_cls = type("ConfiguredTransport", (TunedTransport,), {"Consumer": consumer_cls})

    class ConfiguredApp(AccessGuardApp):
        def _new_transport(self) -> Any:
            return transport_cls(url=self.conf.broker, app=self, loop=self.loop)

    brokers = ";".join(f"kafka://{b}" for b in bootstrap.split(","))
    # TLS and SASL as every other client of the process has them (streams/bus/security.py).
    credentials = security.current().faust_credentials()
    data_dir = config.data_dir / "faust"
    return ConfiguredApp(
        config["worker.id"],
        broker=brokers,
        broker_credentials=credentials,
        autodiscover=False,
        datadir=str(data_dir),
        web_enabled=False,
        # Topics are created by accessguard (streams.bus.topics) with the right partitions and
        # compaction; Faust creating them with defaults would race and get them wrong.
        topic_allow_declare=False,
        topic_disable_leader=True,
        broker_rebalance_timeout=config.settings.worker.rebalance_timeout,
        broker_session_timeout=config.settings.worker.session_timeout,
        broker_heartbeat_interval=config.settings.worker.heartbeat_interval,
        broker_commit_every=100,
        broker_commit_interval=0.5,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        producer_acks=-1,
        value_serializer="raw",
        key_serializer="raw",
        logging_config=None,
    )
