"""Offboarding decisions on the example registry: pure functions, deterministic effects."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.decide.hr import (
    HrDecision,
    decide_agency_expiry,
    decide_hr,
    due_scheduled,
)
from streams.decide.responses import DEFAULT_SECRET_STORE
from streams.model.records import HrEvent, subject_hash
from streams.model.registry import Registry
from streams.model.registry_yaml import load_registry
from streams.model.state import AccountState, IdentityState, StateStore

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "registry.yaml"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
PROVIDERS: dict[str, str] = {
    "okta": "okta",
    "entra": "graph",
    "google": "google",
    "hootsuite": "generic",
    "meta-business": "generic",
    "vault": "secret_store",
}
EMAILS = {
    "alice": "alice.nguyen@lumen-outdoor.example",
    "bob": "bob.okafor@lumen-outdoor.example",
    "carol": "carol.ruiz@lumen-outdoor.example",
    "dan": "dan.meyer@freelance.example",
    "gina": "gina@oldco.example",
}
HR_IDS = {"alice": "E1001", "bob": "E1002", "carol": "E1003", "dan": "C2001", "gina": "gina"}


@pytest.fixture
def registry() -> Registry:
    return load_registry(EXAMPLE)


@pytest.fixture
def state() -> StateStore:
    return StateStore()


def hr(
    who: str,
    etype: str,
    event_id: str = "evt-1",
    *,
    at: datetime = NOW - timedelta(hours=1),
    **extra: Any,
) -> HrEvent:
    return HrEvent.from_dict(
        {
            "event_id": event_id,
            "type": etype,
            "employee_id": HR_IDS.get(who, who),
            "email": EMAILS.get(who, f"{who}@unknown.example"),
            "effective_at": at.isoformat(),
            "source": "workday",
            "accepted_at": 1_772_000_000.0,
            **extra,
        }
    )


def decide(
    registry: Registry, state: StateStore, event: HrEvent, now: datetime = NOW
) -> HrDecision:
    """Decide and apply the state updates, like the agent does."""
    decision = decide_hr(registry, state, event, now, PROVIDERS)
    for update in decision.state_updates:
        state.put(update)
    return decision


def of(decision: HrDecision, action: str) -> list[tuple[str | None, str]]:
    return [(a.account, a.provider) for a in decision.actions if a.action == action]


def _no_secrets_or_emails(decision: HrDecision) -> None:
    blob = orjson.dumps([a.to_dict() for a in decision.alerts]).decode().lower()
    for email in EMAILS.values():
        assert email not in blob
    assert "@lumen-outdoor.example" not in blob
    assert "secret" not in blob.replace("secret_store", "")
    assert "otpauth" not in blob


# ------------------------------------------------------------------------------ terminated


def ident_plan_steps(state: StateStore) -> tuple[int, ...]:
    return state.identity("alice").plans["evt-term-1"].steps


def test_terminated_full_story(registry: Registry, state: StateStore) -> None:
    """Termination revokes sessions at every provider that holds alice or manages one of her
    accounts, removes each grant at the account's provider, rotates the shared TOTP login she
    knew, marks the remaining holders for re-enrolment, and records her as offboarded with
    the plan and a summary alert."""
    decision = decide(registry, state, hr("alice", "terminated", "evt-term-1"))
    assert decision.outcome == "applied"
    assert decision.identity == "alice"
    assert decision.plan_id == "evt-term-1"
    cause = "hr:terminated:evt-term-1"
    assert {a.cause for a in decision.actions} == {cause}

    assert sorted(of(decision, "revoke_sessions")) == [
        (None, "entra"),
        (None, "google"),
        (None, "hootsuite"),
        (None, "meta-business"),
        (None, "okta"),
    ]
    assert sorted(of(decision, "remove_grant")) == [
        ("fb-lumen", "meta-business"),
        ("ig-lumen", "meta-business"),
        ("li-lumen", "hootsuite"),
        ("x-lumen", "hootsuite"),
        ("yt-lumen", "hootsuite"),
    ]
    assert of(decision, "rotate_shared_credential") == [("x-lumen", "vault")]
    # the account is disabled at every identity provider, OAuth tokens and app passwords
    # revoked where the provider has them (Graph ends them with the sessions)
    assert sorted(of(decision, "disable_account")) == [
        (None, "entra"),
        (None, "google"),
        (None, "okta"),
    ]
    assert sorted(of(decision, "revoke_tokens")) == [(None, "google"), (None, "okta")]
    # in the default order: disable, then revoke, then remove grants and rotate
    steps = {a.action: n for a, n in zip(decision.actions, ident_plan_steps(state), strict=True)}
    assert steps == {
        "disable_account": 0,
        "revoke_sessions": 1,
        "revoke_tokens": 1,
        "remove_grant": 2,
        "rotate_shared_credential": 2,
    }
    rotate = next(a for a in decision.actions if a.action == "rotate_shared_credential")
    assert rotate.params["credential_ref"] == "shared/x-lumen"

    okta = next(
        a for a in decision.actions if a.provider == "okta" and a.action == "revoke_sessions"
    )
    assert okta.params == {"user_ref": "00u1alicexyz0A1b2C3d4"}
    remove_ig = next(a for a in decision.actions if a.account == "ig-lumen")
    assert remove_ig.params["user_ref"] == "100200300400501"
    assert remove_ig.params["account_handle"] == "@lumenoutdoor"
    assert remove_ig.params["platform"] == "instagram"
    assert remove_ig.params["role"] == "admin"

    ident = state.identity("alice")
    assert ident.status == "offboarded"
    assert ident.status_since == "2026-03-02T11:00:00.000Z"
    assert ident.status_cause == cause
    assert sorted(ident.removed_grants) == [
        "fb-lumen",
        "ig-lumen",
        "li-lumen",
        "x-lumen",
        "yt-lumen",
    ]
    assert ident.applied_events == ("evt-term-1",)
    assert ident.disabled_at == ("entra", "google", "okta")
    plan = ident.plans["evt-term-1"]
    assert plan.actions == decision.actions
    assert plan.accepted_at == 1_772_000_000.0
    assert plan.event_type == "terminated"
    assert plan.decided_at == NOW.timestamp()
    # the persisted form: the keys, in the order, every version wrote
    assert plan.to_dict() == {
        "actions": [a.to_dict() for a in decision.actions],
        "alerts": [a.to_dict() for a in decision.alerts],
        "accepted_at": 1_772_000_000.0,
        "event_type": "terminated",
        "decided_at": NOW.timestamp(),
        "partition_key": decision.event.partition_key,
        "steps": list(plan.steps),
    }
    assert list(plan.to_dict()) == [
        "actions",
        "alerts",
        "accepted_at",
        "event_type",
        "decided_at",
        "partition_key",
        "steps",
    ]

    account = state.account("x-lumen")
    assert account.reenrolment_required == ("bob", "carol")
    assert account.rotated_cause == cause
    assert account.secret_version == 0  # the executor bumps it once the rotation is done

    rules = [a.rule for a in decision.alerts]
    assert rules == ["offboarding.completed", "shared_credential.reenrolment"]
    summary, reenrol = decision.alerts
    assert summary.severity == "info"
    assert summary.dedup_key == "offboarding:evt-term-1"
    assert summary.title == (
        "Offboarded Alice Nguyen: account disabled at 3 identity provider(s), "
        "5 sessions revoked, OAuth tokens and app passwords revoked at 2 provider(s), "
        "5 grants removed, 1 shared credentials rotated"
    )
    assert summary.details["accounts"] == sorted(ident.removed_grants)
    assert summary.details["providers"] == [
        "entra",
        "google",
        "hootsuite",
        "meta-business",
        "okta",
        "vault",
    ]
    assert reenrol.severity == "low"
    assert reenrol.dedup_key == f"reenrol:x-lumen:{cause}"
    assert "bob, carol" in reenrol.title
    assert reenrol.details["holders"] == ["bob", "carol"]
    assert plan.alerts == decision.alerts
    _no_secrets_or_emails(decision)


def test_terminated_twice_revokes_sessions_only(registry: Registry, state: StateStore) -> None:
    """A second termination of an offboarded identity revokes sessions again (cheap and
    security-positive) but removes no grant a second time and keeps the first status date."""
    decide(registry, state, hr("alice", "terminated", "evt-term-1"))
    again = decide(registry, state, hr("alice", "terminated", "evt-term-2", at=NOW))
    assert again.outcome == "applied"
    assert {a.action for a in again.actions} == {
        "disable_account",
        "revoke_sessions",
        "revoke_tokens",
    }
    assert len(of(again, "revoke_sessions")) == 5
    ident = state.identity("alice")
    assert ident.status_cause == "hr:terminated:evt-term-1"
    assert ident.applied_events == ("evt-term-1", "evt-term-2")


def test_second_holder_leaving_excludes_offboarded_holders(
    registry: Registry, state: StateStore
) -> None:
    """When a second holder leaves, the holder offboarded earlier is not asked to re-enrol."""
    decide(registry, state, hr("alice", "terminated", "evt-a"))
    decision = decide(registry, state, hr("bob", "terminated", "evt-b"))
    assert sorted(of(decision, "rotate_shared_credential")) == [
        ("tiktok-lumen", "vault"),
        ("x-lumen", "vault"),
    ]
    assert state.account("x-lumen").reenrolment_required == ("carol",)
    assert state.account("tiktok-lumen").reenrolment_required == ("carol", "gina")


def test_registry_offboarded_counts_as_offboarded(registry: Registry, state: StateStore) -> None:
    """An identity the registry marks offboarded is treated as offboarded: reinstating it is
    a noop, and it is not asked to re-enrol a rotated shared login."""
    registry.put_identity(replace(registry.identities["carol"], status="offboarded"))
    noop = decide(registry, state, hr("carol", "reinstated", "evt-r"))
    assert noop.outcome == "noop"
    assert "registry" in noop.reason
    decide(registry, state, hr("alice", "terminated", "evt-a"))
    assert state.account("x-lumen").reenrolment_required == ("bob",)


def test_contract_ended_is_an_offboarding(registry: Registry, state: StateStore) -> None:
    """contract_ended removes grants and rotates shared logins like terminated does."""
    decision = decide(registry, state, hr("gina", "contract_ended", "evt-c"))
    assert sorted(of(decision, "remove_grant")) == [
        ("ig-lumen", "meta-business"),
        ("tiktok-lumen", "hootsuite"),
    ]
    assert of(decision, "rotate_shared_credential") == [("tiktok-lumen", "vault")]
    assert decision.alerts[0].rule == "offboarding.completed"
    assert state.identity("gina").status == "offboarded"


def test_no_secret_store_configured_still_rotates(registry: Registry, state: StateStore) -> None:
    """Without a configured secret store the rotation is still planned (the executor fails it
    loudly) rather than silently dropped."""
    providers = {k: v for k, v in PROVIDERS.items() if v != "secret_store"}
    decision = decide_hr(registry, state, hr("alice", "terminated"), NOW, providers)
    assert of(decision, "rotate_shared_credential") == [("x-lumen", DEFAULT_SECRET_STORE)]


def test_unconfigured_alias_providers_are_skipped(registry: Registry, state: StateStore) -> None:
    """Aliases at platforms that are not configured providers (instagram) get no action,
    but an account's managing provider always does."""
    decision = decide_hr(registry, state, hr("alice", "terminated"), NOW, {"okta": "okta"})
    assert sorted(p for _, p in of(decision, "revoke_sessions")) == [
        "hootsuite",
        "meta-business",
        "okta",
    ]


