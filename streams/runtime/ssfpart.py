"""Shared Signals in a worker: the receiver (push endpoint and pollers), the transmitter
(an audit-topic consumer) and the well-known URLs, built from ``ssf.*``.

Kept out of :mod:`streams.runtime.worker` (at its size limit): the worker calls
:func:`start_ssf` once, while building its HTTP app, and passes the result to
:func:`streams.runtime.web.build_web_app` as ``extra`` (it mounts the routes). Background
work (pollers, the transmitter) runs as the worker's poller tasks, so the worker's existing
stop (``_poll_stop``, ``_poll_tasks``) ends it too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import orjson
import structlog
from aiohttp import web

from connectors.base.http import HttpClient
from connectors.base.pollers import CheckpointStore
from connectors.ingest.edge import expect_continue
from connectors.ingest.ssf.poller import SsfPoller
from connectors.ingest.ssf.receiver import SsfReceiver, SsfStream
from connectors.ingest.ssf.stream import ensure_stream, request_verification
from connectors.ingest.ssf.transmitter import (
    SetSigner,
    Target,
    Transmitter,
    metadata,
)
from connectors.ingest.ssf.verify import JwksCache, SetVerifier
from streams.bus.bootstrap import fingerprint
from streams.bus.security import aio_consumer
from streams.config.ssf import SsfSettings, SsfTransmitter
from streams.runtime.parts import auth_guard, retry_policy
from streams.support.errors import ConfigError

log = structlog.get_logger(__name__)


def jwks_fetcher(name: str, entry: SsfTransmitter, http: HttpClient) -> Any:
    """A blocking function returning the transmitter's JWKS: ``jwks_uri`` when configured,
    else the ``jwks_uri`` of its SSF configuration metadata (read at each fetch, so a moved
    JWKS is followed too)."""
    provider = f"ssf:{name}"

    def fetch() -> Mapping[str, Any]:
        uri: Any = entry.jwks_uri
        if not uri:
            meta = http.request(provider, "GET", entry.metadata_url, ok=(200,)).json()
            uri = meta.get("jwks_uri") if isinstance(meta, dict) else None
            if not isinstance(uri, str) or not uri:
                raise ValueError("the transmitter's metadata has no jwks_uri")
        document: Mapping[str, Any] = http.request(provider, "GET", uri, ok=(200,)).json()
        return document

    return fetch


def build_streams(settings: SsfSettings, http: HttpClient) -> dict[str, SsfStream]:
    streams: dict[str, SsfStream] = {}
    for name, entry in settings.transmitters.items():
        if not entry.jwks_uri and not entry.metadata_url:
            raise ConfigError(f"ssf.transmitters.{name}", "set metadata_url or jwks_uri")
        if entry.manage_stream and not (entry.metadata_url and entry.endpoint_url):
            raise ConfigError(
                f"ssf.transmitters.{name}.manage_stream", "needs metadata_url and endpoint_url"
            )
        jwks = JwksCache(
            name,
            jwks_fetcher(name, entry, http),
            cache_seconds=settings.jwks_cache_seconds,
            refetch_seconds=settings.jwks_refetch_seconds,
        )
        verifier = SetVerifier(
            name,
            issuer=entry.issuer,
            audience=entry.audience,
            algorithms=list(entry.algorithms),
            jwks=jwks,
            max_age=settings.max_age_seconds,
            skew=settings.clock_skew_seconds,
        )
        streams[name] = SsfStream(name, verifier, entry.push_token, entry.alias_provider)
    return streams


class SsfPart:
    """What :func:`start_ssf` built; :meth:`mount` adds its routes to the worker's app."""

    def __init__(
        self, receiver: SsfReceiver | None, transmitter: Transmitter | None, base_url: str
    ) -> None:
        self.receiver = receiver
        self.transmitter = transmitter
        self.base_url = base_url

    def mount(self, app: web.Application) -> None:
        if self.receiver is not None:
            app.router.add_post(
                "/ssf/push/{transmitter}", self.receiver.handle_push, expect_handler=expect_continue
            )
        if self.transmitter is not None:
            signer = self.transmitter.signer
            jwks, meta = signer.jwks(), metadata(signer, self.base_url)

            async def jwks_view(_request: web.Request) -> web.Response:
                return _json(jwks)

            async def metadata_view(_request: web.Request) -> web.Response:
                return _json(meta)

            app.router.add_get("/.well-known/jwks.json", jwks_view)
            app.router.add_get("/.well-known/ssf-configuration", metadata_view)
        app.router.add_get("/v1/ssf/status", self._status)

    async def _status(self, _request: web.Request) -> web.Response:
        """Per stream: last SET and verification state; per receiver: delivery counts."""
        streams = {
            name: {
                "last_set_at": s.last_set_at,
                "verification_state": s.verified_state,
                "verified": s.expected_state is not None and s.verified_state == s.expected_state,
            }
            for name, s in (self.receiver.streams.items() if self.receiver else ())
        }
        receivers = self.transmitter.status if self.transmitter is not None else {}
        return _json({"transmitters": streams, "receivers": receivers})


