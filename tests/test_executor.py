"""The action executor against local vendor servers, through the real connectors and the
shared HTTP policy: retries, Retry-After, permanent failures, paging once when stuck, slow
retries, dry-run and the per-provider concurrency limit."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from connectors.base.catalogue import build_provider
from connectors.base.http import HttpClient, RetryPolicy
from connectors.base.provider import PENDING, VERIFIED, Verification
from streams.model.records import Action
from streams.runtime.executor import Executor, Outcome, Provider, VerifyPolicy
from streams.support.errors import ProviderError
from tests.fakes import GOOGLE_TOKEN, OKTA_TOKEN, FakeVendorServer

FAST = RetryPolicy(
    max_attempts=4,
    base_delay=0.01,
    max_delay=0.05,
    connect_timeout=1.0,
    read_timeout=5.0,
    slow_retry_interval=0.1,
)

Stuck = tuple[Action, ProviderError, int]


@pytest.fixture
def http() -> Iterator[HttpClient]:
    with HttpClient(FAST) as client:
        yield client


def okta(vendor: FakeVendorServer, http: HttpClient, **settings: Any) -> Provider:
    return build_provider(
        "okta",
        {"type": "okta", "base_url": vendor.url, "token": OKTA_TOKEN, **settings},
        http,
    )


def google(vendor: FakeVendorServer, http: HttpClient) -> Provider:
    return build_provider(
        "google", {"type": "google", "base_url": vendor.url, "token": GOOGLE_TOKEN}, http
    )


def revoke(provider: str = "okta", user: str = "00u1alice", cause: str = "hr:t:1") -> Action:
    return Action.make(
        "revoke_sessions",
        identity="alice",
        account=None,
        provider=provider,
        cause=cause,
        params={"user_ref": user},
    )


def run(
    providers: dict[str, Provider],
    actions: list[Action],
    *,
    policy: RetryPolicy = FAST,
    **kwargs: Any,
) -> tuple[list[Outcome], list[Stuck], float]:
    """Execute ``actions`` concurrently; returns outcomes, stuck callbacks and elapsed s."""
    stuck: list[Stuck] = []

    async def on_stuck(action: Action, exc: ProviderError, attempts: int) -> None:
        stuck.append((action, exc, attempts))

    async def main() -> list[Outcome]:
        executor = Executor(providers, policy, **kwargs)
        try:
            return list(await asyncio.gather(*(executor.execute(a, on_stuck) for a in actions)))
        finally:
            executor.shutdown()

    started = time.monotonic()
    outcomes = asyncio.run(main())
    return outcomes, stuck, time.monotonic() - started


class TestRetries:
    def test_429_is_retried_after_the_retry_after_delay(
        self, vendor: FakeVendorServer, http: HttpClient
    ) -> None:
        """Two 429s with Retry-After: 0.3 are retried no sooner than the server asked (the
        backoff alone would be ~10 ms), then the call succeeds once."""
        vendor.fail_next(2, status=429, retry_after=0.3)
        (outcome,), stuck, elapsed = run({"okta": okta(vendor, http)}, [revoke()])
        assert outcome.status == "done"
        assert outcome.attempts == 3
        assert elapsed >= 0.6
        assert [r["status"] for r in vendor.rejected] == [429, 429]
        assert len(vendor.calls_to("/api/v1/users/00u1alice/sessions")) == 1
        assert stuck == []

    def test_503_then_success(self, vendor: FakeVendorServer, http: HttpClient) -> None:
        """A transient 503 without Retry-After is retried with backoff and then succeeds."""
        vendor.fail_next(1, status=503, retry_after=None)
        (outcome,), _, elapsed = run({"okta": okta(vendor, http)}, [revoke()])
        assert (outcome.status, outcome.attempts) == ("done", 2)
        assert outcome.result["status"] == 204
        assert outcome.was_stuck is False
        assert elapsed < 2.0
        assert len(vendor.calls) == 1

    def test_permanent_4xx_fails_without_retry(
        self, vendor: FakeVendorServer, http: HttpClient
    ) -> None:
        """A 404 (unknown user) is permanent: one attempt, failed, error names the status."""
        vendor.force_status("/sessions", 404, {"errorCode": "E0000007"})
        (outcome,), stuck, _ = run({"okta": okta(vendor, http)}, [revoke()])
        assert (outcome.status, outcome.attempts) == ("failed", 1)
        assert "HTTP 404" in (outcome.error or "")
        assert len(vendor.rejected) == 1
        assert vendor.calls == []
        assert stuck == []

    def test_auth_error_fails_without_retry(
        self, vendor: FakeVendorServer, http: HttpClient
    ) -> None:
        """A rejected credential (401) is an AuthError: failed at once, saying to rotate it."""
        provider = okta(vendor, http, token="wrong-token")
        (outcome,), stuck, _ = run({"okta": provider}, [revoke()])
        assert (outcome.status, outcome.attempts) == ("failed", 1)
        assert "credential rejected" in (outcome.error or "")
        assert [r["status"] for r in vendor.rejected] == [401]
        assert stuck == []

    def test_stuck_is_reported_once_then_slow_retries_until_success(
        self, vendor: FakeVendorServer, http: HttpClient
    ) -> None:
        """After max_attempts fast attempts the stuck callback (the page) runs exactly once;
        the action keeps being retried every slow_retry_interval and completes when the
        provider is back, marked was_stuck."""
        vendor.down_for(1.0, status=503)
        (outcome,), stuck, elapsed = run({"okta": okta(vendor, http)}, [revoke()])
        assert outcome.status == "done"
        assert outcome.was_stuck is True
        assert len(stuck) == 1
        action, exc, attempts = stuck[0]
        assert action.provider == "okta"
        assert attempts == FAST.max_attempts
        assert exc.status == 503
        # fast attempts, then several slow ones (0.1 s apart) within the 1 s outage
        assert outcome.attempts > FAST.max_attempts + 3
        assert len(vendor.rejected) == outcome.attempts - 1
        assert len(vendor.calls) == 1
        assert elapsed >= 1.0

    def test_permanent_error_after_being_stuck_fails_and_keeps_the_flag(
        self, vendor: FakeVendorServer, http: HttpClient
    ) -> None:
        """A provider that was failing and then answers 403 ends the slow retries as
        failed; the outcome says it had been paged."""
        vendor.down_for(30, status=503)  # forced statuses win over the outage

        def then_forbid() -> None:
            time.sleep(0.6)
            vendor.force_status("/sessions", 403, {"errorCode": "E0000006"})

        threading.Thread(target=then_forbid, daemon=True).start()
        (outcome,), stuck, _ = run({"okta": okta(vendor, http)}, [revoke()])
        assert outcome.status == "failed"
        assert outcome.was_stuck is True
        assert len(stuck) == 1
        assert vendor.calls == []


class TestConfiguration:
    def test_unknown_provider_fails_naming_the_config_key(
        self, vendor: FakeVendorServer, http: HttpClient
    ) -> None:
        """An action for a provider that is not configured fails at once, and the error
        points at the providers.* configuration."""
        (outcome,), stuck, _ = run({"okta": okta(vendor, http)}, [revoke(provider="entra")])
        assert (outcome.status, outcome.attempts) == ("failed", 0)
        assert outcome.error == "no provider named 'entra' in config (providers.*)"
        assert vendor.calls == []
        assert vendor.rejected == []
        assert stuck == []

    def test_global_dry_run_calls_no_provider(
        self, vendor: FakeVendorServer, http: HttpClient
    ) -> None:
        """executor.dry_run: every action is reported dry_run and no request is made, even
        for an unconfigured provider."""
        outcomes, _, _ = run(
            {"okta": okta(vendor, http)},
            [revoke(), revoke(provider="entra")],
            dry_run=True,
        )
        assert [(o.status, o.attempts) for o in outcomes] == [("dry_run", 0), ("dry_run", 0)]
        assert vendor.calls == []
        assert vendor.rejected == []

    def test_per_provider_dry_run_calls_nothing_but_describes_the_request(
        self, vendor: FakeVendorServer, http: HttpClient
    ) -> None:
        """providers.<name>.dry_run: that provider's actions are dry_run with the request
        they would have made; no HTTP call."""
        (outcome,), _, _ = run({"okta": okta(vendor, http, dry_run=True)}, [revoke()])
        assert outcome.status == "dry_run"
        assert (
            outcome.result["request"] == "DELETE /api/v1/users/00u1alice/sessions?oauthTokens=true"
        )
        assert vendor.calls == []
        assert vendor.rejected == []


class CountingProvider:
    """Wraps a real provider and records the most calls it had in flight at once."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.in_flight = 0
        self.peak = 0
        self._lock = threading.Lock()

    def perform(self, action: Action) -> dict[str, Any]:
        with self._lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            return self.inner.perform(action)
        finally:
            with self._lock:
                self.in_flight -= 1


