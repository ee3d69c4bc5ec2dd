"""`panel_balances`: each panel's balance every 15 minutes, and the low-balance checks."""

from collections.abc import Iterator
from datetime import timedelta

import dagster as dg

from smm_pipeline.lib.metadata import money, timestamp
from smm_pipeline.lib.panels import (
    configured_settings,
    low_balance_check_name,
    panel_partitions,
    per_panel_schedule,
)
from smm_pipeline.lib.resources import PanelsResource, WarehouseResource, replica_hooks
from smm_pipeline.money import money_text
from smm_pipeline.operations.catalog import refresh_balance
from smm_pipeline.warehouse.balances import latest_balances

BALANCE_CRON = "*/15 * * * *"


@dg.definitions
def defs() -> dg.Definitions:
    settings = configured_settings()
    partitions = panel_partitions(settings)
    check_panels = {low_balance_check_name(p): p for p in settings.panel_names}

    @dg.asset(
        partitions_def=partitions,
        group_name="panels",
        kinds={"duckdb"},
        description="Each panel's balance, appended to `balances` (history kept).",
        # Fetched every 15 minutes: 40 minutes without one means the schedule stalled or the
        # panel is down, and the budget checks of new order files use an old balance.
        freshness_policy=dg.FreshnessPolicy.time_window(
            fail_window=timedelta(minutes=40), warn_window=timedelta(minutes=20)
        ),
    )
    def panel_balances(
        context: dg.AssetExecutionContext, panels: PanelsResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        panel = context.partition_key
        with panels.client(panel) as client:
            balance = refresh_balance(client, warehouse.location)
        context.log.info(f"{panel}: balance {money_text(balance.balance, balance.currency)}")
        return dg.MaterializeResult(
            metadata={
                "panel": panel,
                "balance": money(balance.balance, balance.currency),
                "currency": balance.currency,
            }
        )

    @dg.multi_asset_check(
        specs=[
            dg.AssetCheckSpec(
                name=check,
                asset="panel_balances",
                description=f"{panel}: the latest balance is above low_balance_threshold",
            )
            for check, panel in check_panels.items()
        ],
        can_subset=True,
    )
    def low_balance(
        context: dg.AssetCheckExecutionContext,
        panels: PanelsResource,
        warehouse: WarehouseResource,
    ) -> Iterator[dg.AssetCheckResult]:
        config = panels.settings()
        with warehouse.connect() as conn:
            latest = latest_balances(conn)
        for key in _own_checks(context, check_panels):
            name = check_panels[key.name]
            threshold = config.panel(name).low_balance_threshold
            row = latest.get(name)
            meta = {"threshold": money(threshold)}
            if row is None:
                yield dg.AssetCheckResult(
                    check_name=key.name,
                    asset_key=key.asset_key,
                    passed=False,
                    severity=dg.AssetCheckSeverity.WARN,
                    description="no balance fetched yet",
                    metadata=meta,
                )
                continue
            meta["balance"] = money(row.balance, row.currency)
            meta["fetched_at"] = timestamp(row.fetched_at)
            passed = threshold is None or row.balance >= threshold
            yield dg.AssetCheckResult(
                check_name=key.name,
                asset_key=key.asset_key,
                passed=passed,
                severity=dg.AssetCheckSeverity.WARN,
                description=(
                    "no threshold set"
                    if threshold is None
                    else f"balance {money_text(row.balance, row.currency)} "
                    f"{'≥' if passed else 'below'} threshold {money_text(threshold)}"
                ),
                metadata=meta,
            )

    job = dg.define_asset_job(
        "refresh_panel_balances",
        selection=dg.AssetSelection.assets(panel_balances).without_checks()
        | dg.AssetSelection.checks(low_balance),
        partitions_def=partitions,
        hooks=replica_hooks,
        description="Fetch one panel's balance and evaluate the low-balance checks.",
    )
    schedule = per_panel_schedule("panel_balances_every_15_minutes", BALANCE_CRON, job, settings)
    return dg.Definitions(
        assets=[panel_balances], asset_checks=[low_balance], jobs=[job], schedules=[schedule]
    )


def _own_checks(
    context: dg.AssetCheckExecutionContext, check_panels: dict[str, str]
) -> list[dg.AssetCheckKey]:
    """The low-balance checks this run evaluates: in a run for one panel's partition only that
    panel's (another panel's latest balance may be stale, e.g. while its panel is down, and
    re-reporting it from this run would be noise); in an unpartitioned run every selected one."""
    partition = context.op_execution_context.run.tags.get("dagster/partition")
    selected = sorted(context.selected_asset_check_keys, key=lambda k: k.name)
    if partition is None:
        return selected
    return [k for k in selected if check_panels.get(k.name) == partition]
