"""Leaked-credential matching against the registry and the leak decision."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.bus.leakbatch import LeakBatcher, decode_batch
from streams.decide.leaks import (
    LeakSettings,
    decide_leak,
    leak_decision_view,
    state_after_action,
)
from streams.detect.engine import RuleEngine
from streams.detect.load import load_rules
from streams.detect.model import RuleSet
from streams.model.leak_index import LeakIndex, LeakMatch, normalise_principal
from streams.model.records import Action, LeakRecord
from streams.model.registry import Registry
from streams.model.registry_yaml import parse_registry
from streams.model.state import IdentityState, StateStore
from streams.runtime.replay import leak_lines_to_records
from streams.support.errors import ValidationError
from tests.fake_hibp import breach_object

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PROVIDERS = {
    "okta": "okta",
    "entra": "graph",
    "hootsuite": "generic",
    "meta-business": "generic",
    "vault": "secret_store",
}
PLUS = LeakSettings(plus_tag_domains=frozenset({"brand.example"}))

REGISTRY = """
accounts:
  - id: ig-brand
    platform: instagram
    handle: "@brand"
    criticality: critical
    provider: meta-business
  - {id: li-brand, platform: linkedin, handle: brand, criticality: medium, provider: hootsuite}
  - id: x-brand
    platform: x
    handle: "@brand"
    criticality: critical
    provider: hootsuite
    shared_credential: {totp: true, ref: shared/x-brand, login: Social@Brand.example}
identities:
  - id: alice
    name: Alice Admin
    kind: employee
    emails: [alice@brand.example, alice.a@gmail.example]
    aliases: {okta: 00u-alice, hootsuite: alice_social}
  - id: bob
    name: Bob Reply
    kind: employee
    emails: [bob@brand.example]
    aliases: {okta: 00u-bob, hootsuite: hs-2}
  - id: olga
    name: Olga Gone
    kind: employee
    status: offboarded
    emails: [olga@brand.example]
    aliases: {okta: 00u-olga}
  - id: nina
    name: Nina Nogrant
    kind: employee
    emails: [nina@brand.example]
  - id: carl
    name: Carl Changed
    kind: employee
    emails: [carl@brand.example]
    aliases: {okta: 00u-carl}
    credential_changed_at: 2025-01-01
grants:
  - {identity: alice, account: ig-brand, role: admin, via: sso, mfa: webauthn}
  - {identity: alice, account: x-brand, role: full_publishing, via: shared_credential, mfa: totp}
  - {identity: bob, account: li-brand, role: can_reply, via: sso, mfa: push}
  - {identity: bob, account: x-brand, role: can_reply, via: shared_credential, mfa: totp}
  - {identity: olga, account: ig-brand, role: admin, via: native, mfa: push}
  - {identity: carl, account: li-brand, role: can_reply, via: sso, mfa: push}
"""


@pytest.fixture
def registry() -> Registry:
    reg, problems = parse_registry(REGISTRY)
    assert problems == []
    return reg


def leak(
    principal: str,
    breach: str = "Adobe",
    *,
    date: str | None = "2025-06-01",
    classes: tuple[str, ...] = ("Email addresses", "Passwords"),
    flags: tuple[str, ...] = (),
) -> LeakRecord:
    return LeakRecord.from_dict(
        {
            "principal": principal,
            "breach": breach,
            "source": "test",
            "breach_date": date,
            "data_classes": list(classes),
            "password_present": "Passwords" in classes,
            "flags": list(flags),
        }
    )


def decide(registry: Registry, record: LeakRecord, lifecycle: StateStore | None = None):  # type: ignore[no-untyped-def]
    return decide_leak(
        registry,
        lifecycle or StateStore(),
        record,
        NOW,
        PROVIDERS,
        index=LeakIndex.build(registry, PLUS.plus_tag_domains),
        settings=PLUS,
    )


# ---- normalisation and the index --------------------------------------------------------


def test_case_and_blanks_are_normalised(registry: Registry) -> None:
    """ " Alice@BRAND.example " is alice."""
    index = LeakIndex.build(registry)
    match = index.lookup(" Alice@BRAND.example ")
    assert match is not None
    assert match.identities == ("alice",)


def test_plus_tags_only_for_configured_domains(registry: Registry) -> None:
    """alice+news@brand.example is alice when brand.example ignores plus-tags; a plus-tag on
    another domain is a different address."""
    assert normalise_principal("Alice+News@brand.example", {"brand.example"}) == (
        "alice@brand.example"
    )
    assert normalise_principal("alice.a+x@gmail.example", {"brand.example"}) == (
        "alice.a+x@gmail.example"
    )
    with_plus = LeakIndex.build(registry, {"brand.example"})
    without = LeakIndex.build(registry)
    assert with_plus.lookup("alice+news@brand.example") is not None
    assert without.lookup("alice+news@brand.example") is None
    assert with_plus.lookup("alice.a+x@gmail.example") is None


def test_every_email_and_alias_of_an_identity_matches(registry: Registry) -> None:
    """Second e-mails and platform usernames (aliases) resolve to the identity."""
    index = LeakIndex.build(registry)
    for principal in ("alice.a@gmail.example", "ALICE_SOCIAL", "00u-alice"):
        match = index.lookup(principal)
        assert match is not None, principal
        assert match.identities == ("alice",), principal


def test_shared_credential_logins_match_their_accounts(registry: Registry) -> None:
    """An account's shared login (any case) maps to the account, not to a person."""
    match = LeakIndex.build(registry).lookup("social@brand.example")
    assert match is not None
    assert match.accounts == ("x-brand",)
    assert match.identities == ()


