"""The offboarding path end to end: `accessguard run` (embedded Tansu broker, Faust worker,
HTTP server) against local vendor servers that check auth and request shapes."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeVendorServer
from tests.stack import SECRET, Stack, metric_value, wait_until, write_config

pytestmark = [pytest.mark.integration]

ALICE_USER_REFS = {
    "okta": "00u1alicexyz0A1b2C3d4",
    "entra": "6f1c2d3e-1111-4a5b-9c8d-a11ce0000001",
    "hootsuite": "hs-2231",
    "meta": "100200300400501",
}


def hr_event(
    event_id: str,
    kind: str = "terminated",
    *,
    who: str = "alice",
    effective_at: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    people = {
        "alice": ("E1001", "alice.nguyen@lumen-outdoor.example"),
        "bob": ("E1002", "bob.okafor@lumen-outdoor.example"),
        "carol": ("E1003", "carol.ruiz@lumen-outdoor.example"),
        "dan": ("C2001", "dan.meyer@freelance.example"),
    }
    employee_id, email = people[who]
    when = effective_at or datetime.now(UTC) - timedelta(minutes=1)
    return {
        "event_id": event_id,
        "type": kind,
        "employee_id": employee_id,
        "email": email,
        "effective_at": when.isoformat().replace("+00:00", "Z"),
        "source": "workday",
        **extra,
    }


#: The calls of alice's termination under the default policy: disable at the three
#: identity providers, sessions at five providers, tokens at Okta (one DELETE) and Google
#: (one token and one app password), five grants removed.
ALICE_CALLS = 16
#: Terminated again: sessions (5), disable again where that is a call (Graph and Google
#: PATCH; Okta answers 400 for a suspended user, read back as done), Okta grants (Google
#: lists none left).
ALICE_AGAIN_CALLS = 8


def alice_calls(server: FakeVendorServer) -> list[dict[str, Any]]:
    refs = set(ALICE_USER_REFS.values()) | {
        "alice.nguyen%40lumen-outdoor.example",
        "alice.nguyen@lumen-outdoor.example",
    }
    return [c for c in server.calls if any(r in c["path"] for r in refs)]


def effective_keys(calls: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(c["method"], c["path"]) for c in calls]


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, module_vendor: FakeVendorServer
) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("stack")
    cfg = write_config(base / "config.yaml", data_dir=base / "data", vendor_url=module_vendor.url)
    with Stack(cfg) as running:
        yield running


class TestTerminationStory:
    def test_termination_revokes_everywhere_removes_grants_rotates_and_audits(
        self, stack: Stack, module_vendor: FakeVendorServer
    ) -> None:
        """A signed `terminated` event disables Alice at the three identity providers, then
        revokes her sessions at every provider that holds her or manages one of her accounts
        and her OAuth tokens and app passwords, then removes each grant and rotates the shared
        X TOTP secret (only into the secret store); each disable is read back at the vendor,
        the summary says where it was proven, and every step is audited."""
        resp = stack.post_hr(hr_event("story-1"))
        assert resp.status_code == 202, resp.text
        assert resp.json() == {"status": "accepted", "event_id": "story-1"}

        wait_until(
            lambda: len(alice_calls(module_vendor)) >= ALICE_CALLS, 15, what="every provider call"
        )
        calls = effective_keys(alice_calls(module_vendor))
        assert ("DELETE", "/api/v1/users/00u1alicexyz0A1b2C3d4/sessions") in calls
        okta = next(c for c in alice_calls(module_vendor) if c["path"].endswith("/sessions"))
        assert okta["query"] == {"oauthTokens": "true"}
        # disabled first: each identity provider's disable before any of its revocations
        first = alice_calls(module_vendor)[:3]
        assert sorted(c["method"] for c in first) == ["PATCH", "PATCH", "POST"], first
        assert ("POST", "/api/v1/users/00u1alicexyz0A1b2C3d4/lifecycle/suspend") in calls
        assert ("DELETE", "/api/v1/users/00u1alicexyz0A1b2C3d4/grants") in calls
        assert module_vendor.okta_user("00u1alicexyz0A1b2C3d4")["status"] == "SUSPENDED"
        assert not module_vendor.graph_user(ALICE_USER_REFS["entra"])["accountEnabled"]
        google = next(k for k in module_vendor.google_users if "alice" in k)
        assert module_vendor.google_users[google]["suspended"] is True
        assert module_vendor.google_users[google]["tokens"] == []
        assert module_vendor.google_users[google]["asps"] == []
        assert okta["headers"]["authorization"] == "SSWS okta-test-token"
        assert (
            "POST",
            "/v1.0/users/6f1c2d3e-1111-4a5b-9c8d-a11ce0000001/revokeSignInSessions",
        ) in calls
        assert any(m == "POST" and p.endswith("/signOut") and "alice.nguyen" in p for m, p in calls)
        assert ("POST", "/platform/members/hs-2231/sessions/revoke") in calls
        assert ("POST", "/platform/members/100200300400501/sessions/revoke") in calls
        removed = sorted(
            p for m, p in calls if m == "DELETE" and p.startswith("/platform/profiles/")
        )
        assert removed == sorted(
            [
                "/platform/profiles/ig-lumen/members/100200300400501",
                "/platform/profiles/fb-lumen/members/100200300400501",
                "/platform/profiles/x-lumen/members/hs-2231",
                "/platform/profiles/li-lumen/members/hs-2231",
                "/platform/profiles/yt-lumen/members/hs-2231",
            ]
        )
        assert len(calls) == ALICE_CALLS, calls  # each action exactly once

        # The shared X credential is rotated into the secret store, and nowhere else.
        secret_file = stack.data_dir / "secrets"
        wait_until(lambda: any(secret_file.rglob("*x-lumen*")), 10, what="rotated secret")
        stored = json.loads(
            next(p for p in secret_file.rglob("*x-lumen*") if p.is_file()).read_text()
        )
        assert stored["version"] >= 1
        new_secret = stored["value"]
        assert len(new_secret) >= 16

        # Summary alert to Slack (info), re-enrolment notice for the remaining holders.
        slack = wait_until(
            lambda: [
                c for c in module_vendor.calls_to("/slack/") if "Alice" in json.dumps(c["json"])
            ],
            10,
            what="slack summary",
        )
        assert any("Offboarded Alice Nguyen" in json.dumps(c["json"]) for c in slack)

        # The audit trail proves each step; the secret appears in no log, journal or alert.
        def audited() -> list[dict[str, Any]]:
            return [
                e for e in stack.journal() if e["kind"] == "action" and e.get("identity") == "alice"
            ]

        wait_until(lambda: len(audited()) == 16, 10, what="16 audited actions")

        # every disable read back at its vendor; sign-out at Google is not verifiable
        def read_back() -> dict[tuple[str, str], str]:
            return {
                (e["provider"], e["action"]): e["verification"]["status"]
                for e in stack.journal()
                if e["kind"] == "action.verification" and e.get("identity") == "alice"
            }

        # okta: disable, sessions (System Log), tokens; entra: disable, sessions; google:
        # disable, tokens
        proof = wait_until(lambda: len(read_back()) >= 7 and read_back(), 15, what="read-backs")
        assert set(proof.values()) == {"verified"}, proof
        assert proof[("okta", "disable_account")] == "verified"
        assert proof[("entra", "disable_account")] == "verified"
        assert proof[("google", "disable_account")] == "verified"
        assert proof[("google", "revoke_tokens")] == "verified"
        journal_text = (stack.data_dir / "journal.jsonl").read_text()
        assert new_secret not in journal_text
        assert new_secret not in stack.stderr()
        assert all(new_secret not in json.dumps(c["json"]) for c in module_vendor.calls)
        kinds = {e["kind"] for e in stack.journal()}
        assert {"hr_event", "decision", "action", "alert", "state", "ledger"} <= kinds

        metrics = stack.metrics()
        assert metric_value(metrics, "accessguard_time_to_revoke_seconds_count") >= 1
        assert (
            metric_value(
                metrics,
                "accessguard_actions_total",
                provider="okta",
                action="revoke_sessions",
                outcome="success",
            )
            >= 1
        )
        assert "alice" not in metrics
        assert "lumen-outdoor" not in metrics
        assert module_vendor.replays == []  # no platform call was even retried with its key
        # No configured secret (provider tokens, HR secret, ingest token, routing key, Slack
        # URL and its token) in the process's output, journal, data files or /metrics.
        stack.assert_no_secret_leaked()

    def test_repeated_event_id_is_acknowledged_and_does_nothing_twice(
        self, stack: Stack, module_vendor: FakeVendorServer
    ) -> None:
        """The same event delivered again (a webhook retry) gets 202 and causes no call."""
        event = hr_event("story-dup", kind="suspended", who="dan")
        assert stack.post_hr(event).status_code == 202
        wait_until(lambda: module_vendor.calls_to("00u1danxyz0A1b2C3d4"), 10, what="dan revoked")
        time.sleep(0.5)
        before = len(module_vendor.calls)
        again = stack.post_hr(event)
        assert again.status_code == 202
        assert again.json()["status"] == "duplicate"
        time.sleep(1.0)
        assert len(module_vendor.calls) == before

    def test_agency_past_contract_end_is_offboarded_by_the_timer(
        self, stack: Stack, module_vendor: FakeVendorServer
    ) -> None:
        """OldCo's contract ended in 2025: the agency timer offboards gina, member by member,
        without any HR event."""
        wait_until(
            lambda: module_vendor.calls_to("/platform/profiles/ig-lumen/members/100200300400601"),
            15,
            what="gina's grant removed",
        )
        assert module_vendor.calls_to("/platform/members/hs-6001/sessions/revoke")


class TestBadInput:
    """Every bad-input case of the HR endpoint gets its status and reason, never a 500."""

    def test_bad_json_is_400(self, stack: Stack) -> None:
        resp = stack.post_hr(b"{not json")
        assert resp.status_code == 400
        assert "invalid JSON" in resp.json()["error"]

    @pytest.mark.parametrize(
        ("change", "reason"),
        [
            ({"type": "fired"}, "type: must be one of"),
            ({"email": "nope"}, "email: not an e-mail"),
            ({"effective_at": "yesterday"}, "effective_at"),
            ({"effective_at": "2026-01-01T00:00:00"}, "needs a zone"),
            ({"event_id": ""}, "event_id"),
            ({"extra": 1}, "unknown field"),
            ({"type": "role_changed"}, "new_role"),
            ({"type": "role_changed", "new_role": "god"}, "new_role"),
        ],
    )
    def test_bad_fields_are_400_with_reason(
        self, stack: Stack, change: dict[str, Any], reason: str
    ) -> None:
        event = {**hr_event("bad-fields"), **change}
        resp = stack.post_hr(event)
        assert resp.status_code == 400
        assert reason in resp.json()["error"]

    def test_missing_field_is_400(self, stack: Stack) -> None:
        event = hr_event("missing")
        del event["employee_id"]
        resp = stack.post_hr(event)
        assert resp.status_code == 400
        assert "employee_id: required" in resp.json()["error"]

    def test_body_not_an_object_is_400(self, stack: Stack) -> None:
        assert stack.post_hr(b"[1,2]").status_code == 400

    def test_bad_signature_is_401(self, stack: Stack) -> None:
        resp = stack.post_hr(hr_event("bad-sig"), secret="wrong-secret")
        assert resp.status_code == 401
        assert resp.json()["error"] == "signature does not match"

    def test_stale_signature_is_401(self, stack: Stack) -> None:
        resp = stack.post_hr(hr_event("stale"), timestamp=int(time.time()) - 301)
        assert resp.status_code == 401
        assert "tolerance" in resp.json()["error"]

    def test_future_signature_beyond_tolerance_is_401(self, stack: Stack) -> None:
        resp = stack.post_hr(hr_event("future"), timestamp=int(time.time()) + 400)
        assert resp.status_code == 401

    def test_missing_signature_is_401(self, stack: Stack) -> None:
        import requests

        resp = requests.post(
            f"{stack.url}/v1/hr/events",
            data=b"{}",
            timeout=5,
            headers={"Content-Type": "application/json"},
        )
        assert resp.status_code == 401
        assert "missing" in resp.json()["error"]

    def test_malformed_signature_header_is_401(self, stack: Stack) -> None:
        resp = stack.post_hr(hr_event("malformed"), headers={"X-AccessGuard-Signature": "v1=abc"})
        assert resp.status_code == 401

    def test_oversize_body_is_413(self, stack: Stack) -> None:
        big = json.dumps({**hr_event("big"), "pad": "x" * 70000}).encode()
        resp = stack.post_hr(big)
        assert resp.status_code == 413

    def test_reused_event_id_with_different_content_is_409(self, stack: Stack) -> None:
        assert stack.post_hr(hr_event("reuse", kind="suspended", who="bob")).status_code == 202
        resp = stack.post_hr(hr_event("reuse", kind="terminated", who="bob"))
        assert resp.status_code == 409

    def test_wrong_content_type_is_415(self, stack: Stack) -> None:
        resp = stack.post_hr(hr_event("ctype"), headers={"Content-Type": "text/plain"})
        assert resp.status_code == 415

    def test_unknown_route_is_json_404(self, stack: Stack) -> None:
        import requests

        resp = requests.get(f"{stack.url}/nope", timeout=5)
        assert resp.status_code == 404
        assert "error" in resp.json()

    def test_rejections_are_counted_by_reason(self, stack: Stack) -> None:
        """Each rejection counts once under its reason (self-contained: it sends its own
        bad requests and reads the counters before and after)."""

        def rejected(reason: str) -> float:
            return metric_value(stack.metrics(), "accessguard_events_rejected_total", reason=reason)

        big = json.dumps({**hr_event("count-big"), "pad": "x" * 70000}).encode()
        cases: list[tuple[str, dict[str, Any] | bytes, str, int]] = [
            ("bad_signature", hr_event("count-sig"), "wrong-secret", 401),
            ("too_large", big, SECRET, 413),
            ("bad_json", b"{not json", SECRET, 400),
        ]
        for reason, body, secret, status in cases:
            before = rejected(reason)
            assert stack.post_hr(body, secret=secret).status_code == status, reason
            assert rejected(reason) == before + 1, reason
        # No bad input ever reached the 500 path (which logs http.unhandled): every request
        # of this class so far was answered with its own 4xx.
        assert [e for e in stack.logs() if e.get("event") == "http.unhandled"] == []

    def test_health_endpoints(self, stack: Stack) -> None:
        import requests

        assert requests.get(f"{stack.url}/healthz", timeout=5).json() == {"status": "alive"}
        ready = requests.get(f"{stack.url}/readyz", timeout=5).json()
        assert ready["ready"] is True
        assert set(ready["checks"]) == {
            "broker",
            "views_caught_up",
            "registry_loaded",
            "consumers_assigned",
            "views_tailing",
            "consumers_progressing",
            "journal_writable",
            "secrets",
            "credentials",
        }


def _config(tmp_path: Path, vendor: FakeVendorServer, **kw: Any) -> Path:
    return write_config(
        tmp_path / "config.yaml", data_dir=tmp_path / "data", vendor_url=vendor.url, **kw
    )


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] == "Z"
    except OSError:
        return True


def _broker_pid(stack: Stack) -> int:
    for entry in stack.logs():
        if entry.get("event") == "broker.started":
            return int(entry["pid"])
    raise AssertionError("no broker.started log line")


@pytest.mark.slow
class TestRestarts:
    def test_scheduled_offboarding_fires_after_a_restart(
        self, tmp_path: Path, vendor: FakeVendorServer
    ) -> None:
        """An event effective in the future is scheduled; the stack is stopped and started
        again (the in-memory broker loses everything); the offboarding still fires on time,
        once."""
        stack = Stack(_config(tmp_path, vendor)).start()
        try:
            when = datetime.now(UTC) + timedelta(seconds=12)
            resp = stack.post_hr(hr_event("sched-1", effective_at=when))
            assert resp.status_code == 202
            time.sleep(1.0)
            assert not alice_calls(vendor)
        finally:
            assert stack.stop() == 0
        stack.start()
        try:
            wait_until(
                lambda: len(alice_calls(vendor)) >= ALICE_CALLS, 40, what="scheduled offboarding"
            )
            first = min(c["time"] for c in alice_calls(vendor))
            assert first >= when.timestamp() - 0.5
            time.sleep(1.5)
            assert len(alice_calls(vendor)) == ALICE_CALLS
        finally:
            stack.stop()

    def test_offboarded_identity_stays_offboarded_after_restart(
        self, tmp_path: Path, vendor: FakeVendorServer
    ) -> None:
        """After a restart, a new termination of an already offboarded person re-revokes
        sessions but removes no grant again: the lifecycle state survived (journal replay)."""
        stack = Stack(_config(tmp_path, vendor)).start()
        try:
            assert stack.post_hr(hr_event("first-term")).status_code == 202
            wait_until(
                lambda: len(alice_calls(vendor)) >= ALICE_CALLS, 15, what="first offboarding"
            )
            time.sleep(0.5)
        finally:
            stack.stop()
        vendor.reset()
        stack.start()
        try:
            assert stack.post_hr(hr_event("second-term")).status_code == 202
            wait_until(
                lambda: len(alice_calls(vendor)) >= ALICE_AGAIN_CALLS, 15, what="second revocation"
            )
            time.sleep(1.0)
            calls = effective_keys(alice_calls(vendor))
            assert not [c for c in calls if c[1].startswith("/platform/profiles/")], calls
            assert len(calls) == ALICE_AGAIN_CALLS
            decisions = [
                e
                for e in stack.journal()
                if e["kind"] == "decision" and e["event_id"] == "second-term"
            ]
            assert decisions
        finally:
            stack.stop()

    def test_sigkill_mid_offboarding_every_action_reaches_its_provider_once(
        self, tmp_path: Path, vendor: FakeVendorServer
    ) -> None:
        """The whole process is SIGKILLed while Google is failing (its action in backoff) and
        the other actions are done. The embedded broker dies with it (no orphan). After a
        restart the plan resumes from the journal: Google gets its call, and no other
        provider is called a second time."""
        with FakeVendorServer() as google:
            google.down_for(3600, status=503)
            stack = Stack(_config(tmp_path, vendor, google_url=google.url)).start()
            broker_pid = _broker_pid(stack)
            assert stack.post_hr(hr_event("kill-1")).status_code == 202
            wait_until(
                lambda: len(alice_calls(vendor)) >= ALICE_CALLS - 4, 15, what="all but Google's"
            )
            wait_until(lambda: len(google.rejected) >= 2, 10, what="google retried")
            # every action but Google's is in the ledger (what the restart consults) first
            stack.wait_for_ledger("kill-1", skip=lambda a: a["provider"] == "google")
            stack.kill()
            wait_until(lambda: _process_gone(broker_pid), 10, what="broker gone with its parent")
            before = effective_keys(alice_calls(vendor))
            assert len(before) == ALICE_CALLS - 4
            google.reset()  # Google is back
            stack.start()
            try:
                wait_until(
                    lambda: google.calls_to("/signOut"), 30, what="google call after restart"
                )
                time.sleep(2.0)
                assert effective_keys(alice_calls(vendor)) == before  # nothing called twice
                assert vendor.replays == []  # not even with the same Idempotency-Key
                assert len(google.calls_to("/signOut")) == 1
                # two starts, Google failing for a while: no secret in any of it
                stack.assert_no_secret_leaked()
            finally:
                stack.stop()

    def test_provider_timing_out_for_45s_is_retried_apart_pages_once_and_resolves(
        self, tmp_path: Path, vendor: FakeVendorServer
    ) -> None:
        """Google accepts connections but answers nothing for 45 s (read timeouts, not
        errors). Its action is retried with backoff while everything else carries on: the
        other nine revocations, and a second offboarding posted meanwhile. On-call is paged
        once when the fast retries are spent; the page resolves when Google answers, and
        Google is asked exactly once successfully."""
        with FakeVendorServer() as google:
            cfg = _config(
                tmp_path,
                vendor,
                google_url=google.url,
                extra={
                    "retry.max_attempts": 4,
                    "retry.slow_retry_interval": 3.0,
                    "retry.read_timeout": 1.0,
                },
            )
            with Stack(cfg) as stack:
                google.stall_for(45, hold=3.0)
                started = time.time()
                assert stack.post_hr(hr_event("stall-1")).status_code == 202
                wait_until(
                    lambda: len(alice_calls(vendor)) >= ALICE_CALLS - 4, 15, what="other providers"
                )
                second = stack.post_hr(hr_event("stall-2", "suspended", who="dan"))
                assert second.status_code == 202
                wait_until(
                    lambda: vendor.calls_to("00u1danxyz0A1b2C3d4e5"),
                    10,
                    what="an offboarding not queued behind the hung provider",
                )

                def actions(kind: str) -> list[dict[str, Any]]:
                    return [
                        c
                        for c in vendor.calls_to("/v2/enqueue")
                        if c["json"]["event_action"] == kind
                    ]

                pages = wait_until(lambda: actions("trigger"), 30, what="page")
                assert len(pages) == 1
                assert "google" in pages[0]["json"]["payload"]["summary"]
                wait_until(lambda: google.calls_to("/signOut"), 60, what="google answers again")
                assert time.time() - started >= 44
                resolved = wait_until(lambda: actions("resolve"), 10, what="resolve")
                time.sleep(1.5)
                assert len(actions("trigger")) == 1
                assert len(resolved) == 1
                assert resolved[0]["json"]["dedup_key"] == pages[0]["json"]["dedup_key"]
                assert len(google.calls_to("/signOut")) == 1
                # retried while it hung, but with backoff: not a request per read timeout
                tries = len([s for s in google.stalled if s["path"].endswith("/signOut")])
                assert 4 <= tries <= 45 / 2
            calls = effective_keys(alice_calls(vendor))
            assert len(set(calls)) == len(calls)  # no provider asked twice

    def test_provider_down_30s_then_back_completes_and_pages_once(
        self, tmp_path: Path, vendor: FakeVendorServer
    ) -> None:
        """Google answers 503 for 30 s. The action is retried with backoff, on-call is paged
        once when the fast retries run out, the page is resolved when Google is back, and
        every other action completed meanwhile."""
        with FakeVendorServer() as google:
            cfg = _config(
                tmp_path,
                vendor,
                google_url=google.url,
                extra={"retry.max_attempts": 4, "retry.slow_retry_interval": 3.0},
            )
            with Stack(cfg) as stack:
                started = time.time()
                google.down_for(30, status=503)
                assert stack.post_hr(hr_event("down-1")).status_code == 202
                wait_until(
                    lambda: len(alice_calls(vendor)) >= ALICE_CALLS - 4, 15, what="other providers"
                )
                pages = wait_until(
                    lambda: [
                        c
                        for c in vendor.calls_to("/v2/enqueue")
                        if c["json"]["event_action"] == "trigger"
                    ],
                    20,
                    what="page",
                )
                assert len(pages) == 1
                assert pages[0]["json"]["payload"]["severity"] == "critical"
                assert "google" in pages[0]["json"]["payload"]["summary"]
                wait_until(lambda: google.calls_to("/signOut"), 50, what="google recovered")
                assert time.time() - started >= 29
                resolved = wait_until(
                    lambda: [
                        c
                        for c in vendor.calls_to("/v2/enqueue")
                        if c["json"]["event_action"] == "resolve"
                    ],
                    10,
                    what="resolve",
                )
                time.sleep(1.0)
                triggers = [
                    c
                    for c in vendor.calls_to("/v2/enqueue")
                    if c["json"]["event_action"] == "trigger"
                ]
                assert len(triggers) == 1
                assert len(resolved) == 1
                assert resolved[0]["json"]["dedup_key"] == triggers[0]["json"]["dedup_key"]
                assert len(google.calls_to("/signOut")) == 1
