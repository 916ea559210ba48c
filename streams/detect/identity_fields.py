"""What an identity-event rule (``inputs: [identity_event]``) can read: the
:class:`~streams.model.identity.IdentityEvent`'s canonical fields and the registry and
lifecycle facts about its *subject* (the account the event is about), plus who acted.

:class:`IdentityCtx` is a :class:`~streams.detect.fields.Ctx` whose event is an IdentityEvent:
``identity.*`` facts (known, status, kind, highest effective role) are computed the way login
rules compute them, so "is the target a brand-account holder, how privileged" means the same
in both. An identity event names no brand account, so ``grant.*``/``account.*`` are absent.
Test events for these rules (:func:`case_identity_event`) are canonical IdentityEvent fields
with ``at`` seconds after the case start, as for logins.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any

from streams.detect.fields import FIELDS, Ctx, FieldSpec
from streams.model.identity import DISABLE_REASONS, IDENTITY_EVENT_TYPES, IdentityEvent
from streams.model.kinds import LOGIN_VENDORS
from streams.model.records import ROLE_RANK
from streams.model.registry import Account, Grant, Registry
from streams.model.state import StateStore
from streams.support.errors import ValidationError
from streams.support.times import format_time

_UNSET: Any = object()
#: The role from which a holder counts as privileged (may publish as the brand, or more).
PRIVILEGED_ROLE = "full_publishing"


class IdentityCtx(Ctx):
    """One identity event and lazily computed facts about its subject."""

    __slots__ = ("_holder",)

    def __init__(self, event: IdentityEvent, registry: Registry, lifecycle: StateStore) -> None:
        # Ctx reads event.identity, .principal, .event_id and .time, which an IdentityEvent
        # has with the same meaning; account()/grant() (a login's target) are overridden.
        super().__init__(event, registry, lifecycle)  # type: ignore[arg-type]
        self._holder: Any = _UNSET

    def account(self) -> Account | None:
        return None

    def grant(self) -> Grant | None:
        return None

    def holder(self) -> bool:
        """Whether the subject holds at least one effective grant on a brand account."""
        if self._holder is _UNSET:
            self._holder = self.max_role() not in (None, "no_access")
        return bool(self._holder)

    def privileged(self) -> bool:
        role = self.max_role()
        return role is not None and ROLE_RANK[role] >= ROLE_RANK[PRIVILEGED_ROLE]


def _ev(name: str) -> Any:
    return attrgetter(f"event.{name}")


def _holder(c: Ctx) -> bool:
    return isinstance(c, IdentityCtx) and c.holder()


def _privileged(c: Ctx) -> bool:
    return isinstance(c, IdentityCtx) and c.privileged()


def _country(c: Ctx) -> str | None:
    geo = c.event.geo
    return geo.country if geo is not None else None


def _actor_known(c: Ctx) -> bool:
    return getattr(c.event, "actor_identity", None) is not None


IDENTITY_FIELDS: dict[str, FieldSpec] = {
    **{
        name: FieldSpec(_ev(name), "str")
        for name in (
            "event_id",
            "vendor_type",
            "principal",
            "identity",
            "actor",
            "actor_identity",
            "ip",
            "app",
            "privilege",
            "risk",
        )
    },
    "vendor": FieldSpec(_ev("vendor"), "str", LOGIN_VENDORS),
    "type": FieldSpec(_ev("type"), "str", IDENTITY_EVENT_TYPES),
    "reason": FieldSpec(_ev("reason"), "str"),
    "app_verified": FieldSpec(_ev("app_verified"), "bool"),
    "by_other": FieldSpec(_ev("by_other"), "bool"),
    "geo.country": FieldSpec(_country, "str"),
    "actor.known": FieldSpec(_actor_known, "bool"),
    "identity.holder": FieldSpec(_holder, "bool"),
    "identity.privileged": FieldSpec(_privileged, "bool"),
    **{
        name: FIELDS[name]
        for name in ("identity.known", "identity.status", "identity.kind", "identity.max_role")
    },
}
#: Reasons a vendor disable may carry (documented for rule writers; ``reason`` is free text
#: for the other types).
VENDOR_DISABLE_REASONS = DISABLE_REASONS


def case_identity_event(
    data: dict[str, Any], *, start: datetime, index: int, rule_id: str, case: int
) -> IdentityEvent:
    """A rule test's event (canonical fields, ``at`` seconds after ``start``) as an
    IdentityEvent. ``identity`` without ``principal`` gets ``<identity>@example.test``; an
    ``actor_identity`` without ``actor`` likewise. Raises ValidationError."""
    data = dict(data)
    at = data.pop("at", None)
    if at is not None:
        if isinstance(at, bool) or not isinstance(at, int | float):
            raise ValidationError("at: expected seconds after the case start")
        if "time" in data:
            raise ValidationError("give either time or at, not both")
        data["time"] = format_time(start + timedelta(seconds=at))
    data.setdefault("time", format_time(start + timedelta(seconds=index)))
    data.setdefault("event_id", f"{rule_id}-t{case}-e{index}")
    if "principal" not in data:
        ident = data.get("identity")
        data["principal"] = f"{ident}@example.test" if ident else "someone@example.test"
    if "actor" not in data and data.get("actor_identity"):
        data["actor"] = f"{data['actor_identity']}@example.test"
    return IdentityEvent.from_dict(data)
