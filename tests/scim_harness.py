"""The SCIM service in-process, for fast tests of what it answers and what it publishes.

What is real: the aiohttp application (:func:`streams.runtime.web.build_web_app` with the
``/scim/v2`` sub-application), the HR edge it hands terminations to (:class:`HrWebhook`), the
journal (a file in the test's directory), the views' registry (examples/registry.yaml), served
over loopback TCP. What stands in: the broker producer (:class:`FakePublisher`, which can be
told to refuse writes); the views are not started (no broker), so the records the service
publishes are applied to them only through its own read-your-writes path. The stack with the
real broker and worker is tests/test_integration_scim.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import requests

from connectors.ingest.edge import AuthGuard
from connectors.ingest.hr_webhook import HrWebhook
from connectors.ingest.scim.service import ScimService
from streams.bus.journal import Journal
from streams.bus.views import Views
from streams.model.registry_yaml import load_registry
from streams.runtime.web import build_web_app
from streams.support.secrets import Secret
from tests.app_server import serve_app
from tests.engine_harness import FakePublisher

REPO = Path(__file__).resolve().parent.parent
SCIM_TOKEN = "scim-test-bearer-token"
TOPIC_HR = "t.hr.events"
TOPIC_REGISTRY = "t.registry.changes"


@dataclass
class ScimEdge:
    url: str
    publisher: FakePublisher
    journal: Journal
    views: Views
    session: requests.Session

    @property
    def base(self) -> str:
        return f"{self.url}/scim/v2"

    def call(
        self, method: str, path: str, body: Any = None, *, token: str = SCIM_TOKEN, **kw: Any
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
        headers.update(kw.pop("headers", {}))
        return self.session.request(
            method, self.base + path, json=body, headers=headers, timeout=30, **kw
        )

    def hr_events(self) -> list[dict[str, Any]]:
        return [v for t, _k, v in self.publisher.records if t == TOPIC_HR]

    def journal_entries(self) -> list[dict[str, Any]]:
        lines = self.journal.path.read_text(encoding="utf-8").splitlines()
        return [orjson.loads(line) for line in lines if line.strip()]

    def registry_changes(self) -> list[tuple[str, Any]]:
        return [(k, v) for t, k, v in self.publisher.records if t == TOPIC_REGISTRY]


def scim_service(
    hr: HrWebhook, publisher: FakePublisher, guard: AuthGuard, *, token: Secret, max_body: int
) -> ScimService:
    """The SCIM service on ``hr``, its views holding examples/registry.yaml (not started: no
    broker), publishing registry changes to :data:`TOPIC_REGISTRY`."""
    views = Views(
        "127.0.0.1:1",
        registry_topic=TOPIC_REGISTRY,
        lifecycle_topic="t.lifecycle",
        ledger_topic="t.ledger",
        writer_id=publisher.writer_id,
    )
    views.registry = load_registry(REPO / "examples" / "registry.yaml")
    return ScimService(
        token=token,
        hr=hr,
        views=views,
        registry_topic=TOPIC_REGISTRY,
        max_body=max_body,
        guard=guard,
    )


@contextmanager
def scim_server(tmp_path: Path, *, max_body: int = 65536) -> Iterator[ScimEdge]:
    publisher = FakePublisher()
    journal = Journal(tmp_path / "journal.jsonl", fsync=False)
    guard = AuthGuard(limit=20, window=60.0, block=60.0)
    hr = HrWebhook(
        secret=Secret("scim-harness-hr-secret"),
        tolerance=300,
        dedup_ttl=345600,
        max_body=max_body,
        publisher=publisher,  # type: ignore[arg-type]
        journal=journal,
        topic=TOPIC_HR,
        guard=guard,
    )
    scim = scim_service(hr, publisher, guard, token=Secret(SCIM_TOKEN), max_body=max_body)
    views = scim.views
    app = build_web_app(
        hr=hr, scim=scim, readiness=lambda: {"broker": publisher.reachable}, max_body=max_body
    )
    session = requests.Session()
    try:
        with serve_app(app, "scim-server") as url:
            yield ScimEdge(url, publisher, journal, views, session)
    finally:
        session.close()
        journal.close()
