"""Microsoft Entra (Graph): revoke sign-in sessions, remove MFA methods, disable/enable the
account and force a password change, and read each back.

Vendor facts this module relies on (Microsoft Graph v1.0 reference):

* ``PATCH /users/{id}`` with ``{"accountEnabled": false|true}`` disables or enables the
  account (204; application permission ``User.EnableDisableAccount.All`` plus
  ``User.Read.All``), with ``{"passwordProfile": {"forceChangePasswordNextSignIn": true}}``
  forces a password change at next sign-in (``User-PasswordProfile.ReadWrite.All``). Setting
  a value it already has is a no-op 204, so a redelivered action is harmless.
* ``POST /users/{id}/revokeSignInSessions`` (``User.RevokeSessions.All``) resets the user's
  ``signInSessionsValidFromDateTime`` to the time of the call, truncated to whole seconds;
  a ``GET`` shows the new value only after a few seconds (directory replication), so the
  read-back says PENDING while it is older than the issue time minus ``verify_clock_skew``.
* ``GET /users/{id}?$select=...`` reads only the properties asked for (``User.Read.All``);
  ``GET /users/{id}/authentication/methods`` (``UserAuthenticationMethod.ReadWrite.All``)
  lists the methods; after ``force_mfa_reenrolment`` only the password method is left.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

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
from connectors.entra.credentials import graph_credential
from streams.model.records import Action
from streams.support.errors import ConfigError, PermanentError

#: ``@odata.type`` of each removable method -> its typed collection under
#: ``/users/{id}/authentication/``. Password methods cannot be deleted and are not MFA.
METHOD_COLLECTIONS: dict[str, str] = {
    "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod": "microsoftAuthenticatorMethods",
    "#microsoft.graph.softwareOathAuthenticationMethod": "softwareOathMethods",
    "#microsoft.graph.phoneAuthenticationMethod": "phoneMethods",
    "#microsoft.graph.fido2AuthenticationMethod": "fido2Methods",
    "#microsoft.graph.emailAuthenticationMethod": "emailMethods",
    "#microsoft.graph.windowsHelloForBusinessAuthenticationMethod": (
        "windowsHelloForBusinessMethods"
    ),
    "#microsoft.graph.temporaryAccessPassAuthenticationMethod": "temporaryAccessPassMethods",
    "#microsoft.graph.platformCredentialAuthenticationMethod": "platformCredentialMethods",
}
PASSWORD_TYPE = "#microsoft.graph.passwordAuthenticationMethod"  # noqa: S105 - a type name, not a password
#: A user has a handful of methods; a longer chain of nextLinks means something is wrong.
MAX_PAGES = 10
USER = "/v1.0/users/{user_ref}"
#: The PATCH body of each account action, and the property its read-back selects.
PATCHES: dict[str, dict[str, Any]] = {
    "disable_account": {"accountEnabled": False},
    "enable_account": {"accountEnabled": True},
    "expire_password": {"passwordProfile": {"forceChangePasswordNextSignIn": True}},
}
SELECT: dict[str, str] = {
    "disable_account": "accountEnabled",
    "enable_account": "accountEnabled",
    "expire_password": "passwordProfile",
    "revoke_sessions": "signInSessionsValidFromDateTime",
}
DEFAULT_VERIFY_CLOCK_SKEW = 5.0


def graph_time(value: Any) -> float | None:
    """Epoch seconds of a Graph ``DateTimeOffset`` (``2026-01-02T03:04:05Z``), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class GraphProvider(ProviderBase):
    """Microsoft Graph provider.

    ``revokeSignInSessions`` invalidates refresh tokens and session cookies; access tokens
    already issued live on for up to about an hour (docs/operations-notes.md). Graph answers
    200 even for guests it cannot affect, so the returned ``value`` is kept in the result.

    ``force_mfa_reenrolment`` lists the user's methods and deletes every non-password one.
    It is idempotent: a re-run lists again, and a 404 on delete (already gone) counts as
    done, so partial progress before a retry is never a failure.

    ``disable_account``/``enable_account``/``expire_password`` are one PATCH each (see the
    module).

    Settings: ``base_url`` (https://graph.microsoft.com), ``dry_run``, ``verify_clock_skew``
    (seconds, default 5: how much older than the issue time ``signInSessionsValidFromDateTime``
    may be and still count) and the app registration (``tenant_id``, ``client_id``,
    ``client_secret`` or ``client_certificate`` + ``client_certificate_thumbprint``,
    ``authority``; connectors/entra/credentials.py) with User.RevokeSessions.All,
    UserAuthenticationMethod.ReadWrite.All, User.EnableDisableAccount.All,
    User-PasswordProfile.ReadWrite.All and User.Read.All, or a static ``token`` (app access
    token, a Secret).
    """

    type: ClassVar[str] = "graph"
    rate_scope: ClassVar[str] = "provider"  # limits count the app/admin, not the endpoint
    supports: ClassVar[frozenset[str]] = PROVIDER_ACTIONS["graph"]
    verifies: ClassVar[frozenset[str]] = supports

    def build_credentials(self, settings: Mapping[str, Any]) -> Credential | None:
        return graph_credential(settings, self.config_prefix, self.label, required=not self.dry_run)

    def _configure(self, settings: Mapping[str, Any]) -> None:
        key = f"{self.config_prefix}.verify_clock_skew"
        raw = settings.get("verify_clock_skew", DEFAULT_VERIFY_CLOCK_SKEW)
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
            raise ConfigError(key, "must be a number of seconds >= 0")
        self.verify_clock_skew = float(raw)

    def prepare(self, action: Action) -> Request:
        values = {"user_ref": self.path_value(action, "user_ref")}
        patch = PATCHES.get(action.action)
        if patch is not None:
            return Request(
                "PATCH",
                USER,
                values,
                json=patch,
                headers={"Content-Type": "application/json"},
                extra={"body": patch},
            )
        if action.action == "revoke_sessions":
            return Request(
                "POST",
                "/v1.0/users/{user_ref}/revokeSignInSessions",
                values,
                headers={"Content-Type": "application/json"},
            )
        # Several calls: the list, then one DELETE per method (see _reset_methods).
        return Request(
            "GET",
            "/v1.0/users/{user_ref}/authentication/methods",
            values,
            describe=(
                "GET /v1.0/users/{user_ref}/authentication/methods; "
                "DELETE /v1.0/users/{user_ref}/authentication/{collection}/{method_id}"
            ),
        )

    def execute(self, request: Request, action: Action) -> dict[str, Any]:
        if action.action in PATCHES:
            return self.result(request, self.send_request(request))
        if action.action == "revoke_sessions":
            response = self.send_request(request)
            try:
                value = response.json().get("value")
            except (ValueError, AttributeError):
                value = None
            return {**self.result(request, response), "value": value}
        return self._reset_methods(request)

    def _list_methods(self, listing: Request) -> list[dict[str, Any]]:
        base_host = urlsplit(self.base_url).netloc
        methods: list[dict[str, Any]] = []
        # The first page is ours and checked against its template; @odata.nextLink pages
        # are the vendor's own URLs (same host only, below).
        url: str | None = None
        for page_number in range(MAX_PAGES):
            if page_number and url is None:
                break
            response = self.send_request(listing, url=url)
            try:
                body = response.json()
            except ValueError:
                raise PermanentError(
                    self.label, "authentication/methods: body is not JSON"
                ) from None
            page = body.get("value") if isinstance(body, dict) else None
            if not isinstance(page, list):
                raise PermanentError(self.label, "authentication/methods: no 'value' list")
            methods.extend(m for m in page if isinstance(m, dict))
            next_link = body.get("@odata.nextLink")
            # Only follow links to the same host: the bearer token goes with the request.
            if isinstance(next_link, str) and urlsplit(next_link).netloc == base_host:
                url = next_link
            else:
                url = None
        return methods

    def _reset_methods(self, listing: Request) -> dict[str, Any]:
        deleted: dict[str, int] = {}
        skipped: list[str] = []
        for method in self._list_methods(listing):
            odata_type = method.get("@odata.type")
            method_id = method.get("id")
            if odata_type == PASSWORD_TYPE:
                continue
            collection = METHOD_COLLECTIONS.get(odata_type) if isinstance(odata_type, str) else None
            if collection is None or not isinstance(method_id, str) or not method_id:
                # An unknown new method type is reported, not guessed at: a wrong path
                # would 404 and look like success.
                skipped.append(str(odata_type))
                continue
            self.send_request(
                Request(
                    "DELETE",
                    f"/v1.0/users/{{user_ref}}/authentication/{collection}/{{method_id}}",
                    {**listing.values, "method_id": quote(method_id, safe="")},
                    ok=(200, 204, 404),
                )
            )
            deleted[collection] = deleted.get(collection, 0) + 1
        result: dict[str, Any] = {"status": 204, "request": listing.request, "deleted": deleted}
        if skipped:
            result["skipped_types"] = skipped
        return result

    # --- read-back ----------------------------------------------------------------------

    def verify(self, action: Action, result: Mapping[str, Any], issued_at: float) -> Verification:
        kind = action.action
        if kind not in self.verifies:
            return super().verify(action, result, issued_at)
        values = {"user_ref": self.path_value(action, "user_ref")}
        if kind == "force_mfa_reenrolment":
            listing = Request("GET", f"{USER}/authentication/methods", values)
            left = sorted(
                str(m.get("@odata.type", "")).rsplit(".", 1)[-1]
                for m in self._list_methods(listing)
                if m.get("@odata.type") != PASSWORD_TYPE
            )
            evidence = {"non_password_methods": len(left), "method_types": left}
            if left:
                return Verification(UNVERIFIED, evidence, "the user has non-password methods")
            return Verification(VERIFIED, evidence, "only password methods left")
        select = SELECT[kind]
        response = self.send_request(Request("GET", USER, values, params={"$select": select}))
        try:
            user = response.json()
        except ValueError:
            raise PermanentError(self.label, f"GET {USER}: body is not JSON") from None
        if not isinstance(user, dict):
            raise PermanentError(self.label, f"GET {USER}: not a user object")
        if kind == "revoke_sessions":
            return self._verify_sessions(user.get(select), issued_at)
        if kind == "expire_password":
            profile = user.get("passwordProfile")
            forced = (
                profile.get("forceChangePasswordNextSignIn") if isinstance(profile, dict) else None
            )
            evidence = {"passwordProfile.forceChangePasswordNextSignIn": forced}
            if forced is True:
                return Verification(VERIFIED, evidence, "password change forced")
            # Directory writes replicate: a read right after the PATCH may show the old value
            # for a few seconds. Read again; the executor pages at verify.timeout.
            return Verification(PENDING, evidence, "password change is not forced")
        enabled = user.get("accountEnabled")
        wanted = kind == "enable_account"
        evidence = {"accountEnabled": enabled}
        if enabled is wanted:
            return Verification(VERIFIED, evidence, f"accountEnabled is {enabled}")
        return Verification(PENDING, evidence, f"accountEnabled is {enabled}, not {wanted}")

    def _verify_sessions(self, valid_from: Any, issued_at: float) -> Verification:
        evidence = {"signInSessionsValidFromDateTime": valid_from}
        when = graph_time(valid_from)
        if when is not None and when >= issued_at - self.verify_clock_skew:
            return Verification(VERIFIED, evidence, "sessions are invalid from the revocation")
        return Verification(
            PENDING, evidence, "signInSessionsValidFromDateTime not yet at the revocation time"
        )
