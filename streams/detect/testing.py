"""Running rules' inline tests (``accessguard rules test``): each case on a fresh
:class:`~streams.detect.state.RuleState`, against the registry named by the case (under
``<rules dir>/tests/``) and the providers of ``<rules dir>/tests/providers.yaml`` (provider
name in those registries -> provider type, as under ``providers:`` in the configuration).
The provider names are data next to the registry that uses them, not code."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, ScalarNode

from streams.detect.engine import RuleEngine
from streams.detect.exceptions import expired
from streams.detect.fields import LeakSubject
from streams.detect.identity import DedupMemory, IdentityRules, resolve_subjects
from streams.detect.load import load_rules
from streams.detect.model import Detection, Rule, RuleSet, RuleTest
from streams.detect.state import RuleState
from streams.model.identity import IdentityEvent
from streams.model.registry import Registry
from streams.model.registry_yaml import load_registry
from streams.model.state import IdentityState, StateStore
from streams.support.errors import RegistryError, RuleError
from streams.support.times import format_time
from streams.support.yamlcheck import Entry, Problems, compose, line_of

#: The file under ``<rules dir>/tests/`` naming the providers the inline tests assume.
PROVIDERS_FILE = "providers.yaml"
#: The shipped rules' test providers: used for a rule directory without its own file, as the
#: provider table built into earlier versions was.
SHIPPED_PROVIDERS = Path(__file__).resolve().parents[2] / "rules" / "tests" / PROVIDERS_FILE


def load_test_providers(directory: Path | None) -> dict[str, str]:
    """``<directory>/tests/providers.yaml``'s ``providers:`` mapping; the shipped rules' file
    when the directory has none (empty when neither exists). Raises RuleError listing every
    problem as ``path:line: message``."""
    path = (directory or Path()) / "tests" / PROVIDERS_FILE
    if not path.is_file():
        path = SHIPPED_PROVIDERS
    if not path.is_file():
        return {}
    problems = Problems(str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError([f"{path}:0: cannot read the test providers: {exc}"]) from exc
    root = compose(text, problems)
    providers: dict[str, str] = {}
    if root is not None and not isinstance(root, MappingNode):
        problems.add(line_of(root), "expected a mapping with a providers: mapping")
    elif root is not None:
        e = Entry(root, "test providers", {"providers"}, problems, SafeConstructor())
        node = e.mapping("providers")
        if node is None and not problems:
            e.error(e.line, "providers: required (provider name -> provider type)")
        for key, value in node.value if node is not None else ():
            name = key.value if isinstance(key, ScalarNode) else None
            kind = value.value if isinstance(value, ScalarNode) else None
            if not name or not kind or not value.tag.endswith(":str"):
                e.error(key, "providers: each entry is `name: type` (two strings)")
            elif name in providers:
                e.error(key, f"providers: {name!r} given twice")
            else:
                providers[name] = kind
    if problems:
        raise RuleError(problems.render())
    return providers


@dataclass(frozen=True, slots=True)
class RuleTestResult:
    rule: str
    name: str
    expect: str
    passed: bool
    detail: str
    where: str

    @property
    def test_id(self) -> str:
        return f"{self.rule}::{self.name}"


RegistryFactory = Callable[[str | None], Registry]


def default_registry_factory(directory: Path | None) -> RegistryFactory:
    """Registries for rule tests: ``<dir>/tests/<name>`` (default ``registry.yaml``), loaded
    once each; an empty registry when the directory has none."""
    cache: dict[str | None, Registry] = {}

    def factory(name: str | None) -> Registry:
        if name in cache:
            return cache[name]
        path = (directory or Path()) / "tests" / (name or "registry.yaml")
        registry = load_registry(path) if name or path.is_file() else Registry()
        cache[name] = registry
        return registry

    return factory


def _lifecycle(statuses: Mapping[str, str]) -> StateStore:
    store = StateStore()
    for ident, status in statuses.items():
        store.put(IdentityState(identity=ident, status=status, status_cause="rule-test"))
    return store


def run_rule_test(
    rule: Rule,
    case: RuleTest,
    registry: Registry,
    providers: Mapping[str, str] | None = None,
    companions: tuple[Rule, ...] | None = None,
) -> RuleTestResult:
    """Run one inline case on a fresh state (deprecated rules too: their tests still run).
    ``providers`` defaults to the test providers of the rule's directory."""
    if providers is None:
        providers = load_test_providers(Path(rule.source).parent)
    if companions is None:
        companions = _directory_companions(rule)
    # a rule that reads what others learn (a sequence's ``new`` field) runs beside them; only
    # its own alerts count
    rules = RuleSet((rule, *companions))
    engine = RuleEngine(rules, providers, include_deprecated=True)
    identity_rules = IdentityRules(rules, providers, include_deprecated=True)
    dedup = DedupMemory()
    lifecycle = _lifecycle(case.lifecycle)
    state = RuleState()
    detections: list[Detection] = []
    for event in case.events:
        if isinstance(event, IdentityEvent):
            resolved = resolve_subjects(event, registry)
            detections.extend(identity_rules.evaluate(resolved, registry, lifecycle, dedup, state))
        elif isinstance(event, LeakSubject):
            detections.extend(engine.evaluate_leak(event, registry, lifecycle))
        else:
            detections.extend(engine.evaluate(event, registry, lifecycle, state))
    if case.flush_at is not None:
        detections.extend(engine.flush(case.flush_at, registry, lifecycle, state))
    where = f"{rule.source}:{case.line}"
    detections = [d for d in detections if d.rule == rule.id]
    errors = [d.error for d in detections if d.error]
    if errors:
        return RuleTestResult(rule.id, case.name, case.expect, False, f"error: {errors[0]}", where)
    alerts = [a for d in detections for a in d.alerts]
    fired = bool(alerts)
    if fired != (case.expect == "fire"):
        detail = f"expected {case.expect}, got {len(alerts)} alert(s)" + (
            f" (first at {alerts[0].details.get('event_id')})" if alerts else ""
        )
        return RuleTestResult(rule.id, case.name, case.expect, False, detail, where)
    if case.actions is not None:
        got = sorted({a.action for d in detections for a in d.actions})
        if got != sorted(set(case.actions)):
            detail = f"expected actions {sorted(set(case.actions))}, got {got}"
            return RuleTestResult(rule.id, case.name, case.expect, False, detail, where)
    return RuleTestResult(rule.id, case.name, case.expect, True, "ok", where)


