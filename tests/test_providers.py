"""Revocation providers against vendor-shaped local servers: request shapes, auth, errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from connectors.base.catalogue import PROVIDER_TYPES, SINK_TYPES, build_provider, build_sink
from connectors.base.http import HttpClient
from connectors.base.provider import ProviderBase, Request, is_dry_run
from connectors.base.sink import SinkBase
from connectors.entra.provider import GraphProvider
from connectors.generic.provider import GenericRestProvider
from connectors.google.provider import GoogleProvider
from connectors.okta.provider import OktaProvider, classify_okta_error
from streams.model.records import Action
from streams.support.errors import (
    AuthError,
    ConfigError,
    PermanentError,
    RateLimitedError,
    RetryableError,
)
from streams.support.secrets import Secret
from tests.fakes import (
    GOOGLE_TOKEN,
    GRAPH_TOKEN,
    OKTA_TOKEN,
    PLATFORM_TOKEN,
    FakeVendorServer,
)


@pytest.fixture
def server() -> Iterator[FakeVendorServer]:
    with FakeVendorServer(known_users={"00u1", "u-1", "a@example.com", "user/../x"}) as srv:
        yield srv


def _action(kind: str, provider: str = "p", **params: Any) -> Action:
    return Action.make(
        kind,
        identity="id-alice",
        account="acct-brand-ig",
        provider=provider,
        cause="hr:evt-1",
        params=params,
    )


def _okta(server: FakeVendorServer, http: HttpClient, **extra: Any) -> OktaProvider:
    settings = {"base_url": server.url, "token": Secret(OKTA_TOKEN), **extra}
    return OktaProvider("okta-main", settings, http)


def _graph(server: FakeVendorServer, http: HttpClient, **extra: Any) -> GraphProvider:
    settings = {"base_url": server.url, "token": Secret(GRAPH_TOKEN), **extra}
    return GraphProvider("entra", settings, http)


def _google(server: FakeVendorServer, http: HttpClient, **extra: Any) -> GoogleProvider:
    settings = {"base_url": server.url, "token": Secret(GOOGLE_TOKEN), **extra}
    return GoogleProvider("workspace", settings, http)


GENERIC_ACTIONS: dict[str, Any] = {
    "remove_grant": {
        "method": "DELETE",
        "path": "/platform/accounts/{account_handle}/members/{user_ref}",
    },
    "downgrade_grant": {
        "method": "PATCH",
        "path": "/platform/accounts/{account_handle}/members/{user_ref}",
        "body": {"role": "{role}", "reason": "accessguard {identity}", "meta": {"n": 1}},
    },
}


def _generic(server: FakeVendorServer, http: HttpClient, **extra: Any) -> GenericRestProvider:
    settings = {
        "base_url": server.url,
        "token": Secret(PLATFORM_TOKEN),
        "actions": GENERIC_ACTIONS,
        **extra,
    }
    return GenericRestProvider("sprout", settings, http)


# --- Okta ---------------------------------------------------------------------------


def test_okta_revoke_sessions_also_revokes_oauth_tokens(
    server: FakeVendorServer, http: HttpClient
) -> None:
    """DELETE /api/v1/users/{id}/sessions?oauthTokens=true with SSWS auth; 204 recorded."""
    result = _okta(server, http).perform(_action("revoke_sessions", user_ref="00u1"))
    assert result == {
        "status": 204,
        "request": "DELETE /api/v1/users/{user_ref}/sessions?oauthTokens=true",
    }
    (call,) = server.calls
    assert call["method"] == "DELETE"
    assert call["path"] == "/api/v1/users/00u1/sessions"
    assert call["query"] == {"oauthTokens": "true"}
    assert call["headers"]["authorization"] == f"SSWS {OKTA_TOKEN}"
    assert call["headers"]["accept"] == "application/json"
    assert OKTA_TOKEN not in repr(result)


def test_okta_force_mfa_resets_factors(server: FakeVendorServer, http: HttpClient) -> None:
    """POST /api/v1/users/{id}/lifecycle/reset_factors."""
    result = _okta(server, http).perform(_action("force_mfa_reenrolment", user_ref="00u1"))
    assert result["status"] == 200
    assert [(c["method"], c["path"]) for c in server.calls] == [
        ("POST", "/api/v1/users/00u1/lifecycle/reset_factors")
    ]


def test_okta_wrong_token_is_auth_error(server: FakeVendorServer, http: HttpClient) -> None:
    """Okta's 401 E0000011 becomes AuthError (permanent, rotate the token)."""
    provider = _okta(server, http, token=Secret("stale"))
    with pytest.raises(AuthError, match=r"401.*E0000011"):
        provider.perform(_action("revoke_sessions", user_ref="00u1"))
    assert server.calls == []


