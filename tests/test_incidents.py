"""Incident grouping and intents (streams/runtime/incidents.py): pure bookkeeping, no I/O."""

from __future__ import annotations

from typing import Any

import pytest

from streams.model.records import Alert
from streams.runtime.incidents import (
    LEDGER_PREFIX,
    Incident,
    Incidents,
    intent_of,
    queue_key,
    subject_of,
)

T0 = 1_772_452_800.0


def rule_alert(
    rule: str = "mfa_fatigue",
    *,
    status: str | None = "stable",
    route: str = "page",
    identity: str | None = "ana",
    n: int = 0,
    severity: str = "high",
    **details: Any,
) -> Alert:
    info: dict[str, Any] = dict(details)
    if status is not None:
        info.update(rule_status=status, route=route)
    return Alert(
        severity=severity,
        rule=rule,
        identity=identity,
        dedup_key=f"{rule}:{identity}:{n}",
        title=f"{rule} about {identity}",
        details=info,
    )


@pytest.mark.parametrize(
    ("status", "route", "intent"),
    [
        ("stable", "page", "page"),
        ("stable", "notify", "notify"),
        ("stable", "none", "notify"),
        ("stable", "review", "review"),
        ("stable", "report", "review"),
        ("staged", "page", "review"),
        ("staged", "notify", "review"),
        ("deprecated", "page", "review"),
    ],
)
def test_intent_follows_the_rules_status_and_response(status: str, route: str, intent: str) -> None:
    """Only a stable rule whose response says page pages; a staged rule is for review,
    whatever its response and severity; the rest is chat."""
    assert intent_of(rule_alert(status=status, route=route, severity="critical")) == intent


def test_an_alert_no_rule_raised_has_no_intent() -> None:
    """Offboarding summaries, outages and batches keep their severity routes."""
    outage = Alert("high", "provider.outage", None, "outage:okta", "Okta is failing")
    assert intent_of(outage) is None
    assert queue_key(outage) == "outage:okta"


def test_subject_is_the_identity_else_the_shared_account_else_the_principal_hash() -> None:
    assert subject_of(rule_alert(identity="ana")) == "identity:ana"
    shared = rule_alert(identity=None, subject_kind="shared_account", account="x-brand")
    assert subject_of(shared) == "account:x-brand"
    unknown = rule_alert(identity=None, subject="3fa9c0d1e2b4")
    assert subject_of(unknown) == "subject:3fa9c0d1e2b4"
    assert queue_key(unknown) == "subject:3fa9c0d1e2b4"
    assert subject_of(rule_alert(identity=None)) == "alert:mfa_fatigue:None:0"


def test_alerts_about_one_identity_in_the_window_form_one_incident_across_rules() -> None:
    """Five alerts from three rules about ana within the window: one incident with all five
    in its timeline, its worst severity, every rule once, first and last seen."""
    ledger: dict[str, Any] = {}
    incidents = Incidents(ledger, window=600, timeline=50)
    rules = ["mfa_fatigue", "brute_force_identity", "impossible_travel"] * 2
    ids = set()
    opened = []
    for n in range(5):
        alert = rule_alert(rules[n], n=n, severity="critical" if n == 3 else "high")
        incident, new = incidents.join(alert, "page", T0 + n * 60)
        ledger[incident.ledger_key] = incident.to_dict()
        ids.add(incident.id)
        opened.append(new)
    assert opened == [True, False, False, False, False]
    assert len(ids) == 1
    stored = Incident.from_dict(ledger[LEDGER_PREFIX + "identity:ana"])
    assert stored.count == 5
    assert stored.severity == "critical"
    assert stored.rules == ["mfa_fatigue", "brute_force_identity", "impossible_travel"]
    assert [e["dedup_key"] for e in stored.timeline] == [f"{rules[n]}:ana:{n}" for n in range(5)]
    view = stored.view()
    assert view["first_seen"] == "2026-03-02T12:00:00.000Z"
    assert view["last_seen"] == "2026-03-02T12:04:00.000Z"


