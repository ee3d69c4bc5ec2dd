"""`make demo` and the analytics notebook: the demo builds weeks of history through the real
sensors and jobs, on a simulated clock, and prints every analytics view with rows; the notebook
runs top to bottom on it, through the read-only replica, while another process holds the live
warehouse; the same history moved into Postgres answers every view with the same numbers, and
the notebook runs on it too."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import re
import secrets
from decimal import Decimal
from pathlib import Path

import duckdb
import nbformat
import pytest
from nbclient import NotebookClient

from smm_devkit import demo as demo_module
from smm_devkit.demo import ANALYTICS_VIEWS, PRINTED_ROWS, main, query_frame, read_views
from smm_devkit.demo_clock import SimulatedNow, pipeline_clock, pipeline_modules
from smm_pipeline.config import PROJECT_ROOT
from smm_pipeline.warehouse.db import WarehouseError, connect
from smm_pipeline.warehouse.postgres import PostgresTarget
from smm_pipeline.warehouse.transfer import copy_to_postgres

NOTEBOOK = PROJECT_ROOT / "notebooks" / "analytics.ipynb"
# The test plays 29 days (the default is 35): enough for a history of four weeks and more.
DAYS = 29
HEADERS = {
    "spend_daily": ["day", "panel", "currency", "campaign", "orders", "charge"],
    "delivery_by_service": ["panel", "service_id", "completion_rate", "cost_per_1000_delivered"],
    "provider_scorecard": ["panel", "category", "price_per_1000", "completion_rate"],
    "price_changes": ["panel", "service_id", "old_rate", "new_rate", "change_pct"],
    "balance_runway": ["panel", "balance", "spend_per_day", "days_left"],
}


class Demo:
    """One demo run (`--keep`): its directory, what it printed, and the panels' API keys."""

    def __init__(self, directory: Path, output: str, keys: list[str]) -> None:
        self.directory = directory
        self.output = output
        self.keys = keys

    @property
    def replica(self) -> Path:
        return self.directory / "warehouse.read.duckdb"

    def query(self, sql: str) -> list[tuple]:
        with duckdb.connect(str(self.replica), read_only=True) as conn:
            return conn.execute(sql).fetchall()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Demo:
    """One demo run for the module, recording the API keys it made up for its panels."""
    directory = tmp_path_factory.mktemp("demo_run") / "demo"
    keys: list[str] = []
    original = secrets.token_urlsafe

    def token(nbytes: int) -> str:
        keys.append(original(nbytes))
        return keys[-1]

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.setattr(demo_module.secrets, "token_urlsafe", token)
        code = main(["--keep", str(directory), "--days", str(DAYS)])
    assert code == 0, out.getvalue()
    assert len(keys) == 2
    return Demo(directory, out.getvalue(), keys)


def printed_tables(output: str) -> dict[str, tuple[int, list[str]]]:
    """view → (row count it announced, the printed lines of its table)."""
    tables = {}
    parts = re.split(r"^== (\w+) \((\d+) rows\) ==$", output, flags=re.MULTILINE)
    for view, count, body in zip(parts[1::3], parts[2::3], parts[3::3], strict=True):
        tables[view] = (int(count), [line for line in body.strip().splitlines() if line.strip()])
    return tables


def test_demo_prints_every_analytics_view_with_rows(demo):
    tables = printed_tables(demo.output)
    assert list(tables) == list(ANALYTICS_VIEWS)
    for view, (count, lines) in tables.items():
        assert count > 0, view
        header = lines[0].split()
        assert all(column in header for column in HEADERS[view]), (view, header)
        assert len(lines) >= min(count, PRINTED_ROWS) + 1, view  # header, then rows
    assert tables["balance_runway"][0] == 2
    assert tables["spend_daily"][0] > PRINTED_ROWS  # weeks of rows: the long view is cut
    assert any(line.startswith("(") and "rows not shown" in line
               for line in tables["spend_daily"][1])  # fmt: skip
    assert {"premiumsmm", "budgetsmm"} <= set(" ".join(tables["provider_scorecard"][1]).split())
    # premiumsmm raised service 1 from 0.90 to 1.05 on day 6: +16.67 %.
    assert any(
        line.split()[:2] == ["premiumsmm", "1"] and "16.67" in line
        for line in tables["price_changes"][1]
    )


