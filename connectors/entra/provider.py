"""Microsoft Entra (Graph): revoke sign-in sessions and remove MFA methods."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from connectors.base.credentials import Credential
from connectors.base.provider import ProviderBase, Request
from connectors.entra.credentials import graph_credential
from streams.model.records import Action
from streams.support.errors import PermanentError

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


class GraphProvider(ProviderBase):
    """Microsoft Graph provider.

    ``revokeSignInSessions`` invalidates refresh tokens and session cookies; access tokens
    already issued live on for up to about an hour (docs/operations-notes.md). Graph answers
    200 even for guests it cannot affect, so the returned ``value`` is kept in the result.

    ``force_mfa_reenrolment`` lists the user's methods and deletes every non-password one.
    It is idempotent: a re-run lists again, and a 404 on delete (already gone) counts as
    done, so partial progress before a retry is never a failure.

    Settings: ``base_url`` (https://graph.microsoft.com), ``dry_run``, and the app
    registration (``tenant_id``, ``client_id``, ``client_secret`` or ``client_certificate`` +
    ``client_certificate_thumbprint``, ``authority``; connectors/entra/credentials.py) with
    User.RevokeSessions.All and UserAuthenticationMethod.ReadWrite.All, or a static
    ``token`` (app access token, a Secret).
    """

    type: ClassVar[str] = "graph"
    supports: ClassVar[frozenset[str]] = frozenset({"revoke_sessions", "force_mfa_reenrolment"})

    def build_credentials(self, settings: Mapping[str, Any]) -> Credential | None:
        return graph_credential(settings, self.config_prefix, self.label, required=not self.dry_run)

    def prepare(self, action: Action) -> Request:
        values = {"user_ref": self.path_value(action, "user_ref")}
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
