"""Settings of the shared-credential rotator (provider type ``secret_store``)."""

from __future__ import annotations

from pydantic import Field

from connectors.base.settings import ProviderSettings, Text


class SecretStoreSettings(ProviderSettings):
    """``path`` (the store directory, required), ``dry_run``. No HTTP, so no ``base_url``."""

    path: Text = Field(description="directory of the shared-credential store")
