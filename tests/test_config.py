"""Configuration: defaults, YAML, ``ACCESSGUARD_*`` overrides and validation naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from click.testing import CliRunner

from connectors.base.catalogue import build_provider, check_connectors, poller_settings
from streams.cli import main
from streams.config import (
    DEFAULT_ROUTE_SINKS,
    INTENTS,
    KEYS,
    SEVERITIES,
    AccessGuardSettings,
    Config,
    check_config,
    load_config,
)
from streams.runtime.secretcheck import reference_problems
from streams.support.errors import ConfigError
from streams.support.secrets import Secret
from tests.pki import write_pki


def _yaml(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _error(path: Path | None = None, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    return info.value


class TestDefaults:
    def test_every_key_has_its_documented_default(self) -> None:
        """With no file and no environment, every fixed key holds the default of KEYS."""
        config = load_config(env={})
        for key in KEYS:
            assert config.get(key.path) == key.default, key.path
        assert config.source is None
        assert config.providers == {}
        assert config.sinks == {}

    def test_defaults_mean_embedded_broker_and_prefixed_topics(self) -> None:
        """An empty broker means the embedded Tansu; topic names carry the prefix."""
        config = load_config(env={})
        assert config.embedded is True
        assert config.data_dir == Path("data")
        assert config.topic("hr.events") == "accessguard.hr.events"
        assert config["worker.fetch_max_wait_ms"] == 20
        assert config.routes()["critical"] == ["pagerduty", "slack"]

    def test_env_var_names_follow_the_key_path(self) -> None:
        """``http.port`` is ``ACCESSGUARD_HTTP_PORT``: dots become underscores, upper-cased."""
        by_path = {k.path: k.env for k in KEYS}
        assert by_path["http.port"] == "ACCESSGUARD_HTTP_PORT"
        assert by_path["broker"] == "ACCESSGUARD_BROKER"
        assert by_path["worker.fetch_max_wait_ms"] == "ACCESSGUARD_WORKER_FETCH_MAX_WAIT_MS"


class TestPrecedence:
    def test_yaml_overrides_default_and_env_overrides_yaml(self, tmp_path: Path) -> None:
        """Default < YAML < environment, key by key; values are coerced to the key's type."""
        path = _yaml(
            tmp_path,
            {"http": {"port": 9001, "host": "0.0.0.0"}, "worker": {"id": "from-yaml"}},
        )
        config = load_config(
            path, env={"ACCESSGUARD_HTTP_PORT": "9002", "ACCESSGUARD_EXECUTOR_DRY_RUN": "yes"}
        )
        assert config["http.port"] == 9002  # env beats YAML, and is an int
        assert config["http.host"] == "0.0.0.0"  # YAML beats default
        assert config["worker.id"] == "from-yaml"
        assert config["executor.dry_run"] is True  # env beats default
        assert config["topics.partitions"] == 4  # untouched default
        assert config.source == str(path)

    def test_accessguard_config_env_names_the_file(self, tmp_path: Path) -> None:
        """Without an explicit path, ACCESSGUARD_CONFIG points at the YAML file."""
        path = _yaml(tmp_path, {"broker": "kafka://k1:9092"})
        config = load_config(env={"ACCESSGUARD_CONFIG": str(path)})
        assert config["broker"] == "kafka://k1:9092"
        assert config.embedded is False

    def test_list_from_env_is_comma_separated(self) -> None:
        """A route list given in the environment is split on commas, blanks dropped."""
        config = load_config(
            env={
                "ACCESSGUARD_ALERTS_ROUTES_CRITICAL": "pagerduty, slack ,",
                "ACCESSGUARD_ALERTS_SINKS__PAGERDUTY__TYPE": "pagerduty",
                "ACCESSGUARD_ALERTS_SINKS__SLACK__TYPE": "slack",
            }
        )
        assert config.routes()["critical"] == ["pagerduty", "slack"]

    def test_empty_yaml_file_gives_defaults(self, tmp_path: Path) -> None:
        """An empty file is a valid (empty) configuration."""
        path = tmp_path / "empty.yaml"
        path.write_text("", encoding="utf-8")
        assert load_config(path, env={})["http.port"] == 8080


