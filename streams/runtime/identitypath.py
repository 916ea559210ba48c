"""The worker's identity-event path: one message of the ``identity.events`` topic (a JSON
array of canonical IdentityEvents, batched by the pollers like logins) in, detections out.

Each event is resolved against the registry view (subject and actor), evaluated by the
``inputs: [identity_event]`` rules (:class:`~streams.detect.identity.IdentityRules`), and each
detection handled as a login detection is: audited, its alerts queued at once (a page never
waits for a provider), its actions run through one plan per identity keyed by
``rule:<rule id>:<event id>`` (a redelivered event adds nothing). A record that is not a valid
IdentityEvent, and a rule that raises, go to ``auth.events.dlq`` with the reason.

Why a vendor disable for a password leak or a hijacking (``account_disabled_by_vendor``) is
*not* also fed to the leak path as a LeakRecord, although issue 18 suggested it: the leak path
would decide it again under its own cause (``leak:<breach>:<subject>``), so its rules'
revoke-sessions and re-enrolment actions and its alerts would be issued a second time beside
``vendor_disabled_compromised``'s (``rule:<id>:<event id>``: different idempotency keys, which
the ledger rightly does not merge); avoiding that means a leak record that no leak rule may
act on, i.e. an audit line with an invented breach name in the breach reports. What the leak
path needs from such an event is the credential-change fact, and it gets it already: the
rule's ``force_mfa_reenrolment``, once done, records ``reenrolled_at`` for the identity
(:func:`streams.decide.leaks.state_after_action`, called for every completed action), so
older breaches of that person are ``stale`` from then on (``tests/test_replay_identity.py``).
The alert and the audit ``detection`` record name the vendor's reason for the report.

Kept out of :mod:`streams.runtime.engine` and :mod:`streams.runtime.worker` (both near the
module size limit): the worker wires it with one agent line, :func:`identity_agent`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
import structlog

from streams.detect.identity import IdentityRules, StateDedup, resolve_subjects
from streams.detect.model import Detection
from streams.model.identity import IdentityEvent
from streams.model.records import subject_hash
from streams.support import metrics
from streams.support.errors import ConfigError, ValidationError

log = structlog.get_logger(__name__)


class _Services(Protocol):
    """What the path needs of the worker's services (streams.runtime.worker)."""

    engine: Any

    async def _process(
        self,
        what: str,
        handle: Callable[[bytes | None], Awaitable[Any]],
        value: bytes | None,
        topic: str,
        dlq: str,
    ) -> None: ...


class IdentityPath:
    """Identity events of one worker, over its engine (views, audit, alerts, plans)."""

    def __init__(self, engine: Any, rules: IdentityRules) -> None:
        self.engine = engine
        self.rules = rules
        # in the login rules' state, so the dedup window is checkpointed with it and
        # survives a restart or a rebalance (the next owner reads the last checkpoint)
        self.dedup = StateDedup(engine.login.state)
        self.topic: str = engine.topics.identity_events
        self.dlq: str = engine.topics.auth_dlq
        self._evaluated: dict[str, Any] = {}
        for rule in rules.rules:
            metrics.RULE_ERRORS.labels(rule.id)  # exported at 0 before a first error

    @classmethod
    def for_engine(cls, engine: Any) -> IdentityPath:
        """The path for a worker engine, with the identity rules of its loaded rule set."""
        if engine.login is None:
            raise ConfigError("rules.dir", "identity events arrived but no rule set is loaded")
        rule_engine = engine.login.engine
        return cls(engine, IdentityRules(rule_engine.ruleset, rule_engine.providers))

    def _count(self, vendor: str) -> None:
        child = self._evaluated.get(vendor)
        if child is None:
            child = self._evaluated[vendor] = metrics.IDENTITY_EVENTS.labels(vendor)
        child.inc()

    async def handle_batch(self, raw: bytes | None) -> int:
        """One identity.events message. Returns the events evaluated."""
        try:
            data = orjson.loads(raw or b"")
        except orjson.JSONDecodeError as exc:
            await self.engine.dead_letter(self.topic, raw, f"invalid: {exc.msg}", dlq=self.dlq)
            return 0
        registry, lifecycle = self.engine.views.registry, self.engine.views.state
        evaluated = 0
        for item in data if isinstance(data, list) else [data]:
            try:
                event = IdentityEvent.from_dict(item)
            except ValidationError as exc:
                body = orjson.dumps(item) if item is not None else raw
                await self.engine.dead_letter(
                    self.topic, body, f"invalid: {exc.reason}", dlq=self.dlq
                )
                continue
            resolved = resolve_subjects(event, registry)
            self._count(resolved.vendor)
            found = self.rules.evaluate(resolved, registry, lifecycle, self.dedup, self.dedup.state)
            for detection in found:
                await self.handle_detection(resolved, detection)
            evaluated += 1
        return evaluated

    async def handle_detection(self, event: IdentityEvent, detection: Detection) -> None:
        engine = self.engine
        if detection.error is not None:
            metrics.RULE_ERRORS.labels(detection.rule).inc()
            await engine.dead_letter(
                self.topic,
                orjson.dumps(event.to_dict()),
                f"rule_error: {detection.rule}: {detection.error}"[:500],
                dlq=self.dlq,
            )
            return
        metrics.RULE_MATCHES.labels(detection.rule, detection.severity).inc()
        if detection.deduplicated:
            return
        log.info(
            "identity_event.detected",
            rule=detection.rule,
            type=event.type,
            vendor=event.vendor,
            subject=subject_hash(event.principal),
        )
        await engine.act_on(detection, event.partition_key, input="identity_event", type=event.type)


def identity_processor(services: _Services) -> Callable[[bytes | None], Awaitable[None]]:
    """The identity.events agent's per-record handler for a worker's services: the path is
    built at the first record (the engine and its rules exist by then), and every record goes
    through the services' ``_process`` (broker retries in place, anything else dead-lettered)."""
    path: list[IdentityPath] = []

    async def process(value: bytes | None) -> None:
        if not path:
            path.append(IdentityPath.for_engine(services.engine))
        await services._process(
            "identity-events", path[0].handle_batch, value, path[0].topic, path[0].dlq
        )

    return process


def identity_agent(
    services: _Services,
) -> tuple[str, str, Callable[[bytes | None], Awaitable[None]]]:
    """The worker's identity.events agent: (agent name, topic, per-record handler)."""
    topic: str = services.engine.topics.identity_events
    return "accessguard.identity-events", topic, identity_processor(services)