def _json(body: Any) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def _audit_consumer(bootstrap: str, topic: str, transmitter: Transmitter) -> Any:
    """A group-less consumer of every partition of the audit topic, each positioned where
    the transmitter's checkpoint says (:attr:`Transmitter.resume`) once the record it
    fingerprinted is found there; else from the partition's beginning
    (:meth:`Transmitter.from_beginning`: a first start, or a log that is not the one
    checkpointed, such as the embedded in-memory broker's after a restart)."""
    consumer = aio_consumer(
        bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=200,
        client_id="accessguard-ssf-transmitter",
    )
    await consumer.start()
    from aiokafka import TopicPartition  # noqa: PLC0415 - as streams.bus.security does

    found = consumer.partitions_for_topic(topic)
    for wait in (0.5, 1, 2, 4, 8):  # the topic is created by the worker or `accessguard topics`
        if found:
            break
        await asyncio.sleep(wait)
        await consumer._client.force_metadata_update()
        found = consumer.partitions_for_topic(topic)
    if not found:
        await consumer.stop()
        raise RuntimeError(f"the audit topic {topic!r} has no partitions: is it created?")
    parts = [TopicPartition(topic, p) for p in sorted(found)]
    consumer.assign(parts)
    for tp in parts:
        saved = transmitter.resume.get(tp.partition)
        if saved is not None and await _finds(consumer, tp, saved[1]):
            consumer.seek(tp, saved[0])
            continue
        if saved is not None:
            log.warning("ssf.audit_log_changed", partition=tp.partition, offset=saved[0])
        transmitter.from_beginning(tp.partition)
        await consumer.seek_to_beginning(tp)
    return consumer


async def _finds(consumer: Any, tp: Any, printed: list[Any]) -> bool:
    """Whether the record at ``printed``'s offset in ``tp`` is the one it fingerprints."""
    consumer.seek(tp, printed[0])
    batch = await consumer.getmany(tp, timeout_ms=5000, max_records=1)
    records = batch.get(tp) or []
    return bool(records) and list(fingerprint(records[0])) == printed


async def _transmit(
    transmitter: Transmitter, bootstrap: str, topic: str, stop: asyncio.Event
) -> None:
    consumer = await _audit_consumer(bootstrap, topic, transmitter)
    try:
        await transmitter.run(consumer, stop)
    finally:
        await consumer.stop()


async def _manage(name: str, entry: SsfTransmitter, stream: SsfStream, http: HttpClient) -> None:
    """Create or find the stream at the transmitter, then request a verification event
    (:mod:`connectors.ingest.ssf.stream`). A failure is logged; SETs are received anyway."""
    provider = f"ssf:{name}"

    def run() -> str:
        meta = http.request(provider, "GET", entry.metadata_url, ok=(200,)).json()
        token = entry.management_token.reveal() if entry.management_token else None
        push = f"Bearer {entry.push_token.reveal()}" if entry.push_token else ""
        created = ensure_stream(
            http, provider, meta, token=token, endpoint_url=entry.endpoint_url,
            push_authorization=push,
        )  # fmt: skip
        stream_id = str(created.get("stream_id") or "")
        return request_verification(http, provider, meta, token=token, stream_id=stream_id)

    try:
        stream.expected_state = await asyncio.to_thread(run)
        log.info("ssf.verification_requested", transmitter=name)
    except Exception as exc:  # noqa: BLE001 - logged: management is a convenience, not a gate
        log.error("ssf.stream_management_failed", transmitter=name, error=str(exc)[:300])