def test_wants_agrees_with_lookup(registry: Registry) -> None:
    """The importer's fast probe (``wants``, on a stripped lower-case principal) says yes
    exactly when ``lookup`` finds someone: e-mails, aliases, shared logins, plus-tags."""
    index = LeakIndex.build(registry, {"brand.example"})
    principals = [
        "alice@brand.example",
        "alice+news@brand.example",
        "alice.a@gmail.example",
        "alice.a+x@gmail.example",
        "alice_social",
        "00u-alice",
        "social@brand.example",
        "social+x@brand.example",
        "nobody@brand.example",
        "+@brand.example",
        "",
    ]
    plain = LeakIndex.build(registry)
    for principal in principals:
        assert index.wants(principal) == (index.lookup(principal) is not None), principal
        assert index.probe()(principal) == index.wants(principal), principal
        assert plain.probe()(principal) == (plain.lookup(principal) is not None), principal
    assert index.wants("social@brand.example")  # a shared login only: no identity


def test_the_index_follows_registry_changes(registry: Registry) -> None:
    """apply_change mirrors identity and account upserts and tombstones."""
    index = LeakIndex.build(registry)
    alice = registry.identities["alice"].to_dict()
    index.apply_change("identity:alice", {**alice, "emails": ["new@brand.example"]})
    assert index.lookup("alice@brand.example") is None
    assert index.lookup("new@brand.example") is not None
    index.apply_change("identity:alice", None)
    assert index.lookup("new@brand.example") is None
    assert index.lookup("alice_social") is None
    index.apply_change("account:x-brand", None)
    assert index.lookup("social@brand.example") is None
    index.apply_change("grant:bob:li-brand", None)  # grants change nobody's identity


def test_an_address_shared_by_two_identities_matches_both(registry: Registry) -> None:
    """Two identities with the same alias value: both are returned (each is decided)."""
    index = LeakIndex.build(registry)
    bob = registry.identities["bob"]
    index.put_identity(replace(bob, aliases={**bob.aliases, "hootsuite": "alice_social"}))
    match = index.lookup("alice_social")
    assert match is not None
    assert set(match.identities) == {"alice", "bob"}


def test_a_snapshot_rebuilds_the_same_index(registry: Registry) -> None:
    """from_snapshot(snapshot()) answers every lookup as the index did, owners of a shared
    key in the same order, through JSON and after later changes; a snapshot that is not one
    is refused."""
    index = LeakIndex.build(registry, ("brand.example",))
    bob = registry.identities["bob"]
    index.put_identity(replace(bob, aliases={**bob.aliases, "hootsuite": "alice_social"}))
    alice = registry.identities["alice"]
    index.put_identity(alice)  # alice now after bob under alice_social
    copy = LeakIndex.from_snapshot(orjson.loads(orjson.dumps(index.snapshot())))
    assert copy.plus_tag_domains == index.plus_tag_domains
    assert copy._people == index._people
    assert copy._shared == index._shared
    assert copy.lookup("alice_social") == LeakMatch(("bob", "alice"), ())
    assert copy.lookup("Alice+x@brand.example") == index.lookup("alice+x@brand.example")
    assert len(copy) == len(index)
    copy.apply_change("identity:bob", None)
    index.apply_change("identity:bob", None)
    assert copy._people == index._people
    bad: dict[str, Any]
    for bad in (
        {},
        {"plus_tag_domains": [], "identities": {"a": [1]}, "accounts": {}},
        {"plus_tag_domains": [], "identities": [], "accounts": {}},
    ):
        with pytest.raises((KeyError, TypeError, ValueError, AttributeError)):
            LeakIndex.from_snapshot(bad)


