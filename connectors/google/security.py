"""Google Workspace Reports activities (``activities.list``, applications ``login``,
``admin`` and ``token``) -> LoginEvents and IdentityEvents, or a counted drop.

One activity holds several ``events[]``; each is looked up by ``(application, name)`` in
:data:`SECURITY_EVENTS` (the allow-list). Login names (``login_success``, ``login_failure``,
``suspicious_login``...) still become LoginEvents through
:func:`connectors.google.normaliser.normalise`, with the same event ids as before. An activity
none of whose events is a login or on the list raises NotSecurityEvent (dropped, counted):
``logout``, ``risky_sensitive_action_*``, admin setting changes, token ``revoke``...

- ``login``: ``account_disabled_password_leak`` / ``account_disabled_hijacked`` ->
  ``account_disabled_by_vendor`` with reason ``password_leak`` / ``hijacked`` (other
  ``account_disabled_*``: reason ``other``), Google itself is the actor (``actor`` None);
  ``suspicious_login*`` and ``gov_attack_warning`` -> ``vendor_suspicious_login`` (beside the
  login event); ``2sv_disable`` -> ``mfa_factor_removed``, ``2sv_enroll`` ->
  ``mfa_factor_enrolled`` (by the user). Subject ``affected_email_address``, else the actor.
- ``admin``: ``ASSIGN_ROLE``, ``GRANT_ADMIN_PRIVILEGE``, ``GRANT_DELEGATED_ADMIN_PRIVILEGES``
  -> ``admin_privilege_granted`` (privilege ``ROLE_NAME``); ``CHANGE_PASSWORD`` ->
  ``admin_password_reset``; ``AUTHORIZE_API_CLIENT_ACCESS`` (domain-wide delegation) ->
  ``api_token_created``. Subject the ``USER_EMAIL`` parameter (domain-wide delegation has
  none: the admin who granted it), actor ``actor.email``.
- ``token``: ``authorize`` -> ``oauth_consent`` (app ``app_name``, ``client_id`` and
  ``scope`` in details); the actor is the user who consented.

Time ``id.time`` (``login_timestamp`` when Google gives it); IP ``ipAddress``.
"""

from __future__ import annotations

from typing import Any

from connectors.base.identity import NotSecurityEvent, actor_email, params_of
from connectors.base.normalise import (
    clean_ip,
    items,
    make_event_id,
    obj,
    parse_epoch_micros,
    parse_timestamp,
    payload_digest,
    require_object,
    text,
)
from connectors.google import normaliser as login
from streams.model.identity import IdentityEvent
from streams.model.records import LoginEvent
from streams.support.errors import ValidationError

#: (applicationName, event name) -> canonical identity-event type: the security allow-list.
SECURITY_EVENTS: dict[tuple[str, str], str] = {
    ("login", "account_disabled_password_leak"): "account_disabled_by_vendor",
    ("login", "account_disabled_hijacked"): "account_disabled_by_vendor",
    ("login", "account_disabled_generic"): "account_disabled_by_vendor",
    ("login", "account_disabled_spamming"): "account_disabled_by_vendor",
    ("login", "account_disabled_spamming_through_relay"): "account_disabled_by_vendor",
    ("login", "suspicious_login"): "vendor_suspicious_login",
    ("login", "suspicious_login_less_secure_app"): "vendor_suspicious_login",
    ("login", "suspicious_programmatic_login"): "vendor_suspicious_login",
    ("login", "gov_attack_warning"): "vendor_suspicious_login",
    ("login", "2sv_disable"): "mfa_factor_removed",
    ("login", "2sv_enroll"): "mfa_factor_enrolled",
    ("admin", "ASSIGN_ROLE"): "admin_privilege_granted",
    ("admin", "GRANT_ADMIN_PRIVILEGE"): "admin_privilege_granted",
    ("admin", "GRANT_DELEGATED_ADMIN_PRIVILEGES"): "admin_privilege_granted",
    ("admin", "CHANGE_PASSWORD"): "admin_password_reset",
    ("admin", "AUTHORIZE_API_CLIENT_ACCESS"): "api_token_created",
    ("token", "authorize"): "oauth_consent",
}
_DISABLE_REASONS: dict[str, str] = {
    "account_disabled_password_leak": "password_leak",
    "account_disabled_hijacked": "hijacked",
}
#: Events Google raises about an account on its own initiative: no person is the actor.
_BY_GOOGLE = frozenset({"account_disabled_by_vendor", "vendor_suspicious_login"})
APPLICATIONS: tuple[str, ...] = ("login", "admin", "token")


