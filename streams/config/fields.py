"""The value types of the configuration, and pydantic's errors turned into located problems.

Every fixed key's type is one of the annotated types below. They coerce exactly as the
hand-written loader did (``"yes"`` is true, ``"80.5"`` is not a port, ``nan`` is not a
timeout, a route list may be ``"a, b"`` in the environment) and say so in the same words, so
a message reads the same whether the value came from the YAML file or the environment.

Secrets stay accessguard's :class:`~streams.support.secrets.Secret` (not pydantic's
``SecretStr``): a ``file:``/``env:`` reference must be re-read at each use so a rotated
Kubernetes secret takes effect without a restart, which ``SecretStr`` (a value fixed at load)
cannot do. :data:`SecretValue` makes it a proper pydantic type: parsed from a string (or
kept when already a Secret), serialised and shown only as its reference, never its value,
and schema'd as a write-only password string, which is how ``SecretStr`` displays.
"""

from __future__ import annotations

import difflib
import math
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, PlainSerializer, PlainValidator, WithJsonSchema
from pydantic import ValidationError as PydanticValidationError

from streams.support.errors import ConfigProblem
from streams.support.secrets import Secret

_BOOL_TRUE = frozenset({"1", "true", "yes", "on"})
_BOOL_FALSE = frozenset({"0", "false", "no", "off", ""})


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _BOOL_TRUE:
        return True
    if text in _BOOL_FALSE:
        return False
    raise ValueError(f"expected true/false, got {value!r}")


def to_int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int | float | str):
        try:
            return int(value)
        except ValueError:  # not Python's "invalid literal for int() with base 10"
            raise ValueError(f"expected an integer, got {value!r}") from None
    raise ValueError(f"expected an integer, got {type(value).__name__}")


def to_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a number, got {value!r}")  # noqa: TRY004 - pydantic
    try:
        result = float(value)
    except ValueError:  # not Python's "could not convert string to float"
        raise ValueError(f"expected a number, got {value!r}") from None
    if not math.isfinite(result):
        # nan slips past every `< minimum` check; inf makes timeouts and sleeps endless
        raise ValueError(f"expected a finite number, got {value!r}")
    return result


def to_str(value: Any) -> str:
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError(f"expected a string, got {type(value).__name__}")


def to_names(value: Any) -> list[str]:
    """A list of names; from the environment, ``"a, b ,"`` is ``["a", "b"]``."""
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of names")
    return list(value)


def to_secret(value: Any) -> Secret:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise ValueError(  # noqa: TRY004 - pydantic reports ValueError only
            "expected a string (value, file:/path or env:NAME)"
        )
    return Secret.parse(value)


Bool = Annotated[bool, BeforeValidator(to_bool)]
Int = Annotated[int, BeforeValidator(to_int)]
Float = Annotated[float, BeforeValidator(to_float)]
Str = Annotated[str, BeforeValidator(to_str)]
Names = Annotated[list[str], BeforeValidator(to_names)]
#: ``worker.doors``: the HTTP doors a bare worker serves beside health and metrics.
Doors = Annotated[list[Literal["scim", "ssf"]], BeforeValidator(to_names)]
#: A secret: inline, ``env:NAME`` or ``file:/path`` (re-read at each use); see the docstring.
SecretValue = Annotated[
    Secret,
    PlainValidator(to_secret),
    PlainSerializer(lambda s: s.reference, return_type=str),
    WithJsonSchema({"type": "string", "format": "password", "writeOnly": True}),
]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the nearest valid name, or ``""`` when none is near."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def fields_at(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The field names of the model found at ``loc`` inside ``model`` (``[]`` when none)."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def message_of(error: Any, model: type[BaseModel]) -> str:
    """The reason of one pydantic error, in the loader's words (never the input of a secret:
    only bounds errors repeat the value, and those are numbers)."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    loc = error["loc"]
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "greater_than_equal":
        return f"must be >= {ctx['ge']}, got {error['input']}"
    if kind == "less_than_equal":
        return f"must be <= {ctx['le']}, got {error['input']}"
    if kind == "greater_than":
        return f"must be > {ctx['gt']}, got {error['input']}"
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        hint = did_you_mean(str(loc[-1]), fields_at(model, loc[:-1]))
        return "unknown key" + (hint or " (see the configuration reference in README)")
    if kind == "dict_type":
        return "expected a mapping of name -> settings"
    if kind in ("model_type", "model_attributes_type"):
        return "expected a mapping of settings"
    if kind == "literal_error":
        return f"must be {ctx.get('expected', 'one of the allowed values')}"
    return str(error["msg"])


def problems_from(
    exc: PydanticValidationError,
    model: type[BaseModel],
    *,
    prefix: str = "",
    locate: Callable[[str], str | None] = lambda key: None,
) -> list[ConfigProblem]:
    """Every error of ``exc`` as a :class:`ConfigProblem` with its dotted key (under
    ``prefix``) and where it was given (``locate(key)``)."""
    problems: list[ConfigProblem] = []
    for error in exc.errors(include_url=False):
        key = ".".join([*([prefix] if prefix else []), *(str(p) for p in error["loc"])])
        problems.append(ConfigProblem(key, message_of(error, model), locate(key)))
    return problems
