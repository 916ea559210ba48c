"""Okta System Log poller (``GET /api/v1/logs``) -> LoginEvents.

Okta's documented way to tail the log is a *polling request*: ``since`` without ``until``,
ascending order, then follow the ``Link: <...>; rel="next"`` header for ever. Each answer
carries a next link (with Okta's opaque ``after`` cursor); when nothing new has been
written the page is empty and the next link can be polled again later. So the cursor is the
next link itself, kept exactly as Okta sent it:

* ``None``                 -> first request: ``since=<start>&limit=&sortOrder=ASCENDING&filter=``
* ``{"next": url}``        -> GET that URL as is (after checking where it points)
* ``{"since": published}`` -> only if Okta ever answers without a next link: start again from
  the last event's ``published`` (the boundary event may come twice; consumers dedupe)

A page shorter than ``limit`` means we are caught up: wait ``interval``.

Next links are followed only when they point at ``base_url``'s scheme, host and port and at
``/api/v1/logs``: a link elsewhere (a tampered response or checkpoint) would send the
``SSWS`` token to a stranger, so it is refused (PermanentError; the poller marks itself failed
and does not advance).

Rate limits: every answer carries ``X-Rate-Limit-Limit``, ``-Remaining`` and ``-Reset``
(epoch seconds). When ``Remaining`` falls to ``rate_limit_reserve`` or below, the poller
pauses until ``Reset``, leaving the rest of the budget to other clients of the same org.
A 429 without ``Retry-After`` is retried after ``Reset`` as well.

Settings (``pollers.<name>``): ``base_url`` (https://<org>.okta.com, required), one
credential: an OAuth service app (``client_id``, ``private_key``, ``key_id``, ``scopes``,
default ``okta.logs.read``; connectors/okta/credentials.py) or ``token`` (API token, a
Secret, sent as ``Authorization: SSWS <token>``), ``interval`` (10 s),
``limit`` (1000, Okta's maximum for this endpoint), ``start`` ("now" or an ISO time),
``filter`` (Okta filter expression, default :data:`DEFAULT_FILTER`; "" for every event),
``rate_limit_reserve`` (5), plus the base's ``max_failure_backoff``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests

from connectors.base.credentials import Credential
from connectors.base.http import setting_str, setting_url
from connectors.base.pollers import Cursor, Page, Poller, iso_millis, setting_int
from connectors.okta.credentials import POLLER_SCOPES, okta_credential
from connectors.okta.security import SECURITY_TYPES
from streams.support.errors import PermanentError, ProviderError, RetryableError

LOGS_PATH = "/api/v1/logs"
#: The event types :mod:`connectors.okta.normaliser` turns into LoginEvents and those
#: :mod:`connectors.okta.security` turns into IdentityEvents (every other type would only be
#: dropped there: asking Okta for it costs rate limit for nothing). Okta filter expressions
#: support ``eq`` and ``sw`` (starts with) on ``eventType``, joined with ``or``.
DEFAULT_FILTER = " or ".join(
    [
        'eventType eq "user.session.start"',
        'eventType sw "user.authentication."',
        'eventType sw "user.mfa."',
        'eventType eq "system.push.send_factor_verify_push"',
        'eventType eq "user.account.lock"',
        *(
            f'eventType eq "{event_type}"'
            for event_type in SECURITY_TYPES
            if not event_type.startswith("user.mfa.") and event_type != "user.session.start"
        ),
    ]
)
MAX_LIMIT = 1000


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port


class OktaLogPoller(Poller):
    """Tails the Okta System Log. See the module docstring for cursor and rate limits."""

    vendor = "okta"

    def _configure(self, settings: Mapping[str, Any]) -> None:
        prefix = self.config_prefix
        self.base_url = setting_url(settings, "base_url", f"{prefix}.base_url")
        credentials = okta_credential(
            settings,
            prefix,
            self.label,
            base_url=self.base_url,
            default_scopes=POLLER_SCOPES,
            required=True,
        )
        assert credentials is not None
        self.credentials: Credential = credentials
        self.limit = setting_int(
            settings, "limit", f"{prefix}.limit", MAX_LIMIT, low=1, high=MAX_LIMIT
        )
        self.filter = setting_str(settings, "filter", f"{prefix}.filter", DEFAULT_FILTER).strip()
        self.rate_limit_reserve = setting_int(
            settings, "rate_limit_reserve", f"{prefix}.rate_limit_reserve", 5, low=0, high=10_000
        )
        self.logs_url = self.base_url + LOGS_PATH
        self._origin = _origin(self.base_url)

    # --- the one request --------------------------------------------------------------

    def fetch(self, cursor: Cursor) -> Page:
        url, params = self._request_for(cursor)
        response = self.http.request(
            self.label,
            "GET",
            url,
            headers={**self.credentials.headers(), "Accept": "application/json"},
            params=params,
            classify=self._classify,
        )
        try:
            body = response.json()
        except ValueError:
            # A proxy or a cut connection, not Okta's answer: try again later.
            raise RetryableError(self.label, "response is not JSON") from None
        if not isinstance(body, list):
            raise PermanentError(self.label, "expected a JSON array of log events")

        next_url = response.links.get("next", {}).get("url")
        if next_url:
            self._check_link(next_url)
            next_cursor: Cursor = {"next": next_url}
            caught_up = len(body) < self.limit
        else:
            # Not a polling answer after all; resume from the last event's time.
            last = body[-1] if body else None
            published = last.get("published") if isinstance(last, dict) else None
            next_cursor = {"since": published} if isinstance(published, str) else cursor
            caught_up = True
        return Page(
            records=body,
            next_cursor=next_cursor,
            caught_up=caught_up,
            rate_limit_sleep=self._rate_limit_sleep(response),
        )

    # --- helpers ----------------------------------------------------------------------

    def _request_for(self, cursor: Cursor) -> tuple[str, dict[str, str] | None]:
        if cursor is not None and isinstance(cursor.get("next"), str):
            url: str = cursor["next"]
            self._check_link(url)  # a checkpoint is a file on disk; trust it no more than Okta
            return url, None
        since = cursor.get("since") if cursor is not None else None
        params = {
            "since": since if isinstance(since, str) else iso_millis(self.start),
            "limit": str(self.limit),
            "sortOrder": "ASCENDING",
        }
        if self.filter:
            params["filter"] = self.filter
        return self.logs_url, params

    def _check_link(self, url: str) -> None:
        parts = urlsplit(url)
        if _origin(url) != self._origin or parts.path.rstrip("/") != urlsplit(self.logs_url).path:
            raise PermanentError(
                self.label,
                "next link points outside base_url's /api/v1/logs; refusing to follow it "
                "(check base_url, or delete the checkpoint if it was edited)",
            )

    def _reset_in(self, response: requests.Response) -> float | None:
        try:
            reset = float(response.headers.get("X-Rate-Limit-Reset", ""))
        except ValueError:
            return None
        return min(max(0.0, reset - self._clock()), self.http.policy.max_retry_after)

    def _rate_limit_sleep(self, response: requests.Response) -> float | None:
        try:
            remaining = int(response.headers.get("X-Rate-Limit-Remaining", ""))
        except ValueError:
            return None
        if remaining > self.rate_limit_reserve:
            return None
        return self._reset_in(response)

    def _classify(self, provider: str, response: requests.Response) -> ProviderError | None:
        """Okta's 429 says when the window resets in ``X-Rate-Limit-Reset``, not Retry-After."""
        if response.status_code != 429 or response.headers.get("Retry-After"):
            return None
        wait = self._reset_in(response)
        if wait is None:
            return None
        return RetryableError(
            provider,
            "HTTP 429 rate limited (until X-Rate-Limit-Reset)",
            status=429,
            retry_after=wait,
        )
