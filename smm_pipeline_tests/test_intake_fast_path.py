"""The intake's fast path gives exactly what the general check gives, only faster.

Plain Default-type rows are checked a batch at a time, column by column (`_FileCheck.whole`),
or row by row without building objects; their rows are kept by column (`ValidatedRows`);
quote-free text is split at commas instead of going through the csv module; duplicate refs
are found by one sort at the end. Each of these is compared here with the general check
(`validate_order_file(..., fast=False)`), the csv module, or `budget.panel_totals`, on mixed
files that exercise every path (small batches make one file cross many batches).
"""

from __future__ import annotations

import contextlib
import csv
import decimal
import io
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smm_pipeline.config import PanelConfig, Settings
from smm_pipeline.intake import csv_files, orders
from smm_pipeline.intake.budget import panel_totals
from smm_pipeline.intake.csv_files import read_csv_table
from smm_pipeline.intake.orders import (
    ORDER_COLUMNS,
    CatalogEntry,
    IntakeResult,
    derive_ref,
    validate_order_file,
)
from smm_pipeline.panel.models import Service
from smm_pipeline.panel.order_types import all_http_urls, is_http_url

PERSIAN = PanelConfig(
    "persiansmm", "https://p.example/api/v2", "P_KEY", max_batch_spend=Decimal(50)
)
PRIVATE = PanelConfig("privatesmm", "https://q.example/api/v2", "Q_KEY", delay_values=(0, 5, 60))
TWO = Settings(panels=(PERSIAN, PRIVATE))
ONE = Settings(panels=(PERSIAN,))
# No spend limit and ample money: big files that are meant to pass.
WIDE = Settings(
    panels=(
        PanelConfig("persiansmm", "https://p.example/api/v2", "P_KEY"),
        PanelConfig("privatesmm", "https://q.example/api/v2", "Q_KEY"),
    )
)
TODAY = date(2026, 1, 1)
BALANCES = {"persiansmm": Decimal("100"), "privatesmm": Decimal("1000")}
RICH = {"persiansmm": Decimal(10**9), "privatesmm": Decimal(10**9)}
SERVICES = [
    Service(1, "Followers", "Default", "I", Decimal("0.90"), 50, 10000, True, True),
    Service(2, "Comments", "Custom Comments", "I", Decimal("8"), 2, 5, False, True),
    Service(3, "Auto likes", "Subscriptions", "I", Decimal("2"), 10, 5000, False, False),
    Service(4, "Starter pack", "Package", "I", Decimal("12.50"), 1, 1, False, False),
    Service(13, "Comment likes", "Comment Likes", "I", Decimal("2"), 10, 1000, False, False),
    # rates as the warehouse returns them (DECIMAL(38,18)): totals past 28 digits
    Service(20, "Views", "Default", "I", Decimal("0.015000000000000000"), 1, 10**12, False, False),
    Service(21, "Big", "Default", "I", Decimal("123456789.123456789012345678"), 1, 10**15, False,
            False),
    Service(22, "Negative", "Default", "I", Decimal("-1.5"), 1, 1000, False, False),
    Service(24, "Huge", "Default", "I", Decimal("1E+20"), 1, 10**20, False, False),
    Service(50, "Odd", "Story Views Premium", "X", Decimal("3"), 1, 10, False, False),
    Service(99, "Old", "Default", "I", Decimal("0.50"), 10, 1000, True, True),
]  # fmt: skip
CATALOG = {
    (panel, s.service_id): CatalogEntry(s, active=s.service_id != 99)
    for panel in ("persiansmm", "privatesmm")
    for s in SERVICES
}


def outcome(result: IntakeResult) -> tuple:
    """Everything a caller can see, with every Decimal as its exact text."""
    rows = [tuple(row) for row in result.rows]
    return (
        result.file_hash,
        [(e.row, e.column, e.message) for e in result.errors],
        rows,
        [str(row.estimated_cost) for row in result.rows],
        [(panel, str(total)) for panel, total in result.panel_totals.items()],
        result.panels,
    )


