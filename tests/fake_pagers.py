"""Pager and chat vendor state behind :class:`tests.fakes.FakeVendorServer`: PagerDuty's
incidents per dedup key, and a Slack workspace answering ``chat.postMessage``.

PagerDuty Events v2 (developer docs, "Alert and Incident deduplication"): a ``trigger`` whose
``dedup_key`` names an open incident is folded into it (no new incident, no new page); a
``resolve`` closes it, after which the same key opens a new incident. :class:`PagerDutyState`
keeps exactly that, so a test can count pages (``opened``) rather than requests.

Slack ``chat.postMessage`` (api.slack.com/methods/chat.postMessage): bearer bot token; HTTP 200
with ``{"ok": false, "error": ...}`` for ``not_authed`` (no token), ``invalid_auth``,
``channel_not_found``, ``no_text``; success answers the message's ``channel`` and ``ts``, and a
``thread_ts`` makes the post a reply. Stricter than Slack on one point, on purpose: a
``thread_ts`` that is not the ``ts`` of a top-level message posted in that channel is refused
(``thread_not_found``; Slack would post it unthreaded), so a sink that threads wrong fails.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

SLACK_BOT_TOKEN = "xoxb-0000000000-0000000000000-accessguardtest0000"
SLACK_CHANNEL = "C0ACCGRD01"


class PagerDutyState:
    """Incidents by dedup key: which triggers opened one (a page) and which were folded in."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: Dedup keys in the order their incidents opened (one entry per page).
        self.opened: list[str] = []
        #: Dedup key -> events PagerDuty folded into its open incident (updates).
        self.updates: dict[str, int] = {}
        self.open: set[str] = set()

    def event(self, action: str, key: str) -> None:
        with self._lock:
            if action == "trigger":
                if key in self.open:
                    self.updates[key] = self.updates.get(key, 0) + 1
                else:
                    self.open.add(key)
                    self.opened.append(key)
            elif action == "resolve":
                self.open.discard(key)


class SlackWorkspace:
    """One bot token and its channels; every posted message, threads included."""

    def __init__(self, token: str = SLACK_BOT_TOKEN, channels: tuple[str, ...] = (SLACK_CHANNEL,)):
        self.token = token
        self.channels = set(channels)
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        #: Posted messages: ``{"channel", "ts", "thread_ts", "text"}`` in order.
        self.messages: list[dict[str, Any]] = []

    def top_level(self, channel: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                m
                for m in self.messages
                if m["thread_ts"] is None and (channel is None or m["channel"] == channel)
            ]

    def replies(self, ts: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.messages if m["thread_ts"] == ts]

    def post(self, headers: dict[str, str], body: Any) -> tuple[int, dict[str, Any]]:
        """``POST /api/chat.postMessage``: (HTTP status, JSON answer)."""
        auth = headers.get("authorization", "")
        if not auth:
            return 200, {"ok": False, "error": "not_authed"}
        if auth != f"Bearer {self.token}":
            return 200, {"ok": False, "error": "invalid_auth"}
        if not isinstance(body, dict):
            return 200, {"ok": False, "error": "invalid_arguments"}
        channel = body.get("channel")
        if channel not in self.channels:
            return 200, {"ok": False, "error": "channel_not_found"}
        text = body.get("text")
        if not (isinstance(text, str) and text.strip()) and not body.get("blocks"):
            return 200, {"ok": False, "error": "no_text"}
        thread = body.get("thread_ts")
        with self._lock:
            if thread is not None and not any(
                m["ts"] == thread and m["channel"] == channel and m["thread_ts"] is None
                for m in self.messages
            ):
                return 200, {"ok": False, "error": "thread_not_found"}
            ts = f"1767225600.{next(self._seq):06d}"
            self.messages.append({"channel": channel, "ts": ts, "thread_ts": thread, "text": text})
        message: dict[str, Any] = {"type": "message", "text": text, "ts": ts}
        if thread is not None:
            message["thread_ts"] = thread
        return 200, {"ok": True, "channel": channel, "ts": ts, "message": message}
