"""PagerDuty Events API v2 alert sink."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, ClassVar

from connectors.base.http import HttpClient, reveal, setting_bool, setting_secret, setting_url
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


class PagerDutySink:
    """Sends alerts to PagerDuty Events v2 (``POST /v2/enqueue``, 202 expected).

    Idempotent by ``dedup_key``: PagerDuty folds a repeated trigger into the open incident.
    After a resolve the same key opens a new incident (field notes).

    Settings: ``url`` (default https://events.pagerduty.com), ``routing_key`` (integration
    key, a Secret), ``dry_run``.
    """

    type: ClassVar[str] = "pagerduty"

    def __init__(self, name: str, settings: Mapping[str, Any], http: HttpClient) -> None:
        self.name = name
        prefix = f"sinks.{name}"
        self.dry_run = setting_bool(settings, "dry_run", f"{prefix}.dry_run")
        self.url = setting_url(
            settings, "url", f"{prefix}.url", default="https://events.pagerduty.com"
        )
        self._routing_key = setting_secret(
            settings, "routing_key", f"{prefix}.routing_key", required=not self.dry_run
        )
        self._http = http
        self._label = f"pagerduty:{name}"

    def event(self, alert: Alert, routing_key: str) -> dict[str, Any]:
        """The Events v2 body for ``alert``."""
        if alert.event_action not in EVENT_ACTIONS:
            raise PermanentError(
                self._label,
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

    def send(self, alert: Alert) -> dict[str, Any]:
        """Make ONE attempt to enqueue ``alert``; the caller owns retries."""
        request = "POST /v2/enqueue"
        dedup_key = pd_dedup_key(alert.dedup_key)
        if self.dry_run:
            self.event(alert, "<dry-run>")
            return {"dry_run": True, "request": request, "dedup_key": dedup_key}
        body = self.event(alert, reveal(self._routing_key, self._label))
        response = self._http.request(
            self._label,
            "POST",
            f"{self.url}/v2/enqueue",
            headers={"Accept": "application/json"},
            json=body,
            ok=(200, 201, 202),
        )
        return {"status": response.status_code, "request": request, "dedup_key": dedup_key}
