"""Identity-security lines of ``accessguard replay``: evaluated by the ``inputs:
[identity_event]`` rules exactly as the worker's identity path does
(:mod:`streams.runtime.identitypath`), so a change to an identity rule is reviewed with
``replay --diff`` like a login rule.

A line is ``{"kind":"identity", ...canonical IdentityEvent fields}`` or a vendor audit payload
wrapped as ``{"kind":"identity","vendor":"okta|entra|google","event":{...}}``, normalised by the
same security normalisers as the pollers and the ingest edge. One vendor payload can carry a
login too (an Okta risky session start is a login and a vendor warning): its logins go through
the login rules, as the edge publishes both. An event type the vendor's allow-list leaves out
is not an error there (counted and dropped), so here it is a ``skipped`` object with outcome
``dropped``, not a ``rejected`` one.

The same rule state as the worker: the dedup times are kept in the replay's
:class:`~streams.detect.state.RuleState` (:class:`~streams.detect.identity.StateDedup`), so a
burst of one event type gives one detection per window, and a detection an active rule
exception covers is printed as ``suppressed``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from connectors.base.identity import NotSecurityEvent
from connectors.base.sources import RAW_SECURITY_NORMALISERS, Event
from streams.decide.login import LoginPipeline
from streams.detect.identity import IdentityRules, StateDedup, resolve_subjects
from streams.model.identity import IdentityEvent
from streams.model.registry import Registry
from streams.model.state import StateStore
from streams.support.errors import ValidationError

#: The vendors whose audit payloads a line may wrap (``generic`` lines carry canonical fields).
WRAPPED_IDENTITY_VENDORS: tuple[str, ...] = tuple(
    v for v in RAW_SECURITY_NORMALISERS if v != "generic"
)


def identity_line_events(data: Mapping[str, Any]) -> list[Event]:
    """The events of one ``kind: identity`` line. Raises NotSecurityEvent for a vendor event
    type left out on purpose, ValidationError for a line that cannot be used."""
    if "event" in data:
        vendor = data.get("vendor")
        if not isinstance(vendor, str) or vendor not in WRAPPED_IDENTITY_VENDORS:
            raise ValidationError(
                "vendor: wrapped identity events need vendor "
                f"{', '.join(WRAPPED_IDENTITY_VENDORS[:-1])} or {WRAPPED_IDENTITY_VENDORS[-1]}"
            )
        return RAW_SECURITY_NORMALISERS[vendor](data.get("event"))
    return [IdentityEvent.from_dict({k: v for k, v in data.items() if k != "kind"})]


class IdentityReplay:
    """The identity half of one replay: the rule set's identity rules over the login
    pipeline's rule state (dedup times, as the worker keeps them)."""

    def __init__(self, pipeline: LoginPipeline) -> None:
        self.pipeline = pipeline
        engine = pipeline.engine
        self.rules = IdentityRules(engine.ruleset, engine.providers)
        self.dedup = StateDedup(pipeline.state)

    def line(
        self, number: int, data: Mapping[str, Any], registry: Registry, lifecycle: StateStore
    ) -> Iterator[dict[str, Any]]:
        """The output objects of one line (detections with their actions and alerts,
        suppressions, or one ``rejected``/``skipped`` object)."""
        try:
            events = identity_line_events(data)
        except NotSecurityEvent as exc:
            yield {"type": "skipped", "line": number, "outcome": "dropped", "reason": exc.reason}
            return
        except ValidationError as exc:
            yield {"type": "rejected", "line": number, "reason": exc.reason}
            return
        for event in events:
            if isinstance(event, IdentityEvent):
                resolved = resolve_subjects(event, registry)
                detections = self.rules.evaluate(
                    resolved, registry, lifecycle, self.dedup, self.pipeline.state
                )
                suppressor = self.rules.suppressor
            else:
                _login, detections = self.pipeline.process(event, registry, lifecycle)
                suppressor = self.pipeline.engine.suppressor
            for detection in detections:
                yield detection.replay_view()
                yield from (a.replay_view() for a in detection.actions)
                yield from (a.replay_view() for a in detection.alerts)
            for suppressed in suppressor.take():
                yield suppressed.replay_view()
