"""SCIM against `accessguard run` (embedded Tansu broker, Faust worker, HTTP server) and the
local vendor servers: scim2-tester's compliance suite, and Okta's and Entra's deprovisioning
request sequences, each ending in the same verified offboarding as an HR termination
(tests/test_integration_offboarding.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fakes import FakeVendorServer
from tests.stack import Stack, wait_until, write_config
from tests.test_integration_offboarding import ALICE_CALLS, ALICE_USER_REFS, alice_calls
from tests.test_scim import entra_disable, okta_deactivate, run_compliance_suite, summary

pytestmark = [pytest.mark.integration]

SCIM_TOKEN = "scim-integration-bearer-token"
ALICE = "alice.nguyen@lumen-outdoor.example"


def start_stack(base: Path, vendor: FakeVendorServer) -> Stack:
    cfg = write_config(
        base / "config.yaml",
        data_dir=base / "data",
        vendor_url=vendor.url,
        extra={"scim.token": SCIM_TOKEN},
    )
    return Stack(cfg).start()


@pytest.fixture
def stack(tmp_path: Path, server: FakeVendorServer) -> Iterator[Stack]:
    running = start_stack(tmp_path, server)
    try:
        yield running
    finally:
        running.stop()


def scim(stack: Stack, method: str, path: str, body: Any = None, **kw: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {SCIM_TOKEN}", "Content-Type": "application/scim+json"}
    return requests.request(
        method, f"{stack.url}/scim/v2{path}", json=body, headers=headers, timeout=30, **kw
    )


def assert_verified_offboarding(stack: Stack, vendor: FakeVendorServer, event_id: str) -> None:
    """What an HR termination of Alice does (tests/test_integration_offboarding.py): each
    provider call exactly once, the account disabled at the three identity providers and
    read back there as verified."""
    wait_until(lambda: len(alice_calls(vendor)) >= ALICE_CALLS, 20, what="every provider call")
    assert vendor.okta_user(ALICE_USER_REFS["okta"])["status"] == "SUSPENDED"
    assert not vendor.graph_user(ALICE_USER_REFS["entra"])["accountEnabled"]
    google = next(k for k in vendor.google_users if "alice" in k)
    assert vendor.google_users[google]["suspended"] is True

    def read_back() -> dict[tuple[str, str], str]:
        return {
            (e["provider"], e["action"]): e["verification"]["status"]
            for e in stack.journal()
            if e["kind"] == "action.verification" and e.get("identity") == "alice"
        }

    proof = wait_until(lambda: len(read_back()) >= 7 and read_back(), 20, what="read-backs")
    assert set(proof.values()) == {"verified"}, proof
    for provider in ("okta", "entra", "google"):
        assert proof[(provider, "disable_account")] == "verified"
    assert len(alice_calls(vendor)) == ALICE_CALLS  # each action exactly once
    decided = [e for e in stack.journal() if e["kind"] == "decision"]
    assert any(e.get("event_id") == event_id for e in decided), event_id


def test_okta_deprovisioning_is_a_verified_offboarding(
    stack: Stack, server: FakeVendorServer
) -> None:
    """Okta's sequence (GET ?filter=userName eq …, then PATCH with a path-less replace of
    ``active: false``) terminates Alice exactly as an HR termination does; Okta's retry of
    the PATCH changes nothing."""
    found = scim(stack, "GET", "/Users", params={"filter": f'userName eq "{ALICE}"'})
    assert found.status_code == 200, found.text
    [user] = found.json()["Resources"]
    resp = scim(stack, "PATCH", f"/Users/{user['id']}", okta_deactivate())
    assert resp.status_code == 200, resp.text
    assert resp.json()["active"] is False
    assert_verified_offboarding(stack, server, "scim.alice.terminated.0")
    assert scim(stack, "PATCH", f"/Users/{user['id']}", okta_deactivate()).status_code == 200
    hr_events = [
        e["value"]["event_id"]
        for e in stack.journal()
        if e["kind"] == "hr_event" and e["value"]["source"] == "scim"
    ]
    assert hr_events == ["scim.alice.terminated.0"]
    stack.assert_no_secret_leaked()


def test_entra_deprovisioning_is_a_verified_offboarding(
    stack: Stack, server: FakeVendorServer
) -> None:
    """Entra's sequence (GET ?filter=externalId eq …, PATCH "Replace" ``"value": "False"``,
    then DELETE) terminates Alice exactly as an HR termination does; the DELETE adds no
    second offboarding and the user is gone from SCIM."""
    found = scim(stack, "GET", "/Users", params={"filter": 'externalId eq "E1001"'})
    [user] = found.json()["Resources"]
    resp = scim(stack, "PATCH", f"/Users/{user['id']}", entra_disable())
    assert resp.status_code == 200, resp.text
    assert scim(stack, "DELETE", f"/Users/{user['id']}").status_code == 204
    assert_verified_offboarding(stack, server, "scim.alice.terminated.0")
    assert scim(stack, "GET", f"/Users/{user['id']}").status_code == 404


def test_compliance_suite_and_state_across_a_restart(
    tmp_path: Path, server: FakeVendorServer
) -> None:
    """scim2-tester's suite passes against `accessguard run` (every check of the declared
    features); a user created before a restart of the embedded stack is there after it,
    found by its externalId."""
    running = start_stack(tmp_path, server)
    try:
        counts, failed = summary(run_compliance_suite(f"{running.url}/scim/v2", SCIM_TOKEN))
        assert not failed, failed
        assert counts["SUCCESS"] >= 90, counts
        created = scim(
            running,
            "POST",
            "/Users",
            {"userName": "ren.ito@lumen-outdoor.example", "externalId": "W-9", "active": True},
        )
        assert created.status_code == 201, created.text
        running.stop()
        running.start()
        found = scim(running, "GET", "/Users", params={"filter": 'externalId eq "W-9"'}).json()
        assert [u["id"] for u in found["Resources"]] == [created.json()["id"]]
        again = scim(running, "GET", f"/Users/{created.json()['id']}")
        assert again.json()["userName"] == "ren.ito@lumen-outdoor.example"
        # the start-up registry import kept the identity the file does not declare
        key = f"identity:{created.json()['id']}"
        writes = [e for e in running.journal() if e["kind"] == "registry" and e["key"] == key]
        assert writes
        assert writes[-1]["value"] is not None, writes
    finally:
        running.stop()
