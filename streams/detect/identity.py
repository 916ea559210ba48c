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

Sequences across inputs: a login ``sequence`` rule with ``first_input: identity_event``
(``admin_password_reset_then_new_country``) has its ``first`` conditions evaluated here, over
identity fields; a match is recorded in the login rules' state under the subject's key
(:meth:`IdentityRules.mark`: the time, and with ``new: <field>`` the values the first_seen
rules on that field knew for the subject by then), and the login engine follows it up
(:mod:`streams.detect.checks`). A login of a subject with nothing recorded costs that rule one
dict lookup.

Resolution: :func:`resolve_subjects` fills ``identity`` and ``actor_identity`` from the
registry (the vendor's user id at that vendor, the login name at that vendor, then any alias or
e-mail), the way logins are resolved; an unknown subject stays None.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from streams.detect.detections import detection
from streams.detect.exceptions import Suppressor
from streams.detect.identity_fields import IDENTITY_FIELDS, IdentityCtx
from streams.detect.model import Detection, Rule, RuleSet, all_of, compile_condition
from streams.detect.responses import respond
from streams.detect.state import RuleState
from streams.model import kinds
from streams.model.identity import IdentityEvent
from streams.model.records import subject_hash
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
        self._marks = tuple(
            self._marker(r, ruleset, include_deprecated)
            for r in ruleset.rules
            if r.kind == "sequence"
            and r.params.get("first_input") == IDENTITY_INPUT
            and (include_deprecated or r.status != "deprecated")
        )
        #: rules/exceptions.yaml for identity rules: asked only once a rule matched
        self.suppressor = Suppressor(ruleset.exceptions)
        self.suppressor.bind(r.id for r in self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    @staticmethod
    def _marker(
        rule: Rule, ruleset: RuleSet, include_deprecated: bool
    ) -> tuple[Rule, Callable[[Any], bool], tuple[str, ...]]:
        """A login sequence whose first event is an identity event: its ``first`` compiled
        over identity fields, and the first_seen rules that learn its ``new`` field."""
        first = all_of(tuple(compile_condition(c, IDENTITY_FIELDS) for c in rule.params["first"]))
        field = rule.params.get("new")
        learners = tuple(
            r.id
            for r in ruleset.rules
            if field is not None
            and r.kind == "first_seen"
            and r.params.get("field") == field
            and (include_deprecated or r.status != "deprecated")
        )
        return rule, first, learners

    def mark(self, event: IdentityEvent, ctx: IdentityCtx, state: RuleState) -> list[Detection]:
        """Record ``event`` as the first event of every login sequence it starts (slot
        ``firsts`` of that rule under the subject's key, with the values its ``new`` field
        was known by then), for the login rules to follow up (streams.detect.checks).
        Returns the rules that failed, as error detections."""
        failed: list[Detection] = []
        for rule, first, learners in self._marks:
            try:
                if first(ctx):
                    self._record(rule, learners, event, ctx, state)
            except Exception as exc:  # noqa: BLE001 - reported per rule, never swallowed
                failed.append(self._error(rule, event, exc))
        return failed

    @staticmethod
    def _record(
        rule: Rule,
        learners: tuple[str, ...],
        event: IdentityEvent,
        ctx: IdentityCtx,
        state: RuleState,
    ) -> None:
        key, t = event.partition_key, ctx.ts
        slot = state.slot(key, rule.id)
        firsts: list[float] = slot.setdefault("firsts", [])
        bisect.insort(firsts, t)
        del firsts[:-1]  # one first event: the latest one restarts the window
        slot["last"] = max(t, float(slot.get("last", t)))
        if rule.params.get("new"):
            slot["known"] = state.learned(key, learners)

    def evaluate(
        self,
        event: IdentityEvent,
        registry: Registry,
        lifecycle: StateStore,
        dedup: Dedup,
        state: RuleState | None = None,
    ) -> list[Detection]:
        """Every identity rule's conclusion about ``event`` (only rules that fired or failed
        appear). ``event`` should be resolved (:func:`resolve_subjects`). With ``state`` (the
        login rules' state) the event also starts the login sequences it is the first event
        of (:meth:`mark`)."""
        ctx = IdentityCtx(event, registry, lifecycle)
        out: list[Detection] = []
        if self._marks and state is not None:
            out.extend(self.mark(event, ctx, state))
        for rule, match in self._compiled:
            try:
                if match(ctx) and not self.suppressor.suppressed(rule.id, event):
                    out.append(self._detect(rule, ctx, dedup))
            except Exception as exc:  # noqa: BLE001 - reported per rule, never swallowed
                out.append(self._error(rule, event, exc))
        return out

    def _error(self, rule: Rule, event: IdentityEvent, exc: Exception) -> Detection:
        self.errors[rule.id] = self.errors.get(rule.id, 0) + 1
        return Detection(
            rule=rule.id,
            severity=rule.severity,
            group_key="",
            title=f"rule {rule.id} failed",
            why=rule.why or rule.description,
            event_id=event.event_id,
            identity=event.identity,
            error=f"{type(exc).__name__}: {exc}"[:500],
        )

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
        }
        return detection(
            rule,
            key=key,
            bucket=bucket,
            title=title,
            why=why,
            event_id=event.event_id,
            identity=event.identity,
            details=details,
            actions=actions,
            notes=notes,
            dropped=dropped,
        )
