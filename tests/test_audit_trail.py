"""The audit trail lasts and can be trusted: every audit record is a link of its writer's hash
chain (streams/bus/auditchain.py), the chain survives a restart, and verification names the
first broken link of each chain when a record is edited, deleted, replaced or reordered;
``accessguard audit export`` and ``verify`` read it from the real embedded broker; the audit,
alert and dead-letter topics carry explicit retention."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import os
import socket
from pathlib import Path
from typing import Any

import click
import orjson
import pytest
from click.testing import CliRunner

from streams.bus.auditchain import (
    GENESIS,
    REPUBLISH,
    AuditChain,
    Verifier,
    last_link,
    record_hash,
)
from streams.bus.broker import EmbeddedBroker, TopicSpec
from streams.bus.journal import read_journal
from streams.bus.topics import Topics, create_topics, retention_ms, topic_specs
from streams.bus.views import Publisher
from streams.cli import main
from streams.cli.audit import parse_time
from streams.config import Config, load_config
from streams.config.kafka import RetentionSettings
from streams.support.errors import ConfigError
from tests.engine_harness import build_engine, hr_event
from tests.fakes import FakeVendorServer
from tests.kustomize_lite import build
from tests.stack import Stack, terminated_event, wait_until, write_config

# --- the chain, unit --------------------------------------------------------------------------


def _chain(n: int, chain_id: str = "worker-0-abcd") -> list[dict[str, Any]]:
    """``n`` sealed records of one chain, as they are stored (JSON round trip)."""
    chain = AuditChain(chain_id)
    records = []
    for i in range(n):
        record = chain.seal("decision", 1700000000.0 + i, {"event_id": f"e{i}", "n": i * 1.5})
        chain.advance(record)
        records.append(orjson.loads(orjson.dumps(record)))
    return records


def _verify(records: list[dict[str, Any]]) -> Any:
    verifier = Verifier()
    for i, record in enumerate(records, 1):
        verifier.add(record, f"line {i}")
    (report,) = verifier.report()
    return report


def test_an_untouched_chain_verifies_in_any_line_order() -> None:
    """Sealed records verify after a JSON round trip; the order of lines does not matter (a
    topic's partitions interleave a chain): seq gives the order."""
    records = _chain(6)
    assert records[0]["seq"] == 1
    assert records[0]["prev_hash"] == GENESIS
    assert all(r["prev_hash"] == p["hash"] for p, r in itertools.pairwise(records))
    report = _verify(list(reversed(records)))
    assert report.broken is None
    assert (report.records, report.first_seq, report.last_seq) == (6, 1, 6)
    assert report.head == records[-1]["hash"]


def test_the_hash_does_not_depend_on_how_the_json_is_written() -> None:
    """A copy re-serialised with other key order (nested too), indentation and ASCII escapes
    (as a SIEM or a script may write it) still verifies: the hash is over canonical JSON."""
    records = _chain(3)
    records[1]["note"] = "Zürich"
    records[1]["nested"] = {"z": 1, "a": [{"y": 2, "b": 3}]}
    records[1]["hash"] = record_hash(records[1])
    records[2]["prev_hash"] = records[1]["hash"]
    records[2]["hash"] = record_hash(records[2])
    rewritten = [
        json.loads(json.dumps(dict(reversed(list(r.items()))), indent=2, ensure_ascii=True))
        for r in records
    ]
    assert _verify(rewritten).broken is None


def test_an_edited_field_is_found_at_that_record() -> None:
    """Changing any field of one record (here a nested value) is a hash mismatch named at
    that record."""
    records = _chain(6)
    records[3]["n"] = 99.0
    report = _verify(records)
    assert report.broken is not None
    assert (report.broken.seq, report.broken.where, report.broken.finding) == (
        4,
        "line 4",
        "edited",
    )
    assert report.records == 3


def test_a_deleted_record_leaves_a_gap_named_at_the_next_record() -> None:
    """Deleting one record is a seq gap: the record after it is named, with what is missing."""
    records = _chain(6)
    del records[2]
    report = _verify(records)
    assert report.broken is not None
    assert report.broken.finding == "deleted"
    assert report.broken.seq == 4
    assert "seq 3 missing" in report.broken.problem


def test_a_truncated_middle_is_found() -> None:
    """Cutting several records out of the middle names the first record after the cut and
    the whole missing range."""
    records = _chain(10)
    kept = records[:3] + records[7:]
    report = _verify(kept)
    assert report.broken is not None
    assert (report.broken.seq, report.broken.finding) == (8, "deleted")
    assert "seq 4..7 missing" in report.broken.problem


def test_two_swapped_records_are_found_at_the_first() -> None:
    """Swapping two records' places in the chain (their seq and prev_hash) breaks the hash of
    the first of them."""
    records = _chain(6)
    a, b = records[1], records[2]
    for key in ("seq", "prev_hash"):
        a[key], b[key] = b[key], a[key]
    report = _verify(records)
    assert report.broken is not None
    assert (report.broken.seq, report.broken.finding) == (2, "edited")


def test_a_rehashed_replacement_breaks_the_next_link() -> None:
    """A record edited and re-hashed passes its own check, but the next record's prev_hash no
    longer matches: the break is named at the next record, as a replacement."""
    records = _chain(6)
    records[2]["event_id"] = "forged"
    records[2]["hash"] = record_hash(records[2])
    report = _verify(records)
    assert report.broken is not None
    assert (report.broken.seq, report.broken.finding) == (4, "replaced")
    assert "seq 3" in report.broken.problem


def test_duplicates_are_accepted_but_a_conflicting_seq_is_not() -> None:
    """The same record delivered twice (a producer retry) is counted, not a break; two
    different records with one seq are a conflict."""
    records = _chain(4)
    report = _verify([*records, copy.deepcopy(records[1])])
    assert report.broken is None
    assert report.duplicates == 1
    other = _chain(4, chain_id=records[0]["chain"])[1]
    other["event_id"] = "other"
    other["hash"] = record_hash(other)
    report = _verify([*records, other])
    assert report.broken is not None
    assert report.broken.finding == "conflict"


def test_each_chain_is_checked_on_its_own() -> None:
    """Two writers' chains in one input: a break in one leaves the other reported intact."""
    first, second = _chain(3, "worker-0-aaaa"), _chain(3, "worker-1-bbbb")
    del second[1]
    verifier = Verifier()
    for i, record in enumerate([*first, *second]):
        verifier.add(record, f"line {i + 1}")
    reports = {r.chain: r for r in verifier.report()}
    assert reports["worker-0-aaaa"].broken is None
    assert reports["worker-1-bbbb"].broken is not None


def test_sealing_refuses_fields_that_shadow_the_chain() -> None:
    """An audit field named like a chain field would let a caller forge the link."""
    with pytest.raises(ValueError, match="may not use"):
        AuditChain("c").seal("decision", 1.0, {"seq": 5})


def test_the_head_is_found_from_the_end_of_a_long_journal(tmp_path: Path) -> None:
    """The last chained entry is found from the end, across read blocks, past unchained
    entries and a torn last line; a journal with none gives no head."""
    path = tmp_path / "journal.jsonl"
    records = _chain(3)
    lines = [orjson.dumps(r) for r in records]
    lines += [orjson.dumps({"kind": "state", "pad": "x" * 200_000})] * 2
    path.write_bytes(b"\n".join(lines) + b'\n{"kind": "decis')
    assert last_link(path) == (records[0]["chain"], 3, records[-1]["hash"])
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b'{"kind": "state"}\n')
    assert last_link(empty) is None
    assert last_link(tmp_path / "missing.jsonl") is None


