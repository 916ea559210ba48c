"""The typed configuration: one pydantic model per fixed section, and the root settings.

Field descriptions are the meanings the README's configuration table shows
(:func:`streams.config.reference.reference_markdown`); ``ge`` is each key's minimum. Every
model refuses unknown keys (``extra="forbid"``), so a misspelt key is an error naming the
nearest valid one instead of being silently ignored.

``providers``, ``pollers`` and ``alerts.sinks`` are maps of name -> :class:`ConnectorEntry`:
here only ``type`` is required and secrets and ``dry_run`` are typed; each type's own keys
are checked against its settings model in ``connectors/`` (connectors/base/catalogue.py,
``check_connectors``), because the configuration package does not import connectors.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streams.config.alerting import IncidentSettings, IntentSettings, RouteSettings
from streams.config.fields import Bool, Doors, Float, Int, Names, SecretValue, Str
from streams.config.hooks import HookSettings
from streams.config.kafka import (
    EmbeddedSettings,
    KafkaSettings,
    StartupSettings,
    TopicSettings,
)
from streams.config.section import Section, _doc
from streams.config.sources import SourceSettings
from streams.config.ssf import SsfSettings
from streams.support.errors import ConfigError, ConfigProblem
from streams.support.secrets import Secret

#: Keys whose values are secrets wherever they appear (providers, sinks, pollers, hr).
SECRET_KEYS = frozenset(
    {
        "token",
        "routing_key",
        "webhook_url",
        "webhook_secret",
        "standard_webhooks_secret",  # hooks.* (streams/config/hooks.py)
        "event_hook_secret",
        "secret",
        "password",
        "api_key",
        "ingest_token",
        # vendor credentials that mint short-lived tokens (connectors/base/credentials.py)
        "client_secret",
        "client_certificate",
        "private_key",
        "service_account",
        # Shared Signals (streams/config/ssf.py)
        "push_token",
        "poll_token",
        "signing_key",
        "management_token",
    }
)

SEVERITIES = ("critical", "high", "medium", "low", "info")


class HttpSettings(Section):
    host: Str = _doc("Address the HTTP server binds", default="127.0.0.1")
    port: Int = _doc("HTTP port: /v1/hr/events, /metrics, /healthz, /readyz", default=8080, ge=0)
    max_body_bytes: Int = _doc("Largest accepted request body (413 above)", default=65536, ge=256)
    max_batch_bytes: Int = _doc("Largest login-event batch (413 above)", default=10485760, ge=1024)
    auth_failure_limit: Int = _doc(
        "Failed authentications from one client within http.auth_failure_window before it "
        "is refused with 429",
        default=20,
        ge=1,
    )
    auth_failure_window: Float = _doc("Window of http.auth_failure_limit, s", default=60.0, ge=1)
    auth_block_seconds: Float = _doc(
        "How long a client past the limit is refused (doubles while it goes on, up to 15 min)",
        default=60.0,
        ge=1,
    )
    trusted_proxies: Names = _doc(
        "Proxies (IPs or CIDRs) whose X-Forwarded-For names the client that failures count against",
        default_factory=list,
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for proxy in value:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"{proxy!r} is not an IP address or CIDR") from None
        return value


class AuthSettings(Section):
    ingest_token: SecretValue | None = _doc(
        "Bearer token of POST /v1/auth/events (none: the endpoint answers 403)", default=None
    )


class RuleSettings(Section):
    dir: Str = _doc("Directory of detection rules (*.yaml); invalid = no start", default="rules")


class LeakSettings(Section):
    hmac_key: SecretValue | None = _doc(
        "Key of the HMAC-SHA256 kept instead of a leaked password (none: presence only)",
        default=None,
    )
    plus_tag_domains: Names = _doc(
        "Domains where a+tag@domain is a@domain when matching leaked addresses",
        default_factory=list,
    )
    include_spam_lists: Bool = _doc("Act on breaches flagged as spam lists", default=False)
    include_fabricated: Bool = _doc("Act on breaches flagged as fabricated", default=False)
    review_after_days: Int = _doc("Breach age (days) for review, not a page", default=365, ge=1)
    max_record_bytes: Int = _doc(
        "Longest dump record (longer: rejected, read on)", default=65536, ge=64
    )
    ingest_token: SecretValue | None = _doc(
        "Bearer token of POST /v1/leaks (none: the endpoint answers 403)", default=None
    )
    accept_auth_token: Bool = _doc(
        "Also accept auth.ingest_token on POST /v1/leaks (one token for both ingests)",
        default=False,
    )
    max_request_bytes: Int = _doc(
        "Largest POST /v1/leaks body once decompressed (413 above)", default=67108864, ge=1024
    )
    max_request_records: Int = _doc(
        "Most records in one POST /v1/leaks (413 above)", default=100000, ge=1
    )


class HrSettings(Section):
    webhook_secret: SecretValue | None = _doc(
        "X-AccessGuard-Signature HMAC secret (or hooks.standard_webhooks_secret)", default=None
    )
    tolerance_seconds: Int = _doc("Largest accepted signature age", default=300, ge=1)
    dedup_ttl_seconds: Int = _doc(
        "How long a seen event_id is remembered at the edge", default=345600, ge=0
    )


class ScimSettings(Section):
    token: SecretValue | None = _doc(
        "Bearer token of the SCIM service /scim/v2 (none: every request answers 401)",
        default=None,
    )


class WorkerSettings(Section):
    id: Str = _doc("Faust app id = consumer group", default="accessguard")
    fetch_max_wait_ms: Int = _doc("Consumer fetch wait (Faust hard-codes 1500)", default=20, ge=1)
    rebalance_timeout: Float = _doc("Group rebalance timeout, seconds", default=3.0, ge=1)
    session_timeout: Float = _doc("Group session timeout, seconds", default=6.0, ge=1)
    heartbeat_interval: Float = _doc("Group heartbeat interval, seconds", default=1.0, ge=0.1)
    schedule_interval: Float = _doc(
        "How often scheduled offboardings are checked, s", default=1.0, ge=0.05
    )
    rule_interval: Float = _doc(
        "Rule state checkpoint/expiry/absence check, s", default=1.0, ge=0.05
    )
    agency_interval: Float = _doc(
        "How often agency contract ends are checked, s", default=60.0, ge=0.05
    )
    metrics_interval: Float = _doc(
        "How often consumer lag, registry and readiness gauges are refreshed, s",
        default=5.0,
        ge=0.05,
    )
    hr_batch_max: Int = _doc(
        "Most HR events decided and persisted together (a layoff's burst)", default=200, ge=1
    )
    hr_batch_wait: Float = _doc(
        "Longest an HR event waits for others to batch with, s", default=0.005, ge=0.001
    )
    doors: Doors = _doc(
        "HTTP doors `accessguard worker` serves too: scim (/scim/v2), ssf (Shared Signals "
        "push receiver); `accessguard run` serves all",
        default_factory=list,
    )


class ExecutorSettings(Section):
    dry_run: Bool = _doc("Log and audit every action but call no provider", default=False)
    threads: Int = _doc("Thread pool for blocking provider calls", default=16, ge=1)
    per_provider_concurrency: Int = _doc("Concurrent calls per provider", default=8, ge=1)


class VerifySettings(Section):
    timeout: Float = _doc(
        "How long an acknowledged action is read back before it pages as unverified, s",
        default=60.0,
        ge=0.05,
    )
    first_interval: Float = _doc(
        "First wait between two read-backs, s (grows by half each time)", default=0.25, ge=0.01
    )
    max_interval: Float = _doc("Longest wait between two read-backs, s", default=2.0, ge=0.01)


class OffboardingSettings(Section):
    step_timeout: Float = _doc(
        "Longest a step of an offboarding (disable, then revoke, then remove grants) waits "
        "for the step before, s",
        default=5.0,
        ge=0,
    )
    #: Not in the configuration table (a map): README "Offboarding policy".
    steps: dict[str, list[list[Str]]] = Field(
        default_factory=dict,
        description="event type -> ordered steps, each a list of action kinds",
    )
    providers: dict[str, dict[str, list[Str]]] = Field(
        default_factory=dict,
        description="provider name -> event type -> the only action kinds it is asked for",
    )


class RetrySettings(Section):
    max_attempts: Int = _doc("Fast attempts before paging (then slow retries)", default=6, ge=1)
    base_delay: Float = _doc("First backoff, seconds (doubles, jittered)", default=0.5, ge=0)
    max_delay: Float = _doc("Largest backoff between fast attempts, seconds", default=10.0, ge=0)
    connect_timeout: Float = _doc(
        "Connect timeout of every provider call, s", default=3.05, ge=0.01
    )
    read_timeout: Float = _doc("Read timeout of every provider call, s", default=10.0, ge=0.01)
    slow_retry_interval: Float = _doc("Retry interval after paging, seconds", default=60.0, ge=0.05)


class JournalSettings(Section):
    fsync: Bool = _doc("fsync the journal after each accepted event", default=True)
    replay_on_start: Bool = _doc("Replay the journal into empty topics at start", default=True)


class LogSettings(Section):
    level: Str = _doc("debug, info, warning or error", default="info")
    format: Str = _doc("auto (console on a TTY, else JSON), json or console", default="auto")

    @field_validator("level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value not in ("debug", "info", "warning", "error"):
            raise ValueError("must be debug, info, warning or error")
        return value

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value not in ("auto", "json", "console"):
            raise ValueError("must be auto, json or console")
        return value


class ConnectorEntry(BaseModel):
    """One ``providers``/``pollers``/``alerts.sinks`` entry as the configuration sees it:
    ``type`` is required, secrets are :class:`Secret`, ``dry_run`` a bool; other keys pass
    through untouched, to be checked by the type's own settings model (connectors/)."""

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)

    type: Str
    dry_run: Bool = False
    token: SecretValue | None = None
    routing_key: SecretValue | None = None
    webhook_url: SecretValue | None = None
    webhook_secret: SecretValue | None = None
    secret: SecretValue | None = None
    password: SecretValue | None = None
    api_key: SecretValue | None = None
    ingest_token: SecretValue | None = None
    client_secret: SecretValue | None = None
    client_certificate: SecretValue | None = None
    private_key: SecretValue | None = None
    service_account: SecretValue | None = None

    _order: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_order(cls, data: Any, handler: ModelWrapValidatorHandler[ConnectorEntry]) -> Any:
        entry = handler(data)
        if isinstance(data, Mapping):
            entry._order = [str(k) for k in data]
        return entry

    def values(self) -> dict[str, Any]:
        """The settings as given, in the order given (keys not given stay absent), typed:
        the mapping a connector's constructor takes."""
        given = {name: getattr(self, name) for name in self.model_fields_set}
        given.update(self.model_extra or {})
        return {k: given[k] for k in sorted(given, key=self._position)}

    def _position(self, key: str) -> int:
        return self._order.index(key) if key in self._order else len(self._order)


