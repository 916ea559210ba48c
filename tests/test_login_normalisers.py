"""Login-event normalisers (Okta, Entra, Google, generic) on the third-party vendor samples.

The samples live in ``../shared/vendor-samples`` beside the checkout and are never copied into
the repository (some are Elastic-licensed). Every line must come out as valid LoginEvents or as
a ValidationError with a reason; PROVENANCE.md's quirks and attack notes are checked below.
Tests that read the samples are skipped, with the reason, without them; every quirk they show
also has a hand-written case in ``tests/fixtures/`` (``tests/test_fixture_normalisers.py``).
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from connectors.base.normalise import clean_ip, ip_is_internal, mfa_method, parse_timestamp
from connectors.base.sources import NORMALISERS, normalise
from connectors.entra import normaliser as login_entra
from connectors.generic import normaliser as login_generic
from connectors.google import normaliser as login_google
from connectors.okta import normaliser as login_okta
from streams.model.records import LOGIN_OUTCOMES, MFA_RESULTS, LoginEvent
from streams.support.errors import ValidationError
from tests import samples

LINE_COUNTS = {"okta": 73, "entra": 38, "google": 17}
MFA_METHODS = {"push", "totp", "sms", "webauthn", "email", "password", "other"}


def _read(vendor: str) -> list[str]:
    path = samples.SAMPLES / f"{vendor}.ndjson"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


LINES: dict[str, list[str]] = {vendor: _read(vendor) for vendor in LINE_COUNTS}
CASES = [
    pytest.param(vendor, number, raw, id=f"{vendor}-{number}")
    for vendor, lines in LINES.items()
    for number, raw in enumerate(lines, start=1)
] or [pytest.param("", 0, "", id="no-samples", marks=pytest.mark.skip(reason=samples.ABSENT))]

#: Lines rejected on purpose, with a fragment of the reason. Every other line must normalise.
REJECTED: dict[tuple[str, int], str] = {
    **{("okta", n): "not a login event: user." for n in (16, 17, 26, 27, 43, 46, 47, 64, 65)},
    **{
        ("okta", n): "not a login event"
        for n in (22, 23, 24, 29, 37, 38, 42, 45, 48, 49, 50, 53, 54, 55, 56, 57)
    },
    ("okta", 21): "published: impossible date",
    ("okta", 44): "outcome.result",
    **{("okta", n): "published: placeholder 'redacted'" for n in (58, 59, 60, 61)},
    **{("okta", n): "no principal" for n in (62, 63)},
    **{("okta", n): "published: missing" for n in (66, 67, 71)},
    ("entra", 13): "userPrincipalName: placeholder",
    **{("entra", n): "createdDateTime: missing" for n in (14, 15, 16, 17, 18)},
    **{("entra", n): "service principal sign-in, no user" for n in (19, 20, 30, 31, 32, 33, 34)},
    **{("entra", n): "status missing" for n in (5, 21, 22, 23, 28, 29, 35)},
    **{("google", n): "not a login event" for n in (1, 5, 6, 7, 8, 9, 13, 16)},
}


def line(vendor: str, number: int) -> dict[str, Any]:
    """Sample line ``number`` (1-based) of ``vendor`` as a fresh, mutable object (the test
    is skipped, with the reason, in a clone without ../shared)."""
    samples.require()
    data = orjson.loads(LINES[vendor][number - 1])
    assert isinstance(data, dict)
    return data


def one(vendor: str, payload: Any) -> LoginEvent:
    events = NORMALISERS[vendor](payload)
    assert len(events) == 1
    return events[0]


def reject_reason(vendor: str, payload: Any) -> str:
    with pytest.raises(ValidationError) as info:
        NORMALISERS[vendor](payload)
    return info.value.reason


def assert_valid(event: LoginEvent, vendor: str) -> None:
    assert event.vendor == vendor
    assert event.event_id.startswith(f"{vendor}:")
    assert event.time.tzinfo is UTC
    assert event.principal
    assert event.principal == event.principal.lower()
    assert event.outcome in LOGIN_OUTCOMES
    assert event.mfa_result is None or event.mfa_result in MFA_RESULTS
    assert event.mfa_method is None or event.mfa_method in MFA_METHODS
    assert event.risk in (None, "low", "medium", "high")
    assert event.identity is None
    assert event.target_account is None
    if event.ip is not None:
        ipaddress.ip_address(event.ip)
    if event.geo is not None:
        assert event.geo.country or event.geo.city or event.geo.lat is not None
        assert (event.geo.lat is None) == (event.geo.lon is None)
        assert event.geo.country not in ("Country", "")
    # The canonical shape round-trips through the topic format's validator.
    again = LoginEvent.from_dict(orjson.loads(orjson.dumps(event.to_dict())))
    assert again.to_dict() == event.to_dict()


# ------------------------------------------------------------------------------ the corpus


def test_samples_are_present() -> None:
    """The shared vendor samples sit beside the checkout, complete (skipped with the reason
    in a clone that has no ../shared; never silently)."""
    samples.require()
    assert {vendor: len(lines) for vendor, lines in LINES.items()} == LINE_COUNTS


@pytest.mark.parametrize(("vendor", "number", "raw"), CASES)
def test_every_sample_line_normalises_or_is_rejected_with_a_reason(
    vendor: str, number: int, raw: str
) -> None:
    """Each line yields valid LoginEvents or a ValidationError with the expected reason —
    never another exception, never an empty result."""
    payload = orjson.loads(raw)
    expected = REJECTED.get((vendor, number))
    if expected is not None:
        assert expected in reject_reason(vendor, payload)
        return
    events = NORMALISERS[vendor](payload)
    assert events
    for event in events:
        assert_valid(event, vendor)


def test_non_object_payloads_are_rejected() -> None:
    """Arrays, strings, numbers and null are rejected with a reason by every normaliser."""
    bad_payloads: list[Any] = [[], "x", 3, None, True]
    for fn in NORMALISERS.values():
        for bad in bad_payloads:
            with pytest.raises(ValidationError, match="JSON object"):
                fn(bad)


def test_ugly_values_in_every_field_never_crash() -> None:
    """Every top-level and nested value swapped for null, a number, a list or a placeholder
    gives a LoginEvent or a ValidationError, nothing else."""
    seeds = [("okta", 1), ("okta", 34), ("okta", 25), ("entra", 3), ("entra", 26), ("google", 17)]
    ugly: list[Any] = [None, 0, -1.5, [], {}, "", "null", "redacted", "<IP ADDRESS>", [None]]

    def mutate(node: Any, emit: Callable[[], None]) -> None:
        if isinstance(node, dict):
            for key in list(node):
                original = node[key]
                for value in ugly:
                    node[key] = value
                    emit()
                node[key] = original
                mutate(original, emit)
        elif isinstance(node, list):
            for index, original in enumerate(list(node)):
                for value in ugly:
                    node[index] = value
                    emit()
                node[index] = original
                mutate(original, emit)

    reasons: list[str] = []
    for vendor, number in seeds:
        payload = line(vendor, number)

        def emit(vendor: str = vendor, payload: dict[str, Any] = payload) -> None:
            try:
                events = NORMALISERS[vendor](payload)
            except ValidationError as exc:
                reasons.append(exc.reason)
                return
            for event in events:
                assert_valid(event, vendor)

        mutate(payload, emit)
    assert reasons
    assert all(reasons)


# ------------------------------------------------------------------------------ Okta


def test_okta_brute_force_lines_are_failures_for_one_user() -> None:
    """Okta 6-14: nine VERIFICATION_ERROR failures for jack.naglieri, from the four IPs."""
    events = [one("okta", line("okta", n)) for n in range(6, 15)]
    assert {e.outcome for e in events} == {"failure"}
    assert {e.failure_reason for e in events} == {"VERIFICATION_ERROR"}
    assert {e.principal for e in events} == {"jack.naglieri@runpanther.io"}
    assert {e.principal_id for e in events} == {"00uu1uuuuIlllaaaa356"}
    assert [e.ip for e in events].count("194.88.246.242") == 5
    assert {e.ip for e in events} == {
        "195.154.58.200",
        "157.7.164.178",
        "94.177.183.28",
        "194.88.246.242",
    }
    assert events[0].time == datetime(2021, 6, 25, 21, 27, 3, 490000, tzinfo=UTC)  # ".49Z"
    assert events[-1].time == datetime(2021, 6, 25, 21, 36, 3, 490000, tzinfo=UTC)


def test_okta_success_after_brute_force_is_from_france() -> None:
    """Okta 15: the success from 194.88.246.242, country as Okta names it."""
    event = one("okta", line("okta", 15))
    assert event.outcome == "success"
    assert event.failure_reason is None
    assert event.ip == "194.88.246.242"
    assert event.geo is not None
    assert event.geo.country == "France"
    assert event.geo.city == "Coupvray"
    assert event.user_agent is not None
    assert "Mac OS X" in event.user_agent


def test_okta_invalid_date_is_rejected() -> None:
    """Okta 21: 2017-09-31 does not exist; the reason names the field."""
    assert reject_reason("okta", line("okta", 21)).startswith("published: impossible date")


def test_okta_lifecycle_events_are_not_logins() -> None:
    """Privilege grants and lifecycle events are rejected as not logins, naming the type."""
    assert reject_reason("okta", line("okta", 16)) == (
        "not a login event: user.account.privilege.grant"
    )
    assert reject_reason("okta", line("okta", 17)) == "not a login event: user.lifecycle.create"
    assert reject_reason("okta", line("okta", 26)) == (
        "not a login event: user.lifecycle.deactivate"
    )


def test_okta_redacted_ip_chain_never_becomes_the_ip() -> None:
    """Okta 58-61 are rejected as they stand ("redacted" published time). Given a time, the
    client IP is used, and a "redacted" ipChain entry never becomes an IP."""
    for number in (58, 59, 60, 61):
        assert "redacted" in reject_reason("okta", line("okta", number))
    fixed = line("okta", 58)
    fixed["published"] = "2024-01-01T00:00:00Z"
    assert one("okta", fixed).ip == "1.2.3.4"
    del fixed["client"]["ipAddress"]
    assert fixed["request"]["ipChain"][0]["ip"] == "redacted"
    event = one("okta", fixed)
    assert event.ip is None
    assert event.principal == "admin"  # an alternateId that is not an e-mail
    hijack = line("okta", 61)
    hijack["published"] = "2024-01-01T00:00:00Z"
    assert one("okta", hijack).ip == "44.238.82.114"


def test_okta_null_string_ip_is_not_an_ip() -> None:
    """Okta 30: ``client.ipAddress`` is the string "null"; the request's ipChain still names
    the client (the same event as line 28), and without it the IP is None."""
    payload = line("okta", 30)
    assert payload["client"]["ipAddress"] == "null"
    assert one("okta", payload).ip == one("okta", line("okta", 28)).ip == "175.16.199.1"
    payload["request"]["ipChain"] = []
    assert one("okta", payload).ip is None
    json_null = line("okta", 30)
    json_null["client"]["ipAddress"] = None
    json_null["request"] = None
    assert one("okta", json_null).ip is None


def test_okta_placeholder_geo_is_dropped() -> None:
    """Okta 33: "City"/"Country" with lat/lon 0 is no location; the risk HIGH is kept."""
    event = one("okta", line("okta", 33))
    assert event.geo is None
    assert event.risk == "high"
    assert event.user_agent is None  # "unknown"


def test_okta_verify_push_success() -> None:
    """Okta 34: a successful OKTA_VERIFY_PUSH, loopback client IP kept as given."""
    event = one("okta", line("okta", 34))
    assert event.event_type == "user.authentication.auth_via_mfa"
    assert (event.outcome, event.mfa_method, event.mfa_result) == ("success", "push", "success")
    assert event.ip == "127.0.0.1"
    assert ip_is_internal("127.0.0.1")
    assert event.risk == "low"


def test_okta_denied_push_is_a_challenge() -> None:
    """``user.mfa.okta_verify.deny_push`` is a challenge with MFA denied (push fatigue input);
    a push being sent is a challenge with no result yet."""
    denied = line("okta", 34)
    denied["eventType"] = "user.mfa.okta_verify.deny_push"
    denied["outcome"] = {"result": "FAILURE", "reason": "User rejected Okta push verify"}
    denied["debugContext"]["debugData"].pop("factor")
    event = one("okta", denied)
    assert (event.outcome, event.mfa_method, event.mfa_result) == ("challenge", "push", "denied")
    assert event.failure_reason == "User rejected Okta push verify"
    sent = line("okta", 34)
    sent["eventType"] = "system.push.send_factor_verify_push"
    event = one("okta", sent)
    assert (event.outcome, event.mfa_method, event.mfa_result) == ("challenge", "push", None)


def test_okta_event_ids_are_unique_where_uuids_repeat() -> None:
    """Okta reuses ``uuid`` (1-5 share one, 34-36 use the literal "uuid"): event ids differ
    per event, carry the uuid, and are stable for the same payload in any key order."""
    samples.require()
    events: list[LoginEvent] = []
    for number in range(1, len(LINES["okta"]) + 1):
        if ("okta", number) not in REJECTED:
            events.append(one("okta", line("okta", number)))
    ids = [e.event_id for e in events]
    assert len(ids) == len(set(ids))
    uuids = [e.vendor_event_id for e in events]
    assert len(set(uuids)) < len(uuids)
    first = line("okta", 1)
    assert one("okta", first).event_id.startswith("okta:2a992f80-d1ad-4f62-900e-8c68bb72a21b:")
    reordered = dict(reversed(list(first.items())))
    assert one("okta", reordered).event_id == one("okta", first).event_id


def test_okta_nine_digit_fraction_and_device_object() -> None:
    """Okta 72: a 9-digit fraction is truncated to microseconds; okta 40: the device id comes
    from Okta's device object."""
    assert one("okta", line("okta", 72)).time == datetime(2024, 8, 15, 15, 5, 9, 154000, tzinfo=UTC)
    event = one("okta", line("okta", 40))
    assert event.device == "V9YPwc5tnhWcaLs3"
    assert event.ip == "192.168.1.10"  # from the request chain: the client object is {}
    assert event.target == "An App Server"


