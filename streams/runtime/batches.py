"""Offboarding batches: a layoff pages on-call once, with the batch's counts, not per person.

Each offboarding ends with its own summary ("Offboarded X in 0.4s; verified at 3 of 3
providers"). A layoff or an agency contract ending decides hundreds within a minute: a
thousand summaries would bury the channel (Slack takes about one message a second) and tell
on-call nothing about the whole. So when ``alerts.batch_threshold`` offboardings are running
at once (started, not finished: a burst, where one-at-a-time offboardings never overlap that
much), they form a batch, and the batch gets one incident (dedup key
``offboarding-batch:<id>``, severity ``high``):

- opened when the batch forms, counting the offboardings that formed it;
- updated (a ``trigger`` with the same dedup key, which PagerDuty folds into the open
  incident) as offboardings finish, at most once per ``alerts.outage_update_interval``, with
  the counts: started, finished, actions done / failed, read back as verified, and the
  identities that had failures (a sample);
- a last update once every offboarding of the batch finished: resolved when none failed,
  left open (a person must look) when some did.

While a batch is open, later offboardings join it as long as each starts within
``alerts.batch_window`` seconds of the one before; it closes once that much time passed
without one. No member has sent its own summary when it joins (it is still running), and
none does: each is written to the audit trail instead (kind ``offboarding.summary``), so
nothing is lost. Failure and
unverified pages are unchanged (provider outages are already one incident per provider).

Pure bookkeeping, no I/O: :class:`streams.runtime.plans.PlanRunner` sends the alerts. Kept in
memory: after a restart, resumed offboardings send their own summaries again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streams.model.records import Alert
from streams.support.times import format_time

RULE = "offboarding.batch"
RUNBOOK = "docs/runbooks/offboarding-batch.md"
#: Identities with failures named in the page (the rest are counted).
SAMPLE = 10
#: A running offboarding not heard of for this long (its plan was cancelled by a rebalance
#: or a stop) no longer counts toward a batch, seconds.
STALE = 600.0


@dataclass
class Batch:
    """One batch of offboardings and its incident."""

    id: str
    opened_at: float
    last_added: float
    members: set[tuple[str, str]] = field(default_factory=set)
    finished: set[tuple[str, str]] = field(default_factory=set)
    actions_done: int = 0
    actions_failed: int = 0
    actions_verified: int = 0
    failed_identities: list[str] = field(default_factory=list)
    with_failures: int = 0
    #: No offboarding joins any more (``window`` passed since the last one joined).
    closed: bool = False
    #: Sends of this incident so far; each has its own ledger key.
    sent: int = 0
    last_sent: float = 0.0
    dirty: bool = False

    @property
    def dedup_key(self) -> str:
        return f"offboarding-batch:{self.id}"

    @property
    def complete(self) -> bool:
        return self.closed and self.finished >= self.members

    def ledger_key(self, event_action: str) -> str:
        """A ledger key per send: the alert dedup must not swallow an update."""
        return f"alert:batch:{self.id}:{event_action}:{self.sent}"

    def alert(self) -> Alert:
        """The incident as it stands: ``resolve`` once complete without failures."""
        total, done = len(self.members), len(self.finished)
        resolve = self.complete and not self.with_failures
        if self.complete:
            head = f"Offboarding batch done: {done} offboarded"
        else:
            head = f"Offboarding batch in progress: {done} of {total} offboarded"
        title = (
            f"{head} since {format_time(datetime.fromtimestamp(self.opened_at, UTC))}; "
            f"{self.actions_done} actions done, {self.actions_verified} verified"
        )
        if self.with_failures:
            title += f" — {self.with_failures} offboarding(s) with FAILED actions"
        details: dict[str, Any] = {
            "batch": self.id,
            "offboardings": total,
            "finished": done,
            "actions_done": self.actions_done,
            "actions_failed": self.actions_failed,
            "actions_verified": self.actions_verified,
            "offboardings_with_failures": self.with_failures,
            "identities_with_failures": list(self.failed_identities),
            "more_identities_with_failures": max(
                0, self.with_failures - len(self.failed_identities)
            ),
            "summaries": "audit trail, kind offboarding.summary",
        }
        return Alert(
            severity="high",
            rule=RULE,
            identity=None,
            dedup_key=self.dedup_key,
            title=title,
            details=details,
            runbook=RUNBOOK,
            event_action="resolve" if resolve else "trigger",
        )


class Batches:
    """Which offboardings form a batch, and each batch's counts. Event loop only."""

    def __init__(
        self, *, threshold: int = 10, window: float = 60.0, update_interval: float = 60.0
    ) -> None:
        self.threshold = threshold
        self.window = window
        self.update_interval = update_interval
        #: Offboardings started and not finished, outside any batch: key -> started at.
        self._running: dict[tuple[str, str], float] = {}
        self._open: Batch | None = None
        self._of: dict[tuple[str, str], Batch] = {}
        #: Batches whose last update is not sent yet.
        self.live: list[Batch] = []

    def started(self, identity: str, plan_id: str, now: float) -> Batch | None:
        """An offboarding started. Returns its batch when it belongs to one, the batch just
        formed included (then the caller opens the incident: ``batch.sent == 0``)."""
        key = (identity, plan_id)
        if key in self._of:
            return self._of[key]
        batch = self._open
        if batch is not None and now - batch.last_added <= self.window:
            batch.members.add(key)
            batch.last_added = now
            batch.dirty = True
            self._of[key] = batch
            return batch
        for old in [k for k, at in self._running.items() if now - at > STALE]:
            del self._running[old]
        self._running[key] = now
        if len(self._running) < self.threshold:
            return None
        opened = min(self._running.values())
        batch = Batch(id=f"{opened:.3f}", opened_at=opened, last_added=now)
        for member in self._running:
            batch.members.add(member)
            self._of[member] = batch
        self._running.clear()
        self._open = batch
        self.live.append(batch)
        return batch

    def of(self, identity: str, plan_id: str) -> Batch | None:
        return self._of.get((identity, plan_id))

    def finished(
        self,
        identity: str,
        plan_id: str,
        *,
        done: int,
        failed: int,
        verified: int,
    ) -> Batch | None:
        """An offboarding of a batch finished with these action counts."""
        key = (identity, plan_id)
        self._running.pop(key, None)
        batch = self._of.get(key)
        if batch is None or key in batch.finished:
            return batch
        batch.finished.add(key)
        batch.actions_done += done
        batch.actions_failed += failed
        batch.actions_verified += verified
        if failed:
            batch.with_failures += 1
            if len(batch.failed_identities) < SAMPLE:
                batch.failed_identities.append(identity)
        batch.dirty = True
        return batch

    def due(self, batch: Batch, now: float) -> bool:
        """Whether to send the batch's incident now: never sent, complete, or changed and
        ``update_interval`` since the last send."""
        if batch.sent == 0 or (batch.complete and batch.dirty):
            return True
        return batch.dirty and now - batch.last_sent >= self.update_interval

    def tick(self, now: float) -> list[Batch]:
        """Close the open batch once ``window`` passed without a new offboarding; the live
        batches whose incident is due now."""
        batch = self._open
        if batch is not None and now - batch.last_added > self.window:
            batch.closed = True
            batch.dirty = True
            self._open = None
        return [b for b in self.live if self.due(b, now)]

    def sent(self, batch: Batch, now: float) -> None:
        """The batch's incident went out; a complete batch is done with."""
        batch.sent += 1
        batch.last_sent = now
        batch.dirty = False
        if batch.complete:
            if batch in self.live:
                self.live.remove(batch)
            for member in batch.members:
                self._of.pop(member, None)
