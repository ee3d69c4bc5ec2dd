"""Catalog sync: an exact change log, set-based writes, nothing ever deleted; balances append."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from smm_pipeline.panel.models import Balance, Service
from smm_pipeline.warehouse import (
    catalog_age,
    connect,
    latest_balances,
    load_catalog,
    record_balance,
    sync_catalog,
)
from smm_pipeline.warehouse.db import Location
from smm_pipeline.warehouse.postgres import PostgresTarget

T1 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
T2 = T1 + timedelta(hours=1)
T3 = T2 + timedelta(hours=1)
T4 = T3 + timedelta(hours=1)


def _svc(sid: int, rate: str = "0.90", **over) -> Service:
    base = Service(
        service_id=sid,
        name=f"Service {sid}",
        type="Default",
        category="Instagram Followers",
        rate=Decimal(rate),
        min=50,
        max=10000,
        refill=True,
        cancel=False,
    )
    return replace(base, **over)


CATALOG = [_svc(1), _svc(2, "1.50"), _svc(3, "2.00", type="Package"), _svc(4, "0.010000")]


@pytest.fixture()
def db(warehouse: Location) -> Location:
    """Each test on both engines: a DuckDB file, then a Postgres database."""
    return warehouse


def _changes(conn, panel: str = "p") -> list[tuple]:
    return conn.execute(
        "SELECT service_id, changed_at, field, old_value, new_value FROM service_changes "
        "WHERE panel = ? ORDER BY changed_at, service_id, field",
        [panel],
    ).fetchall()


def test_first_sync_records_every_service_as_appeared(db: Location) -> None:
    with connect(db) as conn:
        result = sync_catalog(conn, "p", CATALOG, T1)
        stored = load_catalog(conn, "p")
        changes = _changes(conn)
        syncs = conn.execute("SELECT * FROM catalog_syncs").fetchall()
    assert (result.services, result.new, result.changed, result.vanished) == (4, 4, 0, 0)
    assert [c[2] for c in changes] == ["appeared"] * 4
    assert changes[0] == (1, T1, "appeared", None, "Service 1")
    assert syncs == [("p", T1, 4, 4, 0, 0, 0)]
    row = stored[("p", 2)]
    assert row.rate == Decimal("1.50") and row.active
    assert row.first_seen_at == T1 and row.last_seen_at == T1
    assert row.as_service() == CATALOG[1]
    assert list(result.changes.columns) == [
        "panel",
        "service_id",
        "changed_at",
        "field",
        "old_value",
        "new_value",
    ]
    assert len(result.changes) == 4


def test_diff_price_rise_min_change_removal_addition(db: Location) -> None:
    fetched = [
        _svc(1, "0.95"),  # price rise
        _svc(2, "1.50", min=100),  # min change
        _svc(3, "2.00", type="Package"),  # unchanged
        # 4 removed
        _svc(5, "3.25", category="TikTok Views"),  # added
    ]
    with connect(db) as conn:
        sync_catalog(conn, "p", CATALOG, T1)
        result = sync_catalog(conn, "p", fetched, T2)
        changes = _changes(conn)[4:]
        stored = load_catalog(conn, "p")
    assert changes == [
        (1, T2, "rate", "0.9", "0.95"),
        (2, T2, "min", "50", "100"),
        (4, T2, "disappeared", "Service 4", None),
        (5, T2, "appeared", None, "Service 5"),
    ]
    assert (result.services, result.new, result.changed, result.vanished) == (4, 1, 2, 1)
    assert sorted(result.changes["field"]) == ["appeared", "disappeared", "min", "rate"]
    assert stored[("p", 1)].rate == Decimal("0.95")
    assert stored[("p", 2)].min == 100
    vanished = stored[("p", 4)]
    assert not vanished.active and vanished.last_seen_at == T1
    assert stored[("p", 3)].last_seen_at == T2
    assert stored[("p", 5)].first_seen_at == T2 and stored[("p", 5)].category == "TikTok Views"


def test_vanished_service_is_kept_and_logged_once_then_reappears(db: Location) -> None:
    without_4 = CATALOG[:3]
    with connect(db) as conn:
        sync_catalog(conn, "p", CATALOG, T1)
        gone = sync_catalog(conn, "p", without_4, T2)
        still_gone = sync_catalog(conn, "p", without_4, T3)
        back = sync_catalog(conn, "p", [*without_4, _svc(4, "0.02", refill=False)], T4)
        changes = _changes(conn)[4:]
        row = load_catalog(conn)[("p", 4)]
        syncs = conn.execute("SELECT * FROM catalog_syncs ORDER BY synced_at").fetchall()
    assert gone.vanished == 1 and still_gone.vanished == 0 and len(still_gone.changes) == 0
    assert (back.new, back.reappeared, back.changed, back.vanished) == (0, 1, 1, 0)
    assert changes == [
        (4, T2, "disappeared", "Service 4", None),
        (4, T4, "rate", "0.01", "0.02"),
        (4, T4, "reappeared", None, "Service 4"),
        (4, T4, "refill", "true", "false"),
    ]
    assert row.active and row.first_seen_at == T1 and row.last_seen_at == T4
    assert syncs[-1] == ("p", T4, 4, 0, 1, 0, 1)


def test_unchanged_sync_writes_no_change_rows_but_moves_last_seen(db: Location) -> None:
    with connect(db) as conn:
        sync_catalog(conn, "p", CATALOG, T1)
        # the same catalog, with rates spelled differently but equal as decimals
        again = [replace(s, rate=Decimal(str(s.rate)) + Decimal("0.000")) for s in CATALOG]
        result = sync_catalog(conn, "p", again, T2)
        n_changes = conn.execute("SELECT count(*) FROM service_changes").fetchone()[0]
        seen = {r.last_seen_at for r in load_catalog(conn, "p").values()}
    assert (result.new, result.changed, result.vanished, result.reappeared) == (0, 0, 0, 0)
    assert result.changes.empty and result.preview_markdown() == "No changes."
    assert n_changes == 4
    assert seen == {T2}


def test_rates_are_exact_decimals(db: Location) -> None:
    with connect(db) as conn:
        sync_catalog(conn, "p", [_svc(1, "0.1234567"), _svc(2, "123456789012.345678")], T1)
        result = sync_catalog(conn, "p", [_svc(1, "0.1234568"), _svc(2, "123456789012.345678")], T2)
        stored = load_catalog(conn, "p")
        column_type = conn.execute(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_name = 'services' AND column_name = 'rate'"
        ).fetchone()[0]
    assert column_type == ("numeric" if isinstance(db, PostgresTarget) else "DECIMAL(38,18)")
    assert stored[("p", 1)].rate == Decimal("0.1234568")
    assert stored[("p", 2)].rate == Decimal("123456789012.345678")
    assert isinstance(stored[("p", 2)].rate, Decimal)
    assert result.changed == 1
    assert result.changes[["field", "old_value", "new_value"]].values.tolist() == [
        ["rate", "0.1234567", "0.1234568"]
    ]


def test_other_panels_are_untouched(db: Location) -> None:
    with connect(db) as conn:
        sync_catalog(conn, "a", CATALOG, T1)
        result = sync_catalog(conn, "b", [_svc(1, "5.00")], T2)
        stored = load_catalog(conn)
    assert (result.new, result.vanished) == (1, 0)
    assert all(row.active for row in stored.values())
    assert stored[("a", 1)].rate == Decimal("0.90") and stored[("b", 1)].rate == Decimal("5.00")
    assert len(stored) == 5


def test_duplicate_ids_keep_the_last_entry(db: Location) -> None:
    with connect(db) as conn:
        result = sync_catalog(conn, "p", [_svc(1, "1.00"), _svc(1, "2.00")], T1)
        assert load_catalog(conn, "p")[("p", 1)].rate == Decimal("2.00")
    assert result.services == 1 and result.new == 1


def test_failed_sync_leaves_everything_as_it_was(db: Location) -> None:
    with connect(db) as conn:
        sync_catalog(conn, "p", CATALOG, T1)
        before = load_catalog(conn)
        too_big = _svc(9, "1e21")  # does not fit DECIMAL(38,18)
        with pytest.raises(Exception, match="(?i)overflow|out of range|could not convert"):
            sync_catalog(conn, "p", [_svc(1, "7.00"), too_big], T2)
        assert load_catalog(conn) == before
        assert conn.execute("SELECT count(*) FROM service_changes").fetchone()[0] == 4
        assert conn.execute("SELECT count(*) FROM catalog_syncs").fetchone()[0] == 1


def test_empty_catalog_is_refused_while_services_are_active(db: Location) -> None:
    with connect(db) as conn:
        empty_first = sync_catalog(conn, "p", [], T1)
        sync_catalog(conn, "p", CATALOG, T2)
        with pytest.raises(ValueError, match="empty catalog"):
            sync_catalog(conn, "p", [], T3)
        assert all(r.active for r in load_catalog(conn, "p").values())
    assert empty_first.services == 0


def test_naive_timestamps_are_refused(db: Location) -> None:
    with connect(db) as conn, pytest.raises(ValueError, match="timezone-aware"):
        sync_catalog(conn, "p", CATALOG, datetime(2025, 1, 1))


def test_catalog_age(db: Location) -> None:
    with connect(db) as conn:
        assert catalog_age(conn, "p") is None
        sync_catalog(conn, "p", CATALOG, T1)
        sync_catalog(conn, "p", CATALOG, T2)
        assert catalog_age(conn, "p", now=T2 + timedelta(minutes=7)) == timedelta(minutes=7)
        assert catalog_age(conn, "other") is None


def test_preview_markdown_lists_changes(db: Location) -> None:
    with connect(db) as conn:
        result = sync_catalog(conn, "p", CATALOG, T1)
    text = result.preview_markdown(limit=2)
    assert "appeared" in text and "Service 1" in text and "2 more change rows" in text


def test_balances_append_and_latest_wins(db: Location) -> None:
    with connect(db) as conn:
        record_balance(conn, "p", Balance(Decimal("100.123456"), "USD"), T1)
        record_balance(conn, "p", Balance(Decimal("99.000001"), "USD"), T2)
        record_balance(conn, "q", Balance(Decimal("-3.5"), "EUR"), T1)
        rows = conn.execute("SELECT * FROM balances ORDER BY panel, fetched_at").fetchall()
        latest = latest_balances(conn)
        with pytest.raises(ValueError, match="timezone-aware"):
            record_balance(conn, "p", Balance(Decimal("1"), "USD"), datetime(2025, 1, 1))
    assert rows == [
        ("p", T1, Decimal("100.123456"), "USD"),
        ("p", T2, Decimal("99.000001"), "USD"),
        ("q", T1, Decimal("-3.5"), "EUR"),
    ]
    assert latest["p"].balance == Decimal("99.000001") and latest["p"].fetched_at == T2
    assert latest["q"].currency == "EUR" and set(latest) == {"p", "q"}
