"""What an `add` request must carry for each service type, and what it costs.

This is the panel's side of the README's type table (CSV drops: Orders): it decides the
quantity (for list types the number of lines), validates the type's own fields and prices the
order, answering with the panel's error sentence when something is wrong. It knows nothing of
state or HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from smm_devkit.simulator.money import cost

DEFAULT_DELAY_VALUES = (0, 5, 10, 15, 20, 30, 40, 50, 60, 90, 120, 150, 180, 210, 240, 270, 300)
DEFAULT_DELAY_VALUES += (360, 420, 480, 540, 600)
MAX_OLD_POSTS = 100
LIST_FIELDS = frozenset({"comments", "keywords", "usernames", "hashtags", "groups"})
_LINE_BREAK = re.compile(r"\r\n|\n|\r")


class AddRejected(Exception):
    """The panel refuses the order; `str(exc)` is the exact error sentence it answers."""


@dataclass(frozen=True)
class TypeSpec:
    fields: tuple[str, ...] = ()  # the type's own required fields, besides service and link
    needs_quantity: bool = True  # the client sends `quantity`
    count_field: str | None = None  # quantity is the number of lines of this field
    flat: bool = False  # rate is the price of one package
    drip_feed: bool = False  # runs/interval accepted


TYPE_SPECS: dict[str, TypeSpec] = {
    "Default": TypeSpec(drip_feed=True),
    "Package": TypeSpec(needs_quantity=False, flat=True),
    "SEO": TypeSpec(fields=("keywords",)),
    "Custom Comments": TypeSpec(("comments",), needs_quantity=False, count_field="comments"),
    "Custom Comments Package": TypeSpec(
        ("comments",), needs_quantity=False, count_field="comments", flat=True
    ),
    "Mentions": TypeSpec(fields=("usernames",)),
    "Mentions with Hashtags": TypeSpec(fields=("usernames", "hashtags")),
    "Mentions Custom List": TypeSpec(("usernames",), needs_quantity=False, count_field="usernames"),
    "Mentions Hashtag": TypeSpec(fields=("hashtag",)),
    "Mentions User Followers": TypeSpec(fields=("username",)),
    "Mentions Media Likers": TypeSpec(fields=("media",)),
    "Comment Likes": TypeSpec(fields=("username",)),
    "Comment Replies": TypeSpec(
        ("username", "comments"), needs_quantity=False, count_field="comments"
    ),
    "Poll": TypeSpec(fields=("answer_number",)),
    "Invites from Groups": TypeSpec(fields=("groups",)),
}
SUBSCRIPTION_TYPE = "Subscriptions"
# A type the panel sells but this table does not know is taken like Default without drip-feed.
_PASS_THROUGH = TypeSpec()


@dataclass(frozen=True)
class OrderRequest:
    """A validated one-off order: `total` units to deliver for `charge`."""

    link: str
    quantity: int  # per run; the number of lines for list types; 1 for packages
    runs: int
    interval: int  # minutes between runs
    total: int  # units to deliver: quantity x runs
    charge: Decimal
    flat: bool


@dataclass(frozen=True)
class SubscriptionRequest:
    """A validated subscription: each new post of `username` gets an order of min..max units."""

    username: str
    min: int
    max: int
    posts: int | None
    old_posts: int
    delay: int  # minutes
    expiry: date | None


def split_lines(value: str) -> list[str]:
    """Items of a list field: one per line (\\n, \\r\\n or \\r), blank lines ignored."""
    return [line.strip() for line in _LINE_BREAK.split(value) if line.strip()]


def _int_param(params: Mapping[str, str], name: str, error: str, default: int | None = None) -> int:
    text = params.get(name, "").strip()
    if not text:
        if default is None:
            raise AddRejected(error)
        return default
    if not re.fullmatch(r"[+]?\d+", text):
        raise AddRejected(error)
    return int(text)


def _check_range(quantity: int, service: Mapping[str, Any]) -> None:
    if quantity < int(service["min"]):
        raise AddRejected(f"Quantity less than minimal {service['min']}")
    if quantity > int(service["max"]):
        raise AddRejected(f"Quantity more than maximal {service['max']}")


def _required(params: Mapping[str, str], field: str) -> str:
    value = params.get(field, "")
    if not value.strip():
        raise AddRejected(f"Field {field} is required")
    return value


def validate_order(service: Mapping[str, Any], params: Mapping[str, str]) -> OrderRequest:
    """The order `params` ask for on `service`, or AddRejected with the panel's sentence."""
    spec = TYPE_SPECS.get(str(service["type"]), _PASS_THROUGH)
    link = params.get("link", "").strip()
    if not link:
        raise AddRejected("Incorrect link")
    for field in spec.fields:
        value = _required(params, field)
        if field in LIST_FIELDS and not split_lines(value):
            raise AddRejected(f"Field {field} is required")
        if field == "answer_number" and not re.fullmatch(r"\s*[1-9]\d*\s*", value):
            raise AddRejected("Incorrect answer number")
    if spec.count_field:
        quantity = len(split_lines(params.get(spec.count_field, "")))
        _check_range(quantity, service)
    elif spec.flat:
        quantity = 1
    else:
        quantity = _int_param(params, "quantity", "Incorrect quantity", default=0)
        _check_range(quantity, service)
    runs, interval = 1, 0
    if spec.drip_feed and (params.get("runs", "").strip() or params.get("interval", "").strip()):
        runs = _int_param(params, "runs", "Incorrect runs")
        interval = _int_param(params, "interval", "Incorrect interval")
        if runs < 1:
            raise AddRejected("Incorrect runs")
        if interval < 1:
            raise AddRejected("Incorrect interval")
    rate = Decimal(str(service["rate"]))
    charge = rate if spec.flat else cost(rate, quantity * runs)
    return OrderRequest(
        link=link,
        quantity=quantity,
        runs=runs,
        interval=interval,
        total=quantity * runs,
        charge=charge,
        flat=spec.flat,
    )


