"""Secrets are typed, so they cannot leak through repr, logs, alerts or the audit trail."""

from __future__ import annotations

import os
from pathlib import Path


class Secret:
    """A secret value. ``str()``/``repr()`` never show it; call :meth:`reveal` at the point of use.

    A secret can be given inline (env override), or as ``file:/path`` / ``env:NAME`` so that
    Kubernetes-mounted files and rotated tokens are re-read at use time.
    """

    __slots__ = ("_source", "_value")

    def __init__(self, value: str | None = None, *, source: str | None = None) -> None:
        self._value = value
        self._source = source

    @classmethod
    def parse(cls, raw: str) -> Secret:
        if raw.startswith("file:"):
            return cls(source=raw)
        if raw.startswith("env:"):
            return cls(source=raw)
        return cls(raw)

    def reveal(self) -> str:
        if self._source is None:
            return self._value or ""
        kind, _, where = self._source.partition(":")
        if kind == "file":
            return Path(where).read_text(encoding="utf-8").strip()
        return os.environ.get(where, "")

    def problem(self) -> str | None:
        """Why the secret cannot be used now, or None when it resolves to a non-empty value.
        Never says the value; an unset ``env:`` variable, a missing or empty file, and an
        empty inline value are problems (each would make every use fail later, quietly)."""
        if self._source is None:
            return None if self._value else "it is empty"
        kind, _, where = self._source.partition(":")
        if kind == "env":
            if where not in os.environ:
                return f"environment variable {where} is not set"
            return None if os.environ[where].strip() else f"environment variable {where} is empty"
        try:
            value = Path(where).read_text(encoding="utf-8").strip()
        except OSError as exc:
            return f"cannot read {where}: {exc.strerror or type(exc).__name__}"
        except UnicodeDecodeError:
            return f"{where} is not UTF-8 text"
        return None if value else f"{where} is empty"

    @property
    def can_appear_later(self) -> bool:
        """A ``file:`` secret may be mounted (or rotated in) after start; ``env:`` may not."""
        return bool(self._source and self._source.startswith("file:"))

    def __bool__(self) -> bool:
        return bool(self._source) or bool(self._value)

    @property
    def reference(self) -> str:
        """A printable description of where the secret comes from (never the value)."""
        return self._source or ("<inline>" if self._value else "<unset>")

    def __repr__(self) -> str:
        return f"Secret({self.reference})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and (self._source, self._value) == (
            other._source,
            other._value,
        )

    def __hash__(self) -> int:
        return hash((self._source, self._value))
