"""Offboarding decisions: registry + lifecycle state + one HR event -> what to do.

Pure functions: no I/O, no clock (``now`` is passed in), no randomness. The Faust agents and
``accessguard replay`` call the same functions, so a replay shows exactly what production
would do.

A decision is safe to compute and publish more than once: every action carries a
deterministic idempotency key (``Action.make``: cause + action + identity + account +
provider), the cause embeds the HR ``event_id``, and the executor's ledger skips keys already
done. State updates are whole new values for one key (last write wins on the compacted topic).

Alert delivery contract (for the executor): when ``HrDecision.plan_id`` is set, the plan's
alerts are also stored in ``IdentityState.plans[plan_id].alerts`` and are meant to be sent
when the plan completes (the summary then tells on-call what actually happened); when
``plan_id`` is None the alerts are sent at once.

Secrets never appear here: rotation actions carry the secret store reference
(``credential_ref``), and alerts carry identity and account ids, never e-mails.

Why one module: every HR event type is one branch of the same state machine (one identity's
lifecycle state, one plan of ordered steps, one summary); split by event type, each branch
would need the shared accumulation and the duplicate/conflict/schedule checks in front of it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from streams.decide import responses
from streams.decide.policy import DEFAULT_POLICY, IDENTITY_KINDS, OffboardingPolicy
from streams.model import kinds
from streams.model.access import (
    effective_grant,
    held_grants,
    holds_shared_credential,
    is_offboarded,
    reenrolment_owner,
)
from streams.model.plan import Plan
from streams.model.records import ROLE_RANK, Action, Alert, HrEvent, subject_hash
from streams.model.registry import Grant, Identity, Registry
from streams.model.state import AccountState, IdentityState, StateStore
from streams.support.times import format_time

AGENCY_TIMER_SOURCE = "accessguard.agency-timer"

OUTCOMES: tuple[str, ...] = (
    "applied",
    "scheduled",
    "duplicate",
    "conflict",
    "unknown_identity",
    "noop",
)

_SUMMARY_RULES: dict[str, tuple[str, str]] = {
    # HR type -> (alert rule, dedup key prefix)
    "terminated": ("offboarding.completed", "offboarding"),
    "contract_ended": ("offboarding.completed", "offboarding"),
    "suspended": ("suspension.completed", "suspension"),
    "device_lost": ("device_lost.completed", "device-lost"),
    "role_changed": ("role_change.completed", "role-change"),
    "reinstated": ("reinstatement.completed", "reinstatement"),
}


@dataclass(frozen=True, slots=True)
class HrDecision:
    """What one HR event leads to. ``state_updates`` are whole new values to publish on the
    lifecycle topic (and put into the local StateStore) before the actions are executed."""

    event: HrEvent
    outcome: str  # applied | scheduled | duplicate | conflict | unknown_identity | noop
    identity: str | None
    plan_id: str | None = None
    actions: tuple[Action, ...] = ()
    alerts: tuple[Alert, ...] = ()
    state_updates: tuple[IdentityState | AccountState, ...] = ()
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view for the audit trail. No e-mail: the subject is hashed and actions
        appear without ``params`` (a ``user_ref`` may be an e-mail address)."""
        return {
            "event_id": self.event.event_id,
            "event_type": self.event.type,
            "subject": subject_hash(self.event.email),
            "outcome": self.outcome,
            "identity": self.identity,
            "plan_id": self.plan_id,
            "actions": [a.replay_view() for a in self.actions],
            "alerts": [a.to_dict() for a in self.alerts],
            "reason": self.reason,
        }


@dataclass(slots=True)
class _Effects:
    """Accumulates one decision's effects."""

    identity: Identity
    cause: str
    actions: list[Action] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    accounts: dict[str, AccountState] = field(default_factory=dict)

    def count(self, action: str) -> int:
        return sum(1 for a in self.actions if a.action == action)


def _identity_actions(
    event_type: str,
    identity: Identity,
    *,
    registry: Registry,
    providers: Mapping[str, str],
    cause: str,
    policy: OffboardingPolicy,
    idp_types: Collection[str] | None,
) -> list[Action]:
    """The identity-level actions (disable, revoke sessions and tokens, expire the password,
    reset MFA) the policy asks for on ``event_type``, at every provider that carries each out
    and that the policy does not narrow it away from."""
    actions: list[Action] = []
    for kind in IDENTITY_KINDS:
        if not policy.wants(event_type, kind):
            continue
        actions += [
            a
            for a in responses.identity_actions(
                kind, identity, registry, providers, cause, idp_types=idp_types
            )
            if policy.allows(event_type, kind, a.provider)
        ]
    return actions


