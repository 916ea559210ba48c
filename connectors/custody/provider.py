"""Provider type ``openbao``: custody actions in OpenBao or Vault.

* ``revoke_shared_access``: the person's vault entity is disabled (their tokens stop working)
  and removed from every shared-login group; read back from the entity and the groups.
* ``restore_shared_access``: the reverse (reinstatement), read back the same way.
* ``rotate_shared_credential``: a new seed and password staged in the vault and a re-enrolment
  task opened for a named remaining holder; read back from the task and the staged key.

No HTTP of its own: hvac makes the calls (connectors/custody/vault.py). The audit trail's
``request`` names the operation, never a secret; results carry counts, names and the task's
owner and due time, never a seed, a password or a URI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from connectors.base.http import HttpClient
from connectors.base.provider import (
    PENDING,
    UNVERIFIED,
    VERIFIED,
    ProviderBase,
    Request,
    Verification,
)
from connectors.custody.service import Custody
from connectors.custody.vault import VaultClient
from streams.model.records import Action
from streams.support.errors import PermanentError

CUSTODY_ACTIONS = frozenset(
    {"revoke_shared_access", "restore_shared_access", "rotate_shared_credential"}
)


class OpenBaoCustody(ProviderBase):
    """Custody of shared logins (settings: connectors/custody/settings.py)."""

    type: ClassVar[str] = "openbao"
    supports: ClassVar[frozenset[str]] = CUSTODY_ACTIONS
    verifies: ClassVar[frozenset[str]] = CUSTODY_ACTIONS
    url_setting: ClassVar[str | None] = None
    credential_setting: ClassVar[str | None] = None

    def __init__(
        self, name: str, settings: Mapping[str, Any], http: HttpClient | None = None
    ) -> None:
        super().__init__(name, settings, http)

    def _configure(self, settings: Mapping[str, Any]) -> None:
        deadlines = settings.get("deadlines") or {}
        self.vault = VaultClient(self.label, settings)
        self.base_url = self.vault.address
        # readiness: a refused vault credential turns the `credentials` check false
        self.credentials = None if self.dry_run else self.vault.login_state
        self.poll_interval = float(settings.get("poll_interval") or 30.0)
        self.custody = Custody(
            self.vault,
            deadlines={k: float(v) for k, v in dict(deadlines).items()},
            remind_every=float(settings.get("remind_every") or 4 * 3600.0),
            alias_mount=settings.get("alias_mount"),
        )

    def prepare(self, action: Action) -> Request:
        if action.action == "rotate_shared_credential":
            account = action.account or action.params.get("account")
            if not account:
                raise PermanentError(self.label, "rotation without an account")
            return Request(
                "ROTATE",
                "shared login {account}",
                values={"account": str(account)},
                describe="stage a new seed and password, open a re-enrolment task",
                extra={"account": str(account)},
            )
        verb = "cut" if action.action == "revoke_shared_access" else "restore"
        accounts = sorted(str(a) for a in action.params.get("accounts") or ())
        return Request(
            verb.upper(),
            "entity {identity}",
            values={"identity": action.identity},
            describe=(
                "disable the vault entity, remove it from the shared-login groups"
                if verb == "cut"
                else "enable the vault entity, add it to its shared-login groups"
            ),
            extra={"accounts": accounts},
        )

    def execute(self, request: Request, action: Action) -> dict[str, Any]:
        accounts = list(request.extra.get("accounts") or ())
        if action.action == "revoke_shared_access":
            result = self.custody.revoke(action.identity, accounts, action.cause)
        elif action.action == "restore_shared_access":
            result = self.custody.restore(action.identity, accounts)
        else:
            params = {**action.params, "account": request.extra["account"]}
            result = self.custody.rotate(params, key=action.idempotency_key, cause=action.cause)
        return {"request": request.request, **result}

    def verify(self, action: Action, result: Mapping[str, Any], issued_at: float) -> Verification:
        accounts = sorted(str(a) for a in action.params.get("accounts") or ())
        if action.action == "revoke_shared_access":
            seen = self.custody.verify_revoked(action.identity, accounts)
            if seen["cut"]:
                return Verification(VERIFIED, seen)
            return Verification(
                UNVERIFIED,
                seen,
                reason="the vault still lists the person as enabled or in a shared-login group",
            )
        if action.action == "restore_shared_access":
            seen = self.custody.verify_restored(action.identity, accounts)
            if seen["restored"]:
                return Verification(VERIFIED, seen)
            return Verification(PENDING, seen, reason="not yet back in every group")
        account = str(action.account or action.params.get("account"))
        seen = self.custody.verify_rotation(account, action.idempotency_key)
        if seen["staged"]:
            return Verification(VERIFIED, seen)
        return Verification(
            UNVERIFIED, seen, reason="no staged seed or open task for this rotation in the vault"
        )
