"""Alert routing by intent and incidents (streams/runtime/alerts.py with
streams/runtime/incidents.py): a real engine and executor, the real PagerDuty, Slack app and
Slack webhook sinks, against the vendor-shaped local server (tests/fakes.py,
tests/fake_pagers.py), which counts PagerDuty incidents and enforces Slack threads."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.base.http import HttpClient
from connectors.sinks.pagerduty import PagerDutySink
from connectors.sinks.slack import SlackSink
from connectors.sinks.slack_app import SlackAppSink
from streams.bus.journal import replay_records
from streams.model.records import Alert
from streams.runtime.outages import RULE as OUTAGE_RULE
from streams.support.errors import AuthError, PermanentError
from streams.support.secrets import Secret
from tests.engine_harness import CLOCK, EngineHarness, build_engine, counter
from tests.fake_pagers import SLACK_BOT_TOKEN, SLACK_CHANNEL
from tests.fakes import PD_ROUTING_KEY, SLACK_WEBHOOK_PATH, FakeVendorServer

INTENTS = {"page": ["pd", "chat"], "notify": ["chat"], "review": ["review"]}


def rule_alert(
    rule: str,
    *,
    status: str = "stable",
    route: str = "page",
    identity: str | None = "ana",
    n: int = 0,
    severity: str = "high",
) -> Alert:
    """A rule alert as streams/detect/engine.py builds it (details carry status and route)."""
    return Alert(
        severity=severity,
        rule=rule,
        identity=identity,
        dedup_key=f"{rule}:{identity}:{n}",
        title=f"{rule}: {identity}",
        details={"rule": rule, "rule_status": status, "route": route, "subject": "5e1f00c0ffee"},
        runbook=f"docs/runbooks/{rule}.md",
    )


class Clock:
    def __init__(self) -> None:
        self.now = CLOCK

    def __call__(self) -> float:
        return self.now


def routed_engine(
    tmp_path: Path, server: FakeVendorServer, http: HttpClient, clock: Clock
) -> EngineHarness:
    h = build_engine(
        tmp_path,
        config={"alerts": {"incidents": {"window": 600}}},
        clock=clock,
    )
    h.engine.alerts.sinks = {
        "pd": PagerDutySink("pd", {"url": server.url, "routing_key": Secret(PD_ROUTING_KEY)}, http),
        "chat": SlackAppSink(
            "chat",
            {"url": server.url, "token": Secret(SLACK_BOT_TOKEN), "channel": SLACK_CHANNEL},
            http,
        ),
        "review": SlackSink(
            "review", {"webhook_url": Secret(server.url + SLACK_WEBHOOK_PATH)}, http
        ),
    }
    h.engine.alerts.intents = INTENTS
    return h


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def routed(
    tmp_path: Path, server: FakeVendorServer, http: HttpClient, clock: Clock
) -> Iterator[EngineHarness]:
    h = routed_engine(tmp_path, server, http, clock)
    yield h
    h.close()


def send(h: EngineHarness, *alerts: Alert) -> None:
    async def scenario() -> None:
        for alert in alerts:
            await h.engine.alerts.enqueue(alert)
        await h.dispatch_alerts()

    asyncio.run(scenario())


def test_a_staged_rule_reaches_only_the_review_route(
    routed: EngineHarness, server: FakeVendorServer
) -> None:
    """A staged rule with a critical severity and ``page`` in its response: the review
    channel only; no page, no chat; counted as review on the detection dashboard."""
    before = counter("accessguard_alerts_routed_total", rule="impossible_travel", intent="review")
    send(routed, rule_alert("impossible_travel", status="staged", severity="critical"))
    assert server.pagerduty.opened == []
    assert server.calls_to("/v2/enqueue") == []
    assert server.slack_app.messages == []
    (review,) = server.calls_to("/slack/services/")
    assert "impossible_travel" in review["json"]["text"]
    assert (
        counter("accessguard_alerts_routed_total", rule="impossible_travel", intent="review")
        == before + 1
    )


def test_a_notify_rule_reaches_only_chat(routed: EngineHarness, server: FakeVendorServer) -> None:
    """A stable ``notify`` rule with a high severity (which paged by severity before): chat
    only."""
    send(routed, rule_alert("brute_force_identity", route="notify", severity="high"))
    assert server.calls_to("/v2/enqueue") == []
    assert server.calls_to("/slack/services/") == []
    (message,) = server.slack_app.messages
    assert message["thread_ts"] is None


def test_five_alerts_about_one_identity_page_once_and_thread_in_chat(
    routed: EngineHarness, server: FakeVendorServer, clock: Clock
) -> None:
    """Five alerts about ana from three rules within the window: PagerDuty opens ONE
    incident (one trigger that opened it; the other paging alerts are folded into it on the
    same dedup key), chat gets one message and the rest as replies in its thread, and the
    incident's timeline lists all five."""
    alerts = [
        rule_alert("mfa_fatigue", n=0),
        rule_alert("brute_force_identity", route="notify", n=1),
        rule_alert("login_by_offboarded_identity", n=2, severity="critical"),
        rule_alert("mfa_fatigue", n=3),
        rule_alert("brute_force_identity", route="notify", n=4),
    ]
    for alert in alerts:
        send(routed, alert)
        clock.now += 30
    triggers = server.calls_to("/v2/enqueue")
    keys = {c["json"]["dedup_key"] for c in triggers}
    assert len(keys) == 1
    assert len(server.pagerduty.opened) == 1
    assert server.pagerduty.updates[server.pagerduty.opened[0]] == 2  # the 2 later paging ones
    (first,) = server.slack_app.top_level()
    replies = server.slack_app.replies(first["ts"])
    assert len(replies) == 4
    incident = triggers[-1]["json"]["payload"]["custom_details"]["incident"]
    assert incident["alerts"] == 4  # the last paging alert was the 4th: the timeline so far
    stored = routed.views.ledger["incident:identity:ana"]
    assert stored["count"] == 5
    assert [e["rule"] for e in stored["timeline"]] == [a.rule for a in alerts]
    assert stored["paged"] is True
    assert stored["sinks"]["chat"]["thread"] == first["ts"]