def both(
    content: bytes, settings_: Settings = TWO, balances: dict[str, Decimal] = BALANCES
) -> tuple[IntakeResult, IntakeResult]:
    fast = validate_order_file(content, "f.csv", CATALOG, settings_, balances, today=TODAY)
    general = validate_order_file(
        content, "f.csv", CATALOG, settings_, balances, today=TODAY, fast=False
    )
    return fast, general


@contextlib.contextmanager
def batch_rows(count: int) -> Iterator[None]:
    """Read records `count` at a time: a small file then crosses many batches."""
    saved = csv_files.BATCH_ROWS
    csv_files.BATCH_ROWS = count
    try:
        yield
    finally:
        csv_files.BATCH_ROWS = saved


# -- mixed files -----------------------------------------------------------------------------

LINK = st.sampled_from(
    ["https://a.com/p/1", "https://a.com/p/2", "https://a.com/p/3", " https://a.com/p/1 ", "",
     "ftp://a.com/x", "https://", "HTTP://A.COM/P", "https://a.com/\nb", "https://[::1]:80/x",
     "https://user@host/x", "https://a.com/x y", "https://a.com/é", "https://a.com/x\x1c"]
)  # fmt: skip
QUANTITY = st.sampled_from(
    ["100", "200", "5000", "0100", "", "5", "-1", "+100", "1e3", "\u0661\u0660\u0660", " 100 ",
     "99999999999999999999", "1" * 18, "1" * 19, "0", "20000"]
)  # fmt: skip
CELLS = {
    "panel": st.sampled_from(["persiansmm", "privatesmm", "PersianSMM", " privatesmm ", "", "x"]),
    "service": st.sampled_from(["1", "1", "1", "20", "21", "22", "24", "01", " 1", "99", "abc",
                                "", "12345", "2", "3", "4", "13", "50"]),
    "link": LINK,
    "quantity": QUANTITY,
    "runs": st.sampled_from(["", "", "", "3", "0", "03", "x", " 3", "99999999999999999"]),
    "interval": st.sampled_from(["", "", "", "10", "0", "x"]),
    "comments": st.sampled_from(["", "", "", "a\nb", "a\r\nb\r\n", " ", "a\nb\nc"]),
    "username": st.sampled_from(["", "", "bob", "bob\nal"]),
    "min": st.sampled_from(["", "100"]),
    "max": st.sampled_from(["", "200"]),
    "delay": st.sampled_from(["", "0", "20"]),
    "ref": st.sampled_from(["", "", "", "", " ", "A1", "A2", "x" * 129, "a\nb", "-12",
                            "auto-" + "0" * 24, "AUTO-" + "0" * 24]),
    "campaign": st.sampled_from(["", "spring", " =x ", "autumn"]),
}  # fmt: skip


def _quote(value: str) -> str:
    if any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


@st.composite
def order_files(draw: st.DrawFn) -> tuple[bytes, Settings]:
    one = draw(st.booleans()) and draw(st.booleans())
    extra = draw(st.lists(st.sampled_from(sorted(set(CELLS) - {"panel", "service"})),
                          unique=True, max_size=6))  # fmt: skip
    columns = (["service"] if one else ["panel", "service"]) + extra
    columns = draw(st.permutations(columns))
    line_end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    lines = [",".join(columns)]
    derived: list[str] = []
    for _ in range(draw(st.integers(1, 25))):
        kind = draw(st.integers(0, 9))
        if kind == 0 and len(lines) > 1:
            lines.append(draw(st.sampled_from(lines[1:])))  # the same row again
            continue
        if kind == 1:
            lines.append(draw(st.sampled_from(["", ",,", ",x,,,,,,,"])))  # blank or ragged
            continue
        values = [draw(CELLS[c]) for c in columns]
        if kind == 2 and derived and "ref" in columns:
            values[columns.index("ref")] = draw(st.sampled_from(derived))  # a derived ref
        lines.append(",".join(_quote(v) for v in values))
        cells = dict(zip(columns, values, strict=True))
        panel = cells.get("panel", "persiansmm").strip().lower() or "persiansmm"
        params = {"service": "1", "link": cells.get("link", "").strip(),
                  "quantity": cells.get("quantity", "").strip()}  # fmt: skip
        derived.append(derive_ref(panel, params))
    text = line_end.join(lines) + draw(st.sampled_from(["", line_end]))
    bom = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    return bom + text.encode(), (ONE if one else TWO)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order_files(), st.sampled_from([1, 2, 3, 1024]))
