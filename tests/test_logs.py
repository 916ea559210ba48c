"""Secrets never reach the logs."""

from __future__ import annotations

import io
import json
import sys

import pytest
import structlog

from streams.logs import configure_logging, redact_secrets
from streams.secrets import Secret


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
