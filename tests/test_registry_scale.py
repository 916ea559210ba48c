"""The registry YAML read at enterprise size: libyaml's parser, one entry composed at a time.

The fast path (libyaml's events, :mod:`streams.support.yamlstream`) must build exactly what the
pure-Python parser builds, report problems with the same ``file:line``, and keep memory per
identity small; bench/registry_load.py measures the 100k-identity figures.
"""

from __future__ import annotations

import asyncio
import gc
import textwrap
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from streams.bus.bootstrap import import_registry
from streams.bus.broker import EmbeddedBroker
from streams.bus.topics import Topics, create_topics
from streams.bus.views import Views
from streams.config import load_config
from streams.model.registry import Registry, diff_changes
from streams.model.registry_yaml import check_registry, load_registry, parse_registry
from streams.support import yamlstream
from streams.support.yamlstream import Composer, loader_class

#: Every feature of the registry file: shared logins (with and without ref/login/TOTP), all
#: kinds and statuses, several e-mails in mixed case, aliases at IdPs and platforms (quoted
#: numbers, e-mail-like), employee ids, password-change times, every access path and MFA
#: method, expiries as dates and zoned timestamps, agencies (list anchored and reused),
#: flow and block style, comments, and sections in an unusual order (grants first).
FEATURES = """\
# grants before the identities and accounts they name
grants:
  - {identity: alice, account: ig, role: admin, via: sso, mfa: webauthn}
  - identity: alice
    account: x
    role: full_publishing
    via: shared_credential
    mfa: totp
    expires_at: 2027-06-30
  - {identity: bob, account: x, role: can_reply, via: shared_credential, mfa: totp}
  - {identity: bob, account: li, role: read_only, via: native, mfa: push,
     expires_at: "2027-01-15T17:30:00+02:00"}
  - {identity: dan, account: li, role: needs_approval, via: api_token, mfa: none}
  - {identity: erin, account: ig, role: no_access, via: native, mfa: push}
agencies:
  - id: brightwave
    name: Brightwave Media
    contract_ends: 2027-12-31
    members: &crew [erin, frank]
  - {id: oldco, name: "OldCo: Creative", contract_ends: 2025-06-30T17:00:00Z, members: *crew}
accounts:
  - {id: ig, platform: Instagram, handle: "@Brand", criticality: critical, provider: meta}
  - id: x
    platform: x
    handle: "@brand_x"
    criticality: high
    provider: hootsuite
    shared_credential: {totp: true, login: social@brand.example}
  - id: li
    platform: linkedin
    handle: brand
    criticality: low
    provider: hootsuite
    shared_credential: {totp: false, ref: vault/li}
identities:
  - id: alice
    name: Alice Nguyen
    kind: employee
    employee_id: E1001
    emails: [Alice.Nguyen@Brand.example, alice@brand.example]
    aliases:
      okta: 00u1alicexyz0A1b2C3d4
      entra: 6f1c2d3e-1111-4a5b-9c8d-a11ce0000001
      google: alice.nguyen@brand.example
      hootsuite: "2231"
      meta: 100200300400501
      instagram: alice.lumen
    credential_changed_at: 2026-03-01T09:30:00Z
  - id: bob
    name: 'Bob O''Kafor'
    kind: contractor
    status: suspended
    emails: [bob@freelance.example]
    aliases: {okta: 00u1bobxyz0A1b2C3d4e5, hootsuite: hs-2232}
  - {id: dan, name: Dan, kind: employee, status: offboarded, emails: [dan@brand.example]}
  - {id: erin, name: Erin (Brightwave), kind: agency, emails: [erin@brightwave.example]}
  - {id: frank, name: Frank (Brightwave), kind: agency, emails: [frank@brightwave.example],
     aliases: {hootsuite: hs-7002}}
"""


