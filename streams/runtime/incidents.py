"""Incidents, not alert storms: where a rule alert goes, and which incident it belongs to.

**Intent, not severity, decides who is disturbed** (issue 18). A rule alert carries the rule's
status and response in its details (``rule_status``, ``route``: streams/detect/engine.py);
:func:`intent_of` turns them into one of ``alerts.intents``:

- ``review``: the rule is ``staged`` (on trial: it alerts, never acts), or the decision marked
  the alert for review (``route: review``, e.g. a leak too old to act on). A review channel;
  never the pager, whatever the severity;
- ``page``: a stable rule whose response says ``page``;
- ``notify``: any other stable rule (``notify``, or no notification asked for): chat only.

Alerts no rule raised (offboarding summaries, provider outages, offboarding batches) have no
intent and keep their severity routes (``alerts.routes.<severity>``). Outages and batches are
already one incident each, with one dedup key that their updates and resolve reuse: they join
the same model as keyed incidents (:meth:`Incidents.join_keyed`: the pager keeps their key, chat
gets one thread per incident), and never mix with rule incidents, so nothing pages twice.

**One incident per subject and window.** Rule alerts about one subject (:func:`subject_of`:
the identity; else a shared account, or the hashed principal) within ``alerts.incidents.window``
seconds of that subject's last alert join one :class:`Incident`, across rules and intents. The
incident is what reaches people: its first paging alert triggers PagerDuty with the incident's
own dedup key, later ones are triggers on that same key (PagerDuty folds them into the open
incident: one page); in chat, its first message in a channel starts a thread and later alerts
reply in it (sinks that return a thread id: Slack's ``chat.postMessage`` ``ts``). The incident
carries its timeline: first and last seen, every rule, the most recent alerts.

**It survives a restart.** The incident is a ledger entry (``incident:<subject>``, the
compacted ledger topic plus the journal for the embedded broker), read back from the ledger
view at each alert, so a restarted worker finds it and keeps paging once. The alert queue is
keyed by the subject (:func:`queue_key`), so one worker owns a subject's incident. The
incident id is derived from the subject and the first alert's dedup key: a crash after a page
but before the ledger write rebuilds the same incident and the same PagerDuty key (a trigger
PagerDuty folds in); only a chat post may show twice, as for any alert.

Pure bookkeeping, no I/O: :class:`streams.runtime.alerts.AlertRouter` sends and writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from streams.model.records import Alert, idempotency_key
from streams.support.times import format_time

#: Ledger keys of incidents: ``incident:<subject>`` (the subject's latest incident).
LEDGER_PREFIX = "incident:"
#: Severities from least to most severe: an incident shows the worst of its alerts.
_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


def _at(ts: float) -> str:
    return format_time(datetime.fromtimestamp(ts, UTC))


def intent_of(alert: Alert) -> str | None:
    """``page``, ``notify`` or ``review`` for a rule alert; None for an alert no rule raised
    (routed by severity)."""
    details = alert.details
    status = details.get("rule_status")
    if status is None:
        return None
    route = details.get("route")
    if status != "stable":
        return "review"
    if route == "page":
        return "page"
    if route in ("notify", "none", None):
        return "notify"
    # "review", or whatever else a decision marks (a stale leak listed for review): a human
    # looks when they review, nobody is woken
    return "review"


def subject_of(alert: Alert) -> str:
    """Who a rule alert is about: ``identity:<id>``; for no identity, the shared account of a
    leaked shared login (``account:<id>``) or the principal's hash (``subject:<hash>``)."""
    if alert.identity:
        return f"identity:{alert.identity}"
    details = alert.details
    if details.get("subject_kind") == "shared_account" and details.get("account"):
        return f"account:{details['account']}"
    subject = details.get("subject")
    if subject:
        return f"subject:{subject}"
    return f"alert:{alert.dedup_key}"


def queue_key(alert: Alert) -> str:
    """The ``alerts.pending`` key: a rule alert's subject (one worker owns its incident),
    else the alert's dedup key."""
    return subject_of(alert) if intent_of(alert) is not None else alert.dedup_key


