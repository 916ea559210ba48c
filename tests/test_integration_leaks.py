"""The leaks path end to end on the embedded broker: the HIBP feed run by `accessguard run`,
`accessguard leaks import` of a dump and `POST /v1/leaks` -> leak.records -> worker ->
decide_leak -> provider calls, pages and audit, each breach acted on once."""

from __future__ import annotations

import gzip
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from tests.fake_hibp import API_KEY, FakeHibp, breach_object
from tests.fakes import FakeVendorServer
from tests.stack import LEAK_TOKEN, REPO, Stack, free_port, wait_until, write_config

pytestmark = [pytest.mark.integration]

BOB_OKTA = "00u1bobxyz0A1b2C3d4e5"
ALICE_OKTA = "00u1alicexyz0A1b2C3d4"
ALICE_ENTRA = "6f1c2d3e-1111-4a5b-9c8d-a11ce0000001"
DAN_OKTA = "00u1danxyz0A1b2C3d4e5"
#: Breach dates a few weeks old whenever the suite runs: the example registry records no
#: credential changes, so a breach older than leaks.review_after_days (365) would be a finding
#: for review rather than acted on (tests/test_leak_recency.py covers that side).
RECENT = (date.today() - timedelta(days=60)).isoformat()


@pytest.fixture(scope="module")
def hibp() -> Iterator[FakeHibp]:
    with FakeHibp() as server:
        server.add_breach(breach_object("MegaBank", breach_date=RECENT))
        server.accounts["bob.okafor@lumen-outdoor.example"] = ["MegaBank"]
        server.accounts["social@lumen-outdoor.example"] = ["MegaBank"]
        yield server


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, module_vendor: FakeVendorServer, hibp: FakeHibp
) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("leaks")
    cfg = write_config(
        base / "config.yaml",
        data_dir=base / "data",
        vendor_url=module_vendor.url,
        extra={
            "embedded.port": free_port(),
            "http.max_batch_bytes": 4096,
            "leaks.hmac_key": "integration-leak-key",
            "pollers.hibp": {
                "type": "hibp",
                "base_url": hibp.base_url,
                "api_key": API_KEY,
                "user_agent": "accessguard-integration-tests",
                "interval": 3600,
            },
        },
    )
    with Stack(cfg) as running:
        yield running


def pages_for(vendor: FakeVendorServer, rule: str) -> list[dict[str, Any]]:
    return [
        c
        for c in vendor.calls_to("/v2/enqueue")
        if c["json"].get("payload", {}).get("component") == rule
    ]


def leak_import(stack: Stack, path: Path) -> subprocess.CompletedProcess[bytes]:
    port = stack.config["embedded"]["port"]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "leaks",
            "import",
            str(path),
            "--config",
            str(stack.config_path),
            "--broker",
            f"kafka://127.0.0.1:{port}",
        ],
        capture_output=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def alice_calls(vendor: FakeVendorServer) -> int:
    return len(vendor.calls_to(ALICE_OKTA)) + len(vendor.calls_to(ALICE_ENTRA))


def test_hibp_feed_revokes_resets_mfa_rotates_and_pages(
    stack: Stack, module_vendor: FakeVendorServer, hibp: FakeHibp
) -> None:
    """Bob (full publishing) and the shared X login are in a breach HIBP reports: his
    sessions are revoked and MFA reset at Okta, the shared TOTP rotated, on-call paged."""
    wait_until(
        lambda: module_vendor.calls_to(f"/api/v1/users/{BOB_OKTA}/lifecycle/reset_factors"),
        30,
        what="bob's MFA reset",
    )
    wait_until(
        lambda: module_vendor.calls_to(f"/api/v1/users/{BOB_OKTA}/sessions"), 15, what="revoke"
    )
    assert any(c["headers"].get("hibp-api-key") == API_KEY for c in hibp.calls)
    pages = wait_until(lambda: pages_for(module_vendor, "leak_privileged_holder"), 15)
    assert pages[0]["json"]["payload"]["severity"] in ("error", "critical", "warning")
    shared = wait_until(lambda: pages_for(module_vendor, "leak_shared_credential"), 15)
    assert shared[0]["json"]["payload"]["severity"] == "critical"
    secrets = stack.data_dir / "secrets"
    wait_until(lambda: any(secrets.rglob("*x-lumen*")), 15, what="rotated shared secret")
    # No e-mail address in the page: the subject is hashed.
    assert "bob.okafor" not in orjson.dumps(pages[0]["json"]).decode()


