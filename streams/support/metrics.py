"""Prometheus metrics. Labels are bounded enums and configured names — never a person, an
e-mail or an IP. Hot-path children are pre-bound (``labels()`` per event costs ~4.5 µs)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from streams import __version__

REGISTRY = CollectorRegistry(auto_describe=True)

#: Reasons an input is rejected (a closed set: user input never becomes a label value).
REJECT_REASONS = (
    "bad_json",
    "invalid_field",
    "bad_signature",
    "stale_signature",
    "missing_signature",
    "too_large",
    "conflict",
    "broker_unavailable",
    "journal_unavailable",
    "bad_record",
    "busy",
    "not_enabled",
    "throttled",
    # a poller's normaliser raised (a bug or a payload it cannot read): dead-lettered
    "normaliser_error",
)

#: The reasons that say a source's payloads no longer fit what accessguard reads (schema
#: drift), as the AccessGuardSourceRejectionsJump alert selects them: not authentication,
#: throttling or our own broker and journal being down.
SHAPE_REJECT_REASONS = ("bad_json", "invalid_field", "bad_record", "normaliser_error")

#: Why an authentication failed (``accessguard_auth_failures_total``): no credential, a wrong
#: one, a stale signature timestamp, or refused unchecked while the client is throttled.
AUTH_FAILURE_REASONS = ("missing", "wrong", "stale", "throttled")

#: Why a provider could not obtain an access token
#: (``accessguard_provider_credential_failures_total``): an OAuth error code the token
#: endpoint returned, another refusal, the endpoint unreachable, an answer without a usable
#: token, or a credential setting that is empty or unreadable.
CREDENTIAL_FAILURE_REASONS = (
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "invalid_scope",
    "rejected",
    "unreachable",
    "invalid_response",
    "misconfigured",
)

EVENTS_ACCEPTED = Counter(
    "accessguard_events_accepted_total",
    "Input events accepted (acknowledged by the broker), by source.",
    ["source"],
    registry=REGISTRY,
)
EVENTS_REJECTED = Counter(
    "accessguard_events_rejected_total",
    "Input events rejected, by source and reason.",
    ["source", "reason"],
    registry=REGISTRY,
)
IDENTITY_EVENTS_DROPPED = Counter(
    "accessguard_identity_events_dropped_total",
    "Vendor audit events dropped at the edge by the security allow-list (not dead-lettered), "
    "by source and reason.",
    ["source", "reason"],
    registry=REGISTRY,
)
IDENTITY_EVENTS = Counter(
    "accessguard_identity_events_evaluated_total",
    "Identity-security events evaluated by the identity rules, by vendor.",
    ["vendor"],
    registry=REGISTRY,
)
AUTH_FAILURES = Counter(
    "accessguard_auth_failures_total",
    "Failed authentications at the HTTP edges, by endpoint and reason (missing, wrong, "
    "stale, throttled: refused unchecked while the client is blocked). Never by address.",
    ["endpoint", "reason"],
    registry=REGISTRY,
)
SOURCE_LAST_EVENT = Gauge(
    "accessguard_source_last_event_timestamp_seconds",
    "Unix time a source (poller:<name>, hr_webhook, auth_ingest:<vendor>, leak_ingest) last "
    "delivered an accepted event. No series before its first event since start.",
    ["source"],
    registry=REGISTRY,
)
SOURCE_CADENCE = Gauge(
    "accessguard_source_expected_cadence_seconds",
    "The longest normal gap between two events of a source (sources.* settings): silent "
    "for longer raises AccessGuardSourceSilent. No series for a source not watched.",
    ["source"],
    registry=REGISTRY,
)
POLLER_FAILURES = Gauge(
    "accessguard_poller_consecutive_failures",
    "Failed rounds in a row of a poller (0 after a good round): an expired token or a "
    "refusing vendor shows here long before the source counts as silent.",
    ["source"],
    registry=REGISTRY,
)
EVENTS_DUPLICATE = Counter(
    "accessguard_events_duplicate_total",
    "Input events acknowledged as repeats of an event_id already seen, by source.",
    ["source"],
    registry=REGISTRY,
)
DECISIONS = Counter(
    "accessguard_decisions_total",
    "Offboarding decisions, by HR event type and outcome.",
    ["type", "outcome"],
    registry=REGISTRY,
)
ACTIONS = Counter(
    "accessguard_actions_total",
    "Provider actions, by provider, action and outcome "
    "(success, dry_run, skipped_done, retry, failed).",
    ["provider", "action", "outcome"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "accessguard_provider_rate_limited_total",
    "Provider calls held for a rate limit, by provider and source: vendor (the vendor "
    "refused it: a 429 or a 403 rate-limit answer) or client (held before sending, from "
    "the vendor's rate-limit headers or an earlier refusal). Retried, never dropped.",
    ["provider", "source"],
    registry=REGISTRY,
)
PROVIDER_LATENCY = Histogram(
    "accessguard_provider_call_seconds",
    "Latency of one provider call attempt.",
    ["provider", "action"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
REVOKE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2, 5, 10, 30, 60, 300, 900)
TIME_TO_REVOKE = Histogram(
    "accessguard_time_to_revoke_seconds",
    "From an offboarding accepted at the edge to its last revocation acknowledged by its "
    "provider, when every revocation went out for real and none failed (dry runs are not "
    "revocations; failed ones are counted in accessguard_offboardings_unrevoked_total).",
    buckets=REVOKE_BUCKETS,
    registry=REGISTRY,
)
REVOCATION_ACKNOWLEDGED = Histogram(
    "accessguard_revocation_acknowledge_seconds",
    "From an offboarding accepted at the edge to one revocation acknowledged, by provider "
    "(real calls only; dry runs excluded).",
    ["provider"],
    buckets=REVOKE_BUCKETS,
    registry=REGISTRY,
)
REVOCATION_FAILURES = Counter(
    "accessguard_revocation_failures_total",
    "Revocations of an offboarding that failed for good, by provider.",
    ["provider"],
    registry=REGISTRY,
)
OFFBOARDINGS_UNREVOKED = Counter(
    "accessguard_offboardings_unrevoked_total",
    "Offboardings with at least one revocation that failed for good or was read back as "
    "not done: they miss the time-to-revoke objective (the SLO ratio counts them as over it).",
    registry=REGISTRY,
)
REVOCATION_VERIFIED = Histogram(
    "accessguard_revocation_verify_seconds",
    "From a revocation acknowledged to the provider's own state read back as revoked, by "
    "provider (real calls only).",
    ["provider"],
    buckets=REVOKE_BUCKETS,
    registry=REGISTRY,
)
REVOCATION_UNVERIFIED = Counter(
    "accessguard_revocation_unverified_total",
    "Revocations acknowledged but read back as not done (or not read back in time), by "
    "provider: each pages once with the evidence.",
    ["provider"],
    registry=REGISTRY,
)
VERIFICATIONS = Counter(
    "accessguard_action_verifications_total",
    "Read-backs of acknowledged actions, by provider and outcome (verified, not_verifiable: "
    "the vendor offers no read-back, failed).",
    ["provider", "outcome"],
    registry=REGISTRY,
)
ALERTS = Counter(
    "accessguard_alerts_total",
    "Alerts sent, by sink, severity and outcome (sent, dry_run, failed, unrouted).",
    ["sink", "severity", "outcome"],
    registry=REGISTRY,
)
ALERTS_ROUTED = Counter(
    "accessguard_alerts_routed_total",
    "Alerts routed, by rule and intent: page, notify, review (a staged rule's alert, never "
    "paged) or severity (an alert no rule raised).",
    ["rule", "intent"],
    registry=REGISTRY,
)
INCIDENTS = Counter(
    "accessguard_incidents_total",
    "Rule alerts by what they did to their subject's incident: opened one, or updated it "
    "(grouped instead of paging again).",
    ["event"],
    registry=REGISTRY,
)
INCIDENTS_OPENED = INCIDENTS.labels("opened")
INCIDENTS_UPDATED = INCIDENTS.labels("updated")
DEAD_LETTERS = Counter(
    "accessguard_dead_letters_total",
    "Records written to a dead-letter topic, by source topic and reason.",
    ["topic", "reason"],
    registry=REGISTRY,
)
LOGIN_EVENTS = Counter(
    "accessguard_login_events_evaluated_total",
    "Login events resolved and evaluated against the rules.",
    registry=REGISTRY,
)
RULE_MATCHES = Counter(
    "accessguard_rule_matches_total",
    "Rule detections (before dedup), by rule and severity.",
    ["rule", "severity"],
    registry=REGISTRY,
)
RULE_ERRORS = Counter(
    "accessguard_rule_errors_total",
    "Exceptions raised while evaluating a rule (the event is dead-lettered), by rule.",
    ["rule"],
    registry=REGISTRY,
)
RULE_SUPPRESSED = Counter(
    "accessguard_rule_suppressed_total",
    "Detections an active rule exception kept quiet (rules/exceptions.yaml), by rule.",
    ["rule"],
    registry=REGISTRY,
)
LOGIN_ROUTED = Counter(
    "accessguard_login_events_routed_total",
    "Login events handed to the worker that owns their group key (auth.routed): the edge "
    "keyed them by another key (a principal, not the identity) or an IP rule groups them.",
    registry=REGISTRY,
)
ALERTS_QUEUED = Counter(
    "accessguard_alerts_queued_total",
    "Detection alerts handed to the alert agent (the alerts.pending topic) by the event path.",
    registry=REGISTRY,
)
RULE_STATE_RECORDS = Counter(
    "accessguard_rule_state_records_total",
    "Records (batched deltas, base chunks, tombstones) written by the rule-state checkpoint.",
    registry=REGISTRY,
)
PENDING_ACTIONS = Gauge(
    "accessguard_pending_actions",
    "Actions waiting for a provider (in backoff or in flight).",
    registry=REGISTRY,
)
PROVIDER_STUCK = Gauge(
    "accessguard_provider_stuck_actions",
    "Actions whose fast retries are spent and that are retried slowly, by provider and "
    "failure class (one open incident per provider and class).",
    ["provider", "failure"],
    registry=REGISTRY,
)
SCHEDULED = Gauge(
    "accessguard_scheduled_offboardings",
    "HR events waiting for their effective_at.",
    registry=REGISTRY,
)
BUILD = Info("accessguard_build", "Build information.", registry=REGISTRY)
BUILD.info({"version": __version__})

# ---- rule evaluation, consumer lag, registry and readiness (issue 5) ----------------------
RULE_EVALUATIONS = Counter(
    "accessguard_rule_evaluations_total",
    "Login events evaluated by each rule (counted once per batch, not per event).",
    ["rule"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "accessguard_consumer_lag_messages",
    "Messages on this worker's assigned partitions not yet committed (end offset minus "
    "committed offset), by input topic. Sum across workers for the group's lag.",
    ["topic"],
    registry=REGISTRY,
)
REGISTRY_IDENTITIES = Gauge(
    "accessguard_registry_identities",
    "Identities in the access registry, by kind (employee, contractor, agency).",
    ["kind"],
    registry=REGISTRY,
)
REGISTRY_GRANTS = Gauge(
    "accessguard_registry_grants",
    "Grants in the access registry, by role.",
    ["role"],
    registry=REGISTRY,
)
REGISTRY_GRANTS_NO_MFA = Gauge(
    "accessguard_registry_grants_without_mfa",
    "Grants in the access registry whose MFA is none.",
    registry=REGISTRY,
)
REGISTRY_OFFBOARDED_WITH_GRANTS = Gauge(
    "accessguard_registry_offboarded_identities_with_grants",
    "Offboarded identities that still hold a registry grant accessguard has not removed.",
    registry=REGISTRY,
)
REGISTRY_AGENCY_GRANTS_EXPIRED = Gauge(
    "accessguard_registry_agency_grants_past_contract_end",
    "Grants held by members of an agency whose contract has ended, not yet removed.",
    registry=REGISTRY,
)
READINESS = Gauge(
    "accessguard_readiness_check",
    "1 when the readiness check passes, else 0 (the checks of /readyz).",
    ["check"],
    registry=REGISTRY,
)
OBSERVED_AT = Gauge(
    "accessguard_observed_timestamp_seconds",
    "Unix time the lag, registry and readiness gauges were last refreshed.",
    registry=REGISTRY,
)
CREDENTIAL_FAILURES = Counter(
    "accessguard_provider_credential_failures_total",
    "Failed attempts to obtain a provider access token (client credentials, service account, "
    "private_key_jwt), by connector and reason class. Never a secret.",
    ["provider", "reason"],
    registry=REGISTRY,
)

# Custody of shared logins (connectors/custody): the vault's reachability and the
# re-enrolment tasks of rotated logins. Labels are registry account ids, platforms and
# criticalities: configured names, bounded by the registry.
CUSTODY_UP = Gauge(
    "accessguard_custody_up",
    "1 when the custody vault answered the last check with accessguard's own token, else 0.",
    ["provider"],
    registry=REGISTRY,
)
CUSTODY_EXPOSED_SINCE = Gauge(
    "accessguard_custody_exposed_since_seconds",
    "Unix time the open re-enrolment task of a rotated shared login was opened: until it "
    "closes, the platform still accepts the old seed. No series once the task is closed.",
    ["account", "platform", "criticality"],
    registry=REGISTRY,
)
CUSTODY_DUE = Gauge(
    "accessguard_custody_task_due_seconds",
    "Unix time the open re-enrolment task of a shared login is due (pages once after it).",
    ["account", "platform", "criticality"],
    registry=REGISTRY,
)
CUSTODY_TASKS_OPEN = Gauge(
    "accessguard_custody_tasks_open",
    "Open re-enrolment tasks of rotated shared logins.",
    registry=REGISTRY,
)
CUSTODY_TASKS_OVERDUE = Gauge(
    "accessguard_custody_tasks_overdue",
    "Open re-enrolment tasks past their deadline.",
    registry=REGISTRY,
)
#: What happens to re-enrolment tasks (``accessguard_custody_task_events_total``).
CUSTODY_TASK_EVENTS = (
    "opened",
    "joined",
    "reminded",
    "overdue_paged",
    "code_rejected",
    "closed",
)
CUSTODY_TASK_EVENTS_TOTAL = Counter(
    "accessguard_custody_task_events_total",
    "Re-enrolment task events: opened, joined (a second rotation folded into an open task), "
    "reminded, overdue_paged, code_rejected, closed.",
    ["event"],
    registry=REGISTRY,
)
for _event in CUSTODY_TASK_EVENTS:
    CUSTODY_TASK_EVENTS_TOTAL.labels(_event)

# --- Shared Signals (connectors/ingest/ssf) ------------------------------------------------
#: Why a received Security Event Token is refused (a closed set; RFC 8935 §2.3 error codes
#: and accessguard's own for what follows verification).
SSF_REFUSE_REASONS = (
    "too_large",
    "not_authorized",
    "invalid_request",
    "invalid_key",
    "invalid_issuer",
    "invalid_audience",
    "invalid_signature",
    "stale",
    "duplicate",
    "unavailable",
)
SSF_SETS_REFUSED = Counter(
    "accessguard_ssf_sets_refused_total",
    "Security Event Tokens refused, by transmitter (configured name) and reason.",
    ["transmitter", "reason"],
    registry=REGISTRY,
)
SSF_EVENTS = Counter(
    "accessguard_ssf_events_total",
    "Events of accepted SETs, by transmitter, event type (short CAEP/RISC name) and what "
    "they became (hr_event, leak, identity_event, registry_change, verification, ignored).",
    ["transmitter", "event", "outcome"],
    registry=REGISTRY,
)
SSF_JWKS_FETCHES = Counter(
    "accessguard_ssf_jwks_fetches_total",
    "JWKS fetches of a transmitter's keys, by transmitter and outcome (ok, failed).",
    ["transmitter", "outcome"],
    registry=REGISTRY,
)
SSF_DELIVERIES = Counter(
    "accessguard_ssf_deliveries_total",
    "SETs accessguard transmitted, by receiver and outcome (delivered, failed).",
    ["receiver", "outcome"],
    registry=REGISTRY,
)
SSF_RECEIVER_UP = Gauge(
    "accessguard_ssf_receiver_up",
    "1 while the last push to the receiver was accepted, 0 after it failed.",
    ["receiver"],
    registry=REGISTRY,
)
