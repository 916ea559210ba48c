"""The worker's HTTP doors: the HR webhook (with its Standard Webhooks and Okta Event Hook
doors), login and leak ingest, SCIM and the Shared Signals receiver, mounted on one app.

Split from :mod:`streams.runtime.worker` (which only starts and stops the server) because each
new door added its wiring there and the module reached its size limit; everything a door
needs from the process comes from the :class:`~streams.runtime.worker.WorkerServices` passed in.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from connectors.ingest.auth_ingest import AuthIngest
from connectors.ingest.dumps import DumpOptions
from connectors.ingest.leak_ingest import LeakIngest, LeakPublisher
from streams.bus.journal import Journal
from streams.bus.topics import Topics
from streams.bus.views import Publisher, Views
from streams.config import Config
from streams.model.leak_index import LeakIndex
from streams.runtime.parts import (
    auth_guard,
    expect_cadences,
    hr_webhook,
    identity_key,
    leak_token,
    restore_seen,
)
from streams.runtime.scim import scim_edge, scim_service
from streams.runtime.ssfpart import start_ssf
from streams.runtime.web import build_web_app


class Host(Protocol):
    """What the doors need from the process (:class:`streams.runtime.worker.WorkerServices`;
    a protocol, so this module does not import the worker that imports it)."""

    config: Config
    bootstrap: str
    topics: Topics
    publisher: Publisher
    journal: Journal
    views: Views
    serve_hr: bool
    leak_ingest: LeakIngest | None

    def readiness(self) -> dict[str, bool]: ...

    def leak_publisher(self) -> LeakPublisher: ...

    def leak_index(self) -> LeakIndex | None: ...

    def dump_options(self) -> DumpOptions: ...


def served_doors(services: Host) -> frozenset[str]:
    """The doors besides HR and ingest: all of them with ``serve_hr`` (``accessguard run``),
    the Shared Signals transmitter included; else ``worker.doors`` (``accessguard worker``:
    never the transmitter, which must run once, not once per replica, so it is ``accessguard
    connect ssf-transmitter``'s)."""
    if services.serve_hr:
        return frozenset({"scim", "ssf", "transmitter"})
    return frozenset(services.config.settings.worker.doors)


async def build_edges(services: Host) -> web.Application:
    """The app with every door this process serves (``serve_hr``: HR, ingest, SCIM, SSF;
    otherwise health and metrics, and the doors of ``worker.doors``), their dedup memories
    restored first."""
    hr = auth = leaks = None
    doors = served_doors(services)
    scim_hr = None
    if services.serve_hr:
        guard = auth_guard(services.config)
        hr = hr_webhook(
            services.config, services.publisher, services.journal, services.topics, guard
        )
        await restore_seen(hr, services.bootstrap, services.topics.hr_events)
        auth = AuthIngest(
            token=services.config["auth.ingest_token"],
            max_body=int(services.config["http.max_batch_bytes"]),
            publisher=services.publisher,
            topic=services.topics.auth_events,
            dlq_topic=services.topics.auth_dlq,
            partitions=int(services.config["topics.partitions"]),
            guard=guard,
            key_of=identity_key(lambda: services.views.registry),
            identity_topic=services.topics.identity_events,
        )
        leaks = LeakIngest(
            token=leak_token(services.config),
            max_body=int(services.config["http.max_batch_bytes"]),
            out=services.leak_publisher(),
            index=services.leak_index,
            options=services.dump_options(),
            max_bytes=int(services.config["leaks.max_request_bytes"]),
            max_records=int(services.config["leaks.max_request_records"]),
            guard=guard,
        )
        services.leak_ingest = leaks
        expect_cadences(services.config, hr.health, *auth.health.values(), leaks.health)
        scim_hr = hr
    elif "scim" in doors:
        # SCIM's terminations still pass an HR edge's contract; its memory of accepted ids
        # is restored from hr.events like the HR webhook's (the ids are deterministic).
        scim_hr = scim_edge(services.config, services.publisher, services.journal)
        await restore_seen(scim_hr, services.bootstrap, services.topics.hr_events)
    ssf = None
    if doors & {"ssf", "transmitter"}:
        ssf = await start_ssf(
            services,
            receive="ssf" in doors,
            transmit="transmitter" in doors,
            singletons=services.serve_hr,
        )
    return build_web_app(
        hr=hr,
        auth=auth,
        leaks=leaks,
        scim=scim_service(services.config, scim_hr, services.views),
        extra=ssf,
        readiness=services.readiness,
        max_body=max(
            int(services.config["http.max_body_bytes"]),
            int(services.config["http.max_batch_bytes"]),
        ),
    )
