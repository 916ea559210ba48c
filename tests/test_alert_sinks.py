"""Alert sinks against vendor-shaped local servers: PagerDuty Events v2 and Slack webhooks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import requests
import structlog

from connectors.base.http import HttpClient
from connectors.sinks.pagerduty import PagerDutySink, pd_dedup_key
from connectors.sinks.slack import SlackSink
from streams.model.records import Alert
from streams.support.errors import AuthError, ConfigError, PermanentError, RetryableError
from streams.support.secrets import Secret
from tests.fakes import PD_ROUTING_KEY, SLACK_TOKEN, SLACK_WEBHOOK_PATH, FakeVendorServer

ROUTING_KEY = PD_ROUTING_KEY
HOOK = SLACK_WEBHOOK_PATH


def _alert(**overrides: Any) -> Alert:
    fields: dict[str, Any] = {
        "severity": "high",
        "rule": "offboarded_login",
        "identity": "id-alice",
        "dedup_key": "offboarded_login:id-alice",
        "title": "Offboarded user signed in to the brand Instagram",
        "details": {"account": "acct-brand-ig", "ip_country": "NL"},
        "runbook": "https://runbooks.example/offboarded-login",
    }
    fields.update(overrides)
    return Alert(**fields)


def _pd(server: FakeVendorServer, http: HttpClient, **extra: Any) -> PagerDutySink:
    return PagerDutySink(
        "oncall", {"url": server.url, "routing_key": Secret(ROUTING_KEY), **extra}, http
    )


def _slack(server: FakeVendorServer, http: HttpClient, **extra: Any) -> SlackSink:
    return SlackSink("sec", {"webhook_url": Secret(server.url + HOOK), **extra}, http)


# --- PagerDuty ----------------------------------------------------------------------


def test_pagerduty_trigger_shape(server: FakeVendorServer, http: HttpClient) -> None:
    """A trigger carries routing_key, dedup_key, the mapped severity, component and runbook."""
    result = _pd(server, http).send(_alert())
    assert result == {
        "status": 202,
        "request": "POST /v2/enqueue",
        "dedup_key": "offboarded_login:id-alice",
    }
    (call,) = server.calls_to("/v2/enqueue")
    assert call["json"] == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "offboarded_login:id-alice",
        "payload": {
            "summary": "Offboarded user signed in to the brand Instagram",
            "source": "accessguard",
            "severity": "error",
            "component": "offboarded_login",
            "custom_details": {
                "account": "acct-brand-ig",
                "ip_country": "NL",
                "identity": "id-alice",
            },
        },
        "links": [{"href": "https://runbooks.example/offboarded-login", "text": "Runbook"}],
    }
    assert ROUTING_KEY not in repr(result)


def test_pagerduty_resolve_omits_payload(server: FakeVendorServer, http: HttpClient) -> None:
    """A resolve sends only routing_key, event_action and dedup_key."""
    _pd(server, http).send(_alert(event_action="resolve"))
    (call,) = server.calls
    assert call["json"] == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": "offboarded_login:id-alice",
    }


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("critical", "critical"),
        ("high", "error"),
        ("medium", "warning"),
        ("low", "info"),
        ("info", "info"),
    ],
)
def test_pagerduty_severity_mapping(
    server: FakeVendorServer, http: HttpClient, ours: str, theirs: str
) -> None:
    """accessguard's five severities map onto PagerDuty's four."""
    _pd(server, http).send(_alert(severity=ours))
    assert server.calls[0]["json"]["payload"]["severity"] == theirs


def test_pagerduty_long_dedup_key_is_hashed_to_255(
    server: FakeVendorServer, http: HttpClient
) -> None:
    """A dedup key over 255 chars is shortened deterministically and stays unique."""
    long_a = "k" * 300 + "a"
    long_b = "k" * 300 + "b"
    assert len(pd_dedup_key(long_a)) == 255
    assert pd_dedup_key(long_a) == pd_dedup_key(long_a)
    assert pd_dedup_key(long_a) != pd_dedup_key(long_b)
    assert pd_dedup_key("short") == "short"
    result = _pd(server, http).send(_alert(dedup_key=long_a))
    assert server.calls[0]["json"]["dedup_key"] == result["dedup_key"] == pd_dedup_key(long_a)


def test_pagerduty_summary_is_truncated_to_1024(server: FakeVendorServer, http: HttpClient) -> None:
    """PagerDuty rejects summaries over 1024 chars; we truncate instead of failing the page."""
    _pd(server, http).send(_alert(title="t" * 5000))
    summary = server.calls[0]["json"]["payload"]["summary"]
    assert len(summary) == 1024


def test_pagerduty_invalid_event_is_permanent(server: FakeVendorServer, http: HttpClient) -> None:
    """The fake validates like PagerDuty: an empty summary is a 400 'invalid event'."""
    with pytest.raises(PermanentError, match=r"400.*invalid event.*summary"):
        _pd(server, http).send(_alert(title=""))


def test_pagerduty_429_and_5xx_are_retryable(server: FakeVendorServer, http: HttpClient) -> None:
    """PagerDuty asks for retries only on 429, 5xx and network errors."""
    server.fail_next(1, status=429, retry_after=None)
    with pytest.raises(RetryableError, match="429"):
        _pd(server, http).send(_alert())
    server.fail_next(1, status=502)
    with pytest.raises(RetryableError, match="502"):
        _pd(server, http).send(_alert())
    assert server.calls == []


def test_pagerduty_unknown_event_action_is_permanent(
    server: FakeVendorServer, http: HttpClient
) -> None:
    """An event_action PagerDuty does not know fails before the call."""
    with pytest.raises(PermanentError, match="event_action 'escalate'"):
        _pd(server, http).send(_alert(event_action="escalate"))
    assert server.rejected == []


def test_pagerduty_dry_run_and_defaults(server: FakeVendorServer, http: HttpClient) -> None:
    """dry_run sends nothing; without url the public endpoint is the default."""
    sink = PagerDutySink("pd", {"dry_run": True}, http)
    assert sink.url == "https://events.pagerduty.com"
    assert sink.send(_alert())["dry_run"] is True
    assert server.calls == server.rejected == []
    with pytest.raises(ConfigError, match=r"sinks\.pd\.routing_key"):
        PagerDutySink("pd", {}, http)


# --- Slack --------------------------------------------------------------------------


def test_slack_message_shape(server: FakeVendorServer, http: HttpClient) -> None:
    """text is the fallback; blocks show severity, title, identity, details and runbook."""
    result = _slack(server, http).send(_alert())
    assert result == {"status": 200, "request": "POST {webhook_url}"}
    (call,) = server.calls_to("/slack/")
    body = call["json"]
    assert "[HIGH] Offboarded user signed in" in body["text"]
    rendered = repr(body["blocks"])
    for needle in (
        "Offboarded user signed in",
        "*Severity*\\nhigh",
        "id-alice",
        "ip_country",
        "<https://runbooks.example/offboarded-login|Runbook>",
    ):
        assert needle in rendered
    # The webhook URL is a secret: never in the audit result.
    assert SLACK_TOKEN not in repr(result)
    assert call["path"] == SLACK_WEBHOOK_PATH


def test_slack_escapes_mrkdwn_in_user_text(server: FakeVendorServer, http: HttpClient) -> None:
    """A title cannot inject links or @channel mentions."""
    _slack(server, http).send(_alert(title="<!channel> <https://evil|click>"))
    assert "&lt;!channel&gt;" in server.calls[0]["json"]["text"]


def test_slack_resolve_is_posted_as_resolved(server: FakeVendorServer, http: HttpClient) -> None:
    """Chat sinks post a resolve as a message marked RESOLVED."""
    _slack(server, http).send(_alert(event_action="resolve"))
    assert "[RESOLVED]" in server.calls[0]["json"]["text"]


def test_slack_429_with_retry_after_is_retryable(
    server: FakeVendorServer, http: HttpClient
) -> None:
    """Slack's rate limit carries Retry-After."""
    server.fail_next(1, status=429, retry_after=1)
    with pytest.raises(RetryableError, match="429") as info:
        _slack(server, http).send(_alert())
    assert info.value.retry_after == 1.0


