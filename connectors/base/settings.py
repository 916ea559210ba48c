"""Settings models shared by the connectors: the base of each provider, poller and sink model.

Every connector type has one pydantic model next to its code (``connectors/<vendor>/
settings.py``; sinks: ``connectors/sinks/settings.py``) naming its keys with their types,
defaults and bounds. connectors/base/catalogue.py validates each ``providers``/``pollers``/
``alerts.sinks`` entry through its type's model (``check_connectors``, ``build_provider``,
``build_sink``, ``poller_class``): an unknown key (``dryrun``) is an error naming the
nearest valid one, instead of being ignored while the provider makes real calls.

The constructors are handed :meth:`ConnectorSettings.values`: the same kind of mapping they
always took (only the keys given, secrets as :class:`~streams.support.secrets.Secret`), with
values of the validated types. The models' defaults document the constructors' defaults.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from connectors.base.http import validate_url
from connectors.base.pollers import DEFAULT_INTERVAL, DEFAULT_MAX_FAILURE_BACKOFF, parse_start
from streams.config import Bool, Float, SecretValue, Str
from streams.support.errors import ConfigError
from streams.support.secrets import Secret


def _url(value: str) -> str:
    try:
        validate_url(value, "url")
    except ConfigError as exc:
        raise ValueError(exc.problems[0].message) from None
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _start(value: str | datetime) -> str | datetime:
    try:
        parse_start(value, "start", time.time())
    except ConfigError as exc:
        raise ValueError(exc.problems[0].message) from None
    return value


#: An absolute https:// URL (plain http only for loopback hosts), as the constructors check.
Url = Annotated[Str, AfterValidator(_url)]
#: A string that must not be blank.
Text = Annotated[Str, AfterValidator(_not_blank)]
#: ``"now"`` or an ISO 8601 time with a zone: where a poller without a checkpoint begins.
StartTime = Annotated[str | datetime, AfterValidator(_start)]

_REQUIRED_SECRET = "required: set it via env:NAME or file:/path"  # noqa: S105 - a message


class ConnectorSettings(BaseModel):
    """Base of every connector settings model: ``type`` and nothing unknown."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    type: str = Field(description="the connector type (connectors/base/catalogue.py)")

    #: Secret keys that must be set (checked after validation, each at its own key).
    required_secrets: ClassVar[tuple[str, ...]] = ()
    #: Secret keys that must be set unless ``dry_run`` is true.
    required_unless_dry_run: ClassVar[tuple[str, ...]] = ()

    def missing(self) -> list[tuple[str, str]]:
        """(key, reason) for each required secret that is not set."""
        dry = bool(getattr(self, "dry_run", False))
        keys = self.required_secrets + (() if dry else self.required_unless_dry_run)
        out = []
        for key in keys:
            value = getattr(self, key, None)
            if value is None or (isinstance(value, Secret) and not value):
                out.append((key, _REQUIRED_SECRET))
        return out

    def values(self) -> dict[str, Any]:
        """The mapping a constructor takes: the keys given, validated (nested models as
        plain mappings)."""
        out: dict[str, Any] = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            out[name] = (
                value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else value
            )
        return out


class ProviderSettings(ConnectorSettings):
    """Base of provider settings: ``dry_run`` logs the request a provider would send."""

    dry_run: Bool = Field(False, description="log and audit the request, send nothing")


class HttpProviderSettings(ProviderSettings):
    """A provider calling an HTTP API with a bearer-style token (required unless dry run)."""

    base_url: Url = Field(description="the API's https:// base URL")
    token: SecretValue | None = Field(None, description="the API credential (a Secret)")

    required_unless_dry_run: ClassVar[tuple[str, ...]] = ("token",)


class SinkSettings(ConnectorSettings):
    """Base of alert sink settings."""

    dry_run: Bool = Field(False, description="log the alert, send nothing")


class PollerSettings(ConnectorSettings):
    """Settings every login poller reads (connectors/base/pollers.py ``Poller``)."""

    interval: Float = Field(
        DEFAULT_INTERVAL, ge=0.1, description="seconds between polls once caught up"
    )
    start: StartTime = Field("now", description='"now" or an ISO time: where polling begins')
    max_failure_backoff: Float = Field(
        DEFAULT_MAX_FAILURE_BACKOFF, ge=1.0, description="longest wait after failures, s"
    )
