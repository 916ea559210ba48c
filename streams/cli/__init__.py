"""The ``accessguard`` command line."""

from __future__ import annotations

import io
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
import orjson

from streams import __version__
from streams.config import Config, load_config
from streams.support.errors import AccessGuardError, ConfigError, RegistryError, ValidationError
from streams.support.logs import configure_logging


def _load(config_path: str | None, **overrides: Any) -> Config:
    config = load_config(config_path)
    clean = {k: v for k, v in overrides.items() if v is not None}
    return config.with_overrides(**clean) if clean else config


def _error(message: str, code: int = 2) -> NoReturn:
    """An expected failure (operator input, environment): one line, no traceback."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _fail(exc: AccessGuardError) -> None:
    _error(str(exc))


def _os_reason(exc: BaseException) -> str:
    """The operating system's word for a failed connection ("Connection refused", "Name or
    service not known"), dug out of the wrappers requests and urllib3 put around it."""
    todo: list[object] = [exc]
    seen: set[int] = set()
    while todo:
        err = todo.pop(0)
        if not isinstance(err, BaseException) or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, OSError) and err.strerror:
            return err.strerror
        todo += [getattr(err, "reason", None), err.__cause__, err.__context__, *err.args]
    return "connection failed"


class Cli(click.Group):
    """Turns our typed errors into a one-line message and exit code 2, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AccessGuardError as exc:
            _fail(exc)
        except click.BadParameter as exc:
            # A file argument that is missing, a directory or unreadable is not a typo in
            # the command line: one line naming it, not the usage text (exit 2 all the same).
            if type(exc) is click.BadParameter and isinstance(
                getattr(exc.param, "type", None), click.Path
            ):
                _error(exc.format_message())
            raise
        return None


config_option = click.option(
    "--config",
    "config_path",
    envvar="ACCESSGUARD_CONFIG",
    type=click.Path(dir_okay=False),
    help="Configuration YAML (ACCESSGUARD_CONFIG).",
)


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="accessguard")
def main() -> None:
    """accessguard: cut access to brand social accounts everywhere, at once, with proof."""


def _prepare(config: Config, registry: str | None) -> tuple[Any, str]:
    """Start (or reach) the broker, create topics, replay the journal, import the registry."""
    from streams.bus.bootstrap import import_registry, replay_journal  # noqa: PLC0415
    from streams.bus.broker import (  # noqa: PLC0415
        EmbeddedBroker,
        bootstrap_from_url,
        find_tansu,
    )
    from streams.bus.topics import create_topics  # noqa: PLC0415

    broker = None
    # Checked before the broker starts: fail in one line, with nothing to clean up.
    _check_http(config)
    _make_data_dir(config)
    if config.embedded:
        binary = find_tansu(config["embedded.tansu_bin"] or None)
        broker = EmbeddedBroker(
            binary,
            port=int(config["embedded.port"]),
            log_path=config.data_dir / "tansu.log",
            avoid=(int(config["http.port"]),),
            storage=config["embedded.storage"],
        ).start()
        bootstrap = broker.bootstrap
    else:
        bootstrap = bootstrap_from_url(config["broker"])
        _await_broker(config, bootstrap, "run")
    try:
        create_topics(config, bootstrap)
        if config["journal.replay_on_start"]:
            replay_journal(config, bootstrap)
        if registry:
            import_registry(config, bootstrap, Path(registry))
    except BaseException:
        if broker is not None:
            broker.stop()
        raise
    return broker, bootstrap


def _check_http(config: Config) -> None:
    """ConfigError naming the address and http.port (or http.host) unless the HTTP port can
    be bound now: before a broker is started or waited for."""
    from streams.runtime.web import check_listen  # noqa: PLC0415

    check_listen(config["http.host"], int(config["http.port"]))


def _make_data_dir(config: Config) -> None:
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            "data_dir",
            f"cannot create {config.data_dir}: {exc.strerror or exc} (ACCESSGUARD_DATA_DIR)",
        ) from None


def _check_broker_accepts(bootstrap: str, hint: str) -> None:
    """BrokerError in one line, at once, when no bootstrap server accepts a connection,
    rather than 30 s of client retries; ``hint`` says where the address came from."""
    from streams.runtime.startup import _accepts  # noqa: PLC0415
    from streams.support.errors import BrokerError  # noqa: PLC0415

    try:
        _accepts(bootstrap)
    except BrokerError as exc:
        raise BrokerError(f"{exc}: is the broker (or `accessguard run`) started? {hint}") from None


def _await_broker(config: Config, bootstrap: str, what: str, *, serve_http: bool = True) -> None:
    """Wait (visibly: logs, /healthz, /readyz 503) until the broker answers."""
    from streams.runtime.startup import wait_for_broker  # noqa: PLC0415

    wait_for_broker(
        bootstrap,
        timeout=float(config["startup.broker_timeout"]),
        http=(config["http.host"], int(config["http.port"])) if serve_http else None,
        what=what,
    )


def _check_secrets(config: Config, **uses: Any) -> Any:
    """Start-up check of the secrets this command uses (streams.runtime.secretcheck): ConfigError
    for one that cannot resolve; the watch of the ``file:`` ones for readiness."""
    from streams.runtime.secretcheck import check_secrets, secret_uses  # noqa: PLC0415

    return check_secrets(secret_uses(config, **uses))


def _embedded_note(broker: Any) -> str:
    if broker is None:
        return ""
    return f" (embedded Tansu, {'durable: ' + broker.storage if broker.durable else 'in memory'})"


@main.command()
@config_option
@click.option("--registry", help="Registry YAML to import at start (registry).")
@click.option("--port", type=int, help="HTTP port (http.port).")
def run(config_path: str | None, registry: str | None, port: int | None) -> None:
    """Start everything: the embedded broker (unless `broker` is set), topics, the registry,
    the Faust worker, the HTTP server and metrics. Ctrl-C stops it all cleanly."""
    from streams.runtime.worker import build_worker, run_worker  # noqa: PLC0415

    config = _load(config_path, registry=registry, http__port=port)
    configure_logging(config["log.level"], config["log.format"])
    registry_file = config["registry"]
    if registry_file and not Path(registry_file).is_file():
        # Checked before the broker starts: fail in one line, with nothing to clean up.
        raise ConfigError(
            "registry", f"{registry_file} is not a file (--registry or ACCESSGUARD_REGISTRY)"
        )
    secrets = _check_secrets(
        config, serve_hr=True, serve_ingest=True, execute=True, pollers=config.pollers
    )
    broker, bootstrap = _prepare(config, registry_file)
    watch: _BrokerWatch | None = None
    try:

        def listening(url: str) -> None:
            where = broker.url if broker else config["broker"]
            click.echo(
                f"accessguard {__version__} ready\n"
                f"  broker   {where}{_embedded_note(broker)}\n"
                f"  http     {url}/v1/hr/events\n"
                f"  metrics  {url}/metrics\n"
                f"  health   {url}/healthz  {url}/readyz\n"
                f"  journal  {config.data_dir / 'journal.jsonl'}",
                err=False,
            )
            sys.stdout.flush()

        app, services = build_worker(config, bootstrap, on_listening=listening)
        services.secrets = secrets
        watch = _BrokerWatch(broker) if broker is not None else None
        code = run_worker(app, services, loglevel=config["log.level"])
        if watch is not None and watch.lost:
            code = EXIT_BROKER_LOST
    finally:
        if broker is not None:
            if watch is not None:
                watch.stop()  # no restart from here on
            broker.stop()  # SIGINT, before the watch thread ends (see join)
            if watch is not None:
                watch.join()
    sys.exit(code)


#: `accessguard run` exit code when its in-memory broker died: restart it (the journal
#: restores the state), as a supervisor (systemd, Kubernetes) does.
EXIT_BROKER_LOST = 3


class _BrokerWatch:
    """Watches the embedded broker of `accessguard run`. A durable one (``s3://`` storage)
    that exits is started again on the same port: its topics and offsets are intact, and
    the worker and HTTP edge reconnect by themselves (503 meanwhile). An in-memory one took
    every topic with it, so the process stops with :data:`EXIT_BROKER_LOST`, and the next
    start replays the journal into a fresh broker; carrying on against empty topics would
    leave the worker's views and offsets describing a broker that no longer exists."""

    def __init__(self, broker: Any, interval: float = 0.5, grace: float = 10.0) -> None:
        import threading  # noqa: PLC0415

        self.broker = broker
        self.interval = interval
        self.grace = grace
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self) -> None:
        """After the broker is stopped: a broker this thread restarted gets the parent-death
        signal (SIGKILL) when the thread ends, so stop it cleanly first."""
        self._thread.join(5)

    def _run(self) -> None:
        import os  # noqa: PLC0415
        import signal  # noqa: PLC0415

        import structlog  # noqa: PLC0415

        from streams.support.errors import BrokerError  # noqa: PLC0415

        log = structlog.get_logger("streams.cli")
        backoff = 0.5
        while not self._stop.wait(self.interval):
            code = self.broker.exit_code()
            if code is None:
                backoff = 0.5
                continue
            if not self.broker.durable:
                self.lost = True
                log.error(
                    "broker.exited",
                    url=self.broker.url,
                    exit_code=code,
                    storage=self.broker.storage,
                    effect="the in-memory broker's topics are gone: stopping; start "
                    "accessguard run again and the journal restores the state",
                )
                os.kill(os.getpid(), signal.SIGTERM)
                # A graceful stop may hang on the missing broker (offset commits): bounded.
                if not self._stop.wait(self.grace):
                    log.error("broker.exit_forced", after=self.grace, exit_code=EXIT_BROKER_LOST)
                    os._exit(EXIT_BROKER_LOST)
                return
            log.error(
                "broker.exited",
                url=self.broker.url,
                exit_code=code,
                storage=self.broker.storage,
                effect="restarting it on the same port; input is refused with 503 meanwhile",
            )
            try:
                self.broker.restart()
                log.info("broker.restarted", url=self.broker.url, pid=self.broker.pid)
            except BrokerError as exc:
                log.error("broker.restart_failed", url=self.broker.url, error=str(exc))
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 15.0)