def test_fast_and_general_paths_agree_on_mixed_files(
    file: tuple[bytes, Settings], batch: int
) -> None:
    content, settings_ = file
    with batch_rows(batch):
        fast, general = both(content, settings_)
    assert outcome(fast) == outcome(general)


def _plain_file(rows: int, *, ref_every: int = 0, duplicate: int | None = None) -> bytes:
    lines = ["panel,service,link,quantity,ref,campaign"]
    for i in range(rows):
        ref = f"R{i}" if ref_every and i % ref_every == 0 else ""
        lines.append(f"{('persiansmm', 'privatesmm')[i % 2]},{(1, 20)[i % 3 == 0]},"
                     f"https://instagram.com/p/{i},{100 + i % 900},{ref},c{i % 3}")  # fmt: skip
    if duplicate is not None:
        lines.append(lines[duplicate + 1])
    return ("\r\n".join(lines) + "\r\n").encode()


def test_plain_rows_take_the_fast_path_and_match_the_general_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    content = _plain_file(3000, ref_every=7)
    general = validate_order_file(content, "f.csv", CATALOG, WIDE, RICH, today=TODAY, fast=False)

    def no_general(*args: object) -> None:
        raise AssertionError("a plain Default-type row went to the general check")

    with monkeypatch.context() as patch:
        patch.setattr(orders._FileCheck, "general", no_general)
        fast = validate_order_file(content, "f.csv", CATALOG, WIDE, RICH, today=TODAY)
    assert outcome(fast) == outcome(general)
    assert fast.ok and len(fast.rows) == 3000


def test_a_duplicate_far_apart_is_reported_at_its_row_like_the_general_check() -> None:
    content = _plain_file(2500, duplicate=3)  # row 2501 repeats row 4, three batches later
    fast, general = both(content, WIDE, RICH)
    assert outcome(fast) == outcome(general)
    assert [(e.row, e.column) for e in fast.errors if e.column == "ref"] == [(2501, "ref")]
    assert "identical to row 4" in fast.errors[0].message
    assert len(fast.rows) == 2500


def test_derived_refs_are_the_ones_intake_always_derived() -> None:
    """Refs computed by the intake before the fast path existed, for the same file."""
    content = (
        b"panel,service,link,quantity,runs,interval,comments,ref\n"
        b"persiansmm,1,https://instagram.com/p/one,1000,,,,\n"
        b"privatesmm,1,https://instagram.com/p/one,1000,,,,\n"
        b"persiansmm,1,https://instagram.com/p/two,500,4,30,,\n"
        b"persiansmm,1, https://instagram.com/p/one ,01000,,,,X\n"
        b'persiansmm,2,https://instagram.com/p/c,,,,"a\nb",\n'
        b"persiansmm,4,https://instagram.com/p/pk,,,,,\n"
    )
    for result in both(content):
        assert result.errors == []
        assert [(r.ref, str(r.estimated_cost)) for r in result.rows] == [
            ("auto-b9441a88a1c63b05f9ea4ee2", "0.90000"),
            ("auto-f4a6fed24e5c20f07be2eaa3", "0.90000"),
            ("auto-e18d233a054e2e2cf85d75ff", "1.80000"),
            ("X", "0.90000"),
            ("auto-e256a9f23872b4b4cff92af2", "0.016"),
            ("auto-bb59919d5dba5c53700fdb00", "12.50"),
        ]
        assert {p: str(t) for p, t in result.panel_totals.items()} == {
            "persiansmm": "16.11600",
            "privatesmm": "0.90000",
        }
        assert result.rows[2].params == {
            "service": "1", "link": "https://instagram.com/p/two", "quantity": "500",
            "runs": "4", "interval": "30",
        }  # fmt: skip


