"""Vendor facts the core needs but may not spell: the connectors declare them.

The house rule keeps vendor names in code under ``connectors/`` only, so that adding an
identity provider or a login source touches no core module. Yet the core must know a few facts
about vendors: which login vendors a canonical :class:`~streams.model.records.LoginEvent` may
carry, which provider *types* are identity providers (sessions and MFA factors live there, so
``force_mfa_reenrolment`` goes there), and which login vendors name a namespace of the
registry's ``aliases``. :mod:`connectors.base.kinds` holds those tables and calls
:func:`declare` when imported; the package root (``streams/__init__.py``) imports it first, so
every entry point, test and library use sees the declared values before a record is validated
or a rule's field table is built. Until then every table is empty (and every login vendor is
refused), which fails loudly rather than quietly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

#: Vendors a canonical login event may carry (each has a normaliser under ``connectors/``),
#: in the order error messages list them.
LOGIN_VENDORS: tuple[str, ...] = ()
#: Provider types (``providers.<name>.type``) that are identity providers.
IDENTITY_PROVIDER_TYPES: frozenset[str] = frozenset()
#: Login vendors whose name is also a provider name in the registry's ``aliases``.
ALIAS_VENDORS: frozenset[str] = frozenset()
#: Identity-provider type -> the actions on a person's account it carries out (disable,
#: expire the password, revoke OAuth tokens ...): a decision asks a provider only for those.
PROVIDER_ACTIONS: Mapping[str, frozenset[str]] = {}
#: Provider types that hold shared logins in custody (a vault): cutting a person's access to
#: them (``revoke_shared_access``) and rotations of shared logins go there.
CUSTODY_TYPES: frozenset[str] = frozenset()


def declare(
    *,
    login_vendors: Iterable[str],
    identity_provider_types: Iterable[str],
    alias_vendors: Iterable[str],
    provider_actions: Mapping[str, Iterable[str]],
    custody_types: Iterable[str] = (),
) -> None:
    """Set the tables (called by :mod:`connectors.base.kinds` at import)."""
    global LOGIN_VENDORS, IDENTITY_PROVIDER_TYPES, ALIAS_VENDORS, PROVIDER_ACTIONS, CUSTODY_TYPES
    CUSTODY_TYPES = frozenset(custody_types)
    PROVIDER_ACTIONS = {k: frozenset(v) for k, v in provider_actions.items()}
    LOGIN_VENDORS = tuple(login_vendors)
    IDENTITY_PROVIDER_TYPES = frozenset(identity_provider_types)
    ALIAS_VENDORS = frozenset(alias_vendors)
