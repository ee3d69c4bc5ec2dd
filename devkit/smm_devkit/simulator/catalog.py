"""The simulated panel's service catalog: a realistic default and validation of replacements.

Services are kept exactly in the `services` answer shape (ids as ints, numbers as strings,
refill/cancel as booleans) so that what an operator loads is what clients receive.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from smm_devkit.simulator.money import parse_amount

SERVICE_TYPES = (
    "Default",
    "Package",
    "SEO",
    "Custom Comments",
    "Custom Comments Package",
    "Mentions",
    "Mentions with Hashtags",
    "Mentions Custom List",
    "Mentions Hashtag",
    "Mentions User Followers",
    "Mentions Media Likers",
    "Comment Likes",
    "Comment Replies",
    "Poll",
    "Invites from Groups",
    "Subscriptions",
)

# category -> (id, name, type, rate, min, max, flags): flags "R" = refill, "C" = cancel.
# Ids are stable: tests and the demo data refer to them.
_DEFAULT_ROWS: dict[str, tuple[tuple[int, str, str, str, int, int, str], ...]] = {
    "Instagram": (
        (1, "Instagram Followers [Real] [30 Days Refill]", "Default", "0.90", 50, 10000, "RC"),
        (2, "Instagram Likes [Instant]", "Default", "0.12", 20, 50000, "C"),
        (3, "Instagram Likes [Non Drop] [Refill 30D]", "Default", "0.25", 50, 20000, "R"),
        (4, "Instagram Custom Comments", "Custom Comments", "8", 10, 1500, "C"),
        (5, "Instagram Comments Package [Up to 10]", "Custom Comments Package", "2.50", 1, 10, ""),
        (6, "Instagram Mentions", "Mentions", "3.20", 100, 5000, "C"),
        (7, "Instagram Mentions with Hashtags", "Mentions with Hashtags", "3.80", 100, 5000, ""),
        (8, "Instagram Mentions [Custom List]", "Mentions Custom List", "4.10", 10, 1000, ""),
        (9, "Instagram Mentions [Hashtag Users]", "Mentions Hashtag", "3.50", 100, 5000, ""),
        (10, "Instagram Mentions [Followers]", "Mentions User Followers", "3.60", 100, 10000, ""),
        (11, "Instagram Mentions [Media Likers]", "Mentions Media Likers", "3.60", 100, 10000, ""),
        (12, "Instagram Comment Likes [Refill 30D]", "Comment Likes", "1.75", 50, 5000, "R"),
        (13, "Instagram Comment Replies", "Comment Replies", "9.50", 5, 500, "C"),
        (14, "Instagram Auto Likes [Subscription]", "Subscriptions", "0.15", 50, 5000, "C"),
        (15, "Instagram Profile Visits [Package 1000]", "Package", "0.45", 1, 1, ""),
    ),
    "TikTok": (
        (16, "TikTok Followers [Refill 30D]", "Default", "1.95", 100, 50000, "RC"),
        (17, "TikTok Views [Instant]", "Default", "0.015", 1000, 10000000, ""),
        (18, "TikTok Likes [Refill 30D]", "Default", "0.35", 50, 100000, "RC"),
        (19, "TikTok Custom Comments", "Custom Comments", "12", 5, 1000, ""),
        (20, "TikTok Auto Views [Subscription]", "Subscriptions", "0.02", 500, 50000, "C"),
    ),
    "YouTube": (
        (21, "YouTube Views [Non Drop] [Lifetime Refill]", "Default", "1.20", 500, 1000000, "R"),
        (22, "YouTube Subscribers [Refill 30D]", "Default", "18.00", 100, 20000, "RC"),
        (23, "YouTube Comment Likes", "Comment Likes", "2.40", 20, 5000, "C"),
        (24, "YouTube Community Poll Votes", "Poll", "1.10", 100, 20000, ""),
    ),
    "Telegram": (
        (25, "Telegram Channel Members [Refill 30D]", "Default", "0.85", 100, 100000, "RC"),
        (26, "Telegram Post Views [Last 5 Posts Package]", "Package", "0.30", 1, 1, ""),
        (27, "Telegram Poll Votes", "Poll", "0.95", 100, 50000, "C"),
        (28, "Telegram Members [From Groups]", "Invites from Groups", "6.50", 100, 10000, ""),
    ),
    "Website Traffic": ((29, "Google Keyword Traffic [SEO]", "SEO", "2.20", 1000, 100000, "C"),),
    "Twitter": (
        (30, "X (Twitter) Followers [Refill 30D]", "Default", "3.40", 100, 20000, "R"),
        (31, "X (Twitter) Retweets", "Default", "1.30", 20, 10000, "C"),
    ),
    "Facebook": ((32, "Facebook Page Likes [Refill 30D]", "Default", "4.50", 100, 50000, "RC"),),
}


class CatalogError(ValueError):
    """A service definition an operator supplied is not in the `services` answer shape."""


def default_catalog() -> list[dict[str, Any]]:
    """A fresh copy of the built-in catalog: every service type of the README's type table."""
    return [
        {
            "service": sid,
            "name": name,
            "type": stype,
            "category": category,
            "rate": rate,
            "min": str(qmin),
            "max": str(qmax),
            "refill": "R" in flags,
            "cancel": "C" in flags,
        }
        for category, rows in _DEFAULT_ROWS.items()
        for sid, name, stype, rate, qmin, qmax, flags in rows
    ]