# ------------------------------------------------------------------------------ suspension


def test_suspended_then_reinstated(registry: Registry, state: StateStore) -> None:
    """Suspension disables the account at the identity providers, revokes sessions and
    tokens and keeps grants; reinstatement re-enables exactly where it disabled and re-grants
    nothing."""
    suspended = decide(registry, state, hr("bob", "suspended", "evt-s"))
    assert suspended.outcome == "applied"
    assert {a.action for a in suspended.actions} == {
        "disable_account",
        "revoke_sessions",
        "revoke_tokens",
    }
    assert sorted(p for _, p in of(suspended, "revoke_sessions")) == ["google", "hootsuite", "okta"]
    assert sorted(p for _, p in of(suspended, "disable_account")) == ["google", "okta"]
    assert suspended.alerts[0].rule == "suspension.completed"
    assert "account disabled at 2 identity provider(s)" in suspended.alerts[0].title
    assert state.identity("bob").status == "suspended"
    assert state.identity("bob").removed_grants == ()
    assert state.identity("bob").disabled_at == ("google", "okta")

    reinstated = decide(registry, state, hr("bob", "reinstated", "evt-r", at=NOW))
    assert reinstated.outcome == "applied"
    assert sorted(of(reinstated, "enable_account")) == [(None, "google"), (None, "okta")]
    assert {a.cause for a in reinstated.actions} == {"hr:reinstated:evt-r"}
    assert reinstated.plan_id == "evt-r"
    assert reinstated.alerts[0].rule == "reinstatement.completed"
    assert "re-enabled at 2 identity provider(s)" in reinstated.alerts[0].title
    ident = state.identity("bob")
    assert ident.status == "active"
    assert ident.status_cause == "hr:reinstated:evt-r"
    assert ident.disabled_at == ()


