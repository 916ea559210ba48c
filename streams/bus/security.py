"""How every Kafka client of the process connects: TLS, mTLS and SASL, configured once.

The ``kafka`` configuration section (streams/config/models.py, ``KafkaSettings``) becomes one
:class:`KafkaSecurity`, and every client the project builds comes from the factories here:
kafka-python's producer, consumer and admin client, aiokafka's producer and consumer (both
libraries take the same ``security_protocol``/``ssl_context``/``sasl_*`` arguments), and
Faust's ``broker_credentials`` (:meth:`KafkaSecurity.faust_credentials`: Faust's own
``SSLCredentials``/``SASLCredentials``, which pass SCRAM-SHA-512 through to aiokafka
unchanged). tests/test_kafka_security.py fails when a client is constructed anywhere else, so
a new one cannot quietly connect in plaintext.

The settings are process-wide (:func:`configure` at start, :func:`current` at each use), like
the logging set-up: the broker address is threaded through every call already, and a second
parameter beside it in every signature would be one more thing to forget. The embedded broker
is plaintext on loopback and asks for :data:`PLAINTEXT` explicitly.

The SSL context is built again for each client, from the files: a certificate the operator
rotated in (Strimzi renews user and cluster CA certificates) is used by the next client built,
as ``file:`` secrets are re-read at each use. Long-lived clients (the Faust app, the
publisher, the views) keep the context they were built with until the process restarts.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from streams.support.errors import BrokerError, ConfigError, ConfigProblem
from streams.support.secrets import Secret

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from faust.types.auth import CredentialsT
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    from streams.config import Config
    from streams.config.kafka import KafkaSettings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class KafkaSecurity:
    """One validated ``kafka`` section (see ``KafkaSettings`` for each field's meaning)."""

    protocol: str = "PLAINTEXT"
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    key_password: Secret | None = None
    check_hostname: bool = True
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: Secret | None = None

    @classmethod
    def from_settings(cls, kafka: KafkaSettings) -> KafkaSecurity:
        return cls(
            protocol=kafka.security_protocol,
            ca_file=kafka.ca_file,
            cert_file=kafka.cert_file,
            key_file=kafka.key_file,
            key_password=kafka.key_password,
            check_hostname=kafka.check_hostname,
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_username=kafka.sasl_username,
            sasl_password=kafka.sasl_password,
        )

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def describe(self) -> dict[str, Any]:
        """What may be logged: the protocol and which parts are set, never a secret."""
        return {
            "protocol": self.protocol,
            "ca_file": self.ca_file or ("system" if self.tls else None),
            "client_cert": bool(self.cert_file),
            "sasl_mechanism": self.sasl_mechanism if self.sasl else None,
        }

    def problems(self) -> list[ConfigProblem]:
        """Every reason the settings cannot be used here and now (a file missing or not a
        certificate or key, a secret that does not resolve), each naming its key."""
        out: list[ConfigProblem] = []
        if self.tls:
            files = {"ca_file": self.ca_file, "cert_file": self.cert_file}
            files["key_file"] = self.key_file
            for key, path in files.items():
                if path and not os.access(path, os.R_OK):
                    reason = "does not exist" if not os.path.exists(path) else "is not readable"
                    out.append(ConfigProblem(f"kafka.{key}", f"{path} {reason}"))
        secrets = {"kafka.key_password": self.key_password}
        if self.sasl:
            secrets["kafka.sasl_password"] = self.sasl_password
        for key, secret in secrets.items():
            why = secret.problem() if secret is not None else None
            if why is not None:
                out.append(ConfigProblem(key, why))
        if self.tls and not out:
            try:
                self.ssl_context()
            except ssl.SSLError as exc:
                key = "kafka.cert_file" if self.cert_file else "kafka.ca_file"
                out.append(ConfigProblem(key, f"not a usable PEM certificate/key: {exc.reason}"))
        return out

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context that checks the broker against ``ca_file`` (else the system's
        CAs) and its name (unless ``check_hostname`` is false), presenting the client
        certificate when one is set; None without TLS."""
        if not self.tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file or None)
        context.check_hostname = self.check_hostname
        if self.cert_file:
            password = self.key_password.reveal() if self.key_password is not None else None
            context.load_cert_chain(self.cert_file, self.key_file or None, password=password)
        return context

    def client_kwargs(self) -> dict[str, Any]:
        """The security arguments of a kafka-python or aiokafka client (the same names)."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            kwargs["ssl_context"] = self.ssl_context()
        if self.sasl:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = (
                self.sasl_password.reveal() if self.sasl_password is not None else ""
            )
        return kwargs

    def faust_credentials(self) -> CredentialsT | None:
        """Faust's ``broker_credentials`` for these settings (None: plaintext). Faust turns
        them into the same aiokafka arguments for its consumers and producer."""
        import faust  # noqa: PLC0415 - the Faust app only

        if self.sasl:
            password = self.sasl_password.reveal() if self.sasl_password is not None else ""
            # With an SSL context SASLCredentials says SASL_SSL, without it SASL_PLAINTEXT.
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=password,
                ssl_context=self.ssl_context(),
                mechanism=self.sasl_mechanism,
            )
        if self.tls:
            return faust.SSLCredentials(self.ssl_context())
        return None


