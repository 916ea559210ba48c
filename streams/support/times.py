"""Timestamps on the wire: ISO-8601 in (a zone required), RFC 3339 UTC with milliseconds out.

Support code because every layer parses or writes them (records, YAML checks, configuration).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from streams.support.errors import ValidationError


def parse_time(value: Any, field_name: str) -> datetime:
    """Parse an ISO-8601 timestamp (``Z`` or offset) into an aware UTC datetime.

    Naive timestamps are rejected: an HR system that omits the zone would schedule
    offboardings hours off.
    """
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{field_name}: expected an ISO-8601 timestamp string")
    if value[-1] == "Z" and len(value) > 19 and value[10] == "T":
        # the canonical form (format_time's, every topic's): fromisoformat reads the Z itself
        # since 3.11, already UTC (~1 us less per login event)
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is UTC:
                return parsed
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"{field_name}: not an ISO-8601 timestamp: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise ValidationError(f"{field_name}: timestamp needs a zone (Z or +hh:mm)")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC (was a 500)
        raise ValidationError(f"{field_name}: out of range: {value[:40]!r}") from None


def format_time(value: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with milliseconds."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
