"""Google Workspace: sign a user out, turn off 2-Step Verification, suspend/unsuspend the
user, force a password change and revoke OAuth tokens and app passwords (Admin SDK Directory
API), and read back what can be read back.

Vendor facts this module relies on (Admin SDK Directory API reference):

* ``PATCH /admin/directory/v1/users/{userKey}`` updates only the fields sent:
  ``{"suspended": true|false}`` suspends or restores the user, ``{"changePasswordAtNextLogin":
  true}`` forces a new password at next sign-in (scope ``admin.directory.user``). Setting a
  value it already has changes nothing, so a redelivered action is harmless. ``GET`` of the
  same resource (``admin.directory.user`` or ``.readonly``) shows ``suspended``,
  ``changePasswordAtNextLogin`` and ``isEnrolledIn2Sv``.
* ``users.signOut`` and ``users.twoStepVerification.turnOff`` are user-security operations
  (``admin.directory.user.security``). Sign-out has no read-back: nothing in the Directory
  API shows a user's sessions, so ``revoke_sessions`` is "acknowledged, not verifiable".
  After 2SV is turned off the user's ``isEnrolledIn2Sv`` is false.
* ``tokens.list`` (``GET /users/{userKey}/tokens``) and ``asps.list`` (``GET
  /users/{userKey}/asps``) list the OAuth tokens issued to third-party apps and the
  application-specific passwords; a list with none **omits** ``items``. ``tokens.delete``
  (``/tokens/{clientId}``) and ``asps.delete`` (``/asps/{codeId}``) remove one each; a 404 on
  delete means already gone (done). Scope ``admin.directory.user.security``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import requests

from connectors.base.credentials import Credential
from connectors.base.kinds import PROVIDER_ACTIONS
from connectors.base.provider import (
    PENDING,
    UNVERIFIED,
    VERIFIED,
    ProviderBase,
    Request,
    Verification,
)
from connectors.google.credentials import google_credential
from streams.model.records import Action
from streams.support.errors import PermanentError, ProviderError, RateLimitedError

#: Google answers rate limits with 403 and one of these reasons, not only with 429.
RATE_LIMIT_REASONS = frozenset(
    {"userRateLimitExceeded", "rateLimitExceeded", "quotaExceeded", "dailyLimitExceeded"}
)
USER = "/admin/directory/v1/users/{userKey}"
#: The PATCH body of each account action.
PATCHES: dict[str, dict[str, Any]] = {
    "disable_account": {"suspended": True},
    "enable_account": {"suspended": False},
    "expire_password": {"changePasswordAtNextLogin": True},
}
#: The user field each read-back checks, and the value that means done.
EXPECTED: dict[str, tuple[str, bool]] = {
    "disable_account": ("suspended", True),
    "enable_account": ("suspended", False),
    "expire_password": ("changePasswordAtNextLogin", True),
    "force_mfa_reenrolment": ("isEnrolledIn2Sv", False),
}
#: The credential lists ``revoke_tokens`` empties: collection -> the id field of an item.
CREDENTIAL_LISTS: dict[str, str] = {"tokens": "clientId", "asps": "codeId"}


def classify_google_error(provider: str, response: requests.Response) -> ProviderError | None:
    """Map Google's 403 rate limits to RateLimitedError; anything else uses the default mapping."""
    if response.status_code != 403:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    errors = error.get("errors") if isinstance(error, dict) else None
    if not isinstance(errors, list):
        return None
    reasons = {e.get("reason") for e in errors if isinstance(e, dict)}
    hit = sorted(r for r in reasons if isinstance(r, str) and r in RATE_LIMIT_REASONS)
    if not hit:
        return None
    # Google sends no Retry-After on these; the executor's backoff decides.
    return RateLimitedError(provider, f"HTTP 403 rate limited ({hit[0]})", status=403)


