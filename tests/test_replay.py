"""Offline replay: NDJSON HR events in, the documented decision objects out."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.detect.load import load_rules
from streams.model.registry import Registry
from streams.model.registry_yaml import load_registry
from streams.runtime.replay import replay

ROOT = Path(__file__).resolve().parent.parent
AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
PROVIDERS = {
    "okta": "okta",
    "entra": "graph",
    "google": "google",
    "hootsuite": "generic",
    "meta-business": "generic",
    "secrets": "secret_store",
}
ACTION_KEYS = {"type", "action", "identity", "account", "provider", "cause", "idempotency_key"}
ALERT_KEYS = {"type", "severity", "rule", "identity", "dedup_key", "title"}


@pytest.fixture
def registry() -> Registry:
    return load_registry(ROOT / "examples" / "registry.yaml")


def line(**fields: Any) -> str:
    body = {
        "kind": "hr",
        "event_id": "evt-1",
        "type": "terminated",
        "employee_id": "E1001",
        "email": "alice.nguyen@lumen-outdoor.example",
        "effective_at": "2026-03-02T09:00:00Z",
        "source": "workday",
    }
    body.update(fields)
    return orjson.dumps({k: v for k, v in body.items() if v is not None}).decode()


def run(registry: Registry, lines: list[str], at: datetime = AT) -> list[dict[str, Any]]:
    return list(replay(registry, lines, at=at, providers=PROVIDERS))


def test_output_shapes(registry: Registry) -> None:
    """Actions and alerts come out in exactly the documented shapes, actions first."""
    out = run(registry, [line()])
    types = [o["type"] for o in out]
    assert types == sorted(types)  # "action" < "alert": every action before the alerts
    for obj in out:
        assert set(obj) == (ACTION_KEYS if obj["type"] == "action" else ALERT_KEYS)
    assert {o["action"] for o in out if o["type"] == "action"} == {
        "disable_account",
        "revoke_sessions",
        "revoke_tokens",
        "remove_grant",
        "rotate_shared_credential",
    }
    assert [o["rule"] for o in out if o["type"] == "alert"] == [
        "offboarding.completed",
        "shared_credential.reenrolment",
    ]
    assert all(o["cause"] == "hr:terminated:evt-1" for o in out if o["type"] == "action")
    orjson.dumps(out)


def test_rejected_lines_keep_going(registry: Registry) -> None:
    """Unusable lines are reported with their 1-based line number and reason, blank lines
    are skipped, and the lines after them are still decided."""
    lines = [
        "{not json",
        "",
        "   ",
        "[1, 2]",
        line(kind=None),
        line(kind="login"),
        line(kind="leak"),
        line(kind="weird"),
        line(email="nope"),
        line(type="promoted"),
        line(
            event_id="evt-ok",
            employee_id="E1002",
            email="bob.okafor@lumen-outdoor.example",
            type="suspended",
        ),
    ]
    out = run(registry, lines)
    rejected = [o for o in out if o["type"] == "rejected"]
    assert [(o["line"], o["reason"]) for o in rejected] == [
        (1, rejected[0]["reason"]),
        (4, "line must be a JSON object"),
        (5, "kind: required, one of hr, login, identity, leak"),
        (6, "login lines need a rule set (--rules DIR)"),
        (7, rejected[4]["reason"]),
        (8, "kind: unknown kind 'weird'"),
        (9, "email: not an e-mail address"),
        (10, rejected[7]["reason"]),
    ]
    assert rejected[0]["reason"].startswith("invalid JSON")
    assert rejected[4]["reason"].startswith("unknown field(s)")  # an HR line marked leak
    assert rejected[7]["reason"].startswith("type: must be one of")
    assert set(rejected[0]) == {"type", "line", "reason"}
    assert any(o["type"] == "action" and o["identity"] == "bob" for o in out)


def test_at_schedules_future_events(registry: Registry) -> None:
    """An event effective after --at is output as scheduled (and stays so); the same event
    replayed at a later clock is applied."""
    future = line(effective_at="2027-01-01T00:00:00Z")
    early = run(registry, [future])
    assert early == [
        {
            "type": "scheduled",
            "event_id": "evt-1",
            "identity": "alice",
            "effective_at": "2027-01-01T00:00:00.000Z",
        }
    ]
    late = run(registry, [future], at=datetime(2027, 1, 1, tzinfo=UTC))
    assert any(o["type"] == "action" for o in late)


def test_state_carries_across_lines(registry: Registry) -> None:
    """State persists from line to line: a repeated event id is skipped as a duplicate, and a
    later holder leaving no longer lists the first leaver for re-enrolment."""
    bob = line(event_id="evt-2", employee_id="E1002", email="bob.okafor@lumen-outdoor.example")
    out = run(registry, [line(), line(), bob])
    skipped = [o for o in out if o["type"] == "skipped"]
    assert skipped == [
        {
            "type": "skipped",
            "event_id": "evt-1",
            "identity": "alice",
            "outcome": "duplicate",
            "reason": "event evt-1 already applied",
        }
    ]
    reenrol = [
        o["title"]
        for o in out
        if o.get("rule") == "shared_credential.reenrolment" and o["identity"] == "bob"
    ]
    assert any("(x-lumen)" in t and t.endswith(": carol") for t in reenrol)


def test_unknown_identity_alert(registry: Registry) -> None:
    """An event for nobody in the registry yields only the unknown-identity alert."""
    out = run(registry, [line(employee_id="E404", email="ghost@elsewhere.example")])
    assert [(o["type"], o["rule"], o["severity"]) for o in out] == [
        ("alert", "hr.unknown_identity", "high")
    ]
    assert "ghost@elsewhere.example" not in orjson.dumps(out).decode()


def test_deterministic(registry: Registry) -> None:
    """The same input and clock always produce byte-identical output."""
    lines = (ROOT / "examples" / "events.ndjson").read_text().splitlines()
    first = orjson.dumps(run(registry, lines))
    second = orjson.dumps(run(load_registry(ROOT / "examples" / "registry.yaml"), lines))
    assert first == second


def test_example_events_file(registry: Registry) -> None:
    """The shipped example events exercise each path: alice terminated (and retried),
    bob's lost device, dan's role change, carol's future offboarding, and rejected lines."""
    with (ROOT / "examples" / "events.ndjson").open(encoding="utf-8") as handle:
        out = list(
            replay(
                registry,
                list(handle),
                at=AT,
                providers=PROVIDERS,
                rules=load_rules(ROOT / "rules"),
            )
        )
    actions = [(o["identity"], o["action"]) for o in out if o["type"] == "action"]
    assert ("alice", "rotate_shared_credential") in actions
    assert ("bob", "force_mfa_reenrolment") in actions
    assert ("dan", "downgrade_grant") in actions
    assert [o["identity"] for o in out if o["type"] == "scheduled"] == ["carol"]
    assert [o["outcome"] for o in out if o["type"] == "skipped"] == ["duplicate"]
    rejected = [o for o in out if o["type"] == "rejected"]
    assert [o["line"] for o in rejected] == [7, 8]
    assert rejected[1]["reason"] == "time: missing"
    # alice logs in after her termination; a stranger logs in to the brand Instagram
    fired = [(o["rule"], o["identity"]) for o in out if o["type"] == "detection"]
    assert fired == [
        ("login_by_offboarded_identity", "alice"),
        ("unknown_principal_brand_login", None),
    ]
    summaries = [o["title"] for o in out if o["type"] == "alert" and o["severity"] == "info"]
    assert summaries[0] == (
        "Offboarded Alice Nguyen: account disabled at 3 identity provider(s), "
        "5 sessions revoked, OAuth tokens and app passwords revoked at 2 provider(s), "
        "5 grants removed, 1 shared credentials rotated"
    )


