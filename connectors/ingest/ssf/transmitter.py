"""The Shared Signals transmitter: accessguard's own revocations, pushed as signed SETs to the
configured receivers (``ssf.receivers.<name>``), so an application accessguard cannot call
directly still learns that the person is out.

Where it hooks in, and why there: it reads the **audit topic** (an output consumer, like a
SIEM would), not the plan runner. An ``action`` audit record with outcome ``done`` is a
revocation a provider acknowledged: ``revoke_sessions`` becomes CAEP ``session-revoked``,
``disable_account`` RISC ``account-disabled``. The worker's hot path gains nothing, and a slow
or failing receiver can never hold back a revocation (the plans never wait for it).

* **Signed** with ``ssf.signing_key`` (RSA -> RS256, EC P-256 -> ES256; ``kid`` =
  ``ssf.key_id``); the public half is served as a JWKS at ``/.well-known/jwks.json`` and
  described at ``/.well-known/ssf-configuration`` (:func:`metadata`).
* **Idempotent.** A SET's ``jti`` is derived from the action's cause, identity and event
  type: the same revocation audited twice (a redelivery, a restart re-reading the topic, the
  same cause at several providers) carries the same ``jti``, which receivers deduplicate,
  and is sent once per process.
* **Retried** with the one HTTP policy (:func:`connectors.base.http.call_with_retries`:
  timeouts, 429 and 5xx, bounded backoff), then again every :data:`RETRY_INTERVAL` for up to
  :data:`RETRY_FOR` (re-signed, so never stale); the checkpoint never passes a SET still
  waiting, so a restart sends it too. Per receiver: counted in
  ``accessguard_ssf_deliveries_total``, ``accessguard_ssf_receiver_up``, and
  :attr:`Transmitter.status` (served at ``/v1/ssf/status``).
* **Where to resume** is a checkpoint in the data directory: the next audit offset of each
  partition, never past a SET still waiting for its retry, with the fingerprint of the record
  before it. The audit topic has several partitions, read interleaved, so record times are
  not monotonic: nothing is skipped for being older than something already handled (that
  lost a revocation read after a later one from another partition); repeats are absorbed by
  the ``jti``. A partition whose record at the checkpoint is not the one fingerprinted (the
  embedded in-memory broker restarted and the topic was refilled), and every partition on a
  first start, is read from its beginning, skipping records older than
  :data:`FIRST_START_WINDOW` as history.

The subject is the identity's first registry e-mail (``email`` format), else its registry id
(``opaque``): never anything the registry does not already hold.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
import structlog
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from connectors.base.http import HttpClient, RetryPolicy, call_with_retries
from connectors.base.pollers import CheckpointStore
from connectors.ingest.ssf.events import CAEP, RISC
from streams.bus.bootstrap import fingerprint
from streams.model.records import idempotency_key
from streams.model.registry import Registry
from streams.support import metrics
from streams.support.errors import ConfigError, PermanentError, RetryableError

log = structlog.get_logger(__name__)

#: Action kind -> (event type URI, short name).
EVENTS: dict[str, tuple[str, str]] = {
    "revoke_sessions": (CAEP + "session-revoked", "session-revoked"),
    "disable_account": (RISC + "account-disabled", "account-disabled"),
}
#: Without a checkpoint, audit records older than this are history, not news (s).
FIRST_START_WINDOW = 3600.0
CHECKPOINT = "ssf-transmitter"


class SetSigner:
    """accessguard's signing key: signs SETs, publishes its public JWKS."""

    def __init__(self, pem: str, *, kid: str, issuer: str) -> None:
        try:
            key = load_pem_private_key(pem.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError("ssf.signing_key", f"not a PEM private key: {exc}") from None
        if isinstance(key, rsa.RSAPrivateKey):
            self.alg = "RS256"
            public = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        elif isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1":
            self.alg = "ES256"
            public = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        else:
            raise ConfigError("ssf.signing_key", "use an RSA or an EC P-256 private key")
        if not issuer:
            raise ConfigError("ssf.issuer", "set accessguard's public base URL to transmit SETs")
        self._key = key
        self.kid = kid
        self.issuer = issuer
        self.public_jwk: dict[str, Any] = {**public, "kid": kid, "alg": self.alg, "use": "sig"}

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk]}

    def sign(
        self, *, audience: str, jti: str, event: str, payload: Mapping[str, Any],
        sub_id: Mapping[str, Any], iat: float | None = None,
    ) -> str:  # fmt: skip
        claims = {
            "iss": self.issuer,
            "aud": audience,
            "iat": int(time.time() if iat is None else iat),
            "jti": jti,
            "sub_id": dict(sub_id),
            "events": {event: dict(payload)},
        }
        return jwt.encode(
            claims, self._key, algorithm=self.alg, headers={"typ": "secevent+jwt", "kid": self.kid}
        )


