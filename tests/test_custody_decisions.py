"""Custody of shared logins in the decisions (pure functions, no vault, no broker).

With a custody vault (provider type ``openbao``) configured, a leaver, a suspension and a lost
device cut the person's vault access to their shared logins (``revoke_shared_access``, one
action at the vault, in the first step), rotations go to the vault and name an owner and the
holders, and a reinstatement restores the access a suspension cut. Without a vault nothing of
this appears and rotations go to the file secret store as before.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from streams.cli import main
from streams.config import load_config
from streams.decide.hr import HrDecision, decide_hr
from streams.decide.policy import (
    DEFAULT_POLICY,
    DEFAULT_STEPS,
    OffboardingPolicy,
    policy_problems,
)
from streams.model.records import Action, HrEvent
from streams.model.registry import Registry
from streams.model.registry_yaml import load_registry, parse_registry
from streams.model.state import IdentityState, StateStore
from streams.runtime.policy import offboarding_policy
from streams.runtime.replay import replay

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
VAULT = {"okta": "okta", "vault": "openbao", "platform": "generic"}
#: A vault and a file secret store: rotations still go to the vault.
BOTH = {**VAULT, "secrets": "secret_store"}
STORE_ONLY = {"okta": "okta", "secrets": "secret_store", "platform": "generic"}

# x-brand: ana, ben and cy share the login; cy is its admin among them, al is an admin by SSO
#   (not a holder of the login, and first by id: the owner must still be cy).
# tt-brand: ana, ben and fay share it, nobody is admin: the first remaining holder owns it.
# yt-brand: ana and hal share it, gus is its admin by SSO only: gus owns it.
# pin-brand: ivy (its admin, through the shared login) and jon share it.
# ig-brand / li-brand: ana's SSO and native grants, never cut at the vault.
# eve holds no shared login.
REGISTRY = """\
accounts:
  - id: x-brand
    platform: x
    handle: "@brand"
    criticality: critical
    provider: platform
    shared_credential: {totp: true, ref: shared/x-brand, login: social@brand.example}
  - id: tt-brand
    platform: tiktok
    handle: "@brand"
    criticality: high
    provider: platform
    shared_credential: {totp: true, login: tiktok@brand.example}
  - id: yt-brand
    platform: youtube
    handle: "@BrandTV"
    criticality: medium
    provider: platform
    shared_credential: {totp: true, login: video@brand.example}
  - id: pin-brand
    platform: pinterest
    handle: brand
    criticality: low
    provider: platform
    shared_credential: {totp: true, login: pins@brand.example}
  - id: ig-brand
    platform: instagram
    handle: "@brand"
    criticality: critical
    provider: platform
  - id: li-brand
    platform: linkedin
    handle: brand
    criticality: medium
    provider: platform
identities:
  - {id: al, name: Al, kind: employee, employee_id: E0, emails: [al@brand.example],
     aliases: {okta: 00u-al, platform: p-al}}
  - {id: ana, name: Ana, kind: employee, employee_id: E1, emails: [ana@brand.example],
     aliases: {okta: 00u-ana, platform: p-ana}}
  - {id: ben, name: Ben, kind: employee, employee_id: E2, emails: [ben@brand.example],
     aliases: {okta: 00u-ben, platform: p-ben}}
  - {id: cy, name: Cy, kind: employee, employee_id: E3, emails: [cy@brand.example],
     aliases: {okta: 00u-cy, platform: p-cy}}
  - {id: eve, name: Eve, kind: employee, employee_id: E5, emails: [eve@brand.example],
     aliases: {okta: 00u-eve, platform: p-eve}}
  - {id: fay, name: Fay, kind: employee, employee_id: E6, emails: [fay@brand.example],
     aliases: {okta: 00u-fay, platform: p-fay}}
  - {id: gus, name: Gus, kind: employee, employee_id: E7, emails: [gus@brand.example],
     aliases: {okta: 00u-gus, platform: p-gus}}
  - {id: hal, name: Hal, kind: employee, employee_id: E8, emails: [hal@brand.example],
     aliases: {okta: 00u-hal, platform: p-hal}}
  - {id: ivy, name: Ivy, kind: employee, employee_id: E9, emails: [ivy@brand.example],
     aliases: {okta: 00u-ivy, platform: p-ivy}}
  - {id: jon, name: Jon, kind: employee, employee_id: E10, emails: [jon@brand.example],
     aliases: {okta: 00u-jon, platform: p-jon}}
