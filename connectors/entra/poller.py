"""Microsoft Graph sign-in log poller (``GET /v1.0/auditLogs/signIns``) -> LoginEvents, and
the directory-audit poller (``GET /v1.0/auditLogs/directoryAudits``, type ``graph_audit``,
:class:`GraphDirectoryAuditPoller`) -> IdentityEvents, read the same way on
``activityDateTime``.

What Graph offers for this list: ``$filter`` on ``createdDateTime`` (``eq``, ``le``, ``ge``),
``$top`` (page size, at most 1000) and ``$skiptoken`` inside ``@odata.nextLink``. It does
**not** document ``$orderby``: results come newest first. So the poller reads in *windows*:

1. a window starts at ``since`` with ``$filter=createdDateTime ge <since>&$top=<top>``;
2. it follows ``@odata.nextLink`` page by page (cursor ``{"next_link": ...}``), publishing
   each page and checkpointing after it; the newest second seen so far and the ids of the
   records in that second travel along in the cursor (``window_max``, ``window_ids``);
3. the last page (no next link) closes the window: the next ``since`` is that newest second
   and ``seen`` holds the ids already published in it.

Because the filter is ``ge`` on a whole second, the next window reads that second again;
records whose ``id`` is in ``seen`` are dropped there (boundary dedupe), so a record is
published once and nothing in the boundary second is lost. Order inside a window does not
matter, which is why newest-first paging is safe.

A next link is followed only when it points at ``base_url``'s origin and the signIns path
(it carries the bearer token). If Graph refuses a next link with a 4xx other than 401/403
(an expired ``$skiptoken`` after a long outage), the window starts again from ``since``:
pages already published come again (at-least-once; consumers dedupe on ``event_id``).

Not covered: Entra writes some sign-ins minutes late with an older ``createdDateTime``; a
record that appears after the window that should have held it has closed is not read.

Settings (``pollers.<name>``): ``base_url`` (https://graph.microsoft.com), one credential:
the app registration (``tenant_id``, ``client_id``, ``client_secret`` or
``client_certificate`` + ``client_certificate_thumbprint``; connectors/entra/credentials.py)
with AuditLog.Read.All, or ``token`` (an access token, a Secret: inline, ``env:`` or
``file:`` re-read at each call), sent as ``Authorization: Bearer``; ``interval`` (10 s),
``top`` (500), ``start`` ("now" or an ISO time), plus the base's ``max_failure_backoff``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

from connectors.base.credentials import Credential
from connectors.base.http import setting_url
from connectors.base.normalise import parse_timestamp
from connectors.base.pollers import Cursor, Page, Poller, setting_int
from connectors.entra.credentials import graph_credential
from streams.support.errors import AuthError, PermanentError, RetryableError, ValidationError

SIGNINS_PATH = "/v1.0/auditLogs/signIns"
AUDITS_PATH = "/v1.0/auditLogs/directoryAudits"
DEFAULT_BASE_URL = "https://graph.microsoft.com"
MAX_TOP = 1000


def _second(when: datetime) -> str:
    """A whole UTC second as Graph's filter wants it (no quotes, ``Z``)."""
    return when.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _created(record: Any, field: str = "createdDateTime") -> datetime | None:
    if not isinstance(record, dict):
        return None
    try:
        return parse_timestamp(record.get(field), field)
    except ValidationError:
        return None


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    return (
        parts.scheme,
        (parts.hostname or "").lower(),
        parts.port or (443 if parts.scheme == "https" else 80),
    )


