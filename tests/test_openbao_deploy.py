"""deploy/openbao/ is what the vault operator loads, so it must be exactly what the code and
the manifests assume: accessguard.hcl is the policy of connectors/custody/policy.py (the one
the custody tests run every operation under), the real `bao` parses it, and the README's
Kubernetes role binds the service account, audience and policy the manifests and the config
use."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import yaml

from connectors.custody.policy import accessguard_policy
from tests.kustomize_lite import build
from tests.openbao import bao_binary

REPO = Path(__file__).resolve().parents[1]
OPENBAO = REPO / "deploy" / "openbao"
K8S = REPO / "deploy" / "k8s"


def _sync_module() -> ModuleType:
    """deploy/openbao/sync.py under its own name (deploy/k8s/sync.py is `sync` as well)."""
    spec = importlib.util.spec_from_file_location("openbao_sync", OPENBAO / "sync.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_policy_file_is_what_sync_writes() -> None:
    """accessguard.hcl is accessguard_policy() byte for byte (run deploy/openbao/sync.py)."""
    text = (OPENBAO / "accessguard.hcl").read_text(encoding="utf-8")
    assert text == accessguard_policy()
    sync = _sync_module()
    assert sync.planned() == {OPENBAO / "accessguard.hcl": text}
    assert sync.stale() == []


def test_sync_check_exits_zero_when_current() -> None:
    """`sync.py --check` runs as a script from anywhere and finds nothing stale."""
    result = subprocess.run(
        [sys.executable, str(OPENBAO / "sync.py"), "--check"],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_the_real_bao_parses_the_policy(tmp_path: Path) -> None:
    """`bao policy fmt` (offline) accepts the file: it is valid HCL for the vault."""
    copy = tmp_path / "accessguard.hcl"
    shutil.copy(OPENBAO / "accessguard.hcl", copy)
    result = subprocess.run(
        [bao_binary(), "policy", "fmt", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_policy_grants_nothing_operator_wide() -> None:
    """No `sudo`, no path that covers every policy, every mount or the whole vault: whatever
    accessguard writes is under its own names (connectors/custody/policy.py says which)."""
    policy = accessguard_policy()
    paths = re.findall(r'^path "([^"]+)"', policy, re.M)
    assert paths
    assert "sudo" not in policy
    for path in paths:
        assert path not in {"*", "sys/*", "sys/policies/acl/*", "sys/mounts/*", "auth/*"}, path
        if path.startswith(("sys/policies/", "secret/", "totp/")):
            assert "accessguard" in path, path


def test_readme_kubernetes_role_matches_the_manifests() -> None:
    """The role the README creates binds the manifests' service account in the production
    namespace, the projected token's audience, and the policy; the config logs in with that
    role and token path; the README says no root token is involved."""
    readme = (OPENBAO / "README.md").read_text(encoding="utf-8")
    role = re.search(r"bao write auth/kubernetes/role/(\S+) \\\n((?:.*\\\n)*.*)", readme)
    assert role
    params = dict(re.findall(r"(\w+)=(\S+)", role.group(2)))
    objects = build(K8S / "overlays" / "production")
    (account,) = [o for o in objects if o["kind"] == "ServiceAccount"]
    (worker,) = [
        o
        for o in objects
        if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "accessguard-worker"
    ]
    pod = worker["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert params["bound_service_account_names"] == account["metadata"]["name"]
    assert params["bound_service_account_namespaces"] == account["metadata"]["namespace"]
    audiences = {
        source["serviceAccountToken"]["audience"]
        for volume in pod["volumes"]
        for source in volume.get("projected", {}).get("sources", [])
        if "serviceAccountToken" in source
    }
    assert audiences == {params["audience"]}
    assert params["policies"] == "accessguard"
    assert "bao policy write accessguard deploy/openbao/accessguard.hcl" in readme
    config = yaml.safe_load((K8S / "base" / "config.yaml").read_text(encoding="utf-8"))
    (custody,) = [p for p in config["providers"].values() if p["type"] == "openbao"]
    assert custody["auth"] == "kubernetes"
    assert custody["role"] == role.group(1)
    assert custody["alias_mount"] in readme
    assert "never needs and never gets a root token" in readme