grants:
  - {identity: ana, account: x-brand, role: full_publishing, via: shared_credential, mfa: totp}
  - {identity: ana, account: tt-brand, role: full_publishing, via: shared_credential, mfa: totp}
  - {identity: ana, account: yt-brand, role: can_reply, via: shared_credential, mfa: totp}
  - {identity: ana, account: ig-brand, role: admin, via: sso, mfa: webauthn}
  - {identity: ana, account: li-brand, role: full_publishing, via: native, mfa: push}
  - {identity: ben, account: x-brand, role: full_publishing, via: shared_credential, mfa: totp}
  - {identity: ben, account: tt-brand, role: full_publishing, via: shared_credential, mfa: totp}
  - {identity: cy, account: x-brand, role: admin, via: shared_credential, mfa: totp}
  - {identity: al, account: x-brand, role: admin, via: sso, mfa: webauthn}
  - {identity: fay, account: tt-brand, role: can_reply, via: shared_credential, mfa: totp}
  - {identity: gus, account: yt-brand, role: admin, via: sso, mfa: webauthn}
  - {identity: hal, account: yt-brand, role: can_reply, via: shared_credential, mfa: totp}
  - {identity: ivy, account: pin-brand, role: admin, via: shared_credential, mfa: totp}
  - {identity: jon, account: pin-brand, role: can_reply, via: shared_credential, mfa: totp}
  - {identity: eve, account: ig-brand, role: can_reply, via: sso, mfa: push}
agencies: []
"""
ANA_SHARED = ["tt-brand", "x-brand", "yt-brand"]


@pytest.fixture
def registry() -> Registry:
    parsed, problems = parse_registry(REGISTRY, "custody-test.yaml")
    assert problems == []
    return parsed


@pytest.fixture
def state() -> StateStore:
    return StateStore()


def hr(who: str, etype: str, event_id: str = "evt-1") -> HrEvent:
    return HrEvent.from_dict(
        {
            "event_id": event_id,
            "type": etype,
            "employee_id": who,
            "email": f"{who}@brand.example",
            "effective_at": (NOW - timedelta(hours=1)).isoformat(),
            "source": "workday",
            "accepted_at": 1_772_000_000.0,
        }
    )


def decide(
    registry: Registry,
    state: StateStore,
    event: HrEvent,
    providers: dict[str, str],
    policy: OffboardingPolicy = DEFAULT_POLICY,
) -> HrDecision:
    """Decide and apply the state updates, like the agent does."""
    decision = decide_hr(registry, state, event, NOW, providers, policy=policy)
    for update in decision.state_updates:
        state.put(update)
    return decision


def only(decision: HrDecision, kind: str) -> Action:
    found = [a for a in decision.actions if a.action == kind]
    assert len(found) == 1, [a.action for a in decision.actions]
    return found[0]


def rotations(decision: HrDecision) -> dict[str, Action]:
    return {a.account or "": a for a in decision.actions if a.action == "rotate_shared_credential"}


def steps_of(decision: HrDecision) -> dict[tuple[str, str], int]:
    """(action, provider) -> step index in the decision's plan (accounts ignored)."""
    identity = decision.state_updates[0]
    assert isinstance(identity, IdentityState)
    assert decision.plan_id is not None
    plan = identity.plans[decision.plan_id]
    steps = plan.steps or (0,) * len(plan.actions)
    out: dict[tuple[str, str], int] = {}
    for action, step in zip(plan.actions, steps, strict=True):
        key = (action.action, action.provider)
        assert out.get(key, step) == step
        out[key] = step
    return out