def test_slack_plain_text_errors_are_permanent(server: FakeVendorServer, http: HttpClient) -> None:
    """Slack's plain-text 4xx errors are permanent and quoted in the message, URL never: a
    webhook that was removed is 404 no_service, a wrong token 403 invalid_token (AuthError)."""
    removed = server.url + HOOK.replace("/B0ACCGRD1/", "/B0GONE000/")
    with pytest.raises(PermanentError, match="404: no_service") as info:
        SlackSink("sec", {"webhook_url": Secret(removed)}, http).send(_alert())
    assert SLACK_TOKEN not in str(info.value)
    wrong = server.url + HOOK.replace(SLACK_TOKEN, "x" * len(SLACK_TOKEN))
    with pytest.raises(AuthError, match=r"403.*invalid_token") as auth:
        SlackSink("sec", {"webhook_url": Secret(wrong)}, http).send(_alert())
    assert "x" * len(SLACK_TOKEN) not in str(auth.value)
    assert server.calls == []
    assert [c["status"] for c in server.rejected] == [404, 403]


def test_fake_slack_rejects_empty_messages(server: FakeVendorServer, http: HttpClient) -> None:
    """The fake answers 400 no_text like Slack when no text is sent (blocks alone too)."""
    with pytest.raises(PermanentError, match="400: no_text"):
        http.request("slack", "POST", server.url + HOOK, json={})
    with pytest.raises(PermanentError, match="400: no_text"):
        http.request("slack", "POST", server.url + HOOK, json={"blocks": [], "text": " "})
    assert server.calls == []


