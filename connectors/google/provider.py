"""Google Workspace: sign a user out and turn off 2-Step Verification (Admin SDK Directory)."""

from __future__ import annotations

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


class GoogleProvider:
    """Google Admin SDK Directory provider.

    ``users.signOut`` ends web and mobile sessions but not desktop apps (field notes).
    ``twoStepVerification.turnOff`` forces the user to enrol 2SV again at next sign-in when
    the organisation enforces it. Both are idempotent at Google.

    Settings: ``base_url`` (https://admin.googleapis.com), ``token`` (OAuth access token of
    a service account with domain-wide delegation, a Secret), ``dry_run``.
    """

    type: ClassVar[str] = "google"
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
        self._label = f"google:{name}"

    def perform(self, action: Action) -> dict[str, Any]:
        """Make ONE attempt at ``action``; the executor owns retries."""
        if action.action not in self.supports:
            raise PermanentError(
                self._label, f"action {action.action!r} is not supported by google"
            )
        user = path_part(action.params.get("user_ref"), self._label, "user_ref")
        suffix = "signOut" if action.action == "revoke_sessions" else "twoStepVerification/turnOff"
        request = f"POST /admin/directory/v1/users/{{userKey}}/{suffix}"
        if self.dry_run:
            return {"dry_run": True, "request": request}
        response = self._http.request(
            self._label,
            "POST",
            f"{self.base_url}/admin/directory/v1/users/{user}/{suffix}",
            headers={
                "Authorization": f"Bearer {reveal(self._token, self._label)}",
                "Accept": "application/json",
            },
            classify=classify_google_error,
            path_template=f"/admin/directory/v1/users/{{userKey}}/{suffix}",
            path_prefix=self._base_path,
        )
        return {"status": response.status_code, "request": request}