#: The embedded broker's settings, and the default until :func:`configure` runs.
PLAINTEXT = KafkaSecurity()

_current: KafkaSecurity = PLAINTEXT


def configure(config: Config) -> KafkaSecurity:
    """Check the ``kafka`` section against the files here (ConfigError naming every bad key)
    and make it the settings of every Kafka client this process builds from now on."""
    global _current  # process-wide on purpose (module docstring)
    security = KafkaSecurity.from_settings(config.settings.kafka)
    problems = [ConfigProblem(p.key, p.message, config.locate(p.key)) for p in security.problems()]
    if problems:
        raise ConfigError.of(problems)
    _current = security
    if security != PLAINTEXT:  # the default says nothing worth a line in every command
        log.info("kafka.security", **security.describe())
    return security


def current() -> KafkaSecurity:
    return _current


@contextlib.contextmanager
def using(security: KafkaSecurity) -> Iterator[KafkaSecurity]:
    """``security`` as the process's settings inside the block (the previous ones after)."""
    global _current
    before, _current = _current, security
    try:
        yield security
    finally:
        _current = before


#: A Kafka ApiVersions v0 request (size, api key 18, version 0, correlation id 1, client id
#: "accessguard-tls-check"): any broker answers it before authentication.
_API_VERSIONS = struct.pack(">ihhih", 31, 18, 0, 1, 21) + b"accessguard-tls-check"


def check_tls(bootstrap: str, security: KafkaSecurity | None = None, timeout: float = 5.0) -> None:
    """ConfigError naming the key to fix when the first bootstrap server that accepts a
    connection presents a certificate these settings do not trust (or for another name), or
    refuses this client's certificate (or its absence) with a TLS alert: the Kafka clients
    would only retry until their timeout, saying "no brokers available". The check sends one
    ApiVersions request, so a broker that requires a client certificate has said so by the
    time it answers; one that hangs up without a word is a BrokerError saying what it may
    mean. Nothing without TLS, or when no server accepts or answers (a broker not up yet is
    waited for by the caller)."""
    settings = security or _current
    context = settings.ssl_context()
    if context is None:
        return
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        host = host.strip("[]")
        try:
            with (
                socket.create_connection((host, int(port)), timeout=timeout) as raw,
                context.wrap_socket(raw, server_hostname=host) as tls,
            ):
                answered = _answer(tls)
        except ssl.SSLCertVerificationError as exc:
            why = str(exc.verify_message or exc.reason or exc)
            if "hostname" in why.lower() or "ip address mismatch" in why.lower():
                key, fix = "kafka.check_hostname", "connect by a name the certificate holds"
            else:
                key, fix = "kafka.ca_file", "set it to the CA that signed the brokers' certificates"
            raise ConfigError(
                key, f"the broker at {server.strip()} is not trusted ({why}): {fix}"
            ) from None
        except (OSError, ValueError):
            continue  # refused, reset or silent before the handshake: the caller's wait decides
        if answered is None:
            return
        alert, why = answered
        given = "this client's certificate" if settings.cert_file else "a client without one"
        if alert:  # the broker said so: a setting to fix, not a broker to wait for
            raise ConfigError(
                "kafka.cert_file",
                f"the broker at {server.strip()} refused {given} ({why}): it requires a "
                "client certificate it trusts (mTLS); set kafka.cert_file and "
                "kafka.key_file (Strimzi: the KafkaUser's Secret, user.crt and user.key)",
            )
        # Hung up without saying why: a refused client certificate where the server sends no
        # alert, or a TLS proxy that cannot reach its broker. A BrokerError: waited out by a
        # service (with this reason in its logs and /readyz), one line for a one-shot command.
        raise BrokerError(
            f"the broker at {server.strip()} closed the connection after the TLS handshake "
            f"without answering ({why}): it may refuse {given} (mTLS: set kafka.cert_file "
            "and kafka.key_file), or a TLS proxy in front of it cannot reach it"
        )


