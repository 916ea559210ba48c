"""Shared Signals end to end: ``accessguard run`` (real embedded broker, real worker) with a
local SSF transmitter pushing SETs at it and a local SSF receiver that accessguard transmits
its own revocations to (tests/ssf_fakes.py), and the vendor fakes (tests/fakes.py) that see
the revocation calls."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization

from connectors.ingest.ssf.transmitter import RETRY_INTERVAL
from streams.model.records import idempotency_key
from tests.fakes import FakeVendorServer
from tests.ssf_fakes import (
    CAEP,
    MANAGEMENT_TOKEN,
    RECEIVER_TOKEN,
    RISC,
    FakeReceiver,
    FakeTransmitter,
    rsa_key,
)
from tests.stack import Stack, free_port, metric_value, wait_until, write_config

AUD = "https://accessguard.example.test/ssf"
PUSH_TOKEN = "integration-ssf-push-token"
ISSUER = "https://accessguard.example.test"
APP_AUD = "https://downstream-app.example.test"
ALICE = {"format": "email", "email": "alice.nguyen@lumen-outdoor.example"}


@pytest.fixture(scope="module")
def transmitter() -> Iterator[FakeTransmitter]:
    with FakeTransmitter() as running:
        yield running


@pytest.fixture(scope="module")
def receiver() -> Iterator[FakeReceiver]:
    rx = FakeReceiver(issuer=ISSUER, audience=APP_AUD)
    yield rx
    rx.close()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    module_vendor: FakeVendorServer,
    transmitter: FakeTransmitter,
    receiver: FakeReceiver,
) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("ssf")
    key_file = base / "ssf-key.pem"
    key_file.write_bytes(
        rsa_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    port = free_port()
    extra: dict[str, Any] = {
        "ssf.issuer": ISSUER,
        "ssf.signing_key": f"file:{key_file}",
        "ssf.key_id": "ag-test-1",
        "ssf.jwks_refetch_seconds": 0,
        "ssf.transmitters": {
            "idp": {
                "issuer": transmitter.issuer,
                "audience": AUD,
                "metadata_url": transmitter.metadata_url,
                "push_token": PUSH_TOKEN,
                "alias_provider": "okta",
                "manage_stream": True,
                "management_token": MANAGEMENT_TOKEN,
                "endpoint_url": f"http://127.0.0.1:{port}/ssf/push/idp",
            }
        },
        "ssf.receivers": {
            "app": {"url": receiver.url, "audience": APP_AUD, "token": RECEIVER_TOKEN}
        },
    }
    cfg = write_config(
        base / "config.yaml",
        data_dir=base / "data",
        vendor_url=module_vendor.url,
        http_port=port,
        extra=extra,
    )
    with Stack(cfg) as running:
        receiver.jwks_url = f"{running.url}/.well-known/jwks.json"
        yield running


def push(stack: Stack, token: str, bearer: str = PUSH_TOKEN) -> requests.Response:
    return requests.post(
        f"{stack.url}/ssf/push/idp",
        data=token,
        headers={
            "Authorization": f"Bearer {bearer}",
            "Content-Type": "application/secevent+jwt",
        },
        timeout=15,
    )


def test_risc_account_disabled_offboards_and_accessguard_transmits_its_revocations(
    stack: Stack,
    module_vendor: FakeVendorServer,
    transmitter: FakeTransmitter,
    receiver: FakeReceiver,
) -> None:
    """A RISC account-disabled SET signed by the transmitter's key is accepted (202) and
    offboards Alice like an HR termination: the vendor fakes see her suspended and her
    sessions revoked. accessguard then pushes its own SETs (RISC account-disabled, CAEP
    session-revoked) to the downstream receiver, which verifies each against the JWKS
    fetched from the running stack's /.well-known/jwks.json."""
    jti = "idp-disable-alice-1"
    uri = RISC + "account-disabled"
    resp = push(stack, transmitter.make_set({uri: {}}, audience=AUD, sub_id=ALICE, jti=jti))
    assert resp.status_code == 202, resp.text
    event_id = f"ssf-{idempotency_key(transmitter.issuer, jti, uri)}"
    stack.wait_for_ledger(event_id, timeout=40)
    calls = {(c["method"], c["path"]) for c in module_vendor.calls}
    assert ("POST", "/api/v1/users/00u1alicexyz0A1b2C3d4/lifecycle/suspend") in calls
    assert ("DELETE", "/api/v1/users/00u1alicexyz0A1b2C3d4/sessions") in calls

    def transmitted() -> set[str] | None:
        kinds = {next(iter(c["events"])) for c in receiver.received if c["sub_id"] == ALICE}
        return kinds if {RISC + "account-disabled", CAEP + "session-revoked"} <= kinds else None

    # (gina's agency offboarding, due at start, is transmitted too: a revocation like any)
    # a push not answered in time (a loaded CI machine) is retried RETRY_INTERVAL later
    wait_until(transmitted, 30 + RETRY_INTERVAL, what="SETs about alice at the downstream receiver")
    assert receiver.refused == []
    assert all(c["iss"] == ISSUER and c["aud"] == APP_AUD for c in receiver.received)
    # one SET per event and cause, however many providers revoked
    jtis = [c["jti"] for c in receiver.received]
    assert len(jtis) == len(set(jtis))
    status = requests.get(f"{stack.url}/v1/ssf/status", timeout=5).json()
    assert status["receivers"]["app"]["delivered"] == len(jtis)
    assert status["transmitters"]["idp"]["last_set_at"] is not None


