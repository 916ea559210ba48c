"""Writing the rule-state checkpoint: the records :class:`streams.bus.rulelog.RuleStateLog`
prepares, journal first, then the compacted ``rule.state`` topic, all sent at once so the
producer batches them; tombstones only once every write landed."""

from __future__ import annotations

import asyncio

import structlog

from streams.bus.journal import Journal
from streams.bus.rulelog import RuleStateLog
from streams.bus.views import Publisher
from streams.detect.state import RuleState
from streams.support import metrics
from streams.support.errors import JournalError

# One logger name for the worker's core, as before it was split into modules.
log = structlog.get_logger("streams.runtime.engine")


async def write_checkpoint(
    state: RuleState,
    rule_log: RuleStateLog,
    *,
    journal: Journal | None,
    publisher: Publisher,
    topic: str,
    owned: set[int] | None,
) -> int:
    """Persist the keys of ``state`` that changed since the last call (in ``journal`` too,
    unless None). A base is written only for shards (partitions) in ``owned`` (None: all).
    Returns the state keys written; keys that could not be written stay dirty for the next
    call."""
    dirty = state.take_dirty()
    if owned is not None:
        # Only the owner writes a key. A replica here (read from the owner's records) is
        # dirty only because it expired by this worker's clock; writing that would delete
        # the owner's live state under it (seen as repeated detections with 2 and 4 workers).
        shard_of = rule_log.shard_of
        dirty = [key for key in dirty if shard_of(key) in owned]
    if not dirty:
        return 0
    checkpoint = rule_log.prepare(dirty, lambda shard: owned is None or shard in owned)
    try:
        if journal is not None:
            for key, value in checkpoint.writes:
                journal.append("rule_state", key=key, value=value)
    except JournalError:
        # Not waited for (this also runs at shutdown): the keys stay dirty and the next
        # checkpoint writes them; the journal logged why.
        state.mark_dirty(checkpoint.keys)
        return 0
    results = await asyncio.gather(
        *(publisher.send_json(topic, k, v) for k, v in checkpoint.writes),
        return_exceptions=True,
    )
    if any(isinstance(r, BaseException) for r in results):
        # the broker did not take them all: the next checkpoint writes these keys again
        # (the records that did land are kept in the books, for a base to fold away)
        state.mark_dirty(checkpoint.keys)
        landed = [
            w
            for w, r in zip(checkpoint.writes, results, strict=True)
            if not isinstance(r, BaseException)
        ]
        rule_log.written(checkpoint, tombstoned=False, landed=landed)
        log.warning("rule_state.checkpoint_deferred", keys=len(checkpoint.keys))
        return 0
    tombstoned = True
    if checkpoint.tombstones:
        # Only now: a tombstone that overtook the base it is folded into would lose state.
        # A tombstone that does not land leaves a record that the base repeats: harmless, and
        # the shard's next base tombstones it again.
        try:
            if journal is not None:
                for key in checkpoint.tombstones:
                    journal.append("rule_state", key=key, value=None)
        except JournalError:
            tombstoned = False
        else:
            done = await asyncio.gather(
                *(publisher.send(topic, k, None) for k in checkpoint.tombstones),
                return_exceptions=True,
            )
            tombstoned = not any(isinstance(r, BaseException) for r in done)
    rule_log.written(checkpoint, tombstoned=tombstoned)
    metrics.RULE_STATE_RECORDS.inc(checkpoint.records)
    return len(checkpoint.keys)
