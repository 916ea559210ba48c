"""Offline replay: NDJSON events in, decisions out, no broker (``accessguard replay``).

The replay runs the very decision functions the agents run (:mod:`streams.decide.hr`) with a
lifecycle :class:`~streams.model.state.StateStore` carried from line to line, and with one fixed
clock (``at``) for every event, so the same input always gives the same output.

Output objects (one per line, documented in the README):

- ``{"type":"action","action","identity","account","provider","cause","idempotency_key"}``
- ``{"type":"alert","severity","rule","identity","dedup_key","title"}``
- ``{"type":"scheduled","event_id","identity","effective_at"}`` for an event still in the
  future at ``at`` (it stays scheduled: the replay does not advance the clock)
- ``{"type":"skipped","event_id","identity","outcome","reason"}`` for a duplicate or an event
  that changes nothing, so every input line is accounted for
- ``{"type":"rejected","line":N,"reason":...}`` for a line it cannot use (1-based line number)
- ``{"type":"detection","rule","severity","event_id","identity","deduplicated","actions",
  "error"}`` for each rule that fired on a login line, followed by its actions and alerts
- ``{"type":"suppressed","rule","event_id","identity","exception":{...}}`` for a detection an
  active rule exception (``<rules dir>/exceptions.yaml``) kept quiet: no alert, no action
- ``{"type":"finding","severity":"low","identity","breach","exposed_at","age_days",...}`` for a
  leak left for review (an old breach and no credential-change fact: no page, no action)

Login lines are ``{"kind":"login", ...canonical LoginEvent fields}`` or a vendor payload
wrapped as ``{"kind":"login","vendor":"okta|entra|google","event":{...}}``. They run through the
same normalisers, resolver and rules as the worker, with the rule state carried across the
input (rules use event time), so a day of logs shows what would have fired.

Identity lines are ``{"kind":"identity", ...canonical IdentityEvent fields}`` or a vendor
audit payload wrapped as ``{"kind":"identity","vendor":"okta|entra|google","event":{...}}``,
evaluated by the ``inputs: [identity_event]`` rules as the worker does, with the same rule
state (:mod:`streams.runtime.replay_identity`); a vendor event type left out on purpose gives
``{"type":"skipped","line":N,"outcome":"dropped","reason"}``.

Leak lines are ``{"kind":"leak", ...LeakRecord fields}`` or a wrapped HIBP breach object
``{"kind":"leak","vendor":"hibp","account":"a@b","event":{...}}``. They are matched and decided
at ``at`` exactly as the worker does (:func:`streams.decide.leaks.decide_leak`, responses from the
``inputs: [leak]`` rules of ``rules``, or of the shipped ``rules/`` without a rule set),
yielding actions and alerts, or a ``skipped`` object (no match, stale, offboarded, ignored,
no rule fired). A forced re-enrolment is taken as done at ``at``, as the worker records it
once the provider confirms, so a breach repeated later in the input is stale: the output
shows what happens once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

import orjson

from connectors.base.leak_sources import LEAK_WRAPPERS
from connectors.base.sources import WRAPPED_LOGIN_VENDORS, normalise
from streams.decide.hr import HrDecision, decide_hr
from streams.decide.leaks import (
    LeakSettings,
    decide_leak,
    leak_decision_view,
    state_after_action,
)
from streams.decide.login import LoginPipeline
from streams.decide.policy import DEFAULT_POLICY, OffboardingPolicy
from streams.detect.model import Detection, RuleSet
from streams.model.leak_index import LeakIndex
from streams.model.records import HrEvent, LeakRecord, LoginEvent
from streams.model.registry import Registry
from streams.model.state import StateStore
from streams.runtime.replay_identity import IdentityReplay
from streams.support.errors import ValidationError
from streams.support.times import format_time

#: Input kinds later issues add; named so their lines are rejected with a clear reason.
FUTURE_KINDS: tuple[str, ...] = ()
KINDS: tuple[str, ...] = ("hr", "login", "identity", "leak")


def _either(names: Iterable[str]) -> str:
    """``a, b or c``: the choices of a message, in table order."""
    *rest, last = names
    return f"{', '.join(rest)} or {last}" if rest else last


def leak_lines_to_records(data: dict[str, Any]) -> list[LeakRecord]:
    """The LeakRecords of one ``accessguard replay`` line (raises ValidationError):
    ``{"kind":"leak", ...LeakRecord fields}`` or
    ``{"kind":"leak","vendor":"hibp","account":"a@b","event":{...one breach object...}}``
    (the vendors of :data:`connectors.base.leak_sources.LEAK_WRAPPERS`)."""
    if "event" in data:
        vendor = data.get("vendor")
        wrapper = LEAK_WRAPPERS.get(vendor) if isinstance(vendor, str) else None
        if wrapper is None:
            raise ValidationError(
                f"vendor: wrapped leak events need vendor {_either(LEAK_WRAPPERS)}"
            )
        account = data.get("account")
        if not isinstance(account, str) or not account.strip() or len(account) > 320:
            raise ValidationError("account: the e-mail or username the breach object is about")
        return wrapper(data.get("event"), account)
    return [LeakRecord.from_dict({k: v for k, v in data.items() if k != "kind"})]


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
    if decision.outcome in ("duplicate", "conflict", "noop"):
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


def _login_events(data: dict[str, Any]) -> list[LoginEvent]:
    """The LoginEvents of one replay line (raises ValidationError with the reason)."""
    if "event" in data:
        vendor = data.get("vendor")
        if not isinstance(vendor, str) or vendor not in WRAPPED_LOGIN_VENDORS:
            raise ValidationError(
                f"vendor: wrapped login events need vendor {_either(WRAPPED_LOGIN_VENDORS)}"
            )
        return normalise(vendor, data.get("event"))
    fields = {k: v for k, v in data.items() if k != "kind"}
    return normalise("generic", fields)


def login_view(detection: Detection) -> list[dict[str, Any]]:
    """The replay output objects for one rule detection: itself, then actions and alerts."""
    out = [detection.replay_view()]
    out.extend(a.replay_view() for a in detection.actions)
    out.extend(a.replay_view() for a in detection.alerts)
    return out


def replay(
    registry: Registry,
    lines: Iterable[str],
    *,
    at: datetime,
    providers: Mapping[str, str],
    rules: RuleSet | None = None,
    leak_settings: LeakSettings | None = None,
    policy: OffboardingPolicy = DEFAULT_POLICY,
) -> Iterator[dict[str, Any]]:
    """Decide every input line in order at clock ``at`` and yield the output objects.

    Blank lines are skipped; a line that is not a usable event yields a ``rejected`` object
    and the replay goes on. Login lines need ``rules``; without a rule set they are rejected.
    """
    state = StateStore()
    pipeline = LoginPipeline(rules, providers) if rules is not None else None
    identity = IdentityReplay(pipeline) if pipeline is not None else None
    settings = leak_settings or LeakSettings()
    index: LeakIndex | None = None
    done_at = at.timestamp()
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
        if kind == "leak":
            try:
                records = leak_lines_to_records(data)
            except ValidationError as exc:
                yield _rejected(number, exc.reason)
                continue
            if index is None:
                index = LeakIndex.build(registry, settings.plus_tag_domains)
            for record in records:
                leak = decide_leak(
                    registry,
                    state,
                    record,
                    at,
                    providers,
                    index=index,
                    settings=settings,
                    rules=pipeline.engine if pipeline is not None else None,
                )
                for update in leak.state_updates:
                    state.put(update)
                for action in leak.actions:
                    after = state_after_action(state, action, done_at)
                    if after is not None:
                        state.put(after)
                yield from leak_decision_view(leak)
            continue
        if kind == "identity":
            if identity is None:
                yield _rejected(number, "identity lines need a rule set (--rules DIR)")
                continue
            yield from identity.line(number, data, registry, state)
            continue
        if kind == "login":
            if pipeline is None:
                yield _rejected(number, "login lines need a rule set (--rules DIR)")
                continue
            try:
                events = _login_events(data)
            except ValidationError as exc:
                yield _rejected(number, exc.reason)
                continue
            for login in events:
                _resolved, detections = pipeline.process(login, registry, state)
                for detection in detections:
                    yield from login_view(detection)
                for suppressed in pipeline.engine.suppressor.take():
                    yield suppressed.replay_view()
            continue
        if kind != "hr":
            yield _rejected(
                number,
                f"kind: required, one of {', '.join(KINDS)}"
                if kind is None
                else f"kind: unknown kind {kind!r}",
            )
            continue
        try:
            event = HrEvent.from_dict(data)
        except ValidationError as exc:
            yield _rejected(number, exc.reason)
            continue
        decision = decide_hr(registry, state, event, at, providers, policy=policy)
        for update in decision.state_updates:
            state.put(update)
        yield from decision_view(decision)
