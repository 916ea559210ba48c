"""Leak recency: a person with no credential-change fact in a breach older than
leaks.review_after_days is a low finding for review — listed, never paged, never acted on."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from streams.cli import main
from streams.config import load_config
from streams.decide.leaks import LeakDecision, LeakSettings, decide_leak, findings_in
from streams.model.leak_index import LeakIndex
from streams.model.records import LeakRecord
from streams.model.registry import Registry
from streams.model.registry_yaml import parse_registry
from streams.model.state import IdentityState, StateStore
from streams.runtime.engine import leak_settings
from streams.runtime.replay import replay

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PROVIDERS = {"okta": "okta", "meta-business": "generic", "hootsuite": "generic"}

REGISTRY = """
accounts:
  - id: ig-brand
    platform: instagram
    handle: "@brand"
    criticality: critical
    provider: meta-business
identities:
  - id: alice
    name: Alice Admin
    kind: employee
    emails: [alice@brand.example]
    aliases: {okta: 00u-alice}
  - id: carl
    name: Carl Changed
    kind: employee
    emails: [carl@brand.example]
    aliases: {okta: 00u-carl}
    credential_changed_at: 2012-01-01
grants:
  - {identity: alice, account: ig-brand, role: admin, via: sso, mfa: webauthn}
  - {identity: carl, account: ig-brand, role: admin, via: sso, mfa: webauthn}
"""


@pytest.fixture
def registry() -> Registry:
    reg, problems = parse_registry(REGISTRY)
    assert problems == []
    return reg


def leak(principal: str, date: str, breach: str = "Adobe") -> LeakRecord:
    return LeakRecord.from_dict(
        {
            "principal": principal,
            "breach": breach,
            "source": "test",
            "breach_date": date,
            "data_classes": ["Email addresses", "Passwords"],
            "password_present": True,
        }
    )


def decide(
    registry: Registry,
    record: LeakRecord,
    settings: LeakSettings | None = None,
    lifecycle: StateStore | None = None,
) -> LeakDecision:
    return decide_leak(
        registry,
        lifecycle or StateStore(),
        record,
        NOW,
        PROVIDERS,
        index=LeakIndex.build(registry, frozenset()),
        settings=settings or LeakSettings(),
    )


def test_an_old_breach_without_a_credential_change_is_a_finding_not_a_page(
    registry: Registry,
) -> None:
    """The 2013 Adobe dump and an admin with no credential-change date: outcome review, one
    low finding (hashed subject, no e-mail), no alert, no action, no state change."""
    decision = decide(registry, leak("alice@brand.example", "2013-10-04"))
    assert decision.outcome == "review"
    assert decision.subjects == (("identity", "alice", "review"),)
    assert decision.actions == ()
    assert decision.alerts == ()
    assert decision.state_updates == ()
    [finding] = decision.findings
    assert finding["severity"] == "low"
    assert finding["identity"] == "alice"
    assert finding["breach"] == "Adobe"
    assert finding["age_days"] > 365 * 12
    assert "alice@brand.example" not in orjson.dumps(decision.to_dict()).decode()
    assert decision.to_dict()["findings"] == [finding]


def test_a_recent_breach_is_still_acted_on(registry: Registry) -> None:
    """A breach inside the horizon pages and acts exactly as before."""
    decision = decide(registry, leak("alice@brand.example", "2025-06-01"))
    assert decision.outcome == "applied"
    assert decision.findings == ()
    assert {a.rule for a in decision.alerts} == {"leak_privileged_holder"}


def test_the_horizon_is_configurable_and_its_edge_is_inside(registry: Registry) -> None:
    """review_after_days decides: exactly that old is still acted on, a day older is a
    finding; a longer horizon acts on the old breach again."""
    edge = leak("alice@brand.example", "2025-03-02T09:00:00Z")
    assert decide(registry, edge).outcome == "applied"
    older = leak("alice@brand.example", "2025-03-01T09:00:00Z")
    assert decide(registry, older).outcome == "review"
    assert decide(registry, older, LeakSettings(review_after_days=400)).outcome == "applied"
    config = load_config(None, env={"ACCESSGUARD_LEAKS_REVIEW_AFTER_DAYS": "30"})
    assert leak_settings(config).review_after_days == 30
    assert load_config(None, env={})["leaks.review_after_days"] == 365


def test_a_known_credential_change_keeps_the_stale_rule(registry: Registry) -> None:
    """With a credential-change fact the old rule holds: older than the change is stale,
    newer is acted on, whatever the horizon (the fact is better than a guess)."""
    assert decide(registry, leak("carl@brand.example", "2011-05-01")).outcome == "stale"
    assert decide(registry, leak("carl@brand.example", "2013-10-04")).outcome == "applied"
    lifecycle = StateStore()
    lifecycle.put(IdentityState(identity="alice", reenrolled_at="2014-01-01T00:00:00Z"))
    decision = decide(registry, leak("alice@brand.example", "2013-10-04"), lifecycle=lifecycle)
    assert decision.outcome == "stale"


def test_findings_are_listed_by_replay_and_the_report(registry: Registry, tmp_path: Path) -> None:
    """`replay` prints the finding (not a skipped line, not an alert); `leaks findings` lists
    each finding once from replay output or an audit export, oldest breach first."""
    lines = [
        orjson.dumps({"kind": "leak", **leak("alice@brand.example", "2013-10-04").to_dict()}),
        orjson.dumps(
            {"kind": "leak", **leak("alice@brand.example", "2016-05-18", "LinkedIn").to_dict()}
        ),
        orjson.dumps({"kind": "leak", **leak("alice@brand.example", "2013-10-04").to_dict()}),
    ]
    out = list(replay(registry, [x.decode() for x in lines], at=NOW, providers=PROVIDERS))
    assert {o["type"] for o in out} == {"finding"}
    replayed = tmp_path / "replay.ndjson"
    replayed.write_bytes(b"".join(orjson.dumps(o) + b"\n" for o in out))
    audited = decide(registry, leak("alice@brand.example", "2012-06-05", "Dropbox")).to_dict()
    export = tmp_path / "audit.ndjson"
    export.write_bytes(
        orjson.dumps({"ts": 1.0, "kind": "leak", **audited, "chain": "c", "seq": 1})
        + b"\n"
        + orjson.dumps({"ts": 2.0, "kind": "plan", "plan": "x"})
        + b"\nnot json\n"
    )
    found, unreadable = findings_in(
        [*replayed.read_bytes().splitlines(), *export.read_bytes().splitlines()]
    )
    assert [f["breach"] for f in found] == ["Dropbox", "Adobe", "LinkedIn"]
    assert unreadable == 1
    result = CliRunner().invoke(main, ["leaks", "findings", "--input", str(replayed), "--json"])
    assert result.exit_code == 0, result.output
    assert [orjson.loads(x)["breach"] for x in result.stdout.splitlines()] == ["Adobe", "LinkedIn"]
    text = CliRunner().invoke(main, ["leaks", "findings", "--input", str(export)])
    assert text.exit_code == 0, text.output
    assert text.stdout.startswith("low  alice  breach Dropbox (2012-06-05,")
