"""The per-provider priority limit: acting calls before read-backs, FIFO within a priority,
never more holders than the limit, and a cancelled waiter never leaks a place."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from streams.runtime.limits import ACT, READ, PriorityLimit


async def _taken() -> tuple[PriorityLimit, list[str], Callable[[str, int], Awaitable[None]]]:
    """A limit of one whose place is taken, the order callers got it in, and a caller."""
    limit = PriorityLimit(1)
    order: list[str] = []
    await limit.acquire()

    async def one(name: str, priority: int) -> None:
        async with limit.hold(priority):
            order.append(name)
            await asyncio.sleep(0)

    return limit, order, one


def test_waiters_are_served_by_priority_then_in_arrival_order() -> None:
    """With the one place taken, two read-backs then two acting calls queue: the acting
    calls get the place first, in their order, then the read-backs in theirs."""

    async def main() -> list[str]:
        limit, order, one = await _taken()
        tasks = [
            asyncio.create_task(one(name, prio))
            for name, prio in (("read1", READ), ("read2", READ), ("act1", ACT), ("act2", ACT))
        ]
        await asyncio.sleep(0)
        assert limit.waiting(READ) == 2
        assert limit.waiting(ACT) == 2
        limit.release()
        await asyncio.gather(*tasks)
        assert limit.holders == 0
        return order

    assert asyncio.run(main()) == ["act1", "act2", "read1", "read2"]


def test_never_more_holders_than_the_limit() -> None:
    """Twenty callers at mixed priorities through a limit of three: at most three inside."""

    async def main() -> int:
        limit = PriorityLimit(3)
        inside = peak = 0

        async def one(priority: int) -> None:
            nonlocal inside, peak
            async with limit.hold(priority):
                inside += 1
                peak = max(peak, inside)
                await asyncio.sleep(0.001)
                inside -= 1

        await asyncio.gather(*(one(i % 2) for i in range(20)))
        assert limit.holders == 0
        assert limit.waiting() == 0
        return peak

    assert asyncio.run(main()) == 3


def test_a_new_caller_does_not_overtake_the_queue() -> None:
    """A place freed while callers wait goes to the first waiter, not to a caller that
    arrives in the same moment (no barging): the read-back queued first is served first."""

    async def main() -> list[str]:
        limit, order, one = await _taken()
        first = asyncio.create_task(one("queued-read", READ))
        await asyncio.sleep(0)
        limit.release()
        late = asyncio.create_task(one("late-read", READ))
        await asyncio.gather(first, late)
        return order

    assert asyncio.run(main()) == ["queued-read", "late-read"]


def test_a_cancelled_waiter_leaves_the_queue_and_a_granted_one_passes_its_place_on() -> None:
    """Cancelling a queued caller removes it; cancelling one that was just granted the place
    hands the place to the next waiter instead of losing it."""

    async def main() -> None:
        limit = PriorityLimit(1)
        await limit.acquire()
        gone = asyncio.create_task(limit.acquire(READ))
        await asyncio.sleep(0)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert limit.waiting() == 0

        granted = asyncio.create_task(limit.acquire(ACT))
        nxt = asyncio.create_task(limit.acquire(READ))
        await asyncio.sleep(0)
        limit.release()  # the place passes to `granted` ...
        granted.cancel()  # ... which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await granted
        await asyncio.wait_for(nxt, 1.0)  # the place went on to the next waiter
        assert limit.holders == 1
        limit.release()
        assert limit.holders == 0

    asyncio.run(main())


def test_limit_must_allow_one_caller() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        PriorityLimit(0)