@dataclass
class Incident:
    """One incident: the rule alerts about one subject within the window, and what each sink
    was sent. ``sinks`` maps a sink name to ``{"posts": n, "thread": id | None}``."""

    id: str
    subject: str
    opened_at: float
    last_seen: float
    severity: str
    title: str
    count: int = 0
    rules: list[str] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    sinks: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: True once a paging alert of this incident went to a page sink.
    paged: bool = False
    #: The pager key an alert brought along (an outage or batch incident, whose updates and
    #: resolve must reach its own PagerDuty incident); None: ``incident:<id>``.
    pager_key: str | None = None
    #: Resolved: the next alert of the subject opens a new incident (PagerDuty does too).
    closed: bool = False

    @property
    def ledger_key(self) -> str:
        return LEDGER_PREFIX + self.subject

    @property
    def dedup_key(self) -> str:
        """The incident's key at the pager: every update of the incident reuses it."""
        return self.pager_key or f"incident:{self.id}"

    def add(self, alert: Alert, intent: str, now: float, keep: int) -> None:
        """Record ``alert`` in the timeline (the most recent ``keep`` are listed)."""
        self.count += 1
        self.last_seen = max(self.last_seen, now)
        if _RANK.get(alert.severity, 3) > _RANK.get(self.severity, 3):
            self.severity = alert.severity
        if alert.rule not in self.rules:
            self.rules.append(alert.rule)
        self.timeline.append(
            {
                "at": _at(now),
                "rule": alert.rule,
                "severity": alert.severity,
                "intent": intent,
                "title": alert.title[:200],
                "dedup_key": alert.dedup_key,
            }
        )
        del self.timeline[:-keep]

    def view(self) -> dict[str, Any]:
        """What an alert of the incident shows about it (details ``incident``)."""
        return {
            "id": self.id,
            "subject": self.subject,
            "first_seen": _at(self.opened_at),
            "last_seen": _at(self.last_seen),
            "alerts": self.count,
            "rules": list(self.rules),
            "severity": self.severity,
            "timeline": list(self.timeline),
        }

    def for_sink(self, alert: Alert, sink: str) -> Alert:
        """``alert`` as ``sink`` gets it: the incident's dedup key, the timeline in details,
        an update marked as one, and the sink's thread of this incident if it has one."""
        state = self.sinks.get(sink)
        title = alert.title
        # a keyed incident's alerts (outage, batch) already say they update it
        if state is not None and state.get("posts") and self.pager_key is None:
            title = f"[incident {self.id}, alert {self.count}] {alert.title}"
        return replace(
            alert,
            dedup_key=self.dedup_key,
            title=title,
            details={**alert.details, "incident": self.view()},
            thread=state.get("thread") if state is not None else None,
        )

    def sent(self, sink: str, result: Mapping[str, Any]) -> None:
        """``sink`` took one alert of this incident; ``result["thread"]`` (the first post's
        id where the sink threads) is where the later ones go."""
        state = self.sinks.setdefault(sink, {"posts": 0, "thread": None})
        state["posts"] += 1
        thread = result.get("thread")
        if state["thread"] is None and isinstance(thread, str) and thread:
            state["thread"] = thread

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subject": self.subject,
            "opened_at": self.opened_at,
            "last_seen": self.last_seen,
            "severity": self.severity,
            "title": self.title,
            "count": self.count,
            "rules": list(self.rules),
            "timeline": list(self.timeline),
            "sinks": {k: dict(v) for k, v in self.sinks.items()},
            "paged": self.paged,
            "pager_key": self.pager_key,
            "closed": self.closed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Incident:
        return cls(
            id=str(data["id"]),
            subject=str(data["subject"]),
            opened_at=float(data["opened_at"]),
            last_seen=float(data["last_seen"]),
            severity=str(data["severity"]),
            title=str(data["title"]),
            count=int(data.get("count", 0)),
            rules=list(data.get("rules") or ()),
            timeline=list(data.get("timeline") or ()),
            sinks={k: dict(v) for k, v in (data.get("sinks") or {}).items()},
            paged=bool(data.get("paged", False)),
            pager_key=data.get("pager_key"),
            closed=bool(data.get("closed", False)),
        )


class Incidents:
    """Finds or opens the incident of a rule alert. The ledger (``ledger``: the worker's
    materialised view of the ledger topic) is the only memory, so a restart changes
    nothing."""

    def __init__(self, ledger: Mapping[str, Any], *, window: float, timeline: int) -> None:
        self.ledger = ledger
        self.window = window
        self.timeline = timeline

    def current(self, subject: str, now: float, window: float | None) -> Incident | None:
        """The subject's open incident if its last alert is at most ``window`` seconds old
        (None: any age)."""
        entry = self.ledger.get(LEDGER_PREFIX + subject)
        if not isinstance(entry, Mapping):
            return None
        try:
            incident = Incident.from_dict(entry)
        except (KeyError, TypeError, ValueError):
            return None  # an entry this version cannot read: start a new incident
        if incident.closed or (window is not None and now - incident.last_seen > window):
            return None
        return incident

    def join(self, alert: Alert, intent: str, now: float) -> tuple[Incident, bool]:
        """The incident ``alert`` belongs to, with the alert added, and whether it is new."""
        return self._join(subject_of(alert), alert, intent, now, window=self.window)

    def join_keyed(self, alert: Alert, now: float) -> tuple[Incident, bool]:
        """An alert no rule raised that is its own incident, updated under its dedup key (a
        provider outage, an offboarding batch): open until resolved, whatever the window,
        and the pager keeps the alert's key. What it adds is one chat thread."""
        subject = f"alert:{alert.dedup_key}"
        return self._join(subject, alert, "severity", now, window=None, pager_key=alert.dedup_key)

    def _join(
        self,
        subject: str,
        alert: Alert,
        intent: str,
        now: float,
        *,
        window: float | None,
        pager_key: str | None = None,
    ) -> tuple[Incident, bool]:
        incident = self.current(subject, now, window)
        opened = incident is None
        if incident is None:
            incident = Incident(
                id=idempotency_key(subject, alert.dedup_key, str(now) if pager_key else "")[:16],
                subject=subject,
                opened_at=now,
                last_seen=now,
                severity=alert.severity,
                title=alert.title,
                pager_key=pager_key,
            )
        incident.add(alert, intent, now, self.timeline)
        if alert.event_action == "resolve":
            incident.closed = True
        return incident, opened
