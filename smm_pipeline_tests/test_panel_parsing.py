"""Parsing of odd answers: exact money, per-item errors as data, property-based checks."""

from __future__ import annotations

import contextlib
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smm_pipeline.panel import parsing
from smm_pipeline.panel.models import CancelResult, RefillResult, RefillStatus


def test_ids_missing_from_a_write_answer_are_ambiguous():
    refills = parsing.parse_multi_refill([1, 2], [{"order": 1, "refill": 7}])
    assert refills[0].refill_id == 7 and not refills[0].ambiguous
    assert refills[1].ambiguous and refills[1].refill_id is None
    cancels = parsing.parse_multi_cancel([1, 2], [{"order": 2, "cancel": 1}])
    assert cancels[0].ambiguous and not cancels[0].accepted
    assert cancels[1].accepted


def test_a_cancel_answer_for_other_orders_leaves_the_asked_ones_ambiguous():
    # A panel that cancelled 5 but answers for 6 (the simulator's other_id fault).
    (asked,) = parsing.parse_multi_cancel([5], [{"order": 6, "cancel": 1}])
    assert asked == CancelResult(5, accepted=False, error=parsing.MISSING_WRITE, ambiguous=True)
    cancels = parsing.parse_multi_cancel(
        [5, 7], [{"order": 8, "cancel": 1}, {"order": 7, "cancel": {"error": "Incorrect order ID"}}]
    )
    assert cancels[0].ambiguous and not cancels[0].accepted
    assert cancels[1] == CancelResult(7, accepted=False, error="Incorrect order ID")
    # Not a list of items at all, but one item naming another order: still not the asked one.
    (single,) = parsing.parse_multi_cancel([5], {"order": 6, "cancel": 1})
    assert single.ambiguous and not single.accepted


def test_an_id_named_twice_with_different_outcomes_is_ambiguous():
    cancels = parsing.parse_multi_cancel(
        [1, 2],
        [{"order": 1, "cancel": 1}, {"order": 1, "cancel": {"error": "Incorrect order ID"}},
         {"order": 2, "cancel": 1}, {"order": "2", "cancel": 1}],
    )  # fmt: skip
    assert cancels[0] == CancelResult(
        1, accepted=False, error=parsing.CONFLICTING_WRITE, ambiguous=True
    )
    assert cancels[1] == CancelResult(2, accepted=True)  # the same outcome twice is fine
    refills = parsing.parse_multi_refill(
        [1, 2], [{"order": 1, "refill": 7}, {"order": 1, "refill": 8}, {"order": 2, "refill": 9}]
    )
    assert refills[0] == RefillResult(1, error=parsing.CONFLICTING_WRITE, ambiguous=True)
    assert refills[1] == RefillResult(2, refill_id=9)
    statuses = parsing.parse_multi_refill_status(
        [4], [{"refill": 4, "status": "Completed"}, {"refill": 4, "status": "Rejected"}]
    )
    assert statuses[4] == RefillStatus(4, error=parsing.CONFLICTING)


def test_a_refill_answer_naming_an_earlier_refill_is_that_id():
    # The panel cannot be caught here; the warehouse sees the refill id twice.
    assert parsing.parse_refill(3, {"refill": "501"}) == RefillResult(3, refill_id=501)
    assert parsing.parse_multi_refill([3, 4], [{"order": 3, "refill": 501},
                                               {"order": 4, "refill": 501}]) == [
        RefillResult(3, refill_id=501), RefillResult(4, refill_id=501)
    ]  # fmt: skip


@pytest.mark.parametrize("body", [{"order": 10001}, {"order": "10001"}])
def test_an_add_answer_with_a_readable_id_is_just_that_id(body):
    # Even when it is an earlier order's id (a panel's bug): detecting that is the warehouse's.
    assert parsing.parse_add(body) == 10001


