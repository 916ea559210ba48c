"""Shared Signals (OpenID SSF, CAEP and RISC): the transmitters accessguard receives Security
Event Tokens from (``ssf.transmitters.<name>``) and the receivers it transmits its own
revocations to (``ssf.receivers.<name>``), plus accessguard's own signing key.

Apart from :mod:`streams.config.models` (at its size limit); the two maps are not rows of the
generated configuration table (maps are not, like ``sources.cadence``): README "Shared
Signals (SSF)" documents their keys.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from streams.config.fields import Bool, Float, Int, Names, SecretValue, Str
from streams.config.section import Section, _doc
from streams.support.secrets import Secret

#: Asymmetric JWS algorithms a SET may be signed with: a JWKS only publishes public keys, so
#: a symmetric ``HS*`` (anyone holding the JWKS could forge) and ``none`` are never accepted.
ALLOWED_ALGORITHMS: tuple[str, ...] = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
#: The event types accessguard transmits (short names of CAEP/RISC event type URIs).
OutboundEvent = Literal["session-revoked", "account-disabled"]
OUTBOUND_EVENTS: tuple[OutboundEvent, ...] = ("session-revoked", "account-disabled")


class SsfTransmitter(Section):
    """One stream a transmitter (an identity provider) sends SETs on."""

    issuer: Str = Field(description="The transmitter's `iss`, compared exactly")
    audience: Str = Field(description="This receiver's `aud` the stream was created with")
    metadata_url: Str = Field(
        default="",
        description="The transmitter's /.well-known/ssf-configuration (its `jwks_uri`)",
    )
    jwks_uri: Str = Field(default="", description="The JWKS URL, over the metadata's")
    algorithms: Names = Field(
        default_factory=lambda: ["RS256", "ES256"], description="Accepted JWS algorithms"
    )
    push_token: SecretValue | None = Field(
        default=None,
        description="The Authorization header value the transmitter sends on push delivery "
        "(`Bearer <token>`); unset = push refused for this stream",
    )
    poll_url: Str = Field(default="", description="RFC 8936 poll endpoint; set = poll delivery")
    poll_token: SecretValue | None = Field(
        default=None, description="Bearer token accessguard sends to poll_url"
    )
    max_events: Int = Field(default=100, ge=1, description="maxEvents per poll")
    poll_interval: Float = Field(default=5.0, ge=0.1, description="Seconds between idle polls")
    manage_stream: Bool = Field(
        default=False,
        description="Create the stream at the transmitter's configuration_endpoint when "
        "missing and request a verification event at start (SSF 1.0 §8)",
    )
    management_token: SecretValue | None = Field(
        default=None, description="Bearer token for the transmitter's stream management API"
    )
    endpoint_url: Str = Field(
        default="",
        description="accessguard's public push URL for this stream "
        "(https://<accessguard>/ssf/push/<name>), used when creating the stream",
    )
    alias_provider: Str = Field(
        default="",
        description="Registry alias namespace of `iss_sub`/`opaque` subjects (e.g. the "
        "provider name whose user ids the transmitter sends); empty = any alias",
    )

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if a not in ALLOWED_ALGORITHMS]
        if bad or not value:
            raise ValueError(
                f"algorithms: {', '.join(bad) or '(none)'} refused; "
                f"use {', '.join(ALLOWED_ALGORITHMS)}"
            )
        return value


class SsfReceiver(Section):
    """One receiver accessguard pushes its own revocations to (RFC 8935)."""

    url: Str = Field(description="The receiver's push endpoint (https, loopback http)")
    audience: Str = Field(description="`aud` of the SETs sent to it")
    token: SecretValue | None = Field(
        default=None, description="Bearer token sent in Authorization"
    )
    events: list[OutboundEvent] = Field(
        default_factory=lambda: list(OUTBOUND_EVENTS),
        description="Event types sent",
    )


class SsfSettings(Section):
    issuer: Str = _doc(
        "accessguard's own `iss` on the SETs it transmits (its public base URL)", default=""
    )
    signing_key: SecretValue | None = _doc(
        "PEM private key (RSA or EC P-256) accessguard signs its SETs with; its public JWKS is "
        "served at /.well-known/jwks.json (unset = no transmitting)",
        default=None,
    )
    key_id: Str = _doc("`kid` of the signing key in the JWKS", default="accessguard-1")
    max_set_bytes: Int = _doc("Largest accepted SET (413 above)", default=65536, ge=512)
    dedup_ttl_seconds: Int = _doc(
        "How long a received `jti` is remembered (across restarts: the journal)",
        default=604800,
        ge=60,
    )
    max_age_seconds: Int = _doc(
        "A SET whose `iat` is older is refused (stale)", default=604800, ge=60
    )
    clock_skew_seconds: Int = _doc("Tolerated `iat` in the future", default=300, ge=0)
    jwks_refetch_seconds: Float = _doc(
        "Least time between two JWKS fetches for an unknown `kid` (key rotation)",
        default=60.0,
        ge=0,
    )
    jwks_cache_seconds: Float = _doc("How long a fetched JWKS is used", default=3600.0, ge=1)
    #: Not in the configuration table (maps): README "Shared Signals (SSF)".
    transmitters: dict[str, SsfTransmitter] = Field(
        default_factory=dict, description="name -> a stream accessguard receives SETs on"
    )
    receivers: dict[str, SsfReceiver] = Field(
        default_factory=dict, description="name -> a receiver accessguard transmits SETs to"
    )


def secrets_of(settings: SsfSettings) -> list[tuple[str, Secret]]:
    """Every configured Shared Signals secret with its key (for the start-up secret check,
    streams/runtime/secretcheck.py): used wherever the worker serves its ingest doors."""
    found: list[tuple[str, Secret | None]] = [("ssf.signing_key", settings.signing_key)]
    for name, stream in settings.transmitters.items():
        found.append((f"ssf.transmitters.{name}.push_token", stream.push_token))
        found.append((f"ssf.transmitters.{name}.poll_token", stream.poll_token))
        found.append((f"ssf.transmitters.{name}.management_token", stream.management_token))
    for name, receiver in settings.receivers.items():
        found.append((f"ssf.receivers.{name}.token", receiver.token))
    return [(path, secret) for path, secret in found if secret is not None]
