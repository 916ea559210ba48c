"""Google Workspace credentials: a service account with domain-wide delegation, or a token.

**Service account (recommended).** A Google Cloud service account with a JSON key
(``service_account``, a Secret holding the whole key file) that a Workspace super admin has
granted domain-wide delegation for the scopes below. The Admin SDK acts as a Workspace admin,
so the service account impersonates one: ``subject`` (an admin's e-mail; a dedicated admin
with a custom role that allows only the user-security operations is best). google-auth signs
the JWT-bearer grant with the key and posts it to the key's ``token_uri``
(``service_account.Credentials.from_service_account_info(...).with_subject(subject)
.with_scopes(scopes)``); the access token (an hour) is refreshed before expiry by
:class:`~connectors.base.credentials.MintedToken`.

**Scopes, minimal per action.** ``users.signOut``, ``users.twoStepVerification.turnOff``
and the ``tokens``/``asps`` list and delete calls are user-security operations of the
Directory API and accept ``https://www.googleapis.com/auth/admin.directory.user.security``.
Suspending, restoring and forcing a password change are updates of the user resource
(``users.patch``) and reading the user back is ``users.get``: both need
``https://www.googleapis.com/auth/admin.directory.user`` (``.readonly`` would do for the
read, but the patch needs the full scope, which covers reading). The default is exactly those
two; a deployment that never disables accounts or expires passwords may narrow ``scopes`` to
the security scope (the account actions and their read-back then fail with 403).

**Static.** ``token:`` is an OAuth access token minted elsewhere, sent as ``Bearer`` (kept
for existing configurations; it expires within the hour).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import google.auth.exceptions
import google.auth.transport.requests
import requests
from google.oauth2 import service_account

from connectors.base.credentials import (
    TOKEN_TIMEOUT,
    Credential,
    CredentialFailure,
    Minted,
    MintedToken,
    StaticToken,
    require,
    reveal_setting,
)
from connectors.base.http import setting_secret
from streams.support.errors import ConfigError
from streams.support.secrets import Secret

USER_SECURITY_SCOPE = "https://www.googleapis.com/auth/admin.directory.user.security"
USER_SCOPE = "https://www.googleapis.com/auth/admin.directory.user"
DEFAULT_SCOPES = (USER_SCOPE, USER_SECURITY_SCOPE)
_OAUTH_CODES = ("invalid_client", "invalid_grant", "unauthorized_client", "invalid_scope")


class _TimedRequest(google.auth.transport.requests.Request):
    """google-auth's requests transport with our token-request timeout (its default is 120 s)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["timeout"] = kwargs.get("timeout") or TOKEN_TIMEOUT[1]
        return super().__call__(*args, **kwargs)  # type: ignore[no-untyped-call]


class GoogleServiceAccount(MintedToken):
    """A delegated service account (see the module)."""

    kind = "google_service_account"

    def __init__(
        self,
        label: str,
        *,
        key: Secret,
        subject: str,
        scopes: Sequence[str] = DEFAULT_SCOPES,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(label)
        self.subject = subject
        self.scopes = list(scopes)
        self._key = key
        self._session = session or requests.Session()

    def _credentials(self) -> service_account.Credentials:
        try:
            info = json.loads(reveal_setting(self._key, self.label))
        except ValueError:
            raise CredentialFailure("misconfigured", "service_account is not JSON") from None
        if not isinstance(info, dict):
            raise CredentialFailure("misconfigured", "service_account is not a JSON key object")
        try:
            base = service_account.Credentials.from_service_account_info(info)  # type: ignore[no-untyped-call]
        except (ValueError, KeyError, TypeError):
            raise CredentialFailure(
                "misconfigured",
                "service_account is not a usable key (client_email, private_key, token_uri)",
            ) from None
        scoped: service_account.Credentials = base.with_subject(self.subject).with_scopes(
            self.scopes
        )
        return scoped

    def _mint(self) -> Minted:
        credentials = self._credentials()
        try:
            credentials.refresh(_TimedRequest(self._session))  # type: ignore[no-untyped-call]
        except google.auth.exceptions.TransportError as exc:
            raise CredentialFailure(
                "unreachable", f"token endpoint unreachable ({type(exc).__name__})"
            ) from None
        except google.auth.exceptions.RefreshError as exc:
            raise _refresh_failure(exc) from None
        token, expiry = credentials.token, credentials.expiry
        if not isinstance(token, str) or not isinstance(expiry, datetime):
            raise CredentialFailure("invalid_response", "token response without a token")
        # google-auth keeps expiry as naive UTC.
        now = datetime.now(UTC).replace(tzinfo=None)
        return Minted(token, (expiry - now).total_seconds())

    def _secrets(self) -> Iterable[str]:
        try:
            raw = self._key.reveal()
        except OSError:
            return ()
        out = [raw]
        try:
            info = json.loads(raw)
        except ValueError:
            return out
        if isinstance(info, dict):
            for key in ("private_key", "private_key_id"):
                value = info.get(key)
                if isinstance(value, str):
                    out.append(value.replace("\\n", "\n"))
        return out


def _refresh_failure(exc: google.auth.exceptions.RefreshError) -> CredentialFailure:
    data = exc.args[1] if len(exc.args) > 1 else None
    error = data.get("error") if isinstance(data, dict) else None
    description = data.get("error_description") if isinstance(data, dict) else None
    if isinstance(error, str) and error in _OAUTH_CODES:
        return CredentialFailure(error, f"{error}: {description or ''}".rstrip(": "))
    if isinstance(error, str):
        return CredentialFailure("rejected", f"{error[:40]}: {description or ''}".rstrip(": "))
    if getattr(exc, "retryable", False):
        return CredentialFailure("unreachable", "token endpoint failed (retryable)")
    return CredentialFailure("invalid_response", "token endpoint gave no usable answer")


def google_credential(
    settings: Mapping[str, Any], prefix: str, label: str, *, required: bool
) -> Credential | None:
    """The credential ``settings`` configure: ``service_account`` + ``subject`` (+ ``scopes``)
    or the static ``token``."""
    delegated = bool(settings.get("service_account")) or bool(settings.get("subject"))
    if delegated and settings.get("token"):
        raise ConfigError(f"{prefix}.service_account", "set either token or service_account")
    if not delegated:
        secret = setting_secret(settings, "token", f"{prefix}.token", required=required)
        return StaticToken(secret, label) if secret is not None else None
    key = require(settings, "service_account", f"{prefix}.service_account")
    return GoogleServiceAccount(
        label,
        key=key if isinstance(key, Secret) else Secret.parse(str(key)),
        subject=str(require(settings, "subject", f"{prefix}.subject")),
        scopes=[str(s) for s in settings.get("scopes") or DEFAULT_SCOPES],
    )