@pytest.mark.parametrize(
    "body", [{"order": "abc"}, {"order": 0}, {"order": None}, {"status": "ok"}, [10001]]
)
def test_an_add_answer_without_a_readable_id_is_a_shape_error(body):
    with pytest.raises(parsing.ShapeError):
        parsing.parse_add(body)


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
    for parse_multi in (
        parsing.parse_multi_status,
        parsing.parse_multi_refill,
        parsing.parse_multi_refill_status,
        parsing.parse_multi_cancel,
    ):
        with contextlib.suppress(parsing.ShapeError):
            parse_multi([1, 2], body)
    parsing.parse_refill(1, body)  # never raises: the panel may have acted
    parsing.parse_refill_status(1, body)


# -- one odd item never costs the others ------------------------------------------------------


def test_a_malformed_status_item_is_that_items_error_only():
    body = {
        "1": {"charge": "abc", "status": "Partial", "remains": "1"},
        "2": {"charge": "0.27819", "start_count": "3572", "status": "Partial", "remains": "157"},
        "3": {"status": "Active", "orders": ["1", "-4"], "posts": "1"},
    }
    result = parsing.parse_multi_status([1, 2, 3], body)
    assert result[1].status is None and "charge is not a number: 'abc'" in result[1].error
    assert result[2].charge == Decimal("0.27819") and result[2].error is None
    assert "child order id is not a positive id" in result[3].error


def test_a_malformed_write_item_is_ambiguous_and_the_others_are_kept():
    refills = parsing.parse_multi_refill(
        [1, 2, 3, 4, 5],
        [
            {"order": 1, "refill": 7},
            {"order": 2, "refill": "abc"},
            {"order": 3, "refill": {"id": 8}},
            {"order": 4, "refill": -3},
            {"order": 5, "refill": {"error": "Incorrect order ID"}},
        ],
    )
    assert refills[0] == RefillResult(1, refill_id=7)
    assert all(r.ambiguous and r.refill_id is None for r in refills[1:4])
    assert "may have been carried out" in refills[1].error
    assert refills[4] == RefillResult(5, error="Incorrect order ID")
    cancels = parsing.parse_multi_cancel(
        [1, 2, 3, 4, 5],
        [
            {"order": 1, "cancel": 1},
            {"order": 2, "cancel": "maybe"},
            {"order": 3, "cancel": {"done": 1}},  # was read as accepted
            {"order": 4},
            {"order": 5, "cancel": 0},
        ],
    )
    assert cancels[0] == CancelResult(1, accepted=True)
    assert all(c.ambiguous and not c.accepted for c in cancels[1:4])
    assert cancels[4] == CancelResult(
        5, accepted=False, error="the panel did not accept the cancel"
    )


def test_a_malformed_refill_status_item_is_that_items_error_only():
    result = parsing.parse_multi_refill_status(
        [1, 2, 3],
        [
            {"refill": 1, "status": {"state": "x"}},
            {"refill": 2, "status": "Completed"},
            {"refill": 3},
        ],
    )
    assert result[1].error.startswith("unreadable status") and result[1].status is None
    assert result[2] == RefillStatus(2, status="Completed", raw_status="Completed")
    assert result[3].error == "no status in the answer"


# -- answers keyed by id --------------------------------------------------------------------------


def test_multi_refill_keyed_by_order_id_keeps_the_refill_ids():
    refills = parsing.parse_multi_refill(
        [1, 2, 3, 4],
        {
            "1": 5,
            "2": {"refill": "6"},
            "3": {"error": "Incorrect order ID"},
            "4": "Incorrect order ID",
        },
    )
    assert [r.refill_id for r in refills] == [5, 6, None, None]
    assert [r.error for r in refills] == [None, None, "Incorrect order ID", "Incorrect order ID"]
    assert not any(r.ambiguous for r in refills)


