"""Provider credentials: fresh auth headers at the point of use.

Every provider and login poller holds one :class:`Credential` (built in
``ConnectorBase.__init__`` / the poller's ``_configure``) and asks it for headers right
before each HTTP call (:meth:`Credential.headers`). Two kinds:

* :class:`StaticToken`: the ``token:`` setting as ever (a
  :class:`~streams.support.secrets.Secret`, re-read at each use, so a rotated ``file:``
  token is picked up), sent as ``<scheme> <token>`` (``SSWS`` for Okta's legacy API
  tokens, ``Bearer`` elsewhere).
* :class:`MintedToken`: a short-lived access token obtained from the vendor's token
  endpoint by a vendor flow (subclasses in ``connectors/<vendor>/credentials.py``: MSAL
  client credentials for Entra, a google-auth service account for Google Workspace,
  ``private_key_jwt`` for Okta). The token is cached and refreshed before it expires: the
  margin is 60 s or 10% of the token's lifetime, whichever is smaller. Thread-safe for the
  executor's pool: one refresh at a time; while it runs, callers whose cached token is still
  valid use it, the others wait for the refresh.

**Failures are visible, never silent.** When minting fails (a wrong secret, a revoked key,
the endpoint down), :class:`MintedToken` raises a typed error naming the connector and a
reason class (:data:`~streams.support.metrics.CREDENTIAL_FAILURE_REASONS`), never a secret:
:class:`~streams.support.errors.AuthError` for a refusal or a bad answer,
:class:`~streams.support.errors.RetryableError` when the endpoint cannot be reached (the
executor's retry policy then applies; an outage of the token endpoint should not turn every
offboarding action into a permanent failure). Each failure logs ``credential_failed
provider=<label> reason=<class>``, increments
``accessguard_provider_credential_failures_total{provider,reason}`` and turns
:meth:`Credential.status` to failing, which the worker's ``credentials`` readiness check
reads (:func:`credentials_ready`). The next success logs ``credential_recovered``.
"""

from __future__ import annotations

import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
import structlog

from connectors.base.http import reveal
from streams.support.errors import AuthError, ConfigError, ProviderError, RetryableError
from streams.support.metrics import CREDENTIAL_FAILURE_REASONS, CREDENTIAL_FAILURES
from streams.support.secrets import Secret

log = structlog.get_logger(__name__)

#: Refresh this long before expiry at most ...
MAX_REFRESH_MARGIN = 60.0
#: ... and at most this share of the token's lifetime (a 5 s test token refreshes at 4.5 s).
REFRESH_MARGIN_SHARE = 0.1
#: Connect and read timeouts of a token request, seconds.
TOKEN_TIMEOUT = (5.0, 15.0)
#: Longest vendor text kept in an error message (after scrubbing secrets out of it).
_DETAIL_LIMIT = 200
_ERROR_CODE_RE = re.compile(r"^[a-z_]{1,64}$")


def refresh_margin(lifetime: float) -> float:
    """How long before expiry a token of ``lifetime`` seconds is refreshed."""
    return max(0.0, min(MAX_REFRESH_MARGIN, REFRESH_MARGIN_SHARE * lifetime))


@dataclass(frozen=True, slots=True)
class CredentialStatus:
    """What readiness and operators see: ``ok``, the failure ``reason`` class and
    ``detail`` (no secret), and the wall-clock times of the last success and failure."""

    ok: bool
    kind: str
    reason: str | None = None
    detail: str | None = None
    last_success: float | None = None
    last_failure: float | None = None