def test_okta_unknown_user_is_permanent(server: FakeVendorServer, http: HttpClient) -> None:
    """Okta's 404 E0000007 is a permanent error, not retried."""
    with pytest.raises(PermanentError, match=r"404.*E0000007"):
        _okta(server, http).perform(_action("revoke_sessions", user_ref="00u-nobody"))


def test_okta_429_is_retryable_with_retry_after(server: FakeVendorServer, http: HttpClient) -> None:
    """Okta's rate limit carries Retry-After; the executor gets it in retry_after."""
    server.fail_next(1, status=429, retry_after=7)
    with pytest.raises(RetryableError, match="429") as info:
        _okta(server, http).perform(_action("revoke_sessions", user_ref="00u1"))
    assert info.value.retry_after == 7.0
    assert server.calls == []
    assert len(server.rejected) == 1


def test_okta_503_is_retryable(server: FakeVendorServer, http: HttpClient) -> None:
    """An outage is retryable."""
    server.down_for(30)
    with pytest.raises(RetryableError, match="503"):
        _okta(server, http).perform(_action("revoke_sessions", user_ref="00u1"))


def test_okta_missing_user_ref_is_permanent(server: FakeVendorServer, http: HttpClient) -> None:
    """No user_ref means the registry lacks the Okta id: permanent, naming the param."""
    with pytest.raises(PermanentError, match=r"action\.params\.user_ref is missing"):
        _okta(server, http).perform(_action("revoke_sessions"))
    assert server.calls == server.rejected == []


def test_okta_user_ref_is_url_encoded(server: FakeVendorServer, http: HttpClient) -> None:
    """A user_ref with '/' or '..' stays inside one path segment."""
    _okta(server, http).perform(_action("revoke_sessions", user_ref="user/../x"))
    (call,) = server.calls
    assert call["path"] == "/api/v1/users/user%2F..%2Fx/sessions"


def test_okta_unsupported_action_is_permanent(server: FakeVendorServer, http: HttpClient) -> None:
    """Okta cannot rotate a shared credential: PermanentError naming the action."""
    with pytest.raises(PermanentError, match=r"rotate_shared_credential.*not supported"):
        _okta(server, http).perform(_action("rotate_shared_credential", user_ref="00u1"))


def test_okta_dry_run_makes_no_call(server: FakeVendorServer, http: HttpClient) -> None:
    """dry_run returns the request it would make, with the real user id in its path, and
    calls nothing (no token needed)."""
    provider = OktaProvider("okta", {"base_url": server.url, "dry_run": True}, http)
    result = provider.perform(_action("revoke_sessions", user_ref="00u1"))
    assert result == {
        "dry_run": True,
        "request": "DELETE /api/v1/users/00u1/sessions?oauthTokens=true",
    }
    assert is_dry_run(result)
    assert server.calls == server.rejected == []


def test_every_connector_is_built_on_its_base() -> None:
    """Every provider type subclasses ProviderBase and every sink type SinkBase: settings,
    dry run, request preparation and status classification exist once."""
    assert all(issubclass(cls, ProviderBase) for cls in PROVIDER_TYPES.values())
    assert all(issubclass(cls, SinkBase) for cls in SINK_TYPES.values())


def test_a_call_that_went_out_is_not_a_dry_run(server: FakeVendorServer, http: HttpClient) -> None:
    """Only a dry run's result has the DryRun type the executor reads; a real call's is a
    plain dict with the same keys as ever."""
    result = _okta(server, http).perform(_action("revoke_sessions", user_ref="00u1"))
    assert not is_dry_run(result)
    assert result == {
        "status": 204,
        "request": "DELETE /api/v1/users/{user_ref}/sessions?oauthTokens=true",
    }


