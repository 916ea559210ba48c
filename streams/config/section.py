"""The base of every fixed configuration section, apart from :mod:`streams.config.models` so
that sections kept in their own modules (:mod:`streams.config.alerting`) share it without an
import cycle."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """A fixed section: unknown keys are refused; inputs never appear in error text."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, validate_default=True)


def _doc(text: str, **kwargs: Any) -> Any:
    return Field(description=text, **kwargs)
