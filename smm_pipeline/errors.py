"""The pipeline's own exceptions, one tree (the way httpx's `_exceptions.py` has its own).

Every refusal the pipeline raises on purpose is a `SmmPipelineError`: catch a branch to act on
one kind of problem, the root to catch them all. Errors of the libraries underneath (duckdb,
httpx, OSError) are not wrapped, except where a class below says so. A class that callers
already catch by a built-in base keeps that base too (named in brackets).

    SmmPipelineError
    ├── ConfigError [ValueError]            the configuration is unusable (config.py)
    ├── PanelError                          talking to one panel went wrong
    │   ├── TransportError                  below HTTP: connect, read, timeout, dropped
    │   ├── BudgetExhausted                 no request budget for a poll: nothing was sent
    │   ├── HTTPStatusError                 an HTTP error status and no usable JSON error
    │   │   └── RateLimitedError            429: not processed, so even a write may be resent
    │   ├── InvalidResponseError            not the JSON the API promises
    │   ├── APIError                        the panel refused the request: {"error": ...}
    │   │   └── InsufficientFundsError      "Not enough funds on balance"
    │   └── AmbiguousSubmissionError        a write may have reached the panel: never resent
    ├── ShapeError [ValueError]             JSON, not in the documented shape (panel/parsing.py;
    │                                       the client makes it an InvalidResponseError)
    ├── WarehouseError [RuntimeError]       the warehouse file cannot be used now
    │   ├── WarehouseLockedError            another process held it longer than we wait
    │   └── PollWriteError                  a poll's answers could not be written
    ├── MigrationError [RuntimeError]       a schema migration failed (rolled back)
    └── InputRefused                        what a user handed in is refused as it is
        ├── FileRejected                    a drop file refused whole: rejected/ + errors.csv
        ├── FileChanged                     not the content its run was for (order_files.py)
        ├── Unreadable                      a drop file that cannot be read now
        ├── OrderFieldError [ValueError]    an order row's field missing or malformed
        └── ResolutionRefused [ValueError]  resolutions refused: nothing was changed

Decisions a caller makes from the panel branch: retry later (transport, HTTP 5xx, rate
limited, invalid answer), fix the request (API error), or stop and ask a human (ambiguous
submission). `MigrationError` is deliberately not a `WarehouseError`: a step that shrugs off a
busy warehouse (the replica publish) must not shrug off a schema that failed to upgrade.

No message ever contains an API key: panel messages are built from the panel name, the action
and the panel's own words only, and the client replaces the key by `***` in those words before
they get here (a panel may echo it).

Every class is defined here but two: `ConfigError` (config.py) and `FileChanged`
(operations/order_files.py) live where they are raised, on the branches above. The classes stay
importable from the modules that raise them, as before (`panel.errors`, `panel.parsing`,
`panel.order_types`, `warehouse.db`, `warehouse.migrations`, `operations.inbox`,
`operations.polling`, `operations.resolution`). This module imports nothing of the pipeline,
so any module may import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from smm_pipeline.intake.row_errors import RowError

__all__ = [
    "APIError",
    "AmbiguousSubmissionError",
    "BudgetExhausted",
    "FileRejected",
    "HTTPStatusError",
    "InputRefused",
    "InsufficientFundsError",
    "InvalidResponseError",
    "MigrationError",
    "OrderFieldError",
    "PanelError",
    "PollWriteError",
    "RateLimitedError",
    "ResolutionRefused",
    "ShapeError",
    "SmmPipelineError",
    "TransportError",
    "Unreadable",
    "WarehouseError",
    "WarehouseLockedError",
]


class SmmPipelineError(Exception):
    """The root: a refusal of the pipeline's own (see the tree in the module docstring)."""


# ------------------------------------------------------------------ panel


class PanelError(SmmPipelineError):
    """Base class: something went wrong talking to one panel."""

    def __init__(self, message: str, *, panel: str = "", action: str = "") -> None:
        self.panel = panel
        self.action = action
        prefix = f"panel {panel!r}" if panel else "panel"
        if action:
            prefix += f", action {action!r}"
        super().__init__(f"{prefix}: {message}")
        self.message = message


class TransportError(PanelError):
    """The request failed below HTTP (connect, read, timeout, connection dropped).

    `sent` is False only when the request provably never left this machine (connection
    refused / DNS failure); that is the only case a writing action may be retried.
    """

    def __init__(self, message: str, *, panel: str = "", action: str = "", sent: bool) -> None:
        super().__init__(message, panel=panel, action=action)
        self.sent = sent


class BudgetExhausted(PanelError):
    """A poll's share of the panel's request budget was not free within its wait (the
    submissions to that panel come first): nothing was sent, and the poll defers the rest."""

    def __init__(self, panel: str, waited: float) -> None:
        super().__init__(
            f"no request budget left for polls within {waited:g} s (submissions to this panel "
            "come first); nothing was sent",
            panel=panel,
        )


