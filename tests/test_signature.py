"""The HR webhook signature (Stripe-style ``t=...,v1=...``) and the edge dedup memory."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from connectors.ingest import hr_webhook
from connectors.ingest.hr_webhook import SeenEvents, SignatureError, sign, verify_signature

SECRET = "whsec-test"
BODY = b'{"event_id":"e1","type":"terminated"}'
T = 1_780_000_000
TOLERANCE = 300


def _mac(secret: str, ts: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()


def _verify(header: str | None, *, now: float = T, body: bytes = BODY) -> int:
    return verify_signature(SECRET, header, body, now=now, tolerance=TOLERANCE)


class TestVerify:
    def test_valid_signature_returns_the_signed_timestamp(self) -> None:
        """A header made by sign() with the same secret verifies and yields its t."""
        header = sign(SECRET, BODY, T)
        assert header == f"t={T},v1={_mac(SECRET, T, BODY)}"
        assert _verify(header) == T

    def test_uppercase_hex_and_spaces_are_accepted(self) -> None:
        """Hex case and whitespace around parts do not matter."""
        header = f" t={T} , v1={_mac(SECRET, T, BODY).upper()} "
        assert _verify(header) == T

    def test_wrong_secret_is_rejected(self) -> None:
        """A signature made with another secret does not match."""
        with pytest.raises(SignatureError, match="does not match") as info:
            _verify(sign("other-secret", BODY, T))
        assert info.value.metric == "bad_signature"

    def test_tampered_body_is_rejected(self) -> None:
        """Changing one byte of the body after signing breaks the signature."""
        header = sign(SECRET, BODY, T)
        with pytest.raises(SignatureError, match="does not match"):
            _verify(header, body=BODY.replace(b"terminated", b"reinstated"))

    def test_timestamp_is_part_of_the_signed_payload(self) -> None:
        """Moving a valid v1 to another t (to refresh a captured request) fails."""
        mac = _mac(SECRET, T, BODY)
        with pytest.raises(SignatureError, match="does not match"):
            _verify(f"t={T + 10},v1={mac}", now=T + 10)

    @pytest.mark.parametrize("offset", [TOLERANCE, -TOLERANCE, 0, 1, -1])
    def test_timestamp_within_tolerance_is_accepted_up_to_the_boundary(self, offset: int) -> None:
        """A signature exactly ``tolerance`` seconds old or ahead is still accepted."""
        ts = T - offset
        assert _verify(sign(SECRET, BODY, ts), now=T) == ts

    @pytest.mark.parametrize(
        "ts",
        [T - TOLERANCE - 1, T + TOLERANCE + 1],
        ids=["stale", "future"],
    )
    def test_timestamp_beyond_tolerance_is_rejected(self, ts: int) -> None:
        """One second past the tolerance either way (stale or from the future) is refused
        as stale, even with a correct MAC."""
        with pytest.raises(SignatureError, match="outside the 300s tolerance") as info:
            _verify(sign(SECRET, BODY, ts), now=T)
        assert info.value.metric == "stale_signature"

    def test_fractional_now_just_past_the_boundary_is_rejected(self) -> None:
        """The clock is a float: 300.001 s old is past a 300 s tolerance."""
        with pytest.raises(SignatureError, match="tolerance"):
            _verify(sign(SECRET, BODY, T), now=T + TOLERANCE + 0.001)

    def test_several_v1_values_one_valid_is_accepted(self) -> None:
        """During secret rotation the sender signs with old and new secrets; one valid v1 is
        enough, wherever it appears in the header."""
        good = _mac(SECRET, T, BODY)
        old = _mac("old-secret", T, BODY)
        assert _verify(f"t={T},v1={old},v1={good}") == T
        assert _verify(f"t={T},v1={good},v1={old}") == T
        assert _verify(f"v1={old},v1={good},t={T}") == T

    def test_several_v1_values_none_valid_is_rejected(self) -> None:
        """Two wrong signatures are still wrong."""
        header = f"t={T},v1={_mac('a', T, BODY)},v1={_mac('b', T, BODY)}"
        with pytest.raises(SignatureError, match="does not match"):
            _verify(header)

    def test_every_candidate_is_compared_with_compare_digest(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The comparison is hmac.compare_digest (constant time) on every v1 value, with no
        early exit when the first one matches."""
        calls: list[tuple[object, object]] = []
        real = hmac.compare_digest

        def recording(a: object, b: object) -> bool:
            calls.append((a, b))
            return real(a, b)  # type: ignore[arg-type]

        monkeypatch.setattr(hr_webhook.hmac, "compare_digest", recording)
        good = _mac(SECRET, T, BODY)
        _verify(f"t={T},v1={good},v1={'0' * 64},v1={'1' * 64}")
        assert len(calls) == 3
        assert all(good.encode() in (a, b) or good in (a, b) for a, b in calls)

    @pytest.mark.parametrize(
        ("header", "message", "metric"),
        [
            (None, "missing X-AccessGuard-Signature", "missing_signature"),
            ("", "missing X-AccessGuard-Signature", "missing_signature"),
            ("garbage", "needs t=<unix seconds>,v1=<hex>", "bad_signature"),
            (f"t={T}", "needs t=", "bad_signature"),
            ("v1=abcdef", "needs t=", "bad_signature"),
            (f"t={T},v0=abcdef", "needs t=", "bad_signature"),
            ("t=yesterday,v1=abcdef", "not an integer", "bad_signature"),
            (f"t={T},v1=", "does not match", "bad_signature"),
            (f"t={T},v1=zz-not-hex", "does not match", "bad_signature"),
            (f"t={T},v1=\u00e9\u00e9\u00e9", "does not match", "bad_signature"),
            (f"t={T},v1=\udcff", "does not match", "bad_signature"),
            (f"t={T},v1=00\ud800", "does not match", "bad_signature"),
        ],
    )
    def test_malformed_headers_are_signature_errors(
        self, header: str | None, message: str, metric: str
    ) -> None:
        """Every malformed header is a SignatureError with a reason (a 401), never another
        exception (which would be a 500)."""
        with pytest.raises(SignatureError, match=message) as info:
            _verify(header)
        assert info.value.metric == metric

    def test_empty_secret_never_matches_a_header_signed_with_a_real_one(self) -> None:
        """Verification is keyed: the server's secret is what makes a signature valid."""
        with pytest.raises(SignatureError, match="does not match"):
            verify_signature("", sign(SECRET, BODY, T), BODY, now=T, tolerance=TOLERANCE)


