"""Client-side rate limiting from the vendors' own signals, per provider and endpoint bucket.

A layoff sends thousands of calls to the same few endpoints at once. Waiting for the vendor
to refuse them costs a round trip each and, at Okta, counts against the same window; so the
HTTP policy (:class:`connectors.base.http.HttpClient`) asks :class:`RateLimits` before each
call how long to hold it, and tells it what the answer said:

* Okta sends ``X-Rate-Limit-Limit``, ``-Remaining`` and ``-Reset`` (epoch seconds) on every
  answer, per endpoint. Below ``reserve`` (a share of the limit) the calls left are spread
  evenly over the rest of the window instead of spent at once; at 0 nothing goes out until
  Reset.
* A refusal (429, Google's 403 ``userRateLimitExceeded``/``quotaExceeded``) holds the whole
  bucket until the time the vendor named (Retry-After, X-Rate-Limit-Reset) or, when it named
  none (Graph often, Google always), for a bounded, jittered, doubling backoff that resets at
  the first call that is let through.
* A vendor that sends no window headers still shows its rate: after a refusal the bucket is
  paced at :data:`PACE_SHARE` of the calls it let through in the second before, and the pace
  creeps up with every call let through (:data:`PACE_GROWTH`) until the next refusal
  measures it again (or lapses after :data:`PACE_FOR` seconds without one). In a 100-person
  layoff against a fixed per-second limit this cut Google's refusals from 445 to ~20-40
  (bench/hr_burst.py layoff --layoff-events 100).

Buckets are ``"<METHOD> <path template>"`` (the template the provider already checks its URL
against), so ids never become bucket names. Graph and Google limit an application or user
across endpoints; keeping their buckets per endpoint too was measured faster here than one
bucket per provider (whose pace, learned from one endpoint's share, held all of them back).
Thread-safe: the executor's pool threads share one instance through the shared HTTP client.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

#: Below this share of the window's limit, the calls left are paced over the window.
DEFAULT_RESERVE = 0.2
#: Backoff after a refusal that named no time: first wait, cap, jitter (+-share).
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
BACKOFF_JITTER = 0.2
#: After a refusal with no window headers: pace at this share of the rate just let through,
PACE_SHARE = 0.95
#: and speed the pace up by this factor with each call let through; the pace is dropped
#: once PACE_FOR seconds passed without a refusal (a rate learned while demand was low
#: would otherwise hold the bucket below what the vendor allows).
PACE_GROWTH = 1.01
PACE_FOR = 3.0
#: A booked slot this close is waited for in the calling thread (no second trip through the
#: executor); a longer wait is handed back as RateLimitedError, seconds.
INLINE_WAIT = 1.0


@dataclass
class _Bucket:
    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None  # epoch seconds
    not_before: float = 0.0  # nothing goes out earlier (a refusal, or pacing)
    next_slot: float = 0.0  # pacing: the earliest time of the next call
    refusals: int = 0  # refusals in a row without a named time
    interval: float = 0.0  # learned pacing (no window headers): seconds between calls
    paced_until: float = 0.0  # the pacing lapses then unless a refusal renews it
    passed: deque[float] = field(default_factory=deque)  # calls let through, last second


def _number(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value >= 0 else None


class RateLimits:
    """Per (provider, bucket): what the vendor said about its window, and when the next
    call may go out. ``clock`` is epoch seconds (Okta's Reset is an epoch time)."""

    def __init__(
        self,
        *,
        reserve: float = DEFAULT_RESERVE,
        clock: Callable[[], float] = time.time,
        backoff_first: float = BACKOFF_FIRST,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self.reserve = reserve
        self.clock = clock
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def reserve_slot(self, provider: str, bucket: str) -> float:
        """Seconds to hold the next call of ``bucket`` (0: send now). A call that may go
        now is counted against the window at once, so concurrent callers spread out."""
        now = self.clock()
        with self._lock:
            b = self._buckets.get((provider, bucket))
            if b is None:
                return 0.0
            if b.reset is not None and now >= b.reset:
                # a new window: the old count no longer holds (the next answer tells more)
                b.remaining, b.reset = None, None
            wait = max(b.not_before - now, 0.0)
            if b.interval > 0 and now >= b.paced_until:
                b.interval = 0.0
            if b.interval > 0 and wait <= 0:
                # learned pace: book the next slot (the caller waits for it, then sends)
                wait = max(b.next_slot - now, 0.0)
                if wait <= INLINE_WAIT:
                    b.next_slot = max(now, b.next_slot) + b.interval
                    return wait
                return wait
            if b.remaining is not None and b.limit and b.reset is not None:
                if b.remaining <= 0:
                    wait = max(wait, b.reset - now)
                elif b.remaining < max(1.0, self.reserve * b.limit):
                    # pace what is left evenly over the rest of the window
                    spacing = (b.reset - now) / b.remaining
                    wait = max(wait, b.next_slot - now)
                    if wait <= 0:
                        b.next_slot = now + spacing
            if wait > 0:
                return wait
            if b.remaining is not None:
                b.remaining -= 1
            return 0.0

    def observe(
        self,
        provider: str,
        bucket: str,
        status: int,
        headers: Mapping[str, str],
        *,
        refusal: bool = False,
    ) -> None:
        """What an answer said: Okta's window headers (any status), and that a call was let
        through (not a ``refusal``: a 403 rate limit is one without being a 429)."""
        limit = _number(headers, "X-Rate-Limit-Limit")
        remaining = _number(headers, "X-Rate-Limit-Remaining")
        reset = _number(headers, "X-Rate-Limit-Reset")
        if limit is None and remaining is None and status != 429:
            now = self.clock()
            with self._lock:
                b = self._buckets.setdefault((provider, bucket), _Bucket())
                if not refusal:
                    b.refusals = 0
                    b.passed.append(now)
                    while b.passed and now - b.passed[0] > 1.0:
                        b.passed.popleft()
                    if b.interval > 0:
                        b.interval /= PACE_GROWTH
            return
        with self._lock:
            b = self._buckets.setdefault((provider, bucket), _Bucket())
            if limit is not None and remaining is not None and reset is not None:
                b.limit, b.remaining, b.reset = int(limit), int(remaining), reset
            if status != 429:
                b.refusals = 0

    def refused(self, provider: str, bucket: str, retry_after: float | None) -> float:
        """A rate-limit refusal: hold the bucket for ``retry_after`` (the vendor's own time)
        or, when it named none, a doubling jittered backoff. Returns the hold in seconds."""
        now = self.clock()
        with self._lock:
            b = self._buckets.setdefault((provider, bucket), _Bucket())
            if retry_after is not None:
                hold = retry_after
                b.refusals = 0
            else:
                b.refusals += 1
                hold = min(self.backoff_first * 2.0 ** min(b.refusals - 1, 16), self.backoff_max)
                hold *= 1.0 + random.uniform(-BACKOFF_JITTER, BACKOFF_JITTER)
                while b.passed and now - b.passed[0] > 1.0:
                    b.passed.popleft()
                if b.passed:
                    b.interval = 1.0 / (PACE_SHARE * len(b.passed))
                    b.next_slot = now + hold
                    b.paced_until = now + hold + PACE_FOR
            b.not_before = max(b.not_before, now + hold)
            return hold

    def state(self, provider: str, bucket: str) -> dict[str, float | int | None]:
        """What is known about one bucket (tests, debugging)."""
        with self._lock:
            b = self._buckets.get((provider, bucket), _Bucket())
            return {
                "limit": b.limit,
                "remaining": b.remaining,
                "reset": b.reset,
                "not_before": b.not_before,
            }