def test_reinstated_when_active_or_offboarded_is_noop(
    registry: Registry, state: StateStore
) -> None:
    """Reinstating an active identity changes nothing; an offboarded one stays offboarded
    (re-onboarding goes through the registry)."""
    active = decide(registry, state, hr("bob", "reinstated", "evt-r1"))
    assert active.outcome == "noop"
    assert active.actions == ()
    decide(registry, state, hr("alice", "terminated", "evt-t"))
    offboarded = decide(registry, state, hr("alice", "reinstated", "evt-r2", at=NOW))
    assert offboarded.outcome == "noop"
    assert "re-onboarding goes through the registry" in offboarded.reason
    assert state.identity("alice").status == "offboarded"


# ------------------------------------------------------------------------------ device lost


def test_device_lost(registry: Registry, state: StateStore) -> None:
    """A lost device revokes sessions, forces MFA re-enrolment at each identity provider,
    rotates every shared TOTP login the person held (the seed was on the device) and marks
    every holder, the person included, for re-enrolment."""
    decision = decide(registry, state, hr("bob", "device_lost", "evt-d"))
    assert sorted(p for _, p in of(decision, "revoke_sessions")) == ["google", "hootsuite", "okta"]
    assert sorted(p for _, p in of(decision, "force_mfa_reenrolment")) == ["google", "okta"]
    assert sorted(of(decision, "rotate_shared_credential")) == [
        ("tiktok-lumen", "vault"),
        ("x-lumen", "vault"),
    ]
    assert of(decision, "remove_grant") == []
    assert state.identity("bob").mfa_reenrolment_required
    assert state.identity("bob").status == "active"
    assert state.account("x-lumen").reenrolment_required == ("alice", "bob", "carol")
    assert decision.alerts[0].rule == "device_lost.completed"
    _no_secrets_or_emails(decision)


