"""Rule exceptions (rules/exceptions.yaml): each scope suppresses only what it covers, an
expired exception stops applying and is listed, the file is strictly validated, and a rule
without exceptions keeps its own check."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from structlog.testing import capture_logs

from streams.cli import main
from streams.detect.engine import RuleEngine
from streams.detect.exceptions import EXCEPTIONS_FILE
from streams.detect.load import load_rules
from streams.detect.model import RuleSet
from streams.detect.state import RuleState
from streams.model.records import LoginEvent
from streams.model.registry import Registry
from streams.model.state import StateStore
from streams.runtime.replay import replay
from streams.support import metrics
from streams.support.errors import RuleError

REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

RULE = """\
id: login_seen
title: A successful login
description: fires on every successful login (a test rule)
status: stable
severity: high
runbook: docs/runbooks/x.md
falsepositives: [none]
inputs: [login]
kind: match
conditions:
  - {field: outcome, op: eq, value: success}
dedup: 0
response: [notify]
tests:
  - {name: success, expect: fire, events: [{identity: alice, outcome: success}]}
  - {name: failure, expect: no_fire, events: [{identity: alice, outcome: failure}]}
"""

OTHER = RULE.replace("id: login_seen", "id: login_other")


def rules_dir(tmp_path: Path, exceptions: str | None) -> Path:
    directory = tmp_path / "rules"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "login_seen.yaml").write_text(RULE, encoding="utf-8")
    (directory / "login_other.yaml").write_text(OTHER, encoding="utf-8")
    if exceptions is not None:
        (directory / EXCEPTIONS_FILE).write_text(exceptions, encoding="utf-8")
    return directory


def one(scope: str, value: str, *, rule: str = "login_seen", expires: str = "2099-01-01") -> str:
    return (
        "exceptions:\n"
        f"  - rule: {rule}\n"
        f"    {scope}: {value!r}\n"
        "    owner: secops@brand.example\n"
        "    reason: a known source, ticket SEC-1\n"
        f"    expires: {expires}\n"
    )


def ev(n: int, *, at: float = 0.0, **fields: Any) -> LoginEvent:
    return LoginEvent.from_dict(
        {
            "event_id": f"e{n}",
            "time": (T0 + timedelta(seconds=at)).isoformat(),
            "principal": "someone@brand.example",
            "outcome": "success",
            **fields,
        }
    )


def fired(ruleset: RuleSet, *events: LoginEvent) -> tuple[list[tuple[str, str]], RuleEngine]:
    engine = RuleEngine(ruleset, {})
    state, lifecycle, registry = RuleState(), StateStore(), Registry()
    out: list[tuple[str, str]] = []
    for event in events:
        for d in engine.evaluate(event, registry, lifecycle, state):
            assert d.error is None, d.error
            out.extend((d.rule, d.event_id) for _ in d.alerts)
    return out, engine


@pytest.mark.parametrize(
    ("scope", "value", "covered", "other"),
    [
        ("identity", "alice", {"identity": "alice"}, {"identity": "bob"}),
        ("ip", "203.0.113.9", {"ip": "203.0.113.9"}, {"ip": "203.0.113.10"}),
        ("cidr", "203.0.113.0/24", {"ip": "203.0.113.77"}, {"ip": "198.51.100.1"}),
        ("cidr", "2001:db8::/32", {"ip": "2001:db8::5"}, {"ip": "2001:db9::5"}),
        ("country", "FR", {"geo": {"country": "fr"}}, {"geo": {"country": "DE"}}),
        ("country", "France", {"geo": {"country": "France"}}, {"geo": {"country": "Spain"}}),
    ],
)
def test_each_scope_suppresses_what_it_covers_and_nothing_else(
    tmp_path: Path, scope: str, value: str, covered: dict[str, Any], other: dict[str, Any]
) -> None:
    """An active exception silences its rule for the events its scope covers (counted per
    rule); events outside the scope, and other rules, still fire."""
    ruleset = load_rules(rules_dir(tmp_path, one(scope, value)))
    before = metrics.RULE_SUPPRESSED.labels("login_seen")._value.get()
    got, engine = fired(ruleset, ev(1, **covered), ev(2, **other))
    assert sorted(got) == [("login_other", "e1"), ("login_other", "e2"), ("login_seen", "e2")]
    assert engine.suppressor.counts == {"login_seen": 1}
    assert metrics.RULE_SUPPRESSED.labels("login_seen")._value.get() == before + 1
    [kept] = engine.suppressor.take()
    assert (kept.rule, kept.event_id, kept.exception.scope) == ("login_seen", "e1", scope)
    assert engine.suppressor.take() == []


def test_an_expired_exception_stops_applying_at_its_expiry(tmp_path: Path) -> None:
    """The exception covers events before ``expires`` (event time) and none from it on."""
    text = one("identity", "alice", expires="2026-03-02T10:00:00Z")
    ruleset = load_rules(rules_dir(tmp_path, text))
    got, _ = fired(
        ruleset,
        ev(1, at=3599, identity="alice"),
        ev(2, at=3600, identity="alice"),
        ev(3, at=7200, identity="alice"),
    )
    assert [e for r, e in got if r == "login_seen"] == ["e2", "e3"]


def test_expired_exceptions_are_listed_and_warned_about(tmp_path: Path) -> None:
    """`rules exceptions` lists each exception as active or expired (exit 1 when one has
    expired), `rules test` names the expired one, and loading the rules warns about it."""
    text = one("identity", "alice", expires="2020-01-01") + (
        "  - rule: login_other\n    ip: 203.0.113.9\n    owner: it@brand.example\n"
        "    reason: office NAT\n    expires: 2999-01-01\n"
    )
    directory = rules_dir(tmp_path, text)
    with capture_logs() as logs:
        load_rules(directory)
    warned = [e for e in logs if e["event"] == "rules.exception_expired"]
    assert [(w["rule"], w["owner"]) for w in warned] == [("login_seen", "secops@brand.example")]
    runner = CliRunner()
    listed = runner.invoke(main, ["rules", "exceptions", str(directory)])
    assert listed.exit_code == 1, listed.output
    lines = listed.output.splitlines()
    assert lines[0].startswith("expired login_seen identity=alice until 2020-01-01")
    assert lines[1].startswith("active  login_other ip=203.0.113.9 until 2999-01-01")
    assert lines[-1] == "exceptions: 2, 1 active, 1 expired"
    as_json = runner.invoke(main, ["rules", "exceptions", str(directory), "--json"])
    states = [orjson.loads(line)["state"] for line in as_json.output.splitlines()]
    assert states == ["expired", "active"]
    at = "2019-06-01T00:00:00Z"
    back_then = runner.invoke(main, ["rules", "exceptions", str(directory), "--at", at])
    assert back_then.exit_code == 0, back_then.output
    tested = runner.invoke(main, ["rules", "test", str(directory)])
    assert tested.exit_code == 0, tested.output
    assert "EXPIRED exception login_seen identity=alice" in tested.output


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (one("identity", "alice", rule="nope"), r"'nope' is not a login or identity-event rule"),
        (one("ip", "203.0.113.300"), r"ip: '203.0.113.300' is not an IP address"),
        (one("cidr", "203.0.113.7/24"), r"cidr: '203.0.113.7/24' is not a network"),
        (one("identity", "alice", expires="soon"), r"expires"),
        (one("identity", "alice").replace("owner:", "x:"), "owner: required"),
        (one("identity", "alice") + "    ip: 203.0.113.9\n", "exactly one of .*got identity, ip"),
        (one("identity", "alice").replace("reason", "why"), "unknown key 'why'"),
        (one("identity", "alice") + one("identity", "alice")[12:], "the same rule and identity"),
        ("exceptions: {rule: x}\n", "exceptions: expected a list"),
        ("rules: []\n", "unknown key 'rules'"),
    ],
)
def test_invalid_exceptions_refuse_to_load_with_file_and_line(
    tmp_path: Path, text: str, says: str
) -> None:
    """A bad exceptions file stops the rule set from loading, naming the file, the line and
    what is wrong."""
    with pytest.raises(RuleError, match=rf"exceptions\.yaml:\d+: .*{says}"):
        load_rules(rules_dir(tmp_path, text))


def test_an_exception_for_a_leak_rule_is_refused(tmp_path: Path) -> None:
    """Exceptions apply to login rules: one naming a leak rule would never apply, so it is a
    load error rather than a silent no-op."""
    directory = tmp_path / "shipped"
    shutil.copytree(REPO / "rules", directory)
    (directory / EXCEPTIONS_FILE).write_text(one("identity", "alice", rule="leak_grant_holder"))
    with pytest.raises(
        RuleError, match="'leak_grant_holder' is not a login or identity-event rule"
    ):
        load_rules(directory)


ABSENT = """\
id: challenge_abandoned
title: An MFA challenge never completed
description: a challenge with no success within five minutes (a test rule)
status: stable
severity: high
runbook: docs/runbooks/x.md
falsepositives: [none]
inputs: [login]
kind: sequence
sequence:
  first: [{field: outcome, op: eq, value: challenge}]
  then: [{field: outcome, op: eq, value: success}]
  window: 300
  absent: true
