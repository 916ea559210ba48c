"""The shared HTTP policy: backoff, Retry-After, status mapping, timeouts, retries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import requests
import structlog

from connectors.base.http import (
    HttpClient,
    RetryPolicy,
    backoff_delay,
    call_with_retries,
    parse_retry_after,
)
from streams.support.errors import AuthError, PermanentError, RetryableError
from tests.fakes import PLATFORM_TOKEN, SLACK_TOKEN, SLACK_WEBHOOK_PATH, FakeVendorServer

SLACK = SLACK_WEBHOOK_PATH


def _post_slack(http: HttpClient, server: FakeVendorServer) -> requests.Response:
    return http.request("slack:test", "POST", server.url + SLACK, json={"text": "hi"})


# --- backoff ------------------------------------------------------------------------


def test_backoff_grows_exponentially_within_jitter_bounds() -> None:
    """Delay n is base*2**(n-1), jittered by at most +-jitter."""
    policy = RetryPolicy(base_delay=0.5, max_delay=100.0, jitter=0.2)
    for attempt, nominal in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0)]:
        delays = [backoff_delay(attempt, policy, None) for _ in range(200)]
        assert all(nominal * 0.8 <= d <= nominal * 1.2 for d in delays)
        # Jitter actually spreads the delays (no lock-step retries).
        assert max(delays) - min(delays) > nominal * 0.05


def test_backoff_is_capped_at_max_delay_even_for_huge_attempts() -> None:
    """No attempt number makes the delay exceed max_delay (nor overflow)."""
    policy = RetryPolicy(max_delay=10.0)
    assert all(0 <= backoff_delay(n, policy, None) <= 10.0 for n in (6, 50, 10_000))


def test_backoff_without_jitter_is_deterministic() -> None:
    """jitter=0 gives the exact nominal delay."""
    policy = RetryPolicy(base_delay=1.0, jitter=0.0)
    assert backoff_delay(3, policy, None) == 4.0


def test_backoff_honours_retry_after_and_never_waits_less() -> None:
    """A server's Retry-After is a floor, even above max_delay, jittered upwards only."""
    policy = RetryPolicy(max_delay=10.0, jitter=0.2)
    delays = [backoff_delay(1, policy, 30.0) for _ in range(100)]
    assert all(30.0 <= d <= 36.0 for d in delays)


def test_backoff_caps_absurd_retry_after() -> None:
    """A Retry-After of a day is capped at max_retry_after (300 s by default)."""
    assert backoff_delay(1, RetryPolicy(), 86_400.0) == 300.0


# --- Retry-After parsing ------------------------------------------------------------


def test_retry_after_seconds_and_http_date_are_parsed() -> None:
    """Both forms of Retry-After give seconds; garbage and absence give None."""
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=42), usegmt=True)
    assert parse_retry_after("7", now=now) == 7.0
    assert parse_retry_after(later, now=now) == pytest.approx(42.0)
    assert parse_retry_after(format_datetime(now - timedelta(hours=1), usegmt=True), now=now) == 0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None


# --- status mapping -----------------------------------------------------------------


def test_success_returns_the_response(http: HttpClient, server: FakeVendorServer) -> None:
    """A 2xx answer is returned as is."""
    response = _post_slack(http, server)
    assert response.status_code == 200
    assert response.text == "ok"


def test_429_maps_to_retryable_with_retry_after_seconds(
    http: HttpClient, server: FakeVendorServer
) -> None:
    """429 is retryable and carries Retry-After in seconds."""
    server.fail_next(1, status=429, retry_after=3)
    with pytest.raises(RetryableError, match="HTTP 429") as info:
        _post_slack(http, server)
    assert info.value.status == 429
    assert info.value.retry_after == 3.0


def test_429_with_http_date_retry_after(http: HttpClient, server: FakeVendorServer) -> None:
    """An HTTP-date Retry-After becomes the seconds until that date."""
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    server.fail_next(1, status=429, retry_after=when)
    with pytest.raises(RetryableError, match="429") as info:
        _post_slack(http, server)
    assert info.value.retry_after is not None
    assert 100 <= info.value.retry_after <= 121


