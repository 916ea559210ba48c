"""Tamper evidence for the audit trail: every audit record is one link of a hash chain.

Each writer (one worker process, with its own journal) keeps one chain. A record carries
``chain`` (the chain's id), ``seq`` (1, 2, 3, ... within the chain), ``prev_hash`` (the hash
of the record before it, :data:`GENESIS` for seq 1) and ``hash``: SHA-256 over the record's
canonical JSON (sorted keys, no whitespace, every field but ``hash`` itself, ``prev_hash``
included). Editing a record breaks its own hash; deleting one leaves a gap in ``seq``;
putting a re-hashed record in place of another breaks the next record's ``prev_hash``.

Why the chain lives in the journal: the journal is the writer's own copy of every audit
record, written before the topic (decision 5), so the chain's head (seq, hash) is the last
chained entry of the journal and survives a restart with it. The chain id is created with
the first record of a journal that has none (host name + random suffix), and read back from
the journal after that: a lost journal starts a new chain instead of restarting an old one
at seq 1, which would look like a forgery. At-least-once redelivery re-audits an event as a
new link (a new seq); a producer retry that lands the same record twice is an exact
duplicate, which :class:`Verifier` counts and accepts.

What a hash chain without a key cannot do: someone who can rewrite the whole tail of a chain
(every record after the edit, re-hashed) leaves a consistent chain, and removing the newest
records leaves no gap. Comparing a chain's head on the topic with the writer's journal (or
with an earlier export) catches both; ``accessguard audit verify --input`` reads either.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

#: ``prev_hash`` of the first record of a chain.
GENESIS = "0" * 64
#: The fields the chain adds to an audit record; callers' own fields must not use them.
CHAIN_KEYS = frozenset({"chain", "seq", "prev_hash", "hash"})
#: Records of a resumed chain published again at start: more than the audit writes one
#: worker has in flight at once (each waits for the broker's ack), so whatever a crash left
#: journaled but not on the topic is among them.
REPUBLISH = 64
#: Bytes read per step when looking for the chain's head from the end of the journal.
_TAIL_BLOCK = 65536


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash is taken over: sorted keys, no whitespace, no ``hash``.
    orjson writes the same bytes for a record and for that record read back from its JSON
    (floats round-trip; datetimes and tuples were already strings and lists in the JSON)."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def record_hash(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


def new_chain_id() -> str:
    """A chain id that says where it was written (the pod or host name; a StatefulSet's pod
    name is stable) and never repeats (the suffix: a new journal is a new chain)."""
    host = socket.gethostname().split(".", 1)[0] or "accessguard"
    return f"{host}-{secrets.token_hex(4)}"


class AuditChain:
    """The head of this writer's chain. Not thread-safe: the caller serialises
    :meth:`seal` + append + :meth:`advance` (the worker does under its journal lock)."""

    def __init__(self, chain_id: str, seq: int = 0, head: str = GENESIS) -> None:
        self.chain_id = chain_id
        self.seq = seq
        self.head = head
        #: Journaled records of a resumed chain that the topic may lack: publish them again
        #: (exact duplicates, which :class:`Verifier` accepts) before the chain goes on.
        self.unconfirmed: list[dict[str, Any]] = []

    @classmethod
    def resume(cls, journal_path: Path) -> AuditChain:
        """The chain of the journal at ``journal_path``, at its last chained entry (a new
        chain when it holds none), with its last :data:`REPUBLISH` records in
        :attr:`unconfirmed`: a record is journaled before it is published, so those may be
        missing from the topic after a crash, and a gap there would read as a deletion."""
        tail = tail_links(journal_path, REPUBLISH)
        if not tail:
            return cls(new_chain_id())
        chain = cls(str(tail[-1]["chain"]), int(tail[-1]["seq"]), str(tail[-1]["hash"]))
        chain.unconfirmed = tail
        return chain

    def seal(self, kind: str, ts: float, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The next record of the chain: ``{"ts", "kind", **fields}`` (the journal's entry
        shape) plus the chain fields. The head moves only with :meth:`advance`, once the
        record is written: a record that never lands leaves no gap."""
        if not CHAIN_KEYS.isdisjoint(fields):
            raise ValueError(f"audit fields may not use {sorted(CHAIN_KEYS & set(fields))}")
        record = {
            "ts": ts,
            "kind": kind,
            **fields,
            "chain": self.chain_id,
            "seq": self.seq + 1,
            "prev_hash": self.head,
        }
        record["hash"] = hashlib.sha256(
            orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
        ).hexdigest()
        return record

    def advance(self, record: Mapping[str, Any]) -> None:
        self.seq = int(record["seq"])
        self.head = str(record["hash"])


