"""The worker's core: HR, login and leak events in, decisions persisted, plans started.

The per-event paths live here; what they hand on lives beside them: the writes
(:mod:`streams.runtime.writes`, which :class:`Engine` is one of), plan execution
(:mod:`streams.runtime.plans`) and alert routing (:mod:`streams.runtime.alerts`).

Everything here runs on the worker's event loop. State is read from the materialised views
and every change is written whole (journal first, then the compacted topic, awaiting the
broker's ack) before anything depends on it, so a crash at any point is repaired by
redelivery: decisions are deduplicated by event id, actions by their idempotency key in the
ledger, pages by their dedup key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

from connectors.base.kinds import IDP_TYPES
from streams.bus.journal import Journal
from streams.bus.leakbatch import decode_batch
from streams.bus.topics import Topics, partition_for
from streams.bus.views import Publisher, Views
from streams.config import Config
from streams.decide.hr import HrDecision, decide_agency_expiry, decide_hr, due_scheduled
from streams.decide.leaks import LeakDecision, LeakSettings, decide_leak
from streams.decide.login import LoginPipeline
from streams.detect.model import Detection
from streams.model.leak_index import LeakIndex
from streams.model.plan import Plan
from streams.model.records import Action, Alert, HrEvent, LoginEvent, subject_hash
from streams.runtime.alerts import AlertRouter
from streams.runtime.batches import Batches
from streams.runtime.executor import Executor, Sink
from streams.runtime.outages import Outages
from streams.runtime.plans import PlanRunner
from streams.runtime.policy import offboarding_policy
from streams.runtime.writes import Writer
from streams.support import metrics
from streams.support.errors import ConfigError, JournalError, ValidationError

log = structlog.get_logger(__name__)


def leak_settings(config: Config) -> LeakSettings:
    """The ``leaks.*`` settings of a configuration."""
    return LeakSettings(
        plus_tag_domains=frozenset(
            d.strip().lower().lstrip("@") for d in config["leaks.plus_tag_domains"] if d.strip()
        ),
        hmac_key=config["leaks.hmac_key"],
        include_spam_lists=config.settings.leaks.include_spam_lists,
        include_fabricated=config.settings.leaks.include_fabricated,
    )


class Engine(Writer):
    """The per-event paths of one worker, over its views, journal, executor and sinks."""

    def __init__(
        self,
        config: Config,
        *,
        publisher: Publisher,
        views: Views,
        journal: Journal,
        executor: Executor,
        sinks: dict[str, Sink],
        login: LoginPipeline | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            topics=Topics.from_config(config),
            publisher=publisher,
            views=views,
            journal=journal,
            clock=clock,
        )
        self.config = config
        self.executor = executor
        self.sinks = sinks
        self.login = login
        self.provider_types = config.provider_types()
        #: Provider types that are identity providers: the connectors' fact.
        self.idp_types = IDP_TYPES
        self.routes = config.routes()
        self.runbook_base = config.settings.alerts.runbook_base_url.rstrip("/")
        self.partitions = config.settings.topics.partitions
        self.leak_settings = leak_settings(config)
        #: Partitions of hr.events this worker owns; None = all (single worker, replay, tests).
        self.owned: set[int] | None = None
        self.outages = Outages(update_interval=config.settings.alerts.outage_update_interval)
        self.alerts = AlertRouter(
            self,
            executor=executor,
            sinks=sinks,
            routes=self.routes,
            runbook_base=self.runbook_base,
            outages=self.outages,
        )
        self.policy = offboarding_policy(config)
        alerting = config.settings.alerts
        self.plans = PlanRunner(
            self,
            executor=executor,
            alerts=self.alerts,
            owns=self.owns,
            step_timeout=config.settings.offboarding.step_timeout,
            batches=Batches(
                threshold=alerting.batch_threshold,
                window=alerting.batch_window,
                update_interval=alerting.outage_update_interval,
            ),
        )
        # Pre-bound children (labels() per event costs more than a rule,
        # docs/operations-notes.md); binding them here also exports every rule's series at 0, so
        # rates exist before a first match.
        rules = login.engine.rules if login is not None else ()
        self._rule_evaluations = tuple(
            metrics.RULE_EVALUATIONS.labels(r.id) for r in rules if "login" in r.inputs
        )
        self._rule_matches = {
            (r.id, r.severity): metrics.RULE_MATCHES.labels(r.id, r.severity) for r in rules
        }
        for rule in rules:
            metrics.RULE_ERRORS.labels(rule.id)

    # ---------------------------------------------------------------- ownership
    def owns(self, partition_key: str) -> bool:
        return self.owned is None or partition_for(partition_key, self.partitions) in self.owned

    def set_assignment(self, partitions: Iterable[int]) -> None:
        self.owned = set(partitions)
        log.info("engine.assigned", partitions=sorted(self.owned))
        self.restore_outages()
        self.resume_plans()

    # ---------------------------------------------------------------- HR path
    async def handle_hr_raw(self, raw: bytes | None) -> HrDecision | None:
        return (await self.handle_hr_batch([raw]))[0]

    async def handle_hr_batch(self, raws: Sequence[bytes | None]) -> list[HrDecision | None]:
        """The hr.events records of one poll, decided in order (None for an invalid one,
        dead-lettered). See :meth:`handle_hr_events`."""
        events: list[HrEvent] = []
        at: list[int] = []
        out: list[HrDecision | None] = [None] * len(raws)
        for index, raw in enumerate(raws):
            try:
                events.append(HrEvent.loads(raw or b""))
                at.append(index)
            except ValidationError as exc:
                await self.dead_letter(self.topics.hr_events, raw, f"invalid: {exc.reason}")
        for index, decision in zip(at, await self.handle_hr_events(events), strict=True):
            out[index] = decision
        return out

    async def handle_hr(self, event: HrEvent, now: datetime | None = None) -> HrDecision:
        return (await self.handle_hr_events([event], now))[0]

    async def handle_hr_events(
        self, events: Sequence[HrEvent], now: datetime | None = None
    ) -> list[HrDecision]:
        """Decide a batch of HR events, persist the decisions together, then act.

        Each event is decided in order against the state the ones before it left (applied
        in memory at once), so per-identity order and duplicate/conflict outcomes are those
        of one-at-a-time processing. Then the batch's audit records are written together,
        then its state values (the last per key on the compacted topic), so a batch costs
        about two broker round trips instead of two per event (measured: the agent decided
        ~28 events/s in a burst, each waiting for its own acks behind the plans' writes).
        Plans start and alerts go out only once all of that landed."""
        now = now or datetime.fromtimestamp(self.clock(), UTC)
        decided: list[tuple[HrEvent, HrDecision]] = []
        for event in events:
            decision = decide_hr(
                self.views.registry,
                self.views.state,
                event,
                now,
                self.provider_types,
                idp_types=self.idp_types,
                policy=self.policy,
            )
            for value in decision.state_updates:
                self.views.state.put(value)  # the next event of this identity sees it
            decided.append((event, decision))
        applied: list[tuple[HrEvent, HrDecision]] = []
        for event, decision in decided:
            metrics.DECISIONS.labels(event.type, decision.outcome).inc()
            if decision.outcome == "duplicate":
                self._hr_log(event, decision).info("hr.duplicate")
            elif decision.outcome == "conflict":
                # Refused, never dropped in silence: the sender re-used an event_id (the edge
                # answers 409 when it knows; a second edge replica or an edge restart may not).
                await self.dead_letter(
                    self.topics.hr_events, event.dumps(), f"conflict: {decision.reason}"
                )
            else:
                applied.append((event, decision))
        # The audit records first, then the states that make the events applied: a stop
        # between the two re-decides the events at the next start (a second record of the
        # same decision, its actions kept once by the ledger) instead of leaving a decision
        # that happened with no record of it. Together: the journal entries in order (the
        # journal lock is FIFO), the broker writes batched by the producer.
        await asyncio.gather(
            *(
                self.audit("decision", event.event_id, source=event.source, **decision.to_dict())
                for event, decision in applied
            )
        )
        states: dict[str, dict[str, Any]] = {}
        for _, decision in applied:
            for value in decision.state_updates:
                data = value.to_dict()
                await self.record("state", key=value.key, value=data)
                states.pop(value.key, None)
                states[value.key] = data
        await asyncio.gather(
            *(self.publish(self.topics.lifecycle, key, data) for key, data in states.items())
        )
        if applied:
            self._update_scheduled_gauge()
        for event, decision in applied:
            self._hr_log(event, decision).info(
                "hr.decided", actions=len(decision.actions), reason=decision.reason
            )
            if decision.identity and decision.plan_id and decision.actions:
                self.start_plan(decision.identity, decision.plan_id)
                batch = self.plans.batches.started(
                    decision.identity, decision.plan_id, self.clock()
                )
                if batch is not None and batch.sent == 0:
                    await self.plans.send_batch(batch)  # a layoff: on-call hears of it once
            elif decision.alerts:
                for alert in decision.alerts:
                    await self.send_alert(alert)
        return [decision for _, decision in decided]

    @staticmethod
    def _hr_log(event: HrEvent, decision: HrDecision) -> Any:
        return log.bind(
            event_id=event.event_id,
            type=event.type,
            subject=subject_hash(event.email),
            identity=decision.identity,
            outcome=decision.outcome,
        )

    def _update_scheduled_gauge(self) -> None:
        metrics.SCHEDULED.set(sum(len(s.scheduled) for s in self.views.state.identities()))

    # ---------------------------------------------------------------- login path
    async def handle_login_batch(self, raw: bytes | None) -> int:
        """One message of the auth.events topic: a JSON array of canonical LoginEvents (the
        edge batches them) or one object. Returns the number of events evaluated."""
        if self.login is None:
            raise ConfigError("rules.dir", "login events arrived but no rule set is loaded")
        try:
            data = orjson.loads(raw or b"")
        except orjson.JSONDecodeError as exc:
            await self.dead_letter(
                self.topics.auth_events, raw, f"invalid: {exc.msg}", dlq=self.topics.auth_dlq
            )
            return 0
        items = data if isinstance(data, list) else [data]
        registry, lifecycle = self.views.registry, self.views.state
        evaluated = 0
        for item in items:
            try:
                event = LoginEvent.from_dict(item)
            except ValidationError as exc:
                await self.dead_letter(
                    self.topics.auth_events,
                    orjson.dumps(item),
                    f"invalid: {exc.reason}",
                    dlq=self.topics.auth_dlq,
                )
                continue
            resolved, detections = self.login.process(event, registry, lifecycle)
            evaluated += 1
            for detection in detections:
                await self.handle_detection(resolved, detection)
        metrics.LOGIN_EVENTS.inc(evaluated)
        if evaluated:
            # Every rule sees every login event: one increment per rule and batch, not per event.
            for child in self._rule_evaluations:
                child.inc(evaluated)
        return evaluated

    async def handle_detection(self, event: LoginEvent, detection: Detection) -> None:
        """Alert at once (a page must not wait for provider retries); act through a plan, like
        an offboarding, so the ledger makes every action happen once."""
        if detection.error is not None:
            metrics.RULE_ERRORS.labels(detection.rule).inc()
            await self.dead_letter(
                self.topics.auth_events,
                orjson.dumps(event.to_dict()),
                f"rule_error: {detection.rule}: {detection.error}"[:500],
                dlq=self.topics.auth_dlq,
            )
            return
        matches = self._rule_matches.get((detection.rule, detection.severity))
        if matches is None:
            matches = metrics.RULE_MATCHES.labels(detection.rule, detection.severity)
        matches.inc()
        if detection.deduplicated:
            return
        await self.audit(
            "detection",
            detection.event_id,
            rule=detection.rule,
            severity=detection.severity,
            identity=detection.identity,
            event_id=detection.event_id,
            group=subject_hash(detection.group_key),
            actions=[a.replay_view() for a in detection.actions],
            dropped=list(detection.dropped),
        )
        for alert in detection.alerts:
            await self.send_alert(alert)
        if detection.actions and detection.identity:
            # a redelivered event finds the plan already there (maybe running): nothing
            await self.plans.add(
                detection.identity,
                f"rule:{detection.rule}:{detection.event_id}",
                Plan.make(
                    detection.actions,
                    event_type=f"rule:{detection.rule}",
                    decided_at=self.clock(),
                    partition_key=event.partition_key,
                ),
            )

    # ---------------------------------------------------------------- leaks path
    def _leak_index(self) -> LeakIndex:
        index = self.views.leak_index
        if index is None:  # views not started (tests): build it once from what is there
            index = LeakIndex.build(self.views.registry, self.leak_settings.plus_tag_domains)
            self.views.leak_index = index
        return index

    async def handle_leak_batch(self, raw: bytes | None) -> int:
        """One message of the leak.records topic (a JSON array of LeakRecords, or one).
        Records nobody in the registry holds cost one dict miss; the others are decided
        (:func:`streams.decide.leaks.decide_leak`) and acted on. Returns the records matched."""
        records, rejected = decode_batch(raw or b"")
        for payload, reason in rejected:
            body = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
            await self.dead_letter(
                self.topics.leak_records, body, f"invalid: {reason}", dlq=self.topics.leak_dlq
            )
        if not records:
            return 0
        index = self._leak_index()
        lookup = index.lookup
        now = datetime.fromtimestamp(self.clock(), UTC)
        matched = 0
        for record in records:
            if lookup(record.principal) is None:
                continue
            matched += 1
            decision = decide_leak(
                self.views.registry,
                self.views.state,
                record,
                now,
                self.provider_types,
                index=index,
                settings=self.leak_settings,
                rules=self.login.engine if self.login is not None else None,
            )
            await self.handle_leak_decision(decision)
        return matched

    async def handle_leak_decision(self, decision: LeakDecision) -> None:
        """Audit, state updates, alerts at once, actions through one plan per subject (like a
        rule detection), all keyed by the record's cause: a re-import does nothing twice."""
        if decision.outcome == "no_match":
            return
        record = decision.record
        for detection in decision.detections:  # the leak rules that fired or failed
            if detection.error is not None:
                metrics.RULE_ERRORS.labels(detection.rule).inc()
                await self.dead_letter(
                    self.topics.leak_records,
                    record.dumps(),
                    f"rule_error: {detection.rule}: {detection.error}"[:500],
                    dlq=self.topics.leak_dlq,
                )
                continue
            matches = self._rule_matches.get((detection.rule, detection.severity))
            if matches is None:
                matches = metrics.RULE_MATCHES.labels(detection.rule, detection.severity)
            matches.inc()
        view = decision.to_dict()
        view.pop("kind", None)
        await self.audit("leak", decision.plan_key, **view)
        log.info(
            "leak.decided",
            breach=record.breach,
            subject=record.subject,
            outcome=decision.outcome,
            actions=len(decision.actions),
            alerts=len(decision.alerts),
        )
        for value in decision.state_updates:
            await self.put_state(value)
        for alert in decision.alerts:
            await self.send_alert(alert)
        by_identity: dict[str, list[Action]] = {}
        for action in decision.actions:
            by_identity.setdefault(action.identity, []).append(action)
        plan_id = decision.plan_key
        for identity, actions in by_identity.items():
            # redelivered: the plan exists (maybe running), nothing is added
            await self.plans.add(
                identity,
                plan_id,
                Plan.make(
                    actions,
                    event_type="leak",
                    decided_at=self.clock(),
                    partition_key=record.partition_key,
                ),
            )

    async def tick_rules(self, now: datetime | None = None) -> int:
        """Absence rules whose window passed, state expiry, and the rule-state checkpoint
        (dirty keys to the compacted rule.state topic and the journal)."""
        if self.login is None:
            return 0
        pipeline = self.login
        now = pipeline.rule_clock(now or datetime.fromtimestamp(self.clock(), UTC))
        for detection in pipeline.engine.flush(
            now, self.views.registry, self.views.state, pipeline.state
        ):
            if detection.error is not None:
                metrics.RULE_ERRORS.labels(detection.rule).inc()
                log.error("rule.flush_failed", rule=detection.rule, error=detection.error)
                continue
            metrics.RULE_MATCHES.labels(detection.rule, detection.severity).inc()
            for alert in detection.alerts:
                await self.send_alert(alert)
        pipeline.state.expire(now, pipeline.engine.horizons)
        dirty = pipeline.state.take_dirty()
        sends = []
        for done, key in enumerate(dirty):
            value = pipeline.state.key_to_dict(key)
            try:
                self.journal.append("rule_state", key=key, value=value)
            except JournalError:
                # Not waited for (this also runs at shutdown): the keys stay dirty and the
                # next checkpoint writes them; the journal logged why.
                pipeline.state.mark_dirty(dirty[done:])
                break
            sends.append(self.publisher.send_json(self.topics.rule_state, key, value))
        # Concurrently: the producer batches them, instead of one broker round trip per key
        # (one at a time, a busy login agent starved the checkpoint for seconds).
        results = await asyncio.gather(*sends, return_exceptions=True)
        failed = [k for k, r in zip(dirty, results, strict=False) if isinstance(r, BaseException)]
        if failed:
            # the broker did not take them: the next checkpoint sends them again
            pipeline.state.mark_dirty(failed)
            log.warning("rule_state.checkpoint_deferred", keys=len(failed))
        return len(sends) - len(failed)

    # ---------------------------------------------------------------- plans and alerts
    @property
    def plans_completed(self) -> int:
        return self.plans.completed

    def start_plan(self, identity: str, plan_id: str) -> None:
        self.plans.start(identity, plan_id)

    def resume_plans(self) -> int:
        """Start every unfinished plan this worker owns (after a restart or a rebalance)."""
        return self.plans.resume()

    async def wait_plans(self, timeout: float | None = None) -> None:
        await self.plans.wait(timeout)

    async def cancel_plans(self) -> None:
        await self.plans.cancel()

    async def send_alert(self, alert: Alert, *, ledger_key: str | None = None) -> None:
        """Route by severity to the configured sinks, once per dedup key and action (or once
        per ``ledger_key``, for an incident that is updated)."""
        await self.alerts.send_alert(alert, ledger_key=ledger_key)

    async def tick_outages(self, now: float | None = None) -> int:
        """Update the open provider incidents whose counts changed. Returns the updates sent."""
        return await self.alerts.tick_outages(now)

    def restore_outages(self) -> int:
        """The retryable incidents an earlier process left open (from the ledger)."""
        return self.alerts.restore_outages()

    # ---------------------------------------------------------------- timers
    async def tick_schedule(self, now: datetime | None = None) -> int:
        now = now or datetime.fromtimestamp(self.clock(), UTC)
        fired = 0
        for event in due_scheduled(self.views.state, now):
            if self.owns(event.partition_key):
                await self.handle_hr(event, now)
                fired += 1
        await self.plans.tick_batches()
        return fired

    async def tick_agencies(self, now: datetime | None = None) -> int:
        """Publish a contract_ended event for each member of an agency past its end date.
        The event ids are deterministic, so every worker may run this: repeats are duplicates."""
        now = now or datetime.fromtimestamp(self.clock(), UTC)
        events = decide_agency_expiry(self.views.registry, self.views.state, now)
        for synthetic in events:
            event = replace(synthetic, accepted_at=self.clock())
            self.journal.append("hr_event", key=event.partition_key, value=event.to_dict())
            await self.publisher.send(self.topics.hr_events, event.partition_key, event.dumps())
        return len(events)
