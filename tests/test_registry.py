"""The access registry: YAML loading with file:line problems, indices, and event sourcing."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from streams.model.registry import Grant, Identity, Registry, diff_changes
from streams.model.registry_yaml import check_registry, load_registry, parse_registry
from streams.support.errors import RegistryError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "registry.yaml"


@pytest.fixture
def example() -> Registry:
    return load_registry(EXAMPLE)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def _line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


# ------------------------------------------------------------------------------ example file


def test_example_registry_is_valid(example: Registry) -> None:
    """The shipped example registry has no problems and holds the documented cast."""
    assert check_registry(EXAMPLE) == []
    assert set(example.accounts) == {
        "ig-lumen",
        "fb-lumen",
        "x-lumen",
        "tiktok-lumen",
        "li-lumen",
        "yt-lumen",
    }
    assert {"alice", "bob", "carol", "dan", "erin", "frank", "gina"} <= set(example.identities)
    assert example.agencies["oldco"].contract_ends < datetime(2026, 1, 1, tzinfo=UTC)
    assert example.agencies["brightwave"].members == ("erin", "frank")


def test_example_shared_credentials_default_ref(example: Registry) -> None:
    """A shared credential without ``ref`` is stored under ``shared/<account id>``."""
    tiktok = example.accounts["tiktok-lumen"].shared_credential
    assert tiktok is not None
    assert tiktok.totp
    assert tiktok.ref == "shared/tiktok-lumen"
    assert example.accounts["ig-lumen"].shared_credential is None


def test_dates_become_utc_datetimes(example: Registry) -> None:
    """A plain date means 00:00 UTC that day; timestamps keep their instant in UTC."""
    assert example.agencies["brightwave"].contract_ends == datetime(2027, 12, 31, tzinfo=UTC)
    assert example.agencies["oldco"].contract_ends == datetime(2025, 6, 30, 17, tzinfo=UTC)
    grant = example.grants[("dan", "yt-lumen")]
    assert grant.expires_at == datetime(2027, 6, 30, tzinfo=UTC)


# ------------------------------------------------------------------------------ lookups


def test_resolve_hr_prefers_employee_id_then_id_then_email(example: Registry) -> None:
    """HR events resolve by employee_id, then registry id, then e-mail (case-insensitive)."""
    assert example.resolve_hr("E1001", "someone@else.example").id == "alice"  # type: ignore[union-attr]
    assert example.resolve_hr("erin", None).id == "erin"  # type: ignore[union-attr]
    by_email = example.resolve_hr("E9999", "  Bob@Lumen-Outdoor.EXAMPLE ")
    assert by_email is not None
    assert by_email.id == "bob"
    assert example.resolve_hr("E9999", "nobody@lumen-outdoor.example") is None


def test_resolve_alias(example: Registry) -> None:
    """Aliases resolve per provider, or across providers when unambiguous."""
    assert example.resolve_alias("hs-2231", "hootsuite").id == "alice"  # type: ignore[union-attr]
    assert example.resolve_alias("hs-2231", "okta") is None
    assert example.resolve_alias("00u1bobxyz0A1b2C3d4e5").id == "bob"  # type: ignore[union-attr]
    assert example.resolve_alias("carol.ruiz@lumen-outdoor.example").id == "carol"  # type: ignore[union-attr]


def test_resolve_alias_ambiguous_is_none() -> None:
    """A value two identities use resolves to nobody rather than to the wrong person."""
    reg = Registry()
    reg.put_identity(Identity("a", "A", "employee", ("a@x.example",), {"hootsuite": "same"}))
    reg.put_identity(Identity("b", "B", "employee", ("b@x.example",), {"instagram": "same"}))
    assert reg.resolve_alias("same") is None
    assert reg.resolve_alias("same", "instagram").id == "b"  # type: ignore[union-attr]


def test_grants_of_and_holders(example: Registry) -> None:
    """Grants are indexed by identity and by account, filterable by access path."""
    assert [g.account for g in example.grants_of("bob")] == ["x-lumen", "tiktok-lumen", "li-lumen"]
    assert sorted(g.identity for g in example.holders("x-lumen", via="shared_credential")) == [
        "alice",
        "bob",
        "carol",
    ]
    assert sorted(g.identity for g in example.holders("ig-lumen")) == [
        "alice",
        "dan",
        "erin",
        "gina",
    ]
    assert example.grants_of("nobody") == []


# ------------------------------------------------------------------------------ check: errors


MANY_ERRORS = """
accounts:
  - id: ig
    platform: instagram
    handle: "@brand"
    criticality: urgent            # bad enum
    provider: hootsuite
  - id: ig                         # duplicate id
    platform: instagram
    handle: "@brand2"
    criticality: high
    provider: hootsuite
  - id: x
    platform: x
    criticality: high              # handle missing
    provider: hootsuite
    colour: blue                   # unknown key
  - id: tt
    platform: tiktok
    handle: "@tt"
    criticality: low
    provider: hootsuite
