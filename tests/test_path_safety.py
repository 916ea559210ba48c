"""Registry aliases cannot redirect a revocation to another endpoint (issue 13, defect 2).

An alias becomes one path segment of a revocation request. ``quote(safe="")`` encodes ``/``
but leaves ``.`` alone, and requests/urllib3 remove dot segments while preparing a URL, so an
alias of ``..`` turned ``DELETE /api/v1/users/{id}/sessions`` into ``DELETE /api/v1/sessions``.
Three layers now stop that: the alias rule (:func:`streams.model.registry.validate_alias`) at every
way in, dot segments refused by every provider, and the HTTP layer refusing to send a request
whose prepared path has not the shape of its template.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from connectors.base.catalogue import build_provider
from connectors.base.http import HttpClient, RetryPolicy, path_part
from connectors.entra.provider import GraphProvider
from connectors.generic.provider import GenericRestProvider
from connectors.google.provider import GoogleProvider
from connectors.okta.provider import OktaProvider
from streams.model.records import Action
from streams.model.registry import MAX_ALIAS_LEN, Registry, validate_alias
from streams.model.registry_yaml import check_registry, load_registry
from streams.runtime.executor import Executor
from streams.support.errors import PermanentError, ProviderError, RegistryError
from streams.support.secrets import Secret
from tests.fakes import GOOGLE_TOKEN, GRAPH_TOKEN, OKTA_TOKEN, PLATFORM_TOKEN, FakeVendorServer
from tests.test_registry import _line_of, _write

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "registry.yaml"


def _action(kind: str, **params: Any) -> Action:
    return Action.make(
        kind,
        identity="id-alice",
        account="acct-brand-ig",
        provider="p",
        cause="hr:evt-1",
        params=params,
    )


def _nothing_sent(server: FakeVendorServer) -> None:
    assert server.calls == []
    assert server.rejected == []


# ------------------------------------------------------------------------------ alias rule

REAL_WORLD_ALIASES = [
    ("okta", "00u1alicexyz0A1b2C3d4"),
    ("okta", "00u-alice"),
    ("entra", "6f1c2d3e-1111-4a5b-9c8d-a11ce0000001"),
    ("google", "alice.nguyen@lumen-outdoor.example"),
    ("google", "alice+social@lumen-outdoor.example"),
    ("hootsuite", "hs-2231"),
    ("meta-business", "100200300400501"),
    ("instagram", "alice.lumen"),
    ("hootsuite", "alice_social"),
    ("hootsuite", "_underscore_first"),
    ("okta", "a" * MAX_ALIAS_LEN),
]


@pytest.mark.parametrize(("provider", "value"), REAL_WORLD_ALIASES)
def test_alias_rule_accepts_real_world_ids(provider: str, value: str) -> None:
    """Okta ids, Entra GUIDs, e-mail addresses, numeric ids and usernames are plain ids."""
    assert validate_alias(provider, value) is None


def test_alias_rule_accepts_numbers_as_yaml_gives_them() -> None:
    """An unquoted numeric alias in YAML arrives as an int; it is a plain id too."""
    assert validate_alias("meta-business", 100200300400501) is None


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (".", "starts with '.'"),
        ("..", "starts with '.'"),
        ("../x", "starts with '.'"),
        (".hidden", "starts with '.'"),
        ("a/b", "contains '/'"),
        ("%2e%2e", "contains '%'"),
        ("%2E%2E", "contains '%'"),
        ("a?b", "contains '?'"),
        ("a#b", "contains '#'"),
        ("a\\b", "contains '\\\\'"),
        ("a b", "contains ' '"),
        (" alice", "contains ' '"),
        ("alice\t", "contains '\\t'"),
        ("ali\nce", "contains '\\n'"),
        ("ali\rce", "contains '\\r'"),
        ("a\x00b", "contains '\\x00'"),
        ("a\x7fb", "contains '\\x7f'"),
        ("alicé", "contains 'é'"),
        ("\uff41lice", "contains '\uff41'"),  # a fullwidth letter: not ASCII
        ("al\u2024ce", "contains"),  # ONE DOT LEADER, which looks like '.'
        ("-alice", "starts with '-'"),
        ("@alice", "starts with '@'"),
        ("+alice", "starts with '+'"),
        ("", "is empty"),
        ("a" * (MAX_ALIAS_LEN + 1), "characters long"),
    ],
)
def test_alias_rule_rejects_anything_but_a_plain_id(value: str, fragment: str) -> None:
    """Dot segments, path/query/fragment characters, blanks, control and non-ASCII
    characters, a bad first character and over-long values are refused with a reason
    naming the provider."""
    problem = validate_alias("okta", value)
    assert problem is not None
    assert fragment in problem
    assert "plain id at okta" in problem


@pytest.mark.parametrize("value", [None, True, 1.5, ["00u1"], {"id": "00u1"}])
def test_alias_rule_rejects_non_strings(value: object) -> None:
    assert validate_alias("okta", value) == (
        "expected a string; an alias is the person's plain id at okta (letters, digits and "
        f"._@+- only, starting with a letter, digit or _, at most {MAX_ALIAS_LEN} characters)"
    )


def test_example_registry_aliases_stay_valid() -> None:
    """Every alias shipped in examples/ passes the rule."""
    assert check_registry(EXAMPLE) == []
    example = load_registry(EXAMPLE)
    aliases = [(p, v) for i in example.identities.values() for p, v in i.aliases.items()]
    assert aliases
    assert all(validate_alias(p, v) is None for p, v in aliases)


# ------------------------------------------------------------------------------ registry file

BAD_ALIASES = """
identities:
  - id: alice
    name: Alice
    kind: employee
    emails: [alice@brand.example]
    aliases:
      okta: ".."                  # climbs to /api/v1/sessions
      google: alice@brand.example
  - id: bob
    name: Bob
    kind: employee
    emails: [bob@brand.example]
    aliases:
      hootsuite: "hs/../2"        # a slash
      instagram: bob.social
  - id: carol
    name: Carol
    kind: employee
    emails: [carol@brand.example]
    aliases: {okta: 00u-carol, entra: 6f1c2d3e-1111-4a5b-9c8d-ca7010000003}
