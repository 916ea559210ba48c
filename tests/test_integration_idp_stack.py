"""Offboarding through the running stack at all four provider kinds, with real token minting.

`accessguard run` (embedded broker) is pointed at the stateful vendor fakes of
tests/idp_fakes.py, which enforce the documented request shapes, auth schemes and scopes or
app roles: Okta with a ``private_key_jwt`` service app, Microsoft Graph with an MSAL client
secret (over TLS), Google with a delegated service account key, and a generic management
platform (bearer token, read-back endpoints for ``verify``) defined here. Tokens live
:data:`LIFETIME` seconds; people are offboarded one every :data:`GAP` seconds, so the run
crosses several token lifetimes. Every action must end read back: ``verified``, except
Google's sign-out, which has no read-back (``not_verifiable``); nothing fails, the vendors'
state is what was asked, the fakes never answered 401, and tokens were minted again and again.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import requests
import yaml

from tests.fakes import FakeVendorServer
from tests.idp_fakes import (
    GOOGLE_ADMIN,
    GRAPH_SECRET,
    GoogleDirectory,
    GraphDirectory,
    OktaDirectory,
    Recording,
    google_directory,
    graph_directory,
    okta_directory,
    route,
    routes,
)
from tests.stack import LEAK_TOKEN, Stack, terminated_event, wait_until, write_config
from tests.token_servers import ApiCall, Reply, TokenServer, pem, rsa_key, tls_context

pytestmark = [pytest.mark.integration]

#: Token lifetime at the three identity providers, s.
LIFETIME = 2.0
#: Seconds between two people's terminations.
GAP = 2.0
#: Seconds before Graph shows a new signInSessionsValidFromDateTime and Okta's System Log a
#: session clear: the read-backs wait for them. Okta's is longer than a token lives, so each
#: plan's Okta read-back outlives the token its revocation was sent with.
GRAPH_READBACK_DELAY = 1.0
OKTA_LOG_DELAY = 2.5
#: The brand accounts the platform manages.
ACCOUNTS = {"ig-brand": "instagram", "x-brand": "x", "li-brand": "linkedin"}
#: (registry id, name, employee id, e-mail, accounts held).
PEOPLE = [
    ("ana", "Ana Lind", "E3001", "ana.lind@brand.example", ("ig-brand", "x-brand")),
    ("ben", "Ben Ortiz", "E3002", "ben.ortiz@brand.example", ("x-brand", "li-brand")),
    ("cleo", "Cleo Park", "E3003", "cleo.park@brand.example", ("ig-brand", "li-brand")),
    ("dev", "Dev Rao", "E3004", "dev.rao@brand.example", ("ig-brand", "x-brand")),
    ("eva", "Eva Berg", "E3005", "eva.berg@brand.example", ("li-brand", "x-brand")),
]
#: Someone whose password leaked (full publishing, so leak_privileged_holder acts): not
#: terminated, the leak response must leave the password expired and MFA reset everywhere.
LEAKED = ("lena", "Lena Holm", "E3009", "lena.holm@brand.example", ("ig-brand",))
#: What that leak response asks for (sign-out at Google is not verifiable).
LEAK_EXPECTED = {
    ("okta", "revoke_sessions"),
    ("okta", "expire_password"),
    ("okta", "force_mfa_reenrolment"),
    ("entra", "revoke_sessions"),
    ("entra", "expire_password"),
    ("entra", "force_mfa_reenrolment"),
    ("google", "revoke_sessions"),
    ("google", "expire_password"),
    ("google", "force_mfa_reenrolment"),
    ("platform", "revoke_sessions"),
}
#: What a termination asks for at each provider kind under the default policy.
EXPECTED = {
    ("okta", "disable_account"),
    ("okta", "revoke_sessions"),
    ("okta", "revoke_tokens"),
    ("entra", "disable_account"),
    ("entra", "revoke_sessions"),
    ("google", "disable_account"),
    ("google", "revoke_sessions"),
    ("google", "revoke_tokens"),
    ("platform", "revoke_sessions"),
    ("platform", "remove_grant"),
}


# --- the generic platform -----------------------------------------------------------------

PLATFORM_ROUTES = routes(
    {
        "/v1/users/{id}": ["GET"],
        "/v1/users/{id}/sessions/revoke": ["POST"],
        "/v1/accounts/{account}/members/{id}": ["GET", "DELETE"],
    }
)


@dataclass
class PlatformUser:
    id: str
    sessions: int = 2
    #: account id -> role
    memberships: dict[str, str] = field(default_factory=dict)


class PlatformDirectory(Recording, TokenServer):
    """A social-media management platform for the generic provider: a bearer token (from
    :meth:`TokenServer.issue`; unknown or stale: 401), ``POST /v1/users/{id}/sessions/revoke``
    (no body), ``DELETE /v1/accounts/{account}/members/{id}`` (404 for a non-member), and the
    read-backs ``GET /v1/users/{id}`` (``sessions.active``) and ``GET
    /v1/accounts/{account}/members/{id}`` (``member``: whether the user still holds the
    account; 200 either way). Unknown path 404, wrong method 405, a body where none is
    documented 400, unknown user 404."""

    def __init__(self, lifetime: float = 3600.0) -> None:
        super().__init__(lifetime)
        self.users: dict[str, PlatformUser] = {}
        self.recording()

    def add_user(self, user_id: str, accounts: dict[str, str]) -> PlatformUser:
        user = PlatformUser(id=user_id, memberships=dict(accounts))
        self.users[user.id] = user
        return user

    def _answer(self, call: ApiCall) -> Reply:
        name, groups, methods = route(PLATFORM_ROUTES, call.path)
        if not name:
            return 404, {"error": "not_found", "message": call.path}
        if call.method not in methods:
            return 405, {"error": "method_not_allowed"}
        if call.body is not None:
            return 400, {"error": "bad_request", "message": "no body expected"}
        user = self.users.get(unquote(groups[-1]))
        if user is None:
            return 404, {"error": "not_found", "message": "no such user"}
        if name == "/v1/users/{id}":
            return 200, {"id": user.id, "sessions": {"active": user.sessions}}
        if name.endswith("/sessions/revoke"):
            revoked, user.sessions = user.sessions, 0
            return 200, {"revoked": revoked}
        account = unquote(groups[0])
        if call.method == "GET":
            return 200, {"account": account, "user": user.id, "member": account in user.memberships}
        if account not in user.memberships:
            return 404, {"error": "not_found", "message": "not a member"}
        del user.memberships[account]
        return 204, None


PLATFORM_ACTIONS = {
    "revoke_sessions": {
        "method": "POST",
        "path": "/v1/users/{user_ref}/sessions/revoke",
        "verify": {"path": "/v1/users/{user_ref}", "expect": {"sessions.active": 0}},
    },
    "remove_grant": {
        "method": "DELETE",
        "path": "/v1/accounts/{account}/members/{user_ref}",
        "verify": {
            "path": "/v1/accounts/{account}/members/{user_ref}",
            "expect": {"member": False},
        },
    },
}


# --- the run ------------------------------------------------------------------------------


#: (monotonic time, method, path, query, bearer token) of an API call a fake answered.
Seen = tuple[float, str, str, dict[str, str], str]


def _record_calls(server: TokenServer) -> list[Seen]:
    """Record every API call ``server`` answers, with its time and token."""
    seen: list[Seen] = []
    answer = server.handle_api

    def recorded(call: ApiCall) -> Reply:
        seen.append((time.monotonic(), call.method, call.path, call.query, call.token))
        return answer(call)

    server.handle_api = recorded  # type: ignore[method-assign]
    return seen


@dataclass
class Run:
    stack: Stack
    okta: OktaDirectory
    graph: GraphDirectory
    google: GoogleDirectory
    platform: PlatformDirectory
    #: registry id -> provider name -> the person's id there
    refs: dict[str, dict[str, str]]
    journal: list[dict[str, Any]]
    #: seconds from the first termination to the last summary
    took: float
    #: provider name -> the API calls its fake answered
    seen: dict[str, list[Seen]]


def _secret_file(folder: Path, name: str, value: str) -> str:
    path = folder / name
    path.write_text(value, encoding="utf-8")
    path.chmod(0o600)
    return f"file:{path}"


def _registry(path: Path, refs: dict[str, dict[str, str]]) -> Path:
    registry = {
        "accounts": [
            {
                "id": account,
                "platform": platform,
                "handle": f"@{account}",
                "criticality": "high",
                "provider": "platform",
            }
            for account, platform in ACCOUNTS.items()
        ],
        "identities": [
            {
                "id": who,
                "name": name,
                "kind": "employee",
                "employee_id": employee_id,
                "emails": [email],
                "aliases": refs[who],
            }
            for who, name, employee_id, email, _ in (*PEOPLE, LEAKED)
        ],
        "grants": [
            {
                "identity": who,
                "account": account,
                "role": "full_publishing",
                "via": "sso",
                "mfa": "webauthn",
            }
            for who, *_, held in (*PEOPLE, LEAKED)
            for account in held
        ],
    }
    path.write_text(yaml.safe_dump(registry, sort_keys=False), encoding="utf-8")
    return path


def _summaries(stack: Stack) -> dict[str, str]:
    """identity -> the title of its offboarding summary, as journaled once sent."""
    return {
        e["alert"]["identity"]: e["alert"]["title"]
        for e in stack.journal_so_far()
        if e.get("kind") == "alert" and e["alert"].get("rule") == "offboarding.completed"
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("idp-stack")
    tls: tuple[ssl.SSLContext, Path] = tls_context(base / "tls")
    key = rsa_key()
    okta, okta_settings = okta_directory(key, lifetime=LIFETIME, log_delay=OKTA_LOG_DELAY)
    graph, graph_settings = graph_directory(
        tls[0], lifetime=LIFETIME, session_readback_delay=GRAPH_READBACK_DELAY
    )
    google, google_settings = google_directory(key, lifetime=LIFETIME)
    platform = PlatformDirectory().start()
    sinks = FakeVendorServer()
    servers: list[Any] = [okta, graph, google, platform]
    seen = {
        "okta": _record_calls(okta),
        "entra": _record_calls(graph),
        "google": _record_calls(google),
        "platform": _record_calls(platform),
    }
    try:
        refs: dict[str, dict[str, str]] = {}
        for n, (who, _, _, email, held) in enumerate((*PEOPLE, LEAKED)):
            platform_id = f"pl-{4100 + n}"
            platform.add_user(platform_id, dict.fromkeys(held, "full_publishing"))
            refs[who] = {
                "okta": okta.add_user(email).id,
                "entra": graph.add_user(email).id,
                "google": google.add_user(email).primaryEmail,
                "platform": platform_id,
            }
        secrets = base / "secrets-in"
        secrets.mkdir()
        platform_token = str(platform.issue()[1]["access_token"])  # type: ignore[index, call-overload]
        providers = {
            "okta": {
                **okta_settings,
                "private_key": _secret_file(secrets, "okta.pem", pem(key)),
            },
            "entra": {
                **graph_settings,
                "client_secret": _secret_file(secrets, "graph-secret", GRAPH_SECRET),
            },
            "google": {
                **google_settings,
                "service_account": _secret_file(
                    secrets,
                    "google-sa.json",
                    google_settings["service_account"].reveal(),
                ),
                "subject": GOOGLE_ADMIN,
            },
            "platform": {
                "type": "generic",
                "base_url": platform.url,
                "token": _secret_file(secrets, "platform-token", platform_token),
                "actions": PLATFORM_ACTIONS,
            },
        }
        cfg = write_config(
            base / "config.yaml",
            data_dir=base / "data",
            vendor_url=sinks.url,
            extra={
                "registry": str(_registry(base / "registry.yaml", refs)),
                "providers": providers,
                "verify.timeout": 20.0,
                "verify.max_interval": 0.5,
            },
        )
        stack = Stack(cfg, env={"REQUESTS_CA_BUNDLE": str(tls[1])}).start()
        try:
            leak = {"email": LEAKED[3], "password": "pw", "date": "2026-11-01"}
            resp = requests.post(
                f"{stack.url}/v1/leaks?breach=PasteSite",
                data=json.dumps(leak).encode(),
                headers={
                    "Authorization": f"Bearer {LEAK_TOKEN}",
                    "Content-Type": "application/x-ndjson",
                },
                timeout=15,
            )
            assert resp.status_code == 200, resp.text
            started = time.monotonic()
            for n, (who, _, employee_id, email, _) in enumerate(PEOPLE):
                if n:
                    time.sleep(GAP)
                resp = stack.post_hr(terminated_event(f"term-{who}", employee_id, email))
                assert resp.status_code == 202, resp.text
            everyone = {who for who, *_ in PEOPLE}
            try:
                wait_until(lambda: set(_summaries(stack)) >= everyone, 40, 0.1, "every summary")
            except TimeoutError:
                pytest.fail(
                    f"summaries sent for {sorted(_summaries(stack))} only; "
                    f"stderr:\n{stack.stderr()[-4000:]}"
                )
            took = time.monotonic() - started
            wait_until(
                lambda: len(_leak_read_backs(stack.journal_so_far())) >= len(LEAK_EXPECTED),
                30,
                0.1,
                "every read-back of the leak response",
            )
            journal = stack.journal()
            yield Run(stack, okta, graph, google, platform, refs, journal, took, seen)
        finally:
            stack.stop()
    finally:
        for server in (*servers, sinks):
            server.stop()


def _actions(run: Run) -> list[dict[str, Any]]:
    """The terminations' actions (the leak response's are apart: _leak_read_backs)."""
    return [
        e
        for e in run.journal
        if e.get("kind") == "action" and str(e.get("cause", "")).startswith("hr:")
    ]


def _leak_read_backs(journal: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(provider, action) -> read-back status of the leak response to LEAKED."""
    return {
        (e["provider"], e["action"]): e["verification"]["status"]
        for e in journal
        if e.get("identity") == LEAKED[0]
        and str(e.get("cause", "")).startswith("leak:")
        and (
            e.get("kind") == "action.verification"
            or (e.get("kind") == "action" and "verification" in e)
        )
    }


