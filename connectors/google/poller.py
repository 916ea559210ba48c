"""Google Workspace Admin SDK Reports poller (``activities.list``) -> LoginEvents and
IdentityEvents, for the applications ``login``, ``admin`` and ``token``.

``GET /admin/reports/v1/activity/users/all/applications/<app>?startTime=&endTime=
&maxResults=&pageToken=`` lists one application's activities in a time window, newest first,
``nextPageToken`` to page. Reports data is not written when it happens: Google documents a lag
of minutes for ``login`` and up to hours for some applications, so an activity can appear in
a window that was already read. Hence:

1. Each fetch reads ONE page of ONE application; applications take turns (``turn``).
2. A window of an application runs from ``since - lookback`` (``lookback``, default one hour:
   the overlap that catches late activities) to the poller's clock when the window opens; its
   ``startTime``, ``endTime`` and the ``pageToken`` travel in the cursor while it pages.
3. When the last page of a window is read, ``since`` moves to the window's end, and ``seen``
   keeps the keys (``id.time/uniqueQualifier``) of every activity newer than the next window's
   start: activities read again in the overlap are dropped (dedup by event id), so each is
   published once, late ones included (if they arrive within ``lookback``).

Rate limits: Google answers 403 with reason ``userRateLimitExceeded``/``quotaExceeded`` (or
429), without ``Retry-After``: a RateLimitedError, waited out with the HTTP policy's backoff.
A refused ``pageToken`` (400) starts that window again (its published activities are in
``page_seen``, so nothing is published twice).

Settings (``pollers.<name>``, type ``google_reports``): ``base_url``
(https://admin.googleapis.com), a delegated service account (``service_account``,
``subject``: an admin with the Reports privilege, ``scopes``: default the audit read-only
scope) or a ``token``; ``applications`` ([login, admin, token]); ``lookback`` (3600 s);
``max_results`` (1000); plus the base's ``interval``, ``start``, ``max_failure_backoff``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from connectors.base.credentials import Credential
from connectors.base.http import setting_url
from connectors.base.normalise import parse_timestamp
from connectors.base.pollers import Cursor, Page, Poller, iso_millis, setting_float, setting_int
from connectors.google.credentials import google_credential
from connectors.google.provider import classify_google_error
from connectors.google.security import APPLICATIONS
from streams.support.errors import ConfigError, PermanentError, RetryableError, ValidationError

DEFAULT_BASE_URL = "https://admin.googleapis.com"
ACTIVITIES_PATH = "/admin/reports/v1/activity/users/all/applications/{app}"
REPORTS_SCOPE = "https://www.googleapis.com/auth/admin.reports.audit.readonly"
MAX_RESULTS = 1000
DEFAULT_LOOKBACK = 3600.0
#: Keys kept for the overlap dedup (a busy tenant's hour of admin and token activity fits).
MAX_SEEN = 50_000


def activity_key(activity: Any) -> tuple[str, datetime] | None:
    """``(id.time/uniqueQualifier, id.time)`` of an activity, or None when it has no usable id."""
    ident = activity.get("id") if isinstance(activity, dict) else None
    if not isinstance(ident, dict):
        return None
    qualifier, raw_time = ident.get("uniqueQualifier"), ident.get("time")
    if qualifier is None or not isinstance(raw_time, str):
        return None
    try:
        when = parse_timestamp(raw_time, "id.time")
    except ValidationError:
        return None
    return f"{raw_time}/{qualifier}", when


class GoogleReportsPoller(Poller):
    """Reads Reports activities in overlapping windows. See the module docstring."""

    vendor = "google"

    def _configure(self, settings: Mapping[str, Any]) -> None:
        prefix = self.config_prefix
        self.base_url = setting_url(settings, "base_url", f"{prefix}.base_url", DEFAULT_BASE_URL)
        credentials = google_credential(settings, prefix, self.label, required=True)
        assert credentials is not None
        self.credentials: Credential = credentials
        apps = settings.get("applications") or list(APPLICATIONS)
        if not isinstance(apps, list) or not apps or any(a not in APPLICATIONS for a in apps):
            raise ConfigError(f"{prefix}.applications", f"a list of {', '.join(APPLICATIONS)}")
        self.applications: list[str] = [str(a) for a in apps]
        self.lookback = setting_float(
            settings, "lookback", f"{prefix}.lookback", DEFAULT_LOOKBACK, minimum=0.0
        )
        self.max_results = setting_int(
            settings, "max_results", f"{prefix}.max_results", MAX_RESULTS, low=1, high=MAX_RESULTS
        )

    def fetch(self, cursor: Cursor) -> Page:
        state: dict[str, Any] = dict(cursor) if cursor else {}
        apps_state: dict[str, Any] = dict(state.get("apps") or {})
        turn = int(state.get("turn") or 0) % len(self.applications)
        page_state = state.get("page") if isinstance(state.get("page"), dict) else None
        if page_state is not None and page_state.get("app") in self.applications:
            app = str(page_state["app"])
            start, end = str(page_state["start"]), str(page_state["end"])
            token = page_state.get("token")
            page_seen = {str(k) for k in page_state.get("seen") or []}
        else:
            app = self.applications[turn]
            since_raw = (apps_state.get(app) or {}).get("since")
            since = parse_timestamp(since_raw, "since") if since_raw else self.start
            now = datetime.fromtimestamp(self._clock(), since.tzinfo)
            # the first window begins at `start`; later ones reach `lookback` back (late data)
            overlap = timedelta(seconds=self.lookback if since_raw else 0.0)
            start = iso_millis(since - overlap)
            end = iso_millis(max(now, since))
            token, page_seen = None, set()
        seen: dict[str, str] = dict((apps_state.get(app) or {}).get("seen") or {})

        params = {"startTime": start, "endTime": end, "maxResults": str(self.max_results)}
        if isinstance(token, str):
            params["pageToken"] = token
        headers = {**self.credentials.headers(), "Accept": "application/json"}
        url = self.base_url + ACTIVITIES_PATH.format(app=app)
        try:
            response = self.http.request(
                self.label, "GET", url, headers=headers, params=params,
                classify=classify_google_error,
            )  # fmt: skip
        except PermanentError as exc:
            if token is None or getattr(exc, "status", None) != 400:
                raise
            # the page token expired: read the window again; page_seen keeps what was published
            retry = {**state, "page": {"app": app, "start": start, "end": end, "token": None,
                                       "seen": sorted(page_seen)}}  # fmt: skip
            return Page([], retry, caught_up=False)
        try:
            body = response.json()
        except ValueError:
            raise RetryableError(self.label, "response is not JSON") from None
        if not isinstance(body, dict):
            raise PermanentError(self.label, "expected an activities object")
        items = body.get("items", [])
        if not isinstance(items, list):
            raise PermanentError(self.label, "expected an `items` array")

        records: list[Any] = []
        for activity in items:
            found = activity_key(activity)
            if found is None:
                records.append(activity)  # the normaliser says why
                continue
            key, when = found
            if key in seen or key in page_seen:
                continue  # read in an earlier overlapping window or page
            page_seen.add(key)
            seen[key] = iso_millis(when)
            records.append(activity)

        next_token = body.get("nextPageToken")
        new_apps = {**apps_state, app: {**(apps_state.get(app) or {}), "seen": seen}}
        if isinstance(next_token, str) and next_token:
            page = {"app": app, "start": start, "end": end, "token": next_token,
                    "seen": sorted(page_seen)}  # fmt: skip
            return Page(records, {"apps": new_apps, "turn": turn, "page": page}, caught_up=False)
        # The window is complete: the next one starts `lookback` before its end, so keep the
        # keys of everything newer than that (the overlap), oldest dropped beyond MAX_SEEN.
        horizon = iso_millis(parse_timestamp(end, "end") - timedelta(seconds=self.lookback))
        kept = sorted(((t, k) for k, t in seen.items() if t >= horizon), reverse=True)
        new_apps[app] = {"since": end, "seen": {k: t for t, k in kept[:MAX_SEEN]}}
        next_turn = (turn + 1) % len(self.applications)
        summary = {"application": app, "window_end": end}
        return Page(
            records, {"apps": new_apps, "turn": next_turn}, caught_up=next_turn == 0,
            summary=summary,
        )  # fmt: skip
