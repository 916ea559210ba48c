"""The file secret store and the shared-credential rotator: atomic, private, idempotent."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path
from typing import Any
from unittest import mock

import pyotp
import pytest
import structlog

from connectors.base.catalogue import build_provider
from connectors.base.http import HttpClient
from connectors.shared_login.mfa import SharedCredentialRotator, provisioning_uri
from connectors.shared_login.secret_store import FileSecretStore
from streams.model.records import Action
from streams.support.errors import ConfigError, PermanentError, RetryableError
from streams.support.secrets import Secret


def _rotate_action(ref: str = "brand-ig/shared", cause: str = "hr:evt-1") -> Action:
    return Action.make(
        "rotate_shared_credential",
        identity="id-alice",
        account="acct-brand-ig",
        provider="vault",
        cause=cause,
        params={"credential_ref": ref},
    )


def _rotator(tmp_path: Path, **extra: Any) -> SharedCredentialRotator:
    return SharedCredentialRotator("vault", {"path": str(tmp_path / "store"), **extra}, None)


def test_put_get_version_round_trip(tmp_path: Path) -> None:
    """Each put is a new version; get returns a Secret, never a bare string."""
    store = FileSecretStore(tmp_path / "s")
    assert store.version("a") is None
    assert store.put("a", "one") == 1
    assert store.put("a", "two") == 2
    value = store.get("a")
    assert isinstance(value, Secret)
    assert value.reveal() == "two"
    assert "two" not in repr(value)
    assert store.version("a") == 2
    with pytest.raises(KeyError):
        store.get("missing")


def test_files_are_private(tmp_path: Path) -> None:
    """The directory is 0700 and each secret file 0600, whatever the umask."""
    old = os.umask(0o000)
    try:
        store = FileSecretStore(tmp_path / "s")
        store.put("a", "v")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "s").stat().st_mode) == 0o700
    files = [p for p in (tmp_path / "s").iterdir() if not p.name.startswith(".")]
    assert len(files) == 1
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    record = json.loads(files[0].read_text())
    assert set(record) >= {"version", "value", "rotated_at"}


def test_write_is_atomic_a_failed_write_keeps_the_old_value(tmp_path: Path) -> None:
    """If the rename fails mid-write, the old version stays and no temp file is left."""
    store = FileSecretStore(tmp_path / "s")
    store.put("a", "old")
    with (
        mock.patch(
            "connectors.shared_login.secret_store.os.replace", side_effect=OSError("disk full")
        ),
        pytest.raises(OSError, match="disk full"),
    ):
        store.put("a", "new")
    assert store.get("a").reveal() == "old"
    assert store.version("a") == 1
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize(
    "ref",
    ["../etc/passwd", "a/../../b", "/abs", ".hidden", "a//b", "a/./b", "", "a\x00b", "x" * 300],
)
def test_path_traversal_and_odd_refs_are_rejected(tmp_path: Path, ref: str) -> None:
    """References cannot escape the store directory or name hidden files."""
    store = FileSecretStore(tmp_path / "s")
    with pytest.raises(ValueError, match="credential reference"):
        store.put(ref, "v")


def test_refs_with_slashes_stay_in_one_directory(tmp_path: Path) -> None:
    """'team/brand' is stored as one flat file inside the store."""
    store = FileSecretStore(tmp_path / "s")
    store.put("team/brand", "v")
    (entry,) = [p for p in (tmp_path / "s").iterdir() if not p.name.startswith(".")]
    assert entry.is_file()
    assert entry.parent == tmp_path / "s"


def test_concurrent_puts_never_lose_a_version(tmp_path: Path) -> None:
    """Twenty threads rotating at once produce versions 1..20 exactly once each."""
    store = FileSecretStore(tmp_path / "s")
    versions: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        v = store.put("a", f"v{i}")
        with lock:
            versions.append(v)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions) == list(range(1, 21))


def test_rotation_returns_reference_and_version_never_the_secret(tmp_path: Path) -> None:
    """The result, its repr and the logs hold the reference and version, not the seed."""
    rotator = _rotator(tmp_path)
    with structlog.testing.capture_logs() as logs:
        result = rotator.perform(_rotate_action())
    seed = rotator.store.get("brand-ig/shared").reveal()
    assert result == {"credential_ref": "brand-ig/shared", "version": 1, "rotated": True}
    assert seed not in repr(result)
    assert seed not in repr(logs)
    assert any(entry["event"] == "credential_rotated" for entry in logs)
    # The seed is a valid base32 TOTP secret.
    assert pyotp.TOTP(seed).now().isdigit()


def test_rotation_is_idempotent_per_action_key(tmp_path: Path) -> None:
    """The same action twice rotates once; a different action rotates again."""
    rotator = _rotator(tmp_path)
    action = _rotate_action()
    first = rotator.perform(action)
    seed = rotator.store.get("brand-ig/shared").reveal()
    again = rotator.perform(action)
    assert again == {"credential_ref": "brand-ig/shared", "version": 1, "rotated": False}
    assert rotator.store.get("brand-ig/shared").reveal() == seed
    other = rotator.perform(_rotate_action(cause="hr:evt-2"))
    assert other["version"] == 2
    # A redelivery of the first action after a later rotation still does not rotate.
    assert rotator.perform(action)["version"] == first["version"]
    assert rotator.store.version("brand-ig/shared") == 2


def test_store_put_with_the_same_key_writes_once(tmp_path: Path) -> None:
    """put() itself is idempotent per key, so a race between two workers rotates once."""
    store = FileSecretStore(tmp_path / "s")
    assert store.put("a", "first", idempotency_key="k1") == 1
    assert store.put("a", "second", idempotency_key="k1") == 1
    assert store.get("a").reveal() == "first"


def test_rotation_errors_never_carry_the_secret(tmp_path: Path) -> None:
    """A failing write becomes RetryableError without the new seed in it."""
    rotator = _rotator(tmp_path)
    with (
        mock.patch(
            "connectors.shared_login.mfa.pyotp.random_base32", return_value="JBSWY3DPEHPK3PXP"
        ),
        mock.patch(
            "connectors.shared_login.secret_store.os.replace", side_effect=OSError(28, "No space")
        ),
        pytest.raises(RetryableError, match="secret store write failed: No space") as info,
    ):
        rotator.perform(_rotate_action())
    assert "JBSWY3DPEHPK3PXP" not in str(info.value)


def test_rotation_needs_a_valid_credential_ref(tmp_path: Path) -> None:
    """Missing or unsafe references are permanent errors."""
    rotator = _rotator(tmp_path)
    with pytest.raises(PermanentError, match="credential_ref is missing"):
        rotator.perform(_rotate_action(ref=""))
    with pytest.raises(PermanentError, match="credential reference"):
        rotator.perform(_rotate_action(ref="../../etc/shadow"))


def test_rotator_rejects_other_actions(tmp_path: Path) -> None:
    """Only rotate_shared_credential is supported."""
    action = Action.make(
        "revoke_sessions", identity="i", account=None, provider="vault", cause="c", params={}
    )
    with pytest.raises(PermanentError, match="not supported by secret_store"):
        _rotator(tmp_path).perform(action)


def test_rotator_dry_run_writes_nothing(tmp_path: Path) -> None:
    """dry_run reports the rotation and leaves the store empty."""
    rotator = _rotator(tmp_path, dry_run=True)
    assert rotator.perform(_rotate_action())["dry_run"] is True
    assert rotator.store.version("brand-ig/shared") is None


def test_provisioning_uri_is_a_secret_with_the_current_seed(tmp_path: Path) -> None:
    """Holders re-enrol from an otpauth:// URI, returned as a Secret (it contains the seed)."""
    rotator = _rotator(tmp_path)
    rotator.perform(_rotate_action())
    uri = rotator.provisioning_uri("brand-ig/shared", "social@brand.example", "Brand IG")
    seed = rotator.store.get("brand-ig/shared").reveal()
    assert isinstance(uri, Secret)
    assert seed not in repr(uri)
    assert uri.reveal().startswith("otpauth://totp/")
    assert f"secret={seed}" in uri.reveal()
    assert provisioning_uri(rotator.store, "brand-ig/shared", "a", "b").reveal() != ""


def test_rotator_config_and_registry(tmp_path: Path) -> None:
    """The registry builds it without base_url; a missing path is a config error."""
    with HttpClient() as http:
        provider = build_provider("vault", {"type": "secret_store", "path": str(tmp_path)}, http)
        assert provider.supports == frozenset({"rotate_shared_credential"})
        with pytest.raises(ConfigError, match=r"providers\.vault\.path"):
            build_provider("vault", {"type": "secret_store"}, http)
