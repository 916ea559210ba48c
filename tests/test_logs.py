"""Secrets never reach the logs."""

from __future__ import annotations

import io
import json
import logging
import sys
import warnings
from collections.abc import Iterator

import pytest
import structlog

from streams.support.logs import configure_logging, redact_secrets
from streams.support.secrets import Secret


def test_secret_values_and_secret_looking_keys_are_redacted() -> None:
    """A Secret anywhere, and values under secret-looking keys (token, signature, ...), become
    a marker; other fields are untouched."""
    event = {
        "event": "x",
        "token": "abc",
        "provider_secret": Secret("s3cr3t"),
        "headers": {"Authorization": "SSWS abc", "Accept": "application/json"},
        "signature": "t=1,v1=ff",
        "identity": "alice",
    }
    out = redact_secrets(None, "info", dict(event))
    assert out["token"] == "[redacted]"
    assert out["provider_secret"] == "[redacted]"
    assert out["headers"] == {"Authorization": "[redacted]", "Accept": "application/json"}
    assert out["signature"] == "[redacted]"
    assert out["identity"] == "alice"


def test_configured_json_logging_never_prints_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the real processor chain, a logged Secret prints as the marker in JSON."""
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    configure_logging("info", "json")
    try:
        structlog.get_logger("t").info("provider.call", token=Secret("hunter2"), api_key="k-1")
    finally:
        structlog.reset_defaults()
    line = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert "hunter2" not in buf.getvalue()
    assert "k-1" not in buf.getvalue()
    assert line["token"] == "[redacted]"


def test_secret_repr_shows_only_its_source() -> None:
    """repr/str of a Secret name where it comes from, never the value."""
    assert "hunter2" not in repr(Secret("hunter2"))
    assert repr(Secret.parse("env:OKTA_TOKEN")) == "Secret(env:OKTA_TOKEN)"
    assert str(Secret.parse("file:/run/secrets/x")) == "Secret(file:/run/secrets/x)"
    assert Secret("hunter2").reveal() == "hunter2"


@pytest.fixture
def json_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """configure_logging("info", "json") writing to a buffer; the stdlib root logger, the
    warnings hook and structlog are put back afterwards."""
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logging.captureWarnings(False)  # an earlier configure_logging in this process set it
    configure_logging("info", "json")
    try:
        yield buf
    finally:
        logging.captureWarnings(False)
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()


def _lines(buf: io.StringIO) -> list[dict[str, object]]:
    """Every line of the buffer, each of which must be one JSON object."""
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_stdlib_exception_is_one_json_line_with_the_traceback(json_logs: io.StringIO) -> None:
    """An exception logged by a library through stdlib logging (aiokafka, faust, mode) is one
    valid JSON line whose "exception" field holds the traceback text, not the repr of a
    traceback object."""
    try:
        raise ConnectionResetError("broker went away")
    except ConnectionResetError:
        logging.getLogger("aiokafka").exception("Unexpected error in fetcher %s", "f-1")
    (line,) = _lines(json_logs)
    assert line["event"] == "Unexpected error in fetcher f-1"
    assert line["logger"] == "aiokafka"
    assert line["level"] == "error"
    assert "exc_info" not in line
    exception = line["exception"]
    assert isinstance(exception, str)
    assert exception.startswith("Traceback (most recent call last):")
    assert "ConnectionResetError: broker went away" in exception
    assert "traceback object" not in json_logs.getvalue()


def test_python_warnings_are_json_lines(json_logs: io.StringIO) -> None:
    """A Python warning (a library's DeprecationWarning) is a JSON log line, not raw text on
    stderr between the JSON lines."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old API", UserWarning, stacklevel=1)
    (line,) = _lines(json_logs)
    assert line["logger"] == "py.warnings"
    assert "UserWarning: old API" in str(line["event"])