def test_slack_sink_posting_without_the_token_segment_fails(
    server: FakeVendorServer, http: HttpClient
) -> None:
    """A webhook URL without its token segment reaches no channel: Slack says 404
    no_service. (A SlackSink that dropped the last path segment fails every send test.)"""
    truncated = (server.url + HOOK).rsplit("/", 1)[0]
    with pytest.raises(PermanentError, match="404: no_service") as info:
        SlackSink("sec", {"webhook_url": Secret(truncated)}, http).send(_alert())
    assert "B0ACCGRD1" not in str(info.value)
    assert server.calls == []
    # and the real URL, exactly, is what the sink posts to
    _slack(server, http).send(_alert())
    assert [c["path"] for c in server.calls] == [SLACK_WEBHOOK_PATH]


def _raw_post(server: FakeVendorServer, path: str, **kwargs: Any) -> requests.Response:
    return requests.post(server.url + path, timeout=5, **kwargs)


@pytest.mark.parametrize(
    ("path", "status", "text"),
    [
        (HOOK.rsplit("/", 1)[0], 404, "no_service"),  # token segment missing
        (HOOK + "/extra", 404, "no_service"),
        ("/slack/T0ACCGRD1/B0ACCGRD1/" + SLACK_TOKEN, 404, "no_service"),  # no /services/
        ("/slack/anything", 404, "no_service"),
        (HOOK.replace("T0ACCGRD1", "T0OTHER00"), 404, "no_service"),
        (HOOK.replace("B0ACCGRD1", "B0OTHER00"), 404, "no_service"),
        (HOOK[:-1] + "1", 403, "invalid_token"),
        (HOOK[:-4], 403, "invalid_token"),
    ],
)
def test_fake_slack_serves_only_the_configured_hook(
    server: FakeVendorServer, path: str, status: int, text: str
) -> None:
    """Only /services/T<team>/B<bot>/<token> of the live hook is a webhook; Slack answers
    anything else in plain text, and nothing counts as a call."""
    resp = _raw_post(server, path, json={"text": "hi"})
    assert (resp.status_code, resp.text) == (status, text)
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert server.calls == []
    assert [c["status"] for c in server.rejected] == [status]


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        (
            {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
            "invalid_payload",
        ),
        ({"json": ["text"]}, "invalid_payload"),
        ({"data": b""}, "invalid_payload"),
        ({"data": b"text=hi", "headers": {"Content-Type": "text/plain"}}, "invalid_payload"),
        ({"json": {"blocks": [{"type": "divider"}]}}, "no_text"),
        ({"json": {"text": 42}}, "no_text"),
    ],
)
def test_fake_slack_rejects_bodies_slack_rejects(
    server: FakeVendorServer, kwargs: dict[str, Any], text: str
) -> None:
    """A body that is not a JSON object is 400 invalid_payload; one without text 400 no_text."""
    resp = _raw_post(server, HOOK, **kwargs)
    assert (resp.status_code, resp.text) == (400, text)
    assert server.calls == []


# --- no URL, token or routing key in logs or errors ---------------------------------


def _leaks(entries: Sequence[Mapping[str, Any]], error: BaseException, *secrets: str) -> list[str]:
    texts = [repr(e) for e in entries] + [str(error), repr(error)]
    return [s for s in secrets for t in texts if s in t]


def test_failed_slack_posts_never_log_or_raise_the_webhook_url(
    server: FakeVendorServer, http: HttpClient
) -> None:
    """A 4xx, a 5xx and a connection error from Slack: neither the logs (every field) nor
    the raised error carry the webhook URL or its token segment."""
    url = server.url + HOOK
    secrets = (url, HOOK, SLACK_TOKEN)
    sink = _slack(server, http)
    server.force_status("/slack/", 400, "invalid_payload")
    with structlog.testing.capture_logs() as logs, pytest.raises(PermanentError) as e4xx:
        sink.send(_alert())
    assert [e["event"] for e in logs] == ["http_call_failed"]  # captured, so the check bites
    assert _leaks(logs, e4xx.value, *secrets) == []
    server.reset()
    server.fail_next(1, status=503)
    with structlog.testing.capture_logs() as logs, pytest.raises(RetryableError) as e5xx:
        sink.send(_alert())
    assert logs
    assert _leaks(logs, e5xx.value, *secrets) == []
    with FakeVendorServer() as gone:
        dead = gone.url + HOOK  # nobody listens there once it stopped
    with (
        HttpClient() as fresh,
        structlog.testing.capture_logs() as logs,
        pytest.raises(RetryableError, match="ConnectionError") as down,
    ):
        SlackSink("sec", {"webhook_url": Secret(dead)}, fresh).send(_alert())
    assert _leaks(logs, down.value, dead, HOOK, SLACK_TOKEN) == []