@main.command()
@config_option
@click.option("--port", type=int, help="HTTP port for /metrics and health (http.port).")
def worker(config_path: str | None, port: int | None) -> None:
    """Run a Faust worker against an external Kafka (ACCESSGUARD_BROKER=kafka://host:9092)."""
    from streams.bus.broker import bootstrap_from_url  # noqa: PLC0415
    from streams.bus.topics import create_topics  # noqa: PLC0415
    from streams.runtime.worker import WorkerServices, build_worker, run_worker  # noqa: PLC0415

    config = _load(config_path, http__port=port)
    if config.embedded:
        raise ConfigError(
            "broker", "`accessguard worker` needs ACCESSGUARD_BROKER=kafka://host:port"
        )
    configure_logging(config["log.level"], config["log.format"])
    secrets = _check_secrets(config, execute=True)
    bootstrap = bootstrap_from_url(config["broker"])
    _check_http(config)
    _await_broker(config, bootstrap, "worker")
    create_topics(config, bootstrap)
    app, services = build_worker(config, bootstrap)
    services.serve_hr = False
    services.secrets = secrets
    assert isinstance(services, WorkerServices)
    sys.exit(run_worker(app, services, loglevel=config["log.level"]))


@main.group()
def connect() -> None:
    """Run one connector on its own against an external Kafka."""


