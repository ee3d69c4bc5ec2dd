"""How money is written for people: one formatter for logs, metadata, reports and errors.

Amounts are Decimal everywhere (parsed, stored and summed exactly); the warehouse keeps 18
places, so `18.445000000000000000` must be shown as `18.445`. Every significant place is kept
(a rate of 0.0024 stays 0.0024): only trailing zeros go.
"""

from __future__ import annotations

from decimal import Decimal

__all__ = ["format_money", "money_text"]


def format_money(amount: Decimal) -> str:
    """Plain decimal notation, exact: never `1E+1`, no trailing zeros (`0.09000` → `0.09`)."""
    text = f"{amount:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def money_text(amount: Decimal | None, currency: str | None = None) -> str:
    """An amount as a person reads it: every significant place, at least two (`1000.00`,
    `0.27`, `0.0024`), then the currency when known; `n/a` for no amount."""
    if amount is None:
        return "n/a"
    whole, _, places = format_money(amount).partition(".")
    return f"{whole}.{places.ljust(2, '0')} {currency or ''}".strip()