def _disabled(current: IdentityState, actions: Iterable[Action]) -> tuple[str, ...]:
    """The providers the identity is disabled at once ``actions`` are done (the custody
    vault counts: the person's vault identity is disabled there)."""
    asked = {a.provider for a in actions if a.action in ("disable_account", "revoke_shared_access")}
    return tuple(sorted({*current.disabled_at, *asked}))


def _cut_shared_access(
    plan: _Effects,
    event_type: str,
    registry: Registry,
    providers: Mapping[str, str],
    policy: OffboardingPolicy,
) -> None:
    """Cut the person out of the custody vault's shared logins, when the policy asks for it
    and they hold any."""
    if not policy.wants(event_type, "revoke_shared_access"):
        return
    vault = responses.custody(providers)
    if vault is None or not policy.allows(event_type, "revoke_shared_access", vault):
        return
    action = responses.shared_access(
        "revoke_shared_access",
        plan.identity,
        responses.shared_logins(registry, plan.identity),
        providers,
        plan.cause,
    )
    if action is not None:
        plan.actions.append(action)


def _rotate_shared(
    plan: _Effects,
    registry: Registry,
    state: StateStore,
    grants: Iterable[Grant],
    providers: Mapping[str, str],
    *,
    holder_must_reenrol: bool,
) -> None:
    """Rotate the TOTP seed of every shared credential in ``grants`` and mark the holders
    that keep the credential as needing re-enrolment. ``holder_must_reenrol`` keeps the
    identity itself on that list (device lost: it keeps access but lost the seed)."""
    for grant in grants:
        account = registry.accounts.get(grant.account)
        if grant.via != "shared_credential" or account is None:
            continue
        remaining = sorted(
            holder.identity
            for holder in registry.holders(account.id, via="shared_credential")
            if (
                holder_must_reenrol
                if holder.identity == plan.identity.id
                else holds_shared_credential(registry, state, holder.identity, account.id)
            )
        )
        # The owner re-enrols the login at the platform; not the person whose device is lost
        # (their access is cut until the device is replaced).
        others = [h for h in remaining if h != plan.identity.id]
        rotation = responses.rotate_shared_credential(
            account,
            identity=plan.identity.id,
            providers=providers,
            cause=plan.cause,
            holders=remaining,
            owner=reenrolment_owner(registry, state, account.id, others, leaving=plan.identity.id),
        )
        if rotation is None:
            continue
        plan.actions.append(rotation)
        plan.accounts[account.id] = replace(
            plan.accounts.get(account.id) or state.account(account.id),
            reenrolment_required=tuple(remaining),
            rotated_cause=plan.cause,
        )
        who = ", ".join(remaining) if remaining else "nobody"
        login = f"Shared login for {account.platform} {account.handle} ({account.id})"
        if "owner" in rotation.params:  # in custody: one owner enrols, holders read codes
            owner = rotation.params["owner"] or "nobody (no holder left: assign one)"
            title = (
                f"{login}: new seed and password staged in the vault; {owner} must enrol them "
                f"at {account.platform} and run `accessguard custody confirm {account.id} "
                f"--code NNNNNN`. Until then {account.platform} still accepts the old seed"
            )
        else:
            title = f"{login} rotated: {len(remaining)} holder(s) must re-enrol TOTP: {who}"
        plan.alerts.append(
            Alert(
                severity="low",
                rule="shared_credential.reenrolment",
                identity=plan.identity.id,
                dedup_key=f"reenrol:{account.id}:{plan.cause}",
                title=title,
                details={
                    "account": account.id,
                    "credential_ref": rotation.params["credential_ref"],
                    "holders": remaining,
                    "owner": rotation.params.get("owner"),
                    "cause": plan.cause,
                },
                runbook=(
                    "docs/runbooks/custody.md"
                    if "owner" in rotation.params
                    else "docs/runbooks/shared-credential-reenrolment.md"
                ),
            )
        )


