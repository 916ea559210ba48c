"""The one base of every provider (and, through :class:`ConnectorBase`, of every alert sink).

A provider makes ONE attempt at an :class:`~streams.model.records.Action` per
:meth:`ProviderBase.perform` (the executor owns retries) and returns a small JSON-able result
for the audit trail. What every provider did the same way, each in its own copy, lives here:

* **Settings.** ``name``, ``dry_run`` (a bool), the endpoint (``base_url``, validated by
  :func:`~connectors.base.http.setting_url`) and the credential (a
  :class:`~streams.support.secrets.Secret`, required unless ``dry_run``), read in that order
  under ``providers.<name>`` so that the first bad key is the one named. A subclass names its
  keys with class attributes and reads the rest of its settings in :meth:`_configure`.
* **Preparation.** :meth:`ProviderBase.prepare` (the vendor-specific part) turns an action
  into a :class:`Request`: method, path template, the values of its fields (each already one
  encoded path segment, see :func:`~connectors.base.http.path_part`), query, body, the
  statuses that mean success. The audit trail's ``request`` is the template, never the
  values: ``"DELETE /api/v1/users/{user_ref}/sessions?oauthTokens=true"``.
* **Dry run.** A dry run returns the prepared request as a :class:`DryRun` result and calls
  nothing (no credential needed). This is the only place a provider's dry run is decided; the
  executor tells a dry run from a call by the result's type, without knowing any connector.
* **Read-back.** :meth:`ProviderBase.verify` makes ONE read of the provider's own state after
  an action was acknowledged and says whether it took effect (:class:`Verification`). The
  default is "acknowledged, not verifiable": a provider that can read an action back lists it
  in ``verifies`` and overrides :meth:`verify`. The executor polls it until verified, failed
  or out of time (streams/runtime/executor.py).
* **Sending.** :meth:`ConnectorBase.send_request` makes the HTTP call with the credential at
  the point of use (:meth:`auth_headers`), the path-shape check of
  ``HttpClient.request(path_template=...)`` and the vendor's :meth:`classify` hook in front of
  the default status mapping (429/5xx -> RetryableError, 401/403 -> AuthError, other 4xx ->
  PermanentError; see :mod:`connectors.base.http`).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlencode

import requests

from connectors.base.credentials import Credential, StaticToken
from connectors.base.http import (
    OK_2XX,
    HttpClient,
    base_path,
    path_part,
    reveal,
    setting_bool,
    setting_secret,
    setting_url,
)
from connectors.base.ratelimit import ALL
from streams.model.records import Action
from streams.support.errors import AuthError, PermanentError, ProviderError
from streams.support.secrets import Secret


class DryRun(dict[str, Any]):
    """The result of a dry run: ``{"dry_run": True, "request": ..., ...}``.

    A plain dict for the audit trail (the same keys as ever), typed so that the executor tells
    a dry run from a call by ``isinstance`` instead of by reading a connector's keys.
    """


def dry_run_result(request: str | None = None, **extra: Any) -> DryRun:
    """The :class:`DryRun` result; without ``request`` (nothing was prepared: the executor's
    global dry run) it is ``{"dry_run": True}``."""
    result = DryRun(dry_run=True)
    if request is not None:
        result["request"] = request
    result.update(extra)
    return result


def is_dry_run(result: Mapping[str, Any]) -> bool:
    """Whether ``result`` (what ``perform``/``send`` returned) is a dry run's."""
    return isinstance(result, DryRun)


#: Verification states: read back and as asked; not there yet (read again later); read back
#: and NOT as asked (evidence says what was found); the vendor offers no way to read it back.
VERIFIED = "verified"
PENDING = "pending"
UNVERIFIED = "failed"
NOT_VERIFIABLE = "not_verifiable"


@dataclass(frozen=True, slots=True)
class Verification:
    """The answer of one read-back.

    ``evidence``: what was read (field values such as ``{"status": "SUSPENDED"}``, a System Log
    event id, the remaining token count), never a secret or an e-mail address: it goes into
    the ledger, the audit trail and, on failure, the page. ``reason``: one line for a person.
    """

    status: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "evidence": dict(self.evidence), "reason": self.reason}


#: ``{field}`` placeholders of a request template.
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: Query parameter names whose values an audit or dry-run text never shows.
SECRET_PARAMS = frozenset(
    {"token", "access_token", "api_key", "key", "secret", "client_secret", "password", "sig"}
)