def test_provider_settings_are_validated(http: HttpClient) -> None:
    """Missing token, plain http to a remote host and a non-bool dry_run are config errors."""
    with pytest.raises(ConfigError, match=r"providers\.o\.token"):
        OktaProvider("o", {"base_url": "https://x.okta.com"}, http)
    with pytest.raises(ConfigError, match=r"providers\.o\.base_url.*https"):
        OktaProvider("o", {"base_url": "http://x.okta.com", "token": Secret("t")}, http)
    with pytest.raises(ConfigError, match=r"providers\.o\.dry_run"):
        OktaProvider("o", {"base_url": "https://x.okta.com", "dry_run": "yes"}, http)


def test_unreadable_token_is_auth_error(server: FakeVendorServer, http: HttpClient) -> None:
    """A token from an env var that is unset fails as AuthError before any call."""
    provider = _okta(server, http, token=Secret.parse("env:ACCESSGUARD_TEST_UNSET_TOKEN_VAR"))
    with pytest.raises(AuthError, match="credential is empty"):
        provider.perform(_action("revoke_sessions", user_ref="00u1"))
    assert server.calls == server.rejected == []


# --- Microsoft Graph ----------------------------------------------------------------


def test_graph_revoke_sign_in_sessions(server: FakeVendorServer, http: HttpClient) -> None:
    """POST /v1.0/users/{id}/revokeSignInSessions with Bearer auth; Graph's value is kept."""
    result = _graph(server, http).perform(_action("revoke_sessions", user_ref="u-1"))
    assert result == {
        "status": 200,
        "request": "POST /v1.0/users/{user_ref}/revokeSignInSessions",
        "value": True,
    }
    (call,) = server.calls
    assert (call["method"], call["path"]) == ("POST", "/v1.0/users/u-1/revokeSignInSessions")
    assert call["headers"]["authorization"] == f"Bearer {GRAPH_TOKEN}"


def test_graph_force_mfa_deletes_every_non_password_method(
    server: FakeVendorServer, http: HttpClient
) -> None:
    """Methods are listed, then each deleted at its typed path; the password stays."""
    server.graph_methods["u-1"] = [
        {"@odata.type": "#microsoft.graph.passwordAuthenticationMethod", "id": "pw"},
        {"@odata.type": "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod", "id": "a1"},
        {"@odata.type": "#microsoft.graph.softwareOathAuthenticationMethod", "id": "o1"},
        {"@odata.type": "#microsoft.graph.phoneAuthenticationMethod", "id": "ph1"},
        {"@odata.type": "#microsoft.graph.fido2AuthenticationMethod", "id": "f1"},
        {"@odata.type": "#microsoft.graph.emailAuthenticationMethod", "id": "e1"},
    ]
    result = _graph(server, http).perform(_action("force_mfa_reenrolment", user_ref="u-1"))
    assert result["deleted"] == {
        "microsoftAuthenticatorMethods": 1,
        "softwareOathMethods": 1,
        "phoneMethods": 1,
        "fido2Methods": 1,
        "emailMethods": 1,
    }
    assert [(c["method"], c["path"]) for c in server.calls] == [
        ("GET", "/v1.0/users/u-1/authentication/methods"),
        ("DELETE", "/v1.0/users/u-1/authentication/microsoftAuthenticatorMethods/a1"),
        ("DELETE", "/v1.0/users/u-1/authentication/softwareOathMethods/o1"),
        ("DELETE", "/v1.0/users/u-1/authentication/phoneMethods/ph1"),
        ("DELETE", "/v1.0/users/u-1/authentication/fido2Methods/f1"),
        ("DELETE", "/v1.0/users/u-1/authentication/emailMethods/e1"),
    ]
    assert [m["id"] for m in server.graph_methods["u-1"]] == ["pw"]


def test_graph_force_mfa_is_idempotent(server: FakeVendorServer, http: HttpClient) -> None:
    """A second run finds only the password and deletes nothing."""
    provider = _graph(server, http)
    provider.perform(_action("force_mfa_reenrolment", user_ref="u-1"))
    server.reset()
    result = provider.perform(_action("force_mfa_reenrolment", user_ref="u-1"))
    assert result["deleted"] == {}
    assert [c["method"] for c in server.calls] == ["GET"]


