"""Custody through the running stack: `accessguard run` (embedded broker) with its custody
provider pointed at a real OpenBao, vendors at tests/fakes.py.

The scenario a security team lives through when alice, who shares the brand's X login with bob
and carol, is terminated: her own vault token is refused within a second of the HR webhook's
202; bob and carol keep reading codes; a re-enrolment task is opened for bob; a wrong code does
not close it; it pages once when overdue; bob's code from the new seed closes it and the old
seed is gone. Then nothing secret (seeds, passwords, otpauth URIs) may appear anywhere the
service writes: logs, journal, audit trail, alerts, metrics, replay output, CLI errors.

The second test stops the vault before an offboarding and starts it again afterwards: the
identity providers revoke at once, the custody action retries (and pages as stuck), and then
completes, read back, with nothing lost.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pyotp
import pytest

from connectors.custody.embedded import EmbeddedOpenBao
from connectors.custody.names import Names
from connectors.custody.provider import OpenBaoCustody
from streams.bus.broker import free_port
from streams.support.secrets import Secret
from tests.fakes import FakeVendorServer
from tests.openbao import DevVault
from tests.stack import REPO, Stack, terminated_event, wait_until, write_config
from tests.test_integration_external import topic_records

pytestmark = [pytest.mark.integration, pytest.mark.slow]

X_SEED = "KRSXG5CTMVRXEZLUNZRXIY3PMRSWC4TUOMQGI33X"
X_PASSWORD = "lumen-X-old-passw0rd!"
ALICE = ("E1001", "alice.nguyen@lumen-outdoor.example")
TIKTOK_SEED = "MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43UOV3HO6DZ"


def custody_config(url: str, token: str | Path, **extra: Any) -> dict[str, Any]:
    return {
        "type": "openbao",
        "address": url,
        "token": token if isinstance(token, str) else f"file:{token}",
        "alias_mount": "userpass/",
        "poll_interval": 0.5,
        **extra,
    }


def seed_custody(url: str, token: str) -> None:
    """What an operator does once (`accessguard custody import`): the X login's current seed
    and password, and TikTok's seed, into the vault."""
    vault = OpenBaoCustody("custody", {"address": url, "token": Secret(token)})
    vault.custody.import_credential(
        "x-lumen",
        seed=Secret(X_SEED),
        password=Secret(X_PASSWORD),
        username="social@lumen-outdoor.example",
        issuer="x",
        account_name="social@lumen-outdoor.example",
    )
    vault.custody.import_credential(
        "tiktok-lumen",
        seed=Secret(TIKTOK_SEED),
        password=None,
        username=None,
        issuer="tiktok",
        account_name="tiktok@lumen-outdoor.example",
    )


def read_code(client: hvac.Client, account: str = "x-lumen") -> str:
    return str(client.read(f"totp/code/{Names(account).totp_key}")["data"]["code"])


def is_refused(client: hvac.Client, account: str = "x-lumen") -> bool:
    try:
        read_code(client, account)
    except hvac.exceptions.Forbidden:
        return True
    return False


def holder(vault: DevVault, who: str, timeout: float = 20.0) -> hvac.Client:
    """``who`` logged in once the worker's start-up sync has put them in the login's group."""

    def ready() -> hvac.Client | None:
        client = vault.holder_login(who)
        return None if is_refused(client) else client

    return wait_until(ready, timeout, 0.2)


