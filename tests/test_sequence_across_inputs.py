"""A sequence across inputs (``sequence.first_input: identity_event``): the identity path
records the first event in the login rules' state, a login follows it up —
``admin_password_reset_then_new_country``, replayed from vendor-shaped Okta System Log events
and checked for what a login with nothing recorded costs."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.okta import security
from streams.bus.rulelog import RuleStateLog
from streams.decide.login import LoginPipeline
from streams.detect.load import load_rules, parse_rule
from streams.detect.model import RuleSet
from streams.model.records import LoginEvent
from streams.model.registry_yaml import load_registry
from streams.model.state import StateStore
from streams.runtime.identitypath import IdentityPath
from streams.runtime.replay import replay
from tests.engine_harness import build_engine

REPO = Path(__file__).resolve().parent.parent
RULE = "admin_password_reset_then_new_country"
AT = datetime(2026, 3, 5, tzinfo=UTC)
PROVIDERS = {"okta-corp": "okta"}

#: Okta System Log, written for this test in the vendor's shapes: the help desk
#: (00u-bob) resets alice's password (user.account.reset_password).
OKTA_RESET: dict[str, Any] = {
    "uuid": "5e1f0000-0000-4000-8000-0000000000r1",
    "published": "2026-03-02T10:00:00.000Z",
    "eventType": "user.account.reset_password",
    "actor": {"id": "00u-bob", "type": "User", "alternateId": "bob@brand.example"},
    "client": {"ipAddress": "198.51.100.20", "geographicalContext": {"country": "Italy"}},
    "outcome": {"result": "SUCCESS"},
    "target": [{"id": "00u-alice", "type": "User", "alternateId": "alice@brand.example"}],
}


def okta_login(uuid: str, time: str, country: str, ip: str) -> dict[str, Any]:
    """alice signs in to Okta (user.session.start, SUCCESS) from ``country``."""
    return {
        "uuid": uuid,
        "published": time,
        "eventType": "user.session.start",
        "actor": {"id": "00u-alice", "type": "User", "alternateId": "alice@brand.example"},
        "client": {
            "ipAddress": ip,
            "geographicalContext": {
                "country": country,
                "geolocation": {"lat": 41.9, "lon": 12.5}
                if country == "Italy"
                else {"lat": -23.5, "lon": -46.6},
            },
        },
        "outcome": {"result": "SUCCESS"},
    }


def wrap(kind: str, event: dict[str, Any]) -> str:
    return orjson.dumps({"kind": kind, "vendor": "okta", "event": event}).decode()


def fired(lines: list[str]) -> list[dict[str, Any]]:
    registry = load_registry(REPO / "rules" / "tests" / "registry.yaml")
    out = replay(registry, lines, at=AT, providers=PROVIDERS, rules=load_rules(REPO / "rules"))
    return [o for o in out if o["type"] == "detection" and o["rule"] == RULE]


HOME = wrap("login", okta_login("5e1f-l0", "2026-03-01T08:00:00.000Z", "Italy", "151.5.1.1"))


def test_the_reset_then_a_login_from_a_new_country_fires_once() -> None:
    """alice known in Italy; the help desk resets her password; an hour later a login from
    Brazil: one detection, on that login. A second Brazilian login does not fire again."""
    brazil = okta_login("5e1f-l1", "2026-03-02T11:00:00.000Z", "Brazil", "200.147.1.1")
    again = okta_login("5e1f-l2", "2026-03-02T11:30:00.000Z", "Brazil", "200.147.1.1")
    found = fired([HOME, wrap("identity", OKTA_RESET), wrap("login", brazil),
                   wrap("login", again)])  # fmt: skip
    assert [(d["identity"], d["deduplicated"]) for d in found] == [("alice", False)]
    assert found[0]["event_id"].startswith("okta:")


def test_the_same_logins_without_the_reset_or_from_home_do_not_fire() -> None:
    """No reset: the Brazilian login is new_country_for_privileged's business, not this
    rule's. With the reset, a login from Italy (known) does not fire."""
    brazil = okta_login("5e1f-l1", "2026-03-02T11:00:00.000Z", "Brazil", "200.147.1.1")
    assert fired([HOME, wrap("login", brazil)]) == []
    italy = okta_login("5e1f-l3", "2026-03-02T11:00:00.000Z", "Italy", "151.5.1.1")
    assert fired([HOME, wrap("identity", OKTA_RESET), wrap("login", italy)]) == []


def test_a_login_with_nothing_recorded_writes_no_state() -> None:
    """The login hot path: a successful login of someone with no reset recorded creates no
    slot for the rule and marks nothing dirty on its account (one dict lookup)."""
    registry = load_registry(REPO / "rules" / "tests" / "registry.yaml")
    rule, problems = parse_rule((REPO / "rules" / f"{RULE}.yaml").read_text(), f"{RULE}.yaml")
    assert rule is not None, problems
    pipeline = LoginPipeline(RuleSet((rule,)), PROVIDERS)
    login = LoginEvent.from_dict(
        {
            "event_id": "l1",
            "vendor": "okta",
            "time": "2026-03-02T11:00:00Z",
            "principal": "alice@brand.example",
            "identity": "alice",
            "outcome": "success",
            "geo": {"country": "BR"},
        }
    )
    _, detections = pipeline.process(login, registry, StateStore())
    assert detections == []
    assert len(pipeline.state) == 0
    assert pipeline.state.take_dirty() == []


