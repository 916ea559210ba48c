"""Rule state across a partition handover, on the real embedded broker: what one worker
checkpointed (streams/runtime/checkpoint.py) is what the next owner holds once
``Views.caught_up`` returns, however many checkpoints and bases came before."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streams.bus.broker import EmbeddedBroker
from streams.bus.journal import Journal
from streams.bus.rulelog import RuleStateLog
from streams.bus.topics import Topics, create_topics
from streams.bus.views import Publisher, Views
from streams.config import load_config
from streams.detect.state import RuleState
from streams.runtime.checkpoint import write_checkpoint
from tests.stack import write_config

pytestmark = [pytest.mark.integration]


def touch(state: RuleState, key: str, ts: float) -> None:
    slot = state.slot(key, "brute")
    slot.setdefault("ts", []).append(ts)
    slot["last"] = ts


def test_the_next_owner_holds_the_last_checkpoint_after_catching_up(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """Worker A checkpoints 40 rounds of changes (deltas, bases, tombstones) and gives the
    partitions up; worker B, already tailing, catches up and holds exactly A's state."""
    path = write_config(
        tmp_path / "config.yaml",
        data_dir=tmp_path / "data",
        vendor_url="http://127.0.0.1:9",
        broker=broker.url,
        http_port=0,
    )
    config = load_config(path)
    create_topics(config, broker.bootstrap)
    topics = Topics.from_config(config)

    async def scenario() -> tuple[dict[str, object], dict[str, object], int]:
        pub_a = Publisher(broker.bootstrap, client_id="worker-a")
        await pub_a.start(timeout=10)
        state_a = RuleState()
        log_a = RuleStateLog(state_a, shards=4, writer="a", min_base_bytes=2048, max_deltas=4)
        state_b = RuleState()
        log_b = RuleStateLog(state_b, shards=4, writer="b")
        views_b = Views(
            broker.bootstrap,
            registry_topic=topics.registry,
            lifecycle_topic=topics.lifecycle,
            ledger_topic=topics.ledger,
            writer_id=b"worker-b",
            rule_state_topic=topics.rule_state,
            rule_state=log_b,
        )
        await views_b.start(timeout=20)
        # B is busy elsewhere while A writes: its tail reads nothing until A is done, so only
        # caught_up can bring it level (a handover where the new owner lags behind).
        tail = views_b._consumer
        assert tail is not None
        tail.pause(*tail.assignment())
        journal = Journal(tmp_path / "journal.jsonl", fsync=False)
        written = 0
        try:
            for tick in range(40):
                for k in range(tick % 7, 300, 7):
                    touch(state_a, f"id-{k}", float(tick))
                state_a.expire(float(tick), {"brute": 12.0})
                written += await write_checkpoint(
                    state_a,
                    log_a,
                    journal=journal,
                    publisher=pub_a,
                    topic=topics.rule_state,
                    owned=None,
                )
            assert state_b.to_dict() != state_a.to_dict()
            tail.resume(*tail.assignment())
            assert await views_b.caught_up(topics.rule_state, timeout=20)
            return state_a.to_dict(), state_b.to_dict(), written
        finally:
            journal.close()
            await views_b.stop()
            await pub_a.stop()

    held_by_a, held_by_b, written = asyncio.run(scenario())
    assert written > 0
    assert held_by_b == held_by_a
