"""Prices and costs as exact integers (docs/api.md §3, §6.4).

A price is per million tokens in the system currency; stored in millionths of it (so
0.15 is 150000), at most 6 decimals. A round's cost is stored in billionths of the currency:
tokens × micros / 1000, rounded half up. Sums stay exact in SQL on both stores; the API
shows plain numbers.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

MICROS = 1_000_000
NANOS = 1_000_000_000
MAX_PRICE = 1_000_000  # per million tokens: far above any real price


def to_micros(price: int | float) -> int:
    return int((Decimal(str(price)) * MICROS).to_integral_value(ROUND_HALF_UP))


def from_micros(micros: int | None) -> float | None:
    return None if micros is None else micros / MICROS


def cost_nanos(prompt_tokens: int, completion_tokens: int, input_micros: int | None,
               output_micros: int | None) -> int | None:
    """The cost of a round at these prices; None unless both prices are known."""
    if input_micros is None or output_micros is None:
        return None
    exact = Decimal(prompt_tokens * input_micros + completion_tokens * output_micros) / 1000
    return int(exact.to_integral_value(ROUND_HALF_UP))


def from_nanos(nanos: int | None) -> float | None:
    return None if nanos is None else float(Decimal(nanos) / NANOS)
