"""Configuration: one YAML file plus ``ACCESSGUARD_*`` environment overrides, validated at start.

Every fixed key has a default and an environment variable: ``http.port`` is
``ACCESSGUARD_HTTP_PORT``, ``broker`` is ``ACCESSGUARD_BROKER``. Named maps (``providers``,
``pollers``, ``alerts.sinks``) take ``ACCESSGUARD_PROVIDERS__<NAME>__<KEY>`` (name
upper-cased, ``-`` as ``_``). Bad values stop start-up with one :class:`ConfigError` naming
every bad key and where it was given (``file:line`` or the variable).

- :mod:`streams.config.fields`: value types (coercion, :data:`SecretValue`) and error text;
- :mod:`streams.config.models`: the pydantic models (one per section) and :data:`KEYS`;
- :mod:`streams.config.load`: YAML + environment -> :class:`Config`;
- :mod:`streams.config.reference`: the README's configuration table.

Each connector type's own keys are checked by connectors/base/catalogue.py
(``check_connectors``): this package imports no connector.
"""

from streams.config.alerting import DEFAULT_ROUTE_SINKS, INTENTS
from streams.config.fields import (
    Bool,
    Float,
    Int,
    Names,
    SecretValue,
    Str,
    did_you_mean,
    problems_from,
)
from streams.config.load import Config, check_config, load_config, locator, read_yaml
from streams.config.models import (
    KEYS,
    MAPS,
    SECRET_KEYS,
    SEVERITIES,
    AccessGuardSettings,
    ConfigModel,
    ConnectorEntry,
    Key,
)
from streams.config.reference import reference_markdown

__all__ = [
    "DEFAULT_ROUTE_SINKS",
    "INTENTS",
    "KEYS",
    "MAPS",
    "SECRET_KEYS",
    "SEVERITIES",
    "AccessGuardSettings",
    "Bool",
    "Config",
    "ConfigModel",
    "ConnectorEntry",
    "Float",
    "Int",
    "Key",
    "Names",
    "SecretValue",
    "Str",
    "check_config",
    "did_you_mean",
    "load_config",
    "locator",
    "problems_from",
    "read_yaml",
    "reference_markdown",
]
