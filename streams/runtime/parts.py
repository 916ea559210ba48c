"""The parts a process builds from its configuration, shared by the worker
(:mod:`streams.runtime.worker`) and the single-connector commands (``accessguard connect
hr-webhook``, ``accessguard connect poller``): the HTTP retry policy, providers and alert
sinks, login pollers and leak feeds with their publishers, and the HR edge.

Connector classes are looked up by ``type`` in the connector tables
(:mod:`connectors.base.catalogue`, :mod:`connectors.base.leak_sources`), so no vendor is named
here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

from connectors.base.catalogue import build_provider, build_sink, poller_class, poller_settings
from connectors.base.health import SourceHealth
from connectors.base.http import HttpClient, RetryPolicy
from connectors.base.leak_sources import LEAK_FEEDS, LeakFeed
from connectors.base.pollers import CheckpointStore
from connectors.ingest import standard_webhooks
from connectors.ingest.auth_ingest import LoginPublisher
from connectors.ingest.doors import lifecycle_doors, restore_doors
from connectors.ingest.edge import AuthGuard
from connectors.ingest.hr_webhook import HrWebhook
from connectors.ingest.leak_ingest import LeakPublisher
from streams.bus.bootstrap import read_hr_seen
from streams.bus.journal import Journal
from streams.bus.topics import Topics
from streams.bus.views import Publisher
from streams.config import Config
from streams.decide.resolve import resolve_identity
from streams.detect.identity import resolve_subjects
from streams.model.identity import IdentityEvent
from streams.model.records import LoginEvent
from streams.model.registry import Registry
from streams.runtime.executor import Provider, Sink
from streams.support.errors import ConfigError
from streams.support.secrets import Secret

log = structlog.get_logger(__name__)


def retry_policy(config: Config) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=config.settings.retry.max_attempts,
        base_delay=config.settings.retry.base_delay,
        max_delay=config.settings.retry.max_delay,
        connect_timeout=config.settings.retry.connect_timeout,
        read_timeout=config.settings.retry.read_timeout,
        slow_retry_interval=config.settings.retry.slow_retry_interval,
    )


def build_outputs(config: Config, http: HttpClient) -> tuple[dict[str, Provider], dict[str, Sink]]:
    providers: dict[str, Provider] = {}
    for name, settings in config.providers.items():
        try:
            providers[name] = build_provider(name, settings, http)
        except ConfigError:
            raise
        except Exception as exc:  # any constructor failure names the config key
            raise ConfigError(f"providers.{name}", str(exc)) from exc
    sinks: dict[str, Sink] = {}
    for name, settings in config.sinks.items():
        try:
            sinks[name] = build_sink(name, settings, http)
        except ConfigError:
            raise
        except Exception as exc:  # any constructor failure names the config key
            raise ConfigError(f"alerts.sinks.{name}", str(exc)) from exc
    return providers, sinks


def journal(config: Config) -> Journal:
    """The process's journal: ``<data_dir>/journal.jsonl``."""
    return Journal(config.data_dir / "journal.jsonl", fsync=config.settings.journal.fsync)


def login_publisher(
    config: Config,
    publisher: Publisher,
    topics: Topics,
    registry: Callable[[], Registry] | None = None,
) -> LoginPublisher:
    """Login events (of pollers) to auth.events, unusable payloads to its dead-letter topic;
    keyed by resolved identity when ``registry`` gives the process's registry view."""
    return LoginPublisher(
        publisher,
        topic=topics.auth_events,
        dlq_topic=topics.auth_dlq,
        partitions=config.settings.topics.partitions,
        key_of=None if registry is None else identity_key(registry),
        identity_topic=topics.identity_events,
        identity_key_of=None if registry is None else subject_key(registry),
    )


def identity_key(registry: Callable[[], Registry]) -> Callable[[LoginEvent], str]:
    """The partition key of a login event as the worker will resolve it (its identity, or
    its principal when unknown), from the current registry view."""

    def key_of(event: LoginEvent) -> str:
        # The identity only (not the account: it plays no part in the key). Any surprise
        # (the HTTP edge runs this in a thread while the views apply a change) falls back to
        # the principal's key: the owner then gets the event routed, never loses it.
        try:
            found = resolve_identity(event, registry())
        except Exception:  # noqa: BLE001 - a key is a placement hint, never a reason to fail
            found = None
        return found.id if found is not None else event.partition_key

    return key_of


def subject_key(registry: Callable[[], Registry]) -> Callable[[IdentityEvent], str]:
    """The partition key of an identity event: its subject's identity as the worker will
    resolve it, else its principal (as :func:`identity_key` does for logins)."""

    def key_of(event: IdentityEvent) -> str:
        try:
            resolved = resolve_subjects(event, registry())
        except Exception:  # noqa: BLE001 - a key is a placement hint, never a reason to fail
            resolved = event
        return resolved.partition_key

    return key_of


def leak_publisher(config: Config, publisher: Publisher, topics: Topics) -> LeakPublisher:
    """LeakRecords (of feeds and POST /v1/leaks) to leak.records, unusable ones to its
    dead-letter topic."""
    return LeakPublisher(
        publisher,
        topic=topics.leak_records,
        dlq_topic=topics.leak_dlq,
        partitions=config.settings.topics.partitions,
    )


