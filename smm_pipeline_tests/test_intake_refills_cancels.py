"""Refill and cancel files: which orders they name (by panel order id or by ref), or errors."""

from __future__ import annotations

import pytest

from smm_pipeline.config import PanelConfig, Settings
from smm_pipeline.intake.refills_cancels import (
    ActionRow,
    read_action_file,
    read_cancel_file,
    read_refill_file,
    rows_by_panel,
)

TWO = Settings(
    panels=(
        PanelConfig("persiansmm", "https://my.persiansmm.com/api/v2", "PERSIANSMM_API_KEY"),
        PanelConfig("privatesmm", "https://privatesmm.com/api/v2", "PRIVATESMM_API_KEY"),
    )
)
ONE = Settings(panels=TWO.panels[:1])


def test_orders_by_id_or_by_ref() -> None:
    content = (
        b"\xef\xbb\xbfpanel,order,ref\r\n"
        b"persiansmm,23501,\r\n"
        b"privatesmm,,A-1\r\n"
        b"\r\n"
        b"PrivateSMM, 23501 ,\r\n"
    )
    result = read_refill_file(content, "refills.csv", TWO)
    assert result.errors == [] and result.ok and result.kind == "refill"
    assert result.rows == [
        ActionRow(1, "persiansmm", 23501, None),
        ActionRow(2, "privatesmm", None, "A-1"),
        ActionRow(4, "privatesmm", 23501, None),
    ]
    assert len(result.file_hash) == 64 and result.file_name == "refills.csv"
    assert rows_by_panel(result.rows) == {
        "persiansmm": [result.rows[0]],
        "privatesmm": [result.rows[1], result.rows[2]],
    }


def test_one_panel_needs_no_panel_column() -> None:
    result = read_cancel_file(b"order\n7\n8\n", "c.csv", ONE)
    assert result.kind == "cancel"
    assert result.rows == [ActionRow(1, "persiansmm", 7, None), ActionRow(2, "persiansmm", 8, None)]


@pytest.mark.parametrize(
    ("kind", "content", "settings", "expected"),
    [
        ("refill", b"order\n1\n", TWO,
         [(0, "panel", "missing column 'panel': 2 panels are enabled (persiansmm, privatesmm), "
                       "so each row must name its panel")]),
        ("refill", b"panel\npersiansmm\n", TWO,
         [(0, "order", "missing column: a refill file needs an 'order' column (the panel's "
                       "order id) or a 'ref' column (the order row's ref)")]),
        ("cancel", b"panel,orders\npersiansmm,1\n", TWO,
         [(0, "orders", "unknown column 'orders'; expected one of: order, panel, ref "
                        "(did you mean 'order'?)")]),
        ("cancel", b"panel,order,ref\npersiansmm,12,A-1\n", TWO,
         [(1, "ref", "give either order or ref in a row, not both")]),
        ("cancel", b"panel,order,ref\npersiansmm,,\n", TWO,
         [(1, "order", "which order to cancel? fill in order or ref")]),
        ("refill", b"panel,ref\npersiansmm, \n", TWO,
         [(1, "ref", "which order to refill? fill in order or ref")]),
        ("refill", b"panel,order\npersiansmm,12a\n", TWO,
         [(1, "order", "order must be the panel's order id (a positive whole number), got "
                       "'12a'")]),
        ("refill", b"panel,order\npersiansmm,0\n", TWO,
         [(1, "order", "order must be the panel's order id (a positive whole number), got '0'")]),
        ("cancel", b"panel,order\npersiansmm,-4\n", TWO,
         [(1, "order", "order must be the panel's order id (a positive whole number), got "
                       "'-4'")]),
        ("cancel", b"panel,order\npersiansmm,5\nprivatesmm,5\npersiansmm,05\n", TWO,
         [(3, "order", "order 5 on panel 'persiansmm' is already listed in row 1")]),
        ("refill", b"panel,ref\npersiansmm,A\npersiansmm,A\n", TWO,
         [(2, "ref", "ref 'A' on panel 'persiansmm' is already listed in row 1")]),
        ("refill", b"panel,order\nnope,5\n", TWO,
         [(1, "panel", "unknown panel 'nope'; enabled panels: persiansmm, privatesmm")]),
        ("refill", b"panel,order\n,5\n", TWO,
         [(1, "panel", "panel is required: 2 panels are enabled (persiansmm, privatesmm)")]),
        ("cancel", b"order\n", ONE, [(0, "file", "the file has a header row but no data rows")]),
        ("cancel", b"order\n1,2\n", ONE,
         [(1, "row", "this row has 2 cells but the header has 1 columns; quote cells that "
                     "contain commas or line breaks")]),
        ("cancel", b"", ONE,
         [(0, "file", "the file is empty; expected a header row and at least one row")]),
    ],
)  # fmt: skip
def test_bad_refill_and_cancel_files(kind, content, settings, expected) -> None:
    result = read_action_file(content, "f.csv", settings, kind)
    assert not result.ok
    assert [(e.row, e.column, e.message) for e in result.errors] == expected
