"""Loading: one YAML file plus ``ACCESSGUARD_*`` environment overrides, validated at once.

The file is composed into YAML nodes as well as loaded, so every key has its ``file:line``;
an environment override is located by its variable name (``env ACCESSGUARD_HTTP_PORT``).
Every problem is collected (types, minimums, unknown keys with the nearest valid name,
cross-key rules, routes naming missing sinks) and raised in one :class:`ConfigError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError as PydanticValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from streams.config.alerting import INTENTS
from streams.config.fields import problems_from
from streams.config.models import (
    BY_PATH,
    KEYS,
    MAPS,
    SEVERITIES,
    ConfigModel,
    env_overrides,
    get_path,
    set_path,
)
from streams.support.errors import ConfigError, ConfigProblem

Locate = Callable[[str], str | None]


def _marks(node: Node, prefix: str, source: str, where: dict[str, str]) -> None:
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                continue
            path = prefix + str(key_node.value)
            where.setdefault(path, f"{source}:{key_node.start_mark.line + 1}")
            _marks(value_node, path + ".", source, where)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            where.setdefault(f"{prefix}{index}", f"{source}:{item.start_mark.line + 1}")
            _marks(item, f"{prefix}{index}.", source, where)


def read_yaml(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The file's mapping and ``{dotted.key: "file:line"}``; an unreadable, unparsable or
    non-mapping file is a ConfigError against ``config``."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError("config", f"{path} is not UTF-8 text") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        reason = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(
            "config",
            f"{path} is not valid YAML: {reason}",
            where=f"{source}:{mark.line + 1}" if mark is not None else source,
        ) from None
    if loaded is not None and not isinstance(loaded, Mapping):
        raise ConfigError("config", f"{path} must hold a mapping at top level", where=source)
    where: dict[str, str] = {}
    if node is not None:
        _marks(node, "", source, where)
    return dict(loaded or {}), where


def locator(where: Mapping[str, str], source: str | None) -> Locate:
    """Where ``key`` was given: its own entry, else its nearest given parent's (a missing
    ``providers.x.type`` is at ``providers.x``), else the file (None without one)."""

    def locate(key: str) -> str | None:
        parts = key.split(".")
        while parts:
            found = where.get(".".join(parts))
            if found is not None:
                return found
            parts.pop()
        return source

    return locate


def cross_checks(
    settings: ConfigModel, dropped_sinks: Collection[str] = ()
) -> list[tuple[str, str]]:
    """(key, reason) for the rules across keys: timeouts, and routes naming missing sinks
    (``dropped_sinks``: sinks already reported invalid, not reported missing again)."""
    out: list[tuple[str, str]] = []
    if settings.worker.session_timeout <= settings.worker.heartbeat_interval:
        out.append(("worker.session_timeout", "must be larger than worker.heartbeat_interval"))
    out.extend(kafka_checks(settings))
    for source in settings.sources.cadence:
        kind, _, name = source.partition(":")
        if kind == "poller" and name not in settings.pollers:
            out.append(("sources.cadence", f"{source}: no poller named {name!r} in pollers"))
    sinks = set(settings.alerts.sinks) | set(dropped_sinks)
    if sinks:
        routes: list[tuple[str, str, object]] = [
            ("routes", s, settings.alerts.routes) for s in SEVERITIES
        ]
        routes += [("intents", i, settings.alerts.intents) for i in INTENTS]
        for section, key, model in routes:
            for name in getattr(model, key):
                if name not in sinks:
                    out.append(
                        (f"alerts.{section}.{key}", f"no sink named {name!r} in alerts.sinks")
                    )
    return out


def kafka_checks(settings: ConfigModel) -> list[tuple[str, str]]:
    """(key, reason) for a ``kafka`` section whose keys contradict each other: each would
    otherwise surface later as a handshake or authentication failure against the broker.
    Whether the files exist is checked when the process connects
    (:func:`streams.bus.security.configure`), where they are mounted; a secured protocol
    with the embedded broker when it would be started (the file may get ``broker`` from the
    environment of where it is deployed)."""
    kafka = settings.kafka
    protocol = kafka.security_protocol
    out: list[tuple[str, str]] = []
    if "SSL" not in protocol:
        for key in ("ca_file", "cert_file", "key_file"):
            if getattr(kafka, key):
                reason = f"is a TLS setting but security_protocol is {protocol}"
                out.append((f"kafka.{key}", reason))
    if bool(kafka.cert_file) != bool(kafka.key_file):
        given, missing = ("cert_file", "key_file") if kafka.cert_file else ("key_file", "cert_file")
        out.append((f"kafka.{missing}", f"is required with kafka.{given} (mTLS needs both)"))
    if kafka.key_password is not None and not kafka.key_file:
        out.append(("kafka.key_password", "is set but kafka.key_file is not"))
    if protocol.startswith("SASL_"):
        if not kafka.sasl_username:
            out.append(("kafka.sasl_username", f"is required with security_protocol {protocol}"))
        if kafka.sasl_password is None:
            out.append(("kafka.sasl_password", f"is required with security_protocol {protocol}"))
    elif kafka.sasl_username or kafka.sasl_password is not None:
        key = "kafka.sasl_username" if kafka.sasl_username else "kafka.sasl_password"
        out.append((key, f"is a SASL setting but security_protocol is {protocol}"))
    return out


def _drop(raw: dict[str, Any], key: str, dropped_sinks: set[str]) -> None:
    """Remove what ``key`` names from ``raw`` (a whole entry for a key inside a
    ``providers``/``pollers``/``alerts.sinks`` entry whose own mapping or type is wrong)."""
    parts = key.split(".")
    for map_path in MAPS:
        depth = map_path.count(".") + 1
        if parts[:depth] == map_path.split(".") and len(parts) > depth:
            entry = get_path(raw, ".".join(parts[: depth + 1]))
            if len(parts) > depth + 1 and isinstance(entry, dict) and parts[depth + 1] != "type":
                break  # one bad setting: drop just that key
            parts = parts[: depth + 1]
            if map_path == "alerts.sinks":
                dropped_sinks.add(parts[-1])
            break
    node: Any = raw
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(parts[-1], None)


def validate(
    raw: dict[str, Any], locate: Locate, problems: list[ConfigProblem]
) -> ConfigModel | None:
    """The settings of ``raw`` with every problem appended to ``problems``. A key with a
    problem is removed from ``raw`` (so its default applies) and the rest validated again,
    so the settings come back, for further checks, unless too much is wrong."""
    dropped_sinks: set[str] = set()
    for _ in range(8):
        try:
            settings = ConfigModel.model_validate(raw)
        except PydanticValidationError as exc:
            found = [p for p in problems_from(exc, ConfigModel, locate=locate) if p not in problems]
            if not found:
                return None  # nothing more could be dropped: the problems are all reported
            problems.extend(found)
            for problem in found:
                _drop(raw, problem.key, dropped_sinks)
            continue
        problems.extend(
            ConfigProblem(k, m, locate(k)) for k, m in cross_checks(settings, dropped_sinks)
        )
        return settings
    return None


def check_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> tuple[Config | None, list[ConfigProblem]]:
    """Every problem of the configuration (see :func:`load_config`), and the configuration
    without the keys they name (their defaults instead; None when the file cannot be read),
    for the checks that come after (``accessguard config check``)."""
    env = os.environ if env is None else env
    if path is None and env.get("ACCESSGUARD_CONFIG"):
        path = env["ACCESSGUARD_CONFIG"]
    raw: dict[str, Any] = {}
    where: dict[str, str] = {}
    source = None
    if path is not None:
        source = str(path)
        try:
            raw, where = read_yaml(path)
        except ConfigError as exc:
            return None, exc.problems
    problems: list[ConfigProblem] = []
    env_overrides(raw, env, where, problems)
    settings = validate(raw, locator(where, source), problems)
    if settings is None:
        return None, problems
    return Config(settings, raw=raw, where=where, source=source), problems


class Config:
    """Validated configuration: ``config["http.port"]`` / ``get(path)`` for fixed keys (values
    already typed), :attr:`settings` for the typed model (``config.settings.http.port``),
    ``providers``/``sinks``/``pollers`` as name -> settings mappings."""

    def __init__(
        self,
        settings: ConfigModel,
        *,
        raw: Mapping[str, Any],
        where: Mapping[str, str],
        source: str | None,
        pollers: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self._raw = raw
        self._where = dict(where)
        self._values: dict[str, Any] = {k.path: _attr(settings, k.path) for k in KEYS}
        self.providers: dict[str, dict[str, Any]] = {
            name: entry.values() for name, entry in settings.providers.items()
        }
        self.sinks: dict[str, dict[str, Any]] = {
            name: entry.values() for name, entry in settings.alerts.sinks.items()
        }
        self._only_pollers = pollers
        self.pollers: dict[str, dict[str, Any]] = (
            pollers
            if pollers is not None
            else {name: entry.values() for name, entry in settings.pollers.items()}
        )

    def get(self, path: str) -> Any:
        return self._values[path]

    def __getitem__(self, path: str) -> Any:
        return self._values[path]

    def locate(self, key: str) -> str | None:
        """Where ``key`` (dotted) was given: ``file:line``, ``env NAME``, or the file."""
        return locator(self._where, self.source)(key)

    def with_overrides(self, **paths: Any) -> Config:
        """A copy with some fixed keys replaced (``data_dir="x"``; dots as ``__``), validated
        like the file (types, minimums, allowed values, rules across keys)."""
        raw = _copy_maps(self._raw)
        where = dict(self._where)
        for name, value in paths.items():
            path = name.replace("__", ".")
            set_path(raw, path, value)
            where[path] = "command-line override"
        problems: list[ConfigProblem] = []
        settings = validate(raw, locator(where, self.source), problems)
        if problems or settings is None:
            raise ConfigError.of(problems)
        return Config(
            settings, raw=raw, where=where, source=self.source, pollers=self._only_pollers
        )

    def with_pollers(self, pollers: dict[str, dict[str, Any]]) -> Config:
        """A copy with only these pollers (``connect poller NAME`` runs one)."""
        return Config(
            self.settings, raw=self._raw, where=self._where, source=self.source, pollers=pollers
        )

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
        return {sev: list(self._values[f"alerts.routes.{sev}"]) for sev in SEVERITIES}

    def intent_routes(self) -> dict[str, list[str]]:
        """Sinks per rule-alert intent (``alerts.intents.*``: page, notify, review)."""
        return {intent: list(self._values[f"alerts.intents.{intent}"]) for intent in INTENTS}


def _attr(settings: ConfigModel, path: str) -> Any:
    value: Any = settings
    for part in path.split("."):
        value = getattr(value, part)
    return value


def _copy_maps(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of nested dicts (leaves shared: they are never mutated)."""
    return {k: _copy_maps(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Load YAML (optional; else ``ACCESSGUARD_CONFIG``) then apply environment overrides;
    validate every key. Raises one :class:`ConfigError` carrying every problem."""
    config, problems = check_config(path, env)
    if problems or config is None:
        raise ConfigError.of(problems)
    return config


__all__ = ["BY_PATH", "Config", "check_config", "get_path", "load_config", "read_yaml"]
