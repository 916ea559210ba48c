"""Slack app alert sink: ``chat.postMessage`` with a bot token, so an incident threads.

An incoming webhook (:mod:`connectors.sinks.slack`) answers ``ok`` and nothing else; the Web
API answers the posted message's ``ts``, and a message posted with ``thread_ts`` set to it is a
reply in that thread. The incident router (streams/runtime/incidents.py) keeps the ``ts`` of an
incident's first message per sink (returned here as ``thread``) and hands it back on the
incident's later alerts (:attr:`~streams.model.records.Alert.thread`): one thread per incident.

Slack answers most errors with HTTP 200 and ``{"ok": false, "error": ...}``: an authentication
error (``invalid_auth``, ``not_authed``, ``token_revoked``, ``account_inactive``) is an
:class:`AuthError`, Slack's own trouble (``internal_error``, ``fatal_error``,
``service_unavailable``, ``request_timeout``) is retryable, anything else (a channel the bot
is not in, a thread that does not exist) is permanent. 429 carries ``Retry-After`` (the HTTP
policy honours it). Not idempotent, like the webhook: a retried post can show twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from connectors.base.provider import Request
from connectors.base.sink import SinkBase
from connectors.sinks.slack import message
from streams.model.records import Alert
from streams.support.errors import AuthError, PermanentError, RetryableError

AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "token_revoked", "account_inactive"})
RETRYABLE_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


class SlackAppSink(SinkBase):
    """Posts alerts with ``POST /api/chat.postMessage`` (bot token, ``chat:write``), threading
    an incident's later alerts under its first message.

    Settings: ``url`` (default https://slack.com), ``token`` (the bot token, a Secret),
    ``channel`` (the channel id the bot was invited to), ``dry_run``.
    """

    type: ClassVar[str] = "slack_app"

    url_setting: ClassVar[str | None] = "url"
    default_url: ClassVar[str | None] = "https://slack.com"
    credential_setting: ClassVar[str | None] = "token"

    def _configure(self, settings: Mapping[str, Any]) -> None:
        self.channel = str(settings.get("channel") or "")

    def body(self, alert: Alert) -> dict[str, Any]:
        """The ``chat.postMessage`` body: the channel, the message, and ``thread_ts`` when the
        alert continues an incident's thread."""
        out: dict[str, Any] = {"channel": self.channel, **message(alert)}
        if alert.thread:
            out["thread_ts"] = alert.thread
        return out

    def prepare(self, alert: Alert) -> Request:
        return Request(
            "POST",
            "/api/chat.postMessage",
            json=self.body(alert),
            headers={"Content-Type": "application/json; charset=utf-8"},
            ok=(200,),
            extra={"channel": self.channel, "threaded": bool(alert.thread)},
            check_shape=False,
        )

    def deliver(self, request: Request, alert: Alert) -> dict[str, Any]:
        response = self.send_request(request)
        try:
            answer = response.json()
        except ValueError:
            raise RetryableError(self.label, "chat.postMessage answered no JSON") from None
        if not isinstance(answer, dict):
            raise RetryableError(self.label, "chat.postMessage answered no JSON object")
        if not answer.get("ok"):
            error = str(answer.get("error") or "unknown_error")[:100]
            text = f"chat.postMessage: {error}"
            if error in AUTH_ERRORS:
                raise AuthError(self.label, text, status=response.status_code)
            if error in RETRYABLE_ERRORS:
                raise RetryableError(self.label, text)
            raise PermanentError(self.label, text, status=response.status_code)
        out = self.result(request, response)
        ts = answer.get("ts")
        # a reply's ts is not a thread: later alerts keep replying to the first message
        out["thread"] = alert.thread or (ts if isinstance(ts, str) else None)
        return out
