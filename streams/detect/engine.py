"""The rule engine: compiled rules run against canonical login events and leak subjects.

:class:`RuleEngine` evaluates one :class:`~streams.model.records.LoginEvent` at a time against the
registry (what people declared), the lifecycle :class:`~streams.model.state.StateStore` (what the
product learned: offboarded, grants removed) and a :class:`~streams.detect.state.RuleState`
(windows, last location, known countries and devices). It is a pure function of those inputs
and the event: no clock, no I/O, so ``accessguard replay``, ``accessguard rules test`` and the
workers agree. Conditions were compiled into closures once, at load, so evaluation does no YAML,
no regex compilation and no attribute lookups by name; each kind's check (windows, velocity,
first_seen, sequences) lives in :mod:`streams.detect.checks`.

Responses are built by :mod:`streams.detect.responses` with the offboarding path's helpers
(:mod:`streams.decide.responses`) and carry the cause ``rule:<rule id>:<event id>``, so a
redelivered event yields the same idempotency keys and the executor's ledger skips what is done.

An exception inside one rule never becomes "no alert": it is caught per rule, counted in
:attr:`RuleEngine.errors` and returned as a :class:`~streams.detect.model.Detection` with
``error`` set, for the caller to dead-letter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from streams.detect.checks import Compiled, haversine_km
from streams.detect.detections import alerted, detection, route_of
from streams.detect.exceptions import Suppressor
from streams.detect.fields import Ctx, LeakCtx, LeakSubject
from streams.detect.model import Detection, Rule, RuleSet
from streams.detect.responses import respond, respond_leak
from streams.detect.state import RuleState
from streams.model.access import shared_credential_holders
from streams.model.records import (
    LeakRecord,
    LoginEvent,
    subject_hash,
)
from streams.model.registry import Registry
from streams.model.state import StateStore
from streams.support.times import format_time

__all__ = ["RuleEngine", "haversine_km", "leak_details"]  # haversine_km: moved, still importable


def leak_details(record: LeakRecord, **more: Any) -> dict[str, Any]:
    """The details of a leak alert: the breach, the hashed subject (never the e-mail), the
    cause, and whatever the caller adds."""
    return {
        "breach": record.breach,
        "source": record.source,
        "subject": record.subject,
        "breach_date": format_time(record.breach_date) if record.breach_date else None,
        "added_at": format_time(record.added_at) if record.added_at else None,
        "data_classes": list(record.data_classes),
        "password_present": record.password_present,
        "flags": list(record.flags),
        "cause": record.cause,
        **more,
    }


class RuleEngine:
    """Runs a rule set. ``providers`` maps each configured provider name to its type (okta,
    graph, google, generic, secret_store), exactly as :func:`streams.decide.hr.decide_hr`
    takes it. Deprecated rules are not run (``include_deprecated`` is for rule tests)."""

    def __init__(
        self,
        ruleset: RuleSet,
        providers: Mapping[str, str],
        *,
        include_deprecated: bool = False,
    ) -> None:
        self.ruleset = ruleset
        self.providers = dict(providers)
        self.rules = tuple(
            r for r in ruleset.rules if include_deprecated or r.status != "deprecated"
        )
        self._compiled = tuple(Compiled(r) for r in self.rules if "login" in r.inputs)
        self._leak = tuple(Compiled(r) for r in self.rules if r.leak)
        self.suppressor = Suppressor(ruleset.exceptions)  # wraps only rules with an exception
        self.suppressor.guard(self._compiled)
        #: (match, group, check, compiled) per login rule, bound once (after the guard wrapped
        #: the checks it wraps): the loop in evaluate() runs 14 times per login event, and
        #: three attribute loads each cost ~0.5 us per event
        self._loop = tuple((c.match, c.group, c.check, c) for c in self._compiled)
        #: rule id -> exceptions caught while evaluating it (for a metric).
        self.errors: dict[str, int] = {r.id: 0 for r in self.rules}

    @property
    def horizons(self) -> dict[str, float]:
        """Rule id -> seconds of state it needs; pass to :meth:`RuleState.expire`."""
        return {r.id: r.horizon for r in self.rules}

    def evaluate(
        self,
        event: LoginEvent,
        registry: Registry,
        lifecycle: StateStore,
        state: RuleState,
        *,
        home: Callable[[str], bool] | None = None,
        deferred: list[tuple[str, str]] | None = None,
        groups: frozenset[str] | None = None,
    ) -> list[Detection]:
        """Every rule's conclusion about ``event`` (only rules that fired or failed appear).

        Updates ``state``. Deterministic: the same inputs give the same detections, actions
        and idempotency keys, so a redelivered event is harmless downstream.

        Keyed (one worker among several): a rule whose group key is not at ``home`` (another
        worker's state) is appended to ``deferred`` as ``(group_by, key)`` instead of being
        checked; ``groups`` limits evaluation to the rules grouped by those fields.
        """
        ctx = Ctx(event, registry, lifecycle)
        out: list[Detection] = []
        for match, group, check, compiled in self._loop:
            if groups is not None and compiled.rule.group_by not in groups:
                continue
            try:
                if not match(ctx):
                    continue
                key = group(ctx)
                if key is None:
                    continue
                if home is not None and not home(key):
                    if deferred is not None:
                        deferred.append((compiled.rule.group_by, key))
                    continue
                hits = check(ctx, key, state)
                if hits:
                    for subject, evidence in hits:
                        sctx = ctx if subject is event else Ctx(subject, registry, lifecycle)
                        out.append(self._detect(compiled.rule, sctx, key, evidence, state))
            except Exception as exc:  # noqa: BLE001 - reported per rule, never swallowed
                out.append(self._error(compiled.rule, event, exc))
        return out

    def flush(
        self,
        now: datetime,
        registry: Registry,
        lifecycle: StateStore,
        state: RuleState,
        *,
        home: Callable[[str], bool] | None = None,
    ) -> list[Detection]:
        """Fire every absent-sequence rule whose window has passed by ``now`` without the
        expected follow-up (call from a timer; ``evaluate`` also fires them for the group key
        of each new event)."""
        ts = now.timestamp()
        out: list[Detection] = []
        absent = [c for c in self._compiled if c.rule.kind == "sequence" and c.absent]
        if not absent:
            return out
        for key in list(state._keys):
            if home is not None and not home(key):
                continue  # another worker's key: it fires there (the copy here is a replica)
            for compiled in absent:
                try:
                    slots = state._keys.get(key) or {}
                    slot = slots.get(compiled.id)
                    if not slot or not slot.get("pending"):
                        continue
                    state._dirty.add(key)
                    for subject, evidence in compiled._due(slot, ts):
                        sctx = Ctx(subject, registry, lifecycle)
                        out.append(self._detect(compiled.rule, sctx, key, evidence, state))
                except Exception as exc:  # noqa: BLE001 - reported per rule, never swallowed
                    out.append(self._error(compiled.rule, None, exc))
        return out

    # ---- leak subjects ---------------------------------------------------------------------

    @property
    def leak_rules(self) -> tuple[Rule, ...]:
        """The rules evaluated on leak subjects (``inputs: [leak]``)."""
        return tuple(c.rule for c in self._leak)

    def evaluate_leak(
        self, subject: LeakSubject, registry: Registry, lifecycle: StateStore
    ) -> list[Detection]:
        """Every leak rule's conclusion about one matched subject (only rules that fired or
        failed appear). Stateless: leak rules are ``match`` rules and their alerts are
        deduplicated by the record's cause, so a re-import gives the same keys."""
        ctx = LeakCtx(subject, registry, lifecycle)
        out: list[Detection] = []
        for compiled in self._leak:
            rule = compiled.rule
            try:
                if compiled.match(ctx):
                    out.append(self._detect_leak(rule, ctx))
            except Exception as exc:  # noqa: BLE001 - reported per rule, never swallowed
                self.errors[rule.id] = self.errors.get(rule.id, 0) + 1
                out.append(
                    Detection(
                        rule=rule.id,
                        severity=rule.severity,
                        group_key=subject.id,
                        title=f"rule {rule.id} failed",
                        why=rule.why or rule.description,
                        event_id=subject.event_id,
                        identity=subject.id if subject.kind == "identity" else None,
                        error=f"{type(exc).__name__}: {exc}"[:500],
                    )
                )
        return out

    def _detect_leak(self, rule: Rule, ctx: LeakCtx) -> Detection:
        record, subject = ctx.record, ctx.subject
        why = rule.why or rule.description
        actions, notes, dropped = respond_leak(rule, ctx, self.providers)
        flags_note = f" [{', '.join(record.flags)}]" if record.flags else ""
        done = ", ".join(sorted({f"{a.action}@{a.provider}" for a in actions})) or "nothing"
        if dropped:
            done += f" (rule is {rule.status}: {', '.join(dropped)} not executed)"
        missing = f" ({'; '.join(notes)})" if notes else ""
        route = route_of(rule)
        more: dict[str, Any]
        if subject.kind == "identity":
            ident = ctx.identity()
            name = ident.name if ident is not None else subject.id
            title = f"{rule.title}: {name} in breach {record.breach}{flags_note}: {done}{missing}"
            more = {"identity": subject.id, "roles": ctx.roles()}
        else:
            account = ctx.account()
            shared = account.shared_credential if account is not None else None
            where = (
                f"{account.platform} {account.handle} ({account.id})"
                if account is not None
                else subject.id
            )
            holders = shared_credential_holders(ctx.registry, ctx.lifecycle, subject.id)
            title = f"{rule.title}: {where} in breach {record.breach}{flags_note}: {done}{missing}"
            if record.credential_exposed and shared is not None:
                title += (
                    f"; change the password behind {shared.ref}; "
                    f"{len(holders)} holder(s) must re-enrol"
                )
            more = {
                "account": subject.id,
                "credential_ref": shared.ref if shared is not None else None,
                "holders": holders,
            }
        details = leak_details(
            record,
            rule=rule.id,
            rule_status=rule.status,
            event_id=subject.event_id,
            subject_kind=subject.kind,
            **more,
            actions=[f"{a.action}@{a.provider}" for a in actions],
            route=route or "none",
        )
        return alerted(
            rule,
            dedup_key=f"{record.cause}:{subject.id}:{rule.id}",
            key=subject.id,
            title=title,
            why=why,
            event_id=subject.event_id,
            identity=subject.id if subject.kind == "identity" else None,
            details=details,
            actions=actions,
            notes=notes,
            dropped=dropped,
        )

    # ---- building detections -------------------------------------------------------------

    def _error(self, rule: Rule, event: LoginEvent | None, exc: Exception) -> Detection:
        self.errors[rule.id] = self.errors.get(rule.id, 0) + 1
        return Detection(
            rule=rule.id,
            severity=rule.severity,
            group_key="",
            title=f"rule {rule.id} failed",
            why=rule.why or rule.description,
            event_id=event.event_id if event is not None else "",
            identity=event.identity if event is not None else None,
            error=f"{type(exc).__name__}: {exc}"[:500],
        )

    def _detect(
        self,
        rule: Rule,
        ctx: Ctx,
        key: str,
        evidence: dict[str, Any],
        state: RuleState,
    ) -> Detection:
        event = ctx.event
        why = rule.why or rule.description
        bucket = event.event_id
        deduplicated = False
        if rule.dedup > 0:
            slot = state.slot(key, rule.id)
            last = slot.get("alert")
            # either side: a late event (routed, backlog) near the last alert is that incident
            if last is not None and abs(ctx.ts - float(last)) < rule.dedup:
                deduplicated = True
            else:
                slot["alert"] = max(ctx.ts, float(last)) if last is not None else ctx.ts
                slot["last"] = max(ctx.ts, slot.get("last", ctx.ts))
            bucket = str(int(ctx.ts // rule.dedup))
        who = event.identity or f"unknown principal {subject_hash(event.principal)}"
        account = ctx.account()
        where = (
            f"{account.platform} {account.handle} ({account.id})"
            if account is not None
            else (event.target_account or event.target or "")
        )  # a login to no account at all (an IdP sign-in) names none, not "no brand account"
        title = f"{rule.title}: {who}" + (f" on {where}" if where else "")
        if deduplicated:
            return Detection(
                rule=rule.id,
                severity=rule.severity,
                group_key=key,
                title=title,
                why=why,
                event_id=event.event_id,
                identity=event.identity,
                evidence=evidence,
                deduplicated=True,
            )
        actions, notes, dropped = respond(rule, ctx, self.providers)
        details: dict[str, Any] = {
            "rule": rule.id,
            "rule_status": rule.status,
            "event_id": event.event_id,
            "time": format_time(event.time),
            "vendor": event.vendor,
            "identity": event.identity,
            "subject": subject_hash(event.principal),
            "account": event.target_account,
            "target": event.target,
            "ip": event.ip,
            "country": event.geo.country if event.geo else None,
            "what_happened": f"{rule.title} ({event.outcome} {event.event_type})",
            "why_it_matters": why,
            "evidence": evidence,
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
            evidence=evidence,
        )
