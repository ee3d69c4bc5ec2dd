"""Order files: every row checked against the catalog, priced, and the batch against the money.

The bad-input corpus below is the contract for what a user sees in `errors.csv`: each case
asserts the exact (row, column, message) list for one bad file.
"""

from __future__ import annotations

import codecs
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smm_pipeline.config import PanelConfig, Settings
from smm_pipeline.intake.orders import (
    CatalogEntry,
    IntakeResult,
    ValidatedOrder,
    derive_ref,
    validate_order_file,
)
from smm_pipeline.panel.models import Service

PRIVATE_DELAYS = (0, 5, 10, 15, 30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 360, 420, 480,
                  540, 600)  # fmt: skip
PERSIAN = PanelConfig(
    "persiansmm", "https://my.persiansmm.com/api/v2", "PERSIANSMM_API_KEY",
    max_batch_spend=Decimal("50"),
)  # fmt: skip
PRIVATE = PanelConfig(
    "privatesmm", "https://privatesmm.com/api/v2", "PRIVATESMM_API_KEY",
    delay_values=PRIVATE_DELAYS,
)  # fmt: skip
OLD = PanelConfig("oldpanel", "https://old.example/api/v2", "OLD_API_KEY", enabled=False)
TWO = Settings(panels=(PERSIAN, PRIVATE, OLD))
ONE = Settings(panels=(PERSIAN,))
TODAY = date(2026, 1, 1)
BALANCES = {"persiansmm": Decimal("100"), "privatesmm": Decimal("100")}

SERVICES = [
    Service(1, "Followers", "Default", "Instagram", Decimal("0.90"), 50, 10000, True, True),
    Service(2, "Comments", "Custom Comments", "Instagram", Decimal("8"), 2, 5, False, True),
    Service(3, "Auto likes", "Subscriptions", "Instagram", Decimal("2"), 10, 5000, False, False),
    Service(4, "Starter pack", "Package", "Instagram", Decimal("12.50"), 1, 1, False, False),
    Service(5, "Keywords", "SEO", "Web", Decimal("1"), 10, 1000, False, False),
    Service(6, "Mentions", "Mentions", "Instagram", Decimal("1"), 10, 1000, False, False),
    Service(
        7, "Mentions+#", "Mentions with Hashtags", "Instagram", Decimal("1"), 10, 1000, False, False
    ),  # fmt: skip
    Service(
        8, "Mention list", "Mentions Custom List", "Instagram", Decimal("1"), 1, 100, False, False
    ),  # fmt: skip
    Service(
        9, "Group invites", "Invites from Groups", "Telegram", Decimal("3"), 10, 1000, False, False
    ),  # fmt: skip
    Service(
        10, "Comment pack", "Custom Comments Package", "Instagram", Decimal("5"), 1, 1, False, False
    ),  # fmt: skip
    Service(11, "Replies", "Comment Replies", "Instagram", Decimal("20"), 1, 100, False, False),
    Service(12, "Poll votes", "Poll", "Telegram", Decimal("0.5"), 10, 10000, False, True),
    Service(
        13, "Comment likes", "Comment Likes", "Instagram", Decimal("2"), 10, 1000, False, False
    ),  # fmt: skip
    Service(99, "Old followers", "Default", "Instagram", Decimal("0.50"), 10, 1000, True, True),
]
CATALOG = {
    (panel, s.service_id): CatalogEntry(s, active=s.service_id != 99)
    for panel in ("persiansmm", "privatesmm")
    for s in SERVICES
}


def check(
    content: str | bytes,
    settings: Settings = TWO,
    balances: dict[str, Decimal] | None = None,
) -> IntakeResult:
    data = content.encode() if isinstance(content, str) else content
    return validate_order_file(
        data, "orders.csv", CATALOG, settings, BALANCES if balances is None else balances,
        today=TODAY,
    )  # fmt: skip


def errors_of(result: IntakeResult) -> list[tuple[int, str, str]]:
    return [(e.row, e.column, e.message) for e in result.errors]