def summary_title(decision: HrDecision) -> str:
    return decision.alerts[0].title


def identity_state(decision: HrDecision) -> IdentityState:
    first = decision.state_updates[0]
    assert isinstance(first, IdentityState)
    return first


# ------------------------------------------------------------------------------ terminated


def test_terminated_cuts_vault_access_to_the_shared_logins_in_the_first_step(
    registry: Registry, state: StateStore
) -> None:
    """One cut at the vault, naming exactly ana's shared logins (sorted; her SSO and native
    grants are not vault logins), in step 0 with disable_account; the vault counts as a place
    she is disabled at; the summary says how many logins were cut."""
    decision = decide(registry, state, hr("ana", "terminated"), BOTH)
    assert decision.outcome == "applied"
    cut = only(decision, "revoke_shared_access")
    assert cut.provider == "vault"
    assert cut.identity == "ana"
    assert cut.account is None
    assert cut.params == {"accounts": ANA_SHARED}
    assert cut.cause == "hr:terminated:evt-1"
    steps = steps_of(decision)
    assert steps[("revoke_shared_access", "vault")] == 0
    assert steps[("disable_account", "okta")] == 0
    assert steps[("revoke_sessions", "okta")] == 1
    assert steps[("rotate_shared_credential", "vault")] == 2
    assert steps[("remove_grant", "platform")] == 2
    # nothing else is asked of the vault than the cut and the rotations
    assert {a.action for a in decision.actions if a.provider == "vault"} == {
        "revoke_shared_access",
        "rotate_shared_credential",
    }
    assert "vault" in identity_state(decision).disabled_at
    assert "okta" in identity_state(decision).disabled_at
    title = summary_title(decision)
    assert "vault access to 3 shared login(s) cut" in title
    assert decision.alerts[0].details["shared_access_cut"] is True


def test_terminated_rotations_go_to_the_vault_with_owner_and_holders(
    registry: Registry, state: StateStore
) -> None:
    """Every rotation goes to the vault, never to the file secret store also configured, and
    names the remaining holders and the owner: the account's admin among the remaining
    holders (cy, not al who sorts first), else an admin who keeps access (gus), else the first
    remaining holder by id (ben); never ana, who leaves."""
    decision = decide(registry, state, hr("ana", "terminated"), BOTH)
    rotated = rotations(decision)
    assert sorted(rotated) == ANA_SHARED
    assert {a.provider for a in rotated.values()} == {"vault"}
    assert not [a for a in decision.actions if a.provider == "secrets"]

    x = rotated["x-brand"].params
    assert x["owner"] == "cy"
    assert x["holders"] == ["ben", "cy"]
    assert x["login"] == "social@brand.example"
    assert x["criticality"] == "critical"
    assert x["credential_ref"] == "shared/x-brand"
    tt = rotated["tt-brand"].params
    assert tt["owner"] == "ben"
    assert tt["holders"] == ["ben", "fay"]
    yt = rotated["yt-brand"].params
    assert yt["owner"] == "gus"
    assert yt["holders"] == ["hal"]
    for action in rotated.values():
        assert action.params["owner"] != "ana"
        assert "ana" not in action.params["holders"]


def test_the_leaver_is_never_the_owner_even_as_the_accounts_admin(
    registry: Registry, state: StateStore
) -> None:
    """ivy is pin-brand's admin and leaves: the owner is jon, the one who keeps the login."""
    decision = decide(registry, state, hr("ivy", "terminated"), VAULT)
    params = rotations(decision)["pin-brand"].params
    assert params["holders"] == ["jon"]
    assert params["owner"] == "jon"


