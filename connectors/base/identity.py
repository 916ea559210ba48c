"""Helpers shared by the identity-security normalisers (Okta, Entra, Google): the explicit
"not a security event" outcome and the counted drop.

Every vendor's audit log carries far more event types than accessguard acts on (group
membership views, rate-limit notices, app assignments, logouts ...). Those are not errors, so
they must not reach a dead-letter topic (where they would drown real rejections and the
schema-drift signal): each normaliser keeps an explicit allow-list of security event types
and raises :class:`NotSecurityEvent` for everything else, which the sources table
(:mod:`connectors.base.sources`) counts per source and reason in
``accessguard_identity_events_dropped_total`` and drops. A payload that *is* on the list but
cannot be used (no subject, no time) is still a ValidationError and is dead-lettered.
"""

from __future__ import annotations

from typing import Any

from connectors.base.normalise import obj, text
from streams.support.errors import ValidationError

#: Why an event was dropped rather than used (the metric's ``reason`` label: a fixed set).
DROP_REASONS: tuple[str, ...] = ("not_security_type", "not_applied")


class NotSecurityEvent(ValidationError):
    """A well-formed vendor event that accessguard deliberately ignores: dropped and counted,
    never dead-lettered. ``code`` is one of :data:`DROP_REASONS`."""

    def __init__(self, reason: str, code: str = "not_security_type") -> None:
        super().__init__(reason)
        self.code = code if code in DROP_REASONS else "not_security_type"


def params_of(event: Any) -> dict[str, Any]:
    """A Google Reports event's ``parameters[]`` as name -> value (``value``, ``multiValue``,
    ``boolValue``, ``intValue``: the first one present)."""
    out: dict[str, Any] = {}
    raw = event.get("parameters") if isinstance(event, dict) else None
    for param in raw if isinstance(raw, list) else ():
        if not isinstance(param, dict) or not isinstance(param.get("name"), str):
            continue
        for key in ("value", "multiValue", "boolValue", "intValue", "multiIntValue"):
            if key in param:
                out[param["name"]] = param[key]
                break
    return out


def lower_or_none(value: str | None) -> str | None:
    return value.lower() if value else None


def actor_email(activity: Any) -> str | None:
    """``actor.email`` of a Google activity, lower-cased, or None."""
    return lower_or_none(text(obj(activity, "actor"), "email", max_len=320))
