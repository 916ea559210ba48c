"""Plan execution: the actions of a plan run through the executor, each once, then its alerts.

A plan (:class:`~streams.model.plan.Plan`) waits in the lifecycle state from the decision on.
Each runs as its own task on the event loop: its actions concurrently (the executor retries
them), each outcome recorded in the ledger under the action's idempotency key before anything
else, so a plan re-run after a crash or a rebalance skips what was done. Once every action has
an outcome the plan's alerts go out (the offboarding summary completed with what happened) and
the plan is removed from the state.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import structlog

from streams.decide.leaks import state_after_action
from streams.model.plan import Plan
from streams.model.records import Action
from streams.model.state import AccountState
from streams.runtime.alerts import AlertRouter
from streams.runtime.executor import Executor, Outcome
from streams.runtime.outages import ANSWERED
from streams.runtime.writes import Writer
from streams.support import metrics
from streams.support.times import format_time

# One logger name for the worker's core, as before it was split into modules.
log = structlog.get_logger("streams.runtime.engine")

#: Actions whose confirmation ends "time to revoke" (access is cut once these are done).
REVOKING = frozenset({"revoke_sessions", "remove_grant", "downgrade_grant"})


def observe_revocations(revoking: list[tuple[Action, Outcome]], accepted_at: float) -> None:
    """The time-to-revoke metrics of one offboarding's revocations: each real acknowledgement
    by provider; the whole offboarding's time only when every revocation went out for real and
    none failed; a failed one counted by provider and the offboarding as unrevoked (the SLO
    ratio counts it as over the objective). Dry runs revoke nothing and count nowhere."""
    failed = False
    real: list[float] = []
    for action, outcome in revoking:
        if outcome.status == "done":
            took = max(outcome.finished_at - accepted_at, 0.0)
            metrics.REVOCATION_ACKNOWLEDGED.labels(action.provider).observe(took)
            real.append(took)
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
    ) -> None:
        self.writer = writer
        self.executor = executor
        self.alerts = alerts
        self.owns = owns
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
            outcomes = await asyncio.gather(*(self._run_action(a) for a in actions))
        finally:
            metrics.PENDING_ACTIONS.dec(len(actions))
        revoking = [(a, o) for a, o in zip(actions, outcomes, strict=True) if a.action in REVOKING]
        revoked_at = [o.finished_at for _, o in revoking if o.status in ("done", "dry_run")]
        took = None
        if plan.accepted_at and revoked_at:
            took = max(revoked_at) - float(plan.accepted_at)
        if plan.accepted_at:
            observe_revocations(revoking, float(plan.accepted_at))
        failed = [(a, o) for a, o in zip(actions, outcomes, strict=True) if o.status == "failed"]
        for alert in plan.alerts:
            if alert.rule == "offboarding.completed":
                details = dict(alert.details)
                details.update(
                    seconds_to_revoke=None if took is None else round(took, 3),
                    actions_done=sum(o.status in ("done", "dry_run") for o in outcomes),
                    actions_failed=len(failed),
                    dry_run=any(o.status == "dry_run" for o in outcomes),
                )
                title = alert.title
                if took is not None:
                    title = f"{title} in {took:.2f}s"
                if failed:
                    title = f"{title} — {len(failed)} action(s) FAILED"
                alert = replace(alert, details=details, title=title)  # noqa: PLW2901
            await self.alerts.send_alert(alert)
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
        )

    async def _run_action(self, action: Action) -> Outcome:
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
            )
        outcome = await self.executor.execute(action, self.alerts.on_stuck)
        record = {
            **outcome.to_dict(),
            "action": action.action,
            "provider": action.provider,
            "identity": action.identity,
            "account": action.account,
            "cause": action.cause,
        }
        await w.put_ledger(action.idempotency_key, record)
        await w.audit(
            "action", action.idempotency_key, **action.replay_view(), outcome=outcome.to_dict()
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
