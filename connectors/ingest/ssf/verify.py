"""Verifying a Security Event Token (RFC 8417) from a configured transmitter.

A SET is a JWS-signed JWT. It is accepted only when all of these hold:

* its header names an allow-listed asymmetric algorithm (``ssf.transmitters.<n>.algorithms``;
  never ``none``, never ``HS*``: a JWKS holds public keys only) and, when it says a ``typ``,
  ``secevent+jwt``;
* its ``kid`` is a key of the transmitter's JWKS (fetched from ``jwks_uri`` or from the
  ``jwks_uri`` of the transmitter's ``/.well-known/ssf-configuration``, cached for
  ``ssf.jwks_cache_seconds``). An unknown ``kid`` refetches the JWKS, at most once per
  ``ssf.jwks_refetch_seconds``, so a transmitter that rotated its key is followed without a
  restart and a flood of made-up kids costs one fetch a minute, not one per SET;
* the signature verifies with that key (PyJWT);
* ``iss`` is the configured issuer, ``aud`` names the configured audience, ``iat`` is neither
  in the future (beyond the skew) nor older than ``ssf.max_age_seconds``, ``jti`` is present,
  and ``events`` is a non-empty object (``exp``, when present, is checked too).

PyJWT rather than joserfc: it is already a dependency (the Okta client assertion), its
``decode`` takes the algorithm allow-list and the issuer/audience checks as arguments, and
:class:`jwt.PyJWK` reads each JWK of a set without a second key model. Its own
``PyJWKClient`` is not used: it fetches with urllib (outside the one HTTP policy, no metrics)
and refetches on every unknown kid without a rate limit.

Failures raise :class:`SetRefused` with the RFC 8935 §2.3 error code (``err``) the push
endpoint answers and a bounded metric reason.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
import structlog

from streams.config.ssf import ALLOWED_ALGORITHMS
from streams.support import metrics

log = structlog.get_logger(__name__)

#: ``typ`` of a SET (RFC 8417 §2.3), with and without the ``application/`` prefix.
SET_TYPES = frozenset({"secevent+jwt", "application/secevent+jwt"})


class SetRefused(Exception):
    """A SET not accepted: ``err`` is the RFC 8935 error code, ``metric`` the counter's
    reason (``accessguard_ssf_sets_refused_total``)."""

    def __init__(
        self, err: str, description: str, metric: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(description)
        self.err = err
        self.description = description
        self.metric = metric
        #: Set when the SET may verify later (an unknown kid while a JWKS refetch is held back
        #: by the rate limit): push answers 503 with Retry-After, poll leaves it unacked.
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class VerifiedSet:
    """The claims of a SET that passed every check."""

    jti: str
    iss: str
    iat: float
    events: Mapping[str, Any]
    claims: Mapping[str, Any]


class JwksCache:
    """A transmitter's public keys by ``kid``. ``fetch`` returns the JWKS document (blocking:
    call from a thread); failures of a refetch keep the keys already known."""

    def __init__(
        self,
        name: str,
        fetch: Callable[[], Mapping[str, Any]],
        *,
        cache_seconds: float = 3600.0,
        refetch_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._fetch = fetch
        self.cache_seconds = cache_seconds
        self.refetch_seconds = refetch_seconds
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()
        self.fetches = 0

    def _load(self) -> None:
        self.fetches += 1
        self._fetched_at = self._clock()
        try:
            document = self._fetch()
            keys = document.get("keys") if isinstance(document, Mapping) else None
            if not isinstance(keys, list):
                raise TypeError("the JWKS has no `keys` list")
        except Exception as exc:  # noqa: BLE001 - any fetch or parse failure keeps the old keys
            metrics.SSF_JWKS_FETCHES.labels(self.name, "failed").inc()
            log.warning("ssf.jwks_fetch_failed", transmitter=self.name, error=str(exc)[:200])
            return
        found: dict[str, jwt.PyJWK] = {}
        for raw in keys:
            if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(raw)
            except jwt.PyJWTError:
                continue  # a key type this build cannot read: skip it, keep the rest
            found[str(raw.get("kid", ""))] = key
        self._keys = found
        metrics.SSF_JWKS_FETCHES.labels(self.name, "ok").inc()
        log.info("ssf.jwks_fetched", transmitter=self.name, keys=len(found))

    def key(self, kid: str) -> jwt.PyJWK | None:
        """The key ``kid`` names: from the cache, after a refetch when the cache is old, or
        after a rate-limited refetch when the kid is unknown (the transmitter rotated)."""
        with self._lock:
            now = self._clock()
            if (
                self._fetched_at is None
                or now - self._fetched_at > self.cache_seconds
                or (kid not in self._keys and now - self._fetched_at >= self.refetch_seconds)
            ):
                self._load()
            return self._keys.get(kid)

    def refetch_in(self) -> float:
        """Seconds until an unknown kid may refetch the JWKS again (0: now)."""
        if self._fetched_at is None:
            return 0.0
        return max(0.0, self._fetched_at + self.refetch_seconds - self._clock())


class SetVerifier:
    """The checks of one stream (one transmitter). Blocking (a JWKS fetch): call from a
    thread."""

    def __init__(
        self,
        name: str,
        *,
        issuer: str,
        audience: str,
        algorithms: list[str],
        jwks: JwksCache,
        max_age: float,
        skew: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.issuer = issuer
        self.audience = audience
        # Asymmetric ones only, whatever the caller passed (the configuration refuses others).
        self.algorithms = [a for a in algorithms if a in ALLOWED_ALGORITHMS]
        self.jwks = jwks
        self.max_age = max_age
        self.skew = skew
        self._clock = clock

    def verify(self, token: str) -> VerifiedSet:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise SetRefused("invalid_request", f"not a JWS: {exc}", "invalid_request") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise SetRefused(
                "invalid_request",
                f"alg {str(alg)[:20]!r} is not accepted for this stream",
                "invalid_request",
            )
        typ = header.get("typ")
        if typ is not None and str(typ).lower() not in SET_TYPES:
            raise SetRefused("invalid_request", "typ must be secevent+jwt", "invalid_request")
        kid = str(header.get("kid", ""))
        key = self.jwks.key(kid)
        if key is None:
            # Just after a fetch the rate limit holds the next one back: the transmitter may
            # have rotated since, so "retry later" rather than a final 400 it would not resend.
            wait = self.jwks.refetch_in()
            raise SetRefused(
                "invalid_key",
                "the kid is not a key of the transmitter's JWKS",
                "invalid_key",
                retry_after=wait if wait > 0 else None,
            )
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[str(alg)],
                options={"require": ["iss", "iat", "jti", "aud"], "verify_aud": False},
                leeway=self.skew,
            )
        except jwt.InvalidSignatureError:
            raise SetRefused(
                "invalid_key", "signature does not verify", "invalid_signature"
            ) from None
        except jwt.PyJWTError as exc:
            raise SetRefused("invalid_request", str(exc)[:200], "invalid_request") from None
        if claims.get("iss") != self.issuer:
            raise SetRefused("invalid_issuer", "iss is not this stream's issuer", "invalid_issuer")
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if self.audience not in audiences:
            raise SetRefused(
                "invalid_audience", "aud does not name this receiver", "invalid_audience"
            )
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            raise SetRefused("invalid_request", "iat must be a number", "invalid_request")
        now = self._clock()
        if iat > now + self.skew or now - iat > self.max_age:
            raise SetRefused("invalid_request", "iat outside the accepted window", "stale")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > 256:
            raise SetRefused("invalid_request", "jti must be a string", "invalid_request")
        events = claims.get("events")
        if not isinstance(events, dict) or not events:
            raise SetRefused(
                "invalid_request", "events must be a non-empty object", "invalid_request"
            )
        return VerifiedSet(
            jti=jti, iss=str(claims["iss"]), iat=float(iat), events=events, claims=claims
        )
