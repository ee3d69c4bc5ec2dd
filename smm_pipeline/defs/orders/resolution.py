"""`resolve_ambiguous_orders`: the operator's resolutions of ambiguous orders (Launchpad)."""

import dagster as dg

from smm_pipeline.lib.poll_requests import orders_materialization
from smm_pipeline.lib.resources import PanelsResource, WarehouseResource, replica_hooks
from smm_pipeline.operations.resolution import (
    ACTIONS,
    Resolution,
    ResolutionRefused,
    resolve_ambiguous,
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
                settings, warehouse.location, wanted, clients, progress=context.log.info
            )
        except ResolutionRefused as refused:
            raise dg.Failure(str(refused)) from None
    context.log_event(
        orders_materialization(warehouse, "ambiguous orders resolved", enabled=settings.panel_names)
    )
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


@dg.job(
    description="Resolve ambiguous submissions (Launchpad config: resolutions).",
    hooks=replica_hooks,
)
def resolve_ambiguous_orders():
    resolve_ambiguous_rows()