def _read_backs(run: Run) -> dict[str, dict[str, Any]]:
    """idempotency key -> its read-back (an action.verification record, or the
    not-verifiable mark carried by the action record itself)."""
    found: dict[str, dict[str, Any]] = {}
    for e in run.journal:
        kind = e.get("kind")
        if kind == "action.verification" or (kind == "action" and "verification" in e):
            assert e["idempotency_key"] not in found, f"read back twice: {e}"
            found[e["idempotency_key"]] = e["verification"]
    return found


def test_every_action_is_done_and_read_back(run: Run) -> None:
    actions = _actions(run)
    by_person: dict[str, set[tuple[str, str]]] = {}
    for a in actions:
        by_person.setdefault(a["identity"], set()).add((a["provider"], a["action"]))
        assert a["outcome"]["status"] == "done", a
    assert by_person == {who: EXPECTED for who, *_ in PEOPLE}
    grants = [a for a in actions if a["action"] == "remove_grant"]
    assert sorted((a["identity"], a["account"]) for a in grants) == sorted(
        (who, account) for who, *_, held in PEOPLE for account in held
    )
    assert len(actions) == len(PEOPLE) * (len(EXPECTED) - 1) + len(grants)

    read_backs = _read_backs(run)
    missing = [a for a in actions if a["idempotency_key"] not in read_backs]
    assert not missing, f"acknowledged but never read back: {missing}"
    statuses = {
        (a["identity"], a["provider"], a["action"], a["account"]): read_backs[a["idempotency_key"]][
            "status"
        ]
        for a in actions
    }
    wrong = {
        k: v
        for k, v in statuses.items()
        if v != ("not_verifiable" if k[1:3] == ("google", "revoke_sessions") else "verified")
    }
    assert not wrong, wrong
    assert "failed" not in statuses.values()
    # Google's sign-out is marked on its action record (nothing to read), the rest read back.
    for a in actions:
        marked = "verification" in a
        assert marked == ((a["provider"], a["action"]) == ("google", "revoke_sessions")), a