def _identity(
    activity: dict[str, Any], app_name: str, event: dict[str, Any], index: int, digest: str
) -> IdentityEvent:
    name = str(event.get("name"))
    kind = SECURITY_EVENTS[(app_name, name)]
    params = params_of(event)
    actor = actor_email(activity)
    subject = (
        text(params, "affected_email_address", max_len=320)
        or text(params, "USER_EMAIL", max_len=320)
        or actor
    )
    if app_name == "admin" and kind != "api_token_created" and "USER_EMAIL" not in params:
        # the actor is the admin, not whom they changed: guessing would blame the wrong person
        raise ValidationError(f"{name}: no USER_EMAIL parameter, no subject")
    if subject is None:
        raise ValidationError(f"{name}: no affected user and no actor.email, no subject")
    ident = obj(activity, "id")
    time = None
    if "login_timestamp" in params:
        try:
            time = parse_epoch_micros(params["login_timestamp"], "login_timestamp")
        except ValidationError:
            time = None
    if time is None:
        time = parse_timestamp(ident.get("time"), "id.time")
    qualifier = text(ident, "uniqueQualifier", max_len=64)
    id_time = ident.get("time")
    vendor_id = f"{id_time}/{qualifier}" if isinstance(id_time, str) and qualifier else None
    details: dict[str, str | int | float | bool] = {"application": app_name}
    client_id = text(params, "client_id", max_len=200)
    if client_id:
        details["client_id"] = client_id
    scope = params.get("scope")
    if isinstance(scope, list):
        details["scopes"] = " ".join(s for s in scope if isinstance(s, str))[:512]
    reason: str | None = None
    if kind == "account_disabled_by_vendor":
        reason = _DISABLE_REASONS.get(name, "other")
    elif kind == "vendor_suspicious_login":
        reason = name
    by_google = kind in _BY_GOOGLE
    return IdentityEvent(
        event_id=make_event_id(login.VENDOR, vendor_id, digest, index),
        vendor=login.VENDOR,
        time=time,
        type=kind,
        vendor_type=f"{app_name}:{name}",
        principal=subject.lower(),
        principal_id=(
            text(obj(activity, "actor"), "profileId", max_len=64)
            if actor is not None and subject.lower() == actor
            else None
        ),
        actor=None if by_google else actor,
        actor_id=None if by_google else text(obj(activity, "actor"), "profileId", max_len=64),
        vendor_event_id=vendor_id,
        ip=clean_ip(activity.get("ipAddress")),
        app=text(params, "app_name", max_len=256),
        privilege=text(params, "ROLE_NAME", max_len=256),
        reason=reason,
        risk="high" if kind == "vendor_suspicious_login" else None,
        details=details,
    )


def normalise_all(payload: Any) -> list[LoginEvent | IdentityEvent]:
    """One Reports activity -> its LoginEvents and IdentityEvents. Raises NotSecurityEvent
    when none of its events is a login or a security event, ValidationError when one is but
    cannot be used."""
    activity = require_object(payload, "Google activity")
    app_name = obj(activity, "id").get("applicationName")
    if app_name is None:
        app_name = "login"  # exports without the id block are login audit (the login normaliser)
    if not isinstance(app_name, str) or app_name not in APPLICATIONS:
        raise NotSecurityEvent(f"not a security application: {str(app_name)[:40]}")
    events = items(activity, "events")
    if not events:
        raise ValidationError("events: missing or empty")
    out: list[LoginEvent | IdentityEvent] = []
    has_login = app_name == "login" and any(
        isinstance(e, dict) and e.get("name") in login.LOGIN_EVENTS for e in events
    )
    if has_login:
        out.extend(login.normalise(activity))
    digest: str | None = None
    first_error: ValidationError | None = None
    for index, event in enumerate(events):
        if not isinstance(event, dict) or (app_name, event.get("name")) not in SECURITY_EVENTS:
            continue
        digest = digest or payload_digest(activity)
        try:
            out.append(_identity(activity, app_name, event, index, digest))
        except ValidationError as exc:
            first_error = first_error or exc
    if not out:
        if first_error is not None:
            raise first_error
        names = sorted({str(e.get("name"))[:60] for e in events if isinstance(e, dict)})
        raise NotSecurityEvent(f"not a security event: {app_name}:{','.join(names)[:80]}")
    return out
