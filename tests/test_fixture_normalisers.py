"""The vendor quirks, on our own fixtures: every case of ``tests/fixtures/`` through the real
login normalisers, the ingest's body splitter and identity resolution.

These run in a plain clone. The third-party corpus in ``../shared/vendor-samples`` taught the
quirks (see ``tests/test_login_normalisers.py``, skipped without it); each quirk has a
hand-written case here with its expected outcome stored beside it (``tests/fixtures/README.md``
describes the format).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.base.sources import NORMALISERS, normalise
from connectors.ingest.auth_ingest import parse_batch
from streams.decide.resolve import resolve
from streams.model.records import LOGIN_OUTCOMES, MFA_RESULTS, LoginEvent
from streams.model.registry import Account, Identity, Registry
from streams.support.errors import ValidationError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LOGIN_FILES = ("okta", "entra", "google", "generic")
MFA_METHODS = {"push", "totp", "sms", "webauthn", "email", "password", "other"}


def load(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


LOGIN_CASES: list[dict[str, Any]] = [case for v in LOGIN_FILES for case in load(f"{v}.json")]
ENVELOPES: list[dict[str, Any]] = load("envelopes.json")
BODIES: list[dict[str, Any]] = load("bodies.json")


def ids(cases: list[dict[str, Any]], *, expectations: bool = True) -> list[Any]:
    """One pytest param per case. Where the case's expectations are checked, a case with
    ``known_issue`` (a normaliser bug the fixture found, reported rather than fixed here) is a
    strict xfail until the bug is fixed."""
    return [
        pytest.param(
            case,
            id=case["name"],
            marks=[pytest.mark.xfail(strict=True, reason=case["known_issue"])]
            if expectations and "known_issue" in case
            else [],
        )
        for case in cases
    ]


@pytest.fixture(scope="module")
def registry() -> Registry:
    data = load("registry.json")
    reg = Registry()
    for identity in data["identities"]:
        reg.put_identity(Identity.from_dict(identity))
    for account in data["accounts"]:
        reg.put_account(Account.from_dict(account))
    return reg


# ---- comparing one outcome ----------------------------------------------------------------


def outcome_of(vendor: str, payload: Any) -> list[LoginEvent] | str:
    """The LoginEvents of ``payload``, or the rejection reason. Anything else raised fails."""
    before = copy.deepcopy(payload)
    result: list[LoginEvent] | str
    try:
        result = NORMALISERS[vendor](payload)
    except ValidationError as exc:
        result = exc.reason
        assert result.strip(), "a rejection always says why"
    assert payload == before, "normalisers never change the payload they are given"
    return result


def check_event(event: LoginEvent, expected: dict[str, Any], where: str) -> None:
    """Compare the keys of ``expected`` with the event's canonical dict. Extra forms: ``time``
    as an instant (any ISO spelling), ``<field>_length`` and ``event_id_prefix``."""
    actual = event.to_dict()
    for key, want in expected.items():
        if key == "time":
            assert event.time == datetime.fromisoformat(want), f"{where}: time {event.time}"
        elif key == "event_id_prefix":
            assert event.event_id.startswith(want), f"{where}: event_id {event.event_id!r}"
        elif key.endswith("_length"):
            field = key.removesuffix("_length")
            assert len(actual[field]) == want, f"{where}: len({field}) = {len(actual[field])}"
        else:
            assert key in actual, f"{where}: {key} is not a LoginEvent field"
            assert actual[key] == want, f"{where}: {key} = {actual[key]!r}, expected {want!r}"


def assert_canonical(event: LoginEvent, vendor: str) -> None:
    """What every normalised event holds, whatever the vendor or quirk."""
    assert event.outcome in LOGIN_OUTCOMES
    assert event.mfa_result is None or event.mfa_result in MFA_RESULTS
    assert event.mfa_method is None or event.mfa_method in MFA_METHODS
    assert event.risk in (None, "low", "medium", "high")
    assert event.time.utcoffset() == timedelta(0)
    assert event.principal
    assert event.principal == event.principal.lower()
    assert event.identity is None
    assert event.target_account is None
    if vendor != "generic":
        assert event.vendor == vendor
        assert event.event_id.startswith(f"{vendor}:")
    # The canonical form survives the topic round trip (the wire keeps milliseconds).
    wire = event.to_dict()
    assert LoginEvent.from_dict(orjson.loads(orjson.dumps(wire))).to_dict() == wire


def check_outcome(
    vendor: str, payload: Any, expect: dict[str, Any], where: str
) -> list[LoginEvent]:
    result = outcome_of(vendor, payload)
    if "rejected" in expect:
        assert isinstance(result, str), f"{where}: expected a rejection, got {result!r}"
        assert expect["rejected"] in result, f"{where}: reason {result!r}"
        return []
    assert not isinstance(result, str), f"{where}: rejected: {result}"
    wanted = expect["events"]
    assert len(result) == len(wanted), f"{where}: {len(result)} events, expected {len(wanted)}"
    for index, (event, expected) in enumerate(zip(result, wanted, strict=True)):
        assert_canonical(event, vendor)
        check_event(event, expected, f"{where}[{index}]")
    return result


def check_resolution(
    events: list[LoginEvent], expected: list[dict[str, Any]], registry: Registry, where: str
) -> None:
    assert len(events) == len(expected), f"{where}: resolve lists one entry per event"
    for event, want in zip(events, expected, strict=True):
        resolved = resolve(event, registry)
        got = {"identity": resolved.identity, "target_account": resolved.target_account}
        assert got == want, f"{where}: resolved to {got}"
        # Only the resolution fields change.
        assert {**resolved.to_dict(), "identity": None, "target_account": None} == event.to_dict()


# ---- the cases ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", ids(LOGIN_CASES))
def test_login_fixture(case: dict[str, Any], registry: Registry) -> None:
    """Each vendor quirk gives the stored outcome: the listed LoginEvent fields, or a rejection
    whose reason holds the stored fragment; where given, resolution finds the stored identity
    and account."""
    events = check_outcome(case["vendor"], case["payload"], case["expect"], case["name"])
    if "resolve" in case:
        check_resolution(events, case["resolve"], registry, case["name"])


@pytest.mark.parametrize("case", ids(LOGIN_CASES, expectations=False))
def test_login_fixture_through_the_vendor_table(case: dict[str, Any]) -> None:
    """``connectors.base.sources.normalise`` (what the ingest and pollers call) gives the same
    result as the vendor's module."""
    direct = outcome_of(case["vendor"], case["payload"])
    try:
        via_table: list[LoginEvent] | str = normalise(
            case["vendor"], copy.deepcopy(case["payload"])
        )
    except ValidationError as exc:
        via_table = exc.reason
    assert via_table == direct


