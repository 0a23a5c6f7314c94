from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from shared.money import (
    MAX_MINOR,
    Currency,
    MinorAmount,
    apply_basis_points,
    div_round_half_up,
    format_minor,
)


def reference_half_up(numerator: int, denominator: int) -> int:
    exact = Fraction(numerator, denominator)
    sign = -1 if exact < 0 else 1
    magnitude = abs(exact)
    floor = magnitude.numerator // magnitude.denominator
    rounded = floor + (1 if magnitude - floor >= Fraction(1, 2) else 0)
    return sign * rounded


@given(st.integers(-(10**18), 10**18), st.integers(1, 10**9))
def test_div_round_half_up_matches_exact_fractions(numerator: int, denominator: int) -> None:
    assert div_round_half_up(numerator, denominator) == reference_half_up(numerator, denominator)


@given(st.integers(0, MAX_MINOR), st.integers(0, 10_000))
def test_basis_points_never_exceed_the_amount_and_are_never_negative(
    amount: int, basis_points: int
) -> None:
    share = apply_basis_points(amount, basis_points)
    assert 0 <= share <= amount


@pytest.mark.parametrize(
    ("amount", "basis_points", "expected"),
    [(100, 50, 1), (99, 50, 0), (101, 50, 1), (300, 50, 2), (1, 5000, 1), (3, 5000, 2), (0, 50, 0)],
)
def test_basis_points_round_half_up(amount: int, basis_points: int, expected: int) -> None:
    # 0.5 % of 100 fen is 0.5 fen -> 1; of 99 fen 0.495 -> 0; of 300 fen 1.5 -> 2
    assert apply_basis_points(amount, basis_points) == expected


def test_div_round_half_up_rejects_non_positive_denominator() -> None:
    with pytest.raises(ValueError, match="denominator"):
        div_round_half_up(1, 0)


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (1234, "CNY", "12.34 CNY"),
        (-5, "CNY", "-0.05 CNY"),
        (7, "JPY", "7 JPY"),
        (1, "KWD", "0.001 KWD"),
    ],
)
def test_format_minor(amount: int, currency: str, text: str) -> None:
    assert format_minor(amount, currency) == text


class Priced(BaseModel):
    currency: Currency
    amount_minor: MinorAmount


def test_money_fields_accept_codes_and_integers() -> None:
    assert Priced(currency="CNY", amount_minor=2).amount_minor == 2


@pytest.mark.parametrize(
    "bad",
    [
        {"currency": "cny", "amount_minor": 1},
        {"currency": "XXX", "amount_minor": 1},
        {"currency": "CNY", "amount_minor": 1.5},
        {"currency": "CNY", "amount_minor": "2"},
        {"currency": "CNY", "amount_minor": -1},
        {"currency": "CNY", "amount_minor": MAX_MINOR + 1},
    ],
)
def test_money_fields_reject_floats_strings_negatives_and_unknown_codes(
    bad: dict[str, object],
) -> None:
    with pytest.raises(ValidationError):
        Priced.model_validate(bad)