def test_without_a_vault_nothing_is_cut_and_rotation_is_unchanged(
    registry: Registry, state: StateStore
) -> None:
    """Only a file secret store: no cut, rotations go to the secret store with exactly the
    params they always had (no owner, holders, login or criticality); the summary says
    nothing of vault access and the vault is not recorded."""
    decision = decide(registry, state, hr("ana", "terminated"), STORE_ONLY)
    assert not [a for a in decision.actions if "shared_access" in a.action]
    rotated = rotations(decision)
    assert sorted(rotated) == ANA_SHARED
    assert {a.provider for a in rotated.values()} == {"secrets"}
    assert rotated["x-brand"].params == {
        "credential_ref": "shared/x-brand",
        "account_handle": "@brand",
        "platform": "x",
    }
    for action in rotated.values():
        assert set(action.params) == {"credential_ref", "account_handle", "platform"}
    assert "vault access" not in summary_title(decision)
    assert decision.alerts[0].details["shared_access_cut"] is False
    assert identity_state(decision).disabled_at == ("okta",)


def test_a_person_without_shared_logins_is_not_cut(registry: Registry, state: StateStore) -> None:
    """eve holds only an SSO grant: no cut at the vault, the vault not recorded."""
    decision = decide(registry, state, hr("eve", "terminated"), VAULT)
    assert decision.outcome == "applied"
    assert not [a for a in decision.actions if a.provider == "vault"]
    assert "vault access" not in summary_title(decision)
    assert "vault" not in identity_state(decision).disabled_at


def test_contract_ended_cuts_like_a_termination(registry: Registry, state: StateStore) -> None:
    decision = decide(registry, state, hr("ana", "contract_ended"), VAULT)
    cut = only(decision, "revoke_shared_access")
    assert (cut.provider, cut.params) == ("vault", {"accounts": ANA_SHARED})
    assert steps_of(decision)[("revoke_shared_access", "vault")] == 0


# -------------------------------------------------------------------- suspension, reinstatement


def test_suspension_cuts_and_reinstatement_restores_the_logins_still_held(
    registry: Registry, state: StateStore
) -> None:
    """Suspended: the cut is in step 0 with disable_account and the vault is recorded.
    Reinstated: the account is re-enabled at okta and vault access restored at the vault, for
    the shared logins ana still holds (tt-brand was removed meanwhile), and the summary says
    so."""
    suspension = decide(registry, state, hr("ana", "suspended", "evt-s"), VAULT)
    cut = only(suspension, "revoke_shared_access")
    assert (cut.provider, cut.params) == ("vault", {"accounts": ANA_SHARED})
    steps = steps_of(suspension)
    assert steps[("revoke_shared_access", "vault")] == 0
    assert steps[("disable_account", "okta")] == 0
    assert identity_state(suspension).disabled_at == ("okta", "vault")
    assert identity_state(suspension).status == "suspended"
    assert "vault access to 3 shared login(s) cut" in summary_title(suspension)

    state.put(replace(state.identity("ana"), removed_grants=("tt-brand",)))
    reinstated = decide(registry, state, hr("ana", "reinstated", "evt-r"), VAULT)
    assert reinstated.outcome == "applied"
    restore = only(reinstated, "restore_shared_access")
    assert restore.provider == "vault"
    assert restore.identity == "ana"
    assert restore.params == {"accounts": ["x-brand", "yt-brand"]}
    assert only(reinstated, "enable_account").provider == "okta"
    assert not [a for a in reinstated.actions if a.action == "revoke_shared_access"]
    assert "vault access to 2 shared login(s) restored" in summary_title(reinstated)
    assert identity_state(reinstated).disabled_at == ()
    assert identity_state(reinstated).status == "active"


def test_reinstatement_restores_every_shared_login_when_none_was_removed(
    registry: Registry, state: StateStore
) -> None:
    decide(registry, state, hr("ana", "suspended", "evt-s"), VAULT)
    reinstated = decide(registry, state, hr("ana", "reinstated", "evt-r"), VAULT)
    assert only(reinstated, "restore_shared_access").params == {"accounts": ANA_SHARED}


