"""Kafka security settings, offline: the ``kafka`` section is validated naming each key, SASL
reaches every client library with its mechanism, user and password, secrets stay out of logs,
and no Kafka client is built anywhere but streams/bus/security.py (the one place that applies
the settings). TLS for real, through a TLS-terminating proxy: tests/test_kafka_tls.py."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

import kafka
import pytest
import structlog
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streams.bus import security
from streams.bus.security import KafkaSecurity
from streams.cli.wiring import start
from streams.config import Config, check_config, load_config
from streams.runtime.app import create_app
from streams.support.errors import ConfigError
from streams.support.logs import redact_secrets
from streams.support.secrets import Secret
from tests.test_cli import cli

REPO = Path(__file__).resolve().parent.parent
BROKER = {"ACCESSGUARD_BROKER": "kafka://kafka.example:9093"}
SASL = {
    **BROKER,
    "ACCESSGUARD_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "ACCESSGUARD_KAFKA_SASL_USERNAME": "accessguard-worker",
    "ACCESSGUARD_KAFKA_SASL_PASSWORD": "env:TEST_KAFKA_PASSWORD",
    "TEST_KAFKA_PASSWORD": "s3cr3t-pw",
}


def _problems(env: dict[str, str]) -> dict[str, str]:
    _, problems = check_config(env=env)
    return {p.key: p.message for p in problems}


def _config(tmp_path: Path, env: dict[str, str]) -> Config:
    return load_config(env={"ACCESSGUARD_DATA_DIR": str(tmp_path / "data"), **env})


class TestSettings:
    def test_defaults_are_plaintext(self) -> None:
        """Without a ``kafka`` section every client connects in plaintext, as before."""
        config = load_config(env={})
        assert KafkaSecurity.from_settings(config.settings.kafka) == security.PLAINTEXT
        assert security.PLAINTEXT.client_kwargs() == {"security_protocol": "PLAINTEXT"}

    @pytest.mark.parametrize(
        ("env", "key", "message"),
        [
            ({"ACCESSGUARD_KAFKA_SECURITY_PROTOCOL": "TLS"}, "kafka.security_protocol", "must be"),
            ({"ACCESSGUARD_KAFKA_SASL_MECHANISM": "GSSAPI"}, "kafka.sasl_mechanism", "SCRAM"),
            (
                {"ACCESSGUARD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
                "kafka.sasl_username",
                "required",
            ),
            (
                {"ACCESSGUARD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
                "kafka.sasl_password",
                "required",
            ),
            (
                {
                    "ACCESSGUARD_KAFKA_SECURITY_PROTOCOL": "SSL",
                    "ACCESSGUARD_KAFKA_CERT_FILE": "/x.crt",
                },
                "kafka.key_file",
                "mTLS needs both",
            ),
            ({"ACCESSGUARD_KAFKA_CA_FILE": "/ca.crt"}, "kafka.ca_file", "is a TLS setting"),
            ({"ACCESSGUARD_KAFKA_SASL_USERNAME": "u"}, "kafka.sasl_username", "SASL setting"),
        ],
    )
    def test_contradicting_settings_name_the_key(
        self, env: dict[str, str], key: str, message: str
    ) -> None:
        """Settings that would only fail later at the broker are refused at load, each
        problem naming its key."""
        problems = _problems({**BROKER, **env})
        assert key in problems, problems
        assert message in problems[key]

    def test_security_with_the_embedded_broker_is_refused(self, tmp_path: Path) -> None:
        """The embedded broker is plaintext on loopback: a process that would start it with
        TLS asked for stops before starting it, naming the key, rather than ignoring it."""
        config = _config(tmp_path, {"ACCESSGUARD_KAFKA_SECURITY_PROTOCOL": "SSL"})
        with pytest.raises(ConfigError, match=r"kafka\.security_protocol: SSL needs broker"):
            start(config, "worker", {}, serve_http=False)

    def test_missing_files_and_unset_secrets_stop_start_up_naming_the_key(
        self, tmp_path: Path
    ) -> None:
        """At start the files and secrets are checked where they are mounted: every missing
        one is named, and the process keeps the settings it had."""
        config = _config(
            tmp_path,
            {
                **BROKER,
                "ACCESSGUARD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "ACCESSGUARD_KAFKA_CA_FILE": str(tmp_path / "nope-ca.crt"),
                "ACCESSGUARD_KAFKA_SASL_USERNAME": "u",
                "ACCESSGUARD_KAFKA_SASL_PASSWORD": "env:UNSET_KAFKA_PASSWORD_VAR",
            },
        )
        with pytest.raises(
            ConfigError, match=r"kafka\.ca_file: .*nope-ca\.crt does not exist"
        ) as exc:
            security.configure(config)
        assert {p.key for p in exc.value.problems} == {"kafka.ca_file", "kafka.sasl_password"}
        assert security.current() == security.PLAINTEXT

    def test_config_check_names_a_missing_certificate(self, tmp_path: Path) -> None:
        """`accessguard config check`, run where the files are mounted, finds a missing CA
        or client certificate as start-up would, at its key."""
        env = {
            **BROKER,
            "ACCESSGUARD_KAFKA_SECURITY_PROTOCOL": "SSL",
            "ACCESSGUARD_KAFKA_CA_FILE": str(tmp_path / "ca.crt"),
            "ACCESSGUARD_KAFKA_CERT_FILE": str(tmp_path / "user.crt"),
            "ACCESSGUARD_KAFKA_KEY_FILE": str(tmp_path / "user.key"),
        }
        result = cli("config", "check", **env)
        assert result.exit_code == 1
        lines = [line for line in result.output.splitlines() if "kafka." in line]
        assert [line.split(": ", 2)[1] for line in lines] == [
            "kafka.ca_file",
            "kafka.cert_file",
            "kafka.key_file",
        ]
        assert all("does not exist" in line for line in lines)

    def test_a_file_that_is_not_a_certificate_is_refused(self, tmp_path: Path) -> None:
        """A CA file that is not PEM is named at start rather than at the first handshake."""
        bad = tmp_path / "ca.crt"
        bad.write_text("not a certificate\n", encoding="utf-8")
        config = _config(
            tmp_path,
            {
                **BROKER,
                "ACCESSGUARD_KAFKA_SECURITY_PROTOCOL": "SSL",
                "ACCESSGUARD_KAFKA_CA_FILE": str(bad),
            },
        )
        with pytest.raises(ConfigError, match=r"kafka\.ca_file: not a usable PEM"):
            security.configure(config)


class TestSasl:
    @pytest.fixture
    def sasl(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KafkaSecurity:
        monkeypatch.setenv("TEST_KAFKA_PASSWORD", SASL["TEST_KAFKA_PASSWORD"])
        return KafkaSecurity.from_settings(_config(tmp_path, SASL).settings.kafka)

    def test_kafka_python_clients_carry_mechanism_user_and_password(
        self, sasl: KafkaSecurity, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """kafka-python's producer, consumer and admin client are built with SCRAM-SHA-512,
        the user and the password read from its secret, every argument one kafka-python
        knows. (Their constructors are recorded, not run: a kafka-python client starts
        connecting in the background at once, and SASL needs a broker that speaks it.)"""
        built: dict[str, dict[str, Any]] = {}
        known: dict[str, set[str]] = {}
        for name in ("KafkaProducer", "KafkaConsumer", "KafkaAdminClient"):
            known[name] = set(getattr(kafka, name).DEFAULT_CONFIG)

            def record(*_topics: str, _name: str = name, **kwargs: Any) -> str:
                built[_name] = kwargs
                return _name

            monkeypatch.setattr(kafka, name, record)
        with security.using(sasl):
            security.kafka_producer("127.0.0.1:1", acks="all")
            security.kafka_consumer("127.0.0.1:1", "topic", enable_auto_commit=False)
            security.kafka_admin("127.0.0.1:1", client_id="x")
        assert set(built) == {"KafkaProducer", "KafkaConsumer", "KafkaAdminClient"}
        for name, kwargs in built.items():
            assert set(kwargs) <= known[name], name
            assert kwargs["security_protocol"] == "SASL_PLAINTEXT"
            assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
            assert kwargs["sasl_plain_username"] == "accessguard-worker"
            assert kwargs["sasl_plain_password"] == "s3cr3t-pw"

    def test_aiokafka_clients_carry_mechanism_user_and_password(self, sasl: KafkaSecurity) -> None:
        """aiokafka's producer and consumer (the views and the publisher) get the same."""

        async def build() -> list[Any]:
            producer = security.aio_producer("127.0.0.1:1", security=sasl)
            consumer = security.aio_consumer("127.0.0.1:1", security=sasl)
            await producer.stop()  # never started: this only releases them
            await consumer.stop()
            return [producer.client, consumer._client]

        for client in asyncio.run(build()):
            assert client._security_protocol == "SASL_PLAINTEXT"
            assert client._sasl_mechanism == "SCRAM-SHA-512"
            assert client._sasl_plain_username == "accessguard-worker"
            assert client._sasl_plain_password == "s3cr3t-pw"

    def test_faust_gets_scram_sha_512_credentials(
        self, sasl: KafkaSecurity, tmp_path: Path
    ) -> None:
        """The Faust app's ``broker_credentials`` become the same aiokafka arguments for its
        consumers and producer: Faust passes SCRAM-SHA-512 through unchanged."""
        with security.using(sasl):
            app = create_app(_config(tmp_path, SASL), "kafka.example:9093")
        auth = credentials_to_aiokafka_auth(app.conf.broker_credentials)
        assert auth == {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "accessguard-worker",
            "sasl_plain_password": "s3cr3t-pw",
            "ssl_context": None,
        }

    def test_the_password_is_never_logged(self, sasl: KafkaSecurity, tmp_path: Path) -> None:
        """What the start-up logs describes the settings without the password, the secret
        keys of the section are redacted by name, and the settings' repr hides the value."""
        with structlog.testing.capture_logs() as logs:
            security.configure(_config(tmp_path, SASL))
        security.configure(load_config(env={}))  # back to plaintext for the other tests
        assert logs[0]["event"] == "kafka.security"
        assert "s3cr3t-pw" not in repr(logs)
        assert "s3cr3t-pw" not in repr(sasl)
        event = {
            "sasl_password": "s3cr3t-pw",
            "key_password": Secret("x"),
            "kafka": {"sasl_password": "y"},
        }
        assert redact_secrets(None, "info", event) == {
            "sasl_password": "[redacted]",
            "key_password": "[redacted]",
            "kafka": {"sasl_password": "[redacted]"},
        }


