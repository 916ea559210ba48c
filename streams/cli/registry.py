"""``accessguard registry``: check, import and show the access registry."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from streams.cli.wiring import begin, config_option, load, open_broker
from streams.support.errors import ConfigError, RegistryError


@click.group()
def registry() -> None:
    """Check, import and show the access registry."""


@registry.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def registry_check(file: str) -> None:
    """Report every problem of FILE as file:line: message (exit 1 when there are any)."""
    from streams.model.registry_yaml import check_registry  # noqa: PLC0415

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

    config = load(config_path)
    if config.embedded:
        raise ConfigError(
            "broker",
            "set ACCESSGUARD_BROKER=kafka://host:port (with `accessguard run` the registry "
            "file is imported at start: --registry FILE)",
        )
    # Logs to stderr: stdout carries only the JSON summary (structlog's default is stdout).
    begin(config)
    bootstrap = open_broker(
        config, config["broker"], "Check ACCESSGUARD_BROKER (or `broker` in --config)."
    )
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
    from streams.model.registry_yaml import load_registry  # noqa: PLC0415

    reg = load_registry(file)
    for ident in sorted(reg.identities.values(), key=lambda i: i.id):
        click.echo(f"{ident.id} ({ident.kind}, {ident.status}) {ident.name}")
        for grant in reg.grants_of(ident.id):
            acct = reg.accounts[grant.account]
            click.echo(
                f"  {acct.platform}:{acct.handle:<20} {grant.role:<16} via {grant.via:<18} "
                f"mfa {grant.mfa}"
            )
