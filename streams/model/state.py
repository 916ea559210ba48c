"""Lifecycle state the product learns (the registry is what people declare; this is what happened).

State is event-sourced: each change is a whole new value for one key (``identity:<id>`` or
``account:<id>``) written to the compacted ``lifecycle`` topic and to the journal. Every worker
materialises it into a :class:`StateStore`; ``accessguard replay`` uses the same store in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from streams.model.plan import Plan

#: How many applied event ids one identity remembers. Webhook senders retry for days with the
#: same id; a person has few HR events, so 500 covers years without unbounded growth.
MAX_APPLIED_EVENTS = 500


@dataclass(frozen=True, slots=True)
class IdentityState:
    identity: str
    status: str = "active"  # active | suspended | offboarded
    status_since: str | None = None
    status_cause: str | None = None
    mfa_reenrolment_required: bool = False
    #: Accounts whose grant the product removed (registry drift until the file is updated).
    removed_grants: tuple[str, ...] = ()
    #: account id -> role the grant was downgraded to.
    downgraded: dict[str, str] = field(default_factory=dict)
    #: HR event ids already applied, newest last (bounded by MAX_APPLIED_EVENTS).
    applied_events: tuple[str, ...] = ()
    #: event_id -> ``HrEvent.digest()`` of the applied events (same bound): an event_id
    #: re-used for a different event is refused (dead-lettered), not taken as a duplicate.
    applied_digests: dict[str, str] = field(default_factory=dict)
    #: event_id -> HrEvent dict, for events whose effective_at is in the future.
    scheduled: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: plan_id -> the plan of one decision (:mod:`streams.model.plan`). Removed when every
    #: action is done or failed permanently and the plan's alerts are out.
    plans: dict[str, Plan] = field(default_factory=dict)
    #: When the identity's password last changed, as far as the product learned (RFC 3339).
    #: Leaks of breaches older than this (or than ``reenrolled_at``) are stale.
    credential_changed_at: str | None = None
    #: When a re-enrolment the product forced (force_mfa_reenrolment) completed (RFC 3339).
    reenrolled_at: str | None = None
    #: Providers where an offboarding or suspension disabled the account (reinstatement
    #: re-enables exactly these).
    disabled_at: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"identity:{self.identity}"

    def with_applied(self, event_id: str, digest: str | None = None) -> IdentityState:
        applied = (*self.applied_events, event_id)[-MAX_APPLIED_EVENTS:]
        digests = self.applied_digests
        if digest is not None:
            kept = set(applied)
            digests = {k: v for k, v in digests.items() if k in kept and k != event_id}
            digests[event_id] = digest
        return replace(self, applied_events=applied, applied_digests=digests)

    def with_plan(self, plan_id: str, plan: Plan) -> IdentityState:
        return replace(self, plans={**self.plans, plan_id: plan})

    def without_plan(self, plan_id: str) -> IdentityState:
        return replace(self, plans={k: v for k, v in self.plans.items() if k != plan_id})

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "identity",
            "identity": self.identity,
            "status": self.status,
            "status_since": self.status_since,
            "status_cause": self.status_cause,
            "mfa_reenrolment_required": self.mfa_reenrolment_required,
            "removed_grants": list(self.removed_grants),
            "downgraded": dict(self.downgraded),
            "applied_events": list(self.applied_events),
            "applied_digests": dict(self.applied_digests),
            "scheduled": dict(self.scheduled),
            "plans": {plan_id: plan.to_dict() for plan_id, plan in self.plans.items()},
            "credential_changed_at": self.credential_changed_at,
            "reenrolled_at": self.reenrolled_at,
            **({"disabled_at": list(self.disabled_at)} if self.disabled_at else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IdentityState:
        return cls(
            identity=data["identity"],
            status=data.get("status", "active"),
            status_since=data.get("status_since"),
            status_cause=data.get("status_cause"),
            mfa_reenrolment_required=bool(data.get("mfa_reenrolment_required", False)),
            removed_grants=tuple(data.get("removed_grants") or ()),
            downgraded=dict(data.get("downgraded") or {}),
            applied_events=tuple(data.get("applied_events") or ()),
            applied_digests=dict(data.get("applied_digests") or {}),
            scheduled=dict(data.get("scheduled") or {}),
            plans={
                plan_id: Plan.from_dict(plan) for plan_id, plan in (data.get("plans") or {}).items()
            },
            credential_changed_at=data.get("credential_changed_at"),
            reenrolled_at=data.get("reenrolled_at"),
            disabled_at=tuple(data.get("disabled_at") or ()),
        )


@dataclass(frozen=True, slots=True)
class AccountState:
    account: str
    #: Incremented on every rotation; the secret store keeps the value under
    #: ``<credential_ref>`` — state only ever holds the version, never the secret.
    secret_version: int = 0
    rotated_at: str | None = None
    rotated_cause: str | None = None
    #: Identities that still hold the shared credential and must enrol the new TOTP secret.
    reenrolment_required: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"account:{self.account}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "account",
            "account": self.account,
            "secret_version": self.secret_version,
            "rotated_at": self.rotated_at,
            "rotated_cause": self.rotated_cause,
            "reenrolment_required": list(self.reenrolment_required),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AccountState:
        return cls(
            account=data["account"],
            secret_version=int(data.get("secret_version", 0)),
            rotated_at=data.get("rotated_at"),
            rotated_cause=data.get("rotated_cause"),
            reenrolment_required=tuple(data.get("reenrolment_required") or ()),
        )


StateValue = IdentityState | AccountState


def state_from_dict(data: dict[str, Any]) -> StateValue:
    if data.get("kind") == "account":
        return AccountState.from_dict(data)
    return IdentityState.from_dict(data)


class StateStore:
    """An in-memory materialisation of the lifecycle topic. Not thread-safe: used on the
    event loop only (the executor's threads never touch it)."""

    def __init__(self) -> None:
        self._identities: dict[str, IdentityState] = {}
        self._accounts: dict[str, AccountState] = {}

    def identity(self, identity_id: str) -> IdentityState:
        return self._identities.get(identity_id) or IdentityState(identity=identity_id)

    def account(self, account_id: str) -> AccountState:
        return self._accounts.get(account_id) or AccountState(account=account_id)

    def put(self, value: StateValue) -> None:
        if isinstance(value, IdentityState):
            self._identities[value.identity] = value
        else:
            self._accounts[value.account] = value

    def apply(self, key: str, data: dict[str, Any] | None) -> None:
        """Apply one lifecycle record (``None`` is a tombstone)."""
        kind, _, ident = key.partition(":")
        if data is None:
            (self._accounts if kind == "account" else self._identities).pop(ident, None)
            return
        self.put(state_from_dict(data))

    def identities(self) -> Iterable[IdentityState]:
        return list(self._identities.values())

    def accounts(self) -> Iterable[AccountState]:
        return list(self._accounts.values())
