"""The real HTTP edges in-process, for fast tests of what they answer.

What is real: the aiohttp application (:func:`streams.runtime.web.build_web_app`) with the real
handlers (:class:`HrWebhook`, :class:`AuthIngest`, :class:`LeakIngest`), one shared
:class:`AuthGuard`, the journal (a file in the test's directory), the registry's leak index,
served over loopback TCP by aiohttp. What stands in: the broker producer
(:class:`tests.engine_harness.FakePublisher`, which can be told to refuse writes).

The server runs on its own event loop in a thread, so a test can send requests from several
threads at once (``requests``), e.g. a hostile upload in one and ``/healthz`` probes in
another. Wiring against the real broker is tested in the integration tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import requests

from connectors.ingest.auth_ingest import AuthIngest
from connectors.ingest.dumps import DumpOptions
from connectors.ingest.edge import AuthGuard
from connectors.ingest.hr_webhook import SIGNATURE_HEADER, HrWebhook, sign
from connectors.ingest.leak_ingest import LeakIngest, LeakPublisher
from connectors.okta.event_hook import OktaEventHook
from streams.bus.journal import Journal
from streams.model.leak_index import LeakIndex
from streams.model.registry_yaml import load_registry
from streams.runtime.web import build_web_app
from streams.support.secrets import Secret
from tests.app_server import serve_app
from tests.engine_harness import FakePublisher
from tests.scim_harness import scim_service

REPO = Path(__file__).resolve().parent.parent
HR_SECRET = "edge-test-hr-secret"
HR_SECRET_VALUE = Secret(HR_SECRET)
AUTH_TOKEN = "edge-test-auth-token"
LEAK_TOKEN = "edge-test-leak-token"
TOPIC_HR = "t.hr.events"
TOPIC_AUTH = "t.auth.events"
TOPIC_LEAKS = "t.leak.records"
TOPIC_IDENTITY = "t.identity.events"


@dataclass
class Edge:
    url: str
    publisher: FakePublisher
    journal: Journal
    hr: HrWebhook
    auth: AuthIngest
    leaks: LeakIngest
    guard: AuthGuard
    session: requests.Session

    def post_hr(self, body: bytes, *, secret: str = HR_SECRET, **headers: str) -> requests.Response:
        hdrs = {SIGNATURE_HEADER: sign(secret, body), "Content-Type": "application/json"}
        hdrs.update(headers)
        return self.session.post(f"{self.url}/v1/hr/events", data=body, headers=hdrs, timeout=30)

    def post_auth(
        self, body: bytes, *, token: str = AUTH_TOKEN, vendor: str = "generic", **headers: str
    ) -> requests.Response:
        hdrs = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **headers}
        return self.session.post(
            f"{self.url}/v1/auth/events?vendor={vendor}", data=body, headers=hdrs, timeout=30
        )

    def post_leaks(
        self,
        body: bytes,
        *,
        token: str = LEAK_TOKEN,
        ctype: str = "text/csv",
        query: str = "",
        **headers: str,
    ) -> requests.Response:
        hdrs = {"Authorization": f"Bearer {token}", "Content-Type": ctype, **headers}
        return self.session.post(
            f"{self.url}/v1/leaks{query}", data=body, headers=hdrs, timeout=120
        )


def _index() -> LeakIndex:
    return LeakIndex.build(load_registry(REPO / "examples" / "registry.yaml"))


@contextmanager
def edge_server(
    tmp_path: Path,
    *,
    max_body: int = 65536,
    max_batch: int = 10 * 1048576,
    leak_max_bytes: int = 64 * 1048576,
    leak_max_records: int = 100_000,
    auth_limit: int = 20,
    hr_secret: Secret | None = HR_SECRET_VALUE,
    leak_token: Secret | None = None,
    dedup_ttl: float = 345600,
    standard_secret: Secret | None = None,
    event_hook_secret: Secret | None = None,
    scim_token: Secret | None = None,
    extra: Callable[[FakePublisher, Journal, AuthGuard], Any] | None = None,
) -> Iterator[Edge]:
    """Serve the three ingest endpoints (and /healthz, /readyz, /metrics) on a free port
    (``hr_secret`` None: hr.webhook_secret unset); with ``standard_secret`` the HR endpoint
    takes Standard Webhooks too, with
    ``event_hook_secret`` the Okta Event Hook door is mounted (``Authorization`` header), with
    ``scim_token`` SCIM at /scim/v2 (over examples/registry.yaml), and ``extra`` builds a
    part with ``mount(app)`` on the same publisher, journal and guard (the SSF receiver)."""
    publisher = FakePublisher()
    journal = Journal(tmp_path / "journal.jsonl", fsync=False)
    guard = AuthGuard(limit=auth_limit, window=60.0, block=60.0)
    hr = HrWebhook(
        secret=hr_secret,
        tolerance=300,
        dedup_ttl=dedup_ttl,
        max_body=max_body,
        publisher=publisher,  # type: ignore[arg-type]
        journal=journal,
        topic=TOPIC_HR,
        guard=guard,
        standard_secret=standard_secret,
    )
    if event_hook_secret is not None:
        hr.doors = [
            OktaEventHook(
                secret=event_hook_secret,
                header="Authorization",
                publisher=publisher,  # type: ignore[arg-type]
                journal=journal,
                hr_topic=TOPIC_HR,
                auth_topic=TOPIC_AUTH,
                identity_topic=TOPIC_IDENTITY,
                partitions=4,
                max_body=max_batch,
                dedup_ttl=dedup_ttl,
                guard=guard,
            )
        ]
    auth = AuthIngest(
        token=Secret(AUTH_TOKEN),
        max_body=max_batch,
        publisher=publisher,  # type: ignore[arg-type]
        topic=TOPIC_AUTH,
        dlq_topic=TOPIC_AUTH + ".dlq",
        partitions=4,
        guard=guard,
    )
    index = _index()
    leaks = LeakIngest(
        token=leak_token or Secret(LEAK_TOKEN),
        max_body=max_batch,
        out=LeakPublisher(
            publisher,  # type: ignore[arg-type]
            topic=TOPIC_LEAKS,
            dlq_topic=TOPIC_LEAKS + ".dlq",
            partitions=4,
        ),
        index=lambda: index,
        options=DumpOptions(hmac_key=Secret("edge-test-hmac-key")),
        max_bytes=leak_max_bytes,
        max_records=leak_max_records,
        guard=guard,
    )
    scim = None
    if scim_token is not None:
        scim = scim_service(hr, publisher, guard, token=scim_token, max_body=max_body)
    app = build_web_app(
        hr=hr,
        auth=auth,
        leaks=leaks,
        scim=scim,
        extra=extra(publisher, journal, guard) if extra is not None else None,
        readiness=lambda: {"broker": publisher.reachable},
        max_body=max(max_body, max_batch),
    )
    session = requests.Session()
    try:
        with serve_app(app, "edge-server") as url:
            yield Edge(url, publisher, journal, hr, auth, leaks, guard, session)
    finally:
        session.close()
        leaks.close()
        journal.close()


def login_batch(size: int = 9_500_000) -> bytes:
    """A JSON array of generic login events of about ``size`` bytes (the batch limit is
    10 MiB): the heaviest legitimate body of POST /v1/auth/events."""
    one = orjson.dumps(
        {
            "time": "2026-03-02T11:00:00Z",
            "principal": "someone@elsewhere.example",
            "outcome": "failure",
            "ip": "203.0.113.7",
            "user_agent": "Mozilla/5.0 " + "x" * 200,
        }
    )
    return b"[" + b",".join([one] * (size // (len(one) + 1))) + b"]"


def healthz_latencies(url: str, stop: threading.Event, out: list[float]) -> None:
    """Probe ``/healthz`` until ``stop``: each answer's latency in seconds (inf on error)."""
    with requests.Session() as session:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                ok = session.get(f"{url}/healthz", timeout=5).status_code == 200
            except requests.RequestException:
                ok = False
            out.append(time.perf_counter() - started if ok else float("inf"))
            time.sleep(0.01)
