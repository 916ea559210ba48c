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
import math
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

from connectors.base.kinds import IDP_TYPES
from streams.bus.journal import Journal
from streams.bus.leakbatch import decode_batch
from streams.bus.rulelog import RuleStateLog
from streams.bus.topics import Topics, partition_for
from streams.bus.views import Publisher, Views
from streams.config import Config
from streams.decide.leaks import LeakDecision, LeakSettings, decide_leak
from streams.decide.login import LoginPipeline, home_of
from streams.detect.model import Detection
from streams.model.leak_index import LeakIndex
from streams.model.plan import Plan
from streams.model.records import Action, Alert, LoginEvent, subject_hash
from streams.runtime.alerts import AlertRouter
from streams.runtime.batches import Batches
from streams.runtime.checkpoint import write_checkpoint
from streams.runtime.executor import Executor, Sink
from streams.runtime.hrpath import HrPath
from streams.runtime.outages import Outages
from streams.runtime.plans import PlanRunner
from streams.runtime.policy import offboarding_policy
from streams.runtime.writes import publish_waiting
from streams.support import metrics
from streams.support.errors import ConfigError, ValidationError

log = structlog.get_logger(__name__)


#: Events routed to another partition per auth.routed message (like the edge's batches).
ROUTED_BATCH = 500
#: Group keys whose partition is remembered (then forgotten all at once).
PARTITION_CACHE = 200_000
#: Rule-state expiry runs at most this often (wall seconds): a pass walks every slot (11 ms
#: for 4,000 keys of the login bench, each second a tick ran it), and the shortest horizon
#: it enforces is minutes; memory is bounded by max_keys meanwhile.
EXPIRE_EVERY = 10.0


def leak_settings(config: Config) -> LeakSettings:
    """The ``leaks.*`` settings of a configuration."""
    return LeakSettings(
        plus_tag_domains=frozenset(
            d.strip().lower().lstrip("@") for d in config["leaks.plus_tag_domains"] if d.strip()
        ),
        hmac_key=config["leaks.hmac_key"],
        include_spam_lists=config.settings.leaks.include_spam_lists,
        include_fabricated=config.settings.leaks.include_fabricated,
        review_after_days=config.settings.leaks.review_after_days,
    )


