"""Standard Webhooks on POST /v1/hr/events (issue 19): the spec's published test vectors
verify; a wrong, stale or replayed signature is a 401 with the reason; several signatures and
several keys (rotation) work; ``webhook-id`` is the dedup key, also for a restarted edge.

The vectors are those of the standard-webhooks repository's libraries
(libraries/python/tests/test_webhooks.py, the same in every language): key
``whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw``, message ``msg_p5jXN8AQM9LWM0D4loKWxJek`` at
1614265330 over ``{"test": 2432232314}`` signs to
``v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=``.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import orjson
import pytest

from connectors.ingest import standard_webhooks as stdwh
from connectors.ingest.edge import SignatureError
from streams.bus.journal import replay_records
from streams.model.records import HrEvent
from streams.support.metrics import REGISTRY
from streams.support.secrets import Secret
from tests.edge_harness import TOPIC_HR, Edge, edge_server

VECTOR_KEY = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
#: The libraries' "invalid signature" case: the last base64 digit changed.
VECTOR_WRONG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="

KEY = "whsec_" + base64.b64encode(b"accessguard-test-key-0123456789ab").decode()
OLD_KEY = "whsec_" + base64.b64encode(b"accessguard-old-key-0123456789abc").decode()


def _headers(sig: str, msg_id: str = VECTOR_ID, ts: int = VECTOR_TS) -> dict[str, str]:
    return {stdwh.ID_HEADER: msg_id, stdwh.TIMESTAMP_HEADER: str(ts), stdwh.SIGNATURE_HEADER: sig}


def _verify(headers: dict[str, str], *, key: str = VECTOR_KEY, now: float = VECTOR_TS) -> object:
    return stdwh.verify(stdwh.keys(key), headers, VECTOR_BODY, now=now, tolerance=300)


class TestPublishedVectors:
    def test_the_published_vector_verifies_and_signs_the_same(self) -> None:
        """The vector's signature verifies (with and without the whsec_ prefix), and signing
        the vector's message gives the published header."""
        assert _verify(_headers(VECTOR_SIG)) == (VECTOR_ID, VECTOR_TS)
        assert _verify(_headers(VECTOR_SIG), key=VECTOR_KEY.removeprefix("whsec_")) == (
            VECTOR_ID,
            VECTOR_TS,
        )
        signed = stdwh.sign(VECTOR_KEY, VECTOR_ID, VECTOR_BODY, VECTOR_TS)
        assert signed[stdwh.SIGNATURE_HEADER] == VECTOR_SIG

    def test_the_published_invalid_signature_is_refused(self) -> None:
        """The libraries' invalid-signature case does not verify."""
        with pytest.raises(SignatureError, match="signature does not match"):
            _verify(_headers(VECTOR_WRONG))

    def test_one_good_signature_among_several_verifies(self) -> None:
        """The libraries' multi-signature case: wrong v1, a v2, the good one, wrong v1."""
        sigs = [
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
            "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
            VECTOR_SIG,
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
        ]
        assert _verify(_headers(" ".join(sigs)))[0] == VECTOR_ID  # type: ignore[index]

    def test_another_body_id_or_timestamp_breaks_the_signature(self) -> None:
        """The id and the timestamp are signed, not only the body."""
        with pytest.raises(SignatureError, match="does not match"):
            _verify(_headers(VECTOR_SIG, msg_id="msg_other"))
        with pytest.raises(SignatureError, match="does not match"):
            _verify(_headers(VECTOR_SIG, ts=VECTOR_TS + 1), now=VECTOR_TS + 1)

    @pytest.mark.parametrize("skew", [301, -301])
    def test_a_timestamp_outside_the_tolerance_is_stale(self, skew: int) -> None:
        """Too old or too far ahead, a correct signature is still refused as stale."""
        with pytest.raises(SignatureError, match="outside the 300s tolerance") as info:
            _verify(_headers(VECTOR_SIG), now=VECTOR_TS + skew)
        assert info.value.metric == "stale_signature"

    @pytest.mark.parametrize(
        ("headers", "message"),
        [
            ({stdwh.ID_HEADER: VECTOR_ID, stdwh.TIMESTAMP_HEADER: str(VECTOR_TS)}, "missing"),
            ({stdwh.TIMESTAMP_HEADER: str(VECTOR_TS), stdwh.SIGNATURE_HEADER: VECTOR_SIG}, "needs"),
            (_headers(VECTOR_SIG) | {stdwh.TIMESTAMP_HEADER: "16e8"}, "not unix seconds"),
            (_headers(VECTOR_SIG) | {stdwh.ID_HEADER: "msg\udcff"}, "webhook-id: at most 200"),
            (_headers(VECTOR_SIG) | {stdwh.ID_HEADER: "a b"}, "webhook-id: at most 200"),
            (_headers(VECTOR_SIG) | {stdwh.TIMESTAMP_HEADER: "9" * 400}, "not unix seconds"),
        ],
    )
    def test_malformed_headers_are_refused_with_a_reason(
        self, headers: dict[str, str], message: str
    ) -> None:
        with pytest.raises(SignatureError, match=message):
            _verify(headers)

    def test_keys_name_the_bad_one(self) -> None:
        """A configured key that is not base64 is refused at start, naming its position."""
        assert len(stdwh.keys(f"{KEY} {OLD_KEY}")) == 2
        with pytest.raises(ValueError, match="secret 2 is not a Standard Webhooks key"):
            stdwh.keys(f"{KEY} whsec_@@@")
        with pytest.raises(ValueError, match="no Standard Webhooks key"):
            stdwh.keys("   ")