def test_okta_system_principal_is_rejected() -> None:
    """A SystemPrincipal actor is no user even on a login-type event."""
    payload = line("okta", 1)
    payload["actor"]["type"] = "SystemPrincipal"
    assert "SystemPrincipal" in reject_reason("okta", payload)


# ------------------------------------------------------------------------------ Entra


def test_entra_placeholder_record_is_rejected() -> None:
    """Entra 13: ``<USER PRINCIPAL NAME>`` is not a principal; the record is rejected."""
    assert reject_reason("entra", line("entra", 13)) == (
        "userPrincipalName: placeholder '<USER PRINCIPAL NAME>'"
    )


def test_entra_service_principals_are_rejected() -> None:
    """Entra 19-20: a null UPN with a service principal is no user sign-in."""
    for number in (19, 20):
        assert reject_reason("entra", line("entra", number)) == (
            "service principal sign-in, no user"
        )


def test_entra_guid_upn_is_a_principal() -> None:
    """Entra 7: a GUID UPN is kept; -05:00 offset and 7-digit fraction become UTC."""
    event = one("entra", line("entra", 7))
    assert event.principal == "c3813493-bf92-5123-2717-8a8b2979c38b"
    assert event.time == datetime(2019, 10, 18, 9, 45, 48, 72989, tzinfo=UTC)
    assert event.outcome == "challenge"  # 50140: keep-me-signed-in interrupt


