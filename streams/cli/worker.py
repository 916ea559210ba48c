"""``accessguard worker``: a Faust worker beside an external Kafka (scale-out)."""

from __future__ import annotations

import sys

import click

from streams.cli.wiring import build_worker, config_option, load, require_kafka, start


@click.command()
@config_option
@click.option("--port", type=int, help="HTTP port for /metrics and health (http.port).")
def worker(config_path: str | None, port: int | None) -> None:
    """Run a Faust worker against an external Kafka (ACCESSGUARD_BROKER=kafka://host:9092)."""
    from streams.runtime.worker import run_worker  # noqa: PLC0415

    config = load(config_path, http__port=port)
    require_kafka(config, "accessguard worker")
    doors = config.settings.worker.doors  # scim, ssf: besides health and metrics
    started = start(config, "worker", {"execute": True, "doors": doors})
    app, services = build_worker(started, serve_hr=False)
    sys.exit(run_worker(app, services, loglevel=config["log.level"]))
