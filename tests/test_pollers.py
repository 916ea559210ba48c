"""The Okta System Log and Graph sign-in pollers against local servers that page and
rate-limit like the vendors. Time is a fake clock and sleeps are recorded, never slept."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from connectors.base.http import HttpClient
from connectors.base.pollers import CheckpointStore, Poller
from connectors.entra.poller import GraphSignInPoller
from connectors.okta.poller import DEFAULT_FILTER, OktaLogPoller
from streams.model.records import LoginEvent
from streams.support.errors import ConfigError
from streams.support.secrets import Secret
from tests.fake_logs import (
    GRAPH_TOKEN,
    OKTA_TOKEN,
    FakeClock,
    FakeGraphSignIns,
    FakeOktaLogs,
    okta_event,
    signin,
)


class Sink:
    """publish/reject as the worker gives them; ``fail_publish`` makes the next N raise."""

    def __init__(self) -> None:
        self.events: list[LoginEvent] = []
        self.rejected: list[tuple[Any, str]] = []
        self.fail_publish = 0

    async def publish(self, events: list[LoginEvent]) -> None:
        if self.fail_publish:
            self.fail_publish -= 1
            raise RuntimeError("broker unavailable")
        self.events.extend(events)

    async def reject(self, payload: Any, reason: str) -> None:
        self.rejected.append((payload, reason))

    @property
    def ids(self) -> list[str | None]:
        return [e.vendor_event_id for e in self.events]


class Sleeper:
    """Records each requested sleep and moves the fake clock instead of waiting."""

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
    with HttpClient() as client:
        yield client


@pytest.fixture
def store(tmp_path: Path) -> CheckpointStore:
    return CheckpointStore(tmp_path / "checkpoints")


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def okta(clock: FakeClock) -> Iterator[FakeOktaLogs]:
    with FakeOktaLogs(clock=clock) as server:
        yield server


@pytest.fixture
def graph(clock: FakeClock) -> Iterator[FakeGraphSignIns]:
    with FakeGraphSignIns(clock=clock) as server:
        yield server


def okta_poller(
    server: FakeOktaLogs,
    http: HttpClient,
    store: CheckpointStore,
    sink: Sink,
    clock: FakeClock,
    **settings: Any,
) -> OktaLogPoller:
    config: dict[str, Any] = {
        "base_url": server.url,
        "token": Secret(OKTA_TOKEN),
        "start": "2024-01-01T00:00:00Z",
        "limit": 2,
        "interval": 10,
        "rate_limit_reserve": 0,
    }
    config.update(settings)
    return OktaLogPoller(
        "okta-main",
        config,
        http,
        store,
        publish=sink.publish,
        reject=sink.reject,
        clock=clock,
        sleep=Sleeper(clock),
    )


def graph_poller(
    server: FakeGraphSignIns,
    http: HttpClient,
    store: CheckpointStore,
    sink: Sink,
    clock: FakeClock,
    **settings: Any,
) -> GraphSignInPoller:
    config: dict[str, Any] = {
        "base_url": server.url,
        "token": Secret(GRAPH_TOKEN),
        "start": "2024-01-01T00:00:00Z",
        "top": 2,
        "interval": 10,
    }
    config.update(settings)
    return GraphSignInPoller(
        "graph-main",
        config,
        http,
        store,
        publish=sink.publish,
        reject=sink.reject,
        clock=clock,
        sleep=Sleeper(clock),
    )


def five_okta_events() -> list[dict[str, Any]]:
    return [okta_event(f"ev-{i}", f"2024-01-01T10:00:0{i}.000Z") for i in range(5)]


def rounds(poller: Poller, n: int) -> list[float]:
    async def go() -> list[float]:
        return [await poller.poll_once() for _ in range(n)]

    return asyncio.run(go())


# --- Okta ---------------------------------------------------------------------------------


def test_okta_pages_through_link_headers(
    okta: FakeOktaLogs, http: HttpClient, store: CheckpointStore, sink: Sink, clock: FakeClock
) -> None:
    """The first request is a polling query (since, limit, ascending, filter, SSWS token);
    later ones follow rel="next" exactly; a short page means caught up (wait interval)."""
    okta.add(*five_okta_events())
    poller = okta_poller(okta, http, store, sink, clock)

    delays = rounds(poller, 3)

    assert sink.ids == [f"ev-{i}" for i in range(5)]
    assert delays == [0.0, 0.0, 10.0]
    first = okta.calls[0]
    assert first["headers"]["authorization"] == f"SSWS {OKTA_TOKEN}"
    assert first["query"] == {
        "since": "2024-01-01T00:00:00.000Z",
        "limit": "2",
        "sortOrder": "ASCENDING",
        "filter": DEFAULT_FILTER,
    }
    assert [c["query"].get("after") for c in okta.calls] == [None, "1000002", "1000004"]
    assert all(c["query"].get("filter") == DEFAULT_FILTER for c in okta.calls)
    assert poller.status["caught_up"] is True
    assert poller.status["published"] == 5


def test_okta_caught_up_then_new_events_are_picked_up(
    okta: FakeOktaLogs, http: HttpClient, store: CheckpointStore, sink: Sink, clock: FakeClock
) -> None:
    """run(): once caught up it sleeps `interval`, polls the same next link again (no new
    checkpoint for an empty page), and publishes events written in the meantime."""
    okta.add(okta_event("ev-0", "2024-01-01T10:00:00.000Z"))
    stop = asyncio.Event()
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)
        clock.advance(delay)
        if len(slept) == 2:
            okta.add(
                okta_event("ev-1", "2024-01-01T10:05:00.000Z"),
                okta_event("ev-2", "2024-01-01T10:05:01.000Z"),
            )
        if len(sink.events) == 3:
            stop.set()

    poller = OktaLogPoller(
        "okta-main",
        {"base_url": okta.url, "token": Secret(OKTA_TOKEN), "start": "2024-01-01T00:00:00Z"},
        http,
        store,
        publish=sink.publish,
        reject=sink.reject,
        clock=clock,
        sleep=sleep,
    )
    asyncio.run(asyncio.wait_for(poller.run(stop), timeout=5))

    assert sink.ids == ["ev-0", "ev-1", "ev-2"]
    assert slept[:2] == [10.0, 10.0]  # default interval once caught up
    afters = [c["query"].get("after") for c in okta.calls]
    assert afters == [None, "1000001", "1000001"]  # the same next link until events came


def test_okta_rate_limit_headers_pause_until_reset(
    clock: FakeClock, http: HttpClient, store: CheckpointStore, sink: Sink
) -> None:
    """When X-Rate-Limit-Remaining falls to the reserve, the poller sleeps until
    X-Rate-Limit-Reset (epoch seconds) instead of running into 429s."""
    with FakeOktaLogs(clock=clock, rate_limit=3, window=60) as server:
        server.add(*five_okta_events())
        poller = okta_poller(server, http, store, sink, clock, rate_limit_reserve=1)
        reset = int(clock() + 60)

        first = rounds(poller, 1)
        clock.advance(5)
        second = rounds(poller, 1)
        assert first == [0.0]  # remaining 2 > reserve 1: no pause
        assert second[0] == pytest.approx(reset - clock())  # remaining 1: wait the 55 s out
        clock.advance(second[0])
        rounds(poller, 1)

    assert sink.ids == [f"ev-{i}" for i in range(5)]
    assert server.statuses() == [200, 200, 200]


def test_okta_429_is_retried_after_reset(
    clock: FakeClock, http: HttpClient, store: CheckpointStore, sink: Sink
) -> None:
    """A 429 carries X-Rate-Limit-Reset (no Retry-After): the poller waits about that long,
    counts a failure, does not advance, and then fetches the same page."""
    with FakeOktaLogs(clock=clock, rate_limit=1, window=30) as server:
        server.add(*five_okta_events())
        poller = okta_poller(server, http, store, sink, clock)
        reset = int(clock() + 30)

        rounds(poller, 1)
        (delay,) = rounds(poller, 1)
        assert reset - clock() <= delay <= (reset - clock()) * 1.2 + 1e-6
        assert poller.status["consecutive_failures"] == 1
        assert "429" in poller.status["last_error"]
        clock.advance(delay)
        rounds(poller, 1)

    assert server.statuses() == [200, 429, 200]
    assert server.calls[1]["query"] == server.calls[2]["query"]
    assert sink.ids == [f"ev-{i}" for i in range(4)]
    assert poller.status["consecutive_failures"] == 0


def test_okta_401_marks_failed_and_backs_off(
    okta: FakeOktaLogs, http: HttpClient, store: CheckpointStore, sink: Sink, clock: FakeClock
) -> None:
    """A rejected token never crashes run(): the poller is marked failed with growing
    pauses, and recovers by itself once the token is valid again."""
    okta.add(*five_okta_events())
    okta.token = "rotated-token"
    stop = asyncio.Event()
    slept: list[float] = []

    statuses: list[dict[str, Any]] = []

    async def sleep(delay: float) -> None:
        # the status between rounds, as /metrics would show it during the pause (sampled
        # here, not by a concurrent task: this sleep does not yield, so one might miss it)
        statuses.append(dict(poller.status))
        slept.append(delay)
        clock.advance(delay)
        if len(slept) == 3:
            okta.token = OKTA_TOKEN
        if sink.events:
            stop.set()

    poller = OktaLogPoller(
        "okta-main",
        {
            "base_url": okta.url,
            "token": Secret(OKTA_TOKEN),
            "start": "2024-01-01T00:00:00Z",
            "interval": 10,
        },
        http,
        store,
        publish=sink.publish,
        reject=sink.reject,
        clock=clock,
        sleep=sleep,
    )
    asyncio.run(asyncio.wait_for(poller.run(stop), timeout=5))

    assert okta.statuses()[:3] == [401, 401, 401]
    assert 9 <= slept[0] <= 11
    assert slept[1] > slept[0]
    assert slept[2] > slept[1]
    worst = max(statuses, key=lambda s: s["consecutive_failures"])
    assert worst["failed"] is True
    assert worst["consecutive_failures"] == 3
    assert "401" in worst["last_error"]
    assert OKTA_TOKEN not in worst["last_error"]
    assert poller.status["failed"] is False
    assert poller.status["consecutive_failures"] == 0
    assert poller.status["last_success"] is not None
    assert sink.ids == ["ev-0", "ev-1", "ev-2", "ev-3", "ev-4"]


def test_okta_rejected_records_go_to_reject_and_the_rest_through(
    okta: FakeOktaLogs, http: HttpClient, store: CheckpointStore, sink: Sink, clock: FakeClock
) -> None:
    """A record the normaliser refuses goes to reject() with its reason; a type outside the
    security allow-list (user.lifecycle.create) is dropped, not rejected; the page's other
    records are published and the cursor moves on."""
    bad_actor = okta_event("ev-2", "2024-01-01T10:00:02.000Z", user="redacted")
    okta.add(
        okta_event("ev-0", "2024-01-01T10:00:00.000Z"),
        okta_event("ev-1", "2024-01-01T10:00:01.000Z", event_type="user.lifecycle.create"),
        bad_actor,
        okta_event("ev-3", "2024-01-01T10:00:03.000Z", result="FAILURE"),
    )
    poller = okta_poller(okta, http, store, sink, clock, filter="", limit=10)

    rounds(poller, 1)

    assert sink.ids == ["ev-0", "ev-3"]
    assert sink.events[1].outcome == "failure"
    reasons = {payload["uuid"]: reason for payload, reason in sink.rejected}
    assert "ev-1" not in reasons
    assert "alternateId" in reasons["ev-2"]
    assert poller.status["rejected"] == 1
    assert store.load("okta-main") == poller.cursor
    assert "filter" not in okta.calls[0]["query"]


def test_checkpoint_only_after_publish_succeeded(
    okta: FakeOktaLogs, http: HttpClient, store: CheckpointStore, sink: Sink, clock: FakeClock
) -> None:
    """publish raising: the cursor and the checkpoint stay, and the same page is fetched
    again next round (at-least-once, nothing skipped)."""
    okta.add(*five_okta_events())
    poller = okta_poller(okta, http, store, sink, clock)
    sink.fail_publish = 1

    (delay,) = rounds(poller, 1)
    assert delay > 0
    assert poller.cursor is None
    assert store.load("okta-main") is None
    assert poller.status["failed"] is True
    assert "publish" in poller.status["last_error"]

    rounds(poller, 3)
    assert okta.calls[0]["query"] == okta.calls[1]["query"]
    assert sink.ids == [f"ev-{i}" for i in range(5)]


def test_restart_continues_from_checkpoint(
    okta: FakeOktaLogs, http: HttpClient, store: CheckpointStore, clock: FakeClock
) -> None:
    """A new poller with the same CheckpointStore continues at the saved next link:
    together the two publish every event exactly once."""
    okta.add(*five_okta_events())
    before, after = Sink(), Sink()
    rounds(okta_poller(okta, http, store, before, clock), 2)
    saved = json.loads((store.directory / "okta-main.checkpoint.json").read_text())
    assert saved["cursor"]["next"].startswith(okta.url + "/api/v1/logs?")
    assert list(store.directory.iterdir()) == [store.directory / "okta-main.checkpoint.json"]

    okta.add(okta_event("ev-5", "2024-01-01T11:00:00.000Z"))
    restarted = okta_poller(okta, http, store, after, clock)
    rounds(restarted, 2)

    assert before.ids == ["ev-0", "ev-1", "ev-2", "ev-3"]
    assert after.ids == ["ev-4", "ev-5"]
    assert "since" not in okta.calls[2]["query"]  # resumed from the link, not from start


def test_okta_next_link_to_another_host_is_refused(
    clock: FakeClock, http: HttpClient, store: CheckpointStore, sink: Sink
) -> None:
    """A next link (from the response or a checkpoint) pointing elsewhere is never
    followed: the token would go to a stranger. The poller marks itself failed."""
    with FakeOktaLogs(clock=clock, next_host="https://evil.example") as server:
        server.add(*five_okta_events())
        poller = okta_poller(server, http, store, sink, clock)
        rounds(poller, 2)
        assert len(server.calls) == 2  # the same first request twice, no other host
        assert server.calls[0]["query"] == server.calls[1]["query"]

    assert sink.events == []
    assert poller.cursor is None
    assert "refusing" in poller.status["last_error"]
    assert poller.status["consecutive_failures"] == 2

    with FakeOktaLogs(clock=clock) as server:
        store.save("okta-main", {"next": "https://evil.example/api/v1/logs?after=1000002"})
        poller = okta_poller(server, http, store, sink, clock)
        rounds(poller, 1)
        assert server.calls == []
        assert poller.status["failed"] is True


# --- Graph --------------------------------------------------------------------------------


def test_graph_pages_with_next_link_and_dedupes_the_boundary_second(
    graph: FakeGraphSignIns, http: HttpClient, store: CheckpointStore, sink: Sink, clock: FakeClock
) -> None:
    """Newest-first pages are followed through @odata.nextLink; the next window filters
    `createdDateTime ge <newest second>` and drops the ids already published in it, while
    a record written late into that same second still comes through."""
    graph.add(
        signin("s1", "2024-01-01T10:00:00.1000000Z"),
        signin("s2", "2024-01-01T10:00:05.2000000Z"),
        signin("s3", "2024-01-01T10:00:05.7000000Z"),
    )
    poller = graph_poller(graph, http, store, sink, clock)

    assert rounds(poller, 2) == [0.0, 10.0]
    assert sorted(sink.ids, key=str) == ["s1", "s2", "s3"]
    assert graph.calls[0]["query"] == {
        "$filter": "createdDateTime ge 2024-01-01T00:00:00Z",
        "$top": "2",
    }
    assert "$skiptoken" in graph.calls[1]["query"]
    assert graph.calls[0]["headers"]["authorization"] == f"Bearer {GRAPH_TOKEN}"
    assert store.load("graph-main") == {"since": "2024-01-01T10:00:05Z", "seen": ["s2", "s3"]}

    rounds(poller, 1)  # the boundary second again: nothing new
    assert len(sink.events) == 3
    assert graph.calls[2]["query"]["$filter"] == "createdDateTime ge 2024-01-01T10:00:05Z"

    graph.add(
        signin("s4", "2024-01-01T10:00:05.9000000Z"),
        signin("s5", "2024-01-01T10:00:07.0000000Z", error_code=50126),
    )
    rounds(poller, 2)
    assert sorted(sink.ids[3:], key=str) == ["s4", "s5"]
    assert len(sink.ids) == len(set(sink.ids)) == 5
    assert {e.outcome for e in sink.events if e.vendor_event_id == "s5"} == {"failure"}
    assert all("$orderby" not in c["query"] for c in graph.calls)


@pytest.mark.parametrize(
    "case",
    [
        (429, {}, 0.39, 0.61),  # no Retry-After: the policy's first backoff (0.5 s +-20 %)
        (429, {"Retry-After": "7"}, 7.0, 8.4),
        (503, {"Retry-After": "2"}, 2.0, 2.4),
        (503, {}, 0.39, 0.61),
    ],
)
def test_graph_retryable_errors_wait_and_retry(
    graph: FakeGraphSignIns,
    http: HttpClient,
    store: CheckpointStore,
    clock: FakeClock,
    case: tuple[int, dict[str, str], float, float],
) -> None:
    """429 (with or without Retry-After) and 503 wait and retry the same request."""
    status, headers, low, high = case
    sink = Sink()
    graph.add(signin("s1", "2024-01-01T10:00:00Z"))
    graph.fail_next(1, status, headers)
    poller = graph_poller(graph, http, store, sink, clock)

    (delay, _) = rounds(poller, 2)

    assert low <= delay <= high
    assert graph.statuses() == [status, 200]
    assert graph.calls[0]["query"] == graph.calls[1]["query"]
    assert sink.ids == ["s1"]


def test_graph_expired_skiptoken_restarts_the_window(
    graph: FakeGraphSignIns, http: HttpClient, store: CheckpointStore, sink: Sink, clock: FakeClock
) -> None:
    """A refused next link (400) reads the window again from `since`: pages come again
    (at-least-once), nothing is lost."""
    graph.add(*(signin(f"s{i}", f"2024-01-01T10:00:0{i}Z") for i in range(3)))
    poller = graph_poller(graph, http, store, sink, clock)
    rounds(poller, 1)
    graph.expire_skiptokens()

    rounds(poller, 3)

    assert graph.statuses() == [200, 400, 200, 200]
    assert set(sink.ids) == {"s0", "s1", "s2"}
    assert store.load("graph-main") == {"since": "2024-01-01T10:00:02Z", "seen": ["s2"]}


def test_graph_next_link_to_another_host_is_refused(
    clock: FakeClock, http: HttpClient, store: CheckpointStore, sink: Sink
) -> None:
    """An @odata.nextLink elsewhere would carry the bearer token there: refused."""
    with FakeGraphSignIns(clock=clock, next_host="https://graph.evil.example") as server:
        server.add(*(signin(f"s{i}", f"2024-01-01T10:00:0{i}Z") for i in range(3)))
        poller = graph_poller(server, http, store, sink, clock)
        rounds(poller, 1)

    assert sink.events == []
    assert poller.cursor is None
    assert "refusing" in poller.status["last_error"]


def test_graph_401_marks_failed(
    graph: FakeGraphSignIns, http: HttpClient, store: CheckpointStore, sink: Sink, clock: FakeClock
) -> None:
    """An expired bearer token is a failure with a pause of at least `interval`."""
    graph.token = "another"
    poller = graph_poller(graph, http, store, sink, clock)

    (delay,) = rounds(poller, 1)

    assert delay >= 9
    assert poller.status["failed"] is True
    assert "401" in poller.status["last_error"]


# --- checkpoint store and settings --------------------------------------------------------


def test_checkpoint_store_roundtrip_and_refuses_corrupt_files(store: CheckpointStore) -> None:
    """Saved cursors load back; a corrupt file refuses to load instead of restarting."""
    assert store.load("p1") is None
    store.save("p1", {"next": "https://x.okta.com/api/v1/logs?after=1"})
    store.save("p1", {"next": "https://x.okta.com/api/v1/logs?after=2"})
    assert store.load("p1") == {"next": "https://x.okta.com/api/v1/logs?after=2"}
    assert [p.name for p in store.directory.iterdir()] == ["p1.checkpoint.json"]

    (store.directory / "p1.checkpoint.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"checkpoint .* is unreadable"):
        store.load("p1")
    with pytest.raises(ConfigError, match="name must be"):
        store.save("../escape", None)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"token": None}, "token: required"),
        ({"limit": 5000}, "limit: must be an integer"),
        ({"base_url": "http://okta.example.com"}, "must use https"),
        ({"start": "yesterday"}, "start: must be"),
        ({"interval": 0}, "interval: must be a number"),
    ],
)
def test_okta_settings_are_validated(
    http: HttpClient, store: CheckpointStore, sink: Sink, settings: dict[str, Any], message: str
) -> None:
    """Bad settings fail at construction with the config key named."""
    config: dict[str, Any] = {"base_url": "https://example.okta.com", "token": "env:OKTA_TOKEN"}
    config.update(settings)
    with pytest.raises(ConfigError, match=message):
        OktaLogPoller("okta", config, http, store, publish=sink.publish, reject=sink.reject)


def test_graph_defaults(http: HttpClient, store: CheckpointStore, sink: Sink) -> None:
    """Graph's base URL defaults to the public cloud; a file: token is accepted."""
    poller = GraphSignInPoller(
        "graph",
        {"token": "file:/run/secrets/graph"},
        http,
        store,
        publish=sink.publish,
        reject=sink.reject,
    )
    assert poller.signins_url == "https://graph.microsoft.com/v1.0/auditLogs/signIns"
    assert poller.top == 500
    assert poller.interval == 10.0


