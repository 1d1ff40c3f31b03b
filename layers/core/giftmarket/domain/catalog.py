"""Products and their likes."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Self

from giftmarket.domain import events
from giftmarket.domain.events import DomainEvent
from giftmarket.domain.validation import require_points, require_text

MAX_NAME_LENGTH = 100
MAX_BRAND_LENGTH = 50
MAX_CATEGORY_LENGTH = 50


@dataclass(eq=False, kw_only=True)
class Product:
    """Orders are not counted here: a trade must not lock the product row (bid placement
    locks it first, so a trade that did would deadlock with it). The read side counts
    orders from OrderPlaced events."""

    id: str
    name: str
    brand: str
    category: str
    face_value: int
    like_count: int
    created_at: datetime
    version: int
    events: list[DomainEvent] = field(default_factory=list, repr=False)

    @classmethod
    def register(
        cls,
        *,
        product_id: str,
        name: str,
        brand: str,
        category: str,
        face_value: int,
        now: datetime,
    ) -> Self:
        product = cls(
            id=product_id,
            name=require_text(name, "name", MAX_NAME_LENGTH),
            brand=require_text(brand, "brand", MAX_BRAND_LENGTH),
            category=require_text(category, "category", MAX_CATEGORY_LENGTH),
            face_value=require_points(face_value, "face_value"),
            like_count=0,
            created_at=now,
            version=1,
        )
        product.events.append(
            events.ProductRegistered(
                aggregate_id=product.id,
                version=product.version,
                occurred_at=now,
                product_id=product.id,
                name=product.name,
                brand=product.brand,
                category=product.category,
                face_value=product.face_value,
            )
        )
        return product

    def like(self, user_id: str, already_liked: bool, now: datetime) -> bool:
        """Returns whether anything changed; liking twice is the same as liking once."""
        if already_liked:
            return False
        self.like_count += 1
        self.version += 1
        self.events.append(
            events.ProductLiked(
                aggregate_id=self.id,
                version=self.version,
                occurred_at=now,
                product_id=self.id,
                user_id=user_id,
                like_count=self.like_count,
            )
        )
        return True

    def unlike(self, user_id: str, was_liked: bool, now: datetime) -> bool:
        if not was_liked:
            return False
        self.like_count = max(self.like_count - 1, 0)
        self.version += 1
        self.events.append(
            events.ProductUnliked(
                aggregate_id=self.id,
                version=self.version,
                occurred_at=now,
                product_id=self.id,
                user_id=user_id,
                like_count=self.like_count,
            )
        )
        return True
