"""Okta System Log events that are not logins -> IdentityEvents, or a counted drop.

:func:`normalise_all` is what the poller and the ingest edge call for every System Log event:
a login type (:func:`connectors.okta.normaliser.is_login_type`) becomes a LoginEvent as
before; a type on :data:`SECURITY_TYPES` becomes an :class:`IdentityEvent`; anything else
(``user.lifecycle.*``, ``group.user_membership.add``, rate-limit notices, ...) raises
:class:`~connectors.base.identity.NotSecurityEvent` (dropped and counted, not dead-lettered).

Subject: the first ``target[]`` of type ``User`` (its ``alternateId``), else the actor (a
user acting on their own account: ``system.mfa.factor.deactivate`` by the user). Actor:
``actor.alternateId``; a ``SystemPrincipal`` actor (Okta itself) is no person (``actor``
None: "by someone else"). A ``FAILURE``/``DENY`` outcome did not take effect: dropped with
``not_applied``; a missing outcome (Okta's own examples of impersonation grants have none)
counts as done. ``user.session.start`` with Okta risk ``high`` is a login *and* a
``vendor_suspicious_login``. Privilege: ``debugData.privilegeGranted``. OAuth consent: the
``AppInstance``/``PublicClientApp`` target's name, and its ``clientId``.
"""

from __future__ import annotations

from typing import Any

from connectors.base.identity import NotSecurityEvent
from connectors.base.normalise import (
    items,
    make_event_id,
    obj,
    parse_timestamp,
    payload_digest,
    require_object,
    text,
)
from connectors.okta import normaliser as login
from streams.model.identity import IdentityEvent
from streams.model.records import LoginEvent
from streams.support.errors import ValidationError

#: eventType -> canonical identity-event type: the security allow-list.
SECURITY_TYPES: dict[str, str] = {
    "user.mfa.factor.deactivate": "mfa_factor_removed",
    "system.mfa.factor.deactivate": "mfa_factor_removed",
    "user.mfa.factor.reset_all": "mfa_factor_reset",
    "user.mfa.factor.activate": "mfa_factor_enrolled",
    "system.mfa.factor.activate": "mfa_factor_enrolled",
    "user.account.privilege.grant": "admin_privilege_granted",
    "system.api_token.create": "api_token_created",
    "user.session.impersonation.grant": "impersonation_granted",
    "user.session.impersonation.initiate": "impersonation_granted",
    "user.account.reset_password": "admin_password_reset",
    "app.oauth2.as.consent.grant": "oauth_consent",
    "security.threat.detected": "vendor_suspicious_login",
    "user.risk.detect": "vendor_suspicious_login",
}
_NOT_APPLIED = frozenset({"FAILURE", "DENY"})
_APP_TYPES = frozenset({"AppInstance", "PublicClientApp", "Application"})


def _user_target(event: dict[str, Any]) -> dict[str, Any]:
    for target in items(event, "target"):
        if isinstance(target, dict) and target.get("type") == "User":
            return target
    return {}


def _app(event: dict[str, Any]) -> tuple[str | None, str | None]:
    for target in items(event, "target"):
        if isinstance(target, dict) and target.get("type") in _APP_TYPES:
            name = text(target, "displayName", max_len=256) or text(
                target, "alternateId", max_len=256
            )
            return name, text(target, "id", max_len=200)
    return None, None


def identity_event(event: dict[str, Any], kind: str, *, risk: str | None = None) -> IdentityEvent:
    """One System Log event already known to be a security type -> IdentityEvent."""
    event_type = str(event.get("eventType"))
    result = obj(event, "outcome").get("result")
    if isinstance(result, str) and result.strip().upper() in _NOT_APPLIED:
        raise NotSecurityEvent(f"{event_type}: outcome {result.strip()[:20]}", "not_applied")
    actor = obj(event, "actor")
    system_actor = actor.get("type") == "SystemPrincipal"
    actor_name = None if system_actor else text(actor, "alternateId", max_len=320)
    target = _user_target(event)
    principal = text(target, "alternateId", max_len=320) if target else None
    principal_id = text(target, "id", max_len=200) if target else None
    if principal is None:
        principal, principal_id = actor_name, text(actor, "id", max_len=200)
    if principal is None:
        raise ValidationError(f"{event_type}: no user target and no usable actor, no subject")
    time = parse_timestamp(event.get("published"), "published")
    client = obj(event, "client")
    ip, geo_ctx = login.client_ip(client, event)
    debug = obj(obj(event, "debugContext"), "debugData")
    app, client_id = _app(event)
    details: dict[str, str | int | float | bool] = {}
    if client_id:
        details["client_id"] = client_id
    severity = text(event, "severity", max_len=16)
    if severity:
        details["vendor_severity"] = severity
    vendor_id = text(event, "uuid", max_len=200)
    return IdentityEvent(
        event_id=make_event_id(login.VENDOR, vendor_id, payload_digest(event)),
        vendor=login.VENDOR,
        time=time,
        type=kind,
        vendor_type=event_type,
        principal=principal.lower(),
        principal_id=principal_id,
        actor=actor_name.lower() if actor_name else None,
        actor_id=None if system_actor else text(actor, "id", max_len=200),
        vendor_event_id=vendor_id,
        ip=ip,
        geo=login.geo_of(geo_ctx),
        app=app,
        privilege=text(debug, "privilegeGranted", max_len=256),
        reason=text(obj(event, "outcome"), "reason", max_len=256),
        risk=risk or login.risk_of(debug),
        details=details,
    )


def normalise_all(payload: Any) -> list[LoginEvent | IdentityEvent]:
    """One System Log event -> its LoginEvent, its IdentityEvent, or both (a high-risk
    session start). Raises NotSecurityEvent for a type outside both lists and
    ValidationError for an unusable event."""
    event = require_object(payload, "Okta event")
    event_type = event.get("eventType")
    if not isinstance(event_type, str) or not event_type.strip():
        raise ValidationError("eventType: missing")
    event_type = event_type.strip()
    if login.is_login_type(event_type):
        logins = login.normalise(event)
        out: list[LoginEvent | IdentityEvent] = list(logins)
        if event_type == "user.session.start" and any(e.risk == "high" for e in logins):
            out.append(identity_event(event, "vendor_suspicious_login", risk="high"))
        return out
    kind = SECURITY_TYPES.get(event_type)
    if kind is None:
        raise NotSecurityEvent(f"not a security event: {event_type[:80]}")
    return [identity_event(event, kind)]