# --- the worker writes the chain ---------------------------------------------------------------


def _run_engine(tmp_path: Path, event_id: str) -> list[tuple[str, dict[str, Any]]]:
    """One worker life: an engine on ``tmp_path``'s journal decides one HR event; returns
    what it published to the audit topic as (key, record)."""
    h = build_engine(tmp_path)
    try:

        async def scenario() -> None:
            await h.engine.handle_hr(hr_event(event_id=event_id))
            await asyncio.wait_for(h.engine.wait_plans(), 5.0)

        asyncio.run(scenario())
        return list(h.publisher.on(h.topics.audit))
    finally:
        h.close()


def test_the_worker_chains_its_audit_records_across_a_restart(tmp_path: Path) -> None:
    """Every audit record the worker journals and publishes is a link; a worker started
    again on the same journal continues the same chain (same id, next seq), so journal and
    topic copies verify as one chain with the same head."""
    first = [r for _, r in _run_engine(tmp_path, "evt-1")]
    again = [r for _, r in _run_engine(tmp_path, "evt-2")]
    published = first + again
    assert len({r["chain"] for r in published}) == 1
    assert [r["seq"] for r in first] == list(range(1, len(first) + 1))
    assert max(r["seq"] for r in again) > len(first)
    report = _verify(published)
    assert report.broken is None
    assert report.records == max(r["seq"] for r in published)
    verifier = Verifier()
    verifier.add_lines((tmp_path / "data" / "journal.jsonl").read_bytes().splitlines(), "journal")
    (journal_report,) = verifier.report()
    assert journal_report.broken is None
    assert journal_report.head == report.head