def _summary(plan: _Effects, event: HrEvent, verb: str) -> Alert:
    rule, prefix = _SUMMARY_RULES[event.type]
    sessions = plan.count("revoke_sessions")
    disabled = plan.count("disable_account")
    enabled = plan.count("enable_account")
    tokens = plan.count("revoke_tokens")
    expired = plan.count("expire_password")
    removed = plan.count("remove_grant")
    rotated = plan.count("rotate_shared_credential")
    downgraded = plan.count("downgrade_grant")
    mfa = plan.count("force_mfa_reenrolment")
    parts = [f"{sessions} sessions revoked"]
    if event.type in ("terminated", "contract_ended"):
        parts += [f"{removed} grants removed", f"{rotated} shared credentials rotated"]
    elif event.type == "device_lost":
        parts += [f"MFA reset at {mfa} identity providers", f"{rotated} shared credentials rotated"]
    elif event.type == "role_changed":
        parts = [f"{downgraded} grants downgraded to {event.new_role}"]
    elif event.type == "reinstated":
        parts = [f"account re-enabled at {enabled} identity provider(s)"]
    if tokens:  # right after the sessions
        parts.insert(1, f"OAuth tokens and app passwords revoked at {tokens} provider(s)")
    cut = [a for a in plan.actions if a.action == "revoke_shared_access"]
    restored = [a for a in plan.actions if a.action == "restore_shared_access"]
    if cut:
        logins = len(cut[0].params.get("accounts") or ())
        parts.insert(0, f"vault access to {logins} shared login(s) cut")
    if restored:
        logins = len(restored[0].params.get("accounts") or ())
        parts.append(f"vault access to {logins} shared login(s) restored")
    if disabled:
        parts.insert(0, f"account disabled at {disabled} identity provider(s)")
    if expired:
        parts.append(f"password expired at {expired} identity provider(s)")
    return Alert(
        severity="info",
        rule=rule,
        identity=plan.identity.id,
        dedup_key=f"{prefix}:{event.event_id}",
        title=f"{verb} {plan.identity.name}: " + ", ".join(parts),
        details={
            "event_id": event.event_id,
            "event_type": event.type,
            "cause": plan.cause,
            "sessions_revoked": sessions,
            "grants_removed": removed,
            "grants_downgraded": downgraded,
            "shared_credentials_rotated": rotated,
            "mfa_reenrolments": mfa,
            "accounts_disabled": disabled,
            "accounts_enabled": enabled,
            "tokens_revoked": tokens,
            "passwords_expired": expired,
            "shared_access_cut": bool(cut),
            "accounts": sorted({a.account for a in plan.actions if a.account is not None}),
            "providers": sorted({a.provider for a in plan.actions}),
        },
    )


def _unknown(event: HrEvent) -> HrDecision:
    alert = Alert(
        severity="high",
        rule="hr.unknown_identity",
        identity=None,
        dedup_key=f"hr-unknown:{event.event_id}",
        title=(
            f"HR event {event.event_id} ({event.type}) matches no identity in the registry "
            f"(subject {subject_hash(event.email)}): check the registry's employee_id and emails"
        ),
        details={
            "event_id": event.event_id,
            "event_type": event.type,
            "source": event.source,
            "subject": subject_hash(event.email),
            "employee_id_hash": subject_hash(event.employee_id),
        },
        runbook="docs/runbooks/hr-unknown-identity.md",
    )
    return HrDecision(
        event=event,
        outcome="unknown_identity",
        identity=None,
        alerts=(alert,),
        reason="no registry identity matches employee_id or email",
    )


