"""Resolve a normalised LoginEvent against the registry: who is it, and which account.

Identity, first match wins:

1. ``principal_id`` as the identity's alias at the event's vendor (``okta`` -> the Okta user
   id ``00u...``, ``entra`` -> the object id, ``google`` -> the profile id);
2. ``principal`` as the alias at the event's vendor (e.g. ``google: alice@...``);
3. ``principal`` as any e-mail or any alias value of any identity
   (:meth:`Registry.resolve_alias` with no provider: e-mails compare case- and
   blank-insensitively; a value two identities share is ambiguous and resolves to nothing).

An unknown principal leaves ``identity`` None: rules treat that as "unknown principal", and
acting on a guess would be worse. Steps 1 and 2 apply to the vendors the connectors declare as
alias namespaces (:data:`streams.model.kinds.ALIAS_VENDORS`); the ``generic`` vendor is not a
registry provider name, so it skips them.

Target account: ``target`` matched as an account id, a handle (``@`` optional, any case) or
``platform:handle`` (:meth:`Registry.find_account`; a bare handle on several platforms is
ambiguous and resolves to nothing).

Cost: a handful of dict lookups on indices the Registry maintains incrementally as changes
arrive (no rebuild, no cache to invalidate), plus one copy of the event when something
changed. Whatever ``identity``/``target_account`` the event carried in is overwritten: the
registry is the authority.
"""

from __future__ import annotations

from dataclasses import fields

from streams.model import kinds
from streams.model.records import LoginEvent
from streams.model.registry import Identity, Registry


def resolve_identity(event: LoginEvent, registry: Registry) -> Identity | None:
    """The registry identity behind the event's principal, or None when unknown/ambiguous."""
    # vendors whose name is also a provider name in the registry's ``aliases`` (connectors')
    if event.vendor in kinds.ALIAS_VENDORS:
        if event.principal_id:
            found = registry.resolve_alias(event.principal_id, event.vendor)
            if found is not None:
                return found
        found = registry.resolve_alias(event.principal, event.vendor)
        if found is not None:
            return found
    if not event.principal:
        return None
    return registry.resolve_alias(event.principal)


def resolve(event: LoginEvent, registry: Registry) -> LoginEvent:
    """The event with ``identity`` and ``target_account`` filled from the registry (None when
    they do not resolve). Pure: returns the same object when nothing changes."""
    identity = resolve_identity(event, registry)
    identity_id = identity.id if identity is not None else None
    account = registry.find_account(event.target) if event.target else None
    account_id = account.id if account is not None else None
    if identity_id == event.identity and account_id == event.target_account:
        return event
    return _with_resolution(event, identity_id, account_id)


def _with_resolution(event: LoginEvent, identity: str | None, account: str | None) -> LoginEvent:
    """``dataclasses.replace(event, identity=identity, target_account=account)`` spelled out:
    replace's generic per-field loop cost more than the lookups above (~4 of ~11 µs)."""
    e = event
    return LoginEvent(
        e.event_id, e.vendor, e.time, e.principal, e.outcome, e.event_type, identity,
        e.vendor_event_id, e.failure_reason, e.mfa_method, e.mfa_result, e.ip, e.geo, e.device,
        e.user_agent, e.target, account, e.risk, e.principal_id,
    )  # fmt: skip


# A field added to LoginEvent must be copied above, or resolve would silently drop it.
_COPIED = (
    "event_id", "vendor", "time", "principal", "outcome", "event_type", "identity",
    "vendor_event_id", "failure_reason", "mfa_method", "mfa_result", "ip", "geo", "device",
    "user_agent", "target", "target_account", "risk", "principal_id",
)  # fmt: skip
if tuple(f.name for f in fields(LoginEvent)) != _COPIED:  # pragma: no cover - a dev error
    raise RuntimeError("streams.decide.resolve._with_resolution must copy every LoginEvent field")