def test_lookup_is_fast(registry: Registry) -> None:
    """The lookup itself is a dict probe: well over 300k/s even on a slow CI machine."""
    index = LeakIndex.build(registry)
    names = [f"user{i}@elsewhere.example" for i in range(100_000)] + ["alice@brand.example"]
    lookup = index.lookup
    started = time.perf_counter()
    hits = sum(1 for n in names if lookup(n) is not None)
    rate = len(names) / (time.perf_counter() - started)
    assert hits == 1
    assert rate > 300_000


# ---- decisions ----------------------------------------------------------------------------


def test_a_publisher_or_admin_loses_sessions_and_re_enrols(registry: Registry) -> None:
    """admin/full_publishing anywhere: revoke sessions everywhere, expire the password and
    force MFA at the IdPs, high alert without the e-mail."""
    decision = decide(registry, leak("alice@brand.example"))
    assert decision.outcome == "applied"
    kinds = sorted({(a.action, a.provider) for a in decision.actions})
    assert kinds == [
        ("expire_password", "okta"),
        ("force_mfa_reenrolment", "okta"),
        ("revoke_sessions", "hootsuite"),
        ("revoke_sessions", "meta-business"),
        ("revoke_sessions", "okta"),
    ]
    (alert,) = decision.alerts
    assert alert.severity == "high"
    assert alert.rule == "leak_privileged_holder"  # alerts are named after the rule
    assert "alice@brand.example" not in str(alert.to_dict())
    assert "alice@brand.example" not in str(decision.to_dict())
    (state,) = decision.state_updates
    assert isinstance(state, IdentityState)
    assert state.mfa_reenrolment_required


def test_another_grant_holder_re_enrols_and_is_notified(registry: Registry) -> None:
    """can_reply only: expire the password and force re-enrolment (a reset MFA alone lets
    the holder of the leaked password enrol a factor), medium alert, sessions untouched."""
    decision = decide(registry, leak("bob@brand.example"))
    assert {a.action for a in decision.actions} == {"expire_password", "force_mfa_reenrolment"}
    assert decision.alerts[0].severity == "medium"


def test_a_shared_brand_credential_is_rotated_and_pages(registry: Registry) -> None:
    """The shared login: rotate the TOTP seed at the secret store with the credential
    reference, page (critical), holders must re-enrol."""
    decision = decide(registry, leak(" Social@brand.example"))
    (action,) = decision.actions
    assert action.action == "rotate_shared_credential"
    assert action.provider == "vault"
    assert action.params["credential_ref"] == "shared/x-brand"
    (alert,) = decision.alerts
    assert alert.severity == "critical"
    assert "shared/x-brand" in alert.title
    (acct,) = decision.state_updates
    assert acct.reenrolment_required == ("alice", "bob")  # type: ignore[union-attr]


def test_an_offboarded_identity_is_recorded_only(registry: Registry) -> None:
    """Declared offboarded (registry) or offboarded by the product (lifecycle): no action."""
    assert decide(registry, leak("olga@brand.example")).outcome == "offboarded"
    life = StateStore()
    life.put(IdentityState(identity="bob", status="offboarded", status_cause="hr:x"))
    decision = decide(registry, leak("bob@brand.example"), life)
    assert decision.outcome == "offboarded"
    assert decision.actions == ()
    assert decision.alerts == ()
    assert leak_decision_view(decision)[0]["type"] == "skipped"


def test_an_identity_without_grants_is_recorded_only(registry: Registry) -> None:
    """Nina holds no brand account: nothing to protect, recorded only."""
    decision = decide(registry, leak("nina@brand.example"))
    assert decision.outcome == "no_grants"
    assert not decision.actions


def test_breaches_older_than_the_last_credential_change_are_stale(registry: Registry) -> None:
    """Registry credential_changed_at, lifecycle credential_changed_at / reenrolled_at and a
    shared account's last rotation all make older breaches stale; newer ones still count."""
    assert decide(registry, leak("carl@brand.example", date="2024-12-31")).outcome == "stale"
    assert decide(registry, leak("carl@brand.example", date="2025-01-02")).outcome == "applied"
    life = StateStore()
    life.put(IdentityState(identity="alice", reenrolled_at="2025-07-01T00:00:00.000Z"))
    assert decide(registry, leak("alice@brand.example"), life).outcome == "stale"
    life.put(IdentityState(identity="bob", credential_changed_at="2025-07-01T00:00:00.000Z"))
    assert decide(registry, leak("bob@brand.example"), life).outcome == "stale"
    acct = replace(life.account("x-brand"), rotated_at="2025-07-01T00:00:00.000Z")
    life.put(acct)
    assert decide(registry, leak("social@brand.example"), life).outcome == "stale"
    undated = leak("bob@brand.example", date=None)
    assert decide(registry, undated, life).outcome == "applied"  # unknown date: counts


