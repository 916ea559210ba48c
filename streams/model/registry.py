"""The access registry: which identity holds which brand social account, how, and with what role.

The registry is what the security team *declares* (a YAML file, see ``examples/registry.yaml``,
read by :mod:`streams.model.registry_yaml`); :mod:`streams.model.state` is what the product
*learned* (offboarded, grants removed, ...). This module holds the records
(:class:`Account`, :class:`Identity`, :class:`Grant`, :class:`Agency`) and :class:`Registry`
with its lookups and changes.

:meth:`Registry.from_changes` / :meth:`Registry.apply_change` materialise it from the
compacted ``registry.changes`` topic. Keys are ``account:<id>``, ``identity:<id>``,
``grant:<identity>:<account>`` and ``agency:<id>``; a ``None`` value is a tombstone. Each
change updates the indices in time proportional to the size of that one record, so a worker
catches up on 100k identities without rebuilding anything.

Registry ids use letters, digits and ``._@+-`` (no ``:``) so change keys split unambiguously.
Aliases become path segments of revocation requests, so :func:`validate_alias` accepts only
plain identifiers (never ``.``/``..``); the YAML file and every change read from the topic
are checked with it, again when the importer already did: the topic is a boundary of its
own (SCIM/API updates and anything with its ACL write there), so the check is cheap instead.

At 100k identities memory matters: slotted records, interned repeated values (kind, role,
provider, alias keys...), grants sharing their identity's and account's id strings, and alias
indices holding a plain id for a value with one owner.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from sys import intern
from typing import Any

from streams.support.errors import RegistryError
from streams.support.times import format_time, parse_time

CRITICALITIES: tuple[str, ...] = ("low", "medium", "high", "critical")


def normalise_email(value: str) -> str:
    """E-mail addresses compare case-insensitively and without surrounding blanks."""
    return value.strip().lower()


#: The longest alias accepted: vendor ids and logins are far shorter.
MAX_ALIAS_LEN = 256
_ALIAS_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._@+-")
_ALIAS_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
ALIAS_RULE = (
    "letters, digits and ._@+- only, starting with a letter, digit or _, "
    f"at most {MAX_ALIAS_LEN} characters"
)


#: What every valid alias matches (the rule below, in one regex): the fast accept path.
_ALIAS_OK = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9._@+\-]{{0,{MAX_ALIAS_LEN - 1}}}")


def validate_alias(provider: str, value: object) -> str | None:
    """The problem with ``value`` as the identity's id at ``provider``, or None when it is a
    plain identifier there.

    An alias becomes one path segment of a revocation request (``/users/{user_ref}/...``),
    so only plain identifiers are accepted: letters, digits and ``._@+-``, starting with a
    letter, digit or ``_`` (never ``.``, so neither the dot segments ``.``/``..`` nor a
    hidden name), at most :data:`MAX_ALIAS_LEN` characters. Every way an alias enters the
    registry (``registry check``/``import``, the registry topic, a SCIM/API update) must
    apply this one rule.
    """
    if type(value) is str and _ALIAS_OK.fullmatch(value):
        return None  # the common case, without building the explanation below
    where = f"an alias is the person's plain id at {provider} ({ALIAS_RULE})"
    if isinstance(value, bool) or not isinstance(value, str | int):
        return f"expected a string; {where}"
    text = str(value)
    if not text:
        return f"is empty; {where}"
    if len(text) > MAX_ALIAS_LEN:
        return f"is {len(text)} characters long; {where}"
    if text in (".", "..") or text.startswith("."):
        return f"{text[:40]!r} starts with '.' ('.' and '..' address another endpoint); {where}"
    bad = next((c for c in text if c not in _ALIAS_CHARS), None)
    if bad is not None:
        return f"{text[:40]!r} contains {bad!r}; {where}"
    if text[0] not in _ALIAS_FIRST:
        return f"{text[:40]!r} starts with {text[0]!r}; {where}"
    return None


def _norm_alias(value: str) -> str:
    # Platform usernames and e-mail-like IdP logins are case-insensitive at the vendors that
    # matter here; opaque IdP ids are random enough that folding case cannot collide.
    norm = value.strip().lower()
    return value if norm == value else norm  # keep one copy of an already-normal value


def _norm_account_ref(value: str) -> str:
    # Handles are written "@brand" or "brand" and compare case-insensitively on every platform.
    return value.strip().lower().lstrip("@")


def _account_refs(account: Account) -> tuple[str, ...]:
    """The names a login event may use for an account: its handle and ``platform:handle``."""
    handle = _norm_account_ref(account.handle)
    return (handle, f"{account.platform.strip().lower()}:{handle}")


@dataclass(frozen=True, slots=True)
class SharedCredential:
    """A login several people share; the secret lives in the secret store under ``ref``."""

    totp: bool = False
    ref: str = ""
    login: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"totp": self.totp, "ref": self.ref, "login": self.login}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SharedCredential:
        return cls(
            totp=bool(data.get("totp", False)), ref=str(data["ref"]), login=data.get("login")
        )


@dataclass(frozen=True, slots=True)
class Account:
    """One brand account on one platform, managed through ``provider``."""

    id: str
    platform: str
    handle: str
    criticality: str
    provider: str
    shared_credential: SharedCredential | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "platform": self.platform,
            "handle": self.handle,
            "criticality": self.criticality,
            "provider": self.provider,
            "shared_credential": (
                self.shared_credential.to_dict() if self.shared_credential else None
            ),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Account:
        shared = data.get("shared_credential")
        return cls(
            id=data["id"],
            platform=intern(data["platform"]),
            handle=data["handle"],
            criticality=intern(data["criticality"]),
            provider=intern(data["provider"]),
            shared_credential=SharedCredential.from_dict(shared) if shared else None,
        )


@dataclass(frozen=True, slots=True)
class Identity:
    """A person (or agency member). ``aliases`` maps a provider or platform name to the
    identity's id there; ``emails`` are normalised (lower case, stripped)."""

    id: str
    name: str
    kind: str
    emails: tuple[str, ...]
    aliases: dict[str, str] = field(default_factory=dict, hash=False)
    status: str = "active"
    employee_id: str = ""
    #: When the security team knows the person last changed their password (optional):
    #: leaked-credential matches for breaches before this are stale.
    credential_changed_at: datetime | None = None

    @property
    def hr_id(self) -> str:
        """The id the HR system uses (``employee_id``, defaulting to the registry id)."""
        return self.employee_id or self.id

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "emails": list(self.emails),
            "aliases": dict(self.aliases),
            "status": self.status,
            "employee_id": self.hr_id,
        }
        if self.credential_changed_at is not None:
            # only when set: registries written before the field existed diff as unchanged
            out["credential_changed_at"] = format_time(self.credential_changed_at)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Identity:
        """Raises ValueError (a whole change refused) for an alias that is not a plain id."""
        aliases: dict[str, str] = {}
        for key, value in (data.get("aliases") or {}).items():
            problem = validate_alias(str(key), value)
            if problem is not None:
                raise ValueError(f"aliases: {key}: {problem}")
            aliases[intern(str(key))] = str(value)
        return cls(
            id=data["id"],
            name=data["name"],
            kind=intern(data["kind"]),
            emails=tuple(normalise_email(e) for e in data.get("emails") or ()),
            aliases=aliases,
            status=intern(data.get("status", "active")),
            employee_id=data.get("employee_id") or data["id"],
            credential_changed_at=(
                parse_time(changed, "credential_changed_at")
                if (changed := data.get("credential_changed_at"))
                else None
            ),
        )


