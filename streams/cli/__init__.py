"""The ``accessguard`` command line: the ``main`` group and the groups it registers.

One module per command group (:mod:`streams.cli.run`, :mod:`~streams.cli.worker`,
:mod:`~streams.cli.connect`, :mod:`~streams.cli.registry`, :mod:`~streams.cli.replay`,
:mod:`~streams.cli.leaks`, :mod:`~streams.cli.rules`, :mod:`~streams.cli.hr`,
:mod:`~streams.cli.custody`, :mod:`~streams.cli.audit`,
:mod:`~streams.cli.config_check`); what they share (the ``--config`` option, one-line errors,
the start-up of a process that talks to the broker) is :mod:`streams.cli.wiring`. The command
modules import their heavy dependencies inside the command, so ``--help`` stays fast.
"""

from __future__ import annotations

from typing import Any

import click

from streams import __version__
from streams.cli import audit, connect, custody, hr, leaks, registry, replay, rules, run, worker
from streams.cli.config_check import config_group
from streams.cli.wiring import error
from streams.support.errors import AccessGuardError


class Cli(click.Group):
    """Turns our typed errors into a one-line message and exit code 2, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AccessGuardError as exc:
            error(str(exc))
        except click.BadParameter as exc:
            # A file argument that is missing, a directory or unreadable is not a typo in
            # the command line: one line naming it, not the usage text (exit 2 all the same).
            if type(exc) is click.BadParameter and isinstance(
                getattr(exc.param, "type", None), click.Path
            ):
                error(exc.format_message())
            raise
        return None


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="accessguard")
def main() -> None:
    """accessguard: cut access to brand social accounts everywhere, at once, with proof."""


main.add_command(run.run)
main.add_command(worker.worker)
main.add_command(connect.connect)
main.add_command(registry.registry)
main.add_command(replay.replay)
main.add_command(leaks.leaks)
main.add_command(rules.rules)
main.add_command(hr.hr)
main.add_command(custody.custody)
main.add_command(audit.audit)
main.add_command(config_group)
