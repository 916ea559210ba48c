"""The login path shared by the Faust agent and ``accessguard replay``: resolve the event
against the registry, then run every rule with the per-key rule state."""

from __future__ import annotations

from collections.abc import Mapping

from streams.records import LoginEvent
from streams.registry import Registry
from streams.resolve import resolve
from streams.rules import Detection, RuleEngine, RuleSet, RuleState
from streams.state import StateStore


class LoginPipeline:
    """Resolve + rules. Holds the rule state; not thread-safe (event loop only)."""

    def __init__(
        self, ruleset: RuleSet, providers: Mapping[str, str], state: RuleState | None = None
    ) -> None:
        self.engine = RuleEngine(ruleset, providers)
        self.state = state or RuleState()

    def process(
        self, event: LoginEvent, registry: Registry, lifecycle: StateStore
    ) -> tuple[LoginEvent, list[Detection]]:
        resolved = resolve(event, registry)
        return resolved, self.engine.evaluate(resolved, registry, lifecycle, self.state)
