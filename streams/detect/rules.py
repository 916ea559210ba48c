"""The rule engine: declarative YAML rules in ``rules/`` run against canonical login events.

Rules are data (ARCHITECTURE decision 6). :func:`load_rules` reads every ``rules/*.yaml``
with a strict schema and collects every problem as ``path:line: message`` before refusing to
start (:class:`~streams.support.errors.RuleError`). Conditions are compiled into closures once, at
load, so evaluation does no YAML, no regex compilation and no attribute lookups by name.

:class:`RuleEngine` evaluates one :class:`~streams.model.records.LoginEvent` at a time against the
registry (what people declared), the lifecycle :class:`~streams.model.state.StateStore` (what the
product learned: offboarded, grants removed) and a :class:`RuleState` (windows, last location,
known countries and devices). It is a pure function of those inputs and the event: no clock,
no I/O, so ``accessguard replay``, ``accessguard rules test`` and the workers agree.

Lifecycle: ``deprecated`` rules do not run; ``staged`` rules alert and never act (declaring an
action on one is a load error, and the engine drops any action a staged rule carries anyway);
only ``stable`` rules respond. Responses are built with the offboarding path's helpers
(:mod:`streams.decide.hr`) and carry the cause ``rule:<rule id>:<event id>``, so a redelivered
event yields the same idempotency keys and the executor's ledger skips what is done.

An exception inside one rule never becomes "no alert": it is caught per rule, counted in
:attr:`RuleEngine.errors` and returned as a :class:`Detection` with ``error`` set, for the
caller to dead-letter.

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
offboarded and grant-less subjects, then asks :meth:`RuleEngine.evaluate_leak` about each
remaining :class:`LeakSubject`). They differ from login rules in this:

* ``kind: match`` only, no ``group_by``, ``dedup: 0`` (alerts are deduplicated by the
  record's cause, breach and subject: ``leak:<breach>:<subject hash>:<subject id>:<rule id>``);
* conditions read :data:`LEAK_FIELDS`: ``leak.breach``, ``leak.source``,
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

import bisect
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from operator import attrgetter
from pathlib import Path
from typing import Any

from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, SequenceNode

from streams.decide.hr import (
    IDP_TYPES,
    account_params,
    is_offboarded,
    secret_store,
    session_providers,
    user_ref,
)
from streams.model.records import (
    ACCESS_PATHS,
    IDENTITY_KINDS,
    IDENTITY_STATUSES,
    LEAK_FLAGS,
    LOGIN_OUTCOMES,
    LOGIN_VENDORS,
    MFA_METHODS,
    MFA_RESULTS,
    ROLE_RANK,
    ROLES,
    SEVERITIES,
    Action,
    Alert,
    LeakRecord,
    LoginEvent,
    format_time,
    idempotency_key,
    subject_hash,
)
from streams.model.registry import CRITICALITIES, Account, Grant, Identity, Registry, load_registry
from streams.model.state import IdentityState, StateStore
from streams.support.errors import RegistryError, RuleError, ValidationError
from streams.support.yamlcheck import Entry, Problems, compose, line_of

STATUSES: tuple[str, ...] = ("staged", "stable", "deprecated")
KINDS: tuple[str, ...] = ("match", "threshold", "velocity", "first_seen", "sequence")
#: Input kinds a rule may name; ``login`` and ``leak`` are evaluated (``hr`` is reserved).
INPUTS: tuple[str, ...] = ("login", "hr", "leak")
SUPPORTED_INPUTS: frozenset[str] = frozenset({"login", "leak"})
#: What a leak subject is: a registry identity or an account's shared login.
SUBJECT_KINDS: tuple[str, ...] = ("identity", "shared_account")
#: Responses a leak rule may declare (remove_grant needs a login's target account).
LEAK_RESPONSES: tuple[str, ...] = (
    "revoke_sessions",
    "force_mfa_reenrolment",
    "rotate_shared_credential",
    "page",
    "notify",
)
OPS: tuple[str, ...] = ("eq", "ne", "in", "not_in", "exists", "gte", "lte", "contains", "matches")
RESPONSES: tuple[str, ...] = (
    "revoke_sessions",
    "remove_grant",
    "force_mfa_reenrolment",
    "rotate_shared_credential",
    "page",
    "notify",
)
#: Responses that only route the alert; every other response is an action at a provider.
ALERT_ONLY: frozenset[str] = frozenset({"page", "notify"})
EXPECTS: tuple[str, ...] = ("fire", "no_fire")

_RULE_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
#: Rule tests' ``at: <seconds>`` is relative to this instant unless the case sets ``start``.
TEST_EPOCH = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
#: Providers assumed by ``accessguard rules test`` (names used by rules/tests/registry.yaml).
TEST_PROVIDERS: dict[str, str] = {
    "okta": "okta",
    "entra": "graph",
    "google": "google",
    "hootsuite": "generic",
    "meta-business": "generic",
    "vault": "secret_store",
}

# Bounds on RuleState (per key and overall); see RuleState.
MAX_KEYS = 200_000
MAX_PENDING = 16
DEFAULT_MAX_VALUES = 64
#: A PagerDuty dedup_key may hold 255 characters; longer group keys are hashed.
_MAX_GROUP_IN_KEY = 120

_EARTH_RADIUS_KM = 6371.0088

_UNSET: Any = object()


# --------------------------------------------------------------------------------------------
# Fields: canonical event fields and registry/lifecycle facts
# --------------------------------------------------------------------------------------------


class _Ctx:
    """One event and lazily computed facts about it, shared by every rule that looks."""

    __slots__ = (
        "_account",
        "_grant",
        "_identity",
        "_life",
        "_max_role",
        "_status",
        "event",
        "lifecycle",
        "registry",
        "ts",
    )

    def __init__(self, event: LoginEvent, registry: Registry, lifecycle: StateStore) -> None:
        self.event = event
        self.registry = registry
        self.lifecycle = lifecycle
        self.ts = event.time.timestamp()
        self._identity: Any = _UNSET
        self._account: Any = _UNSET
        self._grant: Any = _UNSET
        self._life: Any = _UNSET
        self._status: Any = _UNSET
        self._max_role: Any = _UNSET

    def identity(self) -> Identity | None:
        if self._identity is _UNSET:
            ident = self.event.identity
            self._identity = self.registry.identities.get(ident) if ident else None
        return self._identity  # type: ignore[no-any-return]

    def life(self) -> IdentityState | None:
        if self._life is _UNSET:
            ident = self.identity()
            self._life = self.lifecycle.identity(ident.id) if ident is not None else None
        return self._life  # type: ignore[no-any-return]

    def account(self) -> Account | None:
        if self._account is _UNSET:
            acc = self.event.target_account
            self._account = self.registry.accounts.get(acc) if acc else None
        return self._account  # type: ignore[no-any-return]

    def _effective(self, grant: Grant, life: IdentityState) -> Grant | None:
        """The grant as it stands after what the product did (removed, downgraded)."""
        if grant.account in life.removed_grants:
            return None
        lowered = life.downgraded.get(grant.account)
        if lowered is not None and ROLE_RANK[lowered] < ROLE_RANK[grant.role]:
            return replace(grant, role=lowered)
        return grant

    def grant(self) -> Grant | None:
        if self._grant is _UNSET:
            found: Grant | None = None
            ident, acc = self.event.identity, self.event.target_account
            if ident and acc:  # life() only when there is a grant to look at
                life = self.life()
                if life is not None:
                    raw = self.registry.grants.get((ident, acc))
                    found = self._effective(raw, life) if raw is not None else None
            self._grant = found
        return self._grant  # type: ignore[no-any-return]

    def status(self) -> str | None:
        """Registry status overridden by the lifecycle; offboarded in either wins."""
        if self._status is _UNSET:
            ident, life = self.identity(), self.life()
            status: str | None = None
            if ident is not None and life is not None:
                status = ident.status
                if life.status_cause is not None or life.status != "active":
                    status = life.status
                if ident.status == "offboarded":
                    status = "offboarded"
            self._status = status
        return self._status  # type: ignore[no-any-return]

    def max_role(self) -> str | None:
        if self._max_role is _UNSET:
            best: str | None = None
            ident, life = self.identity(), self.life()
            if ident is not None and life is not None:
                for raw in self.registry.grants_of(ident.id):
                    g = self._effective(raw, life)
                    if g is not None and (best is None or ROLE_RANK[g.role] > ROLE_RANK[best]):
                        best = g.role
            self._max_role = best
        return self._max_role  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class LeakSubject:
    """What a leak rule is evaluated on: one matched (LeakRecord, subject) pair, as
    :func:`streams.decide.leaks.decide_leak` produces it after matching and the newer-than-the-last-
    credential-change check. ``kind`` is ``identity`` (``id`` a registry identity) or
    ``shared_account`` (``id`` the account whose shared login appeared)."""

    record: LeakRecord
    kind: str
    id: str

    @property
    def event_id(self) -> str:
        """The record's cause and the subject: no e-mail address, stable on a re-import."""
        return f"{self.record.cause}:{self.id}"


