"""What each component of accessguard reads and writes on Kafka: the least privilege of its
Kafka user.

deploy/k8s/sync.py turns this into one Strimzi ``KafkaUser`` per component (mTLS, ``simple``
ACLs); tests/test_k8s_manifests.py checks the rendered users against it and checks, on the
rendered ACLs themselves, that only the registry importer writes the registry, that nobody
deployed writes the leak-index snapshots, and that pollers and the HR edge write only input
topics (and a poller its dead-letter topic). Read from the code that produces and consumes:

- ``worker`` (``accessguard worker``): the Faust agents consume hr.events, auth.events,
  leak.records, auth.routed (events handed to the owner of their group key) and
  alerts.pending (alerts the event path queued) in the consumer group ``worker.id``, and
  write the last two; the views (streams/bus/views.py) read
  registry.changes, lifecycle, ledger and rule.state whole, without a group; it writes
  lifecycle, ledger, audit, alerts, rule.state and the dead-letter topics
  (streams/runtime/writes.py, engine.py) and hr.events (contract_ended events of agencies
  past their end, streams/runtime/engine.py ``tick_agencies``). It writes the registry only
  with a door of ``worker.doors`` that changes identity facts: ``scim`` (users created or
  changed, streams/runtime/scim.py) and ``ssf`` (RISC ``identifier-changed``); ``ssf`` also
  writes identity.events (CAEP session revocations) and leak.records (credential
  compromise). SCIM's terminations go to hr.events, which it already writes.
- ``ssf-transmitter`` (``accessguard connect ssf-transmitter``, with ``ssf.signing_key``):
  reads the audit topic (the revocations it pushes) and the registry (its subjects), without
  a group; writes nothing.
- ``hr-webhook`` (``accessguard connect hr-webhook``): writes hr.events, reads it back at start
  to remember the event ids it accepted (``read_hr_seen``); with Okta Event Hooks
  (``hooks.event_hook_secret``) also auth.events (account locks) and identity.events (MFA
  resets), input topics like a login poller's.
- ``poller-<name>`` (``accessguard connect poller NAME``): a login poller writes auth.events
  and auth.events.dlq, a leak feed leak.records and leak.records.dlq; both read the registry.
- ``registry-import`` (``accessguard registry import``): reads and writes registry.changes.
- ``leaks-import`` (``accessguard leaks import``, not deployed): reads the registry and the
  leak-index snapshots, writes leak.records and new snapshots.

Every user may also Describe every accessguard topic (a prefix ACL): each process lists the
topics at start (``create_topics``) and would try to create, and be refused, any it cannot
see. Describe shows names and partitions, never records; nobody is given Create.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from streams.bus.topics import Topics
from streams.config import Config


@dataclass(frozen=True)
class Access:
    """Topics a component reads and writes, and the consumer groups it joins."""

    read: frozenset[str] = field(default_factory=frozenset)
    write: frozenset[str] = field(default_factory=frozenset)
    groups: frozenset[str] = field(default_factory=frozenset)


def component_access(config: Config, leak_feeds: Collection[str] = ()) -> dict[str, Access]:
    """Every component's access under ``config``: the worker (with its ``worker.doors``), the
    HR edge, the SSF transmitter (with ``ssf.signing_key``), one poller per ``pollers`` entry
    (``leak_feeds``: the poller types that are leak feeds, as connectors/base/leak_sources.py
    ``LEAK_FEEDS`` names them), and the two importers."""
    t = Topics.from_config(config)
    doors = set(config.settings.worker.doors)
    # identity facts (SCIM users, SSF identifier changes) are registry changes
    door_writes = frozenset({t.registry} if doors else set()) | frozenset(
        {t.identity_events, t.leak_records} if "ssf" in doors else set()
    )
    access = {
        "worker": Access(
            read=frozenset(
                {t.hr_events, t.auth_events, t.leak_records, t.auth_routed, t.alert_queue}
                | {t.registry, t.lifecycle, t.ledger, t.rule_state, t.identity_events}
            ),
            write=frozenset(
                {t.lifecycle, t.ledger, t.audit, t.alerts, t.rule_state, t.hr_events}
                | {t.auth_routed, t.alert_queue, t.hr_dlq, t.auth_dlq, t.leak_dlq}
                | door_writes
            ),
            groups=frozenset({config.settings.worker.id}),
        ),
        "hr-webhook": Access(
            read=frozenset({t.hr_events}),
            write=frozenset({t.hr_events})
            # Okta Event Hooks (hooks.event_hook_secret): a lock is a login event, an MFA reset
            # an identity event; both input topics, as a login poller writes them
            | (
                frozenset({t.auth_events, t.identity_events})
                if config.settings.hooks.event_hook_secret is not None
                else frozenset()
            ),
        ),
        "registry-import": Access(read=frozenset({t.registry}), write=frozenset({t.registry})),
        "leaks-import": Access(
            read=frozenset({t.registry, t.leak_index}),
            write=frozenset({t.leak_records, t.leak_index}),
        ),
    }
    if config.settings.ssf.signing_key is not None:
        access["ssf-transmitter"] = Access(read=frozenset({t.audit, t.registry}))
    for name, settings in config.pollers.items():
        feed = str(settings.get("type")) in leak_feeds
        topic, dlq = (t.leak_records, t.leak_dlq) if feed else (t.auth_events, t.auth_dlq)
        # a login poller also publishes the identity-security events of its audit log
        extra = frozenset() if feed else frozenset({t.identity_events})
        access[f"poller-{name}"] = Access(
            read=frozenset({t.registry}), write=frozenset({topic, dlq}) | extra
        )
    return access
