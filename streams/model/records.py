"""Canonical records that flow between the edges, the agents and the executor.

Records are plain frozen dataclasses serialised as JSON (orjson). Topics carry raw bytes and
agents decode them here, so a bad record becomes a dead-letter entry with a reason instead of
an exception inside Faust's deserialiser (which would drop it silently).

Why one module: every record here is validated by the same field helpers and crosses the same
boundary (bytes on a topic <-> a typed value); splitting them would spread one contract, what a
record on the wire may hold, over several files.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from streams.model import kinds
from streams.support.errors import ValidationError
from streams.support.times import format_time, parse_time

#: Roles ordered from least to most privilege (the management-platform model).
ROLES: tuple[str, ...] = (
    "no_access",
    "read_only",
    "needs_approval",
    "can_reply",
    "full_publishing",
    "admin",
)
ROLE_RANK: dict[str, int] = {r: i for i, r in enumerate(ROLES)}
ACCESS_PATHS: tuple[str, ...] = ("sso", "native", "shared_credential", "api_token")
MFA_METHODS: tuple[str, ...] = ("none", "totp", "push", "webauthn")
IDENTITY_KINDS: tuple[str, ...] = ("employee", "contractor", "agency")
IDENTITY_STATUSES: tuple[str, ...] = ("active", "suspended", "offboarded")
HR_TYPES: tuple[str, ...] = (
    "terminated",
    "suspended",
    "reinstated",
    "contract_ended",
    "device_lost",
    "role_changed",
)
ACTION_KINDS: tuple[str, ...] = (
    "revoke_sessions",
    "remove_grant",
    "downgrade_grant",
    "rotate_shared_credential",
    "force_mfa_reenrolment",
    "disable_account",
    "enable_account",
    "expire_password",
    "revoke_tokens",
    "revoke_shared_access",
    "restore_shared_access",
)
SEVERITIES: tuple[str, ...] = ("info", "low", "medium", "high", "critical")

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+\-]{0,199}$")
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


def idempotency_key(*parts: str | None) -> str:
    """A deterministic key for one effect: the same inputs always give the same key."""
    digest = hashlib.sha256("\x1f".join(p or "" for p in parts).encode()).hexdigest()
    return digest[:32]


def subject_hash(value: str) -> str:
    """A short stable hash of a personal identifier, for logs (never log the raw e-mail)."""
    return hashlib.sha256(value.strip().lower().encode()).hexdigest()[:12]


def _str_field(
    data: dict[str, Any], name: str, *, required: bool = True, max_len: int = 256
) -> str:
    value = data.get(name)
    if value is None:
        if required:
            raise ValidationError(f"{name}: required")
        return ""
    if not isinstance(value, str):
        raise ValidationError(f"{name}: expected a string")
    value = value.strip()
    if required and not value:
        raise ValidationError(f"{name}: must not be empty")
    if len(value) > max_len:
        raise ValidationError(f"{name}: longer than {max_len} characters")
    return value


def _opt_str(data: dict[str, Any], name: str, max_len: int) -> str | None:
    """``_str_field(data, name, required=False, max_len=max_len) or None``, without the
    keyword-argument call: the login path runs this ~15 times per event."""
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{name}: expected a string")
    value = value.strip()
    if len(value) > max_len:
        raise ValidationError(f"{name}: longer than {max_len} characters")
    return value or None


@dataclass(frozen=True, slots=True)
class HrEvent:
    """An HR lifecycle event, validated at the edge (``POST /v1/hr/events``)."""

    event_id: str
    type: str
    employee_id: str
    email: str
    effective_at: datetime
    source: str
    new_role: str | None = None
    #: Unix seconds when the edge accepted the event (for time-to-revoke); not part of identity.
    accepted_at: float | None = None

    @classmethod
    def from_dict(cls, data: Any) -> HrEvent:
        """Validate a decoded JSON body; raises ValidationError with the first problem."""
        if not isinstance(data, dict):
            raise ValidationError("body must be a JSON object")
        allowed = {
            "event_id",
            "type",
            "employee_id",
            "email",
            "effective_at",
            "source",
            "new_role",
            "accepted_at",
            "kind",
        }
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValidationError(f"unknown field(s): {', '.join(unknown[:5])}")
        event_id = _str_field(data, "event_id", max_len=200)
        if not _ID_RE.match(event_id):
            raise ValidationError("event_id: use letters, digits and ._:@+- only")
        etype = _str_field(data, "type", max_len=32)
        if etype not in HR_TYPES:
            raise ValidationError(f"type: must be one of {', '.join(HR_TYPES)}")
        employee_id = _str_field(data, "employee_id", max_len=200)
        email = _str_field(data, "email", max_len=320)
        if not _EMAIL_RE.match(email):
            raise ValidationError("email: not an e-mail address")
        effective_at = parse_time(data.get("effective_at"), "effective_at")
        source = _str_field(data, "source", max_len=100)
        new_role: str | None = None
        if etype == "role_changed":
            new_role = _str_field(data, "new_role", max_len=32)
            if new_role not in ROLE_RANK:
                raise ValidationError(f"new_role: must be one of {', '.join(ROLES)}")
        elif data.get("new_role") is not None:
            raise ValidationError("new_role: only allowed with type role_changed")
        accepted_at = data.get("accepted_at")
        if accepted_at is not None and not isinstance(accepted_at, int | float):
            raise ValidationError("accepted_at: expected unix seconds")
        return cls(
            event_id=event_id,
            type=etype,
            employee_id=employee_id,
            email=email,
            effective_at=effective_at,
            source=source,
            new_role=new_role,
            accepted_at=float(accepted_at) if accepted_at is not None else None,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "type": self.type,
            "employee_id": self.employee_id,
            "email": self.email,
            "effective_at": format_time(self.effective_at),
            "source": self.source,
        }
        if self.new_role is not None:
            out["new_role"] = self.new_role
        if self.accepted_at is not None:
            out["accepted_at"] = self.accepted_at
        return out

    def dumps(self) -> bytes:
        return orjson.dumps(self.to_dict())

    def digest(self) -> str:
        """What the event says, hashed: every field but ``accepted_at``, in canonical JSON.
        The same event_id with another digest is another event (409 at the edge, dead-letter
        in the worker); a re-sent body, however its JSON is spaced, has the same digest."""
        fields = self.to_dict()
        fields.pop("accepted_at", None)
        return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]

    @classmethod
    def loads(cls, raw: bytes) -> HrEvent:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValidationError(f"invalid JSON: {exc.msg}") from None
        return cls.from_dict(data)

    @property
    def partition_key(self) -> str:
        """Events of one person share a key, so one worker owns that person's state."""
        return self.employee_id


