"""A poller stopped for longer than its cadence fires the silence alert in a real Prometheus.

`accessguard connect poller okta-logs` runs against the real embedded broker and a local
server that behaves like the Okta System Log (tests/fake_logs.py), which keeps receiving
sign-ins. A real Prometheus (Debian's package, on loopback, scraping every second with
deploy/prometheus/accessguard-rules.yaml loaded) scrapes the poller's own /metrics. The
cadence is shortened to 3 s through the typed configuration (``sources.cadence``). While the
poller runs the alert stays quiet; once it is stopped (its target gone, its series stale)
AccessGuardSourceSilent goes pending within seconds. Needs /usr/bin/prometheus (`make
prometheus`): fails without it, never skips.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from streams.bus.broker import EmbeddedBroker
from tests.fake_logs import OKTA_TOKEN, FakeOktaLogs, okta_event
from tests.fakes import FakeVendorServer
from tests.promtools import PrometheusServer
from tests.stack import Stack, free_port, wait_until, write_config

pytestmark = [pytest.mark.integration]

CADENCE = 3.0
SOURCE = "poller:okta-logs"
SILENT = f'ALERTS{{alertname="AccessGuardSourceSilent",source="{SOURCE}"}}'
LAST_EVENT = f'accessguard_source_last_event_timestamp_seconds{{source="{SOURCE}"}}'
CADENCE_SET = f'accessguard_source_expected_cadence_seconds{{source="{SOURCE}"}} == {CADENCE}'


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SignIns:
    """Adds a sign-in to the fake Okta log every half second until stopped: the vendor keeps
    having events whether or not the poller reads them."""

    def __init__(self, okta: FakeOktaLogs) -> None:
        self.okta = okta
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.count = 0

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            self.count += 1
            self.okta.add(okta_event(f"live-{self.count}", _iso(datetime.now(UTC))))

    def __enter__(self) -> SignIns:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def okta() -> Iterator[FakeOktaLogs]:
    with FakeOktaLogs() as server:
        yield server


def test_a_stopped_poller_fires_the_silence_alert_in_prometheus(
    tmp_path: Path, broker: EmbeddedBroker, vendor: FakeVendorServer, okta: FakeOktaLogs
) -> None:
    """While the poller runs and its vendor has sign-ins, /healthz is 200, Prometheus holds
    its last event and cadence, and the silence alert is quiet; stopped for longer than its
    cadence, AccessGuardSourceSilent is pending or firing for poller:okta-logs."""
    port = free_port()
    cfg = write_config(
        tmp_path / "config.yaml",
        data_dir=tmp_path / "data",
        vendor_url=vendor.url,
        broker=broker.url,
        http_port=port,
        extra={
            "pollers.okta-logs": {
                "type": "okta",
                "base_url": okta.url,
                "token": OKTA_TOKEN,
                "interval": 0.3,
                "start": _iso(datetime.now(UTC) - timedelta(minutes=1)),
            },
            # The poller's health port is the stack's http.port: Stack waits on its /readyz.
            "sources": {"health_port": port, "cadence": {SOURCE: CADENCE}},
        },
    )
    poller = Stack(cfg, command=("connect", "poller", "okta-logs"))
    with (
        SignIns(okta) as feed,
        PrometheusServer(tmp_path, [f"127.0.0.1:{port}"], free_port()) as prom,
    ):
        poller.start(timeout=60)  # /readyz 200: a first round succeeded
        try:
            health = requests.get(f"{poller.url}/healthz", timeout=5)
            assert health.status_code == 200, health.text
            assert health.json()["reason"] == "ok"
            wait_until(
                lambda: prom.query(LAST_EVENT) and prom.query(CADENCE_SET),
                30,
                interval=0.5,
                what="prometheus scraped the poller's last event and cadence",
            )
            time.sleep(2 * CADENCE)  # running for two cadences: still not silent
            assert not prom.query(SILENT), prom.query(SILENT)
            assert feed.count > 0
        finally:
            assert poller.stop() == 0
        stopped = time.monotonic()
        alerts = wait_until(
            lambda: prom.query(SILENT), 30 + CADENCE, interval=0.5, what="AccessGuardSourceSilent"
        )
        took = time.monotonic() - stopped
        (last,) = prom.query(f"max_over_time({LAST_EVENT}[1h])")
        quiet_for = time.time() - float(last["value"][1])
    assert alerts[0]["metric"]["alertstate"] in {"pending", "firing"}
    assert alerts[0]["metric"]["severity"] == "ticket"
    assert quiet_for >= CADENCE  # not before the cadence has passed since the last event
    print(
        f"silence alert {alerts[0]['metric']['alertstate']} {took:.1f} s after the stop, "
        f"{quiet_for:.1f} s after the last event"
    )
