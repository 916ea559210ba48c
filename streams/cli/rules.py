"""``accessguard rules``: test the detection rules and list their exceptions."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import orjson

from streams.cli.wiring import config_option, load
from streams.support.errors import ValidationError


@click.group()
def rules() -> None:
    """Test the detection rules and list their exceptions."""


@rules.command("test")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@config_option
def rules_test(directory: str | None, config_path: str | None) -> None:
    """Run every rule's inline tests (DIRECTORY, default rules.dir) and print a summary,
    naming every expired rule exception."""
    from streams.detect.testing import rules_test_main  # noqa: PLC0415

    target = Path(directory or load(config_path)["rules.dir"])
    sys.exit(rules_test_main(target, click.echo))


@rules.command("exceptions")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option("--at", "at_text", help="Judge expiry at this time (ISO-8601; default now).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per exception.")
@config_option
def rules_exceptions(
    directory: str | None, at_text: str | None, *, as_json: bool, config_path: str | None
) -> None:
    """List the rule exceptions of DIRECTORY (default rules.dir), active and expired. Exits 1
    when one has expired (renew it with a new reason, or delete it)."""
    from streams.detect.exceptions import expired  # noqa: PLC0415
    from streams.detect.load import load_rules  # noqa: PLC0415
    from streams.support.times import format_time, parse_time  # noqa: PLC0415

    target = Path(directory or load(config_path)["rules.dir"])
    try:
        at = parse_time(at_text, "--at") if at_text else datetime.now(UTC)
    except ValidationError as exc:
        raise click.BadParameter(exc.reason, param_hint="--at") from None
    found = load_rules(target, warn=False).exceptions
    gone = set(expired(found, at))
    for x in found:
        state = "expired" if x in gone else "active"
        if as_json:
            click.echo(orjson.dumps({"state": state, **x.view()}).decode())
        else:
            click.echo(
                f"{state:7} {x.rule} {x.scope}={x.value} until {format_time(x.expires)} "
                f"owner {x.owner} ({x.where}): {x.reason}"
            )
    if not as_json:
        active = len(found) - len(gone)
        click.echo(f"exceptions: {len(found)}, {active} active, {len(gone)} expired")
    sys.exit(1 if gone else 0)
