"""Provider credentials (connectors/base/credentials.py and each vendor's flow) against local
token endpoints that verify what they are sent (tests/token_servers.py).

Proved here: tokens are refreshed before expiry under load from 8 threads across several
token lifetimes with no 401 and a bounded number of token requests; a wrong secret or a
revoked key fails cleanly (AuthError naming the provider and reason, the metric, readiness
false, a log line without the secret) and recovers when fixed; the settings accept exactly
one auth method; the static ``token:`` keeps working as before.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import structlog
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.base.catalogue import build_provider, validate_settings
from connectors.base.credentials import (
    MintedToken,
    StaticToken,
    credentials_ready,
    refresh_margin,
)
from connectors.base.http import HttpClient
from connectors.base.pollers import CheckpointStore
from connectors.entra.poller import GraphSignInPoller
from connectors.okta.credentials import OktaPrivateKeyJwt
from connectors.okta.poller import OktaLogPoller
from streams.model.records import Action
from streams.runtime.worker import WorkerServices
from streams.support.errors import AuthError, RetryableError
from streams.support.metrics import REGISTRY
from streams.support.secrets import Secret
from tests.token_servers import (
    EntraServer,
    GoogleServer,
    OktaServer,
    pem,
    rsa_key,
    tls_context,
)

CLIENT_ID = "0oa-accessguard"
ADMIN = "admin@example.com"
SA_EMAIL = "accessguard@project.iam.gserviceaccount.com"
SECURITY_SCOPE = "https://www.googleapis.com/auth/admin.directory.user.security"
USER_SCOPE = "https://www.googleapis.com/auth/admin.directory.user"


def _failures(provider: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "accessguard_provider_credential_failures_total", {"provider": provider, "reason": reason}
    )
    return value or 0.0


def _action(n: int = 0, action: str = "revoke_sessions") -> Action:
    return Action.make(
        action,
        identity=f"id-{n}",
        account=None,
        provider="p",
        cause=f"hr:evt-{n}",
        params={"user_ref": f"user{n}"},
    )


@pytest.fixture(scope="module")
def okta_key() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.fixture
def okta(okta_key: rsa.RSAPrivateKey) -> Iterator[OktaServer]:
    server = OktaServer(
        okta_key.public_key(), CLIENT_ID, {"okta.users.manage", "okta.logs.read"}
    ).start()
    yield server
    server.stop()


@pytest.fixture
def http() -> Iterator[HttpClient]:
    client = HttpClient()
    yield client
    client.close()


def _okta_provider(server: OktaServer, key_file: Path, http: HttpClient) -> Any:
    return build_provider(
        "corp",
        {
            "type": "okta",
            "base_url": server.url,
            "client_id": CLIENT_ID,
            "private_key": f"file:{key_file}",
            "key_id": "kid-1",
        },
        http,
    )


def _hammer(
    perform: Callable[[int], Any], seconds: float, threads: int = 8
) -> tuple[int, list[Any]]:
    """Call ``perform`` from ``threads`` threads for ``seconds``; (calls, errors)."""
    deadline = time.monotonic() + seconds
    errors: list[Any] = []
    count = [0]
    lock = threading.Lock()

    def worker(n: int) -> None:
        i = 0
        while time.monotonic() < deadline:
            try:
                perform(n * 100_000 + i)
            except Exception as exc:
                errors.append(exc)
            i += 1
            with lock:
                count[0] += 1
            time.sleep(0.005)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return count[0], errors


# --- the framework ------------------------------------------------------------------------


def test_refresh_margin_is_60s_or_a_tenth_whichever_smaller() -> None:
    assert refresh_margin(3600) == 60
    assert refresh_margin(300) == 30
    assert refresh_margin(2) == pytest.approx(0.2)


class _Counting(MintedToken):
    def __init__(self, lifetime: float, clock: Callable[[], float]) -> None:
        super().__init__("test:counting", clock=clock)
        self.lifetime = lifetime

    def _mint(self) -> Any:
        from connectors.base.credentials import Minted

        time.sleep(0.05)  # others arrive while this refresh runs
        return Minted(f"t{self.mints}", self.lifetime)


def test_one_refresh_at_a_time_and_the_valid_token_is_used_meanwhile() -> None:
    now = [0.0]
    cred = _Counting(100.0, lambda: now[0])
    with ThreadPoolExecutor(16) as pool:
        first = set(pool.map(lambda _: cred.headers()["Authorization"], range(32)))
    assert first == {"Bearer t1"}  # 16 threads waited for one mint
    assert cred.mints == 1
    now[0] = 95.0  # inside the margin (10 s): due for refresh, still valid
    with ThreadPoolExecutor(16) as pool:
        seen = set(pool.map(lambda _: cred.headers()["Authorization"], range(32)))
    assert cred.mints == 2
    assert seen <= {"Bearer t1", "Bearer t2"}  # the old token while the refresh ran


def test_a_token_near_its_end_is_not_handed_out_while_another_thread_refreshes() -> None:
    """Inside the last three quarters of the refresh margin the old token is too close to
    expiry for a request to arrive in time (the vendor's clock runs ahead of ours): callers
    wait for the refresh instead. Found by the stack test: a token with 0.02 s left got a
    401."""
    now = [0.0]
    cred = _Counting(100.0, lambda: now[0])
    assert cred.headers() == {"Authorization": "Bearer t1"}
    now[0] = 98.0  # margin 10 s: refresh due at 90, old token usable until 92.5
    with ThreadPoolExecutor(16) as pool:
        seen = set(pool.map(lambda _: cred.headers()["Authorization"], range(32)))
    assert seen == {"Bearer t2"}
    assert cred.mints == 2


def test_a_401_to_a_minted_token_is_sent_once_more_with_a_new_one() -> None:
    """The vendor revoked the cached token early: ``rejected`` forgets it (the next call
    mints), and only when it is still the token that was refused."""
    now = [0.0]
    cred = _Counting(100.0, lambda: now[0])
    refused = cred.headers()
    assert cred.rejected({"Authorization": "Bearer someone-else"})
    assert cred.headers() == refused  # another token was refused: the cache stays
    assert cred.rejected(refused)
    assert cred.headers() == {"Authorization": "Bearer t2"}
    assert not StaticToken(Secret("abc"), "okta:x").rejected({"Authorization": "Bearer abc"})


def test_static_token_is_sent_as_before() -> None:
    assert StaticToken(Secret("abc"), "okta:x", scheme="SSWS").headers() == {
        "Authorization": "SSWS abc"
    }
    cred = StaticToken(Secret(""), "okta:x")
    with pytest.raises(AuthError):
        cred.headers()
    assert not cred.status().ok


# --- Okta: private_key_jwt --------------------------------------------------------------


def test_okta_refreshes_under_load_without_401(
    okta: OktaServer, okta_key: rsa.RSAPrivateKey, tmp_path: Path, http: HttpClient
) -> None:
    key_file = tmp_path / "okta.pem"
    key_file.write_text(pem(okta_key))
    provider = _okta_provider(okta, key_file, http)
    seconds = 7.0  # 3.5 lifetimes of 2 s
    calls, errors = _hammer(lambda n: provider.perform(_action(n)), seconds)
    assert errors == []
    assert okta.api_unauthorized == 0
    assert calls > 200
    # One token per (lifetime - margin) = 1.8 s, plus the first: at most 6 in 7 s.
    assert 4 <= okta.token_requests <= 6, okta.token_requests
    assert provider.credentials.status().ok
    print(
        f"okta: {calls} actions, {seconds / okta.lifetime} lifetimes, "
        f"{okta.token_requests} token requests, {okta.api_unauthorized} 401s"
    )


def test_okta_assertion_is_refused_when_reused(
    okta: OktaServer, okta_key: rsa.RSAPrivateKey
) -> None:
    cred = OktaPrivateKeyJwt(
        "okta:x",
        org_url=okta.url,
        client_id=CLIENT_ID,
        private_key=Secret(pem(okta_key)),
        key_id=None,
        scopes=["okta.users.manage"],
    )
    form = {
        "grant_type": "client_credentials",
        "scope": "okta.users.manage",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": cred.assertion(),
    }
    url = f"{okta.url}/oauth2/v1/token"
    assert requests.post(url, data=form, timeout=5).status_code == 200
    again = requests.post(url, data=form, timeout=5)
    assert again.status_code == 401
    assert again.json()["error"] == "invalid_client"


def test_okta_revoked_key_fails_visibly_and_recovers(
    okta: OktaServer, okta_key: rsa.RSAPrivateKey, tmp_path: Path, http: HttpClient
) -> None:
    wrong = pem(rsa_key())
    key_file = tmp_path / "okta.pem"
    key_file.write_text(wrong)
    provider = _okta_provider(okta, key_file, http)
    before = _failures("okta:corp", "invalid_client")
    with structlog.testing.capture_logs() as logs, pytest.raises(AuthError) as info:
        provider.perform(_action())
    message = str(info.value)
    assert message.startswith("okta:corp: cannot obtain an access token (invalid_client)")
    assert _failures("okta:corp", "invalid_client") == before + 1
    (line,) = [e for e in logs if e["event"] == "credential_failed"]
    assert line["provider"] == "okta:corp"
    assert line["reason"] == "invalid_client"
    body = wrong.splitlines()[1]
    assert body not in repr(logs)
    assert body not in message
    assert okta.api_calls == 0  # nothing was sent without a token
    status = provider.credentials.status()
    assert not status.ok
    assert status.reason == "invalid_client"
    assert not credentials_ready([provider])
    assert _readiness([provider])["credentials"] is False

    key_file.write_text(pem(okta_key))  # the registered key mounted again
    with structlog.testing.capture_logs() as logs:
        assert provider.perform(_action())["status"] == 200
    assert [e["event"] for e in logs if "credential" in e["event"]] == ["credential_recovered"]
    assert credentials_ready([provider])
    assert _readiness([provider])["credentials"] is True


def test_okta_scope_not_granted_is_invalid_scope(
    okta: OktaServer, okta_key: rsa.RSAPrivateKey, tmp_path: Path, http: HttpClient
) -> None:
    key_file = tmp_path / "okta.pem"
    key_file.write_text(pem(okta_key))
    settings = {
        "type": "okta",
        "base_url": okta.url,
        "client_id": CLIENT_ID,
        "private_key": f"file:{key_file}",
        "scopes": ["okta.users.manage", "okta.apps.manage"],
    }
    provider = build_provider("scoped", settings, http)
    with pytest.raises(AuthError, match=r"\(invalid_scope\)"):
        provider.perform(_action())


def test_okta_endpoint_down_is_retryable(
    okta_key: rsa.RSAPrivateKey, tmp_path: Path, http: HttpClient
) -> None:
    server = OktaServer(okta_key.public_key(), CLIENT_ID, {"okta.users.manage"}).start()
    url = server.url
    server.stop()
    key_file = tmp_path / "okta.pem"
    key_file.write_text(pem(okta_key))
    provider = build_provider(
        "down",
        {
            "type": "okta",
            "base_url": url,
            "client_id": CLIENT_ID,
            "private_key": f"file:{key_file}",
        },
        http,
    )
    with pytest.raises(RetryableError, match=r"\(unreachable\)"):
        provider.perform(_action())
    assert provider.credentials.status().reason == "unreachable"


def test_okta_poller_uses_the_service_app_with_logs_scope(
    okta: OktaServer, okta_key: rsa.RSAPrivateKey, tmp_path: Path, http: HttpClient
) -> None:
    okta.scopes = {"okta.logs.read"}  # the poller's app needs only this
    poller = _poller(
        OktaLogPoller,
        {
            "type": "okta",
            "base_url": okta.url,
            "client_id": CLIENT_ID,
            "private_key": Secret(pem(okta_key)),
        },
        http,
        tmp_path,
    )
    page = poller.fetch(None)
    assert page.records == []
    assert okta.issued == 1
    assert okta.api_unauthorized == 0
    assert credentials_ready([poller])


def _poller(cls: Any, settings: dict[str, Any], http: HttpClient, tmp_path: Path) -> Any:
    async def publish(events: Any) -> None:
        pass

    async def reject(payload: Any, reason: str) -> None:
        pass

    return cls("logs", settings, http, CheckpointStore(tmp_path), publish=publish, reject=reject)


def _readiness(providers: list[Any], pollers: list[Any] | None = None) -> dict[str, bool]:
    """The worker's readiness with everything but the providers and pollers stubbed."""
    stub = SimpleNamespace(
        publisher=SimpleNamespace(reachable=True),
        views=SimpleNamespace(
            ready=SimpleNamespace(is_set=lambda: True),
            registry=SimpleNamespace(identities={"x": 1}),
            tailing=True,
        ),
        assigned=True,
        progress=SimpleNamespace(ok=True),
        journal=SimpleNamespace(check_writable=lambda: True),
        secrets=None,
        executor=SimpleNamespace(providers={str(i): p for i, p in enumerate(providers)}),
        pollers=pollers or [],
    )
    checks: dict[str, bool] = WorkerServices.readiness(stub)  # type: ignore[arg-type]
    return checks


# --- Google: service account with domain-wide delegation ---------------------------------


@pytest.fixture
def google_key() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.fixture
def google(google_key: rsa.RSAPrivateKey) -> Iterator[GoogleServer]:
    # Delegated: what the provider asks for by default (connectors/google/credentials.py).
    server = GoogleServer(
        google_key.public_key(), SA_EMAIL, ADMIN, {SECURITY_SCOPE, USER_SCOPE}
    ).start()
    yield server
    server.stop()


def _sa_json(server: GoogleServer, key: rsa.RSAPrivateKey) -> str:
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "project",
            "private_key_id": "abc123",
            "private_key": pem(key),
            "client_email": SA_EMAIL,
            "client_id": "1234567890",
            "token_uri": f"{server.url}/token",
        }
    )


