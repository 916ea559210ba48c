"""SCIM and Shared Signals deployed the Kubernetes way (deploy/k8s): against an external Kafka
(a real Tansu broker from the ``broker`` fixture), ``accessguard worker`` with
``worker.doors: [scim, ssf]`` serves /scim/v2 and the SSF push receiver, ``connect
hr-webhook`` serves only the HR doors, and ``connect ssf-transmitter`` alone pushes
accessguard's revocations and serves its JWKS. All three read one configuration, as the pods
share one config.yaml."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization

from connectors.ingest.ssf.transmitter import RETRY_INTERVAL
from streams.bus.broker import EmbeddedBroker
from tests.fakes import FakeVendorServer
from tests.ssf_fakes import CAEP, RECEIVER_TOKEN, RISC, FakeReceiver, FakeTransmitter, rsa_key
from tests.stack import Stack, free_port, metric_value, wait_until, write_config
from tests.test_integration_external import EXAMPLE_REGISTRY, imported
from tests.test_integration_scim import SCIM_TOKEN, assert_verified_offboarding
from tests.test_scim import okta_deactivate

pytestmark = [pytest.mark.integration]

ALICE = "alice.nguyen@lumen-outdoor.example"
AUD = "https://accessguard.example.test/ssf"
PUSH_TOKEN = "k8s-doors-ssf-push-token"
ISSUER = "https://accessguard.example.test"
APP_AUD = "https://downstream-app.example.test"


def shared_config(
    path: Path, broker: EmbeddedBroker, vendor: FakeVendorServer, extra: dict[str, Any]
) -> Path:
    """One component's config.yaml: the shared settings, its own data dir and port."""
    path.mkdir()
    return write_config(
        path / "config.yaml",
        data_dir=path / "data",
        vendor_url=vendor.url,
        broker=broker.url,
        http_port=free_port(),
        extra=extra,
    )


