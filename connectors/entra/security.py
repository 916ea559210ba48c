"""Microsoft Entra directory audits (Graph ``auditLogs/directoryAudits``) -> IdentityEvents,
and the security signal of a sign-in record, or a counted drop.

:func:`normalise_all` takes either record shape: a directory audit (it has
``activityDisplayName``) or a sign-in (everything else, to
:func:`connectors.entra.normaliser.normalise`). A sign-in that Entra rated
``riskLevelDuringSignIn: high`` is a login *and* a ``vendor_suspicious_login``.

Directory audits: ``activityDisplayName`` on :data:`SECURITY_ACTIVITIES` (the names Entra
writes; category ``UserManagement``, ``RoleManagement``, ``ApplicationManagement``) maps to a
canonical type; any other activity raises NotSecurityEvent (dropped, counted). ``result``
other than ``success`` did not take effect (``not_applied``). Subject: the first
``targetResources[]`` of type ``User`` (``userPrincipalName``, id ``id``); for app consent,
whoever consented (``initiatedBy.user``) when no user target. Actor: ``initiatedBy.user``
(``userPrincipalName``), else ``initiatedBy.app`` as ``app:<displayName>`` (a service
principal: someone else). Time ``activityDateTime``; IP ``initiatedBy.user.ipAddress``.
Privilege: the ``Role.DisplayName`` modified property (quotes stripped) of a role assignment.
App: the ``ServicePrincipal``/``Application`` target's ``displayName``.
"""

from __future__ import annotations

from typing import Any

from connectors.base.identity import NotSecurityEvent
from connectors.base.normalise import (
    clean_ip,
    items,
    make_event_id,
    obj,
    parse_timestamp,
    payload_digest,
    require_object,
    text,
)
from connectors.entra import normaliser as signin
from streams.model.identity import IdentityEvent
from streams.model.records import LoginEvent
from streams.support.errors import ValidationError

#: activityDisplayName -> canonical identity-event type: the security allow-list.
SECURITY_ACTIVITIES: dict[str, str] = {
    "User deleted security info": "mfa_factor_removed",
    "Admin deleted security info": "mfa_factor_removed",
    "Delete security info": "mfa_factor_removed",
    "User registered security info": "mfa_factor_enrolled",
    "Admin registered security info": "mfa_factor_enrolled",
    "Add member to role": "admin_privilege_granted",
    "Add eligible member to role": "admin_privilege_granted",
    "Add scoped member to role": "admin_privilege_granted",
    "Add service principal credentials": "api_token_created",
    "Reset user password": "admin_password_reset",
    "Reset password (by admin)": "admin_password_reset",
    "Consent to application": "oauth_consent",
}
_APP_TARGETS = frozenset({"ServicePrincipal", "Application"})


def _role(target: dict[str, Any]) -> str | None:
    for prop in items(target, "modifiedProperties"):
        if isinstance(prop, dict) and prop.get("displayName") == "Role.DisplayName":
            value = text(prop, "newValue", max_len=256)
            return value.strip('"') or None if value else None
    return None


def audit_event(record: dict[str, Any]) -> IdentityEvent:
    """One directory audit record -> IdentityEvent (NotSecurityEvent when it is none)."""
    activity = text(record, "activityDisplayName", max_len=200) or ""
    kind = SECURITY_ACTIVITIES.get(activity)
    if kind is None:
        raise NotSecurityEvent(f"not a security event: {activity[:80] or 'no activity'}")
    result = text(record, "result", max_len=32)
    if result is not None and result.lower() != "success":
        raise NotSecurityEvent(f"{activity}: result {result}", "not_applied")
    initiated = obj(record, "initiatedBy")
    by_user, by_app = obj(initiated, "user"), obj(initiated, "app")
    actor = text(by_user, "userPrincipalName", max_len=320)
    actor_id = text(by_user, "id", max_len=200)
    if actor is None:
        app_name = text(by_app, "displayName", max_len=200)
        actor = f"app:{app_name}" if app_name else None
        actor_id = text(by_app, "servicePrincipalId", max_len=200)
    principal: str | None = None
    principal_id: str | None = None
    app: str | None = None
    privilege: str | None = None
    for target in items(record, "targetResources"):
        if not isinstance(target, dict):
            continue
        ttype = target.get("type")
        if ttype == "User" and principal is None:
            principal = text(target, "userPrincipalName", max_len=320)
            principal_id = text(target, "id", max_len=200)
            privilege = privilege or _role(target)
        elif ttype in _APP_TARGETS and app is None:
            app = text(target, "displayName", max_len=256)
        elif ttype == "Role":
            privilege = privilege or text(target, "displayName", max_len=256)
    if principal is None and kind in ("oauth_consent", "mfa_factor_removed", "mfa_factor_enrolled"):
        principal, principal_id = text(by_user, "userPrincipalName", max_len=320), actor_id
    if principal is None:
        raise ValidationError(f"{activity}: no user in targetResources, no subject")
    time = parse_timestamp(record.get("activityDateTime"), "activityDateTime")
    vendor_id = text(record, "id", max_len=200)
    details: dict[str, str | int | float | bool] = {}
    for key in ("category", "loggedByService", "correlationId"):
        value = text(record, key, max_len=128)
        if value:
            details[key] = value
    return IdentityEvent(
        event_id=make_event_id(signin.VENDOR, vendor_id, payload_digest(record)),
        vendor=signin.VENDOR,
        time=time,
        type=kind,
        vendor_type=activity,
        principal=principal.lower(),
        principal_id=principal_id,
        actor=actor.lower() if actor else None,
        actor_id=actor_id,
        vendor_event_id=vendor_id,
        ip=clean_ip(by_user.get("ipAddress")),
        app=app,
        privilege=privilege,
        reason=text(record, "resultReason", max_len=256),
        details=details,
    )


def normalise_all(payload: Any) -> list[LoginEvent | IdentityEvent]:
    """A directory audit -> ``[IdentityEvent]``; a sign-in -> its LoginEvent (and a
    ``vendor_suspicious_login`` when Entra rated it high risk)."""
    record = require_object(payload, "Entra record")
    if "activityDisplayName" in record:
        return [audit_event(record)]
    logins = signin.normalise(record)
    out: list[LoginEvent | IdentityEvent] = list(logins)
    for event in logins:
        if event.risk == "high":
            out.append(
                IdentityEvent(
                    event_id=f"{event.event_id}:risk",
                    vendor=event.vendor,
                    time=event.time,
                    type="vendor_suspicious_login",
                    vendor_type="signIn riskLevelDuringSignIn=high",
                    principal=event.principal,
                    principal_id=event.principal_id,
                    actor=event.principal,
                    vendor_event_id=event.vendor_event_id,
                    ip=event.ip,
                    geo=event.geo,
                    app=event.target,
                    reason=text(record, "riskDetail", max_len=128),
                    risk="high",
                )
            )
    return out
