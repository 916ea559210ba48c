"""The shipped rule corpus: every inline case passes, and the corpus meta-rules hold."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from streams.detect.load import load_rules
from streams.detect.model import ALERT_ONLY, Rule, RuleTest
from streams.detect.testing import (
    default_registry_factory,
    load_test_providers,
    rules_test_main,
    run_rule_test,
)
from streams.support.errors import RuleError

REPO = Path(__file__).resolve().parent.parent
RULES_DIR = REPO / "rules"
RULESET = load_rules(RULES_DIR)
REGISTRIES = default_registry_factory(RULES_DIR)

CASES = [(rule, case) for rule in RULESET.rules for case in rule.tests]

SHIPPED = {
    "login_by_offboarded_identity",
    "login_without_grant",
    "brute_force_identity",
    "password_spray_ip",
    "mfa_fatigue",
    "impossible_travel",
    "new_country_for_privileged",
    "new_device_for_privileged",
    "expired_grant_used",
    "unknown_principal_brand_login",
    # leaked credentials (issue 4): responses to matched leak subjects
    "leak_privileged_holder",
    "leak_grant_holder",
    "leak_shared_credential",
    # issue 18: a success after repeated failures (the account-takeover moment)
    "failures_then_success",
}


@pytest.mark.parametrize(
    ("rule", "case"), CASES, ids=[f"{rule.id}::{case.name}" for rule, case in CASES]
)
def test_inline_case(rule: Rule, case: RuleTest) -> None:
    """Each rule's inline case fires (or stays quiet) as it says, with no rule error."""
    result = run_rule_test(rule, case, REGISTRIES(case.registry))
    assert result.passed, f"{result.where}: {result.detail}"


def test_the_issue_rules_ship() -> None:
    """Every rule the issue asks for is in the corpus."""
    assert {r.id for r in RULESET.rules} >= SHIPPED


def test_ids_are_unique_and_match_file_names() -> None:
    """id <-> filename is predictable both ways, and no id appears twice."""
    counts = Counter(r.id for r in RULESET.rules)
    assert [i for i, n in counts.items() if n > 1] == []
    for rule in RULESET.rules:
        assert Path(rule.source).name == f"{rule.id}.yaml"
    assert {p.stem for p in RULES_DIR.glob("*.yaml")} - {"exceptions"} == set(counts)


def test_only_stable_rules_respond() -> None:
    """Responses that act at a provider appear on stable rules only."""
    for rule in RULESET.rules:
        acting = [r for r in rule.response if r not in ALERT_ONLY]
        assert rule.status == "stable" or not acting, rule.id


def test_every_rule_has_a_positive_and_a_negative_case() -> None:
    """At least one fire and one no_fire case per rule."""
    for rule in RULESET.rules:
        assert {c.expect for c in rule.tests} == {"fire", "no_fire"}, rule.id


def test_case_names_are_unique_per_rule() -> None:
    """Case names become pytest ids, so they are unique within a rule."""
    ids = [f"{rule.id}::{case.name}" for rule, case in CASES]
    assert len(ids) == len(set(ids))


def test_every_runbook_exists() -> None:
    """Each rule's runbook is a file under docs/runbooks/."""
    for rule in RULESET.rules:
        assert rule.runbook.startswith("docs/runbooks/"), rule.id
        assert (REPO / rule.runbook).is_file(), rule.runbook


def test_rules_test_command_summary() -> None:
    """`accessguard rules test` prints one summary line and exits 0 on the shipped corpus."""
    lines: list[str] = []
    assert rules_test_main(RULES_DIR, lines.append) == 0
    assert lines == [f"rules: {len(RULESET)} loaded, {len(CASES)} tests, {len(CASES)} passed"]


def test_test_providers_are_data_next_to_the_registry() -> None:
    """The providers the inline tests assume come from rules/tests/providers.yaml, and name
    every provider that rules/tests/registry.yaml uses for an account."""
    providers = load_test_providers(RULES_DIR)
    registry = REGISTRIES(None)
    assert providers
    assert {a.provider for a in registry.accounts.values()} <= set(providers)


def test_test_providers_file_is_optional_and_checked(tmp_path: Path) -> None:
    """No providers.yaml: the shipped rules' providers (what the built-in table gave before
    they became data); a broken one stops `rules test` like an invalid rule."""
    assert load_test_providers(tmp_path) == load_test_providers(RULES_DIR)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "providers.yaml").write_text("providers:\n  a: [x]\nother: 1\n")
    with pytest.raises(RuleError) as err:
        load_test_providers(tmp_path)
    path = tmp_path / "tests" / "providers.yaml"
    assert err.value.problems == [
        f"{path}:2: test providers: providers: each entry is `name: type` (two strings)",
        f"{path}:3: test providers: unknown key 'other' (allowed: providers)",
    ]
    lines: list[str] = []
    assert rules_test_main(tmp_path, lines.append) == 2
    assert lines[-1] == "rules: invalid (2 problem(s)); nothing was run"