BAD = """
id: x
title: t
description: d
status: staged
severity: low
runbook: docs/runbooks/x.md
falsepositives: [none]
inputs: [login]
kind: sequence
sequence: {sequence}
dedup: 0
response: []
tests:
  - {{name: a, expect: fire, events: [{{identity: alice, outcome: success}}]}}
  - {{name: b, expect: no_fire, events: [{{identity: alice, outcome: success}}]}}
"""


@pytest.mark.parametrize(
    ("sequence", "message"),
    [
        (
            "{first: [{field: outcome, op: eq, value: failure}], then: [], window: 60, "
            "new: geo.country}",
            "new: only with first_input: identity_event",
        ),
        (
            "{first_input: identity_event, first: [{field: outcome, op: eq, value: failure}], "
            "then: [], window: 60}",
            "unknown field 'outcome'",
        ),
        (
            "{first_input: identity_event, first: [{field: type, op: eq, value: "
            "admin_password_reset}], then: [], window: 60, count: 2}",
            "one first event, not absent",
        ),
        (
            "{first_input: identity_event, first: [], then: [], window: 60, new: vendor}",
            "new: must be one of",
        ),
    ],
)
def test_the_loader_refuses_what_it_cannot_follow_up(sequence: str, message: str) -> None:
    """first conditions read identity fields; new and first_input go together; one reset."""
    _, problems = parse_rule(BAD.format(sequence=sequence), "/r/x.yaml")
    assert any(message in p for p in problems), problems


def test_vendor_reset_fixture_is_the_okta_reset_type() -> None:
    """Guard on the fixture: the Okta normaliser maps it to admin_password_reset by bob."""
    [event] = security.normalise_all(copy.deepcopy(OKTA_RESET))
    assert (event.type, event.principal, event.actor) == (  # type: ignore[union-attr]
        "admin_password_reset", "alice@brand.example", "bob@brand.example")  # fmt: skip


# ---- through the worker's engine: the identity path marks, the login path follows up ----------


def worker_life(
    tmp_path: Path, checkpoint: list[tuple[str, Any]], identity: list[Any], logins: list[Any]
) -> tuple[list[str], list[tuple[str, Any]]]:
    """One worker: read the rule-state checkpoint, handle an identity.events message and an
    auth.events message, checkpoint. Returns (rules of the alerts queued, records written)."""

    async def scenario() -> tuple[list[str], list[tuple[str, Any]]]:
        harness = build_engine(tmp_path)
        try:
            engine = harness.engine
            engine.login = LoginPipeline(
                load_rules(REPO / "rules"), harness.config.provider_types()
            )
            engine.rule_log = RuleStateLog(engine.login.state, shards=4, writer="w")
            for key, value in checkpoint:
                engine.rule_log.apply(key, value)
            if identity:
                await IdentityPath.for_engine(engine).handle_batch(orjson.dumps(identity))
            if logins:
                await engine.handle_login_batch(orjson.dumps(logins))
            await engine.checkpoint_rules()
            queued = [v["rule"] for _, v in harness.publisher.on(engine.topics.alert_queue)]
            written = harness.publisher.on(engine.topics.rule_state)
            return queued, [(k, orjson.loads(orjson.dumps(v))) for k, v in written]
        finally:
            harness.close()

    return asyncio.run(scenario())


RESET = {
    "event_id": "r1",
    "vendor": "okta",
    "time": "2026-03-02T10:00:00Z",
    "type": "admin_password_reset",
    "principal": "ana@brand.example",
    "principal_id": "00u-ana",
    "actor": "ben@brand.example",
    "actor_id": "00u-ben",
}


def ana_login(event_id: str, time: str, country: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "vendor": "okta",
        "time": time,
        "outcome": "success",
        "principal": "ana@brand.example",
        "principal_id": "00u-ana",
        "ip": "200.147.1.1",
        "geo": {"country": country},
    }


def test_the_worker_follows_a_reset_up_across_a_restart(tmp_path: Path) -> None:
    """Worker one sees ben reset ana's password and checkpoints; worker two (fresh, reading
    the checkpoint) sees ana sign in from Brazil: the sequence alert is queued there."""
    queued, written = worker_life(tmp_path / "a", [], [RESET], [])
    assert RULE not in queued
    queued, _ = worker_life(
        tmp_path / "b", written, [], [ana_login("l1", "2026-03-02T11:00:00Z", "BR")]
    )
    assert RULE in queued


def test_the_worker_does_not_fire_on_a_login_with_no_reset(tmp_path: Path) -> None:
    """The control: the same login with no reset before it queues no sequence alert."""
    queued, _ = worker_life(tmp_path, [], [], [ana_login("l1", "2026-03-02T11:00:00Z", "BR")])
    assert RULE not in queued
