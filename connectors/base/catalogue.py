"""The explicit connector registry: one line per provider or alert sink type.

Adding a connector means writing its module and adding its line here; nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

from connectors.base.http import HttpClient
from connectors.entra.poller import GraphSignInPoller
from connectors.entra.provider import GraphProvider
from connectors.generic.provider import GenericRestProvider
from connectors.google.provider import GoogleProvider
from connectors.okta.poller import OktaLogPoller
from connectors.okta.provider import OktaProvider
from connectors.shared_login.mfa import SharedCredentialRotator
from connectors.sinks.pagerduty import PagerDutySink
from connectors.sinks.slack import SlackSink
from streams.model.records import Action, Alert
from streams.support.errors import ConfigError


class Provider(Protocol):
    """What the executor calls. ``perform`` makes ONE attempt and returns a small JSON-able
    result for the audit trail (never a secret); it raises RetryableError, PermanentError
    or AuthError."""

    type: ClassVar[str]
    supports: ClassVar[frozenset[str]]

    def perform(self, action: Action) -> dict[str, Any]: ...


class AlertSink(Protocol):
    """What the alerter calls. ``send`` makes ONE attempt, like :meth:`Provider.perform`."""

    type: ClassVar[str]

    def send(self, alert: Alert) -> dict[str, Any]: ...


PROVIDER_TYPES: dict[str, type[Any]] = {
    "okta": OktaProvider,
    "graph": GraphProvider,
    "google": GoogleProvider,
    "generic": GenericRestProvider,
    "secret_store": SharedCredentialRotator,
}

#: Pull sources of login events (constructed by the worker with publish/reject callbacks).
POLLER_TYPES: dict[str, type[Any]] = {
    "okta": OktaLogPoller,
    "graph": GraphSignInPoller,
}

SINK_TYPES: dict[str, type[Any]] = {
    "pagerduty": PagerDutySink,
    "slack": SlackSink,
}

#: Provider types that do not talk HTTP and so have no base_url.
_NO_BASE_URL = frozenset({"secret_store"})


def _type_of(name: str, settings: Mapping[str, Any], section: str, known: Mapping[str, Any]) -> Any:
    kind = settings.get("type")
    if not isinstance(kind, str) or kind not in known:
        raise ConfigError(f"{section}.{name}.type", f"must be one of {', '.join(sorted(known))}")
    return known[kind]


def build_provider(name: str, settings: Mapping[str, Any], http: HttpClient) -> Provider:
    """Build the provider named ``name`` from its settings (``type`` picks the class)."""
    cls = _type_of(name, settings, "providers", PROVIDER_TYPES)
    if cls.type not in _NO_BASE_URL and not settings.get("base_url"):
        raise ConfigError(
            f"providers.{name}.base_url", "required: the provider's https:// base URL"
        )
    provider: Provider = cls(name, settings, http)
    return provider


def build_sink(name: str, settings: Mapping[str, Any], http: HttpClient) -> AlertSink:
    """Build the alert sink named ``name`` from its settings (``type`` picks the class)."""
    cls = _type_of(name, settings, "alerts.sinks", SINK_TYPES)
    sink: AlertSink = cls(name, settings, http)
    return sink


def poller_class(name: str, settings: Mapping[str, Any]) -> Any:
    """The Poller subclass for ``pollers.<name>`` (``type`` picks it)."""
    return _type_of(name, settings, "pollers", POLLER_TYPES)
