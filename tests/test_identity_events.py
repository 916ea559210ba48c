"""Identity-security events: the canonical IdentityEvent, the Okta/Entra/Google security
normalisers with their allow-lists (hand-written fixtures for each quirk the vendor samples
teach), the counted drop, and the identity-event rules (``inputs: [identity_event]``)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.base.identity import NotSecurityEvent
from connectors.base.sources import RAW_SECURITY_NORMALISERS, normalise_all
from connectors.entra import security as entra
from connectors.google import security as google
from connectors.okta import security as okta
from streams.detect.identity import DedupMemory, IdentityRules, resolve_subjects
from streams.detect.load import parse_rule
from streams.detect.model import RuleSet
from streams.model.identity import IDENTITY_EVENT_TYPES, IdentityEvent
from streams.model.records import LoginEvent
from streams.model.registry import Registry
from streams.model.registry_yaml import load_registry
from streams.model.state import StateStore
from streams.support import metrics
from streams.support.errors import ValidationError
from tests import samples

REPO = Path(__file__).resolve().parent.parent

OKTA_GRANT: dict[str, Any] = {
    "uuid": "2a992f80-0000-4000-8000-000000000001",
    "published": "2026-03-02T09:00:00.496000000Z",  # nine fractional digits
    "eventType": "user.account.privilege.grant",
    "severity": "INFO",
    "actor": {"id": "00u-bob", "type": "User", "alternateId": "Bob@Brand.example"},
    "client": {
        "ipAddress": "null",  # the string "null": fall back to the chain
        "geographicalContext": {"country": "France", "geolocation": {"lat": 48.9, "lon": 2.8}},
    },
    "request": {"ipChain": [{"ip": "194.88.246.242"}]},
    "outcome": {"result": "SUCCESS"},
    "target": [{"id": "00u-alice", "type": "User", "alternateId": "alice@brand.example"}],
    "debugContext": {"debugData": {"privilegeGranted": "Super administrator"}},
}


def okta_event(event_type: str, **changes: Any) -> dict[str, Any]:
    event = copy.deepcopy(OKTA_GRANT)
    event["eventType"] = event_type
    event.update(changes)
    return event


def only(events: list[LoginEvent | IdentityEvent]) -> IdentityEvent:
    found = [e for e in events if isinstance(e, IdentityEvent)]
    assert len(found) == 1, events
    return found[0]


# ---- the record ----------------------------------------------------------------------------


def test_identity_event_round_trips_through_its_topic_format() -> None:
    """to_dict -> from_dict gives the same record (the topic and replay format)."""
    event = only(okta.normalise_all(OKTA_GRANT))
    assert IdentityEvent.from_dict(orjson.loads(orjson.dumps(event.to_dict()))) == event


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type": "password_changed"}, "not an identity event type"),
        ({"extra": 1}, "unknown field"),
        ({"type": "account_disabled_by_vendor", "reason": "spam"}, "reason: must be one of"),
        ({"app_verified": "yes"}, "app_verified: expected a boolean"),
        ({"principal": None}, "principal: required"),
        ({"risk": "extreme"}, "risk: must be one of"),
    ],
)
def test_identity_event_refuses_what_is_not_canonical(change: dict[str, Any], message: str) -> None:
    """from_dict names the first field that is wrong."""
    data = {"event_id": "e1", "time": "2026-03-02T09:00:00Z", "type": "api_token_created",
            "principal": "a@b.example", "vendor": "okta", **change}  # fmt: skip
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(ValidationError, match=message):
        IdentityEvent.from_dict(data)


def test_by_other_compares_identities_then_principals() -> None:
    """The vendor acting (actor None) is someone else; the same identity is not."""
    base = only(okta.normalise_all(OKTA_GRANT))
    assert base.by_other
    assert not IdentityEvent.from_dict({**base.to_dict(), "actor": base.principal}).by_other
    same = {**base.to_dict(), "identity": "alice", "actor_identity": "alice"}
    assert not IdentityEvent.from_dict(same).by_other
    assert IdentityEvent.from_dict({**base.to_dict(), "actor": None}).by_other


# ---- Okta ----------------------------------------------------------------------------------


def test_okta_privilege_grant_names_target_actor_privilege_and_chain_ip() -> None:
    """The subject is the User target, the actor the admin; "null" IP falls back to the chain."""
    event = only(okta.normalise_all(OKTA_GRANT))
    assert (event.type, event.principal, event.actor) == (
        "admin_privilege_granted", "alice@brand.example", "bob@brand.example")  # fmt: skip
    assert event.principal_id == "00u-alice"
    assert event.actor_id == "00u-bob"
    assert event.privilege == "Super administrator"
    assert event.ip == "194.88.246.242"
    assert event.geo is not None
    assert event.geo.country == "France"
    assert event.event_id.startswith("okta:2a992f80-0000-4000-8000-000000000001:")


@pytest.mark.parametrize(
    ("event_type", "kind"),
    [
        ("user.mfa.factor.deactivate", "mfa_factor_removed"),
        ("system.mfa.factor.deactivate", "mfa_factor_removed"),
        ("user.mfa.factor.reset_all", "mfa_factor_reset"),
        ("user.mfa.factor.activate", "mfa_factor_enrolled"),
        ("system.api_token.create", "api_token_created"),
        ("user.session.impersonation.grant", "impersonation_granted"),
        ("user.account.reset_password", "admin_password_reset"),
        ("app.oauth2.as.consent.grant", "oauth_consent"),
        ("security.threat.detected", "vendor_suspicious_login"),
    ],
)
def test_okta_security_types_map_to_the_canonical_vocabulary(event_type: str, kind: str) -> None:
    """Each allow-listed eventType becomes its canonical type."""
    assert only(okta.normalise_all(okta_event(event_type))).type == kind


def test_okta_event_without_target_or_outcome_is_about_the_actor() -> None:
    """Okta's own impersonation example has no target and no outcome: done, by the actor."""
    event = okta_event("user.session.impersonation.grant")
    del event["target"], event["outcome"]
    found = only(okta.normalise_all(event))
    assert found.principal == "bob@brand.example"
    assert not found.by_other