class _LeakCtx(_Ctx):
    """A leak subject and the registry/lifecycle facts about it. Leak rules read ``leak.*``,
    ``subject.kind`` and the identity/account facts only, never login event fields."""

    __slots__ = ("record", "subject")

    def __init__(self, subject: LeakSubject, registry: Registry, lifecycle: StateStore) -> None:
        self.subject = subject
        self.record = subject.record
        self.registry = registry
        self.lifecycle = lifecycle
        self._identity = _UNSET
        self._account = _UNSET
        self._grant = None
        self._life = _UNSET
        self._status = _UNSET
        self._max_role = _UNSET

    def identity(self) -> Identity | None:
        if self._identity is _UNSET:
            s = self.subject
            self._identity = self.registry.identities.get(s.id) if s.kind == "identity" else None
        return self._identity  # type: ignore[no-any-return]

    def account(self) -> Account | None:
        if self._account is _UNSET:
            s = self.subject
            shared = s.kind == "shared_account"
            self._account = self.registry.accounts.get(s.id) if shared else None
        return self._account  # type: ignore[no-any-return]

    def grant(self) -> Grant | None:
        return None

    def roles(self) -> list[str]:
        """The identity's effective roles (removed grants left out, downgrades applied)."""
        ident, life = self.identity(), self.life()
        if ident is None or life is None:
            return []
        roles = set()
        for raw in self.registry.grants_of(ident.id):
            g = self._effective(raw, life)
            if g is not None and g.role != "no_access":
                roles.add(g.role)
        return sorted(roles)


def shared_credential_holders(
    registry: Registry, lifecycle: StateStore, account_id: str
) -> list[str]:
    """Identities holding ``account_id`` through its shared credential, still active and
    still granted: who must re-enrol once the shared secret changes."""
    return sorted(
        g.identity
        for g in registry.holders(account_id, via="shared_credential")
        if not is_offboarded(registry, lifecycle, g.identity)
        and account_id not in lifecycle.identity(g.identity).removed_grants
    )


Getter = Callable[[_Ctx], Any]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """A field a condition may read: its getter, type (str|num|bool|role) and allowed values."""

    getter: Getter
    type: str
    choices: tuple[str, ...] | None = None


def _event_attr(name: str) -> Getter:
    # one C call (attrgetter follows the dotted path) instead of a lambda around a getter:
    # conditions read ~12 event fields per event
    return attrgetter(f"event.{name}")


def _geo_attr(name: str) -> Getter:
    get = attrgetter(name)
    return lambda c: get(c.event.geo) if c.event.geo is not None else None


def _grant_expired(c: _Ctx) -> bool:
    g = c.grant()
    return g is not None and g.expires_at is not None and g.expires_at < c.event.time


def _grant_attr(name: str) -> Getter:
    get = attrgetter(name)

    def read(c: _Ctx) -> Any:
        g = c.grant()
        return get(g) if g is not None else None

    return read


def _account_attr(name: str) -> Getter:
    get = attrgetter(name)

    def read(c: _Ctx) -> Any:
        a = c.account()
        return get(a) if a is not None else None

    return read


def _account_shared(c: _Ctx) -> bool:
    a = c.account()
    return a is not None and a.shared_credential is not None


def _identity_kind(c: _Ctx) -> str | None:
    ident = c.identity()
    return ident.kind if ident is not None else None


FIELDS: dict[str, FieldSpec] = {
    **{
        name: FieldSpec(_event_attr(name), "str")
        for name in (
            "event_id",
            "principal",
            "event_type",
            "identity",
            "vendor_event_id",
            "failure_reason",
            "mfa_method",
            "ip",
            "device",
            "user_agent",
            "target",
            "target_account",
            "risk",
        )
    },
    "vendor": FieldSpec(_event_attr("vendor"), "str", LOGIN_VENDORS),
    "outcome": FieldSpec(_event_attr("outcome"), "str", LOGIN_OUTCOMES),
    "mfa_result": FieldSpec(_event_attr("mfa_result"), "str", MFA_RESULTS),
    "geo.country": FieldSpec(_geo_attr("country"), "str"),
    "geo.city": FieldSpec(_geo_attr("city"), "str"),
    "geo.lat": FieldSpec(_geo_attr("lat"), "num"),
    "geo.lon": FieldSpec(_geo_attr("lon"), "num"),
    "identity.known": FieldSpec(lambda c: c.identity() is not None, "bool"),
    "identity.status": FieldSpec(_Ctx.status, "str", IDENTITY_STATUSES),
    "identity.kind": FieldSpec(_identity_kind, "str", IDENTITY_KINDS),
    "identity.max_role": FieldSpec(_Ctx.max_role, "role", ROLES),
    "grant.exists": FieldSpec(lambda c: c.grant() is not None, "bool"),
    "grant.role": FieldSpec(_grant_attr("role"), "role", ROLES),
    "grant.via": FieldSpec(_grant_attr("via"), "str", ACCESS_PATHS),
    "grant.mfa": FieldSpec(_grant_attr("mfa"), "str", MFA_METHODS),
    "grant.expired": FieldSpec(_grant_expired, "bool"),
    "account.known": FieldSpec(lambda c: c.account() is not None, "bool"),
    "account.criticality": FieldSpec(_account_attr("criticality"), "str", CRITICALITIES),
    "account.platform": FieldSpec(_account_attr("platform"), "str"),
    "account.shared": FieldSpec(_account_shared, "bool"),
}
#: Fields a leak rule (``inputs: [leak]``) may read: the record, the subject's kind, and the
#: registry/lifecycle facts that make sense for a person or a shared login. ``list`` fields
#: (data classes, flags) support ``contains`` and ``exists``.
LEAK_FIELDS: dict[str, FieldSpec] = {
    "leak.breach": FieldSpec(attrgetter("record.breach"), "str"),
    "leak.source": FieldSpec(attrgetter("record.source"), "str"),
    "leak.data_classes": FieldSpec(attrgetter("record.data_classes"), "list"),
    "leak.flags": FieldSpec(attrgetter("record.flags"), "list", LEAK_FLAGS),
    "leak.password_present": FieldSpec(attrgetter("record.password_present"), "bool"),
    # passwords, hashes, tokens or a stealer log (LeakRecord.credential_exposed)
    "leak.credential": FieldSpec(attrgetter("record.credential_exposed"), "bool"),
    "subject.kind": FieldSpec(attrgetter("subject.kind"), "str", SUBJECT_KINDS),
    **{
        name: FIELDS[name]
        for name in (
            "identity.known",
            "identity.status",
            "identity.kind",
            "identity.max_role",
            "account.known",
            "account.criticality",
            "account.platform",
            "account.shared",
        )
    },
}
#: Fields a rule may group by or count distinct values of (event fields only: state keys).
GROUP_FIELDS: tuple[str, ...] = (
    "identity",
    "principal",
    "ip",
    "device",
    "target_account",
    "target",
    "geo.country",
)
#: Fields a first_seen rule may learn per identity.
FIRST_SEEN_FIELDS: tuple[str, ...] = (
    "geo.country",
    "geo.city",
    "device",
    "ip",
    "user_agent",
    "target_account",
)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


