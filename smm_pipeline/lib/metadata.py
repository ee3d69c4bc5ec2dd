"""Helpers that turn results into the metadata an operator reads in the Dagster UI."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import dagster as dg
import pandas as pd

from smm_pipeline.money import money_text


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 80 else text[:77] + "..."


def markdown_table(rows: Iterable[Sequence[Any]], columns: Sequence[str], limit: int = 20) -> str:
    """A markdown table of the first `limit` rows (and how many were left out)."""
    rows = list(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"\n… and {len(rows) - limit} more rows")
    if not rows:
        lines.append("| " + " | ".join("" for _ in columns) + " |")
    return "\n".join(lines)


def frame_preview(frame: pd.DataFrame, limit: int = 20) -> dg.MetadataValue:
    return dg.MetadataValue.md(
        markdown_table(frame.itertuples(index=False, name=None), list(frame.columns), limit)
    )


def money(amount: Decimal | None, currency: str | None = None) -> dg.MetadataValue:
    """Money as exact text (metadata floats would round it), as `money_text` writes it."""
    return dg.MetadataValue.text(money_text(amount, currency))


def timestamp(moment: datetime | float | None) -> dg.MetadataValue:
    """A moment as timestamp metadata (the UI shows it in the viewer's time zone); `none`
    as text when there is none. A naive datetime is UTC, as the warehouse stores it."""
    if moment is None:
        return dg.MetadataValue.text("none")
    if isinstance(moment, datetime):
        aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return dg.MetadataValue.timestamp(aware.timestamp())
    seconds = float(moment)
    return dg.MetadataValue.timestamp(seconds)
