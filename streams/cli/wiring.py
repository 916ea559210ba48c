"""What the commands share: the ``--config`` option, one-line errors, and the start-up of a
process that talks to the broker.

Every long-running command (``run``, ``worker``, ``connect hr-webhook``, ``connect poller``)
starts through :func:`start`, in one order: logging, the secrets it uses, everything local
(the HTTP port, the data directory), and only then the broker. Local problems are found
before a broker is started or waited for, so they fail in one line with nothing to clean up.
The one-shot commands that publish (``registry import``, ``leaks import``) reach the broker
through :func:`open_broker`: at once or not at all, no visible wait.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from connectors.base.catalogue import check_connectors
from streams.config import Config, load_config
from streams.support.errors import BrokerError, ConfigError
from streams.support.logs import configure_logging

if TYPE_CHECKING:  # the runtime is imported when a command runs: `--help` stays light
    from connectors.custody.embedded import EmbeddedOpenBao
    from connectors.custody.settings import OpenBaoSettings
    from streams.bus.broker import EmbeddedBroker
    from streams.runtime.app import AccessGuardApp
    from streams.runtime.secretcheck import SecretWatch
    from streams.runtime.worker import WorkerServices

config_option = click.option(
    "--config",
    "config_path",
    envvar="ACCESSGUARD_CONFIG",
    type=click.Path(dir_okay=False),
    help="Configuration YAML (ACCESSGUARD_CONFIG).",
)


def load(config_path: str | None, **overrides: Any) -> Config:
    """The configuration, with the command line's options (those given) over it, and every
    provider, poller and alert sink checked against its type's settings model: all problems
    in one ConfigError, as ``accessguard config check`` lists them."""
    config = load_config(config_path)
    clean = {k: v for k, v in overrides.items() if v is not None}
    config = config.with_overrides(**clean) if clean else config
    from streams.runtime.policy import offboarding_problems  # noqa: PLC0415

    problems = check_connectors(config) + offboarding_problems(config)
    if problems:
        raise ConfigError.of(problems)
    return config


def error(message: str, code: int = 2) -> NoReturn:
    """An expected failure (operator input, environment): one line, no traceback."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def require_kafka(config: Config, command: str) -> None:
    """ConfigError unless an external broker is configured (``command`` runs beside one)."""
    if config.embedded:
        raise ConfigError("broker", f"`{command}` needs ACCESSGUARD_BROKER=kafka://host:port")


def begin(config: Config, uses: Mapping[str, Any] | None = None) -> SecretWatch | None:
    """Logging (to stderr: stdout is a command's output), then the start-up check of the
    secrets the command ``uses`` (:func:`streams.runtime.secretcheck.secret_uses` keywords):
    ConfigError for one that cannot resolve; the watch of the ``file:`` ones for readiness."""
    from streams.runtime.secretcheck import check_secrets, secret_uses  # noqa: PLC0415

    configure_logging(config["log.level"], config["log.format"])
    if uses is None:
        return None
    return check_secrets(secret_uses(config, **uses))


def check_http(config: Config) -> None:
    """ConfigError naming the address and http.port (or http.host) unless the HTTP port can
    be bound now: before a broker is started or waited for."""
    from streams.runtime.web import check_listen  # noqa: PLC0415

    check_listen(config["http.host"], config.settings.http.port)


def make_data_dir(config: Config) -> None:
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            "data_dir",
            f"cannot create {config.data_dir}: {exc.strerror or exc} (ACCESSGUARD_DATA_DIR)",
        ) from None


def configure_kafka(config: Config) -> None:
    """The ``kafka`` section (TLS, SASL) checked against the files here and made the
    settings of every Kafka client this process builds (streams/bus/security.py)."""
    from streams.bus.security import configure  # noqa: PLC0415

    configure(config)


def check_broker_accepts(bootstrap: str, hint: str) -> None:
    """BrokerError in one line, at once, when no bootstrap server accepts a connection,
    rather than 30 s of client retries; ``hint`` says where the address came from."""
    from streams.runtime.startup import accepts  # noqa: PLC0415

    try:
        accepts(bootstrap)
    except BrokerError as exc:
        raise BrokerError(f"{exc}: is the broker (or `accessguard run`) started? {hint}") from None