"""


def test_registry_check_reports_bad_alias_with_file_and_line(tmp_path: Path) -> None:
    """`registry check` reports each bad alias as ``file:line: message`` on its own line;
    the identity with good aliases is unaffected."""
    path = _write(tmp_path, BAD_ALIASES)
    problems = check_registry(path)
    dots = _line_of(path, "# climbs")
    slash = _line_of(path, "# a slash")
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"{path}:{dots}: identities[0] alice: aliases: okta: '..' ")
    assert "starts with '.'" in problems[0]
    assert problems[1].startswith(
        f"{path}:{slash}: identities[1] bob: aliases: hootsuite: 'hs/../2' contains '/'"
    )


def test_registry_import_refuses_bad_alias(tmp_path: Path) -> None:
    """`registry import` and `run --registry` load through load_registry: refused whole."""
    path = _write(tmp_path, BAD_ALIASES)
    with pytest.raises(RegistryError, match=r"aliases: okta: '\.\.'") as info:
        load_registry(path)
    assert info.value.problems == check_registry(path)


# ------------------------------------------------------------------------------ registry topic


def _alice(okta: str) -> dict[str, Any]:
    return {
        "id": "alice",
        "name": "Alice",
        "kind": "employee",
        "emails": ["alice@brand.example"],
        "aliases": {"okta": okta, "hootsuite": "hs-1"},
    }


@pytest.mark.parametrize("bad", ["..", ".", "../sessions", "a/b", "%2e%2e"])
def test_apply_change_refuses_bad_alias_and_keeps_previous_identity(bad: str) -> None:
    """A change from the registry topic with a bad alias is refused whole (RegistryError,
    dead-lettered by the worker) and the previous identity value stays, indices included."""
    reg = Registry.from_changes([("identity:alice", _alice("00u1alice"))])
    before = reg.identities["alice"]
    changed = _alice(bad)
    changed["name"] = "Alice Renamed"
    with pytest.raises(RegistryError, match=r"identity:alice: .*aliases: okta"):
        reg.apply_change("identity:alice", changed)
    assert reg.identities["alice"] == before
    assert reg.resolve_alias("00u1alice", "okta") is before
    assert reg.resolve_alias(bad, "okta") is None


def test_apply_change_refuses_new_identity_with_bad_alias() -> None:
    """A new identity whose alias is a dot segment never enters the registry."""
    reg = Registry()
    with pytest.raises(RegistryError, match="identity:alice"):
        reg.apply_change("identity:alice", _alice(".."))
    assert reg.identities == {}


# ------------------------------------------------------------------------------ providers

DOTS = ["..", "."]


@pytest.mark.parametrize("kind", ["revoke_sessions", "force_mfa_reenrolment"])
@pytest.mark.parametrize("user_ref", DOTS)
def test_okta_dot_user_ref_sends_nothing(
    server: FakeVendorServer, http: HttpClient, kind: str, user_ref: str
) -> None:
    """Okta: ``..`` would have been DELETE /api/v1/sessions; nothing is sent instead."""
    provider = OktaProvider(
        "okta-main", {"base_url": server.url, "token": Secret(OKTA_TOKEN)}, http
    )
    with pytest.raises(PermanentError, match="dot segment") as info:
        provider.perform(_action(kind, user_ref=user_ref))
    _nothing_sent(server)
    assert server.url not in str(info.value)
    assert OKTA_TOKEN not in str(info.value)


@pytest.mark.parametrize("kind", ["revoke_sessions", "force_mfa_reenrolment"])
@pytest.mark.parametrize("user_ref", DOTS)
def test_graph_dot_user_ref_sends_nothing(
    server: FakeVendorServer, http: HttpClient, kind: str, user_ref: str
) -> None:
    """Graph: neither the revoke nor the method listing climbs out of /users/{id}."""
    provider = GraphProvider("entra", {"base_url": server.url, "token": Secret(GRAPH_TOKEN)}, http)
    with pytest.raises(PermanentError, match="dot segment"):
        provider.perform(_action(kind, user_ref=user_ref))
    _nothing_sent(server)


@pytest.mark.parametrize("kind", ["revoke_sessions", "force_mfa_reenrolment"])
@pytest.mark.parametrize("user_ref", DOTS)
def test_google_dot_user_ref_sends_nothing(
    server: FakeVendorServer, http: HttpClient, kind: str, user_ref: str
) -> None:
    provider = GoogleProvider(
        "workspace", {"base_url": server.url, "token": Secret(GOOGLE_TOKEN)}, http
    )
    with pytest.raises(PermanentError, match="dot segment"):
        provider.perform(_action(kind, user_ref=user_ref))
    _nothing_sent(server)


def test_graph_vendor_method_id_that_is_a_dot_segment_is_refused(
    http: HttpClient,
) -> None:
    """A method id from Graph's own answer is checked too: '..' would delete
    /users/{id}/authentication/{collection} instead of one method."""
    methods = {
        "u-1": [
            {"id": "..", "@odata.type": "#microsoft.graph.phoneAuthenticationMethod"},
        ]
    }
    with FakeVendorServer(graph_methods=methods) as server:
        provider = GraphProvider(
            "entra", {"base_url": server.url, "token": Secret(GRAPH_TOKEN)}, http
        )
        with pytest.raises(PermanentError, match=r"DELETE .*\{method_id\} refused"):
            provider.perform(_action("force_mfa_reenrolment", user_ref="u-1"))
        # the listing went out; no DELETE did
        assert [c["method"] for c in server.calls] == ["GET"]
        assert server.rejected == []


GENERIC_UNDER_PREFIX: dict[str, Any] = {
    "remove_grant": {
        "method": "DELETE",
        "path": "/accounts/{account_handle}/members/{user_ref}",
    },
}


def _generic_under_prefix(server: FakeVendorServer, http: HttpClient) -> GenericRestProvider:
    """A generic provider whose base_url carries a path prefix (/platform)."""
    settings = {
        "base_url": server.url + "/platform",
        "token": Secret(PLATFORM_TOKEN),
        "actions": GENERIC_UNDER_PREFIX,
    }
    return GenericRestProvider("sprout", settings, http)


@pytest.mark.parametrize(
    "params",
    [
        {"user_ref": "..", "account_handle": "brand"},
        {"user_ref": ".", "account_handle": "brand"},
        {"user_ref": "u7", "account_handle": ".."},
        {"user_ref": "u7", "account_handle": "%2e%2e"},
    ],
)
def test_generic_dot_value_under_base_path_prefix_sends_nothing(
    server: FakeVendorServer, http: HttpClient, params: dict[str, str]
) -> None:
    """Generic: 'remove this member' must not become DELETE of the whole account/profile."""
    with pytest.raises(PermanentError, match="dot segment"):
        _generic_under_prefix(server, http).perform(_action("remove_grant", **params))
    _nothing_sent(server)


def test_generic_under_base_path_prefix_still_sends_good_requests(
    server: FakeVendorServer, http: HttpClient
) -> None:
    """The shape check knows the base URL's own path: a good request goes out as before."""
    result = _generic_under_prefix(server, http).perform(
        _action("remove_grant", user_ref="u 7", account_handle="@brand")
    )
    assert result["status"] == 204
    assert [c["path"] for c in server.calls] == ["/platform/accounts/%40brand/members/u%207"]


