"""Who holds what now: the registry's grants as they stand after what accessguard did.

The registry is what people declare; the lifecycle state (:mod:`streams.model.state`) is what
happened since. A grant the product removed (``removed_grants``) no longer counts, even while
the registry file still lists it; a grant it downgraded (``downgraded``) counts with the lower
role; an identity offboarded in either place is offboarded. Every path that asks "does this
person still have access?" (offboarding, leaks, rules, the registry gauges) asks here, so they
cannot disagree.

Grant expiry (``expires_at``) is deliberately not applied here: an expired grant is still held
until someone removes it, and rules read it as a fact of its own (``grant.expired``).
"""

from __future__ import annotations

from dataclasses import replace

from streams.model.records import ROLE_RANK
from streams.model.registry import Grant, Registry
from streams.model.state import IdentityState, StateStore


def is_offboarded(registry: Registry, state: StateStore, identity_id: str) -> bool:
    """Offboarded in the lifecycle state or declared offboarded in the registry."""
    if state.identity(identity_id).status == "offboarded":
        return True
    ident = registry.identities.get(identity_id)
    return ident is not None and ident.status == "offboarded"


def held_grants(registry: Registry, life: IdentityState) -> list[Grant]:
    """The identity's registry grants that accessguard has not removed, in registry order
    (as declared: downgrades are not applied, see :func:`effective_grants`)."""
    removed = life.removed_grants
    return [g for g in registry.grants_of(life.identity) if g.account not in removed]


def effective_grant(grant: Grant, life: IdentityState) -> Grant | None:
    """The grant as it stands after what the product did: None once removed, the lower role
    once downgraded."""
    if grant.account in life.removed_grants:
        return None
    lowered = life.downgraded.get(grant.account)
    if lowered is not None and ROLE_RANK[lowered] < ROLE_RANK[grant.role]:
        return replace(grant, role=lowered)
    return grant


def effective_grants(registry: Registry, life: IdentityState) -> list[Grant]:
    """Every grant the identity still holds, with downgrades applied, in registry order."""
    out: list[Grant] = []
    for grant in registry.grants_of(life.identity):
        found = effective_grant(grant, life)
        if found is not None:
            out.append(found)
    return out


def effective_roles(registry: Registry, life: IdentityState) -> list[str]:
    """The roles of :func:`effective_grants` that give any access (``no_access`` left out),
    in registry order, repeats included."""
    return [g.role for g in effective_grants(registry, life) if g.role != "no_access"]


def holds_shared_credential(
    registry: Registry, lifecycle: StateStore, identity_id: str, account_id: str
) -> bool:
    """Whether a holder of ``account_id``'s shared credential still holds it: not offboarded
    and the grant not removed by accessguard."""
    return (
        not is_offboarded(registry, lifecycle, identity_id)
        and account_id not in lifecycle.identity(identity_id).removed_grants
    )


def shared_credential_holders(
    registry: Registry, lifecycle: StateStore, account_id: str
) -> list[str]:
    """Identities holding ``account_id`` through its shared credential, still active and
    still granted: who must re-enrol once the shared secret changes."""
    return sorted(
        g.identity
        for g in registry.holders(account_id, via="shared_credential")
        if holds_shared_credential(registry, lifecycle, g.identity, account_id)
    )


def reenrolment_owner(
    registry: Registry,
    lifecycle: StateStore,
    account_id: str,
    remaining: list[str],
    *,
    leaving: str | None = None,
) -> str | None:
    """Who re-enrols a rotated shared login at its platform: the account's admin (a holder
    of the admin role on it, by any path, who keeps access; one among ``remaining`` first),
    else the first of ``remaining`` by id, else nobody. Never ``leaving``: the person whose
    exit or lost device caused the rotation, even as the account's admin."""
    admins = sorted(
        g.identity
        for g in registry.holders(account_id)
        if g.role == "admin"
        and g.identity != leaving
        and holds_shared_credential(registry, lifecycle, g.identity, account_id)
    )
    for admin in admins:
        if admin in remaining:
            return admin
    if admins:
        return admins[0]
    return min(remaining) if remaining else None
