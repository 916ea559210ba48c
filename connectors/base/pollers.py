"""The one base for pull sources: poll loop, checkpoint, rate-limit sleep, failure marking.

A pull source of login events (the Okta System Log, Graph sign-ins, ...) is a :class:`Poller`
subclass that implements only :meth:`Poller.fetch` (ONE HTTP call for one cursor, returning a
:class:`Page`) and names its vendor, whose normaliser comes from
:data:`connectors.base.sources.SECURITY_NORMALISERS` (LoginEvents and IdentityEvents out;
allow-listed drops counted). A leak feed (HIBP) subclasses the loop itself,
:class:`PollLoop`, whose rounds also take the current registry and publish LeakRecords.
Everything else lives here, once:

* **Loop.** ``fetch`` runs in a thread (blocking ``requests`` must not stall the event loop);
  each record is normalised; records the normaliser refuses go to ``reject(payload, reason)``
  (the dead-letter topic); the rest go to ``publish(events)``.
* **Checkpoint, at-least-once.** The page's ``next_cursor`` is written to the
  :class:`CheckpointStore` only after ``publish`` (and ``reject``) returned. If publishing
  fails, the cursor stays and the same page is fetched again next round; after a crash
  between publish and save, the last page is published twice. Consumers dedupe on
  ``LoginEvent.event_id``, so running a page more than once is harmless.
* **Rate limits.** A page may ask for a pause (``rate_limit_sleep``: the vendor said its
  budget is nearly spent); a :class:`~streams.support.errors.RetryableError` (429, 5xx, timeouts)
  waits ``retry_after`` when the vendor gave one, else bounded exponential backoff
  (:func:`connectors.base.http.backoff_delay`, the one HTTP policy).
* **Failures.** :class:`~streams.support.errors.AuthError` and other permanent errors mark
  the poller failed in :attr:`Poller.status` and back off (up to ``max_failure_backoff``) instead of
  spinning or crashing: a rotated token starts working again without a restart. Nothing a
  single round does ends :meth:`Poller.run`; only ``stop`` does.
* **Caught up.** When the vendor has nothing more, wait ``interval`` seconds.
* **Health.** Every loop is a source ``poller:<name>`` (:mod:`connectors.base.health`): it
  counts events published and rejections per reason, stamps its last event, exports its
  failed rounds in a row, and answers :meth:`PollLoop.health_check` (a poller's
  ``/healthz``). Subclasses get all of it without a line of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import structlog

from connectors.base.health import (
    NORMALISER_ERROR,
    REJECTED_RECORD,
    Health,
    SourceHealth,
    poller_health,
)
from connectors.base.http import HttpClient, RetryPolicy, backoff_delay
from connectors.base.sources import SECURITY_NORMALISERS
from streams.model.identity import IdentityEvent
from streams.model.records import LoginEvent
from streams.support import metrics
from streams.support.errors import (
    AuthError,
    ConfigError,
    PermanentError,
    RetryableError,
    ValidationError,
)

log = structlog.get_logger(__name__)

#: A JSON object the subclass defines (a next link, a time and the ids seen at it, ...);
#: None before the first successful page.
Cursor = dict[str, Any] | None
Publish = Callable[[list[LoginEvent | IdentityEvent]], Awaitable[None]]
#: What a :class:`PollLoop` round publishes (LoginEvents for a Poller, LeakRecords for a feed).
PublishAny = Callable[[list[Any]], Awaitable[None]]
Reject = Callable[[Any, str], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

DEFAULT_INTERVAL = 10.0
#: An expired token is fixed by a human; polling it every second only fills the vendor's log.
DEFAULT_MAX_FAILURE_BACKOFF = 300.0
#: The prefix of the dead-letter reason of a record whose normaliser raised (not refused).
NORMALISER_ERROR_PREFIX = "normaliser error"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True, slots=True)
class Page:
    """What one :meth:`Poller.fetch` returns.

    ``records`` are vendor payloads as sent (new ones only: a subclass that re-reads a
    boundary drops what its cursor says was already seen). ``next_cursor`` is where the next
    fetch starts once these records are published. ``caught_up`` means the vendor has
    nothing more right now (wait ``interval``). ``rate_limit_sleep`` asks for a pause of
    that many seconds before the next call (the vendor's budget is nearly spent).
    ``rejected`` are ``(payload, reason)`` the fetch itself refused (dead-lettered like the
    normaliser's refusals); ``summary`` adds fields to the round's log line.
    """

    records: list[Any]
    next_cursor: Cursor
    caught_up: bool
    rate_limit_sleep: float | None = None
    rejected: list[tuple[Any, str]] = field(default_factory=list)
    summary: Mapping[str, Any] = field(default_factory=dict)


class CheckpointStore:
    """One JSON file per poller name under ``directory``, replaced atomically.

    A write goes to a temporary file in the same directory, is fsynced, then
    ``os.replace``-d over the old one: a crash leaves either the old or the new checkpoint,
    never half of one. An unreadable checkpoint refuses to load (ConfigError) rather than
    silently starting again from ``start``, which would skip or replay events unnoticed.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path(self, name: str) -> Path:
        if not _NAME_RE.fullmatch(name):
            raise ConfigError(
                f"pollers.{name[:40]}", "name must be 1-100 of A-Z a-z 0-9 _ . - (a file name)"
            )
        return self.directory / f"{name}.checkpoint.json"

    def load(self, name: str) -> Cursor:
        path = self.path(name)
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not (
            data.get("cursor") is None or isinstance(data.get("cursor"), dict)
        ):
            raise ConfigError(
                f"pollers.{name}",
                f"checkpoint {path} is unreadable; restore it, or delete it to start again "
                "from the poller's `start` setting",
            )
        cursor: Cursor = data.get("cursor")
        return cursor

    def save(self, name: str, cursor: Cursor) -> None:
        path = self.path(name)
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = {
            "poller": name,
            "cursor": cursor,
            "saved_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(payload, handle, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def setting_float(
    settings: Mapping[str, Any], key: str, config_key: str, default: float, *, minimum: float
) -> float:
    raw = settings.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not raw >= minimum:
        raise ConfigError(config_key, f"must be a number >= {minimum:g}")
    return float(raw)


def setting_int(
    settings: Mapping[str, Any], key: str, config_key: str, default: int, *, low: int, high: int
) -> int:
    raw = settings.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise ConfigError(config_key, f"must be an integer from {low} to {high}")
    return raw


def parse_start(raw: Any, config_key: str, now: float) -> datetime:
    """The ``start`` setting: ``"now"`` (default) or an ISO 8601 time with a zone."""
    if raw is None or raw == "now":
        return datetime.fromtimestamp(now, UTC)
    if isinstance(raw, datetime):
        when = raw
    elif isinstance(raw, str):
        try:
            when = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(config_key, 'must be "now" or an ISO 8601 time') from None
    else:
        raise ConfigError(config_key, 'must be "now" or an ISO 8601 time')
    if when.tzinfo is None:
        raise ConfigError(config_key, "needs a time zone, e.g. 2024-01-01T00:00:00Z")
    return when.astimezone(UTC)


def iso_millis(when: datetime) -> str:
    """UTC with milliseconds and ``Z``, the format Okta and Graph both accept."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class _Counters:
    pages: int = 0
    published: int = 0
    rejected: int = 0


class PollLoop(ABC):
    """The loop every pull source shares: lazy checkpoint load, one round (fetch in a thread,
    dead-letter, publish, checkpoint), failure marking and backoff, status, pause and stop.

    :class:`Poller` (login sources) and leak feeds subclass it. A subclass names its
    :attr:`vendor`, reads its own settings in :meth:`_configure` and runs rounds with
    :meth:`_round` (the fetch, publish and reject of that round). Hooks, each with the
    login pollers' behaviour by default: :meth:`_check_cursor` (refuse a checkpoint this
    source cannot read), :meth:`_split` (records -> published and rejected),
    :meth:`_failure_delay`, :meth:`_log_round` and :meth:`_log_failure`.

    Settings read here (under ``pollers.<name>``): ``interval`` (seconds between rounds once
    caught up; default and minimum are class attributes).

    :attr:`status` is a plain dict for health endpoints: ``last_success`` and
    ``last_error_at`` (epoch seconds or None), ``last_error`` (a message without secrets or
    URLs), ``last_error_kind`` (``auth``, ``retryable``, ``permanent``, ``crashed``,
    ``publish`` or ``checkpoint``; None before a failure), ``consecutive_failures``,
    ``failed`` (the last round failed), ``caught_up``, ``pages``, ``published``,
    ``rejected``. :attr:`health` holds the source's metric children (``poller:<name>``);
    :meth:`health_check` decides ``/healthz``.
    """

    #: Set by each subclass in its class body (an instance annotation, so that protocols
    #: that read ``vendor`` from an object accept every source).
    vendor: str
    default_interval: ClassVar[float] = DEFAULT_INTERVAL
    min_interval: ClassVar[float] = 0.1

    def __init__(
        self,
        name: str,
        settings: Mapping[str, Any],
        http: HttpClient,
        checkpoint_store: CheckpointStore,
        *,
        clock: Clock = time.time,
        sleep: Sleep | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.name = name
        self.config_prefix = f"pollers.{name}"
        checkpoint_store.path(name)  # validates the name now, not at the first save
        self.interval = setting_float(
            settings,
            "interval",
            f"{self.config_prefix}.interval",
            self.default_interval,
            minimum=self.min_interval,
        )
        self.http = http
        self._store = checkpoint_store
        self._clock = clock
        self._sleep = sleep
        self._executor = executor
        self._cursor: Cursor = None
        self._loaded = False
        self._counters = _Counters()
        self.status: dict[str, Any] = {
            "last_success": None,
            "last_error": None,
            "last_error_at": None,
            "last_error_kind": None,
            "consecutive_failures": 0,
            "failed": False,
            "caught_up": False,
            "pages": 0,
            "published": 0,
            "rejected": 0,
        }
        #: The source's metrics (``poller:<name>``); its cadence is set by whoever reads the
        #: configuration (streams/runtime/parts.py ``build_pollers``).
        self.health = SourceHealth(
            f"poller:{name}", (REJECTED_RECORD, NORMALISER_ERROR), clock=clock
        )
        self._failures_gauge = metrics.POLLER_FAILURES.labels(self.health.source)
        self._failures_gauge.set(0)

    def health_check(
        self, *, ready_within: float, max_failures: int, now: float | None = None
    ) -> Health:
        """This loop's health now (:func:`connectors.base.health.poller_health`)."""
        return poller_health(
            self.status,
            now=self._clock() if now is None else now,
            interval=self.interval,
            ready_within=ready_within,
            max_failures=max_failures,
        )

    # --- hooks ------------------------------------------------------------------------

    def _configure(self, settings: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Read the subclass's own settings (called at the end of ``__init__``)."""

    def _check_cursor(self, cursor: Cursor) -> None:  # noqa: B027 - optional hook
        """Raise ConfigError for a checkpoint this source cannot continue from."""

    def _split(self, page: Page) -> tuple[list[Any], list[tuple[Any, str]]]:
        """The page's records to publish and ``(payload, reason)`` to dead-letter."""
        return page.records, page.rejected

    @abstractmethod
    def _failure_delay(self, failures: int, exc: BaseException, stage: str) -> float:
        """Seconds to wait after the ``failures``-th failed round in a row (``stage``:
        fetch, publish or checkpoint)."""

    def _log_round(self, page: Page, published: int, rejected: int) -> None:
        log.info(
            "poller_page",
            poller=self.name,
            records=len(page.records),
            published=published,
            rejected=rejected,
            caught_up=page.caught_up,
            **page.summary,
        )

    def _log_failure(self, exc: BaseException, stage: str, failures: int, message: str) -> None:
        log.warning(
            "poller_round_failed",
            poller=self.name,
            stage=stage,
            error_type=type(exc).__name__,
            status=getattr(exc, "status", None),
            consecutive_failures=failures,
            error=message[:500],
        )

    # --- the loop ---------------------------------------------------------------------

    @property
    def cursor(self) -> Cursor:
        """The cursor of the next fetch (the last one checkpointed)."""
        return self._cursor

    def load_cursor(self) -> Cursor:
        """The checkpointed cursor, read from the store the first time.

        A corrupt checkpoint raises ConfigError: refusing to start beats silently
        re-reading (or skipping) days of events.
        """
        if not self._loaded:
            cursor = self._store.load(self.name)
            self._check_cursor(cursor)
            self._cursor = cursor
            self._loaded = True
        return self._cursor

    def advance(self, next_cursor: Cursor) -> None:
        """Move to ``next_cursor`` and checkpoint it (OSError if it cannot be saved: the
        cursor is kept in memory all the same, so nothing is published twice now)."""
        if next_cursor != self._cursor:
            self._cursor = next_cursor
            self._store.save(self.name, next_cursor)

    async def _loop(self, stop: asyncio.Event, one_round: Callable[[], Awaitable[float]]) -> None:
        """Run rounds until ``stop`` is set, pausing as each round asks."""
        log.info("poller_started", poller=self.name, vendor=self.vendor)
        while not stop.is_set():
            delay = await one_round()
            if stop.is_set():
                break
            await self._pause(delay, stop)
        log.info("poller_stopped", poller=self.name)

    async def _round(
        self, fetch: Callable[[Cursor], Page], publish: PublishAny, reject: Reject | None
    ) -> float:
        """One round: fetch, dead-letter, publish, checkpoint. Returns seconds to wait.
        Never raises for a failed round (a corrupt checkpoint raises ConfigError)."""
        cursor = self.load_cursor()
        try:
            page = await self._in_thread(fetch, cursor)
        except RetryableError as exc:
            return self._failure_delay(self._failed(exc, "fetch"), exc, "fetch")
        except PermanentError as exc:  # AuthError included
            return self._failure_delay(self._failed(exc, "fetch"), exc, "fetch")
        except Exception as exc:
            # A bug in one round must not end the poller: logged with its traceback, marked.
            log.exception("poller_fetch_crashed", poller=self.name)
            return self._failure_delay(self._failed(exc, "fetch"), exc, "fetch")

        records, rejected = self._split(page)
        try:
            for payload, reason in rejected:
                if reject is not None:
                    await reject(payload, reason)
            if records:
                await publish(records)
        except Exception as exc:  # noqa: BLE001 - the sink's errors are not ours to type; the page is re-fetched, never skipped
            return self._failure_delay(self._failed(exc, "publish"), exc, "publish")

        # Only now is it safe to move on: everything up to next_cursor has been handed off.
        try:
            self.advance(page.next_cursor)
        except OSError as exc:
            # Published already: keep going from memory (no duplicates now); a restart
            # before the next good save replays from the old checkpoint (at-least-once).
            return self._failure_delay(self._failed(exc, "checkpoint"), exc, "checkpoint")

        self._counters.pages += 1
        self._counters.published += len(records)
        self._counters.rejected += len(rejected)
        self._count(len(records), rejected)
        self.status.update(
            last_success=self._clock(),
            consecutive_failures=0,
            failed=False,
            caught_up=page.caught_up,
            pages=self._counters.pages,
            published=self._counters.published,
            rejected=self._counters.rejected,
        )
        self._log_round(page, len(records), len(rejected))
        delay = self.interval if page.caught_up else 0.0
        if page.rate_limit_sleep is not None and page.rate_limit_sleep > delay:
            log.info(
                "poller_rate_limit_pause", poller=self.name, sleep_s=round(page.rate_limit_sleep, 3)
            )
            delay = page.rate_limit_sleep
        return delay

    # --- internals --------------------------------------------------------------------

    def _count(self, published: int, rejected: list[tuple[Any, str]]) -> None:
        self.health.accepted(published)
        if rejected:
            crashed = sum(1 for _, r in rejected if r.startswith(NORMALISER_ERROR_PREFIX))
            self.health.rejected(NORMALISER_ERROR, crashed)
            self.health.rejected(REJECTED_RECORD, len(rejected) - crashed)
        self._failures_gauge.set(0)

    async def _in_thread(self, fn: Callable[[Cursor], Page], cursor: Cursor) -> Page:
        if self._executor is None:
            return await asyncio.to_thread(fn, cursor)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, cursor)

    def _failed(self, exc: BaseException, stage: str) -> int:
        failures = int(self.status["consecutive_failures"]) + 1
        message = f"{stage}: {exc}" if str(exc) else f"{stage}: {type(exc).__name__}"
        self.status.update(
            last_error=message[:500],
            last_error_at=self._clock(),
            last_error_kind=_kind(exc, stage),
            consecutive_failures=failures,
            failed=True,
        )
        self._failures_gauge.set(failures)
        self._log_failure(exc, stage, failures, message)
        return failures

    async def _pause(self, delay: float, stop: asyncio.Event) -> None:
        if delay <= 0:
            await asyncio.sleep(0)  # let publish consumers and stop() run between pages
            return
        if self._sleep is not None:
            await self._sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)