def custody_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "custody", *args, "--config", str(stack.config_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def ledger_of(stack: Stack, event_id: str, kind: str) -> dict[str, Any] | None:
    for action in stack.decided_actions(event_id):
        if action["action"] == kind:
            return stack.ledger().get(action["idempotency_key"])
    return None


def verified(stack: Stack, event_id: str, kind: str, timeout: float) -> dict[str, Any]:
    """The ledger record of ``event_id``'s ``kind`` action once read back as verified."""

    def record() -> dict[str, Any] | None:
        found = ledger_of(stack, event_id, kind)
        status = ((found or {}).get("verification") or {}).get("status")
        return found if status == "verified" else None

    return dict(wait_until(record, timeout, 0.05, f"{kind} of {event_id} verified"))


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[DevVault]:
    with DevVault(log_path=tmp_path / "bao.log") as running:
        yield running


def test_a_leaver_loses_the_shared_login_at_once_and_the_rotation_is_tracked_to_the_end(
    tmp_path: Path, vault: DevVault
) -> None:
    token = vault.accessguard_token()
    seed_custody(vault.url, token)
    with FakeVendorServer() as vendor:
        config = write_config(
            tmp_path / "config.yaml",
            data_dir=tmp_path / "data",
            vendor_url=vendor.url,
            extra={
                "providers.custody": custody_config(
                    vault.url,
                    token,
                    # x-lumen is critical: overdue after 6 s; no reminder in this test
                    deadlines={"critical": 6.0},
                    remind_every=3600.0,
                ),
            },
        )
        with Stack(config, log_dir=tmp_path) as stack:
            alice, bob, carol = (holder(vault, who) for who in ("alice", "bob", "carol"))
            assert read_code(alice) == pyotp.TOTP(X_SEED).now()

            response = stack.post_hr(terminated_event("off-alice", *ALICE))
            accepted = time.monotonic()
            assert response.status_code == 202, response.text
            wait_until(lambda: is_refused(alice), 5.0, 0.005)
            refused_after = time.monotonic() - accepted
            assert refused_after <= 1.0, f"alice still read codes {refused_after:.3f}s after 202"
            assert read_code(bob) == pyotp.TOTP(X_SEED).now()
            assert read_code(carol, "tiktok-lumen") == pyotp.TOTP(TIKTOK_SEED).now()

            # The ledger says issued -> acknowledged -> verified (read back from the vault).
            cut = verified(stack, "off-alice", "revoke_shared_access", timeout=20.0)
            assert cut["verification"]["evidence"] == {
                "cut": True,
                "disabled": True,
                "member_of": [],
            }
            rotation = verified(stack, "off-alice", "rotate_shared_credential", timeout=20.0)
            assert rotation["status"] == "done"

            # The task: bob re-enrols (no admin on x-lumen; first remaining holder).
            listed = custody_cli(stack, "tasks")
            assert listed.returncode == 0, listed.stderr
            # (the example registry's agency contract of gina has ended: TikTok has one too)
            open_tasks = {t["account"]: t for t in map(json.loads, listed.stdout.splitlines())}
            task = open_tasks["x-lumen"]
            assert (task["owner"], task["status"]) == ("bob", "open")
            assert "accessguard custody confirm x-lumen --code" in task["what_to_do"]
            bob = vault.holder_login("bob")  # a fresh token carries his enrolment policy
            staged = bob.secrets.kv.v2.read_secret_version(
                path=Names("x-lumen").pending_path, raise_on_deleted_version=True
            )["data"]["data"]
            new_seed = pyotp.parse_uri(staged["otpauth_uri"])

            wrong = custody_cli(stack, "confirm", "x-lumen", "--code", pyotp.TOTP(X_SEED).now())
            assert wrong.returncode == 1
            assert "not valid for the new seed" in wrong.stderr

            # Overdue: one page, however many rounds the monitor makes after the deadline.
            def overdue_pages() -> list[dict[str, Any]]:
                return [
                    c
                    for c in vendor.calls_to("/v2/enqueue")
                    if "re-enrolment" in json.dumps(c["json"])
                    and (c["json"] or {}).get("event_action") == "trigger"
                ]

            wait_until(overdue_pages, 20.0, 0.2)
            time.sleep(2.0)  # four more monitor rounds
            assert len(overdue_pages()) == 1

            done = custody_cli(stack, "confirm", "x-lumen", "--code", new_seed.now(), "--by", "bob")
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["status"] == "closed"
            assert read_code(bob) == new_seed.now()
            assert read_code(carol) == new_seed.now()
            assert (
                bob.secrets.kv.v2.read_secret_version(
                    path=Names("x-lumen").secret_path, raise_on_deleted_version=True
                )["data"]["data"]["password"]
                == staged["password"]
            )
            assert vault.root().read(f"totp/keys/{Names('x-lumen').next_totp_key}") is None
            wait_until(
                lambda: any(e.get("kind") == "custody.task_closed" for e in stack.journal_so_far()),
                10.0,
                0.1,
            )
            # The gauges follow at the end of the monitor's round that audited the close.
            metrics = wait_until(
                lambda: (text := stack.metrics()) and "custody_tasks_open 1.0" in text and text,
                10.0,
                0.1,
                "the gauges to show only TikTok's task open",
            )
            assert 'accessguard_custody_up{provider="custody"} 1.0' in metrics
            assert 'exposed_since_seconds{account="tiktok-lumen"' in metrics
            assert 'exposed_since_seconds{account="x-lumen"' not in metrics

            secrets = {
                "the imported X seed": X_SEED,
                "the imported TikTok seed": TIKTOK_SEED,
                "the old X password": X_PASSWORD,
                "the new seed": new_seed.secret,
                "the new otpauth URI": staged["otpauth_uri"],
                "the new password": staged["password"],
            }
            places = written_by(stack, tmp_path)
            places["/metrics"] = metrics
            places["custody CLI output"] = "".join(
                p.stdout + p.stderr for p in (listed, wrong, done)
            )
            places["alerts sent"] = json.dumps([c["json"] for c in vendor.calls])
            places["replay output"] = replay(stack, tmp_path)
            places.update(topics(stack))
            leaks = [
                f"{name} in {where}"
                for name, value in secrets.items()
                for where, text in places.items()
                if value in text
            ]
            assert not leaks, leaks
            stack.assert_no_secret_leaked()


def written_by(stack: Stack, tmp_path: Path) -> dict[str, str]:
    """Every file the stack wrote (its outputs, the journal: audit trail, ledger and
    decisions included, every other file under data_dir)."""
    places = {
        path.name: path.read_text(errors="replace") for path in sorted(tmp_path.glob("stack-*"))
    }
    for path in sorted(stack.data_dir.rglob("*")):
        if path.is_file():
            places[str(path.relative_to(stack.data_dir))] = path.read_bytes().decode(
                errors="replace"
            )
    assert any("custody" in text for text in places.values())
    return places


def topics(stack: Stack) -> dict[str, str]:
    """Every record of the audit, ledger and lifecycle topics, as the broker holds them."""
    broker = re.search(r"broker\s+kafka://(\S+)", stack.stdout())
    assert broker is not None, stack.stdout()
    out = {}
    for name in ("audit", "ledger", "lifecycle"):
        records = topic_records(broker.group(1), f"accessguard.{name}", 10**6, timeout=3.0)
        assert records, f"nothing on accessguard.{name}"
        out[f"topic accessguard.{name}"] = "\n".join(
            (r.value or b"").decode(errors="replace") for r in records
        )
    assert "custody.task_closed" in out["topic accessguard.audit"]
    return out


def replay(stack: Stack, tmp_path: Path) -> str:
    """`accessguard replay` of the same HR event: its NDJSON decisions."""
    events = tmp_path / "events.ndjson"
    line = {"kind": "hr", **terminated_event("off-alice", *ALICE)}
    events.write_text(json.dumps(line) + "\n", encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "replay",
            "--config",
            str(stack.config_path),
            "--registry",
            str(REPO / "examples" / "registry.yaml"),
            "--input",
            str(events),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "revoke_shared_access" in done.stdout
    return done.stdout + done.stderr


def test_a_vault_outage_holds_back_nothing_else_and_loses_nothing(tmp_path: Path) -> None:
    """The vault is down when alice is terminated: the identity providers and platforms
    revoke at once; the custody actions retry, page once as stuck, and complete (read back)
    when the vault is back; alice's old token is refused then."""
    port = free_port()
    bao = EmbeddedOpenBao(tmp_path / "openbao", port=port, log_path=tmp_path / "openbao.log")
    bao.start()
    try:
        token = bao.token_file.read_text(encoding="utf-8").strip()
        seed_custody(bao.url, token)
        root_token = bao.root_token_file.read_text(encoding="utf-8").strip()
        root = hvac.Client(url=bao.url, token=root_token)
        with FakeVendorServer() as vendor:
            config = write_config(
                tmp_path / "config.yaml",
                data_dir=tmp_path / "data",
                vendor_url=vendor.url,
                extra={
                    "providers.custody": custody_config(bao.url, bao.token_file),
                    "retry.max_attempts": 2,
                    "retry.slow_retry_interval": 1.0,
                },
            )
            with Stack(config, log_dir=tmp_path) as stack:
                alice = embedded_holder(bao, root, "alice")
                bao.stop()
                response = stack.post_hr(terminated_event("off-alice", *ALICE))
                assert response.status_code == 202, response.text
                # Everything that is not custody is done while the vault is down.
                stack.wait_for_ledger(
                    "off-alice", skip=lambda a: a["provider"] == "custody", timeout=30.0
                )
                assert ledger_of(stack, "off-alice", "revoke_shared_access") is None
                stuck = wait_until(
                    lambda: [
                        c
                        for c in vendor.calls_to("/v2/enqueue")
                        if "custody" in json.dumps(c["json"])
                        and (c["json"] or {}).get("event_action") == "trigger"
                    ],
                    30.0,
                    0.2,
                )
                assert len(stuck) == 1
                wait_until(
                    lambda: 'accessguard_custody_up{provider="custody"} 0.0' in stack.metrics(),
                    10.0,
                    0.2,
                )
                bao.start()  # same directory and port: sealed data back, auto-unsealed
                cut = verified(stack, "off-alice", "revoke_shared_access", timeout=60.0)
                assert cut["status"] == "done"
                assert is_refused(alice)
                stack.wait_for_ledger("off-alice", timeout=60.0)
                pages = [
                    c
                    for c in vendor.calls_to("/v2/enqueue")
                    if "custody" in json.dumps(c["json"])
                    and (c["json"] or {}).get("event_action") == "trigger"
                ]
                assert len(pages) == 1  # one incident, one page
    finally:
        bao.stop()


def embedded_holder(bao: EmbeddedOpenBao, root: hvac.Client, who: str) -> hvac.Client:
    """``who`` logged in through the embedded vault's userpass once synced into the group."""
    accessor = root.sys.list_auth_methods()["userpass/"]["accessor"]

    def ready() -> hvac.Client | None:
        try:
            entity = root.secrets.identity.read_entity_by_name(f"accessguard-{who}")["data"]
        except hvac.exceptions.InvalidPath:
            return None
        bound = [a for a in entity["aliases"] or [] if a["mount_accessor"] == accessor]
        if not bound:
            return None
        root.write(f"auth/userpass/users/{bound[0]['name']}", password="holder-pw")
        client = hvac.Client(url=bao.url)
        client.auth.userpass.login(bound[0]["name"], "holder-pw")
        return None if is_refused(client) else client

    return wait_until(ready, 30.0, 0.2)
