"""Runs provider actions and alert sends off the event loop, with the shared retry policy.

Blocking ``requests`` calls run in a bounded thread pool, with a per-provider concurrency limit
so one slow provider cannot take every thread; under it, acting calls go before read-backs
(:mod:`streams.runtime.limits`: in a burst, access is cut for everyone first). Retries
happen on the event loop (``asyncio.sleep`` between attempts), so a provider in backoff holds
no thread. After ``retry.max_attempts`` fast attempts the action is reported as stuck (the
caller pages) and keeps being retried every ``retry.slow_retry_interval`` until it succeeds or
fails permanently.

Dry runs are not the executor's business per connector: a provider or sink in dry run
(``providers.<name>.dry_run``) returns a :class:`~connectors.base.provider.DryRun` result,
and the executor reads only that type (:func:`~connectors.base.provider.is_dry_run`). The
global ``executor.dry_run`` is the one switch kept here, because it must act before any
provider is looked up (an action for a provider that is not configured is a dry run too) and
makes no attempt at all (``attempts`` 0, result ``{"dry_run": true}`` in the journal).

Read-back (:meth:`Executor.verify`): after an action was acknowledged, the provider's own state
is read until it shows the effect (verified), shows the opposite or cannot be read (failed),
or ``verify.timeout`` passes (failed, with the last evidence). A provider that offers no
read-back for the action answers "not verifiable" at once, without a call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog

from connectors.base.http import RetryPolicy, backoff_delay
from connectors.base.provider import (
    NOT_VERIFIABLE,
    PENDING,
    UNVERIFIED,
    Verification,
    dry_run_result,
    is_dry_run,
)
from streams.model.records import Action, Alert
from streams.runtime.limits import ACT, READ, PriorityLimit
from streams.runtime.outages import failure_class
from streams.support import metrics
from streams.support.errors import (
    PermanentError,
    ProviderError,
    RateLimitedError,
    RetryableError,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")


class Provider(Protocol):
    def perform(self, action: Action) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class VerifyPolicy:
    """How long and how often an acknowledged action is read back (config ``verify.*``)."""

    timeout: float = 60.0
    first_interval: float = 0.25
    max_interval: float = 2.0


class Sink(Protocol):
    def send(self, alert: Alert) -> dict[str, Any]: ...


@dataclass
class Outcome:
    """What became of one action. ``status``: done | dry_run | failed."""

    status: str
    attempts: int
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    finished_at: float = 0.0
    #: True when the action was reported stuck (paged) before it settled.
    was_stuck: bool = False
    #: For a failed action, what kind of failure (:func:`streams.runtime.outages.failure_class`).
    failure: str | None = None
    #: When the first attempt went out (epoch seconds; 0: none did).
    issued_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = {
            "status": self.status,
            "attempts": self.attempts,
            "result": self.result,
            "error": self.error,
            "finished_at": self.finished_at,
        }
        if self.failure is not None:
            out["failure"] = self.failure
        if self.issued_at:
            out["issued_at"] = self.issued_at
        if self.status == "done":
            out["acknowledged_at"] = self.finished_at
        return out


StuckCallback = Callable[[Action, ProviderError, int], Awaitable[None]]


class Executor:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        policy: RetryPolicy,
        *,
        threads: int = 16,
        per_provider_concurrency: int = 8,
        dry_run: bool = False,
        verify: VerifyPolicy | None = None,
    ) -> None:
        self.providers = dict(providers)
        self.policy = policy
        self.verify_policy = verify or VerifyPolicy()
        self.dry_run = dry_run
        # A provider's rate-limited calls wait for their booked slots in these threads
        # (connectors/base/ratelimit.py): enough of them for every provider's concurrency, so
        # one provider's waits never hold the others' calls back.
        workers = max(threads, per_provider_concurrency * len(self.providers))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="provider")
        # Acting calls before read-backs at each provider (streams/runtime/limits.py).
        self._limits = {name: PriorityLimit(per_provider_concurrency) for name in providers}
        self._per_provider = per_provider_concurrency

    def _limit(self, provider: str) -> PriorityLimit:
        if provider not in self._limits:
            self._limits[provider] = PriorityLimit(self._per_provider)
        return self._limits[provider]

    async def call(
        self,
        fn: Callable[[], T],
        limit: PriorityLimit,
        priority: int = ACT,
        queued: list[float] | None = None,
    ) -> T:
        """Run ``fn`` in the pool under ``limit`` at ``priority``; the seconds spent waiting
        for the limit are appended to ``queued``."""
        started = time.monotonic()
        async with limit.hold(priority):
            if queued is not None:
                queued.append(time.monotonic() - started)
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def execute(self, action: Action, on_stuck: StuckCallback) -> Outcome:
        """Run one action until it succeeds or fails permanently. Idempotency is the caller's:
        it checks the ledger before and records the outcome after."""
        if self.dry_run:
            return self._settled(action, dry_run_result(), 0, False)
        provider = self.providers.get(action.provider)
        if provider is None:
            metrics.ACTIONS.labels(action.provider, action.action, "failed").inc()
            return Outcome(
                "failed",
                0,
                error=f"no provider named {action.provider!r} in config (providers.*)",
                finished_at=time.time(),
                failure="not_configured",
            )
        attempt = 0
        limited = 0
        refused = 0  # attempts the vendor refused for its rate limit (not failures)
        stuck = False
        latency = metrics.PROVIDER_LATENCY.labels(action.provider, action.action)
        limit = self._limit(action.provider)
        issued_at = time.time()
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                result = await self.call(lambda: provider.perform(action), limit)
            except RateLimitedError as exc:
                # Not a failure: the vendor did nothing and says when to come back (or the
                # client-side limit held the call, which then never went out and is no
                # attempt). Waited on the loop, no thread held, not counted toward
                # max_attempts: a layoff's queue must not page as "stuck".
                limited += 1
                if exc.status is None:
                    attempt -= 1
                else:
                    refused += 1
                source = "client" if exc.status is None else "vendor"
                metrics.RATE_LIMITED.labels(action.provider, source).inc()
                delay = exc.retry_after
                if delay is None:
                    delay = backoff_delay(limited, self.policy)
                await asyncio.sleep(delay)
                continue
            except RetryableError as exc:
                latency.observe(time.perf_counter() - started)
                metrics.ACTIONS.labels(action.provider, action.action, "retry").inc()
                if attempt - refused >= self.policy.max_attempts:
                    if not stuck:
                        stuck = True
                        await on_stuck(action, exc, attempt)
                    delay = max(self.policy.slow_retry_interval, exc.retry_after or 0.0)
                else:
                    delay = backoff_delay(attempt - refused, self.policy, exc.retry_after)
                log.warning(
                    "action.retry",
                    provider=action.provider,
                    action=action.action,
                    key=action.idempotency_key,
                    attempt=attempt,
                    delay=round(delay, 3),
                    error=str(exc),
                )
                await asyncio.sleep(delay)
                continue
            except PermanentError as exc:
                latency.observe(time.perf_counter() - started)
                metrics.ACTIONS.labels(action.provider, action.action, "failed").inc()
                return Outcome(
                    "failed",
                    attempt,
                    error=str(exc),
                    finished_at=time.time(),
                    was_stuck=stuck,
                    failure=failure_class(exc),
                    issued_at=issued_at,
                )
            except Exception as exc:
                latency.observe(time.perf_counter() - started)
                metrics.ACTIONS.labels(action.provider, action.action, "failed").inc()
                log.exception("action.crashed", provider=action.provider, action=action.action)
                return Outcome(
                    "failed",
                    attempt,
                    error=f"provider crashed: {exc!r}",
                    finished_at=time.time(),
                    was_stuck=stuck,
                    failure="crashed",
                    issued_at=issued_at,
                )
            latency.observe(time.perf_counter() - started)
            settled = self._settled(action, result, attempt, stuck)
            settled.issued_at = issued_at
            return settled

    def can_verify(self, action: Action) -> bool:
        """Whether the action's provider reads ``action`` back (False in a global dry run)."""
        if self.dry_run:
            return False
        provider = self.providers.get(action.provider)
        can_verify = getattr(provider, "can_verify", None)
        return bool(can_verify is not None and can_verify(action))

    def not_verifiable(self, action: Action) -> Verification:
        kind = getattr(self.providers.get(action.provider), "type", "the provider")
        return Verification(
            NOT_VERIFIABLE,
            reason=f"{kind} offers no read-back of {action.action}: acknowledged, not verifiable",
        )

    async def verify(self, action: Action, outcome: Outcome) -> Verification:
        """Read ``action`` back at its provider until verified, failed or out of time (only
        for an action that was acknowledged: ``outcome.status == "done"``)."""
        if not self.can_verify(action):
            return self.not_verifiable(action)
        provider = self.providers[action.provider]
        read = provider.verify  # type: ignore[attr-defined]
        policy = self.verify_policy
        limit = self._limit(action.provider)
        deadline = time.monotonic() + policy.timeout
        interval = policy.first_interval
        issued_at = outcome.issued_at or outcome.finished_at
        while True:
            queued: list[float] = []
            try:
                try:
                    answer: Verification = await self.call(
                        lambda: read(action, outcome.result, issued_at), limit, READ, queued
                    )
                finally:
                    # Time queued behind acting calls is not the vendor failing to show it.
                    deadline += sum(queued)
            except RateLimitedError as exc:
                # time held by a rate limit is not the vendor failing to show the effect
                hold = exc.retry_after if exc.retry_after is not None else interval
                metrics.RATE_LIMITED.labels(
                    action.provider, "client" if exc.status is None else "vendor"
                ).inc()
                deadline += hold
                await asyncio.sleep(hold)
                continue
            except RetryableError as exc:
                answer = Verification(PENDING, reason=f"read-back not answered: {exc}")
            except ProviderError as exc:
                return Verification(UNVERIFIED, reason=f"read-back refused: {exc}")
            except Exception as exc:
                log.exception("verify.crashed", provider=action.provider, action=action.action)
                return Verification(UNVERIFIED, reason=f"read-back crashed: {exc!r}")
            if answer.status != PENDING:
                return answer
            left = deadline - time.monotonic()
            if left <= 0:
                return Verification(
                    UNVERIFIED,
                    answer.evidence,
                    f"not read back within {policy.timeout:g}s: {answer.reason}",
                )
            await asyncio.sleep(min(interval, left))
            interval = min(interval * 1.5, policy.max_interval)

    @staticmethod
    def _settled(action: Action, result: dict[str, Any], attempts: int, stuck: bool) -> Outcome:
        """The outcome of an action that did not fail: ``dry_run`` or ``done``."""
        dry = is_dry_run(result)
        label = "dry_run" if dry else "success"
        metrics.ACTIONS.labels(action.provider, action.action, label).inc()
        return Outcome(
            "dry_run" if dry else "done",
            attempts,
            dict(result) if dry else result,
            finished_at=time.time(),
            was_stuck=stuck,
        )

    async def send_alert(self, sink_name: str, sink: Sink, alert: Alert) -> Outcome:
        """Send to one sink with the fast retries only: a page that cannot go out after those
        is logged and counted (the alert stays in the audit trail and the alerts topic)."""
        limit = self._limit(f"sink:{sink_name}")
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await self.call(lambda: sink.send(alert), limit)
            except RetryableError as exc:
                if attempt >= self.policy.max_attempts:
                    metrics.ALERTS.labels(sink_name, alert.severity, "failed").inc()
                    return Outcome("failed", attempt, error=str(exc), finished_at=time.time())
                await asyncio.sleep(backoff_delay(attempt, self.policy, exc.retry_after))
                continue
            except Exception as exc:  # noqa: BLE001 - a failed page is counted and audited
                metrics.ALERTS.labels(sink_name, alert.severity, "failed").inc()
                return Outcome("failed", attempt, error=str(exc), finished_at=time.time())
            dry = is_dry_run(result)
            if dry:
                result = dict(result)
            metrics.ALERTS.labels(sink_name, alert.severity, "dry_run" if dry else "sent").inc()
            return Outcome("dry_run" if dry else "done", attempt, result, finished_at=time.time())

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
