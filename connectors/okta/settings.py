"""Settings of the Okta provider (``providers.<name>``) and System Log poller
(``pollers.<name>``).

Exactly one credential (unless the provider is a dry run): an OAuth 2.0 service app with
``private_key_jwt`` (``client_id``, ``private_key``, ``key_id``, ``scopes``; recommended,
connectors/okta/credentials.py) or the legacy SSWS API ``token``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from connectors.base.credentials import one_auth_method
from connectors.base.settings import ConnectorSettings, HttpProviderSettings, PollerSettings, Url
from connectors.okta.credentials import POLLER_SCOPES, PROVIDER_SCOPES
from connectors.okta.poller import DEFAULT_FILTER, MAX_LIMIT
from streams.config import Int, Names, SecretValue, Str

_HINT = "an OAuth service app (client_id + private_key) or the legacy SSWS API token"


class OktaAuthSettings(ConnectorSettings):
    """The OAuth service app keys shared by the provider and the poller."""

    client_id: Str | None = Field(None, description="OAuth service app client id")
    private_key: SecretValue | None = Field(
        None, description="the app's private key (PEM, a Secret), for private_key_jwt"
    )
    key_id: Str | None = Field(None, description="kid of the app's public key registered at Okta")

    def auth_problems(self, dry_run: bool) -> list[tuple[str, str]]:
        oauth = bool(self.client_id) or bool(self.private_key)
        token = getattr(self, "token", None)
        problems = one_auth_method(
            {"token": bool(token), "client_id": oauth}, dry_run=dry_run, hint=_HINT
        )
        if oauth and not problems:
            if not self.client_id:
                problems.append(("client_id", "required with private_key"))
            if not self.private_key:
                problems.append(("private_key", "required with client_id"))
        return problems


class OktaProviderSettings(HttpProviderSettings, OktaAuthSettings):
    """``base_url`` (https://<org>.okta.com), ``dry_run``, ``disable_mode``, and
    ``client_id`` + ``private_key`` (+ ``key_id``, ``scopes``) or the legacy ``token``
    (API token)."""

    scopes: Names = Field(list(PROVIDER_SCOPES), description="OAuth scopes to request")
    disable_mode: Literal["suspend", "deactivate"] = Field(
        "suspend",
        description="disable_account suspends (reversible) or deactivates the user",
    )

    required_unless_dry_run: ClassVar[tuple[str, ...]] = ()

    def missing(self) -> list[tuple[str, str]]:
        return super().missing() + self.auth_problems(self.dry_run)


class OktaPollerSettings(PollerSettings, OktaAuthSettings):
    """The System Log poller: ``base_url``, ``client_id`` + ``private_key`` (+ ``key_id``,
    ``scopes``) or ``token``, ``limit``, ``filter``, ``rate_limit_reserve``, plus the base's
    ``interval``, ``start``, ``max_failure_backoff``."""

    base_url: Url = Field(description="https://<org>.okta.com")
    token: SecretValue | None = Field(None, description="API token, sent as SSWS <token>")
    scopes: Names = Field(list(POLLER_SCOPES), description="OAuth scopes to request")
    limit: Int = Field(MAX_LIMIT, ge=1, le=MAX_LIMIT, description="events per page")
    filter: Str = Field(DEFAULT_FILTER, description='Okta filter expression ("" = every event)')
    rate_limit_reserve: Int = Field(
        5, ge=0, le=10_000, description="pause while this few requests remain"
    )

    def missing(self) -> list[tuple[str, str]]:
        return super().missing() + self.auth_problems(False)
