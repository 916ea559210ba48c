"""The Okta Event Hook door (issue 19): the one-time verification, the authentication header,
a batch handled event by event (its own result and journal entry each), lifecycle types
mapped to HR types, lock and MFA reset routed as the System Log poller routes them, unknown
types counted and ignored, dedup by uuid and content across restarts, and the edge contract
(200 only after journal and broker, 503 with Retry-After, 413).

The real door over loopback (tests/edge_harness.py) driven by a sender written from Okta's
documented shapes (tests/okta_hooks.py); the broker producer stands in. The path through the
real broker and workers to a verified offboarding is tests/test_integration_hooks.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.ingest.contract import journaled_ids
from connectors.ingest.doors import restore_doors
from connectors.okta.event_hook import PATH
from streams.bus.journal import replay_records
from streams.model.identity import IdentityEvent
from streams.model.records import HrEvent, LoginEvent
from streams.support.errors import BrokerError, JournalError
from streams.support.metrics import REGISTRY
from streams.support.secrets import Secret
from tests.edge_harness import TOPIC_AUTH, TOPIC_HR, TOPIC_IDENTITY, Edge, edge_server
from tests.okta_hooks import OktaHookSender, system_log_event
from tests.samples import sample_text

HOOK_SECRET = "okta-hook-test-secret-3f9a"
ALICE = "alice.nguyen@lumen-outdoor.example"
BOB = "bob.okafor@lumen-outdoor.example"


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[Edge]:
    with edge_server(tmp_path, event_hook_secret=Secret(HOOK_SECRET)) as e:
        yield e


def sender(edge: Edge, secret: str = HOOK_SECRET) -> OktaHookSender:
    return OktaHookSender(edge.url + PATH, secret)


def journal(edge: Edge) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in edge.journal.path.read_bytes().splitlines()]


def dropped(reason: str) -> float:
    labels = {"source": "okta_event_hook", "reason": reason}
    return REGISTRY.get_sample_value("accessguard_identity_events_dropped_total", labels) or 0.0


def lifecycle_batch() -> list[dict[str, Any]]:
    return [
        system_log_event("user.lifecycle.deactivate", login=ALICE, user_id="00uALICE"),
        system_log_event("user.lifecycle.suspend", login=BOB, user_id="00uBOB"),
        system_log_event("user.lifecycle.unsuspend", login=BOB, user_id="00uBOB"),
        system_log_event("user.lifecycle.reactivate", login=ALICE, user_id="00uALICE"),
    ]


class TestVerificationAndAuth:
    def test_the_verification_challenge_is_echoed(self, edge: Edge) -> None:
        """GET with the challenge and the registered header -> {"verification": value}."""
        assert sender(edge).verify().status_code == 200

    def test_verification_without_the_secret_is_a_401(self, edge: Edge) -> None:
        resp = sender(edge, "not-the-secret").verify()
        assert resp.status_code == 401
        assert resp.json() == {"error": "missing or wrong Authorization header"}

    def test_verification_without_a_challenge_is_a_400(self, edge: Edge) -> None:
        resp = edge.session.get(edge.url + PATH, headers={"Authorization": HOOK_SECRET})
        assert resp.status_code == 400
        assert "X-Okta-Verification-Challenge" in resp.json()["error"]

    def test_a_challenge_that_is_not_ascii_is_a_400_not_a_500(self, edge: Edge) -> None:
        """A header byte that is not UTF-8 reaches the handler as a surrogate, which JSON
        cannot encode: refused with the reason instead of failing to answer."""
        resp = edge.session.get(
            edge.url + PATH,
            headers={"Authorization": HOOK_SECRET, "X-Okta-Verification-Challenge": b"c\xff"},  # type: ignore[dict-item]
        )
        assert resp.status_code == 400
        assert "non-ASCII" in resp.json()["error"]

    def test_a_delivery_without_or_with_a_wrong_secret_is_a_401(self, edge: Edge) -> None:
        batch = lifecycle_batch()
        assert sender(edge, "wrong").deliver(batch).status_code == 401
        bare = edge.session.post(edge.url + PATH, json={"data": {"events": batch}})
        assert bare.status_code == 401
        assert edge.publisher.records == []


class TestBatches:
    def test_lifecycle_events_become_hr_events_one_by_one(self, edge: Edge) -> None:
        """deactivate -> terminated, suspend -> suspended, unsuspend and reactivate ->
        reinstated, each its own HrEvent about the User target, its own result and its own
        journal entry (replayed into hr.events after a restart)."""
        batch = lifecycle_batch()
        resp = sender(edge).deliver(batch)
        assert resp.status_code == 200
        results = resp.json()["results"]
        assert [r["result"] for r in results] == ["accepted"] * 4
        assert {r["route"] for r in results} == {"hr"}
        events = [HrEvent.from_dict(v) for _, v in edge.publisher.on(TOPIC_HR)]
        assert [(e.type, e.email, e.employee_id) for e in events] == [
            ("terminated", ALICE, "00uALICE"),
            ("suspended", BOB, "00uBOB"),
            ("reinstated", BOB, "00uBOB"),
            ("reinstated", ALICE, "00uALICE"),
        ]
        assert all(e.source == "okta-event-hook" and e.accepted_at for e in events)
        assert [e.event_id for e in events] == [r["id"] for r in results]
        assert results[0]["id"].startswith(f"okta:{batch[0]['uuid']}:")
        assert len(replay_records(edge.journal.path)["hr.events"]) == 4

    def test_lock_mfa_reset_and_unknown_types_each_get_their_result(self, edge: Edge) -> None:
        """A lock is a failed login (LOCKED_OUT) on auth.events; an MFA reset of all factors
        an identity-security mfa_factor_reset; an unknown type is ignored and counted; an
        unusable lifecycle event or a non-object is rejected with the reason; none of them
        refuses the batch, and every one has a line in the journal."""
        before = dropped("not_security_type")
        lock = system_log_event(
            "user.account.lock",
            login=None,
            outcome="FAILURE",
            actor={"id": "00uBOB", "type": "User", "alternateId": BOB, "displayName": "Bob"},
        )
        batch: list[Any] = [
            lock,
            system_log_event("user.mfa.factor.reset_all", login=ALICE),
            system_log_event("group.user_membership.add", login=ALICE),
            system_log_event("user.lifecycle.deactivate", login=None),
            "not an event",
        ]
        resp = sender(edge).deliver(batch)
        assert resp.status_code == 200
        got = [(r["result"], r.get("route"), r.get("reason")) for r in resp.json()["results"]]
        assert got == [
            ("accepted", "login", None),
            ("accepted", "identity", None),
            ("ignored", None, "not a security event: group.user_membership.add"),
            ("rejected", None, "user.lifecycle.deactivate: no target of type User"),
            ("rejected", None, "not a JSON object"),
        ]
        [login_batch] = [v for _, v in edge.publisher.on(TOPIC_AUTH)]
        login = LoginEvent.from_dict(login_batch[0])
        assert (login.principal, login.outcome, login.failure_reason) == (
            BOB,
            "failure",
            "LOCKED_OUT",
        )
        [identity_batch] = [v for _, v in edge.publisher.on(TOPIC_IDENTITY)]
        reset = IdentityEvent.from_dict(identity_batch[0])
        assert (reset.type, reset.principal) == ("mfa_factor_reset", ALICE)
        assert dropped("not_security_type") == before + 1
        kinds = [(e["kind"], e.get("result")) for e in journal(edge)]
        assert kinds == [
            ("edge_event", None),
            ("edge_event", None),
            ("edge_result", "ignored"),
            ("edge_result", "rejected"),
            ("edge_result", "rejected"),
        ]

    def test_a_deactivation_that_failed_is_ignored(self, edge: Edge) -> None:
        event = system_log_event("user.lifecycle.deactivate", login=ALICE, outcome="FAILURE")
        [result] = sender(edge).deliver([event]).json()["results"]
        assert (result["result"], result["reason"]) == (
            "ignored",
            "user.lifecycle.deactivate: outcome FAILURE",
        )
        assert edge.publisher.records == []

    def test_a_redelivered_batch_is_all_duplicates(self, edge: Edge) -> None:
        """Okta's retry resends the same events: each is a duplicate, nothing is published
        twice. The same uuid with other content is another event (Okta reuses uuids)."""
        batch = lifecycle_batch()
        hook = sender(edge)
        hook.deliver(batch)
        again = hook.deliver(batch).json()["results"]
        assert [r["result"] for r in again] == ["duplicate"] * 4
        reused = {**batch[0], "target": [{**batch[0]["target"][0], "alternateId": BOB}]}
        [other] = hook.deliver([reused]).json()["results"]
        assert other["result"] == "accepted"
        assert len(edge.publisher.on(TOPIC_HR)) == 5

    def test_the_same_event_twice_in_one_batch_is_published_once(self, edge: Edge) -> None:
        event = system_log_event("user.lifecycle.deactivate", login=ALICE)
        results = sender(edge).deliver([event, event]).json()["results"]
        assert [r["result"] for r in results] == ["accepted", "duplicate"]
        assert len(edge.publisher.on(TOPIC_HR)) == 1


class TestEdgeContract:
    def test_dedup_survives_a_restart_through_the_journal(self, tmp_path: Path) -> None:
        """A new process on the same data directory refills the door's memory from the
        journal: Okta's redelivery after the restart is all duplicates."""
        batch = lifecycle_batch()
        with edge_server(tmp_path, event_hook_secret=Secret(HOOK_SECRET)) as first:
            assert sender(first).deliver(batch).status_code == 200
        with edge_server(tmp_path, event_hook_secret=Secret(HOOK_SECRET)) as second:
            remembered = restore_doors(second.hr.doors, second.journal.path, time.time())
            assert remembered == {"okta_event_hook": 4}
            again = sender(second).deliver(batch).json()["results"]
            assert [r["result"] for r in again] == ["duplicate"] * 4
            assert second.publisher.records == []

    def test_broker_down_is_a_503_and_the_retry_is_accepted(self, edge: Edge) -> None:
        """503 with Retry-After while the broker is down, nothing remembered; Okta's retry
        (once, on a 5xx) after it is back is accepted."""
        batch = lifecycle_batch()[:2]
        edge.publisher.down = True
        hook = sender(edge)
        resp = hook.deliver(batch)
        assert (resp.status_code, resp.headers["Retry-After"]) == (503, "5")
        assert hook.attempts == 2  # Okta's one retry
        edge.publisher.down = False
        assert [r["result"] for r in hook.deliver(batch).json()["results"]] == ["accepted"] * 2

    def test_journal_down_is_a_503_and_nothing_is_published(
        self, edge: Edge, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The journal cannot write (disk full): 503 with Retry-After and the cause,
        nothing sent to the broker, nothing remembered; the retry after it recovers works."""

        def full(*_args: Any, **_kwargs: Any) -> None:
            raise JournalError("cannot write journal: No space left on device", reason="No space")

        batch = lifecycle_batch()[:1]
        monkeypatch.setattr(edge.journal, "write", full)
        resp = edge.session.post(
            edge.url + PATH,
            json={"data": {"events": batch}},
            headers={"Authorization": HOOK_SECRET},
        )
        assert (resp.status_code, resp.headers["Retry-After"]) == (503, "5")
        assert "journal unavailable (No space)" in resp.json()["error"]
        assert edge.publisher.records == []
        monkeypatch.undo()
        assert sender(edge).deliver(batch).json()["results"][0]["result"] == "accepted"

    def test_a_send_refused_midway_is_withdrawn_and_not_remembered(self, edge: Edge) -> None:
        """Journaled, then the broker refuses the second send: 503; the unsent entry is
        withdrawn, so neither a replay nor the restored memory counts it."""
        batch = lifecycle_batch()[:2]
        real_send = edge.publisher.send
        calls = 0

        async def flaky(*args: Any, **kwargs: Any) -> None:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise BrokerError("test outage")
            await real_send(*args, **kwargs)

        edge.publisher.send = flaky  # type: ignore[method-assign]
        door = edge.hr.doors[0]
        resp = edge.session.post(
            edge.url + PATH,
            json={"data": {"events": batch}},
            headers={"Authorization": HOOK_SECRET},
        )
        assert resp.status_code == 503
        assert len(replay_records(edge.journal.path)["hr.events"]) == 1
        assert len(journaled_ids(edge.journal.path, door.contract.source)) == 1

    def test_an_oversized_body_is_a_413(self, tmp_path: Path) -> None:
        with edge_server(tmp_path, event_hook_secret=Secret(HOOK_SECRET), max_batch=2048) as edge:
            resp = sender(edge).deliver(
                [system_log_event("user.lifecycle.deactivate", login=ALICE)] * 5
            )
            assert resp.status_code == 413

    def test_a_body_without_data_events_is_a_400(self, edge: Edge) -> None:
        resp = edge.session.post(
            edge.url + PATH, json={"data": {}}, headers={"Authorization": HOOK_SECRET}
        )
        assert (resp.status_code, resp.json()) == (400, {"error": "data.events must be an array"})


def test_the_vendor_samples_are_each_answered(edge: Edge) -> None:
    """Every Okta sample (placeholders, nulls, reused uuids) gets a result of its own in one
    batch; the deactivation in it becomes a termination (skipped, with the reason, without
    ../shared)."""
    text = sample_text("okta.ndjson")
    events = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    resp = sender(edge).deliver(events)
    assert resp.status_code == 200
    results = resp.json()["results"]
    assert len(results) == len(events)
    assert {r["result"] for r in results} <= {"accepted", "duplicate", "ignored", "rejected"}
    terminated = [HrEvent.from_dict(v) for _, v in edge.publisher.on(TOPIC_HR)]
    assert [(e.type, e.email) for e in terminated] == [("terminated", "john.doe@example.com")]