H = "panel,service,link,quantity\n"
COLUMNS = (
    "answer_number, campaign, comments, delay, expiry, groups, hashtag, hashtags, interval, "
    "keywords, link, max, media, min, old_posts, panel, posts, quantity, ref, runs, service, "
    "username, usernames"
)
ALLOWED_PRIVATE = ", ".join(str(v) for v in PRIVATE_DELAYS)
DRIP = "panel,service,link,quantity,runs,interval\n"
SUB = "panel,service,username,min,max,delay,expiry\n"
CC = "panel,service,link,comments\n"
IDENTICAL = (
    "this row is identical to row 1 (rows without a ref get one derived from their content); "
    "give each row its own ref to order the same thing twice"
)

# (id, file content, settings, balances, expected [(row, column, message)])
BAD_FILES = [
    ("unknown-column-typo", "panel,service,link,quantiy\npersiansmm,1,https://a.com/1,100\n",
     TWO, None,
     [(0, "quantiy", f"unknown column 'quantiy'; expected one of: {COLUMNS} "
                     "(did you mean 'quantity'?)")]),
    ("missing-service-column", "panel,link,quantity\npersiansmm,https://a.com/1,100\n", TWO, None,
     [(0, "service", "missing required column 'service'")]),
    ("missing-panel-column-with-two-panels", "service,link,quantity\n1,https://a.com/1,100\n",
     TWO, None,
     [(0, "panel", "missing column 'panel': 2 panels are enabled (persiansmm, privatesmm), so "
                   "each row must name its panel")]),
    ("duplicate-column", "panel,service,link,Link\npersiansmm,4,https://a.com,https://b.com\n",
     TWO, None, [(0, "link", "duplicate column 'link' (columns 3 and 4)")]),
    ("empty-file", b"", TWO, None,
     [(0, "file", "the file is empty; expected a header row and at least one row")]),
    ("header-only", codecs.BOM_UTF8 + H.encode(), TWO, None,
     [(0, "file", "the file has a header row but no data rows")]),
    ("not-utf8", H.encode() + b"persiansmm,1,https://a.com/caf\xe9,100\n", TWO, None,
     [(1, "file", "the file is not UTF-8: byte 0xE9 at offset 58 (line 2); save it as UTF-8 "
                  "(in Excel: CSV UTF-8)")]),
    ("ragged-row", H + "persiansmm,1,https://a.com/1,100\npersiansmm,1,https://a.com/2\n", TWO,
     None,
     [(2, "row", "this row has 3 cells but the header has 4 columns; quote cells that contain "
                 "commas or line breaks")]),
    ("unquoted-list-cell-makes-ragged-row", CC + "persiansmm,2,https://a.com/1,nice,great\n",
     TWO, None,
     [(1, "row", "this row has 5 cells but the header has 4 columns; quote cells that contain "
                 "commas or line breaks")]),
    ("missing-link", H + "persiansmm,1,,100\n", TWO, None,
     [(1, "link", "link is required for service type 'Default'")]),
    ("link-not-http", H + "persiansmm,1,ftp://a.com/x,100\n", TWO, None,
     [(1, "link", "link must be an http(s) URL with a host, got 'ftp://a.com/x'")]),
    ("link-without-host", H + "persiansmm,1,https:///p/abc,100\n", TWO, None,
     [(1, "link", "link must be an http(s) URL with a host, got 'https:///p/abc'")]),
    ("link-without-scheme", H + "persiansmm,1,instagram.com/p/abc,100\n", TWO, None,
     [(1, "link", "link must be an http(s) URL with a host, got 'instagram.com/p/abc'")]),
    ("quantity-below-min", H + "persiansmm,1,https://a.com/1,10\n", TWO, None,
     [(1, "quantity", "quantity 10 below the minimum 50 of service 1")]),
    ("quantity-above-max", H + "persiansmm,1,https://a.com/1,20000\n", TWO, None,
     [(1, "quantity", "quantity 20000 above the maximum 10000 of service 1")]),
    ("quantity-not-a-number", H + "persiansmm,1,https://a.com/1,lots\n", TWO, None,
     [(1, "quantity", "quantity must be a whole number, got 'lots'")]),
    ("quantity-negative", H + "persiansmm,1,https://a.com/1,-100\n", TWO, None,
     [(1, "quantity", "quantity must be greater than 0, got -100")]),
    ("quantity-decimal", H + "persiansmm,1,https://a.com/1,100.5\n", TWO, None,
     [(1, "quantity", "quantity must be a whole number, got '100.5'")]),
    ("quantity-missing", H + "persiansmm,1,https://a.com/1,\n", TWO, None,
     [(1, "quantity", "quantity is required for service type 'Default'")]),
    ("comment-lines-below-min", CC + 'persiansmm,2,https://a.com/1,"only one"\n', TWO, None,
     [(1, "comments", "comments has 1 line, below the minimum 2 of service 2")]),
    ("comment-lines-above-max", CC + 'persiansmm,2,https://a.com/1,"a\nb\nc\nd\ne\nf"\n', TWO,
     None, [(1, "comments", "comments has 6 lines, above the maximum 5 of service 2")]),
    ("inactive-service", H + "persiansmm,99,https://a.com/1,100\n", TWO, None,
     [(1, "service", "service 99 on panel 'persiansmm' is no longer active (it left the "
                     "catalog); choose another service")]),
    ("unknown-service", H + "privatesmm,12345,https://a.com/1,100\n", TWO, None,
     [(1, "service", "service 12345 does not exist on panel 'privatesmm'; check the id against "
                     "the service catalog")]),
    ("service-not-a-number", H + "persiansmm,followers,https://a.com/1,100\n", TWO, None,
     [(1, "service", "service must be a service id (a whole number), got 'followers'")]),
    ("service-missing", H + "persiansmm,,https://a.com/1,100\n", TWO, None,
     [(1, "service", "service is required")]),
    ("unknown-panel", H + "persian,1,https://a.com/1,100\n", TWO, None,
     [(1, "panel", "unknown panel 'persian'; enabled panels: persiansmm, privatesmm")]),
    ("disabled-panel", H + "oldpanel,1,https://a.com/1,100\n", TWO, None,
     [(1, "panel", "panel 'oldpanel' is disabled in panels.yaml")]),
    ("panel-cell-empty-with-two-panels", H + ",1,https://a.com/1,100\n", TWO, None,
     [(1, "panel", "panel is required: 2 panels are enabled (persiansmm, privatesmm)")]),
    ("runs-zero", DRIP + "persiansmm,1,https://a.com/1,100,0,10\n", TWO, None,
     [(1, "runs", "runs must be greater than 0, got 0")]),
    ("interval-negative", DRIP + "persiansmm,1,https://a.com/1,100,3,-1\n", TWO, None,
     [(1, "interval", "interval must be greater than 0, got -1")]),
    ("runs-without-interval", DRIP + "persiansmm,1,https://a.com/1,100,3,\n", TWO, None,
     [(1, "interval", "runs and interval go together (drip-feed); give both or neither")]),
    ("delay-20-refused-by-privatesmm-only",
     SUB + "persiansmm,3,nasa,100,200,20,\nprivatesmm,3,nasa,100,200,20,\n", TWO, None,
     [(2, "delay", f"delay 20 is not allowed on panel 'privatesmm'; allowed: {ALLOWED_PRIVATE}")]),
    ("delay-missing", SUB + "persiansmm,3,nasa,100,200,,\n", TWO, None,
     [(1, "delay", "delay is required for service type 'Subscriptions'")]),
    ("subscription-min-above-max", SUB + "persiansmm,3,nasa,300,200,0,\n", TWO, None,
     [(1, "min", "min 300 is above max 200")]),
    ("bad-expiry", SUB + "persiansmm,3,nasa,100,200,0,31/02/2026\n", TWO, None,
     [(1, "expiry", "expiry '31/02/2026' is not a valid date; use d/m/Y (31/12/2025) or "
                    "YYYY-MM-DD (2025-12-31)")]),
    ("expiry-in-the-past", SUB + "persiansmm,3,nasa,100,200,0,2025-12-31\n", TWO, None,
     [(1, "expiry", "expiry 31/12/2025 is in the past")]),
    ("duplicate-ref", "panel,service,link,quantity,ref\npersiansmm,1,https://a.com/1,100,A1\n"
                      "persiansmm,1,https://a.com/2,100,A1\n", TWO, None,
     [(2, "ref", "ref 'A1' is already used by row 1 on panel 'persiansmm'; refs must be "
                 "unique")]),
    ("duplicate-identical-rows-without-ref",
     H + "persiansmm,1,https://a.com/1,100\npersiansmm,1, https://a.com/1 ,0100\n", TWO, None,
     [(2, "ref", IDENTICAL)]),
    ("duplicate-rows-with-empty-ref-cells",
     "panel,service,link,quantity,ref\nprivatesmm,1,https://a.com/1,100,\n"
     "privatesmm,1,https://a.com/1,100,  \n", TWO, None, [(2, "ref", IDENTICAL)]),
    ("ref-too-long", "panel,service,link,quantity,ref\n"
                     f"persiansmm,1,https://a.com/1,100,{'x' * 129}\n", TWO, None,
     [(1, "ref", "ref must be one line of at most 128 characters")]),
    ("budget-over-balance", H + "persiansmm,1,https://a.com/1,100\n", TWO,
     {"persiansmm": Decimal("0.05"), "privatesmm": Decimal("100")},
     [(0, "batch", "panel 'persiansmm': the batch's estimated cost 0.09 is more than the "
                   "balance 0.05; top up the panel or split the file")]),
    ("over-max-batch-spend",
     "panel,service,link\n" + "".join(f"persiansmm,4,https://a.com/{i}\n" for i in range(5)),
     TWO, {"persiansmm": Decimal("1000"), "privatesmm": Decimal("0")},
     [(0, "batch", "panel 'persiansmm': the batch's estimated cost 62.5 is more than its "
                   "max_batch_spend 50; split the file or raise the limit in panels.yaml")]),
    ("no-balance-known", H + "privatesmm,1,https://a.com/nb,100\n", TWO,
     {"persiansmm": Decimal("100")},
     [(0, "batch", "panel 'privatesmm': no fresh balance is known, so the batch of 0.09 cannot "
                   "be checked; refresh panel_balances and drop the file again")]),
    ("field-the-type-does-not-take", "panel,service,link,quantity,comments\n"
                                     "persiansmm,1,https://a.com/1,100,nice\n", TWO, None,
     [(1, "comments", "service 1 is type 'Default', which takes no comments; leave this cell "
                      "empty (or check the service id)")]),
    ("quantity-disagrees-with-comment-lines",
     "panel,service,link,comments,quantity\npersiansmm,2,https://a.com/1,\"a\nb\",3\n", TWO,
     None,
     [(1, "quantity", "quantity '3' does not match the 2 lines of comments; leave quantity "
                      "empty for service type 'Custom Comments'")]),
    ("username-on-two-lines", "panel,service,link,quantity,username\n"
                              'persiansmm,13,https://a.com/1,100,"bob\nalice"\n', TWO, None,
     [(1, "username", "username must be a single line (one value)")]),
    ("poll-answer-not-a-number", "panel,service,link,quantity,answer_number\n"
                                 "persiansmm,12,https://t.me/c/1,100,second\n", TWO, None,
     [(1, "answer_number", "answer_number must be a whole number, got 'second'")]),
    ("unknown-panel-with-one-panel", H + "privatesmm,1,https://a.com/1,100\n", ONE, None,
     [(1, "panel", "unknown panel 'privatesmm'; enabled panels: persiansmm")]),
    ("errors-on-several-rows-all-reported",
     H + "persiansmm,1,https://a.com/1,100\npersiansmm,1,,5\nnope,1,https://a.com/3,100\n",
     TWO, None,
     [(2, "link", "link is required for service type 'Default'"),
      (2, "quantity", "quantity 5 below the minimum 50 of service 1"),
      (3, "panel", "unknown panel 'nope'; enabled panels: persiansmm, privatesmm")]),
]  # fmt: skip