class Poller(PollLoop):
    """Base of every pull source of login events. Subclasses set :attr:`vendor`, implement
    :meth:`fetch` and read their own settings in :meth:`_configure`.

    Settings read here (under ``pollers.<name>``), besides ``interval`` (default 10):
    ``start`` (``"now"`` or an ISO time: where a poller without a checkpoint begins),
    ``max_failure_backoff`` (seconds, default 300).
    """

    # ``vendor`` also names the login normaliser to use (a key of
    # :data:`connectors.base.sources.SECURITY_NORMALISERS`).

    def __init__(
        self,
        name: str,
        settings: Mapping[str, Any],
        http: HttpClient,
        checkpoint_store: CheckpointStore,
        *,
        publish: Publish,
        reject: Reject,
        clock: Clock = time.time,
        sleep: Sleep | None = None,
        executor: Executor | None = None,
    ) -> None:
        super().__init__(
            name, settings, http, checkpoint_store, clock=clock, sleep=sleep, executor=executor
        )
        self.max_failure_backoff = setting_float(
            settings,
            "max_failure_backoff",
            f"{self.config_prefix}.max_failure_backoff",
            DEFAULT_MAX_FAILURE_BACKOFF,
            minimum=1.0,
        )
        self.start = parse_start(settings.get("start"), f"{self.config_prefix}.start", clock())
        #: Backoff after permanent failures: starts at ``interval``, doubles, capped.
        self._failure_policy = RetryPolicy(
            base_delay=self.interval, max_delay=self.max_failure_backoff, jitter=0.1
        )
        self.label = f"{self.vendor}-poller:{name}"
        self._publish = publish
        self._reject = reject
        # logins and identity-security events; allow-listed drops come back empty (counted)
        self._normalise = SECURITY_NORMALISERS[self.vendor]
        self._configure(settings)

    def _failure_delay(self, failures: int, exc: BaseException, stage: str) -> float:
        """A failed fetch waits ``retry_after`` or the HTTP policy's backoff when retryable,
        else the failure backoff; a failed publish the HTTP policy's backoff."""
        if stage == "fetch" and isinstance(exc, RetryableError):
            return backoff_delay(failures, self.http.policy, exc.retry_after)
        if stage == "publish":
            return backoff_delay(failures, self.http.policy)
        return backoff_delay(failures, self._failure_policy)

    @abstractmethod
    def fetch(self, cursor: Cursor) -> Page:
        """Make ONE request for the page at ``cursor`` (None: begin at ``self.start``).

        Runs in a worker thread. Must not change ``self``: the same cursor may be fetched
        again (publish failed, or a restart), and must give the same or a later answer.
        Raises RetryableError, PermanentError or AuthError (via :class:`HttpClient`).
        """

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set. Never raises for a failed round; see the module doc."""
        await self._loop(stop, self.poll_once)

    async def poll_once(self) -> float:
        """One round: fetch, normalise, publish, checkpoint. Returns seconds to wait."""
        return await self._round(self.fetch, self._publish, self._reject)

    def _split(self, page: Page) -> tuple[list[Any], list[tuple[Any, str]]]:
        events: list[LoginEvent | IdentityEvent] = []
        rejected: list[tuple[Any, str]] = list(page.rejected)
        for payload in page.records:
            try:
                events.extend(self._normalise(payload))
            except ValidationError as exc:
                rejected.append((payload, exc.reason))
            except Exception as exc:
                # One poison record must not block the stream: dead-lettered and logged.
                log.exception("poller_normaliser_crashed", poller=self.name)
                rejected.append((payload, f"{NORMALISER_ERROR_PREFIX}: {type(exc).__name__}"))
        return events, rejected


def _kind(exc: BaseException, stage: str) -> str:
    """The class of a failed round, as :attr:`PollLoop.status` reports it: a failed publish
    or checkpoint is named by its stage (our broker or disk, not the vendor)."""
    if stage != "fetch":
        return stage
    if isinstance(exc, AuthError):
        return "auth"
    if isinstance(exc, RetryableError):
        return "retryable"
    if isinstance(exc, PermanentError):
        return "permanent"
    return "crashed"