def test_graph_unknown_method_type_is_reported_not_guessed(
    server: FakeVendorServer, http: HttpClient
) -> None:
    """A method type the provider does not know is skipped and named in the result."""
    server.graph_methods["u-1"] = [{"@odata.type": "#microsoft.graph.newShinyMethod", "id": "n1"}]
    result = _graph(server, http).perform(_action("force_mfa_reenrolment", user_ref="u-1"))
    assert result["skipped_types"] == ["#microsoft.graph.newShinyMethod"]
    assert [c["method"] for c in server.calls] == ["GET"]


def test_graph_invalid_token_is_auth_error(server: FakeVendorServer, http: HttpClient) -> None:
    """Graph's 401 InvalidAuthenticationToken becomes AuthError."""
    with pytest.raises(AuthError, match=r"401.*InvalidAuthenticationToken"):
        _graph(server, http, token=Secret("nope")).perform(
            _action("revoke_sessions", user_ref="u-1")
        )


def test_graph_429_without_retry_after_is_retryable(
    server: FakeVendorServer, http: HttpClient
) -> None:
    """Graph may omit Retry-After on 429: a retryable rate limit whose wait is the HTTP
    policy's first jittered backoff step (0.5 s +-20 %), not None."""
    server.fail_next(1, status=429, retry_after=None)
    with pytest.raises(RateLimitedError, match="429") as info:
        _graph(server, http).perform(_action("revoke_sessions", user_ref="u-1"))
    assert info.value.retry_after is not None
    assert 0.4 <= info.value.retry_after <= 0.6


# --- Google -------------------------------------------------------------------------


def test_google_sign_out(server: FakeVendorServer, http: HttpClient) -> None:
    """POST /admin/directory/v1/users/{userKey}/signOut with Bearer auth, 204."""
    result = _google(server, http).perform(_action("revoke_sessions", user_ref="a@example.com"))
    assert result == {"status": 204, "request": "POST /admin/directory/v1/users/{userKey}/signOut"}
    (call,) = server.calls
    assert call["path"] == "/admin/directory/v1/users/a%40example.com/signOut"
    assert call["headers"]["authorization"] == f"Bearer {GOOGLE_TOKEN}"


def test_google_turn_off_2sv(server: FakeVendorServer, http: HttpClient) -> None:
    """force_mfa_reenrolment turns 2-Step Verification off."""
    _google(server, http).perform(_action("force_mfa_reenrolment", user_ref="a@example.com"))
    assert [c["path"] for c in server.calls] == [
        "/admin/directory/v1/users/a%40example.com/twoStepVerification/turnOff"
    ]


@pytest.mark.parametrize("reason", ["userRateLimitExceeded", "rateLimitExceeded", "quotaExceeded"])
def test_google_403_rate_limit_is_retryable(
    server: FakeVendorServer, http: HttpClient, reason: str
) -> None:
    """Google's 403 with a rate-limit reason is a retryable rate limit, not an auth
    failure; the next attempt first waits out the hold (the first backoff step, in the
    calling thread: under a second) and then goes through."""
    server.google_rate_limit_next(1, reason=reason)
    with pytest.raises(RateLimitedError, match=f"403 rate limited \\({reason}\\)") as info:
        _google(server, http).perform(_action("revoke_sessions", user_ref="a@example.com"))
    assert info.value.status == 403
    started = time.monotonic()
    _google(server, http).perform(_action("revoke_sessions", user_ref="a@example.com"))
    assert time.monotonic() - started >= 0.3
    assert len(server.calls) == 1


def test_google_other_403_is_auth_error(server: FakeVendorServer, http: HttpClient) -> None:
    """A 403 without a rate-limit reason (missing scope) is AuthError."""
    server.force_status(
        "/signOut",
        403,
        {"error": {"code": 403, "errors": [{"reason": "forbidden"}], "message": "Not Authorized"}},
    )
    with pytest.raises(AuthError, match="403"):
        _google(server, http).perform(_action("revoke_sessions", user_ref="a@example.com"))


def test_google_bad_token_is_auth_error(server: FakeVendorServer, http: HttpClient) -> None:
    """Google's 401 authError becomes AuthError."""
    with pytest.raises(AuthError, match="401"):
        _google(server, http, token=Secret("bad")).perform(
            _action("revoke_sessions", user_ref="a@example.com")
        )