dedup: 0
response: [notify]
tests:
  - name: abandoned
    expect: fire
    flush_at: 3600
    events: [{identity: alice, outcome: challenge}]
  - name: completed
    expect: no_fire
    flush_at: 3600
    events: [{identity: alice, outcome: challenge}, {identity: alice, outcome: success, at: 5}]
"""


def test_an_absent_sequence_fired_by_the_timer_is_suppressed_too(tmp_path: Path) -> None:
    """A rule that fires from RuleEngine.flush (no follow-up within its window) honours its
    exceptions like one that fires on an event."""
    directory = rules_dir(tmp_path, one("identity", "alice", rule="challenge_abandoned"))
    (directory / "challenge_abandoned.yaml").write_text(ABSENT, encoding="utf-8")
    engine = RuleEngine(load_rules(directory), {})
    state, lifecycle, registry = RuleState(), StateStore(), Registry()
    for n, who in enumerate(("alice", "bob")):
        engine.evaluate(ev(n, identity=who, outcome="challenge"), registry, lifecycle, state)
    fired = engine.flush(T0 + timedelta(hours=1), registry, lifecycle, state)
    assert [(d.rule, d.identity) for d in fired if d.alerts] == [("challenge_abandoned", "bob")]
    assert [(s.rule, s.identity) for s in engine.suppressor.take()] == [
        ("challenge_abandoned", "alice")
    ]


def test_rules_without_exceptions_keep_their_own_check(tmp_path: Path) -> None:
    """Off the hot path: only a rule that has an exception gets a wrapped check; the others
    run exactly the compiled check they had (no per-event cost at all)."""
    engine = RuleEngine(load_rules(rules_dir(tmp_path, one("identity", "alice"))), {})
    checks = {c.id: c.check for c in engine._compiled}
    assert checks["login_other"].__func__ is type(engine._compiled[0])._match  # type: ignore[attr-defined]
    assert getattr(checks["login_seen"], "__name__", "") == "guarded"
    bare = RuleEngine(load_rules(rules_dir(tmp_path / "b", None)), {})
    assert bare.suppressor.by_rule == {}
    assert all(hasattr(c.check, "__func__") for c in bare._compiled)


def test_replay_says_what_an_exception_suppressed(tmp_path: Path) -> None:
    """`accessguard replay` prints a `suppressed` object naming the rule, the event and the
    exception (owner, reason, expiry) where the detection would have been."""
    ruleset = load_rules(rules_dir(tmp_path, one("cidr", "203.0.113.0/24")))
    lines = [
        orjson.dumps({"kind": "login", **ev(1, identity="alice", ip="203.0.113.5").to_dict()}),
        orjson.dumps({"kind": "login", **ev(2, identity="alice", ip="198.51.100.5").to_dict()}),
    ]
    out = list(replay(Registry(), [x.decode() for x in lines], at=T0, providers={}, rules=ruleset))
    seen = [(o["type"], o.get("rule"), o.get("event_id")) for o in out if o["type"] != "alert"]
    assert ("suppressed", "login_seen", "e1") in seen
    assert ("detection", "login_seen", "e2") in seen
    assert ("detection", "login_seen", "e1") not in seen
    suppressed = next(o for o in out if o["type"] == "suppressed")
    assert suppressed["exception"]["owner"] == "secops@brand.example"
    assert suppressed["exception"]["expires"].startswith("2099-01-01T00:00:00")


def test_the_shipped_exceptions_file_loads() -> None:
    """rules/exceptions.yaml ships (empty, with a commented example) and is not a rule."""
    ruleset = load_rules(REPO / "rules")
    assert ruleset.exceptions == ()
    assert "exceptions" not in {r.id for r in ruleset.rules}
