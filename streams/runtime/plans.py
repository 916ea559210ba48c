"""Plan execution: the actions of a plan run through the executor, each once, then its alerts.

A plan (:class:`~streams.model.plan.Plan`) waits in the lifecycle state from the decision on.
Each runs as its own task on the event loop: its actions step by step (the policy's order:
disable, then revoke, then remove grants; a step starts once the step before is acknowledged
or ``offboarding.step_timeout`` passed), the actions of one step concurrently (the executor
retries them). Each outcome is recorded in the ledger under the action's idempotency key before
anything else, so a plan re-run after a crash or a rebalance skips what was done.

Every acknowledged action is then read back at its provider (issued -> acknowledged ->
verified, each time in the ledger and the audit trail): the ledger record gains its
``verification`` when the read-back settles, so a restart re-reads only what was not settled.
A read-back that shows the action did not hold (or never shows it) pages once with the
evidence. Once every action is settled and read back the plan's alerts go out (the offboarding
summary says what happened, "verified at N of M providers") and the plan leaves the state.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import structlog

from connectors.base.provider import NOT_VERIFIABLE, UNVERIFIED, VERIFIED, Verification
from streams.decide.leaks import state_after_action
from streams.model.plan import Plan
from streams.model.records import Action, Alert
from streams.model.state import AccountState
from streams.runtime.alerts import AlertRouter
from streams.runtime.batches import Batch, Batches
from streams.runtime.executor import Executor, Outcome
from streams.runtime.outages import ANSWERED
from streams.runtime.writes import Writer
from streams.support import metrics
from streams.support.times import format_time

# One logger name for the worker's core, as before it was split into modules.
log = structlog.get_logger("streams.runtime.engine")

#: ``plan.step_timeout`` is logged at most this often, seconds (the line counts the others).
STEP_TIMEOUT_LOG_EVERY = 10.0

#: Actions whose confirmation ends "time to revoke" (access is cut once these are done).
REVOKING = frozenset(
    {"revoke_sessions", "remove_grant", "downgrade_grant", "disable_account", "revoke_tokens"}
)


def observe_revocations(
    revoking: list[tuple[Action, Outcome, Verification | None]], accepted_at: float
) -> None:
    """The time-to-revoke metrics of one offboarding's revocations: each real acknowledgement
    by provider; the whole offboarding's time only when every revocation went out for real,
    none failed and none was read back as not done; a failed or unverified one counted by
    provider and the offboarding as unrevoked (the SLO ratio counts it as over the
    objective). Dry runs revoke nothing and count nowhere."""
    failed = False
    real: list[float] = []
    for action, outcome, verification in revoking:
        if outcome.status == "done":
            took = max(outcome.finished_at - accepted_at, 0.0)
            metrics.REVOCATION_ACKNOWLEDGED.labels(action.provider).observe(took)
            real.append(took)
            if verification is not None and verification.status == UNVERIFIED:
                failed = True
        elif outcome.status == "failed":
            metrics.REVOCATION_FAILURES.labels(action.provider).inc()
            failed = True
    if failed:
        metrics.OFFBOARDINGS_UNREVOKED.inc()
    elif real and len(real) == len(revoking):
        metrics.TIME_TO_REVOKE.observe(max(real))


class PlanRunner:
    """Runs the plans of the lifecycle state this worker owns. Event loop only."""

    def __init__(
        self,
        writer: Writer,
        *,
        executor: Executor,
        alerts: AlertRouter,
        owns: Callable[[str], bool],
        step_timeout: float = 5.0,
        batches: Batches | None = None,
    ) -> None:
        self.writer = writer
        #: Offboardings started close together: one page per batch (streams/runtime/batches.py).
        self.batches = batches or Batches()
        self.executor = executor
        self.alerts = alerts
        self.owns = owns
        self.step_timeout = step_timeout
        #: Step timeouts since the last one logged, and when that was (monotonic).
        self._step_timeouts = 0
        self._step_timeout_logged = -STEP_TIMEOUT_LOG_EVERY
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.completed = 0

    async def add(self, identity: str, plan_id: str, plan: Plan) -> None:
        """Store a new plan in the identity's state and start it; nothing when a plan of that
        id exists (a redelivered event: the plan may be running)."""
        st = self.writer.views.state.identity(identity)
        if plan_id in st.plans:
            return
        await self.writer.put_state(st.with_plan(plan_id, plan))
        self.start(identity, plan_id)

    def start(self, identity: str, plan_id: str) -> None:
        key = (identity, plan_id)
        if key in self._tasks and not self._tasks[key].done():
            return
        task = asyncio.create_task(self._run_plan(identity, plan_id), name=f"plan-{plan_id}")
        self._tasks[key] = task
        task.add_done_callback(functools.partial(self._finished, key))

    def _finished(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled() and task.exception() is not None:
            log.error("plan.crashed", plan=key[1], error=repr(task.exception()))

    async def send_batch(self, batch: Batch) -> None:
        """Open, update or close the batch's incident (marked sent first, so that two plans
        finishing at once do not send the same update twice)."""
        alert = batch.alert()
        ledger_key = batch.ledger_key(alert.event_action)
        self.batches.sent(batch, self.writer.clock())
        await self.alerts.send_alert(alert, ledger_key=ledger_key)

    async def tick_batches(self, now: float | None = None) -> int:
        """Send the batch incidents that are due (a batch closes ``window`` after its last
        offboarding started). Returns the sends."""
        due = self.batches.tick(self.writer.clock() if now is None else now)
        for batch in due:
            await self.send_batch(batch)
        return len(due)

    def resume(self) -> int:
        """Start every unfinished plan this worker owns (after a restart or a rebalance)."""
        started = 0
        for st in self.writer.views.state.identities():
            for plan_id, plan in st.plans.items():
                if self.owns(plan.owner_key(st.identity)):
                    self.start(st.identity, plan_id)
                    started += 1
        if started:
            log.info("plans.resumed", count=started)
        return started

    async def wait(self, timeout: float | None = None) -> None:
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def cancel(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_plan(self, identity: str, plan_id: str) -> None:
        w = self.writer
        plans = w.views.state.identity(identity).plans
        if plan_id not in plans:
            return
        plan = plans[plan_id]
        actions = list(plan.actions)
        metrics.PENDING_ACTIONS.inc(len(actions))
        try:
            settled = await self._run_steps(plan)
        finally:
            metrics.PENDING_ACTIONS.dec(len(actions))
        outcomes = [o for o, _ in settled]
        checks = [v for _, v in settled]
        revoking = [
            (a, o, v) for a, (o, v) in zip(actions, settled, strict=True) if a.action in REVOKING
        ]
        revoked_at = [o.finished_at for _, o, _ in revoking if o.status in ("done", "dry_run")]
        took = None
        if plan.accepted_at and revoked_at:
            took = max(revoked_at) - float(plan.accepted_at)
        if plan.accepted_at:
            observe_revocations(revoking, float(plan.accepted_at))
        proof = proof_by_provider(actions, settled)
        failed = [(a, o) for a, o in zip(actions, outcomes, strict=True) if o.status == "failed"]
        for alert in plan.alerts:
            if alert.rule == "offboarding.completed":
                details = dict(alert.details)
                details.update(
                    seconds_to_revoke=None if took is None else round(took, 3),
                    actions_done=sum(o.status in ("done", "dry_run") for o in outcomes),
                    actions_failed=len(failed),
                    dry_run=any(o.status == "dry_run" for o in outcomes),
                    actions_verified=sum(v is not None and v.status == VERIFIED for v in checks),
                    actions_unverified=sum(
                        v is not None and v.status == UNVERIFIED for v in checks
                    ),
                    verification=proof,
                )
                title = alert.title
                if took is not None:
                    title = f"{title} in {took:.2f}s"
                if proof:
                    title = f"{title}; {proof_text(proof)}"
                if failed:
                    title = f"{title} — {len(failed)} action(s) FAILED"
                alert = replace(alert, details=details, title=title)  # noqa: PLW2901
                if self.batches.of(identity, plan_id) is not None:
                    # one of a batch: its page counts it; the summary stays in the audit trail
                    await w.audit("offboarding.summary", alert.dedup_key, alert=alert.to_dict())
                    continue
            await self.alerts.send_alert(alert)
        batch = self.batches.finished(
            identity,
            plan_id,
            done=sum(o.status in ("done", "dry_run") for o in outcomes),
            failed=len(failed),
            verified=sum(v is not None and v.status == VERIFIED for v in checks),
        )
        if batch is not None and self.batches.due(batch, w.clock()):
            await self.send_batch(batch)
        # Forget the plan only once its alerts are out: a crash before this line re-runs the
        # plan, and the ledger turns every action and alert of it into a no-op.
        await w.put_state(w.views.state.identity(identity).without_plan(plan_id))
        self.completed += 1
        log.info(
            "plan.completed",
            plan=plan_id,
            identity=identity,
            actions=len(actions),
            failed=len(failed),
            seconds=None if took is None else round(took, 3),
            proof=proof_text(proof) if proof else None,
        )

    async def _run_steps(self, plan: Plan) -> list[tuple[Outcome, Verification | None]]:
        """Every action of ``plan``, step by step: a step starts when each action of the one
        before is acknowledged (or has failed), or after ``step_timeout`` at the latest; the
        read-backs run on meanwhile. Results in the order of ``plan.actions``."""
        actions = plan.actions
        tasks: dict[int, asyncio.Task[tuple[Outcome, Verification | None]]] = {}
        groups = plan.step_groups()
        try:
            for number, group in enumerate(groups):
                acked: list[asyncio.Future[None]] = []
                for index in group:
                    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    acked.append(done)
                    tasks[index] = asyncio.create_task(self._settle(actions[index], done))
                if number + 1 < len(groups) and acked:
                    _, late = await asyncio.wait(acked, timeout=self.step_timeout)
                    if late:
                        self._step_timed_out(number, len(late))
            results = await asyncio.gather(*(tasks[i] for i in range(len(actions))))
        except BaseException:
            # cancelled (a stop, a lost partition) between steps too: no action runs on
            for task in tasks.values():
                task.cancel()
            raise
        return list(results)

    def _step_timed_out(self, step: int, waiting: int) -> None:
        """Log a step that went on before the one before it was acknowledged: at most once
        per :data:`STEP_TIMEOUT_LOG_EVERY` seconds, with how many timed out since the last
        line (a layoff paced by the vendors' rate limits times out a step in most of its
        plans: 1,955 warnings in one 1,000-person layoff)."""
        self._step_timeouts += 1
        now = time.monotonic()
        if now - self._step_timeout_logged < STEP_TIMEOUT_LOG_EVERY:
            return
        log.warning(
            "plan.step_timeout",
            step=step,
            waiting=waiting,
            seconds=self.step_timeout,
            steps_timed_out=self._step_timeouts,
        )
        self._step_timeouts = 0
        self._step_timeout_logged = now

    async def _settle(
        self, action: Action, acknowledged: asyncio.Future[None]
    ) -> tuple[Outcome, Verification | None]:
        try:
            outcome = await self._run_action(action, acknowledged)
        finally:
            if not acknowledged.done():
                acknowledged.set_result(None)
        return outcome, await self._verify_action(action, outcome)

    async def _verify_action(self, action: Action, outcome: Outcome) -> Verification | None:
        """Read an acknowledged action back (None for a dry run or a failure), once: the
        ledger keeps the settled verification, so a re-run plan does not read again."""
        if outcome.status != "done":
            return None
        w = self.writer
        record = w.views.ledger.get(action.idempotency_key) or {}
        kept = record.get("verification")
        if isinstance(kept, dict) and kept.get("status") in (VERIFIED, NOT_VERIFIABLE, UNVERIFIED):
            return Verification(
                str(kept["status"]), dict(kept.get("evidence") or {}), str(kept.get("reason", ""))
            )
        if not self.executor.can_verify(action):
            # Nothing to read back (recorded so on the first write; an older ledger record
            # without it is not rewritten).
            return self.executor.not_verifiable(action)
        verification = await self.executor.verify(action, outcome)
        now = time.time()  # the executor's clock, as issued_at and acknowledged_at
        entry: dict[str, object] = verification.to_dict()
        if verification.status == VERIFIED:
            entry["verified_at"] = now
        await w.put_ledger(action.idempotency_key, {**record, "verification": entry})
        await w.audit(
            "action.verification",
            action.idempotency_key,
            **action.replay_view(),
            acknowledged_at=outcome.finished_at,
            verification=entry,
        )
        provider = action.provider
        metrics.VERIFICATIONS.labels(provider, verification.status).inc()
        if action.action in REVOKING:
            if verification.status == VERIFIED:
                metrics.REVOCATION_VERIFIED.labels(provider).observe(
                    max(now - outcome.finished_at, 0.0)
                )
            elif verification.status == UNVERIFIED:
                metrics.REVOCATION_UNVERIFIED.labels(provider).inc()
        if verification.status == UNVERIFIED:
            log.warning(
                "action.unverified",
                provider=provider,
                action=action.action,
                key=action.idempotency_key,
                reason=verification.reason,
            )
            await self.alerts.send_alert(unverified_alert(action, verification))
        return verification

    async def _run_action(
        self, action: Action, acknowledged: asyncio.Future[None] | None = None
    ) -> Outcome:
        w = self.writer
        done = w.views.ledger.get(action.idempotency_key)
        if done is not None:
            metrics.ACTIONS.labels(action.provider, action.action, "skipped_done").inc()
            return Outcome(
                str(done.get("status", "done")),
                int(done.get("attempts", 0)),
                dict(done.get("result") or {}),
                done.get("error"),
                float(done.get("finished_at") or w.clock()),
                issued_at=float(done.get("issued_at") or 0.0),
            )
        outcome = await self.executor.execute(action, self.alerts.on_stuck)
        if acknowledged is not None and not acknowledged.done():
            # The next step may start now: the order is about what the providers did, and
            # recording the outcome (a durable write) would only delay it.
            acknowledged.set_result(None)
        record: dict[str, object] = {
            **outcome.to_dict(),
            "action": action.action,
            "provider": action.provider,
            "identity": action.identity,
            "account": action.account,
            "cause": action.cause,
        }
        extra: dict[str, object] = {}
        if outcome.status == "done" and not self.executor.can_verify(action):
            # Nothing to read back: the one ledger write says so (no second write later).
            extra["verification"] = self.executor.not_verifiable(action).to_dict()
            metrics.VERIFICATIONS.labels(action.provider, NOT_VERIFIABLE).inc()
        await w.put_ledger(action.idempotency_key, {**record, **extra})
        await w.audit(
            "action",
            action.idempotency_key,
            **action.replay_view(),
            outcome=outcome.to_dict(),
            **extra,
        )
        if action.action == "rotate_shared_credential" and outcome.status == "done":
            await self._record_rotation(action, outcome)
        if outcome.status == "done":
            # A forced re-enrolment is a credential change: older breaches stop matching.
            update = state_after_action(w.views.state, action, outcome.finished_at)
            if update is not None:
                await w.put_state(update)
        # One page per provider outage, not per action (streams.runtime.outages).
        outages = self.alerts.outages
        settled = outages.settled(action)
        now = w.clock()
        if outcome.status == "failed":
            group = outages.failed(action, outcome.failure or "rejected", outcome.error or "", now)
            if not group.sent:
                await self.alerts.send_outage(group, "trigger")
        elif outcome.status == "done" and settled is not None:
            settled.recovered += 1
        if outcome.status == "done" or outcome.failure in ANSWERED:
            # The provider answers again (a 4xx is an answer): its outage is over.
            for group in outages.recovered(action.provider):
                await self.alerts.send_outage(group, "resolve")
        if settled is not None:
            self.alerts.stuck_gauge(settled)
        return outcome

    async def _record_rotation(self, action: Action, outcome: Outcome) -> None:
        if action.account is None:
            return
        acct = self.writer.views.state.account(action.account)
        version = int(outcome.result.get("version", acct.secret_version + 1))
        await self.writer.put_state(
            AccountState(
                account=acct.account,
                secret_version=version,
                rotated_at=format_time(datetime.fromtimestamp(outcome.finished_at, UTC)),
                rotated_cause=action.cause,
                reenrolment_required=acct.reenrolment_required,
            )
        )


def unverified_alert(action: Action, verification: Verification) -> Alert:
    """The one page for an action that was acknowledged but does not hold at the provider:
    what was asked, where, and what the read-back found (field values, no secret)."""
    return Alert(
        severity="high",
        rule="action.unverified",
        identity=action.identity,
        dedup_key=f"unverified:{action.idempotency_key}",
        title=(
            f"{action.action} of {action.identity} at {action.provider} was acknowledged but "
            f"is not verified: {verification.reason}"
        ),
        details={
            "provider": action.provider,
            "action": action.action,
            "account": action.account,
            "cause": action.cause,
            "idempotency_key": action.idempotency_key,
            "evidence": dict(verification.evidence),
            "reason": verification.reason,
        },
        runbook="docs/runbooks/action-unverified.md",
    )


def proof_by_provider(
    actions: list[Action], settled: list[tuple[Outcome, Verification | None]]
) -> dict[str, str]:
    """Per provider acted at for real: ``verified`` (every action read back as done),
    ``unverified`` (one read back as not done), ``not_verifiable`` (acknowledged only)."""
    proof: dict[str, str] = {}
    for action, (outcome, verification) in zip(actions, settled, strict=True):
        if outcome.status != "done" or verification is None:
            continue
        now = {VERIFIED: "verified", UNVERIFIED: "unverified"}.get(
            verification.status, "not_verifiable"
        )
        before = proof.get(action.provider)
        rank = ("verified", "not_verifiable", "unverified")
        if before is None or rank.index(now) > rank.index(before):
            proof[action.provider] = now
    return dict(sorted(proof.items()))


def proof_text(proof: dict[str, str]) -> str:
    """``verified at N of M providers`` (+ how many only acknowledged, how many failed it)."""
    verified = sum(v == "verified" for v in proof.values())
    text = f"verified at {verified} of {len(proof)} providers"
    only = sum(v == "not_verifiable" for v in proof.values())
    bad = sum(v == "unverified" for v in proof.values())
    if only:
        text += f" ({only} acknowledged, not verifiable)"
    if bad:
        text += f", {bad} NOT VERIFIED"
    return text
