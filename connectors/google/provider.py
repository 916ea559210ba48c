"""Google Workspace: sign a user out and turn off 2-Step Verification (Admin SDK Directory)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import requests

from connectors.base.credentials import Credential
from connectors.base.provider import ProviderBase, Request
from connectors.google.credentials import google_credential
from streams.model.records import Action
from streams.support.errors import ProviderError, RetryableError

#: Google answers rate limits with 403 and one of these reasons, not only with 429.
RATE_LIMIT_REASONS = frozenset(
    {"userRateLimitExceeded", "rateLimitExceeded", "quotaExceeded", "dailyLimitExceeded"}
)


def classify_google_error(provider: str, response: requests.Response) -> ProviderError | None:
    """Map Google's 403 rate limits to RetryableError; anything else uses the default mapping."""
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
    return RetryableError(provider, f"HTTP 403 rate limited ({hit[0]})", status=403)


class GoogleProvider(ProviderBase):
    """Google Admin SDK Directory provider.

    ``users.signOut`` ends web and mobile sessions but not desktop apps (docs/operations-notes.md).
    ``twoStepVerification.turnOff`` forces the user to enrol 2SV again at next sign-in when
    the organisation enforces it. Both are idempotent at Google.

    Settings: ``base_url`` (https://admin.googleapis.com), ``dry_run``, and a service account
    with domain-wide delegation (``service_account``: its JSON key, a Secret; ``subject``: the
    admin to act as; ``scopes``; connectors/google/credentials.py) or a static ``token`` (an
    OAuth access token, a Secret).
    """

    type: ClassVar[str] = "google"
    supports: ClassVar[frozenset[str]] = frozenset({"revoke_sessions", "force_mfa_reenrolment"})

    def build_credentials(self, settings: Mapping[str, Any]) -> Credential | None:
        return google_credential(
            settings, self.config_prefix, self.label, required=not self.dry_run
        )

    def prepare(self, action: Action) -> Request:
        user = self.path_value(action, "user_ref")
        suffix = "signOut" if action.action == "revoke_sessions" else "twoStepVerification/turnOff"
        return Request("POST", f"/admin/directory/v1/users/{{userKey}}/{suffix}", {"userKey": user})

    def classify(self, provider: str, response: requests.Response) -> ProviderError | None:
        return classify_google_error(provider, response)
