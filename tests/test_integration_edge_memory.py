"""The HR edge keeps its promises across a restart (issue 13, defect 5), on the real stack:
`accessguard run` with the embedded broker, restarted in between. A re-sent event is still a
duplicate and a re-used id with another event still 409; and an event with a re-used id that
reaches the worker anyway (a second edge replica) is dead-lettered with the reason, not
silently dropped."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from tests.fakes import FakeVendorServer
from tests.stack import Stack, free_port, wait_until, write_config
from tests.test_integration_offboarding import hr_event

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_restarted_edge_still_answers_duplicate_and_409(
    tmp_path: Path, vendor: FakeVendorServer
) -> None:
    cfg = write_config(
        tmp_path / "config.yaml",
        data_dir=tmp_path / "data",
        vendor_url=vendor.url,
        extra={"embedded.port": free_port()},
    )
    event = hr_event("edge-mem-1", "suspended", who="dan")
    stack = Stack(cfg).start()
    try:
        first = stack.post_hr(event)
        assert first.json() == {"status": "accepted", "event_id": "edge-mem-1"}
    finally:
        stack.stop()
    stack.start()
    try:
        again = stack.post_hr(event)
        assert again.status_code == 202, again.text
        assert again.json()["status"] == "duplicate"
        changed = stack.post_hr({**event, "type": "terminated"})
        assert changed.status_code == 409, changed.text
        restored = [e for e in stack.logs() if e.get("event") == "hr.seen_restored"]
        assert restored
        assert restored[-1]["remembered"] >= 1

        # A second edge replica (or anything writing to hr.events) re-uses the id for
        # another event: the worker refuses it loudly.
        port = stack.config["embedded"]["port"]
        producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{port}", acks="all")
        try:
            other = {**event, "type": "terminated", "accepted_at": 1.0}
            producer.send("accessguard.hr.events", key=b"C2001", value=orjson.dumps(other)).get(
                timeout=15
            )
        finally:
            producer.close()

        def conflict() -> list[dict[str, object]]:
            return [
                e
                for e in stack.journal_so_far()
                if e.get("kind") == "dead_letter"
                and str(e.get("reason", "")).startswith("conflict:")
            ]

        (dead,) = wait_until(conflict, 20, what="the conflicting event dead-lettered")
        assert "edge-mem-1" in str(dead["reason"])
        # nothing of the conflicting termination happened
        decisions = [
            e
            for e in stack.journal_so_far()
            if e.get("kind") == "decision" and e.get("event_id") == "edge-mem-1"
        ]
        # the suspension only (recorded twice at most: a stop right after the decision was
        # recorded and before its state was re-decides it at the next start)
        assert decisions
        assert {d["event_type"] for d in decisions} == {"suspended"}
    finally:
        stack.stop()
