"""The rule engine: loading, each kind across its window edges, dedup, lifecycle, state."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.detect.checks import Compiled
from streams.detect.engine import RuleEngine, haversine_km
from streams.detect.fields import LeakSubject
from streams.detect.load import load_rules, parse_rule
from streams.detect.model import Detection, RuleSet
from streams.detect.state import RuleState
from streams.detect.testing import load_test_providers
from streams.model.records import LeakRecord, LoginEvent
from streams.model.registry import Registry
from streams.model.registry_yaml import load_registry, parse_registry
from streams.model.state import IdentityState, StateStore
from streams.support.errors import RuleError

REPO = Path(__file__).resolve().parent.parent
#: The providers the shipped rules' tests assume (rules/tests/providers.yaml).
TEST_PROVIDERS = load_test_providers(REPO / "rules")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

TESTS_BLOCK = """
tests:
  - name: positive
    expect: fire
    events: [{identity: alice, outcome: success}]
  - name: negative
    expect: no_fire
    events: [{identity: alice, outcome: failure}]
"""


def rule_text(
    rule_id: str,
    kind: str,
    body: str = "",
    *,
    status: str = "stable",
    response: str = "[notify]",
    dedup: int = 0,
    conditions: str = "[]",
) -> str:
    return (
        f"id: {rule_id}\ntitle: Test rule {rule_id}\ndescription: for tests\n"
        f"status: {status}\nseverity: high\nrunbook: docs/runbooks/x.md\n"
        f"falsepositives: [none]\ninputs: [login]\nkind: {kind}\n"
        f"conditions: {conditions}\n{body}\ndedup: {dedup}\nresponse: {response}\n{TESTS_BLOCK}"
    )


def make_rule(rule_id: str, kind: str, body: str = "", **kw: Any) -> RuleSet:
    rule, problems = parse_rule(rule_text(rule_id, kind, body, **kw), f"/r/{rule_id}.yaml")
    assert problems == []
    assert rule is not None
    return RuleSet((rule,))


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(REPO / "rules" / "tests" / "registry.yaml")


def ev(n: int, at: float, **fields: Any) -> LoginEvent:
    data: dict[str, Any] = {
        "event_id": f"e{n}",
        "time": (T0 + timedelta(seconds=at)).isoformat(),
        "principal": f"{fields.get('identity', 'someone')}@brand.example",
        "outcome": "success",
        **fields,
    }
    return LoginEvent.from_dict(data)


class Runner:
    """One engine, one state, one lifecycle: feeds events and collects detections."""

    def __init__(self, ruleset: RuleSet, registry: Registry, state: RuleState | None = None):
        self.engine = RuleEngine(ruleset, TEST_PROVIDERS)
        self.registry = registry
        self.lifecycle = StateStore()
        self.state = state if state is not None else RuleState()
        self.n = 0

    def feed(self, at: float, **fields: Any) -> list[Detection]:
        self.n += 1
        return self.engine.evaluate(
            ev(self.n, at, **fields), self.registry, self.lifecycle, self.state
        )

    def alerts(self, at: float, **fields: Any) -> int:
        return sum(len(d.alerts) for d in self.feed(at, **fields))


# ---- loading ------------------------------------------------------------------------------


def test_every_loading_error_is_reported_at_once_with_file_and_line(tmp_path: Path) -> None:
    """Problems from several files come back together, each as path:line: message."""
    (tmp_path / "first_rule.yaml").write_text(
        rule_text(
            "first_rule",
            "threshold",
            "threshold: {window: 60}",
            status="staged",
            response="[revoke_sessions]",
        ),
    )
    (tmp_path / "second.yaml").write_text(
        rule_text("not_second", "match", conditions="[{field: outcom, op: eq, value: x}]")
    )
    (tmp_path / "broken.yaml").write_text("id: [unclosed\n")
    with pytest.raises(RuleError) as info:
        load_rules(tmp_path)
    problems = info.value.problems
    first, second, broken = (
        str(tmp_path / n) for n in ("first_rule.yaml", "second.yaml", "broken.yaml")
    )
    assert f"{first}:11: rule first_rule: threshold: count: required" in problems
    assert any(p.startswith(f"{first}:13:") and "only a stable rule" in p for p in problems), (
        problems
    )
    assert f"{second}:1: rule: id: 'not_second' must equal the file name ('second')" in problems
    assert any(p.startswith(f"{second}:10:") and "unknown field 'outcom'" in p for p in problems)
    assert any(p.startswith(f"{broken}:2: YAML syntax error") for p in problems)
    assert "rules invalid" in str(info.value)


def test_a_missing_directory_refuses_to_start(tmp_path: Path) -> None:
    """An absent rules directory is an error, not an empty rule set."""
    with pytest.raises(RuleError, match="not a directory of rules"):
        load_rules(tmp_path / "nope")


# ---- kinds across window edges -----------------------------------------------------------


def test_threshold_counts_inside_the_window_only(registry: Registry) -> None:
    """Three failures within 60 s fire; an event exactly 60 s older is outside the window."""
    rules = make_rule(
        "thr",
        "threshold",
        "threshold: {window: 60, count: 3}",
        conditions="[{field: outcome, op: eq, value: failure}]",
    )
    edge = Runner(rules, registry)
    assert [edge.alerts(t, identity="alice", outcome="failure") for t in (0, 30, 60)] == [0, 0, 0]
    inside = Runner(rules, registry)
    assert [inside.alerts(t, identity="alice", outcome="failure") for t in (0, 30, 59)] == [0, 0, 1]
    other = Runner(rules, registry)
    assert other.alerts(0, identity="alice", outcome="failure") == 0
    assert other.alerts(1, identity="bob", outcome="failure") == 0
    assert other.alerts(2, identity="alice", outcome="success") == 0
    assert other.alerts(3, identity="alice", outcome="failure") == 0


def test_threshold_distinct_counts_different_values(registry: Registry) -> None:
    """Distinct principals per IP: repeats do not count, the window edge is exclusive."""
    rules = make_rule(
        "spray",
        "threshold",
        "group_by: ip\nthreshold: {window: 100, count: 3, distinct: principal}",
    )
    r = Runner(rules, registry)
    assert r.alerts(0, identity="alice", ip="192.0.2.1") == 0
    assert r.alerts(10, identity="alice", ip="192.0.2.1") == 0
    assert r.alerts(20, identity="bob", ip="192.0.2.1") == 0
    assert r.alerts(30, identity="sam", ip="192.0.2.2") == 0
    assert r.alerts(110, identity="sam", ip="192.0.2.1") == 0  # alice's last (10) is 100 s old
    assert r.alerts(115, identity="dan", ip="192.0.2.1") == 1  # bob, sam, dan


def test_velocity_fires_only_above_the_speed_and_distance(registry: Registry) -> None:
    """Faster than max_speed over at least min_distance fires; exactly at the speed does not."""
    milan, sg = (45.46, 9.19), (1.35, 103.82)
    dist = haversine_km(*milan, *sg)
    assert 10_000 < dist < 10_500

    def run(max_speed: float, min_distance: float, dt: float) -> int:
        rules = make_rule(
            "vel",
            "velocity",
            f"velocity: {{max_speed_kmh: {max_speed}, min_distance_km: {min_distance}}}",
        )
        r = Runner(rules, registry)
        r.feed(0, identity="alice", geo={"lat": milan[0], "lon": milan[1], "country": "IT"})
        return r.alerts(dt, identity="alice", geo={"lat": sg[0], "lon": sg[1], "country": "SG"})

    assert run(dist - 1, 500, 3600) == 1
    assert run(dist + 1, 500, 3600) == 0
    assert run(900, dist + 1, 60) == 0  # below min_distance
    assert run(900, 500, 0) == 1  # same instant, far apart


def test_velocity_ignores_out_of_order_and_geo_less_events(registry: Registry) -> None:
    """Consecutive means event-time order; events without coordinates are skipped."""
    rules = make_rule("vel", "velocity", "velocity: {max_speed_kmh: 900, min_distance_km: 500}")
    r = Runner(rules, registry)
    r.feed(100, identity="alice", geo={"lat": 45.46, "lon": 9.19})
    assert r.alerts(50, identity="alice", geo={"lat": 1.35, "lon": 103.82}) == 0
    assert r.alerts(101, identity="alice", geo={"country": "SG"}) == 0
    assert r.alerts(200, identity="alice") == 0


def test_first_seen_forgets_after_the_lookback(registry: Registry) -> None:
    """A value seen exactly lookback ago is new again; one day less is still known."""
    rules = make_rule("fs", "first_seen", "first_seen: {field: geo.country, lookback_days: 10}")
    day = 86400
    r = Runner(rules, registry)
    assert r.alerts(0, identity="alice", geo={"country": "IT"}) == 0  # learning
    assert r.alerts(9 * day, identity="alice", geo={"country": "IT"}) == 0
    assert r.alerts(19 * day, identity="alice", geo={"country": "IT"}) == 1  # 10 days exactly
    assert r.alerts(19 * day + 1, identity="alice", geo={"country": "FR"}) == 1
    assert r.alerts(19 * day + 2, identity="alice", geo={"country": "FR"}) == 0


def test_first_seen_can_alert_on_the_first_value(registry: Registry) -> None:
    """learn_first: false alerts on an identity's very first value too."""
    rules = make_rule(
        "fs", "first_seen", "first_seen: {field: device, lookback_days: 1, learn_first: false}"
    )
    r = Runner(rules, registry)
    assert r.alerts(0, identity="alice", device="d1") == 1


