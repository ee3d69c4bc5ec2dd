"""Parsing of odd answers: exact money, per-item errors as data, property-based checks."""

from __future__ import annotations

import contextlib
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smm_pipeline.panel import parsing


def test_ids_missing_from_a_write_answer_are_ambiguous():
    refills = parsing.parse_multi_refill([1, 2], [{"order": 1, "refill": 7}])
    assert refills[0].refill_id == 7 and not refills[0].ambiguous
    assert refills[1].ambiguous and refills[1].refill_id is None
    cancels = parsing.parse_multi_cancel([1, 2], [{"order": 2, "cancel": 1}])
    assert cancels[0].ambiguous and not cancels[0].accepted
    assert cancels[1].accepted


def test_unknown_status_word_is_an_error_not_pending():
    status = parsing.parse_order_status(5, {"status": "Teleported", "charge": "1"})
    assert status.status is None and status.raw_status == "Teleported"
    assert "unknown status word" in status.error


def test_subscription_status_shape():
    status = parsing.parse_order_status(
        9, {"status": "Active", "expiry": "31/12/2099", "posts": "3", "orders": ["1", 2]}
    )
    assert status.is_subscription and status.posts == 3 and status.orders == (1, 2)


def test_float_json_numbers_never_become_binary_floats():
    body = parsing.decode_json('{"balance": 100.84292, "currency": "usd"}')
    balance = parsing.parse_balance(body)
    assert balance.balance == Decimal("100.84292") and balance.currency == "USD"


def test_lone_error_only_when_it_is_the_only_key():
    assert parsing.lone_error({"error": "Incorrect request"}) == "Incorrect request"
    assert parsing.lone_error({"error": "x", "order": 1}) is None


@pytest.mark.parametrize("bad", ["abc", "", None, True, "Infinity", "NaN"])
def test_bad_money_is_a_shape_error(bad):
    with pytest.raises(parsing.ShapeError):
        parsing.to_decimal(bad, "charge")


money = st.decimals(min_value=0, max_value=10**9, places=5, allow_nan=False)


@given(charge=money, remains=st.integers(0, 10**9), start=st.integers(0, 10**9))
def test_status_items_round_trip_exactly(charge, remains, start):
    item = {"charge": str(charge), "start_count": str(start), "status": "Partial",
            "remains": remains, "currency": "USD"}  # fmt: skip
    status = parsing.parse_order_status(1, item)
    assert status.charge == charge and status.remains == remains
    assert status.start_count == start and status.status == "Partial"


@given(
    ids=st.lists(st.integers(1, 10**12), min_size=1, max_size=120, unique=True),
    data=st.data(),
)
def test_multi_status_answers_every_requested_id(ids, data):
    answered = data.draw(st.sets(st.sampled_from(ids)))
    body = {
        str(i): (
            {"status": "In progress", "charge": "0.1", "remains": "1"}
            if i % 2
            else data.draw(st.sampled_from([{"error": "Incorrect order ID"}, "Incorrect order ID"]))
        )
        for i in answered
    }
    result = parsing.parse_multi_status(ids, body)
    assert list(result) == ids
    for i in ids:
        if i not in answered:
            assert result[i].error == "missing from the panel's answer"
        elif i % 2:
            assert result[i].status == "In progress"
        else:
            assert result[i].error == "Incorrect order ID"


@given(st.text(max_size=200))
def test_garbage_bodies_never_crash_the_parsers_with_unexpected_errors(text):
    try:
        body = parsing.decode_json(text)
    except ValueError:
        return
    for parse in (parsing.parse_services, parsing.parse_balance, parsing.parse_add):
        with contextlib.suppress(parsing.ShapeError):
            parse(body)
    with contextlib.suppress(parsing.ShapeError):
        parsing.parse_multi_status([1, 2], body)