def test_entra_lockout_is_a_failure() -> None:
    """Entra 16 and 18 (50053 lockout) have no createdDateTime, so as they stand they are
    rejected; with a time they are failures carrying the lockout reason."""
    for number in (16, 18):
        payload = line("entra", number)
        assert reject_reason("entra", payload) == "createdDateTime: missing, no usable time"
        payload["createdDateTime"] = "2025-01-15T10:00:00Z"
        event = one("entra", payload)
        assert event.outcome == "failure"
        assert event.failure_reason is not None
        assert "locked" in event.failure_reason.lower()
        assert event.geo is not None
        if number == 16:
            assert (event.geo.country, event.geo.city) == ("RU", None)  # "Unknown" dropped
        else:
            assert (event.geo.country, event.geo.city) == ("US", "Redmond")


def test_entra_risky_sign_in() -> None:
    """Entra 24: a success with riskLevelDuringSignIn=high, from Russia."""
    event = one("entra", line("entra", 24))
    assert (event.outcome, event.risk) == ("success", "high")
    assert event.geo is not None
    assert event.geo.country == "RU"
    assert event.vendor_event_id is None  # Panther objects carry no id
    assert event.event_id.startswith("entra:-:")


def test_entra_private_ip_without_location() -> None:
    """Entra 11: a private IP is kept (and internal); empty location with 0,0 is no geo."""
    event = one("entra", line("entra", 11))
    assert event.ip == "10.205.19.37"
    assert ip_is_internal(event.ip)
    assert event.geo is None