@connect.command("hr-webhook")
@config_option
@click.option("--port", type=int, help="HTTP port (http.port).")
def connect_hr_webhook(config_path: str | None, port: int | None) -> None:
    """Serve POST /v1/hr/events (and /metrics, health) and publish to the hr.events topic."""
    import asyncio  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from streams.bus.broker import bootstrap_from_url  # noqa: PLC0415
    from streams.bus.journal import Journal  # noqa: PLC0415
    from streams.bus.topics import Topics, create_topics  # noqa: PLC0415
    from streams.bus.views import Publisher  # noqa: PLC0415
    from streams.runtime.web import WebServer, build_web_app  # noqa: PLC0415
    from streams.runtime.worker import auth_guard, hr_webhook, restore_seen  # noqa: PLC0415

    config = _load(config_path, http__port=port)
    if config.embedded:
        raise ConfigError(
            "broker", "`connect hr-webhook` needs ACCESSGUARD_BROKER=kafka://host:port"
        )
    configure_logging(config["log.level"], config["log.format"])
    secrets = _check_secrets(config, serve_hr=True)
    bootstrap = bootstrap_from_url(config["broker"])
    _check_http(config)
    _await_broker(config, bootstrap, "hr-webhook")
    create_topics(config, bootstrap)

    async def serve() -> None:
        publisher = Publisher(bootstrap, client_id="accessguard-hr-webhook")
        await publisher.start()
        journal = Journal(config.data_dir / "journal.jsonl", fsync=bool(config["journal.fsync"]))
        topics = Topics.from_config(config)
        hr = hr_webhook(config, publisher, journal, topics, auth_guard(config))
        await restore_seen(hr, bootstrap, topics.hr_events)
        server = WebServer(
            build_web_app(
                hr=hr,
                readiness=lambda: {
                    "broker": publisher.reachable,
                    "journal_writable": journal.check_writable(),
                    "secrets": secrets.ready(),
                },
                max_body=int(config["http.max_body_bytes"]),
            ),
            config["http.host"],
            int(config["http.port"]),
        )
        await server.start()
        click.echo(f"hr-webhook listening on {server.url}/v1/hr/events")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        # Stop taking requests first; in-flight requests finish before the producer closes.
        await server.stop()
        await publisher.stop()
        journal.close()

    asyncio.run(serve())


