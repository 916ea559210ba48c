"""Settings of the alert sinks (``alerts.sinks.<name>``): PagerDuty Events v2 and Slack."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from connectors.base.settings import SinkSettings, Url
from streams.config import SecretValue


class PagerDutySettings(SinkSettings):
    """``url`` (default https://events.pagerduty.com), ``routing_key``, ``dry_run``."""

    url: Url = Field("https://events.pagerduty.com", description="Events API base URL")
    routing_key: SecretValue | None = Field(None, description="integration key (a Secret)")

    required_unless_dry_run: ClassVar[tuple[str, ...]] = ("routing_key",)


class SlackSettings(SinkSettings):
    """``webhook_url`` (a Secret: the URL itself grants posting), ``dry_run``."""

    webhook_url: SecretValue | None = Field(None, description="incoming webhook URL (a Secret)")

    required_unless_dry_run: ClassVar[tuple[str, ...]] = ("webhook_url",)


class SlackAppSettings(SinkSettings):
    """``url`` (default https://slack.com), ``token`` (bot token), ``channel``, ``dry_run``."""

    url: Url = Field("https://slack.com", description="Web API base URL")
    token: SecretValue | None = Field(None, description="bot token with chat:write (a Secret)")
    channel: str = Field(min_length=1, description="channel id the bot posts to (C...)")

    required_unless_dry_run: ClassVar[tuple[str, ...]] = ("token",)