def test_multi_refill_status_keyed_by_refill_id_is_read():
    result = parsing.parse_multi_refill_status(
        [1, 2, 3, 4],
        {"1": {"status": "Completed"}, "2": "rejected", "3": {"error": "Refill not found"}, "4": 9},
    )
    assert result[1].status == "Completed" and result[2].status == "Rejected"
    assert result[3] == RefillStatus(3, error="Refill not found")
    assert result[4].status is None and result[4].error == "unknown refill status '9'"


def test_multi_cancel_keyed_by_order_id_is_read():
    cancels = parsing.parse_multi_cancel([1, 2, 3], {"1": 1, "2": {"cancel": "1"}, "3": "0"})
    assert [c.accepted for c in cancels] == [True, True, False]
    assert not any(c.ambiguous for c in cancels)


# -- writes without an id, bare error strings ----------------------------------------------------


def test_a_refill_answer_without_a_refill_id_is_ambiguous():
    result = parsing.parse_refill(1, {"order": 1})
    assert result.ambiguous and result.refill_id is None
    assert result.error == "no refill id in the answer: the request may have been carried out"
    assert parsing.parse_refill(1, {"refill": ""}).ambiguous
    refused = parsing.parse_refill(1, {"order": 1, "error": "Incorrect order ID"})
    assert refused == RefillResult(1, error="Incorrect order ID")
    assert parsing.parse_refill(1, {"refill": "1"}) == RefillResult(1, refill_id=1)


@pytest.mark.parametrize(
    "sentence",
    ["Refill not found", "Incorrect order ID", "Incorrect request", "Incorrect refill ID",
     "The refill task is not completed for this order", "Refill is disabled for this service"],
)  # fmt: skip
def test_a_bare_error_sentence_as_refill_status_is_the_items_error(sentence):
    status = parsing.parse_multi_refill_status([9], [{"refill": 9, "status": sentence}])[9]
    assert status == RefillStatus(9, error=sentence)
    assert parsing.parse_refill_status(9, {"status": sentence}) == RefillStatus(9, error=sentence)


@pytest.mark.parametrize("word", ["Teleported", "Waiting", "42"])
def test_an_unknown_refill_status_word_is_a_visible_error_never_pending(word):
    status = parsing.parse_refill_status(9, {"status": word})
    assert status.status is None and status.raw_status == word
    assert status.error == f"unknown refill status {word!r}"


def test_bare_error_sentences_of_writes_are_refusals_not_ambiguities():
    refill = parsing.parse_multi_refill([3], [{"order": 3, "refill": "Incorrect order ID"}])[0]
    assert refill == RefillResult(3, error="Incorrect order ID")
    cancel = parsing.parse_multi_cancel(
        [3], [{"order": 3, "cancel": "The order cannot be canceled in its current status"}]
    )[0]
    assert not cancel.accepted and not cancel.ambiguous
    assert cancel.error == "The order cannot be canceled in its current status"


# -- money and ids --------------------------------------------------------------------------------


def test_money_beyond_15_places_or_20_integer_digits_is_refused():
    assert parsing.to_decimal("0.123456789012345", "rate") == Decimal("0.123456789012345")
    with pytest.raises(parsing.ShapeError, match="rate has 16 decimal places, more than the 15"):
        parsing.to_decimal("0.1234567890123456", "rate")
    with pytest.raises(parsing.ShapeError, match="decimal places"):
        parsing.to_decimal(Decimal("1E-16"), "charge")
    assert parsing.to_decimal("9" * 20 + ".5", "balance") == Decimal("9" * 20 + ".5")
    with pytest.raises(parsing.ShapeError, match="balance has more than 20 integer digits"):
        parsing.to_decimal("1" + "0" * 20, "balance")
    with pytest.raises(parsing.ShapeError, match="integer digits"):
        parsing.to_decimal("1e25", "balance")


def test_trailing_zeros_do_not_count_as_places_and_are_dropped_exactly():
    amount = parsing.to_decimal("0.90000000000000000000000", "rate")
    assert amount == Decimal("0.9") and str(amount) == "0.9"
    assert str(parsing.to_decimal("1e3", "rate")) == "1000"
    assert str(parsing.to_decimal("0.90", "rate")) == "0.90"  # the panel's own form is kept


