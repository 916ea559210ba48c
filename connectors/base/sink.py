"""The one base of every alert sink.

An alert sink makes ONE attempt to deliver an :class:`~streams.model.records.Alert` per
:meth:`SinkBase.send` (the executor owns retries) and returns a small JSON-able result for
the audit trail. Settings (``sinks.<name>``: ``dry_run``, the endpoint, the credential), the
dry run (the prepared request is returned as a
:class:`~connectors.base.provider.DryRun` result and nothing is sent) and the HTTP call are
:class:`~connectors.base.provider.ConnectorBase`'s, as for providers; a sink implements
:meth:`SinkBase.prepare` (the vendor's message) and, when the credential is not a header,
:meth:`SinkBase.deliver`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from connectors.base.provider import ConnectorBase, Request
from streams.model.records import Alert


class SinkBase(ConnectorBase, ABC):
    """Base of every alert sink: ``send`` = :meth:`prepare`, then a dry run's description
    or :meth:`deliver`. Constructor: ``cls(name, settings, http)``."""

    section: ClassVar[str] = "sinks"

    def send(self, alert: Alert) -> dict[str, Any]:
        """Make ONE attempt to deliver ``alert``; the caller owns retries."""
        request = self.prepare(alert)
        if self.dry_run:
            return self.dry_result(request)
        return self.deliver(request, alert)

    @abstractmethod
    def prepare(self, alert: Alert) -> Request:
        """The request for ``alert`` (raise PermanentError for an alert it cannot send)."""

    def deliver(self, request: Request, alert: Alert) -> dict[str, Any]:
        """Send a prepared request (not in a dry run)."""
        return self.result(request, self.send_request(request))