def test_every_summary_says_where_it_was_proven(run: Run) -> None:
    """Okta, Graph and the platform verified everything; Google's sign-out cannot be read
    back, so Google counts as acknowledged, not verifiable (streams/runtime/plans.py)."""
    titles = _summaries(run.stack)
    for who, name, *_ in PEOPLE:
        title = titles[who]
        assert title.startswith(f"Offboarded {name}"), title
        assert title.endswith("; verified at 3 of 4 providers (1 acknowledged, not verifiable)"), (
            title
        )
        assert "FAILED" not in title
    summaries = [
        e["alert"]
        for e in run.journal
        if e.get("kind") == "alert" and e["alert"].get("rule") == "offboarding.completed"
    ]
    for alert in summaries:
        assert alert["details"]["verification"] == {
            "entra": "verified",
            "google": "not_verifiable",
            "okta": "verified",
            "platform": "verified",
        }
        assert alert["details"]["actions_failed"] == 0
        assert alert["details"]["actions_unverified"] == 0
    assert not [
        e
        for e in run.journal
        if e.get("kind") == "alert"
        and e["alert"]["rule"] not in ("offboarding.completed", "leak_privileged_holder")
    ]


def test_the_vendors_hold_what_was_asked(run: Run) -> None:
    for who, *_, held in PEOPLE:
        refs = run.refs[who]
        okta = run.okta.users[refs["okta"]]
        assert okta.status == "SUSPENDED"
        assert okta.grants == []
        cleared = [
            event
            for _, event in run.okta.events
            if event["eventType"] == "user.session.clear"
            and any(t["id"] == okta.id for t in event["target"])
        ]
        assert len(cleared) == 1, cleared
        graph = run.graph.users[refs["entra"]]
        assert graph.accountEnabled is False
        assert len(graph.sessions_valid_from) == 2  # revoked once, after the seed value
        google = run.google.find(refs["google"])
        assert google is not None
        assert google.suspended is True
        assert (google.tokens, google.asps, google.signouts) == ([], [], 1)
        platform = run.platform.users[refs["platform"]]
        assert platform.sessions == 0
        assert platform.memberships == {}, (who, held)
    # Nothing was asked that the fakes refused (each call once: no retry of a rejected call).
    for server in (run.okta, run.graph, run.google, run.platform):
        writes = [(m, p) for m, p, _ in server.calls if m != "GET"]
        assert len(writes) == len(set(writes)), writes


