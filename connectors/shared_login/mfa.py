"""MFA re-enrolment for shared credentials: rotate the TOTP seed of a shared login.

A shared social-media login (access path ``shared_credential``) cannot be revoked per
person: when one holder leaves, the seed everyone enrolled must change. The rotator writes
a fresh seed to the secret store; remaining holders re-enrol from :func:`provisioning_uri`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pyotp
import structlog

from connectors.base.http import HttpClient
from connectors.base.provider import ProviderBase, Request
from connectors.shared_login.secret_store import FileSecretStore, validate_ref
from streams.model.records import Action
from streams.support.errors import ConfigError, PermanentError, RetryableError
from streams.support.secrets import Secret

log = structlog.get_logger(__name__)


def provisioning_uri(store: FileSecretStore, ref: str, account_name: str, issuer: str) -> Secret:
    """The ``otpauth://`` URI for re-enrolling ``ref``'s current seed.

    Returned as a Secret because the URI contains the seed: reveal it only to render the
    QR code for a holder.
    """
    seed = store.get(ref).reveal()
    return Secret(pyotp.TOTP(seed).provisioning_uri(name=account_name, issuer_name=issuer))


class SharedCredentialRotator(ProviderBase):
    """Provider type ``secret_store``: rotates a shared TOTP seed.

    Idempotent per ``action.idempotency_key``: the store remembers which rotation each key
    made, so a redelivered action returns that version instead of rotating again (which
    would lock out holders who already re-enrolled). The new seed never appears in the
    result, in logs or in exceptions.

    Settings: ``path`` (the store directory), ``dry_run``. No endpoint, no credential and no
    HTTP: the "request" of the audit trail is ``rotate {credential_ref}``.
    """

    type: ClassVar[str] = "secret_store"
    supports: ClassVar[frozenset[str]] = frozenset({"rotate_shared_credential"})
    url_setting: ClassVar[str | None] = None
    credential_setting: ClassVar[str | None] = None

    def __init__(
        self, name: str, settings: Mapping[str, Any], http: HttpClient | None = None
    ) -> None:
        super().__init__(name, settings, http)

    def _configure(self, settings: Mapping[str, Any]) -> None:
        path = settings.get("path")
        if not isinstance(path, str) or not path.strip():
            raise ConfigError(
                f"{self.config_prefix}.path", "required: directory of the shared-credential store"
            )
        self.store = FileSecretStore(path)

    def prepare(self, action: Action) -> Request:
        """Check ``action.params['credential_ref']`` names a seed of the store."""
        ref = action.params.get("credential_ref")
        if not isinstance(ref, str) or not ref:
            raise PermanentError(
                self.label, "action.params.credential_ref is missing; fix the registry entry"
            )
        try:
            validate_ref(ref)
        except ValueError as exc:
            raise PermanentError(self.label, str(exc)) from None
        return Request("rotate", "{credential_ref}", extra={"credential_ref": ref})

    def execute(self, request: Request, action: Action) -> dict[str, Any]:
        """Rotate the seed (once per idempotency key)."""
        ref = str(request.extra["credential_ref"])
        done = self.store.version_for_key(ref, action.idempotency_key)
        if done is not None:
            log.info("credential_rotation_already_done", credential_ref=ref, version=done)
            return {"credential_ref": ref, "version": done, "rotated": False}
        try:
            version = self.store.put(
                ref, pyotp.random_base32(), idempotency_key=action.idempotency_key
            )
        except OSError as exc:
            # Disk full or a remounted volume may recover; strerror never holds the seed.
            raise RetryableError(self.label, f"secret store write failed: {exc.strerror}") from None
        log.info("credential_rotated", credential_ref=ref, version=version)
        return {"credential_ref": ref, "version": version, "rotated": True}

    def provisioning_uri(self, ref: str, account_name: str, issuer: str) -> Secret:
        return provisioning_uri(self.store, ref, account_name, issuer)
