"""The operator's control room: the `orders` table as an asset, and the checks on it.

`orders` is written by the submit, poll and resolve jobs (each reports a materialization);
its checks run after every such run's last step through the checks job and on a schedule.
"""

from collections.abc import Iterator

import dagster as dg

from smm_pipeline.defs.metadata import frame_preview
from smm_pipeline.defs.polling import orders_materialization
from smm_pipeline.defs.resources import PanelsResource, WarehouseResource
from smm_pipeline.operations.resolution import (
    ACTIONS,
    Resolution,
    ResolutionRefused,
    resolve_ambiguous,
)
from smm_pipeline.warehouse.journal import journal_dir, live_claim_ids
from smm_pipeline.warehouse.monitoring import (
    STALE_PENDING_MINUTES,
    ambiguous_submissions,
    orders_on_vanished_services,
    stuck_orders,
)

orders_asset = dg.AssetSpec(
    "orders",
    group_name="orders",
    kinds={"duckdb"},
    description="One row per CSV order row: the outbox (submit_state) and the panel's status, "
    "written by submit_orders, poll_order_statuses, cancel_orders and "
    "resolve_ambiguous_orders.",
)


def _result(check: str, frame, ok: str, bad: str, severity=dg.AssetCheckSeverity.ERROR):
    return dg.AssetCheckResult(
        asset_key="orders",
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
            asset="orders",
            description="Requests whose outcome is unknown (kind order/refill/cancel, state "
            "ambiguous, sending, or pending for over "
            f"{STALE_PENDING_MINUTES} minutes): they may have spent money. Must be none "
            "(README: resolving ambiguous orders).",
        ),
        dg.AssetCheckSpec(
            "stuck_orders",
            asset="orders",
            description="Orders unfinished for longer than pipeline.stuck_order_hours.",
        ),
        dg.AssetCheckSpec(
            "orders_on_vanished_services",
            asset="orders",
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
                        conn, live_claims=live_claim_ids(journal_dir(warehouse.db_path))
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


class AmbiguousResolution(dg.Config):
    panel: str
    ref: str
    action: str  # attach | resubmit | abandon
    order_id: int | None = None


class ResolveConfig(dg.Config):
    """One entry per ambiguous row, e.g.
    {panel: simulator, ref: r-17, action: attach, order_id: 4211}."""

    resolutions: list[AmbiguousResolution]


@dg.op(description="Apply the operator's resolutions of ambiguous orders.")
def resolve_ambiguous_rows(
    context: dg.OpExecutionContext,
    config: ResolveConfig,
    panels: PanelsResource,
    warehouse: WarehouseResource,
) -> None:
    bad = [r for r in config.resolutions if r.action not in ACTIONS]
    if bad:
        raise dg.Failure(f"unknown action {bad[0].action!r}: use one of {', '.join(ACTIONS)}")
    wanted = [Resolution(r.panel, r.ref, r.action, r.order_id) for r in config.resolutions]
    settings = panels.settings()
    needed = {r.panel for r in wanted if r.action in ("resubmit", "attach")}
    with panels.clients(settings, only=needed) as clients:
        try:
            report = resolve_ambiguous(
                settings, warehouse.db_path, wanted, clients, progress=context.log.info
            )
        except ResolutionRefused as refused:
            raise dg.Failure(str(refused)) from None
    context.log_event(
        orders_materialization(warehouse, "ambiguous orders resolved", enabled=settings.panel_names)
    )
    warehouse.publish(context, settings)
    for (panel, ref), message in report.errors.items():
        context.log.error(f"{panel}/{ref}: {message}")
    context.add_output_metadata(
        {
            "applied": report.applied,
            "refused": len(report.errors),
            "resubmitted": report.submitted,
            "resubmit_ambiguous": report.ambiguous,
            "resubmit_failed": report.failed,
        }
    )
    if report.errors:
        raise dg.Failure(
            f"{len(report.errors)} resolution(s) refused; the others were applied",
            metadata={
                "refused": dg.MetadataValue.json(
                    {f"{p}/{r}": m for (p, r), m in report.errors.items()}
                )
            },
        )


@dg.job(description="Resolve ambiguous submissions (Launchpad config: resolutions).")
def resolve_ambiguous_orders():
    resolve_ambiguous_rows()
