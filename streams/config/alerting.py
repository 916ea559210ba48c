"""Where alerts go: ``alerts.routes.<severity>`` for alerts no rule raised (offboarding
summaries, provider outages, batches), ``alerts.intents.<intent>`` for rule alerts, and
``alerts.incidents`` for how rule alerts about one subject become one incident.

A rule alert's *intent* comes from the rule, not its severity (issue 18): a ``staged`` rule's
alert goes to ``review`` only and never pages; a stable rule whose response says ``page``
pages; ``notify`` (or no notification asked for) goes to chat. Severity stays information on
the alert. :mod:`streams.runtime.incidents` applies these settings.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from streams.config.fields import Float, Int, Names
from streams.config.section import Section, _doc

#: The default routes. These are sink *names* (the names examples/config.yaml gives its two
#: sinks under alerts.sinks), not connector types: a configuration that names its sinks
#: otherwise sets alerts.routes.* and alerts.intents.* too (load_config refuses a route to a
#: missing sink).
DEFAULT_ROUTE_SINKS: dict[str, tuple[str, ...]] = {
    "critical": ("pagerduty", "slack"),
    "high": ("pagerduty", "slack"),
    "medium": ("slack",),
    "low": ("slack",),
    "info": ("slack",),
    # rule alerts, by intent
    "page": ("pagerduty", "slack"),
    "notify": ("slack",),
    "review": ("slack",),
}

#: The intents a rule alert can have (:func:`streams.runtime.incidents.intent_of`).
INTENTS: tuple[str, ...] = ("page", "notify", "review")


def _route(key: str, text: str) -> Any:
    return Field(description=text, default_factory=lambda: list(DEFAULT_ROUTE_SINKS[key]))


class RouteSettings(Section):
    critical: Names = _route("critical", "Sinks for critical alerts that no rule raised")
    high: Names = _route("high", "Sinks for high alerts that no rule raised (provider outages)")
    medium: Names = _route("medium", "Sinks for medium alerts that no rule raised")
    low: Names = _route("low", "Sinks for low alerts that no rule raised")
    info: Names = _route("info", "Sinks for info alerts (offboarding summaries)")


class IntentSettings(Section):
    page: Names = _route(
        "page", "Sinks for alerts of stable rules whose response says `page` (the pager)"
    )
    notify: Names = _route(
        "notify", "Sinks for alerts of stable rules that do not page (`notify`): chat, no pager"
    )
    review: Names = _route(
        "review",
        "Sinks for alerts of staged rules (on trial): a review channel, never a pager",
    )


class IncidentSettings(Section):
    window: Float = _doc(
        "Rule alerts about one identity (or group key) within this long of the incident's last "
        "alert join that incident: one page, later alerts update it, s",
        default=3600.0,
        ge=0.05,
    )
    timeline: Int = _doc(
        "Alerts an incident lists in its timeline (the most recent; older ones are counted)",
        default=50,
        ge=1,
    )
