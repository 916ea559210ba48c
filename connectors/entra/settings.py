"""Settings of the Microsoft Graph provider and sign-in poller (connector type ``graph``).

Exactly one credential (unless the provider is a dry run): an app registration used with
the client credentials flow (``tenant_id``, ``client_id``, and ``client_secret`` or
``client_certificate`` + ``client_certificate_thumbprint``; recommended,
connectors/entra/credentials.py) or a static access ``token``.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from connectors.base.credentials import one_auth_method
from connectors.base.settings import ConnectorSettings, HttpProviderSettings, PollerSettings, Url
from connectors.entra.credentials import DEFAULT_AUTHORITY, GRAPH_SCOPES
from connectors.entra.poller import DEFAULT_BASE_URL, MAX_TOP
from streams.config import Float, Int, Names, SecretValue, Str

_HINT = "an app registration (tenant_id, client_id, client_secret or client_certificate) or a token"


class GraphAuthSettings(ConnectorSettings):
    """The app registration keys shared by the provider and the poller."""

    tenant_id: Str | None = Field(None, description="Entra tenant id (or domain)")
    client_id: Str | None = Field(None, description="app registration's application (client) id")
    client_secret: SecretValue | None = Field(None, description="client secret (a Secret)")
    client_certificate: SecretValue | None = Field(
        None, description="certificate private key, PEM (a Secret), instead of client_secret"
    )
    client_certificate_thumbprint: Str | None = Field(
        None, description="SHA-1 thumbprint of the uploaded certificate (hex)"
    )
    authority: Url = Field(DEFAULT_AUTHORITY, description="Entra authority host URL")
    scopes: Names = Field(list(GRAPH_SCOPES), description="scopes to request")

    def auth_problems(self, dry_run: bool) -> list[tuple[str, str]]:
        app = any((self.tenant_id, self.client_id, self.client_secret, self.client_certificate))
        token = getattr(self, "token", None)
        problems = one_auth_method(
            {"token": bool(token), "client_id": app}, dry_run=dry_run, hint=_HINT
        )
        if app and not problems:
            for key in ("tenant_id", "client_id"):
                if not getattr(self, key):
                    problems.append((key, "required by the app registration"))
            if bool(self.client_secret) == bool(self.client_certificate):
                problems.append(
                    ("client_secret", "set exactly one of client_secret and client_certificate")
                )
            if self.client_certificate and not self.client_certificate_thumbprint:
                problems.append(("client_certificate_thumbprint", "required with a certificate"))
        return problems


class GraphProviderSettings(HttpProviderSettings, GraphAuthSettings):
    """``base_url`` (https://graph.microsoft.com), ``dry_run``, and the app registration
    (``tenant_id``, ``client_id``, ``client_secret`` or ``client_certificate``) or a
    static ``token`` (app access token); ``verify_clock_skew`` for the read-back of
    ``revoke_sessions``."""

    verify_clock_skew: Float = Field(
        5.0,
        ge=0,
        le=3600,
        description="seconds signInSessionsValidFromDateTime may precede the revocation",
    )

    required_unless_dry_run: ClassVar[tuple[str, ...]] = ()

    def missing(self) -> list[tuple[str, str]]:
        return super().missing() + self.auth_problems(self.dry_run)


class GraphPollerSettings(PollerSettings, GraphAuthSettings):
    """The sign-in log poller: ``base_url``, the app registration or ``token``, ``top``,
    plus the base's ``interval``, ``start``, ``max_failure_backoff``."""

    base_url: Url = Field(DEFAULT_BASE_URL, description="https://graph.microsoft.com")
    token: SecretValue | None = Field(None, description="access token with AuditLog.Read.All")
    top: Int = Field(500, ge=1, le=MAX_TOP, description="sign-ins per page")

    def missing(self) -> list[tuple[str, str]]:
        return super().missing() + self.auth_problems(False)


class GraphAuditPollerSettings(GraphPollerSettings):
    """The directory-audit poller (type ``graph_audit``): the sign-in poller's keys; ``top``
    is audits per page."""
