"""A plan: the actions one decision asked for, kept in the lifecycle state until they are done.

Every path that acts makes one: an HR event (:func:`streams.decide.hr.decide_hr`, plan id = the
event id), a login rule that fired (``rule:<rule id>:<event id>``) and a leak record
(``leak:<breach>:<subject hash>``). It lives in ``IdentityState.plans[plan_id]`` from the
decision until its last action is done or failed for good and its alerts are out, so a worker
that crashes or loses the partition resumes it (the ledger makes every action happen once).

The dict form is persisted (the compacted lifecycle topic, the journal), so :meth:`Plan.to_dict`
writes exactly the keys, in the order, that every version wrote, and :meth:`Plan.from_dict`
reads the records older versions left (missing keys take their defaults).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streams.model.records import Action, Alert


@dataclass(frozen=True, slots=True)
class Plan:
    """The actions of one decision and what to report when they are done."""

    actions: tuple[Action, ...]
    #: Alerts to send once every action has an outcome (the HR summary is completed with
    #: what happened); empty for rule and leak plans, whose alerts go out at once.
    alerts: tuple[Alert, ...] = ()
    #: When the edge accepted the triggering event (epoch seconds), for time-to-revoke;
    #: None when nothing was accepted from outside (rules, leaks).
    accepted_at: float | None = None
    #: The HR event type, ``rule:<rule id>`` or ``leak``.
    event_type: str = ""
    #: When the decision was taken (epoch seconds).
    decided_at: float | None = None
    #: Which worker owns the plan after a rebalance: the partition of this key. Records
    #: written before it existed lack it (the identity id is used then).
    partition_key: str | None = None
    #: The policy step of each action (same order as ``actions``): a step starts when the one
    #: before has settled (streams/runtime/plans.py). Empty: every action at once (plans
    #: written before steps existed, rule and leak plans).
    steps: tuple[int, ...] = ()

    @classmethod
    def make(
        cls,
        actions: Iterable[Action],
        *,
        event_type: str,
        decided_at: float,
        partition_key: str,
        alerts: Iterable[Alert] = (),
        accepted_at: float | None = None,
        steps: Iterable[int] = (),
    ) -> Plan:
        ordered = tuple(steps)
        return cls(
            steps=ordered if any(ordered) else (),
            actions=tuple(actions),
            alerts=tuple(alerts),
            accepted_at=accepted_at,
            event_type=event_type,
            decided_at=decided_at,
            partition_key=partition_key,
        )

    def step_groups(self) -> list[list[int]]:
        """Indexes of ``actions`` per step, in step order (one group when unordered)."""
        if len(self.steps) != len(self.actions):
            return [list(range(len(self.actions)))] if self.actions else []
        groups: dict[int, list[int]] = {}
        for index, step in enumerate(self.steps):
            groups.setdefault(step, []).append(index)
        return [groups[step] for step in sorted(groups)]

    def owner_key(self, identity: str) -> str:
        """The partition key that says which worker runs the plan."""
        return self.partition_key if self.partition_key is not None else identity

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "actions": [a.to_dict() for a in self.actions],
            "alerts": [a.to_dict() for a in self.alerts],
            "accepted_at": self.accepted_at,
            "event_type": self.event_type,
            "decided_at": self.decided_at,
        }
        if self.partition_key is not None:
            data["partition_key"] = self.partition_key
        if self.steps:
            data["steps"] = list(self.steps)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        return cls(
            actions=tuple(Action.from_dict(a) for a in data.get("actions") or ()),
            alerts=tuple(Alert.from_dict(a) for a in data.get("alerts") or ()),
            accepted_at=data.get("accepted_at"),
            event_type=str(data.get("event_type") or ""),
            decided_at=data.get("decided_at"),
            partition_key=data.get("partition_key"),
            steps=tuple(int(n) for n in data.get("steps") or ()),
        )