class TestSeenEvents:
    def test_remembers_digest_until_ttl_inclusive(self) -> None:
        """An id is remembered for exactly ``ttl`` seconds, then forgotten."""
        seen = SeenEvents(ttl=60)
        seen.add("e1", "digest-1", now=1000.0)
        assert seen.get("e1", now=1000.0) == "digest-1"
        assert seen.get("e1", now=1060.0) == "digest-1"
        assert seen.get("e1", now=1060.5) is None
        # forgotten for good: an earlier clock does not bring it back
        assert seen.get("e1", now=1000.0) is None

    def test_unknown_id_is_none(self) -> None:
        """Nothing seen, nothing returned."""
        assert SeenEvents(ttl=60).get("nope", now=0.0) is None

    def test_bounded_evicting_the_oldest(self) -> None:
        """Beyond ``max_entries`` the least recently added ids are dropped first."""
        seen = SeenEvents(ttl=1000, max_entries=3)
        for i in range(4):
            seen.add(f"e{i}", f"d{i}", now=float(i))
        assert seen.get("e0", now=5.0) is None
        assert [seen.get(f"e{i}", now=5.0) for i in (1, 2, 3)] == ["d1", "d2", "d3"]

    def test_re_adding_refreshes_position_and_time(self) -> None:
        """Adding an id again makes it the newest: it survives the next eviction, and its
        TTL counts from the new time."""
        seen = SeenEvents(ttl=10, max_entries=2)
        seen.add("a", "da", now=0.0)
        seen.add("b", "db", now=1.0)
        seen.add("a", "da2", now=2.0)
        seen.add("c", "dc", now=3.0)
        assert seen.get("b", now=3.0) is None
        assert seen.get("a", now=12.0) == "da2"
        assert seen.get("c", now=12.0) == "dc"