class TestBadValues:
    @pytest.mark.parametrize(
        ("env", "key", "message"),
        [
            ({"ACCESSGUARD_HTTP_PORT": "abc"}, "http.port", "expected an integer, got 'abc'"),
            ({"ACCESSGUARD_HTTP_PORT": "-1"}, "http.port", "must be >= 0"),
            ({"ACCESSGUARD_TOPICS_PARTITIONS": "0"}, "topics.partitions", "must be >= 1"),
            ({"ACCESSGUARD_HTTP_PORT": "80.5"}, "http.port", "expected an integer, got '80.5'"),
            ({"ACCESSGUARD_EXECUTOR_DRY_RUN": "maybe"}, "executor.dry_run", "true/false"),
            ({"ACCESSGUARD_RETRY_BASE_DELAY": "soon"}, "retry.base_delay", "a number, got 'soon'"),
            ({"ACCESSGUARD_RETRY_BASE_DELAY": "nan"}, "retry.base_delay", "finite"),
            ({"ACCESSGUARD_RETRY_READ_TIMEOUT": "inf"}, "retry.read_timeout", "finite"),
            ({"ACCESSGUARD_LOG_FORMAT": "xml"}, "log.format", "auto, json or console"),
            ({"ACCESSGUARD_LOG_LEVEL": "loud"}, "log.level", "debug, info"),
            (
                {"ACCESSGUARD_WORKER_SESSION_TIMEOUT": "1.0"},
                "worker.session_timeout",
                "larger than worker.heartbeat_interval",
            ),
        ],
    )
    def test_bad_env_value_names_the_key(self, env: dict[str, str], key: str, message: str) -> None:
        """A bad environment value stops loading with a ConfigError whose key is the path."""
        with pytest.raises(ConfigError, match=message) as info:
            load_config(env=env)
        assert info.value.key == key
        assert str(info.value).startswith(f"config {key}: ")

    @pytest.mark.parametrize(
        ("data", "key", "message"),
        [
            ({"http": {"port": True}}, "http.port", "expected an integer"),
            ({"http": {"port": 1.5}}, "http.port", "expected an integer"),
            ({"broker": {"host": "x"}}, "broker", "expected a string"),
            ({"alerts": {"routes": {"info": [1, 2]}}}, "alerts.routes.info", "list of names"),
            ({"hr": {"webhook_secret": 123}}, "hr.webhook_secret", "expected a string"),
            ({"log": {"format": "pretty"}}, "log.format", "auto, json or console"),
            ({"providers": ["okta"]}, "providers", "mapping of name"),
            ({"providers": {"okta": "yes"}}, "providers.okta", "mapping of settings"),
            ({"providers": {"okta": {"token": "t"}}}, "providers.okta.type", "required"),
            (
                {"providers": {"okta": {"type": "okta", "dry_run": "perhaps"}}},
                "providers.okta.dry_run",
                "true/false",
            ),
        ],
    )
    def test_bad_yaml_value_names_the_key(
        self, tmp_path: Path, data: dict[str, Any], key: str, message: str
    ) -> None:
        """A bad YAML value stops loading with a ConfigError naming the dotted key."""
        with pytest.raises(ConfigError, match=message) as info:
            load_config(_yaml(tmp_path, data), env={})
        assert info.value.key == key

    def test_unknown_yaml_key_is_named(self, tmp_path: Path) -> None:
        """A misspelt key is refused (not silently ignored), and the error names it."""
        err = _error(_yaml(tmp_path, {"http": {"prot": 9000}}))
        assert err.key == "http.prot"
        assert "unknown key" in str(err)

    def test_unknown_top_level_scalar_is_named(self, tmp_path: Path) -> None:
        """A section given as a scalar is an unknown key, not a crash."""
        assert _error(_yaml(tmp_path, {"htttp": 5})).key == "htttp"

    def test_missing_file_and_bad_yaml_name_the_config(self, tmp_path: Path) -> None:
        """An unreadable or unparsable file is reported against ``config`` with the path."""
        with pytest.raises(ConfigError, match="cannot read") as info:
            load_config(tmp_path / "nope.yaml", env={})
        assert info.value.key == "config"
        bad = tmp_path / "bad.yaml"
        bad.write_text("http: [unclosed", encoding="utf-8")
        with pytest.raises(ConfigError, match="not valid YAML"):
            load_config(bad, env={})
        listed = tmp_path / "list.yaml"
        listed.write_text("- a\n- b\n", encoding="utf-8")
        with pytest.raises(ConfigError, match="mapping at top level"):
            load_config(listed, env={})

    def test_route_to_a_missing_sink_is_refused(self, tmp_path: Path) -> None:
        """Once sinks are configured, every routed name must be one of them."""
        data = {
            "alerts": {
                "sinks": {"slack": {"type": "slack", "webhook_url": "https://hooks.example/x"}},
                "routes": {"critical": ["slack"], "high": ["slack", "opsgenie"]},
            }
        }
        with pytest.raises(ConfigError, match="no sink named 'opsgenie'") as info:
            load_config(_yaml(tmp_path, data), env={})
        assert info.value.key == "alerts.routes.high"

    def test_default_routes_to_unconfigured_pagerduty_are_refused(self, tmp_path: Path) -> None:
        """Default routes name pagerduty; configuring only slack must say so, not drop pages."""
        data = {"alerts": {"sinks": {"slack": {"type": "slack", "webhook_url": "https://h/x"}}}}
        err = _error(_yaml(tmp_path, data))
        assert err.key == "alerts.routes.critical"
        assert "'pagerduty'" in str(err)

    def test_malformed_map_env_var_is_named(self) -> None:
        """``ACCESSGUARD_PROVIDERS__OKTA`` without a setting part is refused with the var."""
        err = _error(env={"ACCESSGUARD_PROVIDERS__OKTA": "x"})
        assert err.key == "ACCESSGUARD_PROVIDERS__OKTA"
        assert "<NAME>__<KEY>" in str(err)


