"""Client-side rate limiting from the vendors' own signals (connectors/base/ratelimit.py),
the HTTP policy's use of it, and the rate-limit-enforcing vendor fakes (tests/ratelimits.py):
a client that ignores the signals is refused, one that follows them is not; rate-limited
actions are retried until done, once, without paging as stuck."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from connectors.base.catalogue import build_provider
from connectors.base.http import HttpClient, RetryPolicy
from connectors.base.ratelimit import PACE_DECREASE, PACE_GROWTH, RateLimits
from connectors.google.provider import classify_google_error
from connectors.okta.provider import classify_okta_error
from streams.model.records import Action
from streams.runtime.executor import Executor
from streams.support.errors import ProviderError, RateLimitedError
from tests.fakes import GOOGLE_TOKEN, GRAPH_TOKEN, OKTA_TOKEN
from tests.ratelimits import Limit, RateLimitedVendorServer

FAST = RetryPolicy(
    max_attempts=3, base_delay=0.01, max_delay=0.05, connect_timeout=1.0, read_timeout=5.0
)
SESSIONS = "DELETE /api/v1/users/{user_ref}/sessions"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------------ the limiter


def test_an_exhausted_okta_window_holds_calls_until_its_reset() -> None:
    """Remaining 0: every call waits until X-Rate-Limit-Reset; after it, calls go again."""
    clock = Clock()
    limits = RateLimits(clock=clock)
    headers = {"X-Rate-Limit-Limit": "10", "X-Rate-Limit-Remaining": "0"}
    limits.observe("okta", SESSIONS, 204, {**headers, "X-Rate-Limit-Reset": "1000002"})
    assert limits.reserve_slot("okta", SESSIONS) == pytest.approx(2.0)
    assert limits.reserve_slot("okta", "GET /api/v1/users/{user_ref}") == 0.0  # other bucket
    clock.now = 1_000_002.0
    assert limits.reserve_slot("okta", SESSIONS) == 0.0


def test_below_the_reserve_the_calls_left_are_spread_over_the_window() -> None:
    """Above the reserve (20 % of the limit) calls go at once; with 10 of 100 left and 5 s
    to go, one goes now and the next is booked 5 s / 10 = 0.5 s later; each booking counts,
    so the next caller's slot follows the booked one, spaced by what is left."""
    clock = Clock()
    limits = RateLimits(clock=clock)
    window = {"X-Rate-Limit-Limit": "100", "X-Rate-Limit-Reset": "1000005"}
    limits.observe("okta", SESSIONS, 204, {**window, "X-Rate-Limit-Remaining": "30"})
    assert [limits.reserve_slot("okta", SESSIONS) for _ in range(10)] == [0.0] * 10
    limits.observe("okta", SESSIONS, 204, {**window, "X-Rate-Limit-Remaining": "10"})
    assert limits.reserve_slot("okta", SESSIONS) == 0.0
    assert limits.reserve_slot("okta", SESSIONS) == pytest.approx(0.5)
    clock.now += 0.5
    # booked: 0.5 s (the slot above) + 5 s / 9 left then, from 0.5 s ago
    assert limits.reserve_slot("okta", SESSIONS) == pytest.approx(5 / 9)
    # an answer from before these bookings does not hand the booked calls back
    limits.observe("okta", SESSIONS, 204, {**window, "X-Rate-Limit-Remaining": "9"})
    assert limits.state("okta", SESSIONS)["remaining"] == 7


def test_a_refusal_without_a_time_backs_off_doubling_with_jitter_and_bounded() -> None:
    """Graph's 429 without Retry-After: 0.5 s, 1 s, 2 s ... (+-20 %), never over the cap;
    a refusal that names its time holds exactly that long."""
    clock = Clock()
    limits = RateLimits(clock=clock, backoff_first=0.5, backoff_max=3.0)
    holds = [limits.refused("graph", "all", None) for _ in range(5)]
    for hold, base in zip(holds, (0.5, 1.0, 2.0, 3.0, 3.0), strict=True):
        assert base * 0.8 <= hold <= base * 1.2
    assert limits.reserve_slot("graph", "all") == pytest.approx(max(holds))
    assert limits.refused("graph", "all", 7.0) == 7.0


