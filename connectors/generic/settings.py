"""Settings of the generic REST provider: request templates per action kind.

``actions`` has one optional entry per action kind (:data:`ACTION_KINDS`), so a misspelt
kind is refused with the nearest valid one; each entry is ``{method, path, body?, ok?,
verify?}`` where ``verify`` is the read-back ``{method: GET, path, expect}``. The template
fields themselves are checked by the provider's constructor.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from connectors.base.settings import HttpProviderSettings, Text
from connectors.generic.provider import METHODS, VERIFY_METHODS
from streams.config import Str
from streams.model.records import ACTION_KINDS


def _path_template(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must be a path template starting with /")
    return value


class GenericVerify(BaseModel):
    """A read-back: ``GET`` ``path`` and compare ``expect`` (dotted JSON path -> value)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    method: Str = Field("GET", description="HTTP method of the read (GET only)")
    path: Str = Field(description="path template, e.g. /v1/users/{user_ref}")
    expect: dict[str, Any] = Field(
        description='{"dotted.json.path": value} that must all be equal when done'
    )

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if value.upper() not in VERIFY_METHODS:
            raise ValueError("must be GET (a read-back only reads)")
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _path_template(value)

    @field_validator("expect")
    @classmethod
    def _expect(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("must name at least one field")
        for name in value:
            if not all(name.split(".")):
                raise ValueError(f"{name!r} is not a dotted JSON path (a.b.c)")
        return value


class GenericCall(BaseModel):
    """One request template: ``method``, ``path`` (starts with /), ``body``, ``ok``,
    ``verify``."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    method: Str = Field(description="HTTP method")
    path: Str = Field(description="path template, e.g. /v1/users/{user_ref}/logout")
    body: dict[str, Any] | None = Field(None, description="JSON object template")
    ok: list[int] | None = Field(None, description="statuses meaning success (else any 2xx)")
    verify: GenericVerify | None = Field(None, description="read-back {method, path, expect}")

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if value.upper() not in METHODS:
            raise ValueError(f"must be one of {', '.join(sorted(METHODS))}")
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _path_template(value)

    @field_validator("ok")
    @classmethod
    def _ok(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and not all(200 <= s < 500 for s in value):
            raise ValueError("must be a list of HTTP status codes")
        return value


#: One optional :class:`GenericCall` per action kind; nothing else.
GenericActions: type[BaseModel] = create_model(
    "GenericActions",
    __config__=ConfigDict(extra="forbid", hide_input_in_errors=True),
    **dict.fromkeys(ACTION_KINDS, (GenericCall | None, None)),  # type: ignore[call-overload]
)


class GenericProviderSettings(HttpProviderSettings):
    """``base_url``, ``token``, ``auth_header`` (default ``Authorization``), ``auth_scheme``
    (default ``Bearer``; empty sends the raw token), ``dry_run``, ``actions``."""

    auth_header: Text = Field("Authorization", description="header carrying the token")
    auth_scheme: Str = Field("Bearer", description="scheme before the token (may be empty)")
    actions: GenericActions | None = Field(  # type: ignore[valid-type]
        None, description="{action kind: {method, path, body?, ok?, verify?}}"
    )
