"""`make demo` and the analytics notebook: the demo builds a warehouse through the real sensors
and jobs and prints every analytics view with rows; the notebook runs top to bottom on it,
through the read-only replica, while another process holds the live warehouse."""

from __future__ import annotations

import contextlib
import io
import re
from decimal import Decimal
from pathlib import Path

import duckdb
import nbformat
import pytest
from nbclient import NotebookClient

from smm_devkit.demo import ANALYTICS_VIEWS, main, query_frame, read_views
from smm_pipeline.config import PROJECT_ROOT

NOTEBOOK = PROJECT_ROOT / "notebooks" / "analytics.ipynb"
HEADERS = {
    "spend_daily": ["day", "panel", "currency", "campaign", "orders", "charge"],
    "delivery_by_service": ["panel", "service_id", "completion_rate", "cost_per_1000_delivered"],
    "provider_scorecard": ["panel", "category", "price_per_1000", "completion_rate"],
    "price_changes": ["panel", "service_id", "old_rate", "new_rate", "change_pct"],
    "balance_runway": ["panel", "balance", "spend_per_day", "days_left"],
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, str]:
    """One demo run for the module (`--keep`), and what it printed."""
    directory = tmp_path_factory.mktemp("demo_run") / "demo"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--keep", str(directory)])
    assert code == 0, out.getvalue()
    return directory, out.getvalue()


def printed_tables(output: str) -> dict[str, tuple[int, list[str]]]:
    """view → (row count it announced, the printed lines of its table)."""
    tables = {}
    parts = re.split(r"^== (\w+) \((\d+) rows\) ==$", output, flags=re.MULTILINE)
    for view, count, body in zip(parts[1::3], parts[2::3], parts[3::3], strict=True):
        tables[view] = (int(count), [line for line in body.strip().splitlines() if line.strip()])
    return tables


def test_demo_prints_every_analytics_view_with_rows(demo):
    directory, output = demo
    tables = printed_tables(output)
    assert list(tables) == list(ANALYTICS_VIEWS)
    for view, (count, lines) in tables.items():
        assert count > 0, view
        header = lines[0].split()
        assert all(column in header for column in HEADERS[view]), (view, header)
        assert len(lines) >= count + 1, view  # the header and one line per row at least
    assert tables["balance_runway"][0] == 2
    assert {"premiumsmm", "budgetsmm"} <= set(" ".join(tables["provider_scorecard"][1]).split())
    # premiumsmm raised service 1 from 0.90 to 1.05: +16.67 %.
    assert any(
        line.split()[:2] == ["premiumsmm", "1"] and "16.67" in line
        for line in tables["price_changes"][1]
    )


def test_demo_went_through_the_sensors_and_jobs_and_kept_its_directory(demo):
    directory, output = demo
    assert "orders_all_types.csv (rows for both panels) → order_csv_sensor → submit_orders: " \
        "46 submitted" in output  # fmt: skip
    assert "cancel_csv_sensor → cancel_orders: 4 accepted" in output
    assert "refill_csv_sensor → request_refills:" in output
    assert "order_status_sensor → 2 poll run(s)" in output  # one per panel
    assert "check_orders: ambiguous_submissions passed" in output
    processed = sorted(p.name for p in (directory / "processed").iterdir())
    assert processed == sorted(
        f"{stem}{suffix}"
        for stem in ("orders_all_types", "orders_default", "cancels", "refills")
        for suffix in (".csv", ".results.csv")
    )
    assert not list((directory / "rejected").iterdir())
    for kind in ("orders", "refills", "cancels"):
        assert not list((directory / "inbox" / kind).iterdir()), kind
    # The balances the demo printed last are the ones balance_runway holds, exactly.
    last = [line for line in output.splitlines() if "panel_balances materialized:" in line][-1]
    printed = dict(re.findall(r"(\w+smm) ([\d.]+)", last))
    views = read_views(directory / "warehouse.duckdb")
    runway = views["balance_runway"]
    assert {row.panel: row.balance for row in runway.itertuples()} == {
        panel: Decimal(amount) for panel, amount in printed.items()
    }
    # Money leaves DuckDB as Decimal, never float.
    assert all(isinstance(v, Decimal) for v in views["spend_daily"]["charge"])
    assert all(isinstance(v, Decimal) for v in runway["spend_per_day"])


def test_demo_refuses_a_directory_that_is_not_empty(tmp_path, capsys):
    (tmp_path / "something.txt").write_text("mine", encoding="utf-8")
    assert main(["--keep", str(tmp_path)]) == 1
    assert "is not empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["something.txt"]


def test_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert all(not cell.outputs and cell.execution_count is None for cell in code)
    assert notebook.metadata["kernelspec"]["name"] == "python3"


def test_notebook_runs_top_to_bottom_on_the_demo_warehouse(demo, monkeypatch):
    directory, _ = demo
    # No warehouse at SMM_DUCKDB_PATH yet: the notebook falls back to the demo folder beside it,
    # which the demo fixture already built (so it is reused, not rebuilt).
    monkeypatch.setenv("SMM_DUCKDB_PATH", str(directory.parent / "warehouse.duckdb"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=240,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    # A writer holds the live warehouse for the whole run: reading it instead of the replica
    # would fail on DuckDB's lock.
    with duckdb.connect(str(directory / "warehouse.duckdb")):
        client.execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert f"using the demo warehouse in {directory}" in text
    assert f"Reading {directory / 'warehouse.read.duckdb'}" in text
    assert "two simulated panels" not in text  # reused, not rebuilt
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) >= 6
    tables = [out["data"]["text/plain"] for out in outputs if "text/plain" in out.get("data", {})]
    assert any("next_order_to" in table for table in tables)


def test_query_frame_keeps_money_exact_without_the_warehouse_trailing_zeros(tmp_path):
    """DECIMAL(38,18) amounts come back as the same Decimal, shown as `1.05`, not
    `1.050000000000000000`; zero is plain 0."""
    with duckdb.connect(str(tmp_path / "q.duckdb")) as con:
        frame = query_frame(
            con,
            "SELECT CAST(x AS DECIMAL(38,18)) AS amount FROM (VALUES ('1.05'), ('10'), "
            "('0.000000000000000001'), ('-0'), ('123456789012.5')) t(x)",
        )
    shown = [str(v) for v in frame["amount"]]
    assert shown == ["1.05", "10", "1E-18", "0", "123456789012.5"]
    assert list(frame["amount"]) == [
        Decimal("1.05"), Decimal(10), Decimal("1E-18"), Decimal(0), Decimal("123456789012.5")
    ]  # fmt: skip
