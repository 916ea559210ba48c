"""The Google Workspace Reports and Entra directory-audit pollers against local servers that
page, window and rate-limit like the vendors (tests/fake_logs.py). Time is a fake clock and
sleeps are recorded, never slept."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.base.http import HttpClient, RetryPolicy
from connectors.base.pollers import CheckpointStore, Poller
from connectors.entra.poller import GraphDirectoryAuditPoller
from connectors.google.poller import GoogleReportsPoller
from streams.model.identity import IdentityEvent
from streams.model.records import LoginEvent
from streams.support.errors import ConfigError
from streams.support.secrets import Secret
from tests.fake_logs import (
    GOOGLE_TOKEN,
    GRAPH_TOKEN,
    FakeClock,
    FakeGoogleReports,
    FakeGraphDirectoryAudits,
    directory_audit,
    reports_activity,
)

START = "2023-11-14T22:00:00Z"  # FakeClock starts at 2023-11-14T22:13:20Z


class Sink:
    def __init__(self) -> None:
        self.events: list[LoginEvent | IdentityEvent] = []
        self.rejected: list[tuple[Any, str]] = []

    async def publish(self, events: list[LoginEvent | IdentityEvent]) -> None:
        self.events.extend(events)

    async def reject(self, payload: Any, reason: str) -> None:
        self.rejected.append((payload, reason))

    def identity(self) -> list[IdentityEvent]:
        return [e for e in self.events if isinstance(e, IdentityEvent)]


class Sleeper:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.clock.advance(delay)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def http() -> Iterator[HttpClient]:
    # one attempt per call: the poller's own loop does the waiting
    with HttpClient(RetryPolicy(max_attempts=1, base_delay=0.01, max_delay=0.02)) as client:
        yield client


@pytest.fixture
def store(tmp_path: Path) -> CheckpointStore:
    return CheckpointStore(tmp_path / "checkpoints")


def rounds(poller: Poller, n: int) -> list[float]:
    async def go() -> list[float]:
        return [await poller.poll_once() for _ in range(n)]

    return asyncio.run(go())


def reports_poller(
    server: FakeGoogleReports, http: HttpClient, store: CheckpointStore, sink: Sink,
    clock: FakeClock, **settings: Any,
) -> GoogleReportsPoller:  # fmt: skip
    config: dict[str, Any] = {
        "base_url": server.url,
        "token": Secret(GOOGLE_TOKEN),
        "start": START,
        "max_results": 2,
        "lookback": 3600,
        "interval": 60,
    }
    config.update(settings)
    return GoogleReportsPoller(
        "google-reports", config, http, store, publish=sink.publish, reject=sink.reject,
        clock=clock, sleep=Sleeper(clock),
    )  # fmt: skip


def leak(qualifier: int, when: str) -> dict[str, Any]:
    return reports_activity(
        "login", qualifier, when, "account_disabled_password_leak",
        affected_email_address="sam@brand.example",
    )  # fmt: skip


def test_reports_pages_each_application_in_its_window(
    clock: FakeClock, http: HttpClient, store: CheckpointStore
) -> None:
    """Applications take turns; a window pages with nextPageToken (valid only for its own
    query); every activity is published once, as LoginEvents or IdentityEvents; logout is
    dropped by the allow-list; the round ends caught up."""
    sink = Sink()
    with FakeGoogleReports(clock=clock) as server:
        server.add(
            *(leak(i, f"2023-11-14T22:0{i}:00.000Z") for i in range(1, 4)),
            reports_activity("login", 9, "2023-11-14T22:05:00.000Z", "logout"),
            reports_activity("admin", 1, "2023-11-14T22:06:00.000Z", "ASSIGN_ROLE",
                             USER_EMAIL="bob@brand.example", ROLE_NAME="Super Admin"),
            reports_activity("token", 1, "2023-11-14T22:07:00.000Z", "authorize",
                             app_name="Quiz"),
        )  # fmt: skip
        poller = reports_poller(server, http, store, sink, clock)
        delays = rounds(poller, 4)
        calls = list(server.calls)
    assert [c["path"].rsplit("/", 1)[1] for c in calls] == ["login", "login", "admin", "token"]
    assert "pageToken" in calls[1]["query"]
    assert calls[1]["query"]["startTime"] == calls[0]["query"]["startTime"] == START[:-1] + ".000Z"
    assert all(c["status"] == 200 for c in calls)
    types = sorted(e.type for e in sink.identity())
    assert types == ["account_disabled_by_vendor"] * 3 + [
        "admin_privilege_granted",
        "oauth_consent",
    ]
    assert delays == [0.0, 0.0, 0.0, 60]  # caught up once every application was read
    assert poller.status["rejected"] == 0


def test_reports_late_activity_is_read_in_the_overlap_once(
    clock: FakeClock, http: HttpClient, store: CheckpointStore
) -> None:
    """An activity Google writes late (its time inside the last window, visible only after it
    closed) is published by the next window's lookback overlap; one already published in the
    overlap is not published again."""
    sink = Sink()
    with FakeGoogleReports(clock=clock) as server:
        server.add(leak(1, "2023-11-14T22:10:00.000Z"))
        poller = reports_poller(server, http, store, sink, clock, applications=["login"])
        rounds(poller, 1)
        assert len(sink.identity()) == 1
        server.add(leak(2, "2023-11-14T22:12:00.000Z"), visible_at=clock() + 300)
        clock.advance(600)
        rounds(poller, 1)
        second = server.calls[-1]["query"]
    assert second["startTime"] < "2023-11-14T22:10:00"  # the overlap reaches back an hour
    assert sorted(e.vendor_event_id or "" for e in sink.identity()) == [
        "2023-11-14T22:10:00.000Z/1", "2023-11-14T22:12:00.000Z/2"]  # fmt: skip


def test_reports_rate_limit_403_is_waited_out_and_nothing_is_lost(
    clock: FakeClock, http: HttpClient, store: CheckpointStore
) -> None:
    """A 403 userRateLimitExceeded (no Retry-After) fails the round as retryable with a
    backoff; the same window is read again afterwards and published once."""
    sink = Sink()
    with FakeGoogleReports(clock=clock) as server:
        server.add(leak(1, "2023-11-14T22:10:00.000Z"))
        server.fail_next(1, 403)
        poller = reports_poller(server, http, store, sink, clock, applications=["login"])
        delays = rounds(poller, 2)
        statuses = server.statuses()
    assert statuses == [403, 200]
    assert delays[0] > 0
    assert poller.status["failed"] is False
    assert "rate limited" in str(poller.status["last_error"])
    assert len(sink.identity()) == 1


def test_reports_expired_page_token_restarts_the_window_without_duplicates(
    clock: FakeClock, http: HttpClient, store: CheckpointStore
) -> None:
    """Google refuses a page token (400): the window is read again from its first page and
    what its earlier pages published is not published twice."""
    sink = Sink()
    with FakeGoogleReports(clock=clock) as server:
        server.add(*(leak(i, f"2023-11-14T22:0{i}:00.000Z") for i in range(1, 6)))
        poller = reports_poller(server, http, store, sink, clock, applications=["login"])
        rounds(poller, 1)
        server.expire_page_tokens()
        rounds(poller, 5)
        statuses = server.statuses()
    assert 400 in statuses
    ids = [e.vendor_event_id for e in sink.identity()]
    assert len(ids) == 5
    assert len(set(ids)) == 5


def test_reports_settings_are_checked(
    clock: FakeClock, http: HttpClient, store: CheckpointStore
) -> None:
    """An application outside login/admin/token is a configuration error naming the key."""
    with (
        FakeGoogleReports(clock=clock) as server,
        pytest.raises(ConfigError, match=r"pollers\.google-reports\.applications"),
    ):
        reports_poller(server, http, store, Sink(), clock, applications=["drive"])


def audit_poller(
    server: FakeGraphDirectoryAudits, http: HttpClient, store: CheckpointStore, sink: Sink,
    clock: FakeClock,
) -> GraphDirectoryAuditPoller:  # fmt: skip
    config = {"base_url": server.url, "token": Secret(GRAPH_TOKEN), "start": START, "top": 2,
              "interval": 30}  # fmt: skip
    return GraphDirectoryAuditPoller(
        "entra-audits", config, http, store, publish=sink.publish, reject=sink.reject,
        clock=clock, sleep=Sleeper(clock),
    )  # fmt: skip


def test_directory_audits_page_filter_on_activity_time_and_survive_429(
    clock: FakeClock, http: HttpClient, store: CheckpointStore
) -> None:
    """$filter=activityDateTime ge <start>, @odata.nextLink paging, a 429 without Retry-After
    waited out; role assignments and security-info deletions become IdentityEvents, "Update
    user" is dropped (not rejected), and the next window dedups its boundary second."""
    sink = Sink()
    with FakeGraphDirectoryAudits(clock=clock) as server:
        server.add(
            directory_audit("a1", "2023-11-14T22:01:00Z"),
            directory_audit("a2", "2023-11-14T22:02:00Z", "User deleted security info"),
            directory_audit("a3", "2023-11-14T22:03:00Z", "Update user"),
        )
        server.fail_next(1, 429)
        poller = audit_poller(server, http, store, sink, clock)
        delays = rounds(poller, 3)
        rounds(poller, 1)  # the next window reads 22:03:00 again: a3 is not published twice
        calls = list(server.calls)
    assert calls[0]["status"] == 429
    assert delays[0] > 0
    assert calls[1]["query"]["$filter"] == "activityDateTime ge 2023-11-14T22:00:00Z"
    assert "$skiptoken" in calls[2]["query"]
    assert calls[-1]["query"]["$filter"] == "activityDateTime ge 2023-11-14T22:03:00Z"
    # newest first, as Graph lists them
    assert [e.type for e in sink.identity()] == ["mfa_factor_removed", "admin_privilege_granted"]
    assert sink.rejected == []
