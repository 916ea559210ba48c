"""PagerDuty Events API v2 alert sink."""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from connectors.base.provider import Request
from connectors.base.sink import SinkBase
from streams.model.records import Alert
from streams.support.errors import PermanentError

MAX_DEDUP_KEY = 255
MAX_SUMMARY = 1024
#: accessguard severities -> the four PagerDuty knows.
SEVERITY_MAP: dict[str, str] = {
    "critical": "critical",
    "high": "error",
    "medium": "warning",
    "low": "info",
    "info": "info",
}
EVENT_ACTIONS = frozenset({"trigger", "resolve", "acknowledge"})


def pd_dedup_key(key: str) -> str:
    """``key`` if it fits in 255 characters, else a readable prefix plus its SHA-256.

    Truncating alone would merge distinct alerts that share a long prefix into one incident.
    """
    if len(key) <= MAX_DEDUP_KEY:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{key[: MAX_DEDUP_KEY - len(digest) - 1]}~{digest}"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


class PagerDutySink(SinkBase):
    """Sends alerts to PagerDuty Events v2 (``POST /v2/enqueue``, 202 expected).

    Idempotent by ``dedup_key``: PagerDuty folds a repeated trigger into the open incident.
    After a resolve the same key opens a new incident (docs/operations-notes.md).

    Settings: ``url`` (default https://events.pagerduty.com), ``routing_key`` (integration
    key, a Secret), ``dry_run``.
    """

    type: ClassVar[str] = "pagerduty"

    url_setting: ClassVar[str | None] = "url"
    default_url: ClassVar[str | None] = "https://events.pagerduty.com"
    credential_setting: ClassVar[str | None] = "routing_key"

    @property
    def url(self) -> str:
        return self.base_url

    def auth_headers(self) -> dict[str, str]:
        # The routing key travels in the body (see prepare), not in a header.
        return {"Accept": "application/json"}

    def event(self, alert: Alert, routing_key: str) -> dict[str, Any]:
        """The Events v2 body for ``alert``."""
        if alert.event_action not in EVENT_ACTIONS:
            raise PermanentError(
                self.label,
                f"event_action {alert.event_action!r} is not trigger|resolve|acknowledge",
            )
        body: dict[str, Any] = {
            "routing_key": routing_key,
            "event_action": alert.event_action,
            "dedup_key": pd_dedup_key(alert.dedup_key),
        }
        if alert.event_action == "trigger":
            details: dict[str, Any] = dict(alert.details)
            if alert.identity is not None:
                details.setdefault("identity", alert.identity)
            body["payload"] = {
                "summary": _truncate(alert.title, MAX_SUMMARY),
                "source": "accessguard",
                # An unknown severity pages loudly rather than quietly.
                "severity": SEVERITY_MAP.get(alert.severity, "error"),
                "component": alert.rule,
                "custom_details": details,
            }
            if alert.runbook:
                body["links"] = [{"href": alert.runbook, "text": "Runbook"}]
        return body

    def prepare(self, alert: Alert) -> Request:
        """``POST /v2/enqueue`` with the event (a dry run builds it with a placeholder key)."""
        return Request(
            "POST",
            "/v2/enqueue",
            json=self.event(alert, self.credential(dry_run_placeholder="<dry-run>")),
            ok=(200, 201, 202),
            extra={"dedup_key": pd_dedup_key(alert.dedup_key)},
            check_shape=False,
        )
