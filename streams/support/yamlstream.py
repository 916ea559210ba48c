"""Reading YAML as a stream of parser events, composing one value at a time.

``yaml.compose`` builds the node tree of the whole document before anything is checked:
about 18 KB per registry identity (every scalar keeps two marks) and, with PyYAML's
pure-Python parser, about 2 ms. :class:`Composer` takes the events of libyaml's parser
(:func:`loader_class`: PyYAML's ``CSafeLoader``, or the pure-Python parser with a warning
when PyYAML was built without libyaml) and composes the same marked nodes PyYAML would, so a
caller can compose one entry of a long list, check it with its line numbers and drop it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
import yaml
from yaml.composer import ComposerError
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from streams.support.yamlcheck import Entry

log = structlog.get_logger(__name__)

STR_TAG = Resolver.DEFAULT_SCALAR_TAG
SEQ_TAG = Resolver.DEFAULT_SEQUENCE_TAG
MAP_TAG = Resolver.DEFAULT_MAPPING_TAG
NULL_TAG = "tag:yaml.org,2002:null"

FAST_LOADER: type[Any] | None = getattr(yaml, "CSafeLoader", None)
"""PyYAML's loader whose parser is libyaml (None when PyYAML was built without it)."""


def loader_class() -> type[Any]:
    """The loader whose parser events the registry is read from: libyaml's when PyYAML has
    it, else the pure-Python one (about ten times slower), with a warning that says so."""
    if FAST_LOADER is not None:
        return FAST_LOADER
    log.warning(
        "registry.slow_yaml_parser",
        loader="yaml.SafeLoader",
        reason="PyYAML was installed without libyaml (yaml.CSafeLoader is missing)",
        effect="a registry of 100k identities takes minutes instead of seconds to load",
        fix="install a PyYAML wheel (they bundle libyaml) or libyaml-dev before building it",
    )
    return yaml.SafeLoader


class MarkedEntry(Entry):
    """:class:`~streams.support.yamlcheck.Entry` for composed entries: the same checks and
    messages, with string scalars (keys included, through :meth:`_scalar`) read straight from
    the node (no constructor call, and no constructor cache keeping every node of the file
    alive until the end)."""

    def _scalar(self, node: Node) -> Any:
        if not isinstance(node, ScalarNode):
            return node
        if node.tag == STR_TAG:
            return node.value  # what SafeConstructor builds for a str node
        try:
            return super()._scalar(node)
        finally:
            self.constructor.constructed_objects.clear()

    def present(self, name: str) -> bool:
        value = self.fields.get(name)
        return value is not None and not (
            value.tag == NULL_TAG or (type(value) is ScalarNode and value.tag.endswith(":null"))
        )

    def string(self, name: str, *, required: bool = True, max_len: int = 256) -> str | None:
        node = self.fields.get(name)
        if node is not None and node.tag == STR_TAG and type(node) is ScalarNode:
            text = node.value.strip()  # the common case of the checks below
            if text and len(text) <= max_len:
                return text  # type: ignore[no-any-return]  # PyYAML's nodes are untyped
        return super().string(name, required=required, max_len=max_len)

    def enum(
        self, name: str, choices: tuple[str, ...], *, default: str | None = None
    ) -> str | None:
        """As :meth:`Entry.enum`, answering with the string in ``choices`` (one copy of each
        role, kind, status... for a whole registry instead of one per entry)."""
        text = super().enum(name, choices, default=default)
        return choices[choices.index(text)] if text in choices else text