@dataclass(frozen=True, slots=True)
class Request:
    """One prepared call.

    ``template`` is the path under the base URL with ``{field}`` placeholders; ``values``
    fills them (each value already an encoded path segment). ``describe`` overrides the audit
    text (default ``"<method> <template>[?<query>]"``), for a call that is several requests.
    ``extra`` is added to the result, dry run or not (a dedup key, a credential reference).
    """

    method: str
    template: str
    values: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] | None = None
    json: Any = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict)
    ok: Container[int] = OK_2XX
    describe: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: Check the prepared URL against ``template`` (HttpClient's path-shape check).
    check_shape: bool = True

    @property
    def request(self) -> str:
        """What the audit trail records as ``request`` of a call that went out: the template,
        never a value, never a secret."""
        if self.describe is not None:
            return self.describe
        return f"{self.method} {self.template}{self._query()}"

    @property
    def filled(self) -> str:
        """What a dry run records as ``request``: the same text with the request's own values
        in place (the real user id and path), so a dry run shows exactly what would be sent.
        Never a secret: credentials travel in headers set at the point of use, a placeholder
        with no value (a webhook URL) stays a placeholder, and a query parameter named like a
        secret shows ``***``."""
        return _PLACEHOLDER.sub(lambda m: self.values.get(m.group(1), m.group(0)), self.request)

    def _query(self) -> str:
        if not self.params:
            return ""
        shown = {k: "***" if k.lower() in SECRET_PARAMS else v for k, v in self.params.items()}
        return f"?{urlencode(shown)}"

    @property
    def path(self) -> str:
        return self.template.format_map(dict(self.values))


class ConnectorBase:
    """Settings, dry run and HTTP sending shared by providers and alert sinks.

    Class attributes name the settings: ``section`` (``providers``/``sinks``), ``url_setting``
    (None: no endpoint setting), ``default_url``, ``credential_setting`` (None: no credential),
    ``auth_header`` and ``auth_scheme`` (how :meth:`auth_headers` sends the credential).
    """

    type: ClassVar[str]
    section: ClassVar[str] = "providers"
    url_setting: ClassVar[str | None] = "base_url"
    default_url: ClassVar[str | None] = None
    credential_setting: ClassVar[str | None] = "token"
    #: What the vendor's rate limit counts (connectors/base/ratelimit.py): each endpoint
    #: ("endpoint", Okta) or every call of the application or admin ("provider": Graph,
    #: Google), which then share one client-side bucket.
    rate_scope: ClassVar[str] = "endpoint"
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"

    def __init__(self, name: str, settings: Mapping[str, Any], http: HttpClient | None) -> None:
        self.name = name
        self.config_prefix = prefix = f"{self.section}.{name}"
        self.dry_run = setting_bool(settings, "dry_run", f"{prefix}.dry_run")
        self.base_url = ""
        if self.url_setting is not None:
            self.base_url = setting_url(
                settings, self.url_setting, f"{prefix}.{self.url_setting}", self.default_url
            )
        self._base_path = base_path(self.base_url)
        self._http = http
        self.label = f"{self.type}:{name}"
        self._credential: Secret | None = None
        #: Where :meth:`auth_headers` gets fresh headers (None: no credential, or a dry run
        #: without one). connectors/base/credentials.py.
        self.credentials: Credential | None = self.build_credentials(settings)
        self._configure(settings)

    def build_credentials(self, settings: Mapping[str, Any]) -> Credential | None:
        """The connector's credential. By default the static ``credential_setting`` (the
        ``token:``), sent as ``<auth_scheme> <token>``; a vendor with token flows overrides
        this (connectors/<vendor>/credentials.py)."""
        if self.credential_setting is None:
            return None
        self._credential = setting_secret(
            settings,
            self.credential_setting,
            f"{self.config_prefix}.{self.credential_setting}",
            required=not self.dry_run,
        )
        if self._credential is None:
            return None
        # Read at each use: a subclass may set its header or scheme in _configure.
        return StaticToken(
            self._credential,
            self.label,
            header=lambda: self.auth_header,
            scheme=lambda: self.auth_scheme,
        )

    def _configure(self, settings: Mapping[str, Any]) -> None:
        """Read the connector's own settings (called at the end of ``__init__``)."""

    # --- dry run ----------------------------------------------------------------------

    def dry_result(self, request: Request) -> DryRun:
        return dry_run_result(request.filled, **request.extra)

    def credential(self, dry_run_placeholder: str | None = None) -> str:
        """The credential's value at the point of use. In a dry run, ``dry_run_placeholder``
        when given: describing a request needs no credential."""
        if self.dry_run and dry_run_placeholder is not None:
            return dry_run_placeholder
        return reveal(self._credential, self.label)

    # --- sending ----------------------------------------------------------------------

    @property
    def http(self) -> HttpClient:
        if self._http is None:
            raise PermanentError(self.label, f"{self.type} makes no HTTP calls")
        return self._http

    def auth_headers(self) -> dict[str, str]:
        """The credential's headers, fresh at the point of use (a static token as
        ``<auth_header>: <auth_scheme> <token>``, or the raw token without a scheme; a minted
        token as ``Authorization: Bearer``, refreshed before it expires), then
        ``Accept: application/json``. AuthError when there is none."""
        credentials = self.credentials
        if credentials is None:
            raise AuthError(self.label, "no credential configured")
        return {**credentials.headers(), "Accept": "application/json"}

    def classify(self, provider: str, response: requests.Response) -> ProviderError | None:
        """Vendor hook: the typed error for a non-OK response, or None for the default
        mapping (:func:`connectors.base.http.error_for_response`)."""
        return None

    def send_request(self, request: Request, *, url: str | None = None) -> requests.Response:
        """ONE HTTP attempt for ``request`` (at ``url`` instead of base URL + path when given:
        a vendor's own next link, not checked against the template).

        A 401 to a minted token (expired early or revoked at the vendor) forgets that token
        and sends once more with a new one: a 401 means the vendor did nothing, so the second
        send is safe. A static token's 401 is final (AuthError)."""
        for attempt in (1, 2):
            headers = {**self.auth_headers(), **request.headers}
            try:
                return self.http.request(
                    self.label,
                    request.method,
                    url if url is not None else self.base_url + request.path,
                    headers=headers,
                    json=request.json,
                    params=request.params,
                    ok=request.ok,
                    classify=self.classify,
                    path_template=(
                        request.template if url is None and request.check_shape else None
                    ),
                    path_prefix=self._base_path,
                    rate_bucket=(
                        ALL
                        if self.rate_scope == "provider"
                        else f"{request.method.upper()} {request.template}"
                    ),
                )
            except AuthError as exc:
                credentials = self.credentials
                if (
                    attempt == 2
                    or exc.status != 401
                    or credentials is None
                    or not credentials.rejected(headers)
                ):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def result(self, request: Request, response: requests.Response) -> dict[str, Any]:
        """The audit result of a call that went out."""
        return {"status": response.status_code, "request": request.request, **request.extra}


class ProviderBase(ConnectorBase, ABC):
    """Base of every provider: ``perform`` = check the action is supported, :meth:`prepare`
    it, then a dry run's description or :meth:`execute` (by default ONE HTTP call).

    Subclasses set ``type`` and ``supports``, implement :meth:`prepare` and keep only what is
    vendor-specific (a classify hook, a multi-call :meth:`execute`, extra settings).
    Constructor: ``cls(name, settings, http)``.
    """

    supports: ClassVar[frozenset[str]]
    #: The actions :meth:`verify` can read back; any other is "acknowledged, not verifiable".
    verifies: ClassVar[frozenset[str]] = frozenset()

    def perform(self, action: Action) -> dict[str, Any]:
        """Make ONE attempt at ``action``; the executor owns retries."""
        self.check_supported(action)
        request = self.prepare(action)
        if self.dry_run:
            return self.dry_result(request)
        return self.execute(request, action)

    def check_supported(self, action: Action) -> None:
        if action.action not in self.supports:
            raise PermanentError(
                self.label, f"action {action.action!r} is not supported by {self.type}"
            )

    def path_value(self, action: Action, name: str) -> str:
        """``action.params[name]`` as one encoded path segment (PermanentError if missing or
        a dot segment)."""
        return path_part(action.params.get(name), self.label, name)

    @abstractmethod
    def prepare(self, action: Action) -> Request:
        """The request for ``action`` (raise PermanentError for what no retry can fix)."""

    def execute(self, request: Request, action: Action) -> dict[str, Any]:
        """Carry out a prepared request (not in a dry run)."""
        return self.result(request, self.send_request(request))

    def can_verify(self, action: Action) -> bool:
        """Whether :meth:`verify` reads ``action`` back (configuration may decide, as in the
        generic provider)."""
        return action.action in self.verifies

    def verify(self, action: Action, result: Mapping[str, Any], issued_at: float) -> Verification:
        """ONE read of the provider's state after ``action`` was acknowledged (``result`` is
        what :meth:`perform` returned, ``issued_at`` when it was sent, epoch seconds).

        Returns VERIFIED with the evidence, PENDING when the provider does not show it yet
        (eventual consistency: read again later), UNVERIFIED when it shows the opposite.
        HTTP errors raise as in :meth:`perform` (RetryableError: read again later). The
        default, for an action not in ``verifies``: NOT_VERIFIABLE."""
        return Verification(
            NOT_VERIFIABLE,
            reason=f"{self.type} offers no read-back of {action.action}: acknowledged only",
        )
