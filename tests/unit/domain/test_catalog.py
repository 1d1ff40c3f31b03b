from datetime import datetime

import pytest

from giftmarket.domain import events
from giftmarket.domain.catalog import Product
from giftmarket.domain.errors import InvalidAmount, InvalidField

pytestmark = pytest.mark.unit


def register(now: datetime, **overrides: str) -> Product:
    fields = {"name": "Americano Tall", "brand": "Starbucks", "category": "cafe"} | overrides
    return Product.register(product_id="product-1", face_value=4_500, now=now, **fields)


def test_registering_a_product_records_it(now: datetime) -> None:
    product = register(now, name="  Americano Tall ")

    assert product.name == "Americano Tall"
    assert (product.like_count, product.version) == (0, 1)
    assert product.events == [
        events.ProductRegistered(
            aggregate_id="product-1",
            version=1,
            occurred_at=now,
            product_id="product-1",
            name="Americano Tall",
            brand="Starbucks",
            category="cafe",
            face_value=4_500,
        )
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("name", "   "),
        ("name", "n" * 101),
        ("brand", ""),
        ("brand", "b" * 51),
        ("category", ""),
        ("category", "c" * 51),
    ],
)
def test_registering_refuses_empty_or_overlong_text(field: str, value: str, now: datetime) -> None:
    with pytest.raises(InvalidField) as refused:
        register(now, **{field: value})

    assert refused.value.field == field


def test_registering_accepts_text_at_its_length_limits(now: datetime) -> None:
    product = register(now, name="n" * 100, brand="b" * 50, category="c" * 50)

    assert (len(product.name), len(product.brand), len(product.category)) == (100, 50, 50)


@pytest.mark.parametrize("face_value", [0, -4_500, 10**9 + 1])
def test_registering_refuses_a_face_value_outside_1_to_10_to_the_9(
    face_value: int, now: datetime
) -> None:
    with pytest.raises(InvalidAmount):
        Product.register(
            product_id="p", name="n", brand="b", category="c", face_value=face_value, now=now
        )


def test_liking_counts_the_like_and_records_it(now: datetime) -> None:
    product = register(now)

    changed = product.like("alice", already_liked=False, now=now)

    assert changed
    assert (product.like_count, product.version) == (1, 2)
    assert product.events[-1] == events.ProductLiked(
        aggregate_id="product-1",
        version=2,
        occurred_at=now,
        product_id="product-1",
        user_id="alice",
        like_count=1,
    )


def test_second_like_records_no_event(now: datetime) -> None:
    product = register(now)
    product.like("alice", already_liked=False, now=now)
    events_before = list(product.events)

    changed = product.like("alice", already_liked=True, now=now)

    assert not changed
    assert (product.like_count, product.version, product.events) == (1, 2, events_before)


def test_unliking_removes_the_like_and_records_it(now: datetime) -> None:
    product = register(now)
    product.like("alice", already_liked=False, now=now)

    changed = product.unlike("alice", was_liked=True, now=now)

    assert changed
    assert (product.like_count, product.version) == (0, 3)
    assert isinstance(product.events[-1], events.ProductUnliked)


def test_unliking_what_was_not_liked_records_no_event(now: datetime) -> None:
    product = register(now)

    changed = product.unlike("alice", was_liked=False, now=now)

    assert not changed
    assert (product.like_count, product.version, len(product.events)) == (0, 1, 1)