def test_no_401_and_tokens_were_minted_again_and_again(run: Run) -> None:
    """The run lasts several token lifetimes: each identity provider minted a fresh token
    more than once, and never was a request sent with a stale or unknown one."""
    assert run.took >= 4 * LIFETIME, run.took
    for name, server in (
        ("okta", run.okta),
        ("graph", run.graph),
        ("google", run.google),
        ("platform", run.platform),
    ):
        assert server.api_unauthorized == 0, (name, server.api_unauthorized, server.api_calls)
        assert server.api_calls > 0, name
    for name, server in (("okta", run.okta), ("graph", run.graph), ("google", run.google)):
        assert server.issued >= 3, (name, server.issued)
        assert server.token_requests == server.issued, (name, server.token_requests)

    for name, calls in run.seen.items():
        assert calls, name
        if name == "platform":
            assert {token for *_, token in calls} == set(run.platform.tokens)  # the static one
            continue
        # No token outlives LIFETIME, so covering the calls' time span needs at least this
        # many tokens; each was fresh when sent (no 401 above).
        span = calls[-1][0] - calls[0][0]
        used = {token for *_, token in calls}
        assert len(used) >= 1 + int(span // LIFETIME), (name, len(used), span)
    # Within each plan: Okta's System Log shows the clear only after OKTA_LOG_DELAY (longer
    # than a token lives), so the read-back that finds it went out with a newer token than
    # the revocation.
    for who, *_ in PEOPLE:
        user_id = run.refs[who]["okta"]
        revoked = [
            c
            for c in run.seen["okta"]
            if c[1] == "DELETE" and c[2].endswith(f"/users/{user_id}/sessions")
        ]
        found = [
            c
            for c in run.seen["okta"]
            if c[2] == "/api/v1/logs" and user_id in c[3].get("filter", "")
        ]
        assert len(revoked) == 1, revoked
        assert found, who
        assert found[-1][4] != revoked[0][4], f"{who}: no token refresh within the plan"


def test_no_configured_secret_leaks(run: Run) -> None:
    """The key, client secret, service account and platform token (given as file:
    references) appear in no output, journal or /metrics."""
    run.stack.assert_no_secret_leaked()


def test_a_leak_response_leaves_the_password_expired_and_mfa_reset_verified(run: Run) -> None:
    """lena's password leaked: her sessions are revoked, her password expired and her MFA
    reset at every identity provider, each read back at the vendor; she is not disabled."""
    proof = _leak_read_backs(run.journal)
    assert set(proof) == LEAK_EXPECTED
    wrong = {
        k: v
        for k, v in proof.items()
        if v != ("not_verifiable" if k == ("google", "revoke_sessions") else "verified")
    }
    assert not wrong, wrong
    refs = run.refs[LEAKED[0]]
    okta = run.okta.users[refs["okta"]]
    assert okta.status == "PASSWORD_EXPIRED"
    assert "ACTIVE" not in okta.factors.values()
    graph = run.graph.users[refs["entra"]]
    assert graph.accountEnabled is True
    assert graph.forceChangePasswordNextSignIn is True
    assert graph.methods == []
    google = run.google.find(refs["google"])
    assert google is not None
    assert (google.suspended, google.changePasswordAtNextLogin, google.isEnrolledIn2Sv) == (
        False,
        True,
        False,
    )
