"""Microsoft Entra sign-in records (Graph ``auditLogs/signIns``, or the ``properties`` of an
Azure Monitor ``SignInLogs`` record) -> LoginEvent.

Outcome from ``status.errorCode``:

- ``0`` -> success (a ``failureReason`` such as "Other." on a success is ignored);
- MFA and interrupt codes -> challenge: 50074, 50076 (strong authentication required),
  50072, 50079 (MFA registration required), 50158 (external security challenge), 500121
  (strong authentication failed: MFA result ``denied``, or ``timeout`` when the details say
  the user did not respond), 50140 (keep-me-signed-in interrupt), 50125 (password reset
  interrupt), 50199 (security check interrupt), 50097 (device authentication required);
- any other code -> failure with ``status.failureReason`` (50053 lockout, 50126 bad
  password, 53003 blocked by Conditional Access, ...).
- A missing ``status``, or one without an ``errorCode`` (``{}``), is rejected with
  ``status missing``: guessing success would hide failures and guessing failure would feed
  brute-force counts with noise. Graph always sends it; only partial test objects lack it.

Principal: ``userPrincipalName`` lower-cased (a GUID UPN, as for some guests, is kept). A null
UPN with a service principal -> rejected ``service principal sign-in, no user``; a placeholder
such as ``<USER PRINCIPAL NAME>`` -> rejected. ``principal_id`` is ``userId``.

Time: ``createdDateTime`` (offsets, 7- and 9-digit fractions); when it is missing, the last
``authenticationDetails[].authenticationStepDateTime``, which Entra documents as UTC and
sometimes writes without a zone. No time at all -> rejected.

MFA: the second factor among ``authenticationDetails[].authenticationMethod`` (else
``mfaDetail.authMethod``); "Previously satisfied" is no method. Result: that step's
``succeeded``; ``success`` when ``additionalDetails`` says the MFA requirement was satisfied
by a claim; ``none`` for a password-only single-factor sign-in.

Also: IP from ``ipAddress`` (placeholders -> None, private addresses kept), geo from
``location`` (empty strings, "Unknown" and 0,0 dropped; country as given), device from
``deviceDetail.deviceId``, user agent, target ``appDisplayName`` (else
``resourceDisplayName``), risk from ``riskLevelDuringSignIn`` (low|medium|high, else None),
vendor id ``id``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from connectors.base.normalise import (
    clean_ip,
    is_placeholder,
    items,
    make_event_id,
    make_geo,
    mfa_method,
    obj,
    parse_timestamp,
    payload_digest,
    require_object,
    risk_level,
    strongest_method,
    text,
)
from streams.model.records import LoginEvent
from streams.support.errors import ValidationError

VENDOR = "entra"
EVENT_TYPE = "signIn"

#: errorCode -> MFA result for codes that are a challenge rather than a failure.
CHALLENGE_CODES: dict[int, str | None] = {
    50072: None,
    50074: None,
    50076: None,
    50079: None,
    50097: None,
    50125: None,
    50140: None,
    50158: None,
    50199: None,
    500121: "denied",
}
_MFA_SATISFIED_HINTS = ("mfa requirement satisfied", "mfa completed")
_TIMEOUT_HINTS = ("did not respond", "timed out", "timeout", "no response")


def _error_code(status: dict[str, Any]) -> int | None:
    code = status.get("errorCode")
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code
    if isinstance(code, str) and code.strip().lstrip("-").isdigit():
        try:
            return int(code.strip())
        except ValueError:  # "--5", "²" (a digit to isdigit()), 5000 digits: not a code
            return None
    return None


def _time(record: dict[str, Any]) -> datetime:
    created = record.get("createdDateTime")
    if created is not None:
        return parse_timestamp(created, "createdDateTime")
    steps = [
        step.get("authenticationStepDateTime")
        for step in items(record, "authenticationDetails")
        if isinstance(step, dict) and isinstance(step.get("authenticationStepDateTime"), str)
    ]
    if steps:
        return parse_timestamp(steps[-1], "authenticationStepDateTime", assume_utc=True)
    raise ValidationError("createdDateTime: missing, no usable time")


def _principal(record: dict[str, Any]) -> str:
    raw = record.get("userPrincipalName")
    if isinstance(raw, str) and raw.strip():
        if is_placeholder(raw):
            raise ValidationError(f"userPrincipalName: placeholder {raw.strip()[:40]!r}")
        return " ".join(raw.split()).lower()[:320]
    if text(record, "servicePrincipalId") or text(record, "servicePrincipalName"):
        raise ValidationError("service principal sign-in, no user")
    raise ValidationError("userPrincipalName: missing, no principal")


def _mfa(
    record: dict[str, Any], status: dict[str, Any], outcome: str
) -> tuple[str | None, str | None]:
    methods: list[str] = []
    second_factor_ok: bool | None = None
    password_only = True
    for step in items(record, "authenticationDetails"):
        if not isinstance(step, dict):
            continue
        name = step.get("authenticationMethod")
        method = mfa_method(name) if isinstance(name, str) else None
        if method is None:
            continue
        methods.append(method)
        if method != "password":
            password_only = False
            succeeded = step.get("succeeded")
            if isinstance(succeeded, bool):
                second_factor_ok = succeeded
    if not methods:
        auth_method = obj(record, "mfaDetail").get("authMethod")
        method = mfa_method(auth_method) if isinstance(auth_method, str) else None
        if method is not None:
            methods.append(method)
            password_only = method == "password"
    chosen = strongest_method(methods)
    details = " ".join(
        value.lower()
        for value in (status.get("additionalDetails"), status.get("failureReason"))
        if isinstance(value, str)
    )
    result: str | None = None
    if second_factor_ok is not None:
        result = "success" if second_factor_ok else "denied"
    elif any(hint in details for hint in _MFA_SATISFIED_HINTS) and outcome == "success":
        result = "success"
    elif (
        chosen == "password"
        and password_only
        and record.get("authenticationRequirement") == "singleFactorAuthentication"
    ):
        result = "none"
    if result == "denied" and any(hint in details for hint in _TIMEOUT_HINTS):
        result = "timeout"
    return chosen, result


def normalise(payload: Any) -> list[LoginEvent]:
    """One Entra sign-in record -> ``[LoginEvent]``.

    Raises ValidationError (with a reason) for a payload that is not an object, has no user
    principal (service principals included), no usable time, or no status. Pure.
    """
    record = require_object(payload, "Entra sign-in")
    principal = _principal(record)
    time = _time(record)

    status_raw = record.get("status")
    status = status_raw if isinstance(status_raw, dict) else {}
    code = _error_code(status)
    if code is None:
        raise ValidationError("status missing: cannot tell success from failure")

    failure_reason: str | None = None
    challenge_result: str | None = None
    if code == 0:
        outcome = "success"
    elif code in CHALLENGE_CODES:
        outcome = "challenge"
        challenge_result = CHALLENGE_CODES[code]
        failure_reason = text(status, "failureReason") or f"errorCode {code}"
    else:
        outcome = "failure"
        failure_reason = text(status, "failureReason") or f"errorCode {code}"

    method, mfa_result = _mfa(record, status, outcome)
    if challenge_result is not None:
        details = " ".join(
            v.lower() for v in (status.get("additionalDetails"),) if isinstance(v, str)
        )
        timed_out = any(hint in details for hint in _TIMEOUT_HINTS)
        mfa_result = "timeout" if timed_out else challenge_result

    location = obj(record, "location")
    position = obj(location, "geoCoordinates")
    device = obj(record, "deviceDetail")
    vendor_id = text(record, "id", max_len=200)
    risk = record.get("riskLevelDuringSignIn", record.get("riskLevelDuringsignIn"))
    return [
        LoginEvent(
            event_id=make_event_id(VENDOR, vendor_id, payload_digest(record)),
            vendor=VENDOR,
            time=time,
            principal=principal,
            outcome=outcome,
            event_type=EVENT_TYPE,
            vendor_event_id=vendor_id,
            failure_reason=failure_reason,
            mfa_method=method,
            mfa_result=mfa_result,
            ip=clean_ip(record.get("ipAddress")),
            geo=make_geo(
                location.get("countryOrRegion"),
                location.get("city"),
                position.get("latitude"),
                position.get("longitude"),
            ),
            device=text(device, "deviceId", max_len=200),
            user_agent=text(record, "userAgent", max_len=1024),
            target=text(record, "appDisplayName", max_len=256)
            or text(record, "resourceDisplayName", max_len=256),
            risk=risk_level(risk),
            principal_id=text(record, "userId", max_len=200),
        )
    ]
