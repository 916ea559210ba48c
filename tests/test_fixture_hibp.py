"""HIBP breach objects on our own fixtures (``tests/fixtures/hibp.json``): every case through
the real :func:`connectors.hibp.poller.normalise_breach`, the catalogue's upsert and
:meth:`Breach.record_for`. Runs in a plain clone; the 885-line third-party catalogue in
``../shared/vendor-samples`` (``tests/test_hibp.py``) is checked only where it is present.
"""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.hibp.poller import Breach, BreachCatalogue, normalise_breach
from streams.support.errors import ValidationError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CASES: list[dict[str, Any]] = orjson.loads((FIXTURES / "hibp.json").read_bytes())
DATE_FIELDS = {"breach_date", "added_at", "modified_at"}


def params(cases: list[dict[str, Any]]) -> list[Any]:
    return [pytest.param(case, id=case["name"]) for case in cases]


def check_breach(breach: Breach, expected: dict[str, Any], where: str) -> None:
    actual = dataclasses.asdict(breach)
    for key, want in expected.items():
        if key.endswith("_length"):
            field = key.removesuffix("_length")
            assert len(actual[field]) == want, f"{where}: len({field}) = {len(actual[field])}"
            continue
        assert key in actual, f"{where}: {key} is not a Breach field"
        have = actual[key]
        if key in DATE_FIELDS and want is not None:
            assert have == datetime.fromisoformat(want), f"{where}: {key} = {have}"
        elif isinstance(have, tuple):
            assert list(have) == want, f"{where}: {key} = {have!r}"
        else:
            assert have == want, f"{where}: {key} = {have!r}, expected {want!r}"


@pytest.mark.parametrize("case", params(CASES))
def test_breach_fixture(case: dict[str, Any]) -> None:
    """Each breach-object quirk normalises to the stored fields, or is refused with the stored
    reason; the LeakRecord of a principal says whether the breach held passwords."""
    payload = case["payload"]
    before = copy.deepcopy(payload)
    expect = case["expect"]
    if "rejected" in expect:
        with pytest.raises(ValidationError) as err:
            normalise_breach(payload)
        assert expect["rejected"] in err.value.reason, err.value.reason
        assert payload == before
        return
    breach = normalise_breach(payload)
    assert payload == before, "normalise_breach never changes its input"
    check_breach(breach, expect["breach"], case["name"])
    for moment in (breach.breach_date, breach.added_at, breach.modified_at):
        assert moment is None or moment.utcoffset() is not None
    if "record_for" in case:
        spec = case["record_for"]
        record = breach.record_for(spec["principal"])
        for key, want in spec["expect"].items():
            assert getattr(record, key) == want, f"{case['name']}: record.{key}"
        assert record.password_hmac is None, "HIBP never gives us a password"


def test_catalogue_rejections_are_listed_by_index() -> None:
    """Loading the whole fixture catalogue: each rejected object is reported with its index
    and reason, and the good ones are kept, once per Name."""
    catalogue = BreachCatalogue()
    rejected = catalogue.load(case["payload"] for case in CASES)
    expected = [
        (i, c["expect"]["rejected"]) for i, c in enumerate(CASES) if "rejected" in c["expect"]
    ]
    assert [index for index, _ in rejected] == [index for index, _ in expected]
    for (_, reason), (_, fragment) in zip(rejected, expected, strict=True):
        assert fragment in reason
    accepted_names = {c["payload"]["Name"].strip() for c in CASES if "breach" in c["expect"]}
    assert {b.name for b in catalogue} == accepted_names
    assert len(catalogue) == len(accepted_names)


@pytest.mark.parametrize("reverse", [False, True], ids=["older-last", "newer-last"])
def test_same_name_in_two_schemas_is_one_breach(reverse: bool) -> None:
    """The same Name in the old and the new schema upserts: one entry, the later-modified copy
    wins whatever the order of arrival, and ingesting it again changes nothing."""
    members = [c for c in CASES if c.get("group") == "hibp-trailforum"]
    assert len(members) == 2
    payloads = [c["payload"] for c in members]
    if reverse:
        payloads.reverse()
    catalogue = BreachCatalogue()
    assert catalogue.load(payloads) == []
    assert len(catalogue) == 1
    breaches = [normalise_breach(p) for p in payloads]
    newest = max(breaches, key=lambda b: b.modified_at or datetime.min.replace(tzinfo=UTC))
    assert catalogue.get("TrailForum") == newest
    for payload in payloads:
        assert catalogue.upsert(normalise_breach(payload)) == "unchanged"
