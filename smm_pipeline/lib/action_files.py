"""What the refill and cancel file steps report: their run metadata and their warnings."""

import dagster as dg

from smm_pipeline.lib.metadata import frame_preview
from smm_pipeline.operations.action_files import ActionFileSummary


def action_file_metadata(summary: ActionFileSummary) -> dict:
    return {
        "file": summary.file_name,
        "results_file": dg.MetadataValue.path(str(summary.results_file)),
        "rows": len(summary.outcomes),
        **{f"rows_{state}": n for state, n in summary.counts.items()},
        "already_processed": summary.already_processed,
        "resumed": summary.resumed,
        "order_statuses_refreshed": summary.status_refreshed,
        "api_calls": summary.calls,
        "seconds": round(summary.seconds, 2),
        "results": frame_preview(summary.frame()),
    }


def log_action_summary(
    context: dg.OpExecutionContext, summary: ActionFileSummary, what: str
) -> None:
    for warning in summary.warnings:
        context.log.warning(warning)
    if summary.count("ambiguous"):
        context.log.warning(
            f"{summary.count('ambiguous')} {what} request(s) are ambiguous (the panel may have "
            "acted on them): they are never sent again automatically; check them on the panel"
        )
