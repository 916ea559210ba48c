"""Which provider names the registry relies on that the configuration does not provide.

A decision acts only at configured providers: an account whose manager is not configured gets
its grant removals sent to a provider that does not exist, and an identity-provider alias
(``aliases: {okta: ...}``) with no provider of that name gets no session revocation and no MFA
reset there — nothing fails, the action is simply never decided. So the gaps are found before
anything runs (``accessguard run``, ``registry import``, ``config check``) and refused, unless
the operator lists the name under ``ignored_providers`` (a deliberate "we know").

Which aliases are provider references: an account manager's name always; an alias when its
name is an identity-provider type or a login vendor the connectors declare
(:mod:`streams.model.kinds`), or when it is one typo away from a configured provider name
(``okta-prd`` beside ``okta-prod``). Other aliases are platform handles (``instagram``) that
only leak matching and login resolution read.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from streams.model import kinds
from streams.model.registry import Registry
from streams.support.errors import ConfigProblem

#: Subjects named in one message; the rest are counted.
SHOWN = 3


@dataclass(frozen=True, slots=True)
class ProviderGap:
    """One provider name the registry uses without a configured provider."""

    provider: str
    #: ``account`` (an account's manager) or ``alias`` (an identity's alias).
    kind: str
    subjects: tuple[str, ...]
    #: The configured provider the name is probably a typo of.
    nearest: str | None = None

    def message(self) -> str:
        count = len(self.subjects)
        shown = ", ".join(self.subjects[:SHOWN]) + (", ..." if count > SHOWN else "")
        if self.kind == "account":
            noun = "account" if count == 1 else "accounts"
            what = (
                f"provider {self.provider!r} of {count} {noun} ({shown}) is not configured: "
                "grants there would never be removed"
            )
        else:
            noun = "identity" if count == 1 else "identities"
            what = (
                f"alias {self.provider!r} of {count} {noun} ({shown}) names no configured "
                "provider: sessions and MFA factors there would never be revoked"
            )
        hint = f" (did you mean {self.nearest!r}?)" if self.nearest else ""
        return f"{what}{hint}; configure providers.{self.provider} or list it in ignored_providers"


def _nearest(name: str, configured: Collection[str]) -> str | None:
    close = difflib.get_close_matches(name, list(configured), n=1, cutoff=0.8)
    return close[0] if close else None


def provider_gaps(
    registry: Registry, providers: Mapping[str, str], ignored: Collection[str] = ()
) -> list[ProviderGap]:
    """Every provider name ``registry`` relies on that is neither configured (``providers``:
    name -> type) nor in ``ignored``, accounts first, each name once, sorted."""
    skip = set(providers) | set(ignored)
    provider_like = set(kinds.ALIAS_VENDORS) | set(kinds.IDENTITY_PROVIDER_TYPES)
    accounts: dict[str, list[str]] = {}
    for account in registry.accounts.values():
        if account.provider not in skip:
            accounts.setdefault(account.provider, []).append(account.id)
    aliases: dict[str, list[str]] = {}
    for identity in registry.identities.values():
        for name in identity.aliases:
            if name in skip or name in accounts:
                continue
            if name in provider_like or _nearest(name, providers):
                aliases.setdefault(name, []).append(identity.id)
    gaps = [
        ProviderGap(name, "account", tuple(sorted(ids)), _nearest(name, providers))
        for name, ids in sorted(accounts.items())
    ]
    gaps += [
        ProviderGap(name, "alias", tuple(sorted(ids)), _nearest(name, providers))
        for name, ids in sorted(aliases.items())
    ]
    return gaps


def gap_problems(gaps: Collection[ProviderGap], where: str) -> list[ConfigProblem]:
    """The gaps as configuration problems (``providers.<name>`` is what to set), located at
    the registry file that relies on them."""
    return [ConfigProblem(f"providers.{g.provider}", g.message(), where) for g in gaps]