class AlertSettings(Section):
    runbook_base_url: Str = _doc(
        "Prefix that turns runbook paths (docs/runbooks/...) into links, e.g. your repo URL",
        default="",
    )
    outage_update_interval: Float = _doc(
        "Least time between two updates of one provider-outage or offboarding-batch incident, s",
        default=60.0,
        ge=0.05,
    )
    batch_threshold: Int = _doc(
        "Offboardings starting close together that page once as a batch (a layoff)",
        default=10,
        ge=2,
    )
    batch_window: Float = _doc(
        "Most time between two offboardings of one batch, s", default=60.0, ge=0.05
    )
    routes: RouteSettings = Field(default_factory=RouteSettings)
    intents: IntentSettings = Field(default_factory=IntentSettings)
    incidents: IncidentSettings = Field(default_factory=IncidentSettings)
    sinks: dict[str, ConnectorEntry] = Field(default_factory=dict)


class ConfigModel(BaseModel):
    """The whole configuration, validated by :func:`streams.config.load_config` (YAML +
    environment, each problem located); ``Config.settings`` is one."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, validate_default=True)

    broker: Str = _doc(
        "Kafka URL (kafka://host:9092[,host2:9092]); empty starts embedded Tansu", default=""
    )
    data_dir: Str = _doc(
        "Directory for the journal/audit trail, secret store, logs", default="data"
    )
    registry: Str = _doc(
        "Registry YAML imported by `accessguard run`", default="examples/registry.yaml"
    )
    ignored_providers: Names = _doc(
        "Provider names the registry may use with no provider configured (their actions are "
        "knowingly not carried out); any other unconfigured one stops start-up",
        default_factory=list,
    )
    embedded: EmbeddedSettings = Field(default_factory=EmbeddedSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    startup: StartupSettings = Field(default_factory=StartupSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    rules: RuleSettings = Field(default_factory=RuleSettings)
    leaks: LeakSettings = Field(default_factory=LeakSettings)
    hr: HrSettings = Field(default_factory=HrSettings)
    scim: ScimSettings = Field(default_factory=ScimSettings)
    hooks: HookSettings = Field(default_factory=HookSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    verify: VerifySettings = Field(default_factory=VerifySettings)
    offboarding: OffboardingSettings = Field(default_factory=OffboardingSettings)
    journal: JournalSettings = Field(default_factory=JournalSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    sources: SourceSettings = Field(default_factory=SourceSettings)
    ssf: SsfSettings = Field(default_factory=SsfSettings)
    providers: dict[str, ConnectorEntry] = Field(default_factory=dict)
    pollers: dict[str, ConnectorEntry] = Field(default_factory=dict)


class AccessGuardSettings(BaseSettings, ConfigModel):
    """The configuration as pydantic-settings settings: ``AccessGuardSettings()`` reads the
    ``ACCESSGUARD_*`` variables of the process (:class:`AccessGuardEnvSource`) over the
    defaults. The loader validates with :class:`ConfigModel` instead, because it merges the
    YAML file and an explicit environment itself, to say where each problem was given."""

    model_config = SettingsConfigDict(
        extra="forbid", hide_input_in_errors=True, validate_default=True
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, AccessGuardEnvSource(settings_cls))


class AccessGuardEnvSource(PydanticBaseSettingsSource):
    """``ACCESSGUARD_*`` variables of the process environment as nested settings: fixed keys
    by their :data:`KEYS` env names, maps as ``ACCESSGUARD_PROVIDERS__<NAME>__<KEY>``."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is read at once in __call__

    def __call__(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        problems: list[ConfigProblem] = []
        env_overrides(data, os.environ, {}, problems)
        if problems:
            raise ConfigError.of(problems)
        return data


#: Named maps: ``providers.<name>.<key>``, ``alerts.sinks.<name>.<key>``, ``pollers...``.
MAPS = ("providers", "alerts.sinks", "pollers")


@dataclass(frozen=True)
class Key:
    """One fixed key: dotted path, default, type, meaning, minimum (None: no minimum)."""

    path: str
    default: Any
    kind: type
    doc: str
    minimum: float | None = None

    @property
    def env(self) -> str:
        return "ACCESSGUARD_" + self.path.replace(".", "_").upper()


def _leaf_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, FieldInfo]]:
    out: list[tuple[str, FieldInfo]] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.extend(_leaf_fields(annotation, path + "."))
        elif path not in MAPS and get_origin(annotation) is not dict:
            # a map inside a section (offboarding.steps) is YAML only, documented apart
            out.append((path, field))
    return out