def test_demo_went_through_the_sensors_and_jobs_and_kept_its_directory(demo):
    output = demo.output
    assert "orders_all_types.csv → order_csv_sensor → submit_orders: 46 submitted" in output
    assert "cancels.csv → cancel_csv_sensor → cancel_orders: 4 accepted" in output
    assert "order_status_sensor → 2 poll run(s)" in output  # one per panel
    assert "check_orders: ambiguous_submissions passed" in output
    # One line per simulated day after day 0, and the files each names were handled.
    days = re.findall(r"^\[[ \d.]+s\] day +(\d+) \w{3} \d{4}-", output, flags=re.MULTILINE)
    assert [int(d) for d in days] == list(range(1, DAYS))
    named = set(re.findall(r"((?:orders|cancels|refills)_day\d\d\.csv): \d+ (?:submitted|accepted)",
                           output))  # fmt: skip
    assert sum(n.startswith("orders_") for n in named) >= 3 * (DAYS // 7)
    assert sum(n.startswith("cancels_") for n in named) >= DAYS // 7
    assert sum(n.startswith("refills_") for n in named) >= DAYS // 7 - 1
    processed = sorted(p.name for p in (demo.directory / "processed").iterdir())
    handled = {"orders_all_types.csv", "cancels.csv"} | named
    assert processed == sorted(
        name.replace(".csv", suffix) for name in handled for suffix in (".csv", ".results.csv")
    )
    assert not list((demo.directory / "rejected").iterdir())
    for kind in ("orders", "refills", "cancels"):
        assert not list((demo.directory / "inbox" / kind).iterdir()), kind
    # The balances the demo printed last are the ones balance_runway holds, exactly.
    last = [line for line in output.splitlines() if "panel_balances materialized:" in line][-1]
    printed = dict(re.findall(r"(\w+smm) ([\d.]+)", last))
    views = read_views(demo.directory / "warehouse.duckdb")
    runway = views["balance_runway"]
    assert {row.panel: row.balance for row in runway.itertuples()} == {
        panel: Decimal(amount) for panel, amount in printed.items()
    }
    # Money leaves DuckDB as Decimal, never float.
    assert all(isinstance(v, Decimal) for v in views["spend_daily"]["charge"])
    assert all(isinstance(v, Decimal) for v in runway["spend_per_day"])


def test_demo_history_spans_weeks_of_simulated_days(demo):
    """The pipeline's own stamps (not only the panels') fall on the simulated days: four
    weeks and more from the first order to the last poll, every week with orders."""
    first, last_order, order_days = demo.query("""
        SELECT min(submitted_at), max(submitted_at), count(DISTINCT CAST(submitted_at AS DATE))
        FROM orders
    """)[0]
    (last_seen,) = demo.query("SELECT max(fetched_at) FROM balances")[0]  # the final fetch: now
    assert last_seen - first >= dt.timedelta(days=28)
    assert last_order - first >= dt.timedelta(days=DAYS - 4)
    assert order_days >= 3 * (DAYS // 7)
    per_table = {
        "order_status_history": "observed_at",
        "balances": "fetched_at",
        "service_changes": "changed_at",
        "refills": "requested_at",
        "cancels": "requested_at",
    }
    for table, column in per_table.items():
        (days,) = demo.query(f"SELECT count(DISTINCT CAST({column} AS DATE)) FROM {table}")[0]
        assert days >= DAYS // 7, (table, days)
    # The history ends now, never later, and in the order things happen.
    (future,) = demo.query(f"""
        SELECT count(*) FROM ({" UNION ALL ".join(
            f"SELECT {c} AS t FROM {t}" for t, c in per_table.items())})
        WHERE t > now()
    """)[0]  # fmt: skip
    assert future == 0
    assert demo.query("""
        SELECT count(*) FILTER (WHERE o.created_at > o.submitted_at),
               count(*) FILTER (WHERE h.observed_at < o.submitted_at),
               count(*) FILTER (WHERE o.finished_at < o.submitted_at)
        FROM orders o JOIN order_status_history h USING (panel, order_id)
    """) == [(0, 0, 0)]
    assert demo.query("""
        SELECT count(*) FROM refills r JOIN orders o USING (panel, order_id)
        WHERE r.requested_at < o.finished_at OR r.requested_at < o.submitted_at
    """) == [(0,)]
    assert demo.query("""
        SELECT count(*) FROM cancels c JOIN orders o USING (panel, order_id)
        WHERE c.requested_at < o.submitted_at
    """) == [(0,)]


def test_demo_month_has_partials_cancels_refills_price_changes_and_varied_rates(demo):
    statuses = dict(demo.query("SELECT status, count(*) FROM orders GROUP BY status"))
    assert statuses.get("Partial", 0) >= 1
    assert statuses.get("Canceled", 0) >= 1
    # Canceled through cancel drops (not only by the panel's own fate), on several days.
    canceled_by_drop, cancel_days = demo.query("""
        SELECT count(*) FILTER (WHERE o.status = 'Canceled'),
               count(DISTINCT CAST(c.requested_at AS DATE))
        FROM cancels c JOIN orders o USING (panel, order_id) WHERE c.result = 'accepted'
    """)[0]
    assert canceled_by_drop >= 1 and cancel_days >= 2
    refills, refilled_orders, refill_statuses = demo.query("""
        SELECT count(*), count(DISTINCT (panel, order_id)), list(DISTINCT status)
        FROM refills WHERE request_state = 'submitted'
    """)[0]
    assert refills >= 1 and refilled_orders == refills
    assert "Completed" in refill_statuses
    (changes, change_days) = demo.query(
        "SELECT count(*), count(DISTINCT CAST(changed_at AS DATE)) FROM price_changes"
    )[0]
    assert changes >= 5 and change_days >= 3
    # Completion rates of the services ordered often enough to have one: varied, most below 1.
    rates = [r for (r,) in demo.query(
        "SELECT completion_rate FROM delivery_by_service WHERE finished >= 5")]  # fmt: skip
    assert len(rates) >= 5 and len(set(rates)) >= 4
    assert sum(r == 1 for r in rates) < len(rates) / 2
    categories = [r for (r,) in demo.query("SELECT completion_rate FROM provider_scorecard")]
    assert len(set(categories)) >= 5
    scorecard = dict(
        demo.query("""
        SELECT panel, round(sum(completed) / sum(finished), 2) FROM (
            SELECT panel, completion_rate * finished AS completed, finished
            FROM provider_scorecard WHERE finished > 0) GROUP BY panel
    """)
    )
    assert scorecard["premiumsmm"] > scorecard["budgetsmm"]


def test_demo_balances_run_down_with_the_spend_and_one_top_up(demo):
    history = demo.query("""
        SELECT panel, list(balance ORDER BY fetched_at), count(DISTINCT CAST(fetched_at AS DATE))
        FROM balances GROUP BY panel ORDER BY panel
    """)
    top_ups = []
    for panel, balances, days in history:
        assert days >= 2 * (DAYS // 7), panel  # fetched regularly
        steps = [after - before for before, after in zip(balances, balances[1:], strict=False)]
        # Down with each batch's spend; up a little with refunds; one jump up by the top-up.
        assert sum(s for s in steps if s < 0) < -Decimal(40), panel
        top_ups += [(panel, s) for s in steps if s >= 50]
    # (refunds of orders that ended Partial in between may add to the same step)
    assert [panel for panel, _ in top_ups] == ["budgetsmm"]
    assert Decimal(100) <= top_ups[0][1] < Decimal(110)
    assert "budgetsmm topped up by 100.00" in demo.output
    assert re.search(r"low_balance warns: budgetsmm", demo.output)
    premium = dict((p, b) for p, b, _ in history)["premiumsmm"]
    assert premium[-1] < premium[0] - 100  # never topped up: a month of spend
    runway = demo.query("SELECT panel, spend_per_day, days_left FROM balance_runway")
    assert all(spend > 0 and days_left is not None for _, spend, days_left in runway)


def test_demo_output_and_files_never_hold_a_panel_key(demo):
    """The demo makes up its panels' keys: none is in what it printed or left behind (the
    panels.yaml names the variables, the warehouse and reports hold no key)."""
    assert all(len(key) >= 20 for key in demo.keys)
    texts = {"output": demo.output}
    for path in demo.directory.rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("utf-8", errors="replace")
    assert (demo.directory / "panels.yaml").read_text().count("key_env") == 2
    leaks = [(name, key[:4]) for name, text in texts.items() for key in demo.keys if key in text]
    assert not leaks


def test_pipeline_clock_moves_every_datetime_now_of_the_pipeline():
    """Every pipeline module that stamps `datetime.now()` follows the demo's clock while it
    is on (after load_definitions, as in the demo), and the real clock afterwards."""
    from smm_pipeline.definitions import load_definitions

    load_definitions()
    stamping = {
        m.__name__
        for m in pipeline_modules()
        if "datetime.now(" in Path(m.__file__ or "").read_text(encoding="utf-8")
    }
    assert {"smm_pipeline.operations.submission", "smm_pipeline.operations.polling"} <= stamping
    weeks_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    clock = SimulatedNow(weeks_ago.timestamp())
    modules = {m.__name__: m for m in pipeline_modules()}
    with pipeline_clock(clock) as following:
        assert stamping <= set(following)
        for name in stamping:
            stand_in = modules[name].datetime
            now = stand_in.now(dt.UTC)
            assert type(now) is dt.datetime
            assert abs(now - weeks_ago) < dt.timedelta(seconds=60)
            assert isinstance(dt.datetime.now(dt.UTC), stand_in)  # real datetimes still pass
            assert type(stand_in.fromisoformat("2026-01-02T03:04:05+00:00")) is dt.datetime
        assert clock.jump_to(weeks_ago.timestamp() - 3600) >= weeks_ago.timestamp()  # no going back
        clock.jump_to(weeks_ago.timestamp() + 86400)
        later = modules["smm_pipeline.operations.polling"].datetime.now(dt.UTC)
        assert abs(later - weeks_ago - dt.timedelta(days=1)) < dt.timedelta(seconds=60)
    assert all(modules[name].datetime is dt.datetime for name in following)


def test_demo_refuses_a_directory_that_is_not_empty(tmp_path, capsys):
    (tmp_path / "something.txt").write_text("mine", encoding="utf-8")
    assert main(["--keep", str(tmp_path)]) == 1
    assert "is not empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["something.txt"]


def test_demo_refuses_a_history_it_has_no_money_for(tmp_path, capsys):
    assert main(["--keep", str(tmp_path / "d"), "--days", "36"]) == 1
    assert "--days must be 1 to 35" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert all(not cell.outputs and cell.execution_count is None for cell in code)
    assert notebook.metadata["kernelspec"]["name"] == "python3"


def test_notebook_runs_top_to_bottom_on_the_demo_warehouse(demo, monkeypatch):
    directory = demo.directory
    # No warehouse at SMM_DUCKDB_PATH yet: the notebook falls back to the demo folder beside it,
    # which the demo fixture already built (so it is reused, not rebuilt).
    monkeypatch.setenv("SMM_DUCKDB_PATH", str(directory.parent / "warehouse.duckdb"))
    # A writer holds the live warehouse for the whole run: reading it instead of the replica
    # would fail on DuckDB's lock.
    with duckdb.connect(str(directory / "warehouse.duckdb")):
        text, _ = run_notebook()
    assert f"using the demo warehouse in {directory}" in text
    assert f"Reading {directory / 'warehouse.read.duckdb'}" in text
    assert "two simulated panels" not in text  # reused, not rebuilt


def run_notebook() -> tuple[str, list[str]]:
    """Run the notebook top to bottom; its printed text and its tables. It must run without an
    error and draw every plot: spend per day, cumulative, ..., balance history, runway."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=240,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) >= 8
    tables = [out["data"]["text/plain"] for out in outputs if "text/plain" in out.get("data", {})]
    assert any("next_order_to" in table for table in tables)
    return text, tables


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


# ------------------------------------------- the same history on Postgres (one more machine)


@pytest.fixture(scope="module")
def demo_on_postgres(demo, postgres_server):
    """The demo's warehouse moved into a fresh Postgres database, as a reseller moves theirs
    (python -m smm_pipeline.warehouse.transfer)."""
    target = PostgresTarget(postgres_server.create_database("demo_moved").url())
    copied = copy_to_postgres(demo.directory / "warehouse.duckdb", target, progress=lambda _: None)
    return target, copied


def _rows(frame) -> list[str]:
    return sorted(repr(tuple(row)) for row in frame.itertuples(index=False))


def test_a_moved_warehouse_answers_every_view_with_the_same_numbers(demo, demo_on_postgres):
    target, copied = demo_on_postgres
    with duckdb.connect(str(demo.replica), read_only=True) as conn:
        for table, count in copied.items():
            assert conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] == count, table
    assert copied["orders"] > 100 and copied["order_status_history"] > copied["orders"]
    on_duckdb, on_postgres = read_views(demo.directory / "warehouse.duckdb"), read_views(target)
    for view in ANALYTICS_VIEWS:
        assert list(on_postgres[view].columns) == list(on_duckdb[view].columns), view
        assert _rows(on_postgres[view]) == _rows(on_duckdb[view]), view


def test_a_warehouse_is_moved_into_an_empty_one_only(demo, demo_on_postgres):
    target, copied = demo_on_postgres
    with pytest.raises(WarehouseError, match="already holds rows in .*orders") as refused:
        copy_to_postgres(demo.directory / "warehouse.duckdb", target, progress=lambda _: None)
    assert target.url not in str(refused.value) and "***" in str(refused.value)
    with connect(target, read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == copied["orders"]


def test_notebook_runs_top_to_bottom_on_the_postgres_warehouse(demo_on_postgres, monkeypatch):
    target, _ = demo_on_postgres
    monkeypatch.setenv("SMM_WAREHOUSE_URL", target.url)
    text, tables = run_notebook()  # the same plots and tables as on the replica
    assert f"Reading {target.safe}" in text and "***" in target.safe
    assert target.url not in text + "".join(tables)