def test_entra_status_rules() -> None:
    """errorCode 0 with failureReason "Other." is a plain success; a missing or empty status
    is rejected; 50126 is a failure with its reason."""
    event = one("entra", line("entra", 3))
    assert (event.outcome, event.failure_reason) == ("success", None)
    assert reject_reason("entra", line("entra", 21)).startswith("status missing")
    assert reject_reason("entra", line("entra", 5)).startswith("status missing")  # {}
    event = one("entra", line("entra", 2))
    assert event.outcome == "failure"
    assert event.failure_reason is not None
    assert "\xa0" not in event.failure_reason
    assert (event.mfa_method, event.mfa_result) == ("password", "none")


def test_entra_mfa_codes_are_challenges() -> None:
    """50074/50076 ask for MFA (challenge, no result yet); 500121 is a failed MFA (denied, or
    timeout when the user did not respond)."""
    payload = line("entra", 1)
    payload["status"] = {"errorCode": 50076, "failureReason": "MFA required"}
    event = one("entra", payload)
    assert (event.outcome, event.mfa_result) == ("challenge", None)
    payload["status"] = {"errorCode": 500121, "additionalDetails": "MFA denied; user declined"}
    event = one("entra", payload)
    assert (event.outcome, event.mfa_result) == ("challenge", "denied")
    payload["status"] = {
        "errorCode": "500121",
        "additionalDetails": "MFA denied; user did not respond to mobile app notification",
    }
    event = one("entra", payload)
    assert (event.outcome, event.mfa_result) == ("challenge", "timeout")