def test_okta_system_principal_is_no_person() -> None:
    """A SystemPrincipal actor (Okta itself) leaves actor None: someone else did it."""
    event = okta_event("user.mfa.factor.reset_all")
    event["actor"] = {"id": "0oa1", "type": "SystemPrincipal", "alternateId": "system@okta.com"}
    found = only(okta.normalise_all(event))
    assert found.actor is None
    assert found.by_other


def test_okta_app_consent_names_the_app() -> None:
    """The AppInstance target is the consented app; its id travels in details."""
    event = okta_event("app.oauth2.as.consent.grant")
    event["target"] = [{"id": "0oa-app", "type": "AppInstance", "displayName": "Scheduler"},
                       *event["target"]]  # fmt: skip
    found = only(okta.normalise_all(event))
    assert found.app == "Scheduler"
    assert found.details["client_id"] == "0oa-app"


def test_okta_risky_session_start_is_a_login_and_a_vendor_warning() -> None:
    """user.session.start with Okta risk high gives the LoginEvent and a warning."""
    event = okta_event("user.session.start")
    event["debugContext"] = {"debugData": {"risk": "{level=HIGH, reasons=New Country}"}}
    out = okta.normalise_all(event)
    assert [type(e).__name__ for e in out] == ["LoginEvent", "IdentityEvent"]
    assert only(out).type == "vendor_suspicious_login"
    assert only(out).risk == "high"
    event["debugContext"] = {"debugData": {"risk": "{level=LOW}"}}
    assert [type(e).__name__ for e in okta.normalise_all(event)] == ["LoginEvent"]