SEQ = """sequence:
  first: [{field: mfa_result, op: eq, value: denied}]
  then: [{field: mfa_result, op: eq, value: success}]
  window: 100
  count: 2"""


def test_sequence_needs_the_firsts_within_the_window(registry: Registry) -> None:
    """Two denials then a success within 100 s fire; at exactly 100 s the first has expired."""
    rules = make_rule("seq", "sequence", SEQ)
    edge = Runner(rules, registry)
    edge.feed(0, identity="alice", mfa_result="denied", outcome="failure")
    edge.feed(50, identity="alice", mfa_result="denied", outcome="failure")
    assert edge.alerts(100, identity="alice", mfa_result="success") == 0
    inside = Runner(rules, registry)
    inside.feed(0, identity="alice", mfa_result="denied", outcome="failure")
    inside.feed(50, identity="alice", mfa_result="denied", outcome="failure")
    assert inside.alerts(99, identity="alice", mfa_result="success") == 1
    # the sequence is consumed: another success does not fire again
    assert inside.alerts(120, identity="alice", mfa_result="success") == 0


RUN = """sequence:
  first: [{field: outcome, op: eq, value: failure}]
  then: [{field: outcome, op: eq, value: success}]
  window: 100
  count: 3
  consecutive: true"""


def test_a_consecutive_sequence_counts_only_an_unbroken_run(registry: Registry) -> None:
    """consecutive: a success ends the run of failures before it (firing or not); one
    arriving late from before that success is not part of the next run either."""
    rules = make_rule("run", "sequence", RUN)
    broken = Runner(rules, registry)
    for at, outcome in [(0, "failure"), (10, "failure"), (20, "success"), (30, "failure")]:
        broken.feed(at, identity="alice", outcome=outcome)
    assert broken.alerts(40, identity="alice", outcome="success") == 0
    late = Runner(rules, registry)
    for at, outcome in [(0, "failure"), (10, "failure"), (20, "success"), (30, "failure")]:
        late.feed(at, identity="alice", outcome=outcome)
    late.feed(15, identity="alice", outcome="failure")  # arrives late, from before the success
    assert late.alerts(40, identity="alice", outcome="success") == 0
    unbroken = Runner(rules, registry)
    for at, outcome in [(0, "failure"), (10, "success"), (20, "failure"), (30, "failure")]:
        unbroken.feed(at, identity="alice", outcome=outcome)
    unbroken.feed(35, identity="alice", outcome="failure")
    assert unbroken.alerts(40, identity="alice", outcome="success") == 1
    # not consecutive (the default), the success between them does not matter
    loose = Runner(make_rule("loose", "sequence", RUN.replace("true", "false")), registry)
    for at, outcome in [(0, "failure"), (10, "failure"), (20, "success"), (30, "failure")]:
        loose.feed(at, identity="alice", outcome=outcome)
    assert loose.alerts(40, identity="alice", outcome="success") == 1


