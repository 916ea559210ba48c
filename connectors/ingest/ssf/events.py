"""What the events of a verified SET become: CAEP/RISC events mapped onto accessguard's own
records, which the worker then decides as it decides any other input.

Nothing here acts: each event becomes a record for the topic whose path already owns that
decision, so the same policy, rules, dedup and audit apply as for the other doors:

========================================  ============================================
event (CAEP / RISC)                       record, topic and what decides it
========================================  ============================================
RISC ``account-disabled``, ``-purged``    HrEvent ``terminated`` on hr.events: the
                                          offboarding policy (streams/decide/hr.py)
RISC ``credential-compromise``,           LeakRecord with a credential on leak.records:
CAEP ``credential-change``                the leak rules (sessions revoked, password
                                          expired, MFA re-enrolled by role)
CAEP ``session-revoked``                  IdentityEvent ``session_revoked`` on
                                          identity.events: rule ``ssf_session_revoked``
                                          revokes sessions at the other providers
CAEP ``assurance-level-change``           IdentityEvent ``assurance_level_changed``:
                                          rule ``ssf_assurance_level_changed`` alerts
RISC ``identifier-changed``               a registry change (the identity's e-mail
                                          replaced) on registry.changes
SSF ``verification``                      nothing: the stream is proven to work (logged)
========================================  ============================================

Subjects (``sub_id``, SSF 1.0; or the event's ``subject``, CAEP/RISC drafts) in the formats
``email``, ``iss_sub``, ``opaque``, ``phone_number``, ``aliases`` and ``complex`` (its
``user`` first) are resolved against the registry: ``email`` as an e-mail or alias,
``iss_sub``/``opaque`` as an alias in ``alias_provider``'s namespace (any alias when unset).
An unresolved subject with an e-mail still makes the record (the decision then raises its
unknown-identity alert, as an HR event about a stranger does); one without is ``ignored``.

Record ids derive from ``(iss, jti, event type)``: the same SET delivered twice yields the
same HR ``event_id`` and leak ``cause``, so the worker's own dedup absorbs what the edge's
``jti`` memory missed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from connectors.ingest.ssf.verify import VerifiedSet
from streams.model.identity import IdentityEvent
from streams.model.records import HrEvent, LeakRecord, idempotency_key
from streams.model.registry import Identity, Registry

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
RISC = "https://schemas.openid.net/secevent/risc/event-type/"
SSF = "https://schemas.openid.net/secevent/ssf/event-type/"
VERIFICATION = SSF + "verification"

#: Event type URI -> what it becomes.
KINDS: dict[str, str] = {
    RISC + "account-disabled": "terminate",
    RISC + "account-purged": "terminate",
    RISC + "credential-compromise": "leak",
    CAEP + "credential-change": "leak",
    CAEP + "session-revoked": "session_revoked",
    CAEP + "assurance-level-change": "assurance_level_changed",
    RISC + "identifier-changed": "identifier",
    VERIFICATION: "verification",
}
#: Short names for metric labels: known URIs only (a transmitter's URI never becomes a label).
SHORT: dict[str, str] = {uri: uri.rsplit("/", 1)[1] for uri in KINDS}
SHORT[SSF + "stream-updated"] = "stream-updated"
#: Scalar facts of an assurance-level change kept on the identity event (CAEP §3.4).
_ASSURANCE_FIELDS = ("namespace", "current_level", "previous_level", "change_direction")


@dataclass(frozen=True, slots=True)
class Mapped:
    """One event of a SET and what it became (``record`` None for ``verification`` and
    ``ignored``)."""

    event: str  # short name, or "other"
    outcome: str  # hr_event | leak | identity_event | registry_change | verification | ignored
    record: HrEvent | LeakRecord | IdentityEvent | tuple[str, dict[str, Any]] | None = None
    note: str = ""


def _subject(verified: VerifiedSet, payload: Mapping[str, Any]) -> Mapping[str, Any] | None:
    sub = verified.claims.get("sub_id")
    if not isinstance(sub, Mapping):
        sub = payload.get("subject")
    return sub if isinstance(sub, Mapping) else None


def _identifiers(sub: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(format, value)`` of a subject, the most telling first (a complex subject's user)."""
    fmt = sub.get("format")
    if fmt == "email" and isinstance(sub.get("email"), str):
        return [("email", sub["email"])]
    if fmt == "iss_sub" and isinstance(sub.get("sub"), str):
        return [("iss_sub", sub["sub"])]
    if fmt == "opaque" and isinstance(sub.get("id"), str):
        return [("opaque", sub["id"])]
    if fmt == "phone_number" and isinstance(sub.get("phone_number"), str):
        return [("opaque", sub["phone_number"])]
    if fmt == "aliases" and isinstance(sub.get("identifiers"), list):
        return [i for s in sub["identifiers"] if isinstance(s, Mapping) for i in _identifiers(s)]
    # complex: SSF 1.0 has no "format" member, the drafts say "complex"
    out: list[tuple[str, str]] = []
    for member in ("user", "session", "device", "application", "tenant"):
        inner = sub.get(member)
        if isinstance(inner, Mapping):
            out += _identifiers(inner)
    return out


