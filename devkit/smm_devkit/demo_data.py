"""What the demo feeds the pipeline: two simulated providers and a month of their use.

The analytics only become interesting when panels differ, so the demo runs two simulators that
sell the same catalog (service ids, types, limits) at different prices and with different
delivery quality and speed: `premiumsmm` (the default prices, nearly everything completes,
fast) and `budgetsmm` (cheaper on most categories, more Partial and canceled orders, slower).
The scorecard then has a real question to answer: is the cheaper panel worth its worse
delivery?

`month_plan` is what the reseller does, day by day: on day 0 the sample files; then order
files three days a week (rows of the week's campaigns, each for one panel or both, growing in
volume week by week), a cancel file once a week (orders of that morning's file), a refill file
once a week (chosen when the day comes: finished orders on refillable services), and each
panel's `catalog_changes` on their days. The same seeds give the same files on the same days,
whatever the number of days.

The sample files in `data/samples/` are written for the single `simulator` panel of the shipped
panels.yaml, so they carry no `panel` column. With two panels enabled every row must name its
panel; `for_panels` turns a sample into the same rows for each demo panel (refs are unique per
panel, so the same ref on two panels is two different orders).
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from smm_devkit.simulator.catalog import default_catalog
from smm_pipeline.config import PROJECT_ROOT

SAMPLES_DIR = PROJECT_ROOT / "data" / "samples"
# A Partial or Canceled order is a hash of its id: these weights are the panel's quality.
_PREMIUM_WEIGHTS = {"Completed": 86, "Partial": 6, "Processing": 4, "Slow": 3, "Canceled": 1}
_BUDGET_WEIGHTS = {"Completed": 66, "Partial": 17, "Processing": 5, "Slow": 6, "Canceled": 6}
# budgetsmm's price as a share of premiumsmm's, per category (it is dearer on TikTok).
_BUDGET_PRICE_FACTORS = {
    "Instagram": Decimal("0.70"),
    "TikTok": Decimal("1.15"),
    "YouTube": Decimal("0.85"),
    "Telegram": Decimal("0.80"),
    "Website Traffic": Decimal("0.90"),
    "Twitter": Decimal("0.75"),
    "Facebook": Decimal("0.65"),
}


@dataclass(frozen=True)
class CatalogChange:
    """What a panel changes in its catalog on a day of the demo's month (`rates`: service id
    → new rate; `removals`: service ids it stops selling)."""

    day: int
    rates: Mapping[int, str] = field(default_factory=dict)
    removals: tuple[int, ...] = ()


@dataclass(frozen=True)
class DemoPanel:
    """One simulated provider: its catalog, its delivery quality and speed, its money, and
    the catalog changes it makes over the month."""

    name: str
    key_env: str
    catalog: list[dict[str, Any]]
    outcome_weights: Mapping[str, int]
    refill_rejected_percent: int
    balance: str
    progress_seconds: float  # simulated seconds an order takes to deliver
    # What the reseller pays in the first time the panel's low-balance check warns (None: never).
    top_up: str | None = None
    catalog_changes: tuple[CatalogChange, ...] = ()


def _scaled_catalog(factors: Mapping[str, Decimal]) -> list[dict[str, Any]]:
    """The default catalog with each category's rates multiplied (exactly, to 1/10000)."""
    services = default_catalog()
    for service in services:
        factor = factors.get(service["category"], Decimal(1))
        rate = (Decimal(service["rate"]) * factor).quantize(Decimal("0.0001"))
        service["rate"] = f"{rate.normalize():f}"
    return services


def demo_panels() -> tuple[DemoPanel, DemoPanel]:
    """The two providers of the demo."""
    return (
        DemoPanel(
            name="premiumsmm",
            key_env="DEMO_PREMIUMSMM_API_KEY",
            catalog=default_catalog(),
            outcome_weights=_PREMIUM_WEIGHTS,
            refill_rejected_percent=5,
            balance="350.00",
            progress_seconds=1500,
            catalog_changes=(
                CatalogChange(6, {1: "1.05"}),
                CatalogChange(13, {16: "2.10", 2: "0.11"}),
                CatalogChange(20, {21: "1.10"}),
                CatalogChange(27, {3: "0.22", 32: "4.90"}),
            ),
        ),
        DemoPanel(
            name="budgetsmm",
            key_env="DEMO_BUDGETSMM_API_KEY",
            catalog=_scaled_catalog(_BUDGET_PRICE_FACTORS),
            outcome_weights=_BUDGET_WEIGHTS,
            refill_rejected_percent=35,
            balance="80.00",
            progress_seconds=5400,
            top_up="100.00",
            catalog_changes=(
                CatalogChange(6, {2: "0.10"}),
                CatalogChange(13, {1: "0.55"}),
                CatalogChange(20, {25: "0.75", 16: "2.05"}),
                CatalogChange(27, {18: "0.45"}, removals=(26,)),
            ),
        ),
    )


