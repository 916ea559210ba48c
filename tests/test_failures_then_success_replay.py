"""An account takeover by guessed password, replayed end to end: Okta System Log events (our
own vendor-shaped fixture, tests/fixtures/attack_failures_then_success.ndjson) through
`accessguard replay` with the example configuration, registry and the shipped rules; and the
thresholds against the Okta attack in the third-party vendor samples, where they are present."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner

from streams.cli import main
from streams.decide.login import LoginPipeline
from streams.detect.load import parse_rule
from streams.detect.model import RuleSet
from streams.model.records import LoginEvent
from streams.model.registry_yaml import load_registry
from streams.model.state import StateStore
from tests.samples import sample_text

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "attack_failures_then_success.ndjson"
CLEAN_ENV = {k: None for k in os.environ if k.startswith("ACCESSGUARD_")}


def replay_fixture() -> list[dict[str, Any]]:
    result = CliRunner().invoke(
        main,
        [
            "replay",
            "--config",
            str(REPO / "examples" / "config.yaml"),
            "--registry",
            str(REPO / "examples" / "registry.yaml"),
            "--input",
            str(FIXTURE),
            "--at",
            "2026-11-25T00:00:00Z",
            "--rules",
            str(REPO / "rules"),
        ],
        env=CLEAN_ENV,
    )
    assert result.exit_code == 0, result.output
    return [orjson.loads(line) for line in result.stdout.splitlines()]


def test_the_attack_raises_one_critical_detection_with_its_response() -> None:
    """Nine failures from four rotating addresses, then the attacker's success: exactly one
    critical detection (failures_then_success, on the success), one critical alert, and the
    response — sessions revoked, password expired, MFA re-enrolment forced — at the okta
    provider among others, every action caused by that detection."""
    out = replay_fixture()
    assert not [o for o in out if o["type"] == "rejected"]
    critical = [o for o in out if o["type"] == "detection" and o["severity"] == "critical"]
    assert [(d["rule"], d["identity"]) for d in critical] == [("failures_then_success", "alice")]
    [detection] = critical
    assert detection["event_id"].startswith("okta:5e1c1a2e-9b7d-11ee-8c1a-0242ac120014")
    pages = [o for o in out if o["type"] == "alert" and o["severity"] == "critical"]
    assert [a["rule"] for a in pages] == ["failures_then_success"]
    cause = f"rule:failures_then_success:{detection['event_id']}"
    acted = {(a["action"], a["provider"]) for a in out if a["type"] == "action"}
    assert {
        ("revoke_sessions", "okta"),
        ("expire_password", "okta"),
        ("force_mfa_reenrolment", "okta"),
    } <= acted
    assert {a["cause"] for a in out if a["type"] == "action"} == {cause}


def test_the_benign_neighbours_raise_nothing() -> None:
    """Bob mistypes twice and logs in from his usual address, Carol just logs in, Dan fails
    four times and gets in: no detection, alert or action about any of them."""
    out = replay_fixture()
    about = {o.get("identity") for o in out if o["type"] in ("detection", "alert", "action")}
    assert about == {"alice"}


CORPUS_REGISTRY = """\
accounts:
  - {id: ig-brand, platform: instagram, handle: "@brand", criticality: critical, provider: okta}
identities:
  - id: jack
    name: Jack
    kind: employee
    emails: [jack.naglieri@runpanther.io]
    aliases: {okta: 00uu1uuuuIlllaaaa356}
  - id: tracey
    name: Tracey
    kind: employee
    emails: [tracey.stone@acme.io]
grants:
  - {identity: jack, account: ig-brand, role: admin, via: sso, mfa: push}
  - {identity: tracey, account: ig-brand, role: can_reply, via: sso, mfa: push}
"""


def test_the_okta_attack_in_the_third_party_samples_is_caught_once(tmp_path: Path) -> None:
    """The thresholds against the real sequence (okta lines 1-20 of the vendor samples: a
    baseline, nine failures from four addresses over nine minutes, the success five minutes
    later, then a privilege grant; and two failures a day apart for a look-alike name):
    failures_then_success fires exactly once, on line 15's success, and on nothing else."""
    text = sample_text("okta.ndjson")
    lines = text.splitlines()[:20]
    replay_input = tmp_path / "okta.ndjson"
    replay_input.write_text(
        "".join(
            orjson.dumps({"kind": "login", "vendor": "okta", "event": orjson.loads(line)}).decode()
            + "\n"
            for line in lines
        ),
        encoding="utf-8",
    )
    registry = tmp_path / "registry.yaml"
    registry.write_text(CORPUS_REGISTRY, encoding="utf-8")
    line15 = orjson.loads(lines[14])
    assert line15["outcome"]["result"] == "SUCCESS"
    result = CliRunner().invoke(
        main,
        [
            "replay",
            "--registry",
            str(registry),
            "--input",
            str(replay_input),
            "--at",
            "2021-07-03T00:00:00Z",
            "--rules",
            str(REPO / "rules"),
        ],
        env=CLEAN_ENV,
    )
    assert result.exit_code == 0, result.output
    out = [orjson.loads(line) for line in result.stdout.splitlines()]
    fired = [o for o in out if o["type"] == "detection" and o["rule"] == "failures_then_success"]
    assert [(d["identity"], d["severity"]) for d in fired] == [("jack", "critical")]
    assert line15["uuid"] in fired[0]["event_id"]


def test_a_success_long_after_old_failures_writes_no_state() -> None:
    """The login hot path: once the failures recorded for someone are older than the rule's
    window, their next successful logins neither fire nor touch the rule's state (no slot
    write, no dirty key, so no checkpoint record); a success within the window still does."""
    repo = Path(__file__).resolve().parent.parent
    registry = load_registry(repo / "rules" / "tests" / "registry.yaml")
    text = (repo / "rules" / "failures_then_success.yaml").read_text()
    rule, problems = parse_rule(text, "failures_then_success.yaml")
    assert rule is not None, problems
    pipeline = LoginPipeline(RuleSet((rule,)), {"okta-corp": "okta"})
    lifecycle = StateStore()

    def login(n: int, at: str, outcome: str) -> list[Any]:
        event = LoginEvent.from_dict(
            {
                "event_id": f"e{n}",
                "vendor": "okta",
                "time": at,
                "principal": "alice@brand.example",
                "identity": "alice",
                "outcome": outcome,
                "ip": "198.51.100.7",
            }
        )
        return pipeline.process(event, registry, lifecycle)[1]

    for n in range(3):
        assert login(n, f"2026-03-02T09:0{n}:00Z", "failure") == []
    pipeline.state.take_dirty()
    assert login(10, "2026-03-02T09:33:00Z", "success") == []  # 31 min after the last
    assert login(11, "2026-03-02T12:00:00Z", "success") == []
    assert pipeline.state.take_dirty() == []
    assert login(12, "2026-03-02T12:01:00Z", "failure") == []
    pipeline.state.take_dirty()
    assert login(13, "2026-03-02T12:02:00Z", "success") == []  # within: followed up
    assert pipeline.state.take_dirty() == ["alice"]