LIST_TYPES = [
    ("SEO", 5, "link,quantity", "https://a.com,100", "keywords"),
    ("Custom Comments", 2, "link", "https://a.com", "comments"),
    ("Custom Comments Package", 10, "link", "https://a.com", "comments"),
    ("Comment Replies", 11, "link,username", "https://a.com,owner", "comments"),
    ("Mentions", 6, "link,quantity", "https://a.com,100", "usernames"),
    ("Mentions with Hashtags", 7, "link,quantity,hashtags", 'https://a.com,100,"#a\n#b"',
     "usernames"),
    ("Mentions with Hashtags", 7, "link,quantity,usernames", 'https://a.com,100,"al\nbo"',
     "hashtags"),
    ("Mentions Custom List", 8, "link", "https://a.com", "usernames"),
    ("Invites from Groups", 9, "link,quantity", "https://a.com,100", "groups"),
]  # fmt: skip
BAD_FILES += [
    (
        f"missing-{column}-for-{type_.lower().replace(' ', '-')}",
        f"panel,service,{columns},{column}\npersiansmm,{sid},{cells},\n",
        TWO,
        None,
        [(1, column, f"{column} is required for service type {type_!r}")],
    )
    for type_, sid, columns, cells, column in LIST_TYPES
]


def test_the_corpus_is_large_and_distinct() -> None:
    assert len(BAD_FILES) >= 30
    assert len({case[0] for case in BAD_FILES}) == len(BAD_FILES)
    assert len({case[1] for case in BAD_FILES}) == len(BAD_FILES)


