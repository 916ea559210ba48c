"""The one HTTP policy every provider and alert sink uses.

One attempt per :meth:`HttpClient.request`: explicit connect and read timeouts, TLS always
verified, and every outcome mapped to the typed errors of :mod:`streams.support.errors`:

* timeouts, connection failures, 429 and 5xx  -> :class:`RetryableError` (with ``retry_after``)
* 401 and 403                                 -> :class:`AuthError`
* any other 4xx                               -> :class:`PermanentError`

Retrying belongs to the caller (the async executor owns its loop); :func:`call_with_retries`
is the synchronous equivalent for CLI tools and tests. Error messages carry the status and a
truncated body but never the URL or request headers: a Slack webhook URL and every
``Authorization`` header are secrets.

This module also holds the small settings helpers shared by every connector, so that each
connector module stays one class and validates its settings the same way.
"""

from __future__ import annotations

import email.utils
import ipaddress
import math
import random
import re
import string
import time
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

import requests
import structlog
from requests.adapters import HTTPAdapter

from connectors.base.ratelimit import INLINE_WAIT, RateLimits
from streams.support.errors import (
    AuthError,
    ConfigError,
    PermanentError,
    ProviderError,
    RateLimitedError,
    RetryableError,
)
from streams.support.secrets import Secret

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: A server may ask for a long pause, but a revocation that waits an hour is a failed
#: revocation: beyond this the executor's slow retry lane takes over.
MAX_RETRY_AFTER = 300.0
#: Error bodies are for humans reading logs; vendors sometimes return whole HTML pages.
MAX_BODY_IN_ERROR = 300
#: Sized for the executor's thread pool so that threads never queue for a connection.
DEFAULT_POOL_SIZE = 32
USER_AGENT = "accessguard/0.1"
#: Origins whose environment settings :class:`HttpClient` keeps (a client talks to a few).
MAX_ORIGINS = 256


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """requests' auth hook that changes nothing (see :meth:`HttpClient.request`)."""
    return request


OK_2XX: Container[int] = range(200, 300)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Timeouts and backoff for provider calls.

    ``jitter`` is a fraction of the delay (0.2 spreads each delay over +-20 %) so that many
    workers retrying after one outage do not hit the vendor in lock-step.
    ``slow_retry_interval`` is how often the executor re-tries an action that exhausted
    ``max_attempts`` on retryable errors, instead of giving it up.
    """

    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 10.0
    jitter: float = 0.2
    connect_timeout: float = 3.05
    read_timeout: float = 10.0
    slow_retry_interval: float = 60.0
    max_retry_after: float = MAX_RETRY_AFTER

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)


def backoff_delay(attempt: int, policy: RetryPolicy, retry_after: float | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    Without ``retry_after``: ``base_delay * 2**(attempt-1)``, jittered by +-``jitter`` and
    capped at ``max_delay``. With ``retry_after``: at least what the server asked (it knows
    its own rate window better than we do), jittered upwards only, capped at
    ``max_retry_after``.
    """
    attempt = max(1, attempt)
    if retry_after is not None:
        wanted = min(max(0.0, retry_after), policy.max_retry_after)
        return min(wanted * (1.0 + random.uniform(0.0, policy.jitter)), policy.max_retry_after)
    # Cap the exponent: 2**1000 overflows a float long before max_delay would bound it.
    raw = policy.base_delay * (2.0 ** min(attempt - 1, 32))
    delay = min(raw, policy.max_delay)
    delay *= 1.0 + random.uniform(-policy.jitter, policy.jitter)
    return max(0.0, min(delay, policy.max_delay))


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Parse a ``Retry-After`` header (delta-seconds or HTTP-date) into seconds, or None."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        # NaN and infinity parse as floats but mean nothing as a wait.
        if not math.isfinite(seconds):
            return None
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def _body_excerpt(response: requests.Response) -> str:
    try:
        text = response.text
    except (UnicodeDecodeError, LookupError):
        return "<undecodable body>"
    text = " ".join(text.split())
    if len(text) > MAX_BODY_IN_ERROR:
        return text[:MAX_BODY_IN_ERROR] + "..."
    return text


