"""Either HR secret serves POST /v1/hr/events: a sender that signs only with Standard Webhooks
needs no ``hr.webhook_secret`` (start-up refuses only when neither is set), and ``accessguard
hr send --standard`` signs an event the way such a sender does."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import orjson
import pytest
import yaml
from click.testing import CliRunner, Result

from connectors.ingest import standard_webhooks
from streams.cli import main
from streams.config import load_config
from streams.runtime.secretcheck import check_secrets, secret_uses
from streams.support.errors import ConfigError
from streams.support.secrets import Secret
from tests.edge_harness import edge_server

WHSEC = "whsec_" + base64.b64encode(b"hr-secrets-test-standard-key-32b").decode()
OLD_WHSEC = "whsec_" + base64.b64encode(b"the-key-being-rotated-out-32byte").decode()
#: The CLI runs without the ACCESSGUARD_* variables of the environment the tests run in.
CLEAN_ENV: dict[str, str | None] = {k: None for k in os.environ if k.startswith("ACCESSGUARD_")}
EVENT = {
    "type": "terminated",
    "employee_id": "E1001",
    "email": "alice.nguyen@lumen-outdoor.example",
    "effective_at": "2026-03-02T11:00:00Z",
    "source": "workday",
}


def _config(tmp_path: Path, data: dict[str, object]):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), **data}))
    return load_config(path, env=CLEAN_ENV)


def answered(result: Result) -> tuple[int, str]:
    """The status and ``status`` field ``hr send`` printed (its last line: the in-process
    server logs to the same output)."""
    status, _, body = result.output.strip().splitlines()[-1].partition(" ")
    return int(status), orjson.loads(body)["status"]


class TestStartUp:
    def test_a_standard_webhooks_secret_alone_serves_the_hr_endpoint(self, tmp_path: Path) -> None:
        """hooks.standard_webhooks_secret without hr.webhook_secret: the start-up check
        passes and the Standard Webhooks secret is one the HR door needs."""
        config = _config(tmp_path, {"hooks": {"standard_webhooks_secret": WHSEC}})
        uses = secret_uses(config, serve_hr=True)
        assert check_secrets(uses).ready()
        assert [u.path for u in uses if u.needed] == ["hooks.standard_webhooks_secret"]

    def test_neither_secret_is_refused_naming_both(self, tmp_path: Path) -> None:
        """Serving the HR endpoint with no way to verify a sender stops the start, and the
        message says either secret will do."""
        config = _config(tmp_path, {})
        with pytest.raises(ConfigError, match=r"hr\.webhook_secret: required.*standard_webhooks"):
            secret_uses(config, serve_hr=True)


class TestTheDoor:
    def test_without_hr_webhook_secret_standard_is_accepted_and_the_other_scheme_is_401(
        self, tmp_path: Path
    ) -> None:
        """hr.webhook_secret unset, the Standard Webhooks key set: a Standard-signed event
        is accepted (202); an X-AccessGuard-Signature request is a 401 saying that scheme is
        not accepted here (not the 503 of a secret that vanished, which makes it retry)."""
        body = orjson.dumps(EVENT)
        with edge_server(tmp_path, hr_secret=None, standard_secret=Secret(WHSEC)) as edge:
            url = f"{edge.url}/v1/hr/events"
            headers = standard_webhooks.sign(WHSEC, "msg_e1", body)
            headers["Content-Type"] = "application/json"
            standard = edge.session.post(url, data=body, headers=headers, timeout=10)
            stripe = edge.post_hr(orjson.dumps({**EVENT, "event_id": "e2"}))
        assert standard.status_code == 202, standard.text
        assert stripe.status_code == 401, stripe.text
        assert "hr.webhook_secret is unset" in stripe.json()["error"]


class TestHrSendStandard:
    def test_hr_send_standard_signs_with_the_first_key_and_is_accepted(
        self, tmp_path: Path
    ) -> None:
        """``hr send --standard`` signs with the newest key of a rotating pair; the server
        (hr.webhook_secret unset) accepts it. Without an event_id in the file the webhook-id
        is a digest of the file, so sending the same file again is the same message (the
        server's dedup key), not a second event."""
        body = orjson.dumps(EVENT)
        event = tmp_path / "event.json"
        event.write_bytes(body)
        cfg = tmp_path / "config.yaml"
        rotating = f"{WHSEC} {OLD_WHSEC}"
        cfg.write_text(yaml.safe_dump({"hooks": {"standard_webhooks_secret": rotating}}))
        with edge_server(tmp_path, hr_secret=None, standard_secret=Secret(WHSEC)) as edge:
            args = ["hr", "send", "--standard", "--config", str(cfg), "--url", edge.url]
            result = CliRunner().invoke(main, [*args, str(event)], env=CLEAN_ENV)
            published = edge.publisher.records[:]
        assert result.exit_code == 0, result.output
        assert answered(result) == (202, "accepted")
        [(_topic, _key, value)] = published
        assert value["event_id"] == "msg_" + hashlib.sha256(body).hexdigest()[:32]

    def test_hr_send_standard_without_the_key_names_it(self, tmp_path: Path) -> None:
        """--standard needs hooks.standard_webhooks_secret; the error names that key and
        its environment variable."""
        event = tmp_path / "event.json"
        event.write_bytes(orjson.dumps(EVENT))
        result = CliRunner().invoke(main, ["hr", "send", "--standard", str(event)], env=CLEAN_ENV)
        assert result.exit_code == 2
        assert "hooks.standard_webhooks_secret" in result.output
        assert "ACCESSGUARD_HOOKS_STANDARD_WEBHOOKS_SECRET" in result.output

    def test_hr_send_still_signs_with_the_hr_secret_by_default(self, tmp_path: Path) -> None:
        """Without --standard the event carries X-AccessGuard-Signature, as before."""
        event = tmp_path / "event.json"
        body = orjson.dumps({**EVENT, "event_id": "e-default"})
        event.write_bytes(body)
        cfg = tmp_path / "config.yaml"
        cfg.write_text(yaml.safe_dump({"hr": {"webhook_secret": "edge-test-hr-secret"}}))
        with edge_server(tmp_path) as edge:
            args = ["hr", "send", "--config", str(cfg), "--url", edge.url, str(event)]
            result = CliRunner().invoke(main, args, env=CLEAN_ENV)
        assert answered(result) == (202, "accepted")