# --- generic platform ---------------------------------------------------------------


def test_generic_renders_path_and_sends_idempotency_key(
    server: FakeVendorServer, http: HttpClient
) -> None:
    """The configured method/path is used, values URL-encoded, Idempotency-Key sent."""
    action = _action("remove_grant", user_ref="u 7", account_handle="@brand/ig")
    result = _generic(server, http).perform(action)
    assert result == {
        "status": 204,
        "request": "DELETE /platform/accounts/{account_handle}/members/{user_ref}",
    }
    (call,) = server.calls
    assert call["method"] == "DELETE"
    assert call["path"] == "/platform/accounts/%40brand%2Fig/members/u%207"
    assert call["headers"]["idempotency-key"] == action.idempotency_key
    assert call["headers"]["authorization"] == f"Bearer {PLATFORM_TOKEN}"


def test_generic_renders_body_template(server: FakeVendorServer, http: HttpClient) -> None:
    """String values in the body template are formatted; other values pass through."""
    action = _action("downgrade_grant", user_ref="u7", account_handle="brand", role="read_only")
    _generic(server, http).perform(action)
    (call,) = server.calls
    assert call["method"] == "PATCH"
    assert call["json"] == {"role": "read_only", "reason": "accessguard id-alice", "meta": {"n": 1}}


def test_generic_custom_auth_header_and_raw_token(http: HttpClient) -> None:
    """auth_header/auth_scheme choose how the token is sent ("" sends it raw)."""
    with FakeVendorServer(platform_auth_header="X-Api-Key", platform_auth_scheme="") as srv:
        provider = _generic(srv, http, auth_header="X-Api-Key", auth_scheme="")
        provider.perform(_action("remove_grant", user_ref="u7", account_handle="brand"))
        (call,) = srv.calls
        assert call["headers"]["x-api-key"] == PLATFORM_TOKEN
        assert "authorization" not in call["headers"]


def test_generic_unconfigured_action_names_the_config_key(
    server: FakeVendorServer, http: HttpClient
) -> None:
    """An action kind without configuration is permanent and names the key to add."""
    with pytest.raises(PermanentError, match=r"add providers\.sprout\.actions\.revoke_sessions"):
        _generic(server, http).perform(_action("revoke_sessions", user_ref="u7"))


def test_generic_missing_template_value_is_permanent(
    server: FakeVendorServer, http: HttpClient
) -> None:
    """A template field without a value fails before any call, naming the field."""
    with pytest.raises(PermanentError, match=r"\{account_handle\} has no value"):
        _generic(server, http).perform(_action("remove_grant", user_ref="u7"))
    assert server.calls == server.rejected == []


def test_generic_rejects_unsafe_or_unknown_template_fields(http: HttpClient) -> None:
    """Only the documented fields are allowed; attribute access is a config error."""
    bad = {"remove_grant": {"method": "DELETE", "path": "/x/{user_ref.__class__}"}}
    with pytest.raises(ConfigError, match=r"actions\.remove_grant\.path.*unknown template field"):
        GenericRestProvider(
            "p", {"base_url": "https://p.example", "token": "t", "actions": bad}, http
        )
    with pytest.raises(ConfigError, match=r"actions\.nuke_everything"):
        GenericRestProvider(
            "p",
            {"base_url": "https://p.example", "token": "t", "actions": {"nuke_everything": {}}},
            http,
        )


def test_generic_missing_idempotency_key_would_be_rejected_by_platform(
    server: FakeVendorServer, http: HttpClient
) -> None:
    """The fake platform enforces Idempotency-Key (so the provider test above means something)."""
    with pytest.raises(PermanentError, match="Idempotency-Key header is required"):
        http.request(
            "raw",
            "DELETE",
            server.url + "/platform/accounts/a/members/b",
            headers={"Authorization": f"Bearer {PLATFORM_TOKEN}"},
        )


def test_generic_dry_run(server: FakeVendorServer, http: HttpClient) -> None:
    """dry_run reports the configured request without calling."""
    provider = _generic(server, http, dry_run=True)
    result = provider.perform(_action("remove_grant", user_ref="u7", account_handle="b"))
    assert result["dry_run"] is True
    assert server.calls == server.rejected == []


# --- registry -----------------------------------------------------------------------