#: The constructors of a Kafka client: each would connect without the security settings.
CLIENTS = frozenset(
    {
        "KafkaProducer",
        "KafkaConsumer",
        "KafkaAdminClient",
        "AIOKafkaProducer",
        "AIOKafkaConsumer",
        "AIOKafkaAdminClient",
        "SimpleClient",
        "KafkaClient",
    }
)
#: The one module allowed to call them.
ALLOWED = {"streams/bus/security.py"}


def _constructions(source: str) -> list[tuple[int, str]]:
    """(line, name) of every call of a Kafka client constructor, and of every Faust app
    built without ``broker_credentials``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        credentials = any(k.arg == "broker_credentials" for k in node.keywords)
        if name in CLIENTS or (name.endswith("App") and not credentials):
            found.append((node.lineno, name))
    return found


def test_no_kafka_client_is_built_outside_the_security_module() -> None:
    """Every Kafka client of the product (streams/, connectors/) comes from
    streams/bus/security.py and every Faust app is given its credentials: a new client
    built directly would connect in plaintext to a secured cluster."""
    offenders = []
    for root in ("streams", "connectors"):
        for path in sorted((REPO / root).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel in ALLOWED:
                continue
            offenders += [f"{rel}:{n}: {c}" for n, c in _constructions(path.read_text("utf-8"))]
    assert offenders == []


@pytest.mark.parametrize(
    "code",
    [
        "from kafka import KafkaProducer\nKafkaProducer(bootstrap_servers='x')\n",
        "import aiokafka\naiokafka.AIOKafkaConsumer('t', bootstrap_servers='x')\n",
        "import faust\nfaust.App('id', broker='kafka://x')\n",
    ],
)
def test_the_scan_finds_a_direct_construction(code: str) -> None:
    """The scan above is not vacuous: a direct construction or a Faust app without
    credentials is found."""
    assert len(_constructions(code)) == 1