def test_reinstatement_without_an_earlier_cut_restores_nothing(
    registry: Registry, state: StateStore
) -> None:
    """A suspension decided before the vault was configured cut nothing: the reinstatement
    (now with a vault) restores nothing at it, and re-enables the account as before."""
    suspension = decide(registry, state, hr("ana", "suspended", "evt-s"), STORE_ONLY)
    assert not [a for a in suspension.actions if "shared_access" in a.action]
    assert "vault" not in identity_state(suspension).disabled_at
    reinstated = decide(registry, state, hr("ana", "reinstated", "evt-r"), VAULT)
    assert reinstated.outcome == "applied"
    assert not [a for a in reinstated.actions if a.action == "restore_shared_access"]
    assert only(reinstated, "enable_account").provider == "okta"
    assert "restored" not in summary_title(reinstated)


def test_suspension_of_someone_without_shared_logins_neither_cuts_nor_restores(
    registry: Registry, state: StateStore
) -> None:
    suspension = decide(registry, state, hr("eve", "suspended", "evt-s"), VAULT)
    assert not [a for a in suspension.actions if a.provider == "vault"]
    reinstated = decide(registry, state, hr("eve", "reinstated", "evt-r"), VAULT)
    assert not [a for a in reinstated.actions if a.provider == "vault"]


# ------------------------------------------------------------------------------ device lost


def test_device_lost_cuts_first_and_someone_else_owns_the_rotation(
    registry: Registry, state: StateStore
) -> None:
    """ana lost her phone: vault access is cut in the first step (with the session revocation
    and the MFA reset), the rotations follow in the next; she stays a holder who must
    re-enrol but never owns the re-enrolment (on tt-brand she is first by id: ben owns it)."""
    decision = decide(registry, state, hr("ana", "device_lost"), VAULT)
    cut = only(decision, "revoke_shared_access")
    assert (cut.provider, cut.params) == ("vault", {"accounts": ANA_SHARED})
    steps = steps_of(decision)
    assert steps[("revoke_shared_access", "vault")] == 0
    assert steps[("revoke_sessions", "okta")] == 0
    assert steps[("rotate_shared_credential", "vault")] == 1
    rotated = rotations(decision)
    assert rotated["tt-brand"].params["holders"] == ["ana", "ben", "fay"]
    assert rotated["tt-brand"].params["owner"] == "ben"
    assert rotated["x-brand"].params["owner"] == "cy"
    assert rotated["yt-brand"].params["owner"] == "gus"
    assert all(a.params["owner"] != "ana" for a in rotated.values())
    after = identity_state(decision)
    assert "vault" in after.disabled_at
    assert after.mfa_reenrolment_required is True
    assert "vault access to 3 shared login(s) cut" in summary_title(decision)


def test_device_lost_by_the_accounts_admin_gives_the_rotation_to_someone_else(
    registry: Registry, state: StateStore
) -> None:
    decision = decide(registry, state, hr("ivy", "device_lost"), VAULT)
    params = rotations(decision)["pin-brand"].params
    assert params["holders"] == ["ivy", "jon"]
    assert params["owner"] == "jon"


def test_device_lost_without_a_vault_cuts_nothing(registry: Registry, state: StateStore) -> None:
    decision = decide(registry, state, hr("ana", "device_lost"), STORE_ONLY)
    assert not [a for a in decision.actions if "shared_access" in a.action]
    assert identity_state(decision).disabled_at == ()
    assert {a.provider for a in rotations(decision).values()} == {"secrets"}


# ---------------------------------------------------------------------------------- policy


def test_default_steps_put_the_cut_first() -> None:
    for event_type in ("terminated", "contract_ended", "suspended", "device_lost"):
        assert "revoke_shared_access" in DEFAULT_STEPS[event_type][0], event_type
        assert DEFAULT_POLICY.step(event_type, "revoke_shared_access") == 0


def test_a_policy_without_the_cut_cuts_nothing(registry: Registry, state: StateStore) -> None:
    policy = OffboardingPolicy.build(
        steps={"terminated": [["disable_account"], ["revoke_sessions"]]}
    )
    decision = decide(registry, state, hr("ana", "terminated"), VAULT, policy)
    assert decision.outcome == "applied"
    assert not [a for a in decision.actions if a.provider == "vault"]
    assert "vault" not in identity_state(decision).disabled_at