def test_a_quiet_window_ends_the_incident_and_other_subjects_have_their_own() -> None:
    """An alert more than ``window`` after the subject's last one opens a new incident; bob's
    alert in the middle of ana's incident opens bob's own."""
    ledger: dict[str, Any] = {}
    incidents = Incidents(ledger, window=600, timeline=50)

    def join(alert: Alert, at: float) -> tuple[Incident, bool]:
        incident, new = incidents.join(alert, "page", at)
        ledger[incident.ledger_key] = incident.to_dict()
        return incident, new

    first, _ = join(rule_alert(n=1), T0)
    bobs, bob_new = join(rule_alert(identity="bob", n=2), T0 + 300)
    same, same_new = join(rule_alert(n=3), T0 + 600)  # exactly the window: still in
    later, later_new = join(rule_alert(n=4), T0 + 600 + 600.5)
    assert bob_new
    assert bobs.id != first.id
    assert not same_new
    assert same.id == first.id
    assert later_new
    assert later.id != first.id
    assert later.count == 1


def test_the_timeline_keeps_the_most_recent_alerts_and_counts_all() -> None:
    incidents = Incidents({}, window=600, timeline=3)
    incident, _ = incidents.join(rule_alert(n=0), "page", T0)
    for n in range(1, 7):
        incident.add(rule_alert(n=n), "page", T0 + n, 3)
    assert incident.count == 7
    assert [e["dedup_key"] for e in incident.timeline] == [
        "mfa_fatigue:ana:4",
        "mfa_fatigue:ana:5",
        "mfa_fatigue:ana:6",
    ]


def test_a_restarted_process_continues_the_incident_from_the_ledger() -> None:
    """The ledger is the only memory: a new Incidents over the same ledger view (a restarted
    worker) joins the next alert to the open incident, with its sinks' threads."""
    ledger: dict[str, Any] = {}
    before = Incidents(ledger, window=600, timeline=50)
    incident, _ = before.join(rule_alert(n=1), "page", T0)
    incident.sent("chat", {"thread": "1767225600.000001"})
    incident.sent("pd", {"status": 202})
    ledger[incident.ledger_key] = incident.to_dict()

    after = Incidents(dict(ledger), window=600, timeline=50)
    again, new = after.join(rule_alert("brute_force_identity", n=2), "notify", T0 + 30)
    assert not new
    assert again.id == incident.id
    update = again.for_sink(rule_alert("brute_force_identity", n=2), "chat")
    assert update.thread == "1767225600.000001"
    assert update.dedup_key == f"incident:{incident.id}"
    assert update.title.startswith(f"[incident {incident.id}, alert 2] ")
    assert update.details["incident"]["alerts"] == 2


def test_the_incident_id_is_the_same_when_a_crash_rebuilds_it() -> None:
    """A crash after the page but before the ledger write: the redelivered alert rebuilds the
    incident with the same id, so the pager gets the same dedup key (folded, not a page)."""
    one, _ = Incidents({}, window=600, timeline=50).join(rule_alert(n=1), "page", T0)
    two, _ = Incidents({}, window=600, timeline=50).join(rule_alert(n=1), "page", T0 + 5)
    assert one.id == two.id
    assert one.dedup_key == two.dedup_key


def test_an_unreadable_ledger_entry_starts_a_new_incident() -> None:
    ledger: dict[str, Any] = {LEDGER_PREFIX + "identity:ana": {"id": "x"}}
    incident, new = Incidents(ledger, window=600, timeline=50).join(rule_alert(), "page", T0)
    assert new
    assert incident.count == 1


def test_a_first_post_is_not_marked_as_an_update() -> None:
    incident, _ = Incidents({}, window=600, timeline=50).join(rule_alert(), "page", T0)
    first = incident.for_sink(rule_alert(), "chat")
    assert first.title == "mfa_fatigue about ana"
    assert first.thread is None
    incident.sent("chat", {"status": 200})  # a webhook: posted, no thread id
    second = incident.for_sink(rule_alert(n=2), "chat")
    assert second.thread is None
    assert second.title.startswith("[incident ")
