"""Settings of the Have I Been Pwned leak feed (``pollers.<name>`` with ``type: hibp``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from connectors.base.settings import ConnectorSettings, Text, Url
from connectors.hibp.poller import DEFAULT_BASE_URL, DEFAULT_INTERVAL, DEFAULT_USER_AGENT
from streams.config import Bool, Float, Int, Names, SecretValue


class HibpSettings(ConnectorSettings):
    """``api_key`` (required), ``domains``, ``user_agent``, ``base_url``, ``interval``,
    ``max_accounts_per_round``, ``include_spam_lists``, ``include_fabricated``."""

    api_key: SecretValue | None = Field(None, description="HIBP API key (hibp-api-key)")
    domains: Names = Field(default_factory=list, description="verified domains to search")
    user_agent: Text = Field(DEFAULT_USER_AGENT, description="HIBP refuses requests without one")
    base_url: Url = Field(DEFAULT_BASE_URL, description="the API's base URL")
    interval: Float = Field(DEFAULT_INTERVAL, ge=1.0, description="seconds between rounds")
    max_accounts_per_round: Int = Field(
        100, ge=0, le=1_000_000, description="addresses outside the domains per round"
    )
    include_spam_lists: Bool = Field(False, description="report breaches flagged as spam lists")
    include_fabricated: Bool = Field(False, description="report breaches flagged as fabricated")

    required_secrets: ClassVar[tuple[str, ...]] = ("api_key",)
