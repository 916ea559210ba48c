"""Shared Signals receiver and transmitter (connectors/ingest/ssf): SET verification against a
transmitter's JWKS (rotation, rate-limited refetch, algorithm allow-list), the CAEP/RISC
mapping onto accessguard's records, the push edge's contract (RFC 8935), poll delivery
(RFC 8936) and outbound SETs verified by a receiver against the published JWKS.

The transmitter and receiver are local HTTP servers (tests/ssf_fakes.py); the broker producer
is tests.engine_harness.FakePublisher (the integration test, tests/test_integration_ssf.py,
uses the real broker)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization

from connectors.base.http import HttpClient, RetryPolicy
from connectors.base.pollers import CheckpointStore
from connectors.ingest.contract import journaled_ids
from connectors.ingest.edge import AuthGuard
from connectors.ingest.ssf.events import map_set
from connectors.ingest.ssf.poller import SsfPoller
from connectors.ingest.ssf.receiver import SOURCE, SsfReceiver, SsfStream
from connectors.ingest.ssf.transmitter import (
    FIRST_START_WINDOW,
    SetSigner,
    Target,
    Transmitter,
    metadata,
)
from connectors.ingest.ssf.verify import JwksCache, SetRefused, SetVerifier
from streams.bus.bootstrap import fingerprint
from streams.bus.journal import Journal
from streams.config.ssf import SsfTransmitter
from streams.model.identity import IdentityEvent
from streams.model.records import HrEvent, LeakRecord
from streams.model.registry import Registry
from streams.model.registry_yaml import load_registry
from streams.support import metrics
from streams.support.secrets import Secret
from tests.engine_harness import FakePublisher
from tests.ssf_fakes import (
    CAEP,
    POLL_TOKEN,
    RECEIVER_TOKEN,
    RISC,
    FakeTransmitter,
    fake_receiver,
    rsa_key,
)

REPO = Path(__file__).resolve().parent.parent
AUD = "https://accessguard.example.test/ssf"
PUSH_TOKEN = "ssf-push-token"
OKTA_ALICE = "00u1alicexyz0A1b2C3d4"
ALICE = {"format": "email", "email": "alice.nguyen@lumen-outdoor.example"}


class Topics:
    hr_events = "t.hr.events"
    identity_events = "t.identity.events"
    registry = "t.registry.changes"
    leak_records = "t.leak.records"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(REPO / "examples" / "registry.yaml")


@pytest.fixture
def transmitter() -> Iterator[FakeTransmitter]:
    with FakeTransmitter() as running:
        yield running


def verifier(tx: FakeTransmitter, *, refetch: float = 60.0, **kwargs: Any) -> SetVerifier:
    http = HttpClient(RetryPolicy(max_attempts=1))

    def fetch() -> Any:
        meta = http.request("ssf:test", "GET", tx.metadata_url, ok=(200,)).json()
        return http.request("ssf:test", "GET", meta["jwks_uri"], ok=(200,)).json()

    jwks = JwksCache("test", fetch, refetch_seconds=refetch)
    args: dict[str, Any] = {
        "issuer": tx.issuer,
        "audience": AUD,
        "algorithms": ["RS256", "ES256"],
        "jwks": jwks,
        "max_age": 3600,
        "skew": 60,
    }
    args.update(kwargs)
    return SetVerifier("test", **args)


def disabled() -> dict[str, Any]:
    return {RISC + "account-disabled": {}}


def refused(reason: str, transmitter: str = "test") -> float:
    return metrics.SSF_SETS_REFUSED.labels(transmitter, reason)._value.get()


class TestVerify:
    def test_a_set_signed_by_the_transmitter_key_verifies(
        self, transmitter: FakeTransmitter
    ) -> None:
        """iss, aud, jti and events come back from a SET signed with a key of the JWKS."""
        token = transmitter.make_set(disabled(), audience=AUD, sub_id=ALICE, jti="j-1")
        verified = verifier(transmitter).verify(token)
        assert verified.jti == "j-1"
        assert verified.iss == transmitter.issuer
        assert list(verified.events) == [RISC + "account-disabled"]

    @pytest.mark.parametrize(
        ("change", "err", "reason", "says"),
        [
            ({"key": "other"}, "invalid_key", "invalid_signature", "signature"),
            ({"audience": "https://else.example"}, "invalid_audience", "invalid_audience", "aud"),
            ({"iss": "https://impostor.example"}, "invalid_issuer", "invalid_issuer", "iss"),
            ({"iat": 1000.0}, "invalid_request", "stale", "iat"),
            ({"kid": "nobody"}, "invalid_key", "invalid_key", "kid"),
        ],
    )
    def test_a_set_failing_one_check_is_refused_with_its_rfc8935_code(
        self,
        transmitter: FakeTransmitter,
        change: dict[str, Any],
        err: str,
        reason: str,
        says: str,
    ) -> None:
        """A wrong signature (another key under the JWKS's kid), audience, issuer, an old iat
        or an unknown kid each raise SetRefused with the RFC 8935 error and metric reason."""
        args: dict[str, Any] = {"audience": AUD, "sub_id": ALICE}
        if change.get("key") == "other":
            args["key"] = rsa_key()
        else:
            args.update(change)
        token = transmitter.make_set(disabled(), **args)
        with pytest.raises(SetRefused, match=says) as caught:
            verifier(transmitter).verify(token)
        assert (caught.value.err, caught.value.metric) == (err, reason)

    @pytest.mark.parametrize("alg", ["none", "HS256"])
    def test_none_and_symmetric_algorithms_are_never_accepted(
        self, transmitter: FakeTransmitter, alg: str
    ) -> None:
        """``alg: none`` and HS256 (anyone holding the public JWKS could forge) are refused
        before any key is looked up, whatever the configuration lists."""
        key = "secret-secret-secret-secret-32by" if alg == "HS256" else None
        token = jwt.encode(
            {"iss": transmitter.issuer, "aud": AUD, "iat": int(time.time()), "jti": "x",
             "events": disabled()},
            key,
            algorithm=alg,
            headers={"kid": "k1", "typ": "secevent+jwt"},
        )  # fmt: skip
        with pytest.raises(SetRefused, match="not accepted"):
            verifier(transmitter, algorithms=["RS256", "none", "HS256"]).verify(token)
        with pytest.raises(ValueError, match="refused"):
            SsfTransmitter(issuer="i", audience="a", algorithms=[alg])

    def test_key_rotation_is_followed_by_refetching_for_an_unknown_kid(
        self, transmitter: FakeTransmitter
    ) -> None:
        """After the transmitter rotates its key, the first SET with the new kid refetches
        the JWKS and verifies; made-up kids within the refetch interval cost no fetch."""
        check = verifier(transmitter, refetch=0.0)
        check.verify(transmitter.make_set(disabled(), audience=AUD))
        assert transmitter.jwks_fetches == 1
        transmitter.rotate()
        check.verify(transmitter.make_set(disabled(), audience=AUD))
        assert transmitter.jwks_fetches == 2

        limited = verifier(transmitter, refetch=3600.0)
        limited.verify(transmitter.make_set(disabled(), audience=AUD))
        fetches = transmitter.jwks_fetches
        for n in range(5):
            kid = f"made-up-{n}"
            with pytest.raises(SetRefused, match="kid") as caught:
                limited.verify(transmitter.make_set(disabled(), audience=AUD, kid=kid))
            # held back by the rate limit: "retry later", not a final refusal
            assert caught.value.retry_after is not None
            assert 0 < caught.value.retry_after <= 3600
        assert transmitter.jwks_fetches == fetches


class TestMapping:
    def _map(
        self, tx: FakeTransmitter, registry: Registry, events: dict[str, Any], **kw: Any
    ) -> Any:
        token = tx.make_set(events, audience=AUD, **kw)
        verified = verifier(tx).verify(token)
        return map_set(
            verified, transmitter="idp", registry=registry, alias_provider="okta", now=time.time()
        )

    def test_account_disabled_is_a_termination_of_the_registry_identity(
        self, transmitter: FakeTransmitter, registry: Registry
    ) -> None:
        """RISC account-disabled and account-purged become `terminated` HR events about the
        identity the subject names, with a deterministic event id."""
        for event in ("account-disabled", "account-purged"):
            [mapped] = self._map(
                transmitter, registry, {RISC + event: {}}, sub_id=ALICE, jti="same"
            )
            assert mapped.outcome == "hr_event"
            record = mapped.record
            assert isinstance(record, HrEvent)
            assert (record.type, record.employee_id, record.source) == (
                "terminated", "E1001", "ssf:idp",
            )  # fmt: skip
            assert record.event_id.startswith("ssf-")
            HrEvent.from_dict(record.to_dict())  # the topic format validates

    @pytest.mark.parametrize(
        "sub_id",
        [
            {"format": "iss_sub", "iss": "https://idp.example.test", "sub": OKTA_ALICE},
            {"format": "opaque", "id": OKTA_ALICE},
            {"user": {"format": "email", "email": "ALICE.NGUYEN@lumen-outdoor.example"},
             "device": {"format": "opaque", "id": "dev-1"}},
            {"format": "complex", "user": {"format": "iss_sub", "iss": "x", "sub": OKTA_ALICE}},
            {"format": "aliases", "identifiers": [{"format": "opaque", "id": "nobody"}, ALICE]},
        ],
    )  # fmt: skip
    def test_every_subject_format_resolves_to_the_identity(
        self, transmitter: FakeTransmitter, registry: Registry, sub_id: dict[str, Any]
    ) -> None:
        """iss_sub and opaque ids resolve as aliases in the stream's namespace, e-mails
        case-insensitively, complex subjects by their user member."""
        [mapped] = self._map(transmitter, registry, disabled(), sub_id=sub_id)
        assert mapped.record.employee_id == "E1001"

    def test_the_subject_may_sit_in_the_event_as_in_the_caep_drafts(
        self, transmitter: FakeTransmitter, registry: Registry
    ) -> None:
        """Without ``sub_id`` the event's own ``subject`` names the person."""
        [mapped] = self._map(transmitter, registry, {RISC + "account-disabled": {"subject": ALICE}})
        assert mapped.record.employee_id == "E1001"

    def test_credential_events_are_leaks_with_a_credential(
        self, transmitter: FakeTransmitter, registry: Registry
    ) -> None:
        """RISC credential-compromise and CAEP credential-change become LeakRecords whose
        credential is exposed, so the leak rules decide the response."""
        events = {
            RISC + "credential-compromise": {"credential_type": "password"},
            CAEP + "credential-change": {"credential_type": "password", "change_type": "update"},
        }
        mapped = self._map(transmitter, registry, events, sub_id=ALICE)
        assert [m.outcome for m in mapped] == ["leak", "leak"]
        for item in mapped:
            assert isinstance(item.record, LeakRecord)
            assert item.record.credential_exposed
            assert item.record.principal == "alice.nguyen@lumen-outdoor.example"
            LeakRecord.from_dict(item.record.to_dict())

    def test_session_and_assurance_events_are_identity_events_for_the_rules(
        self, transmitter: FakeTransmitter, registry: Registry
    ) -> None:
        """CAEP session-revoked and assurance-level-change become identity events (rules
        ssf_session_revoked and ssf_assurance_level_changed decide)."""
        events = {
            CAEP + "session-revoked": {"reason_admin": {"en": "risky device"}},
            CAEP + "assurance-level-change": {
                "namespace": "NIST-AAL", "current_level": "nist-aal1",
                "previous_level": "nist-aal2", "change_direction": "decrease",
            },
        }  # fmt: skip
        mapped = self._map(transmitter, registry, events, sub_id=ALICE)
        kinds = [(m.record.type, m.record.identity, m.record.reason) for m in mapped]
        assert kinds == [
            ("session_revoked", "alice", "risky device"),
            ("assurance_level_changed", "alice", "decrease"),
        ]
        for item in mapped:
            IdentityEvent.from_dict(item.record.to_dict())

    def test_identifier_changed_replaces_the_email_through_a_registry_change(
        self, transmitter: FakeTransmitter, registry: Registry
    ) -> None:
        """RISC identifier-changed: a registry change of the identity, old e-mail out."""
        events = {RISC + "identifier-changed": {"new-value": "alice.n@lumen-outdoor.example"}}
        [mapped] = self._map(transmitter, registry, events, sub_id=ALICE)
        key, value = mapped.record
        assert key == "identity:alice"
        assert value["emails"] == ["alice.n@lumen-outdoor.example"]
        assert value["aliases"]["okta"] == "00u1alicexyz0A1b2C3d4"

    def test_verification_unknown_types_and_strangers_act_on_nothing(
        self, transmitter: FakeTransmitter, registry: Registry
    ) -> None:
        """The SSF verification event carries its state; an event type not acted on and an
        opaque subject nobody holds are ignored."""
        events = {
            "https://schemas.openid.net/secevent/ssf/event-type/verification": {"state": "s-1"},
            CAEP + "token-claims-change": {},
            RISC + "account-disabled": {},
        }
        mapped = self._map(
            transmitter, registry, events, sub_id={"format": "opaque", "id": "nobody"}
        )
        assert [(m.outcome, m.record) for m in mapped] == [
            ("verification", None), ("ignored", None), ("ignored", None),
        ]  # fmt: skip
        assert mapped[0].note == "s-1"


# ----------------------------------------------------------------------------- push edge


def make_receiver(
    tx: FakeTransmitter, registry: Registry, journal: Journal, publisher: FakePublisher
) -> SsfReceiver:
    stream = SsfStream("test", verifier(tx), Secret(PUSH_TOKEN), "okta")
    return SsfReceiver(
        {"test": stream},
        publisher=publisher,
        journal=journal,
        topics=Topics,
        partitions=4,
        registry=lambda: registry,
        max_bytes=8192,
        dedup_ttl=3600,
        guard=AuthGuard(limit=100),
    )


def leaks_published(publisher: FakePublisher) -> list[LeakRecord]:
    """The LeakRecords of every acknowledged leak.records batch."""
    return [
        LeakRecord.from_dict(r) for _, batch in publisher.on(Topics.leak_records) for r in batch
    ]


def push(
    receiver: SsfReceiver, bodies: list[tuple[bytes, dict[str, str]]]
) -> list[tuple[int, dict[str, Any] | None, dict[str, str]]]:
    """POST each body to /ssf/push/test of a served receiver; (status, JSON body, headers)."""

    async def go() -> list[tuple[int, dict[str, Any] | None, dict[str, str]]]:
        app = web.Application()
        app.router.add_post("/ssf/push/{transmitter}", receiver.handle_push)
        server = TestServer(app)
        await server.start_server()
        out = []
        try:
            async with ClientSession() as session:
                for body, headers in bodies:
                    async with session.post(
                        server.make_url("/ssf/push/test"), data=body, headers=headers
                    ) as resp:
                        raw = await resp.read()
                        out.append(
                            (resp.status, orjson.loads(raw) if raw else None, dict(resp.headers))
                        )
        finally:
            await server.close()
        return out

    return asyncio.run(go())


def headers(token: str = PUSH_TOKEN, ctype: str = "application/secevent+jwt") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": ctype}


class TestPushEdge:
    def test_a_set_is_journaled_published_then_answered_202(
        self, tmp_path: Path, transmitter: FakeTransmitter, registry: Registry
    ) -> None:
        """A verified account-disabled SET: the HR event and the ssf_set entry are in the
        journal, the HR event on hr.events, then 202 with no body (RFC 8935 §2.2)."""
        publisher = FakePublisher()
        journal = Journal(tmp_path / "journal.jsonl", fsync=False)
        receiver = make_receiver(transmitter, registry, journal, publisher)
        token = transmitter.make_set(disabled(), audience=AUD, sub_id=ALICE, jti="push-1")
        [(status, body, hdrs)] = push(receiver, [(token.encode(), headers())])
        assert (status, body, hdrs["X-AccessGuard-Status"]) == (202, None, "accepted")
        [(topic, _key, value)] = publisher.records
        assert (topic, value["type"], value["employee_id"]) == (
            Topics.hr_events,
            "terminated",
            "E1001",
        )
        kinds = [e["kind"] for e in orjson_lines(tmp_path / "journal.jsonl")]
        assert kinds == ["hr_event", "ssf_set"]

    def test_a_repeated_jti_is_refused_and_counted_also_after_a_restart(
        self, tmp_path: Path, transmitter: FakeTransmitter, registry: Registry
    ) -> None:
        """The same jti again is answered 202 `duplicate` without a second publish, counted
        as refused (duplicate); a receiver restored from the journal says the same."""
        publisher = FakePublisher()
        journal = Journal(tmp_path / "journal.jsonl", fsync=False)
        receiver = make_receiver(transmitter, registry, journal, publisher)
        token = transmitter.make_set(disabled(), audience=AUD, sub_id=ALICE, jti="dup-1")
        before = refused("duplicate")
        answers = push(receiver, [(token.encode(), headers())] * 2)
        assert [(s, h["X-AccessGuard-Status"]) for s, _, h in answers] == [
            (202, "accepted"), (202, "duplicate"),
        ]  # fmt: skip
        assert len(publisher.records) == 1
        assert refused("duplicate") == before + 1

        again = make_receiver(transmitter, registry, journal, publisher)
        assert again.contract.restore(tmp_path / "journal.jsonl", time.time()) == 1
        [(status, _, hdrs)] = push(again, [(token.encode(), headers())])
        assert (status, hdrs["X-AccessGuard-Status"]) == (202, "duplicate")
        assert len(publisher.records) == 1

    def test_refusals_answer_with_the_reason_and_are_counted(
        self, tmp_path: Path, transmitter: FakeTransmitter, registry: Registry
    ) -> None:
        """Wrong Authorization 401; wrong Content-Type 400; oversize 413; a wrong signature
        or audience 400 with the RFC 8935 err; nothing published; each counted by reason."""
        publisher = FakePublisher()
        journal = Journal(tmp_path / "journal.jsonl", fsync=False)
        receiver = make_receiver(transmitter, registry, journal, publisher)
        forged = transmitter.make_set(disabled(), audience=AUD, sub_id=ALICE, key=rsa_key())
        elsewhere = transmitter.make_set(disabled(), audience="https://x.example", sub_id=ALICE)
        good = transmitter.make_set(disabled(), audience=AUD, sub_id=ALICE)
        reasons = ("not_authorized", "invalid_signature", "invalid_audience", "too_large")
        counted = {r: refused(r) for r in (*reasons, "invalid_request")}
        answers = push(
            receiver,
            [
                (good.encode(), headers(token="wrong")),
                (good.encode(), headers(ctype="application/json")),
                (b"x" * 9000, headers()),
                (forged.encode(), headers()),
                (elsewhere.encode(), headers()),
            ],
        )
        assert [(s, (b or {}).get("err")) for s, b, _ in answers] == [
            (401, "authentication_failed"),
            (400, "invalid_request"),
            (413, "invalid_request"),
            (400, "invalid_key"),
            (400, "invalid_audience"),
        ]
        assert publisher.records == []
        for reason, before in counted.items():
            assert refused(reason) == before + 1, reason

    def test_an_unknown_kid_within_the_refetch_limit_answers_503_retry_later(
        self, tmp_path: Path, transmitter: FakeTransmitter, registry: Registry
    ) -> None:
        """Right after a JWKS fetch a SET with a new kid cannot be checked yet (the refetch
        is rate-limited): 503 with Retry-After, so the transmitter resends it once the
        receiver may fetch the rotated key, instead of a 400 it would never resend."""
        receiver = make_receiver(
            transmitter, registry, Journal(tmp_path / "j.jsonl", fsync=False), FakePublisher()
        )
        known = transmitter.make_set(disabled(), audience=AUD, sub_id=ALICE)
        [(status, _, _)] = push(receiver, [(known.encode(), headers())])  # fetches the JWKS
        assert status == 202
        transmitter.rotate()
        rotated = transmitter.make_set(disabled(), audience=AUD, sub_id=ALICE)
        [(status, body, hdrs)] = push(receiver, [(rotated.encode(), headers())])
        assert (status, (body or {}).get("err")) == (503, "invalid_key")
        assert 1 <= int(hdrs["Retry-After"]) <= 60

    def test_broker_down_answers_503_and_the_retry_is_not_a_duplicate(
        self, tmp_path: Path, transmitter: FakeTransmitter, registry: Registry
    ) -> None:
        """A broker that does not acknowledge: 503 with Retry-After, the journal entries
        withdrawn (a restart does not remember the jti), and the retry is accepted."""
        publisher = FakePublisher()
        journal = Journal(tmp_path / "journal.jsonl", fsync=False)
        receiver = make_receiver(transmitter, registry, journal, publisher)
        token = transmitter.make_set(disabled(), audience=AUD, sub_id=ALICE, jti="retry-1")
        original = publisher.send

        async def failing_once(*args: Any, **kwargs: Any) -> None:
            # reachable until the write itself: the broker goes away mid-request
            publisher.send = original  # type: ignore[method-assign]
            publisher.fail_next(1)
            await original(*args, **kwargs)

        publisher.send = failing_once  # type: ignore[method-assign]
        [(status, body, hdrs)] = push(receiver, [(token.encode(), headers())])
        assert (status, hdrs.get("Retry-After")) == (503, "5"), body
        assert journaled_ids(tmp_path / "journal.jsonl", SOURCE) == []
        [(status, _, hdrs)] = push(receiver, [(token.encode(), headers())])
        assert (status, hdrs["X-AccessGuard-Status"]) == (202, "accepted")

    def test_a_set_of_several_records_is_withdrawn_whole_when_one_send_fails(
        self, tmp_path: Path, transmitter: FakeTransmitter, registry: Registry
    ) -> None:
        """A SET whose events become an identity event and a leak: the broker acknowledges
        the first and refuses the second, so 503, every journal entry of that jti withdrawn
        (a restart neither remembers the jti nor replays part of it), and the retry is
        accepted and publishes both records, not answered as a duplicate."""
        publisher = FakePublisher()
        journal = Journal(tmp_path / "journal.jsonl", fsync=False)
        receiver = make_receiver(transmitter, registry, journal, publisher)
        events = {CAEP + "session-revoked": {}, RISC + "credential-compromise": {}}
        token = transmitter.make_set(events, audience=AUD, sub_id=ALICE, jti="two-records")
        original = publisher.send

        async def second_send_fails(*args: Any, **kwargs: Any) -> None:
            publisher.send = original  # type: ignore[method-assign]
            await original(*args, **kwargs)
            publisher.fail_next(1)  # the broker goes away after the first acknowledgement

        publisher.send = second_send_fails  # type: ignore[method-assign]
        [(status, body, _)] = push(receiver, [(token.encode(), headers())])
        assert (status, (body or {}).get("err")) == (503, "unavailable")
        assert [t for t, _, _ in publisher.records] == [Topics.identity_events]
        assert journaled_ids(tmp_path / "journal.jsonl", SOURCE) == []
        [(status, _, hdrs)] = push(receiver, [(token.encode(), headers())])
        assert (status, hdrs["X-AccessGuard-Status"]) == (202, "accepted")
        assert [t for t, _, _ in publisher.records] == [
            Topics.identity_events, Topics.identity_events, Topics.leak_records,
        ]  # fmt: skip

    def test_a_set_that_publishes_nothing_is_still_remembered_across_a_restart(
        self, tmp_path: Path, transmitter: FakeTransmitter, registry: Registry
    ) -> None:
        """A verification SET publishes no record; its ssf_set entry alone (journal only)
        carries its jti, so a receiver restored from the journal answers its repeat as a
        duplicate."""
        publisher = FakePublisher()
        journal = Journal(tmp_path / "journal.jsonl", fsync=False)
        receiver = make_receiver(transmitter, registry, journal, publisher)
        verification = {"https://schemas.openid.net/secevent/ssf/event-type/verification": {}}
        token = transmitter.make_set(verification, audience=AUD, sub_id=ALICE, jti="verify-1")
        [(status, _, hdrs)] = push(receiver, [(token.encode(), headers())])
        assert (status, hdrs["X-AccessGuard-Status"]) == (202, "accepted")
        assert publisher.records == []
        assert [e["kind"] for e in orjson_lines(tmp_path / "journal.jsonl")] == ["ssf_set"]
        again = make_receiver(transmitter, registry, journal, publisher)
        assert again.contract.restore(tmp_path / "journal.jsonl", time.time()) == 1
        [(status, _, hdrs)] = push(again, [(token.encode(), headers())])
        assert (status, hdrs["X-AccessGuard-Status"]) == (202, "duplicate")


def orjson_lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


# ----------------------------------------------------------------------------- poll


class TestPoll:
    def test_poll_acks_only_what_was_journaled_and_reports_refusals(
        self, tmp_path: Path, transmitter: FakeTransmitter, registry: Registry
    ) -> None:
        """Round 1 fetches two SETs (one for another audience); round 2's request acks the
        journaled jti and lists the refused one in setErrs, and the transmitter has nothing
        left to deliver."""
        publisher = FakePublisher()
        journal = Journal(tmp_path / "journal.jsonl", fsync=False)
        receiver = make_receiver(transmitter, registry, journal, publisher)
        transmitter.queue(
            "p-good",
            transmitter.make_set(
                {RISC + "credential-compromise": {}}, audience=AUD, sub_id=ALICE, jti="p-good"
            ),
        )
        transmitter.queue("p-bad", transmitter.make_set(
            disabled(), audience="https://x.example", sub_id=ALICE, jti="p-bad"))  # fmt: skip
        poller = SsfPoller(
            receiver.streams["test"],
            receiver,
            url=f"{transmitter.url}/poll",
            token=Secret(POLL_TOKEN),
            max_events=10,
            interval=1.0,
            http=HttpClient(RetryPolicy(max_attempts=1)),
            checkpoints=CheckpointStore(tmp_path / "checkpoints"),
        )

        async def rounds() -> None:
            await poller.poll_once()
            await poller.poll_once()

        asyncio.run(rounds())
        first, second = transmitter.poll_requests[:2]
        assert first == {"ack": [], "maxEvents": 10, "returnImmediately": True}
        assert second["ack"] == ["p-good"]
        assert second["setErrs"]["p-bad"]["err"] == "invalid_audience"
        assert transmitter.pending == {}
        assert [leak.principal for leak in leaks_published(publisher)] == [
            "alice.nguyen@lumen-outdoor.example"
        ]
        assert poller.status["consecutive_failures"] == 0


# ----------------------------------------------------------------------------- transmit


def pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class TestTransmit:
    def test_revocations_are_pushed_as_sets_that_verify_against_the_published_jwks(
        self, registry: Registry
    ) -> None:
        """An audited, done revoke_sessions and disable_account become CAEP session-revoked
        and RISC account-disabled SETs about the identity's e-mail, which a receiver verifies
        against the JWKS; the same revocation audited again is not sent twice."""
        signer = SetSigner(pem(rsa_key()), kid="ag-1", issuer="https://accessguard.example.test")

        with fake_receiver(issuer=signer.issuer, audience="https://app.example.test") as rx:
            jwks_server = serve_json(signer.jwks())
            rx.jwks_url = jwks_server.url
            transmitter = Transmitter(
                signer,
                [Target("app", rx.url, "https://app.example.test", Secret(RECEIVER_TOKEN),
                        frozenset({"session-revoked", "account-disabled"}))],
                http=HttpClient(RetryPolicy(max_attempts=2, base_delay=0.01)),
                policy=RetryPolicy(max_attempts=2, base_delay=0.01),
                registry=lambda: registry,
            )  # fmt: skip
            now = time.time()
            records = [
                audit("revoke_sessions", now, provider="okta"),
                audit("revoke_sessions", now + 1, provider="entra"),  # same cause: same jti
                audit("disable_account", now + 2),
                audit("disable_account", now + 3, status="failed"),
                audit("remove_grant", now + 4),
            ]

            async def run() -> list[int]:
                return [await transmitter.handle(r) for r in records]

            assert asyncio.run(run()) == [1, 0, 1, 0, 0]
            jwks_server.close()
        assert rx.refused == []
        events = [next(iter(claims["events"])) for claims in rx.received]
        assert events == [CAEP + "session-revoked", RISC + "account-disabled"]
        assert rx.received[0]["sub_id"] == ALICE
        assert transmitter.status["app"]["delivered"] == 2
        assert metadata(signer, "https://ag.example.test")["jwks_uri"] == (
            "https://ag.example.test/.well-known/jwks.json"
        )

    def test_a_receiver_that_refuses_is_counted_and_never_raises(self, registry: Registry) -> None:
        """A receiver answering 401 (wrong token): the delivery is counted failed, its
        status says why, the receiver is marked down, and handle() returns normally."""
        signer = SetSigner(pem(rsa_key()), kid="ag-1", issuer="https://accessguard.example.test")
        with fake_receiver(issuer=signer.issuer, audience="a") as rx:
            transmitter = Transmitter(
                signer,
                [Target("down", rx.url, "a", Secret("wrong"), frozenset({"session-revoked"}))],
                http=HttpClient(RetryPolicy(max_attempts=1)),
                policy=RetryPolicy(max_attempts=1),
                registry=lambda: registry,
            )
            assert asyncio.run(transmitter.handle(audit("revoke_sessions", time.time()))) == 0
        assert transmitter.status["down"]["failed"] == 1
        assert "401" in transmitter.status["down"]["last_error"]
        assert metrics.SSF_RECEIVER_UP.labels("down")._value.get() == 0


def at(partition: int, offset: int, record: dict[str, Any]) -> tuple[int, list[Any]]:
    """Where a record was read: its partition and fingerprint, as the transmitter's run()."""
    raw = SimpleNamespace(
        offset=offset, timestamp=1_700_000_000_000 + offset, key=b"k", value=orjson.dumps(record)
    )
    return partition, list(fingerprint(raw))


def test_a_set_that_failed_is_pushed_again_and_holds_the_checkpoint(
    registry: Registry, tmp_path: Path
) -> None:
    """A receiver down through the HTTP policy's retries: the SET waits, the checkpoint stays
    at its audit record (fingerprinted: a restart finds it and re-reads it), and once the
    receiver is back the retry delivers it, re-signed, and the checkpoint moves on."""
    signer = SetSigner(pem(rsa_key()), kid="ag-1", issuer="https://accessguard.example.test")
    jwks = serve_json(signer.jwks())
    store = CheckpointStore(tmp_path)
    clock = [time.time()]
    with fake_receiver(issuer=signer.issuer, audience="a", jwks_url=jwks.url) as rx:
        transmitter = Transmitter(
            signer,
            [Target("app", rx.url, "a", Secret(RECEIVER_TOKEN), frozenset({"session-revoked"}))],
            http=HttpClient(RetryPolicy(max_attempts=2, base_delay=0.01)),
            policy=RetryPolicy(max_attempts=2, base_delay=0.01),
            registry=lambda: registry,
            checkpoints=store,
            clock=lambda: clock[0],
        )
        rx.down = True
        record = audit("revoke_sessions", clock[0])
        held = at(2, 41, record)
        assert asyncio.run(transmitter.handle(record, held)) == 0
        transmitter.read(*held)  # what run() does after each record
        other = at(0, 6, audit("remove_grant", clock[0]))
        transmitter.read(*other)
        transmitter.checkpoint()
        saved = store.load("ssf-transmitter")["resume"]
        assert saved == {"0": [7, other[1]], "2": [41, held[1]]}  # at the held record itself
        rx.down = False
        assert asyncio.run(transmitter.retry_due()) == 0  # not due yet
        clock[0] += 31
        assert asyncio.run(transmitter.retry_due()) == 1
        transmitter.checkpoint()
        assert store.load("ssf-transmitter")["resume"]["2"] == [42, held[1]]  # after it
    jwks.close()
    assert [next(iter(c["events"])) for c in rx.received] == [CAEP + "session-revoked"]
    assert transmitter.status["app"]["failed"] == 1


def test_records_from_partitions_read_out_of_time_order_are_all_transmitted(
    registry: Registry, tmp_path: Path
) -> None:
    """The audit topic's partitions are read interleaved: a revocation read after a later one
    (another partition) is transmitted too (CI once lost alice's SETs behind bob's). A
    partition resumed at its checkpoint has no time floor; one read from its beginning (a
    first start, a log that changed) skips what is older than the first-start window."""
    signer = SetSigner(pem(rsa_key()), kid="ag-1", issuer="https://accessguard.example.test")
    jwks = serve_json(signer.jwks())
    store = CheckpointStore(tmp_path)
    now = time.time()
    events = frozenset({"session-revoked", "account-disabled"})

    def make() -> Transmitter:
        return Transmitter(
            signer,
            [Target("app", rx.url, "a", Secret(RECEIVER_TOKEN), events)],
            http=HttpClient(RetryPolicy(max_attempts=1)),
            policy=RetryPolicy(max_attempts=1),
            registry=lambda: registry,
            checkpoints=store,
        )

    with fake_receiver(issuer=signer.issuer, audience="a", jwks_url=jwks.url) as rx:
        first = make()
        for part in (0, 1):
            first.from_beginning(part)  # a first start
        later = {**audit("revoke_sessions", now), "cause": "ssf:bob"}
        earlier = audit("disable_account", now - 5)
        history = audit("revoke_sessions", now - FIRST_START_WINDOW - 60)

        async def go() -> list[int]:
            return [
                await first.handle(later, at(1, 0, later)),
                await first.handle(earlier, at(0, 0, earlier)),
                await first.handle(history, at(0, 1, history)),
            ]

        assert asyncio.run(go()) == [1, 1, 0]
        first.read(*at(1, 0, later))
        first.checkpoint()
        again = make()
        assert again.resume[1] == (1, at(1, 0, later)[1])
        assert asyncio.run(again.handle(history, at(1, 1, history))) == 1  # resumed: no floor
        again.from_beginning(0)
        assert asyncio.run(again.handle(history, at(0, 1, history))) == 0
    jwks.close()
    assert len(rx.received) == 3


def audit(
    action: str, ts: float, *, provider: str = "okta", status: str = "done"
) -> dict[str, Any]:
    return {
        "ts": ts,
        "kind": "action",
        "type": "action",
        "action": action,
        "identity": "alice",
        "account": None,
        "provider": provider,
        "cause": "hr:story-1",
        "idempotency_key": f"{action}-{provider}-{ts}",
        "outcome": {"status": status},
    }


class _JsonServer:
    def __init__(self, body: Any) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        data = orjson.dumps(body)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_json(body: Any) -> _JsonServer:
    return _JsonServer(body)


class TestConfig:
    def test_ssf_secrets_are_checked_at_start_and_bad_algorithms_refused(
        self, tmp_path: Path
    ) -> None:
        """Every SSF secret is a use of the secret check (an unset env: one stops start-up);
        a stream allowing HS256 is a configuration error naming the key."""
        from streams.config import load_config
        from streams.runtime.secretcheck import secret_uses
        from streams.support.errors import ConfigError

        stream = {"issuer": "https://idp.test", "audience": AUD, "jwks_uri": "https://idp.test/k"}
        path = tmp_path / "config.yaml"
        path.write_text(
            orjson.dumps(
                {
                    "hr": {"webhook_secret": "x"},
                    "ssf": {
                        "signing_key": "env:SSF_KEY_UNSET",
                        "transmitters": {"idp": {**stream, "push_token": "env:SSF_PUSH"}},
                        "receivers": {"app": {"url": "https://a.test", "audience": "a",
                                              "token": "t"}},
                    },
                }
            ).decode()
        )  # fmt: skip
        config = load_config(path, env={})
        uses = {u.path: u.needed for u in secret_uses(config, serve_hr=True, execute=True)}
        assert uses["ssf.signing_key"] is True
        assert uses["ssf.transmitters.idp.push_token"] is True
        assert uses["ssf.receivers.app.token"] is True

        path.write_text(
            orjson.dumps({"ssf": {"transmitters": {"idp": {**stream, "algorithms": ["HS256"]}}}})
            .decode()
        )  # fmt: skip
        with pytest.raises(ConfigError, match=r"ssf\.transmitters\.idp\.algorithms"):
            load_config(path, env={})