def test_consecutive_is_refused_where_there_is_no_run() -> None:
    """An absent sequence or one that starts with an identity event has no run to break."""
    for body in (
        ABSENT + "\n  consecutive: true",
        RUN.replace("first: [", "first_input: identity_event\n  first: [")
        .replace("outcome, op: eq, value: failure", "type, op: eq, value: mfa.factor_reset")
        .replace("count: 3", "count: 1"),
    ):
        _rule, problems = parse_rule(rule_text("c", "sequence", body), "/r/c.yaml")
        assert any("consecutive: a run of login first events" in p for p in problems), problems


ABSENT = """sequence:
  first: [{field: outcome, op: eq, value: challenge}]
  then: [{field: outcome, op: eq, value: success}]
  window: 300
  absent: true"""


def test_absent_sequence_fires_when_the_follow_up_never_comes(registry: Registry) -> None:
    """A not followed by B within the window fires at the deadline (flush or next event)."""
    rules = make_rule("abs", "sequence", ABSENT)
    followed = Runner(rules, registry)
    followed.feed(0, identity="alice", outcome="challenge")
    assert followed.alerts(299, identity="alice", outcome="success") == 0
    flushed = followed.engine.flush(
        T0 + timedelta(seconds=1000), registry, followed.lifecycle, followed.state
    )
    assert flushed == []

    late = Runner(rules, registry)
    late.feed(0, identity="alice", outcome="challenge")
    assert (
        late.engine.flush(T0 + timedelta(seconds=299), registry, late.lifecycle, late.state) == []
    )
    out = late.engine.flush(T0 + timedelta(seconds=300), registry, late.lifecycle, late.state)
    assert [d.event_id for d in out] == ["e1"]  # the alert is about the unanswered challenge

    at_deadline = Runner(rules, registry)
    at_deadline.feed(0, identity="alice", outcome="challenge")
    detections = at_deadline.feed(300, identity="alice", outcome="success")
    assert [d.event_id for d in detections if d.alerts] == ["e1"]


