"""A configurable REST provider for social-media management platforms.

Each platform's admin API differs, so the calls are declared in configuration instead of
code: one entry per action kind with a method, a path template and an optional JSON body
template. Templates may use only these fields: ``{user_ref}``, ``{account_handle}``,
``{platform}``, ``{role}``, ``{identity}``, ``{account}``.

An entry may also say how to read the action back: ``verify: {method: GET, path: <template>,
expect: {"dotted.json.path": value, ...}}``. The read-back GETs the path (same template
fields) and is VERIFIED when every expected field of the JSON answer equals its value,
PENDING otherwise (the platform may apply the change a little later; the evidence shows the
values read); an action without ``verify`` is "acknowledged, not verifiable".
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote

from connectors.base.http import is_dot_segment, setting_str
from connectors.base.provider import (
    PENDING,
    VERIFIED,
    ProviderBase,
    Request,
    Verification,
)
from streams.model.records import ACTION_KINDS, Action
from streams.support.errors import ConfigError, PermanentError

TEMPLATE_FIELDS = frozenset(
    {"user_ref", "account_handle", "platform", "role", "identity", "account"}
)
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
#: A read-back only reads.
VERIFY_METHODS = frozenset({"GET"})
#: Evidence shows at most this many characters of a value read back.
MAX_EVIDENCE = 200
_FORMATTER = string.Formatter()


def _template_fields(template: str, config_key: str) -> set[str]:
    """The fields a template uses; anything but a plain known name is a config error.

    ``str.format`` would otherwise allow ``{user_ref.__class__}`` style attribute access.
    """
    used: set[str] = set()
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ConfigError(config_key, f"invalid template: {exc}") from None
    for _, field_name, spec, conversion in parsed:
        if field_name is None:
            continue
        if field_name not in TEMPLATE_FIELDS or spec or conversion:
            raise ConfigError(
                config_key,
                f"unknown template field {{{field_name}}}; use {sorted(TEMPLATE_FIELDS)}",
            )
        used.add(field_name)
    return used


def _body_fields(body: Any, config_key: str) -> set[str]:
    if isinstance(body, str):
        return _template_fields(body, config_key)
    if isinstance(body, Mapping):
        return set().union(*(_body_fields(v, config_key) for v in body.values()))
    if isinstance(body, list):
        return set().union(*(_body_fields(v, config_key) for v in body))
    return set()


def _render_body(body: Any, values: Mapping[str, str]) -> Any:
    if isinstance(body, str):
        return body.format_map(values)
    if isinstance(body, Mapping):
        return {str(k): _render_body(v, values) for k, v in body.items()}
    if isinstance(body, list):
        return [_render_body(v, values) for v in body]
    return body


def dotted(body: Any, path: str) -> Any:
    """The value at ``a.b.0.c`` in a JSON document (list items by index), or None."""
    value = body
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _shown(value: Any) -> Any:
    """A value read back as evidence: scalars as they are, anything else cut short."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_EVIDENCE else text[:MAX_EVIDENCE] + "..."


def _same(read: Any, expected: Any) -> bool:
    """JSON equality: ``true`` is not ``1``."""
    if isinstance(read, bool) or isinstance(expected, bool):
        return type(read) is type(expected) and read == expected
    return bool(read == expected)


@dataclass(frozen=True, slots=True)
class _Verify:
    method: str
    path: str
    expect: Mapping[str, Any]
    fields: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    path: str
    body: Any
    ok: frozenset[int] | None
    fields: frozenset[str]
    #: the fields used in ``path`` (each must stay one path segment, never a dot segment)
    path_fields: frozenset[str] = frozenset()
    verify: _Verify | None = None


