"""`accessguard custody` against a real OpenBao (tests/openbao.py): sync, import from a file
or stdin, migration from the file secret store, tasks, confirm, restore; and the vault logins
a production deployment uses (AppRole, and Kubernetes auth against a local TokenReview API
that answers as the Kubernetes API server does)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hvac
import pyotp
import pytest
import yaml
from click.testing import CliRunner

from connectors.base.credentials import credentials_ready
from connectors.custody.names import Names
from connectors.custody.provider import OpenBaoCustody
from connectors.shared_login.secret_store import FileSecretStore
from streams.cli import main
from streams.model.records import Action
from streams.support.errors import AuthError
from streams.support.secrets import Secret
from tests.openbao import DevVault, dev_vault  # noqa: F401 - the fixture
from tests.stack import REPO
from tests.token_servers import tls_context

REGISTRY = REPO / "examples" / "registry.yaml"
TIKTOK_SEED = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
SA_UID = "0c0ffee0-0000-4000-8000-000000000001"


@pytest.fixture(scope="module")
def config(dev_vault: DevVault, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    base = tmp_path_factory.mktemp("custody-cli")
    token = base / "vault.token"
    token.write_text(dev_vault.accessguard_token() + "\n", encoding="utf-8")
    token.chmod(0o600)
    path = base / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(base / "data"),
                "registry": str(REGISTRY),
                "providers": {
                    "custody": {
                        "type": "openbao",
                        "address": dev_vault.url,
                        "token": f"file:{token}",
                        "alias_mount": "userpass/",
                    }
                },
            }
        ),
        encoding="utf-8",
    )
    return path


def cli(config: Path, *args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(main, ["custody", *args, "--config", str(config)], input=stdin)


def test_sync_import_migrate_and_restore(dev_vault: DevVault, config: Path, tmp_path: Path) -> None:  # noqa: F811
    synced = cli(config, "sync")
    assert synced.exit_code == 0, synced.output
    report = json.loads(synced.output)
    assert report["accounts"] == 2
    assert sorted(report["missing_seed"]) == ["tiktok-lumen", "x-lumen"]

    # the X seed as an otpauth URI from stdin, the password from a file
    seed = pyotp.random_base32()
    uri = pyotp.TOTP(seed).provisioning_uri(name="social@lumen-outdoor.example", issuer_name="x")
    password = tmp_path / "password"
    password.write_text("x-Old-pass-1!\n", encoding="utf-8")
    done = cli(
        config,
        "import",
        "x-lumen",
        "--seed-file",
        "-",
        "--password-file",
        str(password),
        stdin=uri + "\n",
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.output) == {"account": "x-lumen", "password": True, "seed": True}
    assert seed not in done.output
    again = cli(config, "import", "x-lumen", "--seed-file", "-", stdin=uri + "\n")
    assert again.exit_code == 2
    assert "already has a seed in custody" in again.output
    assert seed not in again.output
    unknown = cli(config, "import", "nope", "--seed-file", "-", stdin=uri + "\n")
    assert unknown.exit_code == 2
    assert "not a shared login in the registry" in unknown.output

    # the file secret store's TikTok seed moved over (x-lumen is already in custody)
    store = FileSecretStore(tmp_path / "secrets")
    store.put("shared/tiktok-lumen", TIKTOK_SEED, idempotency_key="k1")
    store.put("shared/x-lumen", pyotp.random_base32(), idempotency_key="k2")
    moved = cli(config, "migrate", str(tmp_path / "secrets"))
    assert moved.exit_code == 0, moved.output
    assert json.loads(moved.output) == {
        "moved": ["tiktok-lumen"],
        "not_in_store": [],
        "already_in_custody": ["x-lumen"],  # imported above: custody's seed is kept
    }
    bob = dev_vault.holder_login("bob")
    code = bob.read(f"totp/code/{Names('tiktok-lumen').totp_key}")["data"]["code"]
    assert code == pyotp.TOTP(TIKTOK_SEED).now()
    assert bob.read(f"totp/code/{Names('x-lumen').totp_key}")["data"]["code"] == (
        pyotp.TOTP(seed).now()
    )
    assert TIKTOK_SEED not in moved.output

    # restore: alice cut by an offboarding, then given her access back
    vault = OpenBaoCustody(
        "custody",
        {"address": dev_vault.url, "token": Secret(dev_vault.accessguard_token())},
    )
    vault.perform(
        Action.make(
            "revoke_shared_access",
            identity="alice",
            account=None,
            provider="custody",
            cause="hr:suspended:s1",
            params={"accounts": ["x-lumen"]},
        )
    )
    restored = cli(config, "restore", "alice")
    assert restored.exit_code == 0, restored.output
    result = json.loads(restored.output)
    assert result["verified"] is True
    assert result["accounts"] == ["x-lumen"]
    alice = dev_vault.holder_login("alice")
    assert alice.read(f"totp/code/{Names('x-lumen').totp_key}")["data"]["code"]

    tasks = cli(config, "tasks")
    assert tasks.exit_code == 0
    assert tasks.output == ""
    missing = cli(config, "confirm", "x-lumen", "--code", "123456")
    assert missing.exit_code == 2
    assert "no open re-enrolment task for x-lumen" in missing.output


def test_import_takes_no_secret_from_the_command_line(config: Path) -> None:
    """There is no option that takes a seed or password as a value: a file or stdin only."""
    result = cli(config, "import", "x-lumen", "--seed", "JBSWY3DPEHPK3PXP")
    assert result.exit_code == 2
    assert "No such option" in result.output
    empty = cli(config, "import", "x-lumen", "--seed-file", "-", stdin="\n")
    assert empty.exit_code == 2
    assert "holds no seed" in empty.output


# -- production logins ----------------------------------------------------------------------


def revoke(identity: str) -> Action:
    return Action.make(
        "revoke_shared_access",
        identity=identity,
        account=None,
        provider="custody",
        cause=f"hr:terminated:{identity}",
        params={"accounts": []},
    )


def test_approle_login_with_only_accessguards_policy(dev_vault: DevVault) -> None:  # noqa: F811
    root = dev_vault.root()
    dev_vault.accessguard_token()  # writes the policy
    if "approle/" not in root.sys.list_auth_methods():
        root.sys.enable_auth_method("approle")
    root.write(
        "auth/approle/role/accessguard",
        token_policies="accessguard",
        token_no_default_policy=True,
        token_ttl="1m",
    )
    role_id = root.read("auth/approle/role/accessguard/role-id")["data"]["role_id"]
    secret_id = root.write("auth/approle/role/accessguard/secret-id")["data"]["secret_id"]
    vault = OpenBaoCustody(
        "custody",
        {
            "address": dev_vault.url,
            "auth": "approle",
            "role_id": role_id,
            "secret_id": Secret(secret_id),
        },
    )
    assert vault.perform(revoke("nobody-here"))["entity"] is None
    # its token expires or is revoked: it logs in again by itself
    token = vault.vault.client().token
    root.auth.token.revoke(token)
    assert vault.perform(revoke("nobody-here"))["entity"] is None
    assert vault.vault.client().token != token


class KubeApi(ThreadingHTTPServer):
    """The Kubernetes API's TokenReview, as the vault's Kubernetes auth calls it: a POST of
    an ``authentication.k8s.io/v1`` TokenReview with the reviewer's bearer token; answers
    authenticated (with the service account's user) only for the one token it issued, for
    the audiences it was issued for."""

    def __init__(self, token: str, audiences: list[str]) -> None:
        self.token = token
        self.audiences = audiences
        self.reviewer = "reviewer-jwt"
        self.reviews: list[dict[str, Any]] = []
        self.ca_pem = ""
        super().__init__(("127.0.0.1", 0), _KubeHandler)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"


class _KubeHandler(BaseHTTPRequestHandler):
    server: KubeApi

    def do_POST(self) -> None:
        if self.path != "/apis/authentication.k8s.io/v1/tokenreviews":
            return self._answer(404, {"kind": "Status", "code": 404})
        if self.headers.get("Authorization") != f"Bearer {self.server.reviewer}":
            return self._answer(401, {"kind": "Status", "code": 401, "reason": "Unauthorized"})
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.server.reviews.append(body)
        spec = body.get("spec") or {}
        wanted = spec.get("audiences") or []
        ok = (
            body.get("kind", "TokenReview") == "TokenReview"  # the server defaults it
            and spec.get("token") == self.server.token
            and all(a in self.server.audiences for a in wanted)
        )
        status: dict[str, Any] = {"authenticated": ok}
        if ok:
            status["user"] = {
                "username": "system:serviceaccount:accessguard:accessguard",
                "uid": SA_UID,
                "groups": ["system:serviceaccounts", "system:serviceaccounts:accessguard"],
            }
            status["audiences"] = wanted or self.server.audiences
        return self._answer(
            201, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status}
        )

    def _answer(self, code: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        return


@pytest.fixture
def kube_api(tmp_path: Path) -> Iterator[KubeApi]:
    # A service-account JWT signed with a key the vault does not know: the vault reads its
    # claims, the TokenReview decides (as with a real cluster and no pem_keys configured).
    import jwt

    from tests.token_servers import pem, rsa_key

    token = jwt.encode(
        {
            "iss": "kubernetes/serviceaccount",
            "kubernetes.io/serviceaccount/namespace": "accessguard",
            "kubernetes.io/serviceaccount/service-account.name": "accessguard",
            "kubernetes.io/serviceaccount/service-account.uid": SA_UID,
            "sub": "system:serviceaccount:accessguard:accessguard",
            "aud": ["vault"],
        },
        pem(rsa_key()),
        algorithm="RS256",
    )
    server = KubeApi(token, ["vault"])
    context, cert = tls_context(tmp_path)  # the API server speaks TLS only
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.ca_pem = cert.read_text(encoding="utf-8")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_kubernetes_login_with_the_pods_projected_token(
    dev_vault: DevVault,  # noqa: F811
    kube_api: KubeApi,
    tmp_path: Path,
) -> None:
    """What deploy/k8s sets up: the projected service-account token (audience vault) at
    jwt_path, exchanged at the vault's Kubernetes auth for the accessguard role."""
    root = dev_vault.root()
    dev_vault.accessguard_token()  # writes the policy
    if "kubernetes/" not in root.sys.list_auth_methods():
        root.sys.enable_auth_method("kubernetes")
    root.write(
        "auth/kubernetes/config",
        kubernetes_host=kube_api.url,
        token_reviewer_jwt=kube_api.reviewer,
        kubernetes_ca_cert=kube_api.ca_pem,
        disable_local_ca_jwt=True,
    )
    root.write(
        "auth/kubernetes/role/accessguard",
        bound_service_account_names="accessguard",
        bound_service_account_namespaces="accessguard",
        audience="vault",
        token_policies="accessguard",
        token_no_default_policy=True,
        token_ttl="1h",
    )
    jwt_path = tmp_path / "token"
    jwt_path.write_text(kube_api.token, encoding="utf-8")
    vault = OpenBaoCustody(
        "custody",
        {
            "address": dev_vault.url,
            "auth": "kubernetes",
            "role": "accessguard",
            "jwt_path": str(jwt_path),
        },
    )
    assert vault.perform(revoke("nobody-there"))["entity"] is None
    assert kube_api.reviews
    assert kube_api.reviews[-1]["spec"]["token"] == kube_api.token
    policies = hvac.Client(url=dev_vault.url, token=vault.vault.client().token).lookup_token()
    assert policies["data"]["policies"] == ["accessguard"]
    # another service account's token is refused: an auth error, loud
    jwt_path.write_text("not-the-pods-token", encoding="utf-8")
    other = OpenBaoCustody(
        "custody2",
        {
            "address": dev_vault.url,
            "auth": "kubernetes",
            "role": "accessguard",
            "jwt_path": str(jwt_path),
        },
    )
    with pytest.raises(AuthError, match="Kubernetes login"):
        other.perform(revoke("nobody-there"))
    assert not credentials_ready([other])
