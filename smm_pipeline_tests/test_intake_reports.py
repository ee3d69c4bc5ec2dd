"""errors.csv and results.csv: names (within 255 bytes), columns, exact money, atomic writes,
and no cell a spreadsheet would run as a formula."""

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
    fit_file_name,
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


def test_text_cells_that_a_spreadsheet_would_run_get_a_leading_quote(tmp_path: Path) -> None:
    path = write_csv_atomic(
        tmp_path / "x.results.csv",
        ("row", "ref", "error", "estimated_cost"),
        [
            (1, "=1+2", "@SUM(A1:A9)", "0.27"),
            (2, "+31 6 1234", "-cmd", "12"),
            (3, "\tx", "\rx", ""),
            (4, "\nx", "a=b", "0"),
            (5, "plain", "'already quoted", "1E+1"),
        ],
    )
    assert read_rows(path) == [
        ["row", "ref", "error", "estimated_cost"],
        ["1", "'=1+2", "'@SUM(A1:A9)", "0.27"],
        ["2", "'+31 6 1234", "'-cmd", "12"],
        ["3", "'\tx", "'\rx", ""],
        ["4", "'\nx", "a=b", "0"],
        ["5", "plain", "'already quoted", "1E+1"],
    ]


def test_reports_neutralise_user_text_but_not_our_numbers(tmp_path: Path) -> None:
    errors = [RowError(2, '=HYPERLINK("http://evil")', "-5 is below the minimum 10")]
    assert read_rows(write_errors_csv(tmp_path / "e.csv", errors))[1] == [
        "2",
        '\'=HYPERLINK("http://evil")',
        "'-5 is below the minimum 10",
    ]
    results = [
        ResultRow(1, "@ref", "+panel", 7, 9001, "=error", Decimal("0.5"), "failed"),
    ]
    assert read_rows(write_results_csv(tmp_path / "r.csv", results))[1] == [
        "1", "'@ref", "'+panel", "7", "9001", "'=error", "0.5", "failed"
    ]  # fmt: skip


def test_names_over_255_bytes_keep_a_cut_stem_and_a_hash(tmp_path: Path) -> None:
    assert fit_file_name("june", ".results.csv") == "june.results.csv"
    stem = "订" * 83 + "ab"  # a 255-byte file name with .csv
    fitted = fit_file_name(stem, ".results.csv")
    # 234 bytes of stem fit beside "~" + 8 hex digits + ".results.csv": 78 whole characters.
    assert fitted.startswith("订" * 78 + "~") and fitted.endswith(".results.csv")
    assert len(fitted.encode()) == 255
    assert fitted == fit_file_name(stem, ".results.csv")
    assert fitted != fit_file_name(stem[:-1] + "c", ".results.csv")  # the hash tells them apart
    odd = fit_file_name("ab" + "订" * 84, ".errors.csv")  # 235 bytes end inside a character
    assert odd.split("~")[0] == "ab" + "订" * 77 and len(odd.encode()) == 253
    assert results_report_path(tmp_path, stem + ".csv") == tmp_path / fitted


def test_a_report_beside_a_255_byte_name_is_written(tmp_path: Path) -> None:
    name = "订" * 83 + "ab.csv"
    assert len(name.encode()) == 255
    path = write_errors_csv(errors_report_path(tmp_path, name), [RowError(1, "link", "bad")])
    assert read_rows(path)[1] == ["1", "link", "bad"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left