# -- the month ---------------------------------------------------------------------------------

DEFAULT_DAYS = 35
# The plan's money is sized for five weeks (one top-up): a longer history would run dry.
MAX_DAYS = 35
# Days (from the first) of the month's routine, repeated every week.
ORDER_WEEKDAYS = (1, 3, 5)  # an order file on these days of each week (and the samples on day 0)
CANCEL_WEEKDAYS = (3,)  # a cancel file right after that day's order file
REFILL_WEEKDAYS = (0,)  # from the second week: refills of earlier orders whose count dropped
# A balance refresh (and its low-balance check) on these days, on day 0 and on the last day;
# each order file fetches the balances of its panels too.
BALANCE_WEEKDAYS = (6,)
# Campaign → the services it buys: (service id, platform, lowest and highest quantity, runs).
_CAMPAIGN_SERVICES: dict[str, tuple[tuple[int, str, int, int, int], ...]] = {
    "spring-launch": (
        (1, "ig-profile", 300, 1500, 1),
        (2, "ig-post", 500, 4000, 1),
        (3, "ig-post", 300, 2000, 1),
        (2, "ig-post", 200, 600, 4),
    ),
    "tiktok-push": (
        (16, "tt-profile", 200, 1500, 1),
        (17, "tt-video", 5000, 60000, 1),
        (18, "tt-video", 500, 3000, 1),
    ),
    "product-video": (
        (21, "yt-video", 2000, 10000, 1),
        (22, "yt-channel", 100, 300, 1),
    ),
    "brand-awareness": (
        (25, "tg-channel", 300, 1500, 1),
        (30, "x-profile", 200, 800, 1),
        (31, "x-post", 100, 400, 3),
        (32, "fb-page", 200, 800, 1),
    ),
    "website": ((29, "site", 1000, 3000, 1),),
}
# Each week's campaigns (the month cycles through them), and how much more the reseller orders
# each week than in the first (the business grows, so the balance runs down faster).
_WEEK_CAMPAIGNS = (
    ("spring-launch", "brand-awareness", "website"),
    ("spring-launch", "tiktok-push", "product-video"),
    ("tiktok-push", "brand-awareness", "website"),
    ("product-video", "brand-awareness", "spring-launch"),
    ("tiktok-push", "product-video", "website"),
)
_WEEK_VOLUME = (1.0, 1.1, 1.2, 1.35, 1.5)
_LINKS = {
    "ig-profile": "https://instagram.com/acme.client{n}",
    "ig-post": "https://instagram.com/p/CxAcme{n}",
    "tt-profile": "https://www.tiktok.com/@acme.client{n}",
    "tt-video": "https://www.tiktok.com/@acme.coffee/video/73510000{n}",
    "yt-video": "https://www.youtube.com/watch?v=Acme{n}",
    "yt-channel": "https://www.youtube.com/@acmeclient{n}",
    "tg-channel": "https://t.me/acme_client{n}",
    "x-profile": "https://x.com/acmeclient{n}",
    "x-post": "https://x.com/acmecoffee/status/179000000{n}",
    "fb-page": "https://www.facebook.com/acmeclient{n}",
    "site": "https://acme-client{n}.example.com/",
}
_KEYWORDS = "specialty coffee beans\nfresh roasted coffee delivery\nsingle origin espresso"
ORDER_COLUMNS = ("panel", "service", "link", "quantity", "runs", "interval", "keywords", "ref",
                 "campaign")  # fmt: skip


@dataclass(frozen=True)
class OrderRow:
    """One row of a generated order file."""

    panel: str
    service: int
    link: str
    quantity: int
    runs: int
    ref: str
    campaign: str

    def cells(self) -> list[str]:
        drip = self.runs > 1
        return [
            self.panel,
            str(self.service),
            self.link,
            str(self.quantity),
            str(self.runs) if drip else "",
            "60" if drip else "",
            _KEYWORDS if self.service == 29 else "",
            self.ref,
            self.campaign,
        ]


@dataclass(frozen=True)
class DayPlan:
    """What the reseller does on one day of the month (day 0 is the first)."""

    day: int
    order_file: str | None = None
    orders: tuple[OrderRow, ...] = ()
    cancels: tuple[tuple[str, str], ...] = ()  # (panel, ref) of that day's orders
    refills: bool = False  # a refill file for earlier orders (chosen when the day comes)
    order_minute: int = 600  # when the order file is dropped (minutes after midnight, UTC)
    polls_after: tuple[int, ...] = (40, 150)  # status polls, minutes after the drop

    @property
    def cancel_file(self) -> str | None:
        return f"cancels_day{self.day:02d}.csv" if self.cancels else None


def _quantity(rng: random.Random, low: int, high: int, volume: float) -> int:
    step = 1000 if low >= 1000 else 50
    wanted = rng.uniform(low, high) * volume
    return max(low, min(high, step * round(wanted / step)))


