"""Okta System Log events (``GET /api/v1/logs``, event hooks' ``data.events[]``) -> LoginEvent.

Which events are logins:

- ``user.session.start``, ``user.authentication.*`` (except ``user.authentication.slo``, a
  logout), ``user.mfa.*`` (except ``user.mfa.factor.*``, factor enrolment and lifecycle),
  ``system.push.send_factor_verify_push`` (a push was sent) and ``user.account.lock``
  (lockout after failed sign-ins).
- Anything else (``user.lifecycle.*``, ``user.account.privilege.grant``, ``user.session.end``,
  ``policy.evaluate_sign_on``, rate-limit warnings, ...) is rejected with
  ``not a login event: <type>``: a correct rejection, reported per record.

Outcome: ``outcome.result`` SUCCESS/ALLOW -> success, FAILURE/DENY -> failure, CHALLENGE ->
challenge; a missing or other result (SKIPPED, UNKNOWN) is rejected. Push results override it:
``user.mfa.okta_verify.deny_push*`` is a challenge with MFA result ``denied`` (method push) and
``system.push.send_factor_verify_push`` a challenge with no result yet. ``user.account.lock``
is a failure. The failure reason (``outcome.reason``) is kept for failures and challenges only
(Okta writes VERIFICATION_ERROR on some successes).

MFA: the method comes from ``debugContext.debugData.factor``, else
``authenticationContext.credentialType``, else an ``AuthenticatorEnrollment`` target's name.
The MFA result is set on MFA events only (``auth_via_mfa``, ``user.mfa.*``, push events, or a
``factor`` in debugData): success on success, ``timeout`` when the reason says so, else
``denied``.

Principal: ``actor.alternateId`` lower-cased (not always an e-mail: ``admin``); a
SystemPrincipal actor or a missing/placeholder alternateId is rejected. ``principal_id`` is
``actor.id`` unless a placeholder. IP: ``client.ipAddress``, else the first usable
``request.ipChain[].ip``, else ``client.ipChain`` (event-hook shape); ``"null"``,
``"redacted"`` and invalid values are None. Geo: ``client.geographicalContext`` (else the
chain entry's), placeholders dropped. Device: the ``device.id`` of Okta's device object, else
``debugData.deviceFingerprint``. Target: the first ``AppInstance`` target. Risk:
``level=`` in ``debugData.risk`` or ``logOnlySecurityData``.
"""

from __future__ import annotations

import re
from typing import Any

from connectors.base.normalise import (
    clean_ip,
    items,
    make_event_id,
    make_geo,
    mfa_method,
    obj,
    parse_timestamp,
    payload_digest,
    require_object,
    risk_level,
    text,
)
from streams.model.records import Geo, LoginEvent
from streams.support.errors import ValidationError

VENDOR = "okta"

_EXACT_TYPES: frozenset[str] = frozenset(
    {"user.session.start", "system.push.send_factor_verify_push", "user.account.lock"}
)
_RESULTS: dict[str, str] = {
    "SUCCESS": "success",
    "ALLOW": "success",
    "FAILURE": "failure",
    "DENY": "failure",
    "CHALLENGE": "challenge",
}
_RISK_RE = re.compile(r"level\W{0,4}(low|medium|high)\b", re.IGNORECASE)


def is_login_type(event_type: str) -> bool:
    """Whether an Okta ``eventType`` is one this normaliser turns into a LoginEvent."""
    if event_type in _EXACT_TYPES:
        return True
    if event_type.startswith("user.authentication."):
        return event_type != "user.authentication.slo"
    return event_type.startswith("user.mfa.") and not event_type.startswith("user.mfa.factor.")


