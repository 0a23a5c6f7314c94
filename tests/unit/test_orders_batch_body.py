"""The batch body's fast path answers exactly like the FastAPI route it stands in front of.

``POST /v1/orders/batch`` is served by a lean route that validates the raw body with
``BatchIn.model_validate_json`` and passes anything it refuses on to the FastAPI route.
Two properties make that safe, and hypothesis checks both on random valid and invalid
batch bodies:

- whatever the fast path accepts, the FastAPI route's own decoding (``json.loads``, then
  ``BatchIn`` from the Python object) accepts too, as the same orders;
- whatever ``decode_batch`` (msgspec, tried first) accepts, ``model_validate_json``
  accepts too, as orders with the same fields, the same ``canonical()`` and so the same
  request hashes and stored items;
- over HTTP, the app with the lean route and the app without it give the same status and
  the same body (problem+json included) for every body. The service is the real one; its
  pool stands in for the database and answers ``409 reached the database`` when a batch
  gets that far, so the bodies compared there are every answer given before any SQL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.orders.app import create_app
from services.orders.config import Settings
from services.orders.domain import request_hash
from services.orders.schemas import BatchIn, OrderIn, decode_batch
from services.orders.service import OrderService
from shared.auth import Role
from shared.fastpath import LeanRoute
from shared.problems import Conflict
from tests.conftest import bearer

SELLERS = ["shop-1", "shop-2"]


class _ReachedTheDatabase(Conflict):
    pass


class _NoDatabase:
    """A pool whose first use answers 409: the request got past every check."""

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[None]:
        raise _ReachedTheDatabase("reached the database")
        yield  # pragma: no cover


def _app(*, lean: bool) -> Any:
    app = create_app(Settings())
    if not lean:
        app.router.routes[:] = [r for r in app.router.routes if not isinstance(r, LeanRoute)]
    app.state.service = OrderService(
        _NoDatabase(),  # type: ignore[arg-type]
        topic="unused",
        clock_skew=timedelta(seconds=300),
    )
    return app


# -- random batch bodies: valid orders, then values and shapes of every kind -------------

# RFC 3339 and near misses: every part in and just out of range, other separators and
# zone forms, 0 to 9 digits of fraction.
_stamps = st.builds(
    "{}-{:02d}-{:02d}{}{:02d}:{:02d}:{:02d}{}{}".format,
    st.sampled_from([1999, 2000, 2025, 2099, 2100, 2101, 9999]).map(lambda y: f"{y:04d}"),
    st.integers(0, 13),
    st.integers(0, 32),
    st.sampled_from(["T", "T", "t", " "]),
    st.integers(0, 24),
    st.integers(0, 60),
    st.integers(0, 60),
    st.sampled_from(["", ".5", ".123456", ".1234567", ".000000000", "."]),
    st.sampled_from(
        ["Z", "Z", "z", "", "+08:00", "-05:00", "-00:00", "+00:00", "+23:59", "+24:00"]
        + ["-12:60", "+0800", "+08", "+14:00", "-23:59"]
    ),
)


# RFC 3339 as storefronts send it, random in every part (the form msgspec reads itself).
_good_stamps = st.builds(
    "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}{}{}".format,
    st.integers(2000, 2099),
    st.integers(1, 12),
    st.integers(1, 31),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.sampled_from(["", ".5", ".25", ".123", ".000001", ".999999"]),
    st.sampled_from(["Z"])
    | st.builds(
        "{}{:02d}:{:02d}".format, st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59)
    ),
)
_keys = st.from_regex(r"[A-Za-z0-9_.:-]{1,8}", fullmatch=True)
_text = st.text(min_size=0, max_size=6)
_odd_ints = st.sampled_from([0, -1, 1, 10**15, 10**15 + 1, 1_000_001, 2**64])
_odd = st.one_of(
    st.none(),
    st.booleans(),
    _odd_ints,
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1.0, 2.0, 500.0, "1", "500"]),
    _text,
    st.sampled_from(["a\n", "a\x00", "\ud800", "é", "x" * 65, "x" * 129, "cny", "XXX", "CNY"]),
    st.sampled_from(
        [
            "2025-11-11T00:00:00Z",
            "2025-11-11T08:00:00+08:00",
            "2025-11-11 00:00:00Z",
            "2025-11-11T00:00:00",
            "2025-11-11",
            "1999-12-31T23:59:59Z",
            "2100-01-01T00:00:00Z",
            "2100-01-01T00:00:01Z",
            "2100-01-01T05:00:00+08:00",
            "2030-01-01T00:00:00Z",
            "2025-11-11T00:00:00.123456789Z",
            "2025-11-11t00:00:00z",
            1_762_819_200,
            1_762_819_200.5,
        ]
    ),
    _stamps,
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["item_id", "quantity", "x"]), st.integers(), max_size=2),
)


@st.composite
def _item(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "item_id": draw(_keys),
        "quantity": draw(st.integers(1, 5)),
        "unit_price_minor": draw(st.integers(0, 1000)),
    }


@st.composite
def _valid_order(draw: st.DrawFn) -> dict[str, Any]:
    items = draw(st.lists(_item(), min_size=1, max_size=3))
    order: dict[str, Any] = {
        "order_id": draw(_keys),
        "seller_id": draw(st.sampled_from(SELLERS)),
        "currency": draw(st.sampled_from(["CNY", "USD", "JPY"])),
        "total_minor": sum(i["quantity"] * i["unit_price_minor"] for i in items),
        "items": items,
    }
    if draw(st.booleans()):
        order["buyer_ref"] = draw(st.text(min_size=1, max_size=5))
    if draw(st.booleans()):
        order["placed_at"] = draw(
            st.sampled_from(["2025-11-11T00:00:00Z", "2025-11-11T08:00:00+08:00"])
            | _good_stamps
            | _stamps
        )
    if draw(st.booleans()):
        order["status"] = "completed"
        if draw(st.booleans()):
            order["completed_at"] = draw(
                st.just("2025-11-12T00:00:00-05:00") | _good_stamps | _stamps
            )
    return order


def _dict_items(items: Any) -> bool:
    """True for a non-empty list of objects (a first mutation may have replaced it)."""
    return isinstance(items, list) and bool(items) and all(isinstance(i, dict) for i in items)


def _mutate(draw: st.DrawFn, order: dict[str, Any]) -> dict[str, Any]:
    order = dict(order)
    fields = [
        "order_id",
        "seller_id",
        "buyer_ref",
        "currency",
        "total_minor",
        "items",
        "placed_at",
        "status",
        "completed_at",
        "extra",
    ]
    for _ in range(draw(st.integers(1, 2))):
        field = draw(st.sampled_from(fields))
        action = draw(st.sampled_from(["set", "drop", "item"]))
        if action == "drop":
            order.pop(field, None)
        elif action == "item" and _dict_items(order.get("items")):
            items = [dict(i) for i in order["items"]]
            key = draw(st.sampled_from(["item_id", "quantity", "unit_price_minor", "x"]))
            items[0][key] = draw(_odd)
            order["items"] = items
        else:
            order[field] = draw(_odd)
    return order


def _encode(body: Any, duplicate: str | None) -> bytes:
    raw = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS) if _orjson_ok(body) else b""
    if not raw:
        raw = json.dumps(body, ensure_ascii=True).encode()
    if duplicate is not None and raw.startswith(b"{") and len(raw) > 2:
        # The same key twice in the top object: the last one counts in both decoders?
        raw = b'{"' + duplicate.encode() + b'":"dup",' + raw[1:]
    return raw


def _orjson_ok(body: Any) -> bool:
    try:
        orjson.dumps(body)
    except TypeError:  # a lone surrogate or an int beyond 64 bits
        return False
    return True


@st.composite
def _bodies(draw: st.DrawFn) -> bytes:
    orders = draw(st.lists(_valid_order(), min_size=1, max_size=4))
    kind = draw(st.sampled_from(["valid", "valid", "mutated", "shape"]))
    if kind == "mutated":
        at = draw(st.integers(0, len(orders) - 1))
        orders[at] = _mutate(draw, orders[at])
    body: Any = {"orders": orders}
    if kind == "shape":
        body = draw(
            st.sampled_from(
                [
                    {"orders": []},
                    {"orders": orders, "x": 1},
                    {"orders": orders[0]},
                    orders,
                    {"orders": [orders[0], orders[0]]},
                    {"orders": [1, None]},
                    None,
                    "orders",
                ]
            )
        )
    duplicate = draw(st.sampled_from([None, None, None, "orders", "x"]))
    raw = _encode(body, duplicate)
    if draw(st.integers(0, 9)) == 0:
        raw = draw(st.sampled_from([b"", b"{", b'{"orders": [', raw + b"x", b"\xef\xbb\xbf" + raw]))
    return raw


# -- the properties ----------------------------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_bodies())
def test_what_the_fast_path_accepts_the_route_accepts_alike(body: bytes) -> None:
    try:
        fast = BatchIn.model_validate_json(body)
    except ValidationError:
        return  # refused: the FastAPI route answers it (the test below)
    slow = BatchIn.model_validate(json.loads(body))
    assert fast == slow
    assert [o.canonical() for o in fast.orders] == [o.canonical() for o in slow.orders]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_bodies())
def test_what_msgspec_accepts_pydantic_accepts_alike(body: bytes) -> None:
    fast = decode_batch(body)
    if fast is None:
        return  # left to BatchIn (the tests above and below)
    slow = BatchIn.model_validate_json(body).orders
    assert len(fast) == len(slow)
    for f, s in zip(fast, slow, strict=True):
        assert f.canonical() == s.canonical()
        assert request_hash(f.canonical()) == request_hash(s.canonical())
        assert orjson.dumps(f.canonical()["items"]) == orjson.dumps(s.canonical()["items"])
        for name in OrderIn.model_fields:
            if name != "items":
                assert getattr(f, name) == getattr(s, name), name
        assert [(i.item_id, i.quantity, i.unit_price_minor) for i in f.items] == [
            (i.item_id, i.quantity, i.unit_price_minor) for i in s.items
        ]


def test_msgspec_reads_the_bodies_storefronts_send() -> None:
    orders = [
        {
            "order_id": f"tb-{n}",
            "seller_id": "shop-1",
            "buyer_ref": "käufer-1",
            "currency": "CNY",
            "total_minor": 4498,
            "items": [
                {"item_id": "sku-1", "quantity": 2, "unit_price_minor": 1999},
                {"item_id": "绿茶", "quantity": 1, "unit_price_minor": 500},
            ],
            "placed_at": "2025-11-11T08:00:00.250+08:00",
            "status": "completed",
            "completed_at": "2025-11-11T00:05:00Z",
        }
        for n in range(3)
    ]
    body = orjson.dumps({"orders": orders})
    fast = decode_batch(body)
    assert fast is not None
    assert [o.canonical() for o in fast] == [
        o.canonical() for o in BatchIn.model_validate_json(body).orders
    ]
    # Anything else is left to pydantic: another zone form, a NUL (in ASCII text or not),
    # a lone surrogate, a key with a newline, an unknown currency.
    for old, new in [
        (b"+08:00", b"+0800"),
        (b"sku-1", b"sku\\u0000"),
        ("käufer-1".encode(), b"buyer\\u0000"),
        ("käufer-1".encode(), b"k\\u0000\\u00e4ufer"),
        ("绿茶".encode(), b"buyer\\ud800"),
        (b"tb-1", b"tb-1\\n"),
        (b"CNY", b"XXX"),
    ]:
        changed = body.replace(old, new)
        assert changed != body
        assert decode_batch(changed) is None, changed


_LEAN = _app(lean=True)
_FASTAPI = _app(lean=False)
_HEADERS = bearer(Role.STOREFRONT, *SELLERS) | {"content-type": "application/json"}


async def _post(app: Any, body: bytes) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://orders") as client:
        return await client.post("/v1/orders/batch", content=body, headers=_HEADERS)


def _answer(app: Any, body: bytes) -> tuple[int, str, Any]:
    response = asyncio.run(_post(app, body))
    return response.status_code, response.headers["content-type"], response.json()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_bodies())
def test_the_lean_route_answers_like_the_fastapi_route(body: bytes) -> None:
    lean = _answer(_LEAN, body)
    assert lean == _answer(_FASTAPI, body)
    assert lean[0] in (409, 422, 403), lean


def test_the_lean_route_stands_in_front_of_the_batch_route() -> None:
    def names(app: Any) -> list[str]:
        return [r.name for r in app.router.routes if isinstance(r, LeanRoute)]

    assert "create_orders_batch" in names(_LEAN)
    assert "create_orders_batch" not in names(_FASTAPI)


def test_msgspec_takes_the_last_of_duplicate_keys_as_pydantic_does() -> None:
    order = (
        b'{"order_id":"a","seller_id":"shop-1","currency":"CNY","total_minor":2,'
        b'"items":[{"item_id":"i","quantity":1,"unit_price_minor":1,"quantity":2}],'
        b'"order_id":"b","placed_at":"2025-11-11T00:00:00Z","placed_at":"2025-11-12T00:00:00Z"}'
    )
    body = b'{"orders":[' + order + b"]}"
    fast = decode_batch(body)
    assert fast is not None
    slow = BatchIn.model_validate_json(body).orders
    assert [o.canonical() for o in fast] == [o.canonical() for o in slow]
    assert fast[0].order_id == "b"
    assert fast[0].items[0].quantity == 2