def parse_expiry(text: str) -> date:
    """A d/m/Y date as the API sends it (e.g. 31/12/2025)."""
    if not re.fullmatch(r"\d{1,2}/\d{1,2}/\d{4}", text):
        raise AddRejected("Incorrect expiry date")
    try:
        return datetime.strptime(text, "%d/%m/%Y").date()
    except ValueError as exc:
        raise AddRejected("Incorrect expiry date") from exc


def validate_subscription(
    service: Mapping[str, Any],
    params: Mapping[str, str],
    delay_values: tuple[int, ...],
    today: date,
) -> SubscriptionRequest:
    """The subscription `params` ask for, or AddRejected with the panel's sentence."""
    username = _required(params, "username").strip()
    sub_min = _int_param(params, "min", "Incorrect quantity", default=0)
    sub_max = _int_param(params, "max", "Incorrect quantity", default=0)
    _check_range(sub_min, service)
    _check_range(sub_max, service)
    if sub_min > sub_max:
        raise AddRejected("Min quantity is greater than max quantity")
    posts_text = params.get("posts", "").strip()
    posts = None if not posts_text else _int_param(params, "posts", "Incorrect posts")
    if posts is not None and posts < 1:
        raise AddRejected("Incorrect posts")
    old_posts = _int_param(params, "old_posts", "Incorrect old posts", default=0)
    if old_posts > MAX_OLD_POSTS:
        raise AddRejected("Incorrect old posts")
    delay = _int_param(params, "delay", "Incorrect delay")
    if delay not in delay_values:
        raise AddRejected("Incorrect delay")
    expiry_text = params.get("expiry", "").strip()
    expiry = parse_expiry(expiry_text) if expiry_text else None
    if expiry is not None and expiry < today:
        raise AddRejected("Incorrect expiry date")
    return SubscriptionRequest(
        username=username,
        min=sub_min,
        max=sub_max,
        posts=posts,
        old_posts=old_posts,
        delay=delay,
        expiry=expiry,
    )