def test_google_refreshes_under_load_without_401(
    google: GoogleServer, google_key: rsa.RSAPrivateKey, tmp_path: Path, http: HttpClient
) -> None:
    key_file = tmp_path / "sa.json"
    key_file.write_text(_sa_json(google, google_key))
    provider = build_provider(
        "workspace",
        {
            "type": "google",
            "base_url": google.url,
            "service_account": f"file:{key_file}",
            "subject": ADMIN,
        },
        http,
    )
    seconds = 6.5
    calls, errors = _hammer(lambda n: provider.perform(_action(n)), seconds)
    assert errors == []
    assert google.api_unauthorized == 0
    assert 4 <= google.token_requests <= 6, google.token_requests
    print(
        f"google: {calls} actions, {seconds / google.lifetime} lifetimes, "
        f"{google.token_requests} token requests, {google.api_unauthorized} 401s"
    )


def test_google_subject_without_delegation_fails_visibly(
    google: GoogleServer, google_key: rsa.RSAPrivateKey, http: HttpClient
) -> None:
    raw = _sa_json(google, google_key)
    provider = build_provider(
        "workspace2",
        {
            "type": "google",
            "base_url": google.url,
            "service_account": Secret(raw),
            "subject": "someone-else@example.com",
        },
        http,
    )
    with structlog.testing.capture_logs() as logs, pytest.raises(AuthError) as info:
        provider.perform(_action())
    assert "(unauthorized_client)" in str(info.value)
    assert _failures("google:workspace2", "unauthorized_client") >= 1
    assert "BEGIN PRIVATE KEY" not in repr(logs) + str(info.value)
    assert pem(google_key).splitlines()[2] not in repr(logs) + str(info.value)
    assert not provider.credentials.status().ok


