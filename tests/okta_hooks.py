"""A local Okta Event Hook sender, written from Okta's documented shapes (developer.okta.com,
"Event hooks" concept page and "Event hook implementation" guide; the System Log event
object reference), for tests of ``/v1/okta/event-hooks``.

What it does as Okta does: the one-time verification ``GET`` carrying
``X-Okta-Verification-Challenge`` and the registered authentication header, expecting
``{"verification": <challenge>}`` back; deliveries as ``POST`` of the event-hook envelope
(``eventType: com.okta.event_hook``, ``cloudEventsVersion``, ``source``, ``eventId``,
``eventTime``, ``contentType``, ``data.events[]``) with the same header; one retry on a
timeout or a 5xx, none on a 4xx. The events are System Log events: ``uuid``, ``published``,
``eventType``, ``version``, ``severity``, ``displayMessage``, ``actor``, ``client``,
``outcome``, ``target[]``, ``transaction``, ``debugContext``, ``authenticationContext``,
``securityContext``.
"""

from __future__ import annotations

import uuid as uuidlib
from datetime import UTC, datetime
from typing import Any

import requests

ADMIN = {
    "id": "00u1admin0000000000",
    "type": "User",
    "alternateId": "it-admin@lumen-outdoor.example",
    "displayName": "IT Admin",
    "detailEntry": None,
}


def system_log_event(
    event_type: str,
    *,
    login: str | None,
    user_id: str = "00u1target000000000",
    uuid: str | None = None,
    outcome: str = "SUCCESS",
    published: str | None = None,
    actor: dict[str, Any] | None = None,
    display: str = "",
) -> dict[str, Any]:
    """One System Log event as an event hook delivers it (``target[]`` holds the User when
    ``login`` is given)."""
    targets = []
    if login is not None:
        targets.append(
            {
                "id": user_id,
                "type": "User",
                "alternateId": login,
                "displayName": login.split("@")[0].replace(".", " ").title(),
                "detailEntry": None,
            }
        )
    return {
        "uuid": uuid or str(uuidlib.uuid4()),
        "published": published or datetime.now(UTC).isoformat(timespec="milliseconds"),
        "eventType": event_type,
        "version": "0",
        "severity": "INFO",
        "legacyEventType": None,
        "displayMessage": display or event_type,
        "actor": actor or ADMIN,
        "client": {
            "userAgent": {"rawUserAgent": "Mozilla/5.0", "os": "Mac OS X", "browser": "CHROME"},
            "zone": "null",
            "device": "Computer",
            "id": None,
            "ipAddress": "198.51.100.23",
            "geographicalContext": {
                "city": "Portland",
                "state": "Oregon",
                "country": "United States",
                "postalCode": "97201",
                "geolocation": {"lat": 45.5, "lon": -122.7},
            },
        },
        "outcome": {"result": outcome, "reason": None},
        "target": targets,
        "transaction": {"type": "WEB", "id": "Xp0TLUIgB5ZsXBnW5ScA0gAAAUI", "detail": {}},
        "debugContext": {"debugData": {"requestUri": "/api/v1/users/lifecycle"}},
        "authenticationContext": {
            "authenticationProvider": None,
            "credentialProvider": None,
            "credentialType": None,
            "issuer": None,
            "interface": None,
            "authenticationStep": 0,
            "externalSessionId": "trs4B2sYVHgQzS0kLdxVtD6Mw",
        },
        "securityContext": {
            "asNumber": None,
            "asOrg": None,
            "isp": None,
            "domain": None,
            "isProxy": None,
        },
    }


def envelope(events: list[dict[str, Any]], hook_id: str = "whoql0HfiLGPWc8Jx0g3") -> dict[str, Any]:
    """The event-hook request body around ``events``."""
    return {
        "eventType": "com.okta.event_hook",
        "eventTypeVersion": "1.0",
        "cloudEventsVersion": "0.1",
        "source": f"https://lumen.okta.example/api/v1/eventHooks/{hook_id}",
        "eventId": str(uuidlib.uuid4()),
        "data": {"events": events},
        "eventTime": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "contentType": "application/json",
    }


class OktaHookSender:
    """Okta's side of one registered event hook: ``url`` with the authentication field
    ``header: secret`` configured at registration."""

    def __init__(self, url: str, secret: str, header: str = "Authorization") -> None:
        self.url = url
        self.headers = {header: secret}
        self.session = requests.Session()
        self.attempts = 0

    def verify(self) -> requests.Response:
        """The one-time verification; Okta accepts the hook only when the answer echoes the
        challenge."""
        challenge = uuidlib.uuid4().hex + "-Okta-challenge"
        resp = self.session.get(
            self.url,
            headers={**self.headers, "X-Okta-Verification-Challenge": challenge},
            timeout=3,
        )
        if resp.status_code == 200:
            assert resp.json() == {"verification": challenge}, resp.text
        return resp

    def deliver(self, events: list[dict[str, Any]]) -> requests.Response:
        """POST one delivery, retrying once on a timeout or a 5xx, as Okta does."""
        body = envelope(events)
        resp: requests.Response | None = None
        for _ in range(2):
            self.attempts += 1
            try:
                resp = self.session.post(
                    self.url,
                    json=body,
                    headers={**self.headers, "Accept": "application/json"},
                    timeout=3,
                )
            except requests.Timeout:
                continue
            if resp.status_code < 500:
                return resp
        assert resp is not None, "both attempts timed out"
        return resp
