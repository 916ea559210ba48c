"""The rule-state checkpoint's batched records (streams/bus/rulelog.py): a handful of records
per interval, read back exactly — live, after compaction or a journal replay, and after a
handover — with what compaction keeps bounded."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.bus.journal import Journal, replay_records
from streams.bus.rulelog import PREFIX, RuleStateLog
from streams.decide.login import LoginPipeline
from streams.detect.load import load_rules
from streams.detect.state import RuleState
from tests.engine_harness import build_engine

RULES = Path(__file__).resolve().parent.parent / "rules"


def touch(state: RuleState, key: str, ts: float, rule: str = "brute") -> None:
    slot = state.slot(key, rule)
    slot.setdefault("times", []).append(ts)
    slot["last"] = ts


def checkpoint(log: RuleStateLog, topic: list[tuple[str, Any]], *, owns: bool = True) -> Any:
    """One checkpoint written to ``topic`` (a list of records, as the broker keeps them)."""
    cp = log.prepare(log.state.take_dirty(), lambda _shard: owns)
    topic.extend((key, orjson.loads(orjson.dumps(value))) for key, value in cp.writes)
    topic.extend((k, None) for k in cp.tombstones)
    log.written(cp, tombstoned=True)
    return cp


def compact(topic: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """What Kafka compaction keeps: the last record per key, in the order of that last write,
    tombstones removed."""
    last: dict[str, Any] = {}
    for key, value in topic:
        last.pop(key, None)
        last[key] = value
    return [(k, v) for k, v in last.items() if v is not None]


def read_back(records: list[tuple[str, Any]], shards: int = 4) -> RuleState:
    state = RuleState()
    reader = RuleStateLog(state, shards=shards, writer="reader")
    for key, value in records:
        reader.apply(key, value)
    return state


def test_a_checkpoint_is_a_handful_of_records_and_reads_back_exactly() -> None:
    """3,000 changed keys become one delta record per shard, each key in exactly one record,
    and a reader of those records holds the same state."""
    state = RuleState()
    log = RuleStateLog(state, shards=4, writer="w1", min_base_bytes=10**9)
    for i in range(3000):
        touch(state, f"id-{i}", 1000.0 + i)
    topic: list[tuple[str, Any]] = []
    cp = checkpoint(log, topic)
    assert len(cp.writes) <= 8  # 4 shards, a chunk or two each
    written = [k for _, v in cp.writes for k in v["keys"]]
    assert sorted(written) == sorted(state.keys())  # every key once
    assert read_back(topic).to_dict() == state.to_dict()


def test_what_compaction_keeps_stays_bounded_and_reads_back_the_same() -> None:
    """Two hundred intervals of changes to a few hundred keys (some expiring): the shard's
    owner folds the deltas into a base now and then, so compaction keeps a few dozen records,
    and the compacted topic, the raw topic and a journal replay all read back the writer's
    state."""
    rng = random.Random(7)
    state = RuleState()
    log = RuleStateLog(state, shards=4, writer="w1", min_base_bytes=4096, max_deltas=16)
    topic: list[tuple[str, Any]] = []
    bases = 0
    for tick in range(200):
        for key in rng.sample(range(400), 60):
            touch(state, f"id-{key}", float(tick))
        state.expire(float(tick), {"brute": 30.0})
        bases += len(checkpoint(log, topic).bases)
    assert bases > 0
    kept = compact(topic)
    assert len(kept) <= 4 * (16 + 2)
    assert log.live_records() == len(kept)
    assert read_back(kept).to_dict() == state.to_dict()
    assert read_back(topic).to_dict() == state.to_dict()


def test_a_journal_replay_restores_the_same_state(tmp_path: Path) -> None:
    """The journal keeps the same records; its replay (last value per record key, in the order
    of the last write) restores the state exactly."""
    rng = random.Random(3)
    state = RuleState()
    log = RuleStateLog(state, shards=3, writer="w1", min_base_bytes=2048, max_deltas=8)
    journal = Journal(tmp_path / "journal.jsonl", fsync=False)
    for tick in range(60):
        for key in rng.sample(range(150), 25):
            touch(state, f"ip:10.0.0.{key}", float(tick))
        state.expire(float(tick), {"brute": 20.0})
        cp = log.prepare(state.take_dirty(), lambda _s: True)
        for key, value in cp.writes:
            journal.append("rule_state", key=key, value=value)
        for key in cp.tombstones:
            journal.append("rule_state", key=key, value=None)
        log.written(cp, tombstoned=True)
    journal.close()
    replayed = [
        (k, None if v is None else orjson.loads(v))
        for k, v in replay_records(tmp_path / "journal.jsonl")["rule.state"]
    ]
    assert read_back(replayed, shards=3).to_dict() == state.to_dict()


def test_only_the_owner_of_a_shard_writes_its_base() -> None:
    """A worker that does not own a shard writes deltas only, however many there are: a base
    from a non-owner could fold in a stale copy of the owner's keys."""
    state = RuleState()
    log = RuleStateLog(state, shards=2, writer="w2", min_base_bytes=1, max_deltas=2)
    topic: list[tuple[str, Any]] = []
    for tick in range(10):
        touch(state, f"id-{tick}", float(tick))
        cp = checkpoint(log, topic, owns=False)
        assert cp.bases == []
        assert cp.tombstones == []
    assert all("/d/w2/" in key for key, _ in topic)


