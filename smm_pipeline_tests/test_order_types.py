"""Order types: the exact `add` fields of every type of the README's type table (CSV drops:
Orders), field checks, exact costs."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smm_pipeline.config import DEFAULT_DELAY_VALUES
from smm_pipeline.money import format_money
from smm_pipeline.panel.models import Service
from smm_pipeline.panel.order_types import (
    ALL_FIELDS,
    ORDER_TYPES,
    AddRequest,
    FieldLayout,
    OrderFieldError,
    Pricing,
    build_add_params,
    estimate_cost,
    is_http_url,
    parse_expiry,
)

PERSIAN_DELAYS = DEFAULT_DELAY_VALUES  # 0, 5, 10, 15, 20, 30, 40, 50, 60, ...
PRIVATE_DELAYS = (0, 5, 10, 15, 30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 360, 420, 480,
                  540, 600)  # fmt: skip
LINK = "https://instagram.com/p/abc"


def svc(type_: str, rate: str = "1", min_: int = 1, max_: int = 10_000, sid: int = 7) -> Service:
    return Service(sid, f"{type_} service", type_, "Test", Decimal(rate), min_, max_, True, True)


def build(type_: str, fields: dict[str, str], **kw) -> AddRequest:
    service = kw.pop("service", None) or svc(type_)
    return build_add_params(service, fields, kw.pop("delays", PERSIAN_DELAYS), **kw)


def problems(type_: str, fields: dict[str, str], **kw) -> tuple[tuple[str, str], ...]:
    with pytest.raises(OrderFieldError) as info:
        build(type_, fields, **kw)
    return info.value.problems


# (type, cells, exact params besides service, analytics quantity, billed units)
EVERY_TYPE = [
    ("Default", {"link": f" {LINK} ", "quantity": "1000"},
     {"link": LINK, "quantity": "1000"}, 1000, 1000),
    ("Package", {"link": LINK}, {"link": LINK}, 1, 1),
    ("SEO", {"link": LINK, "quantity": "500", "keywords": "smm panel\r\n cheap likes \n\n"},
     {"link": LINK, "quantity": "500", "keywords": "smm panel\ncheap likes"}, 500, 500),
    ("Custom Comments", {"link": LINK, "comments": "Nice!\r\nGreat, really\r\n\r\nWow"},
     {"link": LINK, "comments": "Nice!\nGreat, really\nWow"}, 3, 3),
    ("Custom Comments Package", {"link": LINK, "comments": "one\ntwo"},
     {"link": LINK, "comments": "one\ntwo"}, 2, 1),
    ("Mentions", {"link": LINK, "quantity": "100", "usernames": "alice\nbob"},
     {"link": LINK, "quantity": "100", "usernames": "alice\nbob"}, 100, 100),
    ("Mentions with Hashtags",
     {"link": LINK, "quantity": "100", "usernames": "alice\nbob", "hashtags": "#a\n#b\n#c"},
     {"link": LINK, "quantity": "100", "usernames": "alice\nbob", "hashtags": "#a\n#b\n#c"},
     100, 100),
    ("Mentions Custom List", {"link": LINK, "usernames": "alice\r\nbob\r\ncarol\r\n"},
     {"link": LINK, "usernames": "alice\nbob\ncarol"}, 3, 3),
    ("Mentions Hashtag", {"link": LINK, "quantity": "200", "hashtag": "#sunset"},
     {"link": LINK, "quantity": "200", "hashtag": "#sunset"}, 200, 200),
    ("Mentions User Followers",
     {"link": LINK, "quantity": "300", "username": "https://instagram.com/nasa"},
     {"link": LINK, "quantity": "300", "username": "https://instagram.com/nasa"}, 300, 300),
    ("Mentions Media Likers",
     {"link": LINK, "quantity": "400", "media": "https://instagram.com/p/xyz"},
     {"link": LINK, "quantity": "400", "media": "https://instagram.com/p/xyz"}, 400, 400),
    ("Comment Likes", {"link": LINK, "quantity": "50", "username": "commenter"},
     {"link": LINK, "quantity": "50", "username": "commenter"}, 50, 50),
    ("Comment Replies", {"link": LINK, "username": "owner", "comments": "thanks\nagreed"},
     {"link": LINK, "username": "owner", "comments": "thanks\nagreed"}, 2, 2),
    ("Poll", {"link": LINK, "quantity": "75", "answer_number": "2"},
     {"link": LINK, "quantity": "75", "answer_number": "2"}, 75, 75),
    ("Invites from Groups", {"link": LINK, "quantity": "60", "groups": "g1\ng2"},
     {"link": LINK, "quantity": "60", "groups": "g1\ng2"}, 60, 60),
    ("Subscriptions",
     {"username": "nasa", "min": "100", "max": "200", "posts": "5", "old_posts": "2",
      "delay": "30", "expiry": "2030-01-05"},
     {"username": "nasa", "min": "100", "max": "200", "delay": "30", "posts": "5",
      "old_posts": "2", "expiry": "05/01/2030"}, 200, 1400),
]  # fmt: skip


def test_the_table_has_the_sixteen_spec_types() -> None:
    assert len(ORDER_TYPES) == 16
    assert {case[0] for case in EVERY_TYPE} == set(ORDER_TYPES)
    assert set(ALL_FIELDS) == {
        "link", "quantity", "runs", "interval", "keywords", "comments", "usernames", "hashtags",
        "hashtag", "username", "media", "answer_number", "groups", "min", "max", "posts",
        "old_posts", "delay", "expiry",
    }  # fmt: skip
    assert ORDER_TYPES["Default"].optional == ("runs", "interval")
    assert ORDER_TYPES["Subscriptions"].list_fields == ()
    assert ORDER_TYPES["Mentions with Hashtags"].list_fields == ("usernames", "hashtags")


@pytest.mark.parametrize(("type_", "cells", "params", "quantity", "billed"), EVERY_TYPE)
def test_every_type_builds_the_exact_add_fields(type_, cells, params, quantity, billed) -> None:
    request = build(type_, cells)
    assert request.params == {"service": "7", **params}
    assert list(request.params) == ["service", *params]  # the type's field order
    assert all(isinstance(v, str) for v in request.params.values())
    assert (request.quantity, request.billed_units) == (quantity, billed)
    assert request.service_type == type_ and request.known_type


def test_drip_feed_sends_runs_and_interval_and_multiplies_quantity() -> None:
    request = build("Default", {"link": LINK, "quantity": "0500", "runs": "3", "interval": "15"})
    assert request.params == {
        "service": "7", "link": LINK, "quantity": "500", "runs": "3", "interval": "15"
    }  # fmt: skip
    assert request.quantity == 1500 and request.billed_units == 1500


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"runs": "3"}, [("interval", "runs and interval go together (drip-feed); give both "
                                      "or neither")]),
        ({"interval": "10"}, [("runs", "runs and interval go together (drip-feed); give both "
                                       "or neither")]),
        ({"runs": "0", "interval": "10"}, [("runs", "runs must be greater than 0, got 0")]),
        ({"runs": "2", "interval": "-1"},
         [("interval", "interval must be greater than 0, got -1")]),
        ({"runs": "two", "interval": "5"}, [("runs", "runs must be a whole number, got 'two'")]),
    ],
)  # fmt: skip
def test_drip_feed_problems(fields, expected) -> None:
    assert list(problems("Default", {"link": LINK, "quantity": "100", **fields})) == expected


def test_every_problem_of_a_row_is_reported_at_once() -> None:
    found = problems(
        "Default", {"link": "ftp://x", "quantity": "-3", "comments": "hello", "runs": ""}
    )
    assert found == (
        ("link", "link must be an http(s) URL with a host, got 'ftp://x'"),
        ("quantity", "quantity must be greater than 0, got -3"),
        ("comments", "service 7 is type 'Default', which takes no comments; leave this cell "
                     "empty (or check the service id)"),
    )  # fmt: skip
    error = OrderFieldError(*found[0], found)
    assert (error.column, error.message) == found[0]


def test_quantity_range_is_per_run_and_line_counts_are_checked() -> None:
    service = svc("Default", min_=50, max_=1000)
    assert build("Default", {"link": LINK, "quantity": "1000", "runs": "5", "interval": "1"},
                 service=service).quantity == 5000  # fmt: skip
    assert problems("Default", {"link": LINK, "quantity": "49"}, service=service) == (
        ("quantity", "quantity 49 below the minimum 50 of service 7"),
    )
    comments = svc("Custom Comments", min_=2, max_=3)
    assert problems("Custom Comments", {"link": LINK, "comments": "a\nb\nc\nd"},
                    service=comments) == (
        ("comments", "comments has 4 lines, above the maximum 3 of service 7"),
    )  # fmt: skip
    assert problems("Custom Comments", {"link": LINK, "comments": "only"}, service=comments) == (
        ("comments", "comments has 1 line, below the minimum 2 of service 7"),
    )


def test_informative_line_counts_warn_instead_of_failing() -> None:
    replies = svc("Comment Replies", min_=10, max_=100)
    request = build("Comment Replies", {"link": LINK, "username": "u", "comments": "a\nb"},
                    service=replies)  # fmt: skip
    assert request.quantity == 2
    assert request.warnings == ("comments has 2 lines, outside the min/max 10-100 of service 7",)


def test_a_quantity_cell_on_a_line_count_type_must_match_the_lines() -> None:
    ok = build("Custom Comments", {"link": LINK, "comments": "a\nb", "quantity": "2"})
    assert "quantity" not in ok.params and ok.quantity == 2
    assert problems("Custom Comments", {"link": LINK, "comments": "a\nb", "quantity": "5"}) == (
        ("quantity", "quantity '5' does not match the 2 lines of comments; leave quantity "
                     "empty for service type 'Custom Comments'"),
    )  # fmt: skip


def test_package_takes_no_quantity() -> None:
    assert problems("Package", {"link": LINK, "quantity": "5000"}) == (
        ("quantity", "service 7 is type 'Package', which takes no quantity; leave this cell "
                     "empty (or check the service id)"),
    )  # fmt: skip


@pytest.mark.parametrize("text", ["5/1/2030", "05/01/2030", "2030-01-05", " 05/01/2030 "])
def test_expiry_is_accepted_as_dmy_or_iso_and_sent_as_dmy(text: str) -> None:
    fields = {"username": "u", "min": "10", "max": "20", "delay": "0", "expiry": text}
    assert build("Subscriptions", fields).params["expiry"] == "05/01/2030"
    assert parse_expiry(text.strip()) == date(2030, 1, 5)


@pytest.mark.parametrize("text", ["31/02/2030", "2030-13-01", "01-05-2030", "tomorrow", "5/1/30"])
def test_bad_expiry_dates(text: str) -> None:
    fields = {"username": "u", "min": "10", "max": "20", "delay": "0", "expiry": text}
    assert problems("Subscriptions", fields) == (
        ("expiry", f"expiry {text!r} is not a valid date; use d/m/Y (31/12/2025) or "
                   "YYYY-MM-DD (2025-12-31)"),
    )  # fmt: skip


def test_expiry_in_the_past_is_refused_when_today_is_known() -> None:
    fields = {"username": "u", "min": "10", "max": "20", "delay": "0", "expiry": "01/06/2025"}
    assert problems("Subscriptions", fields, today=date(2025, 6, 2)) == (
        ("expiry", "expiry 01/06/2025 is in the past"),
    )
    assert build("Subscriptions", fields, today=date(2025, 6, 1)).params["expiry"] == "01/06/2025"


def test_delay_must_be_one_of_the_panels_values() -> None:
    fields = {"username": "u", "min": "10", "max": "20", "delay": "20"}
    assert build("Subscriptions", fields, delays=PERSIAN_DELAYS).params["delay"] == "20"
    assert problems("Subscriptions", fields, delays=PRIVATE_DELAYS, panel_name="privatesmm") == (
        ("delay", "delay 20 is not allowed on panel 'privatesmm'; allowed: 0, 5, 10, 15, 30, "
                  "60, 90, 120, 150, 180, 210, 240, 270, 300, 360, 420, 480, 540, 600"),
    )  # fmt: skip


def test_subscription_min_max_checks_and_missing_delay() -> None:
    service = svc("Subscriptions", min_=10, max_=500)
    assert problems(
        "Subscriptions", {"username": "u", "min": "300", "max": "200"}, service=service
    ) == (
        ("delay", "delay is required for service type 'Subscriptions'"),
        ("min", "min 300 is above max 200"),
    )
    assert problems(
        "Subscriptions", {"username": "u", "min": "5", "max": "900", "delay": "0"}, service=service
    ) == (
        ("min", "min 5 below the minimum 10 of service 7"),
        ("max", "max 900 above the maximum 500 of service 7"),
    )


def test_single_value_fields_must_be_one_line() -> None:
    assert problems("Comment Likes", {"link": LINK, "quantity": "10", "username": "a\nb"}) == (
        ("username", "username must be a single line (one value)"),
    )


@pytest.mark.parametrize(
    ("type_", "fields", "column"),
    [
        ("SEO", {"link": LINK, "quantity": "10"}, "keywords"),
        ("Custom Comments", {"link": LINK, "comments": " \r\n \n"}, "comments"),
        ("Custom Comments Package", {"link": LINK}, "comments"),
        ("Comment Replies", {"link": LINK, "username": "u"}, "comments"),
        ("Mentions", {"link": LINK, "quantity": "10"}, "usernames"),
        ("Mentions with Hashtags", {"link": LINK, "quantity": "10", "usernames": "a"}, "hashtags"),
        ("Mentions Custom List", {"link": LINK}, "usernames"),
        ("Invites from Groups", {"link": LINK, "quantity": "10"}, "groups"),
    ],
)
def test_missing_list_fields(type_: str, fields: dict[str, str], column: str) -> None:
    assert problems(type_, fields) == (
        (column, f"{column} is required for service type {type_!r}"),
    )


def test_unknown_type_passes_the_row_through_with_a_warning() -> None:
    service = svc("Story Views Premium", rate="3")
    request = build(
        "Story Views Premium",
        {"link": LINK, "quantity": "0500", "comments": "a\r\nb", "username": " x ", "media": ""},
        service=service,
    )
    assert request.params == {
        "service": "7", "link": LINK, "quantity": "500", "comments": "a\nb", "username": "x"
    }  # fmt: skip
    assert not request.known_type and request.quantity == 500
    assert request.warnings == (
        "service type 'Story Views Premium' is not known to this pipeline: the row's fields "
        "are passed through unchecked and the cost is a guess",
    )
    assert estimate_cost(service, request) == Decimal("1.5")
    flat = build("Story Views Premium", {"link": LINK}, service=service)
    assert flat.pricing is Pricing.FLAT and estimate_cost(service, flat) == Decimal("3")
    assert problems("Story Views Premium", {"link": "nope", "quantity": "x"}, service=service) == (
        ("link", "link must be an http(s) URL with a host, got 'nope'"),
        ("quantity", "quantity must be a whole number, got 'x'"),
    )


@pytest.mark.parametrize(
    ("type_", "rate", "fields", "expected"),
    [
        ("Default", "0.90", {"link": LINK, "quantity": "1000"}, "0.9"),
        ("Default", "0.90", {"link": LINK, "quantity": "1000", "runs": "3", "interval": "5"},
         "2.7"),
        ("Default", "0.0001234", {"link": LINK, "quantity": "777"}, "0.0000958818"),
        # 33 significant digits: more than the default context's 28, still exact
        ("Default", "123456.789012345678901234", {"link": LINK, "quantity": "987654321"},
         "121932631124.828532112482292332114"),
        ("Package", "12.50", {"link": LINK}, "12.5"),
        ("Custom Comments", "8", {"link": LINK, "comments": "a\nb\nc"}, "0.024"),
        ("Custom Comments Package", "5", {"link": LINK, "comments": "a\nb\nc"}, "5"),
        ("Comment Replies", "20", {"link": LINK, "username": "u", "comments": "a\nb\nc\nd"},
         "0.08"),
        ("Mentions Custom List", "1.1", {"link": LINK, "usernames": "a\nb"}, "0.0022"),
        ("Subscriptions", "2",
         {"username": "u", "min": "10", "max": "100", "posts": "5", "old_posts": "2",
          "delay": "0"}, "1.4"),
        ("Subscriptions", "2", {"username": "u", "min": "10", "max": "100", "delay": "0"}, "0.2"),
    ],
)  # fmt: skip
def test_estimated_costs_are_exact(type_, rate, fields, expected) -> None:
    service = svc(type_, rate=rate, max_=10**9)
    cost = estimate_cost(service, build(type_, fields, service=service))
    assert isinstance(cost, Decimal)
    assert cost == Decimal(expected)
    assert "E" not in format_money(cost)


def test_subscription_without_posts_is_flagged() -> None:
    request = build("Subscriptions", {"username": "u", "min": "10", "max": "100", "delay": "0"})
    assert request.warnings == (
        "no posts limit: the subscription runs for unlimited future posts; the estimated cost "
        "covers one post",
    )


@given(
    rate=st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("100000"), places=6),
    quantity=st.integers(min_value=1, max_value=10**9),
    runs=st.one_of(st.none(), st.integers(min_value=1, max_value=1000)),
)
def test_default_cost_is_rate_times_quantity_over_a_thousand_exactly(rate, quantity, runs) -> None:
    service = svc("Default", rate=str(rate), max_=10**9)
    fields = {"link": LINK, "quantity": str(quantity)}
    if runs is not None:
        fields |= {"runs": str(runs), "interval": "10"}
    cost = estimate_cost(service, build("Default", fields, service=service))
    assert Fraction(cost) == Fraction(rate) * quantity * (runs or 1) / 1000


_item = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1
).map(str.strip).filter(bool)  # fmt: skip


@given(
    items=st.lists(_item, min_size=1, max_size=30),
    separators=st.lists(st.sampled_from(["\n", "\r\n", "\n\n", "\r\n \r\n"]), min_size=30),
)
def test_list_cells_are_sent_one_item_per_line(items: list[str], separators: list[str]) -> None:
    cell = "".join(item + sep for item, sep in zip(items, separators, strict=False))
    request = build("Custom Comments", {"link": LINK, "comments": cell})
    assert request.params["comments"] == "\n".join(items)
    assert request.quantity == len(items)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://instagram.com/p/abc", True),
        ("http://t.me/channel", True),
        ("HTTPS://EXAMPLE.COM", True),
        ("https://user@host.com:8443/x?y=1#z", True),
        ("https://[2001:db8::1]/x", True),
        ("https://example.com?q=1", True),
        ("ftp://example.com/x", False),
        ("instagram.com/p/abc", False),
        ("https://", False),
        ("https:///path", False),
        ("https://:80/x", False),
        ("https://exa mple.com", False),
        ("https://example.com/a b", False),
        ("javascript:alert(1)", False),
    ],
)
def test_links_must_be_http_urls_with_a_host(url: str, ok: bool) -> None:
    assert is_http_url(url) is ok


def test_field_layout_checks_rows_of_cells_like_build_add_params() -> None:
    columns = ("panel", "link", "comments", "quantity", "ref")
    layout = FieldLayout(columns, ignore=("panel", "ref"))
    row = ["persiansmm", LINK, "a\nb", "", "r1"]
    by_row = layout.build(svc("Custom Comments"), row, PERSIAN_DELAYS)
    by_map = build("Custom Comments", {"link": LINK, "comments": "a\nb", "quantity": ""})
    assert by_row == by_map
    default = layout.build(svc("Default"), ["p", LINK, "", "10", "r"], PERSIAN_DELAYS)
    assert default.params == {"service": "7", "link": LINK, "quantity": "10"}
    with pytest.raises(OrderFieldError) as info:
        layout.build(svc("Poll"), ["p", LINK, "", "10", "r"], PERSIAN_DELAYS)
    assert info.value.problems == (
        ("answer_number", "answer_number is required for service type 'Poll'"),
    )


def test_list_items_split_only_on_line_ends() -> None:
    request = build("Custom Comments", {"link": LINK, "comments": "a\u2028b\x0cc\rd\r\n e "})
    assert request.params["comments"] == "a\u2028b\x0cc\nd\ne"
    assert request.quantity == 3
