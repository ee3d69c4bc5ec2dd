"""smm_pipeline: a Dagster code location for SMM panel order flows (API v2)."""
