"""The rule model: what a validated rule is (:class:`Rule`, its conditions and inline test
cases), the set of rules loaded from one directory (:class:`RuleSet`) and what one rule
concluded about one event (:class:`Detection`); :func:`compile_condition` turns a condition
into a predicate over :class:`~streams.detect.fields.Ctx`.

Rules are data (docs/architecture.md, decision 6): one YAML file per rule in ``rules/``, read with a
strict schema by :func:`streams.detect.load.load_rules`.

Lifecycle: ``deprecated`` rules do not run; ``staged`` rules alert and never act (declaring an
action on one is a load error, and the engine drops any action a staged rule carries anyway);
only ``stable`` rules respond.

Rule schema (one file per rule, named ``<id>.yaml``)::

Rule schema (one file per rule, named ``<id>.yaml``)::

    id: brute_force_identity          # == file stem; [a-z][a-z0-9_]*
    title: Brute force against one identity
    description: ...                  # what the rule detects
    why: ...                          # optional: why it matters, one sentence
    status: stable                    # staged | stable | deprecated
    severity: high                    # info | low | medium | high | critical
    runbook: docs/runbooks/brute-force-identity.md
    falsepositives: [a user who forgot a password]
    inputs: [login]                   # login (hr and leak are reserved)
    kind: threshold                   # match | threshold | velocity | first_seen | sequence
    group_by: identity                # optional, default identity (unresolved: the principal)
    conditions:                       # all must hold; events that fail them are ignored
      - {field: outcome, op: eq, value: failure}
    threshold: {window: 600, count: 10, distinct: principal}   # the block named after kind
    dedup: 3600                       # seconds: same rule + group key -> one alert (0: none)
    response: [notify]                # revoke_sessions remove_grant force_mfa_reenrolment
                                      # rotate_shared_credential page notify
    tests:                            # at least one fire and one no_fire
      - name: ten failures in ten minutes
        expect: fire                  # fire | no_fire
        lifecycle: {alice: offboarded}          # optional lifecycle status per identity
        registry: registry.yaml                 # optional, under <rules dir>/tests/
        actions: [revoke_sessions]              # optional: the exact set of action kinds
        events:                                 # canonical LoginEvent fields; `at` is
          - {identity: alice, outcome: failure, at: 0}   # seconds after 2026-03-02T09:00Z

Windows are half-open: an event exactly ``window`` seconds older than another is outside it.

Leak rules (``inputs: [leak]``) decide the responses to leaked credentials
(:func:`streams.decide.leaks.decide_leak` matches a LeakRecord against the registry, drops stale,
offboarded and grant-less subjects, then asks
:meth:`streams.detect.engine.RuleEngine.evaluate_leak` about each remaining
:class:`~streams.detect.fields.LeakSubject`). They differ from login rules in this:

* ``kind: match`` only, no ``group_by``, ``dedup: 0`` (alerts are deduplicated by the
  record's cause, breach and subject: ``leak:<breach>:<subject hash>:<subject id>:<rule id>``);
* conditions read :data:`~streams.detect.fields.LEAK_FIELDS`: ``leak.breach``, ``leak.source``,
  ``leak.data_classes`` and ``leak.flags`` (lists: ``contains``/``exists``),
  ``leak.password_present``, ``leak.credential`` (passwords, hashes, tokens or a stealer log),
  ``subject.kind`` (identity | shared_account) and ``identity.known|status|kind|max_role``,
  ``account.known|criticality|platform|shared`` (the shared account's, for a shared login);
* ``response`` from revoke_sessions, force_mfa_reenrolment (identities),
  rotate_shared_credential (shared logins with TOTP), page, notify; actions carry the
  record's cause, exactly as the leak path always built them, so re-imports repeat the keys;
* test events are ``{leak: {breach, data_classes, password_present, breach_date, added,
  flags, source}, subject: {identity: ID} | {account: ID}}``; ``lifecycle`` and
  ``registry`` work as for login rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from streams.detect.exceptions import RuleException
from streams.detect.fields import FIELDS, Ctx, FieldSpec, LeakSubject
from streams.model.identity import IdentityEvent
from streams.model.records import ROLE_RANK, Action, Alert, LoginEvent

STATUSES: tuple[str, ...] = ("staged", "stable", "deprecated")
KINDS: tuple[str, ...] = ("match", "threshold", "velocity", "first_seen", "sequence")
#: Input kinds a rule may name; ``login``, ``leak`` and ``identity_event`` (identity-security
#: events: :mod:`streams.detect.identity`) are evaluated (``hr`` is reserved).
INPUTS: tuple[str, ...] = ("login", "hr", "leak", "identity_event")
SUPPORTED_INPUTS: frozenset[str] = frozenset({"login", "leak", "identity_event"})
#: Responses a leak rule may declare (remove_grant needs a login's target account).
LEAK_RESPONSES: tuple[str, ...] = (
    "revoke_sessions",
    "force_mfa_reenrolment",
    "expire_password",
    "revoke_tokens",
    "disable_account",
    "rotate_shared_credential",
    "page",
    "notify",
)
OPS: tuple[str, ...] = ("eq", "ne", "in", "not_in", "exists", "gte", "lte", "contains", "matches")
RESPONSES: tuple[str, ...] = (
    "revoke_sessions",
    "remove_grant",
    "force_mfa_reenrolment",
    "expire_password",
    "revoke_tokens",
    "disable_account",
    "rotate_shared_credential",
    "page",
    "notify",
)
#: Responses that only route the alert; every other response is an action at a provider.
ALERT_ONLY: frozenset[str] = frozenset({"page", "notify"})
EXPECTS: tuple[str, ...] = ("fire", "no_fire")


Predicate = Callable[[Ctx], bool]


@dataclass(frozen=True, slots=True)
class Condition:
    """``field op value``; :func:`compile_condition` turns it into a predicate."""

    field: str
    op: str
    value: Any = None
    line: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "op": self.op, "value": self.value}


def compile_condition(cond: Condition, fields: Mapping[str, FieldSpec] = FIELDS) -> Predicate:
    """A closure for one (already validated) condition. A missing value (None) never
    satisfies eq/in/gte/lte/contains/matches and always satisfies ne/not_in. ``fields`` is
    the table of the rule's input (:data:`FIELDS` for logins, :data:`LEAK_FIELDS`)."""
    spec = fields[cond.field]
    get = spec.getter
    value = cond.value
    op = cond.op
    if op == "eq":
        return lambda c: bool(get(c) == value)
    if op == "ne":
        return lambda c: bool(get(c) != value)
    if op in ("in", "not_in"):
        members = frozenset(value)
        if op == "in":
            return lambda c: get(c) in members
        return lambda c: get(c) not in members
    if op == "exists":
        if value:
            return lambda c: get(c) is not None
        return lambda c: get(c) is None
    if op in ("gte", "lte"):
        if spec.type == "role":
            rank = ROLE_RANK[value]
            if op == "gte":
                return lambda c: (r := get(c)) is not None and ROLE_RANK[r] >= rank
            return lambda c: (r := get(c)) is not None and ROLE_RANK[r] <= rank
        if op == "gte":
            return lambda c: (v := get(c)) is not None and v >= value
        return lambda c: (v := get(c)) is not None and v <= value
    if op == "contains":
        return lambda c: (v := get(c)) is not None and value in v
    if op == "matches":
        pattern = re.compile(value)
        return lambda c: (v := get(c)) is not None and pattern.search(v) is not None
    raise ValueError(f"unknown op {op!r}")  # load validation makes this unreachable