def test_registry_lists_every_connector_type() -> None:
    """One line per connector type in the explicit registry."""
    assert set(PROVIDER_TYPES) == {"okta", "graph", "google", "generic", "secret_store", "openbao"}
    assert set(SINK_TYPES) == {"pagerduty", "slack", "slack_app"}
    assert all(cls.type == name for name, cls in {**PROVIDER_TYPES, **SINK_TYPES}.items())


def test_build_provider_and_sink(server: FakeVendorServer, http: HttpClient) -> None:
    """build_provider/build_sink pick the class by ``type``."""
    provider = build_provider(
        "okta", {"type": "okta", "base_url": server.url, "token": Secret(OKTA_TOKEN)}, http
    )
    assert isinstance(provider, OktaProvider)
    sink = build_sink("pd", {"type": "pagerduty", "routing_key": Secret("rk")}, http)
    assert sink.type == "pagerduty"


def test_build_provider_config_errors(http: HttpClient) -> None:
    """Unknown type and missing base_url are ConfigErrors naming the key."""
    with pytest.raises(ConfigError, match=r"providers\.x\.type: must be one of"):
        build_provider("x", {"type": "ldap"}, http)
    with pytest.raises(ConfigError, match=r"providers\.x\.base_url: required"):
        build_provider("x", {"type": "okta", "token": Secret("t")}, http)
    with pytest.raises(ConfigError, match=r"sinks\.y\.type"):
        build_sink("y", {"type": "carrier-pigeon"}, http)


# --- the fake itself ----------------------------------------------------------------


def test_fake_answers_405_for_wrong_methods_and_404_for_unknown_paths(
    server: FakeVendorServer, http: HttpClient
) -> None:
    """The fake is strict like the vendors: GET on a DELETE endpoint is 405, typos 404."""
    headers = {"Authorization": f"SSWS {OKTA_TOKEN}"}
    with pytest.raises(PermanentError, match="HTTP 405"):
        http.request("t", "GET", server.url + "/api/v1/users/00u1/sessions", headers=headers)
    with pytest.raises(PermanentError, match="HTTP 404"):
        http.request("t", "POST", server.url + "/api/v1/userz/00u1/sessions", headers=headers)
    with pytest.raises(PermanentError, match="HTTP 404"):
        http.request("t", "POST", server.url + "/nowhere")
    assert server.calls == []
    assert [c["status"] for c in server.rejected] == [405, 404, 404]


def test_fake_wait_for_calls_and_down_for(server: FakeVendorServer, http: HttpClient) -> None:
    """down_for answers the injected status until it expires; wait_for_calls sees the call."""
    server.down_for(0.2)
    with pytest.raises(RetryableError, match="503"):
        _okta(server, http).perform(_action("revoke_sessions", user_ref="00u1"))
    with pytest.raises(TimeoutError, match="0 calls, 1 rejected"):
        server.wait_for_calls(1, timeout=0.05)
    time.sleep(0.25)
    _okta(server, http).perform(_action("revoke_sessions", user_ref="00u1"))
    calls = server.wait_for_calls(lambda cs: any("sessions" in c["path"] for c in cs), 1.0)
    assert len(calls) == 1


def _okta_raw(server: FakeVendorServer, method: str, path: str, **kw: Any) -> requests.Response:
    headers = {"Authorization": f"SSWS {OKTA_TOKEN}", "Accept": "application/json"}
    return requests.request(method, server.url + path, headers=headers, timeout=5, **kw)


