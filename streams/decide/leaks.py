"""Leaked credentials: LeakRecords matched against the registry, and what to do about them.

Matching is :class:`~streams.model.leak_index.LeakIndex` (a dict lookup per record, in the
model so that the leak edges can match before anything is decided).

Deciding (:func:`decide_leak`) is pure, like :mod:`streams.decide.hr`: registry + lifecycle +
one record + ``now`` + the rule engine -> actions, alerts, state updates. A match counts only
when the breach is newer than the last credential change known for the subject (registry
``credential_changed_at``, lifecycle ``credential_changed_at`` / ``reenrolled_at``; for a
shared login the account's last rotation), so old breaches do not page every day.

Which subjects reach the rules is decided here, and recorded (audit) only otherwise:

* spam lists and fabricated breaches: ignored unless configured;
* an identity already offboarded (registry or lifecycle): ``offboarded``, no rule runs —
  it should hold nothing, cutting its access is the offboarding path's job, and a leaked
  password still in use shows up as a login (``login_by_offboarded_identity``);
* an identity holding no (effective) grant: ``no_grants``, no rule runs;
* a breach older than the subject's last credential change: ``stale``;
* an identity with *no* credential-change fact at all (registry, lifecycle) and a breach older
  than ``leaks.review_after_days`` (default 365): ``review`` — a low-severity finding listed
  for a human (:attr:`LeakDecision.findings`, in the audit record and in ``accessguard
  replay``, reported by ``accessguard leaks findings``), never a page and never an action.
  Without it a first import into a registry that holds no credential-change dates paged
  on-call for every privileged holder found in decade-old breaches (the 2013 Adobe dump):
  the password was very likely changed since, but nothing says so.

Every other matched pair becomes a :class:`~streams.detect.fields.LeakSubject` (the record and an
identity or a shared account) and the responses come from the ``inputs: [leak]`` rules in
``rules/`` like every other detection (:meth:`streams.detect.engine.RuleEngine.evaluate_leak`):
``leak_privileged_holder`` (full_publishing/admin: revoke sessions, force MFA re-enrolment,
high), ``leak_grant_holder`` (any other grant: force re-enrolment, notify),
``leak_shared_credential`` (rotate the shared TOTP seed, page to change the password behind
``credential_ref``; holders must re-enrol) and ``leak_without_credentials`` (no password,
hash, token or stealer log: a low alert, no action). A subject no rule fires on is
``no_rule`` (recorded only). Only ``stable`` rules act, through the same executor, alerts and
audit as offboardings; a rule that raises is counted and the record dead-lettered.

Idempotent: every action's cause is ``leak:<breach>:<subject hash>``
(:attr:`~streams.model.records.LeakRecord.cause`, whatever rule requested it) and every alert's
dedup key derives from it (``<cause>:<subject id>:<rule id>``), so
the same breach re-imported (or redelivered) gives the same keys and the executor's ledger
does nothing twice. Alerts and audit views carry the subject hash, never the e-mail.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from streams.decide.responses import unique_actions
from streams.detect.engine import RuleEngine
from streams.detect.fields import LeakSubject
from streams.detect.load import load_rules
from streams.detect.model import Detection
from streams.model.access import effective_roles, is_offboarded, shared_credential_holders
from streams.model.leak_index import LeakIndex
from streams.model.records import Action, Alert, LeakRecord
from streams.model.registry import Registry
from streams.model.state import AccountState, IdentityState, StateStore
from streams.support.errors import ValidationError
from streams.support.secrets import Secret
from streams.support.times import format_time, parse_time

#: Flags whose breaches are ignored unless the settings include them.
IGNORED_BY_DEFAULT: tuple[str, ...] = ("spam_list", "fabricated")
#: The rules directory shipped with the product (used when a caller passes no rule engine).
DEFAULT_RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
LEAK_OUTCOMES: tuple[str, ...] = (
    "applied",  # a leak rule fired: actions and/or alerts
    "no_match",  # nobody in the registry
    "stale",  # the breach is older than the subject's last credential change
    "offboarded",  # recorded only (no rule runs)
    "no_grants",  # a registry identity that holds nothing: recorded only (no rule runs)
    "ignored",  # spam list or fabricated breach
    "no_rule",  # the subject reached the rules and none fired: recorded only
    "review",  # an old breach and no credential-change fact: a low finding, no rule runs
    "rule_error",  # no rule fired and at least one failed (dead-lettered, counted)
)


@dataclass(frozen=True)
class LeakSettings:
    """``leaks.*`` settings: ``plus_tag_domains`` (domains where ``a+tag@d`` is ``a@d``),
    ``hmac_key`` (the key of password HMACs), ``include_spam_lists``,
    ``include_fabricated``, ``review_after_days`` (an identity with no credential-change fact
    and a breach older than this is a finding for review, not a page)."""

    plus_tag_domains: frozenset[str] = frozenset()
    hmac_key: Secret | None = None
    include_spam_lists: bool = False
    include_fabricated: bool = False
    review_after_days: float = 365.0

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> LeakSettings:
        domains = settings.get("plus_tag_domains") or ()
        if isinstance(domains, str):
            domains = domains.split(",")
        key = settings.get("hmac_key")
        return cls(
            plus_tag_domains=frozenset(
                d.strip().lower().lstrip("@") for d in domains if str(d).strip()
            ),
            hmac_key=Secret.parse(key) if isinstance(key, str) and key else key or None,
            include_spam_lists=bool(settings.get("include_spam_lists", False)),
            include_fabricated=bool(settings.get("include_fabricated", False)),
            review_after_days=float(settings.get("review_after_days", 365.0)),
        )

    def ignored(self, record: LeakRecord) -> str | None:
        """The flag that makes ``record`` ignored, or None."""
        if "spam_list" in record.flags and not self.include_spam_lists:
            return "spam_list"
        if "fabricated" in record.flags and not self.include_fabricated:
            return "fabricated"
        return None


# --------------------------------------------------------------------------------------------
# Deciding
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeakDecision:
    """What one LeakRecord leads to. ``subjects`` lists every matched identity or account with
    its own outcome (``("identity"|"account", id, outcome)``). ``state_updates`` are whole new
    values for the lifecycle topic, published before the actions run."""

    record: LeakRecord
    outcome: str
    subjects: tuple[tuple[str, str, str], ...] = ()
    actions: tuple[Action, ...] = ()
    alerts: tuple[Alert, ...] = ()
    state_updates: tuple[IdentityState | AccountState, ...] = ()
    reason: str = ""
    #: What the leak rules concluded (fired or failed), per subject, in order.
    detections: tuple[Detection, ...] = ()
    #: Low-severity findings for review (``review`` subjects): never paged, never acted on.
    findings: tuple[dict[str, Any], ...] = ()

    @property
    def plan_key(self) -> str:
        """The plan id under which the engine runs the actions (one per record)."""
        return self.record.cause

    def to_dict(self) -> dict[str, Any]:
        """The audit view: the subject hashed, actions without params."""
        return {
            "kind": "leak",
            "breach": self.record.breach,
            "source": self.record.source,
            "subject": self.record.subject,
            "cause": self.record.cause,
            "outcome": self.outcome,
            "subjects": [list(s) for s in self.subjects],
            "actions": [a.replay_view() for a in self.actions],
            "alerts": [a.to_dict() for a in self.alerts],
            "rules": [d.rule for d in self.detections if d.error is None],
            "findings": [dict(f) for f in self.findings],
            "reason": self.reason,
        }


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parse_time(value, "state")
    except ValidationError:
        return None


def credential_cutoff(
    registry: Registry, lifecycle: StateStore, identity_id: str
) -> datetime | None:
    """The latest credential change known for an identity (registry or lifecycle)."""
    ident = registry.identities.get(identity_id)
    life = lifecycle.identity(identity_id)
    times = [
        t
        for t in (
            ident.credential_changed_at if ident is not None else None,
            _time(life.credential_changed_at),
            _time(life.reenrolled_at),
        )
        if t is not None
    ]
    return max(times) if times else None


def _stale(record: LeakRecord, cutoff: datetime | None) -> bool:
    exposed = record.exposed_at
    return exposed is not None and cutoff is not None and exposed <= cutoff


def review_finding(
    record: LeakRecord, identity_id: str, now: datetime, settings: LeakSettings
) -> dict[str, Any] | None:
    """The finding for an identity with no credential-change fact when ``record`` is older
    than ``settings.review_after_days`` at ``now`` (None: decide it as usual). The subject is
    the hashed one, never the e-mail."""
    exposed = record.exposed_at
    if exposed is None:
        return None
    age_days = (now - exposed).total_seconds() / 86400.0
    if age_days <= settings.review_after_days:
        return None
    return {
        "type": "finding",
        "finding": "old_breach_no_credential_change",
        "severity": "low",
        "identity": identity_id,
        "breach": record.breach,
        "source": record.source,
        "subject": record.subject,
        "exposed_at": format_time(exposed),
        "age_days": int(age_days),
        "credential": record.credential_exposed,
        "cause": record.cause,
        "reason": (
            f"breach {record.breach} is {int(age_days)} days old (review horizon "
            f"{settings.review_after_days:g} days) and nothing records a password change "
            "since: ask the person, or record credential_changed_at in the registry"
        ),
    }


_DEFAULT_ENGINES: dict[tuple[tuple[str, str], ...], RuleEngine] = {}


def default_leak_rules(providers: Mapping[str, str]) -> RuleEngine:
    """A rule engine over the shipped ``rules/`` directory (:data:`DEFAULT_RULES_DIR`), for
    callers that have no configured rule set (tests, library use). Loaded once per provider
    map; an invalid or missing directory raises :class:`~streams.support.errors.RuleError`."""
    key = tuple(sorted(providers.items()))
    engine = _DEFAULT_ENGINES.get(key)
    if engine is None:
        engine = RuleEngine(load_rules(DEFAULT_RULES_DIR), providers)
        _DEFAULT_ENGINES[key] = engine
    return engine


def _respond(
    engine: RuleEngine,
    subject: LeakSubject,
    registry: Registry,
    lifecycle: StateStore,
) -> tuple[str, list[Detection], list[Action], list[Alert], bool]:
    """Ask the leak rules about one subject: its outcome (``applied`` when a rule fired,
    ``rule_error`` when none did and one failed, ``no_rule`` otherwise), every detection,
    the actions (each idempotency key once) and alerts, and whether a stable rule that fired
    declared ``force_mfa_reenrolment`` (the identity then owes a re-enrolment, even when no
    IdP alias let it be forced automatically)."""
    detections = engine.evaluate_leak(subject, registry, lifecycle)
    fired = [d for d in detections if d.error is None]
    actions = unique_actions(d.actions for d in fired)
    alerts = [a for d in fired for a in d.alerts]
    by_id = {r.id: r for r in engine.leak_rules}
    reenrol = any(
        by_id[d.rule].status == "stable" and "force_mfa_reenrolment" in by_id[d.rule].response
        for d in fired
        if d.rule in by_id
    )
    if fired:
        outcome = "applied"
    elif detections:
        outcome = "rule_error"
    else:
        outcome = "no_rule"
    return outcome, detections, actions, alerts, reenrol


def decide_leak(
    registry: Registry,
    lifecycle: StateStore,
    record: LeakRecord,
    now: datetime,
    providers: Mapping[str, str],
    *,
    index: LeakIndex | None = None,
    settings: LeakSettings | None = None,
    rules: RuleEngine | None = None,
) -> LeakDecision:
    """Decide what ``record`` means at ``now`` (see the module docstring). ``index`` should be
    the worker's long-lived :class:`LeakIndex`; without one it is built here (slow: tests and
    replay only). ``rules`` is the worker's rule engine (its ``inputs: [leak]`` rules decide
    the responses); without one the shipped ``rules/`` directory is used
    (:func:`default_leak_rules`). Pure: no I/O, no clock."""
    settings = settings or LeakSettings()
    flag = settings.ignored(record)
    if flag is not None:
        return LeakDecision(record, "ignored", reason=f"breach flagged {flag}")
    index = index or LeakIndex.build(registry, settings.plus_tag_domains)
    match = index.lookup(record.principal)
    if match is None:
        return LeakDecision(record, "no_match", reason="not a registry e-mail, alias or login")
    engine = rules if rules is not None else default_leak_rules(providers)
    cause = record.cause
    subjects: list[tuple[str, str, str]] = []
    actions: list[Action] = []
    alerts: list[Alert] = []
    detections: list[Detection] = []
    updates: list[IdentityState | AccountState] = []
    findings: list[dict[str, Any]] = []

    for identity_id in match.identities:
        identity = registry.identities.get(identity_id)
        if identity is None:
            continue
        if is_offboarded(registry, lifecycle, identity_id):
            subjects.append(("identity", identity_id, "offboarded"))
            continue
        cutoff = credential_cutoff(registry, lifecycle, identity_id)
        if _stale(record, cutoff):
            subjects.append(("identity", identity_id, "stale"))
            continue
        life = lifecycle.identity(identity_id)
        if not effective_roles(registry, life):
            subjects.append(("identity", identity_id, "no_grants"))
            continue
        finding = review_finding(record, identity_id, now, settings) if cutoff is None else None
        if finding is not None:
            subjects.append(("identity", identity_id, "review"))
            findings.append(finding)
            continue
        subject = LeakSubject(record, "identity", identity_id)
        outcome, found, made, raised, reenrol = _respond(engine, subject, registry, lifecycle)
        subjects.append(("identity", identity_id, outcome))
        detections.extend(found)
        actions.extend(made)
        alerts.extend(raised)
        if reenrol:
            updates.append(replace(life, mfa_reenrolment_required=True))

    for account_id in match.accounts:
        account = registry.accounts.get(account_id)
        shared = account.shared_credential if account is not None else None
        if account is None or shared is None:
            continue
        acct = lifecycle.account(account_id)
        if _stale(record, _time(acct.rotated_at)):
            subjects.append(("account", account_id, "stale"))
            continue
        subject = LeakSubject(record, "shared_account", account_id)
        outcome, found, made, raised, _ = _respond(engine, subject, registry, lifecycle)
        subjects.append(("account", account_id, outcome))
        detections.extend(found)
        actions.extend(made)
        alerts.extend(raised)
        if any(a.action == "rotate_shared_credential" for a in made):
            holders = shared_credential_holders(registry, lifecycle, account_id)
            updates.append(replace(acct, reenrolment_required=tuple(holders), rotated_cause=cause))

    outcomes = {s[2] for s in subjects}
    if "applied" in outcomes:
        outcome = "applied"
    elif len(outcomes) == 1:
        outcome = outcomes.pop()
    elif outcomes:
        outcome = next((o for o in ("review", "stale") if o in outcomes), sorted(outcomes)[0])
    else:
        outcome = "no_match"
    reason = "; ".join(f"{kind} {ident}: {out}" for kind, ident, out in subjects)
    return LeakDecision(
        record=record,
        outcome=outcome,
        subjects=tuple(subjects),
        actions=tuple(actions),
        alerts=tuple(alerts),
        state_updates=tuple(updates),
        reason=reason,
        detections=tuple(detections),
        findings=tuple(findings),
    )


def state_after_action(
    lifecycle: StateStore, action: Action, finished_at: float
) -> IdentityState | None:
    """The lifecycle update once ``action`` is done (call from the executor's completion):
    a completed ``force_mfa_reenrolment`` records ``reenrolled_at`` and clears
    ``mfa_reenrolment_required``, so later leaks of older breaches are stale."""
    if action.action != "force_mfa_reenrolment" or action.identity.startswith("shared:"):
        return None
    life = lifecycle.identity(action.identity)
    when = datetime.fromtimestamp(finished_at, UTC)
    before = _time(life.reenrolled_at)
    if before is not None and before >= when:
        return None
    return replace(life, reenrolled_at=format_time(when), mfa_reenrolment_required=False)


# --------------------------------------------------------------------------------------------
# Replay and transport helpers
# --------------------------------------------------------------------------------------------


def leak_decision_view(decision: LeakDecision) -> list[dict[str, Any]]:
    """The replay output objects for one leak decision: actions, then alerts, then findings
    for review; a ``skipped`` object when none, so every input line is accounted for."""
    if not decision.actions and not decision.alerts and not decision.findings:
        return [
            {
                "type": "skipped",
                "event_id": decision.record.cause,
                "identity": next((s[1] for s in decision.subjects if s[0] == "identity"), None),
                "outcome": decision.outcome,
                "reason": decision.reason,
            }
        ]
    out = [a.replay_view() for a in decision.actions]
    out.extend(a.replay_view() for a in decision.alerts)
    out.extend(dict(f) for f in decision.findings)
    return out


def findings_in(lines: Iterable[str | bytes]) -> tuple[list[dict[str, Any]], int]:
    """The review findings in NDJSON lines — an audit export (``accessguard audit export``:
    records with ``kind: leak`` carry ``findings``) or ``accessguard replay`` output
    (``type: finding``) — each once (by breach cause and identity: a re-import audits the same
    finding again), oldest breach first; and how many lines were not JSON objects."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    unreadable = 0
    for raw in lines:
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            unreadable += 1
            continue
        if not isinstance(obj, dict):
            unreadable += 1
            continue
        if obj.get("type") == "finding":
            items: list[Any] = [obj]
        elif obj.get("kind") == "leak" and isinstance(obj.get("findings"), list):
            items = obj["findings"]
        else:
            continue
        for item in items:
            if isinstance(item, dict) and item.get("type") == "finding":
                found.setdefault((str(item.get("cause")), str(item.get("identity"))), item)

    def oldest_first(f: dict[str, Any]) -> tuple[str, str]:
        return str(f.get("exposed_at", "")), str(f.get("identity", ""))

    return sorted(found.values(), key=oldest_first), unreadable
