"""In-memory stand-ins around a real :class:`streams.runtime.engine.Engine`, for fast unit tests.

What is real: the configuration (``load_config`` on a YAML file), the registry
(``parse_registry``), the lifecycle :class:`StateStore`, the :class:`Journal` (a file in the
test's directory), the :class:`Executor` (retry policy from the configuration) and the engine.
What stands in: the broker producer (:class:`FakePublisher`), the materialised views
(:class:`FakeViews`), the providers and the alert sinks (:class:`FakeProvider`,
:class:`FakeSink`: they record every call and raise the errors a test tells them to).

The engine creates asyncio locks and tasks: run one scenario per test under one
``asyncio.run`` (a lock used under two event loops raises), and call
:meth:`EngineHarness.close` when done (the ``build_engine`` callers use a fixture).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import yaml

from streams.bus.journal import Journal, read_journal
from streams.config import Config, load_config
from streams.model.leak_index import LeakIndex
from streams.model.records import Action, Alert, HrEvent
from streams.model.registry import Registry
from streams.model.registry_yaml import parse_registry
from streams.model.state import StateStore
from streams.runtime.engine import Engine
from streams.runtime.executor import Executor
from streams.runtime.parts import retry_policy
from streams.support import metrics
from streams.support.errors import BrokerError, JournalError

#: Two people, one plain account and one shared TOTP login. Terminating ana gives five
#: actions: revoke_sessions at hootsuite and okta, remove_grant on both accounts (hootsuite),
#: rotate_shared_credential of x-brand (secret-store); ben still holds x-brand.
REGISTRY = """
accounts:
  - id: ig-brand
    platform: instagram
    handle: "@brand"
    criticality: critical
    provider: hootsuite
  - id: x-brand
    platform: x
    handle: "@brand_x"
    criticality: critical
    provider: hootsuite
    shared_credential: {totp: true, ref: shared/x-brand, login: social@brand.example}
identities:
  - id: ana
    name: Ana Lima
    kind: employee
    employee_id: E1
    emails: [ana@brand.example]
    aliases: {okta: 00u-ana, hootsuite: hs-ana}
  - id: ben
    name: Ben Ode
    kind: employee
    employee_id: E2
    emails: [ben@brand.example]
    aliases: {okta: 00u-ben, hootsuite: hs-ben}
grants:
  - {identity: ana, account: ig-brand, role: admin, via: sso, mfa: webauthn}
  - {identity: ana, account: x-brand, role: full_publishing, via: shared_credential, mfa: totp}
  - {identity: ben, account: x-brand, role: full_publishing, via: shared_credential, mfa: totp}