@pytest.mark.parametrize(
    ("method", "path", "params", "status"),
    [
        ("DELETE", "/api/v1/users/00u1/sessions", None, 400),  # tokens would survive
        ("DELETE", "/api/v1/users/00u1/sessions", {"oauthTokens": "false"}, 400),
        ("DELETE", "/api/v1/users/00u1/sessions", {"oauthTokens": "TRUE"}, 400),
        ("DELETE", "/api/v1/users/00u1/sessions", {"oauthTokens": "true", "x": "1"}, 400),
        ("POST", "/api/v1/users/00u1/lifecycle/reset_factors", {"oauthTokens": "true"}, 400),
        ("DELETE", "/api/v1/users/00u1/sessions", {"oauthTokens": "true"}, 204),
        (
            "DELETE",
            "/api/v1/users/00u1/sessions",
            {"oauthTokens": "true", "forgetDevices": "false"},
            204,
        ),
    ],
)
def test_fake_okta_requires_oauth_tokens_true_and_known_parameters(
    server: FakeVendorServer,
    method: str,
    path: str,
    params: dict[str, str] | None,
    status: int,
) -> None:
    """Session revocation without oauthTokens=true leaves OAuth tokens alive, so the fake
    refuses it (400 E0000001), as it refuses parameters the endpoint does not take."""
    resp = _okta_raw(server, method, path, params=params)
    assert resp.status_code == status, resp.text
    if status == 400:
        assert resp.json()["errorCode"] == "E0000001"
        assert server.calls == []
        assert [c["status"] for c in server.rejected] == [400]
    else:
        assert len(server.calls) == 1


def test_fake_okta_checks_the_ssws_header(server: FakeVendorServer) -> None:
    """A Bearer token, a missing header or another SSWS token is 401 E0000011."""
    url = server.url + "/api/v1/users/00u1/sessions?oauthTokens=true"
    for headers in (
        {"Authorization": f"Bearer {OKTA_TOKEN}"},
        {},
        {"Authorization": "SSWS other"},
    ):
        resp = requests.delete(url, headers=headers, timeout=5)
        assert resp.status_code == 401
        assert resp.json()["errorCode"] == "E0000011"
    assert server.calls == []


def _platform_raw(
    server: FakeVendorServer, method: str, path: str, key: str | None = "k-1", **kw: Any
) -> requests.Response:
    headers = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return requests.request(method, server.url + path, headers=headers, timeout=5, **kw)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/platform/members/u7/sessions/revoke", None, 200),
        ("DELETE", "/platform/profiles/ig/members/u7", None, 204),
        ("PUT", "/platform/profiles/ig/members/u7", {"role": "read_only"}, 200),
        ("DELETE", "/platform/accounts/ig/members/u7", None, 204),
        ("PATCH", "/platform/accounts/ig/members/u7", {"role": "no_access", "reason": "r"}, 200),
        # not routes of the platform
        ("POST", "/platform/anything", None, 404),
        ("DELETE", "/platform/members/u7", None, 404),
        ("DELETE", "/platform/profiles/ig/members/u7/extra", None, 404),
        ("DELETE", "/platform/profiles/ig/members/", None, 404),
        # a route with the wrong method
        ("POST", "/platform/profiles/ig/members/u7", None, 405),
        ("DELETE", "/platform/members/u7/sessions/revoke", None, 405),
        ("GET", "/platform/profiles/ig/members/u7", None, 405),
        # bodies the platform refuses
        ("PUT", "/platform/profiles/ig/members/u7", None, 400),
        ("PUT", "/platform/profiles/ig/members/u7", {"role": "god"}, 400),
        ("PUT", "/platform/profiles/ig/members/u7", {"role": "read_only", "x": 1}, 400),
        ("PUT", "/platform/profiles/ig/members/u7", ["read_only"], 400),
        ("PATCH", "/platform/accounts/ig/members/u7", {"reason": "r"}, 400),
        ("DELETE", "/platform/profiles/ig/members/u7", {"role": "admin"}, 400),
    ],
)
def test_fake_platform_serves_only_its_routes(
    server: FakeVendorServer, method: str, path: str, body: Any, status: int
) -> None:
    """Only the configured routes, with their method and body shape, succeed."""
    kwargs = {} if body is None else {"json": body}
    resp = _platform_raw(server, method, path, **kwargs)
    assert resp.status_code == status, resp.text
    assert len(server.calls) == (1 if status < 300 else 0)


def test_fake_platform_requires_the_idempotency_key_and_auth(server: FakeVendorServer) -> None:
    """No Idempotency-Key is 400; a wrong token 401; neither has an effect."""
    path = "/platform/members/u7/sessions/revoke"
    assert _platform_raw(server, "POST", path, key=None).status_code == 400
    assert _platform_raw(server, "POST", path, key="").status_code == 400
    resp = requests.post(
        server.url + path,
        headers={"Authorization": "Bearer wrong", "Idempotency-Key": "k"},
        timeout=5,
    )
    assert resp.status_code == 401
    assert server.calls == []


