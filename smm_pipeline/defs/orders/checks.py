"""The checks on `orders`: ambiguous submissions, stuck orders, orders on vanished services.

They run as soon as `orders` changes (every writer reports a materialization, and
`order_checks_automation` launches the checks within about half a minute of it), and every
15 minutes on a schedule, since an order becomes stuck by time passing alone.
"""

from collections.abc import Iterator

import dagster as dg

from smm_pipeline.lib.metadata import frame_preview
from smm_pipeline.lib.poll_requests import ORDERS_KEY
from smm_pipeline.lib.resources import PanelsResource, WarehouseResource
from smm_pipeline.warehouse.journal import journal_location, live_claim_ids
from smm_pipeline.warehouse.monitoring import (
    STALE_PENDING_MINUTES,
    ambiguous_submissions,
    orders_on_vanished_services,
    stuck_orders,
)

# Requested when `orders` was updated since the checks were last requested, once no check run
# is in progress: a write that lands while the checks run is checked right after that run.
AFTER_EVERY_WRITE = (
    dg.AutomationCondition.any_deps_updated().since(dg.AutomationCondition.newly_requested())
    & ~dg.AutomationCondition.in_progress()
)


def _result(check: str, frame, ok: str, bad: str, severity=dg.AssetCheckSeverity.ERROR):
    return dg.AssetCheckResult(
        asset_key=ORDERS_KEY,
        check_name=check,
        passed=frame.empty,
        severity=severity,
        description=ok if frame.empty else bad.format(n=len(frame)),
        metadata={"count": len(frame), "rows": frame_preview(frame)},
    )


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            "ambiguous_submissions",
            asset=ORDERS_KEY,
            automation_condition=AFTER_EVERY_WRITE,
            description="Requests whose outcome is unknown (kind order/refill/cancel, state "
            "ambiguous, sending, or pending for over "
            f"{STALE_PENDING_MINUTES} minutes): they may have spent money. Must be none "
            "(README: resolving ambiguous orders).",
        ),
        dg.AssetCheckSpec(
            "stuck_orders",
            asset=ORDERS_KEY,
            automation_condition=AFTER_EVERY_WRITE,
            description="Orders unfinished for longer than pipeline.stuck_order_hours.",
        ),
        dg.AssetCheckSpec(
            "orders_on_vanished_services",
            asset=ORDERS_KEY,
            automation_condition=AFTER_EVERY_WRITE,
            description="Unfinished orders on services that disappeared from the catalog.",
        ),
    ],
    can_subset=True,
)
def order_checks(
    context: dg.AssetCheckExecutionContext,
    panels: PanelsResource,
    warehouse: WarehouseResource,
) -> Iterator[dg.AssetCheckResult]:
    hours = panels.settings().pipeline.stuck_order_hours
    selected = {key.name for key in context.selected_asset_check_keys}
    results = []  # gathered first: the warehouse is not held while Dagster stores events
    with warehouse.connect() as conn:
        if "ambiguous_submissions" in selected:
            results.append(
                _result(
                    "ambiguous_submissions",
                    ambiguous_submissions(
                        conn, live_claims=live_claim_ids(journal_location(warehouse.location))
                    ),
                    "no request with an unknown outcome",
                    "{n} request(s) with an unknown outcome: ambiguous orders: check each on the "
                    "panel, then attach, resubmit or abandon it with resolve_ambiguous_orders; "
                    "sending/pending orders (left by a dead run): re-execute the submit_orders run "
                    "of their file, or resubmit/abandon them with resolve_ambiguous_orders; "
                    "refills/cancels: check the order on the panel and drop a new file if needed",
                )
            )
        if "stuck_orders" in selected:
            results.append(
                _result(
                    "stuck_orders",
                    stuck_orders(conn, hours),
                    f"no order unfinished for more than {hours:g} h",
                    f"{{n}} order(s) unfinished for more than {hours:g} h",
                    dg.AssetCheckSeverity.WARN,
                )
            )
        if "orders_on_vanished_services" in selected:
            results.append(
                _result(
                    "orders_on_vanished_services",
                    orders_on_vanished_services(conn),
                    "no open order on a vanished service",
                    "{n} open order(s) on services that vanished from their panel's catalog",
                    dg.AssetCheckSeverity.WARN,
                )
            )
    yield from results


order_checks_job = dg.define_asset_job(
    "check_orders",
    selection=dg.AssetSelection.checks(order_checks),
    description="Evaluate the order checks (ambiguous, stuck, vanished services).",
)

order_checks_schedule = dg.ScheduleDefinition(
    name="order_checks_every_15_minutes",
    cron_schedule="*/15 * * * *",
    job=order_checks_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

order_checks_automation = dg.AutomationConditionSensorDefinition(
    "order_checks_automation",
    target=dg.AssetSelection.checks(order_checks),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    description="Runs the order checks right after every write to `orders` (their automation "
    "condition), so an ambiguous submission shows in the UI within about half a minute.",
)