def metadata(signer: SetSigner, base_url: str) -> dict[str, Any]:
    """Transmitter configuration metadata (SSF 1.0 §7.1), for ``/.well-known/ssf-configuration``:
    push delivery only, streams configured in accessguard's own configuration."""
    return {
        "spec_version": "1_0",
        "issuer": signer.issuer,
        "jwks_uri": f"{base_url.rstrip('/')}/.well-known/jwks.json",
        "delivery_methods_supported": ["urn:ietf:rfc:8935"],
        "critical_subject_members": [],
        "default_subjects": "ALL",
    }


#: A SET that failed after the HTTP policy's retries is pushed again this often (s) ...
RETRY_INTERVAL = 30.0
#: ... for this long after the revocation (s), then dropped (logged); at most this many wait.
RETRY_FOR = 86400.0
MAX_PENDING = 10_000


@dataclass
class Target:
    """One configured receiver."""

    name: str
    url: str
    audience: str
    token: Any  # Secret | None
    events: frozenset[str]


@dataclass
class _Pending:
    """One SET for one receiver, waiting for a retry."""

    target: Target
    jti: str
    uri: str
    payload: dict[str, Any]
    sub_id: dict[str, str]
    ts: float  # the audit record's
    next_at: float
    #: its partition and fingerprint (offset first), when read from the topic
    at: tuple[int, list[Any]] | None = None


