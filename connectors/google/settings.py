"""Settings of the Google Workspace provider (Admin SDK Directory).

Exactly one credential (unless a dry run): a service account with domain-wide delegation
(``service_account``: the JSON key, a Secret; ``subject``: the admin to impersonate;
``scopes``; recommended, connectors/google/credentials.py) or a static OAuth ``token``.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from connectors.base.credentials import one_auth_method
from connectors.base.settings import HttpProviderSettings
from connectors.google.credentials import DEFAULT_SCOPES
from streams.config import Names, SecretValue, Str


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