@dataclass(frozen=True, slots=True)
class Action:
    """One effect at one provider. Safe to run more than once: the executor's ledger
    skips an ``idempotency_key`` already done, so a redelivered plan never calls twice."""

    action: str
    identity: str
    account: str | None
    provider: str
    cause: str
    idempotency_key: str
    #: Everything the provider needs, resolved from the registry at decision time:
    #: ``user_ref`` (the identity's id at that provider), ``account_handle``,
    #: ``platform``, ``role`` (target role for downgrade_grant), ``credential_ref``.
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(
        cls,
        action: str,
        *,
        identity: str,
        account: str | None,
        provider: str,
        cause: str,
        params: dict[str, Any] | None = None,
    ) -> Action:
        key = idempotency_key(cause, action, identity, account, provider)
        return cls(action, identity, account, provider, cause, key, dict(params or {}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "identity": self.identity,
            "account": self.account,
            "provider": self.provider,
            "cause": self.cause,
            "idempotency_key": self.idempotency_key,
            "params": self.params,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Action:
        return cls(
            action=data["action"],
            identity=data["identity"],
            account=data.get("account"),
            provider=data["provider"],
            cause=data["cause"],
            idempotency_key=data["idempotency_key"],
            params=dict(data.get("params") or {}),
        )

    def replay_view(self) -> dict[str, Any]:
        """The documented NDJSON shape of ``accessguard replay``."""
        return {
            "type": "action",
            "action": self.action,
            "identity": self.identity,
            "account": self.account,
            "provider": self.provider,
            "cause": self.cause,
            "idempotency_key": self.idempotency_key,
        }


@dataclass(frozen=True, slots=True)
class Alert:
    """Something a human should see. Never carries a secret: details hold references only."""

    severity: str
    rule: str
    identity: str | None
    dedup_key: str
    title: str
    details: dict[str, Any] = field(default_factory=dict)
    runbook: str | None = None
    #: "trigger" or "resolve" (PagerDuty semantics; chat sinks post both as messages).
    event_action: str = "trigger"
    #: The sink's thread this alert continues (Slack: the ``ts`` of its incident's first
    #: message there), set per sink by the incident router (streams/runtime/incidents.py).
    thread: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "severity": self.severity,
            "rule": self.rule,
            "identity": self.identity,
            "dedup_key": self.dedup_key,
            "title": self.title,
            "details": self.details,
            "runbook": self.runbook,
            "event_action": self.event_action,
        }
        if self.thread is not None:  # only when set: older readers see the shape they know
            out["thread"] = self.thread
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        return cls(
            severity=data["severity"],
            rule=data["rule"],
            identity=data.get("identity"),
            dedup_key=data["dedup_key"],
            title=data["title"],
            details=dict(data.get("details") or {}),
            runbook=data.get("runbook"),
            event_action=data.get("event_action", "trigger"),
            thread=data.get("thread"),
        )

    def replay_view(self) -> dict[str, Any]:
        return {
            "type": "alert",
            "severity": self.severity,
            "rule": self.rule,
            "identity": self.identity,
            "dedup_key": self.dedup_key,
            "title": self.title,
        }


LOGIN_OUTCOMES: tuple[str, ...] = ("success", "failure", "challenge")
MFA_RESULTS: tuple[str, ...] = ("success", "denied", "timeout", "none")
#: A LoginEvent's vendor is one the connectors declared (streams.model.kinds.LOGIN_VENDORS).


@dataclass(frozen=True, slots=True)
class Geo:
    """Where a login came from, as far as the vendor said. Placeholders are dropped at the
    edge (a ``"Country"`` literal or lat/lon 0,0 is no location)."""

    country: str | None = None  # ISO 3166-1 alpha-2 when known, else the vendor's name
    city: str | None = None
    lat: float | None = None
    lon: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"country": self.country, "city": self.city, "lat": self.lat, "lon": self.lon}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Geo | None:
        if not data:
            return None
        return cls(data.get("country"), data.get("city"), data.get("lat"), data.get("lon"))


