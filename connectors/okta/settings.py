"""Settings of the Okta provider (``providers.<name>``) and System Log poller
(``pollers.<name>``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from connectors.base.settings import HttpProviderSettings, PollerSettings, Url
from connectors.okta.poller import DEFAULT_FILTER, MAX_LIMIT
from streams.config import Int, SecretValue, Str


class OktaProviderSettings(HttpProviderSettings):
    """``base_url`` (https://<org>.okta.com), ``token`` (API token), ``dry_run``."""


class OktaPollerSettings(PollerSettings):
    """The System Log poller: ``base_url``, ``token`` (required), ``limit``, ``filter``,
    ``rate_limit_reserve``, plus the base's ``interval``, ``start``, ``max_failure_backoff``."""

    base_url: Url = Field(description="https://<org>.okta.com")
    token: SecretValue | None = Field(None, description="API token, sent as SSWS <token>")
    limit: Int = Field(MAX_LIMIT, ge=1, le=MAX_LIMIT, description="events per page")
    filter: Str = Field(DEFAULT_FILTER, description='Okta filter expression ("" = every event)')
    rate_limit_reserve: Int = Field(
        5, ge=0, le=10_000, description="pause while this few requests remain"
    )

    required_secrets: ClassVar[tuple[str, ...]] = ("token",)