# ---- dedup, lifecycle, responses --------------------------------------------------------


def test_dedup_window_gives_one_alert_per_rule_and_group(registry: Registry) -> None:
    """Within the dedup window a match is a deduplicated detection with no alert or action."""
    rules = make_rule("dd", "match", dedup=60)
    r = Runner(rules, registry)
    first = r.feed(0, identity="alice")
    again = r.feed(59, identity="alice")
    other = r.feed(59, identity="bob")
    later = r.feed(60, identity="alice")
    assert [len(d.alerts) for d in first + again + other + later] == [1, 0, 1, 1]
    assert again[0].deduplicated
    assert again[0].actions == ()
    assert first[0].alerts[0].dedup_key == f"dd:alice:{int((T0.timestamp()) // 60)}"


def test_staged_rules_alert_and_never_act(registry: Registry) -> None:
    """A staged rule's actions are dropped (even built by hand) and the alert says so;
    declaring them in YAML is a load error."""
    stable = make_rule("stg", "match", response="[revoke_sessions, page]")
    staged = RuleSet((replace(stable.rules[0], status="staged"),))
    r = Runner(staged, registry)
    (det,) = r.feed(0, identity="alice")
    assert det.actions == ()
    assert det.dropped == ("revoke_sessions",)
    assert "was not executed" in det.alerts[0].details["done"]
    assert det.alerts[0].details["route"] == "page"
    _, problems = parse_rule(
        rule_text("stg", "match", status="staged", response="[revoke_sessions]"), "/r/stg.yaml"
    )
    assert any("only a stable rule" in p for p in problems)