def await_broker(config: Config, bootstrap: str, what: str, *, serve_http: bool = True) -> None:
    """Wait (visibly: logs, /healthz, /readyz 503) until the broker answers."""
    from streams.runtime.startup import wait_for_broker  # noqa: PLC0415

    wait_for_broker(
        bootstrap,
        timeout=config.settings.startup.broker_timeout,
        http=(config["http.host"], config.settings.http.port) if serve_http else None,
        what=what,
    )


def embedded_vaults(config: Config) -> list[tuple[str, OpenBaoSettings]]:
    """The ``openbao`` providers with ``embedded: true`` (name, validated settings)."""
    from connectors.custody.settings import OpenBaoSettings  # noqa: PLC0415

    found = []
    for name, settings in config.providers.items():
        if settings.get("type") == "openbao":
            values = OpenBaoSettings.model_validate(dict(settings))
            if values.embedded:
                found.append((name, values))
    return found


def start_vault(config: Config) -> tuple[Config, EmbeddedOpenBao | None]:
    """``accessguard run``: the embedded OpenBao of the ``openbao`` provider with ``embedded:
    true`` started (persistent, under ``<data_dir>/openbao``; on the port of its ``address``
    when free), and the configuration with that provider pointed at it: ``address`` its URL,
    ``token`` the file of accessguard's token (only accessguard's policy), ``embedded``
    false. Before the broker: a vault that cannot start fails in one line."""
    wanted = embedded_vaults(config)
    if not wanted:
        return config, None
    if len(wanted) > 1:
        names = ", ".join(name for name, _ in wanted)
        raise ConfigError(
            f"providers.{wanted[1][0]}.embedded",
            f"only one provider may have embedded: true (found {names})",
        )
    from connectors.custody.embedded import EmbeddedOpenBao, address_port  # noqa: PLC0415
    from connectors.custody.names import Mounts  # noqa: PLC0415

    name, settings = wanted[0]
    configure_logging(config["log.level"], config["log.format"])
    check_http(config)  # local problems first, as start() finds them: nothing to stop
    make_data_dir(config)
    directory = (config.data_dir / "openbao").resolve()
    vault = EmbeddedOpenBao(
        directory,
        port=address_port(settings.address),
        log_path=config.data_dir / "openbao.log",
        mounts=Mounts(kv=settings.kv_mount, totp=settings.totp_mount),
        avoid=(config.settings.http.port,),
    ).start()
    try:
        pointed = config.with_overrides(
            **{
                f"providers__{name}__address": vault.url,
                f"providers__{name}__auth": "token",
                f"providers__{name}__token": f"file:{vault.token_file}",
                f"providers__{name}__embedded": False,
            }
        )
    except BaseException:
        vault.stop()
        raise
    return pointed, vault


def refuse_embedded_vault(config: Config, command: str) -> None:
    """ConfigError when a provider still asks for an embedded vault: only ``accessguard
    run`` starts one (:func:`start_vault`)."""
    for name, _ in embedded_vaults(config):
        raise ConfigError(
            f"providers.{name}.embedded",
            f"`{command}` does not start a vault (only `accessguard run` does): run OpenBao "
            "or Vault and set address and auth, with embedded: false",
            where=config.locate(f"providers.{name}.embedded"),
        )


@dataclass
class Started:
    """A process past its start-up: the broker reached, its topics there."""

    config: Config
    bootstrap: str
    #: The needed ``file:`` secrets (the ``secrets`` readiness check).
    secrets: SecretWatch
    #: The embedded broker this process started (``accessguard run`` without ``broker``).
    broker: EmbeddedBroker | None = None


