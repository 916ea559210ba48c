"""Assembles a worker process: Faust app + agents, views, engine, executor, HTTP server, timers.

The parts it builds from the configuration (outputs, pollers, the HR edge) come from
:mod:`streams.runtime.parts`, shared with the single-connector commands; the process
start-up around it (logging, secrets, broker) is the CLI's (:mod:`streams.cli.wiring`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import mode
import structlog

from connectors.base.credentials import credentials_ready
from connectors.base.http import HttpClient
from connectors.ingest.dumps import DumpOptions
from connectors.ingest.leak_ingest import LeakIngest, LeakPublisher
from streams.bus.rulelog import RuleStateLog
from streams.bus.topics import Topics
from streams.bus.views import Publisher, Views
from streams.config import Config
from streams.decide.login import LoginPipeline
from streams.detect.load import load_rules
from streams.model.leak_index import LeakIndex
from streams.runtime.app import AccessGuardApp, create_app
from streams.runtime.custody import CustodyMonitor, custody_providers
from streams.runtime.edges import build_edges
from streams.runtime.engine import Engine, leak_settings
from streams.runtime.executor import Executor
from streams.runtime.identitypath import identity_agent
from streams.runtime.observe import (
    Progress,
    consumer_lag,
    initialise_series,
    update_lag_gauges,
    update_readiness_gauges,
    update_registry_gauges,
)
from streams.runtime.parts import (
    build_outputs,
    build_pollers,
    journal,
    leak_publisher,
    login_publisher,
    retry_policy,
)
from streams.runtime.policy import verify_policy
from streams.runtime.secretcheck import SecretWatch
from streams.runtime.web import WebServer
from streams.runtime.writes import with_broker_retry
from streams.support.gcpause import freeze_long_lived, thaw

log = structlog.get_logger(__name__)

#: auth.events messages (of up to 500 events each) the login agent takes at a time, and how
#: long it waits to fill a group when the topic is quiet (seconds: the added latency).
LOGIN_TAKE = 8
LOGIN_WITHIN = 0.01


class WorkerServices(mode.Service):  # type: ignore[misc]
    """Everything of a worker that is not Faust itself. Started by the Faust worker."""

    def __init__(
        self,
        config: Config,
        bootstrap: str,
        *,
        serve_http: bool = True,
        serve_hr: bool = True,
        on_listening: Callable[[str], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.bootstrap = bootstrap
        self.topics = Topics.from_config(config)
        self.serve_http = serve_http
        self.serve_hr = serve_hr
        self.on_listening = on_listening
        self.ready = asyncio.Event()
        self.assigned_event = asyncio.Event()
        self.journal = journal(config)
        self.http = HttpClient(retry_policy(config))
        providers, sinks = build_outputs(config, self.http)
        self.executor = Executor(
            providers,
            retry_policy(config),
            threads=config.settings.executor.threads,
            per_provider_concurrency=config.settings.executor.per_provider_concurrency,
            dry_run=config.settings.executor.dry_run,
            verify=verify_policy(config),
        )
        # An invalid rule set refuses to start (RuleError lists every problem with file:line).
        self.login = LoginPipeline(load_rules(config["rules.dir"]), config.provider_types())
        self.publisher = Publisher(bootstrap, client_id=f"{config['worker.id']}-producer")
        #: The rule state's checkpoint records (streams/bus/rulelog.py): views read, engine writes.
        self.rule_log = RuleStateLog(
            self.login.state,
            shards=config.settings.topics.partitions,
            writer=self.publisher.writer_id.decode(),
        )
        self.views = Views(
            bootstrap,
            registry_topic=self.topics.registry,
            lifecycle_topic=self.topics.lifecycle,
            ledger_topic=self.topics.ledger,
            writer_id=self.publisher.writer_id,
            rule_state_topic=self.topics.rule_state,
            rule_state=self.rule_log,
            plus_tag_domains=leak_settings(config).plus_tag_domains,
        )
        self.engine = Engine(
            config,
            publisher=self.publisher,
            views=self.views,
            journal=self.journal,
            executor=self.executor,
            sinks=sinks,
            login=self.login,
            rule_log=self.rule_log,
        )
        vaults = custody_providers(self.executor.providers)
        #: Health, re-enrolment tasks and registry sync of the custody vaults (if any).
        self.custody: CustodyMonitor | None = None
        if vaults:
            self.custody = CustodyMonitor(
                vaults,
                send_alert=self.engine.send_alert,
                audit=self.engine.audit,
                registry=lambda: self.views.registry,
                cut=lambda: [
                    s.identity
                    for s in self.views.state.identities()
                    if s.status in ("offboarded", "suspended")
                ],
            )
            self.views.on_registry_change.append(self.custody.on_registry_change)
        self.web: WebServer | None = None
        self.leak_ingest: LeakIngest | None = None
        #: The needed ``file:`` secrets (set by the CLI after its start-up check).
        self.secrets: SecretWatch | None = None
        self._poll_stop = asyncio.Event()
        self._poll_tasks: list[asyncio.Task[None]] = []
        self.pollers: list[Any] = []
        self.assigned = False
        self.events_processed = 0
        #: The Faust app (set by build_worker): the metrics timer reports its consumer's lag.
        self.faust_app: Any = None
        self.progress = Progress()
        initialise_series(
            config.provider_types(),
            (self.topics.hr_events, self.topics.auth_events, self.topics.leak_records),
        )

    def readiness(self) -> dict[str, bool]:
        return {
            "broker": self.publisher.reachable,
            "views_caught_up": self.views.ready.is_set(),
            "registry_loaded": len(self.views.registry.identities) > 0,
            "consumers_assigned": self.assigned,
            # "Recovered and making progress", not "HTTP answers" (docs/operations-notes.md):
            # the views still follow their topics, and the consumer is not stalled with lag.
            "views_tailing": self.views.tailing,
            "consumers_progressing": self.progress.ok,
            # False from a failed journal write (disk full) until a write succeeds; while
            # False it tries one small write a second, so it recovers without input.
            "journal_writable": self.journal.check_writable(),
            # Every secret this process uses resolves (a mounted file may vanish or be late).
            "secrets": self.secrets.ready() if self.secrets is not None else True,
            # No provider or poller is failing to obtain its access token
            # (connectors/base/credentials.py; docs/runbooks/provider-credentials.md).
            "credentials": credentials_ready([*self.executor.providers.values(), *self.pollers]),
        }

    async def on_start(self) -> None:
        await self.publisher.start()
        await self.views.start()
        freeze_long_lived()  # the registry just built: out of the collector's passes
        if self.serve_http:
            app = await build_edges(self)  # the HTTP doors (streams/runtime/edges.py)
            self.web = WebServer(app, self.config["http.host"], int(self.config["http.port"]))
            await self.web.start()
            if self.on_listening:
                self.on_listening(self.web.url)
        if self.serve_hr:
            self.start_pollers()
        self.ready.set()

    def leak_publisher(self) -> LeakPublisher:
        return leak_publisher(self.config, self.publisher, self.topics)

    def dump_options(self) -> DumpOptions:
        return DumpOptions(
            hmac_key=self.config["leaks.hmac_key"],
            max_record_bytes=int(self.config["leaks.max_record_bytes"]),
        )

    def leak_index(self) -> LeakIndex | None:
        return self.views.leak_index

    def start_pollers(self) -> None:
        """Run every configured login-log poller in this process (``accessguard run``)."""
        self.pollers = build_pollers(
            self.config,
            self.http,
            login_publisher(
                self.config, self.publisher, self.topics, registry=lambda: self.views.registry
            ),
            leaks=self.leak_publisher(),
            registry=lambda: self.views.registry,
        )
        for poller in self.pollers:
            self._poll_tasks.append(
                asyncio.create_task(poller.run(self._poll_stop), name=f"poller-{poller.name}")
            )

    async def on_stop(self) -> None:
        self._poll_stop.set()
        if self._poll_tasks:
            # A poller checkpoints only after the broker acknowledged, so stopping mid-round
            # re-reads that page at the next start: nothing lost.
            await asyncio.wait(self._poll_tasks, timeout=10)
        if self.web is not None:
            await self.web.stop()
        if self.leak_ingest is not None:
            self.leak_ingest.close()
        # Unfinished plans stay in the lifecycle state and resume at the next start.
        await self.engine.cancel_plans()
        try:
            # The last rule-state checkpoint, while the producer still runs.
            await self.engine.tick_rules()
        except Exception:  # a failed final checkpoint is logged; the journal has the rest
            log.exception("shutdown.rule_checkpoint_failed")
        await self.views.stop()
        await self.publisher.stop()
        self.executor.shutdown()
        self.journal.close()
        thaw()

    async def on_revoked(self) -> None:
        """Partitions are about to move: checkpoint the rule state now, so the next owner
        of each key starts from its last value rather than from up to an interval before."""
        if not self.publisher.started:
            return
        try:
            await asyncio.wait_for(self.engine.checkpoint_rules(), 10.0)
        except Exception:  # logged; the periodic checkpoint remains
            log.exception("rebalance.rule_checkpoint_failed")

    def on_assigned(self, partitions: set[int]) -> None:
        self.assigned = True
        self.assigned_event.set()
        self.engine.set_assignment(partitions)

    async def _process(
        self,
        what: str,
        handle: Callable[[bytes | None], Awaitable[Any]],
        value: bytes | None,
        topic: str,
        dlq: str,
    ) -> None:
        """One record of an input topic. Infrastructure failures (broker, journal) are retried
        in place: the record must not be acked before its effects are recorded. Anything else
        is a bug or a bad record and goes to the dead-letter topic with the reason — never
        silence (Faust would ack the record even if the agent raised)."""
        try:
            await with_broker_retry(what, lambda: handle(value))
        except Exception as exc:  # a bug must reach the dead-letter topic, never vanish
            log.exception("record.processing_failed", what=what)
            reason = f"processing_error: {exc!r}"[:500]
            await with_broker_retry(
                "dead-letter", lambda: self.engine.dead_letter(topic, value, reason, dlq=dlq)
            )

    async def process_hr(self, value: bytes | None) -> None:
        """One hr.events record."""
        await self.process_hr_batch([value])

    async def process_hr_batch(self, values: list[bytes | None]) -> None:
        """The hr.events records of one poll, decided in order and persisted together
        (:meth:`~streams.runtime.engine.Engine.handle_hr_batch`). A bug while handling the
        batch sends each of its records through the one-at-a-time path, so only the record
        that fails goes to the dead-letter topic (the others are duplicates there if they
        were applied already)."""
        try:
            await with_broker_retry("hr-events", lambda: self.engine.handle_hr_batch(values))
        except Exception:  # a bug: isolate the record that causes it
            log.exception("record.batch_failed", what="hr-events", records=len(values))
            for value in values:
                await self._process(
                    "hr-event",
                    self.engine.handle_hr_raw,
                    value,
                    self.topics.hr_events,
                    self.topics.hr_dlq,
                )
        self.events_processed += len(values)

    async def process_login(
        self,
        value: bytes | None,
        partition: int | None = None,
        routed: dict[int, list[dict[str, Any]]] | None = None,
    ) -> None:
        """One auth.events message (a batch of login events) from ``partition``; the events
        it hands to other partitions' owners are added to ``routed`` when given (sent by
        :meth:`send_routed` before the messages are acknowledged)."""

        async def handle(raw: bytes | None) -> int:
            return await self.engine.handle_login_batch(raw, partition, routed)

        await self._process(
            "auth-events", handle, value, self.topics.auth_events, self.topics.auth_dlq
        )

    async def send_routed(self, routed: dict[int, list[dict[str, Any]]]) -> None:
        """The routed events of several auth.events messages, in one acknowledged round."""
        if routed:
            await self.engine.route(routed)

    async def process_routed(self, value: bytes | None) -> None:
        """One auth.routed message: login events whose group keys this worker owns."""
        await self._process(
            "auth-routed",
            self.engine.handle_routed_batch,
            value,
            self.topics.auth_routed,
            self.topics.auth_dlq,
        )

    async def process_leaks(self, value: bytes | None) -> None:
        """One leak.records message (a batch of LeakRecords)."""
        await self._process(
            "leak-records",
            self.engine.handle_leak_batch,
            value,
            self.topics.leak_records,
            self.topics.leak_dlq,
        )

    async def process_alert(self, value: bytes | None) -> None:
        """One alerts.pending record: a detection's alert, sent to its sinks."""
        await self._process(
            "alert",
            self.engine.dispatch_alert,
            value,
            self.topics.alert_queue,
            self.topics.hr_dlq,
        )

    @mode.Service.task  # type: ignore[untyped-decorator]
    async def _rule_timer(self) -> None:
        await self.ready.wait()
        interval = float(self.config["worker.rule_interval"])
        while not self.should_stop:
            await asyncio.sleep(interval)
            if not self.publisher.started:
                continue  # stopping: on_stop writes the last checkpoint itself
            try:
                await self.engine.tick_rules()
            except Exception:
                log.exception("timer.rules_failed")

    @mode.Service.task  # type: ignore[untyped-decorator]
    async def _schedule_timer(self) -> None:
        await self.ready.wait()
        interval = float(self.config["worker.schedule_interval"])
        while not self.should_stop:
            await asyncio.sleep(interval)
            if self.assigned:
                try:
                    await self.engine.tick_schedule()
                    await self.engine.tick_outages()
                except Exception:
                    log.exception("timer.schedule_failed")

    @mode.Service.task  # type: ignore[untyped-decorator]
    async def _agency_timer(self) -> None:
        await self.ready.wait()
        await self.assigned_event.wait()
        interval = float(self.config["worker.agency_interval"])
        while not self.should_stop:
            try:
                await self.engine.tick_agencies(datetime.now(UTC))
            except Exception:
                log.exception("timer.agency_failed")
            await asyncio.sleep(interval)

    @mode.Service.task  # type: ignore[untyped-decorator]
    async def _custody_timer(self) -> None:
        """Custody vault health, re-enrolment tasks (reminders, one page when overdue) and
        sync after registry changes (streams/runtime/custody.py)."""
        if self.custody is None:
            return
        await self.ready.wait()
        await self.views.ready.wait()
        self.custody.registry_changed.set()  # sync once at start
        await self.custody.run(lambda: bool(self.should_stop))

    @mode.Service.task  # type: ignore[untyped-decorator]
    async def _metrics_timer(self) -> None:
        """Lag, registry and readiness gauges: refreshed here, so no event pays for them."""
        await self.ready.wait()
        interval = float(self.config["worker.metrics_interval"])
        t = self.topics
        inputs = (t.hr_events, t.auth_events, t.leak_records, t.auth_routed, t.alert_queue)
        failing = False
        while not self.should_stop:
            try:
                await self.refresh_gauges(inputs)
                failing = False
            except Exception:
                if not self.publisher.reachable:
                    # broker.lost says why, once; a traceback every interval says nothing
                    if not failing:
                        log.warning("timer.metrics_failed", reason="broker unreachable")
                elif not failing:
                    log.exception("timer.metrics_failed")
                failing = True
            await asyncio.sleep(interval)

    async def refresh_gauges(self, inputs: tuple[str, ...]) -> None:
        try:
            update_registry_gauges(self.views.registry, self.views.state, datetime.now(UTC))
            if self.faust_app is not None and self.assigned:
                report = await consumer_lag(self.faust_app.consumer, inputs)
                self.progress.observe(report)
                update_lag_gauges(report)
        finally:
            update_readiness_gauges(self.readiness())


