"""Mounting the SCIM service (connectors/ingest/scim) in a worker that serves the HR edge.

It needs that process's registry and lifecycle views (who a SCIM user is, whether they are
active) and its HR edge (a deprovisioning is an HR termination through the edge's
contract), so it runs where both are: ``accessguard run`` and a worker serving HTTP.
"""

from __future__ import annotations

from connectors.ingest.hr_webhook import HrWebhook
from connectors.ingest.scim.service import ScimService
from streams.bus.topics import Topics
from streams.bus.views import Views
from streams.config import Config


def scim_service(config: Config, hr: HrWebhook | None, views: Views) -> ScimService | None:
    """The SCIM service of this process, or None where the HR edge is not served."""
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