def test_device_lost_without_shared_logins(registry: Registry, state: StateStore) -> None:
    """An identity with no shared login gets sessions revoked and MFA reset, no rotation."""
    decision = decide(registry, state, hr("dan", "device_lost", "evt-d"))
    assert of(decision, "rotate_shared_credential") == []
    assert of(decision, "force_mfa_reenrolment") == [(None, "okta")]


# ------------------------------------------------------------------------------ role changed


def test_role_changed_downgrades_only_grants_above(registry: Registry, state: StateStore) -> None:
    """role_changed downgrades every grant ranked above the new role and leaves the rest."""
    decision = decide(registry, state, hr("dan", "role_changed", "evt-rc", new_role="can_reply"))
    assert sorted(of(decision, "downgrade_grant")) == [
        ("li-lumen", "hootsuite"),
        ("yt-lumen", "hootsuite"),
    ]
    assert all(a.params["role"] == "can_reply" for a in decision.actions)
    assert {a.params["from_role"] for a in decision.actions} == {"full_publishing"}
    assert state.identity("dan").downgraded == {"li-lumen": "can_reply", "yt-lumen": "can_reply"}
    assert decision.alerts[0].rule == "role_change.completed"


def test_role_changed_again_skips_already_downgraded(registry: Registry, state: StateStore) -> None:
    """A later, lower role downgrades again; the same role again changes nothing."""
    decide(registry, state, hr("dan", "role_changed", "evt-1", new_role="can_reply"))
    same = decide(registry, state, hr("dan", "role_changed", "evt-2", new_role="can_reply"))
    assert same.outcome == "noop"
    assert same.actions == ()
    lower = decide(registry, state, hr("dan", "role_changed", "evt-3", new_role="no_access"))
    assert sorted(a for a, _ in of(lower, "downgrade_grant")) == [
        "ig-lumen",
        "li-lumen",
        "yt-lumen",
    ]


def test_role_changed_upwards_is_noop(registry: Registry, state: StateStore) -> None:
    """A promotion grants nothing: access increases go through the registry."""
    decision = decide(registry, state, hr("bob", "role_changed", "evt-up", new_role="admin"))
    assert decision.outcome == "noop"
    assert decision.actions == ()