class HTTPStatusError(PanelError):
    """The panel answered with an HTTP error status (4xx/5xx) and no usable JSON error.

    `retry_after` holds the panel's Retry-After in seconds when it sent one (a 503 often does).
    """

    def __init__(
        self,
        message: str,
        *,
        panel: str = "",
        action: str = "",
        status_code: int,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, panel=panel, action=action)
        self.status_code = status_code
        self.retry_after = retry_after


class RateLimitedError(HTTPStatusError):
    """HTTP 429: the panel refused without processing, so even a writing action may be resent."""

    def __init__(
        self, message: str, *, panel: str = "", action: str = "", retry_after: float | None
    ) -> None:
        super().__init__(
            message, panel=panel, action=action, status_code=429, retry_after=retry_after
        )


class InvalidResponseError(PanelError):
    """The answer is not the JSON the API promises (HTML page, truncated JSON, wrong shape)."""


class APIError(PanelError):
    """The panel refused the request with `{"error": "..."}`; `panel_message` is its text."""

    def __init__(self, panel_message: str, *, panel: str = "", action: str = "") -> None:
        super().__init__(panel_message, panel=panel, action=action)
        self.panel_message = panel_message


class InsufficientFundsError(APIError):
    """ "Not enough funds on balance": stop submitting to this panel."""


class AmbiguousSubmissionError(PanelError):
    """A writing action (add, refill, cancel) may have reached the panel but got no answer
    that says what happened.

    The outcome is unknown: the caller must record it and never resend automatically.
    `cause` is the underlying error.

    `stops_batch` is True when the panel answered with something that is not the API at all
    (a 3xx redirect, a 4xx other than 408/429 without a JSON body, an HTML page with a status
    below 500): a wrong url, a wrong path or a blocked IP, which would answer every further
    request the same way. The caller should then send nothing more to this panel in the
    current batch (those rows were never sent: they are plain failures, safe to send again
    once the configuration is fixed) rather than turn every row ambiguous. It is False for
    answers that may be one-off (5xx, truncated or unexpected JSON, timeouts, dropped
    connections): the next request may well succeed.
    """

    def __init__(
        self, cause: PanelError, *, panel: str = "", action: str = "", stops_batch: bool = False
    ) -> None:
        super().__init__(
            f"outcome unknown, the request may have reached the panel ({cause.message})",
            panel=panel,
            action=action,
        )
        self.cause = cause
        self.stops_batch = stops_batch


class ShapeError(SmmPipelineError, ValueError):
    """An answer that is JSON but not the shape the API documents."""


# ------------------------------------------------------------------ warehouse


class WarehouseError(SmmPipelineError, RuntimeError):
    """The warehouse file cannot be used; the message names the file and what to do."""


class WarehouseLockedError(WarehouseError):
    """Another process kept the DuckDB file locked longer than we were willing to wait."""


class PollWriteError(WarehouseError):
    """The warehouse refused a batch of answers: the poll stops sending (what was written
    stays; the rest stays due)."""


class MigrationError(SmmPipelineError, RuntimeError):
    """A migration failed; its transaction was rolled back and the file is unchanged by it."""


# ------------------------------------------------------------------ input refused


class InputRefused(SmmPipelineError):
    """Something a user handed in (a drop file, a row, a resolution) is refused as it is."""


class FileRejected(InputRefused):
    """A drop file refused as a whole (nothing was sent); it is in rejected/ with errors.csv."""

    def __init__(
        self, file_name: str, errors: list[RowError], errors_file: Path, nothing: str
    ) -> None:
        self.file_name = file_name
        self.errors = errors
        self.errors_file = errors_file
        first = "; ".join(str(e) for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        self.summary = (
            f"{file_name} was rejected with {len(errors)} error(s), nothing was {nothing}: "
            f"{first}{more}. See {errors_file}."
        )
        super().__init__(self.summary)

    def preview_frame(self, limit: int = 20) -> pd.DataFrame:
        import pandas as pd  # not at the top: the panel layer imports this module too

        return pd.DataFrame(
            [(e.row, e.column, e.message) for e in self.errors[:limit]],
            columns=["row", "column", "message"],
        )


class Unreadable(InputRefused):
    """A complete-looking file that could not be read now; `changed` when it changed since it
    was looked at (it is then looked at again, not skipped)."""

    def __init__(self, reason: str, *, changed: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.changed = changed


class OrderFieldError(InputRefused, ValueError):
    """A field of an order is missing or malformed.

    `column` and `message` describe the first problem; `problems` lists every problem found
    in the row as (column, message) pairs, so a user can fix a whole row at once.
    """

    def __init__(self, column: str, message: str, problems: tuple[tuple[str, str], ...] = ()):
        super().__init__(f"{column}: {message}")
        self.column = column
        self.message = message
        self.problems = problems or ((column, message),)


class ResolutionRefused(InputRefused, ValueError):
    """The resolutions as a whole cannot be applied (nothing was changed)."""
