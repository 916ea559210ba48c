"""Where each shared login lives in the vault, and the names accessguard manages there.

One function per name so the provider, ``custody sync``, the policies and the tests agree.
Every name accessguard creates starts with :data:`PREFIX`; its own vault policy
(:mod:`connectors.custody.policy`) is scoped to exactly those names, so accessguard can
neither read nor change anything else in the vault.

Account ids may hold ``:``, ``@`` and ``+`` (registry ids); vault key and policy names are
kept to ``[A-Za-z0-9_.-]``: an id with other characters is rewritten and given a short hash
suffix, so two ids never share a name.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

PREFIX = "accessguard"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def slug(account: str) -> str:
    """``account`` as a vault-safe name part (stable, collision-free)."""
    cleaned = _UNSAFE.sub("_", account)
    if cleaned == account:
        return account
    return f"{cleaned}-{hashlib.sha256(account.encode()).hexdigest()[:8]}"


@dataclass(frozen=True, slots=True)
class Mounts:
    """Where the KV v2 and TOTP engines are mounted (``kv_mount``, ``totp_mount``)."""

    kv: str = "secret"
    totp: str = "totp"


@dataclass(frozen=True, slots=True)
class Names:
    """Every vault path and name of one shared login (``account``, a registry account id)."""

    account: str
    mounts: Mounts = Mounts()

    @property
    def slug(self) -> str:
        return slug(self.account)

    # TOTP engine: the current seed (holders read codes) and the staged one of a rotation.
    @property
    def totp_key(self) -> str:
        return f"{PREFIX}-{self.slug}"

    @property
    def next_totp_key(self) -> str:
        return f"{PREFIX}-{self.slug}--next"

    # KV v2, paths relative to the mount (hvac's ``path=``).
    @property
    def secret_path(self) -> str:
        """username and password holders read."""
        return f"{PREFIX}/shared/{self.slug}"

    @property
    def pending_path(self) -> str:
        """The staged credential of a rotation (otpauth URI, password): task owner only."""
        return f"{PREFIX}/pending/{self.slug}"

    @property
    def task_path(self) -> str:
        """The re-enrolment task (no secret in it)."""
        return f"{PREFIX}/tasks/{self.slug}"

    # Identity and policies.
    @property
    def group(self) -> str:
        return f"{PREFIX}-shared-{self.slug}"

    @property
    def holder_policy(self) -> str:
        return f"{PREFIX}-shared-{self.slug}"

    @property
    def enrol_policy(self) -> str:
        return f"{PREFIX}-enrol-{self.slug}"


TASKS_DIR = f"{PREFIX}/tasks"
GROUP_PREFIX = f"{PREFIX}-shared-"
ENROL_POLICY_PREFIX = f"{PREFIX}-enrol-"


def entity_name(identity: str) -> str:
    """The vault entity of a registry identity."""
    return f"{PREFIX}-{slug(identity)}"
