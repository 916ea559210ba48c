"""What a rule alert says about its subject (issue 18): a registry shared login is no unknown
principal, and an alert about a login to no account does not claim "no brand account"."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streams.detect.engine import RuleEngine
from streams.detect.load import load_rules
from streams.detect.state import RuleState
from streams.detect.testing import load_test_providers
from streams.model.records import LoginEvent
from streams.model.registry import Registry
from streams.model.registry_yaml import load_registry
from streams.model.state import IdentityState, StateStore

REPO = Path(__file__).resolve().parent.parent
RULE = "unknown_principal_brand_login"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(REPO / "rules" / "tests" / "registry.yaml")


@pytest.fixture(scope="module")
def engine() -> RuleEngine:
    return RuleEngine(load_rules(REPO / "rules"), load_test_providers(REPO / "rules"))


def fired(engine: RuleEngine, registry: Registry, **fields: Any) -> dict[str, str]:
    """rule id -> alert title of what one login event raised."""
    data: dict[str, Any] = {
        "event_id": "e1",
        "time": datetime(2026, 3, 2, 9, 0, tzinfo=UTC).isoformat(),
        "outcome": "success",
        **fields,
    }
    detections = engine.evaluate(LoginEvent.from_dict(data), registry, StateStore(), RuleState())
    return {d.rule: a.title for d in detections for a in d.alerts}


@pytest.mark.parametrize(
    "principal", ["social@brand.example", "  SOCIAL@Brand.Example", "social@brand.example "]
)
def test_the_accounts_shared_login_is_not_an_unknown_principal(
    engine: RuleEngine, registry: Registry, principal: str
) -> None:
    """x-brand declares social@brand.example as its shared login: using it (any case, any
    blanks) raises no unknown-principal alert."""
    assert RULE not in fired(engine, registry, principal=principal, target_account="x-brand")


def test_a_stranger_on_the_account_still_is(engine: RuleEngine, registry: Registry) -> None:
    titles = fired(engine, registry, principal="stranger@mail.example", target_account="x-brand")
    assert RULE in titles
    assert titles[RULE].endswith("on x @brand (x-brand)")


def test_an_alert_about_a_login_to_no_account_names_none(
    engine: RuleEngine, registry: Registry
) -> None:
    """An identity-provider sign-in (no target) by an offboarded person: the title says who,
    not "on no brand account"."""
    lifecycle = StateStore()
    lifecycle.put(IdentityState("sam", status="offboarded", status_cause="hr:terminated:x"))
    event = LoginEvent.from_dict(
        {
            "event_id": "e2",
            "time": datetime(2026, 3, 2, 9, 0, tzinfo=UTC).isoformat(),
            "outcome": "success",
            "principal": "sam@brand.example",
            "identity": "sam",
        }
    )
    detections = engine.evaluate(event, registry, lifecycle, RuleState())
    (title,) = [
        a.title for d in detections if d.rule == "login_by_offboarded_identity" for a in d.alerts
    ]
    assert "no brand account" not in title
    assert title.endswith(": sam")