def test_a_breach_without_credentials_only_notifies(registry: Registry) -> None:
    """No passwords, hashes or tokens: a low alert, no action."""
    decision = decide(registry, leak("alice@brand.example", classes=("Phone numbers",)))
    assert decision.actions == ()
    assert [a.severity for a in decision.alerts] == ["low"]
    stealer = leak("bob@brand.example", classes=(), flags=("stealer_log",))
    assert decide(registry, stealer).actions


def test_spam_lists_and_fabricated_breaches_are_ignored_by_default(registry: Registry) -> None:
    """IsSpamList / IsFabricated: ignored unless the settings include them."""
    spam = leak("alice@brand.example", flags=("spam_list",))
    assert decide(registry, spam).outcome == "ignored"
    including = LeakSettings(include_spam_lists=True)
    assert decide_leak(registry, StateStore(), spam, NOW, PROVIDERS, settings=including).actions


def test_no_match_is_cheap_and_empty(registry: Registry) -> None:
    """A principal nobody holds: no_match, nothing else."""
    decision = decide(registry, leak("stranger@elsewhere.example"))
    assert decision.outcome == "no_match"
    assert not decision.alerts


def test_the_same_breach_re_imported_gives_the_same_keys(registry: Registry) -> None:
    """Deterministic cause leak:<breach>:<subject hash>: identical action keys and alert dedup
    keys on a re-import (the ledger skips them); another breach gives new keys."""
    first = decide(registry, leak("alice@brand.example"))
    again = decide(registry, leak(" ALICE@brand.example "))
    other = decide(registry, leak("alice@brand.example", "LinkedIn"))
    keys = [a.idempotency_key for a in first.actions]
    assert keys == [a.idempotency_key for a in again.actions]
    assert [a.dedup_key for a in first.alerts] == [a.dedup_key for a in again.alerts]
    assert not set(keys) & {a.idempotency_key for a in other.actions}
    assert first.actions[0].cause.startswith("leak:Adobe:")
    assert "alice" not in first.actions[0].cause


def test_a_completed_re_enrolment_makes_the_breach_stale(registry: Registry) -> None:
    """state_after_action records reenrolled_at once force_mfa_reenrolment is done; the same
    leak decided afterwards is stale."""
    life = StateStore()
    decision = decide(registry, leak("bob@brand.example"), life)
    for update in decision.state_updates:
        life.put(update)
    (action,) = [a for a in decision.actions if a.action == "force_mfa_reenrolment"]
    done_at = datetime(2026, 3, 2, 9, 1, tzinfo=UTC).timestamp()
    after = state_after_action(life, action, done_at)
    assert after is not None
    assert after.reenrolled_at == "2026-03-02T09:01:00.000Z"
    assert not after.mfa_reenrolment_required
    life.put(after)
    assert state_after_action(life, action, done_at) is None  # already recorded
    assert decide(registry, leak("bob@brand.example"), life).outcome == "stale"
    revoke = Action.make(
        "revoke_sessions", identity="bob", account=None, provider="okta", cause="c"
    )
    assert state_after_action(life, revoke, done_at) is None


# ---- replay lines and transport -------------------------------------------------------------


def test_replay_lines_canonical_and_wrapped_hibp() -> None:
    """{"kind":"leak", ...fields} and {"kind":"leak","vendor":"hibp","account","event"}."""
    (plain,) = leak_lines_to_records(
        {"kind": "leak", "principal": "A@x.example", "breach": "Adobe", "breach_date": "2013-10-04"}
    )
    assert plain.principal == "a@x.example"
    assert plain.breach_date is not None
    obj = breach_object("Stealer", IsStealerLog=True)
    (wrapped,) = leak_lines_to_records(
        {"kind": "leak", "vendor": "hibp", "account": "Bob@x.example", "event": obj}
    )
    assert wrapped.breach == "Stealer"
    assert wrapped.flags == ("stealer_log",)
    assert wrapped.password_present
    assert wrapped.source == "hibp"
    with pytest.raises(ValidationError, match="vendor"):
        leak_lines_to_records({"kind": "leak", "vendor": "okta", "account": "a", "event": obj})
    with pytest.raises(ValidationError, match="account"):
        leak_lines_to_records({"kind": "leak", "vendor": "hibp", "event": obj})
    with pytest.raises(ValidationError, match="password"):
        leak_lines_to_records({"kind": "leak", "principal": "a", "breach": "b", "password": "x"})