class Composer:
    """Composes marked YAML nodes from parser events, one value at a time, exactly as
    PyYAML's composer does (tags resolved the same way, anchors and aliases, the same
    errors), so an entry can be validated and dropped before the next is read."""

    def __init__(self, loader: Any) -> None:
        self.get: Callable[[], Any] = loader.get_event
        self.resolve: Callable[..., str] = loader.resolve
        self.anchors: dict[str, Node] = {}
        self._key_tags: dict[tuple[str, str | None, tuple[bool, bool]], str] = {}
        resolvers = loader.yaml_implicit_resolvers
        #: first characters of plain scalars that may be something other than a string
        self.maybe_typed: frozenset[str] | None = (
            None if None in resolvers else frozenset(resolvers)
        )

    def scalar(self, event: Any) -> ScalarNode:
        """The node of a scalar event without an anchor (most of any document)."""
        tag = event.tag
        value = event.value
        if tag is None or tag == "!":
            implicit = event.implicit
            if not implicit[0] or (
                self.maybe_typed is not None and value[:1] not in self.maybe_typed
            ):
                tag = STR_TAG  # what the resolver answers, without running its regexes
            else:
                tag = self.resolve(ScalarNode, value, implicit)
        return ScalarNode(tag, value, event.start_mark, event.end_mark, event.style)

    def node(self, event: Any) -> Node:
        """The node of the value that starts with ``event`` (its events are read here)."""
        kind = type(event)
        if kind is AliasEvent:
            if event.anchor not in self.anchors:
                raise ComposerError(
                    None, None, f"found undefined alias {event.anchor!r}", event.start_mark
                )
            return self.anchors[event.anchor]
        anchor = event.anchor
        if anchor is not None and anchor in self.anchors:
            raise ComposerError(
                f"found duplicate anchor {anchor!r}; first occurrence",
                self.anchors[anchor].start_mark,
                "second occurrence",
                event.start_mark,
            )
        node: Node
        tag = event.tag
        if kind is ScalarEvent:
            node = self.scalar(event)
        elif kind is SequenceStartEvent:
            node = SequenceNode(
                SEQ_TAG if tag is None or tag == "!" else tag,
                [],
                event.start_mark,
                None,
                event.flow_style,
            )
        elif kind is MappingStartEvent:
            node = MappingNode(
                MAP_TAG if tag is None or tag == "!" else tag,
                [],
                event.start_mark,
                None,
                event.flow_style,
            )
        else:
            raise ComposerError(None, None, f"unexpected {kind.__name__}", event.start_mark)
        if anchor is not None:
            self.anchors[anchor] = node  # before the children: they may refer to it
        if kind is ScalarEvent:
            return node
        get, scalar, compose = self.get, self.scalar, self.node
        # scalars (most of any document) skip the anchor and tag dispatch above
        if kind is SequenceStartEvent:
            items = node.value
            while (child_kind := type(child := get())) is not SequenceEndEvent:
                if child_kind is ScalarEvent and child.anchor is None:
                    items.append(scalar(child))
                else:
                    items.append(compose(child))
        else:
            pairs = node.value
            key_node: Node
            key_tags, typed = self._key_tags, self.maybe_typed
            while (key_kind := type(key := get())) is not MappingEndEvent:
                if key_kind is ScalarEvent and key.anchor is None:
                    # the same few keys in every entry: their resolved tags are remembered
                    cached = (key.value, key.tag, key.implicit)
                    tag = key_tags.get(cached)
                    if tag is None:
                        key_node = scalar(key)
                        if len(key_tags) < 1024:
                            key_tags[cached] = key_node.tag
                    else:
                        key_node = ScalarNode(
                            tag, key.value, key.start_mark, key.end_mark, key.style
                        )
                else:
                    key_node = compose(key)
                value_kind = type(value := get())
                if value_kind is ScalarEvent and value.anchor is None and value.tag is None:
                    # scalar() inlined for the commonest event of all (an untagged value)
                    text = value.value
                    if value.implicit[0] and (typed is None or text[:1] in typed):
                        tag = self.resolve(ScalarNode, text, value.implicit)
                    else:
                        tag = STR_TAG
                    pairs.append(
                        (
                            key_node,
                            ScalarNode(tag, text, value.start_mark, value.end_mark, value.style),
                        )
                    )
                elif value_kind is ScalarEvent and value.anchor is None:
                    pairs.append((key_node, scalar(value)))
                else:
                    pairs.append((key_node, compose(value)))
            child = key
        node.end_mark = child.end_mark
        return node