def decide_hr(
    registry: Registry,
    state: StateStore,
    event: HrEvent,
    now: datetime,
    providers: Mapping[str, str],
    *,
    idp_types: Collection[str] | None = None,
    policy: OffboardingPolicy = DEFAULT_POLICY,
) -> HrDecision:
    """Decide what ``event`` means for the identity it names, at time ``now``.

    ``providers`` maps each configured provider name to its type (``providers.<name>.type``);
    ``idp_types`` are the types that are identity providers (default: what the connectors
    declared, :data:`streams.model.kinds.IDENTITY_PROVIDER_TYPES`); ``policy`` says which actions
    each event type asks for, in which steps (:mod:`streams.decide.policy`). Idempotent: an event
    already applied (or already scheduled, when still in the future) is a ``duplicate`` with
    no effects; the same event_id carrying a different event (:meth:`HrEvent.digest`) is a
    ``conflict`` with no effects, which the worker dead-letters with the reason rather than
    dropping it.
    """
    identity = registry.resolve_hr(event.employee_id, event.email)
    if identity is None:
        return _unknown(event)
    current = state.identity(identity.id)
    digest = event.digest()
    if event.event_id in current.applied_events:
        applied = current.applied_digests.get(event.event_id)
        if applied is not None and applied != digest:
            return HrDecision(
                event,
                "conflict",
                identity.id,
                reason=f"event_id {event.event_id} was already applied to a different event",
            )
        return HrDecision(
            event, "duplicate", identity.id, reason=f"event {event.event_id} already applied"
        )
    waiting = current.scheduled.get(event.event_id)
    if waiting is not None and HrEvent.from_dict(waiting).digest() != digest:
        return HrDecision(
            event,
            "conflict",
            identity.id,
            reason=f"event_id {event.event_id} is already scheduled for a different event",
        )
    if event.effective_at > now:
        if waiting is not None:
            return HrDecision(
                event, "duplicate", identity.id, reason=f"event {event.event_id} already scheduled"
            )
        scheduled = {**current.scheduled, event.event_id: event.to_dict()}
        return HrDecision(
            event,
            "scheduled",
            identity.id,
            state_updates=(replace(current, scheduled=scheduled),),
            reason=f"effective at {format_time(event.effective_at)}",
        )
    if event.event_id in current.scheduled:
        current = replace(
            current,
            scheduled={k: v for k, v in current.scheduled.items() if k != event.event_id},
        )

    cause = f"hr:{event.type}:{event.event_id}"
    plan = _Effects(identity=identity, cause=cause)
    offboarded = is_offboarded(registry, state, identity.id)
    since = format_time(event.effective_at)
    outcome = "applied"
    reason = ""
    verb = "Offboarded"
    new_state = current
    # Disable, revoke sessions and tokens, expire the password, reset MFA: whatever the policy
    # asks for on this event type (nothing for a reinstatement or a role change).
    plan.actions += _identity_actions(
        event.type,
        identity,
        registry=registry,
        providers=providers,
        cause=cause,
        policy=policy,
        idp_types=idp_types,
    )

    if event.type in ("terminated", "contract_ended"):
        pending = held_grants(registry, current)
        removed: list[str] = []
        if policy.wants(event.type, "remove_grant"):
            for grant in pending:
                account = registry.accounts.get(grant.account)
                if account is None or not policy.allows(
                    event.type, "remove_grant", account.provider
                ):
                    continue
                plan.actions.append(responses.remove_grant(identity, account, grant, cause))
                removed.append(account.id)
        if policy.wants(event.type, "rotate_shared_credential"):
            _rotate_shared(plan, registry, state, pending, providers, holder_must_reenrol=False)
        _cut_shared_access(plan, event.type, registry, providers, policy)
        disabled = _disabled(current, plan.actions)
        if current.status == "offboarded":
            reason = "already offboarded: sessions revoked again, only new grants removed"
            new_state = replace(
                current, removed_grants=(*current.removed_grants, *removed), disabled_at=disabled
            )
        else:
            new_state = replace(
                current,
                status="offboarded",
                status_since=since,
                status_cause=cause,
                removed_grants=(*current.removed_grants, *removed),
                disabled_at=disabled,
            )
    elif event.type == "suspended":
        verb = "Suspended"
        _cut_shared_access(plan, event.type, registry, providers, policy)
        disabled = _disabled(current, plan.actions)
        if offboarded:
            reason = "already offboarded: sessions revoked again, status unchanged"
            new_state = replace(current, disabled_at=disabled)
            if current.status != "offboarded":
                new_state = replace(
                    new_state, status="offboarded", status_since=since, status_cause=cause
                )
        else:
            new_state = replace(
                current,
                status="suspended",
                status_since=since,
                status_cause=cause,
                disabled_at=disabled,
            )
    elif event.type == "reinstated":
        verb = "Reinstated"
        if offboarded:
            outcome = "noop"
            reason = "identity is offboarded: re-onboarding goes through the registry"
        elif current.status == "suspended" or identity.status == "suspended":
            # Re-enable exactly where the suspension disabled the account.
            can_enable = responses.account_providers("enable_account", identity, providers)
            plan.actions += [
                Action.make(
                    "enable_account",
                    identity=identity.id,
                    account=None,
                    provider=provider,
                    cause=cause,
                    params={"user_ref": responses.user_ref(identity, provider)},
                )
                for provider in current.disabled_at
                if provider in can_enable
            ]
            kept = {g.account for g in held_grants(registry, current)}
            for provider in current.disabled_at:
                if providers.get(provider) not in kinds.CUSTODY_TYPES:
                    continue
                accounts = [a for a in responses.shared_logins(registry, identity) if a in kept]
                restore = responses.shared_access(
                    "restore_shared_access", identity, accounts, providers, cause, provider=provider
                )
                if restore is not None:
                    plan.actions.append(restore)
            new_state = replace(
                current, status="active", status_since=since, status_cause=cause, disabled_at=()
            )
            reason = "suspension cleared; grants are not restored automatically"
        else:
            outcome = "noop"
            reason = "identity is not suspended"
    elif event.type == "device_lost":
        verb = "Secured lost device of"
        if policy.wants(event.type, "rotate_shared_credential"):
            held = held_grants(registry, current)
            _rotate_shared(
                plan, registry, state, held, providers, holder_must_reenrol=not offboarded
            )
        _cut_shared_access(plan, event.type, registry, providers, policy)
        new_state = replace(
            current,
            mfa_reenrolment_required=True,
            disabled_at=_disabled(current, plan.actions),
        )
    elif event.type == "role_changed":
        verb = "Changed role of"
        new_role = event.new_role or "no_access"
        target = ROLE_RANK[new_role]
        downgraded = dict(current.downgraded)
        if offboarded:
            outcome = "noop"
            reason = "identity is offboarded"
        else:
            for grant in registry.grants_of(identity.id):
                account = registry.accounts.get(grant.account)
                effective = effective_grant(grant, current)
                if account is None or effective is None or ROLE_RANK[effective.role] <= target:
                    continue
                plan.actions.append(
                    responses.downgrade_grant(identity, account, grant, new_role, cause)
                )
                downgraded[grant.account] = new_role
            new_state = replace(current, downgraded=downgraded)
            if not plan.actions:
                outcome = "noop"
                reason = f"no grant above {new_role}"
    else:  # pragma: no cover - HrEvent.from_dict only admits HR_TYPES
        outcome = "noop"
        reason = f"unsupported HR event type {event.type}"

    plan_id: str | None = None
    alerts: list[Alert] = list(plan.alerts)
    if plan.actions:
        plan_id = event.event_id
        alerts.insert(0, _summary(plan, event, verb))
        new_state = new_state.with_plan(
            plan_id,
            Plan.make(
                plan.actions,
                alerts=alerts,
                accepted_at=event.accepted_at,
                event_type=event.type,
                decided_at=now.timestamp(),
                steps=[policy.step(event.type, a.action) for a in plan.actions],
                # which worker owns the plan after a rebalance: the partition of this key
                partition_key=event.partition_key,
            ),
        )
    new_state = new_state.with_applied(event.event_id, digest)
    updates: tuple[IdentityState | AccountState, ...] = (
        new_state,
        *(plan.accounts[k] for k in sorted(plan.accounts)),
    )
    return HrDecision(
        event=event,
        outcome=outcome,
        identity=identity.id,
        plan_id=plan_id,
        actions=tuple(plan.actions),
        alerts=tuple(alerts),
        state_updates=updates,
        reason=reason,
    )