def _lines_backwards(path: Path) -> Iterator[bytes]:
    """The file's lines, last first, read in blocks from the end."""
    with path.open("rb") as fh:
        pos = fh.seek(0, os.SEEK_END)
        carry = b""
        while pos > 0:
            step = min(_TAIL_BLOCK, pos)
            pos -= step
            fh.seek(pos)
            chunk = fh.read(step) + carry
            lines = chunk.split(b"\n")
            carry = lines[0]  # may continue in the block before
            yield from reversed(lines[1:])
        yield carry


def tail_links(path: Path, limit: int) -> list[dict[str, Any]]:
    """The journal's last ``limit`` chained entries of its newest chain, oldest first. Reads
    from the end: the last audit records are usually within the last block."""
    if not path.exists():
        return []
    found: list[dict[str, Any]] = []
    for raw in _lines_backwards(path):
        if b'"prev_hash"' not in raw:
            continue
        try:
            entry = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue  # a torn last line: the entry before it is the head
        if not (isinstance(entry, dict) and isinstance(entry.get("seq"), int) and "hash" in entry):
            continue
        if found and entry.get("chain") != found[0].get("chain"):
            break
        found.append(entry)
        if len(found) >= limit:
            break
    return found[::-1]


def last_link(path: Path) -> tuple[str, int, str] | None:
    """(chain id, seq, hash) of the journal's last chained entry, or None."""
    tail = tail_links(path, 1)
    if not tail:
        return None
    return str(tail[0]["chain"]), int(tail[0]["seq"]), str(tail[0]["hash"])


# --- verification ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Break:
    """The first broken link of a chain: which record (``seq``, and ``where`` it was read),
    what is wrong, and what that means (``finding``: edited, deleted, replaced, conflict,
    malformed)."""

    chain: str
    seq: int | None
    where: str
    finding: str
    problem: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "seq": self.seq,
            "where": self.where,
            "finding": self.finding,
            "problem": self.problem,
        }


@dataclass
class ChainReport:
    """One chain as verified: records checked up to the first break (all of them when
    none), the seq range seen, exact duplicates skipped, and the first break if any."""

    chain: str
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head: str | None = None
    duplicates: int = 0
    broken: Break | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "ok": self.broken is None,
            "records": self.records,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "head": self.head,
            "duplicates": self.duplicates,
            "broken": None if self.broken is None else self.broken.to_dict(),
        }


@dataclass
class _Link:
    seq: int
    hash: str
    prev: str
    intact: bool
    where: str


@dataclass
class Verifier:
    """Collects records (in any order: a topic's partitions interleave a chain, so the
    order of lines is not evidence, ``seq`` is) and checks each chain in ``seq`` order.

    Memory: one small entry per chained record (about 300 bytes), so a year of a busy
    worker's trail (millions of records) is verified in a few hundred MB."""

    links: dict[str, list[_Link]] = field(default_factory=dict)
    malformed: list[Break] = field(default_factory=list)
    unchained: int = 0

    def add(self, record: Any, where: str) -> None:
        """One record as read (``where``: its line, or partition and offset). Records
        without a ``chain`` (the journal's other kinds, audit records from before the
        chain) are counted as unchained."""
        if not isinstance(record, dict) or "chain" not in record:
            self.unchained += 1
            return
        chain, seq, digest, prev = (record.get(k) for k in ("chain", "seq", "hash", "prev_hash"))
        if not (
            isinstance(chain, str)
            and isinstance(seq, int)
            and seq >= 1
            and isinstance(digest, str)
            and isinstance(prev, str)
        ):
            self.malformed.append(
                Break(
                    str(chain),
                    seq if isinstance(seq, int) else None,
                    where,
                    "malformed",
                    "chain fields missing or of the wrong type (chain, seq >= 1, prev_hash, hash)",
                )
            )
            return
        intact = record_hash(record) == digest
        self.links.setdefault(chain, []).append(_Link(seq, digest, prev, intact, where))

    def add_lines(self, lines: Iterable[bytes], source: str) -> None:
        """NDJSON lines (an export, or a journal); an unreadable line is a malformed record."""
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self.malformed.append(
                    Break("?", None, f"{source}:{number}", "malformed", "not JSON")
                )
                continue
            self.add(record, f"{source}:{number}")

    def report(self) -> list[ChainReport]:
        reports = [_check(chain, links) for chain, links in sorted(self.links.items())]
        by_chain = {r.chain: r for r in reports}
        for bad in self.malformed:
            report = by_chain.get(bad.chain)
            if report is None:
                report = by_chain[bad.chain] = ChainReport(bad.chain)
                reports.append(report)
            if report.broken is None or (
                bad.seq is not None
                and report.broken.seq is not None
                and bad.seq < report.broken.seq
            ):
                report.broken = bad
        return reports