class LeakFeedRunner:
    """A leak feed (a ``type`` of :data:`connectors.base.leak_sources.LEAK_FEEDS`) run like a
    poller: each round reads the current registry and publishes its LeakRecords to
    leak.records."""

    def __init__(
        self, feed: LeakFeed, registry: Callable[[], Registry], out: LeakPublisher
    ) -> None:
        self.feed = feed
        self.name = feed.name
        self.vendor = feed.vendor
        self.registry = registry
        self.out = out
        self.health = feed.health
        self.health_check = feed.health_check

    async def _reject(self, payload: Any, reason: str) -> None:
        await self.out.reject(payload, reason, source=self.feed.label)

    async def run(self, stop: asyncio.Event) -> None:
        await self.feed.run(stop, self.registry, self.out.publish, self._reject)


def build_pollers(
    config: Config,
    http: HttpClient,
    out: LoginPublisher,
    *,
    leaks: LeakPublisher | None = None,
    registry: Callable[[], Registry] | None = None,
) -> list[Any]:
    """The configured pollers (``pollers.<name>``), publishing through ``out``; leak feeds
    (``type: hibp``) publish through ``leaks`` and read ``registry()`` each round."""
    store = CheckpointStore(config.data_dir / "checkpoints")
    pollers: list[Any] = []
    for name, raw in config.pollers.items():
        settings = poller_settings(name, raw)  # validated against the type's model
        feed_class = LEAK_FEEDS.get(settings["type"])
        if feed_class is not None:
            if leaks is None or registry is None:
                raise ConfigError(f"pollers.{name}", "a leak feed runs inside `accessguard run`")
            feed = feed_class(name, settings, http, store)
            feed.health.expect(config.settings.sources.cadence_of(feed.health.source))
            pollers.append(LeakFeedRunner(feed, registry, leaks))
            continue
        cls = poller_class(name, settings)

        async def reject(payload: Any, reason: str, vendor: str = cls.vendor) -> None:
            await out.reject(payload, reason, vendor=vendor)

        poller = cls(name, settings, http, store, publish=out.publish, reject=reject)
        poller.health.expect(
            config.settings.sources.cadence_of(poller.health.source, login_poller=True)
        )
        pollers.append(poller)
    return pollers


def expect_cadences(config: Config, *sources: SourceHealth) -> None:
    """Export each ingest source's expected cadence (``sources.*``) for the silence alert."""
    for source in sources:
        source.expect(config.settings.sources.cadence_of(source.source))


def auth_guard(config: Config) -> AuthGuard:
    """The throttle of failed authentications, shared by a process's endpoints."""
    return AuthGuard(
        limit=config.settings.http.auth_failure_limit,
        window=config.settings.http.auth_failure_window,
        block=config.settings.http.auth_block_seconds,
        trusted_proxies=config["http.trusted_proxies"],
    )


def leak_token(config: Config) -> Secret | None:
    """The bearer token of POST /v1/leaks: its own, and the login-ingest one only when
    ``leaks.accept_auth_token`` says so (one leaked token must not open both doors)."""
    token: Secret | None = config["leaks.ingest_token"]
    if token is None and config["leaks.accept_auth_token"]:
        token = config["auth.ingest_token"]
    return token


def hr_webhook(
    config: Config, publisher: Publisher, journal: Journal, topics: Topics, guard: AuthGuard
) -> HrWebhook:
    """The HR edge, and beside it the other doors that feed the HR path (``hr.doors``)."""
    standard: Secret | None = config["hooks.standard_webhooks_secret"]
    try:
        value = standard.reveal() if standard is not None else None
    except OSError:
        value = None  # unresolvable now: the secret check names it (secretcheck.py)
    if value is not None:
        try:
            standard_webhooks.keys(value)
        except ValueError as exc:
            raise ConfigError("hooks.standard_webhooks_secret", str(exc)) from None
    hr = HrWebhook(
        secret=config["hr.webhook_secret"],
        tolerance=config.settings.hr.tolerance_seconds,
        dedup_ttl=config.settings.hr.dedup_ttl_seconds,
        max_body=config.settings.http.max_body_bytes,
        publisher=publisher,
        journal=journal,
        topic=topics.hr_events,
        guard=guard,
        standard_secret=standard,
    )
    hr.doors = lifecycle_doors(config, publisher, journal, topics, guard)
    return hr


async def restore_seen(hr: HrWebhook, bootstrap: str, topic: str) -> None:
    """Refill the HR edge's memory of accepted event ids from the hr.events topic, and each
    other door's from the journal (before the first request: a re-sent event is a duplicate
    across restarts)."""
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    seen, unreadable = await loop.run_in_executor(None, read_hr_seen, bootstrap, topic)
    kept = hr.seen.load(seen, time.time())
    doors = await loop.run_in_executor(
        None, restore_doors, hr.doors, hr.contract.journal.path, time.time()
    )
    log.info(
        "hr.seen_restored",
        events=len(seen),
        remembered=kept,
        doors=doors,
        unreadable=unreadable,
        seconds=round(time.monotonic() - started, 3),
    )