def test_leak_lines_are_decided_in_order_and_once(registry: Registry) -> None:
    """Leak lines (canonical or a wrapped HIBP breach object) are matched and decided at
    ``at``: an admin gets revocation and MFA re-enrolment once; the same breach later in the
    input is stale (re-enrolled), an unknown address is skipped, a bad line rejected."""
    leak = {
        "kind": "leak",
        "principal": "Alice.Nguyen@lumen-outdoor.example",
        "breach": "CityBank",
        "breach_date": "2026-10-01",
        "password_present": True,
    }
    wrapped = {
        "kind": "leak",
        "vendor": "hibp",
        "account": "social@lumen-outdoor.example",
        "event": {
            "Name": "MegaBank",
            "BreachDate": "2026-09-01",
            "AddedDate": "2026-09-10T00:00:00Z",
            "DataClasses": ["Email addresses", "Passwords"],
        },
    }
    lines = [
        orjson.dumps(leak).decode(),
        orjson.dumps({**leak, "principal": "stranger@elsewhere.example"}).decode(),
        orjson.dumps(wrapped).decode(),
        orjson.dumps(leak).decode(),
        orjson.dumps({"kind": "leak", "principal": "x@y.example"}).decode(),
    ]
    out = list(replay(registry, lines, at=AT, providers=PROVIDERS))
    actions = [o for o in out if o["type"] == "action"]
    alice = {(a["action"], a["provider"]) for a in actions if a["identity"] == "alice"}
    assert ("revoke_sessions", "okta") in alice
    assert ("force_mfa_reenrolment", "okta") in alice
    assert any(a["action"] == "rotate_shared_credential" for a in actions)
    assert all(a["cause"].startswith("leak:") for a in actions)
    skipped = [o for o in out if o["type"] == "skipped"]
    assert [s["outcome"] for s in skipped] == ["no_match", "stale"]
    rejected = [o for o in out if o["type"] == "rejected"]
    assert [r["line"] for r in rejected] == [5]
    assert rejected[0]["reason"].startswith("breach")
    assert "alice.nguyen" not in orjson.dumps(out).decode()


def test_wrapped_lines_name_the_vendors_of_the_connector_tables(registry: Registry) -> None:
    """A wrapped login or leak object of an unknown vendor is rejected with the vendors the
    connector tables know (connectors.base.sources, connectors.base.leak_sources), in their
    order: the messages the replay always gave."""
    lines = [
        '{"kind":"login","vendor":"generic","event":{}}',
        '{"kind":"login","vendor":["okta"],"event":{}}',
        '{"kind":"leak","vendor":"okta","account":"a@b.example","event":{}}',
        '{"kind":"leak","vendor":{"x":1},"account":"a@b.example","event":{}}',
        '{"kind":"leak","vendor":"hibp","event":{}}',
    ]
    rules = load_rules(ROOT / "rules")
    out = list(replay(registry, lines, at=AT, providers=PROVIDERS, rules=rules))
    assert [o["reason"] for o in out] == [
        "vendor: wrapped login events need vendor okta, entra or google",
        "vendor: wrapped login events need vendor okta, entra or google",
        "vendor: wrapped leak events need vendor hibp",
        "vendor: wrapped leak events need vendor hibp",
        "account: the e-mail or username the breach object is about",
    ]