@pytest.mark.parametrize(
    ("content", "settings", "balances", "expected"),
    [case[1:] for case in BAD_FILES],
    ids=[case[0] for case in BAD_FILES],
)
def test_bad_files_are_refused_with_exact_errors(content, settings, balances, expected) -> None:
    result = check(content, settings, balances)
    assert not result.ok
    assert errors_of(result) == expected


GOOD_FILE = codecs.BOM_UTF8 + (
    b"Panel,Service,Link,Quantity,Runs,Interval,Comments,Username,Min,Max,Delay,Expiry,"
    b"Ref,Campaign\r\n"
    b"persiansmm,1,https://instagram.com/p/one,1000,,,,,,,,,A-1,spring\r\n"
    b"privatesmm,1,https://instagram.com/p/one,1000,,,,,,,,,A-1,spring\r\n"
    b"\r\n"
    b'persiansmm,2,https://instagram.com/p/two,,,,"Nice, really!\r\nLove ""it""\r\n\r\n'
    b'Wow",,,,,,,\r\n'
    b"PersianSMM,3,,,,,,nasa,100,200,20,5/1/2027,,\r\n"
    b"privatesmm,1,https://instagram.com/p/three,500,4,30,,,,,,,,autumn\r\n"
    b"persiansmm,4,https://instagram.com/p/four,,,,,,,,,,,\r\n"
)


