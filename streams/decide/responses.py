"""Responses turned into actions: the one place that knows which provider does what.

A response (``revoke_sessions``, ``force_mfa_reenrolment``, ``remove_grant``,
``downgrade_grant``, ``rotate_shared_credential``) becomes :class:`~streams.model.records.Action`
records here, whoever asked for it: an offboarding (:mod:`streams.decide.hr`), a login rule or a
leak rule (:mod:`streams.detect.responses`). Building them in one place keeps the providers,
params and idempotency keys identical on every path, so the executor's ledger recognises an
action one path already did when another asks for it again.

``providers`` maps each configured provider name to its type (``providers.<name>.type``);
which types are identity providers is the connectors' fact
(:data:`streams.model.kinds.IDENTITY_PROVIDER_TYPES`), passed in as ``idp_types`` or taken from
there. Secrets never appear in an action: a rotation carries the secret store reference
(``credential_ref``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from streams.model import kinds
from streams.model.records import Action
from streams.model.registry import Account, Grant, Identity, Registry

SECRET_STORE_TYPE = "secret_store"  # noqa: S105 - a provider type name, not a secret
#: Provider name used for rotations when no secret store is configured: the executor then
#: fails the action loudly (and pages) instead of the rotation silently not happening.
DEFAULT_SECRET_STORE = "secret-store"  # noqa: S105 - a provider name, not a secret


def user_ref(identity: Identity, provider: str) -> str:
    """The identity's id at ``provider``: its alias there, else its first e-mail, else its id."""
    alias = identity.aliases.get(provider)
    if alias:
        return alias
    return identity.emails[0] if identity.emails else identity.id


def account_params(identity: Identity, account: Account) -> dict[str, Any]:
    """The params a provider needs to act on ``identity``'s access to ``account``."""
    return {
        "user_ref": user_ref(identity, account.provider),
        "account_handle": account.handle,
        "platform": account.platform,
    }


def session_providers(
    registry: Registry, identity: Identity, providers: Mapping[str, str]
) -> list[str]:
    """Every provider that may hold a session of ``identity``: identity providers and
    platforms it has an alias at (when configured), and the manager of each account it holds.
    Account managers are included even when not configured, so a registry/config mismatch
    fails loudly in the executor instead of leaving a session alive."""
    names = {
        name
        for name in identity.aliases
        if name in providers
        and providers[name] != SECRET_STORE_TYPE
        and providers[name] not in kinds.CUSTODY_TYPES
    }
    for grant in registry.grants_of(identity.id):
        account = registry.accounts.get(grant.account)
        if account is not None:
            names.add(account.provider)
    return sorted(names)


def mfa_providers(
    identity: Identity, providers: Mapping[str, str], idp_types: Collection[str] | None = None
) -> list[str]:
    """The configured identity providers ``identity`` has an alias at, sorted: where its MFA
    factors live."""
    idps = kinds.IDENTITY_PROVIDER_TYPES if idp_types is None else idp_types
    return [p for p in sorted(identity.aliases) if providers.get(p) in idps]


def account_providers(kind: str, identity: Identity, providers: Mapping[str, str]) -> list[str]:
    """The configured identity providers ``identity`` has an alias at whose type carries out
    ``kind`` on a person's account (disable, enable, expire the password, revoke OAuth
    tokens; :data:`streams.model.kinds.PROVIDER_ACTIONS`), sorted."""
    table = kinds.PROVIDER_ACTIONS
    return [p for p in sorted(identity.aliases) if kind in table.get(providers.get(p, ""), ())]


def custody(providers: Mapping[str, str]) -> str | None:
    """The configured custody vault of shared logins (:data:`kinds.CUSTODY_TYPES`), if any."""
    vaults = sorted(name for name, kind in providers.items() if kind in kinds.CUSTODY_TYPES)
    return vaults[0] if vaults else None


def secret_store(providers: Mapping[str, str]) -> str:
    """Where rotations go: the custody vault when one is configured, else the file secret
    store (a loud default when neither is)."""
    vault = custody(providers)
    if vault is not None:
        return vault
    stores = sorted(name for name, kind in providers.items() if kind == SECRET_STORE_TYPE)
    return stores[0] if stores else DEFAULT_SECRET_STORE