def _check(chain: str, links: list[_Link]) -> ChainReport:
    """Walk one chain in seq order up to its first broken link."""
    report = ChainReport(chain)
    last: _Link | None = None
    for link in sorted(links, key=lambda x: x.seq):  # stable: equal seqs keep input order
        if last is not None and link.seq == last.seq:
            if link.intact and last.intact and link.hash == last.hash:
                report.duplicates += 1  # the same record delivered twice (producer retry)
                continue
            report.broken = Break(
                chain,
                link.seq,
                link.where,
                "conflict",
                f"two different records claim seq {link.seq} (also at {last.where})",
            )
            break
        if not link.intact:
            report.broken = Break(
                chain,
                link.seq,
                link.where,
                "edited",
                "hash mismatch: the record's content does not match its hash",
            )
            break
        if last is not None and link.seq != last.seq + 1:
            missing = (
                f"seq {last.seq + 1}"
                if link.seq == last.seq + 2
                else f"seq {last.seq + 1}..{link.seq - 1}"
            )
            report.broken = Break(
                chain,
                link.seq,
                link.where,
                "deleted",
                f"seq gap: {missing} missing before this record (after {last.where})",
            )
            break
        if last is not None and link.prev != last.hash:
            report.broken = Break(
                chain,
                link.seq,
                link.where,
                "replaced",
                f"prev_hash does not match the hash of seq {last.seq} ({last.where}): "
                "a record was replaced or the chain reordered",
            )
            break
        if last is None and link.seq == 1 and link.prev != GENESIS:
            report.broken = Break(
                chain, 1, link.where, "replaced", "seq 1 does not start from the genesis hash"
            )
            break
        if last is None:
            report.first_seq = link.seq
        report.records += 1
        report.last_seq, report.head = link.seq, link.hash
        last = link
    return report


# --- reading the audit topic -----------------------------------------------------------------


def read_topic(
    bootstrap: str, topic: str, *, timeout_ms: int = 10000
) -> Iterator[tuple[bytes, str]]:
    """Every record of ``topic`` (its value as stored, and where: ``topic[partition]@offset``)
    from the beginning to the end offsets read at the start, partition by partition as
    fetched. Tansu answers no ListOffsets by timestamp, so a time window is a filter on the
    records, not a seek; its end offset can be short of the last batch's end, which reading
    "until position >= end" still covers whole."""
    from kafka import TopicPartition  # noqa: PLC0415

    from streams.bus.security import kafka_consumer  # noqa: PLC0415
    from streams.support.errors import BrokerError  # noqa: PLC0415

    consumer = kafka_consumer(
        bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="accessguard-audit-reader",
    )
    try:
        parts = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not parts:
            return
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        remaining = {tp for tp in parts if end[tp] > consumer.position(tp)}
        while remaining:
            batch = consumer.poll(timeout_ms=timeout_ms, max_records=5000)
            if not batch:
                raise BrokerError(f"audit topic {topic} not readable to its end")
            for tp, records in batch.items():
                for rec in records:
                    if rec.value is not None:
                        yield rec.value, f"{topic}[{tp.partition}]@{rec.offset}"
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    finally:
        consumer.close()