def test_entra_country_names_and_zoneless_step_time() -> None:
    """Entra 28-29 give full country names (kept as given); entra 26's zone-less
    authenticationStepDateTime is UTC, used only when createdDateTime is missing."""
    for number, country in ((28, "China"), (29, "United States")):
        payload = line("entra", number)
        payload["status"] = {"errorCode": 0}
        event = one("entra", payload)
        assert event.geo is not None
        assert event.geo.country == country
    payload = line("entra", 26)
    assert one("entra", payload).time == datetime(2023, 7, 21, 5, 3, 52, 160562, tzinfo=UTC)
    del payload["createdDateTime"]
    assert one("entra", payload).time == datetime(2023, 1, 11, 11, 11, 11, tzinfo=UTC)


# ------------------------------------------------------------------------------ Google


def test_google_suspicious_success() -> None:
    """Google 15: login_success with is_suspicious=true is a success with high risk."""
    event = one("google", line("google", 15))
    assert (event.outcome, event.risk, event.mfa_method) == ("success", "high", "password")
    assert event.principal == "foo@bar.com"


def test_google_account_disabled_is_not_a_login() -> None:
    """Google 1: account_disabled_password_leak is an account-state warning, rejected."""
    assert reject_reason("google", line("google", 1)) == (
        "not a login event: account_disabled_password_leak"
    )