def test_fake_platform_replays_a_repeated_idempotency_key(server: FakeVendorServer) -> None:
    """The same key again gets the first answer with no second effect (a replay); the key
    reused for another request is 422; a failed first try stores nothing."""
    path = "/platform/profiles/ig/members/u7"
    first = _platform_raw(server, "PUT", path, key="k-put", json={"role": "read_only"})
    again = _platform_raw(server, "PUT", path, key="k-put", json={"role": "read_only"})
    assert (first.status_code, first.json()) == (again.status_code, again.json())
    assert len(server.calls) == 1
    assert len(server.replays) == 1
    assert server.replays[0]["path"] == path
    other = _platform_raw(server, "PUT", path, key="k-put", json={"role": "admin"})
    assert other.status_code == 422
    assert len(server.calls) == 1
    server.fail_next(1, status=503)
    assert _platform_raw(server, "DELETE", path, key="k-del").status_code == 503
    assert _platform_raw(server, "DELETE", path, key="k-del").status_code == 204
    assert len(server.calls) == 2
    server.reset()  # forgets calls, not what the platform did
    assert _platform_raw(server, "DELETE", path, key="k-del").status_code == 204
    assert server.calls == []
    assert len(server.replays) == 1


def test_generic_redelivered_action_is_one_effect(
    server: FakeVendorServer, http: HttpClient
) -> None:
    """The provider sends the action's idempotency key: the same action performed twice
    (a redelivery) is one effect at the platform and one replay."""
    action = _action("downgrade_grant", user_ref="u7", account_handle="brand", role="read_only")
    provider = _generic(server, http)
    assert provider.perform(action) == provider.perform(action)
    assert len(server.calls) == 1
    assert len(server.replays) == 1


def test_okta_rate_limit_reset_header_becomes_retry_after() -> None:
    """Okta's 429 carries X-Rate-Limit-Reset (epoch seconds); it becomes retry_after."""
    response = requests.Response()
    response.status_code = 429
    response.headers["X-Rate-Limit-Reset"] = str(int(time.time()) + 30)
    error = classify_okta_error("okta:test", response)
    assert isinstance(error, RetryableError)
    assert error.retry_after is not None
    assert 28 <= error.retry_after <= 30
    response.headers["Retry-After"] = "5"
    assert classify_okta_error("okta:test", response) is None


def test_a_dry_run_shows_the_filled_request_and_never_a_secret() -> None:
    """The dry-run text fills the request's own values (ids, handles); a placeholder with no
    value (Slack's webhook URL, a Graph method id) stays a placeholder and a query parameter
    named like a secret shows ***. The audit text of a real call keeps the template."""
    graph = Request(
        "GET",
        "/v1.0/users/{user_ref}/authentication/methods",
        {"user_ref": "ana%40example.com"},
        describe="GET /v1.0/users/{user_ref}/authentication/methods; "
        "DELETE /v1.0/users/{user_ref}/authentication/{collection}/{method_id}",
    )
    assert graph.filled == (
        "GET /v1.0/users/ana%40example.com/authentication/methods; "
        "DELETE /v1.0/users/ana%40example.com/authentication/{collection}/{method_id}"
    )
    slack = Request("POST", "{webhook_url}", check_shape=False)
    assert slack.filled == "POST {webhook_url}"
    keyed = Request("GET", "/v1/{id}", {"id": "42"}, params={"api_key": "s3cret", "a": "1"})
    assert keyed.filled == "GET /v1/42?api_key=%2A%2A%2A&a=1"
    assert keyed.request == "GET /v1/{id}?api_key=%2A%2A%2A&a=1"
    assert "s3cret" not in keyed.filled + keyed.request


@pytest.mark.parametrize("kind", ["okta", "graph", "google"])
def test_each_identity_provider_supports_what_the_kinds_table_says(kind: str) -> None:
    """connectors/base/kinds.py PROVIDER_ACTIONS is what the core asks of each type; the
    provider class must support exactly that."""
    from connectors.base.kinds import PROVIDER_ACTIONS

    assert PROVIDER_TYPES[kind].supports == PROVIDER_ACTIONS[kind]
    # What a provider reads back it must also do.
    assert PROVIDER_TYPES[kind].verifies <= PROVIDER_TYPES[kind].supports