class Credential(ABC):
    """Auth headers for one connector, fresh at each call."""

    kind: str = "credential"

    def __init__(self, label: str) -> None:
        self.label = label
        # every reason's series exists from the start (at 0), so the alert's increase() has
        # data before a first failure and a failure is a change, not a new series
        for reason in CREDENTIAL_FAILURE_REASONS:
            CREDENTIAL_FAILURES.labels(provider=label, reason=reason)

    @abstractmethod
    def headers(self) -> dict[str, str]:
        """The auth headers for the next request (AuthError/RetryableError if none can be had)."""

    @abstractmethod
    def status(self) -> CredentialStatus:
        """ok, or failing with the reason class of the last failure."""

    def rejected(self, headers: Mapping[str, str]) -> bool:
        """The vendor answered 401 to a request sent with ``headers``: forget that token if
        it is the cached one. True when a retry may get another token (a minted token);
        False for a static one (nothing else to send)."""
        return False


class StaticToken(Credential):
    """A configured token (``token:``), sent as ``<scheme> <token>`` (the raw token when the
    scheme is empty). ``header`` and ``scheme`` may be callables read at each use (the
    generic provider reads its scheme after the credential is built)."""

    kind = "static"

    def __init__(
        self,
        secret: Secret,
        label: str,
        *,
        header: str | Callable[[], str] = "Authorization",
        scheme: str | Callable[[], str] = "Bearer",
    ) -> None:
        super().__init__(label)
        self._secret = secret
        self._header = header
        self._scheme = scheme
        self._last_success: float | None = None
        self._failure: tuple[str, float] | None = None

    def headers(self) -> dict[str, str]:
        try:
            token = reveal(self._secret, self.label)
        except AuthError:
            self._failure = ("misconfigured", time.time())
            raise
        self._last_success, self._failure = time.time(), None
        header = self._header() if callable(self._header) else self._header
        scheme = self._scheme() if callable(self._scheme) else self._scheme
        return {header: f"{scheme} {token}" if scheme else token}

    def status(self) -> CredentialStatus:
        if self._failure is not None:
            reason, when = self._failure
            return CredentialStatus(
                False,
                self.kind,
                reason,
                "token is empty or unreadable",
                self._last_success,
                when,
            )
        return CredentialStatus(True, self.kind, last_success=self._last_success)


