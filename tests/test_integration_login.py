"""The login path end to end on the embedded broker: `POST /v1/auth/events` (bearer token,
per-record results, dead letters) -> normalise -> resolve -> rules -> alerts and actions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from kafka import KafkaConsumer, TopicPartition

from tests.fakes import FakeVendorServer
from tests.stack import INGEST_TOKEN, Stack, metric_value, wait_until, write_config

pytestmark = [pytest.mark.integration]


def okta_login(
    uuid: str,
    *,
    user_id: str,
    login: str,
    result: str = "SUCCESS",
    minutes_ago: float = 0,
    ip: str = "203.0.113.77",
) -> dict[str, Any]:
    when = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return {
        "uuid": uuid,
        "published": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "eventType": "user.session.start",
        "actor": {"id": user_id, "type": "User", "alternateId": login},
        "client": {"ipAddress": ip, "userAgent": {"rawUserAgent": "Mozilla/5.0"}},
        "outcome": {
            "result": result,
            **({"reason": "VERIFICATION_ERROR"} if result == "FAILURE" else {}),
        },
    }


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, module_vendor: FakeVendorServer
) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("login")
    cfg = write_config(base / "config.yaml", data_dir=base / "data", vendor_url=module_vendor.url)
    with Stack(cfg) as running:
        yield running


def post(
    stack: Stack,
    body: Any,
    *,
    vendor: str = "okta",
    token: str = INGEST_TOKEN,
    ndjson: bool = False,
) -> requests.Response:
    if ndjson:
        data = b"\n".join(json.dumps(r).encode() for r in body)
        ctype = "application/x-ndjson"
    else:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        ctype = "application/json"
    return requests.post(
        f"{stack.url}/v1/auth/events?vendor={vendor}",
        data=data,
        headers={"Authorization": f"Bearer {token}", "Content-Type": ctype},
        timeout=15,
    )


def pages_for(vendor: FakeVendorServer, rule: str) -> list[dict[str, Any]]:
    return [
        c
        for c in vendor.calls_to("/v2/enqueue")
        if c["json"].get("payload", {}).get("component") == rule
    ]


def test_login_by_offboarded_identity_revokes_and_pages(
    stack: Stack, module_vendor: FakeVendorServer
) -> None:
    """Alice is terminated; her Okta session still works and logs in: the stable rule revokes
    her sessions again (a new cause, so new idempotency keys) and pages on-call once."""
    from tests.test_integration_offboarding import hr_event

    assert stack.post_hr(hr_event("login-term")).status_code == 202
    wait_until(
        lambda: module_vendor.calls_to("/api/v1/users/00u1alicexyz0A1b2C3d4/sessions"),
        15,
        what="offboarding",
    )
    before = len(module_vendor.calls_to("/api/v1/users/00u1alicexyz0A1b2C3d4/sessions"))
    resp = post(
        stack,
        [
            okta_login(
                "evt-a1",
                user_id="00u1alicexyz0A1b2C3d4",
                login="alice.nguyen@lumen-outdoor.example",
            )
        ],
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["accepted"] == 1
    pages = wait_until(
        lambda: pages_for(module_vendor, "login_by_offboarded_identity"), 15, what="page"
    )
    assert pages[0]["json"]["payload"]["severity"] == "critical"
    wait_until(
        lambda: (
            len(module_vendor.calls_to("/api/v1/users/00u1alicexyz0A1b2C3d4/sessions")) > before
        ),
        15,
        what="sessions revoked again",
    )
    # The same event delivered again does nothing twice.
    assert (
        post(
            stack,
            [
                okta_login(
                    "evt-a1",
                    user_id="00u1alicexyz0A1b2C3d4",
                    login="alice.nguyen@lumen-outdoor.example",
                )
            ],
        ).status_code
        == 200
    )
    import time

    time.sleep(1.5)
    assert len(pages_for(module_vendor, "login_by_offboarded_identity")) == 1
    assert len(module_vendor.calls_to("/api/v1/users/00u1alicexyz0A1b2C3d4/sessions")) == before + 1


def test_brute_force_alerts_once_in_its_window(
    stack: Stack, module_vendor: FakeVendorServer
) -> None:
    """Ten failed logins for Bob within ten minutes, as NDJSON: one brute-force alert."""
    events = [
        okta_login(
            f"bf-{i}",
            user_id="00u1bobxyz0A1b2C3d4e5",
            login="bob.okafor@lumen-outdoor.example",
            result="FAILURE",
            minutes_ago=9 - i * 0.5,
        )
        for i in range(12)
    ]
    resp = post(stack, events, ndjson=True)
    assert resp.status_code == 200
    assert resp.json()["events"] == 12
    slack = wait_until(
        lambda: [
            c for c in module_vendor.calls_to("/slack/") if "brute" in json.dumps(c["json"]).lower()
        ],
        15,
        what="brute-force alert",
    )
    assert len(slack) == 1
    metrics = stack.metrics()
    assert metric_value(metrics, "accessguard_rule_matches_total", rule="brute_force_identity") >= 1
    assert "bob" not in metrics


def test_one_bad_record_does_not_reject_its_batch(stack: Stack) -> None:
    """A batch with an unusable record: per-record results, the rest accepted, the bad one
    in the dead-letter topic with its reason."""
    good = okta_login(
        "mix-1", user_id="00u1carolxyz0A1b2C3d4", login="carol.ruiz@lumen-outdoor.example"
    )
    bad = {"uuid": "mix-2", "eventType": "user.session.start"}  # no time, no actor
    resp = post(stack, [good, bad])
    assert resp.status_code == 200
    body = resp.json()
    assert body["accepted"] == 1
    assert body["rejected"] == 1
    assert body["results"][1]["status"] == "rejected"
    assert body["results"][1]["reason"]
    bootstrap = next(e["url"] for e in stack.logs() if e.get("event") == "broker.started").split(
        "//"
    )[1]
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000
    )
    try:
        tp = TopicPartition("accessguard.auth.events.dlq", 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        records = [json.loads(r.value) for r in consumer]
    finally:
        consumer.close()
    assert any(r["value"] == bad and r["reason"] == body["results"][1]["reason"] for r in records)


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"token": "wrong"}, 401),
        ({"token": ""}, 401),
        ({"vendor": "myspace"}, 400),
    ],
)
def test_auth_and_vendor_errors(stack: Stack, kwargs: dict[str, Any], status: int) -> None:
    """Missing or wrong bearer token: 401 (with WWW-Authenticate); unknown vendor: 400."""
    resp = post(stack, [], **kwargs)
    assert resp.status_code == status
    assert "error" in resp.json()
    if status == 401:
        assert resp.headers["WWW-Authenticate"] == "Bearer"


def test_bad_json_and_empty_body_are_400(stack: Stack) -> None:
    assert post(stack, b"[{broken").status_code == 400
    assert post(stack, b"   ").status_code == 400


def test_oversize_batch_is_413(stack: Stack) -> None:
    big = b"[" + b",".join([json.dumps({"pad": "x" * 1000}).encode()] * 11000) + b"]"
    assert post(stack, big).status_code == 413


def test_rule_state_survives_a_restart(tmp_path: Any, vendor: FakeVendorServer) -> None:
    """Six failures, a restart of the embedded stack (the in-memory broker loses everything),
    six more failures: the brute-force window was rebuilt from the journal, so the rule sees
    twelve and fires. Without the rebuilt state it would see six and stay silent."""
    cfg = write_config(tmp_path / "config.yaml", data_dir=tmp_path / "data", vendor_url=vendor.url)
    stack = Stack(cfg).start()
    first = [
        okta_login(
            f"rs-{i}",
            user_id="00u1danxyz0A1b2C3d4e5",
            login="dan.meyer@freelance.example",
            result="FAILURE",
            minutes_ago=8 - i * 0.2,
        )
        for i in range(6)
    ]
    try:
        assert post(stack, first).status_code == 200
        wait_until(
            lambda: metric_value(stack.metrics(), "accessguard_login_events_evaluated_total") >= 6,
            15,
        )
        wait_until(
            lambda: any(e["kind"] == "rule_state" for e in stack.journal()),
            10,
            what="rule state checkpoint",
        )
    finally:
        stack.stop()
    stack.start()
    try:
        second = [
            okta_login(
                f"rs-{i}",
                user_id="00u1danxyz0A1b2C3d4e5",
                login="dan.meyer@freelance.example",
                result="FAILURE",
                minutes_ago=6 - (i - 6) * 0.2,
            )
            for i in range(6, 12)
        ]
        assert post(stack, second).status_code == 200
        wait_until(
            lambda: [
                c for c in vendor.calls_to("/slack/") if "brute" in json.dumps(c["json"]).lower()
            ],
            15,
            what="brute-force alert after restart",
        )
    finally:
        stack.stop()
