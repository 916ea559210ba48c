"""Okta: end a person's sessions and force MFA re-enrolment (Okta Users API)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

import requests

from connectors.base.credentials import Credential
from connectors.base.provider import ProviderBase, Request
from connectors.okta.credentials import PROVIDER_SCOPES, okta_credential
from streams.model.records import Action
from streams.support.errors import ProviderError, RetryableError


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


class OktaProvider(ProviderBase):
    """Okta Users API provider.

    ``revoke_sessions`` passes ``oauthTokens=true``: Okta's default keeps OIDC/OAuth tokens
    alive, which would leave an offboarded person's API clients working. Both calls are
    idempotent at Okta (clearing cleared sessions or factors is a no-op), so a redelivered
    action is harmless.

    Settings: ``base_url`` (https://<org>.okta.com), ``dry_run``, and one credential: an
    OAuth service app (``client_id``, ``private_key`` (a Secret PEM), ``key_id``, ``scopes``,
    default ``okta.users.manage``; connectors/okta/credentials.py) or the legacy ``token``
    (SSWS API token, a Secret).
    """

    type: ClassVar[str] = "okta"
    supports: ClassVar[frozenset[str]] = frozenset({"revoke_sessions", "force_mfa_reenrolment"})
    auth_scheme = "SSWS"

    def build_credentials(self, settings: Mapping[str, Any]) -> Credential | None:
        return okta_credential(
            settings,
            self.config_prefix,
            self.label,
            base_url=self.base_url,
            default_scopes=PROVIDER_SCOPES,
            required=not self.dry_run,
        )

    def prepare(self, action: Action) -> Request:
        values = {"user_ref": self.path_value(action, "user_ref")}
        if action.action == "revoke_sessions":
            return Request(
                "DELETE",
                "/api/v1/users/{user_ref}/sessions",
                values,
                params={"oauthTokens": "true"},
                headers={"Content-Type": "application/json"},
            )
        return Request(
            "POST",
            "/api/v1/users/{user_ref}/lifecycle/reset_factors",
            values,
            headers={"Content-Type": "application/json"},
        )

    def classify(self, provider: str, response: requests.Response) -> ProviderError | None:
        return classify_okta_error(provider, response)
