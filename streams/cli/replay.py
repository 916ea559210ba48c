"""``accessguard replay``: the decisions offline, NDJSON in and out, no broker."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click
import orjson

from streams.cli.wiring import config_option, error, load
from streams.config import Config
from streams.model.coverage import provider_gaps
from streams.model.registry import Registry
from streams.support.errors import ValidationError


def _warn_undecidable(registry: Registry, config: Config, registry_file: str) -> None:
    """One stderr line per provider the registry relies on that the configuration lacks:
    what would happen there is not decided, so the output is not the service's (stdout stays
    the decisions only)."""
    gaps = provider_gaps(registry, config.provider_types(), config.settings.ignored_providers)
    if gaps and not config.providers:
        aliases = ", ".join(g.provider for g in gaps if g.kind == "alias")
        accounts = ", ".join(g.provider for g in gaps if g.kind == "account")
        parts = [f"sessions and MFA factors at {aliases} are not decided"] if aliases else []
        if accounts:
            parts.append(f"actions at {accounts} go to providers that do not exist")
        click.echo(
            "warning: no provider is configured (replay without --config?): "
            f"{'; '.join(parts)}. Pass the service's --config to decide as it would.",
            err=True,
        )
        return
    for gap in gaps:
        click.echo(f"warning: {registry_file}: {gap.message()}", err=True)


@click.command()
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
@click.option(
    "--diff",
    "old_rules_dir",
    type=click.Path(exists=True, file_okay=False),
    help="Replay with this older rule directory too and print only what fires differently "
    "(added, removed, changed severity or response) against --rules.",
)
def replay(
    config_path: str | None,
    registry_file: str,
    input_file: str,
    at_text: str | None,
    rules_dir: str | None,
    *,
    old_rules_dir: str | None,
) -> None:
    """Run the decisions offline (no broker): HR, login and leak lines in, decisions out as
    NDJSON. With --diff OLD_RULES_DIR: what would fire differently with --rules than with the
    old rules, then a summary line."""
    from streams.detect.load import load_rules  # noqa: PLC0415
    from streams.model.registry_yaml import load_registry  # noqa: PLC0415
    from streams.runtime.engine import leak_settings  # noqa: PLC0415
    from streams.runtime.policy import offboarding_policy  # noqa: PLC0415
    from streams.runtime.replay import replay as run_replay  # noqa: PLC0415
    from streams.runtime.replay_diff import replay_diff  # noqa: PLC0415
    from streams.support.times import parse_time  # noqa: PLC0415

    config = load(config_path)
    try:
        at = parse_time(at_text, "--at") if at_text else datetime.now(UTC)
    except ValidationError as exc:
        raise click.BadParameter(exc.reason, param_hint="--at") from None
    reg = load_registry(registry_file)
    _warn_undecidable(reg, config, registry_file)
    ruleset = load_rules(rules_dir or config["rules.dir"])
    try:
        stream = sys.stdin if input_file == "-" else open(input_file, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        error(f"cannot read --input {input_file}: {exc.strerror or exc}")
    out = sys.stdout.buffer
    try:
        if old_rules_dir is not None:
            records = replay_diff(
                reg,
                stream,
                at=at,
                providers=config.provider_types(),
                old_rules=load_rules(old_rules_dir, warn=False),
                new_rules=ruleset,
                leak_settings=leak_settings(config),
                policy=offboarding_policy(config),
            )
        else:
            records = run_replay(
                reg,
                stream,
                at=at,
                providers=config.provider_types(),
                rules=ruleset,
                leak_settings=leak_settings(config),
                policy=offboarding_policy(config),
            )
        for record in records:
            out.write(orjson.dumps(record) + b"\n")
    except UnicodeDecodeError as exc:
        error(f"--input {input_file} is not UTF-8 text (compressed? binary?): {exc.reason}")
    finally:
        if stream is not sys.stdin:
            stream.close()
        out.flush()