def test_failed_pages_never_log_or_raise_the_routing_key(
    server: FakeVendorServer, http: HttpClient
) -> None:
    """PagerDuty answering 400 or 502: the routing key is in no log entry and no error."""
    sink = _pd(server, http)
    with structlog.testing.capture_logs() as logs, pytest.raises(PermanentError) as bad:
        sink.send(_alert(title=""))
    assert logs
    assert _leaks(logs, bad.value, ROUTING_KEY) == []
    server.fail_next(1, status=502)
    with structlog.testing.capture_logs() as logs, pytest.raises(RetryableError) as down:
        sink.send(_alert())
    assert logs
    assert _leaks(logs, down.value, ROUTING_KEY) == []


# --- the PagerDuty fake is as strict as PagerDuty -----------------------------------


def test_wrong_routing_key_is_refused_like_pagerduty(
    server: FakeVendorServer, http: HttpClient
) -> None:
    """Only the configured integration key is accepted; PagerDuty's answer for any other,
    and nothing is enqueued."""
    for key in (ROUTING_KEY[:-1] + "1", ROUTING_KEY[:31], ROUTING_KEY + "0", "R0UT1NGKEY"):
        sink = PagerDutySink("oncall", {"url": server.url, "routing_key": Secret(key)}, http)
        with pytest.raises(PermanentError, match=r"400.*Invalid routing key"):
            sink.send(_alert())
    resp = requests.post(
        server.url + "/v2/enqueue",
        json={"routing_key": "nope", "event_action": "trigger", "payload": {}},
        timeout=5,
    )
    assert resp.status_code == 400
    assert resp.json() == {
        "status": "invalid event",
        "message": "Event object is invalid",
        "errors": ["Invalid routing key"],
    }
    assert server.calls == []
    with FakeVendorServer(pagerduty_routing_key="0" * 32) as other:
        PagerDutySink("oncall", {"url": other.url, "routing_key": Secret("0" * 32)}, http).send(
            _alert()
        )
        assert len(other.calls) == 1


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"dedup_key": "k" * 256}, "dedup_key"),
        ({"payload": {"summary": "s" * 1025, "source": "a", "severity": "error"}}, "summary"),
        ({"payload": {"summary": "s", "source": "a", "severity": "high"}}, "severity"),
        ({"payload": {"summary": "s", "source": "a"}}, "severity"),
        ({"event_action": "escalate"}, "event_action"),
        ({"event_action": "trigger", "payload": None}, "payload"),
        ({"event_action": "resolve", "dedup_key": None}, "dedup_key"),
    ],
)
def test_fake_pagerduty_validates_events_like_pagerduty(
    server: FakeVendorServer, change: dict[str, Any], error: str
) -> None:
    """dedup_key <= 255, summary <= 1024, one of four severities, a known event_action,
    a payload on trigger and a dedup_key on resolve; else 400 invalid event."""
    event: dict[str, Any] = {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "d",
        "payload": {"summary": "s", "source": "accessguard", "severity": "error"},
    }
    event.update(change)
    event = {k: v for k, v in event.items() if v is not None}
    resp = requests.post(server.url + "/v2/enqueue", json=event, timeout=5)
    assert resp.status_code == 400
    assert resp.json()["status"] == "invalid event"
    assert any(error in e for e in resp.json()["errors"]), resp.json()
    assert server.calls == []


def test_slack_config_is_validated(http: HttpClient) -> None:
    """A missing or non-https webhook URL is a config error that does not echo the URL."""
    with pytest.raises(ConfigError, match=r"sinks\.s\.webhook_url: required"):
        SlackSink("s", {}, http)
    with pytest.raises(ConfigError, match=r"sinks\.s\.webhook_url: must use https") as info:
        SlackSink("s", {"webhook_url": Secret("http://hooks.slack.com/services/SECRET")}, http)
    assert "SECRET" not in str(info.value)


def test_slack_dry_run_makes_no_call(server: FakeVendorServer, http: HttpClient) -> None:
    """dry_run builds the message but posts nothing."""
    assert _slack(server, http, dry_run=True).send(_alert())["dry_run"] is True
    assert server.calls == server.rejected == []
