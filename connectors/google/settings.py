"""Settings of the Google Workspace provider (Admin SDK Directory).

Exactly one credential (unless a dry run): a service account with domain-wide delegation
(``service_account``: the JSON key, a Secret; ``subject``: the admin to impersonate;
``scopes``; recommended, connectors/google/credentials.py) or a static OAuth ``token``.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from connectors.base.credentials import one_auth_method
from connectors.base.settings import HttpProviderSettings, PollerSettings, Url
from connectors.google.credentials import DEFAULT_SCOPES
from connectors.google.poller import (
    DEFAULT_BASE_URL,
    DEFAULT_LOOKBACK,
    MAX_RESULTS,
    REPORTS_SCOPE,
)
from connectors.google.security import APPLICATIONS
from streams.config import Float, Int, Names, SecretValue, Str


class GoogleProviderSettings(HttpProviderSettings):
    """``base_url`` (https://admin.googleapis.com), ``dry_run``, and ``service_account`` +
    ``subject`` (+ ``scopes``) or a static ``token`` (OAuth access token)."""

    service_account: SecretValue | None = Field(
        None, description="service account JSON key (a Secret), with domain-wide delegation"
    )
    subject: Str | None = Field(None, description="e-mail of the Workspace admin to act as")
    scopes: Names = Field(list(DEFAULT_SCOPES), description="OAuth scopes to request")

    required_unless_dry_run: ClassVar[tuple[str, ...]] = ()

    def missing(self) -> list[tuple[str, str]]:
        delegated = bool(self.service_account) or bool(self.subject)
        problems = one_auth_method(
            {"token": bool(self.token), "service_account": delegated},
            dry_run=self.dry_run,
            hint="a delegated service account (service_account + subject) or a token",
        )
        if delegated and not problems:
            if not self.service_account:
                problems.append(("service_account", "required with subject"))
            if not self.subject:
                problems.append(("subject", "required with service_account"))
        return super().missing() + problems


class GoogleReportsPollerSettings(PollerSettings):
    """The Reports poller (connectors/google/poller.py): ``base_url``, ``service_account`` +
    ``subject`` (an admin with the Reports privilege) or ``token``, ``applications``,
    ``lookback``, ``max_results``, plus the base's ``interval``, ``start``,
    ``max_failure_backoff``."""

    base_url: Url = Field(DEFAULT_BASE_URL, description="https://admin.googleapis.com")
    service_account: SecretValue | None = Field(
        None, description="service account JSON key (a Secret), with domain-wide delegation"
    )
    subject: Str | None = Field(None, description="e-mail of the Workspace admin to act as")
    scopes: Names = Field([REPORTS_SCOPE], description="OAuth scopes to request")
    token: SecretValue | None = Field(None, description="OAuth access token (a Secret)")
    applications: Names = Field(
        list(APPLICATIONS), description="Reports applications to read: login, admin, token"
    )
    lookback: Float = Field(
        DEFAULT_LOOKBACK, ge=0, le=259200, description="seconds each window re-reads (late data)"
    )
    max_results: Int = Field(MAX_RESULTS, ge=1, le=MAX_RESULTS, description="activities per page")

    def missing(self) -> list[tuple[str, str]]:
        delegated = bool(self.service_account) or bool(self.subject)
        problems = one_auth_method(
            {"token": bool(self.token), "service_account": delegated},
            dry_run=False,
            hint="a delegated service account (service_account + subject) or a token",
        )
        if delegated and not problems:
            if not self.service_account:
                problems.append(("service_account", "required with subject"))
            if not self.subject:
                problems.append(("subject", "required with service_account"))
        bad = [a for a in self.applications if a not in APPLICATIONS]
        if bad:
            problems.append(("applications", f"{bad[0]!r} is not one of {', '.join(APPLICATIONS)}"))
        return super().missing() + problems
