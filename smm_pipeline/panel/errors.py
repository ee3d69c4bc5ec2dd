"""Errors a caller of the panel client can act on.

The hierarchy mirrors the decisions a caller has to make: retry later (transport, HTTP 5xx,
rate limited, invalid answer), fix the request (API error), or stop and ask a human
(ambiguous submission). No message ever contains the API key: messages are built from the
panel name, the action and the panel's own words only, and the client replaces the key by `***`
in those words before they get here (a panel may echo it).
"""

from __future__ import annotations


class PanelError(Exception):
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