def test_forged_misaddressed_and_repeated_sets_are_refused_and_counted(
    stack: Stack, transmitter: FakeTransmitter, module_vendor: FakeVendorServer
) -> None:
    """A SET signed by another key, one for another audience, and a repeated jti: none is
    acted on, each is counted by reason in /metrics; a rotated transmitter key is fetched
    for its new kid and its SET accepted; the accepted CAEP session-revoked makes rule
    ssf_session_revoked revoke Bob's sessions at the identity provider."""
    bob = {"format": "email", "email": "bob.okafor@lumen-outdoor.example"}
    revoked = {CAEP + "session-revoked": {}}
    forged = transmitter.make_set(revoked, audience=AUD, sub_id=bob, key=rsa_key())
    elsewhere = transmitter.make_set(revoked, audience="https://other.example", sub_id=bob)
    first = transmitter.make_set(revoked, audience=AUD, sub_id=bob, jti="bob-sess-1")
    assert push(stack, forged).json()["err"] == "invalid_key"
    assert push(stack, elsewhere).json()["err"] == "invalid_audience"
    assert push(stack, first).status_code == 202
    again = push(stack, first)
    assert (again.status_code, again.headers["X-AccessGuard-Status"]) == (202, "duplicate")
    assert push(stack, first, bearer="wrong").status_code == 401

    transmitter.rotate()
    rotated = transmitter.make_set(revoked, audience=AUD, sub_id=bob, jti="bob-sess-2")
    assert push(stack, rotated).status_code == 202

    text = requests.get(f"{stack.url}/metrics", timeout=5).text
    for reason in ("invalid_signature", "invalid_audience", "duplicate", "not_authorized"):
        name = "accessguard_ssf_sets_refused_total"
        assert metric_value(text, name, transmitter="idp", reason=reason) >= 1, reason
    bob_sessions = ("DELETE", "/api/v1/users/00u1bobxyz0A1b2C3d4e5/sessions")
    wait_until(
        lambda: bob_sessions in {(c["method"], c["path"]) for c in module_vendor.calls},
        30,
        what="Bob's sessions revoked by the rule",
    )
    accepted = metric_value(
        text,
        "accessguard_ssf_events_total",
        transmitter="idp",
        event="session-revoked",
        outcome="identity_event",
    )
    assert accepted == 2
    stack.assert_no_secret_leaked()


def test_credential_compromise_gets_the_leak_response(
    stack: Stack, transmitter: FakeTransmitter, module_vendor: FakeVendorServer
) -> None:
    """RISC credential-compromise about Carol (full publishing on brand accounts) goes down
    the leak path: rule leak_privileged_holder revokes her sessions at the identity provider
    (and expires her password, re-enrols MFA)."""
    carol = {"format": "iss_sub", "iss": transmitter.issuer, "sub": "00u1carolxyz0A1b2C3d4"}
    token = transmitter.make_set(
        {RISC + "credential-compromise": {"credential_type": "password"}},
        audience=AUD,
        sub_id=carol,
    )
    assert push(stack, token).status_code == 202
    carol_sessions = ("DELETE", "/api/v1/users/00u1carolxyz0A1b2C3d4/sessions")
    wait_until(
        lambda: carol_sessions in {(c["method"], c["path"]) for c in module_vendor.calls},
        30,
        what="Carol's sessions revoked by the leak rule",
    )


def test_jwks_and_metadata_are_served(stack: Stack) -> None:
    """/.well-known/jwks.json holds the public signing key (no private part), and
    /.well-known/ssf-configuration points at it."""
    jwks = requests.get(f"{stack.url}/.well-known/jwks.json", timeout=5).json()
    [key] = jwks["keys"]
    assert key["kid"] == "ag-test-1"
    assert "d" not in key
    meta = requests.get(f"{stack.url}/.well-known/ssf-configuration", timeout=5).json()
    assert meta["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    assert meta["issuer"] == ISSUER


def test_the_stream_is_created_at_the_transmitter_and_verified(
    stack: Stack, transmitter: FakeTransmitter
) -> None:
    """With manage_stream, accessguard creates its push stream at the transmitter's
    configuration endpoint (its push URL, the events it acts on, the Authorization the
    transmitter must send) and requests a verification event, whose state it then shows as
    verified in /v1/ssf/status."""

    def verified() -> bool:
        status = requests.get(f"{stack.url}/v1/ssf/status", timeout=5).json()
        return bool(status["transmitters"]["idp"]["verified"])

    wait_until(verified, 20, what="the verification event")
    [stream] = transmitter.streams.values()
    assert stream["delivery"]["endpoint_url"] == f"{stack.url}/ssf/push/idp"
    assert stream["delivery"]["authorization_header"] == f"Bearer {PUSH_TOKEN}"
    assert RISC + "account-disabled" in stream["events_requested"]
    assert [status for status, _ in transmitter.pushes] == [202]