def _as_int(value: object, field: str) -> int:
    if isinstance(value, bool):
        raise CatalogError(f"{field} must be an integer, got {value!r}")
    try:
        number = Decimal(str(value).strip())
    except ArithmeticError as exc:
        raise CatalogError(f"{field} must be an integer, got {value!r}") from exc
    if not number.is_finite() or number != number.to_integral_value():
        raise CatalogError(f"{field} must be an integer, got {value!r}")
    return int(number)


def _as_bool(value: object, field: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no", ""):
        return False
    raise CatalogError(f"{field} must be a boolean, got {value!r}")


def normalize_service(raw: Mapping[str, Any]) -> dict[str, Any]:
    """One service in the exact answer shape; extra keys (e.g. `description`) are kept."""
    missing = [
        f for f in ("service", "name", "type", "category", "rate", "min", "max") if f not in raw
    ]
    if missing:
        raise CatalogError(f"service {raw.get('service', '?')}: missing {', '.join(missing)}")
    sid = _as_int(raw["service"], "service")
    if sid <= 0:
        raise CatalogError(f"service id must be positive, got {sid}")
    try:
        rate = parse_amount(raw["rate"])
    except ValueError as exc:
        raise CatalogError(f"service {sid}: rate: {exc}") from exc
    if rate < 0:
        raise CatalogError(f"service {sid}: rate must not be negative")
    qmin = _as_int(raw["min"], f"service {sid}: min")
    qmax = _as_int(raw["max"], f"service {sid}: max")
    if qmin < 0 or qmax < qmin:
        raise CatalogError(f"service {sid}: need 0 <= min <= max, got {qmin}..{qmax}")
    service: dict[str, Any] = {
        "service": sid,
        "name": str(raw["name"]),
        "type": str(raw["type"]),
        "category": str(raw["category"]),
        "rate": f"{rate:f}",
        "min": str(qmin),
        "max": str(qmax),
        "refill": _as_bool(raw.get("refill", False), f"service {sid}: refill"),
        "cancel": _as_bool(raw.get("cancel", False), f"service {sid}: cancel"),
    }
    service.update((k, v) for k, v in raw.items() if k not in service)
    return service


def normalize_catalog(raw: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A validated catalog: every entry normalised, ids unique."""
    services = [normalize_service(entry) for entry in raw]
    seen: set[int] = set()
    for service in services:
        if service["service"] in seen:
            raise CatalogError(f"duplicate service id {service['service']}")
        seen.add(service["service"])
    return services


def load_catalog_file(path: Path) -> list[dict[str, Any]]:
    """A catalog from a JSON file holding a list in the `services` answer shape."""
    # Fractional numbers are kept as their literal text: exact, and JSON-serialisable again.
    data = json.loads(Path(path).read_text(encoding="utf-8"), parse_float=str)
    if not isinstance(data, list):
        raise CatalogError(f"{path}: expected a JSON list of services")
    return normalize_catalog(data)
