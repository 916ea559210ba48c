"""The worker's core: HR events in, decisions persisted, plans executed, alerts and audit out.

Everything here runs on the worker's event loop. State is read from the materialised views
and every change is written whole (journal first, then the compacted topic, awaiting the
broker's ack) before anything depends on it, so a crash at any point is repaired by
redelivery: decisions are deduplicated by event id, actions by their idempotency key in the
ledger, pages by their dedup key.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

from streams.bus.journal import Journal
from streams.bus.leakbatch import decode_batch
from streams.bus.topics import Topics, partition_for
from streams.bus.views import Publisher, Views
from streams.config import Config
from streams.decide.hr import HrDecision, decide_agency_expiry, decide_hr, due_scheduled
from streams.decide.leaks import (
    LeakDecision,
    LeakIndex,
    LeakSettings,
    decide_leak,
    state_after_action,
)
from streams.decide.login import LoginPipeline
from streams.detect.rules import Detection
from streams.model.records import (
    Action,
    Alert,
    HrEvent,
    LoginEvent,
    format_time,
    idempotency_key,
    subject_hash,
)
from streams.model.state import AccountState, StateValue
from streams.runtime.executor import Executor, Outcome, Sink
from streams.runtime.outages import ANSWERED, LEDGER_PREFIX, Group, Outages
from streams.support import metrics
from streams.support.errors import (
    BrokerError,
    ConfigError,
    JournalError,
    ProviderError,
    ValidationError,
)

log = structlog.get_logger(__name__)

#: Actions whose confirmation ends "time to revoke" (access is cut once these are done).
REVOKING = frozenset({"revoke_sessions", "remove_grant", "downgrade_grant"})
#: Backoff between attempts while the journal cannot be written (disk full), seconds.
JOURNAL_RETRY_MIN = 0.2
JOURNAL_RETRY_MAX = 2.0
#: The same while the broker does not acknowledge the worker's writes, seconds.
BROKER_RETRY_MIN = 0.2
BROKER_RETRY_MAX = 5.0


def leak_settings(config: Config) -> LeakSettings:
    """The ``leaks.*`` settings of a configuration."""
    return LeakSettings(
        plus_tag_domains=frozenset(
            d.strip().lower().lstrip("@") for d in config["leaks.plus_tag_domains"] if d.strip()
        ),
        hmac_key=config["leaks.hmac_key"],
        include_spam_lists=bool(config["leaks.include_spam_lists"]),
        include_fabricated=bool(config["leaks.include_fabricated"]),
    )


class Engine:
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
        self.config = config
        self.topics = Topics.from_config(config)
        self.publisher = publisher
        self.views = views
        self.journal = journal
        self.executor = executor
        self.sinks = sinks
        self.clock = clock
        self.login = login
        self.provider_types = config.provider_types()
        self.routes = config.routes()
        self.runbook_base = str(config["alerts.runbook_base_url"]).rstrip("/")
        self.partitions = int(config["topics.partitions"])
        self.leak_settings = leak_settings(config)
        #: Partitions of hr.events this worker owns; None = all (single worker, replay, tests).
        self.owned: set[int] | None = None
        self.outages = Outages(update_interval=float(config["alerts.outage_update_interval"]))
        self._plans: dict[tuple[str, str], asyncio.Task[None]] = {}
        #: Serialises the worker's journal writes while they wait for space (FIFO): two
        #: values of one key land in the order they were decided, never the older last.
        self._journal_lock = asyncio.Lock()
        self.plans_completed = 0
        # Pre-bound children (labels() per event costs more than a rule, FIELD-NOTES); binding
        # them here also exports every rule's series at 0, so rates exist before a first match.
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

    # ---------------------------------------------------------------- writes
    async def record(self, kind: str, *, durable: bool = False, **fields: Any) -> dict[str, Any]:
        """Append to the journal, waiting in place while it cannot be written (disk full).

        What the worker records is never dropped, and the work before it is not redone: a
        provider call already made is recorded once space is back, not made again; a decision
        already taken (and applied in memory) is written, not re-decided as a duplicate.
        Meanwhile the journal logs the failure and the ``journal_writable`` readiness check
        fails. Cancelled at shutdown: the unfinished plan resumes from the journal at the next
        start, and the ledger keeps what was recorded from being done twice."""
        delay = JOURNAL_RETRY_MIN
        async with self._journal_lock:
            while True:
                try:
                    return self.journal.append(kind, durable=durable, **fields)
                except JournalError:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, JOURNAL_RETRY_MAX)

    async def publish(self, topic: str, key: str, value: Any) -> None:
        await publish_waiting(self.publisher, topic, key, value)

    async def put_state(self, value: StateValue) -> None:
        self.views.state.put(value)
        data = value.to_dict()
        await self.record("state", key=value.key, value=data)
        await self.publish(self.topics.lifecycle, value.key, data)

    async def put_ledger(self, key: str, value: dict[str, Any]) -> None:
        self.views.ledger[key] = value
        await self.record("ledger", durable=True, key=key, value=value)
        await self.publish(self.topics.ledger, key, value)

    async def audit(self, kind: str, key: str, **fields: Any) -> None:
        entry = await self.record(kind, **fields)
        await self.publish(self.topics.audit, key, entry)

    async def dead_letter(
        self, source_topic: str, raw: bytes | None, reason: str, *, dlq: str | None = None
    ) -> None:
        text = (raw or b"")[:65536]
        try:
            body: str = text.decode()
            encoding = "utf-8"
        except UnicodeDecodeError:
            body, encoding = base64.b64encode(text).decode(), "base64"
        record = {
            "topic": source_topic,
            "reason": reason,
            "value": body,
            "encoding": encoding,
            "ts": self.clock(),
        }
        short = reason.split(":", 1)[0][:40]
        metrics.DEAD_LETTERS.labels(source_topic, short).inc()
        await self.record("dead_letter", topic=source_topic, reason=reason)
        await self.publish(dlq or self.topics.hr_dlq, "dlq", record)
        log.warning("record.dead_lettered", topic=source_topic, reason=reason)

    # ---------------------------------------------------------------- HR path
    async def handle_hr_raw(self, raw: bytes | None) -> HrDecision | None:
        try:
            event = HrEvent.loads(raw or b"")
        except ValidationError as exc:
            await self.dead_letter(self.topics.hr_events, raw, f"invalid: {exc.reason}")
            return None
        return await self.handle_hr(event)

    async def handle_hr(self, event: HrEvent, now: datetime | None = None) -> HrDecision:
        now = now or datetime.fromtimestamp(self.clock(), UTC)
        decision = decide_hr(self.views.registry, self.views.state, event, now, self.provider_types)
        metrics.DECISIONS.labels(event.type, decision.outcome).inc()
        bound = log.bind(
            event_id=event.event_id,
            type=event.type,
            subject=subject_hash(event.email),
            identity=decision.identity,
            outcome=decision.outcome,
        )
        if decision.outcome == "duplicate":
            bound.info("hr.duplicate")
            return decision
        if decision.outcome == "conflict":
            # Refused, never dropped in silence: the sender re-used an event_id (the edge
            # answers 409 when it knows; a second edge replica or an edge restart may not).
            await self.dead_letter(
                self.topics.hr_events, event.dumps(), f"conflict: {decision.reason}"
            )
            return decision
        plan_id = decision.plan_id
        for value in decision.state_updates:
            await self.put_state(value)
        self._update_scheduled_gauge()
        await self.audit("decision", event.event_id, source=event.source, **decision.to_dict())
        bound.info("hr.decided", actions=len(decision.actions), reason=decision.reason)
        if decision.identity and plan_id and decision.actions:
            self.start_plan(decision.identity, plan_id)
        elif decision.alerts:
            for alert in decision.alerts:
                await self.send_alert(alert)
        return decision

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
            plan_id = f"rule:{detection.rule}:{detection.event_id}"
            st = self.views.state.identity(detection.identity)
            if plan_id in st.plans:
                return  # a redelivered event: the plan already exists (maybe running)
            plan = {
                "actions": [a.to_dict() for a in detection.actions],
                "alerts": [],
                "accepted_at": None,
                "event_type": f"rule:{detection.rule}",
                "decided_at": self.clock(),
                "partition_key": event.partition_key,
            }
            await self.put_state(replace(st, plans={**st.plans, plan_id: plan}))
            self.start_plan(detection.identity, plan_id)

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
            st = self.views.state.identity(identity)
            if plan_id in st.plans:
                continue  # redelivered: the plan exists (maybe running)
            plan = {
                "actions": [a.to_dict() for a in actions],
                "alerts": [],
                "accepted_at": None,
                "event_type": "leak",
                "decided_at": self.clock(),
                "partition_key": record.partition_key,
            }
            await self.put_state(replace(st, plans={**st.plans, plan_id: plan}))
            self.start_plan(identity, plan_id)

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

    # ---------------------------------------------------------------- plans
    def start_plan(self, identity: str, plan_id: str) -> None:
        key = (identity, plan_id)
        if key in self._plans and not self._plans[key].done():
            return
        task = asyncio.create_task(self._run_plan(identity, plan_id), name=f"plan-{plan_id}")
        self._plans[key] = task
        task.add_done_callback(functools.partial(self._plan_finished, key))

    def _plan_finished(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if self._plans.get(key) is task:
            del self._plans[key]
        if not task.cancelled() and task.exception() is not None:
            log.error("plan.crashed", plan=key[1], error=repr(task.exception()))

    def resume_plans(self) -> int:
        """Start every unfinished plan this worker owns (after a restart or a rebalance)."""
        started = 0
        for st in self.views.state.identities():
            for plan_id, plan in st.plans.items():
                if self.owns(str(plan.get("partition_key", st.identity))):
                    self.start_plan(st.identity, plan_id)
                    started += 1
        if started:
            log.info("plans.resumed", count=started)
        return started

    async def wait_plans(self, timeout: float | None = None) -> None:
        tasks = list(self._plans.values())
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def cancel_plans(self) -> None:
        tasks = list(self._plans.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_plan(self, identity: str, plan_id: str) -> None:
        plan = self.views.state.identity(identity).plans.get(plan_id)
        if plan is None:
            return
        actions = [Action.from_dict(a) for a in plan.get("actions", ())]
        metrics.PENDING_ACTIONS.inc(len(actions))
        try:
            outcomes = await asyncio.gather(*(self._run_action(a) for a in actions))
        finally:
            metrics.PENDING_ACTIONS.dec(len(actions))
        revoked_at = [
            o.finished_at
            for a, o in zip(actions, outcomes, strict=True)
            if a.action in REVOKING and o.status in ("done", "dry_run")
        ]
        accepted_at = plan.get("accepted_at")
        took = None
        if accepted_at and revoked_at:
            took = max(revoked_at) - float(accepted_at)
            metrics.TIME_TO_REVOKE.observe(max(took, 0.0))
        failed = [(a, o) for a, o in zip(actions, outcomes, strict=True) if o.status == "failed"]
        for alert_data in plan.get("alerts", ()):
            alert = Alert.from_dict(alert_data)
            if alert.rule == "offboarding.completed":
                details = dict(alert.details)
                details.update(
                    seconds_to_revoke=None if took is None else round(took, 3),
                    actions_done=sum(o.status in ("done", "dry_run") for o in outcomes),
                    actions_failed=len(failed),
                    dry_run=any(o.status == "dry_run" for o in outcomes),
                )
                title = alert.title
                if took is not None:
                    title = f"{title} in {took:.2f}s"
                if failed:
                    title = f"{title} — {len(failed)} action(s) FAILED"
                alert = replace(alert, details=details, title=title)
            await self.send_alert(alert)
        # Forget the plan only once its alerts are out: a crash before this line re-runs the
        # plan, and the ledger turns every action and alert of it into a no-op.
        st = self.views.state.identity(identity)
        plans = {k: v for k, v in st.plans.items() if k != plan_id}
        await self.put_state(replace(st, plans=plans))
        self.plans_completed += 1
        log.info(
            "plan.completed",
            plan=plan_id,
            identity=identity,
            actions=len(actions),
            failed=len(failed),
            seconds=None if took is None else round(took, 3),
        )

    async def _run_action(self, action: Action) -> Outcome:
        done = self.views.ledger.get(action.idempotency_key)
        if done is not None:
            metrics.ACTIONS.labels(action.provider, action.action, "skipped_done").inc()
            return Outcome(
                str(done.get("status", "done")),
                int(done.get("attempts", 0)),
                dict(done.get("result") or {}),
                done.get("error"),
                float(done.get("finished_at") or self.clock()),
            )
        outcome = await self.executor.execute(action, self._on_stuck)
        record = {
            **outcome.to_dict(),
            "action": action.action,
            "provider": action.provider,
            "identity": action.identity,
            "account": action.account,
            "cause": action.cause,
        }
        await self.put_ledger(action.idempotency_key, record)
        await self.audit(
            "action", action.idempotency_key, **action.replay_view(), outcome=outcome.to_dict()
        )
        if action.action == "rotate_shared_credential" and outcome.status == "done":
            await self._record_rotation(action, outcome)
        if outcome.status == "done":
            # A forced re-enrolment is a credential change: older breaches stop matching.
            update = state_after_action(self.views.state, action, outcome.finished_at)
            if update is not None:
                await self.put_state(update)
        # One page per provider outage, not per action (streams.runtime.outages).
        settled = self.outages.settled(action)
        now = self.clock()
        if outcome.status == "failed":
            group = self.outages.failed(
                action, outcome.failure or "rejected", outcome.error or "", now
            )
            if not group.sent:
                await self._send_outage(group, "trigger")
        elif outcome.status == "done" and settled is not None:
            settled.recovered += 1
        if outcome.status == "done" or outcome.failure in ANSWERED:
            # The provider answers again (a 4xx is an answer): its outage is over.
            for group in self.outages.recovered(action.provider):
                await self._send_outage(group, "resolve")
        if settled is not None:
            self._stuck_gauge(settled)
        return outcome

    async def _record_rotation(self, action: Action, outcome: Outcome) -> None:
        if action.account is None:
            return
        acct = self.views.state.account(action.account)
        version = int(outcome.result.get("version", acct.secret_version + 1))
        await self.put_state(
            AccountState(
                account=acct.account,
                secret_version=version,
                rotated_at=format_time(datetime.fromtimestamp(outcome.finished_at, UTC)),
                rotated_cause=action.cause,
                reenrolment_required=acct.reenrolment_required,
            )
        )

    async def _on_stuck(self, action: Action, exc: ProviderError, attempts: int) -> None:
        group = self.outages.stuck(action, exc, self.clock())
        self._stuck_gauge(group)
        if not group.sent:
            await self._send_outage(group, "trigger")

    def _stuck_gauge(self, group: Group) -> None:
        metrics.PROVIDER_STUCK.labels(group.provider, group.failure).set(len(group.stuck))

    async def _send_outage(self, group: Group, event_action: str) -> None:
        """Open, update (``trigger`` again, same dedup key) or resolve one provider incident.
        An open retryable incident is kept in the ledger, so a restart can resolve it."""
        alert = group.alert(event_action)
        ledger_key = group.alert_ledger_key(event_action)
        first = not group.sent
        group.sent += 1
        group.last_sent = self.clock()
        group.dirty = False
        await self.send_alert(alert, ledger_key=ledger_key)
        if group.retryable and (first or event_action == "resolve"):
            status = "resolved" if event_action == "resolve" else "open"
            await self.put_ledger(group.ledger_key, group.to_ledger(status))
        if event_action == "resolve":
            self._stuck_gauge(group)

    async def tick_outages(self, now: float | None = None) -> int:
        """Update the open incidents whose counts changed (at most once per
        ``alerts.outage_update_interval``). Returns the updates sent."""
        groups = self.outages.due(self.clock() if now is None else now)
        for group in groups:
            await self._send_outage(group, "trigger")
        return len(groups)

    def restore_outages(self) -> int:
        """The retryable incidents an earlier process left open (from the ledger): resolved
        here once the provider works again."""
        restored = 0
        for key, entry in list(self.views.ledger.items()):
            if (
                key.startswith(LEDGER_PREFIX)
                and entry.get("status") == "open"
                and self.outages.restore(entry) is not None
            ):
                restored += 1
        return restored

    # ---------------------------------------------------------------- alerts
    async def send_alert(self, alert: Alert, *, ledger_key: str | None = None) -> None:
        """Route by severity to the configured sinks, once per dedup key and action (or once
        per ``ledger_key``, for an incident that is updated)."""
        key = ledger_key or "alert:" + idempotency_key(alert.dedup_key, alert.event_action)
        if key in self.views.ledger:
            return
        if alert.runbook and self.runbook_base and "://" not in alert.runbook:
            alert = replace(alert, runbook=f"{self.runbook_base}/{alert.runbook}")
        await self.publish(self.topics.alerts, alert.dedup_key, alert.to_dict())
        results: dict[str, str] = {}
        for name in self.routes.get(alert.severity, []):
            sink = self.sinks.get(name)
            if sink is None:
                metrics.ALERTS.labels(name, alert.severity, "unrouted").inc()
                results[name] = "unconfigured"
                continue
            outcome = await self.executor.send_alert(name, sink, alert)
            results[name] = outcome.status if outcome.error is None else f"failed: {outcome.error}"
        await self.put_ledger(
            key, {"status": "sent", "sinks": results, "finished_at": self.clock()}
        )
        await self.audit("alert", alert.dedup_key, alert=alert.to_dict(), sinks=results)
        log.info(
            "alert.sent",
            rule=alert.rule,
            severity=alert.severity,
            action=alert.event_action,
            sinks=results,
        )

    # ---------------------------------------------------------------- timers
    async def tick_schedule(self, now: datetime | None = None) -> int:
        now = now or datetime.fromtimestamp(self.clock(), UTC)
        fired = 0
        for event in due_scheduled(self.views.state, now):
            if self.owns(event.partition_key):
                await self.handle_hr(event, now)
                fired += 1
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


async def publish_waiting(publisher: Publisher, topic: str, key: str, value: Any) -> None:
    """Write to the broker, waiting in place while it is unreachable (like
    :meth:`Engine.record` for the journal). A write the worker has decided must land:
    failing here would leave the decision applied in memory and in the journal but not on
    its topic, and the retried event would then look like a duplicate and be dropped.
    Waiting keeps the writes of a key in order; the agent stalls meanwhile, as it must,
    since nothing can be committed either. Cancelled at shutdown: the journal has it."""
    delay = BROKER_RETRY_MIN
    failing = False
    while True:
        try:
            await publisher.send_json(topic, key, value)
        except BrokerError as exc:
            if not failing:
                log.warning(
                    "broker.write_waiting",
                    topic=topic,
                    error=str(exc)[:300],
                    effect="processing waits until the broker acknowledges",
                )
            failing = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, BROKER_RETRY_MAX)
            continue
        if failing:
            log.info("broker.write_done", topic=topic)
        return


async def with_broker_retry(what: str, fn: Callable[[], Any], *, attempts: int = 0) -> Any:
    """Retry an infrastructure write (broker or journal) until it works: the event must not
    be acknowledged before its effects are recorded. ``attempts`` 0 means forever."""
    delay = 0.2
    tries = 0
    while True:
        tries += 1
        try:
            return await fn()
        except (BrokerError, JournalError) as exc:
            if attempts and tries >= attempts:
                raise
            log.warning("infrastructure.retry", what=what, error=str(exc), delay=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