# --- Entra: MSAL client credentials -------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    """A self-signed certificate for 127.0.0.1 (MSAL talks only https)."""
    return tls_context(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def entra_env(tls: tuple[ssl.SSLContext, Path], monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls[1]))
    return tls[0]


def _entra(context: ssl.SSLContext, **kw: Any) -> EntraServer:
    return EntraServer(
        "tenant-1",
        "app-1",
        wrap_tls=lambda sock: context.wrap_socket(sock, server_side=True),
        **kw,
    ).start()  # type: ignore[return-value]


def _graph_settings(server: EntraServer, **kw: Any) -> dict[str, Any]:
    return {
        "type": "graph",
        "base_url": server.url,
        "authority": server.url,
        "tenant_id": "tenant-1",
        "client_id": "app-1",
        **kw,
    }


def test_entra_secret_refreshes_under_load_without_401(
    entra_env: ssl.SSLContext, tmp_path: Path, http: HttpClient
) -> None:
    server = _entra(entra_env, client_secret="s3cr3t-value-1")
    try:
        provider = build_provider(
            "entra", _graph_settings(server, client_secret=Secret("s3cr3t-value-1")), http
        )
        seconds = 6.5
        calls, errors = _hammer(lambda n: provider.perform(_action(n)), seconds)
        assert errors == []
        assert server.api_unauthorized == 0
        assert 4 <= server.token_requests <= 6, server.token_requests
        print(
            f"entra: {calls} actions, {seconds / server.lifetime} lifetimes, "
            f"{server.token_requests} token requests, {server.api_unauthorized} 401s"
        )
    finally:
        server.stop()


