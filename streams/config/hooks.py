"""``hooks``: the lifecycle-event doors beside the HR webhook's own signature scheme.

Standard Webhooks signatures on ``POST /v1/hr/events`` (connectors/ingest/standard_webhooks.py)
and the identity provider's event hook (the Okta Event Hook door,
connectors/okta/event_hook.py). Each door is closed while its secret is unset: an ingest
door is never open by omission.
"""

from __future__ import annotations

import re

from pydantic import field_validator

from streams.config.fields import SecretValue, Str
from streams.config.section import Section, _doc

#: An HTTP header name (RFC 9110 token).
_HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")


class HookSettings(Section):
    """Secrets and the header name of the lifecycle-event doors."""

    standard_webhooks_secret: SecretValue | None = _doc(
        "Standard Webhooks key(s) of POST /v1/hr/events: whsec_<base64>, several separated "
        "by spaces while the sender rotates (unset: the scheme is refused)",
        default=None,
    )
    event_hook_secret: SecretValue | None = _doc(
        "Value the identity provider's event hook sends in event_hook_header "
        "(its event-hook door, README; unset: the door is not served)",
        default=None,
    )
    event_hook_header: Str = _doc(
        "Header carrying event_hook_secret (the hook's authentication field)",
        default="Authorization",
    )

    @field_validator("event_hook_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not _HEADER.match(value):
            raise ValueError("must be an HTTP header name (letters, digits, -)")
        return value
