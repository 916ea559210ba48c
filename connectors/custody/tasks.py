"""Re-enrolment tasks: a rotated shared login stays exposed until the platform has the new seed.

A rotation stages a new TOTP seed and password in the vault, but the platform (X, TikTok ...)
still accepts the old seed until a person enrols the new one there. The task records who must
do it (the owner), by when (deadline by account criticality), why (the causes), and where it
stands: ``open`` -> ``confirmed`` (a code from the new seed was validated by the vault) ->
``closed`` (the old seed destroyed, the new credential promoted). It is kept in the vault's
KV next to the credential (``accessguard/tasks/<account>``): it holds no secret, and the vault
is where the owner's proof is checked, so task and credential change together.

A task never holds a seed, a password or an ``otpauth://`` URI; :func:`instructions` is what
the owner is told to do, naming the vault paths, never the values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from connectors.custody.names import Names

OPEN = "open"
CONFIRMED = "confirmed"
CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    account: str
    platform: str
    handle: str
    criticality: str
    owner: str | None
    holders: tuple[str, ...]
    causes: tuple[str, ...]
    #: Idempotency keys of the rotations this task answers (a redelivered action finds it).
    keys: tuple[str, ...]
    opened_at: float
    due_at: float
    status: str = OPEN
    login: str | None = None
    reminders: int = 0
    last_reminded_at: float | None = None
    paged_at: float | None = None
    confirmed_at: float | None = None
    confirmed_by: str | None = None
    closed_at: float | None = None
    #: Set once the worker has written the closing audit record and counted it.
    reported: bool = False
    history: tuple[str, ...] = field(default_factory=tuple)

    @property
    def active(self) -> bool:
        return self.status in (OPEN, CONFIRMED)

    def overdue(self, now: float) -> bool:
        return self.active and now >= self.due_at

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("holders", "causes", "keys", "history"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Task:
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in data.items() if k in known}
        for key in ("holders", "causes", "keys", "history"):
            values[key] = tuple(values.get(key) or ())
        return cls(**values)

    def noted(self, line: str) -> Task:
        """The task with one more history line (kept short: the last 50)."""
        return replace(self, history=(*self.history, line)[-50:])


def choose_owner(holders: list[str], admins: list[str], leaving: str | None = None) -> str | None:
    """Who re-enrols: the account's admin among the remaining holders, else any remaining
    holder (first by id, so the choice is the same on every replay), else nobody."""
    remaining = sorted(h for h in holders if h != leaving)
    for admin in sorted(admins):
        if admin != leaving and admin in remaining:
            return admin
    for admin in sorted(admins):
        if admin != leaving:
            return admin
    return remaining[0] if remaining else None


def instructions(
    task: Task, names: Names, confirm_command: str = "accessguard custody confirm"
) -> str:
    """What the owner must do, step by step (no secret: only where to read it)."""
    login = f" (login {task.login})" if task.login else ""
    return (
        f"Re-enrol the shared {task.platform} login {task.handle}{login}: "
        f"1) with your own vault login read the new credential: "
        f"`bao kv get -mount={names.mounts.kv} {names.pending_path}` "
        f"(fields otpauth_uri and password); "
        f"2) sign in to {task.platform} as {task.handle}, set the new password and replace the "
        f"authenticator (2FA) with the otpauth_uri (scan it as a QR code); "
        f"3) run `{confirm_command} {task.account} --code NNNNNN` with a code your "
        f"authenticator now shows. Until then {task.platform} still accepts the old seed."
    )