def test_okta_failed_and_non_security_events_are_dropped_not_rejected() -> None:
    """A FAILURE grant did not happen; user.lifecycle.create is not security: both dropped."""
    failed = okta_event("user.account.privilege.grant", outcome={"result": "FAILURE"})
    with pytest.raises(NotSecurityEvent, match="outcome FAILURE") as caught:
        okta.normalise_all(failed)
    assert caught.value.code == "not_applied"
    with pytest.raises(NotSecurityEvent, match=r"not a security event: user\.lifecycle\.create"):
        okta.normalise_all(okta_event("user.lifecycle.create"))


def test_okta_unusable_security_event_is_still_rejected() -> None:
    """A security event with a placeholder time is a ValidationError (dead-lettered)."""
    with pytest.raises(ValidationError, match="published: placeholder"):
        okta.normalise_all(okta_event("system.api_token.create", published="redacted"))


# ---- Entra directory audits ----------------------------------------------------------------

ENTRA_ROLE: dict[str, Any] = {
    "id": "Directory_ABC_1",
    "category": "RoleManagement",
    "activityDateTime": "2026-03-02T09:00:00.1234567Z",  # seven fractional digits
    "activityDisplayName": "Add member to role",
    "loggedByService": "Core Directory",
    "result": "success",
    "initiatedBy": {
        "user": {
            "id": "u-bob",
            "userPrincipalName": "bob@brand.example",
            "ipAddress": "<IP ADDRESS>",
        }
    },
    "targetResources": [
        {
            "id": "u-alice",
            "type": "User",
            "userPrincipalName": "Alice@Brand.example",
            "modifiedProperties": [
                {
                    "displayName": "Role.DisplayName",
                    "oldValue": None,
                    "newValue": '"Global Administrator"',
                },
            ],
        }
    ],
}


def entra_audit(activity: str, **changes: Any) -> dict[str, Any]:
    record = copy.deepcopy(ENTRA_ROLE)
    record["activityDisplayName"] = activity
    record.update(changes)
    return record


def test_entra_role_assignment_reads_role_target_and_actor() -> None:
    """The role name comes quoted in modifiedProperties; placeholder IPs are dropped."""
    found = only(entra.normalise_all(ENTRA_ROLE))
    assert (found.type, found.principal, found.actor, found.privilege) == (
        "admin_privilege_granted", "alice@brand.example", "bob@brand.example",
        "Global Administrator")  # fmt: skip
    assert found.ip is None
    assert found.details["loggedByService"] == "Core Directory"


def test_entra_app_actor_and_consent_without_user_target() -> None:
    """An app initiator is someone else; a consent's subject is the consenting user."""
    by_app = entra_audit("Reset user password", initiatedBy={"app": {"displayName": "HelpBot"}})
    assert only(entra.normalise_all(by_app)).actor == "app:helpbot"
    consent = entra_audit(
        "Consent to application",
        targetResources=[{"id": "sp-1", "type": "ServicePrincipal", "displayName": "Quiz"}],
    )
    found = only(entra.normalise_all(consent))
    assert (found.type, found.principal, found.app) == (
        "oauth_consent",
        "bob@brand.example",
        "Quiz",
    )
    assert not found.by_other


def test_entra_failed_and_other_activities_are_dropped() -> None:
    """result failure -> not_applied; "Update user" is not on the allow-list."""
    with pytest.raises(NotSecurityEvent, match="result failure"):
        entra.normalise_all(entra_audit("Add member to role", result="failure"))
    with pytest.raises(NotSecurityEvent, match="Update user"):
        entra.normalise_all(entra_audit("Update user"))


def test_entra_audit_without_a_user_is_rejected() -> None:
    """A role assignment whose target is a group names no subject: rejected with the reason."""
    record = entra_audit("Add member to role", targetResources=[{"type": "Group", "id": "g"}])
    with pytest.raises(ValidationError, match="no user in targetResources"):
        entra.normalise_all(record)


