"""Alert sinks against vendor-shaped local servers: PagerDuty Events v2 and Slack webhooks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from connectors.http import HttpClient
from connectors.pagerduty import PagerDutySink, pd_dedup_key
from connectors.slack import SlackSink
from streams.errors import ConfigError, PermanentError, RetryableError
from streams.records import Alert
from streams.secrets import Secret
from tests.fakes import FakeVendorServer

ROUTING_KEY = "R0UT1NGKEY0000000000000000000000"
HOOK = "/slack/services/T000/B000/XXXXXXXX"


@pytest.fixture
def server() -> Iterator[FakeVendorServer]:
    with FakeVendorServer() as srv:
        yield srv


@pytest.fixture
def http() -> Iterator[HttpClient]:
    with HttpClient() as client:
        yield client


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
    assert "B000" not in repr(result)


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
    """Slack's plain-text 4xx errors are permanent and quoted in the message, URL never."""
    server.force_status("/slack/", 404, "no_service")
    with pytest.raises(PermanentError, match="404: no_service") as info:
        _slack(server, http).send(_alert())
    assert "B000" not in str(info.value)


def test_fake_slack_rejects_empty_messages(server: FakeVendorServer, http: HttpClient) -> None:
    """The fake answers 400 no_text like Slack when neither text nor blocks is sent."""
    with pytest.raises(PermanentError, match="400: no_text"):
        http.request("slack", "POST", server.url + HOOK, json={})


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
