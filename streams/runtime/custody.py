"""The worker's custody monitor: the vault's health, re-enrolment tasks, and the registry.

Every ``poll_interval`` seconds, for each custody vault (provider type in
:data:`streams.model.kinds.CUSTODY_TYPES`, not a dry run):

* **Health.** One read with accessguard's own credential sets ``accessguard_custody_up``;
  a vault that stops answering is logged once per change (the Prometheus alert
  ``AccessGuardCustodyUnreachable`` tickets it; an action waiting on it pages as stuck).
* **Tasks.** The open re-enrolment tasks become the ``accessguard_custody_*`` gauges (the
  dashboard's "shared logins exposed since"). A task past its deadline pages once; before
  that its owner is reminded every ``remind_every`` seconds (low severity: chat, never the
  pager). A task nobody owns (no holder keeps the login) pages at once. A confirmed task
  whose promotion was interrupted is finished; a closed task gets its
  audit record. Several workers run this monitor: each of those effects is claimed first
  with a check-and-set write of the task in the vault, so exactly one worker pages, reminds or
  audits, and a restart never repeats one.
* **Registry.** After a registry change, entities, groups and policies are synced
  (``Custody.sync``), leaving out identities offboarded or suspended in the lifecycle state.

Vault calls are blocking (hvac): they run in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

import structlog

from connectors.custody import tasks as custody_tasks
from connectors.custody.names import Names
from connectors.custody.provider import OpenBaoCustody
from connectors.custody.tasks import Task, instructions
from streams.model.records import Alert
from streams.model.registry import Registry
from streams.support import metrics
from streams.support.errors import ProviderError

log = structlog.get_logger(__name__)

SendAlert = Callable[[Alert], Awaitable[None]]
Audit = Callable[..., Awaitable[None]]


def custody_providers(providers: Mapping[str, Any]) -> list[OpenBaoCustody]:
    """The custody vaults among the executor's providers that act for real."""
    return [p for p in providers.values() if isinstance(p, OpenBaoCustody) and not p.dry_run]


def overdue_alert(task: Task, names: Names) -> Alert:
    return Alert(
        severity="high",
        rule="custody.reenrolment_overdue",
        identity=task.owner,
        dedup_key=f"custody-overdue:{task.account}:{task.id}",
        title=(
            f"Shared {task.platform} login {task.handle} ({task.account}) still accepts the old "
            f"seed: re-enrolment by {task.owner or 'nobody (no holder left)'} is overdue"
        ),
        details={
            "account": task.account,
            "owner": task.owner,
            "criticality": task.criticality,
            "opened_at": task.opened_at,
            "due_at": task.due_at,
            "causes": list(task.causes),
            "what_to_do": instructions(task, names),
        },
        runbook="docs/runbooks/custody.md",
    )


def reminder_alert(task: Task, names: Names, number: int) -> Alert:
    return Alert(
        severity="low",
        rule="custody.reenrolment_reminder",
        identity=task.owner,
        dedup_key=f"custody-remind:{task.account}:{task.id}:{number}",
        title=(
            f"Reminder {number}: {task.owner or 'nobody'} must re-enrol the shared "
            f"{task.platform} login {task.handle} ({task.account})"
        ),
        details={
            "account": task.account,
            "due_at": task.due_at,
            "what_to_do": instructions(task, names),
        },
        runbook="docs/runbooks/custody.md",
    )