def test_deprecated_rules_do_not_run(registry: Registry) -> None:
    """A deprecated rule never evaluates."""
    rules = make_rule("dep", "match", status="deprecated")
    assert Runner(rules, registry).feed(0, identity="alice") == []


def test_stable_responses_are_idempotent_actions(registry: Registry) -> None:
    """Actions carry cause rule:<id>:<event id>; the same event gives the same keys."""
    rules = make_rule(
        "act",
        "match",
        response="[revoke_sessions, remove_grant, force_mfa_reenrolment, "
        "rotate_shared_credential, page]",
    )
    event = ev(1, 0, identity="alice", target_account="x-brand")
    keys = []
    for _ in range(2):
        dets = RuleEngine(rules, TEST_PROVIDERS).evaluate(
            event, registry, StateStore(), RuleState()
        )
        keys.append([a.idempotency_key for d in dets for a in d.actions])
        actions = [a for d in dets for a in d.actions]
    assert keys[0] == keys[1]
    assert {a.cause for a in actions} == {"rule:act:e1"}
    by_kind = {(a.action, a.provider) for a in actions}
    assert ("revoke_sessions", "okta") in by_kind
    assert ("revoke_sessions", "hootsuite") in by_kind
    assert ("force_mfa_reenrolment", "okta") in by_kind
    assert ("force_mfa_reenrolment", "entra") in by_kind
    assert ("remove_grant", "hootsuite") in by_kind
    assert ("rotate_shared_credential", "vault") in by_kind
    removal = next(a for a in actions if a.action == "remove_grant")
    assert removal.params == {
        "user_ref": "hs-1",
        "account_handle": "@brand",
        "platform": "x",
        "role": "full_publishing",
        "via": "shared_credential",
    }


def test_alerts_say_what_why_what_was_done_and_carry_no_login_name(registry: Registry) -> None:
    """The alert names the account, why it matters, the actions and the runbook; the raw
    login name (an e-mail) appears nowhere in it."""
    rules = load_rules(REPO / "rules")
    r = Runner(rules, registry)
    r.lifecycle.put(IdentityState("sam", status="offboarded", status_cause="hr:terminated:x"))
    dets = r.feed(0, identity="sam", target_account="li-brand", ip="198.51.100.7")
    (det,) = [d for d in dets if d.rule == "login_by_offboarded_identity"]
    alert = det.alerts[0]
    assert alert.severity == "critical"
    assert "linkedin brand (li-brand)" in alert.title
    assert alert.runbook == "docs/runbooks/login-by-offboarded-identity.md"
    assert alert.details["why_it_matters"].startswith("Someone who left")
    assert alert.details["done"].startswith("accessguard requested revoke_sessions at")
    assert "sam@brand.example" not in orjson.dumps(alert.to_dict()).decode()


def test_unknown_principal_cannot_be_acted_on_but_is_noted(registry: Registry) -> None:
    """Identity-scoped actions are skipped for an unresolved principal, with a note."""
    rules = make_rule("unk", "match", response="[revoke_sessions]")
    (det,) = Runner(rules, registry).feed(0, principal="x@evil.example")
    assert det.actions == ()
    assert det.alerts[0].details["notes"] == [
        "revoke_sessions: skipped, the principal is not a registry identity"
    ]


def test_a_response_with_nowhere_to_go_is_said_in_the_alert() -> None:
    """An identity whose only alias is at an unconfigured provider and who holds no grant:
    the stable rule's revoke and re-enrolment cannot be carried out, and the alert says so
    instead of "a human decides"."""
    lone, problems = parse_registry(
        "identities:\n"
        "  - {id: lee, name: Lee, kind: employee, emails: [lee@brand.example],"
        " aliases: {okta: 00u-lee}}\n"
    )
    assert problems == []
    rules = make_rule("nowhere", "match", response="[revoke_sessions, force_mfa_reenrolment]")
    engine = RuleEngine(rules, {})
    (det,) = engine.evaluate(ev(1, 0, identity="lee"), lone, StateStore(), RuleState())
    assert det.actions == ()
    details = det.alerts[0].details
    assert details["notes"] == [
        "revoke_sessions: no configured provider holds a session of the identity",
        "force_mfa_reenrolment: the identity has no alias at a configured IdP",
    ]
    assert details["done"].startswith("nothing: its response could not be carried out (")


