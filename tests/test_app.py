"""The Faust app: the tuned transport (worker.fetch_max_wait_ms really reaches aiokafka's
fetcher) and the HR agent's per-event error handling (dead-letter with the reason, broker
errors retried in place), tested with ``agent.test_context()`` and against the real broker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import orjson
import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from kafka import KafkaConsumer, TopicPartition

from connectors.base.http import HttpClient, RetryPolicy
from streams.bus.broker import EmbeddedBroker
from streams.bus.topics import Topics, create_topics
from streams.config import Config, load_config
from streams.runtime.app import create_app
from streams.runtime.parts import LeakFeedRunner, build_pollers
from streams.runtime.worker import WorkerServices, build_worker
from streams.support.errors import BrokerError, ConfigError
from streams.support.secrets import Secret

AGENT = "accessguard.hr-events"


def _config(tmp_path: Path, **env: str) -> Config:
    return load_config(
        env={"ACCESSGUARD_DATA_DIR": str(tmp_path / "data"), **{k: str(v) for k, v in env.items()}}
    )


def _close(services: WorkerServices) -> None:
    services.executor.shutdown()
    services.journal.close()
    services.http.close()


async def _processed(services: WorkerServices, count: int, timeout: float = 10.0) -> None:
    """Wait until the HR agent has handled ``count`` records: it takes them a poll at a time
    (streams/runtime/worker.py), so a record put may still be in its batch window."""
    deadline = time.monotonic() + timeout
    while services.events_processed < count:
        assert time.monotonic() < deadline, f"{services.events_processed} of {count} handled"
        await asyncio.sleep(0.01)


def _read_dlq(bootstrap: str, topic: str, expect: int, timeout: float = 10.0) -> list[Any]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, client_id="test-dlq-reader"
    )
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < expect:
            batch = consumer.poll(timeout_ms=500)
            for recs in batch.values():
                records.extend(orjson.loads(r.value) for r in recs)
            if time.monotonic() > deadline:
                break
        return records
    finally:
        consumer.close()


async def _worker_consumer(config: Config, bootstrap: str, *, stock: bool = False) -> Any:
    """The aiokafka consumer the app's consumer thread would create (``stock``: with Faust's
    own method). The thread is never started, so its private event loop is closed here."""
    app = create_app(config, bootstrap)
    thread = app.consumer._thread
    try:
        if stock:
            return faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer(
                thread, app.transport
            )
        return thread._create_worker_consumer(app.transport)
    finally:
        thread.thread_loop.close()


class TestTunedTransport:
    def test_worker_consumer_fetcher_uses_configured_fetch_wait(
        self, broker: EmbeddedBroker, tmp_path: Path
    ) -> None:
        """The aiokafka consumer the app's consumer thread creates carries
        worker.fetch_max_wait_ms, and once started against the real broker its Fetcher
        waits that long (not Faust's hard-coded 1500 ms)."""
        config = _config(tmp_path, ACCESSGUARD_WORKER_FETCH_MAX_WAIT_MS="37")

        async def probe() -> tuple[int, int]:
            consumer = await _worker_consumer(config, broker.bootstrap)
            before_start = consumer._fetch_max_wait_ms
            await consumer.start()
            try:
                return before_start, consumer._fetcher._fetch_max_wait_ms
            finally:
                await consumer.stop()

        assert asyncio.run(probe()) == (37, 37)

    def test_stock_faust_consumer_would_wait_1500ms(self, tmp_path: Path) -> None:
        """The baseline the tuning exists for: Faust's own method, on the same app, builds
        the worker consumer with fetch_max_wait_ms=1500."""

        async def probe() -> int:
            stock = await _worker_consumer(_config(tmp_path), "127.0.0.1:1", stock=True)
            await stock.stop()  # never started; closes its client
            return int(stock._fetch_max_wait_ms)

        assert asyncio.run(probe()) == 1500

    def test_two_apps_in_one_process_keep_their_own_fetch_wait(self, tmp_path: Path) -> None:
        """The setting is bound per app (a class built per create_app), so a second app with
        another value does not change the first."""

        async def probe() -> tuple[int, int]:
            a = await _worker_consumer(
                _config(tmp_path, ACCESSGUARD_WORKER_FETCH_MAX_WAIT_MS="11"), "h:1"
            )
            b = await _worker_consumer(
                _config(tmp_path, ACCESSGUARD_WORKER_FETCH_MAX_WAIT_MS="99"), "h:1"
            )
            await a.stop()
            await b.stop()
            return a._fetch_max_wait_ms, b._fetch_max_wait_ms

        assert asyncio.run(probe()) == (11, 99)

    def test_app_settings_come_from_config(self, tmp_path: Path) -> None:
        """Group id, broker list and the no-auto-declare policy are taken from config."""
        config = _config(tmp_path, ACCESSGUARD_WORKER_ID="ag-test")

        async def probe() -> Any:
            return create_app(config, "h1:9092,h2:9093").conf

        conf = asyncio.run(probe())
        assert conf.id == "ag-test"
        assert [str(u) for u in conf.broker] == ["kafka://h1:9092", "kafka://h2:9093"]
        assert conf.topic_allow_declare is False
        assert conf.consumer_auto_offset_reset == "earliest"


class TestHrAgent:
    def test_unexpected_exception_goes_to_dead_letter_with_reason(self, tmp_path: Path) -> None:
        """A handler bug in a batch sends its records through one at a time, so only the one
        that fails becomes a dead-letter write naming the exception; every record counts as
        processed, and the next one still runs."""
        dead: list[tuple[str, bytes | None, str]] = []
        handled: list[bytes | None] = []

        async def scenario() -> int:
            app, services = build_worker(_config(tmp_path), "127.0.0.1:1", serve_http=False)
            try:

                async def handle(raw: bytes | None) -> None:
                    if raw == b"poison":
                        raise RuntimeError("boom in decision")
                    handled.append(raw)

                async def dead_letter(
                    topic: str, raw: bytes | None, reason: str, *, dlq: str | None = None
                ) -> None:
                    dead.append((topic, raw, reason))
                    assert dlq == "accessguard.hr.events.dlq"

                async def handle_batch(raws: list[bytes | None]) -> list[None]:
                    return [await handle(raw) for raw in raws]  # as the engine's batch does

                services.engine.handle_hr_raw = handle  # type: ignore[method-assign]
                services.engine.handle_hr_batch = handle_batch  # type: ignore[method-assign,assignment]
                services.engine.dead_letter = dead_letter  # type: ignore[method-assign]
                services.ready.set()
                async with app.agents[AGENT].test_context() as agent:
                    await agent.put(b"poison")
                    await agent.put(b"fine")
                    await _processed(services, 2)
                return services.events_processed
            finally:
                _close(services)

        processed = asyncio.run(scenario())
        assert dead == [
            (
                "accessguard.hr.events",
                b"poison",
                "processing_error: RuntimeError('boom in decision')",
            )
        ]
        assert handled == [b"fine"]
        assert processed == 2

    def test_broker_error_is_retried_in_place_not_dead_lettered(self, tmp_path: Path) -> None:
        """A BrokerError is infrastructure, not a bad record: the same event is retried until
        it goes through, and nothing is dead-lettered."""
        attempts: list[bytes | None] = []
        dead: list[str] = []

        async def scenario() -> None:
            _app, services = build_worker(_config(tmp_path), "127.0.0.1:1", serve_http=False)
            try:

                async def handle(raws: list[bytes | None]) -> list[None]:
                    attempts.extend(raws)
                    if len(attempts) < 3:
                        raise BrokerError("broker did not acknowledge")
                    return [None] * len(raws)

                async def dead_letter(topic: str, raw: bytes | None, reason: str) -> None:
                    dead.append(reason)

                services.engine.handle_hr_batch = handle  # type: ignore[method-assign,assignment]
                services.engine.dead_letter = dead_letter  # type: ignore[method-assign]
                await services.process_hr(b"event")
            finally:
                _close(services)

        asyncio.run(scenario())
        assert attempts == [b"event"] * 3
        assert dead == []

    @pytest.mark.integration
    def test_invalid_records_reach_the_dlq_topic_with_reason(
        self, broker: EmbeddedBroker, tmp_path: Path
    ) -> None:
        """With the real Engine and the real broker, records the agent cannot use (invalid
        JSON, a bad field, and a handler crash) land on the dead-letter topic with the
        record and the reason."""
        config = _config(tmp_path)
        create_topics(config, broker.bootstrap)
        topics = Topics.from_config(config)
        bad_field = orjson.dumps(
            {
                "event_id": "e-1",
                "type": "fired",
                "employee_id": "E1",
                "email": "a@example.com",
                "effective_at": "2026-01-01T00:00:00Z",
                "source": "workday",
            }
        )

        async def scenario() -> None:
            app, services = build_worker(config, broker.bootstrap, serve_http=False)
            await services.publisher.start()
            try:
                services.ready.set()
                async with app.agents[AGENT].test_context() as agent:
                    await agent.put(b"{not json")
                    await agent.put(bad_field)
                    await _processed(services, 2)
            finally:
                await services.publisher.stop()
                _close(services)

        asyncio.run(scenario())
        records = _read_dlq(broker.bootstrap, topics.hr_dlq, expect=2)
        assert [r["value"] for r in records] == ["{not json", bad_field.decode()]
        assert all(r["topic"] == topics.hr_events for r in records)
        assert records[0]["reason"].startswith("invalid: ")
        assert "JSON" in records[0]["reason"]
        assert records[1]["reason"].startswith("invalid: type: must be one of")
        journal = (config.data_dir / "journal.jsonl").read_bytes().splitlines()
        assert [orjson.loads(x)["kind"] for x in journal] == ["dead_letter", "dead_letter"]


class TestPollerTable:
    """build_pollers looks a poller's ``type`` up in the connector tables: a leak feed type
    (connectors.base.leak_sources.LEAK_FEEDS) runs as a LeakFeedRunner on leak.records, a
    login poller type as itself; the runtime names no vendor."""

    POLLERS: dict[str, dict[str, Any]] = {
        "breaches": {"type": "hibp", "api_key": Secret("k"), "base_url": "http://127.0.0.1:9"},
        "idp": {"type": "okta", "base_url": "http://127.0.0.1:9", "token": Secret("t")},
    }

    def test_leak_feeds_and_login_pollers(self, tmp_path: Path) -> None:
        config = _config(tmp_path).with_pollers(self.POLLERS)
        out, leaks = Mock(), Mock()
        with HttpClient(RetryPolicy()) as http:
            feed, poller = build_pollers(config, http, out, leaks=leaks, registry=lambda: None)
        assert isinstance(feed, LeakFeedRunner)
        assert (feed.name, feed.vendor, feed.out) == ("breaches", "hibp", leaks)
        assert not isinstance(poller, LeakFeedRunner)
        assert (poller.name, poller.vendor) == ("idp", "okta")

    def test_a_leak_feed_needs_the_leak_publisher(self, tmp_path: Path) -> None:
        config = _config(tmp_path).with_pollers({"breaches": self.POLLERS["breaches"]})
        with HttpClient(RetryPolicy()) as http, pytest.raises(ConfigError) as raised:
            build_pollers(config, http, Mock())
        assert raised.value.key == "pollers.breaches"