def test_after_the_window_a_new_incident_pages_again(
    routed: EngineHarness, server: FakeVendorServer, clock: Clock
) -> None:
    send(routed, rule_alert("mfa_fatigue", n=0))
    clock.now += 601
    send(routed, rule_alert("mfa_fatigue", n=1))
    assert len(server.pagerduty.opened) == 2
    assert len(server.slack_app.top_level()) == 2


def test_one_page_across_a_restart(
    tmp_path: Path, server: FakeVendorServer, http: HttpClient, clock: Clock
) -> None:
    """The worker pages for ana and dies; a new worker, whose ledger view is restored from the
    journal (as the embedded stack replays it), folds the next alerts about ana into the same
    PagerDuty incident and the same Slack thread."""
    first = routed_engine(tmp_path / "a", server, http, clock)
    try:
        send(first, rule_alert("mfa_fatigue", n=0))
    finally:
        first.close()
    replayed = replay_records(first.journal.path)["ledger"]
    clock.now += 120
    second = routed_engine(tmp_path / "b", server, http, clock)
    try:
        for key, value in replayed:
            second.views.ledger[key] = orjson.loads(value or b"null")
        send(
            second, rule_alert("login_by_offboarded_identity", n=1), rule_alert("mfa_fatigue", n=2)
        )
    finally:
        second.close()
    assert len(server.pagerduty.opened) == 1
    assert server.pagerduty.updates[server.pagerduty.opened[0]] == 2
    (top,) = server.slack_app.top_level()
    assert len(server.slack_app.replies(top["ts"])) == 2


def test_alerts_no_rule_raised_keep_their_severity_routes(
    routed: EngineHarness, server: FakeVendorServer
) -> None:
    """A provider outage (no rule) goes where ``alerts.routes.high`` says, with its own dedup
    key: outages and batches stay one incident each, as before."""
    routed.engine.alerts.routes = {"high": ["pd"]}
    outage = Alert("high", "provider.outage", None, "outage:okta:retryable", "Okta failing")
    send(routed, outage)
    (call,) = server.calls_to("/v2/enqueue")
    assert call["json"]["dedup_key"] == "outage:okta:retryable"
    assert server.slack_app.messages == []