# ------------------------------------------------------------------------------ idempotency


def test_duplicate_event_does_nothing(registry: Registry, state: StateStore) -> None:
    """An event id already applied is a duplicate: no actions, alerts or state updates."""
    decide(registry, state, hr("alice", "terminated", "evt-dup"))
    again = decide(registry, state, hr("alice", "terminated", "evt-dup"))
    assert again.outcome == "duplicate"
    assert (again.actions, again.alerts, again.state_updates) == ((), (), ())


def test_reused_event_id_for_another_event_is_a_conflict(
    registry: Registry, state: StateStore
) -> None:
    """The same event_id with another event (applied or still scheduled) is a ``conflict``
    with no effect, which the worker dead-letters; the same event re-accepted later (another
    accepted_at) is still a duplicate."""
    decide(registry, state, hr("alice", "suspended", "evt-re"))
    same = decide(registry, state, hr("alice", "suspended", "evt-re", accepted_at=5.0))
    assert same.outcome == "duplicate"
    other = decide(registry, state, hr("alice", "terminated", "evt-re"))
    assert other.outcome == "conflict"
    assert "already applied to a different event" in other.reason
    assert (other.actions, other.alerts, other.state_updates) == ((), (), ())
    later = NOW + timedelta(days=1)
    decide(registry, state, hr("bob", "terminated", "evt-later", at=later))
    clash = decide(registry, state, hr("bob", "suspended", "evt-later", at=later))
    assert clash.outcome == "conflict"
    assert "already scheduled for a different event" in clash.reason


def test_idempotency_keys_deterministic_and_distinct(registry: Registry) -> None:
    """The same event always yields the same keys; another event yields different keys; keys
    within one plan are unique."""
    first = decide_hr(registry, StateStore(), hr("alice", "terminated", "evt-1"), NOW, PROVIDERS)
    same = decide_hr(registry, StateStore(), hr("alice", "terminated", "evt-1"), NOW, PROVIDERS)
    other = decide_hr(registry, StateStore(), hr("alice", "terminated", "evt-2"), NOW, PROVIDERS)
    keys = [a.idempotency_key for a in first.actions]
    assert keys == [a.idempotency_key for a in same.actions]
    assert len(set(keys)) == len(keys)
    assert not set(keys) & {a.idempotency_key for a in other.actions}
    assert first == same


def test_decisions_are_pure(registry: Registry, state: StateStore) -> None:
    """decide_hr reads the state but never mutates it; the caller applies the updates."""
    before = list(state.identities())
    decide_hr(registry, state, hr("alice", "terminated"), NOW, PROVIDERS)
    assert list(state.identities()) == before
    assert state.identity("alice") == IdentityState(identity="alice")
    assert state.account("x-lumen") == AccountState(account="x-lumen")


# ------------------------------------------------------------------------------ scheduling


def test_future_event_is_scheduled_then_applied_when_due(
    registry: Registry, state: StateStore
) -> None:
    """A future effective_at schedules the event (no action yet); redelivery is a duplicate;
    once due it is applied and leaves the schedule."""
    later = NOW + timedelta(days=3)
    event = hr("carol", "terminated", "evt-future", at=later)
    scheduled = decide(registry, state, event)
    assert scheduled.outcome == "scheduled"
    assert scheduled.actions == ()
    assert state.identity("carol").scheduled == {"evt-future": event.to_dict()}
    assert decide(registry, state, event).outcome == "duplicate"

    assert due_scheduled(state, NOW) == []
    due = due_scheduled(state, later)
    assert due == [event]
    applied = decide(registry, state, due[0], now=later)
    assert applied.outcome == "applied"
    assert applied.actions
    ident = state.identity("carol")
    assert ident.scheduled == {}
    assert ident.status == "offboarded"
    assert due_scheduled(state, later) == []


def test_due_scheduled_oldest_first(registry: Registry, state: StateStore) -> None:
    """Due events come oldest first across identities."""
    decide(registry, state, hr("bob", "suspended", "evt-b", at=NOW + timedelta(hours=2)))
    decide(registry, state, hr("alice", "terminated", "evt-a", at=NOW + timedelta(hours=1)))
    decide(registry, state, hr("dan", "terminated", "evt-d", at=NOW + timedelta(days=9)))
    due = due_scheduled(state, NOW + timedelta(hours=3))
    assert [e.event_id for e in due] == ["evt-a", "evt-b"]