class GoogleProvider(ProviderBase):
    """Google Admin SDK Directory provider.

    ``users.signOut`` ends web and mobile sessions but not desktop apps (docs/operations-notes.md).
    ``twoStepVerification.turnOff`` forces the user to enrol 2SV again at next sign-in when
    the organisation enforces it. Both are idempotent at Google, as are the PATCHes; the
    deletes of ``revoke_tokens`` count a 404 as done (see the module).

    Settings: ``base_url`` (https://admin.googleapis.com), ``dry_run``, and a service account
    with domain-wide delegation (``service_account``: its JSON key, a Secret; ``subject``: the
    admin to act as; ``scopes``; connectors/google/credentials.py) or a static ``token`` (an
    OAuth access token, a Secret).
    """

    type: ClassVar[str] = "google"
    rate_scope: ClassVar[str] = "provider"  # limits count the app/admin, not the endpoint
    supports: ClassVar[frozenset[str]] = PROVIDER_ACTIONS["google"]
    #: ``revoke_sessions`` (signOut) cannot be read back.
    verifies: ClassVar[frozenset[str]] = supports - {"revoke_sessions"}

    def build_credentials(self, settings: Mapping[str, Any]) -> Credential | None:
        return google_credential(
            settings, self.config_prefix, self.label, required=not self.dry_run
        )

    def prepare(self, action: Action) -> Request:
        values = {"userKey": self.path_value(action, "user_ref")}
        kind = action.action
        patch = PATCHES.get(kind)
        if patch is not None:
            return Request("PATCH", USER, values, json=patch, extra={"body": patch})
        if kind == "revoke_tokens":
            # Several calls: each list, then one DELETE per item (see execute).
            return Request(
                "GET",
                f"{USER}/tokens",
                values,
                describe=(
                    f"GET {USER}/tokens; DELETE {USER}/tokens/{{clientId}}; "
                    f"GET {USER}/asps; DELETE {USER}/asps/{{codeId}}"
                ),
            )
        suffix = "signOut" if kind == "revoke_sessions" else "twoStepVerification/turnOff"
        return Request("POST", f"{USER}/{suffix}", values)

    def execute(self, request: Request, action: Action) -> dict[str, Any]:
        if action.action != "revoke_tokens":
            return self.result(request, self.send_request(request))
        deleted: dict[str, int] = {}
        for collection, id_field in CREDENTIAL_LISTS.items():
            count = 0
            for item in self._items(collection, request.values):
                item_id = item.get(id_field)
                if isinstance(item_id, int) and not isinstance(item_id, bool):
                    item_id = str(item_id)
                if not isinstance(item_id, str) or not item_id:
                    raise PermanentError(self.label, f"{collection}: an item without {id_field}")
                self.send_request(
                    Request(
                        "DELETE",
                        f"{USER}/{collection}/{{item_id}}",
                        {**request.values, "item_id": quote(item_id, safe="")},
                        ok=(200, 204, 404),
                    )
                )
                count += 1
            deleted[collection] = count
        return {"status": 204, "request": request.request, "deleted": deleted}

    def _items(self, collection: str, values: Mapping[str, str]) -> list[dict[str, Any]]:
        """The ``items`` of ``tokens`` or ``asps`` (Google omits ``items`` when empty)."""
        response = self.send_request(Request("GET", f"{USER}/{collection}", values))
        try:
            body = response.json()
        except ValueError:
            raise PermanentError(self.label, f"{collection}: body is not JSON") from None
        items = body.get("items", []) if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise PermanentError(self.label, f"{collection}: 'items' is not a list")
        return [i for i in items if isinstance(i, dict)]

    def classify(self, provider: str, response: requests.Response) -> ProviderError | None:
        return classify_google_error(provider, response)

    # --- read-back ----------------------------------------------------------------------

    def verify(self, action: Action, result: Mapping[str, Any], issued_at: float) -> Verification:
        kind = action.action
        if kind not in self.verifies:
            return super().verify(action, result, issued_at)
        values = {"userKey": self.path_value(action, "user_ref")}
        if kind == "revoke_tokens":
            counts = {c: len(self._items(c, values)) for c in CREDENTIAL_LISTS}
            if any(counts.values()):
                return Verification(UNVERIFIED, counts, "tokens or app passwords remain")
            return Verification(VERIFIED, counts, "no token and no app password left")
        name, wanted = EXPECTED[kind]
        response = self.send_request(Request("GET", USER, values))
        try:
            user = response.json()
        except ValueError:
            raise PermanentError(self.label, f"GET {USER}: body is not JSON") from None
        value = user.get(name) if isinstance(user, dict) else None
        evidence = {name: value}
        if value is wanted:
            return Verification(VERIFIED, evidence, f"{name} is {value}")
        # Directory changes take a moment to propagate: read again; the executor pages at
        # verify.timeout with this evidence.
        return Verification(PENDING, evidence, f"{name} is {value}, not {wanted}")
