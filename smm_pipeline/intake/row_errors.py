"""The one shape every intake problem takes: which row, which column, what is wrong.

Row numbers count data records from 1 (the header is row 0), the way `errors.csv` and
`results.csv` number them. File-level problems (empty file, bad encoding, CSV syntax) use
column "file", header problems name the column, a ragged record uses column "row", and a
problem of a whole panel batch (balance, max_batch_spend) is row 0, column "batch".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RowError:
    row: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"row {self.row}, {self.column}: {self.message}"
