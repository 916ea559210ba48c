"""The canonical identity-security event (:class:`IdentityEvent`): what the identity
providers' audit logs say happened *to* an account, beside the logins.

Okta's System Log, Entra's directory audits and Google Workspace's Reports carry the events
that precede or reveal an account takeover: an MFA factor removed or reset, an admin privilege
granted, an API token created, support access (impersonation) granted, a password reset by an
admin, an OAuth app consented, an account disabled by the vendor for a leaked password or a
hijacking, the vendor's own suspicious-login warning. The connectors map each vendor's event
name onto one of :data:`IDENTITY_EVENT_TYPES` (the canonical vocabulary rules read); event
types outside their allow-lists are counted and dropped at the edge, never dead-lettered.

It is its own record (not a LoginEvent with more optional fields) because its subject differs:
a login has one principal, an identity event an *actor* (who did it) and a *principal* (whom
it was done to), and rules about it ask "by someone else?", which a login cannot answer.
Validated like :class:`~streams.model.records.LoginEvent`: :meth:`IdentityEvent.from_dict`
is the topic and replay format's only door.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from streams.model import kinds
from streams.model.records import Geo, _opt_str
from streams.support.errors import ValidationError
from streams.support.times import format_time, parse_time

#: The canonical identity-security event types (what rules compare ``type`` with).
IDENTITY_EVENT_TYPES: tuple[str, ...] = (
    "mfa_factor_removed",
    "mfa_factor_reset",
    "mfa_factor_enrolled",
    "admin_privilege_granted",
    "api_token_created",
    "impersonation_granted",
    "admin_password_reset",
    "oauth_consent",
    "account_disabled_by_vendor",
    "vendor_suspicious_login",
    # Shared Signals (CAEP) from a transmitter: connectors/ingest/ssf/events.py
    "session_revoked",
    "assurance_level_changed",
)
#: Why a vendor disabled an account (``reason`` of ``account_disabled_by_vendor``).
DISABLE_REASONS: tuple[str, ...] = ("password_leak", "hijacked", "other")

_KEYS: frozenset[str] = frozenset(
    {
        "event_id", "vendor", "time", "type", "vendor_type", "principal", "identity",
        "principal_id", "actor", "actor_id", "actor_identity", "vendor_event_id", "ip", "geo",
        "app", "app_verified", "privilege", "reason", "risk", "details", "kind",
    }
)  # fmt: skip
#: ``details`` holds a few scalar facts the rules do not read (for the alert and the runbook).
_MAX_DETAILS = 16


def _req(data: dict[str, Any], name: str, max_len: int) -> str:
    value = _opt_str(data, name, max_len)
    if value is None:
        raise ValidationError(f"{name}: required")
    return value


def _details(raw: Any) -> dict[str, str | int | float | bool]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValidationError("details: expected an object")
    if len(raw) > _MAX_DETAILS:
        raise ValidationError(f"details: at most {_MAX_DETAILS} entries")
    out: dict[str, str | int | float | bool] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or len(key) > 64:
            raise ValidationError("details: keys are strings of at most 64 characters")
        if isinstance(value, str):
            out[key] = value[:512]
        elif isinstance(value, bool | int | float):
            out[key] = value
        elif value is not None:
            raise ValidationError(f"details.{key}: expected a string, number or boolean")
    return out


@dataclass(frozen=True, slots=True)
class IdentityEvent:
    """One identity-security event, canonical whatever the vendor.

    ``principal`` is the account the event is about (lower-cased login name: the target of an
    admin's change, or the user who changed their own account); ``actor`` who did it (None
    when the vendor itself did: Google disabling a hijacked account). ``identity`` and
    ``actor_identity`` are the registry identities they resolve to. Both principals are
    personal data: never metric labels, only hashed in logs and alerts. ``event_id`` is
    unique and stable across redeliveries (vendor id + payload hash, as for logins).
    """

    event_id: str
    vendor: str
    time: datetime
    type: str
    principal: str
    vendor_type: str = ""  # the vendor's own event name (eventType, activityDisplayName, ...)
    identity: str | None = None
    principal_id: str | None = None
    actor: str | None = None
    actor_id: str | None = None
    actor_identity: str | None = None
    vendor_event_id: str | None = None
    ip: str | None = None
    geo: Geo | None = None
    app: str | None = None  # the OAuth client or application concerned
    app_verified: bool | None = None  # the vendor's publisher verification, when it says
    privilege: str | None = None  # the role or privilege granted
    reason: str | None = None  # DISABLE_REASONS for vendor disables; else the vendor's words
    risk: str | None = None  # low | medium | high when the vendor rates it
    details: dict[str, str | int | float | bool] = field(default_factory=dict)

    @property
    def by_other(self) -> bool:
        """Done by someone other than the account's holder (an admin, support, the vendor)."""
        if self.actor is None:
            return True
        if self.identity is not None and self.actor_identity is not None:
            return self.identity != self.actor_identity
        return self.actor != self.principal

    @property
    def partition_key(self) -> str:
        """Keyed like logins (the subject's identity, else principal): one worker per person."""
        return self.identity or f"principal:{self.principal}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "vendor": self.vendor,
            "time": format_time(self.time),
            "type": self.type,
            "vendor_type": self.vendor_type,
            "principal": self.principal,
            "identity": self.identity,
            "principal_id": self.principal_id,
            "actor": self.actor,
            "actor_id": self.actor_id,
            "actor_identity": self.actor_identity,
            "vendor_event_id": self.vendor_event_id,
            "ip": self.ip,
            "geo": self.geo.to_dict() if self.geo else None,
            "app": self.app,
            "app_verified": self.app_verified,
            "privilege": self.privilege,
            "reason": self.reason,
            "risk": self.risk,
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, data: Any) -> IdentityEvent:
        """Validate the canonical shape (the topic format and replay lines)."""
        if not isinstance(data, dict):
            raise ValidationError("identity event must be a JSON object")
        if not _KEYS.issuperset(data):
            unknown = sorted(set(data) - _KEYS)
            raise ValidationError(f"unknown field(s): {', '.join(unknown[:5])}")
        kind = _req(data, "type", 64)
        if kind not in IDENTITY_EVENT_TYPES:
            raise ValidationError(f"type: {kind[:64]!r} is not an identity event type")
        vendor = _opt_str(data, "vendor", 16) or "generic"
        if vendor not in kinds.LOGIN_VENDORS:
            raise ValidationError(f"vendor: must be one of {', '.join(kinds.LOGIN_VENDORS)}")
        reason = _opt_str(data, "reason", 256)
        if kind == "account_disabled_by_vendor" and reason not in DISABLE_REASONS:
            raise ValidationError(f"reason: must be one of {', '.join(DISABLE_REASONS)}")
        verified = data.get("app_verified")
        if verified is not None and not isinstance(verified, bool):
            raise ValidationError("app_verified: expected a boolean")
        geo = data.get("geo")
        if geo is not None and not isinstance(geo, dict):
            raise ValidationError("geo: expected an object")
        risk = _opt_str(data, "risk", 16)
        if risk is not None and risk not in ("low", "medium", "high"):
            raise ValidationError("risk: must be one of low, medium, high")
        actor = _opt_str(data, "actor", 320)
        return cls(
            event_id=_req(data, "event_id", 200),
            vendor=vendor,
            time=parse_time(data.get("time"), "time"),
            type=kind,
            principal=_req(data, "principal", 320).lower(),
            vendor_type=_opt_str(data, "vendor_type", 128) or kind,
            identity=_opt_str(data, "identity", 200),
            principal_id=_opt_str(data, "principal_id", 200),
            actor=actor.lower() if actor else None,
            actor_id=_opt_str(data, "actor_id", 200),
            actor_identity=_opt_str(data, "actor_identity", 200),
            vendor_event_id=_opt_str(data, "vendor_event_id", 200),
            ip=_opt_str(data, "ip", 64),
            geo=Geo.from_dict(geo),
            app=_opt_str(data, "app", 256),
            app_verified=verified,
            privilege=_opt_str(data, "privilege", 256),
            reason=reason,
            risk=risk,
            details=_details(data.get("details")),
        )
