"""The HIBP connector against a local server that answers like the documented API v3, and
every HIBP vendor sample through the breach-object normaliser."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.base.http import HttpClient, RetryPolicy
from connectors.base.pollers import CheckpointStore
from connectors.hibp.poller import BreachCatalogue, HibpFeed, normalise_breach, pair_key
from streams.model.records import LeakRecord
from streams.model.registry import Registry
from streams.model.registry_yaml import parse_registry
from streams.support.errors import AuthError, ConfigError, RetryableError, ValidationError
from streams.support.secrets import Secret
from tests import samples
from tests.fake_hibp import API_KEY, FakeHibp, breach_object

REGISTRY = """
accounts:
  - id: x-brand
    platform: x
    handle: "@brand"
    criticality: critical
    provider: hootsuite
    shared_credential: {totp: true, ref: shared/x-brand, login: social@agency.example}
identities:
  - {id: ana, name: Ana, kind: employee, emails: [ana@brand.example]}
  - {id: ben, name: Ben, kind: contractor, emails: [ben@freelance.example]}
  - {id: cy, name: Cy, kind: contractor, emails: [cy@other.example]}
"""


def registry() -> Registry:
    reg, problems = parse_registry(REGISTRY)
    assert problems == []
    return reg


@pytest.fixture
def hibp() -> Iterator[FakeHibp]:
    with FakeHibp() as server:
        server.add_breach(breach_object("Adobe", breach_date="2013-10-04"))
        server.add_breach(breach_object("Spammy", IsSpamList=True))
        server.add_breach(breach_object("Madeup", IsFabricated=True))
        server.add_breach(breach_object("Stealer", IsStealerLog=True, IsSensitive=True))
        server.add_breach(breach_object("Old", IsRetired=True, IsVerified=False))
        server.add_breach(breach_object("Phones", classes=("Email addresses", "Phone numbers")))
        server.domains["brand.example"] = {"ana": ["Adobe", "Spammy", "Stealer"], "zed": ["Old"]}
        server.accounts["ben@freelance.example"] = ["Madeup", "Phones"]
        server.accounts["social@agency.example"] = ["Adobe"]
        yield server


def make_feed(
    server: FakeHibp, tmp_path: Path, sleeps: list[float] | None = None, **settings: Any
) -> HibpFeed:
    base: dict[str, Any] = {
        "type": "hibp",
        "api_key": Secret(API_KEY),
        "base_url": server.base_url,
        "domains": ["brand.example"],
    }
    base.update(settings)
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)
    return HibpFeed(
        "hibp",
        base,
        HttpClient(policy),
        CheckpointStore(tmp_path / "checkpoints"),
        sleep=(sleeps.append if sleeps is not None else lambda _s: None),
    )


def test_every_request_carries_the_key_and_a_descriptive_user_agent(
    hibp: FakeHibp, tmp_path: Path
) -> None:
    """hibp-api-key and user-agent are sent on every call; /breaches parses."""
    feed = make_feed(hibp, tmp_path, user_agent="brand-security-leak-monitor")
    assert {b["Name"] for b in feed.breaches()} >= {"Adobe", "Spammy"}
    assert feed.breached_domain("brand.example")["ana"] == ["Adobe", "Spammy", "Stealer"]
    for call in hibp.calls:
        assert call["headers"]["user-agent"] == "brand-security-leak-monitor"
        assert call["headers"]["hibp-api-key"] == API_KEY


def test_a_clean_account_is_a_404_meaning_not_pwned(hibp: FakeHibp, tmp_path: Path) -> None:
    """404 from breachedaccount and breacheddomain means "nothing found", not an error."""
    feed = make_feed(hibp, tmp_path)
    assert feed.breached_account("nobody@brand.example") == []
    hibp.domains["quiet.example"] = {}
    assert feed.breached_domain("quiet.example") == {}
    assert hibp.statuses() == [404, 404]


def test_breached_account_asks_for_untruncated_breach_objects(
    hibp: FakeHibp, tmp_path: Path
) -> None:
    """truncateResponse=false returns whole breach objects with dates and data classes."""
    feed = make_feed(hibp, tmp_path)
    found = feed.breached_account("Ben@Freelance.example")
    assert [b["Name"] for b in found] == ["Madeup", "Phones"]
    assert hibp.calls[-1]["query"]["truncateResponse"] == "false"
    assert hibp.calls[-1]["path"] == "/api/v3/breachedaccount/Ben%40Freelance.example"


def test_a_wrong_key_is_an_auth_error_naming_the_setting(hibp: FakeHibp, tmp_path: Path) -> None:
    """401 -> AuthError that says which key to fix."""
    feed = make_feed(hibp, tmp_path, api_key=Secret("wrong"))
    with pytest.raises(AuthError, match=r"401.*pollers\.hibp\.api_key"):
        feed.breached_domain("brand.example")


def test_a_missing_user_agent_is_a_403_auth_error(hibp: FakeHibp, tmp_path: Path) -> None:
    """HIBP answers 403 without a descriptive user agent; the error names user_agent."""
    feed = make_feed(hibp, tmp_path, user_agent="python-requests/2.32")
    with pytest.raises(AuthError, match=r"403.*user_agent"):
        feed.breached_account("ana@brand.example")
    with pytest.raises(ConfigError, match="user_agent"):
        make_feed(hibp, tmp_path, user_agent="  ")


def test_an_unverified_domain_is_a_403(hibp: FakeHibp, tmp_path: Path) -> None:
    """A domain the subscription has not verified is refused, with a hint at .domains."""
    feed = make_feed(hibp, tmp_path)
    with pytest.raises(AuthError, match="domains"):
        feed.breached_domain("not-mine.example")


def test_429_carries_retry_after_and_the_round_waits_for_it(hibp: FakeHibp, tmp_path: Path) -> None:
    """One 429 is a RetryableError with retry_after; a round retries after that long."""
    feed = make_feed(hibp, tmp_path)
    hibp.fail_next(1, 429, {"retry-after": "2"})
    with pytest.raises(RetryableError) as caught:
        feed.breaches()
    assert caught.value.retry_after == 2.0
    sleeps: list[float] = []
    feed = make_feed(hibp, tmp_path, sleeps=sleeps)
    hibp.fail_next(1, 429, {"retry-after": "3"})
    done = feed.fetch(registry())
    assert sleeps
    assert sleeps[0] >= 3.0
    assert done.records


def test_a_round_joins_domain_and_account_results_with_breach_metadata(
    hibp: FakeHibp, tmp_path: Path
) -> None:
    """Domain aliases become e-mails of that domain; identities and shared logins outside
    the configured domains are asked one by one; dates and data classes come from /breaches;
    spam lists and fabricated breaches are skipped; other flags are kept."""
    feed = make_feed(hibp, tmp_path)
    reg = registry()
    assert feed.accounts_to_check(reg) == [
        "ben@freelance.example",
        "cy@other.example",
        "social@agency.example",
    ]
    done = feed.fetch(reg)
    got = {(r.principal, r.breach): r for r in done.records}
    assert set(got) == {
        ("ana@brand.example", "Adobe"),
        ("ana@brand.example", "Stealer"),
        ("zed@brand.example", "Old"),
        ("ben@freelance.example", "Phones"),
        ("social@agency.example", "Adobe"),
    }
    adobe = got[("ana@brand.example", "Adobe")]
    assert adobe.breach_date is not None
    assert adobe.breach_date.year == 2013
    assert adobe.password_present
    assert "Passwords" in adobe.data_classes
    assert set(got[("ana@brand.example", "Stealer")].flags) == {"stealer_log", "sensitive"}
    assert set(got[("zed@brand.example", "Old")].flags) == {"retired", "unverified"}
    assert not got[("ben@freelance.example", "Phones")].password_present
    assert done.skipped_flags == {"spam_list": 1, "fabricated": 1}


def test_spam_lists_and_fabricated_breaches_can_be_included(hibp: FakeHibp, tmp_path: Path) -> None:
    """include_spam_lists / include_fabricated turn the default skip off."""
    feed = make_feed(hibp, tmp_path, include_spam_lists=True, include_fabricated=True)
    names = {r.breach for r in feed.fetch(registry()).records}
    assert {"Spammy", "Madeup"} <= names


def test_each_breach_account_pair_is_reported_once_across_restarts(
    hibp: FakeHibp, tmp_path: Path
) -> None:
    """After commit, the same pairs are not reported again, even by a new feed on the same
    checkpoint; a new breach of the same account is; the checkpoint holds no e-mail."""
    feed = make_feed(hibp, tmp_path)
    reg = registry()
    published: list[LeakRecord] = []

    async def publish(records: list[LeakRecord]) -> None:
        published.extend(records)

    delay = asyncio.run(feed.poll_once(reg, publish))
    assert delay == feed.interval
    first = len(published)
    assert first == 5
    again = make_feed(hibp, tmp_path)
    assert again.fetch(reg).records == []
    hibp.add_breach(breach_object("Fresh"))
    hibp.domains["brand.example"]["ana"].append("Fresh")
    fresh = again.fetch(reg).records
    assert [(r.principal, r.breach) for r in fresh] == [("ana@brand.example", "Fresh")]
    saved = (tmp_path / "checkpoints" / "hibp.checkpoint.json").read_text()
    assert "@" not in saved
    assert pair_key("Adobe", "ana@brand.example") in saved


def test_a_failed_publish_does_not_checkpoint(hibp: FakeHibp, tmp_path: Path) -> None:
    """At-least-once: when publishing fails the round is reported again next time."""
    feed = make_feed(hibp, tmp_path)

    async def broken(records: list[LeakRecord]) -> None:
        raise OSError("broker down")

    asyncio.run(feed.poll_once(registry(), broken))
    assert feed.status["failed"]
    assert len(feed.fetch(registry()).records) == 5


def test_accounts_are_checked_round_robin_when_capped(hibp: FakeHibp, tmp_path: Path) -> None:
    """max_accounts_per_round bounds the calls; the next round continues where it stopped."""
    feed = make_feed(hibp, tmp_path, max_accounts_per_round=2)
    reg = registry()
    done = feed.fetch(reg)
    feed.commit(done)
    asked = [c["path"] for c in hibp.calls if "breachedaccount" in c["path"]]
    assert len(asked) == 2
    feed.fetch(reg)
    asked = [c["path"] for c in hibp.calls if "breachedaccount" in c["path"]]
    assert asked[2].endswith("social%40agency.example")


def test_a_large_domain_comes_back_whole(hibp: FakeHibp, tmp_path: Path) -> None:
    """breacheddomain is not paged: 20,000 aliases arrive in one answer and all are read."""
    hibp.domains["big.example"] = {f"user{i:05d}": ["Adobe"] for i in range(20_000)}
    feed = make_feed(hibp, tmp_path, domains=["big.example"], max_accounts_per_round=0)
    done = feed.fetch(Registry())
    assert len(done.records) == 20_000
    assert done.records[0].principal.endswith("@big.example")


def test_a_breach_missing_from_the_catalogue_is_rejected_not_guessed(
    hibp: FakeHibp, tmp_path: Path
) -> None:
    """A name added after /breaches was read has no dates: rejected now, reported later."""
    hibp.domains["brand.example"]["ana"].append("Brandnew")
    done = make_feed(hibp, tmp_path).fetch(registry())
    assert any("Brandnew" in reason for _, reason in done.rejected)
    assert "Brandnew" not in {r.breach for r in done.records}


# ---- the vendor samples -------------------------------------------------------------------


def sample_lines() -> list[tuple[int, Any]]:
    """The HIBP sample lines (the test is skipped, with the reason, without ../shared)."""
    text = samples.sample_text("hibp.ndjson")
    return [
        (n, orjson.loads(line)) for n, line in enumerate(text.splitlines(), start=1) if line.strip()
    ]


def test_every_hibp_sample_is_a_breach_or_a_rejection_with_a_reason() -> None:
    """All 885 lines: normalised or rejected with a reason, never a crash."""
    lines = sample_lines()
    assert len(lines) == 885
    outcomes: list[str] = []
    for _n, obj in lines:
        try:
            breach = normalise_breach(obj)
        except ValidationError as exc:
            outcomes.append(f"rejected: {exc.reason}")
            continue
        outcomes.append("ok")
        assert breach.name
        assert breach.breach_date is None or breach.breach_date.tzinfo is not None
    assert all(o == "ok" or len(o) > len("rejected: ") for o in outcomes)
    assert outcomes.count("ok") == 885


def test_hibp_sample_flags_match_the_provenance_notes() -> None:
    """IsSpamList 16 lines (e.g. 20 Acuity), IsFabricated 399/573/868, IsRetired 757/811,
    IsStealerLog 38/701/702, IsSensitive 80 lines (e.g. 26), IsVerified=false 42 lines; 629 of
    1-875 include Passwords."""
    flagged: dict[str, list[int]] = {}
    passwords = 0
    for n, obj in sample_lines():
        breach = normalise_breach(obj)
        for flag in breach.flags:
            flagged.setdefault(flag, []).append(n)
        if n <= 875 and breach.record_for("x@example.test").password_present:
            passwords += 1
    assert len(flagged["spam_list"]) == 16
    assert 20 in flagged["spam_list"]
    assert flagged["fabricated"] == [399, 573, 868]
    assert flagged["retired"] == [757, 811]
    assert flagged["stealer_log"] == [38, 701, 702]
    assert 26 in flagged["sensitive"]
    assert len([n for n in flagged["sensitive"] if n <= 875]) == 80
    assert len([n for n in flagged["unverified"] if n <= 875]) == 42
    assert passwords == 629


def test_newer_schema_lines_upsert_by_name() -> None:
    """Lines 876-885 repeat 9 names of 21-29 in the newer schema: same Name, same breach;
    Adpost (881) is the only new one."""
    lines = sample_lines()
    catalogue = BreachCatalogue()
    assert catalogue.load(obj for _, obj in lines[:875]) == []
    before = len(catalogue)
    results = [catalogue.upsert(normalise_breach(obj)) for _, obj in lines[875:]]
    assert len(catalogue) == before + 1
    assert results[5] == "added"
    assert normalise_breach(lines[880][1]).name == "Adpost"
    assert results.count("added") == 1
    names_21_29 = {normalise_breach(obj).name for _, obj in lines[20:29]}
    repeated = {normalise_breach(obj).name for _, obj in lines[875:]} - {"Adpost"}
    assert repeated <= names_21_29
    assert len(repeated) == 9


def test_malformed_breach_objects_are_rejected_with_reasons() -> None:
    """A missing Name, a bad date or a non-list DataClasses is a reason, not a crash."""
    with pytest.raises(ValidationError, match="Name"):
        normalise_breach({"Title": "x"})
    with pytest.raises(ValidationError, match="BreachDate"):
        normalise_breach({"Name": "X", "BreachDate": "2015-13-45"})
    with pytest.raises(ValidationError, match="DataClasses"):
        normalise_breach({"Name": "X", "DataClasses": "Passwords"})
    with pytest.raises(ValidationError, match="IsSpamList"):
        normalise_breach({"Name": "X", "IsSpamList": "yes"})
    with pytest.raises(ValidationError):
        normalise_breach(["not", "an", "object"])


def test_a_failed_round_backs_off_from_a_minute_and_stop_ends_the_loop(
    hibp: FakeHibp, tmp_path: Path
) -> None:
    """The feed runs on the pull sources' loop: a failed round waits about a minute (60 s
    +-10 %, doubling up to ``interval``), and ``run`` returns once ``stop`` is set."""
    feed = make_feed(hibp, tmp_path)

    async def broken(records: list[LeakRecord]) -> None:
        raise OSError("broker down")

    delay = asyncio.run(feed.poll_once(registry(), broken))
    assert 54.0 <= delay <= 66.0
    assert feed.status["consecutive_failures"] == 1

    published: list[LeakRecord] = []

    async def main() -> None:
        stop = asyncio.Event()

        async def publish(records: list[LeakRecord]) -> None:
            published.extend(records)
            stop.set()

        await asyncio.wait_for(feed.run(stop, registry, publish), timeout=10)

    asyncio.run(main())
    assert len(published) == 5
    assert feed.status["failed"] is False
