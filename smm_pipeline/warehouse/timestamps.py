"""Timestamps entering the warehouse must say which instant they mean.

A naive datetime would be read in the session's time zone; we refuse it rather than guess,
because a silent shift of hours corrupts every duration and daily total downstream.
"""

from __future__ import annotations

from datetime import UTC, datetime


def require_aware(value: datetime, name: str) -> datetime:
    """`value` converted to UTC; a ValueError naming `name` when it has no time zone."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (use datetime.now(UTC)), got {value!r}")
    return value.astimezone(UTC)
