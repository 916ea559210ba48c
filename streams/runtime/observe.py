"""Gauges refreshed on a timer (``worker.metrics_interval``), not per event: consumer lag,
registry figures and the readiness checks. Each refresh is a walk over in-memory views and
one ListOffsets request, so its cost does not grow with the event rate.

Label values are closed sets (identity kinds, roles, readiness check names) or configured
topic names — never an identity, an e-mail or an IP (docs/architecture.md, decision 8).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connectors.custody.provider import CUSTODY_ACTIONS
from streams.model import kinds
from streams.model.access import held_grants, is_offboarded
from streams.model.records import ACTION_KINDS, IDENTITY_KINDS, ROLES
from streams.model.registry import Registry
from streams.model.state import StateStore
from streams.support import metrics

#: A worker whose committed offsets have not moved for this long while it has lag is stalled
#: (Faust consumers can stop silently while the group looks healthy: faust#175, #640).
STALL_SECONDS = 120.0

#: The reasons Engine.dead_letter and the ingest edge record (the text before the first ':').
DEAD_LETTER_REASONS = ("invalid", "rule_error", "processing_error")


def _kinds_of(provider_type: str) -> frozenset[str]:
    """The action kinds a provider of ``provider_type`` may be asked for (a custody vault's
    are its provider's ``supports``; a secret store only rotates)."""
    if provider_type in kinds.CUSTODY_TYPES:
        return CUSTODY_ACTIONS
    if provider_type == "secret_store":
        return frozenset({"rotate_shared_credential"})
    return frozenset(ACTION_KINDS) - CUSTODY_ACTIONS


def initialise_series(provider_types: Mapping[str, str], input_topics: Iterable[str]) -> None:
    """Export at 0 the failure series that alerts take ``increase()`` of. A counter whose
    first sample is already 1 shows no increase, so the first failure ever would not alert."""
    for provider, kind in provider_types.items():
        for action in ACTION_KINDS:
            if action in _kinds_of(kind):
                metrics.ACTIONS.labels(provider, action, "failed")
        metrics.REVOCATION_ACKNOWLEDGED.labels(provider)
        metrics.REVOCATION_FAILURES.labels(provider)
        metrics.REVOCATION_VERIFIED.labels(provider)
        metrics.REVOCATION_UNVERIFIED.labels(provider)
        for result in ("verified", "not_verifiable", "failed"):
            metrics.VERIFICATIONS.labels(provider, result)
    for topic in input_topics:
        for reason in DEAD_LETTER_REASONS:
            metrics.DEAD_LETTERS.labels(topic, reason)
    for endpoint in ("hr_webhook", "auth_ingest", "leak_ingest"):
        for reason in metrics.AUTH_FAILURE_REASONS:
            metrics.AUTH_FAILURES.labels(endpoint, reason)


@dataclass(frozen=True, slots=True)
class RegistryFigures:
    identities: dict[str, int]
    grants: dict[str, int]
    without_mfa: int
    offboarded_with_grants: int
    agency_grants_past_end: int


def registry_figures(registry: Registry, lifecycle: StateStore, now: datetime) -> RegistryFigures:
    """What the registry gauges show. A grant counts as held until accessguard removed it
    (``removed_grants`` in the lifecycle state): the registry file may still list it."""
    identities = dict.fromkeys(IDENTITY_KINDS, 0)
    for ident in registry.identities.values():
        identities[ident.kind] = identities.get(ident.kind, 0) + 1
    grants = dict.fromkeys(ROLES, 0)
    without_mfa = 0
    for grant in registry.grants.values():
        grants[grant.role] = grants.get(grant.role, 0) + 1
        without_mfa += grant.mfa == "none"
    offboarded = 0
    for identity_id in registry.identities:
        if not is_offboarded(registry, lifecycle, identity_id):
            continue
        if held_grants(registry, lifecycle.identity(identity_id)):
            offboarded += 1
    past_end = 0
    for agency in registry.agencies.values():
        if agency.contract_ends > now:
            continue
        for member in agency.members:
            past_end += len(held_grants(registry, lifecycle.identity(member)))
    return RegistryFigures(identities, grants, without_mfa, offboarded, past_end)


def update_registry_gauges(registry: Registry, lifecycle: StateStore, now: datetime) -> None:
    figures = registry_figures(registry, lifecycle, now)
    for kind, count in figures.identities.items():
        metrics.REGISTRY_IDENTITIES.labels(kind).set(count)
    for role, count in figures.grants.items():
        metrics.REGISTRY_GRANTS.labels(role).set(count)
    metrics.REGISTRY_GRANTS_NO_MFA.set(figures.without_mfa)
    metrics.REGISTRY_OFFBOARDED_WITH_GRANTS.set(figures.offboarded_with_grants)
    metrics.REGISTRY_AGENCY_GRANTS_EXPIRED.set(figures.agency_grants_past_end)


@dataclass(slots=True)
class LagReport:
    #: topic -> end offset minus committed offset, summed over this worker's partitions.
    lag: dict[str, int] = field(default_factory=dict)
    #: topic -> sum of committed offsets (moves when the worker makes progress).
    committed: dict[str, int] = field(default_factory=dict)


async def consumer_lag(consumer: Any, topics: Iterable[str] = ()) -> LagReport:
    """Lag of a Faust consumer's assigned partitions. ``topics`` are reported even when this
    worker holds none of their partitions (as 0), so the series always exist.

    End offsets come from one ListOffsets request (``Consumer.highwaters``); committed offsets
    are what Faust itself last committed (the next offset to read, Kafka's convention).
    """
    report = LagReport(dict.fromkeys(topics, 0), dict.fromkeys(topics, 0))
    tps = list(consumer.assignment())
    if not tps:
        return report
    ends: Mapping[Any, int] = await consumer.highwaters(*tps)
    committed: Mapping[Any, int | None] = consumer._committed_offset
    for tp in tps:
        end = ends.get(tp)
        done = committed.get(tp) or 0
        report.committed[tp.topic] = report.committed.get(tp.topic, 0) + done
        if end is not None:
            report.lag[tp.topic] = report.lag.get(tp.topic, 0) + max(int(end) - done, 0)
    return report


class Progress:
    """Is the consumer making progress? False once it has lag and its committed offsets have
    not moved for ``stall_after`` seconds."""

    def __init__(self, stall_after: float = STALL_SECONDS) -> None:
        self.stall_after = stall_after
        self._committed: dict[str, int] = {}
        self._moved_at = time.monotonic()
        self.ok = True

    def observe(self, report: LagReport, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if report.committed != self._committed:
            self._committed = dict(report.committed)
            self._moved_at = now
        self.ok = sum(report.lag.values()) == 0 or now - self._moved_at < self.stall_after
        return self.ok


def update_lag_gauges(report: LagReport) -> None:
    for topic, lag in report.lag.items():
        metrics.CONSUMER_LAG.labels(topic).set(lag)


def update_readiness_gauges(checks: Mapping[str, bool]) -> None:
    for name, ok in checks.items():
        metrics.READINESS.labels(name).set(1 if ok else 0)
    metrics.OBSERVED_AT.set(time.time())
