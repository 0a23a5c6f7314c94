"""Money as integers in minor units with an ISO 4217 currency; never a float."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

# ISO 4217 minor-unit exponents of the currencies the platform accepts.
MINOR_UNIT_EXPONENT: dict[str, int] = {
    "CNY": 2,
    "HKD": 2,
    "TWD": 2,
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "JPY": 0,
    "KRW": 0,
    "SGD": 2,
    "MYR": 2,
    "THB": 2,
    "IDR": 2,
    "PHP": 2,
    "VND": 0,
    "INR": 2,
    "AUD": 2,
    "NZD": 2,
    "CAD": 2,
    "CHF": 2,
    "SEK": 2,
    "NOK": 2,
    "DKK": 2,
    "PLN": 2,
    "CZK": 2,
    "HUF": 2,
    "RUB": 2,
    "BRL": 2,
    "MXN": 2,
    "ZAR": 2,
    "AED": 2,
    "SAR": 2,
    "TRY": 2,
    "KWD": 3,
    "BHD": 3,
    "OMR": 3,
    "JOD": 3,
    "TND": 3,
}

BASIS_POINTS_PER_UNIT = 10_000
# Largest amount the platform stores: fits PostgreSQL bigint with room for sums.
MAX_MINOR = 10**15


def check_currency(code: str) -> str:
    if code not in MINOR_UNIT_EXPONENT:
        raise ValueError(f"unsupported currency {code!r}: expected an ISO 4217 code such as CNY")
    return code


Currency = Annotated[str, Field(min_length=3, max_length=3), AfterValidator(check_currency)]
MinorAmount = Annotated[int, Field(ge=0, le=MAX_MINOR, strict=True)]


def div_round_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up (away from zero for halves), in integers."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    if numerator < 0:
        return -div_round_half_up(-numerator, denominator)
    return (2 * numerator + denominator) // (2 * denominator)


def apply_basis_points(amount_minor: int, basis_points: int) -> int:
    """``basis_points`` of ``amount_minor``, rounded half up to the minor unit."""
    return div_round_half_up(amount_minor * basis_points, BASIS_POINTS_PER_UNIT)


def format_minor(amount_minor: int, currency: str) -> str:
    """Human form for logs and CLIs: 1234 CNY -> '12.34 CNY'."""
    exponent = MINOR_UNIT_EXPONENT[currency]
    sign = "-" if amount_minor < 0 else ""
    units, minor = divmod(abs(amount_minor), 10**exponent)
    if exponent == 0:
        return f"{sign}{units} {currency}"
    return f"{sign}{units}.{minor:0{exponent}d} {currency}"
