"""Identity rules' dedup windows live in the rules' checkpointed state
(:class:`streams.detect.identity.StateDedup`): a worker that restarts, or takes a partition
over, reads the last checkpoint and does not alert again within a rule's dedup window."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from streams.bus.rulelog import RuleStateLog
from streams.decide.login import LoginPipeline
from streams.detect.load import load_rules
from streams.runtime.identitypath import IdentityPath
from tests.engine_harness import build_engine

RULES = Path(__file__).resolve().parent.parent / "rules"


def disabled(event_id: str, time: str) -> bytes:
    """Google disables ana's account for a password leak (vendor_disabled_compromised: dedup
    3600 s, critical)."""
    return orjson.dumps(
        [
            {
                "event_id": event_id,
                "vendor": "google",
                "time": time,
                "type": "account_disabled_by_vendor",
                "reason": "password_leak",
                "principal": "ana@brand.example",
            }
        ]
    )


def run_worker(
    tmp_path: Path, checkpoint: list[tuple[str, Any]], batch: bytes
) -> tuple[int, list[tuple[str, Any]]]:
    """One worker life: read the rule-state checkpoint so far, evaluate one identity.events
    message, checkpoint. Returns (alerts queued, the checkpoint records it wrote)."""

    async def scenario() -> tuple[int, list[tuple[str, Any]]]:
        harness = build_engine(tmp_path)
        try:
            engine = harness.engine
            engine.login = LoginPipeline(load_rules(RULES), harness.config.provider_types())
            engine.rule_log = RuleStateLog(engine.login.state, shards=4, writer="w")
            for key, value in checkpoint:  # what the views apply from rule.state on start
                engine.rule_log.apply(key, value)
            path = IdentityPath.for_engine(engine)
            assert await path.handle_batch(batch) == 1
            await engine.checkpoint_rules()
            queued = harness.publisher.on(engine.topics.alert_queue)
            written = harness.publisher.on(engine.topics.rule_state)
            return len(queued), [(k, orjson.loads(orjson.dumps(v))) for k, v in written]
        finally:
            harness.close()

    return asyncio.run(scenario())


def test_a_restarted_worker_does_not_alert_again_within_the_dedup_window(
    tmp_path: Path,
) -> None:
    """The first disable alerts; a second one 10 minutes later, seen by a fresh worker that
    read the checkpoint, is deduplicated; one 61 minutes after the first alerts again."""
    topic: list[tuple[str, Any]] = []
    alerts, written = run_worker(tmp_path / "a", topic, disabled("g1", "2026-03-02T09:00:00Z"))
    assert alerts == 1
    assert written  # the dedup time is in the checkpoint
    topic += written
    alerts, written = run_worker(tmp_path / "b", topic, disabled("g2", "2026-03-02T09:10:00Z"))
    assert alerts == 0
    topic += written
    alerts, _ = run_worker(tmp_path / "c", topic, disabled("g3", "2026-03-02T10:01:00Z"))
    assert alerts == 1


def test_without_the_checkpoint_a_fresh_worker_alerts_again(tmp_path: Path) -> None:
    """The control: the same second event with no checkpoint read alerts (so the test above
    proves the checkpoint, not something else)."""
    run_worker(tmp_path / "a", [], disabled("g1", "2026-03-02T09:00:00Z"))
    alerts, _ = run_worker(tmp_path / "b", [], disabled("g2", "2026-03-02T09:10:00Z"))
    assert alerts == 1