def shared_logins(registry: Registry, identity: Identity) -> list[str]:
    """The shared logins (accounts with a shared credential) ``identity`` is granted through
    ``shared_credential``, sorted."""
    out = set()
    for grant in registry.grants_of(identity.id):
        account = registry.accounts.get(grant.account)
        if grant.via == "shared_credential" and account and account.shared_credential:
            out.add(account.id)
    return sorted(out)


def shared_access(
    kind: str,
    identity: Identity,
    accounts: Collection[str],
    providers: Mapping[str, str],
    cause: str,
    *,
    provider: str | None = None,
) -> Action | None:
    """``revoke_shared_access`` (cut the person out of the custody vault: their vault
    identity disabled, removed from the groups of ``accounts``) or ``restore_shared_access``
    at the custody vault (``provider``, default the configured one); None when there is no
    custody vault or, for a cut, no shared login to cut."""
    vault = provider or custody(providers)
    if vault is None or (kind == "revoke_shared_access" and not accounts):
        return None
    return Action.make(
        kind,
        identity=identity.id,
        account=None,
        provider=vault,
        cause=cause,
        params={"accounts": sorted(accounts)},
    )


def identity_actions(
    kind: str,
    identity: Identity,
    registry: Registry,
    providers: Mapping[str, str],
    cause: str,
    *,
    idp_types: Collection[str] | None = None,
) -> list[Action]:
    """``revoke_sessions`` at every provider that may hold a session of the identity
    (:func:`session_providers`), ``force_mfa_reenrolment`` at each identity provider it has
    an alias at (:func:`mfa_providers`), any other kind (``disable_account``,
    ``expire_password`` ...) at each of those whose type carries it out
    (:func:`account_providers`): one action per provider."""
    if kind == "revoke_sessions":
        targets = session_providers(registry, identity, providers)
    elif kind == "force_mfa_reenrolment":
        targets = mfa_providers(identity, providers, idp_types)
    else:
        targets = account_providers(kind, identity, providers)
    return [
        Action.make(
            kind,
            identity=identity.id,
            account=None,
            provider=provider,
            cause=cause,
            params={"user_ref": user_ref(identity, provider)},
        )
        for provider in targets
    ]


def remove_grant(identity: Identity, account: Account, grant: Grant, cause: str) -> Action:
    """Remove ``identity``'s grant on ``account`` at the account's manager."""
    return Action.make(
        "remove_grant",
        identity=identity.id,
        account=account.id,
        provider=account.provider,
        cause=cause,
        params={**account_params(identity, account), "role": grant.role, "via": grant.via},
    )


def downgrade_grant(
    identity: Identity, account: Account, grant: Grant, role: str, cause: str
) -> Action:
    """Lower ``identity``'s grant on ``account`` to ``role`` at the account's manager."""
    return Action.make(
        "downgrade_grant",
        identity=identity.id,
        account=account.id,
        provider=account.provider,
        cause=cause,
        params={
            **account_params(identity, account),
            "role": role,
            "from_role": grant.role,
            "via": grant.via,
        },
    )


def rotate_shared_credential(
    account: Account,
    *,
    identity: str,
    providers: Mapping[str, str],
    cause: str,
    holders: Collection[str] = (),
    owner: str | None = None,
) -> Action | None:
    """Rotate the TOTP seed (and, in custody, the password) of ``account``'s shared
    credential, on behalf of ``identity`` (who the action is recorded against); None when the
    account has no shared TOTP credential (nothing to rotate). ``holders`` keep the login and
    must re-enrol; ``owner`` is the one who re-enrols it at the platform (the custody vault
    opens a task for them)."""
    shared = account.shared_credential
    if shared is None or not shared.totp:
        return None
    params: dict[str, Any] = {
        "credential_ref": shared.ref,
        "account_handle": account.handle,
        "platform": account.platform,
    }
    if custody(providers) is not None:
        params.update(
            criticality=account.criticality,
            holders=sorted(holders),
            owner=owner,
            login=shared.login,
        )
    return Action.make(
        "rotate_shared_credential",
        identity=identity,
        account=account.id,
        provider=secret_store(providers),
        cause=cause,
        params=params,
    )


def unique_actions(groups: Iterable[Iterable[Action]]) -> list[Action]:
    """The actions of several responses in order, each idempotency key once (two rules that
    fire on one subject may ask for the same action)."""
    actions: list[Action] = []
    seen: set[str] = set()
    for group in groups:
        for action in group:
            if action.idempotency_key not in seen:
                seen.add(action.idempotency_key)
                actions.append(action)
    return actions
