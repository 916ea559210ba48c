"""Stream management as a receiver (SSF 1.0 §8): create or read accessguard's stream at the
transmitter, and ask it for a verification event.

With ``ssf.transmitters.<name>.manage_stream: true`` the worker does at start what an admin
would do by hand at the transmitter: it reads the transmitter's configuration metadata
(``configuration_endpoint``, ``verification_endpoint``), looks for a stream delivering to
``endpoint_url`` (accessguard's public ``/ssf/push/<name>`` URL) and creates one when there is
none (push delivery, the events accessguard acts on, the Authorization header the
transmitter must send: ``push_token``). Then it requests a verification event with a random
``state``: the transmitter pushes a SET of type ``.../ssf/event-type/verification`` carrying
that state, and ``GET /v1/ssf/status`` shows the stream ``verified`` once it arrived — proof
that the whole path (transmitter, network, token, keys) works before a real event needs it.

Blocking (``requests``): call from a thread. Management calls use ``management_token``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import structlog

from connectors.base.http import HttpClient
from connectors.ingest.ssf.events import KINDS, VERIFICATION
from streams.support.errors import PermanentError

log = structlog.get_logger(__name__)

PUSH = "urn:ietf:rfc:8935"


def _headers(token: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _streams(answer: Any) -> list[Mapping[str, Any]]:
    """A GET of the configuration endpoint answers one stream or a list of them."""
    if isinstance(answer, list):
        return [s for s in answer if isinstance(s, Mapping)]
    return [answer] if isinstance(answer, Mapping) and answer.get("stream_id") else []


def ensure_stream(
    http: HttpClient,
    provider: str,
    metadata: Mapping[str, Any],
    *,
    token: str | None,
    endpoint_url: str,
    push_authorization: str,
) -> Mapping[str, Any]:
    """The transmitter's stream delivering to ``endpoint_url``, created when missing."""
    endpoint = metadata.get("configuration_endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise PermanentError(provider, "the transmitter's metadata has no configuration_endpoint")
    answer = http.request(provider, "GET", endpoint, headers=_headers(token), ok=(200,)).json()
    for stream in _streams(answer):
        delivery = stream.get("delivery")
        if isinstance(delivery, Mapping) and delivery.get("endpoint_url") == endpoint_url:
            log.info("ssf.stream_found", transmitter=provider, stream_id=stream.get("stream_id"))
            return stream
    wanted = sorted(uri for uri in KINDS if uri != VERIFICATION)
    body = {
        "delivery": {
            "method": PUSH,
            "endpoint_url": endpoint_url,
            "authorization_header": push_authorization,
        },
        "events_requested": wanted,
        "description": "accessguard: revocations and offboarding",
    }
    created: Mapping[str, Any] = http.request(
        provider, "POST", endpoint, headers=_headers(token), json=body, ok=(200, 201)
    ).json()
    missing = sorted(set(wanted) - set(created.get("events_delivered") or []))
    log.info(
        "ssf.stream_created",
        transmitter=provider,
        stream_id=created.get("stream_id"),
        events_not_delivered=missing or None,
    )
    return created


def request_verification(
    http: HttpClient,
    provider: str,
    metadata: Mapping[str, Any],
    *,
    token: str | None,
    stream_id: str,
) -> str:
    """Ask for a verification event; returns the ``state`` it will carry."""
    endpoint = metadata.get("verification_endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise PermanentError(provider, "the transmitter's metadata has no verification_endpoint")
    state = secrets.token_urlsafe(16)
    http.request(
        provider,
        "POST",
        endpoint,
        headers=_headers(token),
        json={"stream_id": stream_id, "state": state},
        ok=(200, 202, 204),
    )
    return state
