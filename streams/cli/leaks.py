"""``accessguard leaks``: import leaked-credential dumps into leak.records for the worker, and
list the findings left for review (old breaches with no credential-change fact)."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from typing import Any

import click
import orjson

from streams.cli.wiring import (
    begin,
    config_option,
    load,
    open_broker,
    resolve_broker_url,
)
from streams.support.errors import ValidationError


@click.group()
def leaks() -> None:
    """Import leaked-credential dumps; list the findings for review."""


@leaks.command("findings")
@click.option(
    "--input",
    "input_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    help="An audit export (accessguard audit export) or accessguard replay output; - for stdin.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per finding.")
def leaks_findings(input_file: str, *, as_json: bool) -> None:
    """List the leak findings for review: people in a breach older than
    leaks.review_after_days with no recorded credential change since. They were not paged
    and nothing was done: ask each person whether the password was changed since, and record
    credential_changed_at in the registry (or re-enrol them)."""
    from streams.decide.leaks import findings_in  # noqa: PLC0415

    stream = sys.stdin.buffer if input_file == "-" else open(input_file, "rb")  # noqa: SIM115
    try:
        found, unreadable = findings_in(stream)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    for f in found:
        if as_json:
            click.echo(orjson.dumps(f).decode())
        else:
            click.echo(
                f"low  {f.get('identity')}  breach {f.get('breach')} "
                f"({str(f.get('exposed_at', ''))[:10]}, {f.get('age_days')} days)  "
                f"credential exposed: {'yes' if f.get('credential') else 'no'}"
            )
    if not as_json:
        click.echo(f"findings: {len(found)}", err=True)
    if unreadable:
        click.echo(f"warning: {unreadable} line(s) of {input_file} were not JSON objects", err=True)


@leaks.command("import")
@config_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--broker",
    "broker_url",
    help="kafka://host:port of the broker (ACCESSGUARD_BROKER; for `accessguard run` with the "
    "embedded broker, the URL it printed at start).",
)
@click.option("--breach", help="Breach name when records do not say (default: the file's stem).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "ndjson", "combo"]),
    help="Dump format (default: from the extension, else the first bytes).",
)
@click.option("--progress/--no-progress", default=True, help="Progress bar on stderr.")
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes parsing byte ranges of an uncompressed CSV/NDJSON/combo file (8 MiB+).",
)
def leaks_import(
    config_path: str | None,
    file: str,
    *,
    broker_url: str | None,
    breach: str | None,
    fmt: str | None,
    progress: bool,
    jobs: int,
) -> None:
    """Stream FILE (CSV, JSON, NDJSON or email:password lines, gzip too), match it against
    the registry topic and publish the matched records to leak.records for the worker.
    Prints a JSON summary (read, matched, rejected with reasons) on stdout."""
    from connectors.ingest.dumps import DumpOptions, check_breach_name  # noqa: PLC0415
    from connectors.ingest.leak_import import (  # noqa: PLC0415
        dump_names,
        import_dump,
        import_dump_parallel,
    )
    from streams.bus.bootstrap import read_leak_index  # noqa: PLC0415
    from streams.bus.security import kafka_producer  # noqa: PLC0415
    from streams.bus.topics import Topics  # noqa: PLC0415
    from streams.runtime.engine import leak_settings  # noqa: PLC0415

    config = load(config_path)
    url = resolve_broker_url(config, broker_url, "`leaks import` publishes to a broker")
    # The breach name is checked here, at the edge, not refused later by the worker.
    try:
        names = dump_names(Path(file), DumpOptions(breach=breach and check_breach_name(breach)))
    except ValidationError as exc:
        raise click.BadParameter(exc.reason, param_hint="--breach") from None
    begin(config, {"leaks": True})  # logs to stderr: stdout is the summary
    bootstrap = open_broker(config, url)
    topics = Topics.from_config(config)
    settings = leak_settings(config)
    t_registry = time.monotonic()
    index, index_read = read_leak_index(
        bootstrap,
        topics.registry,
        settings.plus_tag_domains,
        snapshot_topic=topics.leak_index,
    )
    registry_seconds = time.monotonic() - t_registry
    options = DumpOptions(
        hmac_key=settings.hmac_key,
        breach=names.breach,
        format=fmt,
        max_record_bytes=config.settings.leaks.max_record_bytes,
    )
    producer = kafka_producer(
        bootstrap,
        acks="all",
        linger_ms=5,
        max_request_size=4 * 1048576,
        client_id="accessguard-leaks-import",
    )
    futures: list[Any] = []

    def send(partition: int, message: bytes) -> None:
        futures.append(
            producer.send(
                topics.leak_records,
                key=f"batch:{partition}".encode(),
                value=message,
                partition=partition,
            )
        )

    size = Path(file).stat().st_size
    summary = None
    # Wall clock (comparable across processes: bench/leak_matching.py times the path from
    # here to the worker's last decision) and monotonic for the duration.
    started_unix, t_import = time.time(), time.monotonic()
    if jobs > 1:
        summary = import_dump_parallel(
            file,
            index=index,
            partitions=config.settings.topics.partitions,
            bootstrap=bootstrap,
            topic=topics.leak_records,
            options=options,
            jobs=jobs,
        )
    try:
        with click.progressbar(
            length=size,
            label=f"importing {Path(file).name}",
            file=sys.stderr if progress else io.StringIO(),
        ) as bar:
            done = 0

            def advance(position: int) -> None:
                nonlocal done
                if position > done:
                    bar.update(position - done)
                    done = position

            if summary is not None:  # done in parallel
                bar.update(size)
            else:
                summary = import_dump(
                    file,
                    index=index,
                    partitions=config.settings.topics.partitions,
                    send=send,
                    options=options,
                    progress=advance,
                )
        for fut in futures:
            fut.get(timeout=30)
        producer.flush()
    finally:
        producer.close()
    import_seconds = time.monotonic() - t_import
    summary["timing"] = {
        "registry_read_seconds": round(registry_seconds, 3),
        "registry_changes_read": index_read.changes,
        "index_snapshot": index_read.snapshot,
        "import_seconds": round(import_seconds, 3),
        "records_per_second": round(summary["read"] / import_seconds) if import_seconds else 0,
        "import_started_unix": round(started_unix, 6),
    }
    click.echo(orjson.dumps(summary).decode())
    reasons = ", ".join(f"{k} {v}" for k, v in summary["reasons"].items())
    click.echo(
        f"read {summary['read']}, matched {summary['matched']}, rejected {summary['rejected']}"
        + (f" ({reasons})" if reasons else "")
        + f" in {import_seconds:.1f} s ({summary['timing']['records_per_second']:,} records/s)",
        err=True,
    )
    if summary["format"] == "unreadable":
        sys.exit(1)
    if summary["parsed"] == 0:
        # Nothing understood is a failed import, not a quiet "0 matched".
        what = (
            "holds no records"
            if summary["format"] == "empty"
            else f"had no record accessguard understood (read as {summary['format']}: "
            f"{summary['rejected']} rejected); check the file, or pass --format"
        )
        click.echo(f"error: {file} {what}", err=True)
        sys.exit(1)
