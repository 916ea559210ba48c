"""Source health: what every source of events tells Prometheus, and whether a poller is well.

A *source* is one door events come in by: a poller (``poller:<name>``) or an HTTP ingest
endpoint (``hr_webhook``, ``auth_ingest:<vendor>``, ``leak_ingest``). Each exports, through
one :class:`SourceHealth`:

* events accepted (``accessguard_events_accepted_total{source}``) and rejections per reason
  (``accessguard_events_rejected_total{source,reason}``; the reason is one of
  :data:`~streams.support.metrics.REJECT_REASONS`, never the normaliser's own text, which
  may quote the payload);
* the time of its last accepted event (``accessguard_source_last_event_timestamp_seconds``);
* its expected cadence (``accessguard_source_expected_cadence_seconds``), when configured.

The shipped alert rules (deploy/prometheus/accessguard-rules.yaml) turn these into "a source
is silent for longer than its cadence" and "a source's rejection share jumped" (schema drift).

Why the last-event series appears only with the first event: a source that restarts must not
look fresh. Prometheus keeps the previous process's last value for the rule's look-back
window, so a poller that crash-loops stays silent in the alert's eyes; a gauge set to the
start time at every start would hide exactly that.

Children are bound once per source (``labels()`` costs ~4.5 µs); per event there is one
counter increment and one gauge set per batch, not per record.

:func:`poller_health` is the decision behind a poller's ``/healthz``: healthy only while its
last round succeeded recently; an authentication error or ``max_failures`` failed rounds in a
row make it unhealthy at once (a poller that cannot read its source must be loud, not
quietly retrying behind a green probe).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.metrics import Counter, Gauge

from streams.support import metrics

#: A normaliser refused the record (:class:`~streams.support.errors.ValidationError`).
REJECTED_RECORD = "bad_record"
#: A normaliser raised something else: a bug, or a payload it cannot read at all.
NORMALISER_ERROR = "normaliser_error"


class SourceHealth:
    """The pre-bound metric children of one source. Cheap to call per batch."""

    def __init__(
        self,
        source: str,
        reasons: tuple[str, ...] = (REJECTED_RECORD,),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self._clock = clock
        self._accepted: Counter = metrics.EVENTS_ACCEPTED.labels(source)
        self._rejected: dict[str, Counter] = {}
        for reason in reasons:
            self._bind(reason)
        self._last: Gauge | None = None
        self.cadence: float = 0.0

    def _bind(self, reason: str) -> Counter:
        if reason not in metrics.REJECT_REASONS:
            # A closed set: an unknown reason is a bug here, never a new label value.
            raise ValueError(f"unknown rejection reason {reason!r}")
        child: Counter = metrics.EVENTS_REJECTED.labels(self.source, reason)
        self._rejected[reason] = child
        return child

    def accepted(self, count: int = 1) -> None:
        """``count`` events accepted now (0: nothing, and the source stays as silent as it was)."""
        if count <= 0:
            return
        self._accepted.inc(count)
        last = self._last
        if last is None:
            last = self._last = metrics.SOURCE_LAST_EVENT.labels(self.source)
        last.set(self._clock())

    def rejected(self, reason: str, count: int = 1) -> None:
        """``count`` events refused for ``reason`` (one of REJECT_REASONS)."""
        if count <= 0:
            return
        child = self._rejected.get(reason) or self._bind(reason)
        child.inc(count)

    def expect(self, cadence: float) -> None:
        """Export the expected cadence (seconds; 0 or less: the source is not watched)."""
        self.cadence = max(float(cadence), 0.0)
        if self.cadence > 0:
            metrics.SOURCE_CADENCE.labels(self.source).set(self.cadence)
        else:
            with contextlib.suppress(KeyError):  # never exported: nothing to take back
                metrics.SOURCE_CADENCE.remove(self.source)


@dataclass(frozen=True, slots=True)
class Health:
    """A poller's health as its ``/healthz`` reports it."""

    healthy: bool
    reason: str
    detail: Mapping[str, Any]


def poller_health(
    status: Mapping[str, Any],
    *,
    now: float,
    interval: float,
    ready_within: float,
    max_failures: int,
) -> Health:
    """Whether a poller is healthy, from its :attr:`~connectors.base.pollers.PollLoop.status`.

    Unhealthy (with the reason) when: it has not completed a round yet (``starting``); its
    last round failed on authentication (``auth``: a human must fix the credential); it
    failed ``max_failures`` rounds in a row (``failing``); or its last good round is older
    than ``max(ready_within, 3 * interval)`` (``stale``: the loop is stuck). Otherwise
    ``ok``, also while one or two rounds in a row failed on something retryable.
    """
    failures = int(status.get("consecutive_failures") or 0)
    last_success = status.get("last_success")
    detail = {
        "last_success": last_success,
        "consecutive_failures": failures,
        "last_error": status.get("last_error"),
        "caught_up": status.get("caught_up"),
        "published": status.get("published"),
        "rejected": status.get("rejected"),
    }
    if status.get("failed") and status.get("last_error_kind") == "auth":
        return Health(False, "auth", detail)
    if failures >= max_failures:
        return Health(False, "failing", detail)
    if last_success is None:
        return Health(False, "starting", detail)
    if now - float(last_success) > max(ready_within, 3 * interval):
        return Health(False, "stale", detail)
    return Health(True, "ok", detail)