def test_path_part_refuses_dot_segments() -> None:
    assert path_part("00u1", "okta:x", "user_ref") == "00u1"
    for value in (".", "..", "%2e%2e", "%2E."):
        with pytest.raises(PermanentError, match=r"action\.params\.user_ref is a dot segment"):
            path_part(value, "okta:x", "user_ref")


def test_executor_records_a_climbed_revocation_as_failed_not_done(
    server: FakeVendorServer,
) -> None:
    """The reported symptom: the vendor answers 2xx on the climbed path (here Okta's
    DELETE /api/v1/sessions), which was recorded as success while the person kept access.
    Now the executor gets a PermanentError before anything is sent."""
    server.force_status("/api/v1/sessions", 204)
    policy = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02)
    with HttpClient(policy) as http:
        provider = build_provider(
            "okta", {"type": "okta", "base_url": server.url, "token": OKTA_TOKEN}, http
        )
        action = Action.make(
            "revoke_sessions",
            identity="alice",
            account=None,
            provider="okta",
            cause="hr:t:1",
            params={"user_ref": ".."},
        )

        async def on_stuck(action: Action, exc: ProviderError, attempts: int) -> None:
            raise AssertionError("a permanent error is not retried")

        async def main() -> Any:
            executor = Executor({"okta": provider}, policy)
            try:
                return await executor.execute(action, on_stuck)
            finally:
                executor.shutdown()

        outcome = asyncio.run(main())
    assert outcome.status == "failed"
    assert "dot segment" in (outcome.error or "")
    _nothing_sent(server)