def build_worker(
    config: Config,
    bootstrap: str,
    *,
    serve_http: bool = True,
    on_listening: Callable[[str], None] | None = None,
) -> tuple[AccessGuardApp, WorkerServices]:
    """The Faust app with its agents, and the services that run beside it."""
    app = create_app(config, bootstrap)
    services = WorkerServices(config, bootstrap, serve_http=serve_http, on_listening=on_listening)

    def raw_topic(topic_name: str) -> Any:
        return app.topic(
            topic_name,
            value_serializer="raw",
            key_serializer="raw",
            partitions=config.settings.topics.partitions,
        )

    def raw_agent(
        name: str, topic_name: str, process: Callable[[bytes | None], Awaitable[None]]
    ) -> Any:
        topic = raw_topic(topic_name)

        async def agent(stream: Any) -> None:
            await services.ready.wait()
            async for value in stream:
                await process(value)

        app.agent(topic, name=name)(agent)
        return topic

    hr_topic = raw_topic(services.topics.hr_events)
    batch_max = config.settings.worker.hr_batch_max
    batch_wait = config.settings.worker.hr_batch_wait

    async def hr_agent(stream: Any) -> None:
        """HR events a poll at a time: a layoff's burst is decided in batches (one round of
        broker writes per batch), one lone event waits at most ``hr_batch_wait``. Faust
        acks a batch's records only after it was handled."""
        await services.ready.wait()
        async for values in stream.take(batch_max, within=batch_wait):
            await services.process_hr_batch(list(values))

    app.agent(hr_topic, name="accessguard.hr-events")(hr_agent)
    login_topic = raw_topic(services.topics.auth_events)

    async def login_agent(stream: Any) -> None:
        # With its partition: a rule whose key is another partition's is routed to its owner
        # (Engine.handle_login_batch). A few messages at a time, so their routed events go out
        # in one acknowledged round; Faust acks them when the next group is asked for.
        await services.ready.wait()
        async for events in stream.take_events(LOGIN_TAKE, within=LOGIN_WITHIN):
            routed: dict[int, list[dict[str, Any]]] = {}
            for event in events:
                await services.process_login(event.value, event.message.partition, routed)
            await services.send_routed(routed)

    app.agent(login_topic, name="accessguard.auth-events")(login_agent)
    raw_agent("accessguard.auth-routed", services.topics.auth_routed, services.process_routed)
    raw_agent("accessguard.leak-records", services.topics.leak_records, services.process_leaks)
    raw_agent("accessguard.alerts", services.topics.alert_queue, services.process_alert)
    raw_agent(*identity_agent(services))  # identity.events (streams/runtime/identitypath.py)

    @app.on_partitions_revoked.connect  # type: ignore[untyped-decorator]
    async def _revoked(_sender: Any, revoked: Any, **_kw: Any) -> None:
        await services.on_revoked()

    @app.on_partitions_assigned.connect  # type: ignore[untyped-decorator]
    async def _assigned(_sender: Any, assigned: Any, **_kw: Any) -> None:
        mine = {
            tp.partition
            for tp in app.consumer.assignment()
            if tp.topic == hr_topic.get_topic_name()
        }
        # The keys of a partition taken over: their last checkpoint (written by the old
        # owner when it gave them up) applied before any of their events is evaluated.
        await services.views.caught_up(services.topics.rule_state)
        services.on_assigned(mine)

    services.faust_app = app
    return app, services


def run_worker(app: AccessGuardApp, services: WorkerServices, loglevel: str = "warning") -> int:
    """Run the Faust worker until SIGINT/SIGTERM; returns the exit code."""
    import faust  # noqa: PLC0415 - heavy import only when a worker really starts

    class Worker(faust.Worker):  # type: ignore[misc]
        """No terminal spinner. With ``override_logging=False`` Faust never spins it, but
        still "finishes" it when the app has started: ``\\b\\x1b[?25h`` on stdout with no
        newline, TTY or not; merged with stderr (2>&1, a container log) it lands at the
        head of the next JSON log line. Faust has no argument for this."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.spinner = None  # Faust checks `if self.spinner` before each use

    worker = Worker(
        app,
        services,
        loglevel=loglevel,
        override_logging=False,
        redirect_stdouts=False,
        console_port=0,
        quiet=True,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        with contextlib.suppress(Exception):
            services.journal.close()
    return 0
