"""The vault calls custody makes, through hvac (the maintained client of the Vault API, which
OpenBao keeps), with accessguard's error classes.

:class:`VaultClient` logs in with the configured method (a token file, AppRole, or the pod's
Kubernetes service-account token; hvac's own auth methods), logs in again once when a
login-based token has expired, and turns every failure into the executor's vocabulary:
connection errors, 429, 5xx and a sealed vault are :class:`RetryableError` (the executor
retries and pages when stuck); 401/403 are :class:`AuthError` (a credential or policy
problem: loud); other 4xx are :class:`PermanentError`. A vault error message is passed on only
for calls that carry no secret, and never the request body: a TOTP import's error could echo
the ``otpauth://`` URI.

Group membership is a whole list in the Vault API (no add/remove of one member), so every
read-modify-write of a group holds a per-group lock: two leavers cut at once from the same
login must not write each other back. Between processes the read-back verification is the
guard (a lost update shows as "still a member" and pages).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests

from connectors.base.credentials import Credential, CredentialStatus
from connectors.custody.names import Mounts
from streams.support.errors import AuthError, PermanentError, RetryableError
from streams.support.metrics import CREDENTIAL_FAILURES
from streams.support.secrets import Secret

T = TypeVar("T")

_RETRYABLE = (
    hvac.exceptions.VaultDown,
    hvac.exceptions.InternalServerError,
    hvac.exceptions.BadGateway,
    hvac.exceptions.RateLimitExceeded,
    hvac.exceptions.UnexpectedError,
)


class VaultLogin(Credential):
    """The state of accessguard's vault credential, for the ``credentials`` readiness check
    and ``accessguard_provider_credential_failures_total``: failing from a refused login or a
    401/403 until the next call the vault accepts. hvac sends the token itself, so there are
    no headers to hand out."""

    kind = "vault"

    def __init__(self, label: str) -> None:
        super().__init__(label)
        self._last_success: float | None = None
        self._failure: tuple[str, str, float] | None = None

    def headers(self) -> dict[str, str]:  # pragma: no cover - hvac authenticates itself
        return {}

    def succeeded(self) -> None:
        self._last_success, self._failure = time.time(), None

    def failed(self, detail: str) -> None:
        CREDENTIAL_FAILURES.labels(provider=self.label, reason="rejected").inc()
        self._failure = ("rejected", detail, time.time())

    def status(self) -> CredentialStatus:
        if self._failure is not None:
            reason, detail, when = self._failure
            return CredentialStatus(False, self.kind, reason, detail, self._last_success, when)
        return CredentialStatus(True, self.kind, last_success=self._last_success)


class VaultClient:
    """One logged-in hvac client, shared by the executor's threads (hvac's session is a
    ``requests.Session``; calls are serialised per group where it matters)."""

    def __init__(self, label: str, settings: Mapping[str, Any]) -> None:
        self.label = label
        self.address = str(settings.get("address") or "http://127.0.0.1:8200")
        self.auth = str(settings.get("auth") or "token")
        self.token: Secret | None = settings.get("token")
        self.role_id = settings.get("role_id")
        self.secret_id: Secret | None = settings.get("secret_id")
        self.role = settings.get("role")
        self.jwt_path = str(settings.get("jwt_path") or "/var/run/secrets/vault/token")
        self.auth_mount = settings.get("auth_mount") or self.auth
        self.namespace = settings.get("namespace")
        self.ca_cert = settings.get("ca_cert")
        self.timeout = float(settings.get("timeout") or 5.0)
        self.mounts = Mounts(
            kv=str(settings.get("kv_mount") or "secret"),
            totp=str(settings.get("totp_mount") or "totp"),
        )
        self._client: hvac.Client | None = None
        #: accessguard's own credential state (readiness: ``credentials``).
        self.login_state = VaultLogin(label)
        self._login_lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    # -- login -----------------------------------------------------------------------------

    def _new_client(self) -> hvac.Client:
        verify: bool | str = self.ca_cert if self.ca_cert else True
        return hvac.Client(
            url=self.address, timeout=self.timeout, verify=verify, namespace=self.namespace
        )

    def _login(self) -> hvac.Client:
        client = self._new_client()
        if self.auth == "token":
            token = self.token.reveal() if self.token is not None else ""
            if not token:
                raise AuthError(self.label, "no vault token: set token (file:/path)")
            client.token = token
        elif self.auth == "approle":
            secret_id = self.secret_id.reveal() if self.secret_id is not None else ""
            self._call_raw(
                "AppRole login",
                lambda: client.auth.approle.login(
                    role_id=self.role_id, secret_id=secret_id, mount_point=self.auth_mount
                ),
            )
        else:  # kubernetes
            try:
                jwt = Path(self.jwt_path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise AuthError(
                    self.label,
                    f"cannot read the service-account token {self.jwt_path}: {exc.strerror}",
                ) from None
            self._call_raw(
                "Kubernetes login",
                lambda: client.auth.kubernetes.login(
                    role=self.role, jwt=jwt, mount_point=self.auth_mount
                ),
            )
        return client

    def client(self) -> hvac.Client:
        with self._login_lock:
            if self._client is None:
                self._client = self._login()
            return self._client

    def relogin(self) -> None:
        with self._login_lock:
            self._client = None

    # -- calls -----------------------------------------------------------------------------

    def _call_raw(self, what: str, fn: Callable[[], T], *, quiet: bool = False) -> T:
        """``fn()`` with hvac's and requests' errors turned into ours. ``quiet``: the call
        carries a secret, so the vault's own message is not repeated."""
        try:
            return fn()
        except (requests.ConnectionError, requests.Timeout) as exc:
            kind = "timed out" if isinstance(exc, requests.Timeout) else "unreachable"
            raise RetryableError(self.label, f"vault {kind} ({what})") from None
        except hvac.exceptions.VaultDown:
            raise RetryableError(self.label, f"vault sealed or down ({what})", status=503) from None
        except _RETRYABLE as exc:
            raise RetryableError(self.label, f"vault error ({what}): {_kind(exc)}") from None
        except hvac.exceptions.Unauthorized:
            raise AuthError(
                self.label, f"vault refused the credential ({what})", status=401
            ) from None
        except hvac.exceptions.Forbidden:
            raise AuthError(
                self.label,
                f"permission denied ({what}): check accessguard's vault policy "
                "(deploy/openbao/accessguard.hcl) and its token or role",
                status=403,
            ) from None
        except hvac.exceptions.VaultError as exc:
            detail = "" if quiet else f": {_message(exc)}"
            raise PermanentError(self.label, f"vault refused {what}{detail}") from None

    def call(self, what: str, fn: Callable[[hvac.Client], T], *, quiet: bool = False) -> T:
        """``fn(client)`` logged in; a login-based token that expired is renewed once."""
        try:
            try:
                client = self.client()
                answer = self._call_raw(what, lambda: fn(client), quiet=quiet)
            except AuthError:
                # A token file may have been rotated, a login token expired: log in again
                # (read the file again) on the next call, or right now for a login.
                self.relogin()
                if self.auth == "token":
                    raise
                client = self.client()
                answer = self._call_raw(what, lambda: fn(client), quiet=quiet)
        except AuthError as exc:
            self.login_state.failed(str(exc))
            raise
        self.login_state.succeeded()
        return answer

    def read(self, what: str, path: str) -> dict[str, Any] | None:
        """GET ``/v1/<path>``'s ``data``; None when the path does not exist (404)."""

        def get(client: hvac.Client) -> dict[str, Any] | None:
            try:
                answer = client.read(path)
            except hvac.exceptions.InvalidPath:
                return None
            if answer is None:
                return None
            data = answer.get("data")
            return data if isinstance(data, dict) else None

        return self.call(what, get)

    def write(self, what: str, path: str, *, quiet: bool = False, **body: Any) -> Any:
        return self.call(what, lambda c: c.write_data(path, data=body), quiet=quiet)

    def delete(self, what: str, path: str) -> None:
        def remove(client: hvac.Client) -> None:
            try:
                client.delete(path)
            except hvac.exceptions.InvalidPath:
                return

        self.call(what, remove)

    def list_keys(self, what: str, path: str) -> list[str]:
        def get(client: hvac.Client) -> list[str]:
            try:
                answer = client.list(path)
            except hvac.exceptions.InvalidPath:
                return []
            keys = ((answer or {}).get("data") or {}).get("keys") or []
            return [str(k) for k in keys]

        return self.call(what, get)

    @contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """Serialise read-modify-write of one group (or task) in this process."""
        with self._locks_lock:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            yield

    # -- KV v2 -------------------------------------------------------------------------------

    def kv_read(self, path: str) -> tuple[dict[str, Any], int] | None:
        """(data, version) of the KV v2 secret at ``path``; None if absent or deleted."""
        raw = self.read(f"read {self.mounts.kv}/{path}", f"{self.mounts.kv}/data/{path}")
        if raw is None or raw.get("data") is None:
            return None
        version = int((raw.get("metadata") or {}).get("version") or 0)
        return dict(raw["data"]), version

    def kv_write(self, path: str, data: Mapping[str, Any], *, cas: int | None = None) -> int:
        """Write a new version (``cas``: only if the current version is that one; 0 = only
        if absent); returns the new version. A check-and-set that lost is a RetryableError."""
        body: dict[str, Any] = {"data": dict(data)}
        if cas is not None:
            body["options"] = {"cas": cas}

        def put(client: hvac.Client) -> int:
            try:
                answer = client.write_data(f"{self.mounts.kv}/data/{path}", data=body)
            except hvac.exceptions.InvalidRequest as exc:
                if "check-and-set" in _message(exc):
                    raise RetryableError(
                        self.label, f"{path} changed meanwhile (check-and-set)"
                    ) from None
                raise
            return int(((answer or {}).get("data") or {}).get("version") or 0)

        return self.call(f"write {self.mounts.kv}/{path}", put, quiet=True)

    def kv_destroy_all(self, path: str) -> None:
        """Delete every version and the metadata of ``path`` (nothing recoverable)."""
        self.delete(f"destroy {self.mounts.kv}/{path}", f"{self.mounts.kv}/metadata/{path}")

    def kv_destroy_versions(self, path: str, versions: list[int]) -> None:
        if versions:
            self.write(
                f"destroy old versions of {self.mounts.kv}/{path}",
                f"{self.mounts.kv}/destroy/{path}",
                versions=versions,
            )

    def kv_list(self, path: str) -> list[str]:
        return self.list_keys(f"list {self.mounts.kv}/{path}", f"{self.mounts.kv}/metadata/{path}")

    # -- TOTP engine ---------------------------------------------------------------------------

    def totp_exists(self, key: str) -> bool:
        return self.read(f"read TOTP key {key}", f"{self.mounts.totp}/keys/{key}") is not None

    def totp_import(self, key: str, url: Secret) -> None:
        """Create key ``key`` from an ``otpauth://`` URI (the seed never leaves the call)."""
        self.write(
            f"import TOTP key {key}",
            f"{self.mounts.totp}/keys/{key}",
            quiet=True,
            url=url.reveal(),
        )

    def totp_generate(self, key: str, issuer: str, account_name: str) -> Secret:
        """A new key generated by the vault; the ``otpauth://`` URI it returns once (to be
        enrolled at the platform), as a Secret."""
        answer = self.write(
            f"generate TOTP key {key}",
            f"{self.mounts.totp}/keys/{key}",
            quiet=True,
            generate=True,
            exported=True,
            issuer=issuer,
            account_name=account_name,
            qr_size=0,
        )
        url = ((answer or {}).get("data") or {}).get("url")
        if not isinstance(url, str) or not url.startswith("otpauth://"):
            raise PermanentError(self.label, f"the vault returned no otpauth URI for {key}")
        return Secret(url)

    def totp_delete(self, key: str) -> None:
        self.delete(f"delete TOTP key {key}", f"{self.mounts.totp}/keys/{key}")

    def totp_validate(self, key: str, code: str) -> bool:
        """Whether ``code`` is valid for ``key`` now. The vault refuses a code used before
        (replay); that is an invalid code too."""

        def check(client: hvac.Client) -> bool:
            try:
                answer = client.write_data(f"{self.mounts.totp}/code/{key}", data={"code": code})
            except hvac.exceptions.InvalidRequest:
                return False  # "code already used", malformed code
            return bool(((answer or {}).get("data") or {}).get("valid"))

        return self.call(f"validate a code of {key}", check, quiet=True)

    # -- identity -------------------------------------------------------------------------------

    def entity(self, name: str) -> dict[str, Any] | None:
        return self.read(f"read entity {name}", f"identity/entity/name/{name}")

    def group(self, name: str) -> dict[str, Any] | None:
        return self.read(f"read group {name}", f"identity/group/name/{name}")

    def groups(self) -> list[str]:
        return self.list_keys("list groups", "identity/group/name")

    def write_group(self, name: str, policies: list[str], members: list[str]) -> None:
        self.call(
            f"write group {name}",
            lambda c: c.secrets.identity.create_or_update_group_by_name(
                name=name,
                group_type="internal",
                policies=policies,
                member_entity_ids=members,
                metadata={"managed_by": "accessguard"},
            ),
        )

    def delete_group(self, name: str) -> None:
        self.delete(f"delete group {name}", f"identity/group/name/{name}")

    def write_entity(self, name: str, **fields: Any) -> None:
        self.write(f"write entity {name}", f"identity/entity/name/{name}", **fields)

    def alias(self, name: str, entity_id: str, mount_accessor: str) -> None:
        self.write(
            f"bind a login to entity {entity_id}",
            "identity/entity-alias",
            name=name,
            canonical_id=entity_id,
            mount_accessor=mount_accessor,
        )

    def auth_mount_info(self, mount: str) -> tuple[str, str] | None:
        """(accessor, type) of the auth method mounted at ``mount``; None if there is none."""
        mounts = self.call("read auth mounts", lambda c: c.sys.list_auth_methods())
        data = mounts.get("data", mounts) if isinstance(mounts, dict) else {}
        entry = data.get(mount if mount.endswith("/") else f"{mount}/")
        if not isinstance(entry, dict) or "accessor" not in entry:
            return None
        return str(entry["accessor"]), str(entry.get("type") or "")

    def write_policy(self, name: str, hcl: str) -> None:
        # sys/policies/acl (hvac's create_or_update_policy writes the legacy sys/policy path,
        # which the least-privilege policy does not open).
        self.write(f"write policy {name}", f"sys/policies/acl/{name}", policy=hcl)

    def delete_policy(self, name: str) -> None:
        self.delete(f"delete policy {name}", f"sys/policies/acl/{name}")

    def health(self) -> None:
        """Raise unless the vault answers and accessguard's credential works (a read of a
        path its policy allows; 404 is fine). A renewable token past half its lifetime is
        renewed (a token file's token would otherwise expire under a long run; AppRole and
        Kubernetes logins are simply made again when theirs expires)."""
        self.kv_list("accessguard/tasks")
        if self.auth != "token":
            return
        me = self.read("look up its own token", "auth/token/lookup-self") or {}
        ttl = int(me.get("ttl") or 0)
        full = int(me.get("period") or me.get("creation_ttl") or 0)
        if me.get("renewable") and full and 0 < ttl < full / 2:
            self.call("renew its own token", lambda c: c.auth.token.renew_self())


def _kind(exc: hvac.exceptions.VaultError) -> str:
    return type(exc).__name__


def _message(exc: hvac.exceptions.VaultError) -> str:
    errors = exc.errors or []
    text = "; ".join(str(e) for e in errors) if errors else str(exc.args[0] if exc.args else "")
    # Never echo a seed or a URI back, whatever the vault put in its message.
    if "otpauth" in text.lower():
        return "the request was refused"
    return text[:300]
