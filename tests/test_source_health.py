"""Source health: every poller counts its events and rejections, stamps its last event and
its failed rounds, and answers /healthz; the ingest edges share the same source metrics; the
cadence is typed configuration. Pollers run against the local Okta System Log fake
(tests/fake_logs.py), on a fake clock; the health server is a real aiohttp server."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from connectors.base.health import SourceHealth
from connectors.base.http import HttpClient
from connectors.base.pollers import CheckpointStore
from connectors.okta.poller import OktaLogPoller
from streams.config import load_config
from streams.runtime.pollerweb import build_poller_app
from streams.runtime.web import WebServer
from streams.support import metrics
from streams.support.errors import ConfigError
from streams.support.secrets import Secret
from tests.edge_harness import edge_server
from tests.fake_logs import OKTA_TOKEN, FakeClock, FakeOktaLogs, okta_event
from tests.test_edges import hr_body


class Sink:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.rejected: list[tuple[Any, str]] = []

    async def publish(self, events: list[Any]) -> None:
        self.events.extend(events)

    async def reject(self, payload: Any, reason: str) -> None:
        self.rejected.append((payload, reason))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def okta(clock: FakeClock) -> Iterator[FakeOktaLogs]:
    with FakeOktaLogs(clock=clock) as server:
        yield server


@pytest.fixture
def http() -> Iterator[HttpClient]:
    with HttpClient() as client:
        yield client


def _poller(
    name: str, okta: FakeOktaLogs, http: HttpClient, tmp_path: Path, clock: FakeClock
) -> OktaLogPoller:
    sink = Sink()
    return OktaLogPoller(
        name,
        {
            "base_url": okta.url,
            "token": Secret(OKTA_TOKEN),
            "start": "2024-01-01T00:00:00Z",
            "interval": 10,
            "filter": "",
            "rate_limit_reserve": 0,
        },
        http,
        CheckpointStore(tmp_path / "checkpoints"),
        publish=sink.publish,
        reject=sink.reject,
        clock=clock,
    )


def _sample(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


def _round(poller: OktaLogPoller) -> float:
    return asyncio.run(poller.poll_once())


def test_a_poller_counts_events_rejections_by_reason_and_its_last_event(
    okta: FakeOktaLogs, http: HttpClient, tmp_path: Path, clock: FakeClock
) -> None:
    """After a round, the source poller:<name> has its published events counted, refused
    records counted under bounded reasons (never the normaliser's text; an audit type outside
    the security allow-list is dropped and counted apart, not refused), and the time of its
    last event; before any event there is no last-event series at all."""
    poller = _poller("health-count", okta, http, tmp_path, clock)
    source = "poller:health-count"
    assert _sample("accessguard_events_accepted_total", source=source) == 0
    assert _sample("accessguard_source_last_event_timestamp_seconds", source=source) is None

    _round(poller)  # nothing in the log yet: still no event, still no last-event series
    assert _sample("accessguard_source_last_event_timestamp_seconds", source=source) is None

    dropped = _sample(
        "accessguard_identity_events_dropped_total", source="okta", reason="not_security_type"
    )
    okta.add(
        okta_event("ev-0", "2024-01-01T10:00:00.000Z"),
        okta_event("ev-1", "2024-01-01T10:00:01.000Z", event_type="user.lifecycle.create"),
        okta_event("ev-2", "2024-01-01T10:00:02.000Z", user="redacted"),
        okta_event("ev-3", "2024-01-01T10:00:03.000Z", result="FAILURE"),
    )
    clock.advance(30)
    _round(poller)

    assert _sample("accessguard_events_accepted_total", source=source) == 2
    # the unreadable record; the audit event outside the allow-list is dropped, not refused
    # (it must not feed the schema-drift share)
    assert _sample("accessguard_events_rejected_total", source=source, reason="bad_record") == 1
    after = _sample(
        "accessguard_identity_events_dropped_total", source="okta", reason="not_security_type"
    )
    assert (after or 0) - (dropped or 0) == 1
    assert (
        _sample("accessguard_events_rejected_total", source=source, reason="normaliser_error") == 0
    )
    assert _sample("accessguard_source_last_event_timestamp_seconds", source=source) == clock()
    assert _sample("accessguard_poller_consecutive_failures", source=source) == 0


def test_a_crashing_normaliser_is_counted_as_normaliser_error(
    okta: FakeOktaLogs,
    http: HttpClient,
    tmp_path: Path,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A record whose normaliser raises (not refuses) is dead-lettered and counted under
    normaliser_error: the schema-drift alert sees a payload we cannot read at all."""
    poller = _poller("health-crash", okta, http, tmp_path, clock)

    def boom(_payload: Any) -> list[Any]:
        raise KeyError("actor")

    monkeypatch.setattr(poller, "_normalise", boom)
    okta.add(okta_event("ev-0", "2024-01-01T10:00:00.000Z"))
    _round(poller)
    assert (
        _sample(
            "accessguard_events_rejected_total",
            source="poller:health-crash",
            reason="normaliser_error",
        )
        == 1
    )
    assert _sample("accessguard_events_accepted_total", source="poller:health-crash") == 0