#: Fields a canonical login event may carry (``kind`` is the replay file's tag).
_LOGIN_KEYS: frozenset[str] = frozenset(
    {
        "event_id", "vendor", "time", "principal", "outcome", "event_type", "identity",
        "vendor_event_id", "failure_reason", "mfa_method", "mfa_result", "ip", "geo",
        "device", "user_agent", "target", "target_account", "risk", "principal_id", "kind",
    }
)  # fmt: skip


#: LoginEvent's optional strings with their length bounds, in field order (from_dict).
_LOGIN_OPTIONAL: tuple[tuple[str, int], ...] = (
    ("event_type", 128), ("identity", 200), ("vendor_event_id", 200), ("failure_reason", 512),
    ("mfa_method", 32), ("ip", 64), ("device", 512), ("user_agent", 1024), ("target", 512),
    ("target_account", 200), ("risk", 16), ("principal_id", 200),
)  # fmt: skip


# Not frozen on purpose, like LeakRecord: a frozen dataclass's __init__ (an object.__setattr__
# per field) cost ~1.8 us of a login's ~45 in the worker, and every login builds two (decoded,
# then resolved). Hashable as before (unsafe_hash: from the fields). Treat as immutable.
@dataclass(slots=True, unsafe_hash=True)
class LoginEvent:
    """One login-related event, canonical whatever the vendor. Rules read these fields only.

    ``event_id`` is unique per event (vendor ids are not: Okta reuses ``uuid``), derived from
    the vendor id and a hash of the payload. ``identity`` is the registry identity resolved from
    any alias, or None for an unknown principal. ``principal`` is the login name as given
    (lower-cased); it is personal data: never a metric label, only hashed in logs.
    """

    event_id: str
    vendor: str
    time: datetime
    principal: str
    outcome: str  # success | failure | challenge
    event_type: str
    identity: str | None = None
    vendor_event_id: str | None = None
    failure_reason: str | None = None
    mfa_method: str | None = None  # push | totp | sms | webauthn | email | password | other
    mfa_result: str | None = None  # success | denied | timeout | none
    ip: str | None = None
    geo: Geo | None = None
    device: str | None = None  # a device id when the vendor has one
    user_agent: str | None = None
    target: str | None = None  # application or social account as the vendor named it
    target_account: str | None = None  # the registry account id, when target resolves
    risk: str | None = None  # vendor risk level (low | medium | high) when given
    #: The vendor's own id for the principal (Okta actor.id, Entra userId, Google profileId),
    #: when given: registry aliases often hold this id rather than the login name.
    principal_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "vendor": self.vendor,
            "time": format_time(self.time),
            "principal": self.principal,
            "outcome": self.outcome,
            "event_type": self.event_type,
            "identity": self.identity,
            "vendor_event_id": self.vendor_event_id,
            "failure_reason": self.failure_reason,
            "mfa_method": self.mfa_method,
            "mfa_result": self.mfa_result,
            "ip": self.ip,
            "geo": self.geo.to_dict() if self.geo else None,
            "device": self.device,
            "user_agent": self.user_agent,
            "target": self.target,
            "target_account": self.target_account,
            "risk": self.risk,
            "principal_id": self.principal_id,
        }

    @classmethod
    def from_dict(cls, data: Any) -> LoginEvent:
        """Validate the canonical shape (the generic JSON ingest format and the topic format)."""
        if not isinstance(data, dict):
            raise ValidationError("login event must be a JSON object")
        if not _LOGIN_KEYS.issuperset(data):
            unknown = sorted(set(data) - _LOGIN_KEYS)
            raise ValidationError(f"unknown field(s): {', '.join(unknown[:5])}")
        # The checks run in this order (the first problem is the one reported); optional
        # strings go through _opt_str, the hot-path twin of _str_field(required=False).
        outcome = _str_field(data, "outcome", max_len=16)
        if outcome not in LOGIN_OUTCOMES:
            raise ValidationError(f"outcome: must be one of {', '.join(LOGIN_OUTCOMES)}")
        vendor = _opt_str(data, "vendor", 16) or "generic"
        if vendor not in kinds.LOGIN_VENDORS:
            raise ValidationError(f"vendor: must be one of {', '.join(kinds.LOGIN_VENDORS)}")
        mfa_result = _opt_str(data, "mfa_result", 16)
        if mfa_result is not None and mfa_result not in MFA_RESULTS:
            raise ValidationError(f"mfa_result: must be one of {', '.join(MFA_RESULTS)}")
        geo = data.get("geo")
        if geo is not None and not isinstance(geo, dict):
            raise ValidationError("geo: expected an object")
        event_id = _str_field(data, "event_id", max_len=200)
        principal = _str_field(data, "principal", max_len=320).lower()
        time = parse_time(data.get("time"), "time")
        # _opt_str inlined over a table (one call each cost ~2 us per event): the optional
        # strings in field order, each stripped, bounded, and "" as None
        get = data.get
        opt: list[str | None] = []
        for name, max_len in _LOGIN_OPTIONAL:
            value = get(name)
            if value is not None:
                if not isinstance(value, str):
                    raise ValidationError(f"{name}: expected a string")
                value = value.strip()
                if len(value) > max_len:
                    raise ValidationError(f"{name}: longer than {max_len} characters")
                value = value or None
            opt.append(value)
        event_type, identity, vendor_event_id, failure_reason, mfa_method, ip, *more = opt
        device, user_agent, target, target_account, risk, principal_id = more
        # positional, in field order: keywords cost more for 19 fields
        return cls(
            event_id, vendor, time, principal, outcome, event_type or "login", identity,
            vendor_event_id, failure_reason, mfa_method, mfa_result, ip,
            Geo.from_dict(geo), device, user_agent, target, target_account, risk, principal_id,
        )  # fmt: skip

    @property
    def partition_key(self) -> str:
        """Keyed by identity when resolved, else by principal: one worker owns one person."""
        return self.identity or f"principal:{self.principal}"


