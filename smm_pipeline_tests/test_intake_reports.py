"""errors.csv and results.csv: names, columns, exact money, and atomic writes."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import pytest

from smm_pipeline.intake.reports import (
    ERRORS_COLUMNS,
    RESULTS_COLUMNS,
    ResultRow,
    errors_report_path,
    results_report_path,
    write_csv_atomic,
    write_errors_csv,
    write_results_csv,
)
from smm_pipeline.intake.row_errors import RowError


def read_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def test_report_names_sit_beside_the_file(tmp_path: Path) -> None:
    assert errors_report_path(tmp_path, "june orders.csv") == tmp_path / "june orders.errors.csv"
    assert results_report_path(tmp_path, "june.csv") == tmp_path / "june.results.csv"
    assert results_report_path(tmp_path, "june") == tmp_path / "june.results.csv"


def test_errors_csv_round_trips(tmp_path: Path) -> None:
    errors = [
        RowError(0, "quantiy", "unknown column 'quantiy'; expected one of: link, quantity"),
        RowError(3, "comments", 'comments has 1 line, below the minimum 2, "quoted"'),
        RowError(0, "batch", "panel 'p': the batch's estimated cost 62.5 is more than 50"),
    ]
    path = write_errors_csv(tmp_path / "rejected" / "a.errors.csv", errors)
    assert path == tmp_path / "rejected" / "a.errors.csv"
    rows = read_rows(path)
    assert rows[0] == list(ERRORS_COLUMNS) == ["row", "column", "message"]
    assert [RowError(int(r), c, m) for r, c, m in rows[1:]] == errors
    assert path.read_bytes().startswith(b"row,column,message\r\n")  # no BOM, RFC 4180 ends


def test_results_csv_has_every_row_with_exact_money(tmp_path: Path) -> None:
    results = [
        ResultRow(1, "A-1", "persiansmm", 1, 23501, None, Decimal("0.90000"), "submitted"),
        ResultRow(
            2, "auto-abc", "privatesmm", 2, None, "Not enough funds", Decimal("1E+1"), "failed"
        ),  # fmt: skip
        ResultRow(3, "B, 3", "persiansmm", 4, None, "timed out", Decimal("0.000001"), "ambiguous"),
        ResultRow(4, "C", "persiansmm", 4, None, None, None, "abandoned"),
    ]
    rows = read_rows(write_results_csv(tmp_path / "a.results.csv", results))
    assert rows == [
        list(RESULTS_COLUMNS),
        ["1", "A-1", "persiansmm", "1", "23501", "", "0.9", "submitted"],
        ["2", "auto-abc", "privatesmm", "2", "", "Not enough funds", "10", "failed"],
        ["3", "B, 3", "persiansmm", "4", "", "timed out", "0.000001", "ambiguous"],
        ["4", "C", "persiansmm", "4", "", "", "", "abandoned"],
    ]
    assert RESULTS_COLUMNS == (
        "row", "ref", "panel", "service", "order_id", "error", "estimated_cost", "submit_state"
    )  # fmt: skip


def test_a_rewrite_replaces_the_whole_report(tmp_path: Path) -> None:
    path = tmp_path / "x.errors.csv"
    write_errors_csv(path, [RowError(1, "link", "a")] * 50)
    write_errors_csv(path, [RowError(2, "quantity", "b")])
    assert read_rows(path) == [["row", "column", "message"], ["2", "quantity", "b"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.errors.csv"]


def test_a_failed_write_leaves_the_old_report_and_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "x.results.csv"
    write_csv_atomic(path, ("a", "b"), [(1, 2)])
    before = path.read_bytes()

    def rows_then_crash():
        yield (3, 4)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_csv_atomic(path, ("a", "b"), rows_then_crash())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.results.csv"]
