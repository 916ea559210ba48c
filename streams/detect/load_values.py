"""Typed reads of rule YAML nodes shared by the rule and test-case parsers: numbers, string
lists, plain data, and condition lists checked against the field tables
(:data:`~streams.detect.fields.FIELDS`, :data:`~streams.detect.fields.LEAK_FIELDS`). Every
problem is added to the file's :class:`~streams.support.yamlcheck.Problems` as ``path:line``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node

from streams.detect.fields import FIELDS, FieldSpec
from streams.detect.model import OPS, Condition
from streams.support.times import format_time
from streams.support.yamlcheck import Entry, Problems, line_of

_COND_KEYS = {"field", "op", "value"}


def read_number(
    e: Entry, name: str, *, required: bool, minimum: float, integer: bool = False
) -> float | None:
    if not e.present(name):
        if required:
            e.error(e.line, f"{name}: required")
        return None
    node = e.fields[name]
    value = e._scalar(node)
    if isinstance(value, bool) or not isinstance(value, int | float):
        e.error(node, f"{name}: expected a number")
        return None
    if integer and not isinstance(value, int):
        e.error(node, f"{name}: expected a whole number")
        return None
    if value < minimum:
        e.error(node, f"{name}: must be at least {minimum:g}")
        return None
    return float(value)


def read_strings(e: Entry, name: str, *, required: bool) -> list[tuple[str, Node]] | None:
    nodes = e.seq(name, required=required)
    if nodes is None:
        return None
    out: list[tuple[str, Node]] = []
    for node in nodes:
        text = e.item_string(name, node)
        if text is not None:
            out.append((text, node))
    return out


def plain_data(value: Any) -> Any:
    """YAML-constructed data as JSON-like data (timestamps and dates as ISO strings)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return format_time(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_data(v) for v in value]
    return value


def _check_value(e: Entry, node: Node, *, spec: FieldSpec, op: str, value: Any) -> bool:
    def bad(message: str) -> bool:
        e.error(node, message)
        return False

    def scalar_ok(v: Any) -> bool:
        if spec.type == "bool":
            return isinstance(v, bool) or bad(f"expected true or false (got {v!r})")
        if spec.type == "num":
            ok = isinstance(v, int | float) and not isinstance(v, bool)
            return ok or bad(f"expected a number (got {v!r})")
        if not isinstance(v, str):
            return bad(f"expected a string (got {v!r})")
        if spec.choices is not None and v not in spec.choices:
            return bad(f"{v!r} is not one of {', '.join(spec.choices)}")
        return True

    if spec.type == "list":
        if op == "exists":
            return isinstance(value, bool) or bad("exists needs true or false")
        if op != "contains":
            return bad(f"{op}: a list field supports contains and exists only")
        if not isinstance(value, str) or not value:
            return bad("contains needs a non-empty string")
        return scalar_ok(value)
    if op in ("eq", "ne"):
        return value is None or scalar_ok(value)
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            return bad(f"{op} needs a non-empty list")
        return all([v is None or scalar_ok(v) for v in value])  # noqa: C419 - report every bad value
    if op == "exists":
        return isinstance(value, bool) or bad("exists needs true or false")
    if op in ("gte", "lte"):
        if spec.type == "role":
            return scalar_ok(value)
        if spec.type != "num":
            return bad(f"{op} needs a numeric or role field")
        return scalar_ok(value)
    if op in ("contains", "matches"):
        if spec.type != "str":
            return bad(f"{op} needs a text field")
        if not isinstance(value, str) or not value:
            return bad(f"{op} needs a non-empty string")
        if op == "matches":
            try:
                re.compile(value)
            except re.error as exc:
                return bad(f"invalid regular expression: {exc}")
        return True
    return bad(f"unknown op {op!r}")  # pragma: no cover - op validated before


def read_conditions(
    e: Entry,
    name: str,
    problems: Problems,
    constructor: SafeConstructor,
    *,
    required: bool,
    fields: Mapping[str, FieldSpec] = FIELDS,
) -> tuple[tuple[Condition, ...], bool]:
    nodes = e.seq(name, required=required)
    if nodes is None:
        return (), not (required or e.present(name))
    ok = True
    out: list[Condition] = []
    for index, node in enumerate(nodes):
        where = f"{e.where}: {name}[{index}]"
        if not isinstance(node, MappingNode):
            problems.add(line_of(node), f"{where}: expected a mapping with field, op, value")
            ok = False
            continue
        c = Entry(node, where, _COND_KEYS, problems, constructor)
        fname = c.string("field", max_len=64)
        op = c.enum("op", OPS)
        spec = fields.get(fname or "")
        if fname is not None and spec is None:
            c.error(
                c.fields["field"],
                f"field: unknown field {fname!r} (known: {', '.join(sorted(fields))})",
            )
        value: Any = None
        if "value" not in c.fields:
            c.error(c.line, "value: required (null is allowed with eq and ne)")
            op = None
        elif c.present("value"):
            value = plain_data(c.constructor.construct_object(c.fields["value"], deep=True))
        if fname is None or op is None or spec is None:
            ok = False
            continue
        if not _check_value(c, c.fields.get("value", node), spec=spec, op=op, value=value):
            ok = False
            continue
        out.append(Condition(fname, op, value, line_of(node)))
    return tuple(out), ok
