"""Okta: end a person's sessions, force MFA re-enrolment, disable/enable the account, expire
the password and revoke OAuth grants (Okta Users API), and read each back.

Vendor facts this module relies on (Okta Management API reference, Users and System Log):

* Lifecycle operations are ``POST /api/v1/users/{id}/lifecycle/<op>`` and synchronous: when
  they answer 200 the user's ``status`` has changed. ``suspend`` is allowed only for an
  ACTIVE user (-> SUSPENDED), ``unsuspend`` only for a SUSPENDED one (-> ACTIVE),
  ``deactivate`` for any user not already DEPROVISIONED (-> DEPROVISIONED; ``sendEmail=false``
  keeps the admin notification quiet), ``activate`` for a STAGED or DEPROVISIONED user (->
  PROVISIONED, or ACTIVE when the user has a password; ``sendEmail=false`` returns no
  activation e-mail). An operation on a user already in the target state (or any other
  disallowed transition) answers **400** ``E0000001``: we then read ``status`` back
  (``GET /api/v1/users/{id}``) and treat "already there" as done, so a redelivered action is
  harmless; anything else stays a permanent error.
* ``expire_password`` moves an ACTIVE user to PASSWORD_EXPIRED (again: no change).
* ``DELETE /api/v1/users/{id}/grants`` revokes every OAuth consent grant of the user (204,
  also when there is none).
* ``DELETE /api/v1/users/{id}/sessions?oauthTokens=true`` clears sessions and the tokens
  issued to the user; Okta writes a ``user.session.clear`` event to the System Log, which
  becomes searchable a few seconds later (the log is eventually consistent). It is read back
  with ``GET /api/v1/logs?since=...&filter=eventType eq "user.session.clear" and target.id eq
  "<id>"`` (the filter needs the Okta user id, not the login, hence a user read first).
* ``reset_factors`` removes all enrolled factors; ``GET /users/{id}/factors`` then lists no
  ACTIVE factor.

Scopes (OAuth service app): ``okta.users.manage`` for every Users API call (manage includes
read) and ``okta.logs.read`` for the System Log read-back (connectors/okta/credentials.py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import requests

from connectors.base.credentials import Credential
from connectors.base.http import setting_str
from connectors.base.kinds import PROVIDER_ACTIONS
from connectors.base.provider import (
    PENDING,
    UNVERIFIED,
    VERIFIED,
    ProviderBase,
    Request,
    Verification,
)
from connectors.okta.credentials import PROVIDER_SCOPES, okta_credential
from streams.model.records import Action
from streams.support.errors import ConfigError, PermanentError, ProviderError, RateLimitedError

#: Statuses Okta refuses to suspend from (suspend is for ACTIVE users only) but that can still
#: sign in or recover: in suspend mode such a user is deactivated instead.
SUSPEND_REFUSED = frozenset({"PASSWORD_EXPIRED", "LOCKED_OUT", "RECOVERY", "PROVISIONED"})
#: ``disable_mode`` values: suspend (reversible, keeps app assignments) or deactivate.
DISABLE_MODES = ("suspend", "deactivate")
#: The System Log search starts this many seconds before the action was sent (clock skew
#: between us and Okta).
LOG_SKEW = 5.0
USER = "/api/v1/users/{user_ref}"
JSON = {"Content-Type": "application/json"}


def classify_okta_error(provider: str, response: requests.Response) -> ProviderError | None:
    """Okta's 429 carries ``X-Rate-Limit-Reset`` (epoch seconds) rather than Retry-After."""
    if response.status_code != 429 or response.headers.get("Retry-After"):
        return None
    try:
        reset = float(response.headers.get("X-Rate-Limit-Reset", ""))
    except ValueError:
        return None
    return RateLimitedError(
        provider,
        "HTTP 429 rate limited (until X-Rate-Limit-Reset)",
        status=429,
        retry_after=max(0.0, reset - time.time()),
    )


