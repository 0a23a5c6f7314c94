"""Request validation of the orders API: strict money, keys, zones, unknown fields."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.orders import domain
from services.orders.schemas import OrderIn, RefundIn


def order(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "order_id": "o-1",
        "seller_id": "s-1",
        "currency": "CNY",
        "total_minor": 250,
        "items": [{"item_id": "sku", "quantity": 2, "unit_price_minor": 125}],
        "placed_at": "2025-11-11T08:00:00+08:00",
    }
    body.update(overrides)
    return body


def fields(body: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationError) as info:
        OrderIn.model_validate(body)
    return {".".join(str(p) for p in err["loc"]) for err in info.value.errors()}


def test_a_valid_order_is_held_in_utc() -> None:
    parsed = OrderIn.model_validate(order())
    assert parsed.placed_at is not None
    assert parsed.placed_at.utcoffset() is not None
    assert parsed.placed_at.hour == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"order_id": ""}, "order_id"),
        ({"order_id": "x" * 65}, "order_id"),
        ({"order_id": "has space"}, "order_id"),
        ({"seller_id": "a/b"}, "seller_id"),
        ({"currency": "cny"}, "currency"),
        ({"currency": "XXX"}, "currency"),
        ({"total_minor": 250.0}, "total_minor"),
        ({"total_minor": "250"}, "total_minor"),
        ({"total_minor": -1}, "total_minor"),
        ({"items": []}, "items"),
        ({"items": [{"item_id": "a", "quantity": 0, "unit_price_minor": 1}]}, "items.0.quantity"),
        (
            {"items": [{"item_id": "a", "quantity": 1, "unit_price_minor": 1.5}]},
            "items.0.unit_price_minor",
        ),
        ({"placed_at": "2025-11-11T08:00:00"}, "placed_at"),
        ({"status": "refunded"}, "status"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_each_bad_field_is_named(overrides: dict[str, Any], field: str) -> None:
    assert field in fields(order(**overrides))


def test_canonical_form_does_not_depend_on_the_zone_or_key_order() -> None:
    a = OrderIn.model_validate(order())
    b = OrderIn.model_validate(
        dict(reversed(list(order(placed_at="2025-11-11T00:00:00Z").items())))
    )
    assert domain.request_hash(a.canonical()) == domain.request_hash(b.canonical())
    c = OrderIn.model_validate(order(buyer_ref="someone"))
    assert domain.request_hash(a.canonical()) != domain.request_hash(c.canonical())


def test_refund_amount_is_a_positive_int() -> None:
    assert RefundIn.model_validate({"refund_id": "r1", "amount_minor": 1}).amount_minor == 1
    for bad in (0, -1, 1.0, "1"):
        with pytest.raises(ValidationError):
            RefundIn.model_validate({"refund_id": "r1", "amount_minor": bad})
