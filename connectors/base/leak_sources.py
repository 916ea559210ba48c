"""The leak-record sources the core looks up by type: feeds run like pollers, and the vendor
objects an ``accessguard replay`` line may wrap.

Kept apart from :mod:`connectors.base.sources` (the login normalisers) because a feed is a
poller-like connector: it imports :mod:`connectors.base.pollers`, which imports the login
table, and one module holding both would be an import cycle.

Adding a leak feed means writing its connector and adding its line to :data:`LEAK_FEEDS`
(and to :data:`LEAK_WRAPPERS` if a replay line may carry its objects); the worker and the
replay never name a vendor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

from connectors.base.health import Health, SourceHealth
from connectors.base.http import HttpClient
from connectors.base.pollers import CheckpointStore
from connectors.hibp.poller import HibpFeed, normalise_breach
from streams.model.records import LeakRecord
from streams.model.registry import Registry


class LeakFeed(Protocol):
    """What the worker runs for ``pollers.<name>`` with a leak-feed ``type``: each round reads
    the current registry (``registry()``) and hands its LeakRecords to ``publish``."""

    name: str
    vendor: str
    #: Names the feed in rejected payloads (``<vendor>:<name>``).
    label: str
    #: The feed's source metrics (``poller:<name>``: connectors/base/health.py).
    health: SourceHealth

    def health_check(
        self, *, ready_within: float, max_failures: int, now: float | None = None
    ) -> Health: ...

    async def run(
        self,
        stop: asyncio.Event,
        registry: Callable[[], Registry],
        publish: Callable[[list[LeakRecord]], Awaitable[None]],
        reject: Callable[[Any, str], Awaitable[None]] | None = None,
    ) -> None: ...


#: Builds a feed from ``(name, settings, http, checkpoint_store)``.
LeakFeedFactory = Callable[[str, Mapping[str, Any], HttpClient, CheckpointStore], LeakFeed]

#: Leak feeds by poller ``type``.
LEAK_FEEDS: Mapping[str, LeakFeedFactory] = MappingProxyType({"hibp": HibpFeed})


def _breach_records(event: Any, account: str) -> list[LeakRecord]:
    return [normalise_breach(event).record_for(account, "hibp")]


#: ``(event, account) -> LeakRecords`` for a wrapped leak object of an ``accessguard replay``
#: line (``{"kind":"leak","vendor":...,"account":...,"event":{...}}``), by vendor, in this
#: order in its messages. Raises ValidationError for an object it cannot use.
LEAK_WRAPPERS: Mapping[str, Callable[[Any, str], list[LeakRecord]]] = MappingProxyType(
    {"hibp": _breach_records}
)
