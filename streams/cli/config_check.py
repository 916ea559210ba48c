"""``accessguard config check``: validate the whole configuration without starting anything.

Checks, in one run, and reports every problem on its own line as
``<file>:<line>: <dotted.key>: <reason>`` (``env NAME`` for an environment override): the
fixed keys (types, minimums, unknown keys with the nearest valid name), each provider,
poller and alert sink against its type's settings model (connectors/base/catalogue.py), the
alert routes naming configured sinks, and that every secret reference ``accessguard run``
would use resolves now (``env:`` set, ``file:`` readable; ``--no-secrets`` skips this where
the secrets are not mounted, e.g. in CI), and that the registry (``registry``, or
``--registry``) is valid and relies on no provider that is neither configured nor in
``ignored_providers`` (:mod:`streams.model.coverage`: such actions would silently never
happen). Exit 1 on any problem, else 0 with one OK line.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from streams.cli.wiring import config_option
from streams.config import Config
from streams.support.errors import ConfigProblem, RegistryError

config_group = click.Group("config", help="Check the configuration.")

_LINE_RE = re.compile(r"^(.*):(\d+)$")


def _order(problem: ConfigProblem) -> tuple[int, str, int]:
    """File problems by line, then environment overrides, then the rest."""
    where = problem.where or ""
    match = _LINE_RE.match(where)
    if match:
        return (0, match.group(1), int(match.group(2)))
    return (1 if where.startswith("env ") else 2, where, 0)


def registry_problems(config: Config, path: str) -> tuple[list[ConfigProblem], str]:
    """The registry file's problems (invalid, or a provider gap) and the OK line's part."""
    from streams.model.coverage import gap_problems, provider_gaps  # noqa: PLC0415
    from streams.model.registry_yaml import load_registry  # noqa: PLC0415

    if not path:
        return [], "no registry file"
    try:
        registry = load_registry(path)
    except RegistryError as exc:
        return [ConfigProblem("registry", p, None) for p in exc.problems], ""
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return [ConfigProblem("registry", f"cannot read {path}: {reason}", None)], ""
    gaps = provider_gaps(registry, config.provider_types(), config.settings.ignored_providers)
    return gap_problems(gaps, path), f"registry {path}: every provider it uses is configured"


def kafka_file_problems(config: Config) -> list[ConfigProblem]:
    """The ``kafka`` section's certificate and key files that are missing, unreadable or not
    PEM here (the same check as at start; its secrets are among ``reference_problems``)."""
    from streams.bus.security import KafkaSecurity  # noqa: PLC0415

    if config.embedded:
        return []
    security = KafkaSecurity.from_settings(config.settings.kafka)
    files = ("kafka.ca_file", "kafka.cert_file", "kafka.key_file")
    return [
        ConfigProblem(p.key, p.message, config.locate(p.key))
        for p in security.problems()
        if p.key in files
    ]


@config_group.command("check")
@config_option
@click.option(
    "--registry",
    "registry_path",
    help="Registry YAML to check against the providers (default: the registry key).",
)
@click.option(
    "--no-secrets",
    is_flag=True,
    help="Do not check that secret references resolve (where the secrets are not mounted).",
)
def config_check(config_path: str | None, registry_path: str | None, no_secrets: bool) -> None:
    """Validate the configuration (file and ACCESSGUARD_* overrides) and print every problem
    as file:line: key: reason (exit 1 when there are any)."""
    from connectors.base.catalogue import check_connectors  # noqa: PLC0415
    from streams.config import check_config  # noqa: PLC0415
    from streams.runtime.policy import offboarding_problems  # noqa: PLC0415
    from streams.runtime.secretcheck import reference_problems  # noqa: PLC0415

    config, problems = check_config(config_path)
    unused: list[str] = []
    registry_ok = ""
    if config is not None:
        problems += check_connectors(config)
        problems += offboarding_problems(config)
        path = registry_path or config["registry"]
        if registry_path or not path or Path(path).is_file():
            found, registry_ok = registry_problems(config, path)
        else:  # the configured file is `run`'s; elsewhere the registry comes from its topic
            found, registry_ok = [], f"registry {path} not found here, not checked"
        problems += found
        if not no_secrets:
            secret_problems, unused = reference_problems(config)
            problems += secret_problems
            problems += kafka_file_problems(config)
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
    click.echo(f"{source}: ok ({counts}; {secrets}; {registry_ok})")
