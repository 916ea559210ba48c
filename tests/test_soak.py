"""Soak test (issue 6, point 5): the real ``accessguard run`` (embedded Tansu broker, Faust
worker, HTTP server) on loopback, against local vendor servers, under sustained login traffic
plus a stream of offboardings, for a bounded time. The scenario lives in tests/soak.py (shared
with bench/soak.py, which reports the same figures without asserting).

Load: 2,500 Okta login events/s in batches of 250 to ``POST /v1/auth/events`` for 1,000
login-only identities, and an HR event every 2 s (three `terminated` for each `suspended`)
for distinct identities of a 200-person offboarding pool, 10 grants each.

    ACCESSGUARD_SOAK_SECONDS   seconds of load (default 120; the test takes about 40 s more)

    .venv/bin/python -m pytest -q tests/test_soak.py -n 0 -s    # -s prints the figures

What must hold (each bound is explained where it is asserted):

- nothing lost: the worker's login counter equals what the endpoint accepted;
- lag bounded: the auth.events consumer lag never exceeds 5 s worth of input messages, and
  drains to 0 within 10 s of the load stopping;
- time to revoke: p99 from the 202 to the last revocation call at the vendor <= 1 s (the
  objective of issue 2: p99 <= 1 s at 10 grants), with every expected call made exactly once;
- memory flat: the worker's RSS grows by at most max(10 %, 24 MiB) from the median of the
  second third of the load to the median of the last third. The Tansu broker keeps everything
  it is sent in memory (docs/operations-notes.md), so it is only bounded loosely, relative to
  bytes sent.

The figures (events/s, time to revoke, RSS, lag) are printed with ``-s``; bench/soak.py runs
the same scenario for longer and writes them to bench/results/.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.soak import MIB, SoakResult, SoakSettings, env_seconds, run_soak

SECONDS = env_seconds(120.0)
SETTINGS = SoakSettings(seconds=SECONDS)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    # its rate, lag and time-to-revoke bounds assume a machine not shared with other tests
    pytest.mark.alone,
    # The first test runs the whole soak (in the module fixture): load + ~40 s around it.
    pytest.mark.timeout(int(SECONDS) + 240),
]


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> SoakResult:
    result = run_soak(Path(tmp_path_factory.mktemp("soak")), SETTINGS)
    print("\n" + result.summary())
    return result


def test_stack_took_the_load_and_stopped_cleanly(soak: SoakResult) -> None:
    """Every request answered 200 and every record was accepted, at >= 60 % of the target
    rate (10 requests/s; on an idle 2-core box the sender holds 100 %: a stack too slow to
    answer shows here instead of as an easy pass). The stack lived through it and exited 0."""
    assert soak.failed_requests == 0, soak.request_errors
    assert soak.events_rejected == 0
    assert soak.events_per_s >= 0.6 * SETTINGS.rate, soak.summary()
    assert soak.stack_alive_at_end
    assert soak.stack_exit_code == 0


def test_no_login_event_lost(soak: SoakResult) -> None:
    """The worker's login counter (and the edge's accepted counter) equal what the endpoint
    answered as accepted: nothing lost, nothing counted twice."""
    assert soak.evaluated_final == soak.events_accepted, soak.summary()
    assert soak.accepted_metric_final == soak.events_accepted


def test_lag_stays_bounded_and_drains(soak: SoakResult) -> None:
    """The gauge counts Kafka messages: each request becomes at most one message per partition
    (4), so the input is 4 * rate / batch = 40 messages/s. The worker commits every 0.5 s and
    the gauge is refreshed every 1 s, so a worker that keeps up shows a few dozen at most
    (measured: max 21-30); 5 s worth of input (200) means it fell behind. Once the load stops
    the lag is 0 and every accepted event counted within 10 s (measured: 0.8-1.6 s)."""
    partitions = 4
    lag_bound = 5 * partitions * SETTINGS.rate / SETTINGS.batch
    assert soak.max_lag is not None
    assert soak.max_lag <= lag_bound, soak.summary()
    assert soak.drain_s is not None, f"lag {soak.lag_final} after {SETTINGS.drain_timeout}s"
    assert soak.drain_s <= 10.0
    assert soak.lag_final == 0


def test_every_offboarding_revoked_once_within_the_objective(soak: SoakResult) -> None:
    """Every HR event was accepted and every expected revocation call arrived exactly once;
    nothing else was revoked (login traffic never names an offboarded person). The objective
    of issue 2: p99 time to revoke <= 1 s at 10 grants (nearest rank: with 60 offboardings
    the p99 is the slowest one). Measured under this load: p99 0.12-0.21 s."""
    assert len(soak.offboardings) >= SETTINGS.offboardings - 1
    assert all(ob["status"] == "202 accepted" for ob in soak.offboardings), soak.offboardings
    assert soak.incomplete == [], soak.incomplete
    assert soak.repeated_calls == 0
    assert soak.unexpected_calls == []
    assert soak.unattributed_calls == []
    assert soak.calls_for_others == 0
    assert soak.rejected_vendor_calls == 0
    assert soak.actions_failed == 0
    assert soak.ttr["p99"] is not None
    assert soak.ttr["p99"] <= 1.0, soak.summary()


def test_worker_memory_stays_flat(soak: SoakResult) -> None:
    """After warm-up (the first third: rule state for every login identity, buffers) the RSS
    of `accessguard run` moves by under 1 MiB from the median of the second third to the
    median of the last (measured: 0.3-0.6 MiB, ~100 MiB total). A leak of 100 bytes per login
    event would add ~10 MiB per third of a 120 s run (100k events); bound: max(10 % of the
    second-third median, 24 MiB), so ~250 bytes per event or more fails."""
    w = soak.worker_memory
    assert w["growth"] is not None
    assert w["median_thirds"][1] is not None
    bound = max(0.10 * w["median_thirds"][1], 24 * MIB)
    assert w["growth"] <= bound, soak.summary()


def test_broker_memory_grows_only_with_what_it_is_sent(soak: SoakResult) -> None:
    """Tansu keeps every record in memory (the memory engine never compacts,
    docs/operations-notes.md), so it grows with what is written: login events, rule-state
    checkpoints, audit (measured:
    ~1.6x the bytes of login bodies posted, ~130 MiB a minute at 2,500 events/s). Bounded
    loosely, to catch a runaway (records written over and over), not the growth itself."""
    b = soak.broker_memory
    assert b["start"] is not None
    assert b["end"] is not None
    assert b["end"] - b["start"] <= 4 * soak.bytes_sent + 64 * MIB, soak.summary()