def error_for_response(provider: str, response: requests.Response) -> ProviderError:
    """The typed error for a non-OK response (the default mapping of the HTTP policy)."""
    status = response.status_code
    body = _body_excerpt(response)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status == 429:
        return RateLimitedError(
            provider,
            f"HTTP 429 rate limited: {body}",
            status=status,
            retry_after=retry_after,
        )
    if status >= 500:
        return RetryableError(
            provider, f"HTTP {status} server error: {body}", status=status, retry_after=retry_after
        )
    if status in (401, 403):
        return AuthError(
            provider,
            f"HTTP {status}: credential rejected or lacks a scope; rotate or re-scope it: {body}",
            status=status,
        )
    if 400 <= status < 500:
        return PermanentError(provider, f"HTTP {status}: {body}", status=status)
    # 1xx/3xx: redirects are followed by requests, so reaching here means an unexpected
    # answer (a redirect loop cut short, or a status the caller did not list as OK).
    return PermanentError(provider, f"HTTP {status} unexpected: {body}", status=status)


#: Hook that may classify a non-OK response before the default mapping (Google's 403
#: rate limits); returning None falls through to :func:`error_for_response`.
Classifier = Callable[[str, requests.Response], ProviderError | None]


# --- path shape ------------------------------------------------------------------------

_FORMATTER = string.Formatter()
_DOT_SEGMENTS = frozenset({".", ".."})


def _decoded(segment: str) -> str:
    """``segment`` percent-decoded until it stops changing (bounded): ``%252e`` is a dot to
    a server that decodes twice."""
    for _ in range(4):
        decoded = unquote(segment)
        if decoded == segment:
            break
        segment = decoded
    return segment


def is_dot_segment(segment: str) -> bool:
    """``.`` or ``..``, also percent-encoded (``%2e%2E``): a path segment that URL
    normalisation (ours, a proxy's or the vendor's) turns into "this" or "the parent"."""
    return segment in _DOT_SEGMENTS or _decoded(segment) in _DOT_SEGMENTS


def base_path(base_url: str) -> str:
    """The base URL's own path (``https://h/api`` -> ``/api``), brace-escaped so that it can
    prefix a path template."""
    path = urlsplit(base_url).path.rstrip("/")
    return path.replace("{", "{{").replace("}", "}}")


def _segment_pattern(segment: str) -> tuple[re.Pattern[str], bool]:
    """A regex for one template segment (literals decoded, each field ``.+``) and whether
    the segment holds a field."""
    pattern: list[str] = []
    has_field = False
    for literal, field_name, _, _ in _FORMATTER.parse(segment):
        pattern.append(re.escape(unquote(literal)))
        if field_name is not None:
            pattern.append("(.+)")
            has_field = True
    return re.compile("".join(pattern), re.DOTALL), has_field


def check_path_shape(
    provider: str, method: str, url: str | None, template: str, prefix: str = ""
) -> None:
    """Refuse (PermanentError) a URL whose path does not have the shape of ``prefix +
    template``: the same number of segments, literal segments identical, and each segment
    that holds a field non-empty and not a dot segment (also after percent-decoding).

    ``url`` is the prepared URL, as it will be sent. The message names the template, never
    the URL (URLs can be secrets).
    """
    full = prefix + template
    # The template's query and fragment are not checked: values there cannot move the path.
    expected = full.split("?", 1)[0].split("#", 1)[0].split("/")
    try:
        actual = urlsplit(url or "").path.split("/")
    except ValueError:
        actual = []
    if len(actual) == len(expected):
        for want, got in zip(expected, actual, strict=True):
            try:
                pattern, has_field = _segment_pattern(want)
            except ValueError:
                raise PermanentError(
                    provider, f"{method} {template}: invalid path template"
                ) from None
            if pattern.fullmatch(unquote(got)) is None or (has_field and is_dot_segment(got)):
                break
        else:
            return
    raise PermanentError(
        provider,
        f"{method} {template} refused before sending: the request path does not have the "
        "template's shape (a value is empty, a dot segment, or left its segment); "
        "fix the registry entry",
    )