# ------------------------------------------------------------------------------ agencies


def test_agency_expiry_offboards_members_of_ended_contracts(
    registry: Registry, state: StateStore
) -> None:
    """Members of an agency past contract_ends get a deterministic contract_ended event;
    agencies still under contract and members already offboarded get none."""
    events = decide_agency_expiry(registry, state, NOW)
    assert [e.event_id for e in events] == ["agency-oldco-20250630-gina"]
    (event,) = events
    assert event.type == "contract_ended"
    assert event.employee_id == "gina"
    assert event.email == "gina@oldco.example"
    assert event.effective_at == datetime(2025, 6, 30, 17, tzinfo=UTC)
    assert event.source == "accessguard.agency-timer"
    assert HrEvent.from_dict(event.to_dict()) == event  # the id passes edge validation

    decision = decide(registry, state, event)
    assert decision.identity == "gina"
    assert decision.outcome == "applied"
    assert decide_agency_expiry(registry, state, NOW) == []

    after_brightwave = datetime(2028, 1, 1, tzinfo=UTC)
    assert [e.event_id for e in decide_agency_expiry(registry, state, after_brightwave)] == [
        "agency-brightwave-20271231-erin",
        "agency-brightwave-20271231-frank",
    ]


# ------------------------------------------------------------------------------ unknown


def test_unknown_identity_raises_one_alert_without_email(
    registry: Registry, state: StateStore
) -> None:
    """An HR event for nobody in the registry yields one high alert and no action; the alert
    names the subject by hash, never by e-mail."""
    event = hr("mallory", "terminated", "evt-x")
    decision = decide(registry, state, event)
    assert decision.outcome == "unknown_identity"
    assert decision.identity is None
    assert decision.actions == ()
    assert decision.state_updates == ()
    (alert,) = decision.alerts
    assert alert.severity == "high"
    assert alert.rule == "hr.unknown_identity"
    assert alert.dedup_key == "hr-unknown:evt-x"
    assert "mallory" not in orjson.dumps(alert.to_dict()).decode()
    assert subject_hash(event.email) in alert.title


def test_decision_audit_view_has_no_email(registry: Registry, state: StateStore) -> None:
    """HrDecision.to_dict is JSON-able and hashes the subject."""
    decision = decide(registry, state, hr("alice", "terminated"))
    blob = orjson.dumps(decision.to_dict()).decode()
    assert EMAILS["alice"] not in blob
    assert subject_hash(EMAILS["alice"]) in blob


# --------------------------------------------------------------------------------------------
# The persisted plan (streams.model.plan)
# --------------------------------------------------------------------------------------------


def test_plan_round_trips_through_the_lifecycle_record(
    registry: Registry, state: StateStore
) -> None:
    """A plan written to the lifecycle topic reads back equal, and re-serialises to the very
    same bytes (the compacted topic and the journal hold them)."""
    decision = decide_hr(registry, state, hr("alice", "terminated", "evt-rt"), NOW, PROVIDERS)
    (ident, *_) = decision.state_updates
    assert isinstance(ident, IdentityState)
    raw = orjson.dumps(ident.to_dict())
    back = IdentityState.from_dict(orjson.loads(raw))
    assert back == ident
    assert orjson.dumps(back.to_dict()) == raw


def test_plan_written_by_an_older_version_still_loads() -> None:
    """Rule and leak plans carry no alerts and no accepted_at; records from before
    ``partition_key`` existed lack it (the identity then owns the plan), and say so again
    when written back."""
    action = {
        "action": "revoke_sessions",
        "identity": "alice",
        "account": None,
        "provider": "okta",
        "cause": "rule:r1:e1",
        "idempotency_key": "k1",
        "params": {"user_ref": "00u1"},
    }
    old = {
        "actions": [action],
        "alerts": [],
        "accepted_at": None,
        "event_type": "rule:r1",
        "decided_at": 1.5,
    }
    st = IdentityState.from_dict({"identity": "alice", "plans": {"rule:r1:e1": old}})
    plan = st.plans["rule:r1:e1"]
    assert plan.partition_key is None
    assert plan.owner_key("alice") == "alice"
    assert plan.actions[0].params == {"user_ref": "00u1"}
    assert plan.to_dict() == old
    assert list(plan.to_dict()) == list(old)