def test_429_without_retry_after(http: HttpClient, server: FakeVendorServer) -> None:
    """A 429 without Retry-After (Graph does this) is retryable with retry_after None."""
    server.fail_next(1, status=429, retry_after=None)
    with pytest.raises(RetryableError, match="429") as info:
        _post_slack(http, server)
    assert info.value.retry_after is None


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_maps_to_retryable(http: HttpClient, server: FakeVendorServer, status: int) -> None:
    """Server errors are retryable; a Retry-After on them is honoured too."""
    server.fail_next(1, status=status, retry_after=5)
    with pytest.raises(RetryableError, match=f"HTTP {status}") as info:
        _post_slack(http, server)
    assert info.value.retry_after == 5.0


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_map_to_auth_error(
    http: HttpClient, server: FakeVendorServer, status: int
) -> None:
    """Auth failures are permanent AuthErrors that tell the operator to fix the credential."""
    server.force_status("/slack/", status, "invalid_token")
    with pytest.raises(AuthError, match=f"HTTP {status}.*rotate or re-scope"):
        _post_slack(http, server)


@pytest.mark.parametrize("status", [400, 404, 409, 410, 422])
def test_other_4xx_map_to_permanent_error(
    http: HttpClient, server: FakeVendorServer, status: int
) -> None:
    """Other 4xx are permanent (not AuthError): retrying repeats the mistake."""
    server.force_status("/slack/", status, "channel_not_found")
    with pytest.raises(PermanentError, match=f"HTTP {status}: channel_not_found") as info:
        _post_slack(http, server)
    assert not isinstance(info.value, AuthError)


def test_error_message_truncates_body_and_never_shows_headers_or_url(
    http: HttpClient, server: FakeVendorServer
) -> None:
    """The message carries at most 300 body characters and never the auth header or URL."""
    server.force_status("/slack/", 400, "x" * 5000)
    with pytest.raises(PermanentError) as info:
        http.request(
            "generic:test",
            "POST",
            server.url + SLACK,
            headers={"Authorization": f"Bearer {PLATFORM_TOKEN}"},
            json={"text": "hi"},
        )
    message = str(info.value)
    assert "x" * 300 in message
    assert "x" * 301 not in message
    assert PLATFORM_TOKEN not in message
    assert SLACK_TOKEN not in message


def _mentions(
    entries: Sequence[Mapping[str, Any]], error: BaseException, *secrets: str
) -> list[str]:
    """The secrets that appear in any log entry (any field, stringified) or the error."""
    texts = [repr(entry) for entry in entries] + [str(error), repr(error)]
    return sorted({s for s in secrets for t in texts if s in t})


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [(400, PermanentError), (403, AuthError), (404, PermanentError), (503, RetryableError)],
)
def test_failed_call_logs_neither_url_nor_token(
    server: FakeVendorServer, fault: int, error_type: type[Exception]
) -> None:
    """A failed call is logged (http_call_failed) and raised without the URL, which for a
    Slack webhook is the secret, and without the Authorization header's token."""
    url = server.url + SLACK
    server.force_status("/slack/", fault, "some_error")
    with (
        HttpClient(RetryPolicy()) as http,
        structlog.testing.capture_logs() as logs,
        pytest.raises(error_type) as info,
    ):
        http.request(
            "slack:test",
            "POST",
            url,
            headers={"Authorization": f"Bearer {PLATFORM_TOKEN}"},
            json={"text": "hi"},
        )
    failed = [e for e in logs if e["event"] == "http_call_failed"]
    assert len(failed) == 1  # the entry the check reads exists
    assert failed[0]["status"] == fault
    assert _mentions(logs, info.value, url, SLACK, SLACK_TOKEN, PLATFORM_TOKEN) == []


def test_connection_error_and_retries_log_neither_url_nor_token() -> None:
    """Nobody listening, retried to the end by call_with_retries: no log entry (scheduled
    retries, the give-up) and not the final error carries the URL or the token."""
    with FakeVendorServer() as srv:
        url = srv.url + SLACK
    with (
        HttpClient(RetryPolicy()) as http,
        structlog.testing.capture_logs() as logs,
        pytest.raises(RetryableError, match="ConnectionError") as info,
    ):
        call_with_retries(
            lambda: http.request("slack:test", "POST", url, json={"text": "x"}),
            RetryPolicy(max_attempts=2, base_delay=0.01),
            sleep=lambda _: None,
        )
    assert [e["event"] for e in logs] == ["retry_scheduled", "retry_give_up"]
    assert _mentions(logs, info.value, url, SLACK, SLACK_TOKEN) == []


def test_unexpected_success_status_outside_ok_is_permanent(
    http: HttpClient, server: FakeVendorServer
) -> None:
    """A caller can narrow ``ok``; another 2xx is then a permanent error, not silence."""
    with pytest.raises(PermanentError, match="HTTP 200"):
        http.request("slack:test", "POST", server.url + SLACK, json={"text": "hi"}, ok=(202,))


# --- network failures ---------------------------------------------------------------