identities:
  - id: alice
    name: Alice
    kind: employee
    emails: [alice@brand.example]
  - id: bob
    name: Bob
    kind: robot                    # bad enum
    emails: [ALICE@brand.example]  # same email as alice
  - id: carol
    name: Carol
    kind: employee
    status: gone                   # bad enum
    emails: [not-an-email]         # bad email
grants:
  - {identity: alice, account: ig, role: admin, via: sso, mfa: push}
  - {identity: alice, account: ig, role: read_only, via: sso, mfa: push}     # duplicate grant
  - {identity: zed, account: nowhere, role: admin, via: sso, mfa: push}      # unknown refs
  - {identity: alice, account: tt, role: boss, via: shared_credential, mfa: totp, expires_at: soon}
agencies:
  - id: ag
    name: Agency
    contract_ends: someday         # bad date
    members: [alice, ghost]        # unknown member
mystery: 1                         # unknown top-level key
"""


def test_check_reports_every_error_with_line(tmp_path: Path) -> None:
    """One check run reports every problem, each as ``path:line: message``, in line order."""
    path = _write(tmp_path, MANY_ERRORS)
    problems = check_registry(path)

    def expect(needle: str, *fragments: str) -> None:
        line = _line_of(path, needle)
        hits = [p for p in problems if p.startswith(f"{path}:{line}: ")]
        for fragment in fragments:
            assert any(fragment in p for p in hits), (needle, fragment, problems)

    expect("criticality: urgent", "criticality: must be one of low, medium, high, critical")
    expect("# duplicate id", "duplicate account id 'ig'")
    expect("- id: x", "handle: required")
    expect("colour: blue", "unknown key 'colour'")
    expect("kind: robot", "kind: must be one of employee, contractor, agency")
    expect("ALICE@brand.example", "already belongs to identity 'alice'")
    expect("status: gone", "status: must be one of")
    expect("not-an-email", "is not an e-mail address")
    expect("# duplicate grant", "duplicate grant of 'ig' to 'alice'")
    expect("# unknown refs", "unknown identity 'zed'", "unknown account 'nowhere'")
    expect("role: boss", "role: must be one of", "declares no shared_credential", "expires_at")
    expect("contract_ends: someday", "contract_ends")
    expect("members: [alice, ghost]", "unknown identity 'ghost'")
    expect("mystery: 1", "unknown key 'mystery'")
    assert len(problems) == 17, problems
    lines = [int(p.split(":")[1]) for p in problems]
    assert lines == sorted(lines)


def test_load_raises_registry_error_with_all_problems(tmp_path: Path) -> None:
    """load_registry refuses an invalid file and the error carries every problem."""
    path = _write(tmp_path, MANY_ERRORS)
    with pytest.raises(RegistryError, match="registry invalid") as info:
        load_registry(path)
    assert info.value.problems == check_registry(path)


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    """A YAML syntax error is reported with the line where the parser gave up."""
    path = _write(
        tmp_path,
        """
        accounts:
          - id: ig
            handle: [unclosed
        identities: []
        """,
    )
    problems = check_registry(path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:")
    assert "YAML syntax error" in problems[0]
    assert int(problems[0].split(":")[1]) >= 3


def test_structure_errors(tmp_path: Path) -> None:
    """Non-mapping roots, non-list sections, non-mapping entries and duplicate keys are all
    reported, together."""
    assert "must be a mapping" in check_registry(_write(tmp_path, "- 1\n"))[0]
    assert "empty registry" in check_registry(_write(tmp_path, "# nothing\n"))[0]
    path = _write(
        tmp_path,
        """
        accounts: {id: x}
        identities:
          - just-a-string
          - id: a
            id: b
            name: A
            kind: employee
            emails: []
        grants:
        """,
    )
    problems = check_registry(path)
    assert any(":1: accounts: expected a list" in p for p in problems)
    assert any(":3: identities[0]: expected a mapping" in p for p in problems)
    assert any(":5: " in p and "id: given twice" in p for p in problems)
    assert any(":8: " in p and "list at least one address" in p for p in problems)


def test_naive_timestamp_rejected(tmp_path: Path) -> None:
    """A timestamp without a zone is rejected: it would shift offboardings by hours."""
    path = _write(
        tmp_path,
        """
        agencies:
          - id: ag
            name: Agency
            contract_ends: 2025-01-01 10:00:00
        """,
    )
    (problem,) = check_registry(path)
    assert (
        problem == f"{path}:4: agencies[0] ag: contract_ends: timestamp needs a zone (Z or +hh:mm)"
    )


def test_ambiguous_employee_id_rejected(tmp_path: Path) -> None:
    """Two identities answering to the same HR id are refused (HR events would be ambiguous)."""
    path = _write(
        tmp_path,
        """
        identities:
          - {id: a, name: A, kind: employee, emails: [a@x.example], employee_id: E1}
          - {id: b, name: B, kind: employee, emails: [b@x.example], employee_id: E1}
        """,
    )
    (problem,) = check_registry(path)
    assert problem.startswith(f"{path}:3: ")
    assert "employee_id 'E1' is also identity 'a'" in problem


def test_missing_file() -> None:
    """A missing file is one problem naming the path, and load raises RegistryError."""
    assert "cannot read the registry" in check_registry("/nonexistent/registry.yaml")[0]
    with pytest.raises(RegistryError, match="cannot read"):
        load_registry("/nonexistent/registry.yaml")


# ------------------------------------------------------------------------------ event sourcing


def test_changes_round_trip(example: Registry) -> None:
    """from_changes(to_changes()) rebuilds an equal registry, and the values are JSON."""
    changes = example.to_changes()
    wire = orjson.loads(orjson.dumps(changes))
    rebuilt = Registry.from_changes((k, v) for k, v in wire)
    assert rebuilt == example
    assert rebuilt.resolve_hr("E1002", None).id == "bob"  # type: ignore[union-attr]
    keys = [k for k, _ in changes]
    assert "account:x-lumen" in keys
    assert "identity:alice" in keys
    assert "grant:alice:x-lumen" in keys
    assert "agency:oldco" in keys
    first_grant = next(i for i, k in enumerate(keys) if k.startswith("grant:"))
    assert all(not k.startswith("grant:") for k in keys[:first_grant])


def test_apply_change_tombstones_update_indices(example: Registry) -> None:
    """A tombstone deletes the record and its index entries; other records are untouched."""
    reg = Registry.from_changes(example.to_changes())
    reg.apply_change("grant:bob:x-lumen", None)
    assert [g.identity for g in reg.holders("x-lumen", via="shared_credential")] == [
        "alice",
        "carol",
    ]
    assert "x-lumen" not in [g.account for g in reg.grants_of("bob")]
    reg.apply_change("identity:bob", None)
    assert "bob" not in reg.identities
    assert reg.resolve_hr("E1002", "bob@lumen-outdoor.example") is None
    assert reg.resolve_alias("hs-2232", "hootsuite") is None
    assert reg.resolve_hr("E1001", None).id == "alice"  # type: ignore[union-attr]
    reg.apply_change("agency:oldco", None)
    reg.apply_change("account:yt-lumen", None)
    assert "oldco" not in reg.agencies
    assert "yt-lumen" not in reg.accounts
    reg.apply_change("identity:ghost", None)  # deleting what is absent is harmless


def test_apply_change_replaces_identity_indices(example: Registry) -> None:
    """Updating an identity drops its old e-mail and alias index entries."""
    reg = Registry.from_changes(example.to_changes())
    value = reg.identities["carol"].to_dict()
    value["emails"] = ["carol@new.example"]
    value["aliases"] = {"okta": "00u-new"}
    reg.apply_change("identity:carol", value)
    assert reg.resolve_hr(None, "carol.ruiz@lumen-outdoor.example") is None
    assert reg.resolve_hr(None, "CAROL@new.example").id == "carol"  # type: ignore[union-attr]
    assert reg.resolve_alias("hs-2233", "hootsuite") is None
    assert reg.resolve_alias("00u-new", "okta").id == "carol"  # type: ignore[union-attr]


def test_apply_change_rejects_garbage() -> None:
    """Unknown change kinds and unreadable values raise RegistryError naming the key."""
    reg = Registry()
    with pytest.raises(RegistryError, match="unknown registry change kind"):
        reg.apply_change("widget:1", {})
    with pytest.raises(RegistryError, match="identity:x: unreadable"):
        reg.apply_change("identity:x", {"id": "x"})
    with pytest.raises(RegistryError, match="grant:<identity>:<account>"):
        reg.apply_change("grant:onlyone", None)


def test_diff_changes(example: Registry) -> None:
    """The diff holds upserts for changed records and tombstones for removed ones, grant and
    agency tombstones first and identity/account tombstones last; applying it to the old
    registry yields the new one."""
    new = Registry.from_changes(example.to_changes())
    new.remove_grant("gina", "ig-lumen")
    new.remove_grant("gina", "tiktok-lumen")
    new.remove_agency("oldco")
    new.remove_identity("gina")
    new.put_grant(Grant("bob", "yt-lumen", "read_only", "sso", "push"))
    new.put_grant(Grant("dan", "ig-lumen", "can_reply", "native", "totp"))
    diff = diff_changes(example, new)
    keys = [k for k, _ in diff]
    assert set(keys) == {
        "grant:gina:ig-lumen",
        "grant:gina:tiktok-lumen",
        "agency:oldco",
        "identity:gina",
        "grant:bob:yt-lumen",
        "grant:dan:ig-lumen",
    }
    assert keys[-1] == "identity:gina"
    assert dict(diff)["identity:gina"] is None
    assert dict(diff)["grant:gina:ig-lumen"] is None
    assert keys.index("grant:gina:ig-lumen") < keys.index("grant:bob:yt-lumen")
    patched = Registry.from_changes(example.to_changes())
    for key, value in diff:
        patched.apply_change(key, value)
    assert patched == new
    assert diff_changes(example, example) == []


def test_parse_registry_keeps_valid_part() -> None:
    """parse_registry returns the valid records alongside the problems (for `registry show`)."""
    reg, problems = parse_registry(
        "identities:\n  - {id: a, name: A, kind: employee, emails: [a@x.example]}\n"
        "  - {id: b, name: B, kind: nope, emails: [b@x.example]}\n",
        "mem.yaml",
    )
    assert list(reg.identities) == ["a"]
    assert problems == [
        "mem.yaml:3: identities[1] b: kind: must be one of employee, contractor, agency "
        "(got 'nope')"
    ]


def test_apply_change_scales_linearly() -> None:
    """100k identities materialise from changes with O(1) work per change."""
    changes = [
        (
            f"identity:u{i}",
            {
                "id": f"u{i}",
                "name": f"User {i}",
                "kind": "employee",
                "emails": [f"u{i}@x.example"],
                "aliases": {"okta": f"00u{i}"},
            },
        )
        for i in range(100_000)
    ]
    reg = Registry.from_changes(changes)
    assert len(reg.identities) == 100_000
    assert reg.resolve_hr(None, "u99999@x.example").id == "u99999"  # type: ignore[union-attr]
    reg.apply_change("identity:u5", None)
    assert reg.resolve_alias("00u5", "okta") is None