Predicate = Callable[[_Ctx], bool]


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


def _all(preds: tuple[Predicate, ...]) -> Predicate:
    if not preds:
        return lambda c: True
    if len(preds) == 1:
        return preds[0]

    def check(c: _Ctx) -> bool:
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
    events: tuple[LoginEvent | LeakSubject, ...]
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
    """Every rule loaded from one directory, in file-name order."""

    rules: tuple[Rule, ...]
    directory: Path | None = None

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


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


class RuleState:
    """Per-key rule state: windows, last location and time, known values, dedup times.

    Keys are group keys (an identity id, ``principal:<login>`` for an unresolved principal,
    or ``<field>:<value>`` such as ``ip:203.0.113.9``); each key holds one small JSON-able slot
    per rule. :meth:`key_to_dict` / :meth:`load_key` move one key in and out, so a worker keeps
    its state in a Faust table (or a compacted topic) keyed the same way and rebuilds after a
    restart; :meth:`take_dirty` says which keys changed since the last call.

    Bounded: every slot is capped (``count`` timestamps for a threshold, ``max_values`` known
    values, ``MAX_PENDING`` pending sequences), :meth:`expire` drops slots older than their
    rule's horizon by *event* time, and at most ``max_keys`` keys stay in memory (least
    recently used evicted first, counted in ``evicted``). Not thread-safe: event loop only.
    """

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self.max_keys = max_keys
        self.evicted = 0
        self._keys: OrderedDict[str, dict[str, dict[str, Any]]] = OrderedDict()
        self._dirty: set[str] = set()

    def slot(self, key: str, rule_id: str) -> dict[str, Any]:
        """The mutable slot of ``rule_id`` under ``key`` (created empty); marks ``key`` dirty."""
        slots = self._keys.get(key)
        if slots is None:
            slots = {}
            self._keys[key] = slots
            if len(self._keys) > self.max_keys:
                old, _ = self._keys.popitem(last=False)
                self._dirty.discard(old)
                self.evicted += 1
        else:
            self._keys.move_to_end(key)
        self._dirty.add(key)
        found = slots.get(rule_id)
        if found is None:
            found = {}
            slots[rule_id] = found
        return found

    def keys(self) -> list[str]:
        return list(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def size(self) -> int:
        """Entries held in all slots (timestamps, known values, pending items): for bounds."""
        total = 0
        for slots in self._keys.values():
            for slot in slots.values():
                for value in slot.values():
                    total += len(value) if isinstance(value, list | dict) else 1
        return total

    def take_dirty(self) -> list[str]:
        """Keys changed since the last call (persist ``key_to_dict`` of each)."""
        dirty = sorted(self._dirty)
        self._dirty.clear()
        return dirty

    def mark_dirty(self, keys: Iterable[str]) -> None:
        """Mark ``keys`` changed again (a checkpoint that could not write them)."""
        self._dirty.update(keys)

    def key_to_dict(self, key: str) -> dict[str, Any] | None:
        """One key's state as JSON-able data (None when the key holds nothing)."""
        slots = self._keys.get(key)
        if not slots:
            return None
        return {"v": 1, "rules": {rid: _copy_slot(slot) for rid, slot in slots.items()}}

    def load_key(self, key: str, data: Mapping[str, Any] | None) -> None:
        """Restore one key from :meth:`key_to_dict` output (None removes it)."""
        if not data:
            self._keys.pop(key, None)
            return
        rules = data.get("rules") or {}
        self._keys[key] = {str(rid): _copy_slot(slot) for rid, slot in rules.items()}
        self._keys.move_to_end(key)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
            self.evicted += 1

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in self._keys:
            value = self.key_to_dict(key)
            if value is not None:
                out[key] = value
        return {"v": 1, "keys": out}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], max_keys: int = MAX_KEYS) -> RuleState:
        state = cls(max_keys=max_keys)
        for key, value in (data.get("keys") or {}).items():
            state.load_key(str(key), value)
        return state

    def expire(self, now: datetime | float, horizons: Mapping[str, float]) -> int:
        """Drop every slot whose last event is older than its rule's horizon at ``now``
        (event time). Returns the number of slots dropped; emptied keys are removed too."""
        ts = now.timestamp() if isinstance(now, datetime) else float(now)
        dropped = 0
        for key in list(self._keys):
            slots = self._keys[key]
            for rid in list(slots):
                horizon = horizons.get(rid)
                last = slots[rid].get("last")
                if horizon is None or last is None or ts - float(last) >= horizon:
                    del slots[rid]
                    dropped += 1
            if not slots:
                del self._keys[key]
                self._dirty.add(key)
        return dropped