def scim(url: str, method: str, path: str, body: Any = None, **kw: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {SCIM_TOKEN}", "Content-Type": "application/scim+json"}
    return requests.request(
        method, f"{url}/scim/v2{path}", json=body, headers=headers, timeout=30, **kw
    )


def push(url: str, token: str, bearer: str = PUSH_TOKEN) -> requests.Response:
    return requests.post(
        f"{url}/ssf/push/idp",
        data=token,
        headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/secevent+jwt"},
        timeout=15,
    )


def test_worker_serves_scim_and_ssf_push_and_one_transmitter_pushes(
    tmp_path: Path, broker: EmbeddedBroker, vendor: FakeVendorServer
) -> None:
    """Okta's deprovisioning (filter by userName, PATCH ``active: false``) sent to the worker
    is the verified offboarding of an HR termination, through the worker's own HR edge
    contract (the event in its journal); a SET pushed to the worker is accepted, a wrong
    bearer refused. The HR edge serves neither door, the worker neither the JWKS nor a
    transmitter: only `connect ssf-transmitter` pushes accessguard's revocations, each once,
    and the downstream receiver verifies them against the JWKS that process serves."""
    key = tmp_path / "ssf-key.pem"
    key.write_bytes(
        rsa_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    imported(broker, tmp_path / "import", EXAMPLE_REGISTRY)
    receiver = FakeReceiver(issuer=ISSUER, audience=APP_AUD)
    with FakeTransmitter() as idp:
        extra: dict[str, Any] = {
            "worker.doors": ["scim", "ssf"],
            "scim.token": SCIM_TOKEN,
            "ssf.issuer": ISSUER,
            "ssf.signing_key": f"file:{key}",
            "ssf.key_id": "ag-k8s-1",
            "ssf.transmitters": {
                "idp": {
                    "issuer": idp.issuer,
                    "audience": AUD,
                    "metadata_url": idp.metadata_url,
                    "push_token": PUSH_TOKEN,
                    "alias_provider": "okta",
                }
            },
            "ssf.receivers": {
                "app": {"url": receiver.url, "audience": APP_AUD, "token": RECEIVER_TOKEN}
            },
        }
        hr = Stack(shared_config(tmp_path / "hr", broker, vendor, extra), ("connect", "hr-webhook"))
        worker = Stack(shared_config(tmp_path / "worker", broker, vendor, extra), ("worker",))
        transmitter = Stack(
            shared_config(tmp_path / "tx", broker, vendor, extra), ("connect", "ssf-transmitter")
        )
        # the receiver verifies against the JWKS the transmitter process serves
        receiver.jwks_url = f"{transmitter.url}/.well-known/jwks.json"
        with hr, worker, transmitter:
            # each door only where it is served
            assert scim(hr.url, "GET", "/Users").status_code == 404
            assert push(hr.url, "x.y.z").status_code == 404
            assert requests.get(f"{worker.url}/.well-known/jwks.json", timeout=5).status_code == 404
            assert scim(transmitter.url, "GET", "/Users").status_code == 404

            found = scim(worker.url, "GET", "/Users", params={"filter": f'userName eq "{ALICE}"'})
            assert found.status_code == 200, found.text
            [user] = found.json()["Resources"]
            resp = scim(worker.url, "PATCH", f"/Users/{user['id']}", okta_deactivate())
            assert resp.status_code == 200, resp.text
            assert resp.json()["active"] is False
            assert_verified_offboarding(worker, vendor, "scim.alice.terminated.0")
            hr_events = [
                e["value"]["event_id"]
                for e in worker.journal()
                if e["kind"] == "hr_event" and e["value"]["source"] == "scim"
            ]
            assert hr_events == ["scim.alice.terminated.0"]

            bob = {"format": "email", "email": "bob.okafor@lumen-outdoor.example"}
            revoked = idp.make_set({CAEP + "session-revoked": {}}, audience=AUD, sub_id=bob)
            assert push(worker.url, revoked, bearer="not-the-push-token").status_code == 401
            assert push(worker.url, revoked).status_code == 202
            text = worker.metrics()
            refused = "accessguard_ssf_sets_refused_total"
            assert metric_value(text, refused, transmitter="idp", reason="not_authorized") == 1
            events = "accessguard_ssf_events_total"
            labels = {"event": "session-revoked", "outcome": "identity_event"}
            assert metric_value(text, events, transmitter="idp", **labels) == 1
            bob_sessions = ("DELETE", "/api/v1/users/00u1bobxyz0A1b2C3d4e5/sessions")
            wait_until(
                lambda: bob_sessions in {(c["method"], c["path"]) for c in vendor.calls},
                30,
                what="Bob's sessions revoked by the rule",
            )

            def about_alice() -> set[str] | None:
                kinds = {
                    next(iter(c["events"]))
                    for c in receiver.received
                    if c["sub_id"] == {"format": "email", "email": ALICE}
                }
                wanted = {RISC + "account-disabled", CAEP + "session-revoked"}
                return kinds if wanted <= kinds else None

            # a push not answered in time (a loaded CI machine) is retried RETRY_INTERVAL (30 s)
            # later: wait for one retry as well
            wait_until(
                about_alice, 40 + RETRY_INTERVAL, what="SETs about alice at the downstream receiver"
            )
            assert receiver.refused == []
            jtis = [c["jti"] for c in receiver.received]
            assert len(jtis) == len(set(jtis))  # pushed once: one transmitter
            status = requests.get(f"{transmitter.url}/v1/ssf/status", timeout=5).json()
            assert status["receivers"]["app"]["delivered"] == len(jtis)
            for running in (hr, worker):
                running.assert_no_secret_leaked()
            # the transmitter keeps no journal: its output, /metrics and JWKS are what it wrote
            jwks = requests.get(receiver.jwks_url, timeout=5).json()
            assert [k["kid"] for k in jwks["keys"]] == ["ag-k8s-1"]
            assert "d" not in jwks["keys"][0]
            written = transmitter.stdout() + transmitter.stderr() + transmitter.metrics()
            for secret in (key.read_text().splitlines()[1], RECEIVER_TOKEN, PUSH_TOKEN):
                assert secret not in written
            # SIGTERM (a pod's stop) ends it cleanly, its place in the audit topic on its disk
            assert transmitter.stop() == 0
            pushed = len(receiver.received)  # more revocations may have run since the wait
            sent = {c["jti"] for c in receiver.received}
            [saved] = (transmitter.data_dir / "checkpoints").iterdir()
            checkpoint = json.loads(saved.read_text())
            resume = checkpoint["cursor"]["resume"]
            assert sum(offset for offset, _ in resume.values()) >= pushed  # every record read
            # a restart resumes there: nothing is pushed again (the jtis would absorb it, but a
            # restart re-sending the whole audit window is load on every receiver)
            with transmitter:
                time.sleep(3)  # longer than the poll of the audit topic (0.5 s)
                status = requests.get(f"{transmitter.url}/v1/ssf/status", timeout=5).json()
                assert status["receivers"]["app"]["delivered"] == 0
            assert len(receiver.received) == pushed
            # a log that is not the one checkpointed (the embedded in-memory broker restarted
            # and the topic refilled): its records are read again from the beginning, and
            # the receiver gets the same jtis again (none lost, none new)
            for _offset, printed in checkpoint["cursor"]["resume"].values():
                printed[3] = "0" * 64  # another value at that offset
            saved.write_text(json.dumps(checkpoint))
            with transmitter:
                wait_until(lambda: len(receiver.received) > pushed, 30, what="SETs pushed again")
            assert {c["jti"] for c in receiver.received} == sent
            assert "ssf.audit_log_changed" in transmitter.stderr()
    receiver.close()
