"""What a fired rule becomes once its actions are known: the one-line "what was done", the
route its response asks for, and the :class:`~streams.detect.model.Detection` carrying its
alert. Shared by the login rules (:mod:`streams.detect.engine`) and the identity-event rules
(:mod:`streams.detect.identity`), so both say the same things in the same words and build
their dedup keys the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streams.detect.model import Detection, Rule
from streams.model.records import Action, Alert, idempotency_key

#: Longest group key kept readable in an alert's dedup key (a PagerDuty dedup_key holds 255
#: characters); longer ones, and principals (personal data), are hashed.
MAX_GROUP_IN_KEY = 120


def group_part(key: str) -> str:
    """The group key as it appears in dedup keys: hashed for a principal or a long key."""
    if key.startswith("principal:") or len(key) > MAX_GROUP_IN_KEY:
        return idempotency_key(key)[:16]
    return key


def what_was_done(
    rule: Rule, actions: Sequence[Action], notes: Sequence[str], dropped: Sequence[str]
) -> str:
    """One line for the alert: the actions requested by kind and provider, or why none."""
    if actions:
        by_kind: dict[str, list[str]] = {}
        for a in actions:
            by_kind.setdefault(a.action, []).append(a.provider)
        return "accessguard requested " + "; ".join(
            f"{kind} at {', '.join(sorted(set(p)))}" for kind, p in by_kind.items()
        )
    if dropped:
        return (
            f"nothing: rule is {rule.status}, so its response ({', '.join(dropped)}) "
            "was not executed"
        )
    if notes:  # a response was asked for and none could be carried out: say so
        return f"nothing: its response could not be carried out ({'; '.join(notes)})"
    return "nothing automatic: a human decides"


def route_of(rule: Rule) -> str:
    """``page``, ``notify`` or "" (neither), as the rule's response asks."""
    if "page" in rule.response:
        return "page"
    return "notify" if "notify" in rule.response else ""


def detection(
    rule: Rule,
    *,
    key: str,
    bucket: str,
    title: str,
    why: str,
    event_id: str,
    identity: str | None,
    details: dict[str, Any],
    actions: Sequence[Action],
    notes: Sequence[str],
    dropped: tuple[str, ...],
    evidence: dict[str, Any] | None = None,
) -> Detection:
    """The detection with its one alert (dedup key ``<rule>:<group part>:<bucket>``);
    ``details`` gains what was done, the actions, the route, and the notes and the dropped
    response when there are any."""
    details["done"] = what_was_done(rule, actions, notes, dropped)
    details["actions"] = [f"{a.action}@{a.provider}" for a in actions]
    details["route"] = route_of(rule) or "none"
    return alerted(
        rule,
        dedup_key=f"{rule.id}:{group_part(key)}:{bucket}",
        key=key,
        title=title,
        why=why,
        event_id=event_id,
        identity=identity,
        details=details,
        actions=actions,
        notes=notes,
        dropped=dropped,
        evidence=evidence,
    )


def alerted(
    rule: Rule,
    *,
    dedup_key: str,
    key: str,
    title: str,
    why: str,
    event_id: str,
    identity: str | None,
    details: dict[str, Any],
    actions: Sequence[Action],
    notes: Sequence[str],
    dropped: tuple[str, ...],
    evidence: dict[str, Any] | None = None,
) -> Detection:
    """The detection with its one alert under ``dedup_key`` (login, identity and leak rules
    alike); ``details`` gains the notes and the dropped response when there are any."""
    if notes:
        details["notes"] = list(notes)
    if dropped:
        details["dropped_response"] = list(dropped)
    alert = Alert(
        severity=rule.severity,
        rule=rule.id,
        identity=identity,
        dedup_key=dedup_key,
        title=title[:1000],
        details=details,
        runbook=rule.runbook,
    )
    extra: dict[str, Any] = {} if evidence is None else {"evidence": evidence}
    return Detection(
        rule=rule.id,
        severity=rule.severity,
        group_key=key,
        title=title,
        why=why,
        event_id=event_id,
        identity=identity,
        actions=tuple(actions),
        alerts=(alert,),
        dropped=dropped,
        **extra,
    )