def test_entra_high_risk_sign_in_is_a_login_and_a_warning() -> None:
    """A sign-in rated high risk by Entra also yields vendor_suspicious_login."""
    signin = {"id": "s1", "createdDateTime": "2026-03-02T09:00:00Z",
              "userPrincipalName": "alice@brand.example", "status": {"errorCode": 0},
              "riskLevelDuringSignIn": "high", "ipAddress": "203.0.113.9"}  # fmt: skip
    out = entra.normalise_all(signin)
    assert isinstance(out[0], LoginEvent)
    assert only(out).type == "vendor_suspicious_login"
    assert only(out).event_id == f"{out[0].event_id}:risk"


# ---- Google Reports ------------------------------------------------------------------------


def activity(app: str, *events: dict[str, Any], actor: str | None = "admin@brand.example") -> Any:
    return {
        "kind": "admin#reports#activity",
        "id": {
            "time": "2026-03-02T09:00:00.000Z",
            "uniqueQualifier": "-42",
            "applicationName": app,
            "customerId": "C1",
        },
        "actor": {"email": actor, "profileId": 1234} if actor else {"callerType": "KEY"},
        "ipAddress": "198.51.100.7",
        "events": list(events),
    }


def test_google_password_leak_disable_is_by_the_vendor() -> None:
    """account_disabled_password_leak: reason password_leak, subject the affected address,
    actor None (Google), time from login_timestamp given as a string of digits."""
    act = activity("login", {"type": "account_warning", "name": "account_disabled_password_leak",
                             "parameters": [{"name": "affected_email_address",
                                             "value": "Sam@Brand.example"},
                                            {"name": "login_timestamp",
                                             "value": "1772442000000000"}]})  # fmt: skip
    found = only(google.normalise_all(act))
    assert (found.type, found.reason, found.principal, found.actor) == (
        "account_disabled_by_vendor", "password_leak", "sam@brand.example", None)  # fmt: skip
    assert found.time.year == 2026


def test_google_activity_mixing_login_and_warning_gives_both() -> None:
    """A suspicious_login is a login event and a vendor warning; logout in it is skipped."""
    act = activity(
        "login",
        {"name": "logout"},
        {"type": "account_warning", "name": "suspicious_login"},
        actor="alice@brand.example",
    )
    out = google.normalise_all(act)
    assert [type(e).__name__ for e in out] == ["LoginEvent", "IdentityEvent"]
    assert only(out).event_id.endswith("#1:" + only(out).event_id.rsplit(":", 1)[1])


def test_google_admin_role_and_password_change_need_the_user() -> None:
    """ASSIGN_ROLE reads USER_EMAIL and ROLE_NAME; without USER_EMAIL the admin is not
    blamed as the subject: rejected."""
    params = [
        {"name": "USER_EMAIL", "value": "bob@brand.example"},
        {"name": "ROLE_NAME", "value": "_SEED_ADMIN_ROLE"},
    ]
    grant = activity("admin", {"type": "DELEGATED_ADMIN_SETTINGS", "name": "ASSIGN_ROLE",
                               "parameters": params})  # fmt: skip
    found = only(google.normalise_all(grant))
    assert (found.principal, found.actor, found.privilege) == (
        "bob@brand.example", "admin@brand.example", "_SEED_ADMIN_ROLE")  # fmt: skip
    with pytest.raises(ValidationError, match="no USER_EMAIL"):
        google.normalise_all(activity("admin", {"name": "CHANGE_PASSWORD", "parameters": []}))


def test_google_token_authorize_is_a_consent_with_its_scopes() -> None:
    """token authorize: app_name, client_id and the scope multiValue."""
    act = activity("token", {"name": "authorize", "parameters": [
        {"name": "app_name", "value": "Quiz"}, {"name": "client_id", "value": "123.apps"},
        {"name": "scope", "multiValue": ["https://mail.google.com/", "openid"]}]},
        actor="bob@brand.example")  # fmt: skip
    found = only(google.normalise_all(act))
    assert (found.type, found.app, found.principal) == (
        "oauth_consent",
        "Quiz",
        "bob@brand.example",
    )
    assert found.details["scopes"] == "https://mail.google.com/ openid"