def _write(tmp_path: Path, text: str, name: str = "registry.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def _generated(identities: int) -> str:
    """A registry of ``identities`` people with aliases and grants (block style)."""
    lines = ["accounts:"]
    lines += [
        f"  - {{id: a{a}, platform: x, handle: '@b{a}', criticality: high, provider: hs}}"
        for a in range(20)
    ]
    lines.append("identities:")
    for n in range(identities):
        lines += [
            f"  - id: u{n:06d}",
            f"    name: Person {n}",
            "    kind: employee",
            f"    employee_id: E{n:07d}",
            f"    emails: [person.{n}@brand.example]",
            "    aliases:",
            f"      okta: 00u{n:08d}xyzA1b2",
            f"      entra: 6f1c2d3e-0000-4000-8000-{n:012d}",
            f"      google: person.{n}@brand.example",
            f"      hs: hs-{n}",
        ]
    lines.append("grants:")
    for n in range(identities):
        for a in (n % 20, (n + 1) % 20):
            lines.append(
                f"  - {{identity: u{n:06d}, account: a{a}, role: can_reply, via: sso, mfa: push}}"
            )
    return "\n".join(lines) + "\n"


def _tree(node: Node) -> Any:
    """A node as comparable data: kind, tag, value and where it starts."""
    where = (node.start_mark.line, node.start_mark.column)
    if isinstance(node, ScalarNode):
        return ("scalar", node.tag, node.value, where)
    if isinstance(node, SequenceNode):
        return ("seq", node.tag, [_tree(n) for n in node.value], where)
    assert isinstance(node, MappingNode)
    return ("map", node.tag, [(_tree(k), _tree(v)) for k, v in node.value], where)


def test_libyaml_parser_is_used() -> None:
    """The registry is read with libyaml's parser (PyYAML's wheels bundle it): the pure-Python
    one is ten times slower and would miss the 100k-identities-in-10-s goal."""
    assert yaml.__with_libyaml__, "this PyYAML was built without libyaml"
    assert loader_class() is yaml.CSafeLoader


def test_without_libyaml_the_pure_python_parser_is_used_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PyYAML without libyaml still loads the registry, and a warning names the fallback."""
    monkeypatch.setattr(yamlstream, "FAST_LOADER", None)
    assert loader_class() is yaml.SafeLoader
    with capture_logs() as logs:
        registry, problems = parse_registry(FEATURES)
    assert problems == []
    assert len(registry.identities) == 5
    (warning,) = [e for e in logs if e["event"] == "registry.slow_yaml_parser"]
    assert warning["log_level"] == "warning"
    assert warning["loader"] == "yaml.SafeLoader"


def test_fast_and_slow_parsers_build_the_same_registry(tmp_path: Path) -> None:
    """libyaml's events and the pure-Python parser's give equal registries for a file using
    every feature, from text and from a file."""
    fast, fast_problems = parse_registry(FEATURES, loader=yaml.CSafeLoader)
    slow, slow_problems = parse_registry(FEATURES, loader=yaml.SafeLoader)
    assert fast_problems == slow_problems == []
    assert fast == slow
    assert load_registry(_write(tmp_path, FEATURES)) == slow
    # the features did arrive (equal but empty would prove nothing)
    assert (len(fast.accounts), len(fast.identities), len(fast.grants)) == (3, 5, 6)
    assert fast.accounts["ig"].platform == "instagram"
    assert fast.accounts["x"].shared_credential is not None
    assert fast.accounts["x"].shared_credential.ref == "shared/x"
    assert fast.identities["alice"].emails == ("alice.nguyen@brand.example", "alice@brand.example")
    assert fast.identities["alice"].aliases["meta"] == "100200300400501"
    assert fast.identities["alice"].credential_changed_at is not None
    assert fast.identities["bob"].name == "Bob O'Kafor"
    assert fast.agencies["oldco"].members == ("erin", "frank")
    expiry = fast.grants[("bob", "li")].expires_at
    assert expiry is not None
    assert expiry.isoformat() == "2027-01-15T15:30:00+00:00"
    assert fast.resolve_alias("hs-7002", "hootsuite") == fast.identities["frank"]


def test_composer_composes_what_pyyaml_composes() -> None:
    """The streaming composer builds the same nodes as yaml.compose: kinds, resolved tags
    (ints, dates, timestamps, strings), values, anchors and positions."""
    expected = _tree(yaml.compose(FEATURES, Loader=yaml.SafeLoader))
    for loader in (yaml.CSafeLoader, yaml.SafeLoader):
        parser = loader(FEATURES)
        composer = Composer(parser)
        composer.get()  # stream start
        composer.get()  # document start
        assert _tree(composer.node(composer.get())) == expected, loader
        parser.dispose()


BROKEN = """\
accounts:
  - {id: ig, platform: instagram, handle: "@b", criticality: urgent, provider: meta}
identities:
  - {id: alice, name: Alice, kind: employee, emails: [alice@brand.example]}
  - id: bob
    name: Bob
    kind: robot
    emails: [ALICE@brand.example]
    aliases: {okta: ../admin}
grants:
  - {identity: alice, account: ig, role: admin, via: sso, mfa: push}
  - {identity: zed, account: ig, role: boss, via: sso, mfa: push}
"""


def test_broken_registry_on_the_fast_path_reports_file_and_line(tmp_path: Path) -> None:
    """With libyaml's parser every problem still carries its file and line, the same list the
    pure-Python parser gives."""
    path = _write(tmp_path, BROKEN)
    problems = check_registry(path)
    assert [p.split(": ", 1)[0] for p in problems] == [
        f"{path}:2",
        f"{path}:7",
        f"{path}:8",
        f"{path}:9",
        f"{path}:12",
        f"{path}:12",
    ]
    assert "criticality: must be one of" in problems[0]
    assert "kind: must be one of" in problems[1]
    assert "already belongs to identity 'alice' (line 4)" in problems[2]
    assert "aliases: okta: '../admin' starts with '.'" in problems[3]
    assert "role: must be one of" in problems[4]
    assert "unknown identity 'zed'" in problems[5]
    assert problems == check_registry(path, loader=yaml.SafeLoader)
    with pytest.raises(Exception, match=r"registry invalid"):
        load_registry(path)


def test_sections_in_any_order_give_the_same_registry() -> None:
    """Grants and agencies listed before the identities and accounts they name are checked
    against them all the same (and an unknown one is still reported at its line)."""
    reordered, problems = parse_registry(FEATURES)  # grants, agencies, accounts, identities
    assert problems == []
    sections = yaml.safe_load(FEATURES)
    canonical = yaml.safe_dump(
        {k: sections[k] for k in ("accounts", "identities", "grants", "agencies")},
        sort_keys=False,
    )
    in_order, problems = parse_registry(canonical)
    assert problems == []
    assert reordered == in_order
    late, problems = parse_registry(
        "grants:\n  - {identity: ghost, account: ig, role: admin, via: sso, mfa: push}\n"
        + canonical.split("grants:")[0]
    )
    assert problems == ["<registry>:2: grants[0] ghost->ig: identity: unknown identity 'ghost'"]
    assert late.grants == {}


def test_memory_per_identity_stays_small() -> None:
    """Loading keeps at most a few KB per identity alive at any time (composing the whole
    document first cost ~30 KB per identity), and leaves the garbage collector on."""
    n = 2000
    text = _generated(n)
    tracemalloc.start()
    try:
        registry, problems = parse_registry(text)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert problems == []
    assert len(registry.identities) == n
    # measured: ~2.6 KB retained and ~2.7 KB peak per identity (plus the text itself here)
    text_bytes = len(text) + 100
    assert (peak - text_bytes) / n < 8000, (current / n, peak / n)
    assert gc.isenabled()


def test_garbage_collector_is_back_on_after_a_syntax_error() -> None:
    """The collector paused for the load is re-enabled however the load ends."""
    _registry, problems = parse_registry("accounts: [unclosed\n")
    assert problems
    assert "YAML syntax error" in problems[0]
    assert gc.isenabled()


def test_the_topic_materialises_what_the_file_holds(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """Imported through the registry topic of a real broker and read back by a worker's
    Views, the registry equals the one loaded from the file (aliases re-checked, indices
    built, the garbage collector back on)."""
    path = _write(tmp_path, FEATURES)
    config = load_config(
        None,
        env={
            "ACCESSGUARD_BROKER": broker.url,
            "ACCESSGUARD_TOPICS_PREFIX": "scale",
            "ACCESSGUARD_DATA_DIR": str(tmp_path / "data"),
        },
    )
    create_topics(config, broker.bootstrap)
    summary = import_registry(config, broker.bootstrap, path)
    assert summary["changes"] == 3 + 5 + 6 + 2
    topics = Topics.from_config(config)

    async def materialise() -> Views:
        views = Views(
            broker.bootstrap,
            registry_topic=topics.registry,
            lifecycle_topic=topics.lifecycle,
            ledger_topic=topics.ledger,
            writer_id=b"test",
        )
        await views.start(timeout=30)
        await views.stop()
        return views

    views = asyncio.run(materialise())
    assert views.registry == load_registry(path)
    assert views.registry.resolve_alias("00u1bobxyz0a1b2c3d4e5") == views.registry.identities["bob"]
    assert views.leak_index is not None
    assert gc.isenabled()


def test_diffing_an_unchanged_registry_holds_nothing_per_identity() -> None:
    """`accessguard run` diffs the file against the topic at every start: with nothing
    changed, the diff is empty and builds no copy of either side (serialising both sides
    first cost ~2.7 KB per identity)."""
    n = 2000
    registry, problems = parse_registry(_generated(n))
    assert problems == []
    same = Registry.from_changes(registry.to_changes())
    tracemalloc.start()
    try:
        assert diff_changes(same, registry) == []
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak / n < 200, peak / n