#: Breach flags a LeakRecord may carry (HIBP's Is* flags, plus where a record came from).
LEAK_FLAGS: tuple[str, ...] = (
    "spam_list",  # HIBP IsSpamList: an aggregated spam list, not a breach of a service
    "fabricated",  # HIBP IsFabricated: the data is believed to be made up
    "retired",  # HIBP IsRetired: removed from HIBP's searchable set
    "stealer_log",  # HIBP IsStealerLog: captured by malware on the victim's device
    "sensitive",  # HIBP IsSensitive: only verified domain owners see it
    "unverified",  # HIBP IsVerified false
    "malware",  # HIBP IsMalware
    "latin1_fallback",  # the dump line was not UTF-8 and was read as Latin-1
)
#: Data classes that mean a credential was exposed (HIBP's names; dumps map onto them).
CREDENTIAL_DATA_CLASSES: frozenset[str] = frozenset(
    {"Passwords", "Password hashes", "Historical passwords", "Auth tokens"}
)
_HMAC_RE = re.compile(r"^[0-9a-f]{64}$")


def parse_date_or_time(value: Any, field_name: str) -> datetime | None:
    """A date (``2015-03-01``: 00:00 UTC that day) or an ISO-8601 timestamp with a zone;
    None or "" is unknown. Raises ValidationError for anything else."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and len(value.strip()) == 10:
        try:
            day = datetime.strptime(value.strip(), "%Y-%m-%d")
        except ValueError:
            raise ValidationError(
                f"{field_name}: not a date (YYYY-MM-DD): {value[:40]!r}"
            ) from None
        return day.replace(tzinfo=UTC)
    return parse_time(value, field_name)


# Not frozen on purpose: a frozen dataclass's __init__ costs ~2.1 us against ~0.3 us here
# (measured), and a dump import builds a million of these. Treat instances as immutable.
@dataclass(slots=True)
class LeakRecord:
    """One principal seen in one breach, canonical whatever the feed (HIBP, a dump, the API).

    ``principal`` is an e-mail address or a username, stripped and lower-cased (plus-tags are
    kept: whether ``a+x@d`` is ``a@d`` depends on the domain, decided when matching). It is
    personal data: never a metric label, only hashed in logs and alerts.

    Never carries a plaintext password: only whether one was present, and
    ``password_hmac``, an HMAC-SHA256 (hex) of it under the deployment's leak key, so a rule
    can compare two leaks without anyone holding the password.
    """

    principal: str
    breach: str
    source: str
    breach_date: datetime | None = None
    added_at: datetime | None = None
    data_classes: tuple[str, ...] = ()
    password_present: bool = False
    password_hmac: str | None = None
    flags: tuple[str, ...] = ()

    @property
    def subject(self) -> str:
        """A short hash of the principal, for logs, alerts and idempotency keys."""
        return subject_hash(self.principal)

    @property
    def cause(self) -> str:
        """The idempotency cause: the same breach re-imported yields the same action keys."""
        return f"leak:{self.breach}:{self.subject}"

    @property
    def exposed_at(self) -> datetime | None:
        """When the credential was taken: the breach date, else when it was published."""
        return self.breach_date or self.added_at

    @property
    def credential_exposed(self) -> bool:
        """A password (or hash, token) of the principal is in the breach."""
        return (
            self.password_present
            or "stealer_log" in self.flags
            or any(c in CREDENTIAL_DATA_CLASSES for c in self.data_classes)
        )

    @property
    def partition_key(self) -> str:
        """Keyed by principal: the worker resolves it against the registry."""
        return f"principal:{self.principal}"

    def __repr__(self) -> str:
        # The principal is personal data: repr (and so tracebacks and logs) shows its hash.
        return (
            f"LeakRecord(subject={self.subject}, breach={self.breach!r}, "
            f"source={self.source!r}, password_present={self.password_present}, "
            f"flags={self.flags!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "principal": self.principal,
            "breach": self.breach,
            "source": self.source,
            "breach_date": format_time(self.breach_date) if self.breach_date else None,
            "added_at": format_time(self.added_at) if self.added_at else None,
            "data_classes": list(self.data_classes),
            "password_present": self.password_present,
            "password_hmac": self.password_hmac,
            "flags": list(self.flags),
        }

    def dumps(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> LeakRecord:
        """Validate the canonical shape (the topic format, ``POST /v1/leaks`` JSON records
        and replay lines). A ``password`` field is refused: hash it at the edge."""
        if not isinstance(data, dict):
            raise ValidationError("leak record must be a JSON object")
        known = {
            "principal", "breach", "source", "breach_date", "added_at", "data_classes",
            "password_present", "password_hmac", "flags", "kind",
        }  # fmt: skip
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValidationError(f"unknown field(s): {', '.join(unknown[:5])}")
        principal = _str_field(data, "principal", max_len=320).lower()
        breach = _str_field(data, "breach", max_len=200)
        source = _str_field(data, "source", required=False, max_len=200) or "api"
        classes = data.get("data_classes") or []
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ValidationError("data_classes: expected a list of strings")
        flags = data.get("flags") or []
        if not isinstance(flags, list) or not all(f in LEAK_FLAGS for f in flags):
            raise ValidationError(f"flags: expected a list of {', '.join(LEAK_FLAGS)}")
        present = data.get("password_present", False)
        if not isinstance(present, bool):
            raise ValidationError("password_present: expected true or false")
        digest = data.get("password_hmac")
        if digest is not None and (not isinstance(digest, str) or not _HMAC_RE.match(digest)):
            raise ValidationError("password_hmac: expected 64 lower-case hex characters")
        return cls(
            principal=principal,
            breach=breach,
            source=source,
            breach_date=parse_date_or_time(data.get("breach_date"), "breach_date"),
            added_at=parse_date_or_time(data.get("added_at"), "added_at"),
            data_classes=tuple(c.strip() for c in classes[:64] if c.strip()),
            password_present=present or digest is not None,
            password_hmac=digest,
            flags=tuple(dict.fromkeys(flags)),
        )