def test_leaks_import_acts_on_an_admin_once(
    stack: Stack, module_vendor: FakeVendorServer, tmp_path: Path
) -> None:
    """A CSV dump with Alice (admin) in it: `leaks import` reports read/matched/rejected,
    the worker revokes her sessions and resets her MFA; importing the same dump again does
    nothing at any provider and pages no one (the re-enrolment made the breach stale, and
    every key is the same anyway)."""
    dump = tmp_path / "citybank.csv"
    dump.write_text(
        "email,password,breach_date\n"
        f" Alice.Nguyen@Lumen-Outdoor.example ,hunter2,{RECENT}\n"
        f"nobody@elsewhere.example,secret,{RECENT}\n"
        f",nopassword,{RECENT}\n",
        encoding="utf-8",
    )
    done = leak_import(stack, dump)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    summary = orjson.loads(done.stdout.splitlines()[-1])
    assert summary["read"] == 3
    assert summary["matched"] == 1
    assert summary["rejected"] == 1
    assert sum(summary["reasons"].values()) == 1
    timing = summary["timing"]
    assert timing["registry_read_seconds"] >= 0
    assert 0 < timing["import_seconds"] < 60
    assert timing["records_per_second"] == pytest.approx(3 / timing["import_seconds"], rel=0.05)
    assert abs(timing["import_started_unix"] - time.time()) < 120
    assert b"hunter2" not in done.stdout + done.stderr
    wait_until(
        lambda: module_vendor.calls_to(f"/api/v1/users/{ALICE_OKTA}/lifecycle/reset_factors"),
        30,
        what="alice's MFA reset",
    )
    wait_until(
        lambda: module_vendor.calls_to(f"/api/v1/users/{ALICE_OKTA}/sessions"), 15, what="revoke"
    )
    wait_until(lambda: pages_for(module_vendor, "leak_privileged_holder"), 15)

    def reenrolled() -> bool:
        return any(
            e.get("kind") == "state"
            and e.get("key") == "identity:alice"
            and (e.get("value") or {}).get("reenrolled_at")
            for e in stack.journal()
        )

    wait_until(reenrolled, 15, what="re-enrolment recorded")
    time.sleep(1.0)  # the rest of the plan (other providers) settles
    calls = alice_calls(module_vendor)
    all_pages = len(module_vendor.calls_to("/v2/enqueue"))

    again = leak_import(stack, dump)
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    assert orjson.loads(again.stdout.splitlines()[-1])["matched"] == 1

    def second_decision() -> list[dict[str, Any]]:
        return [
            e for e in stack.journal() if e.get("kind") == "leak" and e.get("breach") == "citybank"
        ]

    decisions = wait_until(lambda: len(second_decision()) >= 2 and second_decision(), 30)
    assert decisions[-1]["outcome"] == "stale"
    time.sleep(1.5)
    assert alice_calls(module_vendor) == calls
    assert len(module_vendor.calls_to("/v2/enqueue")) == all_pages
    assert "hunter2" not in (stack.data_dir / "journal.jsonl").read_text()


def post_leaks(
    stack: Stack, body: bytes, *, ctype: str = "application/x-ndjson", token: str = LEAK_TOKEN
) -> requests.Response:
    return requests.post(
        f"{stack.url}/v1/leaks?breach=PasteSite",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": ctype},
        timeout=15,
    )