def test_records_round_trip_and_hide_the_principal_in_repr() -> None:
    """to_dict/from_dict round-trips; repr shows a hash, not the address."""
    rec = leak("alice@brand.example", flags=("retired",))
    assert LeakRecord.from_dict(rec.to_dict()) == rec
    assert "alice" not in repr(rec)


def test_batches_group_records_per_partition() -> None:
    """LeakBatcher emits JSON arrays per partition; decode_batch reads them back and
    rejects bad items with reasons."""
    batcher = LeakBatcher(partitions=4, batch_size=3)
    full = [m for i in range(10) if (m := batcher.add(leak(f"u{i}@x.example"))) is not None]
    rest = batcher.flush()
    decoded = [r for _, raw in full + rest for r in decode_batch(raw)[0]]
    assert sorted(r.principal for r in decoded) == sorted(f"u{i}@x.example" for i in range(10))
    recs, bad = decode_batch(b'[{"principal":"a","breach":"b"},{"principal":""}]')
    assert len(recs) == 1
    assert bad[0][1] == "principal: must not be empty"


def test_registry_credential_changed_at_is_read_and_validated() -> None:
    """The registry may declare credential_changed_at per identity (a date or a timestamp
    with a zone); a bad value is a problem with its line, and the field round-trips."""
    reg, problems = parse_registry(REGISTRY)
    assert problems == []
    carl = reg.identities["carl"]
    assert carl.credential_changed_at == datetime(2025, 1, 1, tzinfo=UTC)
    assert Registry.from_changes(reg.to_changes()) == reg
    assert "credential_changed_at" not in reg.identities["alice"].to_dict()
    bad = REGISTRY.replace("credential_changed_at: 2025-01-01", "credential_changed_at: soon")
    _, problems = parse_registry(bad)
    assert any("credential_changed_at" in p for p in problems)


# ---- responses come from the leak rules ----------------------------------------------------


def test_responses_come_from_the_leak_rules(registry: Registry) -> None:
    """decide_leak asks the rule engine: without leak rules a matched subject is recorded
    only (no_rule); a staged rule alerts without acting (no re-enrolment owed); the shipped
    rules are the default and name the alerts."""
    shipped = load_rules(Path(__file__).resolve().parent.parent / "rules")
    none = RuleEngine(RuleSet(()), PROVIDERS)
    bare = decide_leak(
        registry, StateStore(), leak("alice@brand.example"), NOW, PROVIDERS, rules=none
    )
    assert (bare.outcome, bare.actions, bare.alerts, bare.state_updates) == ("no_rule", (), (), ())
    assert leak_decision_view(bare)[0]["type"] == "skipped"

    privileged = shipped.get("leak_privileged_holder")
    staged = RuleEngine(RuleSet((replace(privileged, status="staged"),)), PROVIDERS)
    quiet = decide_leak(
        registry, StateStore(), leak("alice@brand.example"), NOW, PROVIDERS, rules=staged
    )
    assert quiet.outcome == "applied"
    assert quiet.actions == ()
    assert quiet.state_updates == ()
    (alert,) = quiet.alerts
    assert alert.details["dropped_response"] == [
        "revoke_sessions",
        "expire_password",
        "force_mfa_reenrolment",
    ]

    default = decide(registry, leak("social@brand.example"))
    assert [d.rule for d in default.detections] == ["leak_shared_credential"]
    assert default.to_dict()["rules"] == ["leak_shared_credential"]
    phones = decide(registry, leak("bob@brand.example", classes=("Phone numbers",)))
    assert [a.rule for a in phones.alerts] == ["leak_without_credentials"]


def test_a_failing_leak_rule_is_a_rule_error(registry: Registry) -> None:
    """A leak rule that raises: the subject's outcome is rule_error (when no other rule
    fired) and the detection carries the error for the engine to count and dead-letter."""
    engine = RuleEngine(load_rules(Path(__file__).resolve().parent.parent / "rules"), PROVIDERS)

    def explode(*_: object) -> bool:
        raise RuntimeError("broken rule")

    for compiled in engine._leak:
        compiled.match = explode
    decision = decide_leak(
        registry, StateStore(), leak("bob@brand.example"), NOW, PROVIDERS, rules=engine
    )
    assert decision.outcome == "rule_error"
    assert decision.actions == ()
    assert all(d.error == "RuntimeError: broken rule" for d in decision.detections)
