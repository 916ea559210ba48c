"""Slack incoming-webhook alert sink."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from connectors.base.http import validate_url
from connectors.base.provider import Request
from connectors.base.sink import SinkBase
from streams.model.records import Alert
from streams.support.errors import ConfigError, PermanentError

SEVERITY_EMOJI: dict[str, str] = {
    "critical": ":rotating_light:",
    "high": ":red_circle:",
    "medium": ":large_orange_circle:",
    "low": ":large_yellow_circle:",
    "info": ":information_source:",
}
#: Slack's block limits: header text 150 chars, section text 3000.
MAX_HEADER = 150
MAX_SECTION = 3000


def _escape(text: str) -> str:
    """Escape Slack mrkdwn control characters so a title cannot inject links or mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def message(alert: Alert) -> dict[str, Any]:
    """The Slack body for ``alert``: fallback ``text`` plus Block Kit ``blocks`` (one shape for
    the webhook and the app sink)."""
    resolved = alert.event_action == "resolve"
    prefix = "RESOLVED" if resolved else alert.severity.upper()
    emoji = ":white_check_mark:" if resolved else SEVERITY_EMOJI.get(alert.severity, ":warning:")
    text = f"{emoji} [{prefix}] {_escape(alert.title)}"
    fields = [
        {"type": "mrkdwn", "text": f"*Severity*\n{_escape(alert.severity)}"},
        {"type": "mrkdwn", "text": f"*Rule*\n{_escape(alert.rule)}"},
        {"type": "mrkdwn", "text": f"*Identity*\n{_escape(alert.identity or '-')}"},
    ]
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _truncate(f"[{prefix}] {alert.title}", MAX_HEADER),
            },
        },
        {"type": "section", "fields": fields},
    ]
    details = {k: v for k, v in alert.details.items() if k != "incident"}
    if details:
        lines = "\n".join(
            f"*{_escape(str(k))}*: {_escape(_value_text(v))}" for k, v in details.items()
        )
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _truncate(lines, MAX_SECTION)},
            }
        )
    if alert.runbook:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"<{_escape(alert.runbook)}|Runbook>"},
            }
        )
    context = [{"type": "mrkdwn", "text": f"dedup `{_escape(alert.dedup_key[:200])}`"}]
    incident = alert.details.get("incident")
    if isinstance(incident, dict):
        # the incident in one line; the whole timeline is in the thread (and at the pager)
        context.append({"type": "mrkdwn", "text": _truncate(_incident_line(incident), 3000)})
    blocks.append({"type": "context", "elements": context})
    return {"text": text, "blocks": blocks}


def _incident_line(incident: dict[str, Any]) -> str:
    rules = ", ".join(str(r) for r in incident.get("rules") or ())
    return _escape(
        f"incident {incident.get('id')}: alert {incident.get('alerts')}, "
        f"first seen {incident.get('first_seen')}, rules {rules}"
    )


class SlackSink(SinkBase):
    """Posts alerts to a Slack incoming webhook (about 1 message/s per channel).

    Not idempotent: Slack has no dedup key, so a retried post can show twice. Retries are
    therefore limited to what the HTTP policy deems retryable (429 with Retry-After, 5xx,
    network errors); Slack's plain-text 4xx errors are permanent.

    Settings: ``webhook_url`` (a Secret: the URL itself grants posting), ``dry_run``.
    """

    type: ClassVar[str] = "slack"

    url_setting: ClassVar[str | None] = None
    credential_setting: ClassVar[str | None] = "webhook_url"

    def _configure(self, settings: Mapping[str, Any]) -> None:
        self._url_key = f"{self.config_prefix}.webhook_url"
        # Inline URLs are checked now; env:/file: ones at use, since they may rotate.
        if self._credential is not None and self._credential.reference == "<inline>":
            validate_url(self._credential.reveal(), self._url_key)

    def message(self, alert: Alert) -> dict[str, Any]:
        """The webhook body for ``alert`` (:func:`message`). An incoming webhook answers
        ``ok`` and no message id, so it cannot thread: an incident's later alerts show as
        messages of their own, titled as updates (the ``slack_app`` sink threads them)."""
        return message(alert)

    def prepare(self, alert: Alert) -> Request:
        """``POST`` of :meth:`message` to the webhook (the URL is the credential)."""
        return Request(
            "POST",
            "{webhook_url}",
            json=self.message(alert),
            headers={"Content-Type": "application/json"},
            check_shape=False,
        )

    def deliver(self, request: Request, alert: Alert) -> dict[str, Any]:
        url = self.credential()
        try:
            validate_url(url, self._url_key)
        except ConfigError as exc:
            raise PermanentError(self.label, str(exc)) from None
        response = self.http.request(
            self.label, request.method, url, headers=dict(request.headers), json=request.json
        )
        return self.result(request, response)
