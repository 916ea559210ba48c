"""LoginEvent.from_dict and parse_time on the hot path: the fast forms (the canonical ``…Z``
time, the inlined optional strings, the positional constructor) decide exactly what the
general forms do: the same values, the same first problem reported."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from streams.decide.resolve import resolve
from streams.model.records import Geo, LoginEvent
from streams.model.registry import Account, Identity, Registry
from streams.support.errors import ValidationError
from streams.support.times import parse_time

FULL: dict[str, Any] = {
    "event_id": "e1",
    "vendor": "okta",
    "time": "2026-12-05T03:27:52.425Z",
    "principal": "  Alice@Brand.Example ",
    "outcome": "success",
    "event_type": " ",
    "identity": None,
    "vendor_event_id": "v1",
    "failure_reason": "",
    "mfa_method": "push",
    "mfa_result": "success",
    "ip": " 203.0.113.9 ",
    "geo": {"country": "FR", "city": "Lyon", "lat": 45.7, "lon": 4.8},
    "device": "d1",
    "user_agent": "ua",
    "target": "acct-1",
    "target_account": None,
    "risk": "low",
    "principal_id": "00u1",
}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-12-05T03:27:52.425Z", datetime(2026, 12, 5, 3, 27, 52, 425000, tzinfo=UTC)),
        ("2026-12-05T03:27:52Z", datetime(2026, 12, 5, 3, 27, 52, tzinfo=UTC)),
        ("2026-12-05T03:27:52.425z", datetime(2026, 12, 5, 3, 27, 52, 425000, tzinfo=UTC)),
        (" 2026-12-05T03:27:52Z ", datetime(2026, 12, 5, 3, 27, 52, tzinfo=UTC)),
        ("2026-12-05T04:27:52+01:00", datetime(2026, 12, 5, 3, 27, 52, tzinfo=UTC)),
    ],
)
def test_parse_time_forms_are_utc(raw: str, expected: datetime) -> None:
    parsed = parse_time(raw, "time")
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("2026-12-05T03:27:52", "needs a zone"),
        ("2026-13-05T03:27:52Z", "not an ISO-8601 timestamp"),
        ("2026-12-05T03:27:52+00:00Z", "not an ISO-8601 timestamp"),
        ("", "expected an ISO-8601 timestamp string"),
        (1733369272, "expected an ISO-8601 timestamp string"),
    ],
)
def test_parse_time_refusals(raw: Any, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        parse_time(raw, "time")


def test_a_login_event_decodes_every_field_stripped_and_empty_as_none() -> None:
    event = LoginEvent.from_dict(FULL)
    assert event == LoginEvent(
        event_id="e1",
        vendor="okta",
        time=datetime(2026, 12, 5, 3, 27, 52, 425000, tzinfo=UTC),
        principal="alice@brand.example",
        outcome="success",
        event_type="login",  # blank: the default
        identity=None,
        vendor_event_id="v1",
        failure_reason=None,  # "": None
        mfa_method="push",
        mfa_result="success",
        ip="203.0.113.9",
        geo=Geo("FR", "Lyon", 45.7, 4.8),
        device="d1",
        user_agent="ua",
        target="acct-1",
        target_account=None,
        risk="low",
        principal_id="00u1",
    )
    assert LoginEvent.from_dict(event.to_dict()) == event  # the topic format round-trips
    assert hash(event) == hash(LoginEvent.from_dict(event.to_dict()))  # still hashable


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"user_agent": 7, "device": 8}, "device: expected a string"),  # the first in order
        ({"risk": "x" * 17}, "risk: longer than 16 characters"),
        ({"principal_id": "p" * 201}, "principal_id: longer than 200 characters"),
        ({"event_type": ["login"]}, "event_type: expected a string"),
        ({"time": "2026-12-05T03:27:52", "ip": 5}, "time: timestamp needs a zone"),
    ],
)
def test_the_first_problem_is_the_one_reported(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        LoginEvent.from_dict({**FULL, **change})
    assert info.value.reason.startswith(reason)


def test_resolution_copies_every_field_and_leaves_the_input_alone() -> None:
    registry = Registry()
    registry.put_identity(Identity("alice", "Alice", "employee", ("alice@brand.example",), {}))
    registry.put_account(Account("acct-1", "instagram", "@brand", "high", "meta"))
    event = LoginEvent.from_dict(FULL)
    resolved = resolve(event, registry)
    assert (resolved.identity, resolved.target_account) == ("alice", "acct-1")
    assert event.identity is None  # a new event, the decoded one unchanged
    unchanged = {
        k: v for k, v in resolved.to_dict().items() if k not in ("identity", "target_account")
    }
    assert unchanged == {
        k: v for k, v in event.to_dict().items() if k not in ("identity", "target_account")
    }
    assert resolve(resolved, registry) is resolved


def test_a_later_timezone_object_still_gives_utc() -> None:
    value = (datetime(2026, 12, 5, 3, tzinfo=timezone(timedelta(hours=2)))).isoformat()
    assert parse_time(value, "t") == datetime(2026, 12, 5, 1, tzinfo=UTC)