def test_an_exception_in_one_rule_is_reported_not_swallowed(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rule that raises yields an error detection and a count; other rules still run."""
    ok = make_rule("fine", "match").rules[0]
    bad = make_rule("boom", "match").rules[0]
    matched = Compiled._match

    def explode(self: Compiled, *args: Any) -> Any:
        if self.id == "boom":
            raise ZeroDivisionError("division by zero")
        return matched(self, *args)

    monkeypatch.setattr(Compiled, "_match", explode)  # bound when the engine compiles
    engine = RuleEngine(RuleSet((bad, ok)), TEST_PROVIDERS)
    dets = engine.evaluate(ev(1, 0, identity="alice"), registry, StateStore(), RuleState())
    assert [(d.rule, d.kind) for d in dets] == [("boom", "error"), ("fine", "detection")]
    assert dets[0].error == "ZeroDivisionError: division by zero"
    assert engine.errors == {"boom": 1, "fine": 0}


# ---- state: restart and bounds ----------------------------------------------------------


def test_state_survives_a_restart_mid_window(registry: Registry) -> None:
    """to_dict/from_dict (through JSON) mid-window, then the window continues and fires."""
    rules = make_rule("thr", "threshold", "threshold: {window: 60, count: 3}", dedup=300)
    r = Runner(rules, registry)
    r.alerts(0, identity="alice")
    r.alerts(10, identity="alice")
    saved = orjson.loads(orjson.dumps(r.state.to_dict()))
    restarted = Runner(rules, registry, RuleState.from_dict(saved))
    restarted.n = r.n
    assert restarted.alerts(20, identity="alice") == 1
    # the dedup time is state too: after another restart it still suppresses
    again = Runner(rules, registry, RuleState.from_dict(restarted.state.to_dict()))
    again.n = 10
    assert again.alerts(30, identity="alice") == 0


def test_state_per_key_round_trip_and_dirty_keys(registry: Registry) -> None:
    """Keys changed by an event are reported dirty; one key moves in and out on its own."""
    rules = make_rule("fs", "first_seen", "first_seen: {field: device, lookback_days: 30}")
    r = Runner(rules, registry)
    r.feed(0, identity="alice", device="d1")
    r.feed(1, identity="bob", device="d1")
    assert r.state.take_dirty() == ["alice", "bob"]
    assert r.state.take_dirty() == []
    blob = orjson.dumps(r.state.key_to_dict("alice"))
    fresh = RuleState()
    fresh.load_key("alice", orjson.loads(blob))
    s = Runner(rules, registry, fresh)
    assert s.alerts(5, identity="alice", device="d1") == 0
    assert s.alerts(6, identity="alice", device="d2") == 1
    fresh.load_key("alice", None)
    assert "alice" not in fresh


def test_state_stays_bounded_for_one_busy_key(registry: Registry) -> None:
    """100k events for one identity keep every rule's slot capped."""
    rules = load_rules(REPO / "rules")
    r = Runner(rules, registry)
    lat = 0.0
    for i in range(100_000):
        lat = (lat + 7.3) % 80
        r.feed(
            i,
            identity="alice",
            outcome=("failure", "success", "challenge")[i % 3],
            mfa_method="push",
            mfa_result=("denied", "success", "timeout")[i % 3],
            device=f"dev-{i}",
            ip=f"10.0.{i % 256}.{(i // 256) % 256}",
            geo={"country": f"C{i % 500}", "lat": lat, "lon": lat},
            target_account="x-brand",
        )
    # caps: threshold count 10 + distinct 5, 64 countries, 32 devices, 3 pushes,
    # one location, a few scalars per slot; plus the IP keys of the spray rule
    alice = r.state.key_to_dict("alice")
    assert alice is not None
    size = sum(
        len(v) if isinstance(v, list | dict) else 1
        for slot in alice["rules"].values()
        for v in slot.values()
    )
    assert size < 200, alice
    assert len(r.state) <= 1 + 65_536


def test_state_key_count_is_capped_and_expires_by_event_time(registry: Registry) -> None:
    """At most max_keys keys stay (oldest evicted); expire() drops slots past their horizon."""
    rules = make_rule("thr", "threshold", "threshold: {window: 60, count: 3}")
    r = Runner(rules, registry, RuleState(max_keys=100))
    for i in range(1000):
        r.feed(i, principal=f"p{i}@x.example")
    assert len(r.state) == 100
    assert r.state.evicted == 900
    dropped = r.state.expire(T0 + timedelta(seconds=1000 + 60), r.engine.horizons)
    assert dropped == 100
    assert len(r.state) == 0


def test_timing_of_the_shipped_rules(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    """Prints microseconds per event for all shipped rules (informational, not asserted)."""
    rules = load_rules(REPO / "rules")
    engine = RuleEngine(rules, TEST_PROVIDERS)
    lifecycle, state = StateStore(), RuleState()
    who = ("alice", "bob", "sam", "dan", None)
    events = [
        ev(
            i,
            i,
            identity=who[i % 5],
            principal=f"u{i % 50}@brand.example",
            outcome=("success", "failure", "failure", "challenge")[i % 4],
            mfa_method="push",
            mfa_result=("success", "denied", "timeout", "none")[i % 4],
            ip=f"192.0.2.{i % 200}",
            device=f"dev-{i % 7}",
            geo={"country": ("IT", "FR", "DE")[i % 3], "lat": 45.0 + i % 3, "lon": 9.0},
            target_account=("ig-brand", "x-brand", "li-brand", None)[i % 4],
        )
        for i in range(20_000)
    ]
    start = time.perf_counter()
    for event in events:
        engine.evaluate(event, registry, lifecycle, state)
    per_event = (time.perf_counter() - start) / len(events) * 1e6
    with capsys.disabled():
        print(
            f"\n[rules timing] {len(rules)} rules: {per_event:.1f} us/event, "
            f"{per_event / len(rules):.1f} us/event/rule"
        )
    assert all(v == 0 for v in engine.errors.values())


# ---- leak rules (inputs: [leak]) -----------------------------------------------------------

LEAK_TESTS = """
tests:
  - name: positive
    expect: fire
    events:
      - leak: {breach: B, data_classes: [Passwords], password_present: true}
        subject: {identity: alice}
  - name: negative
    expect: no_fire
    events:
      - leak: {breach: B, data_classes: [Phone numbers]}
        subject: {identity: alice}
"""


def leak_rule_text(
    rule_id: str = "lk",
    *,
    conditions: str = "[{field: leak.credential, op: eq, value: true}]",
    response: str = "[notify]",
    extra: str = "",
    kind: str = "match",
    dedup: int = 0,
    inputs: str = "[leak]",
    tests: str = LEAK_TESTS,
) -> str:
    return (
        f"id: {rule_id}\ntitle: Leak {rule_id}\ndescription: for tests\nstatus: stable\n"
        f"severity: high\nrunbook: docs/runbooks/x.md\nfalsepositives: [none]\n"
        f"inputs: {inputs}\nkind: {kind}\nconditions: {conditions}\n{extra}\n"
        f"dedup: {dedup}\nresponse: {response}\n{tests}"
    )


def leak_subject(kind: str, ident: str, **record: Any) -> LeakSubject:
    data = {"principal": f"{ident}@brand.example", "breach": "MegaBank", "source": "t", **record}
    return LeakSubject(LeakRecord.from_dict(data), kind, ident)


def test_leak_rules_are_validated_for_their_input() -> None:
    """A leak rule reads leak fields only, is a match rule without group_by or dedup, may not
    mix inputs, and declares leak responses only; list fields take contains/exists only."""
    good, problems = parse_rule(leak_rule_text(), "/r/lk.yaml")
    assert problems == []
    assert good is not None
    assert good.leak
    cases = {
        "field: unknown field 'outcome'": leak_rule_text(
            conditions="[{field: outcome, op: eq, value: success}]"
        ),
        "kind: a leak rule is a match rule": leak_rule_text(
            kind="threshold", extra="threshold: {window: 60, count: 2}"
        ),
        "group_by: a leak rule": leak_rule_text(extra="group_by: identity"),
        "dedup: a leak rule's alerts": leak_rule_text(dedup=60),
        "inputs: a leak rule reads leak subjects only": leak_rule_text(inputs="[leak, login]"),
        "response: 'remove_grant' is not one of": leak_rule_text(response="[remove_grant]"),
        "a list field supports contains and exists only": leak_rule_text(
            conditions="[{field: leak.data_classes, op: eq, value: Passwords}]"
        ),
        "'nope' is not one of": leak_rule_text(
            conditions="[{field: leak.flags, op: contains, value: nope}]"
        ),
        "subject: exactly one of identity or account": leak_rule_text(
            tests=LEAK_TESTS.replace("{identity: alice}", "{identity: alice, account: x}", 1)
        ),
    }
    for needle, text in cases.items():
        _, problems = parse_rule(text, "/r/lk.yaml")
        assert any(needle in p for p in problems), (needle, problems)
    # login fields are not leak fields and the other way round
    _, problems = parse_rule(
        rule_text("lg", "match", conditions="[{field: leak.credential, op: eq, value: true}]"),
        "/r/lg.yaml",
    )
    assert any("unknown field 'leak.credential'" in p for p in problems)


def test_leak_rules_run_on_leak_subjects_only(registry: Registry) -> None:
    """evaluate() (logins) never runs a leak rule and evaluate_leak() never a login rule;
    list fields, subject.kind and registry facts are read from the subject."""
    text = leak_rule_text(
        conditions="[{field: leak.data_classes, op: contains, value: Password hashes}, "
        "{field: subject.kind, op: eq, value: identity}, "
        "{field: identity.max_role, op: gte, value: full_publishing}]",
        response="[revoke_sessions, force_mfa_reenrolment, rotate_shared_credential, page]",
    )
    rule, problems = parse_rule(text, "/r/lk.yaml")
    assert problems == []
    assert rule is not None
    login = make_rule("lg", "match").rules[0]
    engine = RuleEngine(RuleSet((rule, login)), TEST_PROVIDERS)
    life = StateStore()
    dets = engine.evaluate(ev(1, 0, identity="alice"), registry, life, RuleState())
    assert [d.rule for d in dets] == ["lg"]
    hashes = {"data_classes": ["Password hashes"]}
    (det,) = engine.evaluate_leak(leak_subject("identity", "alice", **hashes), registry, life)
    assert det.rule == "lk"
    assert {a.cause for a in det.actions} == {"leak:MegaBank:" + det.event_id.split(":")[2]}
    assert {a.action for a in det.actions} == {"revoke_sessions", "force_mfa_reenrolment"}
    assert det.alerts[0].details["notes"] == [
        "rotate_shared_credential: only for a shared brand login"
    ]
    assert det.alerts[0].dedup_key.endswith(":alice:lk")
    assert "alice@brand.example" not in orjson.dumps(det.alerts[0].to_dict()).decode()
    assert engine.evaluate_leak(leak_subject("identity", "sam", **hashes), registry, life) == []
    assert engine.evaluate_leak(leak_subject("identity", "alice"), registry, life) == []
    shared = leak_subject("shared_account", "x-brand", **hashes)
    assert engine.evaluate_leak(shared, registry, life) == []


def test_an_exception_in_a_leak_rule_is_reported(registry: Registry) -> None:
    """A leak rule that raises yields an error detection and a count."""
    rule, _ = parse_rule(leak_rule_text(), "/r/lk.yaml")
    assert rule is not None
    engine = RuleEngine(RuleSet((rule,)), TEST_PROVIDERS)

    def explode(*_: Any) -> bool:
        raise ValueError("bad")

    engine._leak[0].match = explode
    subject = leak_subject("identity", "alice", password_present=True)
    (det,) = engine.evaluate_leak(subject, registry, StateStore())
    assert det.error == "ValueError: bad"
    assert engine.errors == {"lk": 1}