def test_a_user_ref_equal_to_a_derived_ref_is_a_duplicate_either_way() -> None:
    derived = derive_ref("persiansmm", {"service": "1", "link": "https://a.com/1",
                                        "quantity": "100"})  # fmt: skip
    first_derived = (
        "panel,service,link,quantity,ref\n"
        "persiansmm,1,https://a.com/1,100,\n"
        f"persiansmm,1,https://a.com/2,100,{derived}\n"
        f"privatesmm,1,https://a.com/3,100,{derived}\n"  # another panel: not a duplicate
    ).encode()
    fast, general = both(first_derived)
    assert outcome(fast) == outcome(general)
    assert [(e.row, e.message) for e in fast.errors] == [
        (2, f"ref {derived!r} is already used by row 1 on panel 'persiansmm'; refs must be "
            "unique")
    ]  # fmt: skip
    first_user = (
        "panel,service,link,quantity,ref\n"
        f"persiansmm,1,https://a.com/2,100,{derived}\n"
        "persiansmm,1,https://a.com/1,100,\n"
    ).encode()
    fast, general = both(first_user)
    assert outcome(fast) == outcome(general)
    assert [e.row for e in fast.errors] == [2] and "identical to row 1" in fast.errors[0].message


# -- totals ----------------------------------------------------------------------------------


@given(
    st.lists(
        st.tuples(st.sampled_from(["1", "20", "21", "22", "24", "4", "2"]),
                  st.integers(1, 10**12)),
        min_size=1, max_size=40,
    ),
    st.data(),
)  # fmt: skip
@settings(max_examples=80, deadline=None)
def test_totals_are_digit_for_digit_the_row_by_row_sums(rows, data) -> None:
    lines = ["panel,service,link,quantity,comments"]
    for i, (service, quantity) in enumerate(rows):
        comments = '"a\nb\nc"' if service == "2" else ""
        quantity_cell = "" if service in ("2", "4") else str(quantity)
        lines.append(f"persiansmm,{service},https://a.com/{i},{quantity_cell},{comments}")
    content = ("\n".join(lines) + "\n").encode()
    result = validate_order_file(content, "f.csv", CATALOG, ONE, BALANCES, today=TODAY)
    valid = list(result.rows)
    expected = panel_totals((r.panel, r.estimated_cost) for r in valid)
    assert {p: str(t) for p, t in result.panel_totals.items()} == {
        p: str(t) for p, t in expected.items()
    }
    skip = data.draw(st.sets(st.integers(0, max(len(valid) - 1, 0))) if valid else st.just(set()))
    kept = [r for i, r in enumerate(valid) if i not in skip]
    want = panel_totals((r.panel, r.estimated_cost) for r in kept)
    assert {p: str(t) for p, t in result.rows.panel_totals(skip).items()} == {
        p: str(t) for p, t in want.items()
    }
    assert str(result.rows.total_cost(skip)) == str(sum((r.estimated_cost for r in kept),
                                                       Decimal(0)))  # fmt: skip


def test_totals_follow_a_narrower_decimal_context() -> None:
    content = b"panel,service,link,quantity\npersiansmm,21,https://a.com/1,999999999999999\n"
    with decimal.localcontext(decimal.Context(prec=12)):
        result = validate_order_file(content, "f.csv", CATALOG, ONE, BALANCES, today=TODAY)
        expected = panel_totals((r.panel, r.estimated_cost) for r in result.rows)
    assert {p: str(t) for p, t in result.panel_totals.items()} == {
        p: str(t) for p, t in expected.items()
    }


# -- reading ---------------------------------------------------------------------------------


def _csv_module_records(text: str, width: int) -> list[tuple[int, list[str]]]:
    """What the intake read with the csv module alone: well-formed, non-blank records."""
    records = []
    rows = csv.reader(io.StringIO(text, newline=""), strict=True)
    next(rows)
    for number, cells in enumerate(rows, 1):
        if not any(cells) or (len(cells) != width and (len(cells) < width or any(cells[width:]))):
            continue
        records.append((number, cells[:width]))
    return records


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(alphabet='ab,é"\r\n ', max_size=12), min_size=1, max_size=12),
    st.sampled_from([1, 2, 5, 1024]),
)
def test_records_are_the_csv_modules_with_or_without_quotes(lines: list[str], batch: int) -> None:
    text = "service,link\n" + "\n".join(lines)
    try:
        expected = _csv_module_records(text, 2)
    except csv.Error:
        expected = None
    with batch_rows(batch):
        table, errors = read_csv_table(text.encode(), known_columns=ORDER_COLUMNS)
        assert table is not None
        records = [(n, list(c)) for n, c in table.records]
    if expected is None:
        # The syntax error, at the same row and line as when the csv module reads it all.
        whole, whole_errors = read_csv_table(text.encode(), known_columns=ORDER_COLUMNS)
        assert whole is not None
        list(whole.records)
        assert errors[-1] == whole_errors[-1] and errors[-1].column == "file"
    else:
        assert records == expected