def _answer(tls: ssl.SSLSocket) -> tuple[bool, str] | None:
    """Send an ApiVersions request: None when the broker answered (or was only slow: the
    caller's wait decides); else (whether it sent a TLS alert, why it closed the
    connection). A server that refuses the client may close before the request is written:
    its alert is then still there to read."""
    try:
        try:
            tls.sendall(_API_VERSIONS)
        except OSError:
            tls.recv(4)  # raises the alert, if the server sent one before closing
            return False, "closed without an alert"
        return None if tls.recv(4) else (False, "closed without an alert")
    except TimeoutError:
        return None
    except ssl.SSLError as exc:
        reason = str(exc.reason or exc)
        return ("ALERT" in reason.upper() or "CERTIFICATE" in reason.upper()), reason
    except OSError as exc:
        return False, exc.strerror or type(exc).__name__


def _kwargs(security: KafkaSecurity | None, options: dict[str, Any]) -> dict[str, Any]:
    return {**options, **(security or _current).client_kwargs()}


def kafka_producer(
    bootstrap: str, *, security: KafkaSecurity | None = None, **options: Any
) -> KafkaProducer:
    """A kafka-python producer with the process's (or ``security``'s) settings."""
    from kafka import KafkaProducer  # noqa: PLC0415 - keep CLI start-up light

    return KafkaProducer(bootstrap_servers=bootstrap, **_kwargs(security, options))


def kafka_consumer(
    bootstrap: str, *topics: str, security: KafkaSecurity | None = None, **options: Any
) -> KafkaConsumer:
    """A kafka-python consumer with the process's (or ``security``'s) settings."""
    from kafka import KafkaConsumer  # noqa: PLC0415

    return KafkaConsumer(*topics, bootstrap_servers=bootstrap, **_kwargs(security, options))


def kafka_admin(
    bootstrap: str, *, security: KafkaSecurity | None = None, **options: Any
) -> KafkaAdminClient:
    """A kafka-python admin client with the process's (or ``security``'s) settings."""
    from kafka import KafkaAdminClient  # noqa: PLC0415

    return KafkaAdminClient(bootstrap_servers=bootstrap, **_kwargs(security, options))


def aio_producer(
    bootstrap: str, *, security: KafkaSecurity | None = None, **options: Any
) -> AIOKafkaProducer:
    """An aiokafka producer (build it inside the running loop, which it binds)."""
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415

    return AIOKafkaProducer(bootstrap_servers=bootstrap, **_kwargs(security, options))


def aio_consumer(
    bootstrap: str, *topics: str, security: KafkaSecurity | None = None, **options: Any
) -> AIOKafkaConsumer:
    """An aiokafka consumer (build it inside the running loop, which it binds)."""
    from aiokafka import AIOKafkaConsumer  # noqa: PLC0415

    return AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, **_kwargs(security, options))