def test_a_record_a_crash_kept_off_the_topic_is_published_at_restart(tmp_path: Path) -> None:
    """A worker that died between journaling an audit record and publishing it leaves the
    record off the topic; started again, it republishes its chain's last journaled records
    (under the chain id as key) before going on, so the topic shows no gap, only duplicates."""
    first = [r for _, r in _run_engine(tmp_path, "evt-1")]
    lost = first.pop()  # journaled, never acknowledged by the broker
    again = _run_engine(tmp_path, "evt-2")
    republished = sorted((r for k, r in again if k == lost["chain"]), key=lambda r: r["seq"])
    assert len(first) + 1 <= REPUBLISH
    assert republished == [*first, lost]  # the whole (short) chain so far, once more
    report = _verify(first + [r for _, r in again])
    assert report.broken is None
    assert report.duplicates == len(first)


# --- retention ---------------------------------------------------------------------------------

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"


def _trail_specs(config: Config) -> dict[str, TopicSpec]:
    t = Topics.from_config(config)
    names = {t.audit, t.alerts, t.hr_dlq, t.auth_dlq, t.leak_dlq}
    return {s.name: s for s in topic_specs(config) if s.name in names}


def test_the_trail_topics_have_explicit_long_retention() -> None:
    """Audit and alerts keep 400 days, every dead-letter topic 90 (the defaults of
    topics.retention), with cleanup.policy delete said explicitly; every ``.dlq`` topic is
    covered."""
    config = load_config(None, env={})
    specs = _trail_specs(config)
    assert {s.name for s in topic_specs(config) if s.name.endswith(".dlq")} <= set(specs)
    days = {"audit": 400, "alerts": 400}
    for name, spec in specs.items():
        want = days.get(name.rsplit(".", 1)[-1], 90) * 86_400_000
        assert spec.configs() == {"cleanup.policy": "delete", "retention.ms": want}, name


def test_retention_is_configurable_and_minus_one_keeps_for_ever() -> None:
    """topics.retention.*_days comes from the configuration; -1 is retention.ms -1; 0 (which
    would delete at once) is refused naming the key."""
    config = load_config(None, env={"ACCESSGUARD_TOPICS_RETENTION_AUDIT_DAYS": "-1"})
    audit = Topics.from_config(config).audit
    assert _trail_specs(config)[audit].configs()["retention.ms"] == -1
    with pytest.raises(ConfigError, match=r"topics\.retention\.dlq_days: must be -1"):
        load_config(None, env={"ACCESSGUARD_TOPICS_RETENTION_DLQ_DAYS": "0"})


@pytest.mark.parametrize("overlay", sorted(p.name for p in (K8S / "overlays").iterdir()))
def test_the_strimzi_topics_carry_the_retention_defaults(overlay: str) -> None:
    """Every overlay's KafkaTopics for the trail carry the retention the configuration model
    defaults to (derived from RetentionSettings, not copied)."""
    defaults = RetentionSettings()
    days = {"audit": defaults.audit_days, "alerts": defaults.alerts_days}
    topics = {
        o["spec"]["topicName"]: o["spec"]["config"]
        for o in build(K8S / "overlays" / overlay)
        if o["kind"] == "KafkaTopic"
    }
    trail = [n for n in topics if n.endswith((".audit", ".alerts", ".dlq"))]
    assert len(trail) == 5
    for name in trail:
        want = retention_ms(days.get(name.rsplit(".", 1)[-1], defaults.dlq_days))
        assert topics[name]["retention.ms"] == want, name
        assert topics[name]["cleanup.policy"] == "delete", name


# --- export and verify against the real embedded broker ----------------------------------------


def _audit_cli(*args: str, data: Path) -> Any:
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("ACCESSGUARD_")}
    env["ACCESSGUARD_DATA_DIR"] = str(data)
    return CliRunner().invoke(main, ["audit", *args], env=env)