def _key(path: str, field: FieldInfo) -> Key:
    minimum = next((m.ge for m in field.metadata if hasattr(m, "ge")), None)
    raw = field.annotation
    kind: type
    if raw in (bool, int, float, str):
        kind = raw  # type: ignore[assignment]
    elif get_origin(raw) is list:
        kind = list
    else:
        kind = Secret
    return Key(
        path, field.get_default(call_default_factory=True), kind, field.description or "", minimum
    )


#: Every fixed key, in README order: the reference the configuration table is generated from.
KEYS: tuple[Key, ...] = tuple(_key(p, f) for p, f in _leaf_fields(ConfigModel))
BY_PATH: dict[str, Key] = {k.path: k for k in KEYS}


def set_path(data: dict[str, Any], path: str, value: Any) -> bool:
    """Put ``value`` at dotted ``path`` of nested dicts (False when a level is not a dict)."""
    *parents, last = path.split(".")
    for part in parents:
        child = data.setdefault(part, {})
        if not isinstance(child, dict):
            return False
        data = child
    data[last] = value
    return True


def get_path(data: Mapping[str, Any], path: str) -> Any:
    current: Any = data
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return None
        current = current.get(part)
    return current


def env_overrides(
    data: dict[str, Any],
    env: Mapping[str, str],
    where: dict[str, str],
    problems: list[ConfigProblem],
) -> None:
    """Apply the ``ACCESSGUARD_*`` overrides of ``env`` to ``data`` (nested, as read from
    YAML), recording ``where[path] = "env NAME"``; a malformed map variable is a problem."""
    for key in KEYS:
        if key.env in env and set_path(data, key.path, env[key.env]):
            where[key.path] = f"env {key.env}"
    for map_path in MAPS:
        prefix = "ACCESSGUARD_" + map_path.replace(".", "_").upper() + "__"
        entries = get_path(data, map_path)
        names = list(entries) if isinstance(entries, Mapping) else []
        by_env_name = {str(n).upper().replace("-", "_"): str(n) for n in names}
        for var in sorted(v for v in env if v.startswith(prefix)):
            name_part, sep, setting = var[len(prefix) :].partition("__")
            if not sep or not setting or not name_part:
                problems.append(ConfigProblem(var, f"expected {prefix}<NAME>__<KEY>", f"env {var}"))
                continue
            name = by_env_name.get(name_part, name_part.lower().replace("_", "-"))
            path = f"{map_path}.{name}.{setting.lower()}"
            entry = get_path(data, f"{map_path}.{name}")
            if entry is not None and not isinstance(entry, dict):
                continue  # reported as "expected a mapping of settings" at the YAML line
            if set_path(data, path, env[var]):
                where[path] = f"env {var}"
                where.setdefault(f"{map_path}.{name}", f"env {var}")
