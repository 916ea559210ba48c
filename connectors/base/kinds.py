"""What kind of thing each vendor is, for the core that may not name vendors.

The core (``streams/``) names no vendor (house rule); these tables are the facts it needs,
declared here, next to the connectors that make them true, and handed to the core through
:func:`streams.model.kinds.declare` when this module is imported (the ``streams`` package root
imports it first). A new identity provider or login source adds its name here and nowhere in
``streams/``.
"""

from __future__ import annotations

from streams.model.kinds import declare

#: Login vendors with a normaliser (``connectors/<vendor>/normaliser.py``, tabled in
#: :data:`connectors.base.sources.NORMALISERS`), in the order error messages list them.
LOGIN_VENDORS: tuple[str, ...] = ("okta", "entra", "google", "generic")
#: Provider types (``providers.<name>.type``) that are identity providers: sessions and MFA
#: factors live there, so ``revoke_sessions`` and ``force_mfa_reenrolment`` go there.
IDP_TYPES: frozenset[str] = frozenset({"okta", "graph", "google"})
#: Login vendors whose name is also a provider name in the registry's ``aliases`` (the
#: ``generic`` source is not one): an event's principal is looked up there first.
ALIAS_VENDORS: frozenset[str] = frozenset({"okta", "entra", "google"})

#: What every identity-provider type here does to a person's account ...
_ACCOUNT_ACTIONS = frozenset(
    {
        "revoke_sessions",
        "force_mfa_reenrolment",
        "disable_account",
        "enable_account",
        "expire_password",
    }
)
#: Per identity-provider type: the core asks a provider of that type for these actions only,
#: and the provider's ``supports`` is its entry.
PROVIDER_ACTIONS: dict[str, frozenset[str]] = {
    # ... and revoking OAuth grants / tokens and app passwords where they outlive sessions
    "okta": _ACCOUNT_ACTIONS | {"revoke_tokens"},
    # (Graph ends refresh tokens with the sessions: no revoke_tokens)
    "graph": _ACCOUNT_ACTIONS,
    "google": _ACCOUNT_ACTIONS | {"revoke_tokens"},
}

#: Provider types that hold shared brand logins in custody (connectors/custody).
CUSTODY_TYPES: frozenset[str] = frozenset({"openbao"})

declare(
    custody_types=CUSTODY_TYPES,
    login_vendors=LOGIN_VENDORS,
    identity_provider_types=IDP_TYPES,
    alias_vendors=ALIAS_VENDORS,
    provider_actions=PROVIDER_ACTIONS,
)