class TestProvidersFromEnv:
    def test_provider_token_from_env_is_a_secret_hidden_from_repr(self) -> None:
        """``ACCESSGUARD_PROVIDERS__OKTA__TOKEN`` builds providers.okta.token as a Secret whose
        repr and str never show the value; reveal() gives it at the point of use."""
        config = load_config(
            env={
                "ACCESSGUARD_PROVIDERS__OKTA__TYPE": "okta",
                "ACCESSGUARD_PROVIDERS__OKTA__TOKEN": "s3cr3t-okta-token",
                "ACCESSGUARD_PROVIDERS__OKTA__BASE_URL": "https://lumen.okta.example",
            }
        )
        okta = config.providers["okta"]
        token = okta["token"]
        assert isinstance(token, Secret)
        assert token.reveal() == "s3cr3t-okta-token"
        assert "s3cr3t" not in repr(token)
        assert "s3cr3t" not in str(token)
        assert "s3cr3t" not in repr(config.providers)
        assert okta["base_url"] == "https://lumen.okta.example"  # not a secret key
        assert config.provider_types() == {"okta": "okta"}

    def test_env_overrides_a_yaml_provider_setting_by_normalised_name(self, tmp_path: Path) -> None:
        """``META_BUSINESS`` in the env addresses the YAML provider named ``meta-business``."""
        data = {
            "providers": {
                "meta-business": {
                    "type": "generic",
                    "base_url": "https://meta.example",
                    "token": "yaml-token",
                }
            }
        }
        config = load_config(
            _yaml(tmp_path, data),
            env={"ACCESSGUARD_PROVIDERS__META_BUSINESS__TOKEN": "env-token"},
        )
        assert set(config.providers) == {"meta-business"}
        assert config.providers["meta-business"]["token"].reveal() == "env-token"
        assert config.providers["meta-business"]["base_url"] == "https://meta.example"

    def test_secret_references_are_resolved_at_use(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``env:NAME`` and ``file:/path`` secrets are read when revealed, so a rotated
        mounted secret is picked up without a restart."""
        secret_file = tmp_path / "hr-secret"
        secret_file.write_text("first\n", encoding="utf-8")
        config = load_config(
            env={
                "ACCESSGUARD_HR_WEBHOOK_SECRET": f"file:{secret_file}",
                "ACCESSGUARD_ALERTS_SINKS__PD__TYPE": "pagerduty",
                "ACCESSGUARD_ALERTS_SINKS__PD__ROUTING_KEY": "env:PD_KEY",
                "ACCESSGUARD_ALERTS_ROUTES_CRITICAL": "pd",
                "ACCESSGUARD_ALERTS_ROUTES_HIGH": "pd",
                "ACCESSGUARD_ALERTS_ROUTES_MEDIUM": "pd",
                "ACCESSGUARD_ALERTS_ROUTES_LOW": "pd",
                "ACCESSGUARD_ALERTS_ROUTES_INFO": "pd",
                "ACCESSGUARD_ALERTS_INTENTS_PAGE": "pd",
                "ACCESSGUARD_ALERTS_INTENTS_NOTIFY": "pd",
                "ACCESSGUARD_ALERTS_INTENTS_REVIEW": "pd",
            }
        )
        hr_secret = config["hr.webhook_secret"]
        assert hr_secret.reveal() == "first"
        secret_file.write_text("rotated\n", encoding="utf-8")
        assert hr_secret.reveal() == "rotated"
        assert repr(hr_secret) == f"Secret(file:{secret_file})"
        monkeypatch.setenv("PD_KEY", "routing-key-value")
        assert config.sinks["pd"]["routing_key"].reveal() == "routing-key-value"


class TestWithOverrides:
    def test_override_replaces_and_coerces_without_touching_the_original(self) -> None:
        """``with_overrides(http__port="9100")`` gives a copy with an int port; the original
        keeps its value."""
        base = load_config(env={})
        copy = base.with_overrides(http__port="9100", data_dir="elsewhere")
        assert copy["http.port"] == 9100
        assert copy.data_dir == Path("elsewhere")
        assert base["http.port"] == 8080
        assert isinstance(copy, Config)

    def test_override_of_unknown_key_is_refused(self) -> None:
        """An unknown override names the dotted key."""
        with pytest.raises(ConfigError, match="unknown key") as info:
            load_config(env={}).with_overrides(http__prot=1)
        assert info.value.key == "http.prot"

    def test_override_with_a_bad_value_is_refused(self) -> None:
        """Overrides are validated like the file: type and minimum."""
        with pytest.raises(ConfigError, match="must be >= 0") as info:
            load_config(env={}).with_overrides(http__port=-5)
        assert info.value.key == "http.port"

    def test_override_is_checked_against_the_other_rules(self) -> None:
        """An override cannot slip past the checks load_config makes (allowed values)."""
        with pytest.raises(ConfigError, match="auto, json or console") as info:
            load_config(env={}).with_overrides(log__format="xml")
        assert info.value.key == "log.format"


# --- typed settings, every problem at once, `accessguard config check` ------------------------

UNSET = "ACCESSGUARD_TEST_SURELY_UNSET_VARIABLE"
REPO = Path(__file__).resolve().parent.parent

#: One file with the four mistakes `config check` must report together, each at its line.
FOUR_MISTAKES = f"""\
http:
  port: abc
providers:
  okta:
    type: okta
    base_url: https://example.okta.com
    token: env:{UNSET}
  google:
    type: google
    base_url: https://admin.googleapis.com
    token: inline-token
    dryrun: true
  directory:
    type: ldap
"""


def _four_mistakes(tmp_path: Path) -> tuple[Path, list[str]]:
    path = tmp_path / "config.yaml"
    path.write_text(FOUR_MISTAKES, encoding="utf-8")
    return path, [
        f"{path}:2: http.port: expected an integer, got 'abc'",
        f"{path}:7: providers.okta.token: secret (env:{UNSET}) does not resolve: "
        f"environment variable {UNSET} is not set",
        f"{path}:12: providers.google.dryrun: unknown key (did you mean dry_run?)",
        f"{path}:14: providers.directory.type: must be one of generic, google, graph, okta, "
        "openbao, secret_store",
    ]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ACCESSGUARD_") and k != UNSET}


def _all_problems(path: Path | None, env: dict[str, str]) -> list[str]:
    """What `config check` finds: fixed keys, connectors, secret references."""
    config, problems = check_config(path, env=env)
    assert config is not None
    problems += check_connectors(config)
    problems += reference_problems(config)[0]
    return sorted((p.located() for p in problems), key=lambda line: int(line.split(":")[1]))


class TestEveryProblemAtOnce:
    def test_config_check_finds_the_four_mistakes_in_one_run(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A misspelt provider key (which used to be ignored while the provider made real
        calls), a wrong type, an unresolvable secret reference and an unknown provider type
        are all reported in one run, each at its file:line."""
        monkeypatch.delenv(UNSET, raising=False)
        path, expected = _four_mistakes(tmp_path)
        assert _all_problems(path, {}) == expected

    def test_the_cli_reports_the_four_mistakes_and_exits_1(self, tmp_path: Path) -> None:
        """`accessguard config check --config F`: one line per problem, exit 1."""
        path, expected = _four_mistakes(tmp_path)
        result = subprocess.run(
            [sys.executable, "-m", "streams.cli", "config", "check", "--config", str(path)],
            cwd=tmp_path,  # the default registry file is not here: not checked
            env={**_clean_env(), "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1, result.stderr
        assert result.stdout.splitlines() == expected
        assert result.stderr.strip() == f"4 problem(s) in {path}"

    def test_load_config_reports_every_fixed_key_problem_with_its_line(
        self, tmp_path: Path
    ) -> None:
        """load_config raises one ConfigError carrying every problem; str() is one line per
        problem, the first as a single error reads."""
        path = tmp_path / "config.yaml"
        path.write_text(
            "http:\n  port: abc\n  prot: 1\nlog:\n  level: loud\ntopics:\n  partitions: 0\n",
            encoding="utf-8",
        )
        err = _error(path)
        located = sorted(p.located() for p in err.problems)
        assert located == [
            f"{path}:2: http.port: expected an integer, got 'abc'",
            f"{path}:3: http.prot: unknown key (did you mean port?)",
            f"{path}:5: log.level: must be debug, info, warning or error",
            f"{path}:7: topics.partitions: must be >= 1, got 0",
        ]
        lines = str(err).splitlines()
        assert len(lines) == 4
        assert all(line.startswith("config ") for line in lines)
        assert err.key == err.problems[0].key

    def test_environment_overrides_are_located_by_their_variable(self) -> None:
        """A bad override names its variable; a provider key given in the environment is
        checked against the provider's model like one from the file."""
        config, problems = check_config(
            None,
            env={
                "ACCESSGUARD_HTTP_PORT": "abc",
                "ACCESSGUARD_PROVIDERS__OKTA__TYPE": "okta",
                "ACCESSGUARD_PROVIDERS__OKTA__BASE_URL": "https://x.okta.com",
                "ACCESSGUARD_PROVIDERS__OKTA__DRY_RUN": "true",
                "ACCESSGUARD_PROVIDERS__OKTA__DRYRUN": "true",
            },
        )
        assert config is not None
        assert [p.located() for p in problems] == [
            "env ACCESSGUARD_HTTP_PORT: http.port: expected an integer, got 'abc'"
        ]
        assert [p.located() for p in check_connectors(config)] == [
            "env ACCESSGUARD_PROVIDERS__OKTA__DRYRUN: providers.okta.dryrun: unknown key "
            "(did you mean dry_run?)"
        ]

    def test_connector_models_know_each_types_keys(self, tmp_path: Path) -> None:
        """Pollers, generic request templates and sinks have typed keys too; a valid entry
        of every kind passes."""
        data = {
            "providers": {
                "platform": {
                    "type": "generic",
                    "base_url": "https://p.example",
                    "token": "t",
                    "actions": {"revoke_session": {"method": "POST", "path": "/x"}},
                },
                "okta": {"type": "oktaa", "base_url": "https://x.okta.com", "token": "t"},
                "store": {"type": "secret_store", "path": "data/secrets"},
            },
            "pollers": {
                "logs": {
                    "type": "graph",
                    "token": "t",
                    "intervall": 5,
                    "start": "yesterday",
                },
                "leaks": {"type": "hibp", "api_key": "k", "domains": "a.example, b.example"},
                "okta-logs": {"type": "okta", "base_url": "https://x.okta.com", "token": "t"},
            },
            "alerts": {
                "sinks": {
                    "pd": {"type": "pagerduty", "routing_key": "rk", "url": "http://pd.example"},
                    "chat": {"type": "slack", "dry_run": True},
                },
                "routes": {key: ["pd", "chat"] for key in SEVERITIES},
                "intents": {key: ["pd", "chat"] for key in INTENTS},
            },
        }
        config = load_config(_yaml(tmp_path, data), env={})
        found = {p.key: p.message for p in check_connectors(config)}
        assert found == {
            "providers.platform.actions.revoke_session": "unknown key (did you mean "
            "revoke_sessions?)",
            "providers.okta.type": "must be one of generic, google, graph, okta, openbao, "
            "secret_store (did you mean okta?)",
            "pollers.logs.intervall": "unknown key (did you mean interval?)",
            "pollers.logs.start": 'must be "now" or an ISO 8601 time',
            "alerts.sinks.pd.url": "must use https:// (plain http only for loopback hosts)",
        }

    def test_build_provider_refuses_a_misspelt_key(self) -> None:
        """`dryrun: true` no longer builds a provider that makes real calls."""
        with pytest.raises(ConfigError, match=r"providers\.x\.dryrun: unknown key") as info:
            build_provider(
                "x",
                {
                    "type": "okta",
                    "base_url": "https://x.okta.com",
                    "token": Secret("t"),
                    "dryrun": True,
                },
                cast(Any, None),  # refused before any HTTP client is needed
            )
        assert "did you mean dry_run?" in str(info.value)

    def test_validated_settings_are_the_mapping_the_constructor_takes(self) -> None:
        """Only the keys given, typed (an environment string becomes a number), secrets as
        Secret objects."""
        values = poller_settings(
            "logs",
            {"type": "okta", "base_url": "https://x.okta.com", "token": "env:X", "limit": "50"},
        )
        assert values["limit"] == 50
        assert isinstance(values["token"], Secret)
        assert set(values) == {"type", "base_url", "token", "limit"}


class TestTypedSettings:
    def test_the_typed_model_is_exposed(self, tmp_path: Path) -> None:
        """``config.settings.http.port`` is an int; maps keep their names."""
        config = load_config(
            _yaml(tmp_path, {"http": {"port": "9001"}}), env={"ACCESSGUARD_RETRY_BASE_DELAY": "2"}
        )
        assert config.settings.http.port == 9001
        assert config.settings.retry.base_delay == 2.0
        assert config.routes() == {s: list(DEFAULT_ROUTE_SINKS[s]) for s in SEVERITIES}

    def test_pydantic_settings_reads_the_process_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("ACCESSGUARD_HTTP_PORT", "9100")
        monkeypatch.setenv("ACCESSGUARD_PROVIDERS__OKTA__TYPE", "okta")
        settings = AccessGuardSettings()
        assert settings.http.port == 9100
        assert settings.providers["okta"].type == "okta"

    def test_secrets_never_show_in_repr_dump_or_errors(self, tmp_path: Path) -> None:
        """A Secret stays a Secret: its value is in no repr, dump or error message."""
        config = load_config(
            _yaml(tmp_path, {"hr": {"webhook_secret": "s3cr3t-value"}, "auth": {}}), env={}
        )
        assert "s3cr3t" not in repr(config.settings)
        assert config.settings.model_dump()["hr"]["webhook_secret"] == "<inline>"
        err = _error(_yaml(tmp_path, {"hr": {"webhook_secret": ["s3cr3t-value"]}}))
        assert "s3cr3t" not in str(err)
        schema = AccessGuardSettings.model_json_schema()
        assert "password" in str(schema["$defs"]["HrSettings"])


class TestConfigCheckCommand:
    def _run(self, *args: str, env: dict[str, str] | None = None) -> Any:
        return CliRunner().invoke(main, ["config", "check", *args], env=env or {})

    def test_the_example_configuration_passes(self) -> None:
        """examples/config.yaml: its tokens belong to dry-run providers, so they need not
        resolve; the summary says so."""
        env = {k: None for k in os.environ if k.startswith("ACCESSGUARD_")}
        result = CliRunner().invoke(
            main, ["config", "check", "--config", "examples/config.yaml"], env=env
        )
        assert result.exit_code == 0, result.output
        assert result.output.startswith("examples/config.yaml: ok (6 providers, 0 pollers, 2 ")
        assert len(result.output.splitlines()) == 1

    def test_the_kubernetes_configuration_passes(self, tmp_path: Path) -> None:
        """deploy/k8s/base/config.yaml passes without its mounted secrets (--no-secrets), and
        with them (here: the same file names in a temporary directory, and a test CA's
        certificates for the Kafka CA and client certificate it names)."""
        source = REPO / "deploy" / "k8s" / "base" / "config.yaml"
        env = {
            **{k: None for k in os.environ if k.startswith("ACCESSGUARD_")},
            "ACCESSGUARD_BROKER": "kafka://kafka:9092",
        }
        result = CliRunner().invoke(
            main, ["config", "check", "--no-secrets", "--config", str(source)], env=env
        )
        assert result.exit_code == 0, result.output
        text = source.read_text(encoding="utf-8")
        mounted = "/var/run/secrets/accessguard/"
        for name in {
            line.split(mounted)[1].strip() for line in text.splitlines() if mounted in line
        }:
            (tmp_path / name).write_text("value\n", encoding="utf-8")
        # the Kafka CA and client certificate, mounted from the KafkaUser's Secret in the pod
        pki = write_pki(tmp_path)
        for path, cert in (
            ("/etc/accessguard/kafka-ca/ca.crt", pki.ca),
            ("/var/run/secrets/kafka-user/user.crt", pki.client_cert),
            ("/var/run/secrets/kafka-user/user.key", pki.client_key),
        ):
            assert path in text
            text = text.replace(path, str(cert))
        local = tmp_path / "config.yaml"
        local.write_text(text.replace(mounted, f"{tmp_path}/"), encoding="utf-8")
        result = CliRunner().invoke(main, ["config", "check", "--config", str(local)], env=env)
        assert result.exit_code == 0, result.output
        assert "every secret in use resolves" in result.output
