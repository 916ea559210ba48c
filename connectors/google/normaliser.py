"""Google Workspace login audit activities (Reports API ``activities.list``, application
``login``) -> LoginEvents, one per login-related entry of ``events[]``.

Event names:

- ``login_success`` -> success; ``login_failure`` -> failure (reason ``login_failure_type``);
- ``login_challenge`` and ``login_verification`` -> challenge, MFA result from
  ``login_challenge_status`` ("Challenge Passed." / "passed" -> success, failed -> denied);
- ``suspicious_login``, ``suspicious_login_less_secure_app``,
  ``suspicious_programmatic_login`` (``account_warning``) -> challenge with risk ``high`` and
  the warning name as the reason: Google saw a login to the account and flagged or blocked it;
  the login happened, so it is a login event, never a success;
- everything else is not a login and is rejected ``not a login event: <name>``: ``logout``,
  ``account_disabled_*`` (Google disabled the account: an account-state signal, not a
  sign-in), ``gov_attack_warning``, ``risky_sensitive_action_*``, password or 2SV changes.

An activity whose events are all rejected raises ValidationError with the first reason; in an
activity with several events, the non-login ones are skipped and the login ones returned.

Principal: the affected account — the ``affected_email_address`` parameter when present,
else ``actor.email`` (lower-cased); ``principal_id`` is ``actor.profileId`` (a number in some
exports, a string from the API) when the principal is the actor. Time: the
``login_timestamp`` parameter (Unix microseconds: when the login happened) when present, else
``id.time``. ``is_suspicious=true`` -> risk ``high``. MFA method from
``login_challenge_method`` (``value`` or ``multiValue``). IP from ``ipAddress``; geo only as
``networkInfo.regionCode`` when Google sends it. Vendor id ``<id.time>/<uniqueQualifier>``
(several activities share it, so event ids add the payload hash and the event index).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from connectors.base.normalise import (
    clean_ip,
    items,
    make_event_id,
    make_geo,
    mfa_method,
    obj,
    parse_epoch_micros,
    parse_timestamp,
    payload_digest,
    require_object,
    strongest_method,
    text,
)
from streams.model.records import Geo, LoginEvent
from streams.support.errors import ValidationError

VENDOR = "google"

#: event name -> outcome
LOGIN_EVENTS: dict[str, str] = {
    "login_success": "success",
    "login_failure": "failure",
    "login_challenge": "challenge",
    "login_verification": "challenge",
    "suspicious_login": "challenge",
    "suspicious_login_less_secure_app": "challenge",
    "suspicious_programmatic_login": "challenge",
}
_WARNINGS = frozenset(name for name in LOGIN_EVENTS if name.startswith("suspicious_"))


def _params(event: dict[str, Any]) -> dict[str, Any]:
    """``parameters[]`` as name -> value (``value``, ``multiValue``, ``boolValue``,
    ``intValue``; the first one present)."""
    out: dict[str, Any] = {}
    for param in items(event, "parameters"):
        if not isinstance(param, dict):
            continue
        name = param.get("name")
        if not isinstance(name, str):
            continue
        for key in ("value", "multiValue", "boolValue", "intValue", "multiIntValue"):
            if key in param:
                out[name] = param[key]
                break
    return out


def _methods(value: Any) -> str | None:
    names = value if isinstance(value, list) else [value]
    methods = [m for m in (mfa_method(n) for n in names if isinstance(n, str)) if m is not None]
    return strongest_method(methods)


def _challenge_result(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    lowered = value.lower()
    if "pass" in lowered or "success" in lowered:
        return "success"
    if "fail" in lowered or "denied" in lowered:
        return "denied"
    return None


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def normalise(payload: Any) -> list[LoginEvent]:
    """One Reports API activity -> a LoginEvent per login-related entry of ``events[]``.

    Raises ValidationError (with a reason) for a payload that is not an object, has no
    usable time or principal, or holds no login event. Pure.
    """
    activity = require_object(payload, "Google activity")
    ident = obj(activity, "id")
    app = ident.get("applicationName")
    if isinstance(app, str) and app != "login":
        raise ValidationError(f"not a login activity: application {app[:40]!r}")
    events = items(activity, "events")
    if not events:
        raise ValidationError("events: missing or empty")
    actor = obj(activity, "actor")
    actor_email = text(actor, "email", max_len=320)
    qualifier = text(ident, "uniqueQualifier", max_len=64)
    id_time = ident.get("time")
    vendor_id = f"{id_time}/{qualifier}" if isinstance(id_time, str) and qualifier else None
    ip = clean_ip(activity.get("ipAddress"))
    network = obj(activity, "networkInfo")
    region = text(network, "regionCode", max_len=64)
    geo: Geo | None = make_geo(region, None, None, None) if region else None

    out: list[LoginEvent] = []
    first_reason: str | None = None
    digest: str | None = None
    for index, event in enumerate(events):
        try:
            if not isinstance(event, dict):
                raise ValidationError(f"events[{index}]: expected an object")
            name = event.get("name")
            if not isinstance(name, str) or not name:
                raise ValidationError(f"events[{index}].name: missing")
            outcome = LOGIN_EVENTS.get(name)
            if outcome is None:
                raise ValidationError(f"not a login event: {name[:80]}")
            params = _params(event)
            principal = text(params, "affected_email_address", max_len=320) or actor_email
            if principal is None:
                raise ValidationError(
                    "no principal: neither affected_email_address nor actor.email"
                )
            time: datetime | None = None
            if "login_timestamp" in params:
                try:
                    time = parse_epoch_micros(params["login_timestamp"], "login_timestamp")
                except ValidationError:
                    time = None
            if time is None:
                time = parse_timestamp(id_time, "id.time")
            method = _methods(params.get("login_challenge_method"))
            mfa_result = _challenge_result(params.get("login_challenge_status"))
            if mfa_result is None and outcome == "success" and method not in (None, "password"):
                mfa_result = "success"
            failure_reason: str | None = None
            if outcome == "failure":
                failure_reason = text(params, "login_failure_type") or name
            elif name in _WARNINGS:
                failure_reason = name
            suspicious = name in _WARNINGS or _is_true(params.get("is_suspicious"))
            same_as_actor = principal.lower() == (actor_email or "").lower()
            if digest is None:
                digest = payload_digest(activity)
            out.append(
                LoginEvent(
                    event_id=make_event_id(VENDOR, vendor_id, digest, index),
                    vendor=VENDOR,
                    time=time,
                    principal=principal.lower(),
                    outcome=outcome,
                    event_type=name,
                    vendor_event_id=vendor_id,
                    failure_reason=failure_reason,
                    mfa_method=method,
                    mfa_result=mfa_result,
                    ip=ip,
                    geo=geo,
                    target=None,
                    risk="high" if suspicious else None,
                    principal_id=text(actor, "profileId", max_len=64) if same_as_actor else None,
                )
            )
        except ValidationError as exc:
            if first_reason is None:
                first_reason = exc.reason
    if not out:
        raise ValidationError(first_reason or "no login event in the activity")
    return out
