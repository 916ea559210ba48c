"""Identity-security events in ``accessguard replay`` (streams/runtime/replay_identity.py):
canonical and vendor-wrapped lines evaluated by the identity rules as the worker does (dedup
in the rule state, exceptions), and reviewed with ``replay --diff``."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner

from streams.cli import main
from streams.decide.leaks import decide_leak, state_after_action
from streams.detect.identity import DedupMemory, IdentityRules, resolve_subjects
from streams.detect.load import load_rules
from streams.model.identity import IdentityEvent
from streams.model.records import LeakRecord
from streams.model.registry_yaml import load_registry
from streams.model.state import StateStore
from streams.runtime.replay import replay

REPO = Path(__file__).resolve().parent.parent
AT = datetime(2026, 3, 3, tzinfo=UTC)
PROVIDERS = {"okta-corp": "okta", "google-corp": "google"}
CLEAN_ENV = {k: None for k in os.environ if k.startswith("ACCESSGUARD_")}

#: Okta System Log: bob grants alice Super administrator (written for this test; shapes as
#: Okta documents them, the string "null" for the client IP as the vendor sends it).
OKTA_GRANT: dict[str, Any] = {
    "uuid": "2a992f80-0000-4000-8000-00000000aa01",
    "published": "2026-03-02T09:00:00.496000000Z",
    "eventType": "user.account.privilege.grant",
    "actor": {"id": "00u-bob", "type": "User", "alternateId": "bob@brand.example"},
    "client": {"ipAddress": "null", "geographicalContext": {"country": "France"}},
    "request": {"ipChain": [{"ip": "194.88.246.242"}]},
    "outcome": {"result": "SUCCESS"},
    "target": [{"id": "00u-alice", "type": "User", "alternateId": "alice@brand.example"}],
    "debugContext": {"debugData": {"privilegeGranted": "Super administrator"}},
}


def line(**data: Any) -> str:
    return orjson.dumps(data).decode()


def disabled(event_id: str, time: str, principal: str = "sam@brand.example") -> str:
    return line(kind="identity", event_id=event_id, vendor="google", time=time,
                type="account_disabled_by_vendor", reason="password_leak",
                principal=principal)  # fmt: skip


def run(lines: list[str], rules: Path = REPO / "rules") -> list[dict[str, Any]]:
    registry = load_registry(REPO / "rules" / "tests" / "registry.yaml")
    return list(replay(registry, lines, at=AT, providers=PROVIDERS, rules=load_rules(rules)))


def test_a_vendor_wrapped_okta_grant_fires_the_identity_rule_with_its_alert() -> None:
    """The Okta payload is normalised as the poller does, resolved (alice by her Okta id) and
    evaluated: one admin_privilege_granted detection, then its alert."""
    out = run([line(kind="identity", vendor="okta", event=OKTA_GRANT)])
    detections = [o for o in out if o["type"] == "detection"]
    assert [(d["rule"], d["identity"]) for d in detections] == [
        ("admin_privilege_granted", "alice")
    ]
    assert [o["rule"] for o in out if o["type"] == "alert"] == ["admin_privilege_granted"]


def test_canonical_lines_dedup_in_the_rule_state_and_act_like_the_worker() -> None:
    """Three vendor disables of sam: the first acts (the rule's cause), the second, 10 minutes
    later, is deduplicated, the third, an hour later, alerts again."""
    out = run([
        disabled("d1", "2026-03-02T09:00:00Z"),
        disabled("d2", "2026-03-02T09:10:00Z"),
        disabled("d3", "2026-03-02T10:05:00Z"),
    ])  # fmt: skip
    detections = [o for o in out if o["type"] == "detection"]
    assert [(d["event_id"], d["deduplicated"]) for d in detections] == [
        ("d1", False), ("d2", True), ("d3", False)]  # fmt: skip
    actions = [o for o in out if o["type"] == "action"]
    assert {a["cause"] for a in actions} == {
        "rule:vendor_disabled_compromised:d1",
        "rule:vendor_disabled_compromised:d3",
    }
    assert len([o for o in out if o["type"] == "alert"]) == 2


def test_dropped_and_unusable_lines_are_accounted_for() -> None:
    """A vendor type left out on purpose is skipped as dropped (not rejected); an unknown
    vendor and a line with no type are rejected with the reason; no rule set, rejected."""
    lifecycle = {**OKTA_GRANT, "eventType": "user.lifecycle.create"}
    out = run([
        line(kind="identity", vendor="okta", event=lifecycle),
        line(kind="identity", vendor="myspace", event={}),
        line(kind="identity", event_id="x", vendor="google", time="2026-03-02T09:00:00Z",
             principal="sam@brand.example"),
    ])  # fmt: skip
    assert out[0] == {
        "type": "skipped",
        "line": 1,
        "outcome": "dropped",
        "reason": "not a security event: user.lifecycle.create",
    }
    assert out[1]["type"] == "rejected"
    assert "okta, entra or google" in out[1]["reason"]
    assert out[2] == {"type": "rejected", "line": 3, "reason": "type: required"}
    registry = load_registry(REPO / "rules" / "tests" / "registry.yaml")
    [no_rules] = replay(registry, [disabled("d1", "2026-03-02T09:00:00Z")], at=AT, providers={})
    assert no_rules["reason"] == "identity lines need a rule set (--rules DIR)"


def test_replay_diff_shows_a_retuned_identity_rule(tmp_path: Path) -> None:
    """An old rule set where vendor_disabled_compromised was only high and did not page: the
    diff names the identity rule's detection as changed (severity and response)."""
    old = tmp_path / "old"
    shutil.copytree(REPO / "rules", old)
    path = old / "vendor_disabled_compromised.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace("severity: critical", "severity: high").replace(", page]", "]"),
        encoding="utf-8",
    )
    source = tmp_path / "in.ndjson"
    source.write_text(
        "\n".join([disabled("d1", "2026-03-02T09:00:00Z"),
                   line(kind="identity", vendor="okta", event=OKTA_GRANT)]) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    result = CliRunner().invoke(
        main,
        ["replay", "--config", str(REPO / "examples" / "config.yaml"),
         "--registry", str(REPO / "rules" / "tests" / "registry.yaml"),
         "--input", str(source), "--at", "2026-03-03T00:00:00Z",
         "--rules", str(REPO / "rules"), "--diff", str(old)],
        env=CLEAN_ENV,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = [orjson.loads(x) for x in result.stdout.splitlines()]
    [changed] = [o for o in out if o["type"] == "diff"]
    assert (changed["change"], changed["rule"], changed["event_id"]) == (
        "changed", "vendor_disabled_compromised", "d1")  # fmt: skip
    assert (changed["old"]["severity"], changed["new"]["severity"]) == ("high", "critical")
    assert "page" in changed["new"]["response"]
    assert "page" not in changed["old"]["response"]
    assert out[-1]["unchanged"] == 1  # admin_privilege_granted fires the same in both


# ---- rule exceptions for identity rules ------------------------------------------------------

EXCEPTIONS = """exceptions:
  - rule: vendor_disabled_compromised
    identity: sam
    owner: secops@brand.example
    reason: sam's test account is disabled by Google on purpose in the leak drill (SEC-9)
    expires: 2026-04-01
  - rule: admin_privilege_granted
    cidr: 194.88.246.0/24
    owner: it@brand.example
    reason: the quarterly admin rotation from the office network (SEC-10)
    expires: 2026-03-02T08:00:00Z
  - rule: impersonation_granted
    country: france
    owner: it@brand.example
    reason: the Paris support desk impersonates during onboarding (SEC-11)
    expires: 2026-04-01
"""


def with_exceptions(tmp_path: Path, text: str = EXCEPTIONS) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    (rules / "exceptions.yaml").write_text(text, encoding="utf-8")
    return rules


def test_an_identity_rule_exception_suppresses_alert_and_actions(tmp_path: Path) -> None:
    """sam's disable is covered by an active identity exception: a suppressed object, no
    detection, no action, no alert; alice's disable (no exception) still acts."""
    out = run(
        [disabled("d1", "2026-03-02T09:00:00Z"),
         disabled("d2", "2026-03-02T09:00:00Z", principal="alice@brand.example")],
        with_exceptions(tmp_path),
    )  # fmt: skip
    [suppressed] = [o for o in out if o["type"] == "suppressed"]
    assert (suppressed["rule"], suppressed["event_id"], suppressed["identity"]) == (
        "vendor_disabled_compromised", "d1", "sam")  # fmt: skip
    assert suppressed["exception"]["owner"] == "secops@brand.example"
    assert [(o["event_id"], o["identity"]) for o in out if o["type"] == "detection"] == [
        ("d2", "alice")
    ]
    assert {o["identity"] for o in out if o["type"] in ("action", "alert")} == {"alice"}


def test_identity_exceptions_by_network_and_country_and_expiry(tmp_path: Path) -> None:
    """The admin-grant exception for the office network expired before the event: the grant
    alerts. The country exception covers an impersonation from France (compared
    case-insensitively with Okta's "France") and not one from Spain."""
    grant = line(kind="identity", vendor="okta", event=OKTA_GRANT)
    imp = {**OKTA_GRANT, "eventType": "user.session.impersonation.grant"}
    spain = {**imp, "uuid": "2a992f80-0000-4000-8000-00000000aa02",
             "client": {"ipAddress": "80.58.61.250",
                        "geographicalContext": {"country": "Spain"}}}  # fmt: skip
    out = run(
        [grant, line(kind="identity", vendor="okta", event=imp),
         line(kind="identity", vendor="okta", event=spain)],
        with_exceptions(tmp_path),
    )  # fmt: skip
    fired = [(o["rule"], o["event_id"]) for o in out if o["type"] == "detection"]
    suppressed = [(o["rule"], o["event_id"]) for o in out if o["type"] == "suppressed"]
    assert ("admin_privilege_granted", fired[0][1]) in fired
    assert [r for r, _ in suppressed] == ["impersonation_granted"]
    assert [r for r, _ in fired].count("impersonation_granted") == 1
    assert suppressed[0][1] != next(e for r, e in fired if r == "impersonation_granted")


def test_a_vendor_disable_reaches_the_leak_path_as_a_credential_change() -> None:
    """Why the disable is not also a LeakRecord (streams/runtime/identitypath.py): once
    vendor_disabled_compromised's re-enrolment is done, the leak path counts it as sam's
    credential change, so a breach from before it is stale, not a second revocation."""
    registry = load_registry(REPO / "rules" / "tests" / "registry.yaml")
    providers = {"okta": "okta", "google": "google", "hootsuite": "generic"}
    engine = IdentityRules(load_rules(REPO / "rules"), providers)
    data = orjson.loads(disabled("d1", "2026-03-02T09:00:00Z"))
    del data["kind"]
    event = resolve_subjects(IdentityEvent.from_dict(data), registry)
    lifecycle = StateStore()
    [found] = engine.evaluate(event, registry, lifecycle, DedupMemory())
    reenrol = next(a for a in found.actions if a.action == "force_mfa_reenrolment")
    done = datetime(2026, 3, 2, 9, 5, tzinfo=UTC).timestamp()
    update = state_after_action(lifecycle, reenrol, done)
    assert update is not None
    lifecycle.put(update)
    breach = LeakRecord.from_dict({"principal": "sam@brand.example", "breach": "Forum",
                                   "source": "test", "breach_date": "2026-02-20",
                                   "password_present": True})  # fmt: skip
    decision = decide_leak(registry, lifecycle, breach, AT, providers)
    assert decision.outcome == "stale"
    assert not decision.actions
