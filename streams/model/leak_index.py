"""Who a leaked principal is: the leak index, a dict from every normalised e-mail, alias and
shared login of the registry to the identities and accounts holding it.

Matching is a dict lookup: every identity e-mail and every alias value (normalised: case,
surrounding blanks, plus-tags for the domains in ``plus_tag_domains``) maps to the identities
holding it, and every shared-credential login to its accounts. The index is built once and kept
current with :meth:`LeakIndex.apply_change`, called beside
:meth:`streams.model.registry.Registry.apply_change` for each registry change (O(one record)).

Part of the model, not of the leak decisions (:mod:`streams.decide.leaks`): the leak edges
(``connectors/ingest``) match records with it before anything is decided, and the bus
snapshots it for ``leaks import``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streams.model.registry import Account, Identity, Registry


def normalise_principal(
    value: str, plus_tag_domains: frozenset[str] | set[str] = frozenset()
) -> str:
    """Lower case, no surrounding blanks, and ``local+tag@domain`` -> ``local@domain`` for the
    domains that deliver plus-tagged mail to the untagged mailbox."""
    norm = value.strip().lower()
    if "+" in norm and plus_tag_domains:
        local, at, domain = norm.rpartition("@")
        if at and domain in plus_tag_domains:
            base = local.partition("+")[0]
            if base:
                return f"{base}@{domain}"
    return norm


# --------------------------------------------------------------------------------------------
# The index
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeakMatch:
    """Who a principal is: identity ids (by e-mail or alias) and account ids (whose shared
    login it is)."""

    identities: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()


class LeakIndex:
    """Normalised e-mail / alias / shared login -> who holds it. Not thread-safe (event loop)."""

    def __init__(self, plus_tag_domains: Iterable[str] = ()) -> None:
        self.plus_tag_domains = frozenset(d.strip().lower() for d in plus_tag_domains)
        self._people: dict[str, tuple[str, ...]] = {}
        self._shared: dict[str, tuple[str, ...]] = {}
        self._keys_of_identity: dict[str, tuple[str, ...]] = {}
        self._keys_of_account: dict[str, tuple[str, ...]] = {}

    @classmethod
    def build(cls, registry: Registry, plus_tag_domains: Iterable[str] = ()) -> LeakIndex:
        index = cls(plus_tag_domains)
        for identity in registry.identities.values():
            index.put_identity(identity)
        for account in registry.accounts.values():
            index.put_account(account)
        return index

    def snapshot(self) -> dict[str, Any]:
        """The index as plain data (its keys per identity and per account, in the order they
        were last put, which is the order of the owners under a shared key), for
        :meth:`from_snapshot`."""
        return {
            "plus_tag_domains": sorted(self.plus_tag_domains),
            "identities": self._keys_of_identity,
            "accounts": self._keys_of_account,
        }

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any]) -> LeakIndex:
        """The index :meth:`snapshot` described (ValueError/KeyError/TypeError when it is
        not one)."""
        index = cls(data["plus_tag_domains"])
        for table, keys_of, entries in (
            (index._people, index._keys_of_identity, data["identities"]),
            (index._shared, index._keys_of_account, data["accounts"]),
        ):
            for owner, keys in entries.items():
                if not isinstance(owner, str) or not all(isinstance(k, str) for k in keys):
                    raise ValueError("a leak index snapshot maps ids to lists of keys")
                keys_of[owner] = tuple(keys)
                for key in keys:
                    cls._add(table, key, owner)
        return index

    def __len__(self) -> int:
        return len(self._people) + len(self._shared)

    def _norm(self, value: str) -> str:
        return normalise_principal(value, self.plus_tag_domains)

    @staticmethod
    def _add(table: dict[str, tuple[str, ...]], key: str, owner: str) -> None:
        owners = table.get(key, ())
        if owner not in owners:
            table[key] = (*owners, owner)

    @staticmethod
    def _drop(table: dict[str, tuple[str, ...]], key: str, owner: str) -> None:
        owners = tuple(o for o in table.get(key, ()) if o != owner)
        if owners:
            table[key] = owners
        else:
            table.pop(key, None)

    def put_identity(self, identity: Identity) -> None:
        self.remove_identity(identity.id)
        keys = {self._norm(e) for e in identity.emails}
        keys.update(self._norm(v) for v in identity.aliases.values() if v.strip())
        keys.discard("")
        for key in keys:
            self._add(self._people, key, identity.id)
        self._keys_of_identity[identity.id] = tuple(sorted(keys))

    def remove_identity(self, identity_id: str) -> None:
        for key in self._keys_of_identity.pop(identity_id, ()):
            self._drop(self._people, key, identity_id)

    def put_account(self, account: Account) -> None:
        self.remove_account(account.id)
        shared = account.shared_credential
        if shared is None or not shared.login or not shared.login.strip():
            return
        key = self._norm(shared.login)
        self._add(self._shared, key, account.id)
        self._keys_of_account[account.id] = (key,)

    def remove_account(self, account_id: str) -> None:
        for key in self._keys_of_account.pop(account_id, ()):
            self._drop(self._shared, key, account_id)

    def apply_change(self, key: str, value: Mapping[str, Any] | None) -> None:
        """Mirror one ``registry.changes`` record (call beside ``Registry.apply_change``;
        grants and agencies do not change who a principal is)."""
        kind, _, ident = key.partition(":")
        if kind == "identity":
            if value is None:
                self.remove_identity(ident)
            else:
                self.put_identity(Identity.from_dict(dict(value)))
        elif kind == "account":
            if value is None:
                self.remove_account(ident)
            else:
                self.put_account(Account.from_dict(dict(value)))

    def wants(self, principal: str) -> bool:
        """``lookup(principal) is not None`` for a principal already stripped and
        lower-cased, as a dump reader has it: two dict probes, the import's hot path."""
        if "+" in principal:
            return self.lookup(principal) is not None
        return principal in self._people or principal in self._shared

    def probe(self) -> Callable[[str], bool]:
        """:meth:`wants` for a bulk import, as fast as it gets: without plus-tag domains a
        principal is held exactly when it is a key, so the probe is a frozen set's C-level
        membership test. A snapshot: later registry changes are not seen."""
        if self.plus_tag_domains:
            return self.wants
        return frozenset((*self._people, *self._shared)).__contains__

    def lookup(self, principal: str) -> LeakMatch | None:
        """Who ``principal`` is, or None (the common case: one dict miss)."""
        norm = principal
        if "+" in norm or norm != norm.strip().lower():
            norm = self._norm(norm)
        people = self._people.get(norm)
        shared = self._shared.get(norm)
        if people is None and shared is None:
            return None
        return LeakMatch(people or (), shared or ())