def test_a_good_file_gives_exact_rows_params_and_costs() -> None:
    result = check(GOOD_FILE)
    assert result.errors == []
    rows = result.rows
    assert [r.row_number for r in rows] == [1, 2, 4, 5, 6, 7]
    assert rows[0] == ValidatedOrder(
        panel="persiansmm", ref="A-1", row_number=1, service_id=1, service_type="Default",
        link="https://instagram.com/p/one", quantity=1000,
        params={"service": "1", "link": "https://instagram.com/p/one", "quantity": "1000"},
        estimated_cost=Decimal("0.9"), campaign="spring", warnings=(), ref_derived=False,
    )  # fmt: skip
    assert rows[1].panel == "privatesmm" and rows[1].ref == "A-1"  # refs are unique per panel
    comments = rows[2]
    assert comments.params == {
        "service": "2", "link": "https://instagram.com/p/two",
        "comments": 'Nice, really!\nLove "it"\nWow',
    }  # fmt: skip
    assert (comments.quantity, comments.estimated_cost) == (3, Decimal("0.024"))
    assert comments.ref_derived and comments.ref == derive_ref("persiansmm", comments.params)
    assert comments.campaign is None
    sub = rows[3]
    assert sub.panel == "persiansmm" and sub.link is None
    assert sub.params == {
        "service": "3", "username": "nasa", "min": "100", "max": "200", "delay": "20",
        "expiry": "05/01/2027",
    }  # fmt: skip
    assert sub.quantity == 200 and sub.estimated_cost == Decimal("0.4")
    assert sub.warnings == (
        "no posts limit: the subscription runs for unlimited future posts; the estimated cost "
        "covers one post",
    )
    drip = rows[4]
    assert drip.params["runs"] == "4" and drip.params["interval"] == "30"
    assert (drip.quantity, drip.estimated_cost, drip.campaign) == (2000, Decimal("1.8"), "autumn")
    package = rows[5]
    assert (package.quantity, package.estimated_cost) == (1, Decimal("12.5"))
    assert result.panel_totals == {
        "persiansmm": Decimal("0.9") + Decimal("0.024") + Decimal("0.4") + Decimal("12.5"),
        "privatesmm": Decimal("0.9") + Decimal("1.8"),
    }
    assert result.file_name == "orders.csv" and len(result.file_hash) == 64


