"""The base of every fixed configuration section, and ``_doc`` (a field with its meaning).

Apart from :mod:`streams.config.models` so that a section can live in its own module
(:mod:`streams.config.alerting`, :mod:`streams.config.sources`) sharing it without an import
cycle, and the models module stays one screenful per section.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """A fixed section: unknown keys are refused; inputs never appear in error text."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, validate_default=True)


def _doc(text: str, **kwargs: Any) -> Any:
    return Field(description=text, **kwargs)