def test_run_waits_on_stop_and_uses_a_given_executor(
    okta: FakeOktaLogs, http: HttpClient, store: CheckpointStore, sink: Sink
) -> None:
    """Without an injected sleep, run() waits `interval` on the stop event: setting stop
    ends it at once, not after the interval. fetch runs on the executor when one is given."""
    okta.add(okta_event("ev-0", "2024-01-01T10:00:00.000Z"))
    stop = asyncio.Event()
    threads: list[str] = []

    class Recording(OktaLogPoller):
        def fetch(self, cursor: Any) -> Any:
            threads.append(threading.current_thread().name)
            return super().fetch(cursor)

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, stop.set)
        started = loop.time()
        with ThreadPoolExecutor(1, thread_name_prefix="poller-io") as pool:
            poller = Recording(
                "okta-main",
                {"base_url": okta.url, "token": Secret(OKTA_TOKEN), "interval": 60},
                http,
                store,
                publish=sink.publish,
                reject=sink.reject,
                executor=pool,
            )
            await poller.run(stop)
        return loop.time() - started

    elapsed = asyncio.run(asyncio.wait_for(scenario(), timeout=5))

    assert elapsed < 2
    assert threads == ["poller-io_0"]
    assert sink.events == []  # start defaults to "now": the 2024 event is history
