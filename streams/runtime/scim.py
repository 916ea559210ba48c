"""Mounting the SCIM service (connectors/ingest/scim) in a worker.

It needs that process's registry and lifecycle views (who a SCIM user is, whether they are
active) and an HR edge (a deprovisioning is an HR termination through the edge's contract:
journal, broker ack, dedup by event id), so it runs where the views are: ``accessguard
run``, beside its HR webhook, and ``accessguard worker`` with ``worker.doors: [scim]`` (the
Kubernetes way), beside an HR edge of its own that takes only SCIM's events. Not in
``accessguard connect hr-webhook``: SCIM writes identity facts to the registry topic, which
only the registry importer and the worker may write (streams/bus/access.py).
"""

from __future__ import annotations

from connectors.ingest.hr_webhook import HrWebhook
from connectors.ingest.scim.service import ScimService
from streams.bus.journal import Journal
from streams.bus.topics import Topics
from streams.bus.views import Publisher, Views
from streams.config import Config
from streams.runtime.parts import auth_guard


def scim_edge(config: Config, publisher: Publisher, journal: Journal) -> HrWebhook:
    """The HR edge of a worker serving SCIM but not ``/v1/hr/events``: no signing secret and
    no other doors (nothing routes to it but :meth:`HrWebhook.admit`), the same contract."""
    return HrWebhook(
        secret=None,
        tolerance=config.settings.hr.tolerance_seconds,
        dedup_ttl=config.settings.hr.dedup_ttl_seconds,
        max_body=config.settings.http.max_body_bytes,
        publisher=publisher,
        journal=journal,
        topic=Topics.from_config(config).hr_events,
        guard=auth_guard(config),
    )


def scim_service(config: Config, hr: HrWebhook | None, views: Views) -> ScimService | None:
    """The SCIM service of this process over the HR edge ``hr``, or None without one."""
    if hr is None:
        return None
    return ScimService(
        token=config["scim.token"],
        hr=hr,
        views=views,
        registry_topic=Topics.from_config(config).registry,
        max_body=config.settings.http.max_body_bytes,
        guard=hr.guard,
    )
