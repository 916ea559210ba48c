"""The generic login-event shape, for social-media management platforms and anything else
that is not Okta, Entra or Google.

One JSON object per event, with the canonical field names (``streams.model.records.LoginEvent``):

========================  ========  =============================================================
field                     required  meaning
========================  ========  =============================================================
``time``                  yes       RFC 3339 with a zone (``Z`` or ``±hh:mm``), any fraction
``principal``             yes       the login name (e-mail or platform username)
``outcome``               yes       ``success`` | ``failure`` | ``challenge``
``event_type``            no        the source's own event name (default ``login``)
``event_id``              no        unique id; derived from ``vendor_event_id`` + payload hash
``vendor_event_id``       no        the source's id for the event (need not be unique)
``vendor``                no        ``generic`` (default) or okta | entra | google for canonical
                                    events re-ingested (replay)
``principal_id``          no        the principal's id at the source (matched to aliases)
``failure_reason``        no        why a failure or challenge happened
``mfa_method``            no        push | totp | sms | webauthn | email | password | other
                                    (vendor names such as "OKTA_VERIFY_PUSH" are mapped)
``mfa_result``            no        success | denied | timeout | none
``ip``                    no        IPv4/IPv6; an invalid or placeholder value becomes null
``geo``                   no        ``{"country", "city", "lat", "lon"}``; placeholders dropped
``device``                no        a device id
``user_agent``            no        the raw user agent
``target``                no        application or social account (id, handle or
                                    ``platform:handle``, resolved against the registry)
``risk``                  no        low | medium | high (anything else becomes null)
========================  ========  =============================================================

``identity`` and ``target_account`` may be present (a canonical event re-ingested) but are
cleared: resolution against the registry is accessguard's job (:mod:`streams.decide.resolve`).
Unknown fields are rejected, so a typo is not silently ignored. ``kind`` is allowed (replay).
"""

from __future__ import annotations

from typing import Any

from connectors.base.normalise import (
    clean_ip,
    is_placeholder,
    make_event_id,
    make_geo,
    mfa_method,
    parse_timestamp,
    payload_digest,
    require_object,
    risk_level,
)
from streams.model.records import LoginEvent
from streams.support.errors import ValidationError

VENDOR = "generic"


def normalise(payload: Any) -> list[LoginEvent]:
    """One generic login event -> ``[LoginEvent]``; ValidationError names the bad field."""
    data = require_object(payload, "login event")
    fields = dict(data)
    time = parse_timestamp(fields.get("time"), "time")
    fields["time"] = time.isoformat()
    principal = fields.get("principal")
    if isinstance(principal, str) and principal.strip() and is_placeholder(principal):
        raise ValidationError(f"principal: placeholder {principal.strip()[:40]!r}")
    if not fields.get("event_id"):
        vendor_id = fields.get("vendor_event_id")
        fields["event_id"] = make_event_id(
            VENDOR,
            vendor_id if isinstance(vendor_id, str) and vendor_id.strip() else None,
            payload_digest(data),
        )
    geo = fields.pop("geo", None)
    if geo is not None and not isinstance(geo, dict):
        raise ValidationError("geo: expected an object")
    fields["identity"] = None
    fields["target_account"] = None
    event = LoginEvent.from_dict(fields)
    method = mfa_method(event.mfa_method) if event.mfa_method else None
    return [
        LoginEvent(
            event_id=event.event_id,
            vendor=event.vendor,
            time=time,
            principal=" ".join(event.principal.split()),
            outcome=event.outcome,
            event_type=event.event_type,
            vendor_event_id=event.vendor_event_id,
            failure_reason=event.failure_reason,
            mfa_method=method,
            mfa_result=event.mfa_result,
            ip=clean_ip(event.ip),
            geo=make_geo(geo.get("country"), geo.get("city"), geo.get("lat"), geo.get("lon"))
            if geo
            else None,
            device=event.device,
            user_agent=event.user_agent,
            target=event.target,
            risk=risk_level(event.risk),
            principal_id=event.principal_id,
        )
    ]