class GraphSignInPoller(Poller):
    """Reads Entra sign-ins in windows. See the module docstring for the cursor."""

    vendor = "entra"
    #: The Graph list this poller reads and the record time its ``$filter`` and windows use.
    path: ClassVar[str] = SIGNINS_PATH
    time_field: ClassVar[str] = "createdDateTime"

    def _configure(self, settings: Mapping[str, Any]) -> None:
        prefix = self.config_prefix
        self.base_url = setting_url(settings, "base_url", f"{prefix}.base_url", DEFAULT_BASE_URL)
        credentials = graph_credential(settings, prefix, self.label, required=True)
        assert credentials is not None
        self.credentials: Credential = credentials
        self.top = setting_int(settings, "top", f"{prefix}.top", 500, low=1, high=MAX_TOP)
        self.signins_url = self.base_url + self.path

    def fetch(self, cursor: Cursor) -> Page:
        state: dict[str, Any] = dict(cursor) if cursor else {}
        since = state.get("since")
        if not isinstance(since, str):
            since = _second(self.start)
        seen = {str(i) for i in state.get("seen") or []}
        next_link = state.get("next_link")
        headers = {**self.credentials.headers(), "Accept": "application/json"}
        if isinstance(next_link, str):
            self._check_link(next_link)
            try:
                response = self.http.request(self.label, "GET", next_link, headers=headers)
            except AuthError:
                raise
            except PermanentError:
                # The skiptoken expired or was refused: read the window again from its start.
                return Page([], {"since": since, "seen": sorted(seen)}, caught_up=False)
        else:
            params = {"$filter": f"{self.time_field} ge {since}", "$top": str(self.top)}
            response = self.http.request(
                self.label, "GET", self.signins_url, headers=headers, params=params
            )

        try:
            body = response.json()
        except ValueError:
            raise RetryableError(self.label, "response is not JSON") from None
        value = body.get("value") if isinstance(body, dict) else None
        if not isinstance(value, list):
            raise PermanentError(self.label, "expected an object with a `value` array")

        window_max = state.get("window_max")
        window_ids = {str(i) for i in state.get("window_ids") or []}
        records: list[Any] = []
        for record in value:
            record_id = record.get("id") if isinstance(record, dict) else None
            created = _created(record, self.time_field)
            if (
                isinstance(record_id, str)
                and record_id in seen
                and created is not None
                and _second(created) == since
            ):
                continue  # published at the end of the previous window
            records.append(record)
            if created is None:
                continue  # the normaliser will say why; it does not move the cursor
            second = _second(created)
            if window_max is None or second > window_max:
                window_max, window_ids = second, set()
            if second == window_max and isinstance(record_id, str):
                window_ids.add(record_id)

        new_link = body.get("@odata.nextLink")
        if isinstance(new_link, str) and new_link:
            self._check_link(new_link)
            next_cursor: dict[str, Any] = {
                "since": since,
                "seen": sorted(seen),
                "next_link": new_link,
                "window_max": window_max,
                "window_ids": sorted(window_ids),
            }
            return Page(records, next_cursor, caught_up=False)
        # The window is complete: move since to its newest second (ISO strings of one
        # format compare like the times they name).
        if window_max is None or window_max < since:
            next_cursor = {"since": since, "seen": sorted(seen)}
        elif window_max == since:
            next_cursor = {"since": since, "seen": sorted(seen | window_ids)}
        else:
            next_cursor = {"since": window_max, "seen": sorted(window_ids)}
        return Page(records, next_cursor, caught_up=True)

    def _check_link(self, url: str) -> None:
        if (
            _origin(url) != _origin(self.base_url)
            or urlsplit(url).path.rstrip("/") != urlsplit(self.signins_url).path
        ):
            raise PermanentError(
                self.label,
                f"@odata.nextLink points outside base_url's {self.path}; refusing to "
                "follow it (check base_url, or delete the checkpoint if it was edited)",
            )


class GraphDirectoryAuditPoller(GraphSignInPoller):
    """Reads Entra directory audits (``GET /v1.0/auditLogs/directoryAudits``) in the same
    windows as sign-ins: ``$filter=activityDateTime ge <since>``, ``@odata.nextLink`` paging,
    boundary dedup by ``id``. Graph answers 429 here too, not always with ``Retry-After``:
    the HTTP policy's backoff applies. The records are audits (role assignments, security
    info deleted, password resets, consents), which :mod:`connectors.entra.security` turns
    into IdentityEvents (other activities are dropped and counted). Needs AuditLog.Read.All."""

    path: ClassVar[str] = AUDITS_PATH
    time_field: ClassVar[str] = "activityDateTime"
