"""Client-side rate limiting from the vendors' own signals, per provider and bucket.

A layoff sends thousands of calls to the same few endpoints at once. Waiting for the vendor
to refuse them costs a round trip each, a hold and, at Okta, counts against the same window;
so the HTTP policy (:class:`connectors.base.http.HttpClient`) asks :class:`RateLimits` before
each call when it may go out, and tells it what the answer said.

Buckets follow the vendor's own scope (``rate_scope`` of each provider class): Okta limits
each endpoint (``"<METHOD> <path template>"``, so ids never become bucket names); Microsoft
Graph and the Google Admin SDK limit an application or admin user across endpoints, so their
calls share one bucket (``"all"``): per-endpoint buckets would each learn a share of one limit
and refuse each other's calls.

* **Okta's window headers** (``X-Rate-Limit-Limit``, ``-Remaining``, ``-Reset`` in epoch
  seconds, on every answer): calls go at once while the window has room; below ``reserve``
  (a share of the limit) the calls left are spread evenly over the rest of the window; at 0
  nothing goes out until Reset.
* **A refusal** (429, Google's 403 ``userRateLimitExceeded``/``quotaExceeded``) holds the
  bucket for the time the vendor named (Retry-After, X-Rate-Limit-Reset) or, when it named
  none (Graph often, Google always), for a bounded, jittered, doubling backoff.
* **A vendor that names no rate still shows it**: at the first refusal the bucket is paced at
  :data:`PACE_SHARE` of the calls let through in the second before; then, like TCP's
  congestion control, every call let through raises the pace a little
  (:data:`PACE_GROWTH`) and every refusal lowers it (:data:`PACE_DECREASE`) once per
  episode: the calls already in flight when it was lowered are refused for the same reason
  and do not lower it again. A paced bucket's first refusal costs no hold, only the slower
  pace; a second in a row holds it. The pace is forgotten after :data:`IDLE_LAPSE` seconds
  without a call.

**Slots are booked.** Each caller gets its own time to send (the previous slot plus the
pace), so concurrent callers spread out instead of waking together and refusing each other.
A slot within :data:`INLINE_WAIT` is waited for in the calling thread; a later one is not
booked, and the caller is told how long to stay away (:class:`RateLimitedError`).

Written here because none of the well-kept HTTP rate-limit libraries (ratelimit,
pyrate-limiter, limits) reads a vendor's window headers or learns a limit from refusals:
they enforce a rate one configures, which the vendors do not publish per tenant.
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
#: First pace after a refusal with no window headers: this share of the rate let through in
#: the second before it.
PACE_SHARE = 0.95
#: The pace rises by this factor with each call let through and falls by PACE_DECREASE at a
#: refusal. Measured against a fixed 30/s window (bench/hr_burst.py rates): 0.5 % up and
#: 10 % down kept Google-shaped buckets at ~90 % of the allowed rate with a refusal every
#: second or two; faster growth refused more, slower took longer to climb back.
PACE_GROWTH = 1.003
PACE_DECREASE = 0.9
#: Refusals in a row a paced bucket answers with a slower pace alone, before holding.
PACED_FREE = 2
#: The slowest pace learned, calls per second.
PACE_MIN = 0.5
#: A pace unused this long is forgotten (the vendor's window has long moved on), seconds.
IDLE_LAPSE = 60.0
#: A slot this close is waited for in the calling thread (booked); a later one is handed
#: back as RateLimitedError, seconds.
INLINE_WAIT = 1.0
#: The bucket of a vendor that limits across endpoints.
ALL = "all"


@dataclass
class _Bucket:
    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None  # epoch seconds
    not_before: float = 0.0  # nothing goes out earlier (a refusal's hold)
    next_slot: float = 0.0  # pacing: the earliest time of the next booked call
    refusals: int = 0  # refusals in a row (one per episode) without a call let through
    rate: float = 0.0  # learned pace, calls per second (0: not paced)
    lowered_at: float = 0.0  # when the pace was last lowered (episode start)
    last_call: float = 0.0
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


def _prune(b: _Bucket, now: float) -> None:
    while b.passed and now - b.passed[0] > 1.0:
        b.passed.popleft()


class RateLimits:
    """Per (provider, bucket): what the vendor said about its window, the pace learned from
    its refusals, and when the next call may go out. ``clock`` is epoch seconds (Okta's
    Reset is an epoch time)."""

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
        """Seconds until the next call of ``bucket`` may go out (0: now). A wait up to
        :data:`INLINE_WAIT` is a booked slot: the caller waits it, then sends; a longer one
        is not booked (the caller comes back later and asks again)."""
        now = self.clock()
        with self._lock:
            b = self._buckets.get((provider, bucket))
            if b is None:
                return 0.0
            if b.reset is not None and now >= b.reset:
                # a new window: the old count no longer holds (the next answer tells more)
                b.remaining, b.reset = None, None
            if b.rate > 0 and now - b.last_call > IDLE_LAPSE:
                b.rate = 0.0
            start = max(now, b.not_before)
            spacing = 0.0
            if b.remaining is not None and b.limit and b.reset is not None:
                if b.remaining <= 0:
                    start = max(start, b.reset)
                elif b.remaining < max(1.0, self.reserve * b.limit):
                    # pace what is left evenly over the rest of the window
                    spacing = (b.reset - now) / b.remaining
            if b.rate > 0:
                spacing = max(spacing, 1.0 / b.rate)
            if spacing > 0:
                start = max(start, b.next_slot)
            wait = start - now
            if wait > INLINE_WAIT:
                return wait
            if spacing > 0:
                b.next_slot = start + spacing
            if b.remaining is not None:
                b.remaining -= 1
            b.last_call = now
            return wait

    def observe(
        self,
        provider: str,
        bucket: str,
        status: int,
        headers: Mapping[str, str],
        *,
        refusal: bool = False,
    ) -> None:
        """What an answer said: Okta's window headers (any status), and whether the call was
        let through (not a ``refusal``: a 403 rate limit is one without being a 429)."""
        limit = _number(headers, "X-Rate-Limit-Limit")
        remaining = _number(headers, "X-Rate-Limit-Remaining")
        reset = _number(headers, "X-Rate-Limit-Reset")
        now = self.clock()
        with self._lock:
            b = self._buckets.setdefault((provider, bucket), _Bucket())
            if limit is not None and remaining is not None and reset is not None:
                if b.reset == reset and b.remaining is not None:
                    # the calls booked since this one was answered are not in its count
                    b.remaining = min(b.remaining, int(remaining))
                else:
                    b.remaining = int(remaining)
                b.limit, b.reset = int(limit), reset
            if refusal or status == 429:
                return
            b.refusals = 0
            b.passed.append(now)
            _prune(b, now)
            if b.rate > 0:
                b.rate *= PACE_GROWTH

    def refused(
        self, provider: str, bucket: str, retry_after: float | None, sent_at: float | None = None
    ) -> float:
        """A rate-limit refusal of a call sent at ``sent_at`` (epoch seconds; None: now).
        Holds the bucket for ``retry_after`` (the vendor's own time), until the window's
        Reset when the vendor sent one, or for a doubling jittered backoff; and sets or
        lowers the pace. Returns how long the caller should stay away, seconds."""
        now = self.clock()
        with self._lock:
            b = self._buckets.setdefault((provider, bucket), _Bucket())
            # refused for the congestion already answered: sent before the pace was lowered
            # or during the hold (a slot booked before it), it tells nothing new
            repeat = sent_at is not None and (sent_at < b.lowered_at or sent_at < b.not_before)
            if retry_after is not None:
                hold = retry_after
                b.refusals = 0
            elif b.reset is not None and b.reset > now:
                hold = b.reset - now
                b.remaining = 0
            elif repeat:
                # the hold or the slower pace set for it stands; stay away until it ends
                hold = max(b.not_before - now, 0.0)
            else:
                b.refusals += 1
                # a paced bucket just over the line answers with a slower pace first; only
                # refusals that keep coming hold it (the vendor's window is longer than ours)
                steps = b.refusals - PACED_FREE if b.rate > 0 else b.refusals
                hold = 0.0
                if steps > 0:
                    hold = min(self.backoff_first * 2.0 ** min(steps - 1, 16), self.backoff_max)
                    hold *= 1.0 + random.uniform(-BACKOFF_JITTER, BACKOFF_JITTER)
                _prune(b, now)
                if b.rate > 0:
                    b.rate = max(PACE_MIN, b.rate * PACE_DECREASE)
                elif b.passed:
                    b.rate = max(PACE_MIN, PACE_SHARE * len(b.passed))
                b.lowered_at = now
                b.next_slot = max(b.next_slot, now + hold)
            b.not_before = max(b.not_before, now + hold)
            b.last_call = now
            return hold

    def held(self, provider: str, bucket: str) -> float:
        """Seconds ``bucket`` is still held by a refusal (0: not held): a caller that waited
        for a slot booked before the hold checks this before sending."""
        now = self.clock()
        with self._lock:
            b = self._buckets.get((provider, bucket))
            return 0.0 if b is None else max(b.not_before - now, 0.0)

    def state(self, provider: str, bucket: str) -> dict[str, float | int | None]:
        """What is known about one bucket (tests, debugging, the bench)."""
        with self._lock:
            b = self._buckets.get((provider, bucket), _Bucket())
            return {
                "limit": b.limit,
                "remaining": b.remaining,
                "reset": b.reset,
                "not_before": b.not_before,
                "rate": b.rate,
            }