def _copy_slot(slot: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in slot.items():
        if isinstance(v, list):
            out[k] = [list(x) if isinstance(x, list) else x for x in v]
        elif isinstance(v, dict):
            out[k] = dict(v)
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


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


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _identity_group(c: _Ctx) -> str:
    return c.event.identity or f"principal:{c.event.principal}"


def _group_getter(name: str) -> Callable[[_Ctx], str | None]:
    if name == "identity":
        return _identity_group
    get = FIELDS[name].getter

    def group(c: _Ctx) -> str | None:
        value = get(c)
        return None if value is None else f"{name}:{value}"

    return group


#: (subject event, evidence) pairs a rule's check returns; the subject is the event the
#: alert is about (the current event, or the stored first event of an absent sequence).
Hits = list[tuple[LoginEvent, dict[str, Any]]]


class _Compiled:
    """A rule with its conditions compiled and its kind's check bound."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.id = rule.id
        fields = LEAK_FIELDS if rule.leak else FIELDS
        self.match = _all(tuple(compile_condition(c, fields) for c in rule.conditions))
        self.group = _group_getter(rule.group_by)
        p = rule.params
        self.window = float(p.get("window", 0.0))
        self.count = int(p.get("count", 1))
        self.distinct = FIELDS[p["distinct"]].getter if p.get("distinct") else None
        self.first = _all(tuple(compile_condition(c) for c in p.get("first", ())))
        self.then = _all(tuple(compile_condition(c) for c in p.get("then", ())))
        self.absent = bool(p.get("absent", False))
        self.value = FIELDS[p["field"]].getter if p.get("field") else None
        self.lookback = float(p.get("lookback_days", 0.0)) * 86400.0
        self.max_values = int(p.get("max_values", DEFAULT_MAX_VALUES))
        self.learn_first = bool(p.get("learn_first", True))
        self.max_speed = float(p.get("max_speed_kmh", 0.0))
        self.min_distance = float(p.get("min_distance_km", 0.0))
        checks: dict[str, Callable[[_Ctx, str, RuleState], Hits]] = {
            "match": self._match,
            "threshold": self._threshold,
            "velocity": self._velocity,
            "first_seen": self._first_seen,
            "sequence": self._sequence,
        }
        self.check = checks[rule.kind]

    def _match(self, c: _Ctx, key: str, state: RuleState) -> Hits:
        return [(c.event, {})]

    def _threshold(self, c: _Ctx, key: str, state: RuleState) -> Hits:
        slot = state.slot(key, self.id)
        t = c.ts
        slot["last"] = max(t, slot.get("last", t))
        if self.distinct is not None:
            value = self.distinct(c)
            if value is None:
                return []
            seen: dict[str, float] = slot.setdefault("seen", {})
            name = str(value)
            if t > seen.get(name, -math.inf):
                seen[name] = t
            while len(seen) > self.count:
                del seen[min(seen, key=seen.__getitem__)]
            hi = max(seen.values())
            n = sum(1 for v in seen.values() if v > hi - self.window)
            if n >= self.count:
                return [(c.event, {"distinct": n, "window_s": self.window})]
            return []
        stamps: list[float] = slot.setdefault("ts", [])
        bisect.insort(stamps, t)
        if len(stamps) > self.count:
            del stamps[: len(stamps) - self.count]
        if len(stamps) == self.count and stamps[-1] - stamps[0] < self.window:
            return [(c.event, {"count": self.count, "window_s": self.window})]
        return []

    def _velocity(self, c: _Ctx, key: str, state: RuleState) -> Hits:
        geo = c.event.geo
        if c.event.identity is None or geo is None or geo.lat is None or geo.lon is None:
            return []
        slot = state.slot(key, self.id)
        t = c.ts
        hits: Hits = []
        prev = slot.get("loc")
        if prev is not None and t < prev[0]:
            return []  # out of order: consecutive means in event-time order
        if prev is not None and not (
            # the same place again (the common case): distance 0, under any min_distance > 0
            self.min_distance > 0 and prev[1] == geo.lat and prev[2] == geo.lon
        ):
            dist = haversine_km(prev[1], prev[2], geo.lat, geo.lon)
            hours = (t - prev[0]) / 3600.0
            if dist >= self.min_distance:
                speed = math.inf if hours <= 0 else dist / hours
                if speed > self.max_speed:
                    hits.append(
                        (
                            c.event,
                            {
                                "distance_km": round(dist, 1),
                                "minutes": round(hours * 60, 1),
                                "speed_kmh": None if math.isinf(speed) else round(speed),
                                "from_country": prev[3],
                                "to_country": geo.country,
                            },
                        )
                    )
        slot["loc"] = [t, geo.lat, geo.lon, geo.country]
        slot["last"] = t
        return hits

    def _first_seen(self, c: _Ctx, key: str, state: RuleState) -> Hits:
        value = self.value(c) if self.value is not None else None
        if value is None or c.event.identity is None:
            return []
        name = str(value)
        slot = state.slot(key, self.id)
        t = c.ts
        seen: dict[str, float] = slot.setdefault("seen", {})
        cutoff = t - self.lookback
        for old in [v for v, ts in seen.items() if ts <= cutoff]:
            del seen[old]
        learning = "since" not in slot
        if learning:
            slot["since"] = t
        prev = seen.get(name)
        seen[name] = t if prev is None else max(prev, t)
        while len(seen) > self.max_values:
            del seen[min(seen, key=seen.__getitem__)]
        slot["last"] = max(t, slot.get("last", t))
        if prev is not None or (learning and self.learn_first):
            return []
        known = sorted(v for v in seen if v != name)
        return [(c.event, {"new_value": name, "known_values": known[:10]})]

    def _sequence(self, c: _Ctx, key: str, state: RuleState) -> Hits:
        slot = state.slot(key, self.id)
        t = c.ts
        slot["last"] = max(t, slot.get("last", t))
        hits: Hits = []
        if self.absent:
            hits.extend(self._due(slot, t))
            pending: list[list[Any]] = slot.setdefault("pending", [])
            if self.then(c):
                pending[:] = [p for p in pending if p[0] - self.window > t]
            if self.first(c) and len(pending) < MAX_PENDING:
                pending.append([t + self.window, c.event.to_dict()])
            return hits
        firsts: list[float] = slot.setdefault("firsts", [])
        if self.then(c):
            n = sum(1 for f in firsts if t - self.window < f <= t)
            if n >= self.count:
                hits.append((c.event, {"first_count": n, "window_s": self.window}))
                firsts.clear()
        if self.first(c):
            bisect.insort(firsts, t)
            if len(firsts) > self.count:
                del firsts[: len(firsts) - self.count]
        return hits

    def _due(self, slot: dict[str, Any], t: float) -> Hits:
        pending: list[list[Any]] | None = slot.get("pending")
        if not pending:
            return []
        hits: Hits = []
        keep: list[list[Any]] = []
        for item in pending:
            if item[0] <= t:
                first = LoginEvent.from_dict(item[1])
                hits.append((first, {"not_followed_within_s": self.window}))
            else:
                keep.append(item)
        pending[:] = keep
        return hits


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
        self._compiled = tuple(_Compiled(r) for r in self.rules if not r.leak)
        self._leak = tuple(_Compiled(r) for r in self.rules if r.leak)
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
    ) -> list[Detection]:
        """Every rule's conclusion about ``event`` (only rules that fired or failed appear).

        Updates ``state``. Deterministic: the same inputs give the same detections, actions
        and idempotency keys, so a redelivered event is harmless downstream.
        """
        ctx = _Ctx(event, registry, lifecycle)
        out: list[Detection] = []
        for compiled in self._compiled:
            try:
                if not compiled.match(ctx):
                    continue
                key = compiled.group(ctx)
                if key is None:
                    continue
                hits = compiled.check(ctx, key, state)
                for subject, evidence in hits:
                    sctx = ctx if subject is event else _Ctx(subject, registry, lifecycle)
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
            for compiled in absent:
                try:
                    slots = state._keys.get(key) or {}
                    slot = slots.get(compiled.id)
                    if not slot or not slot.get("pending"):
                        continue
                    state._dirty.add(key)
                    for subject, evidence in compiled._due(slot, ts):
                        sctx = _Ctx(subject, registry, lifecycle)
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
        ctx = _LeakCtx(subject, registry, lifecycle)
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

    def _detect_leak(self, rule: Rule, ctx: _LeakCtx) -> Detection:
        record, subject = ctx.record, ctx.subject
        why = rule.why or rule.description
        actions, notes, dropped = self._respond_leak(rule, ctx)
        flags_note = f" [{', '.join(record.flags)}]" if record.flags else ""
        done = ", ".join(sorted({f"{a.action}@{a.provider}" for a in actions})) or "nothing"
        if dropped:
            done += f" (rule is {rule.status}: {', '.join(dropped)} not executed)"
        missing = f" ({'; '.join(notes)})" if notes else ""
        route = "page" if "page" in rule.response else "notify" if "notify" in rule.response else ""
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
        if notes:
            details["notes"] = notes
        if dropped:
            details["dropped_response"] = list(dropped)
        identity = subject.id if subject.kind == "identity" else None
        alert = Alert(
            severity=rule.severity,
            rule=rule.id,
            identity=identity,
            dedup_key=f"{record.cause}:{subject.id}:{rule.id}",
            title=title[:1000],
            details=details,
            runbook=rule.runbook,
        )
        return Detection(
            rule=rule.id,
            severity=rule.severity,
            group_key=subject.id,
            title=title,
            why=why,
            event_id=subject.event_id,
            identity=identity,
            actions=tuple(actions),
            alerts=(alert,),
            dropped=dropped,
        )

    def _respond_leak(
        self, rule: Rule, ctx: _LeakCtx
    ) -> tuple[list[Action], list[str], tuple[str, ...]]:
        """A stable leak rule's actions, built as the leak path always built them: cause
        ``leak:<breach>:<subject hash>`` (the record's), so re-imports repeat the keys."""
        wanted = rule.actions
        if not wanted:
            return [], [], ()
        if rule.status != "stable":
            return [], [], wanted
        cause = ctx.record.cause
        providers = self.providers
        ident, account = ctx.identity(), ctx.account()
        actions: list[Action] = []
        notes: list[str] = []
        for kind in wanted:
            if kind == "rotate_shared_credential":
                shared = account.shared_credential if account is not None else None
                if account is None or shared is None:
                    notes.append(f"{kind}: only for a shared brand login")
                    continue
                if not shared.totp:
                    continue  # nothing to rotate here: the page asks for the password change
                actions.append(
                    Action.make(
                        kind,
                        identity=f"shared:{account.id}",
                        account=account.id,
                        provider=secret_store(providers),
                        cause=cause,
                        params={
                            "credential_ref": shared.ref,
                            "account_handle": account.handle,
                            "platform": account.platform,
                        },
                    )
                )
                continue
            if ident is None:
                notes.append(f"{kind}: the subject is not a registry identity")
                continue
            made = _identity_actions(kind, ident, ctx.registry, providers, cause)
            if kind == "force_mfa_reenrolment" and not made:
                notes.append("no alias at a configured IdP: re-enrol by hand")
            actions.extend(made)
        return actions, notes, ()

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
        ctx: _Ctx,
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
            if last is not None and 0 <= ctx.ts - float(last) < rule.dedup:
                deduplicated = True
            else:
                slot["alert"] = ctx.ts
                slot["last"] = max(ctx.ts, slot.get("last", ctx.ts))
            bucket = str(int(ctx.ts // rule.dedup))
        who = event.identity or f"unknown principal {subject_hash(event.principal)}"
        account = ctx.account()
        where = (
            f"{account.platform} {account.handle} ({account.id})"
            if account is not None
            else (event.target_account or event.target or "no brand account")
        )
        title = f"{rule.title}: {who} on {where}"
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
        actions, notes, dropped = self._respond(rule, ctx)
        group_part = key
        if key.startswith("principal:") or len(key) > _MAX_GROUP_IN_KEY:
            group_part = idempotency_key(key)[:16]
        done: str
        if actions:
            by_kind: dict[str, list[str]] = {}
            for a in actions:
                by_kind.setdefault(a.action, []).append(a.provider)
            done = "accessguard requested " + "; ".join(
                f"{kind} at {', '.join(sorted(set(p)))}" for kind, p in by_kind.items()
            )
        elif dropped:
            done = (
                f"nothing: rule is {rule.status}, so its response ({', '.join(dropped)}) "
                "was not executed"
            )
        else:
            done = "nothing automatic: a human decides"
        route = "page" if "page" in rule.response else "notify" if "notify" in rule.response else ""
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
            "done": done,
            "actions": [f"{a.action}@{a.provider}" for a in actions],
            "evidence": evidence,
            "route": route or "none",
        }
        if notes:
            details["notes"] = notes
        if dropped:
            details["dropped_response"] = list(dropped)
        alert = Alert(
            severity=rule.severity,
            rule=rule.id,
            identity=event.identity,
            dedup_key=f"{rule.id}:{group_part}:{bucket}",
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
            evidence=evidence,
            dropped=dropped,
        )

    def _respond(self, rule: Rule, ctx: _Ctx) -> tuple[list[Action], list[str], tuple[str, ...]]:
        """Actions for a stable rule's response; a non-stable rule's actions are dropped."""
        wanted = rule.actions
        if not wanted:
            return [], [], ()
        if rule.status != "stable":
            return [], [], wanted
        event = ctx.event
        cause = f"rule:{rule.id}:{event.event_id}"
        ident = ctx.identity()
        subject = event.identity or f"principal:{subject_hash(event.principal)}"
        actions: list[Action] = []
        notes: list[str] = []
        providers = self.providers
        for kind in wanted:
            if kind == "rotate_shared_credential":
                account = ctx.account()
                shared = account.shared_credential if account is not None else None
                if account is None or shared is None or not shared.totp:
                    notes.append(f"{kind}: the account has no shared TOTP credential")
                    continue
                actions.append(
                    Action.make(
                        kind,
                        identity=subject,
                        account=account.id,
                        provider=secret_store(providers),
                        cause=cause,
                        params={
                            "credential_ref": shared.ref,
                            "account_handle": account.handle,
                            "platform": account.platform,
                        },
                    )
                )
                continue
            if ident is None:
                notes.append(f"{kind}: skipped, the principal is not a registry identity")
                continue
            if kind in ("revoke_sessions", "force_mfa_reenrolment"):
                made = _identity_actions(kind, ident, ctx.registry, providers, cause)
                if kind == "force_mfa_reenrolment" and not made:
                    notes.append(f"{kind}: the identity has no alias at a configured IdP")
                actions.extend(made)
            elif kind == "remove_grant":
                grant, account = ctx.grant(), ctx.account()
                if grant is None or account is None:
                    notes.append(f"{kind}: no grant on the target account to remove")
                    continue
                actions.append(
                    Action.make(
                        kind,
                        identity=ident.id,
                        account=account.id,
                        provider=account.provider,
                        cause=cause,
                        params={
                            **account_params(ident, account),
                            "role": grant.role,
                            "via": grant.via,
                        },
                    )
                )
        return actions, notes, ()


def _identity_actions(
    kind: str, ident: Identity, registry: Registry, providers: Mapping[str, str], cause: str
) -> list[Action]:
    """``revoke_sessions`` at every provider that holds the identity or manages one of its
    accounts, or ``force_mfa_reenrolment`` at each identity provider it has an alias at —
    one action per provider, as login and leak rules both build them."""
    if kind == "revoke_sessions":
        targets = list(session_providers(registry, ident, providers))
    else:
        targets = [p for p in sorted(ident.aliases) if providers.get(p) in IDP_TYPES]
    return [
        Action.make(
            kind,
            identity=ident.id,
            account=None,
            provider=provider,
            cause=cause,
            params={"user_ref": user_ref(ident, provider)},
        )
        for provider in targets
    ]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

_RULE_KEYS = {
    "id",
    "title",
    "description",
    "why",
    "status",
    "severity",
    "runbook",
    "falsepositives",
    "inputs",
    "kind",
    "group_by",
    "conditions",
    "threshold",
    "velocity",
    "first_seen",
    "sequence",
    "dedup",
    "response",
    "tests",
}
_COND_KEYS = {"field", "op", "value"}
_PARAM_KEYS: dict[str, set[str]] = {
    "threshold": {"window", "count", "distinct"},
    "velocity": {"max_speed_kmh", "min_distance_km"},
    "first_seen": {"field", "lookback_days", "max_values", "learn_first"},
    "sequence": {"first", "then", "window", "count", "absent"},
}
_TEST_KEYS = {"name", "expect", "events", "lifecycle", "registry", "actions", "start", "flush_at"}
_TEST_EVENT_EXTRA = {"at"}


def _number(
    e: Entry, name: str, *, required: bool, minimum: float, integer: bool = False
) -> float | None:
    if not e.present(name):
        if required:
            e.error(e.line, f"{name}: required")
        return None
    node = e.fields[name]
    value = e._scalar(node)
    if isinstance(value, bool) or not isinstance(value, int | float):
        e.error(node, f"{name}: expected a number")
        return None
    if integer and not isinstance(value, int):
        e.error(node, f"{name}: expected a whole number")
        return None
    if value < minimum:
        e.error(node, f"{name}: must be at least {minimum:g}")
        return None
    return float(value)


def _strings(e: Entry, name: str, *, required: bool) -> list[tuple[str, Node]] | None:
    nodes = e.seq(name, required=required)
    if nodes is None:
        return None
    out: list[tuple[str, Node]] = []
    for node in nodes:
        text = e.item_string(name, node)
        if text is not None:
            out.append((text, node))
    return out


def _plain(value: Any) -> Any:
    """YAML-constructed data as JSON-like data (timestamps and dates as ISO strings)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return format_time(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _check_value(e: Entry, node: Node, *, spec: FieldSpec, op: str, value: Any) -> bool:
    def bad(message: str) -> bool:
        e.error(node, message)
        return False

    def scalar_ok(v: Any) -> bool:
        if spec.type == "bool":
            return isinstance(v, bool) or bad(f"expected true or false (got {v!r})")
        if spec.type == "num":
            ok = isinstance(v, int | float) and not isinstance(v, bool)
            return ok or bad(f"expected a number (got {v!r})")
        if not isinstance(v, str):
            return bad(f"expected a string (got {v!r})")
        if spec.choices is not None and v not in spec.choices:
            return bad(f"{v!r} is not one of {', '.join(spec.choices)}")
        return True

    if spec.type == "list":
        if op == "exists":
            return isinstance(value, bool) or bad("exists needs true or false")
        if op != "contains":
            return bad(f"{op}: a list field supports contains and exists only")
        if not isinstance(value, str) or not value:
            return bad("contains needs a non-empty string")
        return scalar_ok(value)
    if op in ("eq", "ne"):
        return value is None or scalar_ok(value)
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            return bad(f"{op} needs a non-empty list")
        return all([v is None or scalar_ok(v) for v in value])  # noqa: C419 - report every bad value
    if op == "exists":
        return isinstance(value, bool) or bad("exists needs true or false")
    if op in ("gte", "lte"):
        if spec.type == "role":
            return scalar_ok(value)
        if spec.type != "num":
            return bad(f"{op} needs a numeric or role field")
        return scalar_ok(value)
    if op in ("contains", "matches"):
        if spec.type != "str":
            return bad(f"{op} needs a text field")
        if not isinstance(value, str) or not value:
            return bad(f"{op} needs a non-empty string")
        if op == "matches":
            try:
                re.compile(value)
            except re.error as exc:
                return bad(f"invalid regular expression: {exc}")
        return True
    return bad(f"unknown op {op!r}")  # pragma: no cover - op validated before


def _conditions(
    e: Entry,
    name: str,
    problems: Problems,
    constructor: SafeConstructor,
    *,
    required: bool,
    fields: Mapping[str, FieldSpec] = FIELDS,
) -> tuple[tuple[Condition, ...], bool]:
    nodes = e.seq(name, required=required)
    if nodes is None:
        return (), not (required or e.present(name))
    ok = True
    out: list[Condition] = []
    for index, node in enumerate(nodes):
        where = f"{e.where}: {name}[{index}]"
        if not isinstance(node, MappingNode):
            problems.add(line_of(node), f"{where}: expected a mapping with field, op, value")
            ok = False
            continue
        c = Entry(node, where, _COND_KEYS, problems, constructor)
        fname = c.string("field", max_len=64)
        op = c.enum("op", OPS)
        spec = fields.get(fname or "")
        if fname is not None and spec is None:
            c.error(
                c.fields["field"],
                f"field: unknown field {fname!r} (known: {', '.join(sorted(fields))})",
            )
        value: Any = None
        if "value" not in c.fields:
            c.error(c.line, "value: required (null is allowed with eq and ne)")
            op = None
        elif c.present("value"):
            value = _plain(c.constructor.construct_object(c.fields["value"], deep=True))
        if fname is None or op is None or spec is None:
            ok = False
            continue
        if not _check_value(c, c.fields.get("value", node), spec=spec, op=op, value=value):
            ok = False
            continue
        out.append(Condition(fname, op, value, line_of(node)))
    return tuple(out), ok


def _test_event(
    t: Entry,
    node: Node,
    *,
    index: int,
    start: datetime,
    rule_id: str,
    case: int,
    problems: Problems,
) -> LoginEvent | None:
    where = f"{t.where}: events[{index}]"
    if not isinstance(node, MappingNode):
        problems.add(line_of(node), f"{where}: expected a mapping of LoginEvent fields")
        return None
    try:
        data = _plain(t.constructor.construct_object(node, deep=True))
    except Exception as exc:  # noqa: BLE001 - any YAML construction problem is a load error
        problems.add(line_of(node), f"{where}: {exc}")
        return None
    if not isinstance(data, dict):  # pragma: no cover - a MappingNode constructs a dict
        problems.add(line_of(node), f"{where}: expected a mapping")
        return None
    at = data.pop("at", None)
    if at is not None:
        if isinstance(at, bool) or not isinstance(at, int | float):
            problems.add(line_of(node), f"{where}: at: expected seconds after the case start")
            return None
        if "time" in data:
            problems.add(line_of(node), f"{where}: give either time or at, not both")
            return None
        data["time"] = format_time(start + timedelta(seconds=at))
    data.setdefault("time", format_time(start + timedelta(seconds=index)))
    data.setdefault("event_id", f"{rule_id}-t{case}-e{index}")
    if "principal" not in data:
        ident = data.get("identity")
        data["principal"] = f"{ident}@example.test" if ident else "someone@example.test"
    try:
        return LoginEvent.from_dict(data)
    except ValidationError as exc:
        problems.add(line_of(node), f"{where}: {exc.reason}")
        return None


def _test_leak(
    t: Entry,
    node: Node,
    *,
    index: int,
    problems: Problems,
) -> LeakSubject | None:
    """One leak-shaped test event: ``{leak: {breach, data_classes, password_present,
    breach_date, added, flags, source}, subject: {identity: ID} | {account: ID}}``."""
    where = f"{t.where}: events[{index}]"
    if not isinstance(node, MappingNode):
        problems.add(line_of(node), f"{where}: expected a mapping with leak and subject")
        return None
    try:
        data = _plain(t.constructor.construct_object(node, deep=True))
    except Exception as exc:  # noqa: BLE001 - any YAML construction problem is a load error
        problems.add(line_of(node), f"{where}: {exc}")
        return None
    if not isinstance(data, dict):  # pragma: no cover - a MappingNode constructs a dict
        problems.add(line_of(node), f"{where}: expected a mapping")
        return None
    unknown = sorted(set(data) - {"leak", "subject"})
    leak, subject = data.get("leak"), data.get("subject")
    if unknown or not isinstance(leak, dict) or not isinstance(subject, dict):
        problems.add(
            line_of(node),
            f"{where}: a leak rule's test event is {{leak: {{...}}, subject: "
            "{identity: ID} or {account: ID}}"
            + (f" (unknown: {', '.join(unknown)})" if unknown else ""),
        )
        return None
    if len(subject) != 1 or not isinstance(next(iter(subject.values())), str):
        problems.add(line_of(node), f"{where}: subject: exactly one of identity or account")
        return None
    ((skind, sid),) = subject.items()
    if skind not in ("identity", "account"):
        problems.add(line_of(node), f"{where}: subject: exactly one of identity or account")
        return None
    fields = dict(leak)
    if "added" in fields:
        fields["added_at"] = fields.pop("added")
    fields.setdefault("breach", "TestBreach")
    fields.setdefault("source", "rule-test")
    principal = f"{sid}@example.test" if skind == "identity" else f"shared-{sid}@example.test"
    fields.setdefault("principal", principal)
    try:
        record = LeakRecord.from_dict(fields)
    except ValidationError as exc:
        problems.add(line_of(node), f"{where}: leak: {exc.reason}")
        return None
    return LeakSubject(record, "identity" if skind == "identity" else "shared_account", sid)


def _tests(
    e: Entry,
    rule_id: str | None,
    problems: Problems,
    constructor: SafeConstructor,
    *,
    leak: bool = False,
) -> list[RuleTest]:
    out: list[RuleTest] = []
    names: dict[str, int] = {}
    for index, node in enumerate(e.seq("tests", required=True) or ()):
        if not isinstance(node, MappingNode):
            problems.add(line_of(node), f"{e.where}: tests[{index}]: expected a mapping")
            continue
        t = Entry(node, f"{e.where}: tests[{index}]", _TEST_KEYS, problems, constructor)
        name = t.string("name", max_len=200)
        if name is not None:
            t.where = f"{e.where}: test {name!r}"
            if name in names:
                t.error(
                    t.fields["name"], f"name: duplicate test name (first at line {names[name]})"
                )
            names[name] = t.line
        expect = t.enum("expect", EXPECTS)
        start = t.time("start", required=False) or TEST_EPOCH
        flush_at: datetime | None = None
        if t.present("flush_at"):
            seconds = _number(t, "flush_at", required=True, minimum=0)
            flush_at = start + timedelta(seconds=seconds) if seconds is not None else None
        lifecycle: dict[str, str] = {}
        life_node = t.mapping("lifecycle")
        for key_node, value_node in life_node.value if life_node is not None else ():
            key, value = t._scalar(key_node), t._scalar(value_node)
            if not isinstance(key, str) or value not in IDENTITY_STATUSES:
                t.error(
                    value_node,
                    f"lifecycle: expected <identity>: {'|'.join(IDENTITY_STATUSES)}",
                )
                continue
            lifecycle[key] = str(value)
        registry = t.string("registry", required=False)
        actions: tuple[str, ...] | None = None
        if t.present("actions"):
            listed = _strings(t, "actions", required=True) or []
            for value, vnode in listed:
                if value not in RESPONSES or value in ALERT_ONLY:
                    t.error(vnode, f"actions: {value!r} is not an action kind")
            actions = tuple(v for v, _ in listed)
        events: list[LoginEvent | LeakSubject] = []
        ok = True
        event_nodes = t.seq("events", required=True)
        if event_nodes is not None and not event_nodes:
            t.error(t.fields["events"], "events: list at least one event")
        for i, enode in enumerate(event_nodes or ()):
            if leak:
                subject = _test_leak(t, enode, index=i, problems=problems)
                if subject is None:
                    ok = False
                else:
                    events.append(subject)
                continue
            ev = _test_event(
                t,
                enode,
                index=i,
                start=start,
                rule_id=rule_id or "rule",
                case=index,
                problems=problems,
            )
            if ev is None:
                ok = False
            else:
                events.append(ev)
        if name is None or expect is None or not ok or not events:
            continue
        out.append(
            RuleTest(
                name=name,
                expect=expect,
                events=tuple(events),
                lifecycle=lifecycle,
                registry=registry,
                actions=actions,
                flush_at=flush_at,
                line=t.line,
            )
        )
    return out


def _params(
    e: Entry, kind: str, problems: Problems, constructor: SafeConstructor
) -> tuple[dict[str, Any], bool]:
    for other in _PARAM_KEYS:
        if other != kind and e.present(other):
            e.error(e.fields[other], f"{other}: only allowed with kind {other} (kind is {kind})")
    if kind == "match":
        return {}, True
    node = e.mapping(kind)
    if node is None:
        if not e.present(kind):
            e.error(e.line, f"{kind}: required with kind {kind}")
        return {}, False
    p = Entry(node, f"{e.where}: {kind}", _PARAM_KEYS[kind], problems, constructor)
    params: dict[str, Any] = {}
    ok = True

    def need(name: str, value: Any) -> None:
        nonlocal ok
        if value is None:
            ok = False
        else:
            params[name] = value

    if kind == "threshold":
        need("window", _number(p, "window", required=True, minimum=1))
        count = _number(p, "count", required=True, minimum=2, integer=True)
        need("count", int(count) if count is not None else None)
        distinct = p.string("distinct", required=False, max_len=64)
        if distinct is not None and distinct not in GROUP_FIELDS:
            p.error(p.fields["distinct"], f"distinct: must be one of {', '.join(GROUP_FIELDS)}")
            ok = False
        params["distinct"] = distinct
    elif kind == "velocity":
        need("max_speed_kmh", _number(p, "max_speed_kmh", required=True, minimum=1))
        need("min_distance_km", _number(p, "min_distance_km", required=True, minimum=0))
    elif kind == "first_seen":
        fname = p.string("field", max_len=64)
        if fname is not None and fname not in FIRST_SEEN_FIELDS:
            p.error(p.fields["field"], f"field: must be one of {', '.join(FIRST_SEEN_FIELDS)}")
            fname = None
        need("field", fname)
        need("lookback_days", _number(p, "lookback_days", required=True, minimum=1))
        max_values = _number(p, "max_values", required=False, minimum=1, integer=True)
        params["max_values"] = int(max_values) if max_values is not None else DEFAULT_MAX_VALUES
        params["learn_first"] = p.boolean("learn_first", default=True)
    elif kind == "sequence":
        first, first_ok = _conditions(p, "first", problems, constructor, required=True)
        then, then_ok = _conditions(p, "then", problems, constructor, required=True)
        ok = ok and first_ok and then_ok
        params["first"], params["then"] = first, then
        need("window", _number(p, "window", required=True, minimum=1))
        count = _number(p, "count", required=False, minimum=1, integer=True)
        params["count"] = int(count) if count is not None else 1
        params["absent"] = p.boolean("absent", default=False)
        if params["absent"] and params["count"] != 1:
            p.error(p.fields["count"], "count: an absent sequence waits for one first event")
            ok = False
    return params, ok


def _parse_rule(text: str, path: Path, problems: Problems) -> Rule | None:
    root = compose(text, problems)
    if root is None:
        if not problems:
            problems.add(1, "empty rule file: expected a mapping")
        return None
    if not isinstance(root, MappingNode):
        problems.add(line_of(root), "a rule must be a mapping")
        return None
    constructor = SafeConstructor()
    e = Entry(root, "rule", _RULE_KEYS, problems, constructor)
    rule_id = e.string("id", max_len=100)
    if rule_id is not None:
        if not _RULE_ID_RE.match(rule_id):
            e.error(e.fields["id"], f"id: {rule_id!r} must match [a-z][a-z0-9_]*")
        elif rule_id != path.stem:
            e.error(e.fields["id"], f"id: {rule_id!r} must equal the file name ({path.stem!r})")
        e.where = f"rule {rule_id}"
    title = e.string("title", max_len=200)
    description = e.string("description", max_len=4000)
    why = e.string("why", required=False, max_len=1000)
    status = e.enum("status", STATUSES)
    severity = e.enum("severity", SEVERITIES)
    runbook = e.string("runbook", max_len=300)
    falsepositives = _strings(e, "falsepositives", required=True)
    inputs = _strings(e, "inputs", required=True)
    for value, node in inputs or ():
        if value not in INPUTS:
            e.error(node, f"inputs: {value!r} is not one of {', '.join(INPUTS)}")
        elif value not in SUPPORTED_INPUTS:
            e.error(node, f"inputs: {value!r} is not evaluated by this version (use login or leak)")
    if inputs is not None and not inputs:
        e.error(e.fields["inputs"], "inputs: list at least one input kind")
    leak = any(v == "leak" for v, _ in inputs or ())
    if leak and len({v for v, _ in inputs or ()}) > 1:
        e.error(e.fields["inputs"], "inputs: a leak rule reads leak subjects only (inputs: [leak])")
    kind = e.enum("kind", KINDS)
    if leak and kind is not None and kind != "match":
        e.error(e.fields["kind"], f"kind: a leak rule is a match rule (got {kind})")
    if leak and e.present("group_by"):
        e.error(e.fields["group_by"], "group_by: a leak rule is evaluated per matched subject")
    group_by = e.string("group_by", required=False, max_len=64) or "identity"
    if group_by not in GROUP_FIELDS:
        e.error(e.fields["group_by"], f"group_by: must be one of {', '.join(GROUP_FIELDS)}")
    if kind in ("velocity", "first_seen") and group_by != "identity":
        e.error(e.fields["group_by"], f"group_by: a {kind} rule is per identity")
    conditions, cond_ok = _conditions(
        e,
        "conditions",
        problems,
        constructor,
        required=False,
        fields=LEAK_FIELDS if leak else FIELDS,
    )
    params, params_ok = _params(e, kind, problems, constructor) if kind else ({}, False)
    dedup = _number(e, "dedup", required=True, minimum=0)
    if leak and dedup:
        e.error(
            e.fields["dedup"],
            "dedup: a leak rule's alerts are deduplicated by breach and subject (set 0)",
        )
    allowed = LEAK_RESPONSES if leak else RESPONSES
    response: list[str] = []
    for value, node in _strings(e, "response", required=False) or ():
        if value not in allowed:
            e.error(node, f"response: {value!r} is not one of {', '.join(allowed)}")
        elif value in response:
            e.error(node, f"response: {value!r} listed twice")
        elif status is not None and status != "stable" and value not in ALERT_ONLY:
            e.error(
                node,
                f"response: {value!r} acts at a provider, which only a stable rule may do "
                f"(this rule is {status}; keep page/notify or promote it)",
            )
        else:
            response.append(value)
    tests = _tests(e, rule_id, problems, constructor, leak=leak)
    test_node = e.fields.get("tests")
    if isinstance(test_node, SequenceNode) and len(tests) == len(test_node.value):
        expects = {t.expect for t in tests}
        for needed in EXPECTS:
            if needed not in expects:
                e.error(e.fields["tests"], f"tests: need at least one case with expect: {needed}")
    if (
        rule_id is None
        or title is None
        or description is None
        or status is None
        or severity is None
        or runbook is None
        or falsepositives is None
        or inputs is None
        or kind is None
        or dedup is None
        or not cond_ok
        or not params_ok
        or problems
    ):
        return None
    return Rule(
        id=rule_id,
        title=title,
        description=description,
        why=why or "",
        status=status,
        severity=severity,
        runbook=runbook,
        kind=kind,
        falsepositives=tuple(v for v, _ in falsepositives),
        inputs=tuple(v for v, _ in inputs),
        conditions=conditions,
        group_by=group_by,
        dedup=dedup,
        response=tuple(response),
        params=params,
        tests=tuple(tests),
        source=str(path),
        line=e.line,
    )


def parse_rule(text: str, path: str | Path) -> tuple[Rule | None, list[str]]:
    """Parse one rule's YAML text (``path`` names it: its stem must equal the id). Returns
    the rule (None when invalid) and every problem as ``path:line: message``."""
    path = Path(path)
    problems = Problems(str(path))
    rule = _parse_rule(text, path, problems)
    return rule, problems.render()


def check_rules(directory: str | Path) -> tuple[RuleSet, list[str]]:
    """Every rule in ``directory/*.yaml`` and every problem (empty list: the set is valid)."""
    directory = Path(directory)
    if not directory.is_dir():
        return RuleSet((), directory), [f"{directory}:0: not a directory of rules"]
    rules: list[Rule] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    paths = sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml"))
    for path in paths:
        if path.suffix == ".yml":
            problems.append(f"{path}:0: rule files end in .yaml")
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path}:0: cannot read the rule: {exc}")
            continue
        rule, found = parse_rule(text, path)
        problems.extend(found)
        if rule is None:
            continue
        if rule.id in seen:
            problems.append(f"{rule.where}: duplicate rule id {rule.id!r} (also {seen[rule.id]})")
            continue
        seen[rule.id] = rule.where
        rules.append(rule)
    return RuleSet(tuple(rules), directory), problems


def load_rules(directory: str | Path) -> RuleSet:
    """Load and validate ``directory/*.yaml``; raises RuleError listing every problem."""
    ruleset, problems = check_rules(directory)
    if problems:
        raise RuleError(problems)
    return ruleset


# --------------------------------------------------------------------------------------------
# Inline tests (`accessguard rules test`)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleTestResult:
    rule: str
    name: str
    expect: str
    passed: bool
    detail: str
    where: str

    @property
    def test_id(self) -> str:
        return f"{self.rule}::{self.name}"


RegistryFactory = Callable[[str | None], Registry]


def default_registry_factory(directory: Path | None) -> RegistryFactory:
    """Registries for rule tests: ``<dir>/tests/<name>`` (default ``registry.yaml``), loaded
    once each; an empty registry when the directory has none."""
    cache: dict[str | None, Registry] = {}

    def factory(name: str | None) -> Registry:
        if name in cache:
            return cache[name]
        path = (directory or Path()) / "tests" / (name or "registry.yaml")
        registry = load_registry(path) if name or path.is_file() else Registry()
        cache[name] = registry
        return registry

    return factory


def _lifecycle(statuses: Mapping[str, str]) -> StateStore:
    store = StateStore()
    for ident, status in statuses.items():
        store.put(IdentityState(identity=ident, status=status, status_cause="rule-test"))
    return store


def run_rule_test(
    rule: Rule,
    case: RuleTest,
    registry: Registry,
    providers: Mapping[str, str] = TEST_PROVIDERS,
) -> RuleTestResult:
    """Run one inline case on a fresh state (deprecated rules too: their tests still run)."""
    engine = RuleEngine(RuleSet((rule,)), providers, include_deprecated=True)
    lifecycle = _lifecycle(case.lifecycle)
    state = RuleState()
    detections: list[Detection] = []
    for event in case.events:
        if isinstance(event, LeakSubject):
            detections.extend(engine.evaluate_leak(event, registry, lifecycle))
        else:
            detections.extend(engine.evaluate(event, registry, lifecycle, state))
    if case.flush_at is not None:
        detections.extend(engine.flush(case.flush_at, registry, lifecycle, state))
    where = f"{rule.source}:{case.line}"
    errors = [d.error for d in detections if d.error]
    if errors:
        return RuleTestResult(rule.id, case.name, case.expect, False, f"error: {errors[0]}", where)
    alerts = [a for d in detections for a in d.alerts]
    fired = bool(alerts)
    if fired != (case.expect == "fire"):
        detail = f"expected {case.expect}, got {len(alerts)} alert(s)" + (
            f" (first at {alerts[0].details.get('event_id')})" if alerts else ""
        )
        return RuleTestResult(rule.id, case.name, case.expect, False, detail, where)
    if case.actions is not None:
        got = sorted({a.action for d in detections for a in d.actions})
        if got != sorted(set(case.actions)):
            detail = f"expected actions {sorted(set(case.actions))}, got {got}"
            return RuleTestResult(rule.id, case.name, case.expect, False, detail, where)
    return RuleTestResult(rule.id, case.name, case.expect, True, "ok", where)


def run_rule_tests(
    ruleset: RuleSet,
    registry_factory: RegistryFactory | None = None,
    providers: Mapping[str, str] = TEST_PROVIDERS,
) -> list[RuleTestResult]:
    """Run every rule's inline cases; a registry that cannot load fails its cases."""
    factory = registry_factory or default_registry_factory(ruleset.directory)
    results: list[RuleTestResult] = []
    for rule in ruleset.rules:
        for case in rule.tests:
            try:
                registry = factory(case.registry)
            except (RegistryError, OSError) as exc:
                where = f"{rule.source}:{case.line}"
                results.append(
                    RuleTestResult(
                        rule.id, case.name, case.expect, False, f"registry: {exc}", where
                    )
                )
                continue
            results.append(run_rule_test(rule, case, registry, providers))
    return results


def rules_test_main(directory: Path, echo: Callable[[str], Any]) -> int:
    """``accessguard rules test [DIR]``: 0 all passed, 1 a case failed, 2 the set is invalid."""
    try:
        ruleset = load_rules(directory)
    except RuleError as exc:
        for problem in exc.problems:
            echo(problem)
        echo(f"rules: invalid ({len(exc.problems)} problem(s)); nothing was run")
        return 2
    results = run_rule_tests(ruleset)
    failed = [r for r in results if not r.passed]
    for result in failed:
        echo(f"FAIL {result.test_id} ({result.where}): {result.detail}")
    passed = len(results) - len(failed)
    summary = f"rules: {len(ruleset)} loaded, {len(results)} tests, {passed} passed"
    if failed:
        summary += f", {len(failed)} failed"
    echo(summary)
    return 1 if failed else 0


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
