"""The login-event sources: one normaliser per vendor, in one explicit registry.

Adding a source means writing ``connectors/<name>/normaliser.py`` with a pure
``normalise(payload) -> list[LoginEvent]`` and adding one line to :data:`NORMALISERS`.
Leak-record sources (feeds, replay wrappers) have their tables in
:mod:`connectors.base.leak_sources`.
Every normaliser raises :class:`~streams.support.errors.ValidationError` with a reason for a payload
it cannot use (route it to the dead-letter topic); identity resolution happens afterwards in
:func:`streams.decide.resolve.resolve`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from connectors.entra import normaliser as login_entra
from connectors.generic import normaliser as login_generic
from connectors.google import normaliser as login_google
from connectors.okta import normaliser as login_okta
from streams.model.records import LoginEvent
from streams.support.errors import ValidationError

Normaliser = Callable[[Any], list[LoginEvent]]

NORMALISERS: Mapping[str, Normaliser] = MappingProxyType(
    {
        "okta": login_okta.normalise,
        "entra": login_entra.normalise,
        "google": login_google.normalise,
        "generic": login_generic.normalise,
    }
)


def normalise(vendor: str, payload: Any) -> list[LoginEvent]:
    """Normalise one vendor payload (as the vendor sends it) into LoginEvents.

    Raises ValidationError for an unknown vendor or a payload that cannot be used.
    """
    normaliser = NORMALISERS.get(vendor) if isinstance(vendor, str) else None
    if normaliser is None:
        raise ValidationError(
            f"vendor: {str(vendor)[:40]!r} is not one of {', '.join(NORMALISERS)}"
        )
    return normaliser(payload)


# ---- replay lines ---------------------------------------------------------------------------

#: The vendors whose payloads an ``accessguard replay`` line may wrap
#: (``{"kind":"login","vendor":...,"event":{...}}``), in this order in its messages: every
#: normaliser but ``generic``, whose canonical fields a line carries unwrapped.
WRAPPED_LOGIN_VENDORS: tuple[str, ...] = tuple(v for v in NORMALISERS if v != "generic")
