"""``accessguard config check``: validate the whole configuration without starting anything.

Checks, in one run, and reports every problem on its own line as
``<file>:<line>: <dotted.key>: <reason>`` (``env NAME`` for an environment override): the
fixed keys (types, minimums, unknown keys with the nearest valid name), each provider,
poller and alert sink against its type's settings model (connectors/base/catalogue.py), the
alert routes naming configured sinks, and that every secret reference ``accessguard run``
would use resolves now (``env:`` set, ``file:`` readable; ``--no-secrets`` skips this where
the secrets are not mounted, e.g. in CI). Exit 1 on any problem, else 0 with one OK line.
"""

from __future__ import annotations

import re
import sys

import click

from streams.cli.wiring import config_option
from streams.support.errors import ConfigProblem

config_group = click.Group("config", help="Check the configuration.")

_LINE_RE = re.compile(r"^(.*):(\d+)$")


def _order(problem: ConfigProblem) -> tuple[int, str, int]:
    """File problems by line, then environment overrides, then the rest."""
    where = problem.where or ""
    match = _LINE_RE.match(where)
    if match:
        return (0, match.group(1), int(match.group(2)))
    return (1 if where.startswith("env ") else 2, where, 0)


@config_group.command("check")
@config_option
@click.option(
    "--no-secrets",
    is_flag=True,
    help="Do not check that secret references resolve (where the secrets are not mounted).",
)
def config_check(config_path: str | None, no_secrets: bool) -> None:
    """Validate the configuration (file and ACCESSGUARD_* overrides) and print every problem
    as file:line: key: reason (exit 1 when there are any)."""
    from connectors.base.catalogue import check_connectors  # noqa: PLC0415
    from streams.config import check_config  # noqa: PLC0415
    from streams.runtime.secretcheck import reference_problems  # noqa: PLC0415

    config, problems = check_config(config_path)
    unused: list[str] = []
    if config is not None:
        problems += check_connectors(config)
        if not no_secrets:
            secret_problems, unused = reference_problems(config)
            problems += secret_problems
    problems.sort(key=_order)
    for problem in problems:
        click.echo(problem.located())
    source = config_path or "(no file: defaults and environment)"
    if problems or config is None:
        click.echo(f"{len(problems)} problem(s) in {source}", err=True)
        sys.exit(1)
    counts = (
        f"{len(config.providers)} providers, {len(config.pollers)} pollers, "
        f"{len(config.sinks)} sinks"
    )
    secrets = "secrets not checked" if no_secrets else "every secret in use resolves"
    if unused:
        secrets += f"; {len(unused)} of dry-run connectors unset, not needed"
    click.echo(f"{source}: ok ({counts}; {secrets})")
