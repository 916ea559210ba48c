"""Provider outages: one page per provider and failure class, not one per stuck action.

During an outage every action at that provider fails the same way; paging per action opened
24-26 PagerDuty incidents for 10 offboardings, and a burst would open thousands. Here the
failures of one provider are grouped by what went wrong (:func:`failure_class`), and each
group is one incident (PagerDuty ``dedup_key`` ``provider-outage:<provider>:<class>``):

- the first action stuck (fast retries spent) or failed permanently opens it: one page;
- more stuck or failed actions update the same incident with the counts, at most once per
  ``update_interval`` (PagerDuty folds a trigger with an open incident's key into it; a chat
  sink gets one message per update, not per action);
- a *retryable* group (rate limited, server errors, unreachable) resolves when none of its
  actions is stuck any more and the provider answered a call (a success, or a 4xx that is
  an answer too): the provider recovered. Open retryable groups are kept in the ledger
  (:data:`LEDGER_PREFIX`), so a restart that finds the provider working again resolves the
  page instead of leaving it open;
- a *permanent* group (bad credentials, a rejected request, no such provider, a crashed
  connector) is never resolved here: those actions will not be retried and a person must
  act; it closes in memory after ``quiet`` seconds without a new failure, and a failure after
  that pages again.

Pure bookkeeping, no I/O: :class:`streams.runtime.alerts.AlertRouter` sends the alerts and writes
the ledger (:mod:`streams.runtime.plans` reports each action's outcome here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streams.model.records import Action, Alert
from streams.support.errors import AuthError, PermanentError, ProviderError, RetryableError
from streams.support.times import format_time

RUNBOOK = "docs/runbooks/revocation-failing.md"
RULE = "offboarding.revocation_failed"
#: Ledger keys of the open retryable outages (``outage:<provider>:<class>``).
LEDGER_PREFIX = "outage:"
#: Failure classes that the executor keeps retrying (the group resolves by itself).
RETRYABLE = frozenset({"rate_limited", "server_error", "unreachable"})
#: Classes of failures that are final: a person must act.
PERMANENT = frozenset({"auth", "rejected", "not_configured", "crashed"})
FAILURE_CLASSES = tuple(sorted(RETRYABLE | PERMANENT))
#: Failures that are still an answer from the provider: it is reachable and working.
ANSWERED = frozenset({"auth", "rejected"})
#: Identities named in an outage page (the rest are counted).
SAMPLE = 5

_WHAT: dict[str, str] = {
    "rate_limited": "rate limiting",
    "server_error": "answering with server errors",
    "unreachable": "unreachable (timeouts or refused connections)",
    "auth": "rejecting accessguard's credential (401/403)",
    "rejected": "rejecting requests (4xx)",
    "not_configured": "not configured",
    "crashed": "failing inside accessguard (connector crash)",
}


def failure_class(error: BaseException | None) -> str:
    """What kind of failure ``error`` is, as a bounded label."""
    if isinstance(error, RetryableError):
        if error.status in {429, 403}:  # 403: Google's rate-limit reasons
            return "rate_limited"
        if error.status is not None and error.status >= 500:
            return "server_error"
        return "unreachable"
    if isinstance(error, AuthError):
        return "auth"
    if isinstance(error, PermanentError):
        return "rejected"
    if isinstance(error, ProviderError):
        return "unreachable"
    return "crashed"


@dataclass
class Group:
    """The failures of one provider in one class, for as long as the incident is open."""

    provider: str
    failure: str
    opened_at: float
    #: idempotency key -> (identity, action) of the actions stuck now.
    stuck: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Actions that failed for good in this incident.
    failed: int = 0
    #: Stuck actions that completed since the incident opened.
    recovered: int = 0
    identities: list[str] = field(default_factory=list)
    last_error: str = ""
    last_change: float = 0.0
    last_sent: float = 0.0
    #: Sends of this incident so far (0: not paged yet): each has its own ledger key.
    sent: int = 0
    dirty: bool = False
    #: Opened by an earlier process (from the ledger): resolve it once the provider works.
    restored: bool = False

    @property
    def key(self) -> str:
        return f"{self.provider}:{self.failure}"

    @property
    def retryable(self) -> bool:
        return self.failure in RETRYABLE

    @property
    def dedup_key(self) -> str:
        return f"provider-outage:{self.key}"

    @property
    def ledger_key(self) -> str:
        return LEDGER_PREFIX + self.key

    def alert_ledger_key(self, event_action: str) -> str:
        """A ledger key per send: the alert dedup must not swallow an update."""
        stamp = f"{self.opened_at:.6f}"
        return f"alert:outage:{self.key}:{stamp}:{event_action}:{self.sent}"

    def note(self, identity: str, error: str, now: float) -> None:
        if identity not in self.identities and len(self.identities) < SAMPLE:
            self.identities.append(identity)
        self.last_error = error[:500]
        self.last_change = now
        self.dirty = True

    def alert(self, event_action: str = "trigger") -> Alert:
        stuck, failed = len(self.stuck), self.failed
        what = _WHAT.get(self.failure, self.failure)
        if event_action == "resolve":
            title = (
                f"{self.provider} recovered: stuck actions completed "
                f"({self.recovered} since {format_time(_utc(self.opened_at))})"
            )
        else:
            counts = []
            if stuck:
                counts.append(f"{stuck} action(s) stuck, retrying")
            if failed:
                counts.append(f"{failed} action(s) failed for good")
            title = f"{self.provider} is {what}: " + ", ".join(counts or ["actions failing"])
        return Alert(
            severity="critical",
            rule=RULE,
            identity=None,
            dedup_key=self.dedup_key,
            title=title,
            details={
                "provider": self.provider,
                "failure": self.failure,
                "retrying": self.retryable,
                "stuck_actions": stuck,
                "failed_actions": failed,
                "recovered_actions": self.recovered,
                "since": format_time(_utc(self.opened_at)),
                "identities": list(self.identities),
                "more_identities": max(0, len(self.stuck) + failed - len(self.identities)),
                "error": self.last_error,
            },
            runbook=RUNBOOK,
            event_action=event_action,
        )

    def to_ledger(self, status: str) -> dict[str, Any]:
        return {
            "status": status,
            "provider": self.provider,
            "failure": self.failure,
            "opened_at": self.opened_at,
            "stuck": len(self.stuck),
            "failed": self.failed,
        }


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class Outages:
    """The open incidents of this process, keyed by provider and failure class."""

    def __init__(self, *, update_interval: float = 60.0, quiet: float = 3600.0) -> None:
        self.update_interval = update_interval
        self.quiet = quiet
        self.groups: dict[str, Group] = {}
        #: idempotency key -> group key, for the stuck actions.
        self._stuck_in: dict[str, str] = {}

    def _group(self, provider: str, failure: str, now: float) -> tuple[Group, bool]:
        key = f"{provider}:{failure}"
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = Group(provider, failure, opened_at=now, last_change=now)
            return group, True
        return group, False

    def stuck(self, action: Action, error: BaseException, now: float) -> Group:
        """``action`` spent its fast retries on ``error``; its group (new or not)."""
        group, _ = self._group(action.provider, failure_class(error), now)
        if action.idempotency_key not in self._stuck_in:
            group.stuck[action.idempotency_key] = (action.identity, action.action)
            self._stuck_in[action.idempotency_key] = group.key
        group.note(action.identity, str(error), now)
        return group

    def failed(self, action: Action, failure: str, error: str, now: float) -> Group:
        """``action`` failed for good (``failure`` is its class); its group."""
        group, _ = self._group(action.provider, failure, now)
        group.failed += 1
        group.note(action.identity, error, now)
        return group

    def settled(self, action: Action) -> Group | None:
        """A stuck ``action`` ended (done or failed): the group it was stuck in, or None."""
        key = self._stuck_in.pop(action.idempotency_key, None)
        group = self.groups.get(key) if key is not None else None
        if group is not None and group.stuck.pop(action.idempotency_key, None) is not None:
            return group
        return None

    def recovered(self, provider: str) -> list[Group]:
        """A call to ``provider`` succeeded: its retryable groups with nothing stuck, which
        are to be resolved (and are forgotten here)."""
        done = [
            g
            for g in self.groups.values()
            if g.provider == provider and g.retryable and not g.stuck
        ]
        for group in done:
            del self.groups[group.key]
        return done

    def due(self, now: float) -> list[Group]:
        """Groups whose counts changed and whose last page is ``update_interval`` old; and
        permanent groups quiet for ``quiet`` seconds are forgotten."""
        updates = []
        for group in list(self.groups.values()):
            if group.dirty and group.sent and now - group.last_sent >= self.update_interval:
                updates.append(group)
            elif (
                not group.retryable
                and not group.stuck
                and not group.dirty
                and now - group.last_change >= self.quiet
            ):
                del self.groups[group.key]
        return updates

    def restore(self, entry: dict[str, Any]) -> Group | None:
        """An open retryable incident an earlier process recorded in the ledger."""
        provider, failure = entry.get("provider"), entry.get("failure")
        if not isinstance(provider, str) or failure not in RETRYABLE:
            return None
        opened = float(entry.get("opened_at") or 0.0)
        group, new = self._group(provider, str(failure), opened)
        if new:
            group.restored = True
            group.sent = 1  # paged by the earlier process
        return group
