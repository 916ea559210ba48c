"""The lifecycle doors of issue 19 end to end: `accessguard run` (embedded Tansu broker, Faust
worker, HTTP server) against the local vendor servers.

An Okta Event Hook registered as Okta does it (verification, then a batch of System Log
events, tests/okta_hooks.py) and a Standard Webhooks-signed HR event each lead to the same
verified offboarding an HR termination gets (tests/test_integration_offboarding.py); after a
restart of the whole stack (the in-memory broker loses everything), Okta's redelivery and the
HR sender's retry are duplicates and no provider is called again.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from connectors.ingest import standard_webhooks as stdwh
from connectors.okta.event_hook import PATH
from tests.fakes import FakeVendorServer
from tests.okta_hooks import OktaHookSender, system_log_event
from tests.stack import Stack, terminated_event, wait_until, write_config

pytestmark = [pytest.mark.integration]

HOOK_SECRET = "integration-okta-hook-secret"
WHSEC = "whsec_" + base64.b64encode(b"integration-standard-webhooks-k").decode()
ALICE = "alice.nguyen@lumen-outdoor.example"
ALICE_OKTA_ID = "00u1alicexyz0A1b2C3d4"
BOB = "bob.okafor@lumen-outdoor.example"
BOB_OKTA_ID = "00u1bobxyz0A1b2C3d4e5"


def verifications(stack: Stack, identity: str) -> dict[tuple[str, str], str]:
    return {
        (e["provider"], e["action"]): e["verification"]["status"]
        for e in stack.journal_so_far()
        if e.get("kind") == "action.verification" and e.get("identity") == identity
    }


def disables_verified(
    stack: Stack, identity: str, providers: tuple[str, ...] = ("okta", "entra", "google")
) -> dict[tuple[str, str], str] | None:
    """The read-backs once the disable at each identity provider of ``identity`` is one."""
    proof = verifications(stack, identity)
    wanted = [(p, "disable_account") for p in providers]
    return proof if all(proof.get(k) == "verified" for k in wanted) else None


def decision(stack: Stack, event_id: str) -> dict[str, Any] | None:
    return next(
        (
            e
            for e in stack.journal_so_far()
            if e.get("kind") == "decision" and e.get("event_id") == event_id
        ),
        None,
    )


def post_standard(stack: Stack, msg_id: str, event: dict[str, Any]) -> requests.Response:
    body = orjson.dumps(event)
    headers = {**stdwh.sign(WHSEC, msg_id, body), "Content-Type": "application/json"}
    return requests.post(f"{stack.url}/v1/hr/events", data=body, headers=headers, timeout=15)


@pytest.mark.slow
def test_okta_hook_and_standard_webhooks_offboard_and_dedup_across_a_restart(
    tmp_path: Path, vendor: FakeVendorServer
) -> None:
    """Okta verifies the hook and delivers a deactivation (with a lock, an MFA reset and a
    type accessguard ignores): Alice is offboarded and each disable is read back verified,
    as for an HR termination. A Standard Webhooks termination offboards Bob the same way. The
    stack restarts; Okta redelivers the batch and the HR sender retries with the same
    webhook-id: all duplicates, and no provider is called again."""
    cfg = write_config(
        tmp_path / "config.yaml",
        data_dir=tmp_path / "data",
        vendor_url=vendor.url,
        extra={"hooks.event_hook_secret": HOOK_SECRET, "hooks.standard_webhooks_secret": WHSEC},
    )
    stack = Stack(cfg).start()
    okta = OktaHookSender(stack.url + PATH, HOOK_SECRET)
    batch = [
        system_log_event("user.lifecycle.deactivate", login=ALICE, user_id=ALICE_OKTA_ID),
        system_log_event(
            "user.account.lock",
            login=None,
            outcome="FAILURE",
            actor={"id": BOB_OKTA_ID, "type": "User", "alternateId": BOB, "displayName": "Bob"},
        ),
        system_log_event("user.mfa.factor.reset_all", login=BOB),
        system_log_event("group.user_membership.add", login=BOB),
    ]
    bob = {**terminated_event("ignored", "E1002", BOB), "source": "bamboohr"}
    del bob["event_id"]
    try:
        assert okta.verify().status_code == 200
        resp = okta.deliver(batch)
        assert resp.status_code == 200, resp.text
        results = resp.json()["results"]
        assert [(r["result"], r.get("route")) for r in results] == [
            ("accepted", "hr"),
            ("accepted", "login"),
            ("accepted", "identity"),
            ("ignored", None),
        ]
        alice_event = results[0]["id"]
        proof = wait_until(lambda: disables_verified(stack, "alice"), 30, what="alice verified")
        assert set(proof.values()) == {"verified"}, proof
        assert vendor.okta_user(ALICE_OKTA_ID)["status"] == "SUSPENDED"
        assert (decision(stack, alice_event) or {}).get("outcome") == "applied"

        answer = post_standard(stack, "msg_bob_1", bob)
        assert answer.json() == {"status": "accepted", "event_id": "msg_bob_1"}
        bob_proof = wait_until(
            lambda: disables_verified(stack, "bob", ("okta", "google")), 30, what="bob verified"
        )
        assert vendor.okta_user(BOB_OKTA_ID)["status"] == "SUSPENDED", bob_proof
        time.sleep(1.0)  # let the last provider calls land before counting
    finally:
        assert stack.stop() == 0
    calls = len(vendor.calls)

    stack.start()
    try:
        again = okta.deliver(batch).json()["results"]
        assert [r["result"] for r in again] == ["duplicate", "duplicate", "duplicate", "ignored"]
        retry = post_standard(stack, "msg_bob_1", bob)
        assert (retry.status_code, retry.json()["status"]) == (202, "duplicate")
        time.sleep(2.0)
        assert len(vendor.calls) == calls
        stack.assert_no_secret_leaked()
    finally:
        stack.stop()