# ------------------------------------------------------------------------------ HTTP layer

OKTA_SESSIONS = "/api/v1/users/{user_ref}/sessions"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/users/../sessions",  # prepared as /api/v1/sessions
        "/api/v1/users/./sessions",  # prepared as /api/v1/users/sessions
        "/api/v1/users/%2e%2e/sessions",  # requests un-escapes it to a literal ..
        "/api/v1/users/%252e%252e/sessions",  # a dot to a server that decodes twice
        "/api/v1/users//sessions",  # empty value
        "/api/v1/users/a/b/sessions",  # a value that left its segment
        "/api/v1/groups/00u1/sessions",  # a different literal
        "/api/v1/users/00u1/sessions/x",  # longer
    ],
)
def test_http_refuses_a_hand_built_path_that_is_not_the_template_shape(
    server: FakeVendorServer, http: HttpClient, path: str
) -> None:
    """Even a caller that skips path_part cannot send a request whose prepared path differs
    from the template's shape; the error names the template, never the URL or token."""
    with pytest.raises(PermanentError, match="refused before sending") as info:
        http.request(
            "okta:test",
            "DELETE",
            server.url + path,
            headers={"Authorization": f"SSWS {OKTA_TOKEN}"},
            params={"oauthTokens": "true"},
            path_template=OKTA_SESSIONS,
        )
    message = str(info.value)
    assert f"DELETE {OKTA_SESSIONS}" in message
    assert server.url.split("//")[1] not in message
    assert OKTA_TOKEN not in message
    _nothing_sent(server)


def test_http_template_shape_includes_the_base_path_prefix(
    server: FakeVendorServer, http: HttpClient
) -> None:
    """The prefix is part of the shape: climbing out of it is refused, and a matching path
    goes out (a query string does not matter to the shape)."""
    for path in ("/platform/accounts/brand/members/..", "/platform/../accounts/brand/members/u7"):
        with pytest.raises(PermanentError, match="refused before sending"):
            http.request(
                "generic:test",
                "DELETE",
                server.url + path,
                path_template="/accounts/{account_handle}/members/{user_ref}",
                path_prefix="/platform",
            )
    _nothing_sent(server)
    response = http.request(
        "okta:test",
        "DELETE",
        server.url + "/api/v1/users/00u1/sessions",
        headers={"Authorization": f"SSWS {OKTA_TOKEN}"},
        params={"oauthTokens": "true"},
        path_template=OKTA_SESSIONS,
    )
    assert response.status_code == 204
    assert [c["path"] for c in server.calls] == ["/api/v1/users/00u1/sessions"]
