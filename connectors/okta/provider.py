"""Okta: end a person's sessions and force MFA re-enrolment (Okta Users API)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

import requests

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
from streams.support.errors import PermanentError, ProviderError, RetryableError


def classify_okta_error(provider: str, response: requests.Response) -> ProviderError | None:
    """Okta's 429 carries ``X-Rate-Limit-Reset`` (epoch seconds) rather than Retry-After."""
    if response.status_code != 429 or response.headers.get("Retry-After"):
        return None
    try:
        reset = float(response.headers.get("X-Rate-Limit-Reset", ""))
    except ValueError:
        return None
    return RetryableError(
        provider,
        "HTTP 429 rate limited (until X-Rate-Limit-Reset)",
        status=429,
        retry_after=max(0.0, reset - time.time()),
    )


class OktaProvider:
    """Okta Users API provider.

    ``revoke_sessions`` passes ``oauthTokens=true``: Okta's default keeps OIDC/OAuth tokens
    alive, which would leave an offboarded person's API clients working. Both calls are
    idempotent at Okta (clearing cleared sessions or factors is a no-op), so a redelivered
    action is harmless.

    Settings: ``base_url`` (https://<org>.okta.com), ``token`` (API token, a Secret),
    ``dry_run``.
    """

    type: ClassVar[str] = "okta"
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
        self._label = f"okta:{name}"

    def perform(self, action: Action) -> dict[str, Any]:
        """Make ONE attempt at ``action``; the executor owns retries."""
        if action.action not in self.supports:
            raise PermanentError(self._label, f"action {action.action!r} is not supported by okta")
        user = path_part(action.params.get("user_ref"), self._label, "user_ref")
        if action.action == "revoke_sessions":
            method = "DELETE"
            template = "/api/v1/users/{user_ref}/sessions?oauthTokens=true"
            shape = "/api/v1/users/{user_ref}/sessions"
            path = f"/api/v1/users/{user}/sessions"
            params: dict[str, str] | None = {"oauthTokens": "true"}
        else:
            method = "POST"
            template = "/api/v1/users/{user_ref}/lifecycle/reset_factors"
            shape = template
            path = f"/api/v1/users/{user}/lifecycle/reset_factors"
            params = None
        request = f"{method} {template}"
        if self.dry_run:
            return {"dry_run": True, "request": request}
        response = self._http.request(
            self._label,
            method,
            self.base_url + path,
            headers={
                "Authorization": f"SSWS {reveal(self._token, self._label)}",
                "Accept": "application/json",
                "Content-Type": "application/json",
            },
            params=params,
            classify=classify_okta_error,
            path_template=shape,
            path_prefix=self._base_path,
        )
        return {"status": response.status_code, "request": request}
