"""Alert routing: a rule alert to the sinks of its intent, as part of one incident per subject
(:mod:`streams.runtime.incidents`: staged rules to review only, ``page`` rules page, the rest
go to chat); any other alert to the sinks its severity routes to; each once; provider outages
paged once per outage.

An alert is sent once per dedup key and action (``trigger``/``resolve``): the ledger records
it, so a redelivered event or a re-run plan sends nothing twice. A provider that fails many
actions opens one incident (:mod:`streams.runtime.outages` keeps the count), updated at most
once per ``alerts.outage_update_interval`` and resolved when the provider answers again; an
open retryable incident is kept in the ledger, so a restarted worker can resolve it.

Detections (login rules, leaks) do not wait for the pagers: the event path only *queues* the
alert (:meth:`AlertRouter.enqueue`: journal and the ``alerts.pending`` topic, acknowledged),
and the worker's alert agent sends it (:meth:`AlertRouter.dispatch`) with the executor's
retries. A slow Slack or PagerDuty then delays other alerts, never detection (issue 17).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import orjson
import structlog

from streams.config.alerting import IncidentSettings
from streams.model.records import Action, Alert, idempotency_key
from streams.runtime.batches import RULE as BATCH_RULE
from streams.runtime.executor import Executor, Sink
from streams.runtime.incidents import Incident, Incidents, intent_of, queue_key
from streams.runtime.outages import LEDGER_PREFIX, Group, Outages
from streams.runtime.outages import RULE as OUTAGE_RULE
from streams.runtime.writes import Writer
from streams.support import metrics
from streams.support.errors import ProviderError

#: Alerts no rule raised that are one incident updated under one dedup key: their updates
#: and resolve reply in the thread of the incident's first chat message.
KEYED_INCIDENTS = frozenset({OUTAGE_RULE, BATCH_RULE})
#: At most this many queued ledger keys are remembered (then forgotten all at once).
QUEUED_MEMORY = 100_000

# One logger name for the worker's core, as before it was split into modules.
log = structlog.get_logger("streams.runtime.engine")


class AlertRouter:
    """Sends alerts through the executor's sink calls and records them. Event loop only."""

    def __init__(
        self,
        writer: Writer,
        *,
        executor: Executor,
        sinks: Mapping[str, Sink],
        routes: Mapping[str, list[str]],
        runbook_base: str,
        outages: Outages,
        intents: Mapping[str, list[str]] | None = None,
        incidents: IncidentSettings | None = None,
    ) -> None:
        self.writer = writer
        self.executor = executor
        self.sinks = sinks
        self.routes = routes
        #: Sinks per rule-alert intent (page, notify, review): ``alerts.intents``.
        self.intents: Mapping[str, list[str]] = intents if intents is not None else {}
        grouping = incidents if incidents is not None else IncidentSettings()
        self.incidents = Incidents(
            writer.views.ledger, window=grouping.window, timeline=grouping.timeline
        )
        self.runbook_base = runbook_base
        self.outages = outages
        #: Ledger keys queued by this process (most recent first to go): saves re-queueing
        #: an alert that a rule repeats before the alert agent sent it.
        self._queued: set[str] = set()

    async def enqueue(self, alert: Alert) -> None:
        """Hand a detection's alert to the alert agent and return: recorded in the journal
        (replayed for the embedded stack) and acknowledged on the ``alerts.pending`` topic,
        so it survives a crash, but sent by :meth:`dispatch` on its own consumer, where a
        slow or failing pager stalls nothing but other alerts. Already sent (ledger), or
        queued by this process since it started: nothing."""
        w = self.writer
        key = "alert:" + idempotency_key(alert.dedup_key, alert.event_action)
        if key in w.views.ledger or key in self._queued:
            return
        data = alert.to_dict()
        # keyed by subject: one worker owns a subject's incident (streams/runtime/incidents.py)
        queued = queue_key(alert)
        await w.record("alert_pending", key=queued, value=data)
        await w.publish(w.topics.alert_queue, queued, data)
        if len(self._queued) >= QUEUED_MEMORY:
            self._queued.clear()  # only saves sends: the ledger is what keeps a page single
        self._queued.add(key)
        metrics.ALERTS_QUEUED.inc()

    async def dispatch(self, raw: bytes | None) -> None:
        """One record of ``alerts.pending``: route it (:meth:`send_alert`, which skips what the
        ledger says was sent, so a redelivery or a replay sends nothing twice)."""
        try:
            alert = Alert.from_dict(orjson.loads(raw or b""))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            await self.writer.dead_letter(
                self.writer.topics.alert_queue, raw, f"invalid: {exc!r}"[:300]
            )
            return
        await self.send_alert(alert)

    async def send_alert(self, alert: Alert, *, ledger_key: str | None = None) -> None:
        """Send ``alert`` once per dedup key and action (or once per ``ledger_key``, for an
        incident that is updated): a rule alert to its intent's sinks as part of its
        incident; any other alert to its severity's sinks."""
        w = self.writer
        key = ledger_key or "alert:" + idempotency_key(alert.dedup_key, alert.event_action)
        if key in w.views.ledger:
            return
        if alert.runbook and self.runbook_base and "://" not in alert.runbook:
            alert = replace(alert, runbook=f"{self.runbook_base}/{alert.runbook}")
        intent = intent_of(alert)
        # alerts are few (the alert agent, not the event path): labels() per alert is cheap
        metrics.ALERTS_ROUTED.labels(alert.rule, intent or "severity").inc()
        incident: Incident | None = None
        if intent is None:
            sinks = self.routes.get(alert.severity, [])
            if alert.rule in KEYED_INCIDENTS:
                incident, _ = self.incidents.join_keyed(alert, w.clock())
        else:
            incident, opened = self.incidents.join(alert, intent, w.clock())
            (metrics.INCIDENTS_OPENED if opened else metrics.INCIDENTS_UPDATED).inc()
            sinks = self.intents.get(intent, [])
        shown = (
            alert
            if incident is None
            else replace(alert, details={**alert.details, "incident": incident.view()})
        )
        await w.publish(w.topics.alerts, alert.dedup_key, shown.to_dict())
        results: dict[str, str] = {}
        for name in sinks:
            sink = self.sinks.get(name)
            if sink is None:
                metrics.ALERTS.labels(name, alert.severity, "unrouted").inc()
                results[name] = "unconfigured"
                continue
            out = alert if incident is None else incident.for_sink(alert, name)
            outcome = await self.executor.send_alert(name, sink, out)
            results[name] = outcome.status if outcome.error is None else f"failed: {outcome.error}"
            if incident is not None and outcome.error is None:
                incident.sent(name, outcome.result)
                incident.paged = incident.paged or intent == "page"
        entry: dict[str, Any] = {"status": "sent", "sinks": results, "finished_at": w.clock()}
        if incident is not None:
            await w.put_ledger(incident.ledger_key, incident.to_dict())
            entry["incident"] = incident.id
        await w.put_ledger(key, entry)
        await w.audit("alert", alert.dedup_key, alert=shown.to_dict(), sinks=results)
        log.info(
            "alert.sent",
            rule=alert.rule,
            severity=alert.severity,
            action=alert.event_action,
            intent=intent,
            incident=incident.id if incident is not None else None,
            sinks=results,
        )

    # ---------------------------------------------------------------- provider outages
    async def on_stuck(self, action: Action, exc: ProviderError, attempts: int) -> None:
        """The executor's callback while an action keeps failing retryably."""
        group = self.outages.stuck(action, exc, self.writer.clock())
        self.stuck_gauge(group)
        if not group.sent:
            await self.send_outage(group, "trigger")

    def stuck_gauge(self, group: Group) -> None:
        metrics.PROVIDER_STUCK.labels(group.provider, group.failure).set(len(group.stuck))

    async def send_outage(self, group: Group, event_action: str) -> None:
        """Open, update (``trigger`` again, same dedup key) or resolve one provider incident.
        An open retryable incident is kept in the ledger, so a restart can resolve it."""
        alert = group.alert(event_action)
        ledger_key = group.alert_ledger_key(event_action)
        first = not group.sent
        group.sent += 1
        group.last_sent = self.writer.clock()
        group.dirty = False
        await self.send_alert(alert, ledger_key=ledger_key)
        if group.retryable and (first or event_action == "resolve"):
            status = "resolved" if event_action == "resolve" else "open"
            await self.writer.put_ledger(group.ledger_key, group.to_ledger(status))
        if event_action == "resolve":
            self.stuck_gauge(group)

    async def tick_outages(self, now: float | None = None) -> int:
        """Update the open incidents whose counts changed (at most once per
        ``alerts.outage_update_interval``). Returns the updates sent."""
        groups = self.outages.due(self.writer.clock() if now is None else now)
        for group in groups:
            await self.send_outage(group, "trigger")
        return len(groups)

    def restore_outages(self) -> int:
        """The retryable incidents an earlier process left open (from the ledger): resolved
        here once the provider works again."""
        restored = 0
        for key, entry in list(self.writer.views.ledger.items()):
            if (
                key.startswith(LEDGER_PREFIX)
                and entry.get("status") == "open"
                and self.outages.restore(entry) is not None
            ):
                restored += 1
        return restored