def test_one_panel_needs_no_panel_column() -> None:
    result = check("service,link,quantity\n1,https://a.com/1,100\n", ONE)
    assert result.ok and [r.panel for r in result.rows] == ["persiansmm"]


def test_a_batch_that_costs_exactly_the_balance_fits() -> None:
    result = check(H + "persiansmm,1,https://a.com/1,100\n", TWO, {"persiansmm": Decimal("0.09")})
    assert result.ok and result.panel_totals == {"persiansmm": Decimal("0.09")}


def test_the_same_file_renamed_has_the_same_hash_and_refs() -> None:
    data = (H + "persiansmm,1,https://a.com/1,100\n").encode()
    first = validate_order_file(data, "a.csv", CATALOG, TWO, BALANCES, today=TODAY)
    second = validate_order_file(data, "b.csv", CATALOG, TWO, BALANCES, today=TODAY)
    assert first.file_hash == second.file_hash
    assert [r.ref for r in first.rows] == [r.ref for r in second.rows]


def test_unknown_types_are_passed_through_and_flagged() -> None:
    odd = Service(50, "Story views", "Story Views Premium", "X", Decimal("3"), 1, 10, False, False)
    catalog = {**CATALOG, ("persiansmm", 50): CatalogEntry(odd)}
    data = b"panel,service,link,quantity,username\npersiansmm,50,https://a.com/s,500,me\n"
    result = validate_order_file(data, "o.csv", catalog, TWO, BALANCES, today=TODAY)
    assert result.ok
    (row,) = result.rows
    assert row.params == {
        "service": "50", "link": "https://a.com/s", "quantity": "500", "username": "me"
    }  # fmt: skip
    assert row.estimated_cost == Decimal("1.5")
    assert row.warnings[0].startswith("service type 'Story Views Premium' is not known")


_path = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20)


@given(path=_path, quantity=st.integers(min_value=50, max_value=9999), pad=st.booleans())
def test_derived_refs_are_stable_across_formatting_and_column_order(path, quantity, pad) -> None:
    link = f"https://instagram.com/p/{path}"
    plain = check(f"panel,service,link,quantity\npersiansmm,1,{link},{quantity}\n")
    spaced = " " if pad else ""
    shuffled = check(
        f"Quantity,Link,Service,Panel\n{spaced}{quantity:05d},{spaced}{link}{spaced},1,PERSIANSMM\n"
    )
    assert plain.ok and shuffled.ok
    assert plain.rows[0].ref == shuffled.rows[0].ref
    assert plain.rows[0].ref.startswith("auto-") and len(plain.rows[0].ref) == 29


@given(path=_path, quantity=st.integers(min_value=50, max_value=9998))
def test_derived_refs_tell_different_orders_apart(path, quantity) -> None:
    link = f"https://instagram.com/p/{path}"
    result = check(
        H + f"persiansmm,1,{link},{quantity}\n"
        f"persiansmm,1,{link},{quantity + 1}\n"
        f"persiansmm,1,{link}x,{quantity}\n"
        f"privatesmm,1,{link},{quantity}\n"
    )
    assert result.ok
    assert len({r.ref for r in result.rows}) == 4


def test_derive_ref_ignores_param_order() -> None:
    a = derive_ref("p", {"service": "1", "link": "https://a.com", "quantity": "5"})
    b = derive_ref("p", {"quantity": "5", "link": "https://a.com", "service": "1"})
    assert a == b
    assert a != derive_ref("q", {"service": "1", "link": "https://a.com", "quantity": "5"})
