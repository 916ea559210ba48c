"""``accessguard run``: the whole service in one process, its embedded broker watched, and
the embedded OpenBao (connectors/custody/embedded.py) when a provider asks for one."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from streams import __version__
from streams.cli.wiring import build_worker, config_option, load, start, start_vault
from streams.support.errors import ConfigError

if TYPE_CHECKING:
    from connectors.custody.embedded import EmbeddedOpenBao
    from streams.config import Config

#: `accessguard run` exit code when its in-memory broker died: restart it (the journal
#: restores the state), as a supervisor (systemd, Kubernetes) does.
EXIT_BROKER_LOST = 3


def _vault_line(vault: EmbeddedOpenBao | None) -> str:
    if vault is None:
        return ""
    return f"\n  vault    {vault.url} (embedded OpenBao, data {vault.directory})"


def _embedded_note(broker: Any) -> str:
    if broker is None:
        return ""
    return f" (embedded Tansu, {'durable: ' + broker.storage if broker.durable else 'in memory'})"


@click.command()
@config_option
@click.option("--registry", help="Registry YAML to import at start (registry).")
@click.option("--port", type=int, help="HTTP port (http.port).")
def run(config_path: str | None, registry: str | None, port: int | None) -> None:
    """Start everything: the embedded broker (unless `broker` is set), topics, the registry,
    the Faust worker, the HTTP server and metrics; the embedded OpenBao when a provider
    asks for one. Ctrl-C stops it all cleanly."""
    config = load(config_path, registry=registry, http__port=port)
    registry_file = config["registry"]
    if registry_file and not Path(registry_file).is_file():
        # Checked before the broker starts: fail in one line, with nothing to clean up.
        raise ConfigError(
            "registry", f"{registry_file} is not a file (--registry or ACCESSGUARD_REGISTRY)"
        )
    # The embedded vault (an `openbao` provider with embedded: true) first: the provider
    # is pointed at it (address, token file) before anything reads its settings.
    config, vault = start_vault(config)
    try:
        code = _run(config, registry_file, vault)
    finally:
        if vault is not None:
            vault.stop()
    sys.exit(code)


def _run(config: Config, registry_file: str | None, vault: EmbeddedOpenBao | None) -> int:
    from streams.runtime.worker import run_worker  # noqa: PLC0415

    started = start(
        config,
        "run",
        {"serve_hr": True, "serve_ingest": True, "execute": True, "pollers": config.pollers},
        registry=registry_file,
        restore=True,
    )
    broker = started.broker
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
                f"  journal  {config.data_dir / 'journal.jsonl'}"
                f"{_vault_line(vault)}",
                err=False,
            )
            sys.stdout.flush()

        app, services = build_worker(started, on_listening=listening)
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
    return int(code)


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