class Transmitter:
    """Audit records in, SETs out. :meth:`handle` is one audit record (tests call it);
    :meth:`run` tails the audit topic."""

    def __init__(
        self,
        signer: SetSigner,
        targets: list[Target],
        *,
        http: HttpClient,
        policy: RetryPolicy,
        registry: Callable[[], Registry],
        checkpoints: CheckpointStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.signer = signer
        self.targets = targets
        self.http = http
        self.policy = policy
        self.registry = registry
        self.checkpoints = checkpoints
        self.clock = clock
        self._sent: set[tuple[str, str]] = set()
        #: SETs that failed after the HTTP policy's retries, by (receiver, jti).
        self._pending: dict[tuple[str, str], _Pending] = {}
        cursor = checkpoints.load(CHECKPOINT) if checkpoints is not None else None
        #: partition -> where to resume: the offset to read next and the fingerprint of a
        #: record to find first (the one before it, or the held one itself), from the
        #: checkpoint; :meth:`run` keeps it as it reads (:meth:`resume_at`)
        self.resume: dict[int, tuple[int, list[Any]]] = {
            int(p): (int(r[0]), list(r[1])) for p, r in ((cursor or {}).get("resume") or {}).items()
        }
        #: audit records from before this are history and not transmitted: those of a
        #: partition read from its beginning (:meth:`from_beginning`); a partition resumed
        #: at its verified checkpoint has none
        self.floors: dict[int, float] = {}
        self.first_start_floor = clock() - FIRST_START_WINDOW
        self.status: dict[str, dict[str, Any]] = {
            t.name: {"delivered": 0, "failed": 0, "last_success": None, "last_error": None}
            for t in targets
        }
        for target in targets:
            metrics.SSF_DELIVERIES.labels(target.name, "delivered")
            metrics.SSF_DELIVERIES.labels(target.name, "failed")

    def _subject(self, identity: str) -> dict[str, str]:
        found = self.registry().identities.get(identity)
        if found is not None and found.emails:
            return {"format": "email", "email": found.emails[0]}
        return {"format": "opaque", "id": identity}

    async def handle(
        self, record: Mapping[str, Any], at: tuple[int, list[Any]] | None = None
    ) -> int:
        """Transmit what one audit record (read from ``at``: its partition and
        :func:`fingerprint`) says, if anything. Returns the SETs delivered."""
        ts = record.get("ts")
        floor = self.first_start_floor if at is None else self.floors.get(at[0], -math.inf)
        if record.get("kind") != "action" or not isinstance(ts, int | float) or ts < floor:
            return 0
        outcome = record.get("outcome")
        found = EVENTS.get(str(record.get("action")))
        identity = record.get("identity")
        if (
            found is None
            or not isinstance(identity, str)
            or not isinstance(outcome, Mapping)
            or outcome.get("status") != "done"
        ):
            return 0
        uri, short = found
        jti = idempotency_key("ssf", str(record.get("cause")), identity, short)
        payload: dict[str, Any] = {"event_timestamp": int(float(ts))}
        if short == "session-revoked":
            payload["initiating_entity"] = "policy"
        payload["reason_admin"] = {"en": f"accessguard: {str(record.get('cause'))[:80]}"}
        delivered = 0
        for target in self.targets:
            if short not in target.events or (target.name, jti) in self._sent:
                continue
            item = _Pending(target, jti, uri, payload, self._subject(identity), float(ts), 0.0, at)
            if await self._send(item):
                delivered += 1
            else:
                self._hold(item)
        return delivered

    async def _send(self, item: _Pending) -> bool:
        """Sign now (a fresh ``iat``: a retried SET is not stale) and push."""
        token = self.signer.sign(
            audience=item.target.audience,
            jti=item.jti,
            event=item.uri,
            payload=item.payload,
            sub_id=item.sub_id,
        )
        if await asyncio.to_thread(self._deliver, item.target, token):
            self._sent.add((item.target.name, item.jti))
            return True
        return False

    def _hold(self, item: _Pending) -> None:
        item.next_at = self.clock() + RETRY_INTERVAL
        self._pending[(item.target.name, item.jti)] = item
        while len(self._pending) > MAX_PENDING:
            dropped = self._pending.pop(next(iter(self._pending)))
            log.error("ssf.transmit_dropped", receiver=dropped.target.name, why="queue full")

    async def retry_due(self) -> int:
        """Push again what failed (every :data:`RETRY_INTERVAL`, for :data:`RETRY_FOR` after
        the revocation). Returns the SETs delivered now."""
        now = self.clock()
        delivered = 0
        for key, item in list(self._pending.items()):
            if item.next_at > now:
                continue
            if now - item.ts > RETRY_FOR:
                del self._pending[key]
                log.error("ssf.transmit_dropped", receiver=item.target.name, why="too old")
            elif await self._send(item):
                del self._pending[key]
                delivered += 1
            else:
                item.next_at = now + RETRY_INTERVAL
        return delivered

    def _deliver(self, target: Target, token: str) -> bool:
        headers = {"Content-Type": "application/secevent+jwt", "Accept": "application/json"}
        if target.token is not None:
            headers["Authorization"] = f"Bearer {target.token.reveal()}"
        provider = f"ssf:{target.name}"
        status = self.status[target.name]
        try:
            call_with_retries(
                lambda: self.http.request(
                    provider, "POST", target.url, headers=headers, data=token, ok=(202, 200)
                ),
                self.policy,
                operation="ssf_push",
            )
        except (RetryableError, PermanentError) as exc:
            metrics.SSF_DELIVERIES.labels(target.name, "failed").inc()
            metrics.SSF_RECEIVER_UP.labels(target.name).set(0)
            status["failed"] += 1
            status["last_error"] = str(exc)[:200]
            log.warning("ssf.delivery_failed", receiver=target.name, error=str(exc)[:200])
            return False
        metrics.SSF_DELIVERIES.labels(target.name, "delivered").inc()
        metrics.SSF_RECEIVER_UP.labels(target.name).set(1)
        status["delivered"] += 1
        status["last_success"] = self.clock()
        return True

    def from_beginning(self, partition: int) -> None:
        """``partition`` is read from its beginning: no checkpoint for it, or its log is not
        the one checkpointed. What is older than the first-start window is history."""
        self.resume.pop(partition, None)
        self.floors[partition] = self.first_start_floor

    def read(self, partition: int, printed: list[Any]) -> None:
        """The record ``printed`` (its :func:`fingerprint`) of ``partition`` was handled:
        resume after it."""
        self.resume[partition] = (printed[0] + 1, printed)

    def resume_at(self) -> dict[int, tuple[int, list[Any]]]:
        """Per partition, where to resume: after the last record read, or at an earlier
        one whose SET still waits for its retry (a restart re-reads it; receivers
        deduplicate what was delivered meanwhile)."""
        resume = dict(self.resume)
        for item in self._pending.values():
            if item.at is not None:
                part, printed = item.at
                if part not in resume or printed[0] < resume[part][0]:
                    resume[part] = (printed[0], printed)
        return resume

    def checkpoint(self) -> None:
        """Save :meth:`resume_at`."""
        if self.checkpoints is not None:
            resume = {str(p): [o, f] for p, (o, f) in sorted(self.resume_at().items())}
            try:
                self.checkpoints.save(CHECKPOINT, {"resume": resume})
            except OSError as exc:  # the next start re-reads a little more: jtis absorb it
                log.warning("ssf.checkpoint_failed", error=str(exc)[:200])

    async def run(self, consumer: Any, stop: asyncio.Event) -> None:
        """Tail the audit topic with a started consumer, assigned and positioned at
        :attr:`resume` (:func:`streams.runtime.ssfpart._audit_consumer`), until ``stop``."""
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500, max_records=500)
            moved = bool(self._pending) and bool(await self.retry_due())
            for tp, records in batch.items():
                for rec in records:
                    printed = list(fingerprint(rec))  # a list: it is saved as JSON
                    try:
                        value = orjson.loads(rec.value or b"null")
                        if isinstance(value, dict):
                            await self.handle(value, (tp.partition, printed))
                    except Exception:  # one bad record never stops the transmitter
                        log.exception("ssf.transmit_crashed", offset=rec.offset)
                    self.read(tp.partition, printed)
                    moved = True
            if moved:
                self.checkpoint()
