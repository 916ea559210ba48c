"""The explicit connector registry: one line per provider, poller or alert sink type, and
one per settings model.

Adding a connector means writing its module and its settings model (connectors/<vendor>/
settings.py) and adding their lines here; nothing else. Every entry of ``providers``,
``pollers`` and ``alerts.sinks`` is validated against its type's model
(:func:`check_connectors` for ``accessguard config check``; :func:`build_provider`,
:func:`build_sink`, :func:`poller_class` before constructing), since the configuration
package, which must not import connectors, checks only their ``type``, secrets and
``dry_run``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

from pydantic import ValidationError as PydanticValidationError

from connectors.base.http import HttpClient
from connectors.base.settings import ConnectorSettings
from connectors.custody.provider import OpenBaoCustody
from connectors.custody.settings import OpenBaoSettings
from connectors.entra.poller import GraphDirectoryAuditPoller, GraphSignInPoller
from connectors.entra.provider import GraphProvider
from connectors.entra.settings import (
    GraphAuditPollerSettings,
    GraphPollerSettings,
    GraphProviderSettings,
)
from connectors.generic.provider import GenericRestProvider
from connectors.generic.settings import GenericProviderSettings
from connectors.google.poller import GoogleReportsPoller
from connectors.google.provider import GoogleProvider
from connectors.google.settings import GoogleProviderSettings, GoogleReportsPollerSettings
from connectors.hibp.settings import HibpSettings
from connectors.okta.poller import OktaLogPoller
from connectors.okta.provider import OktaProvider
from connectors.okta.settings import OktaPollerSettings, OktaProviderSettings
from connectors.shared_login.mfa import SharedCredentialRotator
from connectors.shared_login.settings import SecretStoreSettings
from connectors.sinks.pagerduty import PagerDutySink
from connectors.sinks.settings import PagerDutySettings, SlackAppSettings, SlackSettings
from connectors.sinks.slack import SlackSink
from connectors.sinks.slack_app import SlackAppSink
from streams.config import Config, did_you_mean, problems_from
from streams.model.records import Action, Alert
from streams.support.errors import ConfigError, ConfigProblem


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
    "openbao": OpenBaoCustody,
}

#: Pull sources of login and identity-security events (constructed by the worker with
#: publish/reject callbacks).
POLLER_TYPES: dict[str, type[Any]] = {
    "okta": OktaLogPoller,
    "graph": GraphSignInPoller,
    "graph_audit": GraphDirectoryAuditPoller,
    "google_reports": GoogleReportsPoller,
}

SINK_TYPES: dict[str, type[Any]] = {
    "pagerduty": PagerDutySink,
    "slack": SlackSink,
    "slack_app": SlackAppSink,
}

#: The settings model of each type (connectors/<vendor>/settings.py): the keys each accepts.
PROVIDER_SETTINGS: dict[str, type[ConnectorSettings]] = {
    "okta": OktaProviderSettings,
    "graph": GraphProviderSettings,
    "google": GoogleProviderSettings,
    "generic": GenericProviderSettings,
    "secret_store": SecretStoreSettings,
    "openbao": OpenBaoSettings,
}
#: Login pollers, and the leak feed (``hibp``, run by the worker, not by :func:`poller_class`).
POLLER_SETTINGS: dict[str, type[ConnectorSettings]] = {
    "okta": OktaPollerSettings,
    "graph": GraphPollerSettings,
    "graph_audit": GraphAuditPollerSettings,
    "google_reports": GoogleReportsPollerSettings,
    "hibp": HibpSettings,
}
SINK_SETTINGS: dict[str, type[ConnectorSettings]] = {
    "pagerduty": PagerDutySettings,
    "slack": SlackSettings,
    "slack_app": SlackAppSettings,
}
#: Each named map of the configuration and the models its entries are checked against.
SECTIONS: dict[str, dict[str, type[ConnectorSettings]]] = {
    "providers": PROVIDER_SETTINGS,
    "pollers": POLLER_SETTINGS,
    "alerts.sinks": SINK_SETTINGS,
}

Locate = Callable[[str], "str | None"]


def validate_settings(
    section: str,
    name: str,
    settings: Mapping[str, Any],
    locate: Locate = lambda key: None,
) -> tuple[dict[str, Any] | None, list[ConfigProblem]]:
    """Check ``<section>.<name>`` against its type's model: (the validated mapping a
    constructor takes, []) or (None, every problem, each located by ``locate``)."""
    models = SECTIONS[section]
    prefix = f"{section}.{name}"
    kind = settings.get("type")
    if not isinstance(kind, str) or kind not in models:
        hint = did_you_mean(kind, models) if isinstance(kind, str) else ""
        key = f"{prefix}.type"
        reason = f"must be one of {', '.join(sorted(models))}{hint}"
        return None, [ConfigProblem(key, reason, locate(key))]
    model = models[kind]
    try:
        validated = model.model_validate(dict(settings))
    except PydanticValidationError as exc:
        return None, problems_from(exc, model, prefix=prefix, locate=locate)
    problems = [
        ConfigProblem(f"{prefix}.{key}", reason, locate(f"{prefix}.{key}"))
        for key, reason in validated.missing()
    ]
    return (None if problems else validated.values()), problems


def checked_settings(section: str, name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The validated settings of ``<section>.<name>``; ConfigError naming every problem."""
    values, problems = validate_settings(section, name, settings)
    if values is None:
        raise ConfigError.of(problems)
    return values


def check_connectors(config: Config) -> list[ConfigProblem]:
    """Every problem of every provider, poller and alert sink of ``config`` (type known,
    keys known, values valid, required secrets set), each with where it was given."""
    problems: list[ConfigProblem] = []
    entries = {
        "providers": config.providers,
        "pollers": config.pollers,
        "alerts.sinks": config.sinks,
    }
    for section, named in entries.items():
        for name, settings in named.items():
            problems += validate_settings(section, name, settings, config.locate)[1]
    return problems


def build_provider(name: str, settings: Mapping[str, Any], http: HttpClient) -> Provider:
    """Build the provider named ``name`` from its settings (``type`` picks the class),
    validated through the type's settings model first."""
    values = checked_settings("providers", name, settings)
    provider: Provider = PROVIDER_TYPES[values["type"]](name, values, http)
    return provider


def build_sink(name: str, settings: Mapping[str, Any], http: HttpClient) -> AlertSink:
    """Build the alert sink named ``name`` from its settings (``type`` picks the class),
    validated through the type's settings model first."""
    values = checked_settings("alerts.sinks", name, settings)
    sink: AlertSink = SINK_TYPES[values["type"]](name, values, http)
    return sink


def poller_settings(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The validated settings of ``pollers.<name>`` (a login poller or the leak feed), to
    hand its constructor."""
    return checked_settings("pollers", name, settings)


def poller_class(name: str, settings: Mapping[str, Any]) -> Any:
    """The Poller subclass for ``pollers.<name>`` (``type`` picks it), after validating its
    settings; a leak feed type is not a login poller."""
    kind = poller_settings(name, settings)["type"]
    if kind not in POLLER_TYPES:
        raise ConfigError(
            f"pollers.{name}.type", f"must be one of {', '.join(sorted(POLLER_TYPES))}"
        )
    return POLLER_TYPES[kind]