def test_a_policy_may_move_the_cut(registry: Registry, state: StateStore) -> None:
    policy = OffboardingPolicy.build(
        steps={"terminated": [["disable_account"], ["revoke_sessions", "revoke_shared_access"]]}
    )
    decision = decide(registry, state, hr("ana", "terminated"), VAULT, policy)
    only(decision, "revoke_shared_access")
    assert steps_of(decision)[("revoke_shared_access", "vault")] == 1


def test_narrowing_the_vault_drops_the_cut_and_keeps_the_rotations(
    registry: Registry, state: StateStore
) -> None:
    policy = OffboardingPolicy.build(
        providers={"vault": {"terminated": ["rotate_shared_credential"]}}
    )
    decision = decide(registry, state, hr("ana", "terminated"), VAULT, policy)
    assert not [a for a in decision.actions if a.action == "revoke_shared_access"]
    assert sorted(rotations(decision)) == ANA_SHARED
    assert "vault" not in identity_state(decision).disabled_at
    # narrowing another event type leaves the termination's cut alone
    other = OffboardingPolicy.build(providers={"vault": {"suspended": ["disable_account"]}})
    again = decide_hr(registry, StateStore(), hr("ana", "terminated"), NOW, VAULT, policy=other)
    only(again, "revoke_shared_access")


def test_policy_problems_accept_the_cut_where_it_belongs() -> None:
    steps = {
        event_type: [["disable_account", "revoke_shared_access"]]
        for event_type in ("terminated", "contract_ended", "suspended")
    }
    steps["device_lost"] = [["revoke_sessions", "revoke_shared_access"]]
    providers = {"vault": {event_type: ["revoke_shared_access"] for event_type in steps}}
    assert policy_problems(steps, providers) == []


@pytest.mark.parametrize("event_type", ["role_changed", "reinstated", "hired"])
def test_policy_problems_refuse_the_cut_elsewhere_like_any_other_kind(event_type: str) -> None:
    """Not configurable for a role change, a reinstatement or an unknown type, in steps and
    per provider, with the same reason another kind gets."""
    cut = policy_problems(
        {event_type: [["revoke_shared_access"]]},
        {"vault": {event_type: ["revoke_shared_access"]}},
    )
    other = policy_problems(
        {event_type: [["disable_account"]]}, {"vault": {event_type: ["disable_account"]}}
    )
    assert [key for key, _ in cut] == [f"steps.{event_type}", f"providers.vault.{event_type}"]
    assert cut == other
    assert all("not a configurable event type" in reason for _, reason in cut)


def test_policy_problems_refuse_the_cut_in_two_steps() -> None:
    problems = policy_problems(
        {"terminated": [["revoke_shared_access"], ["disable_account", "revoke_shared_access"]]},
        {},
    )
    assert problems == [("steps.terminated.1", "'revoke_shared_access' is in two steps")]


# ----------------------------------------------------------------------------- idempotency


def test_the_same_event_twice_is_a_duplicate_and_keys_are_deterministic(
    registry: Registry, state: StateStore
) -> None:
    """Deciding the same event again is a duplicate with no actions; decided afresh, the
    custody actions get the same idempotency keys; another event gets other keys."""
    first = decide(registry, state, hr("ana", "terminated"), VAULT)
    again = decide(registry, state, hr("ana", "terminated"), VAULT)
    assert again.outcome == "duplicate"
    assert again.actions == ()
    assert again.alerts == ()

    def custody_keys(decision: HrDecision) -> list[tuple[str, str | None, str]]:
        return sorted(
            (a.action, a.account, a.idempotency_key)
            for a in decision.actions
            if a.provider == "vault"
        )

    fresh = decide_hr(registry, StateStore(), hr("ana", "terminated"), NOW, VAULT)
    assert custody_keys(fresh) == custody_keys(first)
    assert len(custody_keys(first)) == 4  # the cut and three rotations
    keys = [a.idempotency_key for a in first.actions]
    assert len(set(keys)) == len(keys)
    other = decide_hr(registry, StateStore(), hr("ana", "terminated", "evt-2"), NOW, VAULT)
    assert only(other, "revoke_shared_access").idempotency_key != (
        only(first, "revoke_shared_access").idempotency_key
    )