@pytest.mark.parametrize("bad", ["1_000", "0x10", " ", "1.2.3", "١٢", 0.5, [1], {"a": 1}])
def test_money_must_be_written_as_a_plain_decimal(bad):
    with pytest.raises(parsing.ShapeError, match="charge is not a number"):
        parsing.to_decimal(bad, "charge")


@pytest.mark.parametrize("bad", ["1e3", "10.0", "", "+", "1_0", "١٢", True, Decimal("5"), 2**63])
def test_to_int_takes_only_whole_numbers_written_as_digits(bad):
    with pytest.raises(parsing.ShapeError):
        parsing.to_int(bad, "remains")


@pytest.mark.parametrize("bad", [0, "0", -5, "-5"])
def test_ids_must_be_positive(bad):
    with pytest.raises(parsing.ShapeError, match="order id is not a positive id"):
        parsing.to_id(bad, "order id")
    with pytest.raises(parsing.ShapeError):
        parsing.parse_add({"order": bad})


@given(st.integers(-(2**63) + 1, 2**63 - 1))
def test_to_int_round_trips_every_bigint(number):
    assert parsing.to_int(str(number), "n") == number == parsing.to_int(f" {number} ", "n")


@given(
    digits=st.integers(0, 10**20 - 1),
    fraction=st.integers(0, 10**15 - 1),
    places=st.integers(0, 15),
    negative=st.booleans(),
)
def test_money_within_the_stored_precision_is_exact(digits, fraction, places, negative):
    text = f"{'-' if negative else ''}{digits}" + (
        f".{fraction % 10**places:0{places}d}" if places else ""
    )
    assert parsing.to_decimal(text, "charge") == Decimal(text)
    assert parsing.to_decimal(parsing.decode_json(text), "charge") == Decimal(text)


@given(places=st.integers(16, 40), last=st.integers(1, 9), whole=st.integers(0, 10**6))
def test_money_beyond_15_places_is_always_refused(places, last, whole):
    text = f"{whole}.{'0' * (places - 1)}{last}"
    with pytest.raises(parsing.ShapeError, match=f"has {places} decimal places"):
        parsing.to_decimal(text, "charge")


# -- write items: every id answered, garbage never a plain failure -------------------------------

_ERRORS = st.sampled_from(["Incorrect order ID", "Refill is disabled for this service"])
_GARBAGE = st.one_of(
    st.sampled_from(["abc", "ok", "1.5", "-2", "", None, True, [], {"id": 1}, -7, 0]),
    st.decimals(allow_nan=False, allow_infinity=False, places=2).filter(
        lambda d: d != d.to_integral()
    ),
)


@given(data=st.data(), ids=st.lists(st.integers(1, 10**9), min_size=1, max_size=30, unique=True))
def test_multi_refill_items_are_a_refill_id_a_refusal_or_ambiguous(data, ids):
    kinds = {
        i: data.draw(st.sampled_from(["id", "error", "bare", "garbage", "absent"])) for i in ids
    }
    values = {
        "id": lambda i: data.draw(st.sampled_from([i + 1, str(i + 1)])),
        "error": lambda i: {"error": data.draw(_ERRORS)},
        "bare": lambda i: data.draw(_ERRORS),
        "garbage": lambda i: data.draw(_GARBAGE),
    }
    body = [{"order": i, "refill": values[k](i)} for i, k in kinds.items() if k != "absent"]
    if data.draw(st.booleans()):
        body = {str(item["order"]): item["refill"] for item in body}
    results = parsing.parse_multi_refill(ids, body)
    assert [r.order_id for r in results] == ids
    for result in results:
        kind = kinds[result.order_id]
        assert (result.refill_id == result.order_id + 1) is (kind == "id")
        assert result.ambiguous is (kind in ("garbage", "absent"))
        assert (result.error is None) is (kind == "id")