def test_a_syntax_error_after_plain_batches_names_the_files_line() -> None:
    content = b'service,comments\n1,a\n2,b\n3,c\n4,"x\ny"z\n'  # the csv module: line 6
    with batch_rows(2):
        table, errors = read_csv_table(content, known_columns=ORDER_COLUMNS)
        assert table is not None
        assert [n for n, _ in table.records] == [1, 2, 3]
    assert [(e.row, e.message.split(":")[0]) for e in errors] == [
        (4, "CSV syntax error near line 6")
    ]


@given(st.lists(st.text(alphabet="hHtTpPsS:/?#@[].0aF \t\x0b\x0c\r\x1c\x1fé\u00a0-",
                        max_size=20), min_size=1, max_size=6))  # fmt: skip
@settings(max_examples=400, deadline=None)
def test_links_checked_together_agree_with_each_checked_alone(values: list[str]) -> None:
    prefixed = [("https://" + v) if i % 2 else v for i, v in enumerate(values)]
    assert all_http_urls(prefixed) == all(is_http_url(v) for v in prefixed if v)


# -- memory ----------------------------------------------------------------------------------


def test_validated_rows_keep_no_object_per_plain_row() -> None:
    """A plain row costs its compact columns and its link's characters (about 80 bytes
    here), no Python object of its own: not a tuple, a dict, a ref string and a Decimal
    (about a kilobyte before), nor even a string for its link (about 60 bytes more)."""
    rows = 20_000
    content = _plain_file(rows)
    validate_order_file(content, "f.csv", CATALOG, WIDE, RICH, today=TODAY)  # warm caches
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = validate_order_file(content, "f.csv", CATALOG, WIDE, RICH, today=TODAY)
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert result.ok and len(result.rows) == rows
    assert kept / rows < 120, f"{kept / rows:.0f} bytes kept per row"


# -- the run's order of work -----------------------------------------------------------------


def test_a_stale_catalog_is_refreshed_before_the_file_is_judged(pipeline, sim) -> None:
    """The file is read once against the stored catalog; a panel it names whose catalog is
    older than catalog_max_age_minutes is refreshed, and the file is judged on the fresh
    catalog: a service the panel added since the last sync is accepted."""
    from smm_pipeline.intake.csv_files import file_hash
    from smm_pipeline.operations.catalog import refresh_catalog
    from smm_pipeline.operations.order_files import prepare_order_file
    from smm_pipeline.panel.client import PanelClient
    from smm_pipeline.warehouse.db import connect

    config = pipeline.settings.panel("sim")
    with PanelClient(config, config.api_key()) as client:
        refresh_catalog(client, pipeline.db_path)
        sim.add_service({"service": 777, "name": "New", "type": "Default", "category": "X",
                         "rate": "1.00", "min": "10", "max": "1000", "refill": False,
                         "cancel": False})  # fmt: skip
        content = b"service,link,quantity\n777,https://a.com/new,100\n"
        pipeline.drop("orders", "new.csv", content)
        with connect(pipeline.db_path) as conn:  # the last sync two hours ago
            conn.execute("UPDATE catalog_syncs SET synced_at = ?",
                         [datetime.now(UTC) - timedelta(hours=2)])  # fmt: skip
        prepared = prepare_order_file(
            pipeline.settings, pipeline.db_path, "new.csv", file_hash(content), {"sim": client}
        )
    assert (prepared.to_submit, prepared.panels) == (1, ["sim"])
    assert [r.panel for r in prepared.catalog_refreshes] == ["sim"]
