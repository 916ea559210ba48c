"""Per-provider concurrency with priorities: acting calls go before read-backs.

A burst of offboardings (a layoff, an agency's contract ending) queues hundreds of calls per
provider behind the executor's per-provider limit. Each offboarding makes its revocations and
then reads each one back. With one first-come queue, the read-backs of the first leavers hold
back the revocations of the last ones, although cutting access is what must happen first and
the proof can follow. :class:`PriorityLimit` is an ``asyncio.Semaphore`` whose waiters are
served by priority (:data:`ACT` before :data:`READ`), first come first served within one.

Read-backs are not starved for ever: they wait only while acting calls are queued, and the
executor does not count the time a read-back spent queued here against ``verify.timeout``
(the vendor did not fail to show the effect; the read was not made yet).

Written here rather than taken from a library: asyncio has no priority semaphore, and the
one needed is these forty lines over ``asyncio`` futures.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

#: Priorities, lower first: a call that changes access, then a call that reads it back.
ACT = 0
READ = 1


class PriorityLimit:
    """At most ``limit`` holders at once; waiters served by priority, FIFO within one.
    Event loop only."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.holders = 0
        self._waiters: tuple[deque[asyncio.Future[None]], ...] = (deque(), deque())

    def waiting(self, priority: int | None = None) -> int:
        """Callers queued (at ``priority``, or at all priorities)."""
        if priority is not None:
            return len(self._waiters[priority])
        return sum(len(q) for q in self._waiters)

    async def acquire(self, priority: int = ACT) -> None:
        if self.holders < self.limit and not self.waiting():
            self.holders += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiters[priority]
        queue.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # granted just as it was cancelled: pass the place on
                self.release()
            else:
                queue.remove(future)
            raise

    def release(self) -> None:
        """Hand the place to the first waiter of the highest priority, or free it."""
        for queue in self._waiters:
            while queue:
                future = queue.popleft()
                if not future.done():
                    future.set_result(None)  # the place passes on: holders unchanged
                    return
        self.holders -= 1

    @asynccontextmanager
    async def hold(self, priority: int = ACT) -> AsyncIterator[None]:
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()