def okta_time(epoch: float) -> str:
    """ISO 8601 in UTC with milliseconds, as the System Log's ``since`` takes it."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class OktaProvider(ProviderBase):
    """Okta Users API provider.

    ``revoke_sessions`` passes ``oauthTokens=true``: Okta's default keeps OIDC/OAuth tokens
    alive, which would leave an offboarded person's API clients working. Every call is
    idempotent at Okta or made so here (see the module: a 400 for "already in that state" is
    read back and counted as done), so a redelivered action is harmless.

    Settings: ``base_url`` (https://<org>.okta.com), ``dry_run``, ``disable_mode``
    (``suspend``, the default, or ``deactivate``) and one credential: an OAuth service app
    (``client_id``, ``private_key`` (a Secret PEM), ``key_id``, ``scopes``, default
    ``okta.users.manage`` + ``okta.logs.read``; connectors/okta/credentials.py) or the legacy
    ``token`` (SSWS API token, a Secret).
    """

    type: ClassVar[str] = "okta"
    supports: ClassVar[frozenset[str]] = PROVIDER_ACTIONS["okta"]
    verifies: ClassVar[frozenset[str]] = supports
    auth_scheme = "SSWS"

    def build_credentials(self, settings: Mapping[str, Any]) -> Credential | None:
        return okta_credential(
            settings,
            self.config_prefix,
            self.label,
            base_url=self.base_url,
            default_scopes=PROVIDER_SCOPES,
            required=not self.dry_run,
        )

    def _configure(self, settings: Mapping[str, Any]) -> None:
        key = f"{self.config_prefix}.disable_mode"
        self.disable_mode = setting_str(settings, "disable_mode", key, "suspend")
        if self.disable_mode not in DISABLE_MODES:
            raise ConfigError(key, f"must be one of {', '.join(DISABLE_MODES)}")

    # --- the states each lifecycle action leads to -------------------------------------

    def target_states(self, action: str) -> frozenset[str]:
        """The user ``status`` values that mean ``action`` took effect."""
        deactivate = self.disable_mode == "deactivate"
        if action == "disable_account":
            # A deactivated user is more than suspended: done either way in suspend mode.
            return frozenset({"DEPROVISIONED"} if deactivate else {"SUSPENDED", "DEPROVISIONED"})
        if action == "enable_account":
            # ACTIVE after unsuspend; PROVISIONED or ACTIVE after activate (the fallback for a
            # user deactivated because Okta would not suspend it)
            return frozenset({"ACTIVE", "PROVISIONED"})
        if action == "expire_password":
            return frozenset({"PASSWORD_EXPIRED"})
        return frozenset()

    # --- perform -----------------------------------------------------------------------

    def prepare(self, action: Action) -> Request:
        values = {"user_ref": self.path_value(action, "user_ref")}
        kind = action.action
        if kind == "revoke_sessions":
            return Request(
                "DELETE",
                f"{USER}/sessions",
                values,
                params={"oauthTokens": "true"},
                headers=JSON,
            )
        if kind == "revoke_tokens":
            return Request("DELETE", f"{USER}/grants", values, headers=JSON)
        if kind == "force_mfa_reenrolment":
            return Request("POST", f"{USER}/lifecycle/reset_factors", values, headers=JSON)
        if kind == "expire_password":
            return Request("POST", f"{USER}/lifecycle/expire_password", values, headers=JSON)
        deactivate = self.disable_mode == "deactivate"
        if kind == "disable_account":
            operation = "deactivate" if deactivate else "suspend"
        else:
            operation = "activate" if deactivate else "unsuspend"
        return Request(
            "POST",
            f"{USER}/lifecycle/{operation}",
            values,
            params={"sendEmail": "false"} if deactivate else None,
            headers=JSON,
            # 400 = not allowed from the user's state; execute() reads the state back.
            ok=(200, 400),
        )

    def execute(self, request: Request, action: Action) -> dict[str, Any]:
        response = self.send_request(request)
        if response.status_code != 400:
            return self.result(request, response)
        targets = self.target_states(action.action)
        status = self._user(action).get("status")
        fallback = self._fallback(action, status)
        if fallback is not None:
            # Okta suspends only an ACTIVE user and unsuspends only a SUSPENDED one: a user
            # whose password a leak response expired (PASSWORD_EXPIRED), or who is locked out
            # or in recovery, is deactivated instead (the only other way to stop sign-in);
            # a deactivated one is re-enabled by activation.
            done = self.send_request(fallback)
            return {**self.result(fallback, done), "fallback": fallback.request, "from": status}
        if status in targets:
            # Done before: Okta's 400 was "not allowed from this state", and the state is
            # the one asked for.
            return {
                **self.result(request, response),
                "status": 200,
                "answered": 400,
                "already": status,
            }
        raise PermanentError(
            self.label,
            f"HTTP 400 {_error_code(response)}: {action.action} is not allowed for a user "
            f"in status {status}",
            status=400,
        )

    def classify(self, provider: str, response: requests.Response) -> ProviderError | None:
        return classify_okta_error(provider, response)

    def _fallback(self, action: Action, status: object) -> Request | None:
        """The other lifecycle call when Okta refused suspend/unsuspend for ``status``."""
        kind = action.action
        if self.disable_mode != "suspend" or not isinstance(status, str):
            return None
        if kind == "disable_account" and status in SUSPEND_REFUSED:
            operation = "deactivate"
        elif kind == "enable_account" and status == "DEPROVISIONED":
            operation = "activate"
        else:
            return None
        return Request(
            "POST",
            f"{USER}/lifecycle/{operation}",
            {"user_ref": self.path_value(action, "user_ref")},
            params={"sendEmail": "false"},
            headers=JSON,
        )

    # --- read-back ----------------------------------------------------------------------

    def _get(self, template: str, action: Action, params: Mapping[str, str] | None = None) -> Any:
        values = {"user_ref": self.path_value(action, "user_ref")}
        response = self.send_request(Request("GET", template, values, params=params))
        try:
            return response.json()
        except ValueError:
            raise PermanentError(self.label, f"GET {template}: body is not JSON") from None

    def _user(self, action: Action) -> dict[str, Any]:
        user = self._get(USER, action)
        if not isinstance(user, dict):
            raise PermanentError(self.label, f"GET {USER}: not a user object")
        return user

    def verify(self, action: Action, result: Mapping[str, Any], issued_at: float) -> Verification:
        kind = action.action
        if kind not in self.verifies:
            return super().verify(action, result, issued_at)
        if kind == "force_mfa_reenrolment":
            factors = self._get(f"{USER}/factors", action)
            rows = factors if isinstance(factors, list) else []
            active = sorted(
                str(f.get("factorType"))
                for f in rows
                if isinstance(f, dict) and f.get("status") == "ACTIVE"
            )
            evidence = {"active_factors": len(active), "factor_types": active}
            if active:
                return Verification(UNVERIFIED, evidence, "the user has active factors")
            return Verification(VERIFIED, evidence, "no active factor")
        if kind == "revoke_tokens":
            grants = self._get(f"{USER}/grants", action)
            count = len(grants) if isinstance(grants, list) else 0
            if count:
                return Verification(UNVERIFIED, {"grants": count}, "the user has OAuth grants")
            return Verification(VERIFIED, {"grants": 0}, "no OAuth grant left")
        if kind == "revoke_sessions":
            return self._verify_session_clear(action, issued_at)
        status = self._user(action).get("status")
        targets = self.target_states(kind)
        evidence = {"status": status}
        if status in targets:
            return Verification(VERIFIED, evidence, f"user status is {status}")
        return Verification(
            UNVERIFIED, evidence, f"user status is {status}, not {' or '.join(sorted(targets))}"
        )

    def _verify_session_clear(self, action: Action, issued_at: float) -> Verification:
        user_id = self._user(action).get("id")
        if not isinstance(user_id, str) or not user_id or '"' in user_id:
            raise PermanentError(self.label, f"GET {USER}: no usable user id")
        events = self._get(
            "/api/v1/logs",
            action,
            params={
                "since": okta_time(issued_at - LOG_SKEW),
                "filter": f'eventType eq "user.session.clear" and target.id eq "{user_id}"',
                "limit": "1",
            },
        )
        found = [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []
        if not found:
            return Verification(
                PENDING, {"events": 0}, "no user.session.clear event in the System Log yet"
            )
        event = found[0]
        return Verification(
            VERIFIED,
            {"event_uuid": event.get("uuid"), "published": event.get("published")},
            "System Log has user.session.clear",
        )


def _error_code(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    code = body.get("errorCode") if isinstance(body, dict) else None
    return code if isinstance(code, str) else ""