def hr_body(**extra: str) -> bytes:
    return orjson.dumps(
        {
            "type": "terminated",
            "employee_id": "E1001",
            "email": "alice@lumen-outdoor.example",
            "effective_at": "2026-03-02T09:00:00Z",
            "source": "bamboohr",
            **extra,
        }
    )


def post(edge: Edge, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    resp = edge.session.post(
        f"{edge.url}/v1/hr/events",
        data=body,
        headers={**headers, "Content-Type": "application/json"},
        timeout=30,
    )
    return resp.status_code, resp.json()


@pytest.fixture
def edge(tmp_path: Path):  # type: ignore[no-untyped-def]
    with edge_server(tmp_path, standard_secret=Secret(f"{KEY} {OLD_KEY}")) as e:
        yield e


def _auth_failures(reason: str) -> float:
    labels = {"endpoint": "hr_webhook", "reason": reason}
    return REGISTRY.get_sample_value("accessguard_auth_failures_total", labels) or 0.0


class TestOnTheHrEndpoint:
    def test_a_signed_event_is_accepted_with_the_webhook_id_as_event_id(self, edge: Edge) -> None:
        """202 accepted; the published and journaled event carries webhook-id as event_id."""
        body = hr_body()
        status, answer = post(edge, body, stdwh.sign(KEY, "msg_1", body))
        assert (status, answer) == (202, {"status": "accepted", "event_id": "msg_1"})
        [(_key, value)] = edge.publisher.on(TOPIC_HR)
        assert HrEvent.from_dict(value).event_id == "msg_1"
        assert len(replay_records(edge.journal.path)["hr.events"]) == 1

    def test_the_old_key_still_verifies_during_rotation(self, edge: Edge) -> None:
        body = hr_body()
        status, _ = post(edge, body, stdwh.sign(OLD_KEY, "msg_rot", body))
        assert status == 202

    def test_a_wrong_signature_is_a_401_with_the_reason(self, edge: Edge) -> None:
        body = hr_body()
        before = _auth_failures("wrong")
        other = "whsec_" + base64.b64encode(b"not-the-key-of-this-endpoint!!!!").decode()
        status, answer = post(edge, body, stdwh.sign(other, "msg_w", body))
        assert (status, answer) == (401, {"error": "signature does not match"})
        tampered = hr_body(type="suspended")
        status, _ = post(edge, tampered, stdwh.sign(KEY, "msg_w", body))
        assert status == 401
        assert _auth_failures("wrong") == before + 2
        assert edge.publisher.on(TOPIC_HR) == []

    def test_a_stale_signature_is_a_401_with_the_reason(self, edge: Edge) -> None:
        body = hr_body()
        old = int(time.time()) - 301
        status, answer = post(edge, body, stdwh.sign(KEY, "msg_s", body, old))
        assert (status, answer) == (
            401,
            {"error": "signature timestamp outside the 300s tolerance"},
        )

    def test_a_replayed_message_is_a_401_and_a_retry_is_a_duplicate(self, edge: Edge) -> None:
        """The same signed message again (same id, timestamp and body) is a replay: 401. The
        sender's retry, signed anew with a later timestamp, is answered duplicate; neither
        publishes a second time."""
        body = hr_body()
        now = int(time.time())
        headers = stdwh.sign(KEY, "msg_r", body, now - 2)
        assert post(edge, body, headers)[0] == 202
        status, answer = post(edge, body, headers)
        assert status == 401
        assert "replayed" in str(answer["error"])
        status, answer = post(edge, body, stdwh.sign(KEY, "msg_r", body, now))
        assert (status, answer["status"]) == (202, "duplicate")
        assert len(edge.publisher.on(TOPIC_HR)) == 1

    def test_a_message_refused_with_503_may_be_resent_unchanged(self, edge: Edge) -> None:
        """Only accepted messages count as replays: a sender that resends the very same
        signed request after a 503 is accepted, not refused as a replay."""
        body = hr_body()
        headers = stdwh.sign(KEY, "msg_503", body)
        edge.publisher.down = True
        assert post(edge, body, headers)[0] == 503
        edge.publisher.down = False
        assert post(edge, body, headers)[0] == 202

    def test_an_event_id_other_than_the_webhook_id_is_a_400(self, edge: Edge) -> None:
        body = hr_body(event_id="hr-77")
        status, answer = post(edge, body, stdwh.sign(KEY, "msg_x", body))
        assert (status, answer) == (
            400,
            {"error": "event_id must equal webhook-id (the dedup key) or be left out"},
        )
        same = hr_body(event_id="msg_y")
        assert post(edge, same, stdwh.sign(KEY, "msg_y", same))[0] == 202

    def test_the_same_webhook_id_with_another_event_is_a_409(self, edge: Edge) -> None:
        body = hr_body()
        assert post(edge, body, stdwh.sign(KEY, "msg_c", body))[0] == 202
        other = hr_body(type="suspended")
        assert post(edge, other, stdwh.sign(KEY, "msg_c", other))[0] == 409

    def test_the_stripe_style_scheme_still_works_beside_it(self, edge: Edge) -> None:
        body = orjson.dumps({**orjson.loads(hr_body()), "event_id": "classic-1"})
        assert edge.post_hr(body).json()["status"] == "accepted"


def test_without_a_configured_key_the_scheme_is_refused(tmp_path: Path) -> None:
    """An endpoint without hooks.standard_webhooks_secret answers 401 saying so."""
    with edge_server(tmp_path) as edge:
        body = hr_body()
        status, answer = post(edge, body, stdwh.sign(KEY, "msg_n", body))
        assert status == 401
        assert "hooks.standard_webhooks_secret is unset" in str(answer["error"])


def test_a_restarted_edge_answers_duplicate_for_a_webhook_id(tmp_path: Path) -> None:
    """What one edge accepted (as the hr.events topic holds it) is a duplicate for the next
    edge: the webhook-id is the event_id the memory is refilled with."""
    body = hr_body()
    with edge_server(tmp_path / "a", standard_secret=Secret(KEY)) as first:
        assert post(first, body, stdwh.sign(KEY, "msg_restart", body))[0] == 202
        accepted = [HrEvent.from_dict(v) for _, v in first.publisher.on(TOPIC_HR)]
    with edge_server(tmp_path / "b", standard_secret=Secret(KEY)) as second:
        second.hr.seen.load(
            [(e.event_id, e.digest(), e.accepted_at or 0.0) for e in accepted], time.time()
        )
        status, answer = post(second, body, stdwh.sign(KEY, "msg_restart", body))
        assert (status, answer["status"]) == (202, "duplicate")
        assert second.publisher.on(TOPIC_HR) == []
