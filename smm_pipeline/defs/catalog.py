"""Assets `service_catalog` and `panel_balances`, one partition per panel, their schedules and
the low-balance checks."""

from collections.abc import Iterator, Sequence

import dagster as dg

from smm_pipeline.defs.metadata import frame_preview, money
from smm_pipeline.defs.resources import PanelsResource, WarehouseResource
from smm_pipeline.operations.catalog import refresh_balance, refresh_catalog
from smm_pipeline.warehouse.balances import latest_balances

CATALOG_CRON = "0 * * * *"
BALANCE_CRON = "*/15 * * * *"


def _own_checks(context: dg.AssetCheckExecutionContext) -> list[dg.AssetCheckKey]:
    """The low-balance checks this run evaluates: in a run for one panel's partition only that
    panel's (another panel's latest balance may be stale, e.g. while its panel is down, and
    re-reporting it from this run would be noise); in an unpartitioned run every selected one."""
    partition = context.op_execution_context.run.tags.get("dagster/partition")
    selected = sorted(context.selected_asset_check_keys, key=lambda k: k.name)
    if partition is None:
        return selected
    return [k for k in selected if k.name == f"low_balance_{partition}"]


def build_catalog_defs(panel_names: Sequence[str]) -> dg.Definitions:
    panels_partitions = dg.StaticPartitionsDefinition(list(panel_names))

    @dg.asset(
        partitions_def=panels_partitions,
        group_name="panels",
        kinds={"duckdb"},
        description="Each panel's service catalog, synced into `services` with every change "
        "(price, limits, appearance, disappearance) recorded in `service_changes`.",
    )
    def service_catalog(
        context: dg.AssetExecutionContext, panels: PanelsResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        panel = context.partition_key
        with panels.client(panel) as client:
            refresh = refresh_catalog(client, warehouse.db_path)
        warehouse.publish(context, panels.settings())
        r = refresh.result
        context.log.info(
            f"{panel}: {r.services} services, {r.new} new, {r.changed} changed, "
            f"{r.vanished} vanished (fetch {refresh.fetch_seconds:.2f}s, "
            f"diff {refresh.diff_seconds:.2f}s)"
        )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": r.services,
                "panel": panel,
                "new_services": r.new,
                "changed_services": r.changed,
                "vanished_services": r.vanished,
                "change_rows": len(r.changes),
                "changes": frame_preview(r.changes),
                "fetch_seconds": round(refresh.fetch_seconds, 3),
                "diff_seconds": round(refresh.diff_seconds, 3),
            }
        )

    @dg.asset(
        partitions_def=panels_partitions,
        group_name="panels",
        kinds={"duckdb"},
        description="Each panel's balance, appended to `balances` (history kept).",
    )
    def panel_balances(
        context: dg.AssetExecutionContext, panels: PanelsResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        panel = context.partition_key
        with panels.client(panel) as client:
            balance = refresh_balance(client, warehouse.db_path)
        warehouse.publish(context, panels.settings())
        context.log.info(f"{panel}: balance {balance.balance} {balance.currency}")
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
                name=f"low_balance_{name}",
                asset="panel_balances",
                description=f"{name}: the latest balance is above low_balance_threshold",
            )
            for name in panel_names
        ],
        can_subset=True,
    )
    def low_balance(
        context: dg.AssetCheckExecutionContext,
        panels: PanelsResource,
        warehouse: WarehouseResource,
    ) -> Iterator[dg.AssetCheckResult]:
        settings = panels.settings()
        with warehouse.connect() as conn:
            latest = latest_balances(conn)
        for key in _own_checks(context):
            name = key.name.removeprefix("low_balance_")
            threshold = settings.panel(name).low_balance_threshold
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
            passed = threshold is None or row.balance >= threshold
            yield dg.AssetCheckResult(
                check_name=key.name,
                asset_key=key.asset_key,
                passed=passed,
                severity=dg.AssetCheckSeverity.WARN,
                description=(
                    "no threshold set"
                    if threshold is None
                    else f"balance {row.balance} {row.currency} "
                    f"{'≥' if passed else 'below'} threshold {threshold}"
                ),
                metadata=meta,
            )

    catalog_job = dg.define_asset_job(
        "refresh_service_catalog",
        selection=[service_catalog],
        partitions_def=panels_partitions,
        description="Fetch and sync one panel's catalog (a run per panel partition).",
    )
    balances_job = dg.define_asset_job(
        "refresh_panel_balances",
        selection=dg.AssetSelection.assets(panel_balances).without_checks()
        | dg.AssetSelection.checks(low_balance),
        partitions_def=panels_partitions,
        description="Fetch one panel's balance and evaluate the low-balance checks.",
    )

    def per_panel_schedule(name: str, cron: str, job):
        @dg.schedule(
            name=name,
            cron_schedule=cron,
            job=job,
            execution_timezone="UTC",
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description=f"One {job.name} run per panel.",
        )
        def _schedule(context: dg.ScheduleEvaluationContext):
            tick = context.scheduled_execution_time.strftime("%Y%m%dT%H%M")
            for panel in panel_names:
                yield dg.RunRequest(run_key=f"{panel}:{tick}", partition_key=panel)

        return _schedule

    return dg.Definitions(
        assets=[service_catalog, panel_balances],
        asset_checks=[low_balance],
        jobs=[catalog_job, balances_job],
        schedules=[
            per_panel_schedule("service_catalog_hourly", CATALOG_CRON, catalog_job),
            per_panel_schedule("panel_balances_every_15_minutes", BALANCE_CRON, balances_job),
        ],
    )
