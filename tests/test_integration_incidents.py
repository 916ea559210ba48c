"""Alert routing and incidents end to end: ``accessguard run`` on the embedded broker, its real
alert agent, PagerDuty and Slack (webhook and app) as vendor-shaped local servers.

Staged rules reach only the review route, notify rules only chat, a registry shared login is
no unknown principal, and five alerts about one identity are one PagerDuty incident and one
Slack thread, even with a SIGKILL of the whole stack in the middle (the in-memory broker is
lost; the ledger comes back from the journal)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from kafka import KafkaProducer

from tests.fake_pagers import SLACK_BOT_TOKEN, SLACK_CHANNEL
from tests.fakes import FakeVendorServer
from tests.stack import INGEST_TOKEN, Stack, free_port, wait_until, write_config

pytestmark = [pytest.mark.integration]


def _config(tmp_path: Path, vendor: FakeVendorServer, port: int) -> Path:
    return write_config(
        tmp_path / "config.yaml",
        data_dir=tmp_path / "data",
        vendor_url=vendor.url,
        extra={
            "embedded.port": port,
            # the example's webhook sink is the review channel here; chat is a Slack app
            "alerts.sinks.chat": {
                "type": "slack_app",
                "url": vendor.url,
                "token": SLACK_BOT_TOKEN,
                "channel": SLACK_CHANNEL,
            },
            "alerts.intents": {
                "page": ["pagerduty", "chat"],
                "notify": ["chat"],
                "review": ["slack"],
            },
        },
    )


def _login(n: int, principal: str, outcome: str, *, target: str | None = None) -> dict[str, Any]:
    when = datetime.now(UTC) - timedelta(minutes=5) + timedelta(seconds=n)
    event: dict[str, Any] = {
        "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "vendor_event_id": f"inc-{n}",
        "principal": principal,
        "outcome": outcome,
        "ip": "198.51.100.23",
    }
    if target is not None:
        event["target"] = target
    return event


def _post(stack: Stack, events: list[dict[str, Any]]) -> None:
    resp = requests.post(
        f"{stack.url}/v1/auth/events?vendor=generic",
        data=b"\n".join(json.dumps(e).encode() for e in events),
        headers={"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/x-ndjson"},
        timeout=15,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["accepted"] == len(events), resp.text


def _paging_alert(n: int, rule: str) -> dict[str, Any]:
    """A paging rule alert about dan, as streams/detect/engine.py queues it."""
    return {
        "severity": "critical",
        "rule": rule,
        "identity": "dan",
        "dedup_key": f"{rule}:dan:{n}",
        "title": f"{rule}: dan",
        "details": {"rule": rule, "rule_status": "stable", "route": "page", "subject": "d4n"},
        "runbook": None,
        "event_action": "trigger",
    }


def _queue(port: int, alerts: list[dict[str, Any]]) -> None:
    """Put alerts on ``alerts.pending`` as the event path does (keyed by subject)."""
    producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{port}")
    try:
        for alert in alerts:
            producer.send(
                "accessguard.alerts.pending", key=b"identity:dan", value=orjson.dumps(alert)
            )
        producer.flush(15)
    finally:
        producer.close(5)


def test_routing_by_intent_and_one_page_per_incident_across_a_crash(
    tmp_path: Path, vendor: FakeVendorServer
) -> None:
    port = free_port()
    stack = Stack(_config(tmp_path, vendor, port)).start()
    try:
        # a stranger on the brand X account: staged rule -> review (the webhook) only
        _post(stack, [_login(0, "stranger@mail.example", "success", target="x:@lumen_outdoor")])
        review = wait_until(
            lambda: [
                c
                for c in vendor.calls_to("/slack/services/")
                if "unknown_principal_brand_login" in json.dumps(c["json"])
            ],
            30,
            what="review post",
        )
        assert len(review) == 1
        # the account's own shared login, and ten failures for bob (notify: chat only)
        _post(
            stack,
            [_login(1, "Social@Lumen-Outdoor.example", "success", target="x:@lumen_outdoor")]
            + [_login(10 + i, "bob.okafor@lumen-outdoor.example", "failure") for i in range(10)],
        )
        chat = wait_until(
            lambda: [m for m in vendor.slack_app.messages if "brute" in (m["text"] or "").lower()],
            30,
            what="brute-force chat message",
        )
        assert len(chat) == 1
        # dan: two paging alerts, then the whole stack dies
        _queue(
            port,
            [_paging_alert(0, "mfa_fatigue"), _paging_alert(1, "login_by_offboarded_identity")],
        )
        wait_until(
            lambda: (stack.ledger().get("incident:identity:dan") or {}).get("count") == 2,
            30,
            what="dan's incident with two alerts",
        )
    finally:
        stack.kill()
    stack.start()
    try:
        more = [
            _paging_alert(2, "mfa_fatigue"),
            _paging_alert(3, "new_device"),
            _paging_alert(4, "x"),
        ]
        _queue(port, more)
        wait_until(
            lambda: (stack.ledger().get("incident:identity:dan") or {}).get("count") == 5,
            30,
            what="dan's incident with five alerts",
        )
    finally:
        stack.stop()
    dan_pages = [
        c
        for c in vendor.calls_to("/v2/enqueue")
        if c["json"].get("dedup_key", "").startswith("incident:")
        and c["json"]["payload"]["custom_details"].get("identity") == "dan"
    ]
    assert len(dan_pages) == 5
    assert len({c["json"]["dedup_key"] for c in dan_pages}) == 1
    assert vendor.pagerduty.opened.count(dan_pages[0]["json"]["dedup_key"]) == 1
    # no PagerDuty page for the staged rule or the notify rule
    components = {
        c["json"].get("payload", {}).get("component") for c in vendor.calls_to("/v2/enqueue")
    }
    assert "unknown_principal_brand_login" not in components
    assert "brute_force_identity" not in components
    # the review channel got only the staged rule; nobody flagged the shared login
    assert all(
        "brute_force" not in json.dumps(c["json"]) for c in vendor.calls_to("/slack/services/")
    )
    unknown = [
        c
        for c in vendor.calls_to("/slack/services/")
        if "unknown_principal_brand_login" in json.dumps(c["json"])
    ]
    assert len(unknown) == 1
    # dan's chat: one message, four replies in its thread
    dan_top = [m for m in vendor.slack_app.top_level() if "dan" in (m["text"] or "")]
    assert len(dan_top) == 1
    assert len(vendor.slack_app.replies(dan_top[0]["ts"])) == 4
