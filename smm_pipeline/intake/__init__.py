"""CSV intake: dropped files → validated order rows (costs, budget) or per-row errors, and
the reports written beside them. Pure logic over bytes and plain data: no Dagster, no DuckDB,
no HTTP; reports are the only files it writes."""

from smm_pipeline.intake.csv_files import CsvTable, decode_csv, file_hash, read_csv_table
from smm_pipeline.intake.orders import (
    ORDER_COLUMNS,
    CatalogEntry,
    IntakeResult,
    ValidatedOrder,
    derive_ref,
    validate_order_file,
)
from smm_pipeline.intake.refills_cancels import (
    ActionFileResult,
    ActionRow,
    read_action_file,
    read_cancel_file,
    read_refill_file,
    rows_by_panel,
)
from smm_pipeline.intake.reports import (
    ResultRow,
    errors_report_path,
    results_report_path,
    write_csv_atomic,
    write_errors_csv,
    write_results_csv,
)
from smm_pipeline.intake.row_errors import RowError

__all__ = [
    "ORDER_COLUMNS",
    "ActionFileResult",
    "ActionRow",
    "CatalogEntry",
    "CsvTable",
    "IntakeResult",
    "ResultRow",
    "RowError",
    "ValidatedOrder",
    "decode_csv",
    "derive_ref",
    "errors_report_path",
    "file_hash",
    "read_action_file",
    "read_cancel_file",
    "read_csv_table",
    "read_refill_file",
    "results_report_path",
    "rows_by_panel",
    "validate_order_file",
    "write_csv_atomic",
    "write_errors_csv",
    "write_results_csv",
]