class TestConcurrency:
    def test_per_provider_limit_is_respected(self, http: HttpClient) -> None:
        """With per_provider_concurrency=2 and a provider answering in 0.2 s, six actions
        run at most two at a time (three waves), though the pool has more threads."""
        with FakeVendorServer() as slow:
            slow.set_delay(0.2)
            counting = CountingProvider(okta(slow, http))
            actions = [revoke(user=f"u{i}") for i in range(6)]
            outcomes, _, elapsed = run(
                {"okta": counting}, actions, threads=16, per_provider_concurrency=2
            )
        assert [o.status for o in outcomes] == ["done"] * 6
        assert counting.peak == 2
        assert 0.6 <= elapsed < 2.0

    def test_slow_provider_does_not_hold_back_another(self, http: HttpClient) -> None:
        """The limit is per provider: Google's actions finish while Okta's queue behind
        their own limit."""
        with FakeVendorServer() as slow, FakeVendorServer() as fast:
            slow.set_delay(0.3)
            providers: dict[str, Provider] = {
                "okta": okta(slow, http),
                "google": google(fast, http),
            }
            finished: dict[str, float] = {}
            started = time.monotonic()

            async def main() -> None:
                executor = Executor(providers, FAST, threads=8, per_provider_concurrency=1)

                async def one(action: Action) -> None:
                    async def on_stuck(*_: Any) -> None:
                        raise AssertionError("nothing should be stuck")

                    outcome = await executor.execute(action, on_stuck)
                    assert outcome.status == "done"
                    finished[action.params["user_ref"]] = time.monotonic() - started

                try:
                    await asyncio.gather(
                        *(one(revoke(user=f"okta{i}")) for i in range(3)),
                        *(one(revoke(provider="google", user=f"g{i}@x.example")) for i in range(3)),
                    )
                finally:
                    executor.shutdown()

            asyncio.run(main())
        assert max(v for k, v in finished.items() if k.startswith("g")) < 0.3
        assert max(v for k, v in finished.items() if k.startswith("okta")) >= 0.9

    def test_threads_waiting_for_a_rate_limit_do_not_starve_another_provider(
        self, http: HttpClient
    ) -> None:
        """A rate-limited provider's calls wait for their booked slots in pool threads; with
        ``threads`` smaller than every provider's concurrency together, the pool still has
        a thread for each, so Google's actions finish while Okta's hold all of theirs."""
        release = threading.Event()

        class Holding:
            """Blocks its pool thread like a call waiting for a booked slot."""

            def perform(self, action: Action) -> dict[str, Any]:
                release.wait(5.0)
                return {"status": 204}

        with FakeVendorServer() as fast:
            providers: dict[str, Provider] = {"okta": Holding(), "google": google(fast, http)}
            finished: dict[str, float] = {}
            started = time.monotonic()

            async def main() -> None:
                executor = Executor(providers, FAST, threads=2, per_provider_concurrency=2)

                async def one(action: Action) -> None:
                    async def on_stuck(*_: Any) -> None:
                        raise AssertionError("nothing should be stuck")

                    await executor.execute(action, on_stuck)
                    finished[action.params["user_ref"]] = time.monotonic() - started
                    if len([k for k in finished if k.startswith("g")]) == 2:
                        release.set()

                try:
                    await asyncio.gather(
                        *(one(revoke(user=f"okta{i}")) for i in range(2)),
                        *(one(revoke(provider="google", user=f"g{i}@x.example")) for i in range(2)),
                    )
                finally:
                    release.set()
                    executor.shutdown()

            asyncio.run(main())
        assert max(v for k, v in finished.items() if k.startswith("g")) < 2.0
        assert len(finished) == 4


