"""The SCIM service in-process (tests/scim_harness.py): discovery, the compliance suite, the
Okta and Entra request dialects, the edge contract (auth, 413, 503 + Retry-After, idempotent
deactivation) and what it publishes. The same against `accessguard run` with the real broker
is tests/test_integration_scim.py."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import check_server

from streams.support.errors import JournalError
from tests.scim_harness import TOPIC_HR, ScimEdge, scim_server

ALICE = "alice.nguyen@lumen-outdoor.example"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[ScimEdge]:
    with scim_server(tmp_path) as running:
        yield running


def run_compliance_suite(base: str, token: str) -> list[Any]:
    """scim2-tester's whole suite against ``base``: every check it has for what the service
    declares in its ServiceProviderConfig."""
    client = Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    with client:
        return list(check_server(SyncSCIMClient(client)))


def summary(results: list[Any]) -> tuple[Counter[str], list[str]]:
    counts = Counter(r.status.name for r in results)
    failed = [f"{r.title}: {r.reason}" for r in results if r.status.name == "ERROR"]
    return counts, failed


def okta_deactivate() -> dict[str, Any]:
    """What Okta sends to deprovision (Okta SCIM 2.0 guide: PATCH, path-less replace)."""
    return {"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": False}}]}


def entra_disable() -> dict[str, Any]:
    """What Entra sends to disable (Microsoft's SCIM guide: "Replace", a string boolean)."""
    return {
        "schemas": [PATCH],
        "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
    }


class TestDiscoveryAndCompliance:
    def test_service_provider_config_declares_what_is_implemented(self, edge: ScimEdge) -> None:
        """ServiceProviderConfig declares PATCH and filtering, and no bulk, sort, ETags or
        password change, with bearer-token authentication."""
        resp = edge.call("GET", "/ServiceProviderConfig")
        assert resp.status_code == 200, resp.text
        assert resp.headers["Content-Type"].startswith("application/scim+json")
        spc = resp.json()
        assert spc["patch"] == {"supported": True}
        assert spc["filter"] == {"supported": True, "maxResults": 200}
        for feature in ("bulk", "sort", "etag", "changePassword"):
            assert spc[feature]["supported"] is False
        assert spc["authenticationSchemes"][0]["type"] == "oauthbearertoken"

    def test_the_compliance_suite_passes_every_check(self, edge: ScimEdge) -> None:
        """scim2-tester runs every check that applies to the declared features, and each
        one succeeds (none skipped: every declared feature is exercised)."""
        counts, failed = summary(run_compliance_suite(edge.base, "scim-test-bearer-token"))
        assert not failed, failed
        assert counts["SUCCESS"] >= 90, counts


class TestAuthAndErrors:
    @pytest.mark.parametrize("token", ["", "wrong-token"])
    def test_missing_or_wrong_token_is_401_with_a_scim_error(
        self, edge: ScimEdge, token: str
    ) -> None:
        """A request without the bearer token, or with another one, is a 401 whose body is
        the SCIM error (RFC 7644 §3.12), with WWW-Authenticate."""
        resp = edge.call("GET", "/Users", token=token)
        assert resp.status_code == 401
        assert resp.json() == {
            "schemas": [ERROR],
            "status": "401",
            "detail": "missing or wrong bearer token",
        }
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")

    def test_oversize_body_is_413_with_a_scim_error(self, edge: ScimEdge) -> None:
        """A body over http.max_body_bytes is refused with 413 in the SCIM error format."""
        big = {"userName": "big@lumen-outdoor.example", "displayName": "x" * 70000}
        resp = edge.call("POST", "/Users", big)
        assert resp.status_code == 413
        assert resp.json()["schemas"] == [ERROR]
        assert edge.publisher.records == []

    @pytest.mark.parametrize(
        "case",
        [
            ("GET", "/Users?filter=userName%20eqq%20%22x%22", None, 400, "invalidFilter"),
            ("GET", "/Users/no-such-user", None, 404, None),
            ("GET", "/NoSuchEndpoint", None, 404, None),
            ("POST", "/ServiceProviderConfig", {}, 405, None),
            ("POST", "/Users", {"displayName": "no userName"}, 400, None),
            ("PATCH", "/Users/alice", {"schemas": [PATCH], "Operations": []}, 400, None),
        ],
    )
    def test_every_4xx_is_a_scim_error(
        self, edge: ScimEdge, case: tuple[str, str, Any, int, str | None]
    ) -> None:
        """Bad filters, unknown users and endpoints, wrong methods and invalid bodies each
        answer their 4xx with the SCIM error body."""
        method, path, body, status, scim_type = case
        resp = edge.call(method, path, body)
        assert resp.status_code == status, resp.text
        error = resp.json()
        assert error["schemas"] == [ERROR]
        assert error["status"] == str(status)
        if scim_type:
            assert error["scimType"] == scim_type

    def test_a_taken_user_name_is_409_uniqueness(self, edge: ScimEdge) -> None:
        """Creating a user whose userName is a registry identity's e-mail (in another case)
        is a 409 uniqueness error: the identity already exists."""
        resp = edge.call("POST", "/Users", {"userName": ALICE.upper()})
        assert resp.status_code == 409
        assert resp.json()["scimType"] == "uniqueness"


class TestRegistryIdentities:
    def test_okta_lookup_by_user_name_finds_the_registry_identity(self, edge: ScimEdge) -> None:
        """``userName eq`` finds a registry identity by e-mail (case-insensitively) or alias
        before any SCIM request wrote it; its SCIM id is the registry id."""
        for value in (ALICE.upper(), "00u1alicexyz0A1b2C3d4"):
            resp = edge.call("GET", "/Users", params={"filter": f'userName eq "{value}"'})
            assert resp.status_code == 200, resp.text
            listing = resp.json()
            assert listing["totalResults"] == 1
            user = listing["Resources"][0]
            assert (user["id"], user["userName"], user["active"]) == ("alice", ALICE, True)

    def test_entra_lookup_by_external_id(self, edge: ScimEdge) -> None:
        """``externalId eq`` finds the identity by its HR employee id or an alias (Entra's
        object id)."""
        for value in ("E1001", "6f1c2d3e-1111-4a5b-9c8d-a11ce0000001"):
            resp = edge.call("GET", "/Users", params={"filter": f'externalId eq "{value}"'})
            assert [u["id"] for u in resp.json()["Resources"]] == ["alice"], value

    def test_pagination_pages_through_every_user_once(self, edge: ScimEdge) -> None:
        """startIndex/count page through the users: each exactly once, totalResults fixed."""
        seen: list[str] = []
        start = 1
        while True:
            page = edge.call("GET", "/Users", params={"startIndex": start, "count": 2}).json()
            seen += [u["id"] for u in page["Resources"]]
            if not page["Resources"]:
                break
            assert page["itemsPerPage"] == len(page["Resources"]) <= 2
            start += 2
        assert len(seen) == len(set(seen)) == page["totalResults"] >= 4


class TestDeprovisioning:
    def test_okta_deactivation_is_one_termination_and_is_idempotent(self, edge: ScimEdge) -> None:
        """Okta's PATCH ``active: false`` publishes one HR termination of the identity
        (journaled, then acknowledged) and answers the inactive user; sending it again
        publishes nothing more."""
        for _ in range(2):
            resp = edge.call("PATCH", "/Users/alice", okta_deactivate())
            assert resp.status_code == 200, resp.text
            assert resp.json()["active"] is False
        events = edge.hr_events()
        assert len(events) == 1
        event = events[0]
        assert event["type"] == "terminated"
        assert (event["employee_id"], event["email"], event["source"]) == ("E1001", ALICE, "scim")
        assert event["event_id"] == "scim.alice.terminated.0"
        journaled = [e for e in edge.journal_entries() if e["kind"] == "hr_event"]
        assert [e["value"]["event_id"] for e in journaled] == [event["event_id"]]
        assert edge.call("GET", "/Users/alice").json()["active"] is False

    def test_entra_disable_then_delete(self, edge: ScimEdge) -> None:
        """Entra's "Replace" with ``"value": "False"`` terminates; the DELETE that follows
        sends no second termination, and the user is gone (404) while the registry
        identity stays for the offboarding to act on."""
        resp = edge.call("PATCH", "/Users/alice", entra_disable())
        assert resp.status_code == 200, resp.text
        assert resp.json()["active"] is False
        assert edge.call("DELETE", "/Users/alice").status_code == 204
        assert [e["type"] for e in edge.hr_events()] == ["terminated"]
        assert edge.call("GET", "/Users/alice").status_code == 404
        assert "alice" in edge.views.registry.identities

    def test_delete_of_an_active_user_is_a_termination(self, edge: ScimEdge) -> None:
        """DELETE of an active user publishes the termination before answering 204."""
        assert edge.call("DELETE", "/Users/bob").status_code == 204
        [event] = edge.hr_events()
        assert (event["type"], event["employee_id"]) == ("terminated", "E1002")
        assert event["event_id"] == "scim.bob.deleted.0"

    def test_reactivation_is_a_reinstatement(self, edge: ScimEdge) -> None:
        """``active: true`` after ``false`` publishes a reinstatement HR event."""
        edge.call("PATCH", "/Users/alice", okta_deactivate())
        activate = {
            "schemas": [PATCH],
            "Operations": [{"op": "replace", "path": "active", "value": True}],
        }
        assert edge.call("PATCH", "/Users/alice", activate).json()["active"] is True
        assert [(e["type"], e["event_id"]) for e in edge.hr_events()] == [
            ("terminated", "scim.alice.terminated.0"),
            ("reinstated", "scim.alice.reinstated.1"),
        ]

    def test_broker_down_is_503_with_retry_after_and_the_retry_is_the_same_event(
        self, edge: ScimEdge
    ) -> None:
        """While the broker does not acknowledge, the deactivation is a 503 with Retry-After
        and the user stays active; the identity provider's retry publishes the termination
        once, under the event id the refused attempt had."""
        edge.publisher.down = True
        resp = edge.call("PATCH", "/Users/alice", okta_deactivate())
        assert resp.status_code == 503
        assert resp.headers["Retry-After"] == "5"
        assert resp.json()["schemas"] == [ERROR]
        assert edge.call("GET", "/Users/alice").json()["active"] is True
        edge.publisher.down = False
        assert edge.call("PATCH", "/Users/alice", okta_deactivate()).status_code == 200
        assert [e["event_id"] for e in edge.hr_events()] == ["scim.alice.terminated.0"]

    def test_journal_down_is_503(self, edge: ScimEdge, monkeypatch: pytest.MonkeyPatch) -> None:
        """When the journal cannot be written, nothing is published and the answer is 503."""

        def refuse(*_a: Any, **_k: Any) -> None:
            raise JournalError("journal.jsonl: disk full", reason="No space left on device")

        # the HR edge journals with write + commit (group commit), registry writes with append
        monkeypatch.setattr(edge.journal, "append", refuse)
        monkeypatch.setattr(edge.journal, "write", refuse)
        resp = edge.call("PATCH", "/Users/alice", okta_deactivate())
        assert resp.status_code == 503
        assert "journal unavailable" in resp.json()["detail"]
        assert edge.publisher.records == []


class TestProvisioning:
    def test_create_publishes_the_identity_and_the_scim_record(self, edge: ScimEdge) -> None:
        """POST creates a registry identity (name, e-mails) and the SCIM record through the
        registry topic, never writing state directly; the password is never stored."""
        body = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "Nia.Okoro@lumen-outdoor.example",
            "externalId": "W-77",
            "name": {"givenName": "Nia", "familyName": "Okoro"},
            "emails": [{"value": "nia@lumen-outdoor.example", "type": "work"}],
            "password": "never-kept-Pa55word",
            "active": True,
        }
        resp = edge.call("POST", "/Users", body)
        assert resp.status_code == 201, resp.text
        user = resp.json()
        assert "password" not in user
        assert resp.headers["Location"].endswith(f"/Users/{user['id']}")
        keys = [k for k, _v in edge.registry_changes()]
        assert keys == [f"identity:{user['id']}", f"scim:{user['id']}"]
        identity = edge.views.registry.identities[user["id"]]
        assert identity.name == "Nia Okoro"
        assert identity.emails == ("nia.okoro@lumen-outdoor.example", "nia@lumen-outdoor.example")
        assert "never-kept" not in edge.journal.path.read_text()
        found = edge.call("GET", "/Users", params={"filter": 'externalId eq "W-77"'}).json()
        assert [u["id"] for u in found["Resources"]] == [user["id"]]
        assert edge.hr_events() == []

    def test_entra_path_less_replace_updates_the_name(self, edge: ScimEdge) -> None:
        """Entra's path-less "Replace" with a value object changes the registry name of a
        registry identity through a registry change."""
        patch = {
            "schemas": [PATCH],
            "Operations": [{"op": "Replace", "value": {"displayName": "Alice N. Nguyen"}}],
        }
        resp = edge.call("PATCH", "/Users/alice", patch)
        assert resp.status_code == 200, resp.text
        assert edge.views.registry.identities["alice"].name == "Alice N. Nguyen"
        assert ("identity:alice", edge.views.registry.identities["alice"].to_dict()) in (
            edge.registry_changes()
        )
        assert not [r for r in edge.publisher.records if r[0] == TOPIC_HR]