@dataclass(frozen=True, slots=True)
class Grant:
    """``identity`` holds ``account`` with ``role``, reached ``via`` an access path."""

    identity: str
    account: str
    role: str
    via: str
    mfa: str
    expires_at: datetime | None = None

    @property
    def key(self) -> str:
        return f"grant:{self.identity}:{self.account}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "account": self.account,
            "role": self.role,
            "via": self.via,
            "mfa": self.mfa,
            "expires_at": format_time(self.expires_at) if self.expires_at else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grant:
        expires = data.get("expires_at")
        return cls(
            identity=data["identity"],
            account=data["account"],
            role=intern(data["role"]),
            via=intern(data["via"]),
            mfa=intern(data["mfa"]),
            expires_at=parse_time(expires, "expires_at") if expires else None,
        )


@dataclass(frozen=True, slots=True)
class Agency:
    """An agency under contract until ``contract_ends``; its members are identity ids."""

    id: str
    name: str
    contract_ends: datetime
    members: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "contract_ends": format_time(self.contract_ends),
            "members": list(self.members),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Agency:
        return cls(
            id=data["id"],
            name=data["name"],
            contract_ends=parse_time(data["contract_ends"], "contract_ends"),
            members=tuple(data.get("members") or ()),
        )


Change = tuple[str, dict[str, Any] | None]


