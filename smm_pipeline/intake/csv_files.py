"""Reading a dropped CSV file the way the README promises (CSV drops), with errors a user can
act on.

UTF-8 with or without a BOM, a header row, commas, RFC 4180 quoting (a quoted cell may hold
commas, doubled quotes and line breaks), `\\r\\n` or `\\n` line ends. Header names are trimmed
and compared case-insensitively. Blank records (an empty line, or a record whose cells are all
empty, as spreadsheets export them) are skipped but still counted, so row numbers match the
records a user sees. A record with extra cells is ragged unless the extra cells are empty.
Everything works on bytes already read: this module never opens a file.

Records are read in batches and streamed: the file's bytes are decoded piece by piece as they
are read (never copied whole into a text buffer, which `io.StringIO` would hold at 4 bytes per
character), lines without a quote are split at commas (what the csv module's reader would
make of them) and the csv module reads the rest, and no record outlives its batch unless the
caller keeps it.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import hashlib
import io
import re
from collections.abc import Collection, Iterator
from itertools import chain, islice
from operator import itemgetter

from smm_pipeline.intake.row_errors import RowError

__all__ = ["CsvTable", "decode_csv", "file_hash", "read_csv_table"]

# A list cell of 1,500 long comments is far above csv's default 128 KiB cell limit.
_CELL_LIMIT = 16 * 1024 * 1024
if csv.field_size_limit() < _CELL_LIMIT:
    csv.field_size_limit(_CELL_LIMIT)

BATCH_ROWS = 1024  # records read from the C reader at a time


def file_hash(content: bytes) -> str:
    """sha256 of the file's bytes: a file's identity, whatever its name (same bytes, same file)."""
    return hashlib.sha256(content).hexdigest()


class CsvTable:
    """The normalised header, and the file's records as a one-shot stream.

    `records` yields (row number, cells) for every well-formed, non-blank record, each with
    exactly `len(columns)` cells; `batches` yields the same records a batch at a time. Records
    are streamed, not kept: a 100,000-row file never sits in memory twice. Problems met on the
    way (ragged records, a CSV syntax error, no data rows at all) are appended to `errors`, the
    list `read_csv_table` returned, at the point of the stream where they are met.
    """

    __slots__ = ("_reader", "columns", "errors")

    def __init__(self, columns: tuple[str, ...], reader: _Records, errors: list[RowError]):
        self.columns = columns
        self.errors = errors
        self._reader: _Records | None = reader

    def index(self, column: str) -> int | None:
        try:
            return self.columns.index(column)
        except ValueError:
            return None

    def _take_reader(self) -> _Records:
        reader, self._reader = self._reader, None
        if reader is None:
            raise RuntimeError("the records of a CsvTable can be read only once")
        return reader

    @property
    def records(self) -> Iterator[tuple[int, list[str]]]:
        """The one-shot stream of (row number, cells); reading it a second time is an error."""
        return _records(self.batches(), self.errors)

    def batches(self, size: int | None = None) -> Iterator[tuple[int, list, bool]]:
        """The one-shot stream of records in batches of up to `size` (default BATCH_ROWS):
        (row number of the first entry, entries, regular). Each entry is one record: its cells
        (a list of exactly `len(columns)` strings), None for a blank record (skipped, still
        counted) or the RowError of a ragged record, which the caller reports when it reaches
        it (so errors stay in row order). `regular` says every entry is a list of cells."""
        return _batches(self._take_reader(), len(self.columns), self.errors, size or BATCH_ROWS)

    def distinct(self, index: int) -> set[str]:
        """The distinct cells (untrimmed) of column `index` over the records `records`
        yields; reads the one-shot stream (ragged records are reported to `errors`)."""
        values: set[str] = set()
        cell = itemgetter(index)
        for _, entries, regular in self.batches():
            if regular:
                values.update(map(cell, entries))
            else:
                values.update(cells[index] for cells in entries if cells.__class__ is list)
        return values


def _records(
    batches: Iterator[tuple[int, list, bool]], errors: list[RowError]
) -> Iterator[tuple[int, list[str]]]:
    for first, entries, regular in batches:
        if regular:
            yield from enumerate(entries, first)
            continue
        for row_number, cells in enumerate(entries, first):
            if cells.__class__ is list:
                yield row_number, cells
            elif cells is not None:
                errors.append(cells)


class _Records:
    """The records after the header, as the csv module reads them (RFC 4180, strict).

    Lines without a quote character hold no quoted cell, so their records are exactly the
    line without its line end, split at commas: that is how they are read (twice as fast as
    the csv module), batch by batch, until a batch holds a quote or a line longer than the
    cell limit. From there on the csv module reads the rest, that batch's lines first, and
    `line_num` still counts the lines of the whole file."""

    __slots__ = ("_lines", "_reader", "_read")

    def __init__(self, lines: Iterator[str], header_lines: int) -> None:
        self._lines = lines
        self._reader: Iterator[list[str]] | None = None
        self._read = header_lines  # lines read before the csv module took over

    @property
    def line_num(self) -> int:
        reader = self._reader
        return self._read + (0 if reader is None else reader.line_num)  # type: ignore[attr-defined]

    def take(self, size: int, into: list[list[str]]) -> None:
        """Append up to `size` records to `into`; a csv.Error leaves those read before it."""
        if self._reader is None:
            lines = list(islice(self._lines, size))
            longest = max(map(len, lines), default=0)
            if '"' not in "".join(lines) and longest <= csv.field_size_limit():
                self._read += len(lines)
                into.extend([line.rstrip("\r\n").split(",") for line in lines])
                return
            self._reader = csv.reader(chain(lines, self._lines), strict=True)
        into.extend(islice(self._reader, size))


def _batches(
    reader: _Records, width: int, errors: list[RowError], size: int
) -> Iterator[tuple[int, list, bool]]:
    row_number = 0  # records consumed so far
    found = False
    while True:
        batch: list[list[str]] = []
        failure: csv.Error | None = None
        try:
            reader.take(size, batch)  # keeps the records read before an error
        except csv.Error as exc:
            failure = exc
        if batch:
            widths = set(map(len, batch))
            if len(widths) == 1 and width in widths and all(map(any, batch)):
                found = True
                yield row_number + 1, batch, True
            else:
                entries: list[list[str] | RowError | None] = []
                for offset, cells in enumerate(batch, row_number + 1):
                    if len(cells) != width:
                        if not any(cells):
                            entries.append(None)
                            continue
                        if len(cells) < width or any(cells[width:]):
                            entries.append(
                                RowError(
                                    offset,
                                    "row",
                                    f"this row has {len(cells)} cells but the header has "
                                    f"{width} columns; quote cells that contain commas or line "
                                    "breaks",
                                )
                            )
                            found = True
                            continue
                        del cells[width:]
                    elif not any(cells):
                        entries.append(None)
                        continue
                    found = True
                    entries.append(cells)
                yield row_number + 1, entries, False
            row_number += len(batch)
        if failure is not None:
            errors.append(_syntax_error(row_number + 1, reader.line_num, failure))
            return
        if len(batch) < size:
            break
    if not found:
        errors.append(RowError(0, "file", "the file has a header row but no data rows"))


def decode_csv(content: bytes) -> tuple[str | None, list[RowError]]:
    """The file's text without BOM, or an error naming the first byte that is not UTF-8
    (or the first NUL character)."""
    if content.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return None, [RowError(0, "file", "the file is UTF-16 text; save it as CSV UTF-8")]
    offset = 3 if content.startswith(codecs.BOM_UTF8) else 0
    try:
        text = content[offset:].decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [_encoding_error(content, offset, exc)]
    nul = text.find("\0")
    if nul >= 0:
        # Refused outright: no cell can then hold NUL, which callers rely on as a separator.
        line = text.count("\n", 0, nul) + 1
        return None, [
            RowError(
                0,
                "file",
                f"the file contains a NUL character (line {line}): it is not a CSV text file, "
                "or it was saved as UTF-16; save it as CSV UTF-8",
            )
        ]
    if not text.strip():
        return None, [
            RowError(0, "file", "the file is empty; expected a header row and at least one row")
        ]
    return text, []


# ASCII whitespace as str.isspace sees it (0x1C-0x1F included).
_ASCII_BLANK = re.compile(rb"[ \t\n\r\x0b\x0c\x1c-\x1f]*")


def _text_errors(content: bytes) -> list[RowError]:
    """`decode_csv`'s errors. An ASCII file (no BOM, valid UTF-8 by construction) is checked
    on its bytes for NUL and emptiness without building its text, a copy as large as it."""
    if content.isascii() and b"\0" not in content and not _ASCII_BLANK.fullmatch(content):
        return []
    return decode_csv(content)[1]


def _encoding_error(content: bytes, offset: int, exc: UnicodeDecodeError) -> RowError:
    start = offset + exc.start
    before = content[offset:start].decode("utf-8")
    line = before.count("\n") + 1
    # Count the records up to the bad byte, with the byte replaced by a harmless letter.
    try:
        records = sum(1 for _ in csv.reader(io.StringIO(before + "x", newline="")))
    except csv.Error:
        records = line
    row = max(records - 1, 0)
    return RowError(
        row,
        "file",
        f"the file is not UTF-8: byte 0x{content[start]:02X} at offset {start} (line {line}); "
        "save it as UTF-8 (in Excel: CSV UTF-8)",
    )


def read_csv_table(
    content: bytes,
    *,
    known_columns: Collection[str],
    required_columns: Collection[str] = (),
) -> tuple[CsvTable | None, list[RowError]]:
    """Parse a dropped file's header. Header problems (unknown, duplicate, missing or unnamed
    columns) return no table. Otherwise the table streams its records; record problems
    (ragged rows) are appended to the returned `errors` and those records skipped, so the
    caller can still check the rest and show every problem at once."""
    errors = _text_errors(content)
    if errors:
        return None, errors
    # The reader decodes the bytes as it goes (utf-8-sig: without the BOM).
    lines = io.TextIOWrapper(io.BytesIO(content), encoding="utf-8-sig", newline="")
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader)
    except csv.Error as exc:
        return None, [_syntax_error(0, reader.line_num, exc)]
    columns = tuple(cell.strip().lower() for cell in header)
    errors = _header_errors(columns, known_columns, required_columns)
    if errors:
        return None, errors
    return CsvTable(columns, _Records(lines, reader.line_num), errors), errors


def _syntax_error(row: int, line: int, exc: csv.Error) -> RowError:
    return RowError(
        row,
        "file",
        f"CSV syntax error near line {line}: {exc}; quote cells that contain commas, quotes "
        'or line breaks, and double a quote inside a quoted cell ("")',
    )


def _header_errors(
    columns: tuple[str, ...], known: Collection[str], required: Collection[str]
) -> list[RowError]:
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    expected = ", ".join(sorted(known))
    for position, name in enumerate(columns, start=1):
        if not name:
            errors.append(
                RowError(0, f"column {position}", f"column {position} of the header has no name")
            )
            continue
        if name in seen:
            errors.append(
                RowError(
                    0, name, f"duplicate column {name!r} (columns {seen[name]} and {position})"
                )
            )
            continue
        seen[name] = position
        if name not in known:
            hint = difflib.get_close_matches(name, known, n=1)
            guess = f" (did you mean {hint[0]!r}?)" if hint else ""
            errors.append(
                RowError(0, name, f"unknown column {name!r}; expected one of: {expected}{guess}")
            )
    for name in required:
        if name not in seen:
            errors.append(RowError(0, name, f"missing required column {name!r}"))
    return errors
