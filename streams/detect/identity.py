"""Evaluating identity-event rules (``inputs: [identity_event]``): the pure half of the
identity path, shared by the worker's agent (:mod:`streams.runtime.identitypath`),
``accessguard rules test`` and replay.

Identity rules are ``match`` rules over :data:`~streams.detect.identity_fields.IDENTITY_FIELDS`,
grouped by the event's subject (its identity, else its principal). Their ``dedup`` window is
kept per rule and subject: by the worker and replay in the rules'
:class:`~streams.detect.state.RuleState` (:class:`StateDedup`: the slot's ``alert`` time, the
way login rules keep theirs), so it is checkpointed with the login rules' state and a restart
or a rebalance does not alert again within the window; ``accessguard rules test`` uses a
:class:`DedupMemory` per case. Events are keyed by the subject's identity like logins, so the
worker that owns a person's logins owns their identity events and their dedup state.
Responses are built by the login rules' :func:`~streams.detect.responses.respond` (cause
``rule:<rule id>:<event id>``), so a redelivered event repeats its idempotency keys.

Resolution: :func:`resolve_subjects` fills ``identity`` and ``actor_identity`` from the
registry (the vendor's user id at that vendor, the login name at that vendor, then any alias or
e-mail), the way logins are resolved; an unknown subject stays None.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol

from streams.detect.exceptions import Suppressor
from streams.detect.identity_fields import IDENTITY_FIELDS, IdentityCtx
from streams.detect.model import Detection, Rule, RuleSet, all_of, compile_condition
from streams.detect.responses import respond
from streams.detect.state import RuleState
from streams.model import kinds
from streams.model.identity import IdentityEvent
from streams.model.records import Alert, idempotency_key, subject_hash
from streams.model.registry import Identity, Registry
from streams.model.state import StateStore
from streams.support.times import format_time

IDENTITY_INPUT = "identity_event"
#: Entries a DedupMemory keeps before it forgets the oldest (one per rule and subject).
MAX_DEDUP_ENTRIES = 100_000


def _resolve(registry: Registry, vendor: str, name: str | None, vid: str | None) -> str | None:
    found: Identity | None = None
    if vendor in kinds.ALIAS_VENDORS:
        if vid:
            found = registry.resolve_alias(vid, vendor)
        if found is None and name:
            found = registry.resolve_alias(name, vendor)
    if found is None and name:
        found = registry.resolve_alias(name)
    return found.id if found is not None else None


def resolve_subjects(event: IdentityEvent, registry: Registry) -> IdentityEvent:
    """The event with ``identity`` and ``actor_identity`` resolved (kept when already set)."""
    ident = event.identity or _resolve(registry, event.vendor, event.principal, event.principal_id)
    actor = event.actor_identity
    if actor is None and event.actor is not None:
        actor = _resolve(registry, event.vendor, event.actor, event.actor_id)
    if ident == event.identity and actor == event.actor_identity:
        return event
    return replace(event, identity=ident, actor_identity=actor)


class Dedup(Protocol):
    """Where identity rules remember when each (rule, subject) last alerted."""

    def seen(self, rule: str, key: str, ts: float, window: float) -> bool: ...


class StateDedup:
    """Dedup times in a :class:`RuleState` (slot ``alert`` and ``last`` of the rule under the
    subject's key, as login rules keep them): checkpointed with it, expired by the rule's
    horizon (its dedup window). Touched only when a rule fired, never per event."""

    def __init__(self, state: RuleState) -> None:
        self.state = state

    def seen(self, rule: str, key: str, ts: float, window: float) -> bool:
        """As :meth:`DedupMemory.seen`."""
        slot = self.state.slot(key, rule)
        last = slot.get("alert")
        if last is not None and abs(ts - float(last)) < window:
            return True
        slot["alert"] = ts if last is None else max(ts, float(last))
        slot["last"] = max(ts, float(slot.get("last", ts)))
        return False


class DedupMemory:
    """When each (rule, subject) last alerted, in event time; bounded (one rule test case)."""

    def __init__(self, max_entries: int = MAX_DEDUP_ENTRIES) -> None:
        self.last: dict[tuple[str, str], float] = {}
        self.max_entries = max_entries

    def seen(self, rule: str, key: str, ts: float, window: float) -> bool:
        """True when ``rule`` alerted for ``key`` within ``window`` seconds of ``ts`` (either
        side: a late event near the last alert is that incident); else remembers ``ts``."""
        last = self.last.get((rule, key))
        if last is not None and abs(ts - last) < window:
            return True
        if len(self.last) >= self.max_entries:
            # forget the oldest half: a dedup window is minutes to hours, not a history
            keep = sorted(self.last.items(), key=lambda kv: kv[1])[len(self.last) // 2 :]
            self.last = dict(keep)
        self.last[(rule, key)] = ts if last is None else max(ts, last)
        return False


class IdentityRules:
    """The identity-event rules of a rule set, compiled once."""

    def __init__(
        self, ruleset: RuleSet, providers: Mapping[str, str], *, include_deprecated: bool = False
    ) -> None:
        self.providers = dict(providers)
        self.rules = tuple(
            r
            for r in ruleset.rules
            if IDENTITY_INPUT in r.inputs and (include_deprecated or r.status != "deprecated")
        )
        self._compiled = tuple(
            (r, all_of(tuple(compile_condition(c, IDENTITY_FIELDS) for c in r.conditions)))
            for r in self.rules
        )
        self.errors: dict[str, int] = {r.id: 0 for r in self.rules}
        #: rules/exceptions.yaml for identity rules: asked only once a rule matched
        self.suppressor = Suppressor(ruleset.exceptions)
        self.suppressor.bind(r.id for r in self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def evaluate(
        self,
        event: IdentityEvent,
        registry: Registry,
        lifecycle: StateStore,
        dedup: Dedup,
    ) -> list[Detection]:
        """Every identity rule's conclusion about ``event`` (only rules that fired or failed
        appear). ``event`` should be resolved (:func:`resolve_subjects`)."""
        ctx = IdentityCtx(event, registry, lifecycle)
        out: list[Detection] = []
        for rule, match in self._compiled:
            try:
                if match(ctx) and not self.suppressor.suppressed(rule.id, event):
                    out.append(self._detect(rule, ctx, dedup))
            except Exception as exc:  # noqa: BLE001 - reported per rule, never swallowed
                self.errors[rule.id] = self.errors.get(rule.id, 0) + 1
                out.append(
                    Detection(
                        rule=rule.id,
                        severity=rule.severity,
                        group_key="",
                        title=f"rule {rule.id} failed",
                        why=rule.why or rule.description,
                        event_id=event.event_id,
                        identity=event.identity,
                        error=f"{type(exc).__name__}: {exc}"[:500],
                    )
                )
        return out

    def _detect(self, rule: Rule, ctx: IdentityCtx, dedup: Dedup) -> Detection:
        event: IdentityEvent = ctx.event  # type: ignore[assignment]  # set by IdentityCtx
        why = rule.why or rule.description
        key = event.partition_key
        bucket = event.event_id
        ident = ctx.identity()
        who = (
            f"{ident.name} ({ident.id})"
            if ident is not None
            else f"unknown principal {subject_hash(event.principal)}"
        )
        title = f"{rule.title}: {who}"
        if rule.dedup > 0:
            if dedup.seen(rule.id, key, ctx.ts, float(rule.dedup)):
                return Detection(
                    rule=rule.id,
                    severity=rule.severity,
                    group_key=key,
                    title=title,
                    why=why,
                    event_id=event.event_id,
                    identity=event.identity,
                    deduplicated=True,
                )
            bucket = str(int(ctx.ts // rule.dedup))
        actions, notes, dropped = respond(rule, ctx, self.providers)
        if actions:
            done = "accessguard requested " + ", ".join(
                sorted({f"{a.action}@{a.provider}" for a in actions})
            )
        elif dropped:
            done = f"nothing: rule is {rule.status}, so {', '.join(dropped)} was not executed"
        elif notes:
            done = f"nothing: its response could not be carried out ({'; '.join(notes)})"
        else:
            done = "nothing automatic: a human decides"
        route = "page" if "page" in rule.response else "notify" if "notify" in rule.response else ""
        by = (
            "the vendor itself"
            if event.actor is None
            else event.actor_identity or f"principal {subject_hash(event.actor)}"
        )
        details: dict[str, Any] = {
            "rule": rule.id,
            "rule_status": rule.status,
            "event_id": event.event_id,
            "time": format_time(event.time),
            "vendor": event.vendor,
            "type": event.type,
            "vendor_type": event.vendor_type,
            "identity": event.identity,
            "subject": subject_hash(event.principal),
            "actor": by,
            "by_other": event.by_other,
            "ip": event.ip,
            "country": event.geo.country if event.geo else None,
            "app": event.app,
            "privilege": event.privilege,
            "reason": event.reason,
            "what_happened": f"{rule.title} ({event.vendor} {event.vendor_type} by {by})",
            "why_it_matters": why,
            "done": done,
            "actions": [f"{a.action}@{a.provider}" for a in actions],
            "route": route or "none",
        }
        if notes:
            details["notes"] = notes
        if dropped:
            details["dropped_response"] = list(dropped)
        group_part = key if not key.startswith("principal:") else idempotency_key(key)[:16]
        alert = Alert(
            severity=rule.severity,
            rule=rule.id,
            identity=event.identity,
            dedup_key=f"{rule.id}:{group_part[:120]}:{bucket}",
            title=title[:1000],
            details=details,
            runbook=rule.runbook,
        )
        return Detection(
            rule=rule.id,
            severity=rule.severity,
            group_key=key,
            title=title,
            why=why,
            event_id=event.event_id,
            identity=event.identity,
            actions=tuple(actions),
            alerts=(alert,),
            dropped=dropped,
        )