class Scripted:
    """A provider in process: each acting call and read-back is logged in order and takes
    ``hold`` seconds of its pool thread; read-backs answer pending ``pending`` times first."""

    def __init__(self, hold: float, pending: int = 0) -> None:
        self.hold = hold
        self.pending = pending
        self.log: list[str] = []
        self._lock = threading.Lock()

    def perform(self, action: Action) -> dict[str, Any]:
        time.sleep(self.hold)
        with self._lock:
            self.log.append(f"act:{action.params['user_ref']}")
        return {"status": 204}

    def can_verify(self, action: Action) -> bool:
        return True

    def verify(self, action: Action, result: dict[str, Any], issued_at: float) -> Verification:
        time.sleep(self.hold)
        with self._lock:
            self.log.append(f"read:{action.params['user_ref']}")
            if self.pending:
                self.pending -= 1
                return Verification(PENDING, reason="not yet")
        return Verification(VERIFIED, {"sessions": 0})


class TestPriorities:
    def test_acting_calls_go_before_queued_read_backs(self) -> None:
        """In a burst, revocations are not held back by the read-backs of earlier ones: with
        one place at the provider, three read-backs queued before three revocations are made
        after them."""
        provider = Scripted(hold=0.05)

        async def main() -> None:
            executor = Executor({"okta": provider}, FAST, threads=4, per_provider_concurrency=1)

            async def on_stuck(*_: Any) -> None:
                raise AssertionError("nothing should be stuck")

            done = Outcome("done", 1, {"status": 204}, finished_at=time.time())
            try:
                first = asyncio.create_task(executor.execute(revoke(user="a0"), on_stuck))
                await asyncio.sleep(0.01)  # a0 holds the one place
                reads = [
                    asyncio.create_task(executor.verify(revoke(user=f"r{i}"), done))
                    for i in range(3)
                ]
                await asyncio.sleep(0.01)
                acts = [
                    asyncio.create_task(executor.execute(revoke(user=f"a{i}"), on_stuck))
                    for i in range(1, 4)
                ]
                await asyncio.gather(first, *reads, *acts)
            finally:
                executor.shutdown()

        asyncio.run(main())
        assert provider.log == [
            "act:a0",
            "act:a1",
            "act:a2",
            "act:a3",
            "read:r0",
            "read:r1",
            "read:r2",
        ]

    def test_time_queued_behind_acting_calls_does_not_use_up_the_verify_timeout(self) -> None:
        """A read-back that waited 0.6 s behind revocations, with a verify timeout of 0.3 s,
        still gets its 0.3 s at the provider: pending once, then verified — not failed as
        "not read back in time" (which would page)."""
        provider = Scripted(hold=0.15, pending=1)

        async def main() -> Verification:
            executor = Executor(
                {"okta": provider},
                FAST,
                threads=4,
                per_provider_concurrency=1,
                verify=VerifyPolicy(timeout=0.3, first_interval=0.05, max_interval=0.05),
            )

            async def on_stuck(*_: Any) -> None:
                raise AssertionError("nothing should be stuck")

            done = Outcome("done", 1, {"status": 204}, finished_at=time.time())
            try:
                acts = [
                    asyncio.create_task(executor.execute(revoke(user=f"a{i}"), on_stuck))
                    for i in range(4)
                ]
                await asyncio.sleep(0.01)
                verification = await executor.verify(revoke(user="r0"), done)
                await asyncio.gather(*acts)
                return verification
            finally:
                executor.shutdown()

        verification = asyncio.run(main())
        assert provider.log[:4] == ["act:a0", "act:a1", "act:a2", "act:a3"]
        assert verification.status == VERIFIED, verification.reason
