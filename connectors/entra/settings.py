"""Settings of the Microsoft Graph provider and sign-in poller (connector type ``graph``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from connectors.base.settings import HttpProviderSettings, PollerSettings, Url
from connectors.entra.poller import DEFAULT_BASE_URL, MAX_TOP
from streams.config import Int, SecretValue


class GraphProviderSettings(HttpProviderSettings):
    """``base_url`` (https://graph.microsoft.com), ``token`` (app access token), ``dry_run``."""


class GraphPollerSettings(PollerSettings):
    """The sign-in log poller: ``base_url``, ``token`` (required), ``top``, plus the base's
    ``interval``, ``start``, ``max_failure_backoff``."""

    base_url: Url = Field(DEFAULT_BASE_URL, description="https://graph.microsoft.com")
    token: SecretValue | None = Field(None, description="access token with AuditLog.Read.All")
    top: Int = Field(500, ge=1, le=MAX_TOP, description="sign-ins per page")

    required_secrets: ClassVar[tuple[str, ...]] = ("token",)
