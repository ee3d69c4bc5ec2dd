"""The outbox's reads are exact (Decimal money, int order ids even beside NULLs), and a failed
ref is put back to pending under its new file while other states are left alone: on both
engines (a DuckDB file, then a Postgres database)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd

from smm_pipeline.warehouse.db import Location, connect
from smm_pipeline.warehouse.orders import (
    SubmitOutcome,
    file_rows,
    mark_sending,
    pending_rows,
    record_outcomes,
    record_pending,
)

COST = Decimal("0.123456789012345678")  # not representable as a binary float
BIG_ID = 2**53 + 1  # a float would turn it into 2**53


def outbox(refs: list[str], file_name: str, file_hash: str) -> pd.DataFrame:
    n = len(refs)
    return pd.DataFrame(
        {
            "panel": ["sim"] * n,
            "ref": refs,
            "source_file": file_name,
            "file_hash": file_hash,
            "row_number": list(range(1, n + 1)),
            "campaign": pd.array([None] * n, dtype="string"),
            "service_id": [1] * n,
            "service_type": "Default",
            "link": pd.array([f"https://x.com/{r}" for r in refs], dtype="string"),
            "quantity": pd.array([100] * n, dtype="Int64"),
            "params": "{}",
            "estimated_cost": [COST] * n,
        }
    )


def test_reads_are_exact_and_failed_refs_go_back_to_pending(warehouse: Location):
    db = warehouse
    now = datetime.now(UTC)
    with connect(db) as conn:
        record_pending(conn, outbox(["a", "b", "c"], "one.csv", "h1"), now)
        assert pending_rows(conn, "h1")["estimated_cost"].tolist() == [COST] * 3
        assert mark_sending(conn, "sim", ["a", "b", "c"], "claim") == {"a", "b", "c"}
        record_outcomes(
            conn,
            [
                SubmitOutcome("sim", "a", "failed", error="Not enough funds on balance"),
                SubmitOutcome("sim", "b", "submitted", order_id=BIG_ID, submitted_at=now),
                SubmitOutcome("sim", "c", "ambiguous", error="timeout", submitted_at=now),
            ],
            claim_id="claim",
        )
        rows = {r.ref: r for r in file_rows(conn, "h1")}
        assert rows["b"].order_id == BIG_ID and type(rows["b"].order_id) is int
        assert rows["a"].order_id is None
        assert rows["a"].estimated_cost == COST and isinstance(rows["a"].estimated_cost, Decimal)

        record_pending(conn, outbox(["a", "b", "c"], "two.csv", "h2"), now)
        again = {r.ref: r for r in file_rows(conn, "h2")}
        assert list(again) == ["a"]  # only the failed ref moved to the new file
        assert (again["a"].submit_state, again["a"].submit_error) == ("pending", None)
        assert again["a"].source_file == "two.csv"
        kept = {r.ref: r.submit_state for r in file_rows(conn, "h1")}
        assert kept == {"b": "submitted", "c": "ambiguous"}
        assert pending_rows(conn, "h2")["ref"].tolist() == ["a"]
        assert conn.execute("SELECT count(*) FROM orders").fetchall() == [(3,)]


def test_a_claim_returns_only_the_rows_it_flagged(warehouse: Location):
    """Only rows this claim moved from pending to sending may be sent: a row another run
    claimed first, or one already answered, is not returned a second time."""
    with connect(warehouse) as conn:
        record_pending(conn, outbox(["a", "b", "c"], "one.csv", "h1"), datetime.now(UTC))
        assert mark_sending(conn, "sim", ["a"], "c1") == {"a"}
        assert mark_sending(conn, "sim", ["a", "b", "zz"], "c2") == {"b"}
        assert mark_sending(conn, "other", ["c"], "c3") == set()
        assert mark_sending(conn, "sim", [], "c4") == set()
        states = dict(conn.execute("SELECT ref, submit_state FROM orders").fetchall())
    assert states == {"a": "sending", "b": "sending", "c": "pending"}