def test_reinstatement_twice_restores_once(registry: Registry, state: StateStore) -> None:
    decide(registry, state, hr("ana", "suspended", "evt-s"), VAULT)
    decide(registry, state, hr("ana", "reinstated", "evt-r"), VAULT)
    again = decide(registry, state, hr("ana", "reinstated", "evt-r"), VAULT)
    assert again.outcome == "duplicate"
    assert again.actions == ()


# ---------------------------------------------------------------------------------- replay


def _replay_line(**fields: Any) -> str:
    body = {
        "kind": "hr",
        "event_id": "evt-1",
        "type": "terminated",
        "employee_id": "E1",
        "email": "ana@brand.example",
        "effective_at": "2026-03-02T09:00:00Z",
        "source": "workday",
        **fields,
    }
    return orjson.dumps(body).decode()


def test_replay_lists_the_cut_like_production(registry: Registry) -> None:
    """The replay function decides as decide_hr does: the cut at the vault with the same key."""
    at = datetime(2026, 3, 3, tzinfo=UTC)
    out = list(replay(registry, [_replay_line()], at=at, providers=VAULT))
    cuts = [o for o in out if o["type"] == "action" and o["action"] == "revoke_shared_access"]
    assert len(cuts) == 1
    assert (cuts[0]["identity"], cuts[0]["provider"]) == ("ana", "vault")
    direct = decide_hr(registry, StateStore(), hr("ana", "terminated"), at, VAULT)
    assert cuts[0]["idempotency_key"] == only(direct, "revoke_shared_access").idempotency_key


def test_accessguard_replay_with_an_openbao_provider_lists_the_cut(tmp_path: Path) -> None:
    """``accessguard replay --config`` with a config holding an openbao provider (the example
    config's ``custody``): alice's termination lists the cut at that vault, and the rotation
    goes there too; the actions are exactly those decide_hr gives with that config."""
    config_file = REPO / "examples" / "config.yaml"
    registry_file = REPO / "examples" / "registry.yaml"
    events = tmp_path / "events.ndjson"
    events.write_text(
        _replay_line(employee_id="E1001", email="alice.nguyen@lumen-outdoor.example") + "\n",
        encoding="utf-8",
    )
    clean = {k: None for k in os.environ if k.startswith("ACCESSGUARD_")}
    result = CliRunner().invoke(
        main,
        [
            "replay",
            "--config",
            str(config_file),
            "--registry",
            str(registry_file),
            "--input",
            str(events),
            "--at",
            "2026-03-03T00:00:00Z",
        ],
        env=clean,
    )
    assert result.exit_code == 0, result.output
    out = [orjson.loads(line) for line in result.stdout.splitlines()]
    actions = [o for o in out if o["type"] == "action"]
    cuts = [a for a in actions if a["action"] == "revoke_shared_access"]
    assert [(a["identity"], a["provider"]) for a in cuts] == [("alice", "custody")]
    assert {a["provider"] for a in actions if a["action"] == "rotate_shared_credential"} == {
        "custody"
    }
    summary = next(o for o in out if o["type"] == "alert" and o["severity"] == "info")
    assert "vault access to 1 shared login(s) cut" in summary["title"]

    config = load_config(config_file)
    direct = decide_hr(
        load_registry(registry_file),
        StateStore(),
        HrEvent.from_dict({**orjson.loads(events.read_text()), "accepted_at": 0.0}),
        datetime(2026, 3, 3, tzinfo=UTC),
        config.provider_types(),
        policy=offboarding_policy(config),
    )
    assert [a["idempotency_key"] for a in actions] == [a.idempotency_key for a in direct.actions]
