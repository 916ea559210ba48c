"""Okta credentials: an OAuth 2.0 service app with ``private_key_jwt``, or a legacy API token.

**OAuth (recommended by Okta).** An API service app (client credentials grant) whose client
authentication is ``private_key_jwt``: for each token request we sign a client assertion
(RS256; ``iss`` = ``sub`` = ``client_id``, ``aud`` = the org token endpoint
``https://<org>/oauth2/v1/token``, ``exp`` 5 minutes ahead, a unique ``jti``, ``kid`` = the
registered key's id) and POST ``grant_type=client_credentials`` with the scopes. The access
token (an hour at Okta) is sent as ``Authorization: Bearer`` and refreshed before expiry
(:class:`~connectors.base.credentials.MintedToken`). Scopes: the provider needs
``okta.users.manage`` (clearing sessions, resetting factors, the lifecycle operations
suspend/unsuspend/deactivate/activate/expire_password and revoking a user's OAuth grants are
all Users API operations, and a manage scope includes reading users, factors and grants for
the read-back; ``okta.sessions.manage`` covers only the Sessions API by session id, which we
do not call) and ``okta.logs.read`` (the read-back of ``revoke_sessions`` searches the System
Log for the ``user.session.clear`` event); the System Log poller needs ``okta.logs.read``. The
app also needs an admin role that allows those operations (a custom role with the user
lifecycle and user permissions, or Org Admin, plus report/log access): scopes alone do not
grant access. Okta's optional DPoP requirement for the app must be off (not supported here).

**Why PyJWT and not authlib.** The whole flow is one signed JWT and one form POST. PyJWT
(with ``cryptography``) is the well-kept library for the JWT part and is already installed
as MSAL's dependency; authlib's ``OAuth2Session`` + ``PrivateKeyJWT`` would add a second
OAuth stack (and its own session and token-refresh machinery, which would duplicate
MintedToken's caching and thread-safety) for that one POST.

**Legacy.** ``token:`` is an SSWS API token (``Authorization: SSWS <token>``), as before; it
acts with the full rights of the admin who created it and is not scoped.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jwt
import requests

from connectors.base.credentials import (
    Credential,
    CredentialFailure,
    Minted,
    MintedToken,
    StaticToken,
    oauth_failure,
    oauth_token,
    post_token_request,
    require,
    reveal_setting,
)
from connectors.base.http import setting_secret
from streams.support.errors import ConfigError
from streams.support.secrets import Secret

TOKEN_PATH = "/oauth2/v1/token"  # noqa: S105 - a path
#: A client assertion lives this long (Okta accepts at most one hour; 5 minutes is plenty).
ASSERTION_LIFETIME = 300
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PROVIDER_SCOPES = ("okta.users.manage", "okta.logs.read")
POLLER_SCOPES = ("okta.logs.read",)


class OktaPrivateKeyJwt(MintedToken):
    """Client credentials with a ``private_key_jwt`` client assertion (see the module)."""

    kind = "okta_private_key_jwt"

    def __init__(
        self,
        label: str,
        *,
        org_url: str,
        client_id: str,
        private_key: Secret,
        key_id: str | None,
        scopes: Sequence[str],
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(label)
        self.token_url = org_url.rstrip("/") + TOKEN_PATH
        self.client_id = client_id
        self.key_id = key_id
        self.scopes = tuple(scopes)
        self._private_key = private_key
        self._session = session or requests.Session()

    def assertion(self) -> str:
        """A fresh signed client assertion (one ``jti`` each)."""
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
            "jti": uuid.uuid4().hex,
        }
        headers = {"kid": self.key_id} if self.key_id else None
        key = reveal_setting(self._private_key, self.label)
        try:
            return jwt.encode(claims, key, algorithm="RS256", headers=headers)
        except (ValueError, TypeError, jwt.PyJWTError):
            raise CredentialFailure(
                "misconfigured", "private_key is not a usable RSA private key (PEM)"
            ) from None

    def _mint(self) -> Minted:
        response = post_token_request(
            self._session,
            self.token_url,
            {
                "grant_type": "client_credentials",
                "scope": " ".join(self.scopes),
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.assertion(),
            },
        )
        if response.status_code != 200:
            raise oauth_failure(response)
        return oauth_token(response)

    def _secrets(self) -> Iterable[str]:
        try:
            return (self._private_key.reveal(),)
        except OSError:
            return ()


def okta_credential(
    settings: Mapping[str, Any],
    prefix: str,
    label: str,
    *,
    base_url: str,
    default_scopes: Sequence[str],
    required: bool,
) -> Credential | None:
    """The credential ``settings`` configure: OAuth (``client_id`` + ``private_key``, with
    ``key_id`` and ``scopes``) or the SSWS ``token``; None when neither and not ``required``."""
    oauth = any(settings.get(k) for k in ("client_id", "private_key"))
    token = settings.get("token")
    if oauth and token:
        raise ConfigError(f"{prefix}.client_id", "set either token or client_id/private_key")
    if oauth:
        scopes = settings.get("scopes") or list(default_scopes)
        key_id = settings.get("key_id")
        return OktaPrivateKeyJwt(
            label,
            org_url=base_url,
            client_id=str(require(settings, "client_id", f"{prefix}.client_id")),
            private_key=_secret(require(settings, "private_key", f"{prefix}.private_key")),
            key_id=str(key_id) if key_id else None,
            scopes=[str(s) for s in scopes],
        )
    secret = setting_secret(settings, "token", f"{prefix}.token", required=required)
    if secret is None:
        return None
    return StaticToken(secret, label, scheme="SSWS")


def _secret(value: Any) -> Secret:
    return value if isinstance(value, Secret) else Secret.parse(str(value))
