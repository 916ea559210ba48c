"""The offboarding policy: which actions an HR event asks for, in which order, where.

An HR event type maps to ordered *steps*, each a set of action kinds. The default cuts a
leaver the way an identity team does by hand: first the account is disabled (so nobody can
sign back in while the rest happens), then sessions and OAuth tokens are revoked, then grants
on brand accounts are removed and shared logins rotated. A step starts when every action of
the step before has an outcome, or after ``step_timeout`` seconds at the latest
(streams/runtime/plans.py): an outage at one provider never holds back revocations elsewhere
for longer than that.

Per provider, the policy may narrow what that provider is asked for on an event type
(``offboarding.providers.<name>.<event type>: [kinds]``): an Okta org that another process
deactivates can be left to revoke sessions and tokens only.

``role_changed`` (downgrades) and ``reinstated`` (re-enabling what a suspension disabled,
from the identity's state) are not configurable: each has one meaning.

Pure data and functions, used by :func:`streams.decide.hr.decide_hr` and ``replay`` alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: Event type -> the kinds a policy may name for it.
ALLOWED: dict[str, frozenset[str]] = {
    "terminated": frozenset(
        {
            "disable_account",
            "revoke_sessions",
            "revoke_tokens",
            "expire_password",
            "force_mfa_reenrolment",
            "remove_grant",
            "rotate_shared_credential",
            "revoke_shared_access",
        }
    ),
    "suspended": frozenset(
        {
            "revoke_shared_access",
            "disable_account",
            "revoke_sessions",
            "revoke_tokens",
            "expire_password",
            "force_mfa_reenrolment",
        }
    ),
    "device_lost": frozenset(
        {
            "revoke_shared_access",
            "revoke_sessions",
            "revoke_tokens",
            "expire_password",
            "force_mfa_reenrolment",
            "rotate_shared_credential",
        }
    ),
}
ALLOWED["contract_ended"] = ALLOWED["terminated"]
#: Identity-level kinds: one action per provider that holds the identity.
IDENTITY_KINDS: tuple[str, ...] = (
    "disable_account",
    "revoke_sessions",
    "revoke_tokens",
    "expire_password",
    "force_mfa_reenrolment",
)

_LEAVER: tuple[tuple[str, ...], ...] = (
    # First, nobody can sign back in: the account is disabled and the person's vault access
    # to shared logins is cut (no more codes or passwords from the vault).
    ("disable_account", "revoke_shared_access"),
    ("revoke_sessions", "revoke_tokens"),
    ("remove_grant", "rotate_shared_credential"),
)
DEFAULT_STEPS: dict[str, tuple[tuple[str, ...], ...]] = {
    "terminated": _LEAVER,
    "contract_ended": _LEAVER,
    # Suspended: the account is disabled (re-enabled on reinstatement), sessions and tokens
    # end; grants stay, since a suspension is often lifted.
    "suspended": (
        ("disable_account", "revoke_shared_access"),
        ("revoke_sessions", "revoke_tokens"),
    ),
    # A lost phone: the person keeps the account but not the factor on the device.
    # Whoever holds the device must not reach the vault with the token on it.
    "device_lost": (
        ("revoke_sessions", "force_mfa_reenrolment", "revoke_shared_access"),
        ("rotate_shared_credential",),
    ),
}


@dataclass(frozen=True, slots=True)
class OffboardingPolicy:
    """Steps per event type and the per-provider narrowing (both validated by
    :func:`policy_problems` when configured)."""

    steps: Mapping[str, tuple[tuple[str, ...], ...]] = field(
        default_factory=lambda: dict(DEFAULT_STEPS)
    )
    #: provider name -> event type -> the only kinds that provider is asked for.
    providers: Mapping[str, Mapping[str, frozenset[str]]] = field(default_factory=dict)

    def wants(self, event_type: str, kind: str) -> bool:
        return any(kind in step for step in self.steps.get(event_type, ()))

    def allows(self, event_type: str, kind: str, provider: str) -> bool:
        narrowed = self.providers.get(provider, {}).get(event_type)
        return narrowed is None or kind in narrowed

    def step(self, event_type: str, kind: str) -> int:
        """The step index of ``kind`` for ``event_type`` (0 when the policy has no steps
        for it: downgrades, re-enabling)."""
        for index, step in enumerate(self.steps.get(event_type, ())):
            if kind in step:
                return index
        return 0

    @classmethod
    def build(
        cls,
        steps: Mapping[str, Iterable[Iterable[str]]] | None = None,
        providers: Mapping[str, Mapping[str, Iterable[str]]] | None = None,
    ) -> OffboardingPolicy:
        """The policy from configuration: event types not named keep their default steps."""
        merged = dict(DEFAULT_STEPS)
        for event_type, given in (steps or {}).items():
            merged[event_type] = tuple(tuple(step) for step in given)
        narrowed = {
            name: {event_type: frozenset(kinds) for event_type, kinds in per.items()}
            for name, per in (providers or {}).items()
        }
        return cls(steps=merged, providers=narrowed)


DEFAULT_POLICY = OffboardingPolicy()


def policy_problems(
    steps: Mapping[str, Iterable[Iterable[str]]],
    providers: Mapping[str, Mapping[str, Iterable[str]]],
) -> list[tuple[str, str]]:
    """``(key, reason)`` for each thing wrong in a configured policy, keys relative to
    ``offboarding``."""
    problems: list[tuple[str, str]] = []
    for event_type, given in steps.items():
        key = f"steps.{event_type}"
        allowed = ALLOWED.get(event_type)
        if allowed is None:
            problems.append((key, f"not a configurable event type; use {', '.join(ALLOWED)}"))
            continue
        seen: set[str] = set()
        for index, step in enumerate(given):
            for kind in step:
                if kind not in allowed:
                    problems.append(
                        (
                            f"{key}.{index}",
                            f"{kind!r} is not an action for {event_type}; "
                            f"use {', '.join(sorted(allowed))}",
                        )
                    )
                elif kind in seen:
                    problems.append((f"{key}.{index}", f"{kind!r} is in two steps"))
                seen.add(kind)
    for name, per in providers.items():
        for event_type, kinds in per.items():
            key = f"providers.{name}.{event_type}"
            allowed = ALLOWED.get(event_type)
            if allowed is None:
                problems.append((key, f"not a configurable event type; use {', '.join(ALLOWED)}"))
                continue
            for kind in kinds:
                if kind not in allowed:
                    problems.append((key, f"{kind!r} is not an action for {event_type}"))
    return problems