class CustodyMonitor:
    """See the module docstring. ``send_alert`` routes an alert (once per dedup key);
    ``audit(kind, key, **fields)`` writes the audit trail."""

    def __init__(
        self,
        vaults: Iterable[OpenBaoCustody],
        *,
        send_alert: SendAlert,
        audit: Audit,
        registry: Callable[[], Registry],
        cut: Callable[[], Iterable[str]] = tuple,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.vaults = list(vaults)
        self.send_alert = send_alert
        self.audit = audit
        self.registry = registry
        self.cut = cut
        self.clock = clock
        self.registry_changed = asyncio.Event()
        self._up: dict[str, bool] = {}
        self._series: set[tuple[str, str, str]] = set()
        for vault in self.vaults:
            metrics.CUSTODY_UP.labels(vault.name).set(0)

    @property
    def interval(self) -> float:
        return min((v.poll_interval for v in self.vaults), default=30.0)

    def on_registry_change(self) -> None:
        """A hook for :attr:`Views.on_registry_change` (called on the event loop)."""
        self.registry_changed.set()

    async def run(self, should_stop: Callable[[], bool]) -> None:
        while not should_stop():
            try:
                await self.tick(sync=self.registry_changed.is_set())
            except Exception:  # a bug must not end the loop: it is logged and retried
                log.exception("custody.tick_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.registry_changed.wait(), timeout=self.interval)

    async def tick(self, *, sync: bool = False) -> dict[str, Any]:
        """One round over every vault; what it did (for tests and logs)."""
        if sync:
            self.registry_changed.clear()
        done: dict[str, Any] = {"paged": 0, "reminded": 0, "closed": 0, "resumed": 0, "synced": 0}
        open_tasks: list[Task] = []
        answered = True
        for vault in self.vaults:
            try:
                await asyncio.to_thread(vault.vault.health)
                found = await asyncio.to_thread(vault.custody.tasks)
                self._set_up(vault, True, None)
            except ProviderError as exc:
                self._set_up(vault, False, exc)
                answered = False  # keep the last task gauges: still exposed, just unseen
                continue
            if sync and not self.registry().identities:
                # An empty registry (not loaded, or a bad import) would prune every group.
                log.warning("custody.sync_skipped", provider=vault.name, reason="empty registry")
            elif sync:
                try:
                    report = await asyncio.to_thread(
                        vault.custody.sync, self.registry(), cut=set(self.cut())
                    )
                    done["synced"] += 1
                    log.info("custody.synced", provider=vault.name, **report.to_dict())
                except ProviderError as exc:
                    log.warning("custody.sync_failed", provider=vault.name, error=str(exc))
                    self.registry_changed.set()  # try again next round
            for task in found:
                try:
                    await self._task(vault, task, done)
                except ProviderError as exc:
                    log.warning(
                        "custody.task_failed",
                        provider=vault.name,
                        account=task.account,
                        error=str(exc),
                    )
                if task.active:
                    open_tasks.append(task)
        if answered:
            self._gauges(open_tasks)
        return done

    def _set_up(self, vault: OpenBaoCustody, up: bool, exc: ProviderError | None) -> None:
        metrics.CUSTODY_UP.labels(vault.name).set(1 if up else 0)
        if self._up.get(vault.name) != up:
            if up:
                log.info("custody.vault_up", provider=vault.name)
            else:
                log.error("custody.vault_unreachable", provider=vault.name, error=str(exc))
        self._up[vault.name] = up

    async def _claim(self, vault: OpenBaoCustody, task: Task, changed: Task) -> bool:
        """Write ``changed`` over ``task`` only if nobody changed it meanwhile: whether this
        worker won the right to act on it."""
        found = await asyncio.to_thread(vault.custody.task, task.account)
        if found is None or found[0] != task:
            return False
        try:
            await asyncio.to_thread(vault.custody.save, changed, found[1])
        except ProviderError:
            return False  # another worker claimed it (check-and-set), or the vault failed
        return True

    async def _task(self, vault: OpenBaoCustody, task: Task, done: dict[str, Any]) -> None:
        now = self.clock()
        names = vault.custody.names(task.account)
        if task.status == custody_tasks.CONFIRMED:
            if await asyncio.to_thread(vault.custody.resume, task.account) is not None:
                done["resumed"] += 1
            return
        if task.status == custody_tasks.CLOSED:
            if not task.reported and await self._claim(vault, task, replace(task, reported=True)):
                metrics.CUSTODY_TASK_EVENTS_TOTAL.labels("closed").inc()
                await self.audit(
                    "custody.task_closed",
                    task.id,
                    account=task.account,
                    owner=task.owner,
                    confirmed_by=task.confirmed_by,
                    opened_at=task.opened_at,
                    closed_at=task.closed_at,
                    exposed_seconds=round((task.closed_at or now) - task.opened_at, 3),
                    causes=list(task.causes),
                )
                done["closed"] += 1
            return
        if task.overdue(now) or task.owner is None:
            # Overdue, or nobody is left to re-enrol it (no holder keeps the login): a person
            # must act now either way.
            if task.paged_at is None and await self._claim(
                vault, task, replace(task, paged_at=now).noted("paged: overdue or no owner")
            ):
                metrics.CUSTODY_TASK_EVENTS_TOTAL.labels("overdue_paged").inc()
                await self.send_alert(overdue_alert(task, names))
                done["paged"] += 1
            return
        last = task.last_reminded_at or task.opened_at
        if now - last >= vault.custody.remind_every:
            number = task.reminders + 1
            if await self._claim(
                vault, task, replace(task, reminders=number, last_reminded_at=now)
            ):
                metrics.CUSTODY_TASK_EVENTS_TOTAL.labels("reminded").inc()
                await self.send_alert(reminder_alert(task, names, number))
                done["reminded"] += 1

    def _gauges(self, open_tasks: list[Task]) -> None:
        now = self.clock()
        series: set[tuple[str, str, str]] = set()
        for task in open_tasks:
            labels = (task.account, task.platform, task.criticality)
            series.add(labels)
            metrics.CUSTODY_EXPOSED_SINCE.labels(*labels).set(task.opened_at)
            metrics.CUSTODY_DUE.labels(*labels).set(task.due_at)
        for gone in self._series - series:
            metrics.CUSTODY_EXPOSED_SINCE.remove(*gone)
            metrics.CUSTODY_DUE.remove(*gone)
        self._series = series
        metrics.CUSTODY_TASKS_OPEN.set(len(open_tasks))
        metrics.CUSTODY_TASKS_OVERDUE.set(sum(1 for t in open_tasks if t.overdue(now)))
