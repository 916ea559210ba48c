"""``accessguard audit``: export the audit trail for a SIEM and verify its hash chains.

``export`` reads the audit topic (every partition, up to the end offsets read at start) and
writes the records of a time window as NDJSON, one record per line exactly as stored, chain
fields included, so the SIEM copy can be verified too. ``verify`` checks every chain
(:mod:`streams.bus.auditchain`) of the topic, an export or a worker's journal, prints a JSON
report per chain and exits 1 on a broken one, naming its first broken link.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import click
import orjson

from streams.cli.wiring import (
    begin,
    config_option,
    load,
    open_broker,
    resolve_broker_url,
)

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, now: float) -> float:
    """Unix seconds of an ISO 8601 time (UTC when it names no zone) or of a time relative to
    ``now`` ("90m", "24h", "7d", "2w": that long ago)."""
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        return now - float(relative.group(1)) * _UNIT_SECONDS[relative.group(2)]
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither ISO 8601 (2026-01-31T12:00:00Z) nor relative (24h, 7d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


broker_option = click.option(
    "--broker",
    "broker_url",
    help="kafka://host:port of the broker (ACCESSGUARD_BROKER; for `accessguard run` with the "
    "embedded broker, the URL it printed at start).",
)


def _bootstrap(config_path: str | None, broker_url: str | None) -> tuple[str, str]:
    """(bootstrap servers, audit topic name) of the configured or given broker."""
    from streams.bus.topics import Topics  # noqa: PLC0415

    config = load(config_path)
    url = resolve_broker_url(config, broker_url, "`audit` reads the audit topic")
    begin(config)  # logs to stderr: stdout is the export or the report
    bootstrap = open_broker(config, url)
    return bootstrap, Topics.from_config(config).audit


@click.group()
def audit() -> None:
    """Export the audit trail (NDJSON for a SIEM) and verify its hash chains."""


def export_records(
    records: Iterator[tuple[bytes, str]], out: IO[bytes], since: float, until: float | None
) -> dict[str, int]:
    """Write the records whose ``ts`` is in [since, until) to ``out``, one per line as
    stored; count what was scanned and what had no readable ``ts``."""
    counts = {"scanned": 0, "exported": 0, "unreadable": 0}
    for raw, _where in records:
        counts["scanned"] += 1
        try:
            ts = orjson.loads(raw).get("ts")
        except (orjson.JSONDecodeError, AttributeError):
            ts = None
        if not isinstance(ts, int | float):
            counts["unreadable"] += 1
            continue
        if ts >= since and (until is None or ts < until):
            out.write(raw.rstrip(b"\n") + b"\n")
            counts["exported"] += 1
    return counts


@audit.command("export")
@config_option
@broker_option
@click.option("--since", required=True, help="Start: ISO 8601 (UTC if no zone) or relative (7d).")
@click.option("--until", help="End, exclusive (default: the end of the topic at start).")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="NDJSON file to write (default: stdout).",
)
def audit_export(
    config_path: str | None,
    *,
    broker_url: str | None,
    since: str,
    until: str | None,
    output: str | None,
) -> None:
    """Write the audit records of a time window as NDJSON, one record per line as stored
    (chain fields included), for a SIEM. A JSON summary goes to stderr."""
    from streams.bus.auditchain import read_topic  # noqa: PLC0415

    now = time.time()
    start = parse_time(since, now)
    end = parse_time(until, now) if until else None
    bootstrap, topic = _bootstrap(config_path, broker_url)
    if output:
        with Path(output).open("wb") as fh:
            counts = export_records(read_topic(bootstrap, topic), fh, start, end)
    else:
        counts = export_records(read_topic(bootstrap, topic), sys.stdout.buffer, start, end)
        sys.stdout.buffer.flush()
    click.echo(orjson.dumps({"topic": topic, **counts}).decode(), err=True)


@audit.command("verify")
@config_option
@broker_option
@click.option(
    "--input",
    "input_path",
    type=click.Path(exists=True, dir_okay=False),
    help="An export or a worker's journal.jsonl (default: the audit topic).",
)
def audit_verify(
    config_path: str | None, *, broker_url: str | None, input_path: str | None
) -> None:
    """Check every hash chain of the audit trail: per chain the records checked and the first
    broken link (edited: hash mismatch; deleted: seq gap; replaced: prev_hash mismatch;
    conflict: two records with one seq). Exit 1 when a chain is broken."""
    from streams.bus.auditchain import Verifier, read_topic  # noqa: PLC0415

    verifier = Verifier()
    if input_path:
        with Path(input_path).open("rb") as fh:
            verifier.add_lines(fh, input_path)
        source = input_path
    else:
        bootstrap, source = _bootstrap(config_path, broker_url)
        for raw, where in read_topic(bootstrap, source):
            try:
                record: Any = orjson.loads(raw)
            except orjson.JSONDecodeError:
                record = None  # counted as unchained: not an audit record at all
            verifier.add(record, where)
    reports = verifier.report()
    broken = [r for r in reports if r.broken is not None]
    summary = {
        "source": source,
        "ok": not broken,
        "chains": [r.to_dict() for r in reports],
        "records": sum(r.records for r in reports),
        "unchained": verifier.unchained,
    }
    click.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    for b in (r.broken for r in broken if r.broken is not None):
        click.echo(
            f"broken: chain {b.chain} at seq {b.seq} ({b.where}): {b.finding}: {b.problem}",
            err=True,
        )
    if broken:
        sys.exit(1)