def test_health_follows_the_rounds(
    okta: FakeOktaLogs, http: HttpClient, tmp_path: Path, clock: FakeClock
) -> None:
    """Not healthy before a first good round; healthy after one and through one retryable
    failure; unhealthy at once on an authentication error, after max_failures failed rounds,
    and when the last good round is older than ready_within; healthy again after a good one.
    The failed-rounds gauge follows."""
    poller = _poller("health-rounds", okta, http, tmp_path, clock)
    source = "poller:health-rounds"

    def check() -> str:
        return poller.health_check(ready_within=60, max_failures=3).reason

    assert check() == "starting"
    _round(poller)
    assert check() == "ok"
    assert poller.health_check(ready_within=60, max_failures=3).healthy

    okta.fail_next(1, status=503)
    _round(poller)
    assert check() == "ok"
    assert _sample("accessguard_poller_consecutive_failures", source=source) == 1

    okta.fail_next(2, status=503)
    _round(poller)
    _round(poller)
    assert check() == "failing"
    assert _sample("accessguard_poller_consecutive_failures", source=source) == 3

    _round(poller)
    assert check() == "ok"
    assert _sample("accessguard_poller_consecutive_failures", source=source) == 0

    okta.token = "rotated-token"
    _round(poller)
    assert check() == "auth"
    okta.token = OKTA_TOKEN
    _round(poller)
    assert check() == "ok"

    clock.advance(61)
    assert check() == "stale"