@connect.command("poller")
@config_option
@click.argument("name")
def connect_poller(config_path: str | None, name: str) -> None:
    """Run the poller NAME (pollers.NAME: okta, graph or hibp) against an external Kafka."""
    import asyncio  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from connectors.base.http import HttpClient  # noqa: PLC0415
    from connectors.ingest.auth_ingest import LoginPublisher  # noqa: PLC0415
    from connectors.ingest.leak_ingest import LeakPublisher  # noqa: PLC0415
    from streams.bus.bootstrap import read_registry_topic  # noqa: PLC0415
    from streams.bus.broker import bootstrap_from_url  # noqa: PLC0415
    from streams.bus.topics import Topics, create_topics  # noqa: PLC0415
    from streams.bus.views import Publisher  # noqa: PLC0415
    from streams.runtime.worker import build_pollers, retry_policy  # noqa: PLC0415

    config = _load(config_path)
    if config.embedded:
        raise ConfigError("broker", "`connect poller` needs ACCESSGUARD_BROKER=kafka://host:port")
    if name not in config.pollers:
        raise ConfigError(f"pollers.{name}", "no such poller in the configuration")
    configure_logging(config["log.level"], config["log.format"])
    _check_secrets(config, pollers=[name])
    bootstrap = bootstrap_from_url(config["broker"])
    _await_broker(config, bootstrap, f"poller {name}", serve_http=False)
    create_topics(config, bootstrap)
    topics = Topics.from_config(config)
    only = config.with_pollers({name: config.pollers[name]})

    async def serve() -> None:
        publisher = Publisher(bootstrap, client_id=f"accessguard-poller-{name}")
        await publisher.start()
        out = LoginPublisher(
            publisher,
            topic=topics.auth_events,
            dlq_topic=topics.auth_dlq,
            partitions=int(config["topics.partitions"]),
        )
        leaks = LeakPublisher(
            publisher,
            topic=topics.leak_records,
            dlq_topic=topics.leak_dlq,
            partitions=int(config["topics.partitions"]),
        )
        # A leak feed (type hibp) checks the registry as it stands when it starts.
        registry = read_registry_topic(bootstrap, topics.registry)
        (poller,) = build_pollers(
            only,
            HttpClient(retry_policy(config)),
            out,
            leaks=leaks,
            registry=lambda: registry,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        click.echo(f"poller {name} ({poller.vendor}) publishing to {topics.auth_events}")
        await poller.run(stop)
        await publisher.stop()

    asyncio.run(serve())


@main.group()
def registry() -> None:
    """Check, import and show the access registry."""


@registry.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def registry_check(file: str) -> None:
    """Report every problem of FILE as file:line: message (exit 1 when there are any)."""
    from streams.model.registry import check_registry  # noqa: PLC0415

    problems = check_registry(file)
    for problem in problems:
        click.echo(problem)
    if problems:
        click.echo(f"{len(problems)} problem(s) in {file}", err=True)
        sys.exit(1)
    click.echo(f"{file}: ok")


@registry.command("import")
@config_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def registry_import(config_path: str | None, file: str) -> None:
    """Publish FILE to the compacted registry topic (only what changed, removals included)."""
    from streams.bus.bootstrap import import_registry  # noqa: PLC0415
    from streams.bus.broker import bootstrap_from_url, wait_for_kafka  # noqa: PLC0415
    from streams.bus.topics import create_topics  # noqa: PLC0415

    config = _load(config_path)
    if config.embedded:
        raise ConfigError(
            "broker",
            "set ACCESSGUARD_BROKER=kafka://host:port (with `accessguard run` the registry "
            "file is imported at start: --registry FILE)",
        )
    # Logs to stderr: stdout carries only the JSON summary (structlog's default is stdout).
    configure_logging(config["log.level"], config["log.format"])
    bootstrap = bootstrap_from_url(config["broker"])
    _check_broker_accepts(bootstrap, "Check ACCESSGUARD_BROKER (or `broker` in --config).")
    wait_for_kafka(bootstrap, timeout=30)
    create_topics(config, bootstrap)
    try:
        summary = import_registry(config, bootstrap, Path(file))
    except RegistryError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        sys.exit(1)
    click.echo(orjson.dumps(summary).decode())


@registry.command("show")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def registry_show(file: str) -> None:
    """Print who holds which role on which account, through which path, with which MFA."""
    from streams.model.registry import load_registry  # noqa: PLC0415

    reg = load_registry(file)
    for ident in sorted(reg.identities.values(), key=lambda i: i.id):
        click.echo(f"{ident.id} ({ident.kind}, {ident.status}) {ident.name}")
        for grant in reg.grants_of(ident.id):
            acct = reg.accounts[grant.account]
            click.echo(
                f"  {acct.platform}:{acct.handle:<20} {grant.role:<16} via {grant.via:<18} "
                f"mfa {grant.mfa}"
            )


@main.command()
@config_option
@click.option(
    "--registry", "registry_file", required=True, type=click.Path(exists=True, dir_okay=False)
)
@click.option(
    "--input",
    "input_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
)
@click.option("--at", "at_text", help="Clock for scheduled effects (ISO-8601; default now).")
@click.option("--rules", "rules_dir", help="Rule directory for login lines (default: rules.dir).")
def replay(
    config_path: str | None,
    registry_file: str,
    input_file: str,
    at_text: str | None,
    rules_dir: str | None,
) -> None:
    """Run the decisions offline (no broker): HR, login and leak lines in, decisions out as
    NDJSON."""
    from streams.detect.rules import load_rules  # noqa: PLC0415
    from streams.model.records import parse_time  # noqa: PLC0415
    from streams.model.registry import load_registry  # noqa: PLC0415
    from streams.runtime.engine import leak_settings  # noqa: PLC0415
    from streams.runtime.replay import replay as run_replay  # noqa: PLC0415

    config = _load(config_path)
    try:
        at = parse_time(at_text, "--at") if at_text else datetime.now(UTC)
    except ValidationError as exc:
        raise click.BadParameter(exc.reason, param_hint="--at") from None
    reg = load_registry(registry_file)
    ruleset = load_rules(rules_dir or config["rules.dir"])
    try:
        stream = sys.stdin if input_file == "-" else open(input_file, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        _error(f"cannot read --input {input_file}: {exc.strerror or exc}")
    out = sys.stdout.buffer
    try:
        for record in run_replay(
            reg,
            stream,
            at=at,
            providers=config.provider_types(),
            rules=ruleset,
            leak_settings=leak_settings(config),
        ):
            out.write(orjson.dumps(record) + b"\n")
    except UnicodeDecodeError as exc:
        _error(f"--input {input_file} is not UTF-8 text (compressed? binary?): {exc.reason}")
    finally:
        if stream is not sys.stdin:
            stream.close()
        out.flush()


@main.group()
def leaks() -> None:
    """Import leaked-credential dumps."""


@leaks.command("import")
@config_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--broker",
    "broker_url",
    help="kafka://host:port of the broker (ACCESSGUARD_BROKER; for `accessguard run` with the "
    "embedded broker, the URL it printed at start).",
)
@click.option("--breach", help="Breach name when records do not say (default: the file's stem).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "ndjson", "combo"]),
    help="Dump format (default: from the extension, else the first bytes).",
)
@click.option("--progress/--no-progress", default=True, help="Progress bar on stderr.")
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes parsing byte ranges of an uncompressed CSV/NDJSON/combo file (8 MiB+).",
)
def leaks_import(
    config_path: str | None,
    file: str,
    *,
    broker_url: str | None,
    breach: str | None,
    fmt: str | None,
    progress: bool,
    jobs: int,
) -> None:
    """Stream FILE (CSV, JSON, NDJSON or email:password lines, gzip too), match it against
    the registry topic and publish the matched records to leak.records for the worker.
    Prints a JSON summary (read, matched, rejected with reasons) on stdout."""
    from kafka import KafkaProducer  # noqa: PLC0415

    from connectors.ingest.dumps import DumpOptions, check_breach_name  # noqa: PLC0415
    from connectors.ingest.leak_ingest import (  # noqa: PLC0415
        dump_names,
        import_dump,
        import_dump_parallel,
    )
    from streams.bus.bootstrap import read_leak_index  # noqa: PLC0415
    from streams.bus.broker import bootstrap_from_url, wait_for_kafka  # noqa: PLC0415
    from streams.bus.topics import Topics, create_topics  # noqa: PLC0415
    from streams.runtime.engine import leak_settings  # noqa: PLC0415

    config = _load(config_path)
    url = broker_url or config["broker"]
    if not url:
        raise ConfigError(
            "broker",
            "`leaks import` publishes to a broker: pass --broker kafka://host:port (the URL "
            "`accessguard run` printed) or set ACCESSGUARD_BROKER",
        )
    # The breach name is checked here, at the edge, not refused later by the worker.
    try:
        names = dump_names(Path(file), DumpOptions(breach=breach and check_breach_name(breach)))
    except ValidationError as exc:
        raise click.BadParameter(exc.reason, param_hint="--breach") from None
    configure_logging(config["log.level"], config["log.format"])  # stderr: stdout is the summary
    _check_secrets(config, leaks=True)
    bootstrap = bootstrap_from_url(url)
    _check_broker_accepts(
        bootstrap,
        "Pass --broker with the URL `accessguard run` printed, or set ACCESSGUARD_BROKER.",
    )
    wait_for_kafka(bootstrap, timeout=30)
    create_topics(config, bootstrap)
    topics = Topics.from_config(config)
    settings = leak_settings(config)
    t_registry = time.monotonic()
    index, index_read = read_leak_index(
        bootstrap,
        topics.registry,
        settings.plus_tag_domains,
        snapshot_topic=topics.leak_index,
    )
    registry_seconds = time.monotonic() - t_registry
    options = DumpOptions(
        hmac_key=settings.hmac_key,
        breach=names.breach,
        format=fmt,
        max_record_bytes=int(config["leaks.max_record_bytes"]),
    )
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_request_size=4 * 1048576,
        client_id="accessguard-leaks-import",
    )
    futures: list[Any] = []

    def send(partition: int, message: bytes) -> None:
        futures.append(
            producer.send(
                topics.leak_records,
                key=f"batch:{partition}".encode(),
                value=message,
                partition=partition,
            )
        )

    size = Path(file).stat().st_size
    summary = None
    # Wall clock (comparable across processes: bench/leak_matching.py times the path from
    # here to the worker's last decision) and monotonic for the duration.
    started_unix, t_import = time.time(), time.monotonic()
    if jobs > 1:
        summary = import_dump_parallel(
            file,
            index=index,
            partitions=int(config["topics.partitions"]),
            bootstrap=bootstrap,
            topic=topics.leak_records,
            options=options,
            jobs=jobs,
        )
    try:
        with click.progressbar(
            length=size,
            label=f"importing {Path(file).name}",
            file=sys.stderr if progress else io.StringIO(),
        ) as bar:
            done = 0

            def advance(position: int) -> None:
                nonlocal done
                if position > done:
                    bar.update(position - done)
                    done = position

            if summary is not None:  # done in parallel
                bar.update(size)
            else:
                summary = import_dump(
                    file,
                    index=index,
                    partitions=int(config["topics.partitions"]),
                    send=send,
                    options=options,
                    progress=advance,
                )
        for fut in futures:
            fut.get(timeout=30)
        producer.flush()
    finally:
        producer.close()
    import_seconds = time.monotonic() - t_import
    summary["timing"] = {
        "registry_read_seconds": round(registry_seconds, 3),
        "registry_changes_read": index_read.changes,
        "index_snapshot": index_read.snapshot,
        "import_seconds": round(import_seconds, 3),
        "records_per_second": round(summary["read"] / import_seconds) if import_seconds else 0,
        "import_started_unix": round(started_unix, 6),
    }
    click.echo(orjson.dumps(summary).decode())
    reasons = ", ".join(f"{k} {v}" for k, v in summary["reasons"].items())
    click.echo(
        f"read {summary['read']}, matched {summary['matched']}, rejected {summary['rejected']}"
        + (f" ({reasons})" if reasons else "")
        + f" in {import_seconds:.1f} s ({summary['timing']['records_per_second']:,} records/s)",
        err=True,
    )
    if summary["format"] == "unreadable":
        sys.exit(1)
    if summary["parsed"] == 0:
        # Nothing understood is a failed import, not a quiet "0 matched".
        what = (
            "holds no records"
            if summary["format"] == "empty"
            else f"had no record accessguard understood (read as {summary['format']}: "
            f"{summary['rejected']} rejected); check the file, or pass --format"
        )
        click.echo(f"error: {file} {what}", err=True)
        sys.exit(1)


