"""Pollers inside `accessguard run`: the Okta System Log poller pages a local server that
behaves like Okta, the events reach the rules through the real broker, and the checkpoint
survives a restart (nothing evaluated twice, nothing missed)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fake_logs import OKTA_TOKEN, FakeOktaLogs
from tests.fakes import FakeVendorServer
from tests.stack import INGEST_TOKEN, Stack, metric_value, wait_until, write_config

pytestmark = [pytest.mark.integration]


def okta_event(n: int, *, result: str, when: datetime) -> dict[str, Any]:
    return {
        "uuid": f"poll-{n}",
        "published": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "eventType": "user.session.start",
        "actor": {
            "id": "00u1bobxyz0A1b2C3d4e5",
            "type": "User",
            "alternateId": "bob.okafor@lumen-outdoor.example",
        },
        "client": {"ipAddress": "198.51.100.9"},
        "outcome": {
            "result": result,
            **({"reason": "VERIFICATION_ERROR"} if result == "FAILURE" else {}),
        },
    }


def evaluated(stack: Stack) -> float:
    return metric_value(stack.metrics(), "accessguard_login_events_evaluated_total")


def test_okta_poller_feeds_the_rules_and_resumes_after_restart(
    tmp_path: Path, vendor: FakeVendorServer
) -> None:
    """Twelve failed logins in Okta's log become one brute-force alert; after a restart the
    poller continues from its checkpoint: new events are evaluated, old ones are not."""
    start = datetime.now(UTC) - timedelta(minutes=20)
    with FakeOktaLogs() as okta:
        okta.add(
            *[
                okta_event(i, result="FAILURE", when=start + timedelta(seconds=30 * i))
                for i in range(12)
            ]
        )
        cfg = write_config(
            tmp_path / "config.yaml",
            data_dir=tmp_path / "data",
            vendor_url=vendor.url,
            extra={
                "pollers.okta-logs": {
                    "type": "okta",
                    "base_url": okta.url,
                    "token": OKTA_TOKEN,
                    "interval": 0.3,
                    "start": (start - timedelta(minutes=1)).isoformat(),
                    "limit": 5,
                }
            },
        )
        stack = Stack(cfg).start()
        try:
            wait_until(lambda: evaluated(stack) >= 12, 20, what="12 events evaluated")
            wait_until(
                lambda: [
                    c
                    for c in vendor.calls_to("/slack/")
                    if "brute" in json.dumps(c["json"]).lower()
                ],
                15,
                what="alert",
            )
            assert len(okta.calls) >= 3  # limit 5: the log was read in pages
        finally:
            stack.stop()
        checkpoint = tmp_path / "data" / "checkpoints" / "okta-logs.checkpoint.json"
        assert checkpoint.is_file()
        okta.add(okta_event(100, result="SUCCESS", when=datetime.now(UTC)))
        stack.start()
        try:
            wait_until(lambda: evaluated(stack) >= 1, 20, what="the new event")
            time.sleep(1.5)
            assert evaluated(stack) == 1  # the 12 old events were not read again
        finally:
            stack.stop()


def okta_audit(n: int, event_type: str, *, when: datetime, target: str | None) -> dict[str, Any]:
    """A System Log event done by alice (an admin) to ``target`` (an Okta user id)."""
    event: dict[str, Any] = {
        "uuid": f"audit-{n}",
        "published": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "eventType": event_type,
        "actor": {
            "id": "00u1alicexyz0A1b2C3d4",
            "type": "User",
            "alternateId": "alice.nguyen@lumen-outdoor.example",
        },
        "client": {"ipAddress": "198.51.100.10"},
        "outcome": {"result": "SUCCESS"},
        "debugContext": {"debugData": {"privilegeGranted": "Super administrator"}},
    }
    if target is not None:
        event["target"] = [{"id": target, "type": "User", "alternateId": "someone"}]
    return event


def test_okta_security_events_reach_the_identity_rules_and_the_rest_is_dropped(
    tmp_path: Path, vendor: FakeVendorServer
) -> None:
    """A privilege grant to bob (by his Okta id) and a factor removal for him in Okta's log
    become IdentityEvents on their own topic and alert through the identity rules; a
    group-membership event is dropped and counted, not dead-lettered."""
    start = datetime.now(UTC) - timedelta(minutes=5)
    bob = "00u1bobxyz0A1b2C3d4e5"
    with FakeOktaLogs() as okta:
        okta.add(
            okta_audit(1, "group.user_membership.add", when=start, target=bob),
            okta_audit(2, "user.account.privilege.grant", when=start, target=bob),
            okta_audit(3, "user.mfa.factor.deactivate", when=start, target=bob),
        )
        cfg = write_config(
            tmp_path / "config.yaml",
            data_dir=tmp_path / "data",
            vendor_url=vendor.url,
            extra={
                "pollers.okta-logs": {
                    "type": "okta",
                    "base_url": okta.url,
                    "token": OKTA_TOKEN,
                    "interval": 0.3,
                    "start": (start - timedelta(minutes=1)).isoformat(),
                    "filter": "",  # every event type: the allow-list decides
                }
            },
        )
        stack = Stack(cfg).start()
        try:

            def alerted(title: str) -> bool:
                return any(title in json.dumps(c["json"]) for c in vendor.calls_to("/slack/"))

            wait_until(lambda: alerted("Administrator privilege granted"), 30, what="grant")
            wait_until(lambda: alerted("MFA factor removed or reset"), 10, what="mfa alert")
            # the same kind of payload pushed to the ingest edge takes the same path
            token = okta_audit(4, "system.api_token.create", when=start, target=None)
            token["actor"]["id"] = bob
            token["actor"]["alternateId"] = "bob.okafor@lumen-outdoor.example"
            answer = requests.post(
                f"{stack.url}/v1/auth/events?vendor=okta",
                json=[token],
                headers={"Authorization": f"Bearer {INGEST_TOKEN}"},
                timeout=15,
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["events"] == 1
            wait_until(lambda: alerted("API token created"), 15, what="token alert")
            text = stack.metrics()
            assert metric_value(text, "accessguard_identity_events_evaluated_total") == 3
            name = "accessguard_identity_events_dropped_total"
            assert metric_value(text, name, source="okta", reason="not_security_type") == 1
            assert metric_value(text, "accessguard_dead_letters_total") == 0
        finally:
            stack.stop()