def test_the_poller_server_answers_healthz_livez_and_metrics(
    okta: FakeOktaLogs, http: HttpClient, tmp_path: Path, clock: FakeClock
) -> None:
    """/healthz (and /readyz) is 503 with its reason until a good round, then 200; /livez
    follows the poll loop; /metrics carries the source's series without the token."""
    poller = _poller("health-web", okta, http, tmp_path, clock)
    alive = [True]

    async def go() -> dict[str, Any]:
        server = WebServer(
            build_poller_app(
                poller, ready_within=60, max_failures=3, running=lambda: alive[0], clock=clock
            ),
            "127.0.0.1",
            0,
        )
        await server.start()
        out: dict[str, Any] = {}
        try:
            async with aiohttp.ClientSession() as session:

                async def get(path: str) -> tuple[int, Any]:
                    async with session.get(server.url + path) as resp:
                        body = await (resp.json() if path != "/metrics" else resp.text())
                        return resp.status, body

                out["before"] = await get("/healthz")
                okta.add(okta_event("ev-0", "2024-01-01T10:00:00.000Z"))
                await poller.poll_once()
                out["after"] = await get("/healthz")
                out["ready"] = await get("/readyz")
                out["live"] = await get("/livez")
                alive[0] = False
                out["dead"] = await get("/livez")
                out["metrics"] = await get("/metrics")
        finally:
            await server.stop()
        return out

    out = asyncio.run(go())
    assert out["before"][0] == 503
    assert out["before"][1]["reason"] == "starting"
    assert out["after"][0] == 200
    assert (out["after"][1]["healthy"], out["after"][1]["reason"]) == (True, "ok")
    assert out["ready"][0] == 200
    assert out["live"] == (200, {"poller": "health-web", "alive": True})
    assert out["dead"][0] == 503
    text = out["metrics"][1]
    assert OKTA_TOKEN not in text
    samples = {
        (s.name, s.labels.get("source")): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert samples[("accessguard_events_accepted_total", "poller:health-web")] == 1
    assert ("accessguard_source_last_event_timestamp_seconds", "poller:health-web") in samples


def test_source_health_binds_only_known_reasons_and_cadence_can_be_withdrawn() -> None:
    """A reason outside the closed set is a bug, refused; a cadence of 0 removes the series
    (the source is not watched)."""
    health = SourceHealth("poller:health-unit", ())
    with pytest.raises(ValueError, match="unknown rejection reason"):
        health.rejected("Missing field actor.alternateId in {...}")
    health.expect(120)
    assert _sample("accessguard_source_expected_cadence_seconds", source=health.source) == 120
    health.expect(0)
    assert _sample("accessguard_source_expected_cadence_seconds", source=health.source) is None
    health.expect(0)  # withdrawing twice is harmless


def _config(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_cadence_is_typed_configuration(tmp_path: Path) -> None:
    """Login pollers default to sources.poller_cadence, ingest endpoints and leak feeds to
    sources.ingest_cadence (unwatched), each overridable per source; environment overrides
    apply to the defaults."""
    path = _config(
        tmp_path,
        {
            "pollers": {"okta-logs": {"type": "okta", "base_url": "https://x.okta.com"}},
            "sources": {"cadence": {"poller:okta-logs": 900, "hr_webhook": 604800}},
        },
    )
    sources = load_config(path, env={"ACCESSGUARD_SOURCES_POLLER_CADENCE": "7200"}).settings.sources
    assert sources.cadence_of("poller:okta-logs", login_poller=True) == 900
    assert sources.cadence_of("poller:other", login_poller=True) == 7200
    assert sources.cadence_of("hr_webhook") == 604800
    assert sources.cadence_of("auth_ingest:okta") == 0


@pytest.mark.parametrize(
    ("cadence", "message"),
    [
        ({"okta-logs": 60}, r"sources.cadence.*not a source"),
        ({"poller:nope": 60}, r"sources.cadence.*no poller named 'nope'"),
        ({"hr_webhook": -1}, r"sources.cadence.*must be >= 0"),
    ],
    ids=["shape", "unknown-poller", "negative"],
)
def test_a_wrong_cadence_stops_start_up_naming_the_key(
    tmp_path: Path, cadence: dict[str, Any], message: str
) -> None:
    """A misspelt source would silently never be watched: refused at load, with the key."""
    path = _config(tmp_path, {"sources": {"cadence": cadence}})
    with pytest.raises(ConfigError, match=message):
        load_config(path, env={})


def test_the_ingest_edges_are_sources_too(tmp_path: Path) -> None:
    """The HR webhook, the login ingest (per vendor) and the leak ingest count accepted
    events, their refused records under bad_record, and stamp their last event."""

    def value(name: str, **labels: str) -> float:
        return _sample(name, **labels) or 0.0

    names = ("hr_webhook", "auth_ingest:generic", "leak_ingest")
    before = {s: value("accessguard_events_accepted_total", source=s) for s in names}
    refused = {
        s: value("accessguard_events_rejected_total", source=s, reason="bad_record") for s in names
    }
    login = {
        "time": "2026-03-02T11:00:00Z",
        "principal": "x@elsewhere.example",
        "ip": "203.0.113.7",
    }
    with edge_server(tmp_path) as edge:
        started = time.time()
        assert edge.post_hr(hr_body("src-1")).status_code == 202
        resp = edge.post_auth(orjson.dumps([login | {"outcome": "success"}, {"principal": 1}]))
        assert resp.json()["rejected"] == 1, resp.text
        too_long = b"x" * 70_000  # longer than leaks.max_record_bytes: refused, read on
        leaks = edge.post_leaks(b"email,password\nalice@lumen-outdoor.example,pw\n" + too_long)
        assert leaks.status_code == 200, leaks.text
        leak_refused = leaks.json()["rejected"]
    assert leak_refused >= 1
    accepted = {s: value("accessguard_events_accepted_total", source=s) - before[s] for s in names}
    assert accepted == {"hr_webhook": 1, "auth_ingest:generic": 1, "leak_ingest": 1}
    assert {
        s: value("accessguard_events_rejected_total", source=s, reason="bad_record") - refused[s]
        for s in names
    } == {"hr_webhook": 0, "auth_ingest:generic": 1, "leak_ingest": leak_refused}
    for source in names:
        last = _sample("accessguard_source_last_event_timestamp_seconds", source=source)
        assert last is not None, source
        assert last >= started, source


def test_connect_poller_names_its_health_port_when_it_is_taken(tmp_path: Path) -> None:
    """A taken sources.health_port stops `connect poller` before anything starts, naming the
    key and how to choose another."""
    from click.testing import CliRunner

    from streams.cli import main

    path = _config(
        tmp_path,
        {
            "data_dir": str(tmp_path / "data"),
            "pollers": {
                "okta-logs": {"type": "okta", "base_url": "https://x.okta.com", "token": "t"}
            },
        },
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"ACCESSGUARD_BROKER": "kafka://127.0.0.1:1", "ACCESSGUARD_HTTP_HOST": "127.0.0.1"}
        result = CliRunner().invoke(
            main,
            ["connect", "poller", "okta-logs", "--config", str(path), "--port", str(port)],
            env=env,
        )
    assert result.exit_code == 2, result.output
    assert "sources.health_port" in result.stderr
    assert "ACCESSGUARD_SOURCES_HEALTH_PORT" in result.stderr
