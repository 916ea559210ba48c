"""A secret that does not resolve is loud (issue 13, defect 3): a start-up error for what
cannot appear later (``env:``), readiness false and an error log for a ``file:`` one, and
only a note for a secret the process does not use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from click.testing import CliRunner

from streams.cli import main
from streams.config import load_config
from streams.runtime.secretcheck import (
    SecretWatch,
    check_secrets,
    reference_problems,
    secret_uses,
)
from streams.support.errors import ConfigError
from streams.support.secrets import Secret
from tests.edge_harness import edge_server

UNSET = "ACCESSGUARD_TEST_SURELY_UNSET_VARIABLE"


def _config(tmp_path: Path, data: dict[str, object], env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_config(path, env=env or {})


def test_secret_problems_never_show_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AG_EMPTY", "  ")
    monkeypatch.setenv("AG_SET", "s3cr3t-value")
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "ok").write_text("file-s3cr3t\n")
    assert Secret.parse(f"env:{UNSET}").problem() == f"environment variable {UNSET} is not set"
    assert Secret.parse("env:AG_EMPTY").problem() == "environment variable AG_EMPTY is empty"
    assert Secret.parse("env:AG_SET").problem() is None
    assert "No such file" in (Secret.parse(f"file:{tmp_path}/missing").problem() or "")
    assert Secret.parse(f"file:{tmp_path}/empty").problem() == f"{tmp_path}/empty is empty"
    assert Secret.parse(f"file:{tmp_path}/ok").problem() is None
    assert Secret("").problem() == "it is empty"


def test_an_unresolvable_hr_secret_stops_the_start(tmp_path: Path) -> None:
    """``webhook_secret: env:UNSET`` used to start, answer /readyz 200 and refuse every
    termination with 401; now it is a ConfigError naming the key and the variable."""
    config = _config(tmp_path, {"hr": {"webhook_secret": f"env:{UNSET}"}})
    with pytest.raises(ConfigError, match=rf"hr.webhook_secret.*{UNSET} is not set"):
        check_secrets(secret_uses(config, serve_hr=True))


def test_serving_hr_without_a_secret_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path, {})
    with pytest.raises(ConfigError, match=r"hr\.webhook_secret: required"):
        secret_uses(config, serve_hr=True)
    assert check_secrets(secret_uses(config, execute=True)).ready()  # a bare worker: fine


def test_every_unresolvable_secret_is_named_at_once(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        {
            "hr": {"webhook_secret": "inline-ok"},
            "providers": {
                "okta": {"type": "okta", "base_url": "https://x.okta.com", "token": f"env:{UNSET}"}
            },
            "alerts": {
                "sinks": {
                    "pagerduty": {"type": "pagerduty", "routing_key": f"env:{UNSET}_PD"},
                    "slack": {"type": "slack", "dry_run": True},
                }
            },
        },
    )
    with pytest.raises(ConfigError) as info:
        check_secrets(secret_uses(config, serve_hr=True, execute=True))
    assert "providers.okta.token" in str(info.value)
    assert "alerts.sinks.pagerduty.routing_key" in str(info.value)


def test_what_the_process_does_not_use_is_only_noted(tmp_path: Path) -> None:
    """A dry-run provider's token and a bare worker's ingest tokens may be unset (the example
    configuration's tokens are): one info line, no error, ready."""
    config = _config(
        tmp_path,
        {
            "auth": {"ingest_token": f"env:{UNSET}"},
            "providers": {
                "okta": {
                    "type": "okta",
                    "base_url": "https://x.okta.com",
                    "token": f"env:{UNSET}",
                    "dry_run": True,
                }
            },
        },
    )
    with structlog.testing.capture_logs() as logs:
        watch = check_secrets(secret_uses(config, execute=True))
    assert watch.ready()
    (note,) = [e for e in logs if e["event"] == "secrets.unused_unresolved"]
    assert sorted(note["keys"]) == ["auth.ingest_token", "providers.okta.token"]
    assert note["log_level"] == "info"


def test_a_missing_file_secret_is_not_ready_until_it_appears(tmp_path: Path) -> None:
    """A mounted secret may come late: no start-up error, but readiness false with one error
    line, and ready again (one info line) once the file is there."""
    path = tmp_path / "hr-secret"
    config = _config(tmp_path, {"hr": {"webhook_secret": f"file:{path}"}})
    with structlog.testing.capture_logs() as logs:
        watch = check_secrets(secret_uses(config, serve_hr=True))
        assert not watch.ready()
        watch._checked = float("-inf")
        assert not watch.ready()
        path.write_text("now-here\n")
        watch._checked = float("-inf")
        assert watch.ready()
    events = [(e["event"], e["log_level"]) for e in logs]
    assert events == [("secret.unavailable", "error"), ("secret.available", "info")]
    assert "now-here" not in repr(logs)


def test_watch_checks_at_most_once_per_interval(tmp_path: Path) -> None:
    path = tmp_path / "s"
    watch = SecretWatch([], interval=60)
    assert watch.ready()
    config = _config(tmp_path, {"hr": {"webhook_secret": f"file:{path}"}})
    watch = check_secrets(secret_uses(config, serve_hr=True))
    path.write_text("x")
    assert not watch.ready()  # not checked again within the interval


def test_run_refuses_to_start_in_one_line(tmp_path: Path) -> None:
    """`accessguard run` with the HR secret from an unset variable: one line, exit 2, and no
    broker was started (nothing to clean up)."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "registry": "examples/registry.yaml",
                "hr": {"webhook_secret": f"env:{UNSET}"},
            }
        )
    )
    result = CliRunner().invoke(main, ["run", "--config", str(cfg)])
    assert result.exit_code == 2
    assert f"hr.webhook_secret (env:{UNSET}): environment variable {UNSET} is not set" in (
        result.output
    )
    assert not (tmp_path / "data" / "tansu.log").exists()


def test_hr_send_names_the_unresolvable_secret(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"hr": {"webhook_secret": f"env:{UNSET}"}}))
    event = tmp_path / "e.json"
    event.write_text("{}")
    result = CliRunner().invoke(main, ["hr", "send", "--config", str(cfg), str(event)])
    assert result.exit_code == 2
    assert "does not resolve" in result.output


def test_a_vanished_hr_secret_file_answers_503_not_500(tmp_path: Path) -> None:
    """The secret file disappears while running: the sender is told to retry (503), never
    401 (it would think its signature wrong) nor 500; the error is logged."""
    path = tmp_path / "secret"
    path.write_text("edge-test-hr-secret")
    with edge_server(tmp_path, hr_secret=Secret.parse(f"file:{path}")) as edge:
        assert edge.post_hr(b'{"event_id": "x"}').status_code == 400  # signed, then invalid
        path.unlink()
        resp = edge.post_hr(b'{"event_id": "x"}')
    assert resp.status_code == 503
    assert resp.headers["Retry-After"]


def test_config_check_asks_every_used_reference_to_resolve_now(tmp_path: Path) -> None:
    """`accessguard config check` (reference_problems): what `run` would use must resolve now,
    a `file:` one included, each located at its line; a dry-run provider's token is only
    counted as unused."""
    config = _config(
        tmp_path,
        {
            "hr": {"webhook_secret": f"file:{tmp_path}/missing"},
            "providers": {
                "okta": {
                    "type": "okta",
                    "base_url": "https://x.okta.com",
                    "token": f"env:{UNSET}",
                    "dry_run": True,
                }
            },
        },
    )
    problems, unused = reference_problems(config)
    assert [(p.key, p.where) for p in problems] == [
        ("hr.webhook_secret", f"{tmp_path}/config.yaml:2")
    ]
    assert f"file:{tmp_path}/missing" in problems[0].message
    assert unused == ["providers.okta.token"]


def test_each_process_needs_only_the_scim_and_ssf_secrets_of_its_doors(tmp_path: Path) -> None:
    """`run` needs every SCIM and SSF secret; `connect hr-webhook` none of them; a worker with
    ``worker.doors`` the SCIM token (scim) and the push tokens of the streams it receives
    (ssf); `connect ssf-transmitter` the signing key and the receivers' tokens only."""
    config = _config(
        tmp_path,
        {
            "hr": {"webhook_secret": "hr-secret-value"},
            "scim": {"token": "scim-token-value"},
            "ssf": {
                "signing_key": "file:/nowhere/key.pem",
                "transmitters": {
                    "idp": {
                        "issuer": "https://idp.test",
                        "audience": "a",
                        "jwks_uri": "https://idp.test/k",
                        "push_token": "push-token-value",
                    }
                },
                "receivers": {"app": {"url": "https://a.test", "audience": "a", "token": "t"}},
            },
        },
    )
    ssf_and_scim = {
        "scim.token",
        "ssf.signing_key",
        "ssf.transmitters.idp.push_token",
        "ssf.receivers.app.token",
    }

    def needed(**uses: Any) -> set[str]:
        return {u.path for u in secret_uses(config, **uses) if u.needed} & ssf_and_scim

    assert needed(serve_hr=True, serve_ingest=True, execute=True) == ssf_and_scim
    assert needed(serve_hr=True) == set()
    assert needed(execute=True) == set()
    assert needed(execute=True, doors=["scim"]) == {"scim.token"}
    assert needed(execute=True, doors=["ssf"]) == {"ssf.transmitters.idp.push_token"}
    assert needed(doors=["transmitter"]) == {"ssf.signing_key", "ssf.receivers.app.token"}
