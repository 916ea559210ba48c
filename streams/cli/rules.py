"""``accessguard rules``: test the detection rules."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from streams.cli.wiring import config_option, load


@click.group()
def rules() -> None:
    """Test the detection rules."""


@rules.command("test")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@config_option
def rules_test(directory: str | None, config_path: str | None) -> None:
    """Run every rule's inline tests (DIRECTORY, default rules.dir) and print a summary."""
    from streams.detect.testing import rules_test_main  # noqa: PLC0415

    target = Path(directory or load(config_path)["rules.dir"])
    sys.exit(rules_test_main(target, click.echo))
