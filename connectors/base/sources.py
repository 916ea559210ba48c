"""The login-event sources: one normaliser per vendor, in one explicit registry.

Adding a source means writing ``connectors/<name>/normaliser.py`` with a pure
``normalise(payload) -> list[LoginEvent]`` and adding one line to :data:`NORMALISERS`; a
source whose audit log also carries identity-security events (MFA factor changes, privilege
grants, vendor disables) adds its ``security.normalise_all`` to :data:`SECURITY_NORMALISERS`,
which pollers and the ingest edge use: logins and :class:`IdentityEvent` records out, event
types outside the vendor's security allow-list dropped and counted
(``accessguard_identity_events_dropped_total``), never dead-lettered.
Leak-record sources (feeds, replay wrappers) have their tables in
:mod:`connectors.base.leak_sources`.
Every normaliser raises :class:`~streams.support.errors.ValidationError` with a reason for a payload
it cannot use (route it to the dead-letter topic); identity resolution happens afterwards in
:func:`streams.decide.resolve.resolve`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from connectors.base.identity import DROP_REASONS, NotSecurityEvent
from connectors.entra import normaliser as login_entra
from connectors.entra import security as security_entra
from connectors.generic import normaliser as login_generic
from connectors.google import normaliser as login_google
from connectors.google import security as security_google
from connectors.okta import normaliser as login_okta
from connectors.okta import security as security_okta
from streams.model.identity import IdentityEvent
from streams.model.records import LoginEvent
from streams.support import metrics
from streams.support.errors import ValidationError

Normaliser = Callable[[Any], list[LoginEvent]]

NORMALISERS: Mapping[str, Normaliser] = MappingProxyType(
    {
        "okta": login_okta.normalise,
        "entra": login_entra.normalise,
        "google": login_google.normalise,
        "generic": login_generic.normalise,
    }
)


def normalise(vendor: str, payload: Any) -> list[LoginEvent]:
    """Normalise one vendor payload (as the vendor sends it) into LoginEvents.

    Raises ValidationError for an unknown vendor or a payload that cannot be used.
    """
    normaliser = NORMALISERS.get(vendor) if isinstance(vendor, str) else None
    if normaliser is None:
        raise ValidationError(
            f"vendor: {str(vendor)[:40]!r} is not one of {', '.join(NORMALISERS)}"
        )
    return normaliser(payload)


# ---- replay lines ---------------------------------------------------------------------------

#: The vendors whose payloads an ``accessguard replay`` line may wrap
#: (``{"kind":"login","vendor":...,"event":{...}}``), in this order in its messages: every
#: normaliser but ``generic``, whose canonical fields a line carries unwrapped.
WRAPPED_LOGIN_VENDORS: tuple[str, ...] = tuple(v for v in NORMALISERS if v != "generic")


# ---- logins and identity-security events ----------------------------------------------------

Event = LoginEvent | IdentityEvent
SecurityNormaliser = Callable[[Any], list[Event]]


def _generic_all(payload: Any) -> list[Event]:
    """The canonical shapes: an identity event names its ``type`` and has no ``outcome``."""
    if isinstance(payload, dict) and "type" in payload and "outcome" not in payload:
        return [IdentityEvent.from_dict(payload)]
    return list(login_generic.normalise(payload))


#: Per vendor: a payload -> LoginEvents and IdentityEvents (NotSecurityEvent: drop it).
RAW_SECURITY_NORMALISERS: Mapping[str, SecurityNormaliser] = MappingProxyType(
    {
        "okta": security_okta.normalise_all,
        "entra": security_entra.normalise_all,
        "google": security_google.normalise_all,
        "generic": _generic_all,
    }
)


def _counted(vendor: str, normaliser: SecurityNormaliser) -> SecurityNormaliser:
    # children bound once per (vendor, reason): a drop costs one inc(), not a labels() lookup
    dropped = {r: metrics.IDENTITY_EVENTS_DROPPED.labels(vendor, r) for r in DROP_REASONS}

    def run(payload: Any) -> list[Event]:
        try:
            return normaliser(payload)
        except NotSecurityEvent as exc:
            dropped[exc.code].inc()
            return []

    run.__doc__ = normaliser.__doc__
    return run


#: What pollers and the ingest edge call: like :data:`RAW_SECURITY_NORMALISERS`, with
#: deliberate drops counted and answered as an empty list (nothing to publish or reject).
SECURITY_NORMALISERS: Mapping[str, SecurityNormaliser] = MappingProxyType(
    {vendor: _counted(vendor, fn) for vendor, fn in RAW_SECURITY_NORMALISERS.items()}
)


def normalise_all(vendor: str, payload: Any) -> list[Event]:
    """One vendor payload -> LoginEvents and IdentityEvents; ``[]`` for an event type the
    vendor's security allow-list leaves out (counted). Raises ValidationError for an unknown
    vendor or a payload that cannot be used."""
    normaliser = SECURITY_NORMALISERS.get(vendor) if isinstance(vendor, str) else None
    if normaliser is None:
        raise ValidationError(
            f"vendor: {str(vendor)[:40]!r} is not one of {', '.join(SECURITY_NORMALISERS)}"
        )
    return normaliser(payload)