def test_entra_wrong_secret_fails_visibly_and_recovers(
    entra_env: ssl.SSLContext, tmp_path: Path, http: HttpClient
) -> None:
    server = _entra(entra_env, client_secret="right-secret-value")
    secret_file = tmp_path / "secret"
    secret_file.write_text("wrong-secret-value")
    try:
        provider = build_provider(
            "entra2", _graph_settings(server, client_secret=f"file:{secret_file}"), http
        )
        with structlog.testing.capture_logs() as logs, pytest.raises(AuthError) as info:
            provider.perform(_action())
        assert "graph:entra2: cannot obtain an access token (invalid_client)" in str(info.value)
        assert "wrong-secret-value" not in repr(logs) + str(info.value)
        assert _failures("graph:entra2", "invalid_client") == 1
        assert _readiness([provider])["credentials"] is False
        secret_file.write_text("right-secret-value")
        assert provider.perform(_action())["status"] == 200
        assert _readiness([provider])["credentials"] is True
    finally:
        server.stop()


def test_entra_certificate_and_the_poller(
    entra_env: ssl.SSLContext, tmp_path: Path, http: HttpClient
) -> None:
    cert_key = rsa_key()
    server = _entra(entra_env, certificate_key=cert_key.public_key())
    try:
        settings = _graph_settings(
            server,
            client_certificate=Secret(pem(cert_key)),
            client_certificate_thumbprint="A1B2C3D4E5F60718293A4B5C6D7E8F9012345678",
        )
        poller = _poller(GraphSignInPoller, settings, http, tmp_path)
        assert poller.fetch(None).records == []
        provider = build_provider("entra3", settings, http)
        assert provider.perform(_action(action="force_mfa_reenrolment"))["status"] == 204
        assert server.api_unauthorized == 0
        assert credentials_ready([provider, poller])
    finally:
        server.stop()