class CredentialFailure(Exception):
    """Raised by :meth:`MintedToken._mint`: ``reason`` is one of
    :data:`CREDENTIAL_FAILURE_REASONS`; ``detail`` is safe to show (secrets are scrubbed
    again before use)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason if reason in CREDENTIAL_FAILURE_REASONS else "invalid_response"
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Minted:
    """An access token and its lifetime in seconds, as the endpoint stated it."""

    access_token: str
    expires_in: float
    scheme: str = "Bearer"


class MintedToken(Credential):
    """A cached access token minted by :meth:`_mint` and refreshed before it expires.

    Subclasses implement :meth:`_mint` (one token request; raise :class:`CredentialFailure`)
    and :meth:`_secrets` (the secret values to scrub from any text that could reach a log).
    ``clock`` is monotonic seconds (tests may pass their own).
    """

    kind = "minted"

    def __init__(self, label: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(label)
        self._clock = clock
        self._lock = threading.Lock()
        self._token: Minted | None = None
        self._expires_at = 0.0
        self._refresh_at = 0.0
        self._usable_until = 0.0
        self._last_success: float | None = None
        self._failure: tuple[str, str, float] | None = None
        #: Token requests made (successful or not); tests bound it.
        self.mints = 0

    # --- the vendor part ------------------------------------------------------------

    @abstractmethod
    def _mint(self) -> Minted:
        """Request a new access token (ONE attempt)."""

    def _secrets(self) -> Iterable[str]:
        """Secret values that must never appear in a message."""
        return ()

    # --- the shared part ------------------------------------------------------------

    def headers(self) -> dict[str, str]:
        token = self._current()
        return {"Authorization": f"{token.scheme} {token.access_token}"}

    def _fresh(self, now: float) -> Minted | None:
        token = self._token
        return token if token is not None and now < self._refresh_at else None

    def _usable(self, now: float) -> Minted | None:
        """The cached token while another thread refreshes it, if it still has a quarter of
        the refresh margin or more to live: one handed out at its last instant expires on
        the way (the vendor's clock is not ours), so later callers wait for the new one."""
        token = self._token
        return token if token is not None and now < self._usable_until else None

    def _current(self) -> Minted:
        fresh = self._fresh(self._clock())
        if fresh is not None:
            return fresh
        # Due for refresh. While another thread refreshes, a still-valid token is used
        # as is; without one, wait for the refresh (and its result).
        still_valid = self._usable(self._clock())
        if not self._lock.acquire(blocking=still_valid is None):
            assert still_valid is not None
            return still_valid
        try:
            fresh = self._fresh(self._clock())
            if fresh is not None:
                return fresh  # another thread refreshed while we waited
            return self._refresh()
        finally:
            self._lock.release()

    def _refresh(self) -> Minted:
        self.mints += 1
        started = self._clock()
        try:
            minted = self._mint()
        except CredentialFailure as exc:
            raise self._failed(exc.reason, exc.detail) from None
        except ProviderError as exc:
            # A vendor module that used HttpClient (typed errors): unreachable or refused.
            reason = "unreachable" if isinstance(exc, RetryableError) else "rejected"
            raise self._failed(reason, str(exc).removeprefix(f"{exc.provider}: ")) from None
        if not minted.access_token or minted.expires_in <= 0:
            raise self._failed("invalid_response", "token response without a usable token")
        self._token = minted
        self._expires_at = started + minted.expires_in
        margin = refresh_margin(minted.expires_in)
        self._refresh_at = self._expires_at - margin
        self._usable_until = self._expires_at - 0.75 * margin
        if self._failure is not None:
            log.info("credential_recovered", provider=self.label, kind=self.kind)
        self._last_success, self._failure = time.time(), None
        return minted

    def rejected(self, headers: Mapping[str, str]) -> bool:
        with self._lock:
            token = self._token
            if token is not None and headers.get("Authorization") == (
                f"{token.scheme} {token.access_token}"
            ):
                # revoked or expired early at the vendor: mint a new one at the next call
                self._token = None
                self._expires_at = self._refresh_at = self._usable_until = 0.0
        return True

    def _failed(self, reason: str, detail: str) -> ProviderError:
        detail = self.scrub(detail)
        self._failure = (reason, detail, time.time())
        CREDENTIAL_FAILURES.labels(provider=self.label, reason=reason).inc()
        log.error(
            "credential_failed", provider=self.label, kind=self.kind, reason=reason, detail=detail
        )
        message = f"cannot obtain an access token ({reason}): {detail}"
        if reason == "unreachable":
            return RetryableError(self.label, message)
        return AuthError(self.label, message)

    def scrub(self, text: str) -> str:
        """``text`` cut short, with every secret value replaced by ``***``."""
        text = text[: _DETAIL_LIMIT * 4]
        for value in self._secrets():
            for part in _secret_parts(value):
                text = text.replace(part, "***")
        return text[:_DETAIL_LIMIT]

    def status(self) -> CredentialStatus:
        if self._failure is not None:
            reason, detail, when = self._failure
            return CredentialStatus(False, self.kind, reason, detail, self._last_success, when)
        return CredentialStatus(True, self.kind, last_success=self._last_success)


def _secret_parts(value: str) -> list[str]:
    """The value and each of its lines long enough to matter (a PEM's body lines)."""
    parts = [value.strip()] + [line.strip() for line in value.splitlines()]
    return [p for p in parts if len(p) >= 8 and not p.startswith("-----")]


# --- OAuth token responses (RFC 6749 section 5) ---------------------------------------


def oauth_failure(response: requests.Response) -> CredentialFailure:
    """The reason class of a refused token request: the RFC 6749 ``error`` code when the
    body is an OAuth error (``invalid_client``, ``invalid_grant``, ...), else by status."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    description = body.get("error_description") if isinstance(body, dict) else None
    code = error if isinstance(error, str) and _ERROR_CODE_RE.fullmatch(error) else None
    text = f"HTTP {response.status_code}"
    if code:
        text += f" {code}"
    if isinstance(description, str) and description:
        text += f": {description}"
    if code in CREDENTIAL_FAILURE_REASONS:
        return CredentialFailure(code, text)
    if response.status_code in (401, 403) or code:
        return CredentialFailure("rejected", text)
    if response.status_code == 429 or response.status_code >= 500:
        return CredentialFailure("unreachable", text)
    return CredentialFailure("invalid_response", text)


def oauth_token(response: requests.Response) -> Minted:
    """The access token of a successful token response (``access_token``, ``expires_in``)."""
    try:
        body = response.json()
    except ValueError:
        raise CredentialFailure("invalid_response", "token response is not JSON") from None
    if not isinstance(body, dict):
        raise CredentialFailure("invalid_response", "token response is not a JSON object")
    token = body.get("access_token")
    expires_in = body.get("expires_in")
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)
    if not isinstance(token, str) or not token:
        raise CredentialFailure("invalid_response", "token response has no access_token")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in <= 0:
        raise CredentialFailure("invalid_response", "token response has no positive expires_in")
    token_type = body.get("token_type")
    if isinstance(token_type, str) and token_type.lower() not in ("bearer", ""):
        raise CredentialFailure("invalid_response", f"unexpected token_type {token_type[:20]!r}")
    return Minted(token, float(expires_in))


def post_token_request(
    session: requests.Session, url: str, data: Mapping[str, str]
) -> requests.Response:
    """ONE form POST to a token endpoint; CredentialFailure('unreachable') on a network
    error (the URL is not echoed beyond its host: it names no secret, but keep it short)."""
    try:
        return session.post(
            url,
            data=dict(data),
            headers={"Accept": "application/json"},
            timeout=TOKEN_TIMEOUT,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        raise CredentialFailure(
            "unreachable", f"token endpoint unreachable ({type(exc).__name__})"
        ) from None


# --- readiness ------------------------------------------------------------------------


def credential_of(connector: Any) -> Credential | None:
    """The credential a provider or poller holds (None: none, e.g. a dry run)."""
    credential = getattr(connector, "credentials", None)
    return credential if isinstance(credential, Credential) else None


def credentials_ready(connectors: Iterable[Any]) -> bool:
    """False while any connector's credential is failing (the ``credentials`` check)."""
    for connector in connectors:
        credential = credential_of(connector)
        if credential is not None and not credential.status().ok:
            return False
    return True


# --- settings ---------------------------------------------------------------------------


def one_auth_method(
    given: Mapping[str, bool], *, dry_run: bool, hint: str
) -> list[tuple[str, str]]:
    """(key, reason) problems unless exactly one auth method is configured (none is fine in
    a dry run). ``given`` maps each method's leading key to whether it was set."""
    chosen = [key for key, present in given.items() if present]
    if len(chosen) > 1:
        return [(chosen[1], f"set only one of {', '.join(given)} ({hint})")]
    if not chosen and not dry_run:
        return [(next(iter(given)), f"required: set one of {', '.join(given)} ({hint})")]
    return []


def require(settings: Mapping[str, Any], key: str, config_key: str) -> Any:
    """A setting the chosen auth method needs (ConfigError naming it when absent)."""
    value = settings.get(key)
    if value is None or value == "" or (isinstance(value, Secret) and not value):
        raise ConfigError(config_key, "required by the configured authentication method")
    return value


def reveal_setting(secret: Secret, label: str) -> str:
    """A secret setting's value for minting; an empty or unreadable one is a failure."""
    try:
        return reveal(secret, label)
    except AuthError:
        raise CredentialFailure(
            "misconfigured", "a credential setting is empty or unreadable"
        ) from None