class Engine(HrPath):
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
        rule_log: RuleStateLog | None = None,
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
        #: The rule state's checkpoint records (the views read the same object).
        self.rule_log = rule_log
        #: Only a broker that forgets (the embedded one in memory) needs the checkpoint in
        #: the journal too: a cluster (or Tansu on S3) keeps the compacted topic, and the
        #: journal would grow by the whole active state every interval (15 MiB/min measured
        #: at 2,500 events/s) on a volume that nothing trims.
        self.journal_rule_state = config.embedded and str(config["embedded.storage"]).startswith(
            "memory"
        )
        if rule_log is None and login is not None:
            self.rule_log = RuleStateLog(
                login.state,
                shards=config.settings.topics.partitions,
                writer=publisher.writer_id.decode(),
            )
        self.provider_types = config.provider_types()
        #: Provider types that are identity providers: the connectors' fact.
        self.idp_types = IDP_TYPES
        self.routes = config.routes()
        self.runbook_base = config.settings.alerts.runbook_base_url.rstrip("/")
        self.partitions = config.settings.topics.partitions
        self._partition_cache: dict[str, int] = {}
        self._expired_at = -math.inf
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
            intents=config.intent_routes(),
            incidents=config.settings.alerts.incidents,
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
    def set_assignment(self, partitions: Iterable[int]) -> None:
        self.owned = set(partitions)
        log.info("engine.assigned", partitions=sorted(self.owned))
        self.restore_outages()
        self.resume_plans()

    # ---------------------------------------------------------------- login path
    def partition_of(self, key: str) -> int:
        """The partition (so the owner) of a group key's rule state; cached (murmur2 is slow)."""
        found = self._partition_cache.get(key)
        if found is None:
            if len(self._partition_cache) >= PARTITION_CACHE:
                self._partition_cache.clear()
            found = self._partition_cache[key] = partition_for(key, self.partitions)
        return found

    async def handle_login_batch(
        self,
        raw: bytes | None,
        partition: int | None = None,
        routed_out: dict[int, list[dict[str, Any]]] | None = None,
    ) -> int:
        """One message of the auth.events topic: a JSON array of canonical LoginEvents (the
        edge batches them) or one object. Returns the number of events evaluated.

        ``partition`` is where the message arrived. Rule state is keyed: a rule whose group
        key (the resolved identity, or the source IP for ``group_by: ip``) belongs to another
        partition is evaluated by that partition's owner, to which the event is routed
        through ``auth.routed`` (:meth:`handle_routed_batch`), so results do not depend on
        how many workers run or on how the edge keyed the event; a key of a partition this
        worker owns as well is evaluated in place (:func:`home_of`). None (replay, tests):
        every key is here. With ``routed_out`` the events to route are added there, for the
        caller to send (:meth:`route`) once for several messages (a round trip each cost a
        fifth)."""
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
        home = home_of(partition, self.owned, self.partitions, self.partition_of)
        deferred: list[tuple[str, str]] = []
        routed: dict[int, list[dict[str, Any]]] = {}
        for item in items:
            try:
                event = LoginEvent.from_dict(item)
            except ValidationError as exc:
                await self._reject_login(self.topics.auth_events, item, exc)
                continue
            resolved, detections = self.login.process(
                event, registry, lifecycle, home=home, deferred=deferred, origin=partition
            )
            evaluated += 1
            for detection in detections:
                await self.handle_detection(resolved, detection)
            if deferred:
                self._defer(resolved, deferred, routed, partition)
                deferred.clear()
        if routed:
            if routed_out is None:
                await self.route(routed)
            else:
                for owner, entries in routed.items():
                    routed_out.setdefault(owner, []).extend(entries)
        metrics.LOGIN_EVENTS.inc(evaluated)
        if evaluated:
            # Every rule sees every login event: one increment per rule and batch, not per event.
            for child in self._rule_evaluations:
                child.inc(evaluated)
        return evaluated

    async def _reject_login(self, topic: str, item: Any, exc: ValidationError) -> None:
        """One unusable login event of a batch, to the auth dead-letter topic with why."""
        await self.dead_letter(
            topic, orjson.dumps(item), f"invalid: {exc.reason}", dlq=self.topics.auth_dlq
        )

    def _defer(
        self,
        event: LoginEvent,
        deferred: list[tuple[str, str]],
        routed: dict[int, list[dict[str, Any]]],
        origin: int | None,
    ) -> None:
        """One entry per owner partition, naming the group fields evaluated there and the
        partition the event came from (the owner's rule clock follows each origin)."""
        by_owner: dict[int, list[str]] = {}
        for group_by, key in deferred:
            fields = by_owner.setdefault(self.partition_of(key), [])
            if group_by not in fields:
                fields.append(group_by)
        data = event.to_dict()
        for owner, fields in by_owner.items():
            routed.setdefault(owner, []).append({"e": data, "g": fields, "o": origin})

    async def route(self, routed: dict[int, list[dict[str, Any]]]) -> None:
        """Send the deferred events to their owners (acknowledged before the input message
        is committed, waiting in place while the broker is away: a retry of the whole
        message would evaluate its local events twice)."""
        sends = []
        for owner, entries in routed.items():
            for start in range(0, len(entries), ROUTED_BATCH):
                sends.append(
                    publish_waiting(
                        self.publisher,
                        self.topics.auth_routed,
                        f"route:{owner}",
                        entries[start : start + ROUTED_BATCH],
                        partition=owner,
                    )
                )
            metrics.LOGIN_ROUTED.inc(len(entries))
        await asyncio.gather(*sends)

    async def handle_routed_batch(self, raw: bytes | None) -> int:
        """One message of auth.routed: events another partition deferred to this one, each
        with the group fields whose rules run here. Returns the events evaluated."""
        if self.login is None:
            raise ConfigError("rules.dir", "login events arrived but no rule set is loaded")
        try:
            items = orjson.loads(raw or b"")
            if not isinstance(items, list):
                raise TypeError("expected a JSON array")
        except (orjson.JSONDecodeError, TypeError) as exc:
            await self.dead_letter(
                self.topics.auth_routed, raw, f"invalid: {exc}", dlq=self.topics.auth_dlq
            )
            return 0
        registry, lifecycle = self.views.registry, self.views.state
        evaluated = 0
        for item in items:
            try:
                event = LoginEvent.from_dict(item.get("e") if isinstance(item, dict) else None)
                groups = frozenset(str(g) for g in item.get("g") or ())
                origin = item.get("o")
                if origin is not None and not isinstance(origin, int):
                    raise ValidationError("o: expected a partition number")
            except ValidationError as exc:
                await self._reject_login(self.topics.auth_routed, item, exc)
                continue
            for detection in self.login.process_routed(event, registry, lifecycle, groups, origin):
                await self.handle_detection(event, detection)
            evaluated += 1
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
        await self.act_on(detection, event.partition_key)

    async def act_on(self, detection: Detection, partition_key: str, **audited: Any) -> None:
        """A rule's detection (login or identity event) recorded in the audit trail (with
        ``audited`` fields), its alert queued, its actions started as a plan."""
        await self.audit(
            "detection",
            detection.event_id,
            rule=detection.rule,
            severity=detection.severity,
            identity=detection.identity,
            event_id=detection.event_id,
            **audited,
            group=subject_hash(detection.group_key),
            actions=[a.replay_view() for a in detection.actions],
            dropped=list(detection.dropped),
        )
        for alert in detection.alerts:
            await self.alerts.enqueue(alert)
        if detection.actions and detection.identity:
            # a redelivered event finds the plan already there (maybe running): nothing
            await self.plans.add(
                detection.identity,
                f"rule:{detection.rule}:{detection.event_id}",
                Plan.make(
                    detection.actions,
                    event_type=f"rule:{detection.rule}",
                    decided_at=self.clock(),
                    partition_key=partition_key,
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
            await self.alerts.enqueue(alert)
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
        owned = self.owned
        for detection in pipeline.engine.flush(
            now,
            self.views.registry,
            self.views.state,
            pipeline.state,
            home=None if owned is None else (lambda key: self.partition_of(key) in owned),
        ):
            if detection.error is not None:
                metrics.RULE_ERRORS.labels(detection.rule).inc()
                log.error("rule.flush_failed", rule=detection.rule, error=detection.error)
                continue
            metrics.RULE_MATCHES.labels(detection.rule, detection.severity).inc()
            for alert in detection.alerts:
                await self.alerts.enqueue(alert)
        wall = self.clock()
        if wall - self._expired_at >= EXPIRE_EVERY:
            self._expired_at = wall
            pipeline.state.expire(now, pipeline.engine.horizons)
        return await self.checkpoint_rules()

    async def checkpoint_rules(self) -> int:
        """Write the rule-state keys that changed since the last checkpoint
        (:func:`streams.runtime.checkpoint.write_checkpoint`). Returns the keys written."""
        if self.login is None or self.rule_log is None:
            return 0
        return await write_checkpoint(
            self.login.state,
            self.rule_log,
            journal=self.journal if self.journal_rule_state else None,
            publisher=self.publisher,
            topic=self.topics.rule_state,
            owned=self.owned,
        )

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

    async def dispatch_alert(self, raw: bytes | None) -> None:
        """One record of the ``alerts.pending`` topic (the alert agent)."""
        await self.alerts.dispatch(raw)

    async def tick_outages(self, now: float | None = None) -> int:
        """Update the open provider incidents whose counts changed. Returns the updates sent."""
        return await self.alerts.tick_outages(now)

    def restore_outages(self) -> int:
        """The retryable incidents an earlier process left open (from the ledger)."""
        return self.alerts.restore_outages()
