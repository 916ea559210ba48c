"""Settings of the Google Workspace provider (Admin SDK Directory)."""

from __future__ import annotations

from connectors.base.settings import HttpProviderSettings


class GoogleProviderSettings(HttpProviderSettings):
    """``base_url`` (https://admin.googleapis.com), ``token`` (OAuth access token), ``dry_run``."""