def _groups(cases: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for case in cases:
        if "group" in case:
            groups[case["group"]].append(case)
    return dict(groups)


@pytest.mark.parametrize(
    ("group", "members"), [pytest.param(g, m, id=g) for g, m in _groups(LOGIN_CASES).items()]
)
def test_duplicate_vendor_ids_keep_distinct_event_ids(
    group: str, members: list[dict[str, Any]]
) -> None:
    """Vendor ids repeat (Okta's uuid, Google's time/qualifier): dropping duplicates by them
    would lose events, so event ids differ while the vendor id is the same."""
    assert len(members) >= 2
    events = [e for case in members for e in NORMALISERS[case["vendor"]](case["payload"])]
    assert len({e.vendor_event_id for e in events}) == 1
    assert len({e.event_id for e in events}) == len(events)


@pytest.mark.parametrize("case", ids(LOGIN_CASES, expectations=False))
def test_event_ids_are_stable_across_redelivery(case: dict[str, Any]) -> None:
    """The same payload, re-serialised with its keys in another order, gives the same ids."""
    first = outcome_of(case["vendor"], case["payload"])
    if isinstance(first, str):
        return
    payload = case["payload"]
    reordered = dict(reversed(list(payload.items()))) if isinstance(payload, dict) else payload
    again = outcome_of(case["vendor"], reordered)
    assert not isinstance(again, str)
    assert [e.event_id for e in again] == [e.event_id for e in first]


def _unwrap(payload: Any, path: list[str]) -> list[Any]:
    current: list[Any] = [payload]
    for step in path:
        if step == "*":
            current = [item for value in current for item in value]
        else:
            current = [value[step] for value in current]
    if len(current) == 1 and isinstance(current[0], list):
        return list(current[0])
    return current


@pytest.mark.parametrize("case", ids(ENVELOPES))
def test_envelope_fixture(case: dict[str, Any], registry: Registry) -> None:
    """A page, batch or webhook wrapper handed over whole is rejected with a reason (never
    half-read); the records inside it, taken out, each give their own outcome."""
    vendor, name = case["vendor"], case["name"]
    check_outcome(vendor, case["payload"], case["expect"], name)
    members = _unwrap(case["payload"], case["unwrap"])
    expected = case["expect_each"]
    assert len(members) == len(expected), f"{name}: {len(members)} members"
    resolutions = case.get("resolve_each") or [None] * len(members)
    for index, (member, expect, want) in enumerate(
        zip(members, expected, resolutions, strict=True)
    ):
        events = check_outcome(vendor, member, expect, f"{name}/{index}")
        if want is not None:
            check_resolution(events, want, registry, f"{name}/{index}")


@pytest.mark.parametrize("case", ids(BODIES))
def test_ingest_body_fixture(case: dict[str, Any]) -> None:
    """Raw ``POST /v1/auth/events`` bodies through the ingest's splitter and normalisers: one
    bad record never rejects its batch, and every rejection carries its reason."""
    body = (FIXTURES / case["file"]).read_bytes()
    if "expect_body_rejected" in case:
        with pytest.raises(ValidationError) as err:
            parse_batch(body, case["content_type"], case["vendor"])
        assert case["expect_body_rejected"] in err.value.reason
        return
    results, rejected, events = parse_batch(body, case["content_type"], case["vendor"])
    got = []
    for result in results:
        if result["status"] == "accepted":
            got.append({"index": result["index"], "accepted": result["events"]})
        else:
            got.append({"index": result["index"], "rejected": result["reason"]})
    expected = case["expect_results"]
    assert [g["index"] for g in got] == [e["index"] for e in expected]
    for have, want in zip(got, expected, strict=True):
        if "accepted" in want:
            assert have.get("accepted") == want["accepted"], f"{case['name']}: {have}"
        else:
            assert want["rejected"] in have.get("rejected", ""), f"{case['name']}: {have}"
    assert len(rejected) == sum(1 for want in expected if "rejected" in want)
    assert len(events) == sum(want.get("accepted", 0) for want in expected)
    if "expect_principals" in case:
        assert [e.principal for e in events] == case["expect_principals"]


# ---- the fixtures themselves --------------------------------------------------------------


def test_fixture_files_are_well_formed() -> None:
    """Every case has a unique name, says which quirk it covers and expects exactly one kind
    of outcome; every body file it names exists."""
    every = LOGIN_CASES + ENVELOPES + BODIES
    names = [case["name"] for case in every]
    assert len(names) == len(set(names)), "fixture names are unique"
    for case in every:
        assert case.get("quirk"), f"{case['name']}: says which quirk it covers"
    for case in LOGIN_CASES + ENVELOPES:
        assert case["vendor"] in NORMALISERS
        assert ("events" in case["expect"]) != ("rejected" in case["expect"]), case["name"]
    for case in BODIES:
        assert (FIXTURES / case["file"]).is_file(), case["file"]


def test_every_vendor_has_accepted_and_rejected_cases() -> None:
    """Each login vendor's fixtures show both what is accepted and what is refused."""
    for vendor in LOGIN_FILES:
        cases = [c for c in LOGIN_CASES if c["vendor"] == vendor]
        assert any("events" in c["expect"] for c in cases), vendor
        assert any("rejected" in c["expect"] for c in cases), vendor