def test_export_and_verify_the_trail_a_worker_wrote(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """A worker (the engine, publishing to the real broker) writes audit records, is started
    again and writes more; ``audit export`` returns every one of them, as stored, in its time
    window; ``audit verify`` passes on the topic and on the export, and fails on a tampered
    export, naming the first broken link."""
    for event_id in ("evt-1", "evt-2"):
        h = build_engine(tmp_path)
        create_topics(h.config, broker.bootstrap)
        try:

            async def scenario(h: Any = h, event_id: str = event_id) -> None:
                publisher = Publisher(broker.bootstrap)
                await publisher.start()
                h.engine.publisher = publisher
                try:
                    await h.engine.handle_hr(hr_event(event_id=event_id))
                    await asyncio.wait_for(h.engine.wait_plans(), 10.0)
                finally:
                    await publisher.stop()

            asyncio.run(scenario())
        finally:
            h.close()
    journaled = [e for e in read_journal(tmp_path / "data" / "journal.jsonl") if "chain" in e]
    assert len(journaled) >= 4

    export = tmp_path / "audit.ndjson"
    result = _audit_cli(
        "export", "--broker", broker.url, "--since", "1h", "--output", str(export), data=tmp_path
    )
    assert result.exit_code == 0, result.output
    lines = export.read_bytes().splitlines()
    # Every journaled record is there; the second life republished the first's (duplicates).
    assert {orjson.loads(x)["hash"] for x in lines} == {e["hash"] for e in journaled}
    assert len(lines) > len(journaled)
    to_stdout = _audit_cli("export", "--broker", broker.url, "--since", "1h", data=tmp_path)
    assert to_stdout.exit_code == 0, to_stdout.output
    assert sorted(to_stdout.stdout_bytes.splitlines()) == sorted(lines)
    empty = _audit_cli(
        "export", "--broker", broker.url, "--since", "2020-01-01", "--until", "2020-02-01T00:00Z",
        data=tmp_path,
    )  # fmt: skip
    assert empty.exit_code == 0, empty.output
    assert empty.stdout == ""
    assert '"exported":0' in empty.stderr

    on_topic = _audit_cli("verify", "--broker", broker.url, data=tmp_path)
    assert on_topic.exit_code == 0, on_topic.output
    (chain,) = orjson.loads(on_topic.stdout)["chains"]
    assert (chain["ok"], chain["records"], chain["last_seq"]) == (
        True,
        len(journaled),
        len(journaled),
    )
    assert _audit_cli("verify", "--input", str(export), data=tmp_path).exit_code == 0

    records = list({r["seq"]: r for r in map(orjson.loads, lines)}.values())
    records.sort(key=lambda r: r["seq"])
    records[2]["kind"] = "nothing_happened"
    export.write_bytes(b"\n".join(orjson.dumps(r) for r in records) + b"\n")
    tampered = _audit_cli("verify", "--input", str(export), data=tmp_path)
    assert tampered.exit_code == 1
    report = orjson.loads(tampered.stdout)
    assert report["ok"] is False
    assert report["chains"][0]["broken"]["seq"] == 3
    assert report["chains"][0]["broken"]["finding"] == "edited"
    assert "audit.ndjson:3): edited" in tampered.stderr


def test_times_are_iso_8601_or_relative() -> None:
    """--since/--until take ISO 8601 (UTC when no zone is given) or "N[smhdw]" ago; anything
    else is refused with both forms named."""
    now = 1_800_000_000.0
    assert parse_time("2026-01-31T12:00:00Z", now) == 1_769_860_800.0
    assert parse_time("2026-01-31T12:00:00", now) == 1_769_860_800.0
    assert parse_time("2026-01-31T13:00:00+01:00", now) == 1_769_860_800.0
    assert parse_time("7d", now) == now - 7 * 86400
    assert parse_time("24h", now) == now - 86400
    assert parse_time("90m", now) == now - 5400
    with pytest.raises(click.BadParameter, match="neither ISO 8601"):
        parse_time("last tuesday", now)


def test_reading_the_topic_needs_a_broker(tmp_path: Path) -> None:
    """Without --broker or ACCESSGUARD_BROKER the commands stop with one line naming the key."""
    result = _audit_cli("verify", data=tmp_path)
    assert result.exit_code == 2
    assert "broker" in result.stderr
    assert "--broker" in result.stderr


@pytest.mark.integration
def test_the_running_stack_writes_a_chain_that_verifies(
    broker: EmbeddedBroker, vendor: FakeVendorServer, tmp_path: Path
) -> None:
    """`accessguard run` (Faust worker) against the real broker audits an offboarding as one
    chain named after the host; `audit verify` on the topic finds it intact, holding every
    chained record of the worker's journal."""
    cfg = write_config(
        tmp_path / "config.yaml",
        data_dir=tmp_path / "data",
        vendor_url=vendor.url,
        broker=broker.url,
    )
    with Stack(cfg) as stack:
        event = terminated_event("chain-1", "E1001", "alice.nguyen@lumen-outdoor.example")
        assert stack.post_hr(event).status_code == 202
        stack.wait_for_ledger("chain-1")

        def on_topic() -> dict[str, Any] | None:
            chained = [e for e in stack.journal_so_far() if "chain" in e]
            result = _audit_cli("verify", "--broker", broker.url, data=tmp_path)
            report = orjson.loads(result.stdout)
            if chained and report["records"] == len(chained):
                return {"report": report, "chained": chained, "exit": result.exit_code}
            return None

        seen = wait_until(on_topic, 20, 0.5, what="every journaled audit record on the topic")
    assert seen["exit"] == 0
    (chain,) = seen["report"]["chains"]
    assert chain["ok"] is True
    assert chain["chain"].startswith(socket.gethostname().split(".", 1)[0] + "-")
    assert chain["head"] == seen["chained"][-1]["hash"]
