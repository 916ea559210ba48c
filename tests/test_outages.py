"""A provider outage pages once: one incident per provider and failure class, updated with the
count of stuck actions, resolved when the provider answers again (issue 13, defect 6).

Pure bookkeeping (:class:`streams.runtime.outages.Outages`) first, then the real engine over the
in-memory harness: ten offboardings during one Okta outage open one PagerDuty incident."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streams.model.records import Action, HrEvent
from streams.runtime.outages import Outages, failure_class
from streams.support.errors import AuthError, PermanentError, RetryableError
from tests.engine_harness import CLOCK, EngineHarness, build_engine, counter, hr_event

PEOPLE = 10


def _registry(people: int) -> str:
    lines = ["accounts: []", "identities:"]
    for i in range(people):
        lines += [
            f"  - id: p{i}",
            f"    name: Person {i}",
            "    kind: employee",
            f"    employee_id: E{i}",
            f"    emails: [p{i}@brand.example]",
            f"    aliases: {{okta: 00u-p{i}}}",
        ]
    return "\n".join(lines) + "\n"


def action(key: str, provider: str = "okta", identity: str = "ana") -> Action:
    return Action.make(
        "revoke_sessions",
        identity=identity,
        account=None,
        provider=provider,
        cause=f"hr:terminated:{key}",
        params={"user_ref": f"00u-{identity}"},
    )


def test_failures_are_classed_by_what_went_wrong() -> None:
    """429 and Google's 403 rate limits, 5xx, timeouts, 401/403 credentials, other 4xx and a
    crash are six bounded classes; only the first three are retried."""
    assert failure_class(RetryableError("x", "429", status=429)) == "rate_limited"
    assert failure_class(RetryableError("x", "403 rate", status=403)) == "rate_limited"
    assert failure_class(RetryableError("x", "503", status=503)) == "server_error"
    assert failure_class(RetryableError("x", "ReadTimeout")) == "unreachable"
    assert failure_class(AuthError("x", "401", status=401)) == "auth"
    assert failure_class(PermanentError("x", "404", status=404)) == "rejected"
    assert failure_class(ValueError("bug")) == "crashed"


def test_stuck_actions_of_one_provider_and_class_share_one_group() -> None:
    """Many stuck actions, one group (one dedup key); another class or provider is another."""
    outages = Outages()
    err = RetryableError("okta", "HTTP 503", status=503)
    groups = {id(outages.stuck(action(f"e{i}", identity=f"p{i}"), err, 10.0)) for i in range(50)}
    assert len(groups) == 1
    (group,) = outages.groups.values()
    assert group.dedup_key == "provider-outage:okta:server_error"
    assert len(group.stuck) == 50
    assert len(group.identities) == 5  # a sample; the rest are counted
    assert group.alert().details["more_identities"] == 45
    outages.stuck(action("t", identity="q"), RetryableError("okta", "timeout"), 10.0)
    outages.stuck(action("g", provider="google"), err, 10.0)
    assert sorted(outages.groups) == [
        "google:server_error",
        "okta:server_error",
        "okta:unreachable",
    ]


def test_updates_wait_for_the_interval_and_only_follow_changes() -> None:
    """Nothing is due before the incident was paged, nor before ``update_interval`` since the
    last page, nor without a change since it."""
    outages = Outages(update_interval=60.0)
    err = RetryableError("okta", "HTTP 503", status=503)
    group = outages.stuck(action("a"), err, 0.0)
    assert outages.due(100.0) == []  # not paged yet: opening is the engine's first page
    group.sent, group.last_sent, group.dirty = 1, 0.0, False
    outages.stuck(action("b", identity="b"), err, 10.0)
    assert outages.due(30.0) == []
    assert outages.due(61.0) == [group]
    group.last_sent, group.dirty = 61.0, False
    assert outages.due(500.0) == []


def test_a_retryable_group_resolves_only_when_nothing_is_stuck() -> None:
    """A success at the provider resolves its retryable groups with no stuck action left."""
    outages = Outages()
    err = RetryableError("okta", "HTTP 503", status=503)
    first, second = action("a"), action("b", identity="b")
    outages.stuck(first, err, 0.0)
    outages.stuck(second, err, 0.0)
    outages.settled(first)
    assert outages.recovered("okta") == []
    assert outages.settled(second) is not None
    (resolved,) = outages.recovered("okta")
    assert resolved.key == "okta:server_error"
    assert outages.groups == {}


def test_a_permanent_group_is_never_resolved_and_closes_when_quiet() -> None:
    """Bad credentials: no auto-resolve (the failed actions need a person); the group is
    forgotten after ``quiet`` seconds without a new failure, so a later failure pages anew."""
    outages = Outages(quiet=100.0)
    group = outages.failed(action("a"), "auth", "HTTP 401", 0.0)
    group.sent, group.dirty = 1, False
    assert outages.recovered("okta") == []
    assert outages.due(50.0) == []
    assert "okta:auth" in outages.groups
    outages.due(150.0)
    assert outages.groups == {}


def test_an_open_incident_of_an_earlier_process_is_restored() -> None:
    """A retryable incident left open in the ledger is restored as already paged; a
    permanent one is not (it is never auto-resolved anyway)."""
    outages = Outages()
    group = outages.restore(
        {"status": "open", "provider": "okta", "failure": "unreachable", "opened_at": 5.0}
    )
    assert group is not None
    assert (group.sent, group.restored, group.opened_at) == (1, True, 5.0)
    assert outages.restore({"status": "open", "provider": "okta", "failure": "auth"}) is None
    assert [g.key for g in outages.recovered("okta")] == ["okta:unreachable"]


# ---- the engine ----------------------------------------------------------------------------


@pytest.fixture
def h(tmp_path: Path) -> Iterator[EngineHarness]:
    harness = build_engine(
        tmp_path,
        config={
            "providers": {"okta": {"type": "okta"}},
            "alerts": {"outage_update_interval": 0.05},
        },
        registry=_registry(PEOPLE),
    )
    yield harness
    harness.close()


def triggers(h: EngineHarness, sink: str = "pagerduty") -> list[str]:
    return [a.title for a in h.sinks[sink].sent("trigger")]


def stuck(h: EngineHarness, key: str) -> int:
    group = h.engine.outages.groups.get(key)
    return 0 if group is None else len(group.stuck)


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def terminate(i: int, prefix: str) -> HrEvent:
    return hr_event(f"{prefix}-{i}", employee_id=f"E{i}", email=f"p{i}@brand.example")


def test_ten_offboardings_in_one_outage_open_one_incident_and_resolve_it(
    h: EngineHarness,
) -> None:
    """Okta answers 503 to everything: ten terminations get stuck, one outage page opens
    (not ten), an update carries the count of stuck actions, and once Okta answers again
    every action completes and the incident is resolved once, with the same dedup key. Ten
    offboardings at once are also a batch: that is one incident of its own, not ten."""
    okta = h.providers["okta"]
    okta.fail_always("revoke_sessions", RetryableError("okta:okta", "HTTP 503", status=503))

    async def scenario() -> None:
        for i in range(PEOPLE):
            await h.engine.handle_hr(terminate(i, "out"))
        await _until(lambda: stuck(h, "okta:server_error") == PEOPLE)
        await asyncio.sleep(0.06)
        assert await h.engine.tick_outages(CLOCK + 1.0) == 1  # the counts changed: one update
        assert await h.engine.tick_outages(CLOCK + 2.0) == 0  # nothing new: no update
        okta.fail_always("revoke_sessions", None)  # type: ignore[arg-type]  # Okta is back
        await asyncio.wait_for(h.engine.wait_plans(), 5.0)

    asyncio.run(scenario())
    pagerduty = h.sinks["pagerduty"]
    keys = {a.dedup_key for a in pagerduty.sent()}
    batch = {k for k in keys if k.startswith("offboarding-batch:")}
    assert len(batch) == 1
    assert keys - batch == {"provider-outage:okta:server_error"}
    pages = [a for a in pagerduty.sent("trigger") if a.dedup_key not in batch]
    assert len(pages) == 2  # the page and one update, never one per action
    assert "okta" in pages[0].title
    assert pages[1].details["stuck_actions"] == PEOPLE
    assert pages[1].title.startswith("okta is answering with server errors: 10 action(s) stuck")
    (resolve,) = [a for a in pagerduty.sent("resolve") if a.dedup_key not in batch]
    assert resolve.details["recovered_actions"] == PEOPLE
    done = [k for k, v in h.views.ledger.items() if v.get("status") == "done"]
    assert len(done) == PEOPLE
    assert h.views.ledger["outage:okta:server_error"]["status"] == "resolved"
    assert (
        counter("accessguard_provider_stuck_actions", provider="okta", failure="server_error") == 0
    )


def test_permanent_failures_page_once_per_class_and_stay_open(h: EngineHarness) -> None:
    """Okta rejects the credential (401): every action fails at once, one page for the
    class ``auth`` (not one per action), and no resolve: a person must act."""
    rejected = AuthError("okta:okta", "HTTP 401", status=401)
    h.providers["okta"].fail_always("revoke_sessions", rejected)

    async def scenario() -> None:
        for i in range(PEOPLE):
            await h.engine.handle_hr(terminate(i, "auth"))
        await asyncio.wait_for(h.engine.wait_plans(), 5.0)

    asyncio.run(scenario())
    pages = h.sinks["pagerduty"].sent("trigger")
    assert [a.dedup_key for a in pages] == ["provider-outage:okta:auth"]
    assert h.sinks["pagerduty"].sent("resolve") == []
    assert h.engine.outages.groups["okta:auth"].failed == PEOPLE


def test_a_restart_resolves_the_incident_it_finds_open_once_the_provider_works(
    tmp_path: Path,
) -> None:
    """The ledger says an Okta outage was left open by the process before; the first
    successful Okta call after the restart resolves it (not left open for ever)."""
    h = build_engine(
        tmp_path, config={"providers": {"okta": {"type": "okta"}}}, registry=_registry(1)
    )
    try:
        h.views.ledger["outage:okta:unreachable"] = {
            "status": "open",
            "provider": "okta",
            "failure": "unreachable",
            "opened_at": CLOCK - 600,
        }

        async def scenario() -> None:
            h.engine.set_assignment({0, 1, 2, 3})
            await h.engine.handle_hr(terminate(0, "after"))
            await asyncio.wait_for(h.engine.wait_plans(), 5.0)

        asyncio.run(scenario())
        (resolve,) = h.sinks["pagerduty"].sent("resolve")
        assert resolve.dedup_key == "provider-outage:okta:unreachable"
        assert h.views.ledger["outage:okta:unreachable"]["status"] == "resolved"
    finally:
        h.close()
