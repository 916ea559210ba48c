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
        #: Per origin partition (where the event entered auth.events): its newest event time
        #: and when one last arrived. Partitions are worked through at different paces, so
        #: the rule clock is the slowest active one's (see :meth:`rule_clock`).
        self._marks: dict[int | None, tuple[datetime, float]] = {}

    def process(
        self,
        event: LoginEvent,
        registry: Registry,
        lifecycle: StateStore,
        *,
        home: Callable[[str], bool] | None = None,
        deferred: list[tuple[str, str]] | None = None,
        origin: int | None = None,
    ) -> tuple[LoginEvent, list[Detection]]:
        """Resolve and evaluate. With ``home``, rules whose group key lives elsewhere are
        left for its owner and listed in ``deferred`` (see :meth:`RuleEngine.evaluate`).
        ``origin``: the auth.events partition the event came from."""
        resolved = resolve(event, registry)
        self._arrived(event, origin)
        return resolved, self.engine.evaluate(
            resolved, registry, lifecycle, self.state, home=home, deferred=deferred
        )

    def process_routed(
        self,
        event: LoginEvent,
        registry: Registry,
        lifecycle: StateStore,
        groups: frozenset[str],
        origin: int | None = None,
    ) -> list[Detection]:
        """The owner's side of a deferred event: already resolved where it arrived (its keys
        were computed from that resolution), evaluated by the rules grouped by ``groups``."""
        self._arrived(event, origin)
        return self.engine.evaluate(event, registry, lifecycle, self.state, groups=groups)

    def _arrived(self, event: LoginEvent, origin: int | None = None) -> None:
        now = time.monotonic()
        if self.watermark is None or event.time > self.watermark:
            self.watermark = event.time
        self._last_arrival = now
        mark = self._marks.get(origin)
        self._marks[origin] = (event.time if mark is None else max(mark[0], event.time), now)

    def rule_clock(self, now: datetime, idle_after: float = IDLE_AFTER) -> datetime:
        """The time to expire state and close absence windows at. Rules window on event
        time, so while events flow (a backlog hours old included) this is the newest event
        time: expiring by the wall clock would wipe the windows of a backlog being worked
        through. Once no event has arrived for ``idle_after`` seconds, time moves on with the
        wall clock, so absence rules still fire on a quiet stream.

        With several origin partitions the clock is the newest event time of the *slowest*
        one still sending: a worker (or a routed stream) far ahead on one partition must not
        expire the windows of keys still fed from a partition hours behind — that made the
        detections depend on how the partitions were interleaved, so on the worker count."""
        mono = time.monotonic()
        if self.watermark is None or mono - self._last_arrival > idle_after:
            return now
        active = [t for t, seen in self._marks.values() if mono - seen <= idle_after]
        return min(now, min(active) if active else self.watermark)


def home_of(
    partition: int | None,
    owned: set[int] | None,
    partitions: int,
    partition_of: Callable[[str], int],
) -> Callable[[str], bool] | None:
    """Which group keys a message from ``partition`` is evaluated against where it arrived
    (``home`` of :meth:`LoginPipeline.process`): those of its own partition and of every
    other partition this worker owns (``owned``; None: only its own). Routing an event to a
    partition the worker consumes itself would only delay the same evaluation by a broker
    round trip and a second decode. None: every key is here (no partition, one partition,
    or this worker owns them all)."""
    if partition is None or partitions <= 1:
        return None
    here = {partition} if owned is None else owned | {partition}
    if len(here) >= partitions:
        return None
    local = frozenset(here)

    def home(key: str) -> bool:
        return partition_of(key) in local

    return home