def resolve_subject(
    sub: Mapping[str, Any] | None, registry: Registry, alias_provider: str = ""
) -> tuple[Identity | None, str | None]:
    """The registry identity a subject names (None when unknown or ambiguous) and an e-mail
    address for it (the subject's, else the identity's first)."""
    ids = _identifiers(sub) if sub is not None else []
    email = next((v.strip().lower() for f, v in ids if f == "email" and "@" in v), None)
    identity: Identity | None = None
    for fmt, value in ids:
        if fmt == "email":
            identity = registry.resolve_alias(value)
        else:
            identity = registry.resolve_alias(value, alias_provider or None)
        if identity is not None:
            break
    if email is None and identity is not None and identity.emails:
        email = identity.emails[0]
    return identity, email


def _when(payload: Mapping[str, Any], verified: VerifiedSet) -> datetime:
    ts = payload.get("event_timestamp")
    seconds = ts if isinstance(ts, int | float) and not isinstance(ts, bool) else verified.iat
    return datetime.fromtimestamp(float(seconds), UTC)


def map_set(
    verified: VerifiedSet,
    *,
    transmitter: str,
    registry: Registry,
    alias_provider: str = "",
    now: float,
) -> list[Mapped]:
    """Every event of the SET, mapped (pure: the registry and clock are arguments)."""
    out: list[Mapped] = []
    for uri, payload in verified.events.items():
        kind = KINDS.get(uri)
        short = SHORT.get(uri, "other")
        if not isinstance(payload, Mapping):
            out.append(Mapped(short, "ignored", note="event payload is not an object"))
            continue
        if kind is None:
            out.append(Mapped(short, "ignored", note="event type not acted on"))
            continue
        if kind == "verification":
            out.append(Mapped(short, "verification", note=str(payload.get("state", ""))[:200]))
            continue
        sub = _subject(verified, payload)
        identity, email = resolve_subject(sub, registry, alias_provider)
        key = idempotency_key(verified.iss, verified.jti, uri)
        when = _when(payload, verified)
        source = f"ssf:{transmitter}"[:100]
        if kind == "identifier":
            out.append(_identifier(short, payload, identity, sub))
        elif email is None:
            out.append(Mapped(short, "ignored", note="subject matches no registry identity"))
        elif kind == "terminate":
            event = HrEvent(
                event_id=f"ssf-{key}",
                type="terminated",
                employee_id=identity.hr_id if identity is not None else email,
                email=email,
                effective_at=when,
                source=source,
                accepted_at=now,
            )
            out.append(Mapped(short, "hr_event", event))
        elif kind == "leak":
            leak = LeakRecord(
                principal=email,
                breach=f"ssf-{transmitter}-{short}-{key[:12]}"[:200],
                source=source,
                breach_date=when,
                added_at=datetime.fromtimestamp(now, UTC),
                password_present=True,
            )
            out.append(Mapped(short, "leak", leak))
        else:
            details: dict[str, str | int | float | bool] = {"transmitter": transmitter}
            for name in _ASSURANCE_FIELDS:
                value = payload.get(name)
                if isinstance(value, str):
                    details[name] = value[:128]
            event_ = IdentityEvent(
                event_id=f"ssf-{key}",
                vendor="generic",
                time=when,
                type=kind,
                principal=email,
                vendor_type=uri[-128:],
                identity=identity.id if identity is not None else None,
                vendor_event_id=verified.jti[:200],
                reason=_reason(kind, payload),
                details=details,
            )
            out.append(Mapped(short, "identity_event", event_))
    return out


def _reason(kind: str, payload: Mapping[str, Any]) -> str | None:
    """What rules read as ``reason``: an assurance change's direction (``increase``,
    ``decrease``, ``equal``), else the transmitter's English admin reason (CAEP
    ``reason_admin`` is a map of language tags)."""
    if kind == "assurance_level_changed":
        value = payload.get("change_direction")
    else:
        value = payload.get("reason_admin")
        value = value.get("en") if isinstance(value, Mapping) else value
    return value[:256] if isinstance(value, str) and value else None


def _identifier(
    short: str, payload: Mapping[str, Any], identity: Identity | None, sub: Mapping[str, Any] | None
) -> Mapped:
    """RISC identifier-changed: the identity's old e-mail replaced by ``new-value``."""
    new = payload.get("new-value")
    if identity is None:
        return Mapped(short, "ignored", note="subject matches no registry identity")
    if not isinstance(new, str) or "@" not in new or len(new) > 320:
        return Mapped(short, "ignored", note="new-value is not an e-mail address")
    new = new.strip().lower()
    old = next((v.strip().lower() for f, v in _identifiers(sub or {}) if f == "email"), None)
    emails = tuple(dict.fromkeys([new, *(e for e in identity.emails if e != old)]))
    changed = replace(identity, emails=emails)
    return Mapped(short, "registry_change", (f"identity:{identity.id}", changed.to_dict()))