def test_google_other_applications_and_names_are_dropped() -> None:
    """drive activities and token revoke are not security events."""
    with pytest.raises(NotSecurityEvent, match="application: drive"):
        google.normalise_all(activity("drive", {"name": "view"}))
    with pytest.raises(NotSecurityEvent, match="token:revoke"):
        google.normalise_all(activity("token", {"name": "revoke"}))


# ---- sources: the counted drop -------------------------------------------------------------


def test_dropped_events_are_counted_per_source_and_reason_not_rejected() -> None:
    """normalise_all answers [] for an allow-listed drop and counts it."""
    child = metrics.IDENTITY_EVENTS_DROPPED.labels("okta", "not_security_type")
    before = child._value.get()
    assert normalise_all("okta", okta_event("group.user_membership.add")) == []
    assert child._value.get() == before + 1
    with pytest.raises(ValidationError, match="eventType: missing"):
        normalise_all("okta", {"published": "2026-03-02T09:00:00Z"})


def test_generic_source_takes_canonical_identity_events() -> None:
    """The generic vendor accepts the canonical IdentityEvent shape beside logins."""
    data = {"event_id": "g1", "time": "2026-03-02T09:00:00Z", "type": "api_token_created",
            "principal": "alice@brand.example"}  # fmt: skip
    assert only(normalise_all("generic", data)).type == "api_token_created"


@pytest.mark.parametrize("vendor", ["okta", "entra", "google"])
def test_every_vendor_sample_is_a_record_a_rejection_or_a_counted_drop(vendor: str) -> None:
    """The third-party samples: never a crash, every result canonical."""
    lines = samples.sample_text(f"{vendor}.ndjson").splitlines()
    kinds: set[str] = set()
    reasons: list[str] = []
    for line in lines:
        try:
            payload = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        try:
            out = RAW_SECURITY_NORMALISERS[vendor](payload)
        except ValidationError as exc:
            reasons.append(exc.reason)
            continue
        for event in out:
            if isinstance(event, IdentityEvent):
                assert event.type in IDENTITY_EVENT_TYPES
                # the topic format keeps milliseconds, as for logins
                assert IdentityEvent.from_dict(event.to_dict()).to_dict() == event.to_dict()
                kinds.add(event.type)
    expected = {
        "okta": {"admin_privilege_granted", "impersonation_granted", "mfa_factor_removed",
                 "api_token_created", "admin_password_reset"},
        "entra": {"vendor_suspicious_login"},
        "google": {"account_disabled_by_vendor", "vendor_suspicious_login"},
    }[vendor]  # fmt: skip
    assert expected <= kinds
    assert all(reasons), "every rejection says why"


def test_google_samples_password_leak_and_hijack_lines() -> None:
    """google lines 1 and 8 (PROVENANCE): Google disabled foo@elastic.co, leak then hijack."""
    lines = samples.sample_text("google.ndjson").splitlines()
    first = only(google.normalise_all(orjson.loads(lines[0])))
    eighth = only(google.normalise_all(orjson.loads(lines[7])))
    assert (first.reason, eighth.reason) == ("password_leak", "hijacked")
    assert first.principal == "foo@elastic.co"


# ---- identity rules ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(REPO / "rules" / "tests" / "registry.yaml")


def rules(*ids: str) -> IdentityRules:
    found = []
    for rule_id in ids:
        rule, problems = parse_rule(
            (REPO / "rules" / f"{rule_id}.yaml").read_text(), f"{rule_id}.yaml"
        )
        assert rule is not None, problems
        found.append(rule)
    return IdentityRules(RuleSet(tuple(found)), {"okta-corp": "okta", "entra-corp": "graph",
                                                 "google-corp": "google"})  # fmt: skip


