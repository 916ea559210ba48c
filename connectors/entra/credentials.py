"""Microsoft Graph credentials: the client credentials flow through MSAL, or a static token.

**Client credentials (recommended).** An Entra app registration with *application*
permissions (for the provider: User.RevokeSessions.All for revokeSignInSessions,
UserAuthenticationMethod.ReadWrite.All for listing and deleting authentication methods,
User.EnableDisableAccount.All for ``accountEnabled``, User-PasswordProfile.ReadWrite.All for
``passwordProfile.forceChangePasswordNextSignIn`` and User.Read.All for reading users back;
AuditLog.Read.All for the sign-in poller) and admin consent. Application permissions come
as roles in the token minted for ``https://graph.microsoft.com/.default``. The app proves itself
with a client secret (``client_secret``) or, better, a certificate (``client_certificate``:
the private key PEM, a Secret, with ``client_certificate_thumbprint``: the SHA-1 thumbprint
Entra shows for the uploaded certificate). :class:`MsalClientCredentials` asks
``msal.ConfidentialClientApplication.acquire_token_for_client`` for
``https://graph.microsoft.com/.default`` (MSAL keeps its own token cache; ours in
:class:`~connectors.base.credentials.MintedToken` decides when to ask).

``authority`` is ``https://login.microsoftonline.com`` by default (a sovereign cloud sets its
own); the tenant is appended. MSAL is built with ``instance_discovery=False``: it trusts the
configured authority and reads its OpenID configuration
(``<authority>/<tenant>/v2.0/.well-known/openid-configuration``) instead of asking
login.microsoftonline.com about it, so the authority is an operator's choice, like
``base_url``. The MSAL application is built at the first token request (it fetches that
document; configuration checks make no network call) and again when the secret or key
changes (a rotated ``file:`` secret is picked up without a restart).

**Static.** ``token:`` is an access token someone else minted, sent as ``Bearer`` (it
expires within about 90 minutes; kept for existing configurations).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msal
import requests

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

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
GRAPH_SCOPES = ("https://graph.microsoft.com/.default",)
#: MSAL's error codes that name the client's own credential or registration.
_REASONS = {
    "invalid_client": "invalid_client",
    "unauthorized_client": "unauthorized_client",
    "invalid_scope": "invalid_scope",
    "invalid_grant": "invalid_grant",
    "invalid_request": "rejected",
    "invalid_resource": "invalid_scope",
}


class MsalClientCredentials(MintedToken):
    """Client credentials (secret or certificate) via MSAL (see the module)."""

    kind = "msal_client_credentials"

    def __init__(
        self,
        label: str,
        *,
        authority: str,
        tenant_id: str,
        client_id: str,
        client_secret: Secret | None = None,
        certificate: Secret | None = None,
        thumbprint: str | None = None,
        scopes: Sequence[str] = GRAPH_SCOPES,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(label)
        self.authority = f"{authority.rstrip('/')}/{tenant_id}"
        self.client_id = client_id
        self.scopes = list(scopes)
        self._client_secret = client_secret
        self._certificate = certificate
        self._thumbprint = thumbprint
        self._session = session or requests.Session()
        self._app: msal.ConfidentialClientApplication | None = None
        self._app_key = ""

    def _client_credential(self) -> str | dict[str, str]:
        if self._certificate is not None:
            return {
                "private_key": reveal_setting(self._certificate, self.label),
                "thumbprint": self._thumbprint or "",
            }
        assert self._client_secret is not None
        return reveal_setting(self._client_secret, self.label)

    def _application(self) -> msal.ConfidentialClientApplication:
        credential = self._client_credential()
        key = hashlib.sha256(repr(credential).encode()).hexdigest()
        if self._app is not None and key == self._app_key:
            return self._app
        try:
            app = msal.ConfidentialClientApplication(
                self.client_id,
                client_credential=credential,
                authority=self.authority,
                instance_discovery=False,
                http_client=self._session,
                timeout=TOKEN_TIMEOUT[1],
            )
        except requests.RequestException as exc:
            raise CredentialFailure(
                "unreachable", f"authority unreachable ({type(exc).__name__})"
            ) from None
        except ValueError as exc:
            # MSAL reports a failed OpenID discovery and an unusable key both as ValueError.
            if "discovery" in str(exc).lower():
                raise CredentialFailure(
                    "unreachable", "OpenID configuration of the authority could not be read"
                ) from None
            raise CredentialFailure(
                "misconfigured", "client_certificate is not a usable private key (PEM)"
            ) from None
        self._app, self._app_key = app, key
        return app

    def _mint(self) -> Minted:
        app = self._application()
        try:
            result = app.acquire_token_for_client(scopes=self.scopes)
        except requests.RequestException as exc:
            raise CredentialFailure(
                "unreachable", f"token endpoint unreachable ({type(exc).__name__})"
            ) from None
        except ValueError:
            raise CredentialFailure("misconfigured", "client credential is not usable") from None
        if not isinstance(result, dict):
            raise CredentialFailure("invalid_response", "MSAL returned no result")
        if "access_token" not in result:
            error = result.get("error")
            description = str(result.get("error_description") or "").split("\n", 1)[0]
            code = error if isinstance(error, str) else "unknown"
            raise CredentialFailure(_REASONS.get(code, "rejected"), f"{code[:40]}: {description}")
        token, expires_in = result.get("access_token"), result.get("expires_in")
        if not isinstance(token, str) or not isinstance(expires_in, int | float):
            raise CredentialFailure("invalid_response", "token response without expires_in")
        return Minted(token, float(expires_in))

    def _secrets(self) -> Iterable[str]:
        out = []
        for secret in (self._client_secret, self._certificate):
            try:
                if secret is not None:
                    out.append(secret.reveal())
            except OSError:
                pass
        return out


def graph_credential(
    settings: Mapping[str, Any], prefix: str, label: str, *, required: bool
) -> Credential | None:
    """The credential ``settings`` configure: client credentials (``tenant_id``,
    ``client_id`` and ``client_secret`` or ``client_certificate`` +
    ``client_certificate_thumbprint``; ``authority``, ``scopes``) or the static ``token``."""
    app_keys = ("tenant_id", "client_id", "client_secret", "client_certificate")
    app = any(settings.get(k) for k in app_keys)
    if app and settings.get("token"):
        raise ConfigError(f"{prefix}.client_id", "set either token or the app registration")
    if not app:
        secret = setting_secret(settings, "token", f"{prefix}.token", required=required)
        return StaticToken(secret, label) if secret is not None else None
    certificate = settings.get("client_certificate")
    client_secret = settings.get("client_secret")
    if bool(certificate) == bool(client_secret):
        raise ConfigError(
            f"{prefix}.client_secret", "set exactly one of client_secret and client_certificate"
        )
    thumbprint = None
    if certificate:
        thumbprint = str(
            require(
                settings,
                "client_certificate_thumbprint",
                f"{prefix}.client_certificate_thumbprint",
            )
        )
    return MsalClientCredentials(
        label,
        authority=str(settings.get("authority") or DEFAULT_AUTHORITY),
        tenant_id=str(require(settings, "tenant_id", f"{prefix}.tenant_id")),
        client_id=str(require(settings, "client_id", f"{prefix}.client_id")),
        client_secret=_secret(client_secret) if client_secret else None,
        certificate=_secret(certificate) if certificate else None,
        thumbprint=thumbprint,
        scopes=[str(s) for s in settings.get("scopes") or GRAPH_SCOPES],
    )


def _secret(value: Any) -> Secret:
    return value if isinstance(value, Secret) else Secret.parse(str(value))
