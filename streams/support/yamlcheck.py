"""YAML checking with line numbers, shared by the registry and rule loaders.

Files are composed into YAML nodes (never loaded straight into Python objects) so every
problem can carry ``path:line``, and problems are collected rather than raised so an operator
sees the whole list at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from streams.support.errors import ValidationError
from streams.support.times import parse_time

#: Registry ids: letters, digits and ``._@+-`` (no ``:``, so change keys split unambiguously).
REG_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+\-]{0,127}$")


def line_of(node: Node) -> int:
    return int(node.start_mark.line) + 1


class Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self._items: list[tuple[int, int, str]] = []

    def add(self, line: int, message: str) -> None:
        self._items.append((line, len(self._items), message))

    def render(self) -> list[str]:
        return [f"{self.source}:{line}: {msg}" for line, _, msg in sorted(self._items)]

    def __bool__(self) -> bool:
        return bool(self._items)


class Entry:
    """One YAML mapping with typed field readers that record problems instead of raising."""

    def __init__(
        self,
        node: MappingNode,
        where: str,
        allowed: set[str],
        problems: Problems,
        constructor: SafeConstructor,
    ) -> None:
        self.node = node
        self.where = where
        self.problems = problems
        self.constructor = constructor
        self.fields: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = self._scalar(key_node)
            if not isinstance(key, str):
                self.error(key_node, f"keys must be strings (got {key!r})")
                continue
            if key not in allowed:
                self.error(key_node, f"unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")
                continue
            if key in self.fields:
                self.error(key_node, f"{key}: given twice")
                continue
            self.fields[key] = value_node

    @property
    def line(self) -> int:
        return line_of(self.node)

    def error(self, node: Node | int, message: str) -> None:
        line = node if isinstance(node, int) else line_of(node)
        self.problems.add(line, f"{self.where}: {message}")

    def _scalar(self, node: Node) -> Any:
        if not isinstance(node, ScalarNode):
            return node
        try:
            return self.constructor.construct_object(node, deep=True)
        except (ConstructorError, ValueError):
            return node.value

    def present(self, name: str) -> bool:
        value = self.fields.get(name)
        return value is not None and not (
            isinstance(value, ScalarNode) and value.tag.endswith(":null")
        )

    def string(self, name: str, *, required: bool = True, max_len: int = 256) -> str | None:
        if not self.present(name):
            if required:
                self.error(self.line, f"{name}: required")
            return None
        node = self.fields[name]
        value = self._scalar(node)
        if isinstance(value, bool) or not isinstance(value, str | int):
            self.error(node, f"{name}: expected a string")
            return None
        text = str(value).strip()
        if not text:
            self.error(node, f"{name}: must not be empty")
            return None
        if len(text) > max_len:
            self.error(node, f"{name}: longer than {max_len} characters")
            return None
        return text

    def ident(self, name: str, *, required: bool = True) -> str | None:
        text = self.string(name, required=required, max_len=128)
        if text is not None and not REG_ID_RE.match(text):
            self.error(self.fields[name], f"{name}: {text!r} is not an id (letters, digits, ._@+-)")
            return None
        return text

    def enum(
        self, name: str, choices: tuple[str, ...], *, default: str | None = None
    ) -> str | None:
        if not self.present(name) and default is not None:
            return default
        text = self.string(name)
        if text is not None and text not in choices:
            self.error(
                self.fields[name], f"{name}: must be one of {', '.join(choices)} (got {text!r})"
            )
            return None
        return text

    def boolean(self, name: str, *, default: bool) -> bool:
        if not self.present(name):
            return default
        value = self._scalar(self.fields[name])
        if not isinstance(value, bool):
            self.error(self.fields[name], f"{name}: expected true or false")
            return default
        return value

    def time(self, name: str, *, required: bool) -> datetime | None:
        if not self.present(name):
            if required:
                self.error(self.line, f"{name}: required")
            return None
        node = self.fields[name]
        value = self._scalar(node)
        if isinstance(value, datetime):
            if value.tzinfo is None:
                self.error(node, f"{name}: timestamp needs a zone (Z or +hh:mm)")
                return None
            return value.astimezone(UTC)
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        if isinstance(value, str):
            try:
                return parse_time(value, name)
            except ValidationError as exc:
                self.error(node, exc.reason)
                return None
        self.error(node, f"{name}: expected a date (YYYY-MM-DD) or an ISO-8601 timestamp")
        return None

    def seq(self, name: str, *, required: bool) -> list[Node] | None:
        if not self.present(name):
            if required:
                self.error(self.line, f"{name}: required")
            return None
        node = self.fields[name]
        if not isinstance(node, SequenceNode):
            self.error(node, f"{name}: expected a list")
            return None
        return list(node.value)

    def item_string(self, name: str, node: Node) -> str | None:
        value = self._scalar(node)
        if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
            self.error(node, f"{name}: items must be non-empty strings")
            return None
        return str(value).strip()

    def mapping(self, name: str) -> MappingNode | None:
        if not self.present(name):
            return None
        node = self.fields[name]
        if not isinstance(node, MappingNode):
            self.error(node, f"{name}: expected a mapping")
            return None
        return node


def entries(
    root: dict[str, Node], section: str, problems: Problems
) -> Iterator[tuple[int, MappingNode]]:
    node = root.get(section)
    if node is None or (isinstance(node, ScalarNode) and node.tag.endswith(":null")):
        return
    if not isinstance(node, SequenceNode):
        problems.add(line_of(node), f"{section}: expected a list")
        return
    for index, item in enumerate(node.value):
        if not isinstance(item, MappingNode):
            problems.add(line_of(item), f"{section}[{index}]: expected a mapping")
            continue
        yield index, item


def label(section: str, index: int, item: MappingNode, id_key: str = "id") -> str:
    for key_node, value_node in item.value:
        if (
            isinstance(key_node, ScalarNode)
            and key_node.value == id_key
            and isinstance(value_node, ScalarNode)
        ):
            return f"{section}[{index}] {value_node.value}"
    return f"{section}[{index}]"


def compose(text: str, problems: Problems) -> Node | None:
    """Compose YAML text into nodes; a syntax error is recorded with its line (returns None)."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)  # type: ignore[no-any-return]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else 1
        problems.add(line, f"YAML syntax error: {exc.problem or exc.context}")
    except yaml.YAMLError as exc:
        problems.add(1, f"YAML error: {exc}")
    return None