@main.group()
def rules() -> None:
    """Test the detection rules."""


@rules.command("test")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@config_option
def rules_test(directory: str | None, config_path: str | None) -> None:
    """Run every rule's inline tests (DIRECTORY, default rules.dir) and print a summary."""
    from streams.detect.rules import rules_test_main  # noqa: PLC0415

    target = Path(directory or _load(config_path)["rules.dir"])
    sys.exit(rules_test_main(target, click.echo))


@main.group()
def hr() -> None:
    """Sign and send HR events (for trying accessguard out and for HR integrations)."""


@hr.command("send")
@config_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--url", help="Server base URL (default: http://http.host:http.port).")
def hr_send(config_path: str | None, file: str, url: str | None) -> None:
    """Sign FILE (one JSON HR event) with hr.webhook_secret and POST it to /v1/hr/events."""
    import requests  # noqa: PLC0415

    from connectors.ingest.hr_webhook import SIGNATURE_HEADER, sign  # noqa: PLC0415

    config = _load(config_path)
    secret = config["hr.webhook_secret"]
    if not secret:
        raise ConfigError("hr.webhook_secret", "set ACCESSGUARD_HR_WEBHOOK_SECRET to sign events")
    problem = secret.problem()
    if problem is not None:
        raise ConfigError("hr.webhook_secret", f"{secret.reference} does not resolve: {problem}")
    try:
        body = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        _error(f"cannot read {file}: {exc.strerror or exc}")
    base = (url or f"http://{config['http.host']}:{config['http.port']}").rstrip("/")
    headers = {SIGNATURE_HEADER: sign(secret.reveal(), body), "Content-Type": "application/json"}
    endpoint = f"{base}/v1/hr/events"
    connect_s, read_s = 3.05, 15
    hint = "Check --url." if url else "Pass --url http://host:port to send elsewhere."
    try:
        resp = requests.post(endpoint, data=body, headers=headers, timeout=(connect_s, read_s))
    except (
        requests.exceptions.InvalidURL,
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidSchema,
    ) as exc:
        _error(
            f"{endpoint} is not an http(s) URL ({exc}): pass the server's base URL, "
            "e.g. --url http://127.0.0.1:8080"
        )
    except requests.exceptions.ConnectTimeout:
        _error(
            f"no connection to {endpoint} within {connect_s:g} s (a wrong host? a firewall?). "
            + hint
        )
    except requests.exceptions.Timeout:
        _error(
            f"{endpoint} took the event but gave no answer within {read_s} s: whether it "
            "was accepted is unknown; sending it again is safe (events are deduplicated)"
        )
    except requests.exceptions.ConnectionError as exc:
        _error(
            f"cannot reach {endpoint} ({_os_reason(exc)}): is `accessguard run` (or "
            f"`accessguard connect hr-webhook`) started there? {hint}"
        )
    except requests.RequestException as exc:
        _error(f"POST {endpoint} failed: {exc}")
    click.echo(f"{resp.status_code} {resp.text}")
    sys.exit(0 if resp.status_code == 202 else 1)

