"""What the demo feeds the pipeline: two simulated providers and the sample files for them.

The analytics only become interesting when panels differ, so the demo runs two simulators that
sell the same catalog (service ids, types, limits) at different prices and with different
delivery quality: `premiumsmm` (the default prices, nearly everything completes) and
`budgetsmm` (cheaper on most categories, more Partial and canceled orders). The scorecard then
has a real question to answer: is the cheaper panel worth its worse delivery?

The sample files in `data/samples/` are written for the single `simulator` panel of the shipped
panels.yaml, so they carry no `panel` column. With two panels enabled every row must name its
panel; `for_panels` turns a sample into the same rows for each demo panel (refs are unique per
panel, so the same ref on two panels is two different orders).
"""

from __future__ import annotations

import csv
import io
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
_BUDGET_WEIGHTS = {"Completed": 55, "Partial": 25, "Processing": 5, "Slow": 7, "Canceled": 8}
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
class DemoPanel:
    """One simulated provider: its catalog, its delivery quality, and the catalog changes the
    demo makes mid-run (`price_moves`: service id → new rate; `removals`: service ids)."""

    name: str
    key_env: str
    catalog: list[dict[str, Any]]
    outcome_weights: Mapping[str, int]
    refill_rejected_percent: int
    balance: str
    price_moves: Mapping[int, str] = field(default_factory=dict)
    removals: tuple[int, ...] = ()


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
            balance="250.00",
            price_moves={1: "1.05", 16: "2.10", 21: "1.10"},
        ),
        DemoPanel(
            name="budgetsmm",
            key_env="DEMO_BUDGETSMM_API_KEY",
            catalog=_scaled_catalog(_BUDGET_PRICE_FACTORS),
            outcome_weights=_BUDGET_WEIGHTS,
            refill_rejected_percent=35,
            balance="80.00",
            price_moves={1: "0.55", 2: "0.10", 25: "0.75"},
            removals=(26,),
        ),
    )


def panels_yaml(urls: Mapping[str, str], panels: Iterable[DemoPanel]) -> str:
    """panels.yaml for the demo: the simulators on loopback, and a poll cadence short enough
    that every open order is due again at each poll of a one-minute demo."""
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
            # A one-minute demo: the replica follows every run (the default bound is 120 s).
            "replica_max_lag_seconds": 0,
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