def companions(ruleset: RuleSet, rule: Rule) -> tuple[Rule, ...]:
    """The rules ``rule``'s tests run beside: for a sequence with ``new: <field>``, the
    first_seen rules of the set that learn that field."""
    field = rule.params.get("new") if rule.kind == "sequence" else None
    if field is None:
        return ()
    return tuple(
        r
        for r in ruleset.rules
        if r.kind == "first_seen" and r.params.get("field") == field and r.id != rule.id
    )


@functools.lru_cache(maxsize=8)
def _directory_ruleset(directory: Path) -> RuleSet:
    return load_rules(directory, warn=False)


def _directory_companions(rule: Rule) -> tuple[Rule, ...]:
    """:func:`companions` from the rule's own directory (loaded only for such a rule)."""
    if rule.kind != "sequence" or not rule.params.get("new"):
        return ()
    return companions(_directory_ruleset(Path(rule.source).parent), rule)


def run_rule_tests(
    ruleset: RuleSet,
    registry_factory: RegistryFactory | None = None,
    providers: Mapping[str, str] | None = None,
) -> list[RuleTestResult]:
    """Run every rule's inline cases; a registry that cannot load fails its cases.
    ``providers`` defaults to the set's test providers (:func:`load_test_providers`; raises
    RuleError when that file is invalid)."""
    factory = registry_factory or default_registry_factory(ruleset.directory)
    if providers is None:
        providers = load_test_providers(ruleset.directory)
    results: list[RuleTestResult] = []
    for rule in ruleset.rules:
        for case in rule.tests:
            try:
                registry = factory(case.registry)
            except (RegistryError, OSError) as exc:
                where = f"{rule.source}:{case.line}"
                results.append(
                    RuleTestResult(
                        rule.id, case.name, case.expect, False, f"registry: {exc}", where
                    )
                )
                continue
            results.append(
                run_rule_test(rule, case, registry, providers, companions(ruleset, rule))
            )
    return results


def rules_test_main(directory: Path, echo: Callable[[str], Any]) -> int:
    """``accessguard rules test [DIR]``: 0 all passed, 1 a case failed, 2 the set is invalid."""
    try:
        ruleset = load_rules(directory, warn=False)  # listed below, after the results
        providers = load_test_providers(ruleset.directory)
    except RuleError as exc:
        for problem in exc.problems:
            echo(problem)
        echo(f"rules: invalid ({len(exc.problems)} problem(s)); nothing was run")
        return 2
    results = run_rule_tests(ruleset, providers=providers)
    failed = [r for r in results if not r.passed]
    for gone in expired(ruleset.exceptions, datetime.now(UTC)):
        echo(
            f"EXPIRED exception {gone.rule} {gone.scope}={gone.value} ({gone.where}): expired "
            f"{format_time(gone.expires)}, owner {gone.owner}: renew it or delete it"
        )
    for result in failed:
        echo(f"FAIL {result.test_id} ({result.where}): {result.detail}")
    passed = len(results) - len(failed)
    summary = f"rules: {len(ruleset)} loaded, {len(results)} tests, {passed} passed"
    if failed:
        summary += f", {len(failed)} failed"
    echo(summary)
    return 1 if failed else 0