def test_without_window_headers_a_refusal_paces_at_the_rate_just_let_through() -> None:
    """Ten calls let through in the second before a Graph-style refusal (no headers, no
    Retry-After): after the hold, calls are booked 1 / (0.95 * 10) s apart, each booking
    a slot (concurrent callers spread out), and the pace creeps up as calls pass."""
    clock = Clock()
    limits = RateLimits(clock=clock)
    bucket = "POST /v1.0/users/{user_ref}/revokeSignInSessions"
    for n in range(10):
        clock.now = 1_000_000.0 + n * 0.05
        assert limits.reserve_slot("entra", bucket) == 0.0
        limits.observe("entra", bucket, 200, {})
    hold = limits.refused("entra", bucket, None)
    clock.now += hold
    spacing = 1.0 / (0.95 * 10)
    waits = [limits.reserve_slot("entra", bucket) for _ in range(3)]
    assert waits == pytest.approx([0.0, spacing, 2 * spacing])
    before = limits.reserve_slot("entra", bucket)
    limits.observe("entra", bucket, 200, {})
    clock.now += 10.0
    limits.reserve_slot("entra", bucket)
    assert limits.reserve_slot("entra", bucket) < spacing  # sped up by the call let through
    assert before > 0


def paced(clock: Clock, limits: RateLimits, bucket: str, calls: int = 10) -> float:
    """``calls`` let through within half a second, then a refusal (an unpaced bucket holds
    for the first backoff step), then, after the hold, one more call let through: the bucket
    is paced at 0.95 * calls per second, sped up once. Returns that pace."""
    for _ in range(calls):
        clock.now += 0.05
        assert limits.reserve_slot("google", bucket) == 0.0
        limits.observe("google", bucket, 200, {})
    hold = limits.refused("google", bucket, None, clock.now)
    assert 0.4 <= hold <= 0.6
    clock.now += hold
    assert limits.reserve_slot("google", bucket) == 0.0
    limits.observe("google", bucket, 200, {})
    return 0.95 * calls * PACE_GROWTH


def test_a_refusal_of_a_paced_bucket_slows_it_once_per_episode() -> None:
    """Calls already in flight when the pace was lowered (sent before it) are refused for
    the same congestion: eight such refusals lower the pace once, not eight times; a call
    sent after the lowering that is refused again lowers it once more."""
    clock = Clock()
    limits = RateLimits(clock=clock)
    pace = paced(clock, limits, "all")
    assert limits.state("google", "all")["rate"] == pytest.approx(pace)
    clock.now += 0.2
    limits.refused("google", "all", None, clock.now - 0.01)
    assert limits.state("google", "all")["rate"] == pytest.approx(pace * PACE_DECREASE)
    sent_before = clock.now - 0.01
    clock.now += 0.1
    for _ in range(8):
        limits.refused("google", "all", None, sent_before)
    assert limits.state("google", "all")["rate"] == pytest.approx(pace * PACE_DECREASE)
    limits.refused("google", "all", None, clock.now)
    assert limits.state("google", "all")["rate"] == pytest.approx(pace * PACE_DECREASE**2)


def test_a_paced_bucket_holds_only_when_refusals_keep_coming() -> None:
    """Just over the line, a slower pace is the answer (no hold) for two refusals in a row;
    the third holds the bucket for the backoff, and a booked slot is void while it holds
    (``held``). A call let through starts the count again."""
    clock = Clock()
    limits = RateLimits(clock=clock)
    paced(clock, limits, "all")
    assert limits.held("google", "all") == 0.0
    for _ in range(2):
        clock.now += 0.1
        assert limits.refused("google", "all", None, clock.now) == 0.0
    clock.now += 0.1
    hold = limits.refused("google", "all", None, clock.now)
    assert 0.4 <= hold <= 0.6
    assert limits.held("google", "all") == pytest.approx(hold)
    clock.now += hold
    limits.observe("google", "all", 200, {})
    clock.now += 0.1
    assert limits.refused("google", "all", None, clock.now) == 0.0


def test_a_refusal_during_a_hold_does_not_double_it() -> None:
    """A slot booked before a hold whose call is refused during it tells nothing new: the
    hold does not grow from it (the layoff's holds once climbed to 15 s this way)."""
    clock = Clock()
    limits = RateLimits(clock=clock)
    paced(clock, limits, "all")
    for _ in range(3):
        clock.now += 0.1
        limits.refused("google", "all", None, clock.now)
    held_until = limits.state("google", "all")["not_before"]
    assert isinstance(held_until, float)
    for _ in range(5):
        clock.now += 0.05
        limits.refused("google", "all", None, clock.now - 0.01)  # sent during the hold
    assert limits.state("google", "all")["not_before"] == held_until
    assert limits.held("google", "all") > 0