def test_google_suspicious_login_warning() -> None:
    """Google 2: suspicious_login is a challenge for the affected account (not the actor),
    timed by login_timestamp (microseconds)."""
    event = one("google", line("google", 2))
    assert (event.outcome, event.risk) == ("challenge", "high")
    assert event.principal == "foo@elastic.co"
    assert event.principal_id is None  # profileId is the actor's, not the affected account's
    assert event.time == datetime(2020, 7, 2, 13, 8, 25, 123456, tzinfo=UTC)


def test_google_profile_ids_as_numbers_or_strings() -> None:
    """profileId and uniqueQualifier are numbers in the Elastic lines, strings from the API."""
    numeric = one("google", line("google", 14))
    assert numeric.principal_id == "1"
    assert numeric.vendor_event_id == "2020-10-02T15:00:00Z/1"
    text = one("google", line("google", 17))
    assert text.principal_id == "111111111"
    assert text.vendor_event_id == "2025-02-27T05:59:58.481Z/123"
    assert (text.outcome, text.mfa_method, text.mfa_result) == ("challenge", "webauthn", "success")


def test_google_activity_with_several_events() -> None:
    """An activity with several events gives one LoginEvent per login event, with distinct
    ids; a logout in the same activity is skipped."""
    activity = line("google", 14)
    activity["events"] = (
        line("google", 10)["events"] + line("google", 13)["events"] + activity["events"]
    )
    events = normalise("google", activity)
    assert [e.event_type for e in events] == ["login_failure", "login_success"]
    assert [e.outcome for e in events] == ["failure", "success"]
    assert events[0].failure_reason == "login_failure_access_code_disallowed"
    assert len({e.event_id for e in events}) == 2
    assert {e.vendor_event_id for e in events} == {"2020-10-02T15:00:00Z/1"}


def test_google_identical_activities_share_qualifiers_but_not_event_ids() -> None:
    """16 Elastic activities share id.time and uniqueQualifier; event ids still differ."""
    ids: list[str] = []
    for number in range(1, 18):
        if ("google", number) not in REJECTED:
            ids.extend(e.event_id for e in normalise("google", line("google", number)))
    assert len(ids) == len(set(ids))


def test_google_other_application_is_rejected() -> None:
    payload = line("google", 14)
    payload["id"]["applicationName"] = "drive"
    assert reject_reason("google", payload) == "not a login activity: application 'drive'"


# ------------------------------------------------------------------------------ generic


def test_generic_shape() -> None:
    """The generic shape: canonical names, event id derived when absent, placeholders
    cleaned, vendor factor names mapped, identity left to the resolver."""
    event = one(
        "generic",
        {
            "time": "2025-03-01T10:00:00.123456789+01:00",
            "principal": "Social@Lumen-Outdoor.example",
            "outcome": "challenge",
            "mfa_method": "OKTA_VERIFY_PUSH",
            "mfa_result": "denied",
            "ip": "redacted",
            "geo": {"country": "Country", "city": "City", "lat": 0, "lon": 0},
            "target": "instagram:@lumenoutdoor",
            "identity": "someone-else",
            "risk": "HIGH",
        },
    )
    assert event.vendor == "generic"
    assert event.event_id.startswith("generic:-:")
    assert event.time == datetime(2025, 3, 1, 9, 0, 0, 123456, tzinfo=UTC)
    assert event.principal == "social@lumen-outdoor.example"
    assert (event.mfa_method, event.mfa_result) == ("push", "denied")
    assert (event.ip, event.geo, event.identity, event.risk) == (None, None, None, "high")
    assert event.event_type == "login"


def test_generic_rejections() -> None:
    """Unknown fields, a zone-less time, a bad outcome and a placeholder principal are
    rejected with a reason naming the field."""
    base = {"time": "2025-03-01T10:00:00Z", "principal": "a@b.example", "outcome": "success"}
    assert one("generic", base).outcome == "success"
    assert "unknown field" in reject_reason("generic", {**base, "usr": "x"})
    assert "needs a zone" in reject_reason("generic", {**base, "time": "2025-03-01T10:00:00"})
    assert "outcome" in reject_reason("generic", {**base, "outcome": "ok"})
    assert "principal" in reject_reason("generic", {**base, "principal": "<USER>"})
    assert "principal" in reject_reason("generic", {**base, "principal": None})


