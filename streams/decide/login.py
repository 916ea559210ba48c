"""The login path shared by the Faust agent and ``accessguard replay``: resolve the event
against the registry, then run every rule with the per-key rule state."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime

from streams.decide.resolve import resolve
from streams.detect.engine import RuleEngine
from streams.detect.model import Detection, RuleSet
from streams.detect.state import RuleState
from streams.model.records import LoginEvent
from streams.model.registry import Registry
from streams.model.state import StateStore

#: Seconds without a login event after which rule time follows the wall clock again.
IDLE_AFTER = 30.0


class LoginPipeline:
    """Resolve + rules. Holds the rule state; not thread-safe (event loop only)."""

    def __init__(
        self, ruleset: RuleSet, providers: Mapping[str, str], state: RuleState | None = None
    ) -> None:
        self.engine = RuleEngine(ruleset, providers)
        self.state = state or RuleState()
        #: Newest event time seen, and when (wall clock) the last event arrived.
        self.watermark: datetime | None = None
        self._last_arrival = 0.0

    def process(
        self,
        event: LoginEvent,
        registry: Registry,
        lifecycle: StateStore,
        *,
        home: Callable[[str], bool] | None = None,
        deferred: list[tuple[str, str]] | None = None,
    ) -> tuple[LoginEvent, list[Detection]]:
        """Resolve and evaluate. With ``home``, rules whose group key lives elsewhere are
        left for its owner and listed in ``deferred`` (see :meth:`RuleEngine.evaluate`)."""
        resolved = resolve(event, registry)
        self._arrived(event)
        return resolved, self.engine.evaluate(
            resolved, registry, lifecycle, self.state, home=home, deferred=deferred
        )

    def process_routed(
        self, event: LoginEvent, registry: Registry, lifecycle: StateStore, groups: frozenset[str]
    ) -> list[Detection]:
        """The owner's side of a deferred event: already resolved where it arrived (its keys
        were computed from that resolution), evaluated by the rules grouped by ``groups``."""
        self._arrived(event)
        return self.engine.evaluate(event, registry, lifecycle, self.state, groups=groups)

    def _arrived(self, event: LoginEvent) -> None:
        if self.watermark is None or event.time > self.watermark:
            self.watermark = event.time
        self._last_arrival = time.monotonic()

    def rule_clock(self, now: datetime, idle_after: float = IDLE_AFTER) -> datetime:
        """The time to expire state and close absence windows at. Rules window on event
        time, so while events flow (a backlog hours old included) this is the newest event
        time: expiring by the wall clock would wipe the windows of a backlog being worked
        through. Once no event has arrived for ``idle_after`` seconds, time moves on with the
        wall clock, so absence rules still fire on a quiet stream."""
        if self.watermark is None or time.monotonic() - self._last_arrival > idle_after:
            return now
        return min(now, self.watermark)