def test_an_idle_pace_is_forgotten() -> None:
    """A pace unused for a minute lapses: the vendor's window has moved on, and the next
    burst starts unpaced (its first refusal measures the rate again)."""
    clock = Clock()
    limits = RateLimits(clock=clock)
    paced(clock, limits, "all")
    clock.now += 61.0
    assert limits.reserve_slot("google", "all") == 0.0
    assert limits.state("google", "all")["rate"] == 0.0


def test_graph_and_google_share_one_bucket_okta_keeps_one_per_endpoint() -> None:
    """Graph and Google limit the application or admin across endpoints, so every call of
    those providers is under one bucket; Okta limits each endpoint."""
    from connectors.entra.provider import GraphProvider
    from connectors.google.provider import GoogleProvider
    from connectors.okta.provider import OktaProvider

    assert GraphProvider.rate_scope == GoogleProvider.rate_scope == "provider"
    assert OktaProvider.rate_scope == "endpoint"


# ------------------------------------------------------------------------------ the fakes


@pytest.fixture
def vendor() -> Iterator[RateLimitedVendorServer]:
    with RateLimitedVendorServer(
        okta=Limit(5, 1.0), graph=Limit(4, 1.0), google=Limit(4, 1.0)
    ) as v:
        yield v


def okta_revoke(http: HttpClient, vendor: RateLimitedVendorServer, user: str, **kw: Any) -> Any:
    return http.request(
        "okta",
        "DELETE",
        f"{vendor.url}/api/v1/users/{user}/sessions",
        params={"oauthTokens": "true"},
        headers={"Authorization": f"SSWS {OKTA_TOKEN}"},
        classify=classify_okta_error,
        **kw,
    )


def test_a_client_ignoring_okta_headers_is_refused_with_okta_shaped_429s(
    vendor: RateLimitedVendorServer,
) -> None:
    """The fake enforces Okta's per-endpoint window: twelve calls at once against a limit
    of five get 429 E0000047 with the X-Rate-Limit-* headers, typed as RateLimitedError
    with the wait until Reset."""
    refused: list[RateLimitedError] = []
    with HttpClient(FAST) as http:
        for n in range(12):
            try:
                okta_revoke(http, vendor, f"00u{n}")
            except RateLimitedError as exc:
                refused.append(exc)
    assert vendor.limited["okta"] >= 2  # twelve calls span at most two 1 s windows of 5
    assert refused
    assert refused[0].status == 429
    assert refused[0].retry_after is not None
    assert 0.0 <= refused[0].retry_after <= 1.0
    (call, *_) = [c for c in vendor.rejected if c["status"] == 429]
    assert call["path"].startswith("/api/v1/users/")


def test_a_client_following_okta_headers_is_never_refused(
    vendor: RateLimitedVendorServer,
) -> None:
    """With the endpoint's bucket, the HTTP policy holds the calls the window does not allow
    (waiting for a slot under a second away itself, handing longer waits back as
    RateLimitedError without a status: nothing was sent): the vendor refuses none of twelve
    calls against five a second, and every call goes out exactly once."""
    held: list[int | None] = []  # the status of each hold handed back: None, nothing sent
    started = time.monotonic()
    with HttpClient(FAST) as http:
        for n in range(12):
            while True:
                try:
                    okta_revoke(http, vendor, f"00u{n}", rate_bucket=SESSIONS)
                    break
                except RateLimitedError as exc:
                    held.append(exc.status)
                    time.sleep(exc.retry_after or 0.0)
    elapsed = time.monotonic() - started
    assert vendor.limited["okta"] == 0
    assert set(held) <= {None}
    assert elapsed >= 1.0  # twelve at five a second: it slowed down instead of being refused
    assert len(vendor.calls) == 12
    assert len({c["path"] for c in vendor.calls}) == 12