class GenericRestProvider(ProviderBase):
    """Calls a platform's REST admin API as configured per action kind.

    Every request carries ``Idempotency-Key: <action.idempotency_key>`` so a platform that
    honours it collapses a redelivered action into one effect.

    Settings: ``base_url``, ``token`` (Secret), ``auth_header`` (default ``Authorization``),
    ``auth_scheme`` (default ``Bearer``; empty sends the raw token), ``dry_run`` and
    ``actions``: ``{kind: {method, path, body?, ok?, verify?}}`` where ``ok`` optionally
    lists the statuses that mean success (default any 2xx) and ``verify`` the read-back
    ``{method: GET, path, expect}`` (see the module).
    """

    type: ClassVar[str] = "generic"
    #: What it can be configured for; what it *is* configured for is :attr:`configured`.
    supports: ClassVar[frozenset[str]] = frozenset(ACTION_KINDS)

    def _configure(self, settings: Mapping[str, Any]) -> None:
        prefix = self.config_prefix
        self.auth_header = setting_str(
            settings, "auth_header", f"{prefix}.auth_header", "Authorization"
        )
        self.auth_scheme = setting_str(settings, "auth_scheme", f"{prefix}.auth_scheme", "Bearer")
        if not self.auth_header.strip():
            raise ConfigError(f"{prefix}.auth_header", "must not be empty")
        self._calls = self._parse_actions(settings.get("actions"), f"{prefix}.actions")

    @property
    def configured(self) -> frozenset[str]:
        return frozenset(self._calls)

    @staticmethod
    def _parse_actions(raw: Any, key: str) -> dict[str, _Call]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            raise ConfigError(key, "must map action kinds to {method, path, body}")
        calls: dict[str, _Call] = {}
        for kind, spec in raw.items():
            ckey = f"{key}.{kind}"
            if kind not in ACTION_KINDS:
                raise ConfigError(
                    ckey, f"unknown action kind; use one of {', '.join(ACTION_KINDS)}"
                )
            if not isinstance(spec, Mapping):
                raise ConfigError(ckey, "must be a mapping with method and path")
            method = str(spec.get("method", "")).upper()
            if method not in METHODS:
                raise ConfigError(f"{ckey}.method", f"must be one of {', '.join(sorted(METHODS))}")
            path = spec.get("path")
            if not isinstance(path, str) or not path.startswith("/"):
                raise ConfigError(f"{ckey}.path", "must be a path template starting with /")
            fields = _template_fields(path, f"{ckey}.path")
            path_fields = frozenset(fields)
            body = spec.get("body")
            if body is not None:
                if not isinstance(body, Mapping):
                    raise ConfigError(f"{ckey}.body", "must be a JSON object template")
                fields |= _body_fields(body, f"{ckey}.body")
            ok_raw = spec.get("ok")
            ok: frozenset[int] | None = None
            if ok_raw is not None:
                if not isinstance(ok_raw, list) or not all(
                    isinstance(s, int) and 200 <= s < 500 for s in ok_raw
                ):
                    raise ConfigError(f"{ckey}.ok", "must be a list of HTTP status codes")
                ok = frozenset(ok_raw)
            verify = GenericRestProvider._parse_verify(spec.get("verify"), f"{ckey}.verify")
            calls[kind] = _Call(method, path, body, ok, frozenset(fields), path_fields, verify)
        return calls

    @staticmethod
    def _parse_verify(raw: Any, key: str) -> _Verify | None:
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise ConfigError(key, "must be a mapping with method, path and expect")
        method = str(raw.get("method", "GET")).upper()
        if method not in VERIFY_METHODS:
            raise ConfigError(f"{key}.method", "must be GET (a read-back only reads)")
        path = raw.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigError(f"{key}.path", "must be a path template starting with /")
        fields = _template_fields(path, f"{key}.path")
        expect = raw.get("expect")
        if not isinstance(expect, Mapping) or not expect:
            raise ConfigError(f"{key}.expect", "must map dotted JSON paths to expected values")
        for name in expect:
            if not isinstance(name, str) or not all(name.split(".")):
                raise ConfigError(f"{key}.expect", f"{name!r} is not a dotted JSON path (a.b.c)")
        return _Verify(method, path, dict(expect), frozenset(fields))

    def check_supported(self, action: Action) -> None:
        if action.action not in self._calls:
            raise PermanentError(
                self.label,
                f"action {action.action!r} is not configured; "
                f"add {self.config_prefix}.actions.{action.action}",
            )

    def _values(
        self, action: Action, fields: frozenset[str], path_fields: frozenset[str]
    ) -> dict[str, str]:
        """The raw values of a template's ``fields`` for ``action`` (PermanentError when one
        is missing, or when one used in the path is a dot segment)."""
        values: dict[str, str] = {}
        for name in fields:
            value = (
                action.account
                if name == "account"
                else (action.identity if name == "identity" else action.params.get(name))
            )
            if value is None or value == "":
                raise PermanentError(
                    self.label,
                    f"template field {{{name}}} has no value for {action.action}; "
                    "fix the registry entry",
                )
            if name in path_fields and is_dot_segment(str(value).strip()):
                raise PermanentError(
                    self.label,
                    f"template field {{{name}}} is a dot segment ('.' or '..'), not an id; "
                    "fix the registry entry",
                )
            values[name] = str(value)
        return values

    def prepare(self, action: Action) -> Request:
        call = self._calls[action.action]
        values = self._values(action, call.fields, call.path_fields)
        # Path values are encoded one segment at a time so a handle like "a/b" or "../x"
        # cannot reach another endpoint (quote() leaves "." alone, hence the dot-segment
        # check above and the shape check in the HTTP layer); body values are JSON and need
        # no encoding.
        return Request(
            call.method,
            call.path,
            {k: quote(v, safe="") for k, v in values.items()},
            json=_render_body(call.body, values) if call.body is not None else None,
            headers={"Idempotency-Key": action.idempotency_key},
            ok=call.ok if call.ok is not None else range(200, 300),
        )

    # --- read-back ----------------------------------------------------------------------

    def can_verify(self, action: Action) -> bool:
        call = self._calls.get(action.action)
        return call is not None and call.verify is not None

    def verify(self, action: Action, result: Mapping[str, Any], issued_at: float) -> Verification:
        call = self._calls.get(action.action)
        check = call.verify if call is not None else None
        if check is None:
            return super().verify(action, result, issued_at)
        values = self._values(action, check.fields, check.fields)
        response = self.send_request(
            Request(check.method, check.path, {k: quote(v, safe="") for k, v in values.items()})
        )
        try:
            body = response.json()
        except ValueError:
            raise PermanentError(self.label, f"GET {check.path}: body is not JSON") from None
        read = {name: dotted(body, name) for name in check.expect}
        evidence = {name: _shown(value) for name, value in read.items()}
        differ = sorted(n for n, want in check.expect.items() if not _same(read[n], want))
        if differ:
            return Verification(PENDING, evidence, f"not as expected yet: {', '.join(differ)}")
        return Verification(VERIFIED, evidence, "every expected field matches")
