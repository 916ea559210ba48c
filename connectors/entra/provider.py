"""Microsoft Entra (Graph): revoke sign-in sessions and remove MFA methods."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from connectors.base.http import (
    HttpClient,
    base_path,
    path_part,
    reveal,
    setting_bool,
    setting_secret,
    setting_url,
)
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


class GraphProvider:
    """Microsoft Graph provider.

    ``revokeSignInSessions`` invalidates refresh tokens and session cookies; access tokens
    already issued live on for up to about an hour (field notes). Graph answers 200 even
    for guests it cannot affect, so the returned ``value`` is kept in the result.

    ``force_mfa_reenrolment`` lists the user's methods and deletes every non-password one.
    It is idempotent: a re-run lists again, and a 404 on delete (already gone) counts as
    done, so partial progress before a retry is never a failure.

    Settings: ``base_url`` (https://graph.microsoft.com), ``token`` (app access token with
    User.RevokeSessions.All and UserAuthenticationMethod.ReadWrite.All, a Secret), ``dry_run``.
    """

    type: ClassVar[str] = "graph"
    supports: ClassVar[frozenset[str]] = frozenset({"revoke_sessions", "force_mfa_reenrolment"})

    def __init__(self, name: str, settings: Mapping[str, Any], http: HttpClient) -> None:
        self.name = name
        prefix = f"providers.{name}"
        self.dry_run = setting_bool(settings, "dry_run", f"{prefix}.dry_run")
        self.base_url = setting_url(settings, "base_url", f"{prefix}.base_url")
        self._base_path = base_path(self.base_url)
        self._token = setting_secret(
            settings, "token", f"{prefix}.token", required=not self.dry_run
        )
        self._http = http
        self._label = f"graph:{name}"

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {reveal(self._token, self._label)}",
            "Accept": "application/json",
        }

    def perform(self, action: Action) -> dict[str, Any]:
        """Make ONE attempt at ``action``; the executor owns retries."""
        if action.action not in self.supports:
            raise PermanentError(self._label, f"action {action.action!r} is not supported by graph")
        user = path_part(action.params.get("user_ref"), self._label, "user_ref")
        if action.action == "revoke_sessions":
            return self._revoke(user)
        return self._reset_methods(user)

    def _revoke(self, user: str) -> dict[str, Any]:
        request = "POST /v1.0/users/{user_ref}/revokeSignInSessions"
        if self.dry_run:
            return {"dry_run": True, "request": request}
        response = self._http.request(
            self._label,
            "POST",
            f"{self.base_url}/v1.0/users/{user}/revokeSignInSessions",
            headers={**self._headers(), "Content-Type": "application/json"},
            path_template="/v1.0/users/{user_ref}/revokeSignInSessions",
            path_prefix=self._base_path,
        )
        try:
            value = response.json().get("value")
        except (ValueError, AttributeError):
            value = None
        return {"status": response.status_code, "request": request, "value": value}

    def _list_methods(self, user: str) -> list[dict[str, Any]]:
        url: str | None = f"{self.base_url}/v1.0/users/{user}/authentication/methods"
        base_host = urlsplit(self.base_url).netloc
        methods: list[dict[str, Any]] = []
        # The first page is ours and checked against its template; @odata.nextLink pages
        # are the vendor's own URLs (same host only, below).
        template: str | None = "/v1.0/users/{user_ref}/authentication/methods"
        for _ in range(MAX_PAGES):
            if url is None:
                break
            response = self._http.request(
                self._label,
                "GET",
                url,
                headers=self._headers(),
                path_template=template,
                path_prefix=self._base_path,
            )
            template = None
            try:
                body = response.json()
            except ValueError:
                raise PermanentError(
                    self._label, "authentication/methods: body is not JSON"
                ) from None
            page = body.get("value") if isinstance(body, dict) else None
            if not isinstance(page, list):
                raise PermanentError(self._label, "authentication/methods: no 'value' list")
            methods.extend(m for m in page if isinstance(m, dict))
            next_link = body.get("@odata.nextLink")
            # Only follow links to the same host: the bearer token goes with the request.
            if isinstance(next_link, str) and urlsplit(next_link).netloc == base_host:
                url = next_link
            else:
                url = None
        return methods

    def _reset_methods(self, user: str) -> dict[str, Any]:
        request = (
            "GET /v1.0/users/{user_ref}/authentication/methods; "
            "DELETE /v1.0/users/{user_ref}/authentication/{collection}/{method_id}"
        )
        if self.dry_run:
            return {"dry_run": True, "request": request}
        deleted: dict[str, int] = {}
        skipped: list[str] = []
        for method in self._list_methods(user):
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
            self._http.request(
                self._label,
                "DELETE",
                f"{self.base_url}/v1.0/users/{user}/authentication/{collection}/"
                f"{quote(method_id, safe='')}",
                headers=self._headers(),
                ok=(200, 204, 404),
                path_template=f"/v1.0/users/{{user_ref}}/authentication/{collection}/{{method_id}}",
                path_prefix=self._base_path,
            )
            deleted[collection] = deleted.get(collection, 0) + 1
        result: dict[str, Any] = {"status": 204, "request": request, "deleted": deleted}
        if skipped:
            result["skipped_types"] = skipped
        return result
