"""Topic names and shapes. Created by accessguard (not by Faust) so partitions and compaction
are right; ``accessguard run``/``worker`` call :func:`create_topics` before the worker starts."""

from __future__ import annotations

from dataclasses import dataclass

from kafka.partitioner.default import murmur2

from streams.bus.broker import TopicSpec, ensure_topics
from streams.config import Config

#: Largest leak index snapshot record: 5.5 MiB of JSON (0.9 MiB gzip) at 100k identities;
#: kafka-python checks the size before compression, so ~1.1M identities fit.
LEAK_INDEX_MAX_BYTES = 64 * 1048576


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) puts ``key`` in."""
    return int((murmur2(key.encode()) & 0x7FFFFFFF) % partitions)


@dataclass(frozen=True)
class Topics:
    hr_events: str
    hr_dlq: str
    registry: str
    lifecycle: str
    ledger: str
    audit: str
    alerts: str
    alert_queue: str
    auth_events: str
    auth_dlq: str
    auth_routed: str
    rule_state: str
    leak_records: str
    leak_dlq: str
    leak_index: str
    identity_events: str

    @classmethod
    def from_config(cls, config: Config) -> Topics:
        return cls(
            hr_events=config.topic("hr.events"),
            hr_dlq=config.topic("hr.events.dlq"),
            registry=config.topic("registry.changes"),
            lifecycle=config.topic("lifecycle"),
            ledger=config.topic("ledger"),
            audit=config.topic("audit"),
            alerts=config.topic("alerts"),
            alert_queue=config.topic("alerts.pending"),
            auth_events=config.topic("auth.events"),
            auth_dlq=config.topic("auth.events.dlq"),
            auth_routed=config.topic("auth.routed"),
            rule_state=config.topic("rule.state"),
            leak_records=config.topic("leak.records"),
            leak_dlq=config.topic("leak.records.dlq"),
            leak_index=config.topic("leak.index"),
            identity_events=config.topic("identity.events"),
        )


#: Milliseconds per day, for ``topics.retention.*_days``.
DAY_MS = 86_400_000


def retention_ms(days: int) -> int:
    """``retention.ms`` of a ``topics.retention.*_days`` setting (-1 stays -1: for ever)."""
    return -1 if days == -1 else days * DAY_MS


def topic_specs(config: Config) -> list[TopicSpec]:
    parts = config.settings.topics.partitions
    t = Topics.from_config(config)
    # The trail (what happened, what was rejected) is kept for configured, explicit times,
    # not the cluster's default (often 7 days).
    keep = config.settings.topics.retention
    audit, alerts, dlq = (
        retention_ms(d) for d in (keep.audit_days, keep.alerts_days, keep.dlq_days)
    )
    return [
        TopicSpec(t.hr_events, parts),
        TopicSpec(t.hr_dlq, 1, retention_ms=dlq),
        # State topics are read whole by every worker (materialised views), so one partition
        # keeps their order total; compaction bounds them on a real cluster.
        TopicSpec(t.registry, 1, compacted=True),
        TopicSpec(t.lifecycle, 1, compacted=True),
        TopicSpec(t.ledger, 1, compacted=True),
        TopicSpec(t.audit, parts, retention_ms=audit),
        TopicSpec(t.alerts, 1, retention_ms=alerts),
        # Alerts decided on the event path, waiting for the alert agent to send them: a slow
        # pager never stalls detection (streams/runtime/alerts.py). A work queue: the
        # cluster's default retention is plenty (the alerts topic keeps what was sent).
        TopicSpec(t.alert_queue, parts),
        TopicSpec(t.auth_events, parts),
        TopicSpec(t.auth_dlq, 1, retention_ms=dlq),
        # Login events a worker hands to the owner of their group key (identity, source
        # IP): same partition count as auth.events, so partition p of both has one owner.
        TopicSpec(t.auth_routed, parts),
        TopicSpec(t.rule_state, 1, compacted=True),
        TopicSpec(t.leak_records, parts),
        TopicSpec(t.leak_dlq, 1, retention_ms=dlq),
        # Snapshots of the LeakIndex `leaks import` builds from the registry, with the
        # registry offset they reflect: the next import reads only the changes since.
        TopicSpec(t.leak_index, 1, compacted=True, max_message_bytes=LEAK_INDEX_MAX_BYTES),
        # Identity-security events (MFA changes, privilege grants, vendor disables): keyed by
        # the subject like logins; their rejections share auth.events.dlq (same sources).
        TopicSpec(t.identity_events, parts),
    ]


def create_topics(config: Config, bootstrap: str) -> list[str]:
    return ensure_topics(bootstrap, topic_specs(config), config.settings.topics.replication)