async def start_ssf(
    worker: Any, *, receive: bool = True, transmit: bool = True, singletons: bool = True
) -> SsfPart | None:
    """Build and start Shared Signals for ``worker`` (a :class:`streams.runtime.worker.Services`,
    or the host of ``accessguard connect ssf-transmitter``); None when ``ssf`` configures
    nothing this process runs. ``receive``: the push endpoint of ``ssf.transmitters``;
    ``singletons``: their poll delivery and stream management too, which must run in one
    process only (every replica polling would race for the same events); ``transmit``: the
    transmitter and its well-known URLs (one process only: each would push every SET)."""
    config = worker.config
    settings: SsfSettings = config.settings.ssf
    receive = receive and bool(settings.transmitters)
    transmit = transmit and settings.signing_key is not None
    if not receive and not transmit:
        return None
    receiver: SsfReceiver | None = None
    store = CheckpointStore(config.data_dir / "checkpoints")
    if receive:
        receiver = SsfReceiver(
            build_streams(settings, worker.http),
            publisher=worker.publisher,
            journal=worker.journal,
            topics=worker.topics,
            partitions=int(config["topics.partitions"]),
            registry=lambda: worker.views.registry,
            max_bytes=settings.max_set_bytes,
            dedup_ttl=settings.dedup_ttl_seconds,
            guard=auth_guard(config),
        )
        started = time.monotonic()
        kept = receiver.contract.restore(worker.journal.path, time.time())
        log.info("ssf.seen_restored", remembered=kept, seconds=round(time.monotonic() - started, 3))
        for name, entry in settings.transmitters.items():
            if not singletons:
                if entry.manage_stream or entry.poll_url:
                    log.warning(
                        "ssf.singletons_skipped",
                        transmitter=name,
                        effect="poll delivery and stream management run under `accessguard "
                        "run` only: a worker receives this stream's SETs by push",
                    )
                continue
            if entry.manage_stream:
                manage = _manage(name, entry, receiver.streams[name], worker.http)
                worker._poll_tasks.append(asyncio.create_task(manage, name=f"ssf-stream-{name}"))
            if not entry.poll_url:
                continue
            poller = SsfPoller(
                receiver.streams[name],
                receiver,
                url=entry.poll_url,
                token=entry.poll_token,
                max_events=entry.max_events,
                interval=entry.poll_interval,
                http=worker.http,
                checkpoints=store,
            )
            worker._poll_tasks.append(
                asyncio.create_task(poller.run(worker._poll_stop), name=f"ssf-poll-{name}")
            )
    transmitter: Transmitter | None = None
    if transmit and settings.signing_key is not None:
        try:
            pem = settings.signing_key.reveal()
        except OSError as exc:  # a file: secret not mounted (yet): the secret check logged it
            raise ConfigError("ssf.signing_key", f"cannot be read: {exc.strerror}") from None
        signer = SetSigner(pem, kid=settings.key_id, issuer=settings.issuer)
        targets = [
            Target(name, r.url, r.audience, r.token, frozenset(r.events))
            for name, r in settings.receivers.items()
        ]
        transmitter = Transmitter(
            signer,
            targets,
            http=worker.http,
            policy=retry_policy(config),
            registry=lambda: worker.views.registry,
            checkpoints=store,
        )
        if targets:
            worker._poll_tasks.append(
                asyncio.create_task(
                    _transmit(
                        transmitter, worker.bootstrap, worker.topics.audit, worker._poll_stop
                    ),
                    name="ssf-transmitter",
                )
            )
    return SsfPart(receiver, transmitter, settings.issuer)