def test_an_expired_key_is_removed_from_readers() -> None:
    """A key that expired is written as None in the next delta: readers drop it too."""
    state = RuleState()
    log = RuleStateLog(state, shards=2, writer="w1", min_base_bytes=10**9)
    topic: list[tuple[str, Any]] = []
    touch(state, "alice", 10.0)
    touch(state, "bob", 100.0)
    checkpoint(log, topic)
    state.expire(105.0, {"brute": 50.0})  # alice's slot is 95 s old
    checkpoint(log, topic)
    back = read_back(topic, shards=2)
    assert "alice" not in back
    assert "bob" in back


def test_records_of_the_one_key_format_are_read_and_folded_away() -> None:
    """An upgrade: the topic still holds one record per key (the earlier format). They are
    loaded, and the owner's next checkpoint writes a base and tombstones them."""
    old = RuleState()
    touch(old, "alice", 5.0)
    touch(old, "carol", 6.0)
    topic: list[tuple[str, Any]] = [(k, old.key_to_dict(k)) for k in ("alice", "carol")]
    state = RuleState()
    log = RuleStateLog(state, shards=1, writer="w1")
    for key, value in topic:
        log.apply(key, value)
    assert state.to_dict() == old.to_dict()
    touch(state, "bob", 7.0)
    cp = checkpoint(log, topic)
    assert cp.bases == [0]
    assert set(cp.tombstones) == {"alice", "carol"}
    kept = compact(topic)
    assert all(key.startswith(PREFIX) for key, _ in kept)
    assert read_back(kept, shards=1).to_dict() == state.to_dict()


def test_a_record_without_keys_is_refused() -> None:
    log = RuleStateLog(RuleState(), shards=1, writer="w1")
    with pytest.raises(TypeError, match="holds no keys"):
        log.apply(f"{PREFIX}0/d/x/1", {"f": 2})


def test_the_engine_rewrites_the_keys_when_the_broker_refuses_and_never_tombstones_early(
    tmp_path: Path,
) -> None:
    """Through the engine: a checkpoint the broker does not acknowledge leaves its keys dirty
    and sends no tombstone; the next one writes them."""

    async def scenario() -> None:
        harness = build_engine(tmp_path)
        try:
            engine, publisher = harness.engine, harness.publisher
            engine.login = LoginPipeline(load_rules(RULES), harness.config.provider_types())
            engine.rule_log = RuleStateLog(engine.login.state, shards=4, writer="w1")
            for i in range(50):
                touch(engine.login.state, f"id-{i}", 1.0)
            publisher.fail_next(1)
            assert await engine.checkpoint_rules() == 0
            first = [r for r in publisher.records if r[0] == engine.topics.rule_state]
            assert len(first) < 4  # one shard's delta was refused
            assert await engine.checkpoint_rules() == 50
            sent = [r for r in publisher.records if r[0] == engine.topics.rule_state][len(first) :]
            assert sorted(k for _, _, v in sent for k in v["keys"]) == sorted(
                f"id-{i}" for i in range(50)
            )
            assert all(value is not None for _, _, value in sent)  # no tombstone yet
            assert engine.rule_log.live_records() == len(first) + len(sent)
        finally:
            harness.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("broker", "journaled"), [("", True), ("kafka://kafka.example:9093", False)]
)
def test_the_checkpoint_is_journaled_only_for_a_broker_that_forgets(
    tmp_path: Path, broker: str, journaled: bool
) -> None:
    """With the embedded in-memory broker the journal must carry the rule state across a
    restart; with a cluster the compacted topic does, and journaling every interval's changes
    would only fill the volume."""

    async def scenario() -> list[dict[str, Any]]:
        harness = build_engine(tmp_path, config={"broker": broker})
        try:
            engine = harness.engine
            engine.login = LoginPipeline(load_rules(RULES), harness.config.provider_types())
            engine.rule_log = RuleStateLog(engine.login.state, shards=4, writer="w1")
            for i in range(20):
                touch(engine.login.state, f"id-{i}", 1.0)
            assert await engine.checkpoint_rules() == 20
            return harness.journal_entries("rule_state")
        finally:
            harness.close()

    entries = asyncio.run(scenario())
    assert bool(entries) is journaled


def test_a_replica_that_expires_here_is_not_written_over_its_owner(tmp_path: Path) -> None:
    """A worker holds replicas of other workers' keys (read from their checkpoints). When its
    own clock expires one, that deletion must not be checkpointed: it would delete the
    owner's live state (the owner read it back and lost its dedup, so a rule fired twice)."""

    async def scenario() -> list[str]:
        harness = build_engine(tmp_path)
        try:
            engine = harness.engine
            engine.login = LoginPipeline(load_rules(RULES), harness.config.provider_types())
            log = RuleStateLog(engine.login.state, shards=4, writer="w1")
            engine.rule_log = log
            mine = next(f"id-{i}" for i in range(100) if log.shard_of(f"id-{i}") == 0)
            theirs = next(f"id-{i}" for i in range(100) if log.shard_of(f"id-{i}") == 1)
            engine.owned = {0}
            touch(engine.login.state, mine, 100.0)
            log.apply(f"{PREFIX}1/d/other/1", {"f": 2, "keys": {theirs: _slot(10.0)}, "bytes": 1})
            engine.login.state.expire(200.0, {"brute": 50.0})  # both expire here
            await engine.checkpoint_rules()
            sent = [r for r in harness.publisher.records if r[0] == engine.topics.rule_state]
            return [k for _, _, value in sent for k in value["keys"]]
        finally:
            harness.close()

    written = asyncio.run(scenario())
    assert len(written) == 1
    assert written[0].startswith("id-")
    assert all(RuleStateLog(RuleState(), shards=4, writer="x").shard_of(k) == 0 for k in written)


def _slot(ts: float) -> dict[str, Any]:
    return {"v": 1, "rules": {"brute": {"times": [ts], "last": ts}}}