def test_okta_grant_resolves_by_vendor_user_id_and_fires(registry: Registry) -> None:
    """The normalised Okta grant resolves alice by her Okta id (00u-alice) and bob as actor."""
    event = resolve_subjects(only(okta.normalise_all(OKTA_GRANT)), registry)
    assert (event.identity, event.actor_identity) == ("alice", "bob")
    found = rules("admin_privilege_granted").evaluate(event, registry, StateStore(), DedupMemory())
    assert [d.rule for d in found] == ["admin_privilege_granted"]
    alert = found[0].alerts[0]
    assert "alice@brand.example" not in orjson.dumps(alert.details).decode()
    assert alert.details["actor"] == "bob"
    assert alert.details["privilege"] == "Super administrator"


def test_vendor_disable_acts_with_the_rule_cause_and_dedups(registry: Registry) -> None:
    """A stable rule's actions carry rule:<id>:<event id>; a second event within dedup is
    deduplicated; an hour later it alerts again."""
    engine = rules("vendor_disabled_compromised")
    memory = DedupMemory()
    data = {"event_id": "e1", "vendor": "google", "time": "2026-03-02T09:00:00Z",
            "type": "account_disabled_by_vendor", "reason": "hijacked",
            "principal": "sam@brand.example"}  # fmt: skip
    first = engine.evaluate(resolve_subjects(IdentityEvent.from_dict(data), registry), registry,
                            StateStore(), memory)  # fmt: skip
    assert first[0].actions
    assert {a.cause for a in first[0].actions} == {"rule:vendor_disabled_compromised:e1"}
    again = {**data, "event_id": "e2", "time": "2026-03-02T09:10:00Z"}
    second = engine.evaluate(resolve_subjects(IdentityEvent.from_dict(again), registry), registry,
                             StateStore(), memory)  # fmt: skip
    assert second[0].deduplicated
    assert not second[0].alerts
    later = {**data, "event_id": "e3", "time": "2026-03-02T10:00:00Z"}
    third = engine.evaluate(resolve_subjects(IdentityEvent.from_dict(later), registry), registry,
                            StateStore(), memory)  # fmt: skip
    assert third[0].alerts


def test_identity_rule_errors_are_reported_per_rule(registry: Registry) -> None:
    """A rule that raises becomes a Detection with error set, never "no alert"."""
    engine = rules("impersonation_granted")
    engine._compiled = ((engine.rules[0], lambda c: 1 / 0),)  # type: ignore[assignment,misc]
    data = {"event_id": "e1", "time": "2026-03-02T09:00:00Z", "type": "impersonation_granted",
            "principal": "x@y.example"}  # fmt: skip
    found = engine.evaluate(IdentityEvent.from_dict(data), registry, StateStore(), DedupMemory())
    assert found[0].error is not None
    assert "ZeroDivisionError" in found[0].error


IDENTITY_RULE = """
id: {id}
title: t
description: d
status: staged
severity: low
runbook: docs/runbooks/x.md
falsepositives: [none]
inputs: {inputs}
kind: {kind}
conditions:
  - {{field: {field}, op: eq, value: true}}
dedup: 0
response: [{response}]
tests:
  - name: a
    expect: fire
    events: [{{type: api_token_created, principal: a@b.example}}]
  - name: b
    expect: no_fire
    events: [{{type: api_token_created, principal: a@b.example}}]
"""


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"inputs": "[identity_event, login]"}, "reads those events only"),
        ({"kind": "threshold"}, "is a match rule"),
        ({"field": "grant.exists"}, "grant.exists"),
        ({"response": "remove_grant"}, "remove_grant"),
    ],
)
def test_identity_rule_schema_refuses_what_it_cannot_evaluate(
    changes: dict[str, str], message: str
) -> None:
    """Mixed inputs, stateful kinds, login-only fields and remove_grant are load errors."""
    values = {"id": "r", "inputs": "[identity_event]", "kind": "match",
              "field": "by_other", "response": "notify", **changes}  # fmt: skip
    rule, problems = parse_rule(IDENTITY_RULE.format(**values), "r.yaml")
    assert rule is None
    assert any(message in p for p in problems), problems
