"""Poll delivery of SETs (RFC 8936) on the one poll loop
(:class:`~connectors.base.pollers.PollLoop`).

Each round POSTs ``{"ack": [...], "setErrs": {...}, "maxEvents": N, "returnImmediately":
true}`` to the stream's ``poll_url`` and hands every SET of the answer's ``sets`` to the
receiver (:meth:`~connectors.ingest.ssf.receiver.SsfReceiver.accept`: verify, dedup, journal,
publish). The ``ack`` of the *next* request lists only the jtis the receiver journaled (or
already had: duplicates), ``setErrs`` those it refused (RFC 8936 §2.4.4, so the transmitter
stops resending them). Both ride in the checkpoint the loop saves after the round: a crash
before it re-acknowledges nothing, and the transmitter redelivers what it never saw acked,
which the jti memory answers as duplicates. A round whose SET could not be journaled or
published fails (the loop backs off) and acks nothing new.

``moreAvailable`` means another round at once; otherwise the loop waits ``poll_interval``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar

from connectors.base.http import HttpClient, backoff_delay
from connectors.base.pollers import CheckpointStore, Cursor, Page, PollLoop
from connectors.ingest.ssf.receiver import SsfReceiver, SsfStream
from connectors.ingest.ssf.verify import SetRefused
from streams.support.errors import PermanentError, RetryableError
from streams.support.secrets import Secret


class SsfPoller(PollLoop):
    """One polled stream."""

    vendor = "ssf"
    default_interval: ClassVar[float] = 5.0

    def __init__(
        self,
        stream: SsfStream,
        receiver: SsfReceiver,
        *,
        url: str,
        token: Secret | None,
        max_events: int,
        interval: float,
        http: HttpClient,
        checkpoints: CheckpointStore,
    ) -> None:
        super().__init__(f"ssf-{stream.name}", {"interval": interval}, http, checkpoints)
        self.stream = stream
        self.receiver = receiver
        self.url = url
        self.token = token
        self.max_events = max_events
        #: The cursor of the round in progress, filled by :meth:`_publish`.
        self._next: Cursor = None

    def fetch(self, cursor: Cursor) -> Page:
        """ONE poll request, acknowledging what the cursor carries."""
        ack = list((cursor or {}).get("ack") or [])
        errs = dict((cursor or {}).get("errs") or {})
        body: dict[str, Any] = {
            "ack": ack,
            "maxEvents": self.max_events,
            "returnImmediately": True,
        }
        if errs:
            body["setErrs"] = errs
        headers = {"Accept": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token.reveal()}"
        response = self.http.request(
            f"ssf:{self.stream.name}", "POST", self.url, json=body, headers=headers, ok=(200,)
        )
        try:
            data = response.json()
        except ValueError:
            raise PermanentError(f"ssf:{self.stream.name}", "poll answer is not JSON") from None
        sets = data.get("sets") if isinstance(data, Mapping) else None
        if not isinstance(sets, Mapping):
            raise PermanentError(f"ssf:{self.stream.name}", "poll answer has no `sets` object")
        records = [(str(jti), tok) for jti, tok in sets.items() if isinstance(tok, str)]
        more = bool(data.get("moreAvailable"))
        # Filled by publish() with what this round's SETs became; saved after it returned.
        next_cursor: dict[str, Any] = {"ack": [], "errs": {}}
        return Page(records, next_cursor, caught_up=not more, summary={"sets": len(records)})

    def _failure_delay(self, failures: int, exc: BaseException, stage: str) -> float:
        """The HTTP policy's backoff, from the transmitter's Retry-After when it gave one."""
        retry_after = exc.retry_after if isinstance(exc, RetryableError) else None
        return backoff_delay(failures, self.http.policy, retry_after)

    def _split(self, page: Page) -> tuple[list[Any], list[tuple[Any, str]]]:
        # The records are for this loop's own publish, which fills the page's cursor.
        self._next = page.next_cursor
        return list(page.records), []

    async def _publish(self, records: list[Any]) -> None:
        target = self._next or {"ack": [], "errs": {}}
        for jti, token in records:
            try:
                await self.receiver.accept(self.stream, token)
            except SetRefused as exc:
                if exc.retry_after is None:  # else neither acked nor refused: redelivered
                    target["errs"][jti] = {"err": exc.err, "description": exc.description}
                continue
            # Unavailable propagates: the round fails, nothing new is acknowledged.
            target["ack"].append(jti)
        self.health.accepted(len(target["ack"]))

    def _count(self, published: int, rejected: list[tuple[Any, str]]) -> None:
        """Accepted SETs are counted by :meth:`_publish`, refusals by the receiver's metric;
        a good round clears the failed-rounds gauge, as the base does."""
        self._failures_gauge.set(0)

    async def run(self, stop: asyncio.Event) -> None:
        await self._loop(stop, self.poll_once)

    async def poll_once(self) -> float:
        self._next = None
        return await self._round(self.fetch, self._publish, None)
