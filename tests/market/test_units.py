"""Integer units: the one rounding function, payment rules and token formatting."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from market.errors import InvalidQuantity
from market.units import (
    TOKEN_DECIMALS,
    buyer_payment,
    energy_to_power_w,
    format_tokens,
    power_to_energy_wh,
    round_half_even,
    seller_revenue,
)

# ------------------------------------------------------------------ round_half_even


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.5, 0),
        (1.5, 2),
        (2.5, 2),
        (3.5, 4),
        (-0.5, 0),
        (-1.5, -2),
        (-2.5, -2),
        (0.49999999999999994, 0),  # the largest double below 0.5: not a tie
        (0.5000000000000001, 1),  # the smallest double above 0.5: not a tie
        (2.675, 3),  # the double is 2.67499999...; rounding to an integer is unaffected
        (1e16 + 2.0, 10_000_000_000_000_002),  # exact for every double, no detour via str
        (-7.0, -7),
        (0.0, 0),
    ],
)
def test_round_half_even_literal(value: float, expected: int) -> None:
    result = round_half_even(value)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_round_half_even_rejects_non_finite(value: float) -> None:
    with pytest.raises(InvalidQuantity, match="non-finite"):
        round_half_even(value)


@given(st.integers(-(10**12), 10**12))
def test_round_half_even_halves_go_to_the_even_neighbour(n: int) -> None:
    result = round_half_even(n + 0.5)
    assert result in {n, n + 1}
    assert result % 2 == 0


@given(st.floats(min_value=-1e15, max_value=1e15, allow_nan=False, allow_infinity=False))
def test_round_half_even_is_the_nearest_integer(value: float) -> None:
    result = round_half_even(value)
    exact = Fraction(value)
    assert abs(exact - result) <= Fraction(1, 2)
    if abs(exact - result) == Fraction(1, 2):
        assert result % 2 == 0


# ------------------------------------------------------------------ payments


@pytest.mark.parametrize(
    ("energy_wh", "price", "pays", "receives"),
    [
        (1500, 250_000, 375_000, 375_000),  # 1.5 kWh at 0.25 /kWh: exact
        (1, 1, 1, 0),  # 0.001 units: the buyer pays a whole unit, the seller gets none
        (1, 999, 1, 0),
        (1, 1000, 1, 1),
        (1, 1001, 2, 1),
        (333, 200_001, 66_601, 66_600),  # 66_600.333 units
        (999, 999, 999, 998),  # 998.001 units
        (0, 300_000, 0, 0),
        (5000, 0, 0, 0),
    ],
)
def test_buyer_pays_ceiling_seller_gets_floor(
    energy_wh: int, price: int, pays: int, receives: int
) -> None:
    assert buyer_payment(energy_wh, price) == pays
    assert seller_revenue(energy_wh, price) == receives


@given(st.integers(0, 10**9), st.integers(0, 10**9))
def test_payment_rounding_brackets_the_exact_amount(energy_wh: int, price: int) -> None:
    pays = buyer_payment(energy_wh, price)
    receives = seller_revenue(energy_wh, price)
    exact = Fraction(energy_wh * price, 1000)
    assert receives <= exact <= pays
    assert 0 <= pays - receives <= 1
    assert (pays == receives) == ((energy_wh * price) % 1000 == 0)


@given(st.integers(0, 10**6), st.integers(0, 10**6))
def test_payments_are_exact_when_divisible(kwh: int, price: int) -> None:
    # kWh * 1000 Wh: the product is divisible by 1000 for any price
    assert buyer_payment(kwh * 1000, price) == seller_revenue(kwh * 1000, price) == kwh * price


@pytest.mark.parametrize(("energy_wh", "price"), [(-1, 100), (100, -1), (-5, -5)])
def test_payments_reject_negative_inputs(energy_wh: int, price: int) -> None:
    with pytest.raises(InvalidQuantity, match=">= 0"):
        buyer_payment(energy_wh, price)
    with pytest.raises(InvalidQuantity, match=">= 0"):
        seller_revenue(energy_wh, price)


# ------------------------------------------------------------------ energy and power


def test_energy_power_conversions() -> None:
    assert energy_to_power_w(250, 900) == pytest.approx(1000.0)  # 250 Wh in 15 min = 1 kW
    assert energy_to_power_w(1000, 3600) == pytest.approx(1000.0)
    assert power_to_energy_wh(1000.0, 900) == 250
    assert power_to_energy_wh(6.0, 900) == 2  # 1.5 Wh -> 2 (tie to even)
    assert power_to_energy_wh(2.0, 900) == 0  # 0.5 Wh -> 0 (tie to even)
    assert power_to_energy_wh(-4000.0, 900) == -1000


# ------------------------------------------------------------------ format_tokens


@pytest.mark.parametrize(
    ("units", "text"),
    [
        (1_500_000, "1.500000"),
        (0, "0.000000"),
        (1, "0.000001"),
        (-1, "-0.000001"),
        (123, "0.000123"),
        (-2_000_000, "-2.000000"),
        (10**18 + 7, "1000000000000.000007"),
    ],
)
def test_format_tokens_literal(units: int, text: str) -> None:
    assert format_tokens(units) == text


@given(st.integers(-(10**24), 10**24))
def test_format_tokens_round_trips(units: int) -> None:
    text = format_tokens(units)
    whole, _, frac = text.lstrip("-").partition(".")
    assert len(frac) == TOKEN_DECIMALS
    assert whole == str(int(whole))  # no leading zeros, at least one digit
    assert Decimal(text) * 10**TOKEN_DECIMALS == units