# ------------------------------------------------------------------------------ shared helpers


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2021-06-25T21:27:03.49Z", datetime(2021, 6, 25, 21, 27, 3, 490000, tzinfo=UTC)),
        ("2023-06-12T22:26:01.951000Z", datetime(2023, 6, 12, 22, 26, 1, 951000, tzinfo=UTC)),
        ("2022-01-24T05:10:08.6816663+00:00", datetime(2022, 1, 24, 5, 10, 8, 681666, tzinfo=UTC)),
        ("2024-05-02T18:46:21.121000000Z", datetime(2024, 5, 2, 18, 46, 21, 121000, tzinfo=UTC)),
        ("2019-10-18T04:45:48.0729893-05:00", datetime(2019, 10, 18, 9, 45, 48, 72989, tzinfo=UTC)),
        ("2021-06-30T16:34:32Z", datetime(2021, 6, 30, 16, 34, 32, tzinfo=UTC)),
        ("2021-06-30T16:34:32+0530", datetime(2021, 6, 30, 11, 4, 32, tzinfo=UTC)),
    ],
)
def test_parse_timestamp_forms(raw: str, expected: datetime) -> None:
    """2-, 6-, 7- and 9-digit fractions, offsets, and no fraction all parse to UTC."""
    assert parse_timestamp(raw, "t") == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("2017-09-31T22:23:07.777Z", "impossible date"),
        ("redacted", "placeholder"),
        ("2023-01-11T11:11:11", "needs a zone"),
        ("yesterday", "not an ISO-8601"),
        (None, "missing"),
        (1700000000, "expected a timestamp string"),
    ],
)
def test_parse_timestamp_rejections(raw: Any, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        parse_timestamp(raw, "t")


def test_zoneless_time_only_where_documented_utc() -> None:
    assert parse_timestamp("2023-01-11T11:11:11", "t", assume_utc=True) == datetime(
        2023, 1, 11, 11, 11, 11, tzinfo=UTC
    )


def test_clean_ip() -> None:
    """Placeholders and garbage are None; valid addresses are canonical; private kept."""
    for bad in ("null", "redacted", "<IP ADDRESS>", "", "999.1.1.1", None, 12, "x" * 100):
        assert clean_ip(bad) is None
    assert clean_ip(" 192.168.7.19 ") == "192.168.7.19"
    assert clean_ip("2001:DB8:0:0::1") == "2001:db8::1"
    assert ip_is_internal("192.168.7.19")
    assert not ip_is_internal("81.2.69.144")


def test_mfa_method_names() -> None:
    """Vendor factor names map to the canonical methods."""
    assert mfa_method("OKTA_VERIFY_PUSH") == "push"
    assert mfa_method("Mobile app notification") == "push"
    assert mfa_method("FIDO_WEBAUTHN") == "webauthn"
    assert mfa_method("security_key") == "webauthn"
    assert mfa_method("Text message") == "sms"
    assert mfa_method("Email OTP") == "email"
    assert mfa_method("OATH verification code") == "totp"
    assert mfa_method("google_authenticator") == "totp"
    assert mfa_method("Phone call approval") == "other"
    assert mfa_method("backup_code") == "other"
    assert mfa_method("Password") == "password"
    assert mfa_method("Previously satisfied") is None


def test_sources_registry() -> None:
    """One normaliser per vendor in the explicit registry; an unknown vendor is a reason."""
    assert dict(NORMALISERS) == {
        "okta": login_okta.normalise,
        "entra": login_entra.normalise,
        "google": login_google.normalise,
        "generic": login_generic.normalise,
    }
    with pytest.raises(ValidationError, match="vendor: 'auth0'"):
        normalise("auth0", {})


def test_normalisers_do_not_mutate_the_payload() -> None:
    for vendor, number in (("okta", 30), ("entra", 26), ("google", 2)):
        payload = line(vendor, number)
        before = copy.deepcopy(payload)
        normalise(vendor, payload)
        assert payload == before