class Registry:
    """The materialised registry with lookup indices.

    Mutable on purpose: a worker applies one change at a time from the compacted topic.
    Not thread-safe (used on the event loop only, like :class:`streams.model.state.StateStore`).
    """

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.identities: dict[str, Identity] = {}
        self.agencies: dict[str, Agency] = {}
        self._grants: dict[tuple[str, str], Grant] = {}
        self._by_identity: dict[str, dict[str, Grant]] = {}
        self._by_account: dict[str, dict[str, Grant]] = {}
        self._by_employee_id: dict[str, str] = {}
        self._by_email: dict[str, str] = {}
        #: provider -> normalised value -> identity id
        self._by_alias: dict[str, dict[str, str]] = {}
        #: normalised value -> the identity id using it, or (with several providers or
        #: owners using it) a tuple holding each owner's id once per provider
        self._by_alias_value: dict[str, str | tuple[str, ...]] = {}
        #: normalised handle or "platform:handle" -> account ids using it
        self._by_account_ref: dict[str, set[str]] = {}

    # ---- lookups ----------------------------------------------------------------------

    @property
    def grants(self) -> dict[tuple[str, str], Grant]:
        """Every grant keyed by ``(identity, account)`` (read-only view by convention)."""
        return self._grants

    def grants_of(self, identity_id: str) -> list[Grant]:
        """The grants one identity holds, in registry order."""
        return list(self._by_identity.get(identity_id, {}).values())

    def holders(self, account_id: str, via: str | None = None) -> list[Grant]:
        """The grants on one account, optionally only those reached ``via`` one access path."""
        grants = self._by_account.get(account_id, {}).values()
        return [g for g in grants if via is None or g.via == via]

    def resolve_hr(self, employee_id: str | None, email: str | None) -> Identity | None:
        """Find the identity an HR event is about: by HR employee id first, then by registry
        id, then by e-mail (case-insensitive)."""
        if employee_id:
            key = employee_id.strip()
            ident = self._by_employee_id.get(key)
            if ident is not None and ident in self.identities:
                return self.identities[ident]
            if key in self.identities:
                return self.identities[key]
        if email:
            ident = self._by_email.get(normalise_email(email))
            if ident is not None:
                return self.identities.get(ident)
        return None

    def resolve_alias(self, value: str, provider: str | None = None) -> Identity | None:
        """Find an identity by its id at ``provider`` (or at any provider, or by e-mail, when
        ``provider`` is None). Ambiguous values (several identities) resolve to None: acting
        on the wrong person is worse than raising an unknown-identity alert."""
        norm = _norm_alias(value)
        if provider is not None:
            ident = self._by_alias.get(provider, {}).get(norm)
            return self.identities.get(ident) if ident is not None else None
        owners = self._by_alias_value.get(norm, ())
        candidates = {owners} if isinstance(owners, str) else set(owners)
        by_email = self._by_email.get(norm)
        if by_email is not None:
            candidates.add(by_email)
        if len(candidates) != 1:
            return None
        return self.identities.get(candidates.pop())

    def find_account(self, ref: str) -> Account | None:
        """Find an account by id, handle (``@`` optional, any case) or ``platform:handle``.
        A bare handle used on several platforms is ambiguous and resolves to None."""
        exact = self.accounts.get(ref.strip())
        if exact is not None:
            return exact
        norm = _norm_account_ref(ref)
        platform, sep, handle = norm.partition(":")
        if sep:
            norm = f"{platform.strip()}:{_norm_account_ref(handle)}"
        owners = self._by_account_ref.get(norm)
        if owners is None or len(owners) != 1:
            return None
        return self.accounts.get(next(iter(owners)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Registry):
            return NotImplemented
        return (
            self.accounts == other.accounts
            and self.identities == other.identities
            and self.agencies == other.agencies
            and self._grants == other._grants
        )

    __hash__ = None  # type: ignore[assignment]  # mutable container: not hashable

    def __repr__(self) -> str:
        return (
            f"Registry(accounts={len(self.accounts)}, identities={len(self.identities)}, "
            f"grants={len(self._grants)}, agencies={len(self.agencies)})"
        )

    # ---- mutation (each O(size of one record)) ----------------------------------------

    def put_account(self, account: Account) -> None:
        self.remove_account(account.id)
        self.accounts[account.id] = account
        for ref in _account_refs(account):
            self._by_account_ref.setdefault(ref, set()).add(account.id)

    def remove_account(self, account_id: str) -> None:
        old = self.accounts.pop(account_id, None)
        if old is None:
            return
        for ref in _account_refs(old):
            owners = self._by_account_ref.get(ref)
            if owners is not None:
                owners.discard(account_id)
                if not owners:
                    del self._by_account_ref[ref]

    def put_identity(self, identity: Identity) -> None:
        self.remove_identity(identity.id)
        self.identities[identity.id] = identity
        self._by_employee_id[identity.hr_id] = identity.id
        for email in identity.emails:
            self._by_email[email] = identity.id
        for provider, value in identity.aliases.items():
            norm = _norm_alias(value)
            by_provider = self._by_alias.get(provider)
            if by_provider is None:
                by_provider = self._by_alias[intern(provider)] = {}
            by_provider[norm] = identity.id
            owners = self._by_alias_value.get(norm)
            if owners is None:
                self._by_alias_value[norm] = identity.id
            elif isinstance(owners, str):
                self._by_alias_value[norm] = (owners, identity.id)
            else:
                self._by_alias_value[norm] = (*owners, identity.id)

    def remove_identity(self, identity_id: str) -> None:
        old = self.identities.pop(identity_id, None)
        if old is None:
            return
        if self._by_employee_id.get(old.hr_id) == old.id:
            del self._by_employee_id[old.hr_id]
        for email in old.emails:
            if self._by_email.get(email) == old.id:
                del self._by_email[email]
        for provider, value in old.aliases.items():
            norm = _norm_alias(value)
            by_provider = self._by_alias.get(provider, {})
            if by_provider.get(norm) == old.id:
                del by_provider[norm]
                if not by_provider:
                    del self._by_alias[provider]
            owners = self._by_alias_value.get(norm)
            if owners == old.id:
                del self._by_alias_value[norm]
            elif isinstance(owners, tuple) and old.id in owners:
                rest = list(owners)
                rest.remove(old.id)  # one provider's use of the value
                self._by_alias_value[norm] = rest[0] if len(rest) == 1 else tuple(rest)

    def put_grant(self, grant: Grant) -> None:
        ident = self.identities.get(grant.identity)
        account = self.accounts.get(grant.account)
        if (ident is not None and ident.id is not grant.identity) or (
            account is not None and account.id is not grant.account
        ):
            # share the id strings the identity and account already hold (memory, not meaning)
            grant = Grant(
                ident.id if ident is not None else grant.identity,
                account.id if account is not None else grant.account,
                grant.role,
                grant.via,
                grant.mfa,
                grant.expires_at,
            )
        self._grants[(grant.identity, grant.account)] = grant
        self._by_identity.setdefault(grant.identity, {})[grant.account] = grant
        self._by_account.setdefault(grant.account, {})[grant.identity] = grant

    def remove_grant(self, identity_id: str, account_id: str) -> None:
        if self._grants.pop((identity_id, account_id), None) is None:
            return
        by_identity = self._by_identity.get(identity_id, {})
        by_identity.pop(account_id, None)
        if not by_identity:
            self._by_identity.pop(identity_id, None)
        by_account = self._by_account.get(account_id, {})
        by_account.pop(identity_id, None)
        if not by_account:
            self._by_account.pop(account_id, None)

    def put_agency(self, agency: Agency) -> None:
        self.agencies[agency.id] = agency

    def remove_agency(self, agency_id: str) -> None:
        self.agencies.pop(agency_id, None)

    # ---- event sourcing ---------------------------------------------------------------

    def to_changes(self) -> list[tuple[str, dict[str, Any]]]:
        """Every record as a ``(key, JSON-able value)`` change, parents before children."""
        out: list[tuple[str, dict[str, Any]]] = []
        out.extend((f"account:{a.id}", a.to_dict()) for a in self.accounts.values())
        out.extend((f"identity:{i.id}", i.to_dict()) for i in self.identities.values())
        out.extend((f"agency:{a.id}", a.to_dict()) for a in self.agencies.values())
        out.extend((g.key, g.to_dict()) for g in self._grants.values())
        return out

    def apply_change(self, key: str, value: dict[str, Any] | None) -> None:
        """Apply one change from the compacted topic; ``None`` deletes (tombstone).

        Raises RegistryError for a key or value this version cannot read (route it to the
        dead-letter topic: the rest of the registry stays usable).
        """
        kind, _, rest = key.partition(":")
        try:
            if kind == "account":
                if value is None:
                    self.remove_account(rest)
                else:
                    self.put_account(Account.from_dict(value))
            elif kind == "identity":
                if value is None:
                    self.remove_identity(rest)
                else:
                    self.put_identity(Identity.from_dict(value))
            elif kind == "agency":
                if value is None:
                    self.remove_agency(rest)
                else:
                    self.put_agency(Agency.from_dict(value))
            elif kind == "grant":
                identity_id, sep, account_id = rest.partition(":")
                if not sep or not identity_id or not account_id:
                    raise RegistryError([f"{key}: grant keys are grant:<identity>:<account>"])
                if value is None:
                    self.remove_grant(identity_id, account_id)
                else:
                    self.put_grant(Grant.from_dict(value))
            else:
                raise RegistryError([f"{key}: unknown registry change kind {kind!r}"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError([f"{key}: unreadable registry change: {exc!r}"]) from None

    @classmethod
    def from_changes(cls, changes: Iterable[Change]) -> Registry:
        """Materialise a registry from a stream of changes (later changes win)."""
        registry = cls()
        for key, value in changes:
            registry.apply_change(key, value)
        return registry


Record = Account | Identity | Agency | Grant


def _records(registry: Registry) -> Iterator[tuple[str, Record]]:
    """Every record with its change key, in :meth:`Registry.to_changes` order."""
    yield from ((f"account:{a.id}", a) for a in registry.accounts.values())
    yield from ((f"identity:{i.id}", i) for i in registry.identities.values())
    yield from ((f"agency:{a.id}", a) for a in registry.agencies.values())
    yield from ((g.key, g) for g in registry.grants.values())


def _counterpart(registry: Registry, record: Record) -> Record | None:
    """The record with the same key in ``registry`` (None when it has none)."""
    if isinstance(record, Grant):
        return registry.grants.get((record.identity, record.account))
    if isinstance(record, Account):
        return registry.accounts.get(record.id)
    if isinstance(record, Identity):
        return registry.identities.get(record.id)
    return registry.agencies.get(record.id)


def diff_changes(old: Registry, new: Registry) -> list[Change]:
    """The changes that turn ``old`` into ``new``: upserts for new or changed records and
    tombstones for removed ones. Ordered so a consumer never sees a grant whose identity or
    account is missing: removed grants and agencies first, then upserts parents before
    children, then removed identities and accounts.

    Compared one record pair at a time: only the changes are held (``run`` diffs the whole
    registry at every start)."""
    removed = [key for key, record in _records(old) if _counterpart(new, record) is None]

    def kind_of(key: str) -> str:
        return key.partition(":")[0]

    out: list[Change] = [(k, None) for k in removed if kind_of(k) in ("grant", "agency")]
    for key, record in _records(new):
        value = record.to_dict()
        previous = _counterpart(old, record)
        if previous is None or previous.to_dict() != value:
            out.append((key, value))
    out.extend((k, None) for k in removed if kind_of(k) == "identity")
    out.extend((k, None) for k in removed if kind_of(k) == "account")
    return out