def start(
    config: Config,
    what: str,
    uses: Mapping[str, Any],
    *,
    serve_http: bool = True,
    registry: str | None = None,
    restore: bool = False,
) -> Started:
    """The start-up of a long-running command ``what`` (named in the broker wait's logs):
    logging, the secrets it ``uses``, the HTTP port (``serve_http``), the data directory,
    the broker (the embedded one started, or the configured one awaited), its topics; with
    ``restore`` (``accessguard run``) the journal replayed into it and ``registry`` imported.
    A failure after the embedded broker started stops it again."""
    from streams.bus.bootstrap import import_registry, replay_journal  # noqa: PLC0415
    from streams.bus.broker import (  # noqa: PLC0415
        EmbeddedBroker,
        bootstrap_from_url,
        find_tansu,
    )
    from streams.bus.topics import create_topics  # noqa: PLC0415

    if uses.get("execute"):
        refuse_embedded_vault(config, f"accessguard {what}")
    secrets = begin(config, uses)
    assert secrets is not None
    if serve_http:
        check_http(config)
    make_data_dir(config)
    broker = None
    if config.embedded:
        protocol = config.settings.kafka.security_protocol
        if protocol != "PLAINTEXT":
            raise ConfigError(
                "kafka.security_protocol",
                f"{protocol} needs broker: the embedded broker listens on loopback in "
                "PLAINTEXT only",
                where=config.locate("kafka.security_protocol"),
            )
        binary = find_tansu(config["embedded.tansu_bin"] or None)
        broker = EmbeddedBroker(
            binary,
            port=config.settings.embedded.port,
            log_path=config.data_dir / "tansu.log",
            avoid=(config.settings.http.port,),
            storage=config["embedded.storage"],
        ).start()
        bootstrap = broker.bootstrap
    else:
        configure_kafka(config)  # its files and secrets are local: checked before the wait
        bootstrap = bootstrap_from_url(config["broker"])
        await_broker(config, bootstrap, what, serve_http=serve_http)
    try:
        create_topics(config, bootstrap)
        if restore and config["journal.replay_on_start"]:
            replay_journal(config, bootstrap)
        if registry:
            import_registry(config, bootstrap, Path(registry))
    except BaseException:
        if broker is not None:
            broker.stop()
        raise
    return Started(config, bootstrap, secrets, broker)


#: What a one-shot command that needs the running stack's broker says when it has none.
BROKER_HINT = "Pass --broker with the URL `accessguard run` printed, or set ACCESSGUARD_BROKER."


def resolve_broker_url(config: Config, given: str | None, what: str) -> str:
    """The broker URL a one-shot command uses (``--broker``, else ``broker``); ConfigError
    naming ``what`` the command does with it when there is none."""
    url = given or config["broker"]
    if not url:
        raise ConfigError(
            "broker",
            f"{what}: pass --broker kafka://host:port (the URL `accessguard run` printed) "
            "or set ACCESSGUARD_BROKER",
        )
    return str(url)


def open_broker(config: Config, url: str, hint: str = BROKER_HINT) -> str:
    """The bootstrap servers of ``url`` for a one-shot command: BrokerError at once (with
    ``hint``) when none accepts, else wait for metadata and create the topics."""
    from streams.bus.broker import bootstrap_from_url, wait_for_kafka  # noqa: PLC0415
    from streams.bus.topics import create_topics  # noqa: PLC0415

    configure_kafka(config)
    bootstrap = bootstrap_from_url(url)
    check_broker_accepts(bootstrap, hint)
    wait_for_kafka(bootstrap, timeout=30)
    create_topics(config, bootstrap)
    return bootstrap


def build_worker(
    started: Started,
    *,
    serve_hr: bool = True,
    on_listening: Callable[[str], None] | None = None,
) -> tuple[AccessGuardApp, WorkerServices]:
    """The Faust worker of a started process, and its services (with the secrets watch);
    run them with :func:`streams.runtime.worker.run_worker`."""
    from streams.runtime.worker import build_worker as build  # noqa: PLC0415

    app, services = build(started.config, started.bootstrap, on_listening=on_listening)
    services.serve_hr = serve_hr
    services.secrets = started.secrets
    return app, services


def stop_on_signals() -> asyncio.Event:
    """An event SIGINT or SIGTERM sets (in the running loop): a connector's cue to stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
