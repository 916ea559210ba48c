"""Offline replay: NDJSON events in, decisions out, no broker (``accessguard replay``).

The replay runs the very decision functions the agents run (:mod:`streams.decisions`) with a
lifecycle :class:`~streams.state.StateStore` carried from line to line, and with one fixed
clock (``at``) for every event, so the same input always gives the same output.

Output objects (one per line, documented in the README):

- ``{"type":"action","action","identity","account","provider","cause","idempotency_key"}``
- ``{"type":"alert","severity","rule","identity","dedup_key","title"}``
- ``{"type":"scheduled","event_id","identity","effective_at"}`` for an event still in the
  future at ``at`` (it stays scheduled: the replay does not advance the clock)
- ``{"type":"skipped","event_id","identity","outcome","reason"}`` for a duplicate or an event
  that changes nothing, so every input line is accounted for
- ``{"type":"rejected","line":N,"reason":...}`` for a line it cannot use (1-based line number)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

import orjson

from streams.decisions import HrDecision, decide_hr
from streams.errors import ValidationError
from streams.records import HrEvent, format_time
from streams.registry import Registry
from streams.state import StateStore

#: Input kinds later issues add; named so their lines are rejected with a clear reason.
FUTURE_KINDS: tuple[str, ...] = ("login", "leak")


def _rejected(line: int, reason: str) -> dict[str, Any]:
    return {"type": "rejected", "line": line, "reason": reason}


def decision_view(decision: HrDecision) -> list[dict[str, Any]]:
    """The replay output objects for one decision, actions before alerts."""
    event = decision.event
    if decision.outcome == "scheduled":
        return [
            {
                "type": "scheduled",
                "event_id": event.event_id,
                "identity": decision.identity,
                "effective_at": format_time(event.effective_at),
            }
        ]
    if decision.outcome in ("duplicate", "noop"):
        return [
            {
                "type": "skipped",
                "event_id": event.event_id,
                "identity": decision.identity,
                "outcome": decision.outcome,
                "reason": decision.reason,
            }
        ]
    out = [a.replay_view() for a in decision.actions]
    out.extend(a.replay_view() for a in decision.alerts)
    return out


def replay(
    registry: Registry,
    lines: Iterable[str],
    *,
    at: datetime,
    providers: Mapping[str, str],
) -> Iterator[dict[str, Any]]:
    """Decide every input line in order at clock ``at`` and yield the output objects.

    Blank lines are skipped; a line that is not a usable event yields a ``rejected`` object
    and the replay goes on.
    """
    state = StateStore()
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            yield _rejected(number, f"invalid JSON: {exc.msg}")
            continue
        if not isinstance(data, dict):
            yield _rejected(number, "line must be a JSON object")
            continue
        kind = data.get("kind")
        if kind in FUTURE_KINDS:
            yield _rejected(number, f"kind {kind} not supported yet")
            continue
        if kind != "hr":
            yield _rejected(
                number,
                "kind: required, one of hr" if kind is None else f"kind: unknown kind {kind!r}",
            )
            continue
        try:
            event = HrEvent.from_dict(data)
        except ValidationError as exc:
            yield _rejected(number, exc.reason)
            continue
        decision = decide_hr(registry, state, event, at, providers)
        for update in decision.state_updates:
            state.put(update)
        yield from decision_view(decision)
