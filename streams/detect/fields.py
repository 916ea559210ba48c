"""What a rule condition can read: login-event fields, leak-record fields, and the registry and
lifecycle facts about the event's subject.

:class:`Ctx` wraps one :class:`~streams.model.records.LoginEvent` with facts computed lazily and
at most once (identity, target account, the grant as it stands after what the product did,
effective status, highest role), shared by every rule that looks at the event; :class:`LeakCtx`
does the same for one :class:`LeakSubject`. :data:`FIELDS` (login rules) and
:data:`LEAK_FIELDS` (leak rules) map every field name a rule may use to a :class:`FieldSpec`
(getter, type, allowed values): loading checks conditions against them
(:mod:`streams.detect.load_values`) and :func:`streams.detect.model.compile_condition` turns
the getters into closures, so evaluation never looks a field up by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from streams.model.access import effective_grant, effective_roles
from streams.model.kinds import LOGIN_VENDORS
from streams.model.records import (
    ACCESS_PATHS,
    IDENTITY_KINDS,
    IDENTITY_STATUSES,
    LEAK_FLAGS,
    LOGIN_OUTCOMES,
    MFA_METHODS,
    MFA_RESULTS,
    ROLE_RANK,
    ROLES,
    LeakRecord,
    LoginEvent,
)
from streams.model.registry import CRITICALITIES, Account, Grant, Identity, Registry
from streams.model.state import IdentityState, StateStore

#: What a leak subject is: a registry identity or an account's shared login.
SUBJECT_KINDS: tuple[str, ...] = ("identity", "shared_account")

_UNSET: Any = object()


class Ctx:
    """One event and lazily computed facts about it, shared by every rule that looks."""

    __slots__ = (
        "_account",
        "_grant",
        "_identity",
        "_life",
        "_max_role",
        "_status",
        "event",
        "lifecycle",
        "registry",
        "ts",
    )

    def __init__(self, event: LoginEvent, registry: Registry, lifecycle: StateStore) -> None:
        self.event = event
        self.registry = registry
        self.lifecycle = lifecycle
        self.ts = event.time.timestamp()
        self._identity: Any = _UNSET
        self._account: Any = _UNSET
        self._grant: Any = _UNSET
        self._life: Any = _UNSET
        self._status: Any = _UNSET
        self._max_role: Any = _UNSET

    def identity(self) -> Identity | None:
        if self._identity is _UNSET:
            ident = self.event.identity
            self._identity = self.registry.identities.get(ident) if ident else None
        return self._identity  # type: ignore[no-any-return]

    def life(self) -> IdentityState | None:
        if self._life is _UNSET:
            ident = self.identity()
            self._life = self.lifecycle.identity(ident.id) if ident is not None else None
        return self._life  # type: ignore[no-any-return]

    def account(self) -> Account | None:
        if self._account is _UNSET:
            acc = self.event.target_account
            self._account = self.registry.accounts.get(acc) if acc else None
        return self._account  # type: ignore[no-any-return]

    def _effective(self, grant: Grant, life: IdentityState) -> Grant | None:
        """The grant as it stands after what the product did (removed, downgraded)."""
        return effective_grant(grant, life)

    def grant(self) -> Grant | None:
        if self._grant is _UNSET:
            found: Grant | None = None
            ident, acc = self.event.identity, self.event.target_account
            if ident and acc:  # life() only when there is a grant to look at
                life = self.life()
                if life is not None:
                    raw = self.registry.grants.get((ident, acc))
                    found = self._effective(raw, life) if raw is not None else None
            self._grant = found
        return self._grant  # type: ignore[no-any-return]

    def status(self) -> str | None:
        """Registry status overridden by the lifecycle; offboarded in either wins."""
        if self._status is _UNSET:
            ident, life = self.identity(), self.life()
            status: str | None = None
            if ident is not None and life is not None:
                status = ident.status
                if life.status_cause is not None or life.status != "active":
                    status = life.status
                if ident.status == "offboarded":
                    status = "offboarded"
            self._status = status
        return self._status  # type: ignore[no-any-return]

    def max_role(self) -> str | None:
        if self._max_role is _UNSET:
            best: str | None = None
            ident, life = self.identity(), self.life()
            if ident is not None and life is not None:
                for raw in self.registry.grants_of(ident.id):
                    g = self._effective(raw, life)
                    if g is not None and (best is None or ROLE_RANK[g.role] > ROLE_RANK[best]):
                        best = g.role
            self._max_role = best
        return self._max_role  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class LeakSubject:
    """What a leak rule is evaluated on: one matched (LeakRecord, subject) pair, as
    :func:`streams.decide.leaks.decide_leak` produces it after matching and the newer-than-the-last-
    credential-change check. ``kind`` is ``identity`` (``id`` a registry identity) or
    ``shared_account`` (``id`` the account whose shared login appeared)."""

    record: LeakRecord
    kind: str
    id: str

    @property
    def event_id(self) -> str:
        """The record's cause and the subject: no e-mail address, stable on a re-import."""
        return f"{self.record.cause}:{self.id}"


