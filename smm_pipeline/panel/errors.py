"""Errors a caller of the panel client can act on: the panel branch of the pipeline's one
exception tree, defined (and documented as a tree) in `smm_pipeline/errors.py`.

The hierarchy mirrors the decisions a caller has to make: retry later (transport, HTTP 5xx,
rate limited, invalid answer), fix the request (API error), or stop and ask a human
(ambiguous submission). No message ever contains the API key.
"""

from smm_pipeline.errors import (
    AmbiguousSubmissionError,
    APIError,
    BudgetExhausted,
    HTTPStatusError,
    InsufficientFundsError,
    InvalidResponseError,
    PanelError,
    RateLimitedError,
    TransportError,
)

__all__ = [
    "APIError",
    "AmbiguousSubmissionError",
    "BudgetExhausted",
    "HTTPStatusError",
    "InsufficientFundsError",
    "InvalidResponseError",
    "PanelError",
    "RateLimitedError",
    "TransportError",
]
