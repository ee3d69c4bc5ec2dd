"""Reading dropped CSV files (README, CSV drops): encodings, line ends, quoting, clear errors."""

from __future__ import annotations

import codecs

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smm_pipeline.intake.csv_files import decode_csv, file_hash, read_csv_table
from smm_pipeline.intake.row_errors import RowError

KNOWN = ("panel", "service", "link", "quantity", "comments", "ref")


def read(content: bytes, required=("service",)):
    table, errors = read_csv_table(content, known_columns=KNOWN, required_columns=required)
    records = list(table.records) if table is not None else []
    return table, records, errors


@pytest.mark.parametrize(
    "content",
    [
        b"service,link\n1,https://a.com\n",
        b"service,link\r\n1,https://a.com\r\n",
        codecs.BOM_UTF8 + b"service,link\r\n1,https://a.com\r\n",
        b"service,link\r\n1,https://a.com",  # no final line end
        b"service,link\r1,https://a.com\r",  # old Mac line ends
        b" Service , LINK \n1,https://a.com\n",  # header names trimmed, case-insensitive
    ],
)
def test_utf8_with_or_without_bom_and_any_line_end(content: bytes) -> None:
    table, records, errors = read(content)
    assert errors == []
    assert table is not None and table.columns == ("service", "link")
    assert records == [(1, ["1", "https://a.com"])]


def test_rfc4180_quoting_with_multi_line_cells() -> None:
    content = (
        b'service,comments,link\r\n'
        b'2,"Nice post!\r\nLove it, really\r\nSay ""hi""",https://a.com/1\r\n'
        b'2,"one\ntwo",https://a.com/2\r\n'
    )  # fmt: skip
    _, records, errors = read(content)
    assert errors == []
    assert records == [
        (1, ["2", 'Nice post!\r\nLove it, really\r\nSay "hi"', "https://a.com/1"]),
        (2, ["2", "one\ntwo", "https://a.com/2"]),
    ]


def test_blank_records_are_skipped_but_counted() -> None:
    content = b"service,link\n1,https://a.com\n\n,\n3,https://c.com\n\n"
    _, records, errors = read(content)
    assert errors == []
    assert [row for row, _ in records] == [1, 4]


def test_extra_empty_trailing_cells_are_tolerated() -> None:
    _, records, errors = read(b"service,link\n1,https://a.com,,\n")
    assert errors == [] and records == [(1, ["1", "https://a.com"])]


def test_non_ascii_text_survives() -> None:
    _, records, errors = read('service,comments\n1,"عالی 👍\nçok güzel"\n'.encode())
    assert errors == [] and records == [(1, ["1", "عالی 👍\nçok güzel"])]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"",
         [RowError(0, "file", "the file is empty; expected a header row and at least one row")]),
        (codecs.BOM_UTF8 + b"\r\n \r\n",
         [RowError(0, "file", "the file is empty; expected a header row and at least one row")]),
        (b"service,link\r\n",
         [RowError(0, "file", "the file has a header row but no data rows")]),
        (b"service,link\r\n\r\n,\r\n",
         [RowError(0, "file", "the file has a header row but no data rows")]),
        (b"service,link\n1,https://a.com\nd\xe9j\xe0,x\n",
         [RowError(2, "file", "the file is not UTF-8: byte 0xE9 at offset 30 (line 3); save it "
                              "as UTF-8 (in Excel: CSV UTF-8)")]),
        (codecs.BOM_UTF8 + b'service,comments\n1,"ok\nstill ok\n\xff"\n',
         [RowError(1, "file", "the file is not UTF-8: byte 0xFF at offset 35 (line 4); save it "
                              "as UTF-8 (in Excel: CSV UTF-8)")]),
        (b"service,quantiy\n1,100\n",
         [RowError(0, "quantiy", "unknown column 'quantiy'; expected one of: comments, link, "
                                 "panel, quantity, ref, service (did you mean 'quantity'?)")]),
        (b"service,colour\n1,red\n",
         [RowError(0, "colour", "unknown column 'colour'; expected one of: comments, link, "
                                "panel, quantity, ref, service")]),
        (b"link,quantity\nhttps://a.com,100\n",
         [RowError(0, "service", "missing required column 'service'")]),
        (b"service,link,Link\n1,https://a.com,https://b.com\n",
         [RowError(0, "link", "duplicate column 'link' (columns 2 and 3)")]),
        (b"service,,link\n1,,https://a.com\n",
         [RowError(0, "column 2", "column 2 of the header has no name")]),
        (b"service,link,quantity\n1,https://a.com\n2,https://b.com,5\n",
         [RowError(1, "row", "this row has 2 cells but the header has 3 columns; quote cells "
                             "that contain commas or line breaks")]),
        (b"service,link\n1,https://a.com,extra\n",
         [RowError(1, "row", "this row has 3 cells but the header has 2 columns; quote cells "
                             "that contain commas or line breaks")]),
        (b'service,comments\n1,"never closed\n2,x\n',
         [RowError(1, "file", "CSV syntax error near line 3: unexpected end of data; quote "
                              "cells that contain commas, quotes or line breaks, and double a "
                              'quote inside a quoted cell ("")')]),
        (b'service,comments\n1,ok\n2,"a"b\n',
         [RowError(2, "file", "CSV syntax error near line 3: ',' expected after '\"'; quote "
                              "cells that contain commas, quotes or line breaks, and double a "
                              'quote inside a quoted cell ("")')]),
        (b"service,comments\n1,a\x00b\n",
         [RowError(0, "file", "the file contains a NUL character (line 2): it is not a CSV "
                              "text file, or it was saved as UTF-16; save it as CSV UTF-8")]),
        ("service,link\n1,https://a.com\n".encode("utf-16"),
         [RowError(0, "file", "the file is UTF-16 text; save it as CSV UTF-8")]),
        ("service,link\n1,https://a.com\n".encode("utf-16-le"),
         [RowError(0, "file", "the file contains a NUL character (line 1): it is not a CSV "
                              "text file, or it was saved as UTF-16; save it as CSV UTF-8")]),
    ],
)  # fmt: skip
def test_file_problems_have_clear_messages(content: bytes, expected: list[RowError]) -> None:
    _, _, errors = read(content)
    assert errors == expected


def test_ragged_rows_do_not_hide_the_good_ones() -> None:
    _, records, errors = read(b"service,link\n1\n2,https://b.com\n")
    assert [row for row, _ in records] == [2]
    assert [(e.row, e.column) for e in errors] == [(1, "row")]


def test_records_can_be_read_once() -> None:
    table, errors = read_csv_table(b"service\n1\n", known_columns=KNOWN)
    assert table is not None and errors == []
    assert list(table.records) == [(1, ["1"])]
    with pytest.raises(RuntimeError, match="only once"):
        table.records  # noqa: B018


def test_decode_strips_one_bom() -> None:
    assert decode_csv(codecs.BOM_UTF8 + b"a,b\n") == ("a,b\n", [])


def test_file_hash_is_the_identity_of_the_content() -> None:
    content = b"service,link\n1,https://a.com\n"
    assert file_hash(content) == file_hash(bytes(content))
    assert file_hash(content) != file_hash(content + b"\n")
    assert len(file_hash(content)) == 64
    assert file_hash(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@given(st.binary(max_size=200))
def test_any_bytes_give_a_table_or_errors_never_an_exception(content: bytes) -> None:
    table, errors = read_csv_table(content, known_columns=KNOWN)
    if table is None:
        assert errors
    else:
        records = list(table.records)
        assert all(len(cells) == len(table.columns) for _, cells in records)
        assert records or errors