"""

PROVIDERS = ("okta", "hootsuite", "secret-store")
SINKS = ("pagerduty", "slack")

#: Providers, sinks and fast retries; every other key keeps its default.
MACHINERY_STEPS: dict[str, list[list[str]]] = {
    "terminated": [["revoke_sessions", "remove_grant", "rotate_shared_credential"]],
    "contract_ended": [["revoke_sessions", "remove_grant", "rotate_shared_credential"]],
    "suspended": [["revoke_sessions"]],
    "device_lost": [["revoke_sessions", "force_mfa_reenrolment", "rotate_shared_credential"]],
}
CONFIG: dict[str, Any] = {
    "providers": {
        "okta": {"type": "okta"},
        "hootsuite": {"type": "generic"},
        "secret-store": {"type": "secret_store"},
    },
    "alerts": {"sinks": {"pagerduty": {"type": "pagerduty"}, "slack": {"type": "slack"}}},
    "retry": {
        "max_attempts": 3,
        "base_delay": 0.001,
        "max_delay": 0.005,
        "slow_retry_interval": 0.05,
    },
    "journal": {"fsync": False},
    # The plan machinery these tests drive, with the policy of one step (every action at
    # once, sessions and grants only); the default policy's order, lifecycle actions and
    # read-back are tested in tests/test_lifecycle_plans.py.
    "offboarding": {"steps": MACHINERY_STEPS},
}

#: Fixed engine clock (2026-03-02T12:00:00Z): ``finished_at`` of alerts and plan timestamps.
CLOCK = 1_772_452_800.0


def hr_event(
    event_id: str = "evt-1",
    etype: str = "terminated",
    *,
    employee_id: str = "E1",
    email: str = "ana@brand.example",
    effective_at: datetime | str = "2026-03-02T11:00:00Z",
    accepted_at: float | None = CLOCK - 1.0,
    **extra: Any,
) -> HrEvent:
    """A validated HR event (ana's termination by default), built as the edge builds it."""
    when = effective_at if isinstance(effective_at, str) else effective_at.isoformat()
    data: dict[str, Any] = {
        "event_id": event_id,
        "type": etype,
        "employee_id": employee_id,
        "email": email,
        "effective_at": when,
        "source": "workday",
        **extra,
    }
    if accepted_at is not None:
        data["accepted_at"] = accepted_at
    return HrEvent.from_dict(data)


class FakeProvider:
    """A provider that records each ``perform`` and answers ``{"status": 204}``.

    ``fail_next(n, exc)`` makes the next ``n`` calls raise ``exc`` (any action);
    ``fail_always(action, exc)`` makes every call of that action name raise; ``hold()``
    blocks calls until ``release()`` (``started`` is set once a call is blocked)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[Action] = []
        self._lock = threading.Lock()
        self._next: list[Exception] = []
        self._always: dict[str, Exception] = {}
        self._gate = threading.Event()
        self._gate.set()
        self.started = threading.Event()

    def fail_next(self, times: int, exc: Exception) -> None:
        with self._lock:
            self._next.extend([exc] * times)

    def fail_always(self, action: str, exc: Exception) -> None:
        with self._lock:
            self._always[action] = exc

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def perform(self, action: Action) -> dict[str, Any]:
        with self._lock:
            self.calls.append(action)
            exc = self._next.pop(0) if self._next else self._always.get(action.action)
        self.started.set()
        self._gate.wait(5.0)
        if exc is not None:
            raise exc
        return {"status": 204, "provider": self.name}

    def call_keys(self) -> list[str]:
        """Idempotency keys of every call, in call order (a retried action repeats)."""
        with self._lock:
            return [a.idempotency_key for a in self.calls]


class FakeSink:
    """An alert sink that records each alert it is given (``fail_next`` like the provider)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.alerts: list[Alert] = []
        self._lock = threading.Lock()
        self._next: list[Exception] = []

    def fail_next(self, times: int, exc: Exception) -> None:
        with self._lock:
            self._next.extend([exc] * times)

    def send(self, alert: Alert) -> dict[str, Any]:
        with self._lock:
            self.alerts.append(alert)
            exc = self._next.pop(0) if self._next else None
        if exc is not None:
            raise exc
        return {"status": 202, "sink": self.name}

    def sent(self, event_action: str | None = None) -> list[Alert]:
        with self._lock:
            return [a for a in self.alerts if event_action in (None, a.event_action)]


class FakePublisher:
    """:class:`streams.bus.views.Publisher` without a broker: every acknowledged write lands in
    :attr:`records` as ``(topic, key, decoded value)``; ``down`` (or ``fail_next(n)``) makes
    sends raise :class:`BrokerError` like a broker that does not acknowledge."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, Any]] = []
        self.attempts = 0
        self.failures = 0
        self.down = False
        self._fail_next = 0
        self.writer_id = b"test-writer"
        self.started = True

    @property
    def reachable(self) -> bool:
        return not self.down and self._fail_next == 0

    def fail_next(self, times: int) -> None:
        self._fail_next += times

    async def send(
        self,
        topic: str,
        key: str,
        value: bytes | None,
        *,
        timeout: float = 10.0,
        partition: int | None = None,
    ) -> None:
        await asyncio.sleep(0)  # a real send waits for the broker: other tasks run meanwhile
        self.attempts += 1
        if self.down or self._fail_next > 0:
            self._fail_next = max(0, self._fail_next - 1)
            self.failures += 1
            raise BrokerError(f"broker did not acknowledge a write to {topic}: test outage")
        self.records.append((topic, key, None if value is None else orjson.loads(value)))

    async def send_json(
        self, topic: str, key: str, value: Any, *, partition: int | None = None
    ) -> None:
        await self.send(
            topic, key, None if value is None else orjson.dumps(value), partition=partition
        )

    def on(self, topic: str) -> list[tuple[str, Any]]:
        """``(key, value)`` of every record acknowledged on ``topic``, in order."""
        return [(k, v) for t, k, v in self.records if t == topic]

    def keys(self, topic: str) -> list[str]:
        return [k for k, _ in self.on(topic)]


class FakeViews:
    """What the engine reads of :class:`streams.bus.views.Views`: the registry, the lifecycle
    state, the ledger and the leak index, held in memory (nothing tails a topic)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.state = StateStore()
        self.ledger: dict[str, dict[str, Any]] = {}
        self.leak_index: LeakIndex | None = None
        self.plus_tag_domains: frozenset[str] = frozenset()
        self.ready = asyncio.Event()
        self.ready.set()
        self.records_applied = 0
        self.on_registry_change: list[Callable[[], None]] = []

    @property
    def tailing(self) -> bool:
        return True


class FaultyJournal(Journal):
    """The real journal, with a switch: while ``full`` is True every append or write raises
    :class:`JournalError` (as on a full disk) and writes nothing. ``appended`` lists
    ``(kind, durable)`` of every append that succeeded (a :meth:`write` becomes durable once
    a :meth:`commit` covering it returned); ``committed`` the sequence numbers waited for."""

    def __init__(self, path: Path, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.full = False
        self.refused = 0
        self.appended: list[tuple[str, bool]] = []
        self.committed: list[int] = []
        self._written_at: dict[int, int] = {}  # write's sequence number -> index in appended

    def _refuse_when_full(self) -> None:
        if self.full:
            self.refused += 1
            raise JournalError(
                f"cannot write journal {self.path}: No space left on device (test)",
                reason="No space left on device",
            )

    def append(self, kind: str, *, durable: bool = False, **fields: Any) -> dict[str, Any]:
        self._refuse_when_full()
        entry = super().append(kind, durable=durable, **fields)
        self.appended.append((kind, durable))
        return entry

    def write(self, kind: str, **fields: Any) -> tuple[dict[str, Any], int]:
        self._refuse_when_full()
        entry, seq = super().write(kind, **fields)
        self._written_at[seq] = len(self.appended)
        self.appended.append((kind, False))
        return entry, seq

    async def commit(self, seq: int) -> None:
        await super().commit(seq)
        self.committed.append(seq)
        for written in [s for s in self._written_at if s <= seq]:
            index = self._written_at.pop(written)
            self.appended[index] = (self.appended[index][0], True)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


@dataclass
class EngineHarness:
    engine: Engine
    config: Config
    publisher: FakePublisher
    views: FakeViews
    journal: FaultyJournal
    executor: Executor
    providers: dict[str, FakeProvider]
    sinks: dict[str, FakeSink]
    topics: Any = field(init=False)
    _dispatched: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.topics = self.engine.topics

    def calls(self) -> list[str]:
        """Idempotency keys of every provider call (all providers, grouped by provider)."""
        return [k for name in sorted(self.providers) for k in self.providers[name].call_keys()]

    def alerts(self, sink: str) -> list[Alert]:
        return self.sinks[sink].sent()

    async def dispatch_alerts(self) -> int:
        """Be the worker's alert agent: send every alert queued on ``alerts.pending`` since
        the last call (the event path only queues them). Returns how many were dispatched."""
        queued = self.publisher.on(self.topics.alert_queue)
        fresh = queued[self._dispatched :]
        self._dispatched = len(queued)
        for _key, value in fresh:
            await self.engine.dispatch_alert(orjson.dumps(value))
        return len(fresh)

    def journal_entries(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [e for e in read_journal(self.journal.path) if kind in (None, e.get("kind"))]

    def close(self) -> None:
        for provider in self.providers.values():
            provider.release()
        self.executor.shutdown()
        self.journal.close()


def build_engine(
    tmp_path: Path,
    *,
    config: Mapping[str, Any] | None = None,
    registry: str = REGISTRY,
    clock: Callable[[], float] = lambda: CLOCK,
) -> EngineHarness:
    """A real Engine over the stand-ins above; ``config`` is merged into :data:`CONFIG`."""
    data = _merge(CONFIG, {"data_dir": str(tmp_path / "data"), **(config or {})})
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    cfg = load_config(path, env={})
    reg, problems = parse_registry(registry)
    assert problems == [], problems
    providers = {name: FakeProvider(name) for name in cfg.providers}
    sinks = {name: FakeSink(name) for name in cfg.sinks}
    executor = Executor(
        providers,
        retry_policy(cfg),
        threads=4,
        per_provider_concurrency=int(cfg["executor.per_provider_concurrency"]),
        dry_run=bool(cfg["executor.dry_run"]),
    )
    publisher = FakePublisher()
    views = FakeViews(reg)
    journal = FaultyJournal(tmp_path / "data" / "journal.jsonl", fsync=bool(cfg["journal.fsync"]))
    engine = Engine(
        cfg,
        publisher=publisher,  # type: ignore[arg-type]
        views=views,  # type: ignore[arg-type]
        journal=journal,
        executor=executor,
        sinks=dict(sinks),
        clock=clock,
    )
    return EngineHarness(engine, cfg, publisher, views, journal, executor, providers, sinks)


def counter(name: str, **labels: str) -> float:
    """The current value of one labelled series of the worker's metrics (0 when absent)."""
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value