def test_the_queue_is_keyed_by_subject(routed: EngineHarness) -> None:
    """Two rules' alerts about ana land on one alerts.pending key (one partition, one worker
    owns her incident)."""
    send(routed, rule_alert("mfa_fatigue"), rule_alert("brute_force_identity", route="notify"))
    assert routed.publisher.keys(routed.topics.alert_queue) == ["identity:ana", "identity:ana"]


# --- the Slack app sink against the fake's rules ----------------------------------------


def _app(server: FakeVendorServer, http: HttpClient, **settings: Any) -> SlackAppSink:
    values: dict[str, Any] = {
        "url": server.url,
        "token": Secret(SLACK_BOT_TOKEN),
        "channel": SLACK_CHANNEL,
        **settings,
    }
    return SlackAppSink("chat", values, http)


def test_slack_app_returns_the_thread_and_replies_in_it(
    server: FakeVendorServer, http: HttpClient
) -> None:
    sink = _app(server, http)
    first = sink.send(rule_alert("mfa_fatigue"))
    assert first["thread"] == server.slack_app.messages[0]["ts"]
    reply = sink.send(_with_thread(rule_alert("mfa_fatigue", n=1), first["thread"]))
    assert reply["thread"] == first["thread"]
    assert server.slack_app.replies(first["thread"])[0]["text"].endswith("mfa_fatigue: ana")
    call = server.calls_to("/api/chat.postMessage")[-1]
    assert call["json"]["thread_ts"] == first["thread"]
    assert SLACK_BOT_TOKEN not in repr(reply)


def _with_thread(alert: Alert, thread: str) -> Alert:
    return replace(alert, thread=thread)


def test_slack_app_errors_are_typed(server: FakeVendorServer, http: HttpClient) -> None:
    """``ok: false`` answers: a bad token is an AuthError, an unknown channel or a thread
    that is not the first post's ``ts`` are permanent (the fake refuses a made-up thread)."""
    with pytest.raises(AuthError, match="invalid_auth"):
        _app(server, http, token=Secret("xoxb-wrong")).send(rule_alert("mfa_fatigue"))
    with pytest.raises(PermanentError, match="channel_not_found"):
        _app(server, http, channel="C0NOTHERE").send(rule_alert("mfa_fatigue"))
    with pytest.raises(PermanentError, match="thread_not_found"):
        _app(server, http).send(_with_thread(rule_alert("mfa_fatigue"), "1767225600.999999"))


def test_an_outage_incident_threads_its_updates_and_keeps_its_pager_key(
    routed: EngineHarness, server: FakeVendorServer, clock: Clock
) -> None:
    """A provider outage (no rule; routed by severity) opened, updated and resolved under its
    own dedup key: one PagerDuty incident, resolved; in chat one message and its updates and
    resolve as replies. The next outage after the resolve is a new incident and thread."""
    routed.engine.alerts.routes = {"critical": ["pd", "chat"]}
    key = "provider-outage:okta:server_error"

    def outage(n: int, action: str = "trigger") -> Alert:
        return Alert("critical", OUTAGE_RULE, None, key, f"okta failing ({n})", event_action=action)

    async def scenario() -> None:
        for n, action in enumerate(["trigger", "trigger", "resolve", "trigger"]):
            clock.now += 60
            await routed.engine.alerts.send_alert(outage(n, action), ledger_key=f"alert:o:{n}")

    asyncio.run(scenario())
    assert {c["json"]["dedup_key"] for c in server.calls_to("/v2/enqueue")} == {key}
    assert server.pagerduty.opened == [key, key]  # the second only after the resolve
    first, second = server.slack_app.top_level()
    assert [m["text"].split("] ")[-1] for m in server.slack_app.replies(first["ts"])] == [
        "okta failing (1)",
        "okta failing (2)",
    ]
    assert server.slack_app.replies(second["ts"]) == []
