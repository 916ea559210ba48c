"""``accessguard connect``: one connector on its own beside an external Kafka."""

from __future__ import annotations

import click

from streams.cli.wiring import config_option, load, require_kafka, start, stop_on_signals
from streams.support.errors import ConfigError


@click.group()
def connect() -> None:
    """Run one connector on its own against an external Kafka."""


@connect.command("hr-webhook")
@config_option
@click.option("--port", type=int, help="HTTP port (http.port).")
def connect_hr_webhook(config_path: str | None, port: int | None) -> None:
    """Serve POST /v1/hr/events (and /metrics, health) and publish to the hr.events topic."""
    import asyncio  # noqa: PLC0415

    from streams.bus.topics import Topics  # noqa: PLC0415
    from streams.bus.views import Publisher  # noqa: PLC0415
    from streams.runtime.parts import (  # noqa: PLC0415
        auth_guard,
        expect_cadences,
        hr_webhook,
        journal,
        restore_seen,
    )
    from streams.runtime.web import WebServer, build_web_app  # noqa: PLC0415

    config = load(config_path, http__port=port)
    require_kafka(config, "connect hr-webhook")
    started = start(config, "hr-webhook", {"serve_hr": True})
    bootstrap, secrets = started.bootstrap, started.secrets

    async def serve() -> None:
        publisher = Publisher(bootstrap, client_id="accessguard-hr-webhook")
        await publisher.start()
        hr_journal = journal(config)
        topics = Topics.from_config(config)
        hr = hr_webhook(config, publisher, hr_journal, topics, auth_guard(config))
        expect_cadences(config, hr.health)
        await restore_seen(hr, bootstrap, topics.hr_events)
        server = WebServer(
            build_web_app(
                hr=hr,
                readiness=lambda: {
                    "broker": publisher.reachable,
                    "journal_writable": hr_journal.check_writable(),
                    "secrets": secrets.ready(),
                },
                max_body=config.settings.http.max_body_bytes,
            ),
            config["http.host"],
            config.settings.http.port,
        )
        await server.start()
        click.echo(f"hr-webhook listening on {server.url}/v1/hr/events")
        await stop_on_signals().wait()
        # Stop taking requests first; in-flight requests finish before the producer closes.
        await server.stop()
        await publisher.stop()
        hr_journal.close()

    asyncio.run(serve())


@connect.command("ssf-transmitter")
@config_option
@click.option("--port", type=int, help="HTTP port (http.port).")
def connect_ssf_transmitter(config_path: str | None, port: int | None) -> None:
    """Push accessguard's revocations as signed SETs to ssf.receivers, once (run one), and
    serve /.well-known/jwks.json, /.well-known/ssf-configuration, /v1/ssf/status, /metrics."""
    import asyncio  # noqa: PLC0415

    from streams.runtime.ssftransmitter import (  # noqa: PLC0415
        TransmitterHost,
        require_signing_key,
        serve,
    )

    config = load(config_path, http__port=port)
    require_kafka(config, "connect ssf-transmitter")
    require_signing_key(config)
    started = start(config, "ssf-transmitter", {"doors": ["transmitter"]})

    async def run() -> None:
        host = TransmitterHost(config, started.bootstrap, started.secrets)
        await serve(host, stop_on_signals(), click.echo)

    asyncio.run(run())


@connect.command("poller")
@config_option
@click.argument("name")
@click.option("--port", type=int, help="/healthz and /metrics port (sources.health_port).")
def connect_poller(config_path: str | None, name: str, port: int | None) -> None:
    """Run the poller NAME (pollers.NAME: okta, graph, graph_audit, google_reports or hibp)
    against an external Kafka, serving /healthz, /livez and /metrics on sources.health_port."""
    import asyncio  # noqa: PLC0415

    from connectors.base.http import HttpClient  # noqa: PLC0415
    from streams.bus.bootstrap import read_registry_topic  # noqa: PLC0415
    from streams.bus.topics import Topics  # noqa: PLC0415
    from streams.bus.views import Publisher  # noqa: PLC0415
    from streams.runtime.parts import (  # noqa: PLC0415
        build_pollers,
        leak_publisher,
        login_publisher,
        retry_policy,
    )
    from streams.runtime.pollerweb import build_poller_app  # noqa: PLC0415
    from streams.runtime.web import WebServer, check_listen  # noqa: PLC0415

    config = load(config_path, sources__health_port=port)
    require_kafka(config, "connect poller")
    if name not in config.pollers:
        raise ConfigError(f"pollers.{name}", "no such poller in the configuration")
    health = config.settings.sources
    try:
        check_listen(config["http.host"], health.health_port)
    except ConfigError:
        raise ConfigError(
            "sources.health_port",
            f"cannot listen on {config['http.host']}:{health.health_port}: choose another port "
            "with --port or ACCESSGUARD_SOURCES_HEALTH_PORT",
        ) from None
    started = start(config, f"poller {name}", {"pollers": [name]}, serve_http=False)
    bootstrap = started.bootstrap
    topics = Topics.from_config(config)
    only = config.with_pollers({name: config.pollers[name]})

    async def serve() -> None:
        publisher = Publisher(bootstrap, client_id=f"accessguard-poller-{name}")
        await publisher.start()
        # A leak feed checks the registry as it stands when it starts; login events are
        # keyed by the identity it resolves them to (workers route what changed since).
        registry = read_registry_topic(bootstrap, topics.registry)
        (poller,) = build_pollers(
            only,
            HttpClient(retry_policy(config)),
            login_publisher(config, publisher, topics, registry=lambda: registry),
            leaks=leak_publisher(config, publisher, topics),
            registry=lambda: registry,
        )
        stop = stop_on_signals()
        task = asyncio.create_task(poller.run(stop), name=f"poller-{name}")
        server = WebServer(
            build_poller_app(
                poller,
                ready_within=health.ready_within,
                max_failures=health.max_failures,
                running=lambda: not task.done(),
            ),
            config["http.host"],
            health.health_port,
        )
        await server.start()
        click.echo(
            f"poller {name} ({poller.vendor}) publishing to {topics.auth_events}"
            f" and {topics.identity_events}; health {server.url}/healthz"
        )
        try:
            await task
        finally:
            await server.stop()
            await publisher.stop()

    asyncio.run(serve())
