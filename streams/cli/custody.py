"""``accessguard custody``: shared brand logins held in the vault (connectors/custody).

``sync`` makes the vault's entities, groups and policies match the registry; ``import`` takes
existing seeds and passwords into custody (from a file or stdin, never from the command line,
where they would land in shell history and ``ps``); ``tasks`` lists re-enrolment tasks;
``confirm`` closes one with a code from the new seed; ``reassign`` gives it to another holder;
``restore`` gives a person their vault access back (a replaced device).

Every command talks to the vault with the custody provider's own credential (the embedded
vault of ``accessguard run`` included: its token file under ``<data_dir>/openbao``) and prints
JSON on stdout, never a secret.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from streams.cli.wiring import config_option, load
from streams.support.errors import ConfigError

if TYPE_CHECKING:
    from connectors.custody.provider import OpenBaoCustody
    from streams.config import Config
    from streams.model.registry import Registry


def _provider(config: Config, name: str | None) -> OpenBaoCustody:
    """The custody provider ``name`` (default: the only ``openbao`` provider), pointed at
    the embedded vault's address and token file when it is ``embedded``."""
    from connectors.base.catalogue import build_provider  # noqa: PLC0415
    from connectors.base.http import HttpClient, RetryPolicy  # noqa: PLC0415
    from connectors.custody.provider import OpenBaoCustody  # noqa: PLC0415

    vaults = {n: s for n, s in config.providers.items() if s.get("type") == "openbao"}
    if not vaults:
        raise ConfigError("providers", "no provider of type openbao is configured")
    if name is None:
        if len(vaults) > 1:
            raise ConfigError(
                "providers",
                f"several openbao providers: pass --provider ({', '.join(sorted(vaults))})",
            )
        name = next(iter(vaults))
    if name not in vaults:
        raise ConfigError("--provider", f"{name} is not an openbao provider")
    settings = dict(vaults[name])
    if settings.get("embedded"):
        directory = config.data_dir / "openbao"
        url_file = directory / "url"
        settings.update(
            embedded=False,
            auth="token",
            token=f"file:{directory / 'accessguard.token'}",
        )
        if url_file.is_file():
            settings["address"] = url_file.read_text(encoding="utf-8").strip()
    provider = build_provider(name, settings, HttpClient(RetryPolicy()))
    assert isinstance(provider, OpenBaoCustody)
    return provider


def _registry(config: Config, file: str | None) -> Registry:
    from streams.model.registry_yaml import load_registry  # noqa: PLC0415

    path = file or config["registry"]
    if not path:
        raise ConfigError("registry", "pass --registry FILE (or set registry in --config)")
    return load_registry(path)


def _echo(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode())


def _read_secret(source: str, what: str) -> str:
    """A secret from a file or ``-`` (stdin): the first line, stripped."""
    if source == "-":
        text = sys.stdin.readline()
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--{what}-file", f"cannot read {source}: {exc.strerror}") from None
    value = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not value:
        raise ConfigError(f"--{what}-file", f"{source} holds no {what}")
    return value


provider_option = click.option("--provider", help="the openbao provider (default: the only one)")


@click.group()
def custody() -> None:
    """Shared brand logins in the vault: sync, import, re-enrolment tasks."""


@custody.command("sync")
@config_option
@provider_option
@click.option("--registry", "registry_file", help="registry YAML (default: registry in --config)")
@click.option("--no-prune", is_flag=True, help="keep groups of logins gone from the registry")
def sync(
    config_path: str | None, provider: str | None, registry_file: str | None, no_prune: bool
) -> None:
    """Make entities, groups and holder policies match the registry's shared logins."""
    config = load(config_path)
    vault = _provider(config, provider)
    report = vault.custody.sync(_registry(config, registry_file), prune=not no_prune)
    _echo(report.to_dict())


@custody.command("import")
@config_option
@provider_option
@click.argument("account")
@click.option(
    "--seed-file", help="file holding the TOTP seed (otpauth:// URI or base32); - = stdin"
)
@click.option("--password-file", help="file holding the shared password; - = stdin")
@click.option("--username", help="the login's username at the platform")
@click.option("--replace", is_flag=True, help="overwrite a seed already in custody")
@click.option("--registry", "registry_file", help="registry YAML (default: registry in --config)")
def import_(  # noqa: PLR0917 - click passes each option positionally
    config_path: str | None,
    provider: str | None,
    account: str,
    seed_file: str | None,
    password_file: str | None,
    username: str | None,
    replace: bool,
    registry_file: str | None,
) -> None:
    """Take ACCOUNT's existing seed and/or password into custody."""
    from streams.support.secrets import Secret  # noqa: PLC0415

    if seed_file == "-" and password_file == "-":  # noqa: S105 - "-" is stdin, not a password
        raise ConfigError("--seed-file", "only one of --seed-file and --password-file can be -")
    if not (seed_file or password_file or username):
        raise ConfigError(
            "--seed-file", "nothing to import: --seed-file, --password-file or --username"
        )
    config = load(config_path)
    registry = _registry(config, registry_file)
    acct = registry.accounts.get(account)
    if acct is None or acct.shared_credential is None:
        raise ConfigError("ACCOUNT", f"{account} is not a shared login in the registry")
    vault = _provider(config, provider)
    seed = Secret(_read_secret(seed_file, "seed")) if seed_file else None
    password = Secret(_read_secret(password_file, "password")) if password_file else None
    login = username or acct.shared_credential.login or acct.handle
    _echo(
        vault.custody.import_credential(
            account,
            seed=seed,
            password=password,
            username=username or acct.shared_credential.login,
            issuer=acct.platform,
            account_name=login,
            replace_existing=replace,
        )
    )