class HttpClient:
    """A pooled ``requests.Session`` with the accessguard HTTP policy.

    Thread-safe for the executor's pool: a ``requests.Session`` is shared across threads
    in the usual way, and its adapter's pool is sized so threads do not wait for sockets.
    """

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        session: requests.Session | None = None,
        limits: RateLimits | None = None,
    ) -> None:
        self.policy = policy or RetryPolicy()
        #: The vendors' rate-limit windows, per provider and endpoint (shared by threads).
        self.limits = limits or RateLimits()
        self._session = session or requests.Session()
        # max_retries=0: retries are ours (typed, logged, counted); urllib3's own would
        # silently multiply attempts and skip POSTs anyway.
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._session.headers["User-Agent"] = USER_AGENT
        #: The environment's proxy and CA-bundle settings per origin (scheme://host:port):
        #: requests reads them from the environment for every request (a stat of ~/.netrc, the
        #: proxy variables, the bundle path), about a tenth of a burst's CPU per call. The
        #: environment of a running worker does not change, so once per origin is enough.
        self._env: dict[str, dict[str, Any]] = {}

    def _environment(self, url: str) -> dict[str, Any]:
        """``send``'s keyword arguments from the environment (proxies, CA bundle) for
        ``url``'s origin, merged as ``Session.request`` merges them, once per origin."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        settings = self._env.get(origin)
        if settings is None:
            settings = dict(self._session.merge_environment_settings(url, {}, None, True, None))
            if len(self._env) < MAX_ORIGINS:
                self._env[origin] = settings
        return {**settings, "proxies": dict(settings["proxies"] or {})}

    def request(
        self,
        provider: str,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        data: bytes | str | None = None,
        ok: Container[int] = OK_2XX,
        classify: Classifier | None = None,
        path_template: str | None = None,
        path_prefix: str = "",
        rate_bucket: str | None = None,
    ) -> requests.Response:
        """Make ONE attempt; return the response when its status is in ``ok``.

        Raises RetryableError, AuthError or PermanentError otherwise. Exceptions are raised
        ``from None``: the chained requests exception would print the URL.

        ``path_template`` (``"/api/v1/users/{user_ref}/sessions"``, under ``path_prefix``,
        the base URL's own path, see :func:`base_path`) makes the request refuse to go out
        with PermanentError unless its prepared path has the template's shape (see
        :func:`check_path_shape`): a value that climbed out of its segment never reaches
        another endpoint, where a 2xx would pass for success.

        ``rate_bucket`` (``"<METHOD> <path template>"``) puts the call under the client-side
        rate limit of that endpoint (:mod:`connectors.base.ratelimit`): a call the vendor's
        window does not allow yet is not sent but raises :class:`RateLimitedError` with the
        wait (``status`` None), and a refusal holds the bucket for the vendor's time or a
        jittered backoff (set as the error's ``retry_after``).
        """
        started = time.monotonic()
        try:
            # Prepared first (as Session.request does) so the path is checked exactly as it
            # will go out: requests/urllib3 remove dot segments while preparing the URL.
            prepared = self._session.prepare_request(
                requests.Request(
                    method=method.upper(),
                    url=url,
                    headers=dict(headers or {}),
                    json=json,
                    params=dict(params) if params is not None else {},
                    data=data or {},
                    # Never ~/.netrc: its Basic credentials would replace the Authorization
                    # header the connector set (requests applies netrc to any request
                    # without ``auth``). A no-op auth also skips the lookup.
                    auth=_no_auth,
                )
            )
            if path_template is not None:
                check_path_shape(provider, method, prepared.url, path_template, path_prefix)
            if rate_bucket is not None:
                wait = self.limits.reserve_slot(provider, rate_bucket)
                if 0 < wait <= INLINE_WAIT:
                    time.sleep(wait)  # a booked slot: waiting here saves a trip through the pool
                    # a refusal meanwhile holds the bucket: the slot booked before it is void
                    wait = self.limits.held(provider, rate_bucket)
                if wait > 0:
                    raise RateLimitedError(
                        provider,
                        f"{method} held by the client-side rate limit for {wait:.2f}s",
                        retry_after=wait,
                    )
            settings = self._environment(prepared.url or url)
            sent_at = self.limits.clock()
            response = self._session.send(
                prepared, timeout=self.policy.timeout, allow_redirects=True, **settings
            )
        except requests.exceptions.SSLError:
            # A bad certificate will not fix itself in a few seconds, and retrying hides it.
            raise PermanentError(
                provider, f"{method} TLS verification failed; fix the endpoint's certificate"
            ) from None
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise RetryableError(provider, f"{method} {type(exc).__name__}") from None
        except requests.RequestException as exc:
            # Invalid URL, bad schema and the like: configuration, not weather.
            raise PermanentError(
                provider, f"{method} request could not be built: {type(exc).__name__}"
            ) from None
        elapsed_ms = round((time.monotonic() - started) * 1000, 1)
        status = response.status_code
        error = None
        if status not in ok and classify is not None:
            error = classify(provider, response)
        if rate_bucket is not None:
            self.limits.observe(
                provider,
                rate_bucket,
                status,
                response.headers,
                refusal=isinstance(error, RateLimitedError) or status == 429,
            )
        if status in ok:
            log.debug("http_call", provider=provider, method=method, status=status, ms=elapsed_ms)
            return response
        if error is None:
            error = error_for_response(provider, response)
        if rate_bucket is not None and isinstance(error, RateLimitedError):
            error.retry_after = self.limits.refused(
                provider, rate_bucket, error.retry_after, sent_at
            )
        log.info(
            "http_call_failed",
            provider=provider,
            method=method,
            status=status,
            ms=elapsed_ms,
            retryable=isinstance(error, RetryableError),
        )
        raise error

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, RetryableError, float], None] | None = None,
    operation: str = "call",
) -> T:
    """Run ``fn`` and retry it on :class:`RetryableError` only, up to ``max_attempts``.

    ``on_retry(attempt, error, delay)`` is called before each sleep (for metrics).
    Permanent errors propagate at once: retrying a 4xx only repeats the mistake.
    ``fn`` may run more than once, so it must be idempotent.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except RetryableError as exc:
            if attempt >= policy.max_attempts:
                log.warning(
                    "retry_give_up",
                    operation=operation,
                    provider=exc.provider,
                    attempts=attempt,
                    status=exc.status,
                    error=str(exc),
                )
                raise
            delay = backoff_delay(attempt, policy, exc.retry_after)
            log.info(
                "retry_scheduled",
                operation=operation,
                provider=exc.provider,
                attempt=attempt,
                status=exc.status,
                delay_s=round(delay, 3),
            )
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            sleep(delay)


# --- settings helpers shared by the connectors ------------------------------------------

_LOOPBACK_NAMES = frozenset({"localhost"})


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def setting_url(
    settings: Mapping[str, Any], key: str, config_key: str, default: str | None = None
) -> str:
    """A validated base URL without trailing slash.

    Plain http is accepted only for loopback hosts (local fakes and sidecars): tokens must
    not cross a network in clear text.
    """
    raw = settings.get(key, default)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise ConfigError(
            config_key, "required: the provider's base URL, e.g. https://example.okta.com"
        )
    if not isinstance(raw, str):
        raise ConfigError(config_key, "must be a URL string")
    return validate_url(raw, config_key).rstrip("/")


def validate_url(raw: str, config_key: str, *, allow_query: bool = False) -> str:
    """Check an absolute URL; the message never repeats it (a webhook URL is a secret)."""
    url = raw.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(config_key, "must be an absolute https:// URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(config_key, "must use https:// (plain http only for loopback hosts)")
    if (parts.query and not allow_query) or parts.fragment:
        raise ConfigError(config_key, "must not carry a query string or fragment")
    return url


def setting_secret(
    settings: Mapping[str, Any], key: str, config_key: str, *, required: bool
) -> Secret | None:
    """A secret setting; a plain string is parsed like the config file does (``file:``/``env:``)."""
    raw = settings.get(key)
    if raw is None or raw == "":
        if required:
            raise ConfigError(config_key, "required: set it via env:NAME or file:/path")
        return None
    if isinstance(raw, Secret):
        if required and not raw:
            raise ConfigError(config_key, "is empty")
        return raw
    if isinstance(raw, str):
        return Secret.parse(raw)
    raise ConfigError(config_key, "must be a secret (string, env:NAME or file:/path)")


def setting_bool(
    settings: Mapping[str, Any], key: str, config_key: str, default: bool = False
) -> bool:
    raw = settings.get(key, default)
    if not isinstance(raw, bool):
        raise ConfigError(config_key, "must be true or false")
    return raw


def setting_str(settings: Mapping[str, Any], key: str, config_key: str, default: str) -> str:
    raw = settings.get(key, default)
    if not isinstance(raw, str):
        raise ConfigError(config_key, "must be a string")
    return raw


def path_part(value: Any, provider: str, name: str) -> str:
    """URL-encode one path segment; a missing value is a permanent error naming the param.

    ``safe=""`` encodes ``/`` too and dot segments are refused, so an id can never climb
    to another endpoint.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        raise PermanentError(provider, f"action.params.{name} is missing; fix the registry entry")
    if not isinstance(value, str | int):
        raise PermanentError(provider, f"action.params.{name} must be a string")
    if isinstance(value, str) and is_dot_segment(value.strip()):
        # quote() leaves "." alone, and "/users/../sessions" would become "/sessions".
        raise PermanentError(
            provider,
            f"action.params.{name} is a dot segment ('.' or '..'), not an id; "
            "fix the registry entry",
        )
    return quote(str(value), safe="")


def reveal(secret: Secret | None, provider: str) -> str:
    """The secret's value at the point of use; an empty value is an auth problem, not a 401."""
    try:
        value = secret.reveal() if secret is not None else ""
    except OSError:
        # A mounted secret file that vanished mid-rotation; the path is not echoed.
        value = ""
    if not value:
        raise AuthError(provider, "credential is empty or unreadable; check its env:/file: source")
    return value
