"""The doors that feed the HR path beside ``POST /v1/hr/events``, built from the
configuration: today the Okta Event Hook (connectors/okta/event_hook.py), served while
``hooks.event_hook_secret`` is set. The SCIM and Shared Signals doors add their line here.

Here, not in streams/runtime, because the runtime names no vendor (tests/test_architecture.py):
it asks this module for routes and mounts them.
"""

from __future__ import annotations

from pathlib import Path

from connectors.ingest.contract import Door
from connectors.ingest.edge import AuthGuard
from connectors.okta.event_hook import OktaEventHook
from streams.bus.journal import Journal
from streams.bus.topics import Topics
from streams.bus.views import Publisher
from streams.config import Config


def lifecycle_doors(
    config: Config, publisher: Publisher, journal: Journal, topics: Topics, guard: AuthGuard
) -> list[Door]:
    """The configured doors (each has ``routes()`` and a ``contract``), in mount order."""
    doors: list[Door] = []
    secret = config["hooks.event_hook_secret"]
    if secret is not None:
        doors.append(
            OktaEventHook(
                secret=secret,
                header=config.settings.hooks.event_hook_header,
                publisher=publisher,
                journal=journal,
                hr_topic=topics.hr_events,
                auth_topic=topics.auth_events,
                identity_topic=topics.identity_events,
                partitions=int(config["topics.partitions"]),
                max_body=int(config["http.max_batch_bytes"]),
                dedup_ttl=config.settings.hr.dedup_ttl_seconds,
                guard=guard,
            )
        )
    return doors


def restore_doors(doors: list[Door], journal_path: Path, now: float) -> dict[str, int]:
    """Refill each door's dedup memory from the journal; ``{source: ids remembered}``."""
    out: dict[str, int] = {}
    for door in doors:
        out[door.contract.source] = door.contract.restore(journal_path, now)
    return out