# --- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"type": "okta", "base_url": "https://x.okta.com"}, "providers.p.token"),
        (
            {"type": "okta", "base_url": "https://x.okta.com", "token": "t", "client_id": "c"},
            "providers.p.client_id",
        ),
        (
            {"type": "okta", "base_url": "https://x.okta.com", "client_id": "c"},
            "providers.p.private_key",
        ),
        (
            {
                "type": "graph",
                "base_url": "https://graph.microsoft.com",
                "tenant_id": "t",
                "client_id": "c",
            },
            "providers.p.client_secret",
        ),
        (
            {
                "type": "google",
                "base_url": "https://admin.googleapis.com",
                "service_account": "env:X",
            },
            "providers.p.subject",
        ),
    ],
)
def test_exactly_one_auth_method_is_configured(settings: dict[str, Any], problem: str) -> None:
    values, problems = validate_settings("providers", "p", settings)
    assert values is None
    assert problem in [p.key for p in problems], problems


@pytest.mark.parametrize(
    "settings",
    [
        {"type": "okta", "base_url": "https://x.okta.com", "dry_run": True},
        {"type": "okta", "base_url": "https://x.okta.com", "token": "env:T"},
        {
            "type": "okta",
            "base_url": "https://x.okta.com",
            "client_id": "c",
            "private_key": "env:K",
        },
        {
            "type": "graph",
            "base_url": "https://graph.microsoft.com",
            "tenant_id": "t",
            "client_id": "c",
            "client_certificate": "file:/k.pem",
            "client_certificate_thumbprint": "AB",
        },
        {
            "type": "google",
            "base_url": "https://admin.googleapis.com",
            "service_account": "env:X",
            "subject": ADMIN,
        },
    ],
)
def test_valid_auth_methods(settings: dict[str, Any]) -> None:
    values, problems = validate_settings("providers", "p", settings)
    assert problems == []
    assert values is not None