def all_of(preds: tuple[Predicate, ...]) -> Predicate:
    if not preds:
        return lambda c: True
    if len(preds) == 1:
        return preds[0]

    def check(c: Ctx) -> bool:
        # an explicit loop: all() over a generator costs ~0.3 us more per rule and event
        for p in preds:  # noqa: SIM110
            if not p(c):
                return False
        return True

    return check


@dataclass(frozen=True, slots=True)
class RuleTest:
    """One inline test case: events in order, and whether the rule must fire."""

    name: str
    expect: str
    events: tuple[LoginEvent | LeakSubject | IdentityEvent, ...]
    lifecycle: Mapping[str, str] = field(default_factory=dict)
    registry: str | None = None
    actions: tuple[str, ...] | None = None
    flush_at: datetime | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class Rule:
    """A validated rule. ``params`` holds the kind's block (see the module docstring)."""

    id: str
    title: str
    description: str
    status: str
    severity: str
    runbook: str
    kind: str
    falsepositives: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ("login",)
    conditions: tuple[Condition, ...] = ()
    group_by: str = "identity"
    dedup: float = 0.0
    response: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    tests: tuple[RuleTest, ...] = ()
    why: str = ""
    source: str = ""
    line: int = 1

    @property
    def actions(self) -> tuple[str, ...]:
        """Responses that act at a provider (not page/notify)."""
        return tuple(r for r in self.response if r not in ALERT_ONLY)

    @property
    def horizon(self) -> float:
        """Seconds of history this rule's state needs (older state may be dropped)."""
        p = self.params
        return max(
            float(self.dedup),
            float(p.get("window", 0.0)),
            float(p.get("lookback_days", 0.0)) * 86400.0,
            86400.0 if self.kind == "velocity" else 0.0,
        )

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def leak(self) -> bool:
        """Evaluated on leak subjects (``inputs: [leak]``) rather than login events."""
        return "leak" in self.inputs


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Every rule loaded from one directory, in file-name order, with the directory's rule
    exceptions (:mod:`streams.detect.exceptions`)."""

    rules: tuple[Rule, ...]
    directory: Path | None = None
    exceptions: tuple[RuleException, ...] = ()

    def get(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    def __len__(self) -> int:
        return len(self.rules)


@dataclass(frozen=True, slots=True)
class Detection:
    """What one rule concluded about one event.

    ``alerts`` and ``actions`` are empty when the detection was ``deduplicated`` (the same
    rule already alerted for the same group key within its dedup window) or when ``error`` is
    set (the rule raised: dead-letter the event with that reason and count it).
    """

    rule: str
    severity: str
    group_key: str
    title: str
    why: str
    event_id: str
    identity: str | None
    actions: tuple[Action, ...] = ()
    alerts: tuple[Alert, ...] = ()
    evidence: Mapping[str, Any] = field(default_factory=dict)
    deduplicated: bool = False
    #: Responses a non-stable rule declared and the engine did not run.
    dropped: tuple[str, ...] = ()
    error: str | None = None

    @property
    def kind(self) -> str:
        return "error" if self.error is not None else "detection"

    def replay_view(self) -> dict[str, Any]:
        return {
            "type": "detection" if self.error is None else "rule_error",
            "rule": self.rule,
            "severity": self.severity,
            "event_id": self.event_id,
            "identity": self.identity,
            "deduplicated": self.deduplicated,
            "actions": [a.action for a in self.actions],
            "error": self.error,
        }


def describe(rules: Iterable[Rule]) -> list[dict[str, Any]]:
    """A short JSON-able listing (id, status, severity, kind, response) for CLIs and docs."""
    return [
        {
            "id": r.id,
            "status": r.status,
            "severity": r.severity,
            "kind": r.kind,
            "response": list(r.response),
        }
        for r in rules
    ]