def client_ip(client: dict[str, Any], payload: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The client IP and the geographicalContext that goes with it."""
    geo_ctx = obj(client, "geographicalContext")
    ip = clean_ip(client.get("ipAddress"))
    if ip is not None:
        return ip, geo_ctx
    for chain in (items(obj(payload, "request"), "ipChain"), items(client, "ipChain")):
        for hop in chain:
            hop_ip = clean_ip(hop.get("ip")) if isinstance(hop, dict) else None
            if hop_ip is not None:
                return hop_ip, geo_ctx or obj(hop, "geographicalContext")
    return None, geo_ctx


def geo_of(ctx: dict[str, Any]) -> Geo | None:
    if not ctx:
        return None
    position = obj(ctx, "geolocation")
    return make_geo(ctx.get("country"), ctx.get("city"), position.get("lat"), position.get("lon"))


def risk_of(debug: dict[str, Any]) -> str | None:
    for key in ("risk", "logOnlySecurityData"):
        value = debug.get(key)
        if isinstance(value, str):
            match = _RISK_RE.search(value)
            if match:
                return risk_level(match.group(1))
        elif isinstance(value, dict):
            level = risk_level(value.get("level")) or risk_level(obj(value, "risk").get("level"))
            if level:
                return level
    return None


def _targets(payload: dict[str, Any]) -> tuple[str | None, str | None]:
    """(application, authenticator name) from ``target[]``."""
    app: str | None = None
    authenticator: str | None = None
    for target in items(payload, "target"):
        if not isinstance(target, dict):
            continue
        kind = target.get("type")
        if kind == "AppInstance" and app is None:
            app = text(target, "displayName", max_len=256) or text(
                target, "alternateId", max_len=256
            )
        elif kind in ("AuthenticatorEnrollment", "Authenticator") and authenticator is None:
            authenticator = text(target, "displayName", max_len=128)
    return app, authenticator


def normalise(payload: Any) -> list[LoginEvent]:
    """One Okta System Log event -> ``[LoginEvent]``.

    Raises ValidationError (with a reason) for a payload that is not an object, not a login
    event, has no usable principal, time or outcome. Pure: no I/O, no registry.
    """
    event = require_object(payload, "Okta event")
    event_type = event.get("eventType")
    if not isinstance(event_type, str) or not event_type.strip():
        raise ValidationError("eventType: missing")
    event_type = event_type.strip()
    if not is_login_type(event_type):
        raise ValidationError(f"not a login event: {event_type[:80]}")

    actor = obj(event, "actor")
    if actor.get("type") == "SystemPrincipal":
        raise ValidationError("actor is a SystemPrincipal, no user")
    principal = text(actor, "alternateId", max_len=320)
    if principal is None:
        raise ValidationError("actor.alternateId: missing or placeholder, no principal")

    time = parse_timestamp(event.get("published"), "published")

    outcome_obj = obj(event, "outcome")
    result = outcome_obj.get("result")
    reason = text(outcome_obj, "reason")
    debug = obj(obj(event, "debugContext"), "debugData")
    factor = text(debug, "factor", max_len=64)
    last = event_type.rsplit(".", 1)[-1]

    is_mfa_event = (
        factor is not None
        or event_type.startswith("user.mfa.")
        or event_type == "user.authentication.auth_via_mfa"
        or "push" in event_type
    )
    mfa_result: str | None = None
    if event_type.startswith("user.mfa.") and "deny" in last:
        outcome, mfa_result = "challenge", "denied"
        factor = factor or "push"
        reason = reason or last.upper()
    elif event_type == "system.push.send_factor_verify_push":
        outcome = "challenge"
        factor = factor or "push"
    elif event_type == "user.account.lock":
        outcome = "failure"
        reason = reason or "LOCKED_OUT"
    else:
        mapped = _RESULTS.get(result.strip().upper()) if isinstance(result, str) else None
        if mapped is None:
            shown = result if isinstance(result, str) else "missing"
            raise ValidationError(f"outcome.result: {shown[:40]!r} is not a login outcome")
        outcome = mapped
        if is_mfa_event:
            if outcome == "success":
                mfa_result = "success"
            elif outcome == "failure":
                lowered = (reason or "").lower()
                mfa_result = (
                    "timeout" if ("timeout" in lowered or "expired" in lowered) else "denied"
                )

    app, authenticator = _targets(event)
    auth_ctx = obj(event, "authenticationContext")
    method_name = factor or text(auth_ctx, "credentialType", max_len=64) or authenticator

    client = obj(event, "client")
    ip, geo_ctx = client_ip(client, event)
    device_obj = obj(event, "device")
    vendor_id = text(event, "uuid", max_len=200)
    return [
        LoginEvent(
            event_id=make_event_id(VENDOR, vendor_id, payload_digest(event)),
            vendor=VENDOR,
            time=time,
            principal=principal.lower(),
            outcome=outcome,
            event_type=event_type,
            vendor_event_id=vendor_id,
            failure_reason=reason if outcome != "success" else None,
            mfa_method=mfa_method(method_name) if method_name else None,
            mfa_result=mfa_result,
            ip=ip,
            geo=geo_of(geo_ctx),
            device=text(device_obj, "id", max_len=200) or text(debug, "deviceFingerprint"),
            user_agent=text(obj(client, "userAgent"), "rawUserAgent", max_len=1024),
            target=app,
            risk=risk_of(debug),
            principal_id=text(actor, "id", max_len=200),
        )
    ]