def test_graph_429_without_retry_after_gets_a_backoff_and_google_403_is_a_rate_limit(
    vendor: RateLimitedVendorServer,
) -> None:
    """Graph's 429 with no Retry-After becomes a RateLimitedError whose wait is the
    limiter's jittered backoff; Google's 403 userRateLimitExceeded is a rate limit (status
    403, retryable), not a permanent 403."""
    errors: list[RateLimitedError] = []
    with HttpClient(FAST) as http:
        for n in range(5):
            try:
                http.request(
                    "entra",
                    "POST",
                    f"{vendor.url}/v1.0/users/u{n}/revokeSignInSessions",
                    headers={"Authorization": f"Bearer {GRAPH_TOKEN}"},
                    rate_bucket="POST /v1.0/users/{user_ref}/revokeSignInSessions",
                )
            except RateLimitedError as exc:
                errors.append(exc)
        google = [
            http.request(
                "google",
                "GET",
                f"{vendor.url}/admin/directory/v1/users/u{n}@example.com",
                headers={"Authorization": f"Bearer {GOOGLE_TOKEN}"},
                classify=classify_google_error,
                ok=range(200, 500),
            )
            for n in range(6)
        ]
    assert [e.status for e in errors] in ([429], [])  # [] when the window rolled over
    if errors:
        assert errors[0].retry_after is not None
        assert 0.4 <= errors[0].retry_after <= 0.6  # the first backoff step, jittered
    statuses = [r.status_code for r in google]
    assert statuses == [200] * 4 + [403] * 2
    refused = next(r for r in google if r.status_code == 403)
    assert refused.json()["error"]["errors"][0]["reason"] == "userRateLimitExceeded"
    typed = classify_google_error("google", refused)
    assert isinstance(typed, RateLimitedError)
    assert typed.status == 403


def test_a_google_refusal_holds_every_google_endpoint(vendor: RateLimitedVendorServer) -> None:
    """Google limits the admin across endpoints, so its calls share one bucket: once a
    PATCH is refused, a signOut (another endpoint) is held client-side until the hold ends
    (a short hold is waited for in the calling thread) before it is sent."""
    with HttpClient(FAST) as http:
        provider = build_provider(
            "google", {"type": "google", "base_url": vendor.url, "token": GOOGLE_TOKEN}, http
        )

        def act(kind: str, user: str) -> None:
            provider.perform(
                Action.make(
                    kind,
                    identity=user,
                    account=None,
                    provider="google",
                    cause="hr:t",
                    params={"user_ref": f"{user}@example.com"},
                )
            )

        refused = None
        for n in range(12):  # 4 per second allowed: a refusal comes within the window
            try:
                act("disable_account", f"u{n}")
            except RateLimitedError as exc:
                refused = exc
                break
        assert refused is not None
        assert refused.status == 403
        hold = http.limits.held(provider.label, "all")
        assert hold > 0.3  # the first backoff step, jittered
        started = time.monotonic()
        with contextlib.suppress(RateLimitedError):  # the vendor's 1 s window may still be full
            act("revoke_sessions", "other")
        assert time.monotonic() - started >= hold - 0.05


def test_rate_limited_actions_are_retried_until_done_once_without_paging(
    vendor: RateLimitedVendorServer,
) -> None:
    """Ten Graph revocations against 4 calls/s: every one ends done, each user's
    revocation reached the vendor exactly once, refusals were waited out without counting
    toward max_attempts (no stuck page), and took at least the window's time."""
    with HttpClient(FAST) as http:
        provider = build_provider(
            "entra", {"type": "graph", "base_url": vendor.url, "token": GRAPH_TOKEN}, http
        )
        actions = [
            Action.make(
                "revoke_sessions",
                identity=f"p{n}",
                account=None,
                provider="entra",
                cause=f"hr:t:{n}",
                params={"user_ref": f"u{n}"},
            )
            for n in range(10)
        ]
        stuck: list[Action] = []

        async def on_stuck(action: Action, exc: ProviderError, attempts: int) -> None:
            stuck.append(action)

        async def main() -> list[Any]:
            # one attempt before "stuck": a refusal counted as a failure would page at once
            policy = replace(FAST, max_attempts=1, read_timeout=30.0)  # no timeouts under load
            executor = Executor({"entra": provider}, policy)
            try:
                return list(await asyncio.gather(*(executor.execute(a, on_stuck) for a in actions)))
            finally:
                executor.shutdown()

        started = time.monotonic()
        outcomes = asyncio.run(main())
        elapsed = time.monotonic() - started
    assert [o.status for o in outcomes] == ["done"] * 10
    assert stuck == []
    paths = sorted(c["path"] for c in vendor.calls)
    assert paths == sorted(f"/v1.0/users/u{n}/revokeSignInSessions" for n in range(10))
    assert vendor.limited["graph"] > 0
    assert elapsed >= 1.0  # 10 calls at 4 per second