def test_post_leaks_rejects_bad_requests_and_reports_each_record(
    stack: Stack, module_vendor: FakeVendorServer
) -> None:
    """401 without the bearer token, 413 over http.max_batch_bytes, 400 for an empty body;
    otherwise 200 with one result per record, and the matched one is acted on."""
    record = (
        b'{"email": "dan.meyer@freelance.example", "password": "pw", "date": "%s"}'
        % RECENT.encode()
    )
    assert post_leaks(stack, record, token="wrong").status_code == 401
    no_auth = requests.post(f"{stack.url}/v1/leaks", data=record, timeout=15)
    assert no_auth.status_code == 401
    assert no_auth.headers.get("WWW-Authenticate") == "Bearer"
    assert post_leaks(stack, b"x" * 5000, ctype="text/csv").status_code == 413
    assert post_leaks(stack, b"").status_code == 400
    body = b"\n".join(
        [record, b"{not json", b'{"email": "stranger@elsewhere.example", "password": "pw"}']
    )
    resp = post_leaks(stack, body)
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert [r["status"] for r in data["results"]] == ["matched", "rejected", "unmatched"]
    assert data["results"][1]["line"] == 2
    assert data["matched"] == 1
    assert data["rejected"] == 1
    wait_until(
        lambda: module_vendor.calls_to(f"/api/v1/users/{DAN_OKTA}/sessions"),
        30,
        what="dan's sessions revoked",
    )


def test_leaks_import_reads_cr_files_and_combo_lists_by_their_content(
    stack: Stack, tmp_path: Path
) -> None:
    """A dump with old-Mac CR line endings used to crash `leaks import` with a traceback, and
    an `email:password` list called `combo.gz` was read as one-column CSV (0 matched, 0
    rejected: the leak silently missed). Both are read, record by record, now."""
    cr = tmp_path / "macdump.csv"
    cr.write_bytes(b"email,password\rdan.meyer@freelance.example,pw\rnobody@x.example,pw\r")
    done = leak_import(stack, cr)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"Traceback" not in done.stderr
    summary = orjson.loads(done.stdout.splitlines()[-1])
    assert (summary["format"], summary["read"], summary["matched"]) == ("csv", 2, 1)

    combo = tmp_path / "combo.gz"
    combo.write_bytes(gzip.compress(b"dan.meyer@freelance.example:hunter2\nother@x.example:pw\n"))
    done = leak_import(stack, combo)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    summary = orjson.loads(done.stdout.splitlines()[-1])
    assert (summary["format"], summary["matched"], summary["with_password"]) == ("combo", 1, 2)


def test_leaks_import_of_nothing_understood_fails(stack: Stack, tmp_path: Path) -> None:
    """A file none of whose records could be read ends with exit 1 and one error line, not
    a quiet success reporting 0 matched; so does an empty one."""
    junk = tmp_path / "junk.json"
    junk.write_bytes(b"[1, 2, 3]")
    done = leak_import(stack, junk)
    assert done.returncode == 1
    last = done.stderr.decode().strip().splitlines()[-1]
    assert last.startswith(f"error: {junk} had no record accessguard understood (read as json")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    done = leak_import(stack, empty)
    assert done.returncode == 1
    assert done.stderr.decode().strip().splitlines()[-1] == f"error: {empty} holds no records"


def test_leaks_import_checks_the_breach_name_before_anything(stack: Stack, tmp_path: Path) -> None:
    """A breach name the worker would refuse is a usage error at the edge (exit 2), for
    --breach and for a file whose name would make one."""
    dump = tmp_path / "d.csv"
    dump.write_text("email\ndan.meyer@freelance.example\n")
    port = stack.config["embedded"]["port"]
    done = subprocess.run(
        [
            *(sys.executable, "-m", "streams.cli", "leaks", "import", str(dump)),
            *("--breach", "B" * 201, "--config", str(stack.config_path)),
            *("--broker", f"kafka://127.0.0.1:{port}"),
        ],
        capture_output=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert b"breach: longer than 200 characters" in done.stderr
    long_name = tmp_path / ("x" * 210 + ".csv")
    long_name.write_text("email\ndan.meyer@freelance.example\n")
    done = leak_import(stack, long_name)
    assert done.returncode == 2
    assert b"pass --breach NAME" in done.stderr