def _day_orders(day: int, panels: tuple[str, ...]) -> tuple[OrderRow, ...]:
    """A day's order file: rows of the week's campaigns, each sent to one panel or both."""
    rng = random.Random(f"demo-orders-{day}")
    rows: list[OrderRow] = []
    week = day // 7
    volume = _WEEK_VOLUME[min(week, len(_WEEK_VOLUME) - 1)]
    for campaign in _WEEK_CAMPAIGNS[week % len(_WEEK_CAMPAIGNS)]:
        for _ in range(rng.randint(2, 3)):
            service, platform, low, high, runs = rng.choice(_CAMPAIGN_SERVICES[campaign])
            number = f"{day:02d}{len(rows):02d}"
            pick = rng.random()
            targets = panels[:1] if pick < 0.5 else panels[1:] if pick < 0.8 else panels
            quantity = _quantity(rng, low, high, volume)
            for panel in targets:
                ref = f"{campaign}-d{day:02d}-{len(rows):02d}"
                link = _LINKS[platform].format(n=number)
                rows.append(OrderRow(panel, service, link, quantity, runs, ref, campaign))
    return tuple(rows)


def _cancellable(
    rows: tuple[OrderRow, ...], catalog: Mapping[int, Mapping[str, Any]]
) -> list[OrderRow]:
    return [row for row in rows if catalog[row.service].get("cancel")]


def month_plan(days: int, panels: tuple[DemoPanel, ...]) -> list[DayPlan]:
    """The demo's month, day by day: day 0 drops the sample files (every order type, and the
    sample cancels); then order files three days a week, a cancel file once a week, refills
    once a week. The same days give the same files, whatever `days` is."""
    names = tuple(p.name for p in panels)
    catalog = {s["service"]: s for s in panels[0].catalog}
    plan = [DayPlan(0, order_file="orders_all_types.csv")]
    for day in range(1, days):
        weekday = day % 7
        orders = _day_orders(day, names) if weekday in ORDER_WEEKDAYS else ()
        cancels: tuple[tuple[str, str], ...] = ()
        if orders and weekday in CANCEL_WEEKDAYS:
            rng = random.Random(f"demo-cancels-{day}")
            candidates = _cancellable(orders, catalog)
            picked = rng.sample(candidates, min(3, len(candidates)))
            cancels = tuple((row.panel, row.ref) for row in picked)
        timing = random.Random(f"demo-timing-{day}")
        plan.append(
            DayPlan(
                day,
                order_file=f"orders_day{day:02d}.csv" if orders else None,
                orders=orders,
                cancels=cancels,
                refills=weekday in REFILL_WEEKDAYS and day >= 7,
                order_minute=timing.randrange(9 * 60 + 30, 11 * 60 + 30, 5),
                polls_after=(timing.randrange(25, 55, 5), timing.randrange(100, 180, 10)),
            )
        )
    return plan


def orders_csv(rows: Iterable[OrderRow]) -> str:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(ORDER_COLUMNS)
    writer.writerows(row.cells() for row in rows)
    return out.getvalue()


def action_csv(pairs: Iterable[tuple[str, str]]) -> str:
    """A refill or cancel file naming orders by panel and ref."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["panel", "ref"])
    writer.writerows(pairs)
    return out.getvalue()


def panels_yaml(urls: Mapping[str, str], panels: Iterable[DemoPanel]) -> str:
    """panels.yaml for the demo: the simulators on loopback, and a poll cadence short enough
    that every open order is due again at each of the demo's polls (hours of simulated time
    apart; the status sensors compare the due times with the real clock, which is ahead of
    the simulated one until the history's end)."""
    document = {
        "panels": [
            {
                "name": p.name,
                "url": urls[p.name],
                "key_env": p.key_env,
                "rate_limit_per_minute": 6000,
                "max_concurrency": 8,
                "timeout_seconds": 10,
                "low_balance_threshold": "50.00",
                "max_batch_spend": "200.00",
            }
            for p in panels
        ],
        "pipeline": {
            "catalog_max_age_minutes": 60,
            "poll_min_interval_minutes": 0.0001,
            "poll_max_interval_minutes": 0.0005,
            # A month played in a minute: no run republishes the replica (a copy of the whole
            # warehouse) after the first; the demo runs publish_replica once at the end.
            "replica_max_lag_seconds": 3600,
        },
    }
    return yaml.safe_dump(document, sort_keys=False)


def for_panels(content: str, panels: Iterable[str]) -> str:
    """A sample file's rows repeated for each panel, with a leading `panel` column."""
    reader = csv.reader(io.StringIO(content, newline=""))
    header = next(reader)
    rows = [row for row in reader if any(cell.strip() for cell in row)]
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["panel", *header])
    for panel in panels:
        writer.writerows([panel, *row] for row in rows)
    return out.getvalue()


def sample_text(name: str, samples_dir: Path = SAMPLES_DIR) -> str:
    """A sample file's text (they are UTF-8 without BOM)."""
    return (samples_dir / name).read_text(encoding="utf-8")