def test_read_timeout_is_retryable(server: FakeVendorServer) -> None:
    """A server slower than read_timeout raises RetryableError quickly, without the URL."""
    server.set_delay(0.5)
    with (
        HttpClient(RetryPolicy(read_timeout=0.05)) as http,
        pytest.raises(RetryableError, match="ReadTimeout") as info,
    ):
        _post_slack(http, server)
    assert "127.0.0.1" not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_connection_refused_is_retryable(http: HttpClient) -> None:
    """Nobody listening is a retryable ConnectionError."""
    with FakeVendorServer() as srv:
        url = srv.url
    with pytest.raises(RetryableError, match="ConnectionError"):
        http.request("slack:test", "POST", url + SLACK, json={"text": "x"})


def test_invalid_url_is_permanent(http: HttpClient) -> None:
    """A malformed URL is a configuration error, never retried."""
    with pytest.raises(PermanentError, match="could not be built"):
        http.request("slack:test", "POST", "http://", json={})


# --- call_with_retries --------------------------------------------------------------


def test_call_with_retries_retries_retryable_until_success(
    http: HttpClient, server: FakeVendorServer
) -> None:
    """Two 503s then success: three attempts, two sleeps, one effective call."""
    server.fail_next(2, status=503, retry_after=None)
    sleeps: list[float] = []
    retries: list[int] = []
    policy = RetryPolicy(base_delay=0.01)
    response = call_with_retries(
        lambda: _post_slack(http, server),
        policy,
        sleep=sleeps.append,
        on_retry=lambda attempt, exc, delay: retries.append(attempt),
    )
    assert response.status_code == 200
    assert len(sleeps) == 2
    assert retries == [1, 2]
    assert len(server.calls) == 1
    assert len(server.rejected) == 2


def test_call_with_retries_gives_up_after_max_attempts_and_logs(
    http: HttpClient, server: FakeVendorServer
) -> None:
    """A vendor down for longer than the budget: max_attempts tries, then the error, logged."""
    server.down_for(60)
    policy = RetryPolicy(max_attempts=3, base_delay=0.01)
    with (
        structlog.testing.capture_logs() as logs,
        pytest.raises(RetryableError, match="503"),
    ):
        call_with_retries(lambda: _post_slack(http, server), policy, sleep=lambda _: None)
    assert len(server.rejected) == 3
    events = [entry["event"] for entry in logs]
    assert events.count("retry_scheduled") == 2
    assert events.count("retry_give_up") == 1


def test_call_with_retries_never_retries_permanent_errors(
    http: HttpClient, server: FakeVendorServer
) -> None:
    """A 400 is raised at once: exactly one attempt, no sleep."""
    server.force_status("/slack/", 400, "invalid_payload")
    sleeps: list[float] = []
    with pytest.raises(PermanentError, match="invalid_payload"):
        call_with_retries(lambda: _post_slack(http, server), RetryPolicy(), sleep=sleeps.append)
    assert sleeps == []
    assert len(server.rejected) == 1


def test_call_with_retries_sleeps_what_retry_after_asks(
    http: HttpClient, server: FakeVendorServer
) -> None:
    """Retry-After from a 429 decides the sleep (at least that long)."""
    server.fail_next(1, status=429, retry_after=2)
    sleeps: list[float] = []
    call_with_retries(lambda: _post_slack(http, server), RetryPolicy(), sleep=sleeps.append)
    assert len(sleeps) == 1
    assert 2.0 <= sleeps[0] <= 2.0 * 1.2


def test_a_netrc_entry_never_replaces_the_connectors_authorization_header(
    http: HttpClient, server: FakeVendorServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests applies ~/.netrc to any request without ``auth``, as Basic credentials that
    overwrite the Authorization header: the client never reads it, so the bearer token the
    connector set is what the vendor receives."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password not-the-token\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    http.request(
        "slack:test",
        "POST",
        server.url + SLACK,
        json={"text": "hi"},
        headers={"Authorization": "Bearer the-token"},
    )
    (call,) = server.calls
    sent = {k.lower(): v for k, v in call["headers"].items()}
    assert sent["authorization"] == "Bearer the-token"


def test_environment_proxy_settings_still_apply(
    server: FakeVendorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proxies from the environment are honoured (read once per origin): a proxy that does
    not listen makes the call fail as a proxy error instead of reaching the vendor."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = HttpClient(RetryPolicy(connect_timeout=0.5, read_timeout=0.5))
    with pytest.raises(RetryableError, match="ProxyError"):
        _post_slack(client, server)
    assert server.calls == []
