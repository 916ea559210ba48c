"""Account lifecycle actions and their read-back against stateful vendor fakes.

Each provider performs every action it supports and reads it back (``verify``) against the
fakes of tests/idp_fakes.py, with real token minting (tokens live about a second, so every
test crosses refreshes): PENDING while Okta's System Log or Graph's session time is not
readable yet and VERIFIED after; UNVERIFIED when someone changed the state back;
NOT_VERIFIABLE for Google's sign-out; a missing scope or role is a clean AuthError; Okta's
"already in that state" 400 counts as done; dry runs send nothing and show the filled
request; the generic provider's ``verify`` configuration is validated and read back.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.base.catalogue import build_provider, validate_settings
from connectors.base.http import HttpClient
from connectors.base.provider import (
    NOT_VERIFIABLE,
    PENDING,
    UNVERIFIED,
    VERIFIED,
    ProviderBase,
    Verification,
    is_dry_run,
)
from connectors.generic.provider import GenericRestProvider
from streams.model.records import Action
from streams.support.errors import AuthError, ConfigError, PermanentError
from streams.support.secrets import Secret
from tests.idp_fakes import (
    GOOGLE_SECURITY_SCOPE,
    GRAPH_ROLES,
    GoogleDirectory,
    GraphDirectory,
    OktaDirectory,
    google_directory,
    graph_directory,
    okta_directory,
)
from tests.token_servers import ApiCall, Reply, TokenServer, rsa_key, tls_context

#: Token lifetime at the fakes (refreshed 0.2 s before expiry; the fakes' clock runs 0.1 s
#: ahead). Each "every action" test runs longer than this, so it crosses a refresh.
LIFETIME = 2.0
#: Pause between two actions of an "every action" test.
PAUSE = 0.4
OKTA_ORDER = (
    "revoke_sessions",
    "force_mfa_reenrolment",
    "revoke_tokens",
    "disable_account",
    "enable_account",
    "expire_password",
)


def _action(kind: str, user_ref: str) -> Action:
    return Action.make(
        kind,
        identity="id-alice",
        account=None,
        provider="p",
        cause="hr:evt-9",
        params={"user_ref": user_ref},
    )


def _until(
    provider: ProviderBase, action: Action, issued_at: float, timeout: float = 5.0
) -> tuple[Verification, int]:
    """Read back until not PENDING: (the answer, how many PENDING answers came first)."""
    pending = 0
    deadline = time.monotonic() + timeout
    while True:
        answer = provider.verify(action, {}, issued_at)
        if answer.status != PENDING or time.monotonic() > deadline:
            return answer, pending
        pending += 1
        time.sleep(0.1)


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa_key()


Built = tuple[Any, dict[str, Any]]


def _provider(built: Built, http: HttpClient, **extra: Any) -> ProviderBase:
    """The provider for a fake (tests/idp_fakes.py) with ``extra`` settings."""
    provider: ProviderBase = build_provider("p", {**built[1], **extra}, http)  # type: ignore[assignment]
    return provider


# --- Okta ---------------------------------------------------------------------------------


@pytest.fixture
def okta_built(key: rsa.RSAPrivateKey) -> Iterator[Built]:
    built = okta_directory(key, lifetime=LIFETIME, log_delay=0.5)
    yield built
    built[0].stop()


@pytest.fixture
def okta(okta_built: Built) -> OktaDirectory:
    server: OktaDirectory = okta_built[0]
    return server


def test_okta_every_action_is_performed_and_verified(
    okta: OktaDirectory, okta_built: Built, http: HttpClient
) -> None:
    user = okta.add_user("alice@example.com")
    provider = _provider(okta_built, http)
    assert provider.verifies == provider.supports
    for kind in OKTA_ORDER:
        action = _action(kind, "alice@example.com")  # the login; Okta takes it as the id
        issued = time.time()
        assert provider.perform(action)["status"] in (200, 204)
        answer, pending = _until(provider, action, issued)
        assert answer.status == VERIFIED, (kind, answer)
        if kind == "revoke_sessions":
            # The System Log shows the event only after log_delay.
            assert pending >= 1
            assert answer.evidence["event_uuid"] == okta.events[-1][1]["uuid"]
        assert "alice@example.com" not in json.dumps(answer.to_dict())
        time.sleep(PAUSE)
    assert user.status == "PASSWORD_EXPIRED"
    assert user.factors == {}
    assert user.grants == []
    assert okta.issued >= 2  # crossed at least one refresh
    assert okta.api_unauthorized == 0
    # The System Log query is the documented one, for the Okta user id.
    logs = [q for m, p, q in okta.calls if p == "/api/v1/logs"]
    assert logs[0]["filter"] == (f'eventType eq "user.session.clear" and target.id eq "{user.id}"')
    assert logs[0]["since"].endswith("Z")


def test_a_token_revoked_at_the_vendor_is_replaced_after_one_401(
    okta: OktaDirectory, okta_built: Built, http: HttpClient
) -> None:
    """Okta forgets every token it issued (a key rotation, an admin revoking the app's
    tokens): the next action gets one 401, mints a new token and is sent once more."""
    user = okta.add_user("gail@example.com")
    provider = _provider(okta_built, http)
    provider.perform(_action("revoke_tokens", user.id))
    minted = okta.issued
    with okta.lock:
        okta.tokens.clear()
    assert provider.perform(_action("disable_account", user.id))["status"] == 200
    assert user.status == "SUSPENDED"
    assert okta.api_unauthorized == 1
    assert okta.issued == minted + 1


def test_okta_already_suspended_400_is_done(
    okta: OktaDirectory, okta_built: Built, http: HttpClient
) -> None:
    user = okta.add_user("bob@example.com")
    provider = _provider(okta_built, http)
    action = _action("disable_account", user.id)
    assert provider.perform(action)["status"] == 200
    again = provider.perform(action)  # redelivered: Okta answers 400 E0000001
    assert again["status"] == 200
    assert again["already"] == "SUSPENDED"
    suspends = [p for m, p, q in okta.calls if p.endswith("/lifecycle/suspend")]
    assert len(suspends) == 2
    assert user.status == "SUSPENDED"


def test_okta_invalid_transition_is_permanent(
    okta: OktaDirectory, okta_built: Built, http: HttpClient
) -> None:
    user = okta.add_user("carol@example.com", status="DEPROVISIONED")
    provider = _provider(okta_built, http)
    with pytest.raises(PermanentError, match="HTTP 400"):
        provider.perform(_action("expire_password", user.id))


def test_okta_suspend_refused_for_an_expired_password_deactivates_instead(
    okta: OktaDirectory, okta_built: Built, http: HttpClient
) -> None:
    """A leak response expired the password (PASSWORD_EXPIRED); Okta suspends only ACTIVE
    users, so the termination's disable deactivates instead, and is verified; re-enabling
    the deactivated user activates it."""
    user = okta.add_user("frank@example.com")
    provider = _provider(okta_built, http)
    provider.perform(_action("expire_password", user.id))
    assert user.status == "PASSWORD_EXPIRED"
    disable = _action("disable_account", user.id)
    result = provider.perform(disable)
    assert result["from"] == "PASSWORD_EXPIRED"
    assert result["fallback"].endswith("/lifecycle/deactivate?sendEmail=false")
    assert user.status == "DEPROVISIONED"
    assert provider.verify(disable, result, time.time()).status == VERIFIED
    enable = _action("enable_account", user.id)
    back = provider.perform(enable)
    assert back["fallback"].endswith("/lifecycle/activate?sendEmail=false")
    assert provider.verify(enable, back, time.time()).status == VERIFIED


def test_okta_deactivate_mode(okta: OktaDirectory, okta_built: Built, http: HttpClient) -> None:
    user = okta.add_user("dave@example.com")
    provider = _provider(okta_built, http, disable_mode="deactivate")
    disable = _action("disable_account", user.id)
    assert provider.perform(disable)["status"] == 200
    assert user.status == "DEPROVISIONED"
    assert provider.verify(disable, {}, time.time()).evidence == {"status": "DEPROVISIONED"}
    assert provider.perform(disable)["already"] == "DEPROVISIONED"
    enable = _action("enable_account", user.id)
    assert provider.perform(enable)["status"] == 200
    assert provider.verify(enable, {}, time.time()).status == VERIFIED
    assert provider.perform(enable)["already"] == "ACTIVE"
    queries = [(p.rsplit("/", 1)[1], q) for m, p, q in okta.calls if "/lifecycle/" in p]
    assert ("deactivate", {"sendEmail": "false"}) in queries
    assert ("activate", {"sendEmail": "false"}) in queries


def test_okta_state_changed_back_is_unverified(
    okta: OktaDirectory, okta_built: Built, http: HttpClient
) -> None:
    user = okta.add_user("erin@example.com")
    provider = _provider(okta_built, http)
    action = _action("disable_account", user.id)
    provider.perform(action)
    assert provider.verify(action, {}, time.time()).status == VERIFIED
    user.status = "ACTIVE"  # someone unsuspended the account
    answer = provider.verify(action, {}, time.time())
    assert answer.status == UNVERIFIED
    assert answer.evidence == {"status": "ACTIVE"}
    user.factors["push"] = "ACTIVE"  # re-enrolled
    mfa = provider.verify(_action("force_mfa_reenrolment", user.id), {}, time.time())
    assert mfa.status == UNVERIFIED
    assert mfa.evidence["active_factors"] == 2


def test_okta_missing_logs_scope_is_a_clean_auth_error(
    okta: OktaDirectory, okta_built: Built, http: HttpClient
) -> None:
    okta.scopes = {"okta.users.manage"}
    user = okta.add_user("frank@example.com")
    provider = _provider(okta_built, http, scopes=["okta.users.manage"])
    action = _action("revoke_sessions", user.id)
    assert provider.perform(action)["status"] == 204
    with pytest.raises(AuthError, match=r"HTTP 403.*E0000006"):
        provider.verify(action, {}, time.time())


# --- Microsoft Graph ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    return tls_context(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def graph_built(
    tls: tuple[ssl.SSLContext, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Built]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls[1]))
    built = graph_directory(tls[0], lifetime=LIFETIME, session_readback_delay=1.2)
    yield built
    built[0].stop()


@pytest.fixture
def graph(graph_built: Built) -> GraphDirectory:
    server: GraphDirectory = graph_built[0]
    return server


def test_graph_every_action_is_performed_and_verified(
    graph: GraphDirectory, graph_built: Built, http: HttpClient
) -> None:
    user = graph.add_user("alice@example.com")
    provider = _provider(graph_built, http)
    assert provider.verifies == provider.supports
    for kind in (
        "revoke_sessions",
        "force_mfa_reenrolment",
        "disable_account",
        "enable_account",
        "expire_password",
    ):
        action = _action(kind, user.id)
        issued = time.time()
        assert provider.perform(action)["status"] in (200, 204)
        answer, pending = _until(provider, action, issued)
        assert answer.status == VERIFIED, (kind, answer)
        time.sleep(PAUSE)
        if kind == "revoke_sessions":
            # Graph shows the new signInSessionsValidFromDateTime only later.
            assert pending >= 1
            assert answer.evidence["signInSessionsValidFromDateTime"].endswith("Z")
    assert user.methods == []
    assert user.accountEnabled is True
    assert user.forceChangePasswordNextSignIn is True
    assert graph.issued >= 2
    assert graph.api_unauthorized == 0
    # Each read-back selects only what it needs.
    selects = {q.get("$select") for m, p, q in graph.calls if m == "GET" and "$select" in q}
    assert selects == {"signInSessionsValidFromDateTime", "accountEnabled", "passwordProfile"}


def test_graph_state_changed_back_is_unverified(
    graph: GraphDirectory, graph_built: Built, http: HttpClient
) -> None:
    user = graph.add_user("bob@example.com")
    provider = _provider(graph_built, http)
    action = _action("disable_account", user.id)
    provider.perform(action)
    assert provider.verify(action, {}, time.time()).status == VERIFIED
    user.accountEnabled = True  # someone re-enabled the account
    answer = provider.verify(action, {}, time.time())
    # Graph replicates writes: read again until verify.timeout, then it pages with this
    assert answer.status == PENDING
    assert answer.evidence == {"accountEnabled": True}
    user.methods.append(("fido2Methods", "key-1"))
    mfa = provider.verify(_action("force_mfa_reenrolment", user.id), {}, time.time())
    assert mfa.status == UNVERIFIED
    assert mfa.evidence["non_password_methods"] == 3


def test_graph_missing_role_is_a_clean_auth_error(
    graph: GraphDirectory, graph_built: Built, http: HttpClient
) -> None:
    graph.roles = set(GRAPH_ROLES - {"User.EnableDisableAccount.All"})
    user = graph.add_user("carol@example.com")
    provider = _provider(graph_built, http)
    with pytest.raises(AuthError, match=r"HTTP 403.*Authorization_RequestDenied"):
        provider.perform(_action("disable_account", user.id))
    assert user.accountEnabled is True
    assert provider.perform(_action("expire_password", user.id))["status"] == 204


def test_graph_clock_skew_setting_and_fake_shapes(
    graph: GraphDirectory, graph_built: Built, http: HttpClient
) -> None:
    user = graph.add_user("dave@example.com")
    graph.session_readback_delay = 0.0
    provider = _provider(graph_built, http, verify_clock_skew=0)
    action = _action("revoke_sessions", user.id)
    before = time.time()  # the revocation's valid-from is at or after this, whole seconds
    provider.perform(action)
    # Graph truncates to whole seconds: with no skew allowed a late issue time stays PENDING.
    assert provider.verify(action, {}, time.time() + 1.5).status == PENDING
    # Read from before the call: "now - 1 s" after a slow first verify (CI under load) could
    # fall after the truncated valid-from and flake.
    assert provider.verify(action, {}, before - 1.0).status == VERIFIED
    headers = provider.auth_headers()
    url = f"{graph.url}/v1.0/users/{user.id}"
    assert (
        requests.patch(url, json={"nickname": "x"}, headers=headers, timeout=5).status_code == 400
    )
    assert (
        requests.patch(url, json={"accountEnabled": "no"}, headers=headers, timeout=5).status_code
        == 400
    )
    assert requests.delete(url, headers=headers, timeout=5).status_code == 405
    assert requests.get(url + "/nothing", headers=headers, timeout=5).status_code == 404
    with pytest.raises(ConfigError, match="verify_clock_skew"):
        _provider(graph_built, http, verify_clock_skew=-1)


# --- Google -------------------------------------------------------------------------------


@pytest.fixture
def google_built(key: rsa.RSAPrivateKey) -> Iterator[Built]:
    built = google_directory(key, lifetime=LIFETIME)
    yield built
    built[0].stop()


@pytest.fixture
def google(google_built: Built) -> GoogleDirectory:
    server: GoogleDirectory = google_built[0]
    return server


def test_google_every_action_is_performed_and_verified(
    google: GoogleDirectory, google_built: Built, http: HttpClient
) -> None:
    user = google.add_user("alice@example.com")
    provider = _provider(google_built, http)
    for kind in (
        "force_mfa_reenrolment",
        "revoke_tokens",
        "disable_account",
        "enable_account",
        "expire_password",
    ):
        action = _action(kind, "alice@example.com")
        result = provider.perform(action)
        assert result["status"] in (200, 204)
        answer = provider.verify(action, result, time.time())
        assert answer.status == VERIFIED, (kind, answer)
        assert "alice@example.com" not in json.dumps(answer.to_dict())
        if kind == "revoke_tokens":
            assert result["deleted"] == {"tokens": 2, "asps": 2}
            assert answer.evidence == {"tokens": 0, "asps": 0}
            # Redelivered: nothing left to delete, still done.
            assert provider.perform(action)["deleted"] == {"tokens": 0, "asps": 0}
        time.sleep(PAUSE)
    assert (user.suspended, user.changePasswordAtNextLogin, user.isEnrolledIn2Sv) == (
        False,
        True,
        False,
    )
    assert google.issued >= 2
    assert google.api_unauthorized == 0


def test_google_sign_out_is_not_verifiable(
    google: GoogleDirectory, google_built: Built, http: HttpClient
) -> None:
    user = google.add_user("bob@example.com")
    provider = _provider(google_built, http)
    action = _action("revoke_sessions", user.id)
    assert provider.perform(action)["status"] == 204
    assert user.signouts == 1
    assert not provider.can_verify(action)
    before = len(google.calls)
    assert provider.verify(action, {}, time.time()).status == NOT_VERIFIABLE
    assert len(google.calls) == before  # nothing was read


def test_google_state_changed_back_is_unverified(
    google: GoogleDirectory, google_built: Built, http: HttpClient
) -> None:
    user = google.add_user("carol@example.com")
    provider = _provider(google_built, http)
    action = _action("disable_account", user.id)
    provider.perform(action)
    user.suspended = False  # someone restored the user
    answer = provider.verify(action, {}, time.time())
    assert answer.status == PENDING  # propagation: read again until verify.timeout
    assert answer.evidence == {"suspended": False}
    tokens = _action("revoke_tokens", user.id)
    provider.perform(tokens)
    user.tokens.append("789.apps.googleusercontent.com")  # the user authorised an app again
    assert provider.verify(tokens, {}, time.time()).evidence == {"tokens": 1, "asps": 0}


def test_google_missing_scope_is_a_clean_auth_error(
    google: GoogleDirectory, google_built: Built, http: HttpClient
) -> None:
    google.scopes = {GOOGLE_SECURITY_SCOPE}
    user = google.add_user("dave@example.com")
    provider = _provider(google_built, http, scopes=[GOOGLE_SECURITY_SCOPE])
    with pytest.raises(AuthError, match=r"HTTP 403.*insufficientPermissions"):
        provider.perform(_action("disable_account", user.id))
    assert provider.perform(_action("revoke_sessions", user.id))["status"] == 204
    headers = provider.auth_headers()
    bad = requests.patch(
        f"{google.url}/admin/directory/v1/users/{user.id}",
        json={"suspended": True},
        headers=headers,
        timeout=5,
    )
    assert bad.status_code == 403
    assert user.suspended is False


# --- dry runs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "kind", "shown"),
    [
        ({"type": "okta"}, "disable_account", "POST /api/v1/users/u%401/lifecycle/suspend"),
        (
            {"type": "okta", "disable_mode": "deactivate"},
            "disable_account",
            "POST /api/v1/users/u%401/lifecycle/deactivate?sendEmail=false",
        ),
        ({"type": "okta"}, "revoke_tokens", "DELETE /api/v1/users/u%401/grants"),
        ({"type": "graph"}, "expire_password", "PATCH /v1.0/users/u%401"),
        ({"type": "google"}, "enable_account", "PATCH /admin/directory/v1/users/u%401"),
        (
            {"type": "google"},
            "revoke_tokens",
            "GET /admin/directory/v1/users/u%401/tokens; "
            "DELETE /admin/directory/v1/users/u%401/tokens/{clientId}; "
            "GET /admin/directory/v1/users/u%401/asps; "
            "DELETE /admin/directory/v1/users/u%401/asps/{codeId}",
        ),
    ],
)
def test_dry_runs_send_nothing_and_show_the_filled_request(
    settings: dict[str, Any], kind: str, shown: str, http: HttpClient
) -> None:
    server = TokenServer().start()  # any call would reach it (and be counted)
    try:
        provider = build_provider(
            "dry", {**settings, "base_url": server.url, "dry_run": True}, http
        )
        result = provider.perform(_action(kind, "u@1"))
        assert is_dry_run(result)
        assert result["request"] == shown
        assert server.api_calls == 0
    finally:
        server.stop()


def test_dry_run_shows_the_patch_body() -> None:
    provider = build_provider(
        "dry",
        {"type": "graph", "base_url": "https://graph.microsoft.com", "dry_run": True},
        None,  # type: ignore[arg-type]
    )
    result = provider.perform(_action("disable_account", "u1"))
    assert result["body"] == {"accountEnabled": False}


# --- generic ------------------------------------------------------------------------------


class _Platform(TokenServer):
    """A tiny platform: ``PATCH /v1/users/{id}`` sets its JSON, ``GET`` reads it back."""

    def __init__(self) -> None:
        super().__init__(lifetime=60.0)
        self.users: dict[str, dict[str, Any]] = {
            "u1": {"account": {"state": "active"}, "sessions": [{"id": "s"}]}
        }

    def handle_api(self, call: ApiCall) -> Reply:
        user = self.users.get(call.path.rsplit("/", 1)[-1])
        if user is None:
            return 404, {"error": "no such user"}
        if call.method == "PATCH" and isinstance(call.body, dict):
            user["account"]["state"] = call.body["state"]
            user["sessions"] = []
            return 204, None
        return 200, user


GENERIC_VERIFY = {
    "disable_account": {
        "method": "PATCH",
        "path": "/v1/users/{user_ref}",
        "body": {"state": "disabled"},
        "verify": {
            "method": "GET",
            "path": "/v1/users/{user_ref}",
            "expect": {"account.state": "disabled", "sessions": []},
        },
    },
    "remove_grant": {"method": "DELETE", "path": "/v1/users/{user_ref}"},
}


def test_generic_verify_reads_back_as_configured(http: HttpClient) -> None:
    platform = _Platform().start()
    try:
        token = platform.issue()[1]["access_token"]  # type: ignore[index, call-overload]
        settings = {
            "type": "generic",
            "base_url": platform.url,
            "token": Secret(token),
            "actions": GENERIC_VERIFY,
        }
        provider: ProviderBase = build_provider("platform", settings, http)  # type: ignore[assignment]
        action = _action("disable_account", "u1")
        assert provider.can_verify(action)
        before = provider.verify(action, {}, time.time())
        assert before.status == PENDING
        assert before.evidence == {"account.state": "active", "sessions": "[{'id': 's'}]"}
        provider.perform(action)
        after = provider.verify(action, {}, time.time())
        assert after.status == VERIFIED
        assert after.evidence == {"account.state": "disabled", "sessions": "[]"}
        other = _action("remove_grant", "u1")
        assert not provider.can_verify(other)
        assert provider.verify(other, {}, time.time()).status == NOT_VERIFIABLE
    finally:
        platform.stop()


@pytest.mark.parametrize(
    ("verify", "key"),
    [
        ({"method": "POST", "path": "/x", "expect": {"a": 1}}, "verify.method"),
        ({"path": "x", "expect": {"a": 1}}, "verify.path"),
        ({"path": "/x/{password}", "expect": {"a": 1}}, "verify.path"),
        ({"path": "/x", "expect": {}}, "verify.expect"),
        ({"path": "/x", "expect": {"a..b": 1}}, "verify.expect"),
        ("GET /x", "verify"),
    ],
)
def test_generic_verify_config_is_validated(verify: Any, key: str, http: HttpClient) -> None:
    actions = {"disable_account": {"method": "POST", "path": "/x", "verify": verify}}
    settings = {"type": "generic", "base_url": "https://p.example", "token": "env:T"}
    with pytest.raises(ConfigError) as info:
        GenericRestProvider("p", {**settings, "actions": actions}, http)
    assert info.value.problems[0].key == f"providers.p.actions.disable_account.{key}"
    if key != "verify.path" or "{" not in str(verify):
        _, problems = validate_settings("providers", "p", {**settings, "actions": actions})
        assert problems, verify


def test_the_fakes_answer_401_to_a_stale_token(
    okta: OktaDirectory, okta_built: Built, http: HttpClient
) -> None:
    user = okta.add_user("gina@example.com")
    provider = _provider(okta_built, http)
    headers = provider.auth_headers()
    url = f"{okta.url}/api/v1/users/{user.id}"
    assert requests.get(url, headers=headers, timeout=5).status_code == 200
    time.sleep(LIFETIME)
    assert requests.get(url, headers=headers, timeout=5).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=5).status_code == 401
    fresh = provider.auth_headers()
    assert requests.put(url, headers=fresh, timeout=5).status_code == 405


def test_the_latency_knob_delays_every_answer(okta: OktaDirectory, okta_built: Built) -> None:
    user = okta.add_user("hana@example.com")
    provider = _provider(okta_built, HttpClient())
    provider.auth_headers()  # the token endpoint is not delayed
    okta.latency = 0.15
    started = time.monotonic()
    provider.verify(_action("disable_account", user.id), {}, time.time())
    assert time.monotonic() - started >= 0.15
