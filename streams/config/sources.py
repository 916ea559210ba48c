"""``sources``: how each source of events is watched (connectors/base/health.py).

The cadence the silent-source alert (AccessGuardSourceSilent) compares a source's last event
with, exported as ``accessguard_source_expected_cadence_seconds``, and the health endpoint of
a poller run on its own (``accessguard connect poller``).
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from streams.config.fields import Float, Int
from streams.config.section import Section, _doc

#: A source name as the metrics label it (connectors/base/health.py): a poller, or an ingest
#: endpoint (``auth_ingest:<vendor>``: the ``vendor`` query parameter of POST /v1/auth/events).
_SOURCE_NAME = re.compile(
    r"^(poller:[A-Za-z0-9][A-Za-z0-9_.-]{0,99}|hr_webhook|leak_ingest|auth_ingest:[a-z0-9_-]{1,40})$"
)


class SourceSettings(Section):
    """How each source of events is watched (connectors/base/health.py): the cadence the
    silent-source alert compares with, and the health endpoint of a poller run on its own."""

    poller_cadence: Float = _doc(
        "Longest normal gap between two events of a login poller, s: silent for longer "
        "raises AccessGuardSourceSilent (0 = not watched; a day covers quiet nights)",
        default=86400.0,
        ge=0,
    )
    ingest_cadence: Float = _doc(
        "The same for each HTTP ingest endpoint and leak feed, s (0 = not watched: HR events "
        "and leaks can be rare)",
        default=0.0,
        ge=0,
    )
    #: Not in the configuration table (a map): README "Source health".
    cadence: dict[str, Float] = Field(
        default_factory=dict,
        description="source (poller:<name>, hr_webhook, auth_ingest:<vendor>, leak_ingest) -> "
        "expected cadence, s, over the defaults above (0 = not watched)",
    )
    health_port: Int = _doc(
        "Port of /healthz and /metrics of `accessguard connect poller` (0 = a free port)",
        default=8081,
        ge=0,
    )
    ready_within: Float = _doc(
        "A poller is healthy only while its last good round is this recent (at least three "
        "of its intervals), s",
        default=300.0,
        ge=1,
    )
    max_failures: Int = _doc(
        "Failed rounds in a row that make a poller's /healthz fail (an auth error at once)",
        default=3,
        ge=1,
    )

    @field_validator("cadence")
    @classmethod
    def _sources(cls, value: dict[str, float]) -> dict[str, float]:
        for name, seconds in value.items():
            if not _SOURCE_NAME.fullmatch(name):
                raise ValueError(
                    f"{name[:60]!r} is not a source: poller:<name>, hr_webhook, "
                    "auth_ingest:<vendor> or leak_ingest"
                )
            if seconds < 0:
                raise ValueError(f"{name}: must be >= 0 seconds")
        return value

    def cadence_of(self, source: str, *, login_poller: bool = False) -> float:
        """The expected cadence of ``source``, s (0: not watched)."""
        if source in self.cadence:
            return float(self.cadence[source])
        return self.poller_cadence if login_poller else self.ingest_cadence