def due_scheduled(state: StateStore, now: datetime) -> list[HrEvent]:
    """Scheduled HR events whose ``effective_at`` has come, oldest first (ties by event id).

    Raises ValidationError for a stored event this version cannot read; such a record was
    validated when it was scheduled, so that is a bug to surface, not to skip.
    """
    due: list[HrEvent] = []
    for ident in state.identities():
        for data in ident.scheduled.values():
            event = HrEvent.from_dict(data)
            if event.effective_at <= now:
                due.append(event)
    due.sort(key=lambda e: (e.effective_at, e.event_id))
    return due


def decide_agency_expiry(registry: Registry, state: StateStore, now: datetime) -> list[HrEvent]:
    """Synthetic ``contract_ended`` events for every member of every agency whose contract
    ended before ``now`` and who is not offboarded yet. The event id is deterministic per
    agency, contract end and member, so a timer firing again yields duplicates, not repeats."""
    events: list[HrEvent] = []
    for agency in sorted(registry.agencies.values(), key=lambda a: a.id):
        if agency.contract_ends >= now:
            continue
        for member in agency.members:
            identity = registry.identities.get(member)
            if identity is None or is_offboarded(registry, state, member):
                continue
            events.append(
                HrEvent(
                    event_id=f"agency-{agency.id}-{agency.contract_ends:%Y%m%d}-{member}",
                    type="contract_ended",
                    employee_id=identity.hr_id,
                    email=identity.emails[0] if identity.emails else f"{identity.id}@invalid",
                    effective_at=agency.contract_ends,
                    source=AGENCY_TIMER_SOURCE,
                    accepted_at=now.timestamp(),
                )
            )
    return events
