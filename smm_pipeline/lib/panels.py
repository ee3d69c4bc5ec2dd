"""What the per-panel definitions share: the panels partitions and per-panel names."""

import dagster as dg

from smm_pipeline.config import Settings, load_settings, panel_identifier


def configured_settings() -> Settings:
    """panels.yaml (`SMM_PANELS_FILE`) as the code location loads it: keys are not needed
    to load definitions (a run needs them, and says which one is missing)."""
    return load_settings(check_keys=False)


def panel_partitions(settings: Settings) -> dg.StaticPartitionsDefinition:
    """One partition per enabled panel."""
    return dg.StaticPartitionsDefinition(list(settings.panel_names))


def low_balance_check_name(panel: str) -> str:
    """`low_balance_<panel>`, with the panel's Dagster-safe identifier (`my-panel` →
    `low_balance_my_panel`; config refuses two panels with one identifier)."""
    return f"low_balance_{panel_identifier(panel)}"


def per_panel_schedule(name: str, cron: str, job, settings: Settings) -> dg.ScheduleDefinition:
    """A UTC schedule that asks for one run of `job` per panel partition at each tick."""
    names = settings.panel_names

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
        for panel in names:
            yield dg.RunRequest(run_key=f"{panel}:{tick}", partition_key=panel)

    return _schedule
