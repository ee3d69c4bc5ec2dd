"""Exact money for the simulated panel: parse what clients and operators send, print like a panel.

Panels print money as decimal strings ("0.90", "0.27819", "100.84292"); a float anywhere on this
path would make the pipeline's exactness tests meaningless, so everything here is `Decimal`.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal, InvalidOperation

# Partial refunds are cut to this many places (DECIMAL(18,6) on the pipeline side); the panel
# keeps the sub-micro remainder, as real panels round in their own favour.
REFUND_PLACES = Decimal("0.000001")


def parse_amount(value: object) -> Decimal:
    """A finite Decimal from a string, int or Decimal; floats are refused (they are not exact)."""
    if isinstance(value, bool | float):
        raise ValueError(f"amount must be a decimal string, not {type(value).__name__}")
    try:
        amount = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal amount: {value!r}") from exc
    if not amount.is_finite():
        raise ValueError(f"not a finite amount: {value!r}")
    return amount


def format_amount(value: Decimal, min_places: int = 2) -> str:
    """Plain decimal text with at least `min_places` decimals and no trailing noise beyond."""
    exponent = value.normalize().as_tuple().exponent
    places = max(min_places, -exponent if isinstance(exponent, int) else 0)
    return f"{value.quantize(Decimal(1).scaleb(-places)):f}"


def format_charge(value: Decimal) -> str:
    """A charge as panels print it: "0" when nothing is charged, else like `format_amount`."""
    return "0" if value == 0 else format_amount(value)


def cost(rate: Decimal, quantity: int) -> Decimal:
    """Price of `quantity` units at `rate` per 1,000: exact, since dividing by 1000 is exact."""
    return rate * quantity / 1000


def refund_for(charge: Decimal, remains: int, total: int) -> Decimal:
    """The part of `charge` given back when `remains` of `total` units were not delivered."""
    if total <= 0 or remains <= 0:
        return Decimal(0)
    if remains >= total:
        return charge
    return (charge * remains / total).quantize(REFUND_PLACES, rounding=ROUND_DOWN)