@custody.command("migrate")
@config_option
@provider_option
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--registry", "registry_file", help="registry YAML (default: registry in --config)")
@click.option("--replace", is_flag=True, help="overwrite seeds already in custody")
def migrate(
    config_path: str | None,
    provider: str | None,
    store: str,
    registry_file: str | None,
    replace: bool,
) -> None:
    """Move every seed of the file secret store STORE (provider type secret_store) into the
    vault, for the registry's shared logins that reference it."""
    from connectors.shared_login.secret_store import FileSecretStore  # noqa: PLC0415

    config = load(config_path)
    registry = _registry(config, registry_file)
    vault = _provider(config, provider)
    files = FileSecretStore(store)
    moved, missing, held = [], [], []
    for acct in sorted(registry.accounts.values(), key=lambda a: a.id):
        shared = acct.shared_credential
        if shared is None or not shared.totp:
            continue
        try:
            seed = files.get(shared.ref)
        except KeyError:
            missing.append(acct.id)
            continue
        if not replace and vault.vault.totp_exists(vault.custody.names(acct.id).totp_key):
            held.append(acct.id)  # custody's seed is what holders use now: kept
            continue
        vault.custody.import_credential(
            acct.id,
            seed=seed,
            password=None,
            username=shared.login,
            issuer=acct.platform,
            account_name=shared.login or acct.handle,
            replace_existing=replace,
        )
        moved.append(acct.id)
    _echo({"moved": moved, "not_in_store": missing, "already_in_custody": held})


@custody.command("tasks")
@config_option
@provider_option
@click.option("--all", "show_all", is_flag=True, help="closed tasks too")
def tasks_(config_path: str | None, provider: str | None, show_all: bool) -> None:
    """List re-enrolment tasks (one JSON object per line): who, what, since when, due when."""
    from connectors.custody.tasks import instructions  # noqa: PLC0415

    config = load(config_path)
    vault = _provider(config, provider)
    for task in vault.custody.tasks():
        if task.active or show_all:
            data = task.to_dict()
            data.pop("keys", None)
            data["what_to_do"] = instructions(task, vault.custody.names(task.account))
            _echo(data)


@custody.command("confirm")
@config_option
@provider_option
@click.argument("account")
@click.option("--code", required=True, help="a code your authenticator shows for the NEW seed")
@click.option("--by", help="who confirms (registry identity id), for the audit trail")
def confirm(
    config_path: str | None, provider: str | None, account: str, code: str, by: str | None
) -> None:
    """Close ACCOUNT's re-enrolment task: the vault checks the code against the new seed;
    then the old seed is destroyed and the new credential takes over."""
    from connectors.custody.service import CodeRejected  # noqa: PLC0415

    config = load(config_path)
    vault = _provider(config, provider)
    try:
        task = vault.custody.confirm(account, code.strip(), by=by)
    except CodeRejected as exc:
        click.echo(f"refused: {exc}", err=True)
        sys.exit(1)
    _echo({"account": task.account, "status": task.status, "closed_at": task.closed_at})


@custody.command("reassign")
@config_option
@provider_option
@click.argument("account")
@click.option("--owner", required=True, help="the registry identity who re-enrols instead")
def reassign(config_path: str | None, provider: str | None, account: str, owner: str) -> None:
    """Give ACCOUNT's open re-enrolment task to another holder."""
    config = load(config_path)
    vault = _provider(config, provider)
    task = vault.custody.reassign(account, owner)
    _echo({"account": task.account, "owner": task.owner, "due_at": task.due_at})


@custody.command("restore")
@config_option
@provider_option
@click.argument("identity")
@click.option("--registry", "registry_file", help="registry YAML (default: registry in --config)")
def restore(
    config_path: str | None, provider: str | None, identity: str, registry_file: str | None
) -> None:
    """Give IDENTITY their vault access back (after a lost device was replaced): their vault
    identity re-enabled and put back in the groups of the shared logins the registry grants."""
    from streams.decide.responses import shared_logins  # noqa: PLC0415

    config = load(config_path)
    registry = _registry(config, registry_file)
    ident = registry.identities.get(identity)
    if ident is None:
        raise ConfigError("IDENTITY", f"{identity} is not in the registry")
    vault = _provider(config, provider)
    accounts = shared_logins(registry, ident)
    result = vault.custody.restore(identity, accounts)
    seen = vault.custody.verify_restored(identity, accounts)
    _echo({**result, "verified": seen["restored"], "accounts": accounts})