class LeakCtx(Ctx):
    """A leak subject and the registry/lifecycle facts about it. Leak rules read ``leak.*``,
    ``subject.kind`` and the identity/account facts only, never login event fields."""

    __slots__ = ("record", "subject")

    def __init__(self, subject: LeakSubject, registry: Registry, lifecycle: StateStore) -> None:
        self.subject = subject
        self.record = subject.record
        self.registry = registry
        self.lifecycle = lifecycle
        self._identity = _UNSET
        self._account = _UNSET
        self._grant = None
        self._life = _UNSET
        self._status = _UNSET
        self._max_role = _UNSET

    def identity(self) -> Identity | None:
        if self._identity is _UNSET:
            s = self.subject
            self._identity = self.registry.identities.get(s.id) if s.kind == "identity" else None
        return self._identity  # type: ignore[no-any-return]

    def account(self) -> Account | None:
        if self._account is _UNSET:
            s = self.subject
            shared = s.kind == "shared_account"
            self._account = self.registry.accounts.get(s.id) if shared else None
        return self._account  # type: ignore[no-any-return]

    def grant(self) -> Grant | None:
        return None

    def roles(self) -> list[str]:
        """The identity's effective roles (removed grants left out, downgrades applied)."""
        ident, life = self.identity(), self.life()
        if ident is None or life is None:
            return []
        return sorted(set(effective_roles(self.registry, life)))


Getter = Callable[[Ctx], Any]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """A field a condition may read: its getter, type (str|num|bool|role) and allowed values."""

    getter: Getter
    type: str
    choices: tuple[str, ...] | None = None


def _event_attr(name: str) -> Getter:
    # one C call (attrgetter follows the dotted path) instead of a lambda around a getter:
    # conditions read ~12 event fields per event
    return attrgetter(f"event.{name}")


def _geo_attr(name: str) -> Getter:
    get = attrgetter(name)
    return lambda c: get(c.event.geo) if c.event.geo is not None else None


def _grant_expired(c: Ctx) -> bool:
    g = c.grant()
    return g is not None and g.expires_at is not None and g.expires_at < c.event.time


def _grant_attr(name: str) -> Getter:
    get = attrgetter(name)

    def read(c: Ctx) -> Any:
        g = c.grant()
        return get(g) if g is not None else None

    return read


def _account_attr(name: str) -> Getter:
    get = attrgetter(name)

    def read(c: Ctx) -> Any:
        a = c.account()
        return get(a) if a is not None else None

    return read


def _account_shared(c: Ctx) -> bool:
    a = c.account()
    return a is not None and a.shared_credential is not None


def _shared_login(c: Ctx) -> bool:
    """The principal is the target account's shared login (``shared_credential.login``, any
    case): nobody unknown is behind it, its holders are in the registry (issue 18). Only the
    target account's: one dict lookup on the login path, and another account's shared login
    used here is worth a look."""
    a = c.account()
    shared = a.shared_credential if a is not None else None
    login = shared.login if shared is not None else None
    if not login:
        return False
    return login.strip().lower() == c.event.principal.strip().lower()


def _identity_kind(c: Ctx) -> str | None:
    ident = c.identity()
    return ident.kind if ident is not None else None


