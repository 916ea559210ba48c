"""``accessguard connect ssf-transmitter``: the Shared Signals transmitter on its own.

Why a process of its own: the transmitter pushes a SET for each revocation on the audit
topic, and every process running it pushes every SET. Its ``jti`` is derived from the
revocation, so a compliant receiver (RFC 8935 deduplicates by ``jti``) would drop the copies,
but N worker replicas would still push N copies, count N deliveries and keep N checkpoints.
Run once (a one-replica StatefulSet in deploy/k8s: at most one pod at a time, and its
checkpoint on a volume that outlives the pod), it pushes each SET once; while it is down
nothing is lost (the checkpoint resumes where it stopped, within ``RETRY_FOR``).

It is also what serves the transmitter's key: ``/.well-known/jwks.json`` and
``/.well-known/ssf-configuration`` (the signing key is mounted here and nowhere else), with
``/v1/ssf/status`` (per-receiver delivery counts), ``/metrics``, ``/healthz`` and
``/readyz``. It reads the audit topic and follows the registry (a SET's subject is the
identity's registry e-mail); it writes nothing to Kafka.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from connectors.base.http import HttpClient
from streams.bus.topics import Topics
from streams.bus.views import Views
from streams.config import Config
from streams.runtime.parts import retry_policy
from streams.runtime.secretcheck import SecretWatch
from streams.runtime.ssfpart import start_ssf
from streams.runtime.web import WebServer, build_web_app
from streams.support.errors import ConfigError


@dataclass
class TransmitterHost:
    """What :func:`streams.runtime.ssfpart.start_ssf` needs of its process, transmit-only."""

    config: Config
    bootstrap: str
    secrets: SecretWatch
    topics: Topics = field(init=False)
    http: HttpClient = field(init=False)
    views: Views = field(init=False)
    _poll_stop: asyncio.Event = field(default_factory=asyncio.Event)
    _poll_tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.topics = Topics.from_config(self.config)
        self.http = HttpClient(retry_policy(self.config))
        self.views = Views(
            self.bootstrap,
            registry_topic=self.topics.registry,
            lifecycle_topic=None,
            ledger_topic=None,
            writer_id=b"accessguard-ssf-transmitter",
        )

    def readiness(self) -> dict[str, bool]:
        return {
            "views_caught_up": self.views.ready.is_set(),
            "views_tailing": self.views.tailing,
            # the push task (none without receivers) has not ended
            "transmitting": not any(t.done() for t in self._poll_tasks),
            "secrets": self.secrets.ready(),
        }


def require_signing_key(config: Config) -> None:
    """ConfigError without ``ssf.signing_key`` (checked before the broker is waited for).
    Receivers are optional: without them it serves its JWKS and pushes nothing."""
    if config.settings.ssf.signing_key is None:
        raise ConfigError(
            "ssf.signing_key", "`connect ssf-transmitter` signs with it: set it (file:/path)"
        )


async def serve(host: TransmitterHost, stop: asyncio.Event, echo: Any) -> None:
    """Follow the registry, start the transmitter, serve its URLs until ``stop``."""
    config = host.config
    await host.views.start()
    try:
        part = await start_ssf(host, receive=False, transmit=True, singletons=False)
        server = WebServer(
            build_web_app(
                hr=None,
                readiness=host.readiness,
                max_body=config.settings.http.max_body_bytes,
                extra=part,
            ),
            config["http.host"],
            config.settings.http.port,
        )
        await server.start()
        echo(f"ssf-transmitter serving {server.url}/.well-known/jwks.json")
        await stop.wait()
        host._poll_stop.set()
        if host._poll_tasks:
            await asyncio.wait(host._poll_tasks, timeout=10)
        await server.stop()
    finally:
        await host.views.stop()