FIELDS: dict[str, FieldSpec] = {
    **{
        name: FieldSpec(_event_attr(name), "str")
        for name in (
            "event_id",
            "principal",
            "event_type",
            "identity",
            "vendor_event_id",
            "failure_reason",
            "mfa_method",
            "ip",
            "device",
            "user_agent",
            "target",
            "target_account",
            "risk",
        )
    },
    "vendor": FieldSpec(_event_attr("vendor"), "str", LOGIN_VENDORS),
    "outcome": FieldSpec(_event_attr("outcome"), "str", LOGIN_OUTCOMES),
    "mfa_result": FieldSpec(_event_attr("mfa_result"), "str", MFA_RESULTS),
    "geo.country": FieldSpec(_geo_attr("country"), "str"),
    "geo.city": FieldSpec(_geo_attr("city"), "str"),
    "geo.lat": FieldSpec(_geo_attr("lat"), "num"),
    "geo.lon": FieldSpec(_geo_attr("lon"), "num"),
    "identity.known": FieldSpec(lambda c: c.identity() is not None, "bool"),
    # an identity, or a shared login the registry declares: "unknown principal" is neither
    "principal.known": FieldSpec(lambda c: c.identity() is not None or _shared_login(c), "bool"),
    "principal.shared_login": FieldSpec(_shared_login, "bool"),
    "identity.status": FieldSpec(Ctx.status, "str", IDENTITY_STATUSES),
    "identity.kind": FieldSpec(_identity_kind, "str", IDENTITY_KINDS),
    "identity.max_role": FieldSpec(Ctx.max_role, "role", ROLES),
    "grant.exists": FieldSpec(lambda c: c.grant() is not None, "bool"),
    "grant.role": FieldSpec(_grant_attr("role"), "role", ROLES),
    "grant.via": FieldSpec(_grant_attr("via"), "str", ACCESS_PATHS),
    "grant.mfa": FieldSpec(_grant_attr("mfa"), "str", MFA_METHODS),
    "grant.expired": FieldSpec(_grant_expired, "bool"),
    "account.known": FieldSpec(lambda c: c.account() is not None, "bool"),
    "account.criticality": FieldSpec(_account_attr("criticality"), "str", CRITICALITIES),
    "account.platform": FieldSpec(_account_attr("platform"), "str"),
    "account.shared": FieldSpec(_account_shared, "bool"),
}
#: Fields a leak rule (``inputs: [leak]``) may read: the record, the subject's kind, and the
#: registry/lifecycle facts that make sense for a person or a shared login. ``list`` fields
#: (data classes, flags) support ``contains`` and ``exists``.
LEAK_FIELDS: dict[str, FieldSpec] = {
    "leak.breach": FieldSpec(attrgetter("record.breach"), "str"),
    "leak.source": FieldSpec(attrgetter("record.source"), "str"),
    "leak.data_classes": FieldSpec(attrgetter("record.data_classes"), "list"),
    "leak.flags": FieldSpec(attrgetter("record.flags"), "list", LEAK_FLAGS),
    "leak.password_present": FieldSpec(attrgetter("record.password_present"), "bool"),
    # passwords, hashes, tokens or a stealer log (LeakRecord.credential_exposed)
    "leak.credential": FieldSpec(attrgetter("record.credential_exposed"), "bool"),
    "subject.kind": FieldSpec(attrgetter("subject.kind"), "str", SUBJECT_KINDS),
    **{
        name: FIELDS[name]
        for name in (
            "identity.known",
            "identity.status",
            "identity.kind",
            "identity.max_role",
            "account.known",
            "account.criticality",
            "account.platform",
            "account.shared",
        )
    },
}
#: Fields a rule may group by or count distinct values of (event fields only: state keys).
GROUP_FIELDS: tuple[str, ...] = (
    "identity",
    "principal",
    "ip",
    "device",
    "target_account",
    "target",
    "geo.country",
)
#: Fields a first_seen rule may learn per identity.
#: ``identity`` (one value per person) makes a first_seen rule see a person's return after
#: ``lookback_days`` of silence (dormant_holder_active).
FIRST_SEEN_FIELDS: tuple[str, ...] = (
    "identity",
    "geo.country",
    "geo.city",
    "device",
    "ip",
    "user_agent",
    "target_account",
)
